//! DBSCAN with scikit-learn's labels, written for many identical points.
//!
//! Semantics (scikit-learn `DBSCAN.fit_predict`): a point's neighbourhood is every point at
//! distance `<= eps`, itself included when its distance to itself is `<= eps`; a point is core
//! when its neighbourhood holds at least `min_samples` points; clusters are the connected groups
//! of core points, numbered in the order of their lowest input index; a non-core point within
//! `eps` of a core joins the lowest-numbered such cluster (scikit-learn expands clusters in that
//! order and never relabels); everything else is noise (`-1`).
//!
//! Identical points are collapsed first and carry a weight, so the work and memory depend on the
//! number of distinct points; neighbourhoods are never materialised.
//! This is why linfa-clustering's DBSCAN is not used: it has no weights, materialises
//! neighbourhoods, and assigns border points in its own order.

// Index loops over parallel arrays read more plainly here than zipped iterators.
#![allow(clippy::needless_range_loop)]

use ndarray::ArrayView2;
use rayon::prelude::*;

use crate::error::AnalysisError;
use crate::par::Pool;
use crate::tfidf::SparseRow;

/// Distance function for [`dbscan`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// Euclidean distance.
    Euclidean,
    /// `1 - cos(a, b)`, clipped to `[0, 2]`; a zero vector is at distance 1 from everything.
    Cosine,
}

/// Label for noise points.
pub const NOISE: i32 = -1;

fn check_params(eps: f64, min_samples: usize) -> Result<(), AnalysisError> {
    if !(eps.is_finite() && eps > 0.0) {
        return Err(AnalysisError::InvalidParameter {
            name: "eps",
            reason: format!("{eps} is not a positive finite number"),
        });
    }
    if min_samples == 0 {
        return Err(AnalysisError::InvalidParameter {
            name: "min_samples",
            reason: "must be at least 1".into(),
        });
    }
    Ok(())
}

/// Distinct points: for each, the lowest input index and the multiplicity.
struct Collapsed {
    first: Vec<usize>,
    weight: Vec<f64>,
    of_point: Vec<usize>,
}

fn collapse<K: std::hash::Hash + Eq>(keys: impl Iterator<Item = K>) -> Collapsed {
    let mut map: std::collections::HashMap<K, usize> = std::collections::HashMap::new();
    let mut c = Collapsed {
        first: Vec::new(),
        weight: Vec::new(),
        of_point: Vec::new(),
    };
    for (i, k) in keys.enumerate() {
        let u = *map.entry(k).or_insert_with(|| {
            c.first.push(i);
            c.weight.push(0.0);
            c.first.len() - 1
        });
        c.weight[u] += 1.0;
        c.of_point.push(u);
    }
    c
}

fn key_of(x: f64) -> u64 {
    // -0.0 and 0.0 are the same point.
    if x == 0.0 { 0 } else { x.to_bits() }
}

struct UnionFind(Vec<usize>);

impl UnionFind {
    fn new(n: usize) -> Self {
        UnionFind((0..n).collect())
    }
    fn find(&mut self, mut x: usize) -> usize {
        while self.0[x] != x {
            self.0[x] = self.0[self.0[x]];
            x = self.0[x];
        }
        x
    }
    fn union(&mut self, a: usize, b: usize) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra != rb {
            self.0[ra.max(rb)] = ra.min(rb);
        }
    }
}

