//! Longtail analysis (spec 3.1): rare commands, anomalous command sequences (TF-IDF + cosine
//! DBSCAN) and outlier sessions (DBSCAN on `[duration, command_count, login_attempts,
//! file_operations]`), with the original's formulas and defaults.
//!
//! The computation is split so that a long window need not be recomputed from raw events:
//! [`DayAggregate::from_sessions`] reduces one day of sessions to command counts, sequences and
//! per-session features; aggregates serialise with serde, [`DayAggregate::merge`] combines them,
//! and [`longtail_from_aggregates`] finishes the analysis.
//! [`longtail`] is the direct path and goes through the same steps.
//!
//! Order is defined (the original's depended on database row order): sessions are taken in
//! session-id order and commands in log order within a session.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Instant;

use chrono::{DateTime, NaiveDate, Utc};
use ndarray::Array2;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::dbscan::{NOISE, dbscan_cosine_progress, dbscan_euclidean};
use crate::error::AnalysisError;
use crate::ipclass::{is_link_local, is_loopback, parse_ip};
use crate::model::Session;
use crate::progress::{Progress, report};
use crate::text::clean_command;
use crate::tfidf::{TfidfConfig, fit_transform_weighted};

/// Longtail thresholds; the defaults are the original's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LongtailParams {
    /// A command is rare when its count is at most `int(total * rarity_threshold)`.
    pub rarity_threshold: f64,
    /// Number of leading commands that form a session's sequence.
    pub sequence_window: usize,
    /// DBSCAN radius (cosine distance for sequences, euclidean for sessions).
    pub cluster_eps: f64,
    /// DBSCAN `min_samples`; also the minimum number of sequences or sessions to cluster.
    pub min_cluster_size: usize,
    /// Kept for the result's parameter echo; unused by the original too.
    pub entropy_threshold: f64,
    /// Kept for the result's parameter echo; unused by the original too.
    pub sensitivity_threshold: f64,
    /// Cluster sequences with TF-IDF + DBSCAN; when off, sequences seen once are anomalous.
    pub vector_analysis_enabled: bool,
    /// TF-IDF settings for sequences.
    pub tfidf: TfidfConfig,
}

impl Default for LongtailParams {
    fn default() -> Self {
        LongtailParams {
            rarity_threshold: 0.05,
            sequence_window: 5,
            cluster_eps: 0.3,
            min_cluster_size: 5,
            entropy_threshold: 0.8,
            sensitivity_threshold: 0.95,
            vector_analysis_enabled: true,
            tfidf: TfidfConfig::longtail(),
        }
    }
}

impl LongtailParams {
    /// Checks the ranges; the analyses refuse invalid parameters with a typed error.
    pub fn validate(&self) -> Result<(), AnalysisError> {
        let bad = |name, reason: &str| {
            Err(AnalysisError::InvalidParameter {
                name,
                reason: reason.to_string(),
            })
        };
        if !(self.rarity_threshold.is_finite() && (0.0..=1.0).contains(&self.rarity_threshold)) {
            return bad("rarity_threshold", "must be within [0, 1]");
        }
        if self.sequence_window == 0 {
            return bad("sequence_window", "must be at least 1");
        }
        if !(self.cluster_eps.is_finite() && self.cluster_eps > 0.0) {
            return bad("cluster_eps", "must be a positive number");
        }
        if self.min_cluster_size == 0 {
            return bad("min_cluster_size", "must be at least 1");
        }
        Ok(())
    }
}

/// Per-session characteristics used by the rare-command metadata and the outlier clustering.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionFeatures {
    /// Session id.
    pub session_id: String,
    /// Source IP (loopback and link-local dropped, as the original).
    pub src_ip: Option<String>,
    /// Session start.
    pub timestamp: DateTime<Utc>,
    /// `end - start` in seconds.
    pub duration: f64,
    /// Number of non-empty commands.
    pub command_count: u32,
    /// Login events.
    pub login_attempts: u32,
    /// File transfer events.
    pub file_operations: u32,
}

