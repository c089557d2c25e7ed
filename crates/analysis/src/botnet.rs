//! Botnet coordination detection (spec 3.3): shared credentials, similar command texts
//! (TF-IDF cosine), bursts in time and geographic clustering; the original's formulas,
//! defaults, texts and result shape.
//!
//! Differences from the original, on purpose: IPs come from the sessions' events (bug F8), the
//! result is plain serialisable data with sorted lists instead of Python sets (bug F9), and the
//! command text that stands for an IP is defined: the commands of the IP's earliest session
//! with commands (earliest start, then lowest session id), where the original kept whichever
//! session its query returned last.
//!
//! [`botnet_parallel`] runs the session sort and the search for similar IP pairs on a bounded
//! rayon pool; its result equals [`botnet`]'s.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::dbscan::{CosineIndex, Scratch};
use crate::error::AnalysisError;
use crate::ipclass::{is_link_local, is_loopback, parse_ip};
use crate::model::Session;
use crate::par::Pool;
use crate::progress::{Progress, report};
use crate::snowshoe::{AnalysisMetadata, timing_indicators};
use crate::stats::round_to;
use crate::tfidf::{SparseRow, TfidfConfig, fit_transform_weighted};

/// Botnet thresholds; the defaults are the original's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BotnetParams {
    /// A credential used by at least this many sessions counts as reused.
    pub credential_reuse_threshold: usize,
    /// Pairs of IPs with cosine similarity at least this are "similar".
    pub command_similarity_threshold: f64,
    /// Timing DBSCAN radius in hours.
    pub time_cluster_eps: f64,
    /// Timing DBSCAN `min_samples`, and minimum IPs for the timing analysis.
    pub min_cluster_size: usize,
    /// Diversity at or below this counts as geographic clustering.
    pub geographic_cluster_threshold: f64,
    /// Score at or above this is "likely botnet".
    pub sensitivity_threshold: f64,
}

impl Default for BotnetParams {
    fn default() -> Self {
        BotnetParams {
            credential_reuse_threshold: 3,
            command_similarity_threshold: 0.7,
            time_cluster_eps: 0.5,
            min_cluster_size: 3,
            geographic_cluster_threshold: 0.3,
            sensitivity_threshold: 0.6,
        }
    }
}

/// Credential indicators.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct CredentialIndicators {
    /// IPs that used a reused credential (sorted).
    pub reused_credentials: Vec<String>,
    /// Sessions (with an IP) using reused credentials.
    pub credential_reuse_count: usize,
    /// Sessions (with an IP) with a successful login.
    pub total_credential_ips: usize,
    /// `credential_reuse_count / total_credential_ips`.
    pub reuse_ratio: f64,
    /// Any reused credential.
    pub has_credential_reuse: bool,
}

/// Command similarity indicators.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct CommandIndicators {
    /// IPs in at least one similar pair (sorted).
    pub similar_commands: Vec<String>,
    /// Same as `avg_similarity`.
    pub similarity_score: f64,
    /// Any similar pair.
    pub has_similar_commands: bool,
    /// Mean cosine similarity over all IP pairs.
    pub avg_similarity: f64,
}

/// Timing indicators.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct BotnetTimingIndicators {
    /// Any cluster.
    pub has_clustering: bool,
    /// Clusters found.
    pub cluster_count: usize,
    /// Size of the largest cluster.
    pub largest_cluster_size: usize,
    /// `clustered_points / total points`.
    pub coordination_score: f64,
    /// Points in some cluster.
    pub clustered_points: usize,
}

/// Geographic indicators.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct BotnetGeographicIndicators {
    /// Distinct countries (sorted).
    pub countries: Vec<String>,
    /// Distinct ASNs (sorted).
    pub asns: Vec<String>,
    /// `countries.len()`.
    pub country_count: usize,
    /// `asns.len()`.
    pub asn_count: usize,
    /// `country_count / |ips|`.
    pub country_diversity: f64,
    /// `asn_count / |ips|`.
    pub asn_diversity: f64,
    /// `1 - max(country_diversity, asn_diversity)`.
    pub clustering_score: f64,
    /// Either diversity at or below the threshold.
    pub is_clustered: bool,
}

/// All botnet indicators.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct BotnetIndicators {
    /// Credentials.
    pub credentials: CredentialIndicators,
    /// Commands.
    pub commands: CommandIndicators,
    /// Timing.
    pub timing: BotnetTimingIndicators,
    /// Geography.
    pub geographic: BotnetGeographicIndicators,
}

