/*!
Two-sample statistics for the report's Pizza-against-Clock comparison (issue 14): summaries,
average ranks, the Mann–Whitney U test with the rank-biserial effect size, Spearman's rank
correlation, and seeded percentile-bootstrap intervals.

Pure functions on `&[f64]`. The test and the correlation follow `scipy.stats` (1.17) to rounding,
so a reader can check any number on the report page with scipy; the tests hold them to values
pasted from scipy. Undefined results (empty samples, one value where two are needed, every value
tied, NaN inputs) are NaN, never a panic, so one bad arm leaves a hole in a table rather than
stopping the report.

The bootstraps draw from [`crate::rng::stream`] and run on one thread: the same seed gives the
same interval to the bit, whatever the thread count.
*/

use std::f64::consts::{FRAC_2_SQRT_PI, SQRT_2};

use rand::Rng;

// The crate's one mean and sample variance (they would sit better here; `llc` owns them today).
use crate::llc::diagnostics::{mean, sample_variance};

#[cfg(test)]
mod tests;

/// The number of bootstrap resamples the report uses unless told otherwise (issue 14: ≥ 10,000).
/// With 10,000 the Monte Carlo sd of an endpoint is about 1 % of the interval's width (measured on
/// a 30-pair Spearman case in the tests).
pub const BOOTSTRAP_RESAMPLES: usize = 10_000;

/// The coverage of every bootstrap interval here.
const LEVEL: f64 = 0.95;

/// n, mean, sample standard deviation and median of one sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub n: usize,
    /// NaN when empty.
    pub mean: f64,
    /// With `n − 1` in the denominator (numpy's `ddof=1`); NaN for fewer than two values.
    pub sd: f64,
    /// The mean of the two middle values for even `n`; NaN when empty.
    pub median: f64,
}

/// The summary of `x`; every field but `n` is NaN when `x` holds a NaN.
pub fn summary(x: &[f64]) -> Summary {
    let median = if x.iter().any(|v| v.is_nan()) { f64::NAN } else { quantile_sorted(&sorted(x), 0.5) };
    Summary { n: x.len(), mean: mean(x), sd: sample_variance(x).sqrt(), median }
}

/// Ranks 1..=n, tied values sharing the mean of the ranks they span (scipy's `rankdata`, method
/// `average`); all NaN when `x` holds a NaN (scipy's `nan_policy='propagate'`). `-0.0` ties `0.0`.
pub fn ranks(x: &[f64]) -> Vec<f64> {
    ranks_and_ties(x).0
}

/// [`ranks`] and the size of each group of equal values (1 for a value without ties), which the
/// Mann–Whitney tie correction needs. The one place where ranks are computed.
fn ranks_and_ties(x: &[f64]) -> (Vec<f64>, Vec<usize>) {
    let n = x.len();
    if x.iter().any(|v| v.is_nan()) {
        return (vec![f64::NAN; n], Vec::new());
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| x[a].total_cmp(&x[b]));
    let (mut ranks, mut ties) = (vec![0.0; n], Vec::new());
    let mut i = 0;
    while i < n {
        let mut j = i + 1;
        while j < n && x[order[j]] == x[order[i]] {
            j += 1;
        }
        // Positions i..j (0-based) hold ranks i+1..=j; their mean is (i + 1 + j) / 2.
        let rank = (i + 1 + j) as f64 / 2.0;
        for &k in &order[i..j] {
            ranks[k] = rank;
        }
        ties.push(j - i);
        i = j;
    }
    (ranks, ties)
}

/// How the Mann–Whitney p-value is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MwuMethod {
    /// scipy's `method='auto'`: [`Exact`](Self::Exact) when one sample has at most 8 values and
    /// there are no ties, [`Asymptotic`](Self::Asymptotic) otherwise (both samples above 8, or any
    /// tie). One deviation: where the exact count of arrangements, C(n₁+n₂, n₁), does not fit in
    /// 128 bits (a sample of 8 against one of about 2.5·10⁵ or more), it falls back to the normal
    /// approximation, which is excellent there.
    Auto,
    /// The exact null distribution of U without ties (Mann and Whitney 1947). Like scipy it
    /// ignores ties, U truncated to an integer; NaN where C(n₁+n₂, n₁) ≥ 2¹²⁸ (e.g. 70 against 70).
    Exact,
    /// The normal approximation with the tie correction of the variance and a continuity
    /// correction of ½ (scipy's default `use_continuity=True`).
    Asymptotic,
}

