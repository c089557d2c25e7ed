//! Run statistics, the JSON status line/file for cron, and exit codes.

use serde::Serialize;
use std::path::Path;

/// Exit codes of `cowrie-loader` (also documented in `docs/loader.md`).
pub mod exit {
    /// Everything read was stored (dead letters included).
    pub const OK: i32 = 0;
    /// Bad arguments or configuration, or an unexpected internal error.
    pub const FAILURE: i32 = 1;
    /// PostgreSQL stayed unreachable longer than `--max-wait`; nothing was lost, run again.
    pub const DB_UNAVAILABLE: i32 = 3;
    /// At least one file could not be read or stored; the others were.
    pub const PARTIAL: i32 = 4;
    /// The database schema is older than this binary: run `cowrie-loader migrate`.
    pub const SCHEMA_OUTDATED: i32 = 5;
}

/// Counters of one run; serialised as the status line.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Stats {
    pub mode: String,
    pub ingest_id: String,
    pub sensor: String,
    pub dry_run: bool,
    pub files_seen: u64,
    pub files_processed: u64,
    pub files_unchanged: u64,
    pub files_waiting: u64,
    pub files_failed: u64,
    pub bytes_read: u64,
    pub events_read: u64,
    pub events_inserted: u64,
    pub duplicates: u64,
    pub dead_letters: u64,
    pub dead_letters_inserted: u64,
    pub blank_lines: u64,
    pub sessions_touched: u64,
    pub files_rows_inserted: u64,
    pub truncations: u64,
    pub batches: u64,
    pub db_retries: u64,
    pub incomplete_tails: u64,
    pub duration_seconds: f64,
    pub events_per_second: f64,
    pub errors: Vec<String>,
    pub exit_code: i32,
}

impl Stats {
    /// The one-line JSON form.
    pub fn to_json_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// Writes the status file atomically (temporary file, then rename).
    pub fn write_file(&self, path: &Path) -> std::io::Result<()> {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self).unwrap_or_default())?;
        std::fs::rename(tmp, path)
    }
}