/// The botnet result, the original's shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct BotnetResult {
    /// `coordination_score >= sensitivity_threshold`.
    pub is_likely_botnet: bool,
    /// Score rounded to 6 decimals.
    pub coordination_score: f64,
    /// Same as `indicators.credentials.reused_credentials`.
    pub credential_reuse_ips: Vec<String>,
    /// Same as `indicators.commands.similar_commands`.
    pub similar_command_ips: Vec<String>,
    /// Same as `indicators.timing.has_clustering`.
    pub coordinated_timing: bool,
    /// Same as `indicators.geographic.is_clustered`.
    pub geographic_clustering: bool,
    /// Text for people.
    pub recommendation: String,
    /// Details.
    pub indicators: BotnetIndicators,
    /// Run metadata.
    pub analysis_metadata: AnalysisMetadata,
    /// Why the analysis stopped early, as the original reports it.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<String>,
}

fn empty_result(message: &str, window_hours: f64) -> BotnetResult {
    BotnetResult {
        recommendation: "ERROR: Unable to complete analysis".into(),
        analysis_metadata: AnalysisMetadata {
            window_hours,
            ..Default::default()
        },
        error: Some(message.into()),
        ..Default::default()
    }
}

#[derive(Default)]
struct IpData {
    timestamps: Vec<f64>,
    countries: BTreeSet<String>,
    asns: BTreeSet<String>,
}

/// Botnet detection over the sessions of a window (taken in session-id order).
///
/// The parallel loops run on the rayon pool this is called from (a worker's pool sized by its
/// concurrency), and serially outside one; the result does not depend on the threads.
pub fn botnet(
    sessions: &[Session],
    window_hours: f64,
    params: &BotnetParams,
    progress: &mut dyn FnMut(Progress),
) -> Result<BotnetResult, AnalysisError> {
    botnet_in(sessions, window_hours, params, &Pool::current(), progress)
}

/// As [`botnet()`], with its parallel loops on a pool of `threads` threads made for this call
/// (1 = serial, 0 is an error), wherever it is called from; the result is the same.
pub fn botnet_parallel(
    sessions: &[Session],
    window_hours: f64,
    params: &BotnetParams,
    threads: usize,
    progress: &mut dyn FnMut(Progress),
) -> Result<BotnetResult, AnalysisError> {
    botnet_in(
        sessions,
        window_hours,
        params,
        &Pool::new(threads)?,
        progress,
    )
}

