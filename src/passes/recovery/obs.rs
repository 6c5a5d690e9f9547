//! Optimal Brain Surgeon for one layer: choose weights to remove and re-solve the rest so that
//! the layer's output on calibration inputs changes as little as possible.
//!
//! A layer is `W` (rows x (n + 1)): the flattened Conv weight with the bias as last column, so
//! that it acts on im2col columns `x` with a 1 appended. Its inputs are summarised by
//! `H = sum x xT` ([`crate::calib::InputStats`]). Removing weight `q` of a row `w` and
//! updating the rest optimally costs `w_q^2 / (2 [H^-1]_qq)` and moves the row by
//! `-w_q / [H^-1]_qq * H^-1[q, :]` (Hassibi & Stork's OBS).
//!
//! [`sparsify`] applies this to every row at once in a fixed column order, as SparseGPT
//! (Frantar & Alistarh, 2023) does: with `H^-1 = UT U` (U upper triangular), eliminating column
//! `i` is exact OBS on the columns not yet eliminated, with `U[i, i]^2` the right diagonal entry of
//! their inverse and `U[i, i..] / U[i, i]` the update direction. Updates inside a block of columns
//! are applied at once; the rest of the matrix is updated lazily once per block. Which entries go
//! is chosen per block by saliency `w^2 / U[i, i]^2`, for N:M per group of M columns and row.
//!
//! [`remove_columns`] is the structured form (whole input channels: a block `Q` of columns at a
//! time), used by channel pruning: `dW = -W[:, Q] ([H^-1]_QQ)^-1 [H^-1]_Q,:` with loss
//! `1/2 tr(W[:, Q] ([H^-1]_QQ)^-1 W[:, Q]T)`, after which `H^-1` is restricted to what remains.

use anyhow::{Result, bail};
use faer::linalg::matmul::matmul;
use faer::linalg::solvers::DenseSolveCore;
use faer::{Accum, Mat, Par, Side};

/// Columns eliminated together before the lazy update of the rest.
const BLOCK: usize = 128;

/// `H + damp * mean(diag H) * I`, inverted through its Cholesky factor. If that fails (a Gram
/// matrix of too few samples), the damping grows tenfold, up to three times.
pub fn damped_inverse(gram: &Mat<f64>, damp: f64) -> Result<Mat<f64>> {
    let n = gram.nrows();
    let mean_diag = (0..n).map(|i| gram[(i, i)]).sum::<f64>() / n.max(1) as f64;
    let scale = if mean_diag > 0.0 { mean_diag } else { 1.0 };
    let mut lambda = damp * scale;
    for _ in 0..4 {
        let mut h = gram.clone();
        for i in 0..n {
            h[(i, i)] += lambda;
        }
        if let Ok(llt) = h.llt(Side::Lower) {
            return Ok(llt.inverse());
        }
        lambda *= 10.0;
    }
    bail!("the calibration Gram matrix is not positive definite even with damping {lambda:.3e}")
}

/// Which entries [`sparsify`] removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Exactly this many entries of the weight (the bias column never goes).
    Count(usize),
    /// In every run of `m` consecutive columns of the given order, keep `n` entries per row.
    NM { n: usize, m: usize },
}

