/*!
Circularity of the token embedding (reference section 4): whether the embeddings of the `p`
operand tokens lie on circles, as both Clock and Pizza need.

PCA of the `p` token embeddings (centred over tokens). For each of the first four principal
components, `v` is the vector of the `p` tokens' coordinates along it, scaled to unit norm, and its
score is `max_{k=1..p−1} (2/p)·|Σ_t v[t·k mod p]·e^{2πit/p}|²`, clipped to `[0, 1]`: 1 when `v` is
a sampled sinusoid `cos(2π·k₀·t/p + φ)` (for prime `p`, `k` undoes the frequency `k₀`), about
`(2/p)·ln p` for a random direction. Circularity is the mean of the four scores.

Only the first `p` tokens are used: the operand vocabulary (with separate vocabularies, `a`'s
tokens; the `=` token is never included).
*/

/// Eigen-decomposition of a symmetric `n×n` matrix (row-major) by cyclic Jacobi rotations:
/// eigenvalues in descending order and the matching unit eigenvectors (`vecs[i]` is a column).
pub fn symmetric_eigen(a: &[f64], n: usize) -> (Vec<f64>, Vec<Vec<f64>>) {
    assert_eq!(a.len(), n * n);
    let mut m = a.to_vec();
    let mut v = vec![0.0; n * n];
    for i in 0..n {
        v[i * n + i] = 1.0;
    }
    let norm: f64 = m.iter().map(|x| x * x).sum::<f64>().sqrt();
    // Cyclic sweeps converge quadratically; the off-diagonal norm reaches rounding level
    // (~1e-16·‖A‖·n) in well under 20 sweeps, so the tolerance sits just above that.
    for _sweep in 0..50 {
        let off: f64 = (0..n).flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j))).map(|(i, j)| m[i * n + j].powi(2)).sum();
        if off.sqrt() <= 1e-13 * norm.max(f64::MIN_POSITIVE) {
            break;
        }
        for pi in 0..n {
            for q in pi + 1..n {
                let apq = m[pi * n + q];
                if apq.abs() < 1e-300 {
                    continue;
                }
                let (app, aqq) = (m[pi * n + pi], m[q * n + q]);
                let theta = (aqq - app) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    let (mkp, mkq) = (m[k * n + pi], m[k * n + q]);
                    m[k * n + pi] = c * mkp - s * mkq;
                    m[k * n + q] = s * mkp + c * mkq;
                }
                for k in 0..n {
                    let (mpk, mqk) = (m[pi * n + k], m[q * n + k]);
                    m[pi * n + k] = c * mpk - s * mqk;
                    m[q * n + k] = s * mpk + c * mqk;
                }
                for k in 0..n {
                    let (vkp, vkq) = (v[k * n + pi], v[k * n + q]);
                    v[k * n + pi] = c * vkp - s * vkq;
                    v[k * n + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&i, &j| m[j * n + j].total_cmp(&m[i * n + i]));
    let vals = order.iter().map(|&i| m[i * n + i]).collect();
    let vecs = order.iter().map(|&i| (0..n).map(|k| v[k * n + i]).collect()).collect();
    (vals, vecs)
}

/// The score of one unit vector `v` of length `p` (see the module docs).
pub fn circle_score(v: &[f64]) -> f64 {
    let p = v.len();
    let mut best = 0.0f64;
    for k in 1..p {
        let (mut re, mut im) = (0.0, 0.0);
        for t in 0..p {
            let x = v[(t * k) % p];
            let ang = 2.0 * std::f64::consts::PI * t as f64 / p as f64;
            re += x * ang.cos();
            im += x * ang.sin();
        }
        best = best.max(2.0 / p as f64 * (re * re + im * im));
    }
    best.clamp(0.0, 1.0)
}

/// Scores of the first (up to) four principal components of `x`, the `p` token embeddings as
/// rows of a row-major `p × d` matrix. Components with (numerically) zero variance are skipped.
pub fn component_scores(x: &[f64], p: usize, d: usize) -> Vec<f64> {
    assert_eq!(x.len(), p * d);
    // Centre over tokens.
    let mut xc = x.to_vec();
    for j in 0..d {
        let mean = (0..p).map(|t| x[t * d + j]).sum::<f64>() / p as f64;
        for t in 0..p {
            xc[t * d + j] -= mean;
        }
    }
    // Principal coordinates `v` (unit p-vectors): eigenvectors of the p×p Gram matrix X Xᵀ, or
    // X·w for eigenvectors w of the d×d covariance XᵀX, whichever matrix is smaller.
    let coords: Vec<(f64, Vec<f64>)> = if p <= d {
        let mut g = vec![0.0; p * p];
        for i in 0..p {
            for j in 0..p {
                g[i * p + j] = (0..d).map(|k| xc[i * d + k] * xc[j * d + k]).sum();
            }
        }
        let (vals, vecs) = symmetric_eigen(&g, p);
        vals.into_iter().zip(vecs).collect()
    } else {
        let mut c = vec![0.0; d * d];
        for i in 0..d {
            for j in 0..d {
                c[i * d + j] = (0..p).map(|t| xc[t * d + i] * xc[t * d + j]).sum();
            }
        }
        let (vals, vecs) = symmetric_eigen(&c, d);
        vals.into_iter()
            .zip(vecs)
            .map(|(val, w)| {
                let mut v: Vec<f64> = (0..p).map(|t| (0..d).map(|k| xc[t * d + k] * w[k]).sum()).collect();
                let n = v.iter().map(|x| x * x).sum::<f64>().sqrt();
                if n > 0.0 {
                    v.iter_mut().for_each(|x| *x /= n);
                }
                (val, v)
            })
            .collect()
    };
    let top = coords.first().map_or(0.0, |c| c.0);
    coords
        .into_iter()
        .take(4)
        .filter(|(val, _)| *val > 1e-12 * top && *val > 0.0)
        .map(|(_, v)| circle_score(&v))
        .collect()
}

/// Circularity: the mean of [`component_scores`] (NaN if the embedding is constant).
pub fn circularity(x: &[f64], p: usize, d: usize) -> f64 {
    let s = component_scores(x, p, d);
    if s.is_empty() {
        return f64::NAN;
    }
    s.iter().sum::<f64>() / s.len() as f64
}
