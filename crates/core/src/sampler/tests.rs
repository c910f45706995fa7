//! Unit tests of the sampler: the update rule against the exact stationary law of SGLD on a
//! quadratic, the MALA ratio against devinterp's published values, the minibatch schedule, the
//! draw schedule, divergence handling and determinism.

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::Optimizer;

use super::*;

/// `L(w) = ½ Σ_j h_j (w_j − m_j)²`, whatever the rows: a Gaussian target with known moments.
struct Quadratic {
    params: Vec<Var>,
    h: Tensor,
    m: Tensor,
    n: usize,
}

impl Quadratic {
    fn new(start: &[f64], h: &[f64], m: &[f64], n: usize) -> Self {
        let dev = Device::Cpu;
        let d = start.len();
        Quadratic {
            params: vec![Var::from_vec(start.to_vec(), d, &dev).expect("var")],
            h: Tensor::from_vec(h.to_vec(), d, &dev).expect("h"),
            m: Tensor::from_vec(m.to_vec(), d, &dev).expect("m"),
            n,
        }
    }

    fn w(&self) -> Vec<f64> {
        self.params[0].as_tensor().to_vec1::<f64>().expect("w")
    }
}

impl SgldTarget for Quadratic {
    fn params(&self) -> &[Var] {
        &self.params
    }
    fn n_train(&self) -> usize {
        self.n
    }
    fn loss(&self, _rows: &[u32]) -> candle_core::Result<Tensor> {
        let diff = (self.params[0].as_tensor() - &self.m)?;
        (diff.sqr()? * &self.h)?.sum_all()?.affine(0.5, 0.0)
    }
}

fn sgld_for(target: &Quadratic, epsilon: f64, gamma: f64, nbeta: f64, seed: u64) -> Sgld {
    let params = SgldParams {
        epsilon,
        gamma,
        nbeta,
        seed,
        stream: 0,
        rmsprop: None,
    };
    Sgld::new(target.params().to_vec(), params).expect("sgld")
}

/// On `U(w) = nβ·½h(w − m)² + γ/2·(w − w*)²` the SGLD step is the AR(1) recursion
/// `w' − μ = ρ(w − μ) + √ε·ξ` with `a = nβh + γ`, `μ = (nβ h m + γ w*)/a`, `ρ = 1 − εa/2`,
/// whose stationary law is `N(μ, ε/(1 − ρ²))` exactly. The variance differs from the diffusion's
/// `1/a` by the factor `1/(1 − εa/4)`, up to 33 % here, so the test also pins down the ε/2 and
/// √ε in the update rule, not only its fixed point.
#[test]
fn sgld_on_a_quadratic_has_the_exact_discrete_stationary_law() {
    let (eps, gamma, nbeta) = (0.01, 2.0, 50.0);
    let a = [20.0, 35.0, 50.0, 65.0, 80.0, 100.0];
    let h: Vec<f64> = a.iter().map(|a| (a - gamma) / nbeta).collect();
    let m = vec![1.0, -2.0, 0.5, 3.0, -1.0, 2.0];
    let start = vec![0.0; 6]; // w* = 0
    let target = Quadratic::new(&start, &h, &m, 100);
    let mut sgld = sgld_for(&target, eps, gamma, nbeta, 7);
    let (burn, steps) = (500, 100_000);
    let d = a.len();
    let mut sum = vec![0.0; d];
    let mut sum_sq = vec![0.0; d];
    for t in 0..burn + steps {
        let loss = target.loss(&[]).expect("loss");
        sgld.backward_step(&loss).expect("step");
        if t >= burn {
            for (j, w) in target.w().into_iter().enumerate() {
                sum[j] += w;
                sum_sq[j] += w * w;
            }
        }
    }
    let n = steps as f64;
    for j in 0..d {
        let mu = nbeta * h[j] * m[j] / a[j];
        let rho = 1.0 - eps * a[j] / 2.0;
        let var = eps / (1.0 - rho * rho);
        let mean_hat = sum[j] / n;
        let var_hat = sum_sq[j] / n - mean_hat * mean_hat;
        // Standard errors of an AR(1) sample mean and sample variance.
        let se_mean = (var * (1.0 + rho) / (1.0 - rho) / n).sqrt();
        let se_var_rel = (2.0 * (1.0 + rho * rho) / (1.0 - rho * rho) / n).sqrt();
        assert!(
            (mean_hat - mu).abs() < 4.0 * se_mean,
            "coordinate {j}: mean {mean_hat} vs {mu} (se {se_mean})"
        );
        assert!(
            (var_hat / var - 1.0).abs() < 4.0 * se_var_rel,
            "coordinate {j}: variance {var_hat} vs {var} (rel. se {se_var_rel}); continuous-time value {}",
            1.0 / a[j]
        );
    }
}