/// Prunes `w` (rows x (n + 1), bias last) by `rule`, eliminating the weight columns in `order`
/// (a permutation of `0..n`; the bias column comes last and is never removed), and updates the
/// remaining entries by OBS. `h_inverse` is the damped inverse of the layer's Gram matrix, in the
/// columns' natural order. The removed entries are exactly 0 in the result.
pub fn sparsify(
    w: &Mat<f64>,
    h_inverse: &Mat<f64>,
    rule: Rule,
    order: &[usize],
) -> Result<Mat<f64>> {
    let (rows, cols) = (w.nrows(), w.ncols());
    let n = cols - 1;
    if order.len() != n || h_inverse.nrows() != cols {
        bail!(
            "OBS: the order has {} columns, the weight {n}, H^-1 {}",
            order.len(),
            h_inverse.nrows()
        );
    }
    let full: Vec<usize> = order.iter().copied().chain([n]).collect();
    let permuted_inverse = Mat::from_fn(cols, cols, |i, j| h_inverse[(full[i], full[j])]);
    let u = upper_factor(&permuted_inverse)?;
    let mut weights = Mat::from_fn(rows, cols, |r, j| w[(r, full[j])]);
    let block = match rule {
        Rule::NM { m, .. } => BLOCK.div_ceil(m) * m,
        Rule::Count(_) => BLOCK,
    };
    let mut start = 0;
    while start < n {
        let end = (start + block).min(n);
        let width = end - start;
        let mut errors = Mat::<f64>::zeros(rows, width);
        let mut pruned = vec![false; rows * width];
        if let Rule::Count(k) = rule {
            let quota = share(k, n, end) - share(k, n, start);
            choose_smallest(&weights, &u, start, width, quota, &mut pruned);
        }
        for i in 0..width {
            let col = start + i;
            if let Rule::NM { n: keep, m } = rule
                && i % m == 0
            {
                choose_per_row(
                    &weights,
                    &u,
                    col,
                    m.min(width - i),
                    keep,
                    i,
                    width,
                    &mut pruned,
                );
            }
            let d = u[(col, col)];
            for r in 0..rows {
                let value = weights[(r, col)];
                let target = if pruned[r * width + i] { 0.0 } else { value };
                let err = (value - target) / d;
                errors[(r, i)] = err;
                if err != 0.0 {
                    for j in col..end {
                        weights[(r, j)] -= err * u[(col, j)];
                    }
                }
                if pruned[r * width + i] {
                    weights[(r, col)] = 0.0;
                }
            }
        }
        if end < cols {
            let mut rest = weights.as_mut().subcols_mut(end, cols - end);
            let coupling = u.as_ref().submatrix(start, end, width, cols - end);
            matmul(
                &mut rest,
                Accum::Add,
                &errors,
                coupling,
                -1.0,
                Par::rayon(0),
            );
        }
        start = end;
    }
    let mut out = Mat::zeros(rows, cols);
    for (j, &c) in full.iter().enumerate() {
        for r in 0..rows {
            out[(r, c)] = weights[(r, j)];
        }
    }
    Ok(out)
}

/// `k * upto / n`, rounded: the cumulative quota of the first `upto` of `n` columns.
fn share(k: usize, n: usize, upto: usize) -> usize {
    ((k as u128 * upto as u128 + n as u128 / 2) / n as u128) as usize
}

