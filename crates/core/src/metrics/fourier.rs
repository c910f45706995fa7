/*!
Fourier views of a model (Nanda et al.; the paper, section 4 of the reference):

- [`embedding_spectrum`]: the energy of each frequency `k = 0..=⌊p/2⌋` of the token embedding
  along the token axis, in the orthonormal real Fourier basis over `t = 0..p`.
- [`key_frequencies`]: the frequencies that hold a large share of the non-constant energy.
- [`ablate_sum_frequencies`]: Nanda's restricted and excluded logits, i.e. the logits projected
  onto (or with the projection removed of) the directions `cos(w_k(a+b))`, `sin(w_k(a+b))` of the
  key frequencies, over the pair axis, one output column at a time.
- [`logit_fve`]: fraction of the variance of the logits explained by the Clock form
  `cos(w(a+b−c))` or the Pizza form `2|cos(w(a−b)/2)|·(|cos(w(a+b−c)/2)| − |sin(w(a+b−c)/2)|)`.

`w_k = 2πk/p` throughout; `a`, `b`, `c` are operand and class *values* in `0..p` (with separate
vocabularies the token of `b` is `b + p`, but the functions are of the value `b`).
*/

use std::f64::consts::PI;

/// Energy `‖E·cos_k‖² + ‖E·sin_k‖²` of each frequency `k = 0..=⌊p/2⌋` of the first `p` token
/// embeddings, where `E` is `embed.W_E` (row-major `d × vocab`) and `cos_k`, `sin_k` are the unit
/// vectors `√(2/p)·cos(2πkt/p)`, `√(2/p)·sin(2πkt/p)` over tokens `t = 0..p` (`1/√p` for `k = 0`
/// and for `k = p/2` when `p` is even). The basis is orthonormal, so the energies sum to
/// `‖E[:, :p]‖²`; the per-frequency norm of Nanda's plots is the square root.
pub fn embedding_spectrum(w_e: &[f64], d: usize, vocab: usize, p: usize) -> Vec<f64> {
    assert_eq!(w_e.len(), d * vocab);
    assert!(vocab >= p);
    let half = p / 2;
    let mut energy = vec![0.0; half + 1];
    for (k, slot) in energy.iter_mut().enumerate() {
        let w = 2.0 * PI * k as f64 / p as f64;
        let single = k == 0 || (p & 1 == 0 && k == half);
        let scale = if single { 1.0 / (p as f64).sqrt() } else { (2.0 / p as f64).sqrt() };
        let cos: Vec<f64> = (0..p).map(|t| scale * (w * t as f64).cos()).collect();
        let sin: Vec<f64> = (0..p).map(|t| scale * (w * t as f64).sin()).collect();
        let mut e = 0.0;
        for row in w_e.chunks_exact(vocab) {
            let row = &row[..p];
            let c: f64 = row.iter().zip(&cos).map(|(x, y)| x * y).sum();
            e += c * c;
            if !single {
                let s: f64 = row.iter().zip(&sin).map(|(x, y)| x * y).sum();
                e += s * s;
            }
        }
        *slot = e;
    }
    energy
}

/// A frequency is *key* when it holds at least this multiple of the uniform share of the
/// non-constant energy (`KEY_FACTOR / ⌊p/2⌋`). See [`key_frequencies`].
pub const KEY_FACTOR: f64 = 2.0;

/// Shares of the non-constant energy: `energy[k] / Σ_{k≥1} energy` (entry 0 is 0).
pub fn shares(energy: &[f64]) -> Vec<f64> {
    let total: f64 = energy.iter().skip(1).sum();
    energy
        .iter()
        .enumerate()
        .map(|(k, e)| if k == 0 || total <= 0.0 { 0.0 } else { e / total })
        .collect()
}

/// Key frequencies of a spectrum: every `k ≥ 1` whose share of the non-constant energy is at least
/// [`KEY_FACTOR`] times the uniform share `1/⌊p/2⌋`, in increasing order. A random embedding
/// spreads its energy nearly evenly (each frequency's energy is a sum of `2·d_model` squared
/// Gaussians, within about ±10 % of the mean at `d_model = 128`), so it has none; a trained model
/// concentrates its energy on a handful.
pub fn key_frequencies(energy: &[f64]) -> Vec<usize> {
    let n = energy.len().saturating_sub(1);
    if n == 0 {
        return Vec::new();
    }
    let threshold = KEY_FACTOR / n as f64;
    shares(energy).iter().enumerate().skip(1).filter(|(_, s)| **s >= threshold).map(|(k, _)| k).collect()
}

