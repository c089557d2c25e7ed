//! TF-IDF with scikit-learn's `TfidfVectorizer` semantics (the settings the original uses).
//!
//! Steps, as in scikit-learn 1.x: optional lowercasing, word tokens (`\b\w+\b` or `\b\w\w+\b`),
//! word n-grams joined by one space, vocabulary sorted by term, optional top-N limit by corpus
//! term count, raw term counts, `idf = ln((1 + n) / (1 + df)) + 1` (smooth idf), rows scaled to
//! unit l2 norm.
//! Rows are sparse: only terms present in a document are stored.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::error::AnalysisError;
use crate::text::{py_lower, word_tokens};

/// Vectoriser settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TfidfConfig {
    /// Keep only this many terms, the most frequent over the corpus (`max_features`).
    pub max_features: Option<usize>,
    /// Smallest and largest n-gram length (`ngram_range`).
    pub ngram_range: (usize, usize),
    /// Lowercase documents before tokenising.
    pub lowercase: bool,
    /// Minimum token length in characters: 1 for `\b\w+\b`, 2 for scikit-learn's default pattern.
    pub min_token_len: usize,
}

impl TfidfConfig {
    /// The longtail settings: 128 features, n-grams 1 to 3, no lowercasing, `\b\w+\b`.
    pub fn longtail() -> Self {
        TfidfConfig {
            max_features: Some(128),
            ngram_range: (1, 3),
            lowercase: false,
            min_token_len: 1,
        }
    }

    /// The botnet settings: scikit-learn defaults with `max_features=1000`.
    pub fn botnet() -> Self {
        TfidfConfig {
            max_features: Some(1000),
            ngram_range: (1, 1),
            lowercase: true,
            min_token_len: 2,
        }
    }
}

/// One l2-normalised document vector, sparse, indices ascending.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct SparseRow {
    /// Column indices into [`TfidfModel::vocabulary`].
    pub indices: Vec<u32>,
    /// Weights, same length as `indices`.
    pub values: Vec<f64>,
}

impl SparseRow {
    /// Dot product of two sparse rows (both with ascending indices).
    pub fn dot(&self, other: &SparseRow) -> f64 {
        let (mut i, mut j, mut sum) = (0, 0, 0.0);
        while i < self.indices.len() && j < other.indices.len() {
            match self.indices[i].cmp(&other.indices[j]) {
                std::cmp::Ordering::Less => i += 1,
                std::cmp::Ordering::Greater => j += 1,
                std::cmp::Ordering::Equal => {
                    sum += self.values[i] * other.values[j];
                    i += 1;
                    j += 1;
                }
            }
        }
        sum
    }

    /// Squared l2 norm.
    pub fn norm_sq(&self) -> f64 {
        self.values.iter().map(|v| v * v).sum()
    }

    /// Dense form with `n` columns.
    pub fn to_dense(&self, n: usize) -> Vec<f64> {
        let mut out = vec![0.0; n];
        for (&i, &v) in self.indices.iter().zip(&self.values) {
            out[i as usize] = v;
        }
        out
    }
}

/// A fitted vocabulary with its idf weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TfidfModel {
    /// Terms in column order (sorted).
    pub vocabulary: Vec<String>,
    /// Inverse document frequency per column.
    pub idf: Vec<f64>,
}

/// The analyzer: tokens and n-grams of one document, in scikit-learn's order.
pub fn analyze(doc: &str, cfg: &TfidfConfig) -> Vec<String> {
    let lowered;
    let text = if cfg.lowercase {
        lowered = py_lower(doc);
        lowered.as_str()
    } else {
        doc
    };
    let tokens = word_tokens(text, cfg.min_token_len.max(1));
    let (min_n, max_n) = cfg.ngram_range;
    let mut out: Vec<String> = Vec::new();
    if min_n <= 1 && max_n >= 1 {
        out.extend(tokens.iter().map(|t| t.to_string()));
    }
    for n in min_n.max(2)..=max_n.min(tokens.len()) {
        for w in tokens.windows(n) {
            out.push(w.join(" "));
        }
    }
    out
}

