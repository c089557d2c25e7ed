//! Longtail, snowshoe and botnet detection over Cowrie sessions, plus the command defanger and
//! risk scoring: the pure CPU part of the cowrieprocessor analyses.
//!
//! Architecture invariant: this crate does no I/O and knows nothing of async runtimes, Redis or
//! databases; callers hand it [`Session`] values (or per-day [`DayAggregate`]s) and get
//! serialisable results back.
//!
//! Entry points for worker tasks:
//! - [`longtail()`] / [`DayAggregate::from_sessions`] + [`longtail_from_aggregates`]
//! - [`snowshoe()`] / [`snowshoe_parallel`]
//! - [`botnet()`] / [`botnet_parallel`] (hot loops on a rayon pool of the caller's thread count)
//! - [`create_safe_command`], [`command_risk_score`], [`event_risk_score`]
//! - [`sessions_from_events`] / [`SessionBuilder`] to build sessions from Cowrie JSON events

pub mod botnet;
pub mod dbscan;
pub mod defang;
pub mod error;
pub mod ipclass;
pub mod longtail;
pub mod model;
mod par;
pub mod progress;
pub mod snowshoe;
pub mod stats;
pub mod text;
pub mod tfidf;
pub mod window;

pub use botnet::{BotnetParams, BotnetResult, botnet, botnet_parallel};
pub use defang::{
    CommandAnalysis, RiskLevel, Strategy, analyze_command, command_risk_score, create_safe_command,
    defang_command, event_risk_score,
};
pub use error::AnalysisError;
pub use longtail::{
    DayAggregate, LongtailParams, LongtailResult, longtail, longtail_from_aggregate,
    longtail_from_aggregates,
};
pub use model::{
    EventOptions, FileDownload, LoginAttempt, Session, SessionBuilder, events_from_json_lines,
    sessions_from_events,
};
pub use progress::{Progress, no_progress};
pub use snowshoe::{SnowshoeParams, SnowshoeResult, snowshoe, snowshoe_parallel};
