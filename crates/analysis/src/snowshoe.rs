//! Snowshoe detection (spec 3.2): many IPs with few sessions each, bursts in time, geographic
//! spread; the original's formulas, defaults, texts and result shape.
//!
//! Differences from the original, on purpose: the IP comes from the session's events (bug F8),
//! the result is plain serialisable data (bug F9), and IP lists are sorted.
//!
//! [`snowshoe_parallel`] sorts, gathers the per-IP data in chunks and sorts the timing points on
//! a bounded rayon pool; its result equals [`snowshoe`]'s.

use std::collections::{BTreeSet, HashMap};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::dbscan::{NOISE, dbscan_1d_in};
use crate::error::AnalysisError;
use crate::ipclass::{is_loopback, is_reserved, parse_ip};
use crate::model::Session;
use crate::par::Pool;
use crate::progress::{Progress, report};
use crate::stats::{mean, population_variance, round_to};

/// Snowshoe thresholds; the defaults are the original's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SnowshoeParams {
    /// IPs with 2..=this many sessions are "low volume".
    pub single_attempt_threshold: usize,
    /// Timing DBSCAN radius in hours.
    pub time_cluster_eps: f64,
    /// Timing DBSCAN `min_samples`.
    pub min_cluster_size: usize,
    /// Diversity at or above this is "diverse".
    pub geographic_diversity_threshold: f64,
    /// Score at or above this is "likely snowshoe".
    pub sensitivity_threshold: f64,
}

impl Default for SnowshoeParams {
    fn default() -> Self {
        SnowshoeParams {
            single_attempt_threshold: 5,
            time_cluster_eps: 0.1,
            min_cluster_size: 5,
            geographic_diversity_threshold: 0.7,
            sensitivity_threshold: 0.7,
        }
    }
}

/// Volume indicators.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct VolumeIndicators {
    /// IPs with exactly one session (sorted).
    pub single_attempt_ips: Vec<String>,
    /// IPs with 2..=threshold sessions (sorted).
    pub low_volume_ips: Vec<String>,
    /// `|single| / |ips|`.
    pub single_attempt_ratio: f64,
    /// `(|single| + |low|) / |ips|`.
    pub low_volume_ratio: f64,
    /// Distinct IPs.
    pub total_ips: usize,
}

/// Timing indicators (DBSCAN over session start times).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct TimingIndicators {
    /// `cluster_count > 0` and `time_coordination_score > 0.3`.
    pub has_clustering: bool,
    /// Clusters found.
    pub cluster_count: usize,
    /// Size of the largest cluster.
    pub largest_cluster_size: usize,
    /// `clustered_points / total_points`.
    pub time_coordination_score: f64,
    /// Points in some cluster.
    pub clustered_points: usize,
    /// Points clustered.
    pub total_points: usize,
}

/// Geographic indicators.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct GeographicIndicators {
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
    /// Mean of the two diversities.
    pub diversity_score: f64,
    /// `diversity_score >= geographic_diversity_threshold`.
    pub is_diverse: bool,
}

/// Behavioural indicators (reported, not scored).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct BehavioralIndicators {
    /// Mean session duration in seconds.
    pub avg_session_duration: f64,
    /// Population variance of durations.
    pub duration_variance: f64,
    /// `1 / (1 + variance)`, or 1.0 when the variance is 0.
    pub duration_consistency: f64,
    /// Mean over IPs of the number of sessions with commands.
    pub avg_commands_per_ip: f64,
    /// Same as `duration_consistency`.
    pub behavioral_similarity_score: f64,
    /// `duration_consistency > 0.7`.
    pub is_similar_behavior: bool,
}

/// All snowshoe indicators.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct SnowshoeIndicators {
    /// Volume.
    pub volume: VolumeIndicators,
    /// Timing.
    pub timing: TimingIndicators,
    /// Geography.
    pub geographic: GeographicIndicators,
    /// Behaviour.
    pub behavioral: BehavioralIndicators,
}

/// Metadata about the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct AnalysisMetadata {
    /// Sessions given.
    pub total_sessions: usize,
    /// Distinct usable IPs.
    pub unique_ips: usize,
    /// Window length, echoed.
    pub window_hours: f64,
}

/// The snowshoe result, the original's shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct SnowshoeResult {
    /// `confidence_score >= sensitivity_threshold`.
    pub is_likely_snowshoe: bool,
    /// Score rounded to 3 decimals.
    pub confidence_score: f64,
    /// Same as `indicators.volume.single_attempt_ips`.
    pub single_attempt_ips: Vec<String>,
    /// Same as `indicators.volume.low_volume_ips`.
    pub low_volume_ips: Vec<String>,
    /// Same as `indicators.timing.has_clustering`.
    pub coordinated_timing: bool,
    /// Diversity rounded to 3 decimals.
    pub geographic_spread: f64,
    /// Text for people.
    pub recommendation: String,
    /// Details.
    pub indicators: SnowshoeIndicators,
    /// Run metadata.
    pub analysis_metadata: AnalysisMetadata,
}

