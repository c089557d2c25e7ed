//! Celery task states and their precedence (`celery.states`).

use serde::{Deserialize, Serialize};
use std::fmt;

/// A task state as stored in the result backend and shown by events.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum State {
    Pending,
    Received,
    Started,
    Success,
    Failure,
    Retry,
    Revoked,
    Rejected,
    Ignored,
    /// A custom state, e.g. `PROGRESS`.
    Custom(String),
}

impl State {
    pub fn as_str(&self) -> &str {
        match self {
            State::Pending => "PENDING",
            State::Received => "RECEIVED",
            State::Started => "STARTED",
            State::Success => "SUCCESS",
            State::Failure => "FAILURE",
            State::Retry => "RETRY",
            State::Revoked => "REVOKED",
            State::Rejected => "REJECTED",
            State::Ignored => "IGNORED",
            State::Custom(s) => s,
        }
    }

    /// READY_STATES: the task has finished.
    pub fn is_ready(&self) -> bool {
        matches!(self, State::Success | State::Failure | State::Revoked)
    }

    /// PROPAGATE_STATES: `AsyncResult.get()` raises.
    pub fn propagates(&self) -> bool {
        matches!(self, State::Failure | State::Revoked)
    }

    /// Position in Celery's `PRECEDENCE` (lower index = higher precedence).
    pub fn precedence(&self) -> usize {
        match self {
            State::Success => 0,
            State::Failure => 1,
            State::Custom(_) | State::Ignored => 2,
            State::Revoked => 3,
            State::Started => 4,
            State::Received => 5,
            State::Rejected => 6,
            State::Retry => 7,
            State::Pending => 8,
        }
    }
}

impl From<String> for State {
    fn from(s: String) -> Self {
        match s.as_str() {
            "PENDING" => State::Pending,
            "RECEIVED" => State::Received,
            "STARTED" => State::Started,
            "SUCCESS" => State::Success,
            "FAILURE" => State::Failure,
            "RETRY" => State::Retry,
            "REVOKED" => State::Revoked,
            "REJECTED" => State::Rejected,
            "IGNORED" => State::Ignored,
            _ => State::Custom(s),
        }
    }
}

impl From<State> for String {
    fn from(s: State) -> Self {
        s.as_str().to_string()
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precedence_matches_celery() {
        let order = [
            "SUCCESS", "FAILURE", "PROGRESS", "REVOKED", "STARTED", "RECEIVED", "REJECTED",
            "RETRY", "PENDING",
        ];
        let states: Vec<State> = order.iter().map(|s| State::from(s.to_string())).collect();
        for w in states.windows(2) {
            assert!(
                w[0].precedence() < w[1].precedence(),
                "{} before {}",
                w[0],
                w[1]
            );
        }
        assert_eq!(State::from("PROGRESS".to_string()).as_str(), "PROGRESS");
        assert!(State::Revoked.is_ready() && !State::Retry.is_ready());
    }
}
