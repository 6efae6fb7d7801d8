//! Integration tests, in one binary so the crate is linked once: each module covers one area.

mod architecture;
mod authoring;
mod cli;
mod config;
mod connector;
mod console;
mod crash;
mod daemon;
mod engine;
mod flowfile;
mod install;
mod nodes;
mod notify;
mod postgres;
mod recovery;
mod settle;
mod sim;
mod suppliers;
mod support;
mod tryton;
mod woo;