/// devinterp's `tests/slt/mala_test.py::MALA_CALC_TESTCASES`: (previous point, gradient,
/// potential; current point, gradient, potential; step size) → acceptance probability. Their
/// values were computed in float32 (case 3 is exactly exp(−1.75625) = 0.1726912 in f64, theirs
/// 0.1726849), hence the 1e-5 tolerance.
#[test]
fn mala_ratio_matches_devinterps_reference_values() {
    type Case = ([f64; 2], [f64; 2], f64, [f64; 2], [f64; 2], f64, f64, f64);
    let cases: [Case; 4] = [
        (
            [0.0, 0.0],
            [0.0, 0.0],
            0.0,
            [1.5, 5.5],
            [1.5, 5.5],
            16.25,
            0.1,
            0.6661436,
        ),
        (
            [1.0, 1.0],
            [1.0, 1.0],
            1.0,
            [1.5, 0.5],
            [1.5, 0.5],
            1.25,
            0.5,
            0.9692332,
        ),
        (
            [0.0, 0.0],
            [0.0, 0.0],
            0.0,
            [10.5, 5.5],
            [10.5, 5.5],
            70.25,
            0.1,
            0.17268492,
        ),
        (
            [0.0, 0.0],
            [0.0, 0.0],
            0.0,
            [10.5, 5.5],
            [10.5, 5.5],
            70.25,
            0.5,
            0.00015359,
        ),
    ];
    for (w0, g0, u0, w1, g1, u1, eps, want) in cases {
        let log_ratio = mala_log_acceptance(eps, (&w0, &g0, u0), (&w1, &g1, u1));
        let p = log_ratio.min(0.0).exp();
        assert!((p - want).abs() < 1e-5, "{p} vs {want}");
    }
}

/// `step_with_mala` must evaluate the ratio with the gradient of the *potential* (loss term
/// scaled by nβ plus the localisation pull) at both points; recompute it from the positions
/// with the analytic gradient of the quadratic.
#[test]
fn step_with_mala_uses_the_potential_at_both_points() {
    let (eps, gamma, nbeta) = (0.004, 3.0, 20.0);
    let h = [1.0, 4.0, 0.5];
    let m = [1.0, -1.0, 2.0];
    let target = Quadratic::new(&[0.3, 0.2, -0.1], &h, &m, 10);
    let wstar = target.w();
    let mut sgld = sgld_for(&target, eps, gamma, nbeta, 3);
    let potential = |w: &[f64]| -> (f64, Vec<f64>) {
        let mut u = 0.0;
        let mut g = Vec::new();
        for j in 0..w.len() {
            u += nbeta * 0.5 * h[j] * (w[j] - m[j]).powi(2)
                + 0.5 * gamma * (w[j] - wstar[j]).powi(2);
            g.push(nbeta * h[j] * (w[j] - m[j]) + gamma * (w[j] - wstar[j]));
        }
        (u, g)
    };
    let mut probs = Vec::new();
    for _ in 0..50 {
        let w_old = target.w();
        let loss = target.loss(&[]).expect("loss");
        let value = loss.to_scalar::<f64>().expect("scalar");
        let grads = loss.backward().expect("grads");
        let outcome = sgld
            .step_with_mala(value, &grads, || {
                let l = target.loss(&[])?;
                Ok((l.to_scalar::<f64>()?, l.backward()?))
            })
            .expect("mala step");
        let w_new = target.w();
        let (u0, g0) = potential(&w_old);
        let (u1, g1) = potential(&w_new);
        let want = mala_log_acceptance(eps, (&w_old, &g0, u0), (&w_new, &g1, u1));
        assert!(
            (outcome.log_ratio - want).abs() < 1e-9,
            "{} vs {want}",
            outcome.log_ratio
        );
        probs.push(outcome.accept_prob);
    }
    assert!(probs.iter().all(|p| (0.0..=1.0).contains(p)));
}