/// Logits with the `cos(w_k(a+b))`, `sin(w_k(a+b))` components of the key frequencies kept
/// (restricted: plus each column's mean over pairs) and removed (excluded), as Nanda's progress
/// measures. `logits` is row-major `p² × cols` (row `a·p + b`); the projection is over the `p²`
/// pairs, separately for every column. Returns `(restricted, excluded)` in the same layout.
pub fn ablate_sum_frequencies(logits: &[f64], cols: usize, p: usize, key: &[usize]) -> (Vec<f64>, Vec<f64>) {
    let n = p * p;
    assert_eq!(logits.len(), n * cols);
    // Sums over the pairs of each residue s = (a+b) mod p, per column: every basis function is a
    // function of s, and each s occurs p times.
    let mut by_sum = vec![0.0; p * cols];
    let mut mean = vec![0.0; cols];
    for a in 0..p {
        for b in 0..p {
            let s = (a + b) % p;
            let row = &logits[(a * p + b) * cols..(a * p + b + 1) * cols];
            for (j, x) in row.iter().enumerate() {
                by_sum[s * cols + j] += x;
                mean[j] += x;
            }
        }
    }
    mean.iter_mut().for_each(|m| *m /= n as f64);
    // Projection onto the key directions, as a function of (s, column).
    let mut proj = vec![0.0; p * cols];
    for &k in key {
        let w = 2.0 * PI * k as f64 / p as f64;
        for basis in [f64::cos as fn(f64) -> f64, f64::sin] {
            let phi: Vec<f64> = (0..p).map(|s| basis(w * s as f64)).collect();
            let norm2 = p as f64 * phi.iter().map(|x| x * x).sum::<f64>();
            if norm2 < 1e-9 * n as f64 {
                continue; // sin at k = 0 or k = p/2
            }
            for j in 0..cols {
                let coef = (0..p).map(|s| by_sum[s * cols + j] * phi[s]).sum::<f64>() / norm2;
                for s in 0..p {
                    proj[s * cols + j] += coef * phi[s];
                }
            }
        }
    }
    let mut restricted = vec![0.0; n * cols];
    let mut excluded = vec![0.0; n * cols];
    for a in 0..p {
        for b in 0..p {
            let (i, s) = (a * p + b, (a + b) % p);
            for j in 0..cols {
                let pr = proj[s * cols + j];
                restricted[i * cols + j] = mean[j] + pr;
                excluded[i * cols + j] = logits[i * cols + j] - pr;
            }
        }
    }
    (restricted, excluded)
}

/// The two logit forms of the paper.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// `cos(w(a+b−c))`.
    Clock,
    /// `2|cos(w(a−b)/2)|·(|cos(w(a+b−c)/2)| − |sin(w(a+b−c)/2)|)`.
    Pizza,
}

impl Form {
    /// Value for frequency `k` at residues `sum_minus_c = (a+b−c) mod p`, `diff = (a−b) mod p`.
    /// (The absolute values make the Pizza form a function of residues: shifting an argument by
    /// `p` changes the half-angle by `πk`, which only flips signs.)
    pub fn value(self, k: usize, p: usize, sum_minus_c: usize, diff: usize) -> f64 {
        let w = 2.0 * PI * k as f64 / p as f64;
        match self {
            Form::Clock => (w * sum_minus_c as f64).cos(),
            Form::Pizza => {
                let h = w * sum_minus_c as f64 / 2.0;
                2.0 * (w * diff as f64 / 2.0).cos().abs() * (h.cos().abs() - h.sin().abs())
            }
        }
    }
}

/// The logits reduced to what the FVE regressions need, so that many frequency sets can be
/// fitted in `O(p²·|key|²)` each after one `O(p³)` pass.
///
/// Every regressor is a function of `u = (a+b−c) mod p` and `d = (a−b) mod p`, and for a fixed
/// pair, `c ↦ u` is a bijection. So `Xᵀy = Σ_{u,d} x(u,d)·Y[u][d]` with
/// `Y[u][d] = Σ_{pairs with difference d} y(a, b, (a+b−u) mod p)`, and
/// `XᵀX = p·Σ_d Σ_u x̃_i(u,d)·x̃_j(u,d)` (each difference occurs for `p` pairs; `x̃` is centred over
/// `u`, i.e. over the classes).
#[derive(Debug, Clone)]
pub struct FveData {
    p: usize,
    /// `Σ y²` over all pairs and classes (y centred per pair).
    tss: f64,
    /// `Y[u·p + d]`.
    agg: Vec<f64>,
}