fn botnet_in(
    sessions: &[Session],
    window_hours: f64,
    params: &BotnetParams,
    pool: &Pool,
    progress: &mut dyn FnMut(Progress),
) -> Result<BotnetResult, AnalysisError> {
    if !(params.time_cluster_eps.is_finite() && params.time_cluster_eps > 0.0) {
        return Err(AnalysisError::InvalidParameter {
            name: "time_cluster_eps",
            reason: "must be a positive number of hours".into(),
        });
    }
    if params.min_cluster_size == 0 {
        return Err(AnalysisError::InvalidParameter {
            name: "min_cluster_size",
            reason: "must be at least 1".into(),
        });
    }
    if sessions.len() < 10 {
        return Ok(empty_result(
            "Insufficient session data for analysis",
            window_hours,
        ));
    }
    let order = crate::par::sorted_by_session_id(sessions, pool);

    let mut ip_order: Vec<String> = Vec::new();
    let mut ips: HashMap<String, IpData> = HashMap::new();
    let mut cred_order: Vec<(String, String)> = Vec::new();
    let mut cred_ips: HashMap<(String, String), Vec<String>> = HashMap::new();
    // ip -> (start, session id, commands) of its earliest session with commands.
    let mut cmd_order: Vec<String> = Vec::new();
    let mut command_data: HashMap<String, (f64, &str, &[String])> = HashMap::new();
    let total = order.len();
    for (i, s) in order.into_iter().enumerate() {
        let Some(ip) = s.src_ip.as_deref() else {
            continue;
        };
        let Some(parsed) = parse_ip(ip) else { continue };
        if is_loopback(&parsed) || is_link_local(&parsed) {
            continue;
        }
        let d = ips.entry(ip.to_string()).or_insert_with(|| {
            ip_order.push(ip.to_string());
            IpData::default()
        });
        d.timestamps.push(s.start_epoch());
        if let Some(c) = &s.country {
            d.countries.insert(c.clone());
        }
        if let Some(a) = &s.asn {
            d.asns.insert(a.clone());
        }
        if let Some((u, p)) = s.first_success_credentials() {
            let key = (u.to_string(), p.to_string());
            let list = cred_ips.entry(key.clone()).or_insert_with(|| {
                cred_order.push(key);
                Vec::new()
            });
            list.push(ip.to_string());
        }
        if !s.commands.is_empty() {
            let start = s.start_epoch();
            match command_data.get_mut(ip) {
                None => {
                    cmd_order.push(ip.to_string());
                    command_data.insert(ip.to_string(), (start, &s.session_id, &s.commands));
                }
                Some(cur) => {
                    if (start, s.session_id.as_str()) < (cur.0, cur.1) {
                        *cur = (start, &s.session_id, &s.commands);
                    }
                }
            }
        }
        if i % 4096 == 0 || i + 1 == total {
            report(progress, "extract", i + 1, total);
        }
    }
    if ips.len() < 5 {
        let mut r = empty_result(
            "Insufficient IP diversity for coordination analysis",
            window_hours,
        );
        r.analysis_metadata.total_sessions = sessions.len();
        r.analysis_metadata.unique_ips = ips.len();
        return Ok(r);
    }

    // Credentials.
    let mut reused: BTreeSet<String> = BTreeSet::new();
    let (mut reuse_count, mut total_cred) = (0usize, 0usize);
    for key in &cred_order {
        let list = &cred_ips[key];
        if list.len() >= params.credential_reuse_threshold {
            reused.extend(list.iter().cloned());
            reuse_count += list.len();
        }
        total_cred += list.len();
    }
    let credentials = CredentialIndicators {
        has_credential_reuse: !reused.is_empty(),
        reused_credentials: reused.into_iter().collect(),
        credential_reuse_count: reuse_count,
        total_credential_ips: total_cred,
        reuse_ratio: if total_cred > 0 {
            reuse_count as f64 / total_cred as f64
        } else {
            0.0
        },
    };

    // Commands.
    report(progress, "command_similarity", 0, 1);
    let texts: Vec<(String, String)> = cmd_order
        .iter()
        .map(|ip| (ip.clone(), command_data[ip].2.join(" ")))
        .collect();
    let commands = command_similarity(&texts, params.command_similarity_threshold, pool)?;
    report(progress, "command_similarity", 1, 1);

    // Timing.
    let timing = if ips.len() < params.min_cluster_size {
        BotnetTimingIndicators::default()
    } else {
        let times: Vec<f64> = ip_order
            .iter()
            .flat_map(|ip| ips[ip].timestamps.iter().copied())
            .collect();
        let t = timing_indicators(
            &times,
            params.time_cluster_eps * 3600.0,
            params.min_cluster_size,
            0.0,
            pool,
        )?;
        BotnetTimingIndicators {
            has_clustering: t.cluster_count > 0,
            cluster_count: t.cluster_count,
            largest_cluster_size: t.largest_cluster_size,
            coordination_score: t.time_coordination_score,
            clustered_points: t.clustered_points,
        }
    };
    report(progress, "timing", 1, 1);

    // Geography.
    let n_ips = ips.len() as f64;
    let countries: BTreeSet<String> = ips
        .values()
        .flat_map(|d| d.countries.iter().cloned())
        .collect();
    let asns: BTreeSet<String> = ips.values().flat_map(|d| d.asns.iter().cloned()).collect();
    let cd = countries.len() as f64 / n_ips;
    let ad = asns.len() as f64 / n_ips;
    let geographic = BotnetGeographicIndicators {
        country_count: countries.len(),
        asn_count: asns.len(),
        countries: countries.into_iter().collect(),
        asns: asns.into_iter().collect(),
        country_diversity: cd,
        asn_diversity: ad,
        clustering_score: 1.0 - cd.max(ad),
        is_clustered: cd <= params.geographic_cluster_threshold
            || ad <= params.geographic_cluster_threshold,
    };

    let cred_score = if credentials.has_credential_reuse {
        1.0
    } else {
        0.0
    };
    let score = (0.4 * cred_score
        + 0.3 * commands.avg_similarity
        + 0.2 * timing.coordination_score
        + 0.1 * geographic.clustering_score)
        .min(1.0);
    let recommendation =
        botnet_recommendation(score, &credentials, &commands, &timing, &geographic);
    Ok(BotnetResult {
        is_likely_botnet: score >= params.sensitivity_threshold,
        coordination_score: round_to(score, 6),
        credential_reuse_ips: credentials.reused_credentials.clone(),
        similar_command_ips: commands.similar_commands.clone(),
        coordinated_timing: timing.has_clustering,
        geographic_clustering: geographic.is_clustered,
        recommendation,
        indicators: BotnetIndicators {
            credentials,
            commands,
            timing,
            geographic,
        },
        analysis_metadata: AnalysisMetadata {
            total_sessions: sessions.len(),
            unique_ips: ips.len(),
            window_hours,
        },
        error: None,
    })
}