/// Fits the vocabulary and idf on `docs` and returns the l2-normalised rows.
///
/// Fails with [`AnalysisError::EmptyVocabulary`] when no document yields a term, as
/// scikit-learn raises `ValueError: empty vocabulary`.
pub fn fit_transform<S: AsRef<str>>(
    docs: &[S],
    cfg: &TfidfConfig,
) -> Result<(TfidfModel, Vec<SparseRow>), AnalysisError> {
    fit_transform_weighted(docs, &vec![1; docs.len()], cfg)
}

/// As [`fit_transform`], where document `i` stands for `weights[i]` identical documents
/// (counts and document frequencies are multiplied; the rows are the same for each copy).
pub fn fit_transform_weighted<S: AsRef<str>>(
    docs: &[S],
    weights: &[u64],
    cfg: &TfidfConfig,
) -> Result<(TfidfModel, Vec<SparseRow>), AnalysisError> {
    if weights.len() != docs.len() {
        return Err(AnalysisError::InvalidParameter {
            name: "weights",
            reason: format!("{} weights for {} documents", weights.len(), docs.len()),
        });
    }
    if cfg.ngram_range.0 == 0 || cfg.ngram_range.0 > cfg.ngram_range.1 {
        return Err(AnalysisError::InvalidParameter {
            name: "ngram_range",
            reason: format!("{:?} is not a range 1 <= min <= max", cfg.ngram_range),
        });
    }
    let (terms, doc_counts) = if cfg.ngram_range.1 <= 3 {
        count_interned(docs, cfg)
    } else {
        count_strings(docs, cfg)
    };
    let n_terms = terms.len();
    if n_terms == 0 {
        return Err(AnalysisError::EmptyVocabulary);
    }
    let mut total = vec![0u64; n_terms];
    let mut df = vec![0u64; n_terms];
    for (counts, &w) in doc_counts.iter().zip(weights) {
        for &(id, c) in counts {
            total[id as usize] += u64::from(c) * w;
            df[id as usize] += w;
        }
    }
    // Keep the top-N by corpus count, ties broken by term order; only the kept terms and the
    // tied ones at the cut are ever spelled out.
    let chosen: Vec<u32> = match cfg.max_features {
        Some(limit) if limit < n_terms => {
            if limit == 0 {
                Vec::new()
            } else {
                let mut counts = total.clone();
                let (_, nth, _) = counts.select_nth_unstable_by(limit - 1, |a, b| b.cmp(a));
                let cut = *nth;
                let mut out: Vec<u32> = (0..n_terms as u32)
                    .filter(|&id| total[id as usize] > cut)
                    .collect();
                let mut ties: Vec<(String, u32)> = (0..n_terms as u32)
                    .filter(|&id| total[id as usize] == cut)
                    .map(|id| (terms.spell(id), id))
                    .collect();
                ties.sort();
                out.extend(ties.into_iter().take(limit - out.len()).map(|t| t.1));
                out
            }
        }
        _ => (0..n_terms as u32).collect(),
    };
    // Columns in term order.
    let mut spelled: Vec<(String, u32)> =
        chosen.into_iter().map(|id| (terms.spell(id), id)).collect();
    spelled.sort();
    let kept: Vec<u32> = spelled.iter().map(|t| t.1).collect();
    let mut column = vec![u32::MAX; n_terms];
    for (col, &id) in kept.iter().enumerate() {
        column[id as usize] = col as u32;
    }
    let n = weights.iter().sum::<u64>() as f64;
    let idf: Vec<f64> = kept
        .iter()
        .map(|&id| ((1.0 + n) / (1.0 + df[id as usize] as f64)).ln() + 1.0)
        .collect();
    let rows = doc_counts
        .into_iter()
        .map(|counts| {
            let mut entries: Vec<(u32, f64)> = counts
                .into_iter()
                .filter_map(|(id, c)| {
                    let col = column[id as usize];
                    (col != u32::MAX).then(|| (col, f64::from(c) * idf[col as usize]))
                })
                .collect();
            entries.sort_unstable_by_key(|e| e.0);
            let norm = entries.iter().map(|e| e.1 * e.1).sum::<f64>().sqrt();
            let norm = if norm > 0.0 { norm } else { 1.0 };
            SparseRow {
                indices: entries.iter().map(|e| e.0).collect(),
                values: entries.iter().map(|e| e.1 / norm).collect(),
            }
        })
        .collect();
    let vocabulary = spelled.into_iter().map(|t| t.0).collect();
    Ok((TfidfModel { vocabulary, idf }, rows))
}

