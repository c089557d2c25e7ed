//! What more than one test file of this crate compares against.

use analysis::dbscan::NOISE;
use analysis::tfidf::SparseRow;

/// Cosine DBSCAN as plain scikit-learn does it on l2-normalised rows: every neighbourhood, then
/// clusters grown from cores in input order.
pub fn reference_cosine_dbscan(rows: &[SparseRow], eps: f64, min_samples: usize) -> Vec<i32> {
    let n = rows.len();
    let neigh: Vec<Vec<usize>> = (0..n)
        .map(|i| {
            (0..n)
                .filter(|&j| (1.0 - rows[i].dot(&rows[j])).clamp(0.0, 2.0) <= eps)
                .collect()
        })
        .collect();
    let core: Vec<bool> = neigh.iter().map(|v| v.len() >= min_samples).collect();
    let mut labels = vec![NOISE; n];
    let mut label = 0;
    for start in 0..n {
        if labels[start] != NOISE || !core[start] {
            continue;
        }
        let mut stack = vec![start];
        while let Some(i) = stack.pop() {
            if labels[i] == NOISE {
                labels[i] = label;
                if core[i] {
                    stack.extend(neigh[i].iter().copied().filter(|&j| labels[j] == NOISE));
                }
            }
        }
        label += 1;
    }
    labels
}