/// Mean pairwise cosine similarity of TF-IDF vectors of the per-IP command texts.
///
/// IPs with identical texts share one vector; the pair sum comes from the sum of the vectors
/// (linear time), and similar pairs from an exact prefix-filter index (see [`CosineIndex`]),
/// so the result equals the all-pairs computation without its quadratic cost.
fn command_similarity(
    texts: &[(String, String)],
    threshold: f64,
    pool: &Pool,
) -> Result<CommandIndicators, AnalysisError> {
    if texts.len() < 2
        || texts
            .iter()
            .all(|(_, t)| crate::text::py_strip(t).is_empty())
    {
        return Ok(CommandIndicators::default());
    }
    let mut index: HashMap<&str, usize> = HashMap::new();
    let mut distinct: Vec<&str> = Vec::new();
    let mut members: Vec<Vec<&str>> = Vec::new();
    for (ip, t) in texts {
        let i = *index.entry(t.as_str()).or_insert_with(|| {
            distinct.push(t.as_str());
            members.push(Vec::new());
            distinct.len() - 1
        });
        members[i].push(ip.as_str());
    }
    let weights: Vec<u64> = members.iter().map(|m| m.len() as u64).collect();
    let rows = match fit_transform_weighted(&distinct, &weights, &TfidfConfig::botnet()) {
        Ok((_, rows)) => rows,
        Err(AnalysisError::EmptyVocabulary) => return Ok(CommandIndicators::default()),
        Err(e) => return Err(e),
    };
    let n = texts.len() as f64;
    let pairs = n * (n - 1.0) / 2.0;
    // Sum over all IP pairs of the dot product: (|sum of vectors|^2 - sum of |vector|^2) / 2,
    // with each distinct vector counted once per IP that has it.
    let dims = rows
        .iter()
        .flat_map(|r| r.indices.iter())
        .map(|&i| i as usize + 1)
        .max()
        .unwrap_or(0);
    let mut total = vec![0.0f64; dims];
    let mut self_sum = 0.0;
    for (r, &w) in rows.iter().zip(&weights) {
        let w = w as f64;
        for (&i, &v) in r.indices.iter().zip(&r.values) {
            total[i as usize] += w * v;
        }
        self_sum += w * r.norm_sq();
    }
    let total_sq: f64 = total.iter().map(|v| v * v).sum();
    let sum = ((total_sq - self_sum) / 2.0).max(0.0);
    // IPs in at least one pair at or above the threshold.
    let marked = if pool.threads() > 1 {
        let threads = pool.threads();
        pool.install(|| similar_rows_parallel(&rows, &weights, threshold, threads))
    } else {
        similar_rows(&rows, &weights, threshold)
    };
    let similar: BTreeSet<&str> = marked
        .iter()
        .enumerate()
        .filter(|(_, m)| **m)
        .flat_map(|(a, _)| members[a].iter().copied())
        .collect();
    let avg = sum / pairs;
    Ok(CommandIndicators {
        has_similar_commands: !similar.is_empty(),
        similar_commands: similar.into_iter().map(str::to_string).collect(),
        similarity_score: avg,
        avg_similarity: avg,
    })
}

