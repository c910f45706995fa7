//! The step ladder on a target whose stable-step bound is analytic, its bookkeeping, and the
//! retry rule.

use candle_core::{Device, Tensor, Var};

use super::*;
use crate::llc::{EstimateFlags, NBeta, StepCount};

/// `L(w) = ½·λ·w²` in one dimension, whatever the rows, minimum at `w* = 0`.
///
/// SGLD's update (sampler::sgld) is `w ← w − (ε/2)·[nβ·∇L(w) + γ·(w − w*)] + N(0, ε)`, here
/// `w ← (1 − ε·a/2)·w + √ε·ξ` with `a = nβ·λ + γ`: an AR(1) recursion, stable iff
/// `|1 − ε·a/2| < 1`, i.e. `ε < 4/a`. Above the bound the chain grows geometrically (and is
/// stopped as diverged); below it the Euler–Maruyama chain's variance `1/(a·(1 − ε·a/4))`
/// exceeds the target's `1/a`, and MALA's acceptance measures the mismatch: simulated with
/// numpy (20,000 chains), 0.71 at 0.75 × the bound and 0.87 at 0.375 × (in one dimension; in
/// four, 0.59 and 0.75, which is why this target has one).
struct Quadratic {
    w: Vec<Var>,
    lambda: f64,
}

impl SgldTarget for Quadratic {
    fn params(&self) -> &[Var] {
        &self.w
    }
    fn n_train(&self) -> usize {
        1000
    }
    fn loss(&self, _rows: &[u32]) -> candle_core::Result<Tensor> {
        self.w[0].as_tensor().sqr()?.sum_all()?.affine(0.5 * self.lambda, 0.0)
    }
}

const NBETA: f64 = 100.0;
const LAMBDA: f64 = 1.0;
const GAMMA: f64 = 100.0;

/// The stable-step bound `4/(nβ·λ + γ)` (see [`Quadratic`]).
fn bound() -> f64 {
    4.0 / (NBETA * LAMBDA + GAMMA)
}

fn factory(_chain: usize) -> anyhow::Result<Quadratic> {
    Ok(Quadratic { w: vec![Var::from_vec(vec![0.0f64], 1, &Device::Cpu)?], lambda: LAMBDA })
}

/// Starting 1.5× above the bound, with room for three retries.
fn settings() -> SgldConfig {
    SgldConfig {
        epsilon: (1.5 * bound()).into(),
        gamma: GAMMA,
        nbeta: NBeta::Value(NBETA),
        chains: 4,
        draws: 2000,
        burn_in: StepCount::Relaxations(2.0),
        steps_between_draws: 1.into(),
        mala_every: 1,
        halvings: 3,
        ..SgldConfig::plain()
    }
}

#[test]
fn the_ladder_picks_a_step_below_the_stable_bound_and_above_a_quarter_of_it() {
    let est = estimate_ladder(factory, &settings()).unwrap();
    let eps = est.schedule.epsilon;
    eprintln!("bound {:e}; chose {eps:e}; rejected: {}; {}", bound(), rejected_text(&est.rejected), est.summary());
    assert!(eps < bound() && eps > bound() / 4.0, "ε {eps:e} against the bound {:e}", bound());
    assert!(!est.flags.flagged(), "{}", est.flag_text());
    // Healthy there, the estimate is close to the EM chain's own mean, nβ·λ/2·E[w²] with
    // E[w²] = 1/(a·(1 − ε·a/4)) (within 10 %: 4 chains × 2000 correlated draws).
    let a = NBETA * LAMBDA + GAMMA;
    let expected = NBETA * LAMBDA / 2.0 / (a * (1.0 - eps * a / 4.0));
    assert!((est.llc_mean - expected).abs() < 0.1 * expected, "{} against {expected}", est.llc_mean);
}