/// The two-sided Mann–Whitney U test of two independent samples, and its effect size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MannWhitney {
    /// U of the first sample: the number of pairs (xᵢ, yⱼ) with xᵢ > yⱼ, ties counting ½
    /// (scipy's `statistic`). U of the second is n₁n₂ − U₁.
    pub u1: f64,
    /// Two-sided p-value, at most 1.
    pub p: f64,
    /// Rank-biserial correlation r = 2·U₁/(n₁n₂) − 1 = P(X > Y) − P(X < Y), in [−1, 1]:
    /// positive when the first sample tends to be larger, 0 for no tendency.
    pub rank_biserial: f64,
    /// The method that gave `p` (never `Auto`).
    pub method: MwuMethod,
}

/// The two-sided Mann–Whitney U test with scipy's automatic choice of method: the same numbers as
/// `scipy.stats.mannwhitneyu(x, y, alternative='two-sided')`. See [`MwuMethod::Auto`].
pub fn mann_whitney_u(x: &[f64], y: &[f64]) -> MannWhitney {
    mann_whitney_u_with(x, y, MwuMethod::Auto)
}

/// [`mann_whitney_u`] with the method chosen by the caller (scipy's `method=`).
///
/// Undefined, every field but `method` NaN: an empty sample, or a NaN in either. When every value
/// of both samples is the same, U₁ = n₁n₂/2 and r = 0, but `p` is NaN: the test has nothing to
/// rank (scipy returns 1 there: z = −½/0, p = 2·Φ(∞) clipped to 1).
pub fn mann_whitney_u_with(x: &[f64], y: &[f64], asked: MwuMethod) -> MannWhitney {
    let (n1, n2) = (x.len(), y.len());
    let (ranks, ties) = ranks_and_ties(&[x, y].concat());
    let has_ties = ties.iter().any(|&t| t > 1);
    let mut method = match asked {
        MwuMethod::Auto if (n1 > 8 && n2 > 8) || has_ties => MwuMethod::Asymptotic,
        MwuMethod::Auto => MwuMethod::Exact,
        chosen => chosen,
    };
    if n1 == 0 || n2 == 0 || ranks.iter().any(|r| r.is_nan()) {
        return MannWhitney { u1: f64::NAN, p: f64::NAN, rank_biserial: f64::NAN, method };
    }
    let (f1, f2) = (n1 as f64, n2 as f64);
    let u1 = ranks[..n1].iter().sum::<f64>() - f1 * (f1 + 1.0) / 2.0;
    // The two-sided p doubles the upper tail of the larger of U₁ and U₂ = n₁n₂ − U₁.
    let u = u1.max(f1 * f2 - u1);
    let all_tied = ties.len() == 1;
    let exact = if method == MwuMethod::Exact && !all_tied { exact_p(u, n1, n2) } else { None };
    let p = match exact {
        Some(p) => p,
        None if all_tied || asked == MwuMethod::Exact => f64::NAN,
        None => {
            method = MwuMethod::Asymptotic;
            asymptotic_p(u, f1, f2, &ties)
        }
    };
    MannWhitney { u1, p, rank_biserial: 2.0 * u1 / (f1 * f2) - 1.0, method }
}

/// Two-sided exact p-value, 2·P(U ≥ u) under the null, clipped to 1; `None` where the counts do
/// not fit in 128 bits.
///
/// Under the null every one of the C(m+n, m) orderings of the pooled sample is equally likely, and
/// the number of them with U = k is the coefficient of qᵏ in the Gaussian binomial
/// [m+n choose m]_q = ∏ⱼ₌₁..ₘ (1 − q^(n+j)) / (1 − q^j). Multiplying by each factor is a pass of
/// subtractions and a pass of running sums; in wrapping u128 arithmetic every step is exact modulo
/// 2¹²⁸, so the counts, which fit, come out exact. By symmetry P(U ≥ u) = P(U ≤ mn − u), so only
/// the coefficients up to mn − u (≤ mn/2) are needed. Cost O(m²n) with m the smaller sample.
fn exact_p(u: f64, n1: usize, n2: usize) -> Option<f64> {
    let (m, n) = (n1.min(n2), n1.max(n2));
    let total = binomial(m + n, m)?;
    let kmax = m * n - u as usize; // `as` truncates a half-integer U, as scipy's int64 cast does
    let mut count = vec![0u128; kmax + 1];
    count[0] = 1;
    for j in 1..=m {
        for k in (n + j..=kmax).rev() {
            count[k] = count[k].wrapping_sub(count[k - n - j]);
        }
        for k in j..=kmax {
            count[k] = count[k].wrapping_add(count[k - j]);
        }
    }
    let tail = count.iter().fold(0u128, |a, &c| a.wrapping_add(c));
    Some((2.0 * tail as f64 / total as f64).min(1.0))
}