/// Marks the `quota` entries of columns `start..start + width` with the smallest saliency
/// `w^2 / U[j, j]^2` (ties: lower row, then lower column).
fn choose_smallest(
    w: &Mat<f64>,
    u: &Mat<f64>,
    start: usize,
    width: usize,
    quota: usize,
    pruned: &mut [bool],
) {
    let saliency = |r: usize, i: usize| {
        let (v, d) = (w[(r, start + i)], u[(start + i, start + i)]);
        v * v / (d * d)
    };
    let mut entries: Vec<(f64, usize)> = (0..w.nrows())
        .flat_map(|r| (0..width).map(move |i| (r, i)))
        .map(|(r, i)| (saliency(r, i), r * width + i))
        .collect();
    let quota = quota.min(entries.len());
    if quota == 0 {
        return;
    }
    entries.select_nth_unstable_by(quota - 1, |a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    for &(_, index) in &entries[..quota] {
        pruned[index] = true;
    }
}

/// In every row, marks the `len - keep` entries of columns `col..col + len` with the smallest
/// saliency (ties: the later column goes). `offset` is `col`'s position in the block.
#[allow(clippy::too_many_arguments)]
fn choose_per_row(
    w: &Mat<f64>,
    u: &Mat<f64>,
    col: usize,
    len: usize,
    keep: usize,
    offset: usize,
    width: usize,
    pruned: &mut [bool],
) {
    let mut group: Vec<(f64, usize)> = Vec::with_capacity(len);
    for r in 0..w.nrows() {
        group.clear();
        group.extend((0..len).map(|i| {
            let (v, d) = (w[(r, col + i)], u[(col + i, col + i)]);
            (v * v / (d * d), i)
        }));
        // Largest saliency first; equal saliencies keep the earlier column.
        group.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        for &(_, i) in group.iter().skip(keep) {
            pruned[r * width + offset + i] = true;
        }
    }
}

/// The upper triangular `U` with `a = UT U`.
fn upper_factor(a: &Mat<f64>) -> Result<Mat<f64>> {
    let Ok(llt) = a.llt(Side::Lower) else {
        bail!("OBS: H^-1 is not positive definite");
    };
    Ok(llt.L().transpose().to_owned())
}

/// A layer from which whole blocks of input columns (input channels) are removed, one block at a
/// time, by structured OBS. `h_inverse` is kept restricted to the columns not yet removed (the
/// removed ones have zero rows and columns in it).
#[derive(Debug, Clone)]
pub struct StructuredLayer {
    pub w: Mat<f64>,
    pub h_inverse: Mat<f64>,
}

impl StructuredLayer {
    /// `1/2 tr(W[:, Q] ([H^-1]_QQ)^-1 W[:, Q]T)`: the output error of removing columns `q`.
    pub fn removal_loss(&self, q: &[usize]) -> Result<f64> {
        let inverse = self.block_inverse(q)?;
        let mut total = 0.0;
        for r in 0..self.w.nrows() {
            for (a, &qa) in q.iter().enumerate() {
                let wa = self.w[(r, qa)];
                if wa == 0.0 {
                    continue;
                }
                for (b, &qb) in q.iter().enumerate() {
                    total += wa * inverse[(a, b)] * self.w[(r, qb)];
                }
            }
        }
        Ok(total / 2.0)
    }

    /// Removes columns `q`: `W -= W[:, Q] ([H^-1]_QQ)^-1 [H^-1]_Q,:` (the columns `q` become
    /// exactly 0) and `H^-1` is restricted to the remaining columns. Returns the loss.
    pub fn remove(&mut self, q: &[usize]) -> Result<f64> {
        let loss = self.removal_loss(q)?;
        let inverse = self.block_inverse(q)?;
        let cols = self.w.ncols();
        let rows_q = Mat::from_fn(q.len(), cols, |a, j| self.h_inverse[(q[a], j)]);
        let wq = Mat::from_fn(self.w.nrows(), q.len(), |r, a| self.w[(r, q[a])]);
        let mut coefficients = Mat::zeros(self.w.nrows(), q.len());
        matmul(
            &mut coefficients,
            Accum::Replace,
            &wq,
            &inverse,
            1.0,
            Par::Seq,
        );
        matmul(
            &mut self.w,
            Accum::Add,
            &coefficients,
            &rows_q,
            -1.0,
            Par::rayon(0),
        );
        let mut inverse_rows = Mat::zeros(q.len(), cols);
        matmul(
            &mut inverse_rows,
            Accum::Replace,
            &inverse,
            &rows_q,
            1.0,
            Par::Seq,
        );
        matmul(
            &mut self.h_inverse,
            Accum::Add,
            rows_q.transpose(),
            &inverse_rows,
            -1.0,
            Par::rayon(0),
        );
        for &c in q {
            for r in 0..self.w.nrows() {
                self.w[(r, c)] = 0.0;
            }
            for j in 0..cols {
                self.h_inverse[(c, j)] = 0.0;
                self.h_inverse[(j, c)] = 0.0;
            }
        }
        Ok(loss)
    }

    fn block_inverse(&self, q: &[usize]) -> Result<Mat<f64>> {
        let block = Mat::from_fn(q.len(), q.len(), |a, b| self.h_inverse[(q[a], q[b])]);
        match block.llt(Side::Lower) {
            Ok(llt) => Ok(llt.inverse()),
            Err(_) => bail!("OBS: [H^-1]_QQ of columns {q:?} is not positive definite"),
        }
    }
}

/// `1/2 sum_r dW_r H dW_rT`: how much the layer's squared output error over the calibration
/// samples grows from `before` to `after` (for the reference inputs; half the usual sum).
pub fn output_error(before: &Mat<f64>, after: &Mat<f64>, gram: &Mat<f64>) -> f64 {
    let delta = after - before;
    let mut dh = Mat::zeros(delta.nrows(), gram.ncols());
    matmul(&mut dh, Accum::Replace, &delta, gram, 1.0, Par::rayon(0));
    let mut total = 0.0;
    for j in 0..delta.ncols() {
        for r in 0..delta.nrows() {
            total += dh[(r, j)] * delta[(r, j)];
        }
    }
    total / 2.0
}

/// `1/2 sum_r w_r H w_rT`: half the layer's squared output over the calibration samples.
pub fn output_energy(w: &Mat<f64>, gram: &Mat<f64>) -> f64 {
    output_error(&Mat::zeros(w.nrows(), w.ncols()), w, gram)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn random(rows: usize, cols: usize, rng: &mut ChaCha8Rng) -> Mat<f64> {
        Mat::from_fn(rows, cols, |_, _| rng.random_range(-1.0..1.0))
    }

    /// Samples with a constant last feature (the bias input) and others of widely different
    /// scales (as channels of a real layer are), each correlated with its neighbour.
    fn gram_of_samples(samples: usize, n: usize, rng: &mut ChaCha8Rng) -> Mat<f64> {
        let scale: Vec<f64> = (0..n)
            .map(|_| rng.random_range(-2.0f64..2.0).exp())
            .collect();
        let z = random(samples, n, rng);
        let x = Mat::from_fn(samples, n + 1, |s, j| {
            if j == n {
                1.0
            } else {
                (z[(s, j)] + 0.3 * z[(s, (j + 1) % n)]) * scale[j] + 0.3
            }
        });
        x.transpose() * &x
    }

    #[test]
    fn count_rule_removes_exactly_k_and_never_the_bias() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let (rows, n) = (5, 300);
        let w = random(rows, n + 1, &mut rng);
        let h = gram_of_samples(800, n, &mut rng);
        let hinv = damped_inverse(&h, 0.01).unwrap();
        let order: Vec<usize> = (0..n).collect();
        for k in [0, 1, 377, 1499] {
            let out = sparsify(&w, &hinv, Rule::Count(k), &order).unwrap();
            let zeros = (0..rows)
                .flat_map(|r| (0..n).map(move |j| (r, j)))
                .filter(|&(r, j)| out[(r, j)] == 0.0)
                .count();
            assert_eq!(zeros, k);
            assert!((0..rows).all(|r| out[(r, n)] != 0.0));
        }
    }

    #[test]
    fn n_m_rule_keeps_n_of_every_m_in_the_order() {
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let (rows, n) = (3, 24);
        let w = random(rows, n + 1, &mut rng);
        let h = gram_of_samples(200, n, &mut rng);
        let hinv = damped_inverse(&h, 0.01).unwrap();
        // Groups of 4 taken with a stride, as tap-major order does for 4 channels x 6 taps.
        let order: Vec<usize> = (0..6)
            .flat_map(|t| (0..4).map(move |c| c * 6 + t))
            .collect();
        let out = sparsify(&w, &hinv, Rule::NM { n: 2, m: 4 }, &order).unwrap();
        for r in 0..rows {
            for group in order.chunks(4) {
                let kept = group.iter().filter(|&&j| out[(r, j)] != 0.0).count();
                assert_eq!(kept, 2, "row {r}, group {group:?}");
            }
        }
    }

    #[test]
    fn obs_beats_magnitude_pruning_on_the_layer_output() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let (rows, n) = (8, 64);
        let w = random(rows, n + 1, &mut rng);
        let h = gram_of_samples(500, n, &mut rng);
        let hinv = damped_inverse(&h, 0.01).unwrap();
        let k = rows * n / 2;
        let order: Vec<usize> = (0..n).collect();
        let obs = sparsify(&w, &hinv, Rule::Count(k), &order).unwrap();
        let mut magnitude = w.clone();
        let mut entries: Vec<(f64, usize, usize)> = (0..rows)
            .flat_map(|r| (0..n).map(move |j| (r, j)))
            .map(|(r, j)| (w[(r, j)].abs(), r, j))
            .collect();
        entries.sort_by(|a, b| a.0.total_cmp(&b.0));
        for &(_, r, j) in &entries[..k] {
            magnitude[(r, j)] = 0.0;
        }
        let (e_obs, e_mag) = (output_error(&w, &obs, &h), output_error(&w, &magnitude, &h));
        assert!(e_obs < 0.5 * e_mag, "OBS {e_obs} against magnitude {e_mag}");
    }
}