#[test]
fn the_ladder_records_its_rungs_and_gives_the_same_result_twice() {
    let est = estimate_ladder(factory, &settings()).unwrap();
    // Above the bound every chain diverges; at 0.75× MALA rejects the step; 0.375× is healthy.
    let rejected: Vec<(f64, Vec<String>, Retry)> = est.rejected.iter().map(|r| (r.epsilon / bound(), r.flags.clone(), r.retry)).collect();
    assert_eq!(rejected.len(), 2, "{rejected:?}");
    assert!((rejected[0].0 - 1.5).abs() < 1e-12 && rejected[0].1.contains(&"diverged".to_string()), "{rejected:?}");
    assert!((rejected[1].0 - 0.75).abs() < 1e-12 && rejected[1].1.contains(&"flag_mala".to_string()), "{rejected:?}");
    assert!(rejected.iter().all(|r| r.2 == Retry::HalveStep));
    assert!((est.schedule.epsilon / bound() - 0.375).abs() < 1e-12);
    // Burn-in in relaxation times follows the rung's ε: ceil(2·2/(εγ)) steps.
    assert_eq!(est.schedule.burn_in, (4.0 / (est.schedule.epsilon * GAMMA)).ceil() as usize);
    assert!(rejected_text(&est.rejected).starts_with("ε 3.000e-2, 2000 draws: ") && rejected_text(&est.rejected).contains("; ε 1.500e-2, 2000 draws: flag_mala → ε/2"), "{}", rejected_text(&est.rejected));
    assert_eq!(estimate_ladder(factory, &settings()).unwrap(), est, "the ladder is not deterministic");

    // With one retry the last rung is still flagged, and reported so.
    let short = estimate_ladder(factory, &SgldConfig { halvings: 1, ..settings() }).unwrap();
    assert_eq!(short.rejected.len(), 1);
    assert!(short.flags.mala, "{}", short.summary());
    // Without retries the ladder is one estimate, the settings as given (compared as text: the
    // diverged estimate holds NaNs).
    let one = estimate_ladder(factory, &SgldConfig { halvings: 0, ..settings() }).unwrap();
    let plain = crate::llc::estimate(factory, &SgldConfig { halvings: 0, ..settings() }).unwrap();
    assert!(one.flags.diverged == 4 && one.rejected.is_empty());
    assert_eq!(format!("{one:?}"), format!("{plain:?}"));
}

#[test]
fn the_flags_choose_the_retry() {
    let f = |set: fn(&mut EstimateFlags)| {
        let mut flags = EstimateFlags::default();
        set(&mut flags);
        Retry::for_flags(&flags)
    };
    assert_eq!(f(|_| {}), None);
    assert_eq!(f(|x| x.mala = true), Some(Retry::HalveStep));
    assert_eq!(f(|x| x.spikes = true), Some(Retry::HalveStep));
    assert_eq!(f(|x| x.diverged = 1), Some(Retry::HalveStep));
    assert_eq!(f(|x| x.r_hat = true), Some(Retry::DoubleDraws));
    assert_eq!(f(|x| { x.r_hat = true; x.mala = true }), Some(Retry::HalveStep));
    assert_eq!(f(|x| x.negative = 2), None);
    assert_eq!(f(|x| x.not_converged = 1), Some(Retry::DoubleDraws));
    assert_eq!(f(|x| { x.not_converged = 1; x.spikes = true }), Some(Retry::HalveStep));
}

#[test]
fn rungs_keep_the_sampling_time_when_the_step_halves_and_double_the_draws_for_r_hat() {
    let s = SgldConfig { epsilon: crate::llc::Epsilon::PerNBeta(8.8e-3), gamma: 100.0, burn_in: 400.into(), steps_between_draws: StepCount::Relaxations(0.005), draws: 100, ..SgldConfig::plain() };
    let nbeta = 352.0;
    let at = |halved, lengthened| s.schedule(nbeta, Rung { halved, lengthened });
    let first = at(0, 0);
    assert_eq!(first.epsilon, 2.5e-5);
    assert_eq!((first.burn_in, first.steps_between_draws, first.draws), (400, 4, 100));
    let halved = at(1, 0);
    assert_eq!(halved.epsilon, 1.25e-5);
    assert_eq!((halved.burn_in, halved.steps_between_draws, halved.draws), (800, 8, 100));
    let longer = at(1, 1);
    assert_eq!((longer.epsilon, longer.burn_in, longer.steps_between_draws, longer.draws), (1.25e-5, 800, 8, 200));
    // 1.5 relaxation times 2/(εγ) at ε = 2.5e-5, γ = 100 are exactly 1200 steps, not 1201.
    assert_eq!(StepCount::Relaxations(1.5).resolve(2.5e-5, 100.0, 0), 1200);
}