/// C(n, k) in u128, `None` on overflow (conservatively: an intermediate product may overflow
/// a little before the result would).
fn binomial(n: usize, k: usize) -> Option<u128> {
    // C(n−k+i, i) = C(n−k+i−1, i−1)·(n−k+i)/i, exact at every step.
    (1..=k as u128).try_fold(1u128, |c, i| Some(c.checked_mul((n - k) as u128 + i)? / i))
}

/// Two-sided p-value from the normal approximation, clipped to 1: z = (u − n₁n₂/2 − ½)/σ with
/// σ² = n₁n₂/12 · ((n+1) − Σ(t³ − t)/(n(n−1))), t the tie-group sizes, n = n₁ + n₂
/// (scipy's `_get_mwu_z`), and p = 2·Φ(−z) = erfc(z/√2).
fn asymptotic_p(u: f64, n1: f64, n2: f64, ties: &[usize]) -> f64 {
    let n = n1 + n2;
    let tie_term: f64 = ties.iter().map(|&t| (t as f64).powi(3) - t as f64).sum();
    let sigma = (n1 * n2 / 12.0 * ((n + 1.0) - tie_term / (n * (n - 1.0)))).sqrt();
    let z = (u - n1 * n2 / 2.0 - 0.5) / sigma;
    erfc(z / SQRT_2).min(1.0)
}

/// The complementary error function, to about 4·10⁻¹⁵ relative against scipy's over [0, 26] (std
/// has none, and the p-values need the tail to full relative precision, which 1 − erf loses).
/// Below 1 a series without cancellation, erf(x) = 2/√π·e^(−x²)·Σₖ 2ᵏx^(2k+1)/(1·3···(2k+1)),
/// where erfc ≥ 0.157 so 1 − erf costs nothing; from 1 on the continued fraction
/// erfc(x) = e^(−x²)/√π · 1/(x + (1/2)/(x + 1/(x + (3/2)/(x + …)))), by the modified Lentz
/// method (about 180 terms at x = 1, fewer beyond).
fn erfc(x: f64) -> f64 {
    if x.is_nan() {
        return f64::NAN;
    }
    if x < 0.0 {
        return 2.0 - erfc(-x);
    }
    if x < 1.0 {
        let (mut term, mut sum, mut k) = (x, x, 0.0);
        while term > 1e-17 * sum {
            k += 1.0;
            term *= 2.0 * x * x / (2.0 * k + 1.0);
            sum += term;
        }
        return 1.0 - FRAC_2_SQRT_PI * (-x * x).exp() * sum;
    }
    if x >= 27.0 {
        return 0.0; // erfc(27) ≈ 5·10⁻³¹⁹
    }
    // Every partial numerator k/2 and denominator x is positive, so no Lentz term can vanish.
    let (mut f, mut c, mut d) = (x, x, 0.0);
    for k in 1..1000 {
        let a = k as f64 / 2.0;
        d = 1.0 / (x + a * d);
        c = x + a / c;
        f *= c * d;
        if (c * d - 1.0).abs() < 1e-15 {
            break;
        }
    }
    FRAC_2_SQRT_PI / 2.0 * (-x * x).exp() / f
}

/// Spearman's rank correlation: the Pearson correlation of the average ranks ([`ranks`]), the
/// statistic of `scipy.stats.spearmanr(x, y)`. NaN where it is undefined: fewer than two pairs,
/// samples of different lengths, a NaN, or a constant sample (scipy's `ConstantInputWarning`).
pub fn spearman(x: &[f64], y: &[f64]) -> f64 {
    if x.len() != y.len() || x.len() < 2 {
        return f64::NAN;
    }
    let (rx, ry) = (ranks(x), ranks(y));
    let (mx, my) = (mean(&rx), mean(&ry));
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in rx.iter().zip(&ry) {
        sxy += (a - mx) * (b - my);
        sxx += (a - mx) * (a - mx);
        syy += (b - my) * (b - my);
    }
    // Ranks are multiples of ½ with mean (n+1)/2, so these sums are exact and a constant sample
    // gives exactly zero.
    if sxx == 0.0 || syy == 0.0 {
        return f64::NAN;
    }
    (sxy / (sxx * syy).sqrt()).clamp(-1.0, 1.0)
}

/// Holm's step-down adjustment of p-values tested together (Holm 1979; statsmodels'
/// `multipletests(p, method="holm")`): sorted ascending, the i-th smallest of the m finite ones
/// becomes `max over j ≤ i of min(1, (m − j + 1)·p₍ⱼ₎)`; returned in the input's order. Rejecting
/// where the adjusted p is below a level keeps the chance of any false rejection below it. Why here:
/// the report tests four parameter groups at once, and one p of 0.04 among four is what chance
/// gives one time in six. NaN p-values stay NaN and do not count in m.
pub fn holm(p: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..p.len()).filter(|&i| !p[i].is_nan()).collect();
    order.sort_by(|&a, &b| p[a].total_cmp(&p[b]));
    let m = order.len();
    let mut out = vec![f64::NAN; p.len()];
    let mut running: f64 = 0.0;
    for (j, &i) in order.iter().enumerate() {
        running = running.max(((m - j) as f64 * p[i]).min(1.0));
        out[i] = running;
    }
    out
}

