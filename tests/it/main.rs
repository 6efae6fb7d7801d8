//! Integration tests, in one binary so the crate is linked once: each module covers one area.

mod connector;
mod daemon;
mod sim;
