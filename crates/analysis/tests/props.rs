//! Property tests and hand-computed cases for the pure pieces: TF-IDF, DBSCAN, scores, defanger.

use analysis::dbscan::{Metric, NOISE, dbscan, dbscan_1d, dbscan_cosine, dbscan_euclidean};
use analysis::tfidf::{TfidfConfig, fit_transform};
use analysis::{
    BotnetParams, LoginAttempt, Session, SnowshoeParams, botnet, command_risk_score,
    create_safe_command, no_progress, snowshoe,
};
use chrono::{DateTime, Duration, Utc};
use common::reference_cosine_dbscan;
use linfa::traits::Transformer;
use ndarray::Array2;
use proptest::prelude::*;

mod common;

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-12
}

// ---------------------------------------------------------------- TF-IDF

#[test]
fn tfidf_hand_computed_unigrams() {
    let cfg = TfidfConfig {
        max_features: None,
        ngram_range: (1, 1),
        lowercase: false,
        min_token_len: 1,
    };
    let (model, rows) = fit_transform(&["a b", "a"], &cfg).unwrap();
    assert_eq!(model.vocabulary, ["a", "b"]);
    // n = 2; df(a) = 2, df(b) = 1; idf = ln((1+n)/(1+df)) + 1.
    let idf_b = (3.0f64 / 2.0).ln() + 1.0;
    assert!(close(model.idf[0], 1.0));
    assert!(close(model.idf[1], idf_b));
    let norm = (1.0 + idf_b * idf_b).sqrt();
    let r0 = rows[0].to_dense(2);
    assert!(close(r0[0], 1.0 / norm) && close(r0[1], idf_b / norm));
    assert_eq!(rows[1].to_dense(2), [1.0, 0.0]);
}

#[test]
fn tfidf_hand_computed_ngrams_and_limit() {
    // Longtail settings: case kept, \b\w+\b, n-grams 1..3.
    let (model, _) = fit_transform(&["wget x", "Wget x x"], &TfidfConfig::longtail()).unwrap();
    assert_eq!(
        model.vocabulary,
        ["Wget", "Wget x", "Wget x x", "wget", "wget x", "x", "x x"]
    );
    // Top-2 by corpus count: "x" (3) then a tie at 1 broken by term order ("Wget").
    let cfg = TfidfConfig {
        max_features: Some(2),
        ..TfidfConfig::longtail()
    };
    let (model, rows) = fit_transform(&["wget x", "Wget x x"], &cfg).unwrap();
    assert_eq!(model.vocabulary, ["Wget", "x"]);
    // Doc 0 holds only "x": a unit vector on that column.
    assert_eq!(rows[0].to_dense(2), [0.0, 1.0]);
    // Botnet settings lowercase and drop one-character tokens.
    let (model, _) = fit_transform(&["WGET x", "wget"], &TfidfConfig::botnet()).unwrap();
    assert_eq!(model.vocabulary, ["wget"]);
}

#[test]
fn tfidf_empty_vocabulary_is_a_typed_error() {
    let err = fit_transform(&["", "; |"], &TfidfConfig::longtail()).unwrap_err();
    assert_eq!(err, analysis::AnalysisError::EmptyVocabulary);
}

/// Straightforward dense reference of the same definition.
fn reference_tfidf(docs: &[String]) -> (Vec<String>, Vec<Vec<f64>>) {
    let tokenize = |d: &str| -> Vec<String> {
        d.split(|c: char| !(c.is_alphanumeric() || c == '_'))
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .collect()
    };
    let mut vocab: Vec<String> = docs.iter().flat_map(|d| tokenize(d)).collect();
    vocab.sort();
    vocab.dedup();
    let n = docs.len() as f64;
    let counts: Vec<Vec<f64>> = docs
        .iter()
        .map(|d| {
            let toks = tokenize(d);
            vocab
                .iter()
                .map(|v| toks.iter().filter(|t| *t == v).count() as f64)
                .collect()
        })
        .collect();
    let idf: Vec<f64> = (0..vocab.len())
        .map(|j| {
            let df = counts.iter().filter(|r| r[j] > 0.0).count() as f64;
            ((1.0 + n) / (1.0 + df)).ln() + 1.0
        })
        .collect();
    let rows = counts
        .into_iter()
        .map(|r| {
            let x: Vec<f64> = r.iter().zip(&idf).map(|(c, i)| c * i).collect();
            let norm = x.iter().map(|v| v * v).sum::<f64>().sqrt();
            x.into_iter()
                .map(|v| if norm > 0.0 { v / norm } else { v })
                .collect()
        })
        .collect();
    (vocab, rows)
}