/// A statistic with its percentile-bootstrap 95 % interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval {
    /// The statistic on the data themselves.
    pub estimate: f64,
    /// The 2.5 % and 97.5 % quantiles of the bootstrap distribution (linear interpolation,
    /// numpy's and `scipy.stats.quantile`'s default); NaN when no resample was defined.
    pub low: f64,
    pub high: f64,
    /// Resamples drawn.
    pub resamples: usize,
    /// Resamples whose statistic was undefined (NaN), e.g. a Spearman resample whose draws of one
    /// variable are all tied. They are dropped and counted here, and the quantiles taken over the
    /// rest; scipy instead returns NaN for the whole interval. Report this count when it is not 0.
    /// All `resamples` when `estimate` is NaN (nothing is resampled then).
    pub undefined: usize,
}

/// The difference of means, mean(x) − mean(y), with a percentile-bootstrap 95 % interval: each
/// group resampled with replacement on its own (scipy's `bootstrap((x, y), …)`, unpaired).
/// Undefined (NaN) when a group is empty or holds a NaN.
///
/// `seed` selects the stream (purpose `"bootstrap-mean-diff"`, apart from every other draw of the
/// pipeline). Two calls with the same seed and sample sizes draw the same indices, harmless for
/// intervals read one at a time; pass different seeds where intervals must be independent.
pub fn bootstrap_mean_diff(x: &[f64], y: &[f64], resamples: usize, seed: u64) -> Interval {
    let mut rng = crate::rng::stream(seed, "bootstrap-mean-diff");
    let mut draw_mean = |v: &[f64]| (0..v.len()).map(|_| v[rng.random_range(0..v.len())]).sum::<f64>() / v.len() as f64;
    let estimate = mean(x) - mean(y);
    percentile_interval(estimate, resamples, || draw_mean(x) - draw_mean(y))
}

/// Spearman's correlation ([`spearman`]) with a percentile-bootstrap 95 % interval, the pairs
/// (xᵢ, yᵢ) resampled with replacement (scipy's `bootstrap(…, paired=True)`). Seeded as
/// [`bootstrap_mean_diff`] is, with the purpose `"bootstrap-spearman"`.
pub fn bootstrap_spearman(x: &[f64], y: &[f64], resamples: usize, seed: u64) -> Interval {
    let mut rng = crate::rng::stream(seed, "bootstrap-spearman");
    let (mut xs, mut ys) = (Vec::with_capacity(x.len()), Vec::with_capacity(y.len()));
    let estimate = spearman(x, y);
    percentile_interval(estimate, resamples, || {
        xs.clear();
        ys.clear();
        for _ in 0..x.len() {
            let i = rng.random_range(0..x.len());
            xs.push(x[i]);
            ys.push(y[i]);
        }
        spearman(&xs, &ys)
    })
}

/// The interval from `resamples` draws of `statistic`, in order, on this thread (so the result
/// depends on the seed alone); NaN draws are dropped and counted.
fn percentile_interval(estimate: f64, resamples: usize, mut statistic: impl FnMut() -> f64) -> Interval {
    if estimate.is_nan() {
        return Interval { estimate, low: f64::NAN, high: f64::NAN, resamples, undefined: resamples };
    }
    let draws: Vec<f64> = (0..resamples).map(|_| statistic()).filter(|v| !v.is_nan()).collect();
    let draws = sorted(&draws);
    let alpha = (1.0 - LEVEL) / 2.0;
    Interval {
        estimate,
        low: quantile_sorted(&draws, alpha),
        high: quantile_sorted(&draws, 1.0 - alpha),
        resamples,
        undefined: resamples - draws.len(),
    }
}

/// A sorted copy (NaN-free input assumed; `total_cmp` puts `-0.0` before `0.0`, which only
/// reorders equal values).
fn sorted(x: &[f64]) -> Vec<f64> {
    let mut v = x.to_vec();
    v.sort_by(f64::total_cmp);
    v
}

/// The q-quantile of sorted values with linear interpolation between order statistics (numpy's
/// default): position h = (n − 1)·q. NaN when empty.
fn quantile_sorted(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let h = (v.len() - 1) as f64 * q;
    let (i, frac) = (h.floor() as usize, h - h.floor());
    if i + 1 < v.len() { v[i] + frac * (v[i + 1] - v[i]) } else { v[i] }
}
