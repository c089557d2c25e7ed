//! Integration tests of `cowrie-loader` against a real PostgreSQL (one database per test).
//!
//! All integration tests live in this one binary; each module owns one theme.

mod cli;
mod common;
mod crash;
mod dead_letters;
mod fixtures;
mod fleet;
mod import_original;
mod outage;
mod parsing;
mod rotation;