/// Per-IP data gathered from sessions.
#[derive(Default)]
struct IpData {
    sessions: usize,
    timestamps: Vec<f64>,
    countries: BTreeSet<String>,
    asns: BTreeSet<String>,
    sessions_with_commands: usize,
    durations: Vec<f64>,
}

fn usable_ip(s: &Session) -> Option<String> {
    let ip = s.src_ip.as_deref()?;
    let parsed = parse_ip(ip)?;
    (!is_reserved(&parsed) && !is_loopback(&parsed)).then(|| ip.to_string())
}

/// The text for a score.
pub fn snowshoe_recommendation(score: f64) -> &'static str {
    if score >= 0.8 {
        "HIGH CONFIDENCE: Likely snowshoe attack detected. Immediate investigation recommended."
    } else if score >= 0.6 {
        "MODERATE CONFIDENCE: Potential snowshoe attack. Monitor closely and investigate."
    } else if score >= 0.4 {
        "LOW CONFIDENCE: Some snowshoe indicators present. Continue monitoring."
    } else {
        "NO DETECTION: No significant snowshoe attack indicators found."
    }
}

fn empty_result(window_hours: f64) -> SnowshoeResult {
    SnowshoeResult {
        recommendation: "NO DATA: Insufficient data for analysis".into(),
        analysis_metadata: AnalysisMetadata {
            window_hours,
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Per-IP data of a run of sessions, IPs in first-seen order.
#[derive(Default)]
struct Gathered {
    ip_order: Vec<String>,
    ips: HashMap<String, IpData>,
}

impl Gathered {
    fn add(&mut self, s: &Session) {
        let Some(ip) = usable_ip(s) else { return };
        let d = match self.ips.get_mut(&ip) {
            Some(d) => d,
            None => {
                self.ip_order.push(ip.clone());
                self.ips.entry(ip).or_default()
            }
        };
        d.sessions += 1;
        d.timestamps.push(s.start_epoch());
        if let Some(c) = &s.country {
            d.countries.insert(c.clone());
        }
        if let Some(a) = &s.asn {
            d.asns.insert(a.clone());
        }
        if s.command_events > 0 {
            d.sessions_with_commands += 1;
        }
        d.durations
            .push((s.end - s.start).num_microseconds().unwrap_or(0) as f64 / 1e6);
    }

    /// Appends the data of the sessions that follow this run's (`later`), as if they had been
    /// added one by one after it.
    fn append(&mut self, mut later: Gathered) {
        for ip in later.ip_order {
            let d = later.ips.remove(&ip).expect("every ordered IP has data");
            match self.ips.get_mut(&ip) {
                Some(mine) => {
                    mine.sessions += d.sessions;
                    mine.timestamps.extend(d.timestamps);
                    mine.countries.extend(d.countries);
                    mine.asns.extend(d.asns);
                    mine.sessions_with_commands += d.sessions_with_commands;
                    mine.durations.extend(d.durations);
                }
                None => {
                    self.ip_order.push(ip.clone());
                    self.ips.insert(ip, d);
                }
            }
        }
    }
}

/// Snowshoe detection over the sessions of a window (taken in session-id order).
///
/// The parallel loops run on the rayon pool this is called from (a worker's pool sized by its
/// concurrency), and serially outside one; the result does not depend on the threads.
pub fn snowshoe(
    sessions: &[Session],
    window_hours: f64,
    params: &SnowshoeParams,
    progress: &mut dyn FnMut(Progress),
) -> Result<SnowshoeResult, AnalysisError> {
    snowshoe_in(sessions, window_hours, params, &Pool::current(), progress)
}

/// As [`snowshoe()`], with its parallel loops on a pool of `threads` threads made for this call
/// (1 = serial, 0 is an error), wherever it is called from; the result is the same.
pub fn snowshoe_parallel(
    sessions: &[Session],
    window_hours: f64,
    params: &SnowshoeParams,
    threads: usize,
    progress: &mut dyn FnMut(Progress),
) -> Result<SnowshoeResult, AnalysisError> {
    snowshoe_in(
        sessions,
        window_hours,
        params,
        &Pool::new(threads)?,
        progress,
    )
}

fn snowshoe_in(
    sessions: &[Session],
    window_hours: f64,
    params: &SnowshoeParams,
    pool: &Pool,
    progress: &mut dyn FnMut(Progress),
) -> Result<SnowshoeResult, AnalysisError> {
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
    if sessions.is_empty() {
        return Ok(empty_result(window_hours));
    }
    let order = crate::par::sorted_by_session_id(sessions, pool);
    let total = order.len();
    let Gathered { ip_order, ips } = if pool.threads() > 1 {
        let chunk = total.div_ceil(4 * pool.threads()).max(1024);
        let parts: Vec<Gathered> = pool.install(|| {
            order
                .par_chunks(chunk)
                .map(|c| {
                    let mut g = Gathered::default();
                    c.iter().for_each(|s| g.add(s));
                    g
                })
                .collect()
        });
        let mut all = Gathered::default();
        for g in parts {
            all.append(g);
        }
        report(progress, "extract", total, total);
        all
    } else {
        let mut g = Gathered::default();
        for (i, s) in order.into_iter().enumerate() {
            g.add(s);
            if i % 4096 == 0 || i + 1 == total {
                report(progress, "extract", i + 1, total);
            }
        }
        g
    };
    if ips.len() < 10 {
        let mut r = empty_result(window_hours);
        r.analysis_metadata.total_sessions = sessions.len();
        r.analysis_metadata.unique_ips = ips.len();
        return Ok(r);
    }
    let n_ips = ips.len() as f64;

    // Volume.
    let mut single = Vec::new();
    let mut low = Vec::new();
    for ip in &ip_order {
        let c = ips[ip].sessions;
        if c == 1 {
            single.push(ip.clone());
        } else if c > 1 && c <= params.single_attempt_threshold {
            low.push(ip.clone());
        }
    }
    single.sort();
    low.sort();
    let volume = VolumeIndicators {
        single_attempt_ratio: single.len() as f64 / n_ips,
        low_volume_ratio: (single.len() + low.len()) as f64 / n_ips,
        total_ips: ips.len(),
        single_attempt_ips: single,
        low_volume_ips: low,
    };

    // Timing: all start times, grouped by IP in first-seen order.
    let times: Vec<f64> = ip_order
        .iter()
        .flat_map(|ip| ips[ip].timestamps.iter().copied())
        .collect();
    report(progress, "timing", 0, 1);
    let timing = timing_indicators(
        &times,
        params.time_cluster_eps * 3600.0,
        params.min_cluster_size,
        0.3,
        pool,
    )?;
    report(progress, "timing", 1, 1);

    // Geography.
    let countries: BTreeSet<String> = ips
        .values()
        .flat_map(|d| d.countries.iter().cloned())
        .collect();
    let asns: BTreeSet<String> = ips.values().flat_map(|d| d.asns.iter().cloned()).collect();
    let country_diversity = countries.len() as f64 / n_ips;
    let asn_diversity = asns.len() as f64 / n_ips;
    let diversity = (country_diversity + asn_diversity) / 2.0;
    let geographic = GeographicIndicators {
        country_count: countries.len(),
        asn_count: asns.len(),
        countries: countries.into_iter().collect(),
        asns: asns.into_iter().collect(),
        country_diversity,
        asn_diversity,
        diversity_score: diversity,
        is_diverse: diversity >= params.geographic_diversity_threshold,
    };

    // Behaviour.
    let durations: Vec<f64> = ip_order
        .iter()
        .flat_map(|ip| ips[ip].durations.iter().copied())
        .collect();
    let avg = mean(&durations);
    let var = population_variance(&durations);
    let consistency = if var > 0.0 { 1.0 / (1.0 + var) } else { 1.0 };
    let per_ip: Vec<f64> = ip_order
        .iter()
        .map(|ip| ips[ip].sessions_with_commands as f64)
        .collect();
    let behavioral = BehavioralIndicators {
        avg_session_duration: avg,
        duration_variance: var,
        duration_consistency: consistency,
        avg_commands_per_ip: mean(&per_ip),
        behavioral_similarity_score: consistency,
        is_similar_behavior: consistency > 0.7,
    };

    let mut score = volume.single_attempt_ratio * 0.4;
    score += geographic.diversity_score * 0.3;
    if timing.has_clustering {
        score += 0.2;
    }
    score += volume.low_volume_ratio * 0.1;
    let score = round_to(score.min(1.0), 6);
    Ok(SnowshoeResult {
        is_likely_snowshoe: score >= params.sensitivity_threshold,
        confidence_score: round_to(score, 3),
        single_attempt_ips: volume.single_attempt_ips.clone(),
        low_volume_ips: volume.low_volume_ips.clone(),
        coordinated_timing: timing.has_clustering,
        geographic_spread: round_to(geographic.diversity_score, 3),
        recommendation: snowshoe_recommendation(score).into(),
        indicators: SnowshoeIndicators {
            volume,
            timing,
            geographic,
            behavioral,
        },
        analysis_metadata: AnalysisMetadata {
            total_sessions: sessions.len(),
            unique_ips: ips.len(),
            window_hours,
        },
    })
}

/// DBSCAN over times (seconds) and its summary; `has_clustering` needs a score above `min_score`.
pub(crate) fn timing_indicators(
    times: &[f64],
    eps_seconds: f64,
    min_samples: usize,
    min_score: f64,
    pool: &Pool,
) -> Result<TimingIndicators, AnalysisError> {
    if times.len() < min_samples {
        return Ok(TimingIndicators::default());
    }
    let labels = dbscan_1d_in(times, eps_seconds, min_samples, pool)?;
    let mut sizes: HashMap<i32, usize> = HashMap::new();
    for &l in &labels {
        if l != NOISE {
            *sizes.entry(l).or_insert(0) += 1;
        }
    }
    let clustered: usize = sizes.values().sum();
    let score = clustered as f64 / times.len() as f64;
    Ok(TimingIndicators {
        has_clustering: !sizes.is_empty() && score > min_score,
        cluster_count: sizes.len(),
        largest_cluster_size: sizes.values().copied().max().unwrap_or(0),
        time_coordination_score: score,
        clustered_points: clustered,
        total_points: times.len(),
    })
}