/// Chains far too short for their target disagree; the ladder lengthens them (continuing each
/// chain) until they agree, within `lengthenings`, and only there. On the quadratic at ε = 1e-4
/// the localisation's relaxation time is 2/(ε·a) = 100 steps, so 50 draws one step apart span
/// half of it: two chains cannot agree. Each doubling is bounded by `lengthenings`, not by
/// `halvings`, and the result is the fresh estimate at that many doublings.
#[test]
fn short_chains_are_lengthened_until_they_agree() {
    let slow = SgldConfig { epsilon: 1e-4.into(), chains: 2, draws: 50, halvings: 0, lengthenings: 0, ..settings() };
    let once = estimate_ladder(factory, &slow).unwrap();
    assert!(Retry::for_flags(&once.flags) == Some(Retry::DoubleDraws), "{}", once.summary());
    assert!(once.rejected.is_empty());

    let est = estimate_ladder(factory, &SgldConfig { lengthenings: 6, ..slow.clone() }).unwrap();
    eprintln!("rejected: {}; {}", rejected_text(&est.rejected), est.summary());
    let k = est.rejected.len();
    assert!(k >= 1 && est.rejected.iter().all(|r| r.retry == Retry::DoubleDraws), "{}", rejected_text(&est.rejected));
    assert!(!est.flags.flagged(), "{}", est.flag_text());
    assert_eq!((est.schedule.epsilon, est.schedule.draws), (1e-4, 50 << k));
    let fresh = crate::llc::estimate_at(factory, &SgldConfig { lengthenings: 6, ..slow.clone() }, crate::llc::config::Rung { halved: 0, lengthened: k as u32 }).unwrap();
    assert_eq!(est, crate::llc::LlcEstimate { rejected: est.rejected.clone(), ..fresh });
    // Healthy there, the estimate is the EM chain's mean nβ·λ/2·E[w²], E[w²] = 1/(a·(1 − ε·a/4))
    // (within 15 %: two chains of correlated draws).
    let a = NBETA * LAMBDA + GAMMA;
    let expected = NBETA * LAMBDA / 2.0 / (a * (1.0 - 1e-4 * a / 4.0));
    assert!((est.llc_mean - expected).abs() < 0.15 * expected, "{} against {expected}", est.llc_mean);
    // One doubling fewer than it needed leaves it flagged, and says so.
    let short = estimate_ladder(factory, &SgldConfig { lengthenings: k as u32 - 1, ..slow }).unwrap();
    assert!(short.flags.flagged() && short.rejected.len() == k - 1, "{}", short.summary());
}

/// [`Quadratic`] plus a loss `c` on one training row out of `n`: `L_B(w) = ½·λ·w² + c·[0 ∈ B]/|B|`.
/// The gradient, and so every chain, is the quadratic's; only the per-draw estimate
/// `nβ·(L_B(w) − L(w*))` jumps by `nβ·c·(1/|B| − 1/n)` on the draws whose minibatch holds row 0
/// (one batch in each epoch of `n/|B|`), whatever ε: spikes that no halving removes, like the
/// heavy-tailed loss of a small group of a trained transformer.
struct OutlierRow {
    quadratic: Quadratic,
    c: f64,
}