#[test]
fn minibatches_cover_every_row_once_per_epoch_and_are_reproducible() {
    let mut b = Minibatches::new(10, 4, 5, 1);
    assert_eq!(b.batches_per_epoch(), 3);
    for _epoch in 0..3 {
        let mut rows: Vec<u32> = Vec::new();
        let sizes: Vec<usize> = (0..3)
            .map(|_| {
                let batch = b.next_batch();
                rows.extend_from_slice(batch);
                batch.len()
            })
            .collect();
        assert_eq!(
            sizes,
            vec![4, 4, 2],
            "PyTorch semantics: the last batch is partial"
        );
        rows.sort();
        assert_eq!(rows, (0..10).collect::<Vec<u32>>());
    }
    let first = |seed, stream| Minibatches::new(50, 7, seed, stream).next_batch().to_vec();
    assert_eq!(first(1, 3), first(1, 3));
    assert_ne!(first(1, 3), first(1, 4));
    assert_ne!(first(1, 3), first(2, 3));
    // Full batch: every step sees all rows, in order.
    let mut full = Minibatches::new(6, 6, 9, 0);
    assert_eq!(full.next_batch(), &[0, 1, 2, 3, 4, 5]);
    assert_eq!(full.next_batch(), &[0, 1, 2, 3, 4, 5]);
}

fn plan(draws: usize, thin: usize, burn_in: usize) -> ChainPlan {
    ChainPlan {
        epsilon: 1e-3,
        gamma: 1.0,
        nbeta: 10.0,
        batch_size: 4,
        burn_in,
        draws,
        steps_between_draws: thin,
        mala_every: 0,
        divergence_loss: f64::INFINITY,
        seed: 0,
        rmsprop: None,
    }
}

#[test]
fn draw_schedule_matches_devinterp() {
    // Thinning 3 after 5 burn-in steps: draws at steps 7, 10, 13, 16.
    let p = plan(4, 3, 5);
    assert_eq!(p.total_steps(), 17);
    let draws: Vec<usize> = (0..p.total_steps()).filter(|&s| p.is_draw(s)).collect();
    assert_eq!(draws, vec![7, 10, 13, 16]);
    let p = plan(3, 1, 0);
    let draws: Vec<usize> = (0..p.total_steps()).filter(|&s| p.is_draw(s)).collect();
    assert_eq!(draws, vec![0, 1, 2]);
    let mala = ChainPlan {
        mala_every: 4,
        ..plan(10, 1, 2)
    };
    let checked: Vec<usize> = (0..mala.total_steps())
        .filter(|&s| mala.is_mala(s))
        .collect();
    assert_eq!(checked, vec![2, 6, 10]);
}

#[test]
fn run_chain_records_every_draw_and_its_mala_steps() {
    let target = Quadratic::new(&[0.0, 0.0], &[1.0, 2.0], &[0.0, 0.0], 8);
    let p = ChainPlan {
        mala_every: 5,
        ..plan(20, 2, 10)
    };
    let trace = run_chain(&target, &p, 0).expect("chain");
    assert_eq!(trace.draw_losses.len(), 20);
    assert_eq!(trace.mala_accept.len(), 8); // steps 10, 15, …, 45 of 50
    assert!(trace.divergence.is_none());
    assert!(trace.draw_losses.iter().all(|l| l.is_finite() && *l >= 0.0));
}