/// Count and occurrences of one distinct command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandStat {
    /// Occurrences over all sessions.
    pub count: u64,
    /// (session id, position) of the first occurrence; defines the original's insertion order.
    pub first: (String, u32),
    /// Sessions it occurs in, sorted, without repeats.
    pub sessions: Vec<String>,
}

/// Mergeable partial aggregate of one day (or any set) of sessions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DayAggregate {
    /// Format version of this structure.
    pub version: u32,
    /// Days covered (sorted).
    pub days: Vec<NaiveDate>,
    /// The sequence window used to build `sequences`.
    pub sequence_window: usize,
    /// Per-session features, sorted by session id.
    pub sessions: Vec<SessionFeatures>,
    /// (session id, first-W commands joined by a space) for sessions with at least W commands,
    /// sorted by session id.
    pub sequences: Vec<(String, String)>,
    /// Distinct cleaned commands.
    pub commands: BTreeMap<String, CommandStat>,
}

const AGGREGATE_VERSION: u32 = 1;

fn session_ip(s: &Session) -> Option<String> {
    let ip = s.src_ip.as_deref()?;
    let parsed = parse_ip(ip)?;
    (!is_loopback(&parsed) && !is_link_local(&parsed)).then(|| ip.to_string())
}

impl DayAggregate {
    /// Reduces sessions (any order) to an aggregate; `day` labels it (usually the sessions' start date).
    pub fn from_sessions(
        day: Option<NaiveDate>,
        sessions: &[Session],
        params: &LongtailParams,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<DayAggregate, AnalysisError> {
        params.validate()?;
        let mut order: Vec<&Session> = sessions.iter().collect();
        order.sort_by(|a, b| a.session_id.cmp(&b.session_id));
        let mut seen = HashSet::new();
        let mut agg = DayAggregate {
            version: AGGREGATE_VERSION,
            days: day.into_iter().collect(),
            sequence_window: params.sequence_window,
            sessions: Vec::with_capacity(order.len()),
            sequences: Vec::new(),
            commands: BTreeMap::new(),
        };
        let total = order.len();
        for (i, s) in order.into_iter().enumerate() {
            if !seen.insert(s.session_id.as_str()) {
                return Err(AnalysisError::AggregateMismatch(format!(
                    "session {} given twice",
                    s.session_id
                )));
            }
            let cmds: Vec<String> = s
                .commands
                .iter()
                .map(|c| clean_command(c))
                .filter(|c| !c.is_empty())
                .collect();
            for (pos, c) in cmds.iter().enumerate() {
                let stat = agg
                    .commands
                    .entry(c.clone())
                    .or_insert_with(|| CommandStat {
                        count: 0,
                        first: (s.session_id.clone(), pos as u32),
                        sessions: Vec::new(),
                    });
                stat.count += 1;
                if stat.sessions.last() != Some(&s.session_id) {
                    stat.sessions.push(s.session_id.clone());
                }
            }
            if cmds.len() >= params.sequence_window {
                let seq = cmds[..params.sequence_window].join(" ");
                if !crate::text::py_strip(&seq).is_empty() {
                    agg.sequences.push((s.session_id.clone(), seq));
                }
            }
            agg.sessions.push(SessionFeatures {
                session_id: s.session_id.clone(),
                src_ip: session_ip(s),
                timestamp: s.start,
                duration: s.duration_seconds(),
                command_count: cmds.len() as u32,
                login_attempts: s.login_attempts,
                file_operations: s.file_events,
            });
            if i % 1024 == 0 || i + 1 == total {
                report(progress, "extract", i + 1, total);
            }
        }
        Ok(agg)
    }

    /// Combines two aggregates of disjoint session sets.
    pub fn merge(mut self, other: DayAggregate) -> Result<DayAggregate, AnalysisError> {
        if self.version != other.version {
            return Err(AnalysisError::AggregateMismatch(format!(
                "versions {} and {}",
                self.version, other.version
            )));
        }
        if self.sequence_window != other.sequence_window {
            return Err(AnalysisError::AggregateMismatch(format!(
                "sequence windows {} and {}",
                self.sequence_window, other.sequence_window
            )));
        }
        let mut sessions = Vec::with_capacity(self.sessions.len() + other.sessions.len());
        {
            let (mut a, mut b) = (
                self.sessions.into_iter().peekable(),
                other.sessions.into_iter().peekable(),
            );
            loop {
                let take_a = match (a.peek(), b.peek()) {
                    (Some(x), Some(y)) => {
                        if x.session_id == y.session_id {
                            return Err(AnalysisError::AggregateMismatch(format!(
                                "session {} is in both aggregates",
                                x.session_id
                            )));
                        }
                        x.session_id < y.session_id
                    }
                    (Some(_), None) => true,
                    (None, Some(_)) => false,
                    (None, None) => break,
                };
                sessions.push(if take_a { a.next() } else { b.next() }.expect("peeked"));
            }
        }
        self.sessions = sessions;
        self.sequences.extend(other.sequences);
        self.sequences.sort_by(|x, y| x.0.cmp(&y.0));
        for (cmd, stat) in other.commands {
            match self.commands.get_mut(&cmd) {
                None => {
                    self.commands.insert(cmd, stat);
                }
                Some(mine) => {
                    mine.count += stat.count;
                    if stat.first < mine.first {
                        mine.first = stat.first;
                    }
                    mine.sessions.extend(stat.sessions);
                    mine.sessions.sort();
                    mine.sessions.dedup();
                }
            }
        }
        self.days.extend(other.days);
        self.days.sort();
        self.days.dedup();
        Ok(self)
    }
}

/// Session metadata attached to a rare command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RareCommandSession {
    /// Session id.
    pub session_id: String,
    /// Source IP.
    pub src_ip: Option<String>,
    /// Session start.
    pub timestamp: DateTime<Utc>,
    /// Session duration in seconds.
    pub duration: f64,
    /// Commands in the session.
    pub command_count: u32,
}

