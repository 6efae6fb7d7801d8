//! Integration tests, in one binary so the crate is linked once: each module covers one area.

mod cli;
mod config;
mod connector;
mod crash;
mod daemon;
mod engine;
mod nodes;
mod postgres;
mod settle;
mod sim;
mod suppliers;
mod tryton;
mod woo;
