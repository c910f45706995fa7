/*!
The SGLD update rule, localised at the starting point `w*`, as a `candle_nn::Optimizer`.

One step with minibatch loss `L_B` (a *mean* over the batch) is

```text
w ← w − (ε/2)·[nβ·∇L_B(w) + γ·(w − w*)] + N(0, ε·I)
```

i.e. an Euler–Maruyama step of the Langevin diffusion whose stationary density is
`∝ exp(−U(w))` with the potential `U(w) = nβ·L(w) + γ/2·‖w − w*‖²`. `w*` is copied from the
parameters when the sampler is built. Modelled on candle_nn's `SGD` (same trait, same handling of
the variables), with the noise drawn from a seeded ChaCha8 stream in parameter order instead of
candle's unseedable `randn`.

The step is one pass over each variable's storage, in place (an `InplaceOp1`), in float64
arithmetic rounded once to the variable's dtype, with the noise drawn into one reused buffer;
tensor operations and their temporaries took about a sixth of an SGLD step of the paper's model at
B = 512. The draws are the same as before, so a chain's numbers changed only by that rounding.

Optionally the step is preconditioned RMSProp-style (pSGLD, Li, Chen, Carlson & Carin 2016):
with `V ← α·V + (1 − α)·(∇U)²` element-wise and `G = 1/(√V + δ)`,

```text
w ← w − (ε/2)·G⊙∇U(w) + N(0, ε·G)
```

so that directions of very different curvature move at comparable rates. Like devinterp's
RMSprop-SGLD it omits the small `Γ(w)` drift correction for the change of `G` with `w`. `V`
starts at the first step's `(∇U)²` rather than at zero, so the first steps are not oversized.
*/

use std::cell::RefCell;

use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, DType, InplaceOp1, Layout, Result, Storage, Tensor, Var, WithDType};
use candle_nn::Optimizer;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

/// Settings of one SGLD sampler.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SgldParams {
    /// Step size ε (the `lr` of devinterp's SGLD).
    pub epsilon: f64,
    /// Localisation strength γ: the pull back towards `w*`.
    pub gamma: f64,
    /// Inverse temperature times the number of training rows, nβ.
    pub nbeta: f64,
    /// Seed of the noise generator.
    pub seed: u64,
    /// ChaCha8 stream of the noise generator, so that chains sharing a seed draw independent noise.
    pub stream: u64,
    /// RMSProp preconditioning; `None` is plain SGLD.
    pub rmsprop: Option<RmsProp>,
}

/// Settings of the RMSProp preconditioner.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RmsProp {
    /// Decay α of the running mean of squared drifts (devinterp and PyTorch: 0.99). Keep
    /// `1/(1 − α)` well above the chain's mixing time in steps: a running mean that follows the
    /// chain's own excursions makes it linger in the tails (on a quadratic whose slow direction
    /// mixes in ~100 steps, α = 0.99 inflated the variance by a third, α = 0.999 by 5 %).
    pub alpha: f64,
    /// δ added to `√V`, which bounds the preconditioner by `1/δ` (devinterp: 0.1). `V` tracks
    /// the whole drift `∇U = nβ·∇L_B + γ·(w − w*)`, so δ is on the scale of `|∇U|`.
    pub eps: f64,
}

/// What one MALA-checked step measured: how plausible the SGLD move is as a Metropolis-adjusted
/// Langevin proposal for `U`. SGLD itself never rejects; this only diagnoses the step size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MalaOutcome {
    /// Log of the Metropolis–Hastings ratio of the move.
    pub log_ratio: f64,
    /// Acceptance probability `min(1, exp(log_ratio))` (NaN when the ratio is NaN).
    pub accept_prob: f64,
}

/// The SGLD sampler. Build it with [`Optimizer::new`] while the variables are at `w*`.
#[derive(Debug)]
pub struct Sgld {
    vars: Vec<Var>,
    /// `w*`, one flat vector per variable.
    anchor: Vec<Vec<f64>>,
    params: SgldParams,
    noise: Normals,
    /// RMSProp's running mean of squared drifts, one flat vector per variable (after the first
    /// step).
    square_avg: Option<Vec<Vec<f64>>>,
    /// The standard-normal draws for the variable being moved.
    xi: Vec<f64>,
}