/// Rows with a partner at or above `threshold`: another row, or itself when it stands for
/// several IPs (`weights[a] > 1`).
///
/// A row is marked exactly when it has such a partner (the dot product is symmetric and the
/// index returns every row that may reach the threshold), so the order in which rows search,
/// and which partner each finds first, does not change the result.
fn similar_rows(rows: &[SparseRow], weights: &[u64], threshold: f64) -> Vec<bool> {
    let mut marked = vec![false; rows.len()];
    match CosineIndex::new(rows, threshold) {
        Some(index) => {
            // Each unmarked row looks for one partner; both ends of a found pair are marked,
            // and a row already marked needs no search of its own.
            let mut scratch = Scratch::new(rows.len());
            let mut cands = Vec::new();
            for (a, &wa) in weights.iter().enumerate() {
                if marked[a] {
                    continue;
                }
                if wa > 1 && rows[a].dot(&rows[a]) >= threshold {
                    marked[a] = true;
                    continue;
                }
                cands.clear();
                index.candidates(a, &mut scratch, &mut cands);
                if let Some(&b) = cands
                    .iter()
                    .find(|&&b| b != a && rows[a].dot(&rows[b]) >= threshold)
                {
                    marked[a] = true;
                    marked[b] = true;
                }
            }
        }
        None => {
            for (a, &wa) in weights.iter().enumerate() {
                for b in a..rows.len() {
                    if (b > a || wa > 1) && rows[a].dot(&rows[b]) >= threshold {
                        marked[a] = true;
                        marked[b] = true;
                    }
                }
            }
        }
    }
    marked
}

/// [`similar_rows`] on the current rayon pool: the rows are dealt round-robin to
/// `16 * threads` jobs (so rows with long candidate lists spread over the threads), each with
/// its own scratch space; marks are shared atomics, read only to skip searches.
fn similar_rows_parallel(
    rows: &[SparseRow],
    weights: &[u64],
    threshold: f64,
    threads: usize,
) -> Vec<bool> {
    let n = rows.len();
    let marked: Vec<AtomicBool> = (0..n).map(|_| AtomicBool::new(false)).collect();
    let mark = |i: usize| marked[i].store(true, Ordering::Relaxed);
    let jobs = (16 * threads).clamp(1, n.max(1));
    match CosineIndex::new(rows, threshold) {
        Some(index) => (0..jobs).into_par_iter().for_each(|job| {
            let mut scratch = Scratch::new(n);
            let mut cands = Vec::new();
            for a in (job..n).step_by(jobs) {
                if marked[a].load(Ordering::Relaxed) {
                    continue;
                }
                if weights[a] > 1 && rows[a].dot(&rows[a]) >= threshold {
                    mark(a);
                    continue;
                }
                cands.clear();
                index.candidates(a, &mut scratch, &mut cands);
                if let Some(&b) = cands
                    .iter()
                    .find(|&&b| b != a && rows[a].dot(&rows[b]) >= threshold)
                {
                    mark(a);
                    mark(b);
                }
            }
        }),
        None => (0..jobs).into_par_iter().for_each(|job| {
            for a in (job..n).step_by(jobs) {
                for b in a..n {
                    if (b > a || weights[a] > 1) && rows[a].dot(&rows[b]) >= threshold {
                        mark(a);
                        mark(b);
                    }
                }
            }
        }),
    }
    marked.into_iter().map(AtomicBool::into_inner).collect()
}

fn botnet_recommendation(
    score: f64,
    cred: &CredentialIndicators,
    cmd: &CommandIndicators,
    timing: &BotnetTimingIndicators,
    geo: &BotnetGeographicIndicators,
) -> String {
    let confidence = if score >= 0.8 {
        "HIGH"
    } else if score >= 0.6 {
        "MODERATE"
    } else if score >= 0.4 {
        "LOW"
    } else {
        "MINIMAL"
    };
    let mut parts = Vec::new();
    if cred.has_credential_reuse {
        parts.push(format!(
            "credential reuse ({} IPs)",
            cred.reused_credentials.len()
        ));
    }
    if cmd.has_similar_commands {
        parts.push(format!(
            "command similarity ({} IPs)",
            cmd.similar_commands.len()
        ));
    }
    if timing.has_clustering {
        parts.push(format!(
            "temporal coordination ({} clusters)",
            timing.cluster_count
        ));
    }
    if geo.is_clustered {
        parts.push(format!(
            "geographic clustering ({} countries)",
            geo.country_count
        ));
    }
    if parts.is_empty() {
        format!("{confidence} CONFIDENCE: No clear botnet coordination patterns detected")
    } else {
        format!(
            "{confidence} CONFIDENCE: Botnet coordination detected via {}",
            parts.join(", ")
        )
    }
}