proptest! {
    #[test]
    fn tfidf_matches_reference(docs in prop::collection::vec("[abc ;/]{0,12}", 1..8)) {
        let cfg = TfidfConfig { max_features: None, ngram_range: (1, 1), lowercase: false, min_token_len: 1 };
        let (ref_vocab, ref_rows) = reference_tfidf(&docs);
        match fit_transform(&docs, &cfg) {
            Err(e) => prop_assert!(ref_vocab.is_empty(), "{e}"),
            Ok((model, rows)) => {
                prop_assert_eq!(&model.vocabulary, &ref_vocab);
                for (r, rr) in rows.iter().zip(&ref_rows) {
                    let dense = r.to_dense(ref_vocab.len());
                    for (a, b) in dense.iter().zip(rr) {
                        prop_assert!((a - b).abs() < 1e-12);
                    }
                    let n = r.norm_sq();
                    prop_assert!(n == 0.0 || (n - 1.0).abs() < 1e-12);
                }
            }
        }
    }
}

proptest! {
    #[test]
    fn tfidf_ngram_vocabulary_is_the_analyzer_output(docs in prop::collection::vec("[abC ;]{0,14}", 1..8)) {
        for cfg in [TfidfConfig { max_features: None, ..TfidfConfig::longtail() },
                    TfidfConfig { max_features: None, ..TfidfConfig::botnet() }] {
            let mut expected: Vec<String> = docs.iter().flat_map(|d| analysis::tfidf::analyze(d, &cfg)).collect();
            expected.sort();
            expected.dedup();
            match fit_transform(&docs, &cfg) {
                Err(_) => prop_assert!(expected.is_empty()),
                Ok((model, rows)) => {
                    prop_assert_eq!(&model.vocabulary, &expected);
                    // Each document's row holds exactly its own terms.
                    for (d, r) in docs.iter().zip(&rows) {
                        let mut own: Vec<String> = analysis::tfidf::analyze(d, &cfg);
                        own.sort();
                        own.dedup();
                        let got: Vec<String> = r.indices.iter().map(|&i| model.vocabulary[i as usize].clone()).collect();
                        prop_assert_eq!(got, own);
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------- DBSCAN

/// scikit-learn's algorithm, transcribed plainly: brute-force neighbourhoods, then the
/// stack-based expansion of `dbscan_inner` in input order.
fn reference_dbscan(points: &[Vec<f64>], eps: f64, min_samples: usize) -> Vec<i32> {
    let n = points.len();
    let dist = |a: &[f64], b: &[f64]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y) * (x - y))
            .sum::<f64>()
            .sqrt()
    };
    let neigh: Vec<Vec<usize>> = (0..n)
        .map(|i| {
            (0..n)
                .filter(|&j| dist(&points[i], &points[j]) <= eps)
                .collect()
        })
        .collect();
    let core: Vec<bool> = neigh.iter().map(|v| v.len() >= min_samples).collect();
    let mut labels = vec![-1; n];
    let mut label = 0;
    for start in 0..n {
        if labels[start] != -1 || !core[start] {
            continue;
        }
        let mut stack = vec![];
        let mut i = start;
        loop {
            if labels[i] == -1 {
                labels[i] = label;
                if core[i] {
                    for &j in &neigh[i] {
                        if labels[j] == -1 {
                            stack.push(j);
                        }
                    }
                }
            }
            match stack.pop() {
                Some(j) => i = j,
                None => break,
            }
        }
        label += 1;
    }
    labels
}

#[test]
fn dbscan_border_and_noise_by_hand() {
    // Two dense groups, a border point reachable from both, and a lone point (eps 3, min 4).
    let xs = [0.0, 1.0, 2.0, 3.0, 6.0, 9.0, 10.0, 11.0, 12.0, 50.0];
    let labels = dbscan_1d(&xs, 3.0, 4).unwrap();
    // 6 is within 3 of 3 (core of cluster 0) and of 9 (core of cluster 1), not core itself: it
    // joins cluster 0, the cluster whose first core comes first in the input.
    assert_eq!(labels, [0, 0, 0, 0, 0, 1, 1, 1, 1, NOISE]);
    // Right group first: the numbering and so the border point's cluster follow input order.
    let xs2 = [9.0, 10.0, 11.0, 12.0, 6.0, 0.0, 1.0, 2.0, 3.0, 50.0];
    let labels2 = dbscan_1d(&xs2, 3.0, 4).unwrap();
    assert_eq!(labels2, [0, 0, 0, 0, 0, 1, 1, 1, 1, NOISE]);
    let pts: Vec<Vec<f64>> = xs2.iter().map(|&x| vec![x]).collect();
    assert_eq!(labels2, reference_dbscan(&pts, 3.0, 4));
    // Identical points count with their multiplicity.
    assert_eq!(dbscan_1d(&[7.0, 7.0, 7.0], 0.1, 3).unwrap(), [0, 0, 0]);
    assert_eq!(dbscan_1d(&[7.0, 7.0], 0.1, 3).unwrap(), [NOISE, NOISE]);
}

#[test]
fn dbscan_rejects_bad_parameters() {
    assert!(dbscan_1d(&[1.0], 0.0, 3).is_err());
    assert!(dbscan_1d(&[1.0], 0.3, 0).is_err());
    assert!(dbscan_1d(&[f64::NAN], 0.3, 1).is_err());
    let x = Array2::<f64>::zeros((0, 3));
    assert_eq!(
        dbscan(x.view(), 0.3, 5, Metric::Euclidean).unwrap(),
        Vec::<i32>::new()
    );
}

#[test]
fn dbscan_cosine_zero_vectors_are_noise() {
    let rows = vec![analysis::tfidf::SparseRow::default(); 6];
    assert_eq!(dbscan_cosine(&rows, 0.3, 1).unwrap(), [NOISE; 6]);
    let x = ndarray::arr2(&[[1.0, 0.0], [2.0, 0.0], [0.0, 1.0], [1.0, 0.1]]);
    assert_eq!(
        dbscan(x.view(), 0.3, 2, Metric::Cosine).unwrap(),
        [0, 0, NOISE, 0]
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn dbscan_1d_matches_reference(
        xs in prop::collection::vec((0u32..60).prop_map(|v| f64::from(v) * 0.13), 0..40),
        min_samples in 1usize..6,
    ) {
        let pts: Vec<Vec<f64>> = xs.iter().map(|&x| vec![x]).collect();
        prop_assert_eq!(dbscan_1d(&xs, 0.3, min_samples).unwrap(), reference_dbscan(&pts, 0.3, min_samples));
    }

    #[test]
    fn dbscan_grouped_matches_reference(
        pts in prop::collection::vec(((0u32..40).prop_map(|v| f64::from(v) * 0.11), 0u32..3, 0u32..2), 0..40),
        min_samples in 1usize..6,
    ) {
        // Session-feature shape: a real first column, integer others (the grouped path).
        let rows: Vec<Vec<f64>> = pts.iter().map(|&(a, b, c)| vec![a, f64::from(b), f64::from(c)]).collect();
        let mut x = Array2::<f64>::zeros((rows.len(), 3));
        for (i, r) in rows.iter().enumerate() { for k in 0..3 { x[[i, k]] = r[k]; } }
        prop_assert_eq!(dbscan_euclidean(x.view(), 0.3, min_samples).unwrap(), reference_dbscan(&rows, 0.3, min_samples));
    }

    #[test]
    fn dbscan_general_matches_reference_and_linfa_noise(
        pts in prop::collection::vec((0.0f64..3.0, 0.0f64..3.0), 0..40),
        min_samples in 1usize..6,
    ) {
        // Real-valued columns: the general sweep path.
        let rows: Vec<Vec<f64>> = pts.iter().map(|&(a, b)| vec![a, b]).collect();
        let mut x = Array2::<f64>::zeros((rows.len(), 2));
        for (i, r) in rows.iter().enumerate() { x[[i, 0]] = r[0]; x[[i, 1]] = r[1]; }
        let mine = dbscan(x.view(), 0.5, min_samples, Metric::Euclidean).unwrap();
        prop_assert_eq!(&mine, &reference_dbscan(&rows, 0.5, min_samples));
        if !rows.is_empty() && min_samples >= 2 {
            // linfa-clustering agrees on which points are noise (its border order differs).
            let theirs = linfa_clustering::Dbscan::params(min_samples).tolerance(0.5).transform(&x).unwrap();
            let their_noise: Vec<bool> = theirs.iter().map(Option::is_none).collect();
            let my_noise: Vec<bool> = mine.iter().map(|&l| l == NOISE).collect();
            prop_assert_eq!(my_noise, their_noise);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(150))]

    #[test]
    fn cosine_index_finds_exactly_the_similar_pairs(
        docs in prop::collection::vec("[abcde ]{0,16}", 1..30),
        t in prop::sample::select(vec![0.3, 0.5, 0.7, 0.9]),
    ) {
        let cfg = TfidfConfig { max_features: None, ngram_range: (1, 2), lowercase: false, min_token_len: 1 };
        let Ok((_, rows)) = fit_transform(&docs, &cfg) else { return Ok(()) };
        let index = analysis::dbscan::CosineIndex::new(&rows, t).unwrap();
        let mut scratch = analysis::dbscan::Scratch::new(rows.len());
        for a in 0..rows.len() {
            let mut cands = Vec::new();
            index.candidates(a, &mut scratch, &mut cands);
            for b in 0..rows.len() {
                if rows[a].dot(&rows[b]) >= t {
                    prop_assert!(cands.contains(&b), "pair {a},{b} missed at t={t}");
                }
            }
        }
    }

    #[test]
    fn dbscan_cosine_matches_reference(
        docs in prop::collection::vec("[abcd ]{0,10}", 1..30),
        min_samples in 1usize..5,
        eps in prop::sample::select(vec![0.1, 0.3, 0.6, 1.2]),
    ) {
        let cfg = TfidfConfig { max_features: Some(6), ngram_range: (1, 2), lowercase: false, min_token_len: 1 };
        let Ok((_, rows)) = fit_transform(&docs, &cfg) else { return Ok(()) };
        prop_assert_eq!(dbscan_cosine(&rows, eps, min_samples).unwrap(), reference_cosine_dbscan(&rows, eps, min_samples));
    }
}

// ---------------------------------------------------------------- scores

fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_700_000_000, 0).unwrap()
}

fn arb_session() -> impl Strategy<Value = Session> {
    (
        0u32..20,
        0i64..20_000,
        0i64..600,
        prop::collection::vec("[a-c ]{0,6}", 0..4),
        0u32..3,
        prop::option::of(0u32..4),
        prop::option::of(0u32..3),
        prop::option::of(0u32..3),
    )
        .prop_map(|(ip, start, dur, commands, logins, cred, country, asn)| {
            let start = t0() + Duration::seconds(start);
            Session {
                session_id: String::new(),
                sensor: None,
                src_ip: Some(format!("10.0.0.{ip}")),
                start,
                end: start + Duration::seconds(dur),
                closed_duration: None,
                command_events: commands.len() as u32,
                commands,
                login_attempts: logins,
                logins: cred
                    .map(|c| LoginAttempt {
                        username: "root".into(),
                        password: format!("pw{c}"),
                        success: true,
                        timestamp: start,
                    })
                    .into_iter()
                    .collect(),
                file_events: 0,
                file_downloads: vec![],
                client_version: None,
                hassh: None,
                protocol: None,
                event_count: 1,
                country: country.map(|c| format!("C{c}")),
                asn: asn.map(|a| format!("AS{a}")),
            }
        })
}

fn unit(x: f64) -> bool {
    (0.0..=1.0).contains(&x)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn scores_stay_in_unit_interval(mut sessions in prop::collection::vec(arb_session(), 0..80)) {
        for (i, s) in sessions.iter_mut().enumerate() {
            s.session_id = format!("{i:012x}");
        }
        let s = snowshoe(&sessions, 24.0, &SnowshoeParams::default(), &mut no_progress()).unwrap();
        prop_assert!(unit(s.confidence_score));
        prop_assert!(unit(s.geographic_spread));
        let v = &s.indicators;
        for x in [v.volume.single_attempt_ratio, v.volume.low_volume_ratio, v.timing.time_coordination_score,
                  v.geographic.country_diversity, v.geographic.asn_diversity, v.geographic.diversity_score,
                  v.behavioral.duration_consistency] {
            prop_assert!(unit(x), "{x}");
        }
        prop_assert_eq!(s.is_likely_snowshoe, s.confidence_score >= 0.7 - 1e-3 && s.is_likely_snowshoe);
        let b = botnet(&sessions, 24.0, &BotnetParams::default(), &mut no_progress()).unwrap();
        prop_assert!(unit(b.coordination_score));
        let i = &b.indicators;
        for x in [i.credentials.reuse_ratio, i.commands.avg_similarity, i.timing.coordination_score,
                  i.geographic.clustering_score] {
            prop_assert!(x > -1e-12 && x < 1.0 + 1e-12, "{x}");
        }
        serde_json::to_string(&s).unwrap();
        serde_json::to_string(&b).unwrap();
    }

    #[test]
    fn defanger_never_panics_and_scores_are_bounded(cmd in ".{0,80}") {
        let safe = create_safe_command(&cmd);
        prop_assert!(command_risk_score(&cmd) <= 100);
        prop_assert!(!safe.contains("http://") && !safe.contains("https://"));
        if safe != cmd {
            prop_assert!(safe.starts_with("[defang:"));
        }
    }
}

/// Brute-force botnet command similarity: (similar IPs, mean pairwise similarity).
fn reference_similarity(sessions: &[Session]) -> (Vec<String>, f64) {
    let mut first: std::collections::BTreeMap<String, &Session> = Default::default();
    for s in sessions.iter().filter(|s| !s.commands.is_empty()) {
        let ip = s.src_ip.clone().unwrap();
        let e = first.entry(ip).or_insert(s);
        if (s.start, &s.session_id) < (e.start, &e.session_id) {
            *e = s;
        }
    }
    let ips: Vec<&String> = first.keys().collect();
    let texts: Vec<String> = first.values().map(|s| s.commands.join(" ")).collect();
    if texts.len() < 2 {
        return (vec![], 0.0);
    }
    let Ok((_, rows)) = fit_transform(&texts, &TfidfConfig::botnet()) else {
        return (vec![], 0.0);
    };
    let mut similar = std::collections::BTreeSet::new();
    let (mut sum, mut pairs) = (0.0, 0.0);
    for a in 0..rows.len() {
        for b in a + 1..rows.len() {
            let d = rows[a].dot(&rows[b]);
            sum += d;
            pairs += 1.0;
            if d >= 0.7 {
                similar.insert(ips[a].clone());
                similar.insert(ips[b].clone());
            }
        }
    }
    (similar.into_iter().collect(), sum / pairs)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn botnet_similarity_matches_brute_force(mut sessions in prop::collection::vec(arb_session(), 10..60)) {
        for (i, s) in sessions.iter_mut().enumerate() {
            s.session_id = format!("{i:012x}");
            s.commands = s.commands.iter().map(|c| format!("{c} wget")).collect();
        }
        let b = botnet(&sessions, 24.0, &BotnetParams::default(), &mut no_progress()).unwrap();
        if b.error.is_none() {
            let (similar, avg) = reference_similarity(&sessions);
            prop_assert_eq!(&b.indicators.commands.similar_commands, &similar);
            prop_assert!((b.indicators.commands.avg_similarity - avg).abs() < 1e-9,
                "{} vs {avg}", b.indicators.commands.avg_similarity);
        }
    }
}