impl FveData {
    /// One pass over the logits (row-major `p² × vocab`; classes `0..p` are used).
    pub fn new(logits: &[f64], vocab: usize, p: usize) -> FveData {
        let mut agg = vec![0.0; p * p];
        let mut tss = 0.0;
        for a in 0..p {
            for b in 0..p {
                let row = &logits[(a * p + b) * vocab..(a * p + b) * vocab + p];
                let mean = row.iter().sum::<f64>() / p as f64;
                let d = (a + p - b) % p;
                for (c, x) in row.iter().enumerate() {
                    let y = x - mean;
                    tss += y * y;
                    agg[((a + b + p - c) % p) * p + d] += y;
                }
            }
        }
        FveData { p, tss, agg }
    }

    /// Fraction of variance explained by `form` at the frequencies `key` jointly (see
    /// [`logit_fve`]).
    pub fn fve(&self, key: &[usize], form: Form) -> f64 {
        let (p, nk) = (self.p, key.len());
        if nk == 0 {
            return 0.0;
        }
        if self.tss.is_nan() || self.tss <= 0.0 {
            return f64::NAN;
        }
        // Regressors over (u, d), centred over u for each d.
        let x: Vec<Vec<f64>> = key
            .iter()
            .map(|&k| {
                let mut t = vec![0.0; p * p];
                for d in 0..p {
                    let mut mean = 0.0;
                    for u in 0..p {
                        t[u * p + d] = form.value(k, p, u, d);
                        mean += t[u * p + d];
                    }
                    mean /= p as f64;
                    for u in 0..p {
                        t[u * p + d] -= mean;
                    }
                }
                t
            })
            .collect();
        let mut xtx = vec![0.0; nk * nk];
        let mut xty = vec![0.0; nk];
        for i in 0..nk {
            xty[i] = x[i].iter().zip(&self.agg).map(|(u, v)| u * v).sum();
            for j in i..nk {
                let v = p as f64 * x[i].iter().zip(&x[j]).map(|(u, v)| u * v).sum::<f64>();
                xtx[i * nk + j] = v;
                xtx[j * nk + i] = v;
            }
        }
        let beta = solve_least_squares(&xtx, &xty, nk);
        let explained: f64 = beta.iter().zip(&xty).map(|(b, v)| b * v).sum();
        (explained / self.tss).clamp(0.0, 1.0)
    }
}

/// Fraction of variance of the logits explained by `form` at the frequencies `key` (jointly).
///
/// Target: the logits of the answer classes `c = 0..p` of every pair, each pair centred over its
/// `p` classes (softmax ignores a per-pair shift). Regressors: the form at each key frequency,
/// centred the same way. Ordinary least squares without intercept over all `p³` values;
/// FVE = `1 − RSS/TSS` ∈ [0, 1]. With no key frequency the FVE is 0. `logits` is row-major
/// `p² × vocab`. (Computed through [`FveData`]; to fit several frequency sets, build that once.)
pub fn logit_fve(logits: &[f64], vocab: usize, p: usize, key: &[usize], form: Form) -> f64 {
    FveData::new(logits, vocab, p).fve(key, form)
}

/// Solves the normal equations `A·x = b` (A symmetric positive semi-definite, `n×n`) by Gaussian
/// elimination with partial pivoting; directions with a negligible pivot get a zero coefficient.
pub(crate) fn solve_least_squares(a: &[f64], b: &[f64], n: usize) -> Vec<f64> {
    let mut m: Vec<Vec<f64>> = (0..n).map(|i| {
        let mut r = a[i * n..(i + 1) * n].to_vec();
        r.push(b[i]);
        r
    }).collect();
    let scale = (0..n).map(|i| a[i * n + i].abs()).fold(0.0, f64::max);
    let mut pivot_of = vec![None; n];
    let mut row = 0;
    for col in 0..n {
        let Some(best) = (row..n).max_by(|&i, &j| m[i][col].abs().total_cmp(&m[j][col].abs())) else { break };
        if m[best][col].abs() <= 1e-12 * scale.max(f64::MIN_POSITIVE) {
            continue;
        }
        m.swap(row, best);
        for i in 0..n {
            if i != row {
                let f = m[i][col] / m[row][col];
                if f != 0.0 {
                    let pivot_row = m[row].clone();
                    for (x, y) in m[i][col..].iter_mut().zip(&pivot_row[col..]) {
                        *x -= f * y;
                    }
                }
            }
        }
        pivot_of[col] = Some(row);
        row += 1;
    }
    (0..n).map(|col| pivot_of[col].map_or(0.0, |r| m[r][n] / m[r][col])).collect()
}