/// Turns core flags, core components and border choices into scikit-learn's labels.
///
/// `comp[u]` is the union-find root for core points; `border[u]` the chosen core neighbour's
/// distinct index for border points.
fn finish(c: &Collapsed, core: &[bool], uf: &mut UnionFind, border: &[Option<usize>]) -> Vec<i32> {
    let n = c.first.len();
    // Lowest input index per component.
    let mut comp_key = vec![usize::MAX; n];
    for u in 0..n {
        if core[u] {
            let r = uf.find(u);
            comp_key[r] = comp_key[r].min(c.first[u]);
        }
    }
    let mut roots: Vec<usize> = (0..n).filter(|&u| core[u] && uf.find(u) == u).collect();
    roots.sort_by_key(|&r| comp_key[r]);
    let mut number = vec![NOISE; n];
    for (k, &r) in roots.iter().enumerate() {
        number[r] = k as i32;
    }
    let mut label_u = vec![NOISE; n];
    for u in 0..n {
        if core[u] {
            label_u[u] = number[uf.find(u)];
        } else if let Some(b) = border[u] {
            label_u[u] = number[uf.find(b)];
        }
    }
    c.of_point.iter().map(|&u| label_u[u]).collect()
}

/// Generic labelling over distinct points; `neighbours(u, out)` fills `out` with the distinct
/// points within `eps` of `u` (itself included when its self-distance is within `eps`).
fn label_generic(
    c: &Collapsed,
    min_samples: usize,
    neighbours: &dyn Fn(usize, &mut Vec<usize>),
) -> Vec<i32> {
    let n = c.first.len();
    let mut buf = Vec::new();
    let mut core = vec![false; n];
    for u in 0..n {
        buf.clear();
        neighbours(u, &mut buf);
        let w: f64 = buf.iter().map(|&v| c.weight[v]).sum();
        core[u] = w >= min_samples as f64;
    }
    let mut uf = UnionFind::new(n);
    for u in 0..n {
        if !core[u] {
            continue;
        }
        buf.clear();
        neighbours(u, &mut buf);
        for &v in &buf {
            if core[v] && v > u {
                uf.union(u, v);
            }
        }
    }
    // Border points take the component with the lowest key among their core neighbours.
    let mut comp_key = vec![usize::MAX; n];
    for u in 0..n {
        if core[u] {
            let r = uf.find(u);
            comp_key[r] = comp_key[r].min(c.first[u]);
        }
    }
    let mut best: Vec<Option<usize>> = vec![None; n];
    for u in 0..n {
        if core[u] {
            continue;
        }
        buf.clear();
        neighbours(u, &mut buf);
        let mut chosen: Option<(usize, usize)> = None;
        for &v in &buf {
            if core[v] {
                let key = comp_key[uf.find(v)];
                if chosen.is_none_or(|(k, _)| key < k) {
                    chosen = Some((key, v));
                }
            }
        }
        best[u] = chosen.map(|(_, v)| v);
    }
    finish(c, &core, &mut uf, &best)
}

/// DBSCAN over the rows of `points`.
pub fn dbscan(
    points: ArrayView2<'_, f64>,
    eps: f64,
    min_samples: usize,
    metric: Metric,
) -> Result<Vec<i32>, AnalysisError> {
    check_params(eps, min_samples)?;
    if points.iter().any(|v| !v.is_finite()) {
        return Err(AnalysisError::InvalidParameter {
            name: "points",
            reason: "contain NaN or infinite values".into(),
        });
    }
    if points.nrows() == 0 {
        return Ok(Vec::new());
    }
    match metric {
        Metric::Cosine => {
            let rows: Vec<SparseRow> = points
                .rows()
                .into_iter()
                .map(|r| {
                    let norm = r.iter().map(|v| v * v).sum::<f64>().sqrt();
                    let mut row = SparseRow::default();
                    for (i, &v) in r.iter().enumerate() {
                        if v != 0.0 {
                            row.indices.push(i as u32);
                            row.values.push(v / norm);
                        }
                    }
                    row
                })
                .collect();
            dbscan_cosine(&rows, eps, min_samples)
        }
        Metric::Euclidean => dbscan_euclidean(points, eps, min_samples),
    }
}

