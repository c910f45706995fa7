/*!
The paper's transformer for modular arithmetic (one file per architecture; there is one).

[`ModelSettings`] (with [`Activation`]) is the experiment file's `model:` section. [`ModelConfig`]
is the resolved shape of a model; it is built from those settings and the data's
[`TokenLayout`] (vocabulary and context), or from the JSON `config` of the paper's released checkpoints (keys `C`, `d_model`, `n_heads`, `n_layers`,
`act_fn`, `attn_coeff`, `diff_vocab`, `eqn_sign`). [`Params`] holds the weights as named candle
`Var`s under the released checkpoints' tensor names, which are a contract: `checkpoint-scan`,
`symmetry` and `llc` all read them.
*/

pub mod fast;
pub mod names;
mod params;
mod transformer;

pub use params::Params;
pub use transformer::{accuracy, cross_entropy_f64, Transformer};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::data::TokenLayout;
use names::ParamSet;

/// Activation of the MLP.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    /// ReLU (the paper's default).
    Relu,
    /// GeLU (exact, erf-based, as PyTorch's `F.gelu`).
    Gelu,
}

/// Model hyper-parameters (the vocabulary and context follow from the data's [`TokenLayout`]).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ModelSettings {
    /// Width of the residual stream.
    pub d_model: usize,
    /// Attention heads; `d_head = d_model / n_heads` (integer division, as the paper).
    pub n_heads: usize,
    /// MLP width; `4·d_model` when absent.
    pub d_mlp: Option<usize>,
    /// Number of transformer blocks.
    pub n_layers: usize,
    /// MLP activation.
    pub act: Activation,
    /// Attention rate α ∈ [0, 1]: 1 is ordinary attention (Clock), 0 constant attention (Pizza).
    pub alpha: f64,
}

impl Default for ModelSettings {
    fn default() -> Self {
        ModelSettings { d_model: 128, n_heads: 4, d_mlp: None, n_layers: 1, act: Activation::Relu, alpha: 0.0 }
    }
}


/// The resolved shape of a model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// The modulus (`C` in the paper's config); classes `0..p` are the answers.
    pub p: usize,
    /// Input vocabulary = output classes (`p`, `p+1` with `=`, `2p` with separate vocabularies).
    pub vocab: usize,
    /// Sequence length (2, or 3 with `=`).
    pub n_ctx: usize,
    /// Residual width.
    pub d_model: usize,
    /// Heads.
    pub n_heads: usize,
    /// Width per head, `d_model / n_heads` (integer division).
    pub d_head: usize,
    /// MLP width.
    pub d_mlp: usize,
    /// Blocks.
    pub n_layers: usize,
    /// MLP activation.
    pub act: Activation,
    /// Attention rate α.
    pub alpha: f64,
}

impl ModelConfig {
    /// From the `model:` settings and the data's token layout (e.g. `&DataConfig`).
    pub fn from_settings(layout: impl Into<TokenLayout>, m: &ModelSettings) -> ModelConfig {
        let layout = layout.into();
        ModelConfig {
            p: layout.p,
            vocab: layout.vocab(),
            n_ctx: layout.n_ctx(),
            d_model: m.d_model,
            n_heads: m.n_heads,
            d_head: m.d_model / m.n_heads.max(1),
            d_mlp: m.d_mlp.unwrap_or(4 * m.d_model),
            n_layers: m.n_layers,
            act: m.act,
            alpha: m.alpha,
        }
    }

    /// From the JSON `config` of a released checkpoint of the paper.
    pub fn from_paper_json(text: &str) -> Result<ModelConfig> {
        let v: serde_json::Value = serde_json::from_str(text).context("config is not valid JSON")?;
        let get_u = |k: &str| -> Result<usize> {
            v.get(k)
                .and_then(serde_json::Value::as_u64)
                .map(|x| x as usize)
                .with_context(|| format!("config field `{k}` is missing or not a non-negative integer"))
        };
        // The paper's code writes these flags as 0/1 or false/true.
        let get_flag = |k: &str| -> Result<bool> {
            match v.get(k) {
                None | Some(serde_json::Value::Null) => Ok(false),
                Some(serde_json::Value::Bool(b)) => Ok(*b),
                Some(x) => x.as_i64().map(|i| i != 0).with_context(|| format!("config field `{k}` must be a boolean or 0/1")),
            }
        };
        let p = get_u("C")?;
        let d_model = get_u("d_model")?;
        let n_heads = get_u("n_heads")?;
        let n_layers = get_u("n_layers")?;
        let act = match v.get("act_fn").and_then(serde_json::Value::as_str).unwrap_or("ReLU") {
            "ReLU" | "relu" => Activation::Relu,
            "GeLU" | "gelu" | "GELU" => Activation::Gelu,
            other => bail!("config field `act_fn`: unknown activation `{other}` (expected ReLU or GeLU)"),
        };
        let alpha = v
            .get("attn_coeff")
            .and_then(serde_json::Value::as_f64)
            .context("config field `attn_coeff` is missing or not a number")?;
        let diff_vocab = get_flag("diff_vocab")?;
        let eqn_sign = get_flag("eqn_sign")?;
        if p < 2 || d_model == 0 || n_heads == 0 || n_layers == 0 || n_heads > d_model {
            bail!("config has impossible sizes: C = {p}, d_model = {d_model}, n_heads = {n_heads}, n_layers = {n_layers}");
        }
        if !(0.0..=1.0).contains(&alpha) {
            bail!("config field `attn_coeff` must be in [0, 1], got {alpha}");
        }
        let d_mlp = match v.get("d_mlp") {
            Some(x) => x.as_u64().context("config field `d_mlp` must be an integer")? as usize,
            None => 4 * d_model,
        };
        let layout = TokenLayout { p, eq_token: eqn_sign, separate_vocab: diff_vocab };
        let (vocab, n_ctx) = (layout.vocab(), layout.n_ctx());
        Ok(ModelConfig { p, vocab, n_ctx, d_model, n_heads, d_head: d_model / n_heads, d_mlp, n_layers, act, alpha })
    }