/// One rare command (`detection_type = "rare_command"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RareCommand {
    /// The command (as stored: defanged when the sessions were built that way).
    pub command: String,
    /// Occurrences.
    pub frequency: u64,
    /// `frequency / total commands`.
    pub rarity_score: f64,
    /// Always `rare_command`.
    pub detection_type: String,
    /// Sessions where it occurs.
    pub sessions: Vec<RareCommandSession>,
    /// `sessions.len()`.
    pub session_count: usize,
}

/// One anomalous sequence (`detection_type = "anomalous_sequence"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnomalousSequence {
    /// The first-W commands joined by a space.
    pub sequence: String,
    /// `-1` (DBSCAN noise); absent in the frequency fallback.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub cluster_label: Option<i32>,
    /// Present (1) only in the frequency fallback used when vector analysis is off.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub frequency: Option<u64>,
    /// Always `anomalous_sequence`.
    pub detection_type: String,
    /// Always 1.0.
    pub anomaly_score: f64,
}

/// One outlier session (`detection_type = "outlier_session"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutlierSession {
    /// Session id.
    pub session_id: String,
    /// Source IP.
    pub src_ip: Option<String>,
    /// Duration in seconds.
    pub duration: f64,
    /// Commands.
    pub command_count: u32,
    /// Login events.
    pub login_attempts: u32,
    /// File transfer events.
    pub file_operations: u32,
    /// `-1`.
    pub cluster_label: i32,
    /// Always `outlier_session`.
    pub detection_type: String,
    /// Always 1.0.
    pub anomaly_score: f64,
}

