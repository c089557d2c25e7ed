//! Progress reports from the long computations, so a worker task can publish Celery PROGRESS.

use serde::{Deserialize, Serialize};

/// One progress report: `current` of `total` units done in `stage`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Units done in this stage.
    pub current: u64,
    /// Units in this stage.
    pub total: u64,
    /// Stage name, stable snake_case (for example `extract`, `rare_commands`, `outlier_sessions`).
    pub stage: &'static str,
}

/// A progress callback that ignores every report.
pub fn no_progress() -> impl FnMut(Progress) {
    |_| {}
}

/// Reports `current/total` for `stage`.
pub(crate) fn report(
    cb: &mut dyn FnMut(Progress),
    stage: &'static str,
    current: usize,
    total: usize,
) {
    cb(Progress {
        current: current as u64,
        total: total as u64,
        stage,
    });
}
