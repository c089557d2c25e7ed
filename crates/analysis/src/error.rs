//! The crate's typed errors.

use thiserror::Error;

/// Everything that can go wrong in the analyses; each variant names the failing input.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum AnalysisError {
    /// A parameter is outside its valid range.
    #[error("invalid parameter {name}: {reason}")]
    InvalidParameter {
        /// Parameter name as the task kwargs spell it.
        name: &'static str,
        /// What is wrong with the value.
        reason: String,
    },
    /// TF-IDF found no terms in any document (scikit-learn: "empty vocabulary").
    #[error("empty vocabulary: no document contains a word token")]
    EmptyVocabulary,
    /// A Cowrie event could not be used.
    #[error("bad event at index {index}: {reason}")]
    BadEvent {
        /// Position of the event in the input stream.
        index: usize,
        /// Why it was rejected.
        reason: String,
    },
    /// Per-day aggregates built with different settings cannot be merged.
    #[error("aggregates do not match: {0}")]
    AggregateMismatch(String),
}