/// The longtail result, with the fields of the original's `LongtailAnalysisResult`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct LongtailResult {
    /// `rare_commands.len()`.
    pub rare_command_count: usize,
    /// `anomalous_sequences.len()`.
    pub anomalous_sequence_count: usize,
    /// `outlier_sessions.len()`.
    pub outlier_session_count: usize,
    /// Always 0 (the original's stub).
    pub emerging_pattern_count: usize,
    /// Always 0 (the original's stub).
    pub high_entropy_payload_count: usize,
    /// Total command occurrences.
    pub total_events_analyzed: u64,
    /// Sessions given.
    pub total_sessions_analyzed: usize,
    /// Wall time of the analysis step.
    pub analysis_duration_seconds: f64,
    /// Not measured by this crate (0.0); the worker may fill it.
    pub memory_usage_mb: f64,
    /// Whether sequences were clustered.
    pub vector_analysis_enabled: bool,
    /// Always false here (no pgvector in a pure crate).
    pub pgvector_available: bool,
    /// Rare commands, least frequent first.
    pub rare_commands: Vec<RareCommand>,
    /// Anomalous sequences.
    pub anomalous_sequences: Vec<AnomalousSequence>,
    /// Outlier sessions, in session-id order.
    pub outlier_sessions: Vec<OutlierSession>,
    /// Always empty (the original's stub).
    pub emerging_patterns: Vec<Value>,
    /// Always empty (the original's stub).
    pub high_entropy_payloads: Vec<Value>,
    /// Parameters, counts, data characteristics and performance, as the original.
    pub statistical_summary: Value,
    /// Password intelligence is not computed here (needs enrichment): 0.0.
    pub password_indicator_score: f64,
    /// Empty object.
    pub password_intel: Value,
    /// One-line summary for people (this project's addition; the original stores none).
    pub recommendation: String,
}

/// Longtail over sessions (the direct path).
pub fn longtail(
    sessions: &[Session],
    params: &LongtailParams,
    progress: &mut dyn FnMut(Progress),
) -> Result<LongtailResult, AnalysisError> {
    let agg = DayAggregate::from_sessions(None, sessions, params, progress)?;
    longtail_from_aggregate(&agg, params, progress)
}

/// Longtail over per-day aggregates: merges them, then analyses.
pub fn longtail_from_aggregates(
    aggregates: Vec<DayAggregate>,
    params: &LongtailParams,
    progress: &mut dyn FnMut(Progress),
) -> Result<LongtailResult, AnalysisError> {
    let mut iter = aggregates.into_iter();
    let Some(mut merged) = iter.next() else {
        let empty = DayAggregate::from_sessions(None, &[], params, progress)?;
        return longtail_from_aggregate(&empty, params, progress);
    };
    let total = iter.len() + 1;
    for (i, a) in iter.enumerate() {
        merged = merged.merge(a)?;
        report(progress, "merge", i + 2, total);
    }
    longtail_from_aggregate(&merged, params, progress)
}

