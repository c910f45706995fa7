/*!
MCMC convergence diagnostics on scalar traces: split R-hat, effective sample size (bulk ESS),
the "trace still rising" test behind the `not_converged` flag, and the health rules an estimate is
judged by: the thresholds [`R_HAT_MAX`], [`MALA_MIN`], [`SPIKE_Z`] and [`spiking_chains`]. These
are the one definition of a healthy estimate: `LlcEstimate` carries the flags they raise, the
tables and the calibration's recommendation read them there.

R-hat and ESS follow Vehtari, Gelman, Simpson, Carpenter & Bürkner (2021), *Rank-normalization,
folding, and localization: an improved R-hat for assessing convergence of MCMC*, as implemented in
Stan and the R package `posterior` (`rhat_basic`, `ess_basic`, `rhat`, `ess_bulk`): biased
autocovariances, Geyer's initial positive and initial monotone sequences, and the floor
`τ ≥ 1/log10(S)` on the autocorrelation time. Chains of unequal length are cut to the shortest.
*/

/// How many standard errors the last quarter's mean must exceed the previous quarter's by for a
/// trace to count as still rising.
pub const RISING_Z: f64 = 4.0;

/// Split R-hat above this marks chains that disagree (Vehtari et al. 2021 recommend 1.01 for
/// final inferences). 1.05, stricter than the classic 1.1 this project used before issue 12,
/// is the goal every shipped estimate meets; the step ladder ([`super::ladder`]) doubles the
/// draws of an estimate flagged for it. On the p = 59 models, chains at γ ≤ 30, with too small a
/// burn-in, or too short (ESS ~ 10 at the memorisation peak) exceed it.
pub const R_HAT_MAX: f64 = 1.05;

/// Mean MALA acceptance below this marks a step size with a large discretisation error. On the
/// p = 59 models the estimate moved by ≥ 10 % once the acceptance fell below ~0.9, and chains
/// spiked or diverged below ~0.7 (docs/llc.md); 0.8 is the line between the two.
pub const MALA_MIN: f64 = 0.8;

/// A chain is spiking when its largest per-draw estimate lies more than this many robust
/// standard deviations (1.4826 × the median absolute deviation of all surviving chains' draws)
/// above their median. On the p = 59 models healthy chains stay within 10 and chains whose step
/// size is too large for the checkpoint (thrown out of the basin and pulled back by γ, without
/// reaching the divergence threshold) reach 140–770; R-hat, being rank-based, does not see them.
pub const SPIKE_Z: f64 = 30.0;

/// Chains that spike (see [`SPIKE_Z`]), with the largest per-draw value among them and the
/// median of all draws.
#[derive(Debug, Clone, PartialEq)]
pub struct Spikes {
    /// The spiking chains' ids, in the order given.
    pub chains: Vec<usize>,
    /// Their largest per-draw value (−∞ when none spikes, NaN when there is too little to judge).
    pub worst: f64,
    /// The median of all finite draws (NaN with fewer than 8).
    pub median: f64,
}

/// The chains (id, per-draw values) whose largest value lies more than [`SPIKE_Z`] robust
/// standard deviations above the median of all of them. Fewer than 8 finite draws, or draws
/// without spread, are too little to judge: no chain spikes.
pub fn spiking_chains(per_chain: &[(usize, Vec<f64>)]) -> Spikes {
    let mut all: Vec<f64> = per_chain.iter().flat_map(|(_, d)| d.iter().copied()).filter(|x| x.is_finite()).collect();
    if all.len() < 8 {
        return Spikes { chains: Vec::new(), worst: f64::NAN, median: f64::NAN };
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        let n = v.len();
        if n % 2 == 1 { v[n / 2] } else { 0.5 * (v[n / 2 - 1] + v[n / 2]) }
    };
    let med = median(&mut all);
    let mut dev: Vec<f64> = all.iter().map(|x| (x - med).abs()).collect();
    let mad = 1.4826 * median(&mut dev);
    if mad.is_nan() || mad <= 0.0 {
        return Spikes { chains: Vec::new(), worst: f64::NAN, median: med };
    }
    let mut worst = f64::NEG_INFINITY;
    let mut chains = Vec::new();
    for (c, d) in per_chain {
        let max = d.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        if max > med + SPIKE_Z * mad {
            chains.push(*c);
            worst = worst.max(max);
        }
    }
    Spikes { chains, worst, median: med }
}

/// Classic split R-hat (Gelman et al., BDA3): each chain is cut into two halves (the middle draw
/// dropped when the length is odd) and the halves are compared. NaN with fewer than 4 draws.
pub fn split_rhat(chains: &[Vec<f64>]) -> f64 {
    rhat_basic(&split_chains(chains))
}