impl Optimizer for Sgld {
    type Config = SgldParams;

    fn new(vars: Vec<Var>, params: SgldParams) -> Result<Self> {
        // Like SGD: integer variables cannot move continuously, so they are not sampled.
        let vars: Vec<Var> = vars.into_iter().filter(|v| v.dtype().is_float()).collect();
        let anchor = vars.iter().map(|v| values(v.as_tensor())).collect::<Result<Vec<_>>>()?;
        Ok(Sgld {
            vars,
            anchor,
            params,
            noise: Normals::new(params.seed, params.stream),
            square_avg: None,
            xi: Vec::new(),
        })
    }

    fn step(&mut self, grads: &GradStore) -> Result<()> {
        self.apply(grads, None)
    }

    fn learning_rate(&self) -> f64 {
        self.params.epsilon
    }

    fn set_learning_rate(&mut self, lr: f64) {
        self.params.epsilon = lr
    }
}

impl Sgld {
    /// The sampler's settings.
    pub fn params(&self) -> &SgldParams {
        &self.params
    }

    /// The sampled variables, in noise order.
    pub fn vars(&self) -> &[Var] {
        &self.vars
    }

    /// The localisation point `w*`, one flat vector per variable.
    pub fn anchor(&self) -> &[Vec<f64>] {
        &self.anchor
    }

    /// The potential `U(w) = nβ·loss + γ/2·‖w − w*‖²` at the current parameters, given the
    /// (minibatch mean) loss there.
    pub fn potential(&self, loss: f64) -> Result<f64> {
        let mut sq = 0.0;
        if self.params.gamma != 0.0 {
            for (v, a) in self.vars.iter().zip(&self.anchor) {
                sq += values(v.as_tensor())?.iter().zip(a).map(|(w, a)| (w - a) * (w - a)).sum::<f64>();
            }
        }
        Ok(self.params.nbeta * loss + 0.5 * self.params.gamma * sq)
    }

    /// One SGLD step that also measures its MALA acceptance probability.
    ///
    /// `loss` and `grads` are the minibatch loss and gradients at the current point (as for
    /// [`Optimizer::step`]); `reevaluate` must return the loss and gradients *of the same
    /// minibatch* at the new point (the variables have moved when it is called). This costs one
    /// extra forward and backward pass, so callers use it only on some steps.
    pub fn step_with_mala<F>(
        &mut self,
        loss: f64,
        grads: &GradStore,
        reevaluate: F,
    ) -> Result<MalaOutcome>
    where
        F: FnOnce() -> Result<(f64, GradStore)>,
    {
        let u_old = self.potential(loss)?;
        let mut old = Record::default();
        self.apply(grads, Some(&mut old))?;
        let (loss_new, grads_new) = reevaluate()?;
        let u_new = self.potential(loss_new)?;
        let (mut w_new, mut g_new) = (Vec::new(), Vec::new());
        for (var, anchor) in self.vars.iter().zip(&self.anchor) {
            let w = values(var.as_tensor())?;
            let g = grads_new.get(var.as_tensor()).map(values).transpose()?;
            for j in 0..w.len() {
                g_new.push(drift(&self.params, g.as_ref().map_or(0.0, |g| g[j]), w[j], anchor[j]));
            }
            w_new.extend(w);
        }
        // With preconditioning the reverse move is scored with this step's G as well: the
        // ratio of a proposal whose covariance is frozen over the step.
        let precond = self.params.rmsprop.map(|_| old.precond.as_slice());
        let log_ratio = log_acceptance(
            self.params.epsilon,
            precond,
            (&old.w, &old.drift, u_old),
            (&w_new, &g_new, u_new),
        );
        let accept_prob = if log_ratio.is_nan() {
            f64::NAN
        } else {
            log_ratio.min(0.0).exp()
        };
        Ok(MalaOutcome {
            log_ratio,
            accept_prob,
        })
    }