/// Chain 1 samples a far stiffer quadratic than the others, so its step size is unstable
/// (ε·nβ·h ≫ 2): it must be stopped and recorded as diverged, while the other chains finish.
#[test]
fn an_exploding_chain_is_stopped_and_the_others_finish() {
    let factory = |chain: usize| -> anyhow::Result<Quadratic> {
        let h = if chain == 1 { 1e4 } else { 1.0 };
        Ok(Quadratic::new(&[0.1, -0.1], &[h, h], &[0.0, 0.0], 8))
    };
    let p = ChainPlan {
        divergence_loss: 1e6,
        ..plan(200, 1, 0)
    };
    let traces = run_chains(&factory, &p, 3, 2, None).expect("chains");
    assert_eq!(traces.len(), 3);
    let d = traces[1].divergence.expect("chain 1 diverges");
    assert!(d.loss > 1e6 || !d.loss.is_finite());
    assert!(traces[1].draw_losses.len() < 200);
    for i in [0, 2] {
        assert!(traces[i].divergence.is_none());
        assert_eq!(traces[i].draw_losses.len(), 200);
    }
}

#[test]
fn a_failing_factory_is_an_error_naming_the_chain() {
    let factory = |chain: usize| -> anyhow::Result<Quadratic> {
        if chain == 2 {
            anyhow::bail!("no checkpoint");
        }
        Ok(Quadratic::new(&[0.0], &[1.0], &[0.0], 4))
    };
    match run_chains(&factory, &plan(5, 1, 0), 4, 2, None) {
        Err(SamplerError::Target { chain: 2, .. }) => {}
        other => panic!("expected the chain-2 factory error, got {other:?}"),
    }
}

#[test]
fn chains_do_not_depend_on_thread_count() {
    let factory = |_chain: usize| -> anyhow::Result<Quadratic> {
        Ok(Quadratic::new(
            &[0.0, 0.0, 0.0],
            &[1.0, 3.0, 0.2],
            &[0.5, 0.0, -1.0],
            16,
        ))
    };
    let p = ChainPlan {
        mala_every: 3,
        ..plan(50, 2, 10)
    };
    let one = run_chains(&factory, &p, 5, 1, None).expect("one thread");
    let three = run_chains(&factory, &p, 5, 3, None).expect("three threads");
    assert_eq!(one, three);
    // Different chains draw different noise.
    assert_ne!(one[0].draw_losses, one[1].draw_losses);
}

#[test]
fn noise_is_drawn_in_f64_whatever_the_dtype() {
    // An f32 variable moves by the f64 draws rounded to f32, so f32 and f64 runs agree to f32
    // precision: the noise stream does not depend on the dtype.
    let dev = Device::Cpu;
    let params = SgldParams {
        epsilon: 1e-2,
        gamma: 0.0,
        nbeta: 1.0,
        seed: 11,
        stream: 2,
        rmsprop: None,
    };
    let run = |dtype: DType| -> Vec<f64> {
        let v = Var::from_tensor(&Tensor::zeros(4, dtype, &dev).expect("zeros")).expect("var");
        let mut s = Sgld::new(vec![v.clone()], params).expect("sgld");
        let loss = v
            .as_tensor()
            .sum_all()
            .expect("sum")
            .affine(0.0, 0.0)
            .expect("zero loss");
        s.backward_step(&loss.to_dtype(DType::F64).expect("f64"))
            .expect("step");
        v.as_tensor()
            .to_dtype(DType::F64)
            .expect("f64")
            .to_vec1::<f64>()
            .expect("vec")
    };
    let (a, b) = (run(DType::F32), run(DType::F64));
    for (x, y) in a.iter().zip(&b) {
        assert!((x - y).abs() < 1e-6 * y.abs().max(1e-3), "{x} vs {y}");
    }
    assert!(b.iter().any(|x| x.abs() > 1e-3));
}

/// The quadratic again, with its gradient written by hand: what a target with its own backward
/// pass (the transformer's fast path) does by overriding `loss_and_grads`.
struct ManualQuadratic(Quadratic);

impl SgldTarget for ManualQuadratic {
    fn params(&self) -> &[Var] {
        self.0.params()
    }
    fn n_train(&self) -> usize {
        self.0.n
    }
    fn loss(&self, rows: &[u32]) -> candle_core::Result<Tensor> {
        self.0.loss(rows)
    }
    fn loss_and_grads(
        &self,
        _rows: &[u32],
    ) -> candle_core::Result<(f64, candle_core::backprop::GradStore)> {
        let w = self.0.params[0].as_tensor();
        let diff = (w - &self.0.m)?.detach();
        let value = (diff.sqr()? * &self.0.h)?.sum_all()?.to_scalar::<f64>()? * 0.5;
        let mut grads = candle_core::backprop::GradStore::default();
        grads.insert(w, (diff * &self.0.h)?);
        Ok((value, grads))
    }
}