/// Longtail over one (merged) aggregate.
pub fn longtail_from_aggregate(
    agg: &DayAggregate,
    params: &LongtailParams,
    progress: &mut dyn FnMut(Progress),
) -> Result<LongtailResult, AnalysisError> {
    params.validate()?;
    if agg.sequence_window != params.sequence_window {
        return Err(AnalysisError::AggregateMismatch(format!(
            "aggregate built with sequence_window {}, analysis asks for {}",
            agg.sequence_window, params.sequence_window
        )));
    }
    let started = Instant::now();
    let mut result = LongtailResult {
        total_sessions_analyzed: agg.sessions.len(),
        vector_analysis_enabled: params.vector_analysis_enabled,
        statistical_summary: json!({}),
        password_intel: json!({}),
        ..Default::default()
    };
    if agg.sessions.is_empty() {
        result.recommendation = recommendation(&result);
        return Ok(result);
    }
    let total_commands: u64 = agg.commands.values().map(|c| c.count).sum();
    result.total_events_analyzed = total_commands;
    if total_commands == 0 {
        result.statistical_summary = json!({
            "analysis_method": "limited_analysis",
            "error": "No commands extracted",
            "total_sessions": agg.sessions.len(),
        });
        result.analysis_duration_seconds = started.elapsed().as_secs_f64();
        result.recommendation = recommendation(&result);
        return Ok(result);
    }

    result.rare_commands = rare_commands(agg, params, total_commands);
    report(progress, "rare_commands", 1, 1);
    result.anomalous_sequences = anomalous_sequences(agg, params, progress)?;
    report(progress, "anomalous_sequences", 1, 1);
    result.outlier_sessions = outlier_sessions(agg, params)?;
    report(progress, "outlier_sessions", 1, 1);

    result.rare_command_count = result.rare_commands.len();
    result.anomalous_sequence_count = result.anomalous_sequences.len();
    result.outlier_session_count = result.outlier_sessions.len();
    result.analysis_duration_seconds = started.elapsed().as_secs_f64();
    let secs = result.analysis_duration_seconds;
    result.statistical_summary = json!({
        "analysis_parameters": {
            "rarity_threshold": params.rarity_threshold,
            "sequence_window": params.sequence_window,
            "cluster_eps": params.cluster_eps,
            "min_cluster_size": params.min_cluster_size,
            "entropy_threshold": params.entropy_threshold,
            "sensitivity_threshold": params.sensitivity_threshold,
            "vector_analysis_enabled": params.vector_analysis_enabled,
        },
        "detection_counts": {
            "rare_commands": result.rare_command_count,
            "anomalous_sequences": result.anomalous_sequence_count,
            "outlier_sessions": result.outlier_session_count,
            "emerging_patterns": 0,
            "high_entropy_payloads": 0,
        },
        "data_characteristics": {
            "total_commands": total_commands,
            "unique_commands": agg.commands.len(),
            "total_sessions": agg.sessions.len(),
            "command_sequences": agg.sequences.len(),
        },
        "performance_metrics": {
            "analysis_duration_seconds": secs,
            "events_per_second": if secs > 0.0 { total_commands as f64 / secs } else { 0.0 },
        },
    });
    result.recommendation = recommendation(&result);
    Ok(result)
}

fn rare_commands(agg: &DayAggregate, params: &LongtailParams, total: u64) -> Vec<RareCommand> {
    // Python's int() truncation of a non-negative float.
    let threshold = (total as f64 * params.rarity_threshold).floor() as u64;
    let by_id: HashMap<&str, &SessionFeatures> = agg
        .sessions
        .iter()
        .map(|s| (s.session_id.as_str(), s))
        .collect();
    let mut rare: Vec<(&String, &CommandStat)> = agg
        .commands
        .iter()
        .filter(|(_, st)| st.count <= threshold)
        .collect();
    rare.sort_by(|a, b| {
        a.1.count
            .cmp(&b.1.count)
            .then_with(|| a.1.first.cmp(&b.1.first))
    });
    rare.into_iter()
        .map(|(cmd, st)| {
            let sessions: Vec<RareCommandSession> = st
                .sessions
                .iter()
                .filter_map(|sid| by_id.get(sid.as_str()))
                .map(|f| RareCommandSession {
                    session_id: f.session_id.clone(),
                    src_ip: f.src_ip.clone(),
                    timestamp: f.timestamp,
                    duration: f.duration,
                    command_count: f.command_count,
                })
                .collect();
            RareCommand {
                command: cmd.clone(),
                frequency: st.count,
                rarity_score: st.count as f64 / total as f64,
                detection_type: "rare_command".into(),
                session_count: sessions.len(),
                sessions,
            }
        })
        .collect()
}

