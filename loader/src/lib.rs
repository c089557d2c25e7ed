//! `cowrie-loader`: ingests Cowrie JSON logs into PostgreSQL exactly once.
//!
//! Code map:
//! - [`parse`]: one record's bytes to an event row or a rejection (pure);
//! - [`reader`]: plain/gzip/bzip2 files to records with byte offsets, pretty-printed JSON joined back;
//! - [`engine`]: streams, cursors, batches, retries, progress;
//! - [`generate`]: synthetic Cowrie 1.x/2.x/3.x logs;
//! - [`status`]: the JSON status line and exit codes;
//! - [`sensors`]: the sensors file of `delta --all` (pure);
//! - [`fleet`]: `delta --all` over every sensor, `--every`, the `loader_runs` rows;
//! - [`metrics`]: Prometheus metrics on `--metrics-port`;
//! - [`sensors_cmd`]: `sensors check` and `sensors cronjobs` (one K3s CronJob per sensor);
//! - [`dead_letters_cmd`]: `dead-letters list | show | replay | resolve` over `dead_letter_events`;
//! - [`import_original`]: `import-original`, copying an original cowrieprocessor database (the only rusqlite user);
//! - [`cli`]: the command line (`migrate`, `bulk`, `delta`, `generate`, `sensors`).
//!
//! Architecture invariant: this crate never names a diesel type; all database work
//! goes through the `store` crate.

pub mod cli;
pub mod dead_letters_cmd;
pub mod engine;
pub mod fleet;
pub mod generate;
pub mod import_original;
pub mod metrics;
pub mod parse;
pub mod reader;
pub mod sensors;
pub mod sensors_cmd;
pub mod status;
