//! Stateful simulators of a shop API (MerchantPro-style) and an ERP API (SmartBill/Oblio-style),
//! served over real HTTP on loopback, for tests, benchmarks and the demo.

pub mod cli;