/// Rank-normalised split R-hat (Vehtari et al. 2021): the larger of the split R-hat of the
/// rank-normalised draws (bulk) and of the rank-normalised folded draws `|x − median|` (tails).
pub fn rhat(chains: &[Vec<f64>]) -> f64 {
    let split = split_chains(chains);
    let bulk = rhat_basic(&z_scale(&split));
    let tail = rhat_basic(&z_scale(&fold(&split)));
    bulk.max(tail)
}

/// Bulk effective sample size (Vehtari et al. 2021): the ESS of the rank-normalised split chains.
pub fn ess_bulk(chains: &[Vec<f64>]) -> f64 {
    ess(&z_scale(&split_chains(chains)))
}

/// Effective sample size of the draws as given (no splitting, no rank normalisation), with
/// Geyer's initial monotone sequence estimator. NaN with fewer than 4 draws per chain or when the
/// draws are constant.
pub fn ess(chains: &[Vec<f64>]) -> f64 {
    let m = chains.len();
    let n = chains.iter().map(Vec::len).min().unwrap_or(0);
    if m == 0 || n < 4 {
        return f64::NAN;
    }
    let chains: Vec<&[f64]> = chains.iter().map(|c| &c[..n]).collect();
    let means: Vec<f64> = chains.iter().map(|c| mean(c)).collect();
    // Biased autocovariance of each chain at lag t, averaged over chains.
    let mean_acov = |t: usize| {
        let mut total = 0.0;
        for (c, &mu) in chains.iter().zip(&means) {
            let s: f64 = (0..n - t).map(|i| (c[i] - mu) * (c[i + t] - mu)).sum();
            total += s / n as f64;
        }
        total / m as f64
    };
    let nf = n as f64;
    let mean_var = mean_acov(0) * nf / (nf - 1.0);
    let mut var_plus = mean_var * (nf - 1.0) / nf;
    if m > 1 {
        var_plus += sample_variance(&means);
    }
    if var_plus.is_nan() || var_plus <= 0.0 {
        return f64::NAN;
    }
    let rho_at = |t: usize| 1.0 - (mean_var - mean_acov(t)) / var_plus;

    // Geyer's initial positive sequence.
    let mut rho = vec![0.0; n];
    let mut t = 0usize;
    let mut even = 1.0;
    rho[0] = even;
    let mut odd = rho_at(1);
    rho[1] = odd;
    while t + 5 < n && (even + odd).is_finite() && even + odd > 0.0 {
        t += 2;
        even = rho_at(t);
        odd = rho_at(t + 1);
        if even + odd >= 0.0 {
            rho[t] = even;
            rho[t + 1] = odd;
        }
    }
    let max_t = t;
    if even > 0.0 {
        rho[max_t] = even;
    }
    // Geyer's initial monotone sequence.
    let mut t = 0usize;
    while t + 4 <= max_t {
        t += 2;
        if rho[t] + rho[t + 1] > rho[t - 2] + rho[t - 1] {
            rho[t] = (rho[t - 2] + rho[t - 1]) / 2.0;
            rho[t + 1] = rho[t];
        }
    }
    let total = (m * n) as f64;
    let tau = -1.0 + 2.0 * rho[..max_t.max(1)].iter().sum::<f64>() + rho[max_t];
    let tau = tau.max(1.0 / total.log10());
    total / tau
}

/// Whether a trace is still rising at its end: the mean of its last quarter exceeds the mean of
/// the quarter before by more than [`RISING_Z`] standard errors, each quarter's squared standard
/// error being `variance/ESS` with the single-chain [`ess`] of that quarter (a one-sided
/// Geweke-style comparison that allows for autocorrelation). Traces shorter than 20 draws are too
/// short to judge and never count as rising.
///
/// One-sided because a healthy LLC trace rises from `L(w*)` and levels off; a falling trace
/// shows up as a negative estimate instead. With 4 standard errors, stationary AR(1) traces
/// (φ up to 0.99, a few hundred to ten thousand draws) were flagged in under 1 % of simulated
/// chains, mostly where a quarter was too short for its ESS to be estimated well.
pub fn still_rising(trace: &[f64]) -> bool {
    let q = trace.len() / 4;
    if q < 5 {
        return false;
    }
    let len = trace.len();
    let third = &trace[len - 2 * q..len - q];
    let last = &trace[len - q..];
    let se2 = |x: &[f64]| {
        let e = ess(&[x.to_vec()]);
        let e = if e.is_finite() && e > 0.0 {
            e
        } else {
            x.len() as f64
        };
        sample_variance(x) / e
    };
    let diff = mean(last) - mean(third);
    let se = (se2(third) + se2(last)).sqrt();
    if se > 0.0 {
        diff > RISING_Z * se
    } else {
        diff > 0.0
    }
}