/// Euclidean DBSCAN; when every column but the first holds integers and `eps < 1`, points that
/// differ in those columns can never be neighbours, so each group is clustered in one dimension.
pub fn dbscan_euclidean(
    points: ArrayView2<'_, f64>,
    eps: f64,
    min_samples: usize,
) -> Result<Vec<i32>, AnalysisError> {
    check_params(eps, min_samples)?;
    if points.iter().any(|v| !v.is_finite()) {
        return Err(AnalysisError::InvalidParameter {
            name: "points",
            reason: "contain NaN or infinite values".into(),
        });
    }
    let d = points.ncols();
    if points.nrows() == 0 {
        return Ok(Vec::new());
    }
    let c = collapse(
        points
            .rows()
            .into_iter()
            .map(|r| r.iter().map(|&v| key_of(v)).collect::<Vec<u64>>()),
    );
    let n = c.first.len();
    let coord = |u: usize, k: usize| points[[c.first[u], k]];
    let x0 = |u: usize| if d == 0 { 0.0 } else { coord(u, 0) };
    let grouped =
        d <= 1 || (eps < 1.0 && (1..d).all(|k| points.column(k).iter().all(|v| v.fract() == 0.0)));
    if grouped {
        let gkeys: Vec<Vec<u64>> = (0..n)
            .map(|u| (1..d).map(|k| key_of(coord(u, k))).collect())
            .collect();
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| gkeys[a].cmp(&gkeys[b]).then(x0(a).total_cmp(&x0(b))));
        let xs: Vec<f64> = order.iter().map(|&u| x0(u)).collect();
        let mut bounds = Vec::new();
        let mut start = 0;
        for pos in 1..=n {
            if pos == n || gkeys[order[pos]] != gkeys[order[start]] {
                bounds.push(start..pos);
                start = pos;
            }
        }
        return Ok(label_1d_groups(&c, &order, &xs, &bounds, eps, min_samples));
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| x0(a).total_cmp(&x0(b)));
    let xs: Vec<f64> = order.iter().map(|&u| x0(u)).collect();
    let mut pos_of = vec![0; n];
    for (pos, &u) in order.iter().enumerate() {
        pos_of[u] = pos;
    }
    let within = |a: usize, b: usize| -> bool {
        let mut s = 0.0;
        for k in 0..d {
            let diff = coord(a, k) - coord(b, k);
            s += diff * diff;
        }
        s.sqrt() <= eps
    };
    // Candidates: first-column distance at most eps, a contiguous slice of the sorted order.
    let neighbours = |u: usize, out: &mut Vec<usize>| {
        let x = xs[pos_of[u]];
        let range = xs.partition_point(|&v| x - v > eps)..xs.partition_point(|&v| v - x <= eps);
        out.extend(order[range].iter().copied().filter(|&v| within(u, v)));
    };
    Ok(label_generic(&c, min_samples, &neighbours))
}