fn anomalous_sequences(
    agg: &DayAggregate,
    params: &LongtailParams,
    progress: &mut dyn FnMut(Progress),
) -> Result<Vec<AnomalousSequence>, AnalysisError> {
    if agg.sequences.len() < params.min_cluster_size {
        return Ok(Vec::new());
    }
    // Distinct sequences with multiplicity, in first-seen order.
    let mut index: HashMap<&str, usize> = HashMap::new();
    let mut distinct: Vec<&str> = Vec::new();
    let mut weights: Vec<u64> = Vec::new();
    let mut of_seq = Vec::with_capacity(agg.sequences.len());
    for (_, seq) in &agg.sequences {
        let i = *index.entry(seq.as_str()).or_insert_with(|| {
            distinct.push(seq.as_str());
            weights.push(0);
            distinct.len() - 1
        });
        weights[i] += 1;
        of_seq.push(i);
    }
    if !params.vector_analysis_enabled {
        return Ok(distinct
            .iter()
            .zip(&weights)
            .filter(|(_, w)| **w == 1)
            .map(|(s, _)| AnomalousSequence {
                sequence: s.to_string(),
                cluster_label: None,
                frequency: Some(1),
                detection_type: "anomalous_sequence".into(),
                anomaly_score: 1.0,
            })
            .collect());
    }
    let rows = match fit_transform_weighted(&distinct, &weights, &params.tfidf) {
        Ok((_, rows)) => rows,
        // The original catches the vectoriser's ValueError and reports no sequences.
        Err(AnalysisError::EmptyVocabulary) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let w: Vec<f64> = weights.iter().map(|&w| w as f64).collect();
    let labels = dbscan_cosine_progress(
        &rows,
        &w,
        params.cluster_eps,
        params.min_cluster_size,
        &mut |done, total| report(progress, "anomalous_sequences", done, total),
    )?;
    Ok(agg
        .sequences
        .iter()
        .zip(&of_seq)
        .filter(|(_, u)| labels[**u] == NOISE)
        .map(|((_, seq), _)| AnomalousSequence {
            sequence: seq.clone(),
            cluster_label: Some(NOISE),
            frequency: None,
            detection_type: "anomalous_sequence".into(),
            anomaly_score: 1.0,
        })
        .collect())
}

fn outlier_sessions(
    agg: &DayAggregate,
    params: &LongtailParams,
) -> Result<Vec<OutlierSession>, AnalysisError> {
    let n = agg.sessions.len();
    if n < params.min_cluster_size {
        return Ok(Vec::new());
    }
    let mut x = Array2::<f64>::zeros((n, 4));
    for (i, s) in agg.sessions.iter().enumerate() {
        x[[i, 0]] = s.duration;
        x[[i, 1]] = f64::from(s.command_count);
        x[[i, 2]] = f64::from(s.login_attempts);
        x[[i, 3]] = f64::from(s.file_operations);
    }
    let labels = dbscan_euclidean(x.view(), params.cluster_eps, params.min_cluster_size)?;
    Ok(agg
        .sessions
        .iter()
        .zip(labels)
        .filter(|(_, l)| *l == NOISE)
        .map(|(s, l)| OutlierSession {
            session_id: s.session_id.clone(),
            src_ip: s.src_ip.clone(),
            duration: s.duration,
            command_count: s.command_count,
            login_attempts: s.login_attempts,
            file_operations: s.file_operations,
            cluster_label: l,
            detection_type: "outlier_session".into(),
            anomaly_score: 1.0,
        })
        .collect())
}

fn recommendation(r: &LongtailResult) -> String {
    if r.total_sessions_analyzed == 0 {
        return "NO DATA: No sessions in the window.".into();
    }
    if r.total_events_analyzed == 0 {
        return "NO DATA: No commands in the window; only session counts were analysed.".into();
    }
    let found = r.rare_command_count + r.anomalous_sequence_count + r.outlier_session_count;
    if found == 0 {
        return "NO DETECTION: No longtail anomalies found.".into();
    }
    format!(
        "REVIEW: {} rare commands, {} anomalous command sequences and {} outlier sessions found.",
        r.rare_command_count, r.anomalous_sequence_count, r.outlier_session_count
    )
}