#[test]
fn a_hand_written_gradient_gives_the_same_chain_as_autograd() {
    let make = || Quadratic::new(&[0.2, -0.3, 0.0], &[1.0, 5.0, 0.3], &[0.5, 0.0, -1.0], 12);
    let p = ChainPlan {
        mala_every: 4,
        ..plan(100, 2, 20)
    };
    let auto = run_chain(&make(), &p, 3).expect("autograd");
    let manual = run_chain(&ManualQuadratic(make()), &p, 3).expect("manual");
    assert_eq!(auto.draw_losses.len(), manual.draw_losses.len());
    for (a, m) in auto.draw_losses.iter().zip(&manual.draw_losses) {
        assert!((a - m).abs() <= 1e-12 * a.abs().max(1e-12), "{a} vs {m}");
    }
    for (a, m) in auto.mala_accept.iter().zip(&manual.mala_accept) {
        assert!((a - m).abs() <= 1e-9, "{a} vs {m}");
    }
}

/// Curvatures 1e2, 1e3, 1e4 at ε = 2e-3: plain SGLD is unstable on the stiffest direction
/// (ε·a/2 = 10 > 2), the RMSProp-preconditioned sampler is not, and it still samples every
/// direction with variance ≈ 1/a, up to its discretisation (about 1/(1 − ε·√a/4), at most 5 %
/// here). With α = 0.99 instead of 0.999 the running average follows the slow direction's own
/// excursions and its variance comes out about 33 % too large (measured).
#[test]
fn rmsprop_preconditioning_tames_stiff_directions() {
    let a = [1e2, 1e3, 1e4];
    let target = Quadratic::new(&[0.0; 3], &a, &[0.0; 3], 10);
    let params = SgldParams {
        epsilon: 2e-3,
        gamma: 0.0,
        nbeta: 1.0,
        seed: 5,
        stream: 0,
        rmsprop: Some(RmsProp {
            alpha: 0.999,
            eps: 0.1,
        }),
    };
    let mut sgld = Sgld::new(target.params().to_vec(), params).expect("sgld");
    let (burn, steps) = (5000, 200_000);
    let mut sum_sq = [0.0; 3];
    for t in 0..burn + steps {
        sgld.backward_step(&target.loss(&[]).expect("loss"))
            .expect("step");
        if t >= burn {
            for (j, w) in target.w().into_iter().enumerate() {
                sum_sq[j] += w * w;
            }
        }
    }
    for j in 0..3 {
        let scaled = sum_sq[j] / steps as f64 * a[j];
        assert!((scaled - 1.0).abs() < 0.1, "a = {}: a·var = {scaled}", a[j]);
    }
    // Plain SGLD with the same ε blows up on the stiff direction.
    let plain = Quadratic::new(&[0.0; 3], &a, &[0.0; 3], 10);
    let mut sgld = Sgld::new(
        plain.params().to_vec(),
        SgldParams {
            rmsprop: None,
            ..params
        },
    )
    .expect("sgld");
    for _ in 0..200 {
        sgld.backward_step(&plain.loss(&[]).expect("loss"))
            .expect("step");
    }
    let loss = plain
        .loss(&[])
        .and_then(|l| l.to_scalar::<f64>())
        .expect("loss");
    assert!(
        loss.is_nan() || loss >= 1e6,
        "plain SGLD should have exploded, loss {loss}"
    );
}