/// The standard normal quantile function Φ⁻¹(p) (Acklam's rational approximation, relative
/// error below 1.2e-9); ±∞ at 0 and 1, NaN outside [0, 1].
pub fn inv_normal_cdf(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969683028665376e+01,
        2.209460984245205e+02,
        -2.759285104469687e+02,
        1.38357751867269e+02,
        -3.066479806614716e+01,
        2.506628277459239e+00,
    ];
    const B: [f64; 5] = [
        -5.447609879822406e+01,
        1.615858368580409e+02,
        -1.556989798598866e+02,
        6.680131188771972e+01,
        -1.328068155288572e+01,
    ];
    const C: [f64; 6] = [
        -7.784894002430293e-03,
        -3.223964580411365e-01,
        -2.400758277161838e+00,
        -2.549732539343734e+00,
        4.374664141464968e+00,
        2.938163982698783e+00,
    ];
    const D: [f64; 4] = [
        7.784695709041462e-03,
        3.224671290700398e-01,
        2.445134137142996e+00,
        3.754408661907416e+00,
    ];
    const LOW: f64 = 0.02425;
    if !(0.0..=1.0).contains(&p) {
        return f64::NAN;
    }
    if p == 0.0 {
        return f64::NEG_INFINITY;
    }
    if p == 1.0 {
        return f64::INFINITY;
    }
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    if p < LOW {
        tail((-2.0 * p.ln()).sqrt())
    } else if p > 1.0 - LOW {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}

/// Arithmetic mean (NaN when empty).
pub fn mean(x: &[f64]) -> f64 {
    x.iter().sum::<f64>() / x.len() as f64
}

/// Sample variance with `n − 1` in the denominator (NaN with fewer than 2 values).
pub fn sample_variance(x: &[f64]) -> f64 {
    if x.len() < 2 {
        return f64::NAN;
    }
    let mu = mean(x);
    x.iter().map(|v| (v - mu).powi(2)).sum::<f64>() / (x.len() - 1) as f64
}

/// R-hat of chains taken as they are: `sqrt(var⁺ / W)`, `W` the mean within-chain sample
/// variance and `var⁺ = (n−1)/n·W + var(chain means)`.
fn rhat_basic(chains: &[Vec<f64>]) -> f64 {
    let n = chains.iter().map(Vec::len).min().unwrap_or(0);
    if chains.len() < 2 || n < 2 {
        return f64::NAN;
    }
    let means: Vec<f64> = chains.iter().map(|c| mean(&c[..n])).collect();
    let within = mean(
        &chains
            .iter()
            .map(|c| sample_variance(&c[..n]))
            .collect::<Vec<_>>(),
    );
    let nf = n as f64;
    let var_plus = (nf - 1.0) / nf * within + sample_variance(&means);
    (var_plus / within).sqrt()
}

/// Each chain cut into its first and second half (the middle draw dropped for odd lengths).
fn split_chains(chains: &[Vec<f64>]) -> Vec<Vec<f64>> {
    let n = chains.iter().map(Vec::len).min().unwrap_or(0);
    let half = n / 2;
    chains
        .iter()
        .flat_map(|c| [c[..half].to_vec(), c[n - half..n].to_vec()])
        .collect()
}

/// Rank normalisation: every draw replaced by `Φ⁻¹((r − 3/8)/(S + 1/4))`, `r` its rank among all
/// `S` draws (ties get their average rank).
fn z_scale(chains: &[Vec<f64>]) -> Vec<Vec<f64>> {
    let mut all: Vec<(f64, usize, usize)> = chains
        .iter()
        .enumerate()
        .flat_map(|(c, xs)| xs.iter().enumerate().map(move |(i, &x)| (x, c, i)))
        .collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    let s = all.len() as f64;
    let mut out: Vec<Vec<f64>> = chains.iter().map(|c| vec![0.0; c.len()]).collect();
    let mut start = 0;
    while start < all.len() {
        let mut end = start + 1;
        while end < all.len() && all[end].0 == all[start].0 {
            end += 1;
        }
        // Ranks are 1-based; the tied block start..end shares the average rank.
        let rank = (start + 1 + end) as f64 / 2.0;
        let z = inv_normal_cdf((rank - 0.375) / (s + 0.25));
        for &(_, c, i) in &all[start..end] {
            out[c][i] = z;
        }
        start = end;
    }
    out
}

/// `|x − median|` over all draws, for the tail R-hat.
fn fold(chains: &[Vec<f64>]) -> Vec<Vec<f64>> {
    let mut all: Vec<f64> = chains.iter().flatten().copied().collect();
    all.sort_by(f64::total_cmp);
    let k = all.len();
    let median = if k == 0 {
        f64::NAN
    } else if k % 2 == 1 {
        all[k / 2]
    } else {
        0.5 * (all[k / 2 - 1] + all[k / 2])
    };
    chains
        .iter()
        .map(|c| c.iter().map(|x| (x - median).abs()).collect())
        .collect()
}
