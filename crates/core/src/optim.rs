/*!
AdamW with PyTorch's semantics, and the paper's warm-up.

Per step `t = 0, 1, …`: `lr_t = lr·min(t/warmup, 1)`; `w ← w·(1 − lr_t·wd)` (decoupled decay);
then Adam with bias correction at step count `k = t + 1`:
`w ← w − lr_t/(1−β₁ᵏ) · m / (√v/√(1−β₂ᵏ) + ε)`. candle's own `AdamW` cannot save and restore
its moments, which resuming needs, so this one keeps them in the open.
*/

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};

use crate::config::TrainConfig;
use crate::model::Params;

/// AdamW state for one set of parameters.
#[derive(Debug)]
pub struct AdamW {
    params: Vec<(String, Var)>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    t: u64,
    lr: f64,
    weight_decay: f64,
    betas: [f64; 2],
    eps: f64,
    warmup: u64,
}

impl AdamW {
    /// Fresh optimizer (zero moments, no steps taken).
    pub fn new(params: &Params, cfg: &TrainConfig) -> Result<AdamW> {
        let params: Vec<(String, Var)> = params.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let zeros = params.iter().map(|(_, v)| v.as_tensor().zeros_like()).collect::<candle_core::Result<Vec<_>>>()?;
        Ok(AdamW {
            m: zeros.clone(),
            v: zeros,
            params,
            t: 0,
            lr: cfg.lr,
            weight_decay: cfg.weight_decay,
            betas: cfg.betas,
            eps: cfg.eps,
            warmup: cfg.warmup_steps,
        })
    }

    /// Learning rate at step `t` (the warm-up schedule).
    pub fn lr_at(&self, t: u64) -> f64 {
        if self.warmup == 0 {
            self.lr
        } else {
            self.lr * (t as f64 / self.warmup as f64).min(1.0)
        }
    }

    /// Steps taken so far.
    pub fn steps_taken(&self) -> u64 {
        self.t
    }

    /// One update from the gradients of the loss. A parameter with no gradient (e.g. `W_Q` at
    /// α = 0) is treated as having gradient zero: it still decays, as in PyTorch.
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        self.step_by(|_, w| Ok(grads.get(w).cloned()))
    }

    /// [`AdamW::step`] with gradients given as flat vectors by parameter name.
    pub fn step_flat(&mut self, grads: &BTreeMap<String, Vec<f32>>) -> Result<()> {
        self.step_by(|name, w| match grads.get(name) {
            Some(g) => Ok(Some(Tensor::from_slice(g, w.shape(), w.device())?)),
            None => Ok(None),
        })
    }

    fn step_by(&mut self, grad_of: impl Fn(&str, &Tensor) -> Result<Option<Tensor>>) -> Result<()> {
        let lr = self.lr_at(self.t);
        let k = (self.t + 1) as i32;
        let [b1, b2] = self.betas;
        let bc1 = 1.0 - b1.powi(k);
        let bc2_sqrt = (1.0 - b2.powi(k)).sqrt();
        for (i, (name, var)) in self.params.iter().enumerate() {
            let w = var.as_tensor();
            let g = match grad_of(name, w)? {
                Some(g) => g,
                None => w.zeros_like()?,
            };
            self.m[i] = ((&self.m[i] * b1)? + (&g * (1.0 - b1))?)?;
            self.v[i] = ((&self.v[i] * b2)? + (g.sqr()? * (1.0 - b2))?)?;
            let denom = ((self.v[i].sqrt()? / bc2_sqrt)? + self.eps)?;
            let update = ((&self.m[i] / denom)? * (lr / bc1))?;
            let decayed = (w * (1.0 - lr * self.weight_decay))?;
            var.set(&(decayed - update)?)?;
        }
        self.t += 1;
        Ok(())
    }

    /// Moments as named tensors (`m.<name>`, `v.<name>`), for the checkpoint's optimizer file.
    pub fn state(&self) -> Result<BTreeMap<String, Tensor>> {
        let mut out = BTreeMap::new();
        for (i, (name, _)) in self.params.iter().enumerate() {
            out.insert(format!("m.{name}"), self.m[i].copy()?);
            out.insert(format!("v.{name}"), self.v[i].copy()?);
        }
        Ok(out)
    }

    /// Restores moments saved by [`AdamW::state`] after `steps_taken` steps.
    pub fn load_state(&mut self, state: &BTreeMap<String, Tensor>, steps_taken: u64, source: &str) -> Result<()> {
        for (i, (name, var)) in self.params.iter().enumerate() {
            for (which, slot) in [("m", &mut self.m[i]), ("v", &mut self.v[i])] {
                let key = format!("{which}.{name}");
                let t = state.get(&key).with_context(|| format!("{source}: optimizer tensor `{key}` is missing"))?;
                if t.dims() != var.dims() {
                    bail!("{source}: optimizer tensor `{key}` has shape {:?}, expected {:?}", t.dims(), var.dims());
                }
                *slot = t.to_dtype(candle_core::DType::F32)?;
            }
        }
        self.t = steps_taken;
        Ok(())
    }
}
