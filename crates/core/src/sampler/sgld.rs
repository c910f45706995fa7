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

Optionally the step is preconditioned RMSProp-style (pSGLD, Li, Chen, Carlson & Carin 2016):
with `V ← α·V + (1 − α)·(∇U)²` element-wise and `G = 1/(√V + δ)`,

```text
w ← w − (ε/2)·G⊙∇U(w) + N(0, ε·G)
```

so that directions of very different curvature move at comparable rates. Like devinterp's
RMSprop-SGLD it omits the small `Γ(w)` drift correction for the change of `G` with `w`. `V`
starts at the first step's `(∇U)²` rather than at zero, so the first steps are not oversized.
*/

use candle_core::backprop::GradStore;
use candle_core::{DType, Result, Tensor, Var};
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
    anchor: Vec<Tensor>,
    params: SgldParams,
    rng: ChaCha8Rng,
    /// RMSProp's running mean of squared drifts, one tensor per variable (after the first step).
    square_avg: Option<Vec<Tensor>>,
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
        let mut rng = ChaCha8Rng::seed_from_u64(params.seed);
        rng.set_stream(params.stream);
        Ok(Sgld {
            vars,
            anchor,
            params,
            rng,
            square_avg: None,
        })
    }

    fn step(&mut self, grads: &GradStore) -> Result<()> {
        let drifts = self.drifts(grads)?;
        let precond = self.preconditioners(&drifts)?;
        self.apply(&drifts, precond.as_deref())
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
        let drifts_old = self.drifts(grads)?;
        let precond = self.preconditioners(&drifts_old)?;
        let w_old = flatten(self.vars.iter().map(|v| v.as_tensor()))?;
        let g_old = flatten(drifts_old.iter())?;
        self.apply(&drifts_old, precond.as_deref())?;
        let (loss_new, grads_new) = reevaluate()?;
        let u_new = self.potential(loss_new)?;
        let w_new = flatten(self.vars.iter().map(|v| v.as_tensor()))?;
        let g_new = flatten(self.drifts(&grads_new)?.iter())?;
        // With preconditioning the reverse move is scored with this step's G as well: the
        // ratio of a proposal whose covariance is frozen over the step.
        let precond = precond.map(|g| flatten(g.iter())).transpose()?;
        let log_ratio = log_acceptance(
            self.params.epsilon,
            precond.as_deref(),
            (&w_old, &g_old, u_old),
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

    /// `∇U = nβ·∇L_B + γ·(w − w*)` per variable. A variable without a gradient (not used by the
    /// loss) gets only the localisation term: it is still part of the sampled distribution.
    fn drifts(&self, grads: &GradStore) -> Result<Vec<Tensor>> {
        let SgldParams { nbeta, gamma, .. } = self.params;
        self.vars
            .iter()
            .zip(&self.anchor)
            .map(|(v, a)| {
                let w = v.as_tensor();
                let pull = if gamma != 0.0 {
                    Some(((w - a)? * gamma)?)
                } else {
                    None
                };
                match (grads.get(w), pull) {
                    (Some(g), Some(p)) => (g * nbeta)? + p,
                    (Some(g), None) => g * nbeta,
                    (None, Some(p)) => Ok(p),
                    (None, None) => w.zeros_like(),
                }
            })
            .collect()
    }

    /// Updates RMSProp's running mean with these drifts and returns `G = 1/(√V + δ)` per
    /// variable; `None` without preconditioning.
    fn preconditioners(&mut self, drifts: &[Tensor]) -> Result<Option<Vec<Tensor>>> {
        let Some(RmsProp { alpha, eps }) = self.params.rmsprop else {
            return Ok(None);
        };
        let squares = drifts.iter().map(Tensor::sqr).collect::<Result<Vec<_>>>()?;
        let avg = match self.square_avg.take() {
            None => squares,
            Some(old) => old
                .iter()
                .zip(&squares)
                .map(|(v, s)| (v * alpha)? + (s * (1.0 - alpha))?)
                .collect::<Result<Vec<_>>>()?,
        };
        let precond = avg
            .iter()
            .map(|v| v.sqrt()?.affine(1.0, eps)?.recip())
            .collect::<Result<Vec<_>>>()?;
        self.square_avg = Some(avg);
        Ok(Some(precond))
    }

    /// `w ← w − (ε/2)·G⊙drift + √(εG)⊙ξ` (G = 1 without preconditioning), drawing ξ variable by
    /// variable in order.
    fn apply(&mut self, drifts: &[Tensor], precond: Option<&[Tensor]>) -> Result<()> {
        let eps = self.params.epsilon;
        for (i, drift) in drifts.iter().enumerate() {
            let noise = self.noise(i, eps.sqrt())?;
            let w = self.vars[i].as_tensor();
            let next = match precond {
                None => ((w - (drift * (0.5 * eps))?)? + noise)?,
                Some(g) => {
                    let g = &g[i];
                    ((w - ((drift * g)? * (0.5 * eps))?)? + (noise * g.sqrt()?)?)?
                }
            };
            self.vars[i].set(&next)?;
        }
        Ok(())
    }

    /// Gaussian noise with standard deviation `scale`, shaped like variable `i`. Drawn in f64 and
    /// rounded to the variable's dtype, so the stream does not depend on the dtype.
    fn noise(&mut self, i: usize, scale: f64) -> Result<Tensor> {
        let v = self.vars[i].as_tensor();
        let count = v.elem_count();
        let rng = &mut self.rng;
        let draws = (0..count).map(|_| scale * Distribution::<f64>::sample(&StandardNormal, rng));
        match v.dtype() {
            DType::F32 => Tensor::from_vec(
                draws.map(|x: f64| x as f32).collect::<Vec<f32>>(),
                v.shape(),
                v.device(),
            ),
            DType::F64 => Tensor::from_vec(draws.collect::<Vec<f64>>(), v.shape(), v.device()),
            other => Tensor::from_vec(draws.collect::<Vec<f64>>(), v.shape(), v.device())?
                .to_dtype(other),
        }
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

/// All elements of the tensors, concatenated, as f64.
fn flatten<'a>(tensors: impl Iterator<Item = &'a Tensor>) -> Result<Vec<f64>> {
    let mut out = Vec::new();
    for t in tensors {
        out.extend(t.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?);
    }
    Ok(out)
}
