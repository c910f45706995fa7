//! Named parameters: the weights of one model as candle `Var`s, sorted by name.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarBuilder;

use super::ModelConfig;
use crate::rng;

/// The weights of one model, by released-checkpoint tensor name. A `BTreeMap`, not candle's
/// `VarMap` (a `HashMap`), so that iteration order, and with it every flattening and every
/// random draw, is the same on every run.
#[derive(Debug, Clone)]
pub struct Params {
    vars: BTreeMap<String, Var>,
}

impl Params {
    /// The paper's initialisation: each tensor `randn × std` in name order from the `init`
    /// stream of `seed`; biases zero.
    pub fn init(cfg: &ModelConfig, seed: u64, device: &Device) -> Result<Params> {
        let mut rng = rng::stream(seed, "init");
        let mut vars = BTreeMap::new();
        for (name, shape, std) in cfg.param_specs() {
            let n: usize = shape.iter().product();
            let data: Vec<f32> = if std == 0.0 {
                vec![0.0; n]
            } else {
                rng::normals(&mut rng, n).into_iter().map(|x| (x as f64 * std) as f32).collect()
            };
            vars.insert(name, Var::from_tensor(&Tensor::from_vec(data, shape, device)?)?);
        }
        Ok(Params { vars })
    }

    /// Wraps loaded tensors, checking that exactly the tensors `cfg` needs are there with the
    /// right shapes; `source` names the file in errors.
    pub fn from_tensors(cfg: &ModelConfig, tensors: BTreeMap<String, Tensor>, source: &str) -> Result<Params> {
        let specs = cfg.param_specs();
        for (name, shape, _) in &specs {
            let t = tensors
                .get(name)
                .with_context(|| format!("{source}: tensor `{name}` is missing (expected shape {shape:?})"))?;
            if t.dims() != shape.as_slice() {
                bail!("{source}: tensor `{name}` has shape {:?}, but the config needs {shape:?}", t.dims());
            }
        }
        if let Some(extra) = tensors.keys().find(|k| !specs.iter().any(|(n, _, _)| n == *k)) {
            bail!("{source}: unexpected tensor `{extra}` for a model with {} layer(s)", cfg.n_layers);
        }
        let mut vars = BTreeMap::new();
        for (name, t) in tensors {
            let t = t.to_dtype(DType::F32)?;
            let data = t.flatten_all()?.to_vec1::<f32>()?;
            if let Some(i) = data.iter().position(|x| !x.is_finite()) {
                bail!("{source}: tensor `{name}` holds a non-finite value ({}) at flat index {i}", data[i]);
            }
            vars.insert(name, Var::from_tensor(&t)?);
        }
        Ok(Params { vars })
    }

    /// A deep copy with fresh storage (e.g. one per SGLD chain).
    pub fn deep_clone(&self) -> Result<Params> {
        let mut vars = BTreeMap::new();
        for (k, v) in &self.vars {
            vars.insert(k.clone(), Var::from_tensor(&v.as_tensor().copy()?)?);
        }
        Ok(Params { vars })
    }

    /// A `VarBuilder` over these weights: models load by name through it, and since it hands out
    /// the `Var`s' own tensors, gradients flow back to them.
    pub fn var_builder(&self) -> VarBuilder<'static> {
        let map = self.vars.iter().map(|(k, v)| (k.clone(), v.as_tensor().clone())).collect();
        let device = self.vars.values().next().map(|v| v.device().clone()).unwrap_or(Device::Cpu);
        VarBuilder::from_tensors(map, DType::F32, &device)
    }

    /// Name → var, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Var)> {
        self.vars.iter()
    }

    /// The vars in name order.
    pub fn vars(&self) -> Vec<Var> {
        self.vars.values().cloned().collect()
    }

    /// One var by name.
    pub fn get(&self, name: &str) -> Option<&Var> {
        self.vars.get(name)
    }

    /// Current values as plain tensors (detached copies).
    pub fn tensors(&self) -> Result<BTreeMap<String, Tensor>> {
        self.vars.iter().map(|(k, v)| Ok((k.clone(), v.as_tensor().detach().copy()?))).collect()
    }

    /// L2 norm of all parameters together.
    pub fn norm(&self) -> Result<f64> {
        let mut s = 0.0f64;
        for v in self.vars.values() {
            s += v.as_tensor().to_dtype(DType::F64)?.sqr()?.sum_all()?.to_scalar::<f64>()?;
        }
        Ok(s.sqrt())
    }

    /// L2 norm of each tensor, by name.
    pub fn norms(&self) -> Result<Vec<(String, f64)>> {
        self.vars
            .iter()
            .map(|(k, v)| {
                let s = v.as_tensor().to_dtype(DType::F64)?.sqr()?.sum_all()?.to_scalar::<f64>()?;
                Ok((k.clone(), s.sqrt()))
            })
            .collect()
    }
}

impl Params {
    /// Current values as flat `f32` vectors by name (copies).
    pub fn flat(&self) -> Result<BTreeMap<String, Vec<f32>>> {
        self.vars.iter().map(|(k, v)| Ok((k.clone(), v.as_tensor().flatten_all()?.to_vec1::<f32>()?))).collect()
    }

    /// Calls `f` with the current values as flat `f32` slices by name, borrowed from the
    /// variables' storage: the fast path reads every weight at every SGLD step, and copying them
    /// (as [`Params::flat`] does) cost a few per cent of a step in copies and fresh pages. The
    /// variables are read-locked while `f` runs, so `f` must not move them.
    pub fn with_slices<R>(&self, f: impl FnOnce(&BTreeMap<&str, &[f32]>) -> R) -> Result<R> {
        let guards: Vec<_> = self.vars.iter().map(|(k, v)| (k.as_str(), v.as_tensor().storage_and_layout())).collect();
        let mut slices = BTreeMap::new();
        for (name, (storage, layout)) in &guards {
            let candle_core::Storage::Cpu(cpu) = &**storage else {
                bail!("tensor `{name}` is not on the CPU");
            };
            let (start, end) = layout.contiguous_offsets().with_context(|| format!("tensor `{name}` is not contiguous"))?;
            slices.insert(*name, &cpu.as_slice::<f32>()?[start..end]);
        }
        Ok(f(&slices))
    }
}