    /// Moves every variable by one step, `w ← w − (ε/2)·G⊙∇U + √(εG)⊙ξ` (G = 1 without
    /// preconditioning, else RMSProp's running mean is updated with this `∇U` first), in place
    /// and in one pass per variable, drawing ξ variable by variable in order. The arithmetic is
    /// float64, rounded once to the variable's dtype. With `record`, the old point, `∇U` and `G`
    /// are appended to it (for the MALA ratio).
    fn apply(&mut self, grads: &GradStore, mut record: Option<&mut Record>) -> Result<()> {
        let Sgld { vars, anchor, params, noise, square_avg, xi } = self;
        let first = square_avg.is_none();
        if params.rmsprop.is_some() && first {
            *square_avg = Some(anchor.iter().map(|a| vec![0.0; a.len()]).collect());
        }
        for (i, var) in vars.iter().enumerate() {
            xi.resize(var.elem_count(), 0.0);
            noise.fill(xi);
            let grad = grads.get(var.as_tensor()).map(Tensor::storage_and_layout);
            let op = Move {
                params,
                anchor: &anchor[i],
                xi,
                grad: grad.as_ref().map(|(s, l)| (&**s, *l)),
                square_avg: RefCell::new(square_avg.as_mut().map(|s| s[i].as_mut_slice())),
                first,
                record: RefCell::new(record.as_deref_mut()),
            };
            var.as_tensor().inplace_op1(&op)?;
        }
        Ok(())
    }
}

/// `∇U = nβ·∇L_B + γ·(w − w*)` of one element with loss gradient `g` (0 for a variable the loss
/// does not use: it still feels the localisation).
#[inline]
fn drift(p: &SgldParams, g: f64, w: f64, anchor: f64) -> f64 {
    if p.gamma != 0.0 {
        p.nbeta * g + p.gamma * (w - anchor)
    } else {
        p.nbeta * g
    }
}

/// What a move records for the MALA ratio, flattened in variable order: the old point, `∇U`
/// there and the preconditioner.
#[derive(Default)]
struct Record {
    w: Vec<f64>,
    drift: Vec<f64>,
    precond: Vec<f64>,
}

/// The move of one variable, as an in-place op on its storage (see [`Sgld::apply`]).
struct Move<'a> {
    params: &'a SgldParams,
    anchor: &'a [f64],
    xi: &'a [f64],
    /// The loss gradient's storage and layout, if the loss uses the variable.
    grad: Option<(&'a Storage, &'a Layout)>,
    /// RMSProp's running mean of this variable, updated in the move.
    square_avg: RefCell<Option<&'a mut [f64]>>,
    /// Whether this is the sampler's first step (RMSProp's mean starts at `(∇U)²`).
    first: bool,
    record: RefCell<Option<&'a mut Record>>,
}

impl InplaceOp1 for Move<'_> {
    fn name(&self) -> &'static str {
        "sgld-move"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> Result<()> {
        let (start, end) = layout
            .contiguous_offsets()
            .ok_or_else(|| candle_core::Error::Msg("SGLD cannot move a non-contiguous variable".into()))?;
        match storage {
            CpuStorage::F32(w) => self.run(&mut w[start..end]),
            CpuStorage::F64(w) => self.run(&mut w[start..end]),
            _ => Err(candle_core::Error::Msg("SGLD moves F32 and F64 variables only".into())),
        }
    }
}