/// One-dimensional labelling inside groups of distinct points that never neighbour each other.
///
/// `order` lists distinct indices sorted by group then coordinate, `xs` their coordinates and
/// `bounds` the group ranges of positions.
fn label_1d_groups(
    c: &Collapsed,
    order: &[usize],
    xs: &[f64],
    bounds: &[std::ops::Range<usize>],
    eps: f64,
    min_samples: usize,
) -> Vec<i32> {
    let n = order.len();
    let mut prefix = vec![0.0; n + 1];
    for (pos, &u) in order.iter().enumerate() {
        prefix[pos + 1] = prefix[pos] + c.weight[u];
    }
    let mut core = vec![false; n];
    let mut uf = UnionFind::new(n);
    let mut border = vec![None; n];
    let mut group_cores: Vec<Vec<usize>> = Vec::with_capacity(bounds.len());
    for b in bounds {
        let g = &xs[b.clone()];
        let mut core_pos = Vec::new();
        for pos in b.clone() {
            let x = xs[pos];
            let lo = b.start + g.partition_point(|&v| x - v > eps);
            let hi = b.start + g.partition_point(|&v| v - x <= eps);
            if prefix[hi] - prefix[lo] >= min_samples as f64 {
                core[order[pos]] = true;
                core_pos.push(pos);
            }
        }
        for w in core_pos.windows(2) {
            if (xs[w[1]] - xs[w[0]]).abs() <= eps {
                uf.union(order[w[0]], order[w[1]]);
            }
        }
        group_cores.push(core_pos);
    }
    let mut comp_key = vec![usize::MAX; n];
    for u in 0..n {
        if core[u] {
            let r = uf.find(u);
            comp_key[r] = comp_key[r].min(c.first[u]);
        }
    }
    for (b, core_pos) in bounds.iter().zip(&group_cores) {
        for pos in b.clone() {
            let u = order[pos];
            if core[u] {
                continue;
            }
            // Nearest core on each side; all cores on one side within eps share a component.
            let i = core_pos.partition_point(|&p| p < pos);
            let mut chosen: Option<(usize, usize)> = None;
            for cp in [
                i.checked_sub(1).map(|k| core_pos[k]),
                core_pos.get(i).copied(),
            ]
            .into_iter()
            .flatten()
            {
                if (xs[pos] - xs[cp]).abs() <= eps {
                    let v = order[cp];
                    let key = comp_key[uf.find(v)];
                    if chosen.is_none_or(|(k, _)| key < k) {
                        chosen = Some((key, v));
                    }
                }
            }
            border[u] = chosen.map(|(_, v)| v);
        }
    }
    finish(c, &core, &mut uf, &border)
}

/// One-dimensional DBSCAN (the timing analyses), `|a - b| <= eps`.
pub fn dbscan_1d(values: &[f64], eps: f64, min_samples: usize) -> Result<Vec<i32>, AnalysisError> {
    dbscan_1d_in(values, eps, min_samples, &Pool::new(1)?)
}

/// As [`dbscan_1d`], sorting the distinct values on `pool` (same labels).
pub(crate) fn dbscan_1d_in(
    values: &[f64],
    eps: f64,
    min_samples: usize,
    pool: &Pool,
) -> Result<Vec<i32>, AnalysisError> {
    check_params(eps, min_samples)?;
    if values.iter().any(|v| !v.is_finite()) {
        return Err(AnalysisError::InvalidParameter {
            name: "values",
            reason: "contain NaN or infinite values".into(),
        });
    }
    let c = collapse(values.iter().map(|&v| key_of(v)));
    let n = c.first.len();
    let mut order: Vec<usize> = (0..n).collect();
    // Distinct values: the sorted order is the same whichever sort makes it.
    let by_value = |a: &usize, b: &usize| values[c.first[*a]].total_cmp(&values[c.first[*b]]);
    if pool.threads() > 1 {
        pool.install(|| order.par_sort_by(by_value));
    } else {
        order.sort_by(by_value);
    }
    let xs: Vec<f64> = order.iter().map(|&u| values[c.first[u]]).collect();
    Ok(label_1d_groups(
        &c,
        &order,
        &xs,
        std::slice::from_ref(&(0..n)),
        eps,
        min_samples,
    ))
}

/// Cosine DBSCAN over l2-normalised sparse rows (zero rows are at distance 1 from everything).
pub fn dbscan_cosine(
    rows: &[SparseRow],
    eps: f64,
    min_samples: usize,
) -> Result<Vec<i32>, AnalysisError> {
    dbscan_cosine_weighted(rows, &vec![1.0; rows.len()], eps, min_samples)
}

/// As [`dbscan_cosine`], where row `i` stands for `weights[i]` identical points.
pub fn dbscan_cosine_weighted(
    rows: &[SparseRow],
    weights: &[f64],
    eps: f64,
    min_samples: usize,
) -> Result<Vec<i32>, AnalysisError> {
    dbscan_cosine_progress(rows, weights, eps, min_samples, &mut |_, _| {})
}