/// The distinct terms seen, spelled out on demand.
enum Terms {
    /// Already strings.
    Strings(Vec<String>),
    /// N-grams as token ids (`u32::MAX` pads short n-grams) over a token table.
    Grams {
        grams: Vec<[u32; 3]>,
        tokens: Vec<String>,
    },
}

impl Terms {
    fn len(&self) -> usize {
        match self {
            Terms::Strings(v) => v.len(),
            Terms::Grams { grams, .. } => grams.len(),
        }
    }

    fn spell(&self, id: u32) -> String {
        match self {
            Terms::Strings(v) => v[id as usize].clone(),
            Terms::Grams { grams, tokens } => grams[id as usize]
                .iter()
                .take_while(|&&t| t != u32::MAX)
                .map(|&t| tokens[t as usize].as_str())
                .collect::<Vec<_>>()
                .join(" "),
        }
    }
}

type Counts = (Terms, Vec<Vec<(u32, u32)>>);

/// Terms and per-document term counts, building each n-gram string once per distinct n-gram.
fn count_interned<S: AsRef<str>>(docs: &[S], cfg: &TfidfConfig) -> Counts {
    const NONE: u32 = u32::MAX;
    let mut tok_ids: HashMap<String, u32> = HashMap::new();
    let mut toks: Vec<String> = Vec::new();
    let mut gram_ids: HashMap<[u32; 3], u32> = HashMap::new();
    let mut grams: Vec<[u32; 3]> = Vec::new();
    let mut doc_counts = Vec::with_capacity(docs.len());
    let (min_n, max_n) = cfg.ngram_range;
    let mut ids: Vec<u32> = Vec::new();
    let mut found: Vec<u32> = Vec::new();
    for doc in docs {
        let lowered;
        let text = if cfg.lowercase {
            lowered = py_lower(doc.as_ref());
            lowered.as_str()
        } else {
            doc.as_ref()
        };
        ids.clear();
        for t in word_tokens(text, cfg.min_token_len.max(1)) {
            let id = match tok_ids.get(t) {
                Some(&id) => id,
                None => {
                    let id = toks.len() as u32;
                    tok_ids.insert(t.to_string(), id);
                    toks.push(t.to_string());
                    id
                }
            };
            ids.push(id);
        }
        found.clear();
        for n in min_n.max(1)..=max_n.min(ids.len()) {
            for w in ids.windows(n) {
                let mut key = [NONE; 3];
                key[..n].copy_from_slice(w);
                let id = *gram_ids.entry(key).or_insert_with(|| {
                    grams.push(key);
                    (grams.len() - 1) as u32
                });
                found.push(id);
            }
        }
        found.sort_unstable();
        let mut counts: Vec<(u32, u32)> = Vec::new();
        for &id in &found {
            match counts.last_mut() {
                Some((last, c)) if *last == id => *c += 1,
                _ => counts.push((id, 1)),
            }
        }
        doc_counts.push(counts);
    }
    (
        Terms::Grams {
            grams,
            tokens: toks,
        },
        doc_counts,
    )
}

/// Terms and per-document term counts through [`analyze`] (any n-gram length).
fn count_strings<S: AsRef<str>>(docs: &[S], cfg: &TfidfConfig) -> Counts {
    let mut ids: HashMap<String, u32> = HashMap::new();
    let mut terms: Vec<String> = Vec::new();
    let mut doc_counts: Vec<Vec<(u32, u32)>> = Vec::with_capacity(docs.len());
    for doc in docs {
        let mut counts: HashMap<u32, u32> = HashMap::new();
        for term in analyze(doc.as_ref(), cfg) {
            let id = match ids.get(&term) {
                Some(&id) => id,
                None => {
                    let id = terms.len() as u32;
                    ids.insert(term.clone(), id);
                    terms.push(term);
                    id
                }
            };
            *counts.entry(id).or_insert(0) += 1;
        }
        doc_counts.push(counts.into_iter().collect());
    }
    (Terms::Strings(terms), doc_counts)
}