impl SgldTarget for OutlierRow {
    fn params(&self) -> &[Var] {
        self.quadratic.params()
    }
    fn n_train(&self) -> usize {
        1000
    }
    fn loss(&self, rows: &[u32]) -> candle_core::Result<Tensor> {
        let outlier = self.c * rows.iter().filter(|&&r| r == 0).count() as f64 / rows.len() as f64;
        self.quadratic.loss(rows)?.affine(1.0, outlier)
    }
}

/// At a step the quadratic is healthy at (3/8 of the bound), minibatches of 10 of the 1,000 rows and
/// `c = 5`: a draw without row 0 reads `50·w² − nβ·c/n = 50·w² − 0.5` (`w² ~ χ²₁/200`, so a
/// median of 0.25·0.455 − 0.5 = −0.39 and a robust sd of ~0.17, 1.4826 × 0.25 × the MAD 0.4535 of
/// χ²₁), one with it `nβ·c/10` = 50 more: ~290 robust sds, far over the rule's 30, at every step. The ladder halves once,
/// sees the spikes as high as before, and stops there, flagged, with three halvings left.
#[test]
fn the_ladder_stops_halving_when_halving_does_not_shrink_the_spikes() {
    let outlier = |_chain: usize| -> anyhow::Result<OutlierRow> { Ok(OutlierRow { quadratic: factory(0)?, c: 5.0 }) };
    let s = SgldConfig { epsilon: (0.375 * bound()).into(), batch_size: Some(10), chains: 2, draws: 1000, ..settings() };
    let est = estimate_ladder(outlier, &s).unwrap();
    eprintln!("rejected: {}; {}", rejected_text(&est.rejected), est.flag_text());
    assert_eq!(est.rejected.len(), 1, "{}", rejected_text(&est.rejected));
    assert_eq!((est.rejected[0].retry, est.rejected[0].flags.clone()), (Retry::HalveStep, vec!["flag_spikes".to_string()]));
    assert!((est.schedule.epsilon / bound() - 0.1875).abs() < 1e-12);
    assert!(est.flags.spikes && !est.flags.mala && est.flags.diverged == 0, "{}", est.flag_text());
    let spikes = est.spiking_chains();
    // The height is 50 − 0.11 plus the quadratic's own 50·w² at that draw (the largest of ~20
    // draws of 0.25·χ²₁: a few at most).
    let height = spikes.worst - spikes.median;
    assert!(height > 49.0 && height < 54.0, "{spikes:?}");

    // The same target without the outlier row: healthy at the first rung (so the spikes above
    // are the row's, not the step's).
    let plain = estimate_ladder(factory, &s).unwrap();
    assert!(!plain.flags.flagged() && plain.rejected.is_empty(), "{}", plain.flag_text());
}

/// The rule's arithmetic on the heights measured (docs/llc.md): spikes from too large a step,
/// 140-770 robust sds, fall under the threshold or to a fraction when the step halves; the
/// unembedding's per-draw estimates of 4 then 5 over a median of 0.1 did not shrink.
#[test]
fn halving_shrinks_step_spikes_and_not_a_heavy_tail() {
    use crate::llc::diagnostics::Spikes;
    let s = |worst: f64, median: f64, spiking: bool| Spikes { chains: if spiking { vec![0] } else { Vec::new() }, worst, median };
    assert!(spikes_shrank(&s(770.0, 2.0, true), &s(f64::NEG_INFINITY, 2.0, false)));
    assert!(spikes_shrank(&s(770.0, 2.0, true), &s(140.0, 2.0, true)));
    assert!(!spikes_shrank(&s(4.0, 0.1, true), &s(5.0, 0.1, true)));
    // 0.5 is the line: a height of 2.5 − 0.5 = 0.5 × (4.5 − 0.5) is not below it, 1.75 is.
    assert!(!spikes_shrank(&s(4.5, 0.5, true), &s(2.5, 0.5, true)));
    assert!(spikes_shrank(&s(4.5, 0.5, true), &s(2.25, 0.5, true)));
    // Nothing to judge (too few draws): no reason to stop.
    assert!(spikes_shrank(&s(f64::NAN, f64::NAN, true), &s(5.0, 0.1, true)));
}