/// The noise is rand_distr's `StandardNormal` on ChaCha8 stream `stream` of `seed`, drawn
/// variable by variable in order: with no gradient and no localisation a step moves each weight
/// by exactly `√ε·ξ` (float64 variables; the second variable's draws follow the first's).
#[test]
fn noise_is_the_seeded_chacha8_standard_normal_stream_in_variable_order() {
    use rand::SeedableRng;
    use rand_distr::Distribution;
    let dev = Device::Cpu;
    let (eps, seed, stream) = (4e-2, 21, 6);
    let vars = [Var::from_tensor(&Tensor::zeros(5, DType::F64, &dev).expect("zeros")).expect("var"), Var::from_tensor(&Tensor::zeros((2, 3), DType::F64, &dev).expect("zeros")).expect("var")];
    let params = SgldParams { epsilon: eps, gamma: 0.0, nbeta: 1.0, seed, stream, rmsprop: None };
    let mut s = Sgld::new(vars.to_vec(), params).expect("sgld");
    s.step(&candle_core::backprop::GradStore::default()).expect("step");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    for v in &vars {
        let got = v.as_tensor().flatten_all().expect("flat").to_vec1::<f64>().expect("vec");
        for g in got {
            let xi: f64 = rand_distr::StandardNormal.sample(&mut rng);
            assert_eq!(g, eps.sqrt() * xi);
        }
    }
}

/// The in-place step computes the tensor expressions of the update rule (the sampler's code
/// before it was fused), in the variable's dtype and bit for bit: `w − ∇U·(ε/2) + noise` with
/// `∇U = g·nβ + (w − w*)·γ` and `noise = (√ε·ξ)` rounded to f32; with RMSProp
/// `V = ∇U²` on the first step, then `V·α + ∇U²·(1 − α)`, `G = 1/(√V + δ)` and
/// `w − (∇U·G)·(ε/2) + noise·√G`. Three steps on an f32 variable, each way.
#[test]
fn the_fused_step_is_the_tensor_formula_bit_for_bit() {
    use rand::SeedableRng;
    use rand_distr::Distribution;
    let dev = Device::Cpu;
    let (eps, gamma, nbeta) = (1e-3, 3.0, 50.0);
    for rmsprop in [None, Some(RmsProp { alpha: 0.9, eps: 0.1 })] {
        let w0: Vec<f32> = (0..300).map(|i| (i as f32 * 0.37).sin()).collect();
        let var = Var::from_vec(w0.clone(), (3, 100), &dev).expect("var");
        let params = SgldParams { epsilon: eps, gamma, nbeta, seed: 4, stream: 2, rmsprop };
        let mut sgld = Sgld::new(vec![var.clone()], params).expect("sgld");
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
        rng.set_stream(2);
        let anchor = Tensor::from_vec(w0, (3, 100), &dev).expect("anchor");
        let (mut w, mut avg): (Tensor, Option<Tensor>) = (anchor.clone(), None);
        for step in 0..3 {
            let g = (w.cos().expect("cos") * 0.01).expect("g");
            let mut grads = candle_core::backprop::GradStore::default();
            grads.insert(var.as_tensor(), g.clone());
            sgld.step(&grads).expect("step");
            let drift = ((&g * nbeta).unwrap() + ((&w - &anchor).unwrap() * gamma).unwrap()).unwrap();
            let xi: Vec<f32> = (0..300).map(|_| (eps.sqrt() * Distribution::<f64>::sample(&rand_distr::StandardNormal, &mut rng)) as f32).collect();
            let noise = Tensor::from_vec(xi, (3, 100), &dev).expect("noise");
            w = match rmsprop {
                None => ((&w - (drift * (0.5 * eps)).unwrap()).unwrap() + noise).unwrap(),
                Some(RmsProp { alpha, eps: delta }) => {
                    let sq = drift.sqr().unwrap();
                    let v = match avg.take() {
                        None => sq,
                        Some(old) => ((old * alpha).unwrap() + (sq * (1.0 - alpha)).unwrap()).unwrap(),
                    };
                    let pre = v.sqrt().unwrap().affine(1.0, delta).unwrap().recip().unwrap();
                    avg = Some(v);
                    let moved = (&w - ((drift * &pre).unwrap() * (0.5 * eps)).unwrap()).unwrap();
                    (moved + (noise * pre.sqrt().unwrap()).unwrap()).unwrap()
                }
            };
            let (got, want) = (var.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap(), w.flatten_all().unwrap().to_vec1::<f32>().unwrap());
            let same = got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "rmsprop {}: step {step} differs from the tensor formula", rmsprop.is_some());
        }
    }
}
