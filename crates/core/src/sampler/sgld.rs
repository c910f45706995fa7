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

The step is one pass over each variable's storage, in place (an `InplaceOp1`), with the noise
drawn into one reused buffer: the same operations, in the variable's dtype, as the tensor
expressions it replaced (tested bit for bit), whose temporaries took about a sixth of an SGLD
step of the paper's model at B = 512.

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
use candle_core::{CpuStorage, DType, InplaceOp1, Layout, Result, Storage, StorageRef, Tensor, Var, WithDType};
use candle_nn::Optimizer;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::normals::Normals;

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
    anchor: Vec<Tensor>,
    params: SgldParams,
    noise: Normals,
    /// RMSProp's running mean of squared drifts, one flat vector per variable (after the first
    /// step), holding values of the variable's dtype.
    square_avg: Option<Vec<Vec<f64>>>,
    /// The standard-normal draws for the variable being moved.
    xi: Vec<f64>,
}

impl Optimizer for Sgld {
    type Config = SgldParams;

    fn new(vars: Vec<Var>, params: SgldParams) -> Result<Self> {
        // Like SGD: integer variables cannot move continuously, so they are not sampled.
        let vars: Vec<Var> = vars.into_iter().filter(|v| v.dtype().is_float()).collect();
        let anchor = vars
            .iter()
            .map(|v| Ok(v.as_tensor().detach().copy()?.detach()))
            .collect::<Result<Vec<_>>>()?;
        Ok(Sgld {
            vars,
            anchor,
            params,
            noise: Normals::new(noise_stream(params.seed, params.stream)),
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

/// The generator of a sampler's noise: ChaCha8 seeded with `seed`, on stream `stream`.
fn noise_stream(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    rng
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

    /// The localisation point `w*`, one tensor per variable.
    pub fn anchor(&self) -> &[Tensor] {
        &self.anchor
    }

    /// The potential `U(w) = nβ·loss + γ/2·‖w − w*‖²` at the current parameters, given the
    /// (minibatch mean) loss there.
    pub fn potential(&self, loss: f64) -> Result<f64> {
        let mut sq = 0.0;
        if self.params.gamma != 0.0 {
            for (v, a) in self.vars.iter().zip(&self.anchor) {
                sq += (v.as_tensor() - a)?
                    .to_dtype(DType::F64)?
                    .sqr()?
                    .sum_all()?
                    .to_scalar::<f64>()?;
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
        let mut new = Record::default();
        for (i, var) in self.vars.iter().enumerate() {
            let op = Move::new(&self.params, &self.xi, &self.anchor[i], &grads_new, var, None, false, Some(&mut new), false);
            var.as_tensor().inplace_op1(&op)?;
        }
        // With preconditioning the reverse move is scored with this step's G as well: the
        // ratio of a proposal whose covariance is frozen over the step.
        let precond = self.params.rmsprop.map(|_| old.precond.as_slice());
        let log_ratio = log_acceptance(
            self.params.epsilon,
            precond,
            (&old.w, &old.drift, u_old),
            (&new.w, &new.drift, u_new),
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
    /// preconditioning, else RMSProp's running mean is updated with this `∇U` first), drawing ξ
    /// variable by variable in order: in place and in one pass per variable, with the same
    /// operations, in the variable's dtype, as the tensor expressions `w − (∇U·(ε/2)) + noise`,
    /// `∇U = g·nβ + (w − w*)·γ`. With `record`, the old point, `∇U` and `G` are appended to it
    /// (for the MALA ratio).
    fn apply(&mut self, grads: &GradStore, mut record: Option<&mut Record>) -> Result<()> {
        let Sgld { vars, anchor, params, noise, square_avg, xi } = self;
        let first = square_avg.is_none();
        if params.rmsprop.is_some() && first {
            *square_avg = Some(vars.iter().map(|v| vec![0.0; v.elem_count()]).collect());
        }
        for (i, var) in vars.iter().enumerate() {
            xi.resize(var.elem_count(), 0.0);
            noise.fill(xi);
            let avg = square_avg.as_mut().map(|s| s[i].as_mut_slice());
            let op = Move::new(params, xi, &anchor[i], grads, var, avg, first, record.as_deref_mut(), true);
            var.as_tensor().inplace_op1(&op)?;
        }
        Ok(())
    }
}

/// What a move records for the MALA ratio, flattened in variable order: the point it starts
/// from, `∇U` there and the preconditioner.
#[derive(Default)]
struct Record {
    w: Vec<f64>,
    drift: Vec<f64>,
    precond: Vec<f64>,
}

/// The move of one variable, as an in-place op on its storage (see [`Sgld::apply`]); with
/// `apply` false it only records the variable's `∇U`.
struct Move<'a> {
    params: &'a SgldParams,
    xi: &'a [f64],
    anchor: StorageRef<'a>,
    anchor_layout: &'a Layout,
    /// The loss gradient's storage and layout, if the loss uses the variable.
    grad: Option<(StorageRef<'a>, &'a Layout)>,
    /// RMSProp's running mean of this variable, updated in the move.
    square_avg: RefCell<Option<&'a mut [f64]>>,
    /// Whether this is the sampler's first step (RMSProp's mean starts at `(∇U)²`).
    first: bool,
    record: RefCell<Option<&'a mut Record>>,
    apply: bool,
}

impl<'a> Move<'a> {
    #[allow(clippy::too_many_arguments)]
    fn new(
        params: &'a SgldParams,
        xi: &'a [f64],
        anchor: &'a Tensor,
        grads: &'a GradStore,
        var: &'a Var,
        square_avg: Option<&'a mut [f64]>,
        first: bool,
        record: Option<&'a mut Record>,
        apply: bool,
    ) -> Move<'a> {
        let (anchor, anchor_layout) = anchor.storage_and_layout();
        Move {
            params,
            xi,
            anchor,
            anchor_layout,
            grad: grads.get(var.as_tensor()).map(Tensor::storage_and_layout),
            square_avg: RefCell::new(square_avg),
            first,
            record: RefCell::new(record),
            apply,
        }
    }
}

/// `w ← w − ∇U·(ε/2) + noise`, element by element (`drift(j, w)` is `∇U`).
#[inline]
fn plain_step<T: WithDType>(w: &mut [T], drift: impl Fn(usize, T) -> T, half_eps: T, noise: impl Fn(usize) -> T) {
    for (j, w) in w.iter_mut().enumerate() {
        *w = *w - drift(j, *w) * half_eps + noise(j);
    }
}

/// The contiguous CPU elements of a tensor's storage, as `T`, checked to number `n`.
fn elements<'s, T: WithDType>(storage: &'s Storage, layout: &Layout, n: usize) -> Result<&'s [T]> {
    let Storage::Cpu(cpu) = storage else {
        return Err(candle_core::Error::Msg("SGLD runs on the CPU".into()));
    };
    let (start, end) = layout
        .contiguous_offsets()
        .filter(|(s, e)| e - s == n)
        .ok_or_else(|| candle_core::Error::Msg("SGLD: a gradient or anchor does not match its variable".into()))?;
    Ok(&cpu.as_slice::<T>()?[start..end])
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
        let anchor = elements::<T>(&self.anchor, self.anchor_layout, n)?;
        let grad = match &self.grad {
            Some((s, l)) => Some(elements::<T>(s, l, n)?),
            None => None,
        };
        let p = self.params;
        let c = |x: f64| T::from_f64(x);
        let (nbeta, gamma, half_eps, sqrt_eps) = (c(p.nbeta), c(p.gamma), c(0.5 * p.epsilon), p.epsilon.sqrt());
        let pull = p.gamma != 0.0;
        let drift = |j: usize, w: T| match (grad, pull) {
            (Some(g), true) => g[j] * nbeta + (w - anchor[j]) * gamma,
            (Some(g), false) => g[j] * nbeta,
            (None, true) => (w - anchor[j]) * gamma,
            (None, false) => c(0.0),
        };
        let mut avg = self.square_avg.borrow_mut();
        let mut record = self.record.borrow_mut();
        match (p.rmsprop, record.as_deref_mut()) {
            (None, None) => {
                // The hot loop, plain SGLD: the match hoists the branches out of it.
                let noise = |j: usize| c(sqrt_eps * self.xi[j]);
                match (grad, pull) {
                    (Some(g), true) => plain_step(w, |j, w| g[j] * nbeta + (w - anchor[j]) * gamma, half_eps, noise),
                    (Some(g), false) => plain_step(w, |j, _| g[j] * nbeta, half_eps, noise),
                    _ => plain_step(w, drift, half_eps, noise),
                }
            }
            (rms, mut record) => {
                for j in 0..n {
                    let d = drift(j, w[j]);
                    let g = match (rms, avg.as_deref_mut()) {
                        (Some(RmsProp { alpha, eps: delta }), Some(v)) => {
                            let sq = d * d;
                            let next = if self.first { sq } else { c(v[j]) * c(alpha) + sq * c(1.0 - alpha) };
                            v[j] = next.to_f64();
                            c(1.0) / (c(next.to_f64().sqrt()) + c(delta))
                        }
                        _ => c(1.0),
                    };
                    if let Some(r) = record.as_deref_mut() {
                        r.w.push(w[j].to_f64());
                        r.drift.push(d.to_f64());
                        r.precond.push(g.to_f64());
                    }
                    if self.apply {
                        let noise = c(sqrt_eps * self.xi[j]);
                        w[j] = if rms.is_some() { w[j] - (d * g) * half_eps + noise * c(g.to_f64().sqrt()) } else { w[j] - d * half_eps + noise };
                    }
                }
            }
        }
        Ok(())
    }
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
