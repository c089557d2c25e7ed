//! `cowrie-loader`: ingests Cowrie JSON logs into PostgreSQL exactly once.
//!
//! Code map:
//! - [`parse`]: one record's bytes to an event row or a rejection (pure);
//! - [`reader`]: plain/gzip/bzip2 files to records with byte offsets, pretty-printed JSON joined back;
//! - [`engine`]: streams, cursors, batches, retries, progress;
//! - [`generate`]: synthetic Cowrie 1.x/2.x/3.x logs;
//! - [`status`]: the JSON status line and exit codes;
//! - [`cli`]: the command line (`migrate`, `bulk`, `delta`, `generate`).
//!
//! Architecture invariant: this crate never names a diesel type; all database work
//! goes through the `store` crate.

pub mod cli;
pub mod engine;
pub mod generate;
pub mod parse;
pub mod reader;
pub mod status;