impl Move<'_> {
    fn run<T: WithDType>(&self, w: &mut [T]) -> Result<()> {
        let n = w.len();
        let grad: Option<&[T]> = match self.grad {
            None => None,
            Some((Storage::Cpu(cpu), layout)) => {
                let (start, end) = layout
                    .contiguous_offsets()
                    .filter(|(s, e)| e - s == n)
                    .ok_or_else(|| candle_core::Error::Msg("SGLD: a gradient does not match its variable".into()))?;
                Some(&cpu.as_slice::<T>()?[start..end])
            }
            Some(_) => return Err(candle_core::Error::Msg("SGLD runs on the CPU".into())),
        };
        let p = self.params;
        let (half_eps, eps) = (0.5 * p.epsilon, p.epsilon);
        let mut avg = self.square_avg.borrow_mut();
        let mut record = self.record.borrow_mut();
        let g_at = |j: usize| grad.map_or(0.0, |g| g[j].to_f64());
        match (p.rmsprop, avg.as_deref_mut(), record.as_deref_mut()) {
            (None, _, None) => {
                // The hot loop: plain SGLD.
                let sqrt_eps = eps.sqrt();
                for j in 0..n {
                    let wj = w[j].to_f64();
                    let d = drift(p, g_at(j), wj, self.anchor[j]);
                    w[j] = T::from_f64(wj - half_eps * d + sqrt_eps * self.xi[j]);
                }
            }
            (rms, mut avg, mut record) => {
                for j in 0..n {
                    let wj = w[j].to_f64();
                    let d = drift(p, g_at(j), wj, self.anchor[j]);
                    let g = match (rms, avg.as_deref_mut()) {
                        (Some(RmsProp { alpha, eps: delta }), Some(v)) => {
                            v[j] = if self.first { d * d } else { alpha * v[j] + (1.0 - alpha) * d * d };
                            1.0 / (v[j].sqrt() + delta)
                        }
                        _ => 1.0,
                    };
                    w[j] = T::from_f64(wj - half_eps * g * d + (eps * g).sqrt() * self.xi[j]);
                    if let Some(r) = record.as_deref_mut() {
                        r.w.push(wj);
                        r.drift.push(d);
                        r.precond.push(g);
                    }
                }
            }
        }
        Ok(())
    }
}

/// Standard-normal draws from the sampler's seeded ChaCha8 stream, in order: rand_distr's
/// `StandardNormal` (a 256-layer ziggurat on one 64-bit word per draw), drawn straight into a
/// buffer rather than through a tensor per variable.
#[derive(Debug)]
struct Normals {
    rng: ChaCha8Rng,
}

impl Normals {
    fn new(seed: u64, stream: u64) -> Normals {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(stream);
        Normals { rng }
    }

    /// Fills `out` with the next draws.
    fn fill(&mut self, out: &mut [f64]) {
        for x in out {
            *x = StandardNormal.sample(&mut self.rng);
        }
    }
}

/// A tensor's elements as float64, in order.
fn values(t: &Tensor) -> Result<Vec<f64>> {
    t.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()
}

/// Log Metropolis–Hastings ratio of a Langevin move from `old` to `new`, each given as
/// `(w, ∇U(w), U(w))` with `w` and `∇U` flattened in the same order:
///
/// ```text
/// log α = U(old) − U(new) + log q(old | new) − log q(new | old),
/// log q(b | a) = −‖b − a + (ε/2)·∇U(a)‖² / (2ε).
/// ```
///
/// Both points must use the same minibatch, otherwise `U` changes between them for reasons that
/// have nothing to do with the move.
pub fn mala_log_acceptance(
    epsilon: f64,
    old: (&[f64], &[f64], f64),
    new: (&[f64], &[f64], f64),
) -> f64 {
    log_acceptance(epsilon, None, old, new)
}

/// [`mala_log_acceptance`] for a proposal with diagonal preconditioner `G` (the same for both
/// directions): `log q(b | a) = −Σ (b − a + (ε/2)·G·∇U(a))² / (2εG)`.
fn log_acceptance(
    epsilon: f64,
    precond: Option<&[f64]>,
    old: (&[f64], &[f64], f64),
    new: (&[f64], &[f64], f64),
) -> f64 {
    let (w_old, g_old, u_old) = old;
    let (w_new, g_new, u_new) = new;
    let half = 0.5 * epsilon;
    let mut forward = 0.0; // Σ (new − old + (ε/2)G∇U(old))² / G
    let mut backward = 0.0; // Σ (old − new + (ε/2)G∇U(new))² / G
    for i in 0..w_old.len() {
        let g = precond.map_or(1.0, |p| p[i]);
        let d = w_new[i] - w_old[i];
        forward += (d + half * g * g_old[i]).powi(2) / g;
        backward += (-d + half * g * g_new[i]).powi(2) / g;
    }
    (u_old - u_new) + (forward - backward) / (2.0 * epsilon)
}