/// As [`dbscan_cosine_weighted`], calling `progress(done, total)` over the distinct rows while
/// the core points are found.
///
/// Three passes, none of which materialises a neighbourhood: (1) a row is core as soon as the
/// weighted count of close rows reaches `min_samples`, so a row inside a dense cluster stops
/// after a few dot products; (2) the components of the cores are found by a breadth-first
/// search that compares a core only with cores no component holds yet, so each pair of cores is
/// compared at most once and one dense cluster of `n` rows costs about `n / density` products
/// per row instead of `n`; (3) each non-core row scans the cores in ascending cluster number and
/// joins the first close one (scikit-learn's border rule). Passes 1 and 3 run on the current
/// [`Pool`]'s threads; pass 2 does when many cores remain. When the prefix-filter index prunes,
/// every pass visits only the index's candidates.
pub fn dbscan_cosine_progress(
    rows: &[SparseRow],
    weights: &[f64],
    eps: f64,
    min_samples: usize,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<i32>, AnalysisError> {
    check_params(eps, min_samples)?;
    if weights.len() != rows.len() {
        return Err(AnalysisError::InvalidParameter {
            name: "weights",
            reason: format!("{} weights for {} rows", weights.len(), rows.len()),
        });
    }
    let mut c = collapse(rows.iter().map(|r| {
        (
            r.indices.clone(),
            r.values.iter().map(|&v| key_of(v)).collect::<Vec<u64>>(),
        )
    }));
    for w in c.weight.iter_mut() {
        *w = 0.0;
    }
    for (i, &u) in c.of_point.iter().enumerate() {
        c.weight[u] += weights[i];
    }
    let n = c.first.len();
    let distinct: Vec<SparseRow> = c.first.iter().map(|&i| rows[i].clone()).collect();
    let close = |dot: f64| (1.0 - dot).clamp(0.0, 2.0) <= eps;
    let dims = distinct
        .iter()
        .flat_map(|r| r.indices.iter())
        .map(|&i| i as usize + 1)
        .max()
        .unwrap_or(0);
    // Dense copies (4-wide padded) make the pairwise dot products cheap when they fit.
    let width = dims.div_ceil(4) * 4;
    let dense: Option<Vec<f64>> =
        (width <= 1024 && n.saturating_mul(width) <= 16 << 20).then(|| {
            let mut m = vec![0.0; n * width];
            for (u, r) in distinct.iter().enumerate() {
                for (&i, &v) in r.indices.iter().zip(&r.values) {
                    m[u * width + i as usize] = v;
                }
            }
            m
        });
    let dot = |a: usize, b: usize| -> f64 {
        match &dense {
            Some(m) => dense_dot(
                &m[a * width..(a + 1) * width],
                &m[b * width..(b + 1) * width],
            ),
            None => distinct[a].dot(&distinct[b]),
        }
    };
    let index = CosineIndex::new(&distinct, 1.0 - eps);
    // Prefix filtering only pays when it prunes; estimate the candidate visits it would make.
    let use_index = index.as_ref().is_some_and(|ix| {
        let visits: f64 = (0..ix.postings.len())
            .map(|f| ix.postings[f].len() as f64 * ix.support_df[f] as f64)
            .sum();
        dense.is_none() || visits < (n as f64) * (n as f64) / 4.0
    });
    // Candidates of `u` (a superset of its neighbours), or every row.
    let candidates = |u: usize, scratch: &mut Scratch, out: &mut Vec<usize>| match &index {
        Some(ix) if use_index => ix.candidates_from(u, 0, scratch, out),
        _ => out.extend(0..n),
    };
    let pool = Pool::current();

    // 1. Core points. A row stops looking once its neighbourhood holds `min_samples` (weighted)
    // points, so inside dense clusters this costs a few dot products per row, not n.
    let need = min_samples as f64;
    let is_core = |u: usize, scratch: &mut Scratch, buf: &mut Vec<usize>| -> bool {
        let mut w = 0.0;
        let mut hit = |v: usize| {
            if close(dot(u, v)) {
                w += c.weight[v];
            }
            w >= need
        };
        if use_index {
            buf.clear();
            candidates(u, scratch, buf);
            buf.iter().any(|&v| hit(v))
        } else {
            // From `u` onwards, then wrapping: the row itself (if not a zero row) counts first.
            (u..n).chain(0..u).any(hit)
        }
    };
    let core: Vec<bool> = per_row(&pool, n, progress, is_core);
    progress(n, n);

    // 2. Components of the core points: a breadth-first search that only ever looks at cores
    // no component has reached yet, so each pair of cores is compared at most once, and a
    // dense cluster is swept in about n / density comparisons instead of n^2 / 2. A core that
    // is already placed cannot neighbour the current search without belonging to it.
    let mut uf = UnionFind::new(n);
    let mut frontier: Vec<usize> = Vec::new();
    if use_index {
        let mut placed = vec![false; n];
        let (mut scratch, mut buf) = (Scratch::new(n), Vec::new());
        for seed in 0..n {
            if !core[seed] || placed[seed] {
                continue;
            }
            placed[seed] = true;
            frontier.push(seed);
            while let Some(u) = frontier.pop() {
                buf.clear();
                candidates(u, &mut scratch, &mut buf);
                for &v in &buf {
                    if core[v] && !placed[v] && close(dot(u, v)) {
                        placed[v] = true;
                        uf.union(u, v);
                        frontier.push(v);
                    }
                }
            }
        }
    } else {
        // Unplaced cores, highest index last so `pop` seeds in no particular but fixed order.
        let mut remaining: Vec<usize> = (0..n).filter(|&u| core[u]).collect();
        let mut near: Vec<bool> = Vec::new();
        while let Some(seed) = remaining.pop() {
            frontier.push(seed);
            while let Some(u) = frontier.pop() {
                near.clear();
                if pool.threads() > 1 && remaining.len() >= 4096 {
                    pool.install(|| {
                        remaining
                            .par_iter()
                            .map(|&v| close(dot(u, v)))
                            .collect_into_vec(&mut near)
                    });
                } else {
                    near.extend(remaining.iter().map(|&v| close(dot(u, v))));
                }
                let mut keep = 0;
                for i in 0..remaining.len() {
                    let v = remaining[i];
                    if near[i] {
                        uf.union(u, v);
                        frontier.push(v);
                    } else {
                        remaining[keep] = v;
                        keep += 1;
                    }
                }
                remaining.truncate(keep);
            }
        }
    }

    // 3. Border points take the component with the lowest key among their core neighbours:
    // cores are visited in ascending component key, so the first close one decides.
    let mut root = vec![usize::MAX; n];
    let mut comp_key = vec![usize::MAX; n];
    for u in 0..n {
        if core[u] {
            root[u] = uf.find(u);
            comp_key[root[u]] = comp_key[root[u]].min(c.first[u]);
        }
    }
    let mut cores_by_key: Vec<usize> = (0..n).filter(|&u| core[u]).collect();
    cores_by_key.sort_by_key(|&u| (comp_key[root[u]], u));
    let border_of = |u: usize, scratch: &mut Scratch, buf: &mut Vec<usize>| -> Option<usize> {
        if core[u] {
            return None;
        }
        if use_index {
            buf.clear();
            candidates(u, scratch, buf);
            buf.iter()
                .copied()
                .filter(|&v| core[v] && close(dot(u, v)))
                .min_by_key(|&v| comp_key[root[v]])
        } else {
            cores_by_key.iter().copied().find(|&v| close(dot(u, v)))
        }
    };
    let best: Vec<Option<usize>> = per_row(&pool, n, &mut |_, _| {}, border_of);
    Ok(finish(&c, &core, &mut uf, &best))
}

/// `f(u, scratch, buf)` for every distinct row `u`, on the pool's threads (each with its own
/// scratch space) or serially, reporting `progress(done, n)` every 1,024 rows when serial.
fn per_row<T: Send>(
    pool: &Pool,
    n: usize,
    progress: &mut dyn FnMut(usize, usize),
    f: impl Fn(usize, &mut Scratch, &mut Vec<usize>) -> T + Sync,
) -> Vec<T> {
    if pool.threads() > 1 {
        pool.install(|| {
            (0..n)
                .into_par_iter()
                .with_min_len(256)
                .map_init(
                    || (Scratch::new(n), Vec::new()),
                    |(scratch, buf), u| f(u, scratch, buf),
                )
                .collect()
        })
    } else {
        let (mut scratch, mut buf) = (Scratch::new(n), Vec::new());
        (0..n)
            .map(|u| {
                if u % 1024 == 0 {
                    progress(u, n);
                }
                f(u, &mut scratch, &mut buf)
            })
            .collect()
    }
}

/// Dot product of two equally long slices whose length is a multiple of 4, in four lanes.
fn dense_dot(a: &[f64], b: &[f64]) -> f64 {
    let (mut s0, mut s1, mut s2, mut s3) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
    for (x, y) in a.chunks_exact(4).zip(b.chunks_exact(4)) {
        s0 += x[0] * y[0];
        s1 += x[1] * y[1];
        s2 += x[2] * y[2];
        s3 += x[3] * y[3];
    }
    (s0 + s1) + (s2 + s3)
}

/// Scratch space for [`CosineIndex`] queries: a stamp per row to drop repeats and a dense
/// copy of the query row for fast dot products.
pub struct Scratch {
    stamp: Vec<u32>,
    now: u32,
    dense: Vec<f64>,
}

impl Scratch {
    /// Scratch for `n` rows.
    pub fn new(n: usize) -> Self {
        Scratch {
            stamp: vec![0; n],
            now: 0,
            dense: Vec::new(),
        }
    }
}

/// Exact candidate generation for "cosine similarity at least `t`" between l2-normalised rows
/// (prefix filtering, as in the AllPairs similarity join).
///
/// Each row indexes only its rarest features, up to the point where the rest of the row has
/// norm below `t`; a row that shares none of those features with another cannot reach
/// similarity `t` with it, because the dot product is then bounded by the norm of the rest.
/// Candidates are verified by the caller.
pub struct CosineIndex {
    /// Feature -> rows that index it in their prefix.
    postings: Vec<Vec<u32>>,
    /// Feature -> every row holding it.
    full: Vec<Vec<u32>>,
    /// Row -> its features.
    support: Vec<Vec<u32>>,
    /// Row -> its prefix features.
    prefix: Vec<Vec<u32>>,
    support_df: Vec<u32>,
}

impl CosineIndex {
    /// Builds the index; `None` when `t <= 0` (every pair may qualify, nothing can be pruned).
    pub fn new(rows: &[SparseRow], t: f64) -> Option<CosineIndex> {
        if t.is_nan() || t <= 0.0 {
            return None;
        }
        // Slightly lower bound so rounding never drops a true pair.
        let bound = t * (1.0 - 1e-9) - 1e-12;
        let n_features = rows
            .iter()
            .flat_map(|r| r.indices.iter())
            .map(|&i| i as usize + 1)
            .max()
            .unwrap_or(0);
        let mut df = vec![0u32; n_features];
        for r in rows {
            for &i in &r.indices {
                df[i as usize] += 1;
            }
        }
        let mut postings: Vec<Vec<u32>> = vec![Vec::new(); n_features];
        let mut full: Vec<Vec<u32>> = vec![Vec::new(); n_features];
        let mut prefix: Vec<Vec<u32>> = Vec::with_capacity(rows.len());
        let mut entries: Vec<(u32, f64)> = Vec::new();
        for (id, r) in rows.iter().enumerate() {
            for &f in &r.indices {
                full[f as usize].push(id as u32);
            }
            let mut mine = Vec::new();
            entries.clear();
            entries.extend(r.indices.iter().copied().zip(r.values.iter().copied()));
            // Rarest features first (ties by feature index).
            entries.sort_by_key(|&(f, _)| (df[f as usize], f));
            let mut rest: f64 = entries.iter().map(|e| e.1 * e.1).sum();
            for &(f, v) in entries.iter() {
                if rest.max(0.0).sqrt() < bound {
                    break;
                }
                postings[f as usize].push(id as u32);
                mine.push(f);
                rest -= v * v;
            }
            prefix.push(mine);
        }
        let support = rows.iter().map(|r| r.indices.clone()).collect();
        Some(CosineIndex {
            postings,
            full,
            support,
            prefix,
            support_df: df,
        })
    }

    /// Calls `keep(v, dot)` for every candidate `v >= min_row` of row `u` with the exact dot
    /// product (summed in ascending feature order, as [`SparseRow::dot`]) and pushes `v` to
    /// `out` when it returns true.
    pub fn query(
        &self,
        rows: &[SparseRow],
        u: usize,
        min_row: usize,
        scratch: &mut Scratch,
        out: &mut Vec<usize>,
        keep: &mut dyn FnMut(usize, f64) -> bool,
    ) {
        let start = out.len();
        self.candidates_from(u, min_row, scratch, out);
        let dense = &mut scratch.dense;
        let dims = self.postings.len();
        if dense.len() < dims {
            dense.resize(dims, 0.0);
        }
        let q = &rows[u];
        for (&i, &v) in q.indices.iter().zip(&q.values) {
            dense[i as usize] = v;
        }
        let mut w = start;
        for r in start..out.len() {
            let v = out[r];
            let row = &rows[v];
            let mut dot = 0.0;
            for (&i, &x) in row.indices.iter().zip(&row.values) {
                let d = dense[i as usize];
                if d != 0.0 {
                    dot += d * x;
                }
            }
            if keep(v, dot) {
                out[w] = v;
                w += 1;
            }
        }
        out.truncate(w);
        for &i in &q.indices {
            dense[i as usize] = 0.0;
        }
    }

    /// Appends to `out` every row that might reach the threshold with row `u` (each once).
    pub fn candidates(&self, u: usize, scratch: &mut Scratch, out: &mut Vec<usize>) {
        self.candidates_from(u, 0, scratch, out);
    }

    /// As [`CosineIndex::candidates`], limited to rows `>= min_row` (posting lists are sorted).
    pub fn candidates_from(
        &self,
        u: usize,
        min_row: usize,
        scratch: &mut Scratch,
        out: &mut Vec<usize>,
    ) {
        scratch.now = scratch.now.wrapping_add(1);
        if scratch.now == 0 {
            scratch.stamp.iter_mut().for_each(|s| *s = 0);
            scratch.now = 1;
        }
        // A pair within the threshold shares a feature of each row's prefix with the other
        // row, so either side yields a superset: rows whose prefix meets `u`'s features, or
        // rows holding one of `u`'s prefix features. Walk the shorter.
        let by_prefix: usize = self.support[u]
            .iter()
            .map(|&f| self.postings[f as usize].len())
            .sum();
        let by_full: usize = self.prefix[u]
            .iter()
            .map(|&f| self.full[f as usize].len())
            .sum();
        let (features, lists) = if by_full < by_prefix {
            (&self.prefix[u], &self.full)
        } else {
            (&self.support[u], &self.postings)
        };
        for &f in features {
            let list = &lists[f as usize];
            let from = list.partition_point(|&v| (v as usize) < min_row);
            for &v in &list[from..] {
                let slot = &mut scratch.stamp[v as usize];
                if *slot != scratch.now {
                    *slot = scratch.now;
                    out.push(v as usize);
                }
            }
        }
    }
}