    /// The token layout of this model's sizes.
    pub fn layout(&self) -> TokenLayout {
        TokenLayout::from_sizes(self.p, self.vocab, self.n_ctx)
    }

    /// The paper's config JSON for this model (what its loader expects), plus `d_mlp`.
    pub fn to_paper_json(&self) -> String {
        let layout = self.layout();
        serde_json::json!({
            "C": self.p,
            "d_model": self.d_model,
            "n_heads": self.n_heads,
            "n_layers": self.n_layers,
            "act_fn": match self.act { Activation::Relu => "ReLU", Activation::Gelu => "GeLU" },
            "attn_coeff": self.alpha,
            "diff_vocab": layout.separate_vocab,
            "eqn_sign": layout.eq_token,
            "d_mlp": self.d_mlp,
        })
        .to_string()
    }

    /// Every parameter: name, shape and the std of its initialisation (`randn ×` in the paper;
    /// 0 means the tensor starts at zero). Sorted by name: this is the order of every flattening
    /// and every random draw.
    pub fn param_specs(&self) -> Vec<(String, Vec<usize>, f64)> {
        let mut specs = Vec::new();
        for p in names::Param::ALL {
            let layers = if p.block_suffix().is_some() { self.n_layers } else { 1 };
            for l in 0..layers {
                specs.push((p.in_layer(l), p.shape(self), p.init_std(self)));
            }
        }
        specs.sort_by(|a, b| a.0.cmp(&b.0));
        specs
    }

    /// Number of parameters (212,608 for the paper's model at p = 59).
    pub fn n_params(&self) -> usize {
        self.param_specs().iter().map(|(_, s, _)| s.iter().product::<usize>()).sum()
    }
}

/// Loss, correct count and (optionally) gradients of a batch given as flat tokens
/// (`B × n_ctx`) and labels, by the fast path where the model allows it ([`fast::supports`]) and
/// by candle's autograd otherwise. `threads` bounds the fast path's parallelism.
pub fn loss_and_grad(
    params: &Params,
    cfg: &ModelConfig,
    tokens: &[u32],
    labels: &[u32],
    want_grad: bool,
    threads: usize,
) -> Result<fast::Output> {
    if fast::supports(cfg) {
        return fast_loss_and_grads(params, cfg, tokens, labels, if want_grad { ParamSet::ALL } else { ParamSet::NONE }, threads);
    }
    let device = candle_core::Device::Cpu;
    let model = Transformer::new(params.var_builder(), cfg)?;
    let x = candle_core::Tensor::from_vec(tokens.to_vec(), (labels.len(), cfg.n_ctx), &device)?;
    let y = candle_core::Tensor::from_vec(labels.to_vec(), labels.len(), &device)?;
    let logits = model.forward(&x)?;
    let loss = cross_entropy_f64(&logits, &y)?;
    let correct = (accuracy(&logits, &y)? * labels.len() as f64).round() as usize;
    let grads = if want_grad {
        let store = loss.backward()?;
        let mut out = std::collections::BTreeMap::new();
        for (name, var) in params.iter() {
            let g = match store.get(var.as_tensor()) {
                Some(g) => g.flatten_all()?.to_vec1::<f32>()?,
                None => vec![0.0; var.elem_count()],
            };
            out.insert(name.clone(), g);
        }
        Some(out)
    } else {
        None
    };
    Ok(fast::Output { loss: loss.to_scalar::<f64>()?, correct, grads })
}

/// [`fast::loss_and_grads`] on the weights of `params`: the loss and the gradients of the tensors
/// in `need` only, for a model the fast path computes ([`fast::supports`]).
pub fn fast_loss_and_grads(
    params: &Params,
    cfg: &ModelConfig,
    tokens: &[u32],
    labels: &[u32],
    need: ParamSet,
    threads: usize,
) -> Result<fast::Output> {
    params.with_slices(|w| {
        let w = fast::Weights::by_name(|name| w.get(name).copied())?;
        Ok(fast::loss_and_grads(cfg, &w, tokens, labels, need, threads))
    })?
}

#[cfg(test)]
mod tests;
