/*!
The paper's transformer as an SGLD target ([`TransformerTarget`]): one chain's own copy of a
checkpoint's weights, plus the rows the LLC is measured on.

Which rows: for a checkpoint written by `train` (it carries its run config), the run's training
rows, regenerated from the config's dataset and seeded split, so `n` is the `n` the model was
trained on. For a foreign checkpoint (the paper's released files carry no split) every one of the
`p²` pairs is used, and the tables say so (`rows_used = all_pairs`, `n_train = p²`).

Gradients: for one-layer ReLU models the hand-derived fast path ([`crate::model::fast`]) with one
thread per chain (chains run one per core, so a chain never waits on its own threads); otherwise,
or when asked for ([`GradMode::Autograd`]), candle's autograd through [`Transformer::forward`].
Both compute the same function (see the tests), so a chain's numbers differ between them only by
float32 rounding.

Restriction ([`TransformerTarget::restrict`], [`crate::llc::restrict`]): the sampler sees only the
group's `Var`s through [`SgldTarget::params`], while the loss and its gradient are computed on all
the weights, the others held at `w*`. The fast path is asked for the group's gradients only
([`ParamSet`]) and skips the steps of the backward that none of them needs, with the
same bits as the full backward (tested in `model::fast`): a group of the unembedding or the MLP
costs less than the whole model, the embedding (whose gradient needs all of the backward) as much.
*/

use std::sync::Arc;

use anyhow::{Context, Result};
use candle_core::backprop::GradStore;
use candle_core::{Device, Tensor, Var};

use crate::ckpt::Checkpoint;
use crate::llc::restrict::Restriction;
use crate::model::names::ParamSet;
use crate::model::{self, fast, ModelConfig, Params, Transformer};
use crate::sampler::SgldTarget;

/// Where the rows of an estimate come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowsUsed {
    /// The run's training split (checkpoints written by `train`).
    TrainSplit,
    /// All `p²` pairs: a foreign checkpoint, whose training split is unknown.
    AllPairs,
}

impl RowsUsed {
    /// The value of the tables' `rows_used` column.
    pub fn as_str(self) -> &'static str {
        match self {
            RowsUsed::TrainSplit => "train_split",
            RowsUsed::AllPairs => "all_pairs",
        }
    }
}

/// The rows an LLC is measured on, gathered once and shared by every chain: row `i` of the
/// sampler's minibatches is `tokens[i·n_ctx..(i+1)·n_ctx]`, `labels[i]`.
#[derive(Debug, Clone)]
pub struct TrainingRows {
    /// Flat tokens, `n × n_ctx`.
    pub tokens: Vec<u32>,
    /// Labels, `n`.
    pub labels: Vec<u32>,
    /// Positions per row.
    pub n_ctx: usize,
    /// Where the rows come from.
    pub used: RowsUsed,
}

impl TrainingRows {
    /// The rows of a checkpoint (see the module docs).
    pub fn of(ckpt: &Checkpoint) -> Result<TrainingRows> {
        let (data, has_split) = crate::run::dataset_for(ckpt)?;
        if data.n_ctx != ckpt.model.n_ctx {
            anyhow::bail!(
                "{}: the dataset has {} positions per row but the model expects {}",
                ckpt.path.display(),
                data.n_ctx,
                ckpt.model.n_ctx
            );
        }
        let (rows, used) = if has_split {
            (data.train.clone(), RowsUsed::TrainSplit)
        } else {
            (data.all_rows(), RowsUsed::AllPairs)
        };
        let (tokens, labels) = data.gather(&rows);
        Ok(TrainingRows {
            tokens,
            labels,
            n_ctx: data.n_ctx,
            used,
        })
    }

    /// Number of rows n.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Tokens and labels of the given rows (indices into these rows).
    pub fn gather(&self, rows: &[u32]) -> (Vec<u32>, Vec<u32>) {
        let t = self.n_ctx;
        let mut toks = Vec::with_capacity(rows.len() * t);
        let mut labs = Vec::with_capacity(rows.len());
        for &r in rows {
            let r = r as usize;
            toks.extend_from_slice(&self.tokens[r * t..(r + 1) * t]);
            labs.push(self.labels[r]);
        }
        (toks, labs)
    }
}

/// How a [`TransformerTarget`] computes gradients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GradMode {
    /// The hand-derived fast path (one-layer ReLU models only).
    Fast,
    /// candle's autograd through [`Transformer::forward`].
    Autograd,
}

/// One chain's SGLD target: its own weights (starting at the checkpoint's, `w*`) and the shared
/// rows; all of the weights are sampled unless [`TransformerTarget::restrict`]ed.
#[derive(Debug)]
pub struct TransformerTarget {
    params: Params,
    /// The sampled weights' names, in name order.
    free: Vec<String>,
    /// Their `Var`s (what [`SgldTarget::params`] hands the sampler).
    vars: Vec<Var>,
    /// The gradients the fast path computes: those of `free`.
    need: ParamSet,
    model: ModelConfig,
    rows: Arc<TrainingRows>,
    mode: GradMode,
}

impl TransformerTarget {
    /// A target over a deep copy of `params` (so that chains never share storage), with the fast
    /// path when the model allows it.
    pub fn new(params: &Params, model: &ModelConfig, rows: Arc<TrainingRows>) -> Result<TransformerTarget> {
        let mode = if fast::supports(model) { GradMode::Fast } else { GradMode::Autograd };
        TransformerTarget::with_mode(params, model, rows, mode)
    }

    /// [`TransformerTarget::new`] with an explicit gradient mode; [`GradMode::Fast`] is refused
    /// for a model the fast path does not compute.
    pub fn with_mode(
        params: &Params,
        model: &ModelConfig,
        rows: Arc<TrainingRows>,
        mode: GradMode,
    ) -> Result<TransformerTarget> {
        if mode == GradMode::Fast && !fast::supports(model) {
            anyhow::bail!(
                "the fast path computes one-layer ReLU models only (this one has {} layer(s), {:?})",
                model.n_layers,
                model.act
            );
        }
        if rows.n_ctx != model.n_ctx {
            anyhow::bail!("rows have {} positions but the model expects {}", rows.n_ctx, model.n_ctx);
        }
        if rows.is_empty() {
            anyhow::bail!("no rows to measure the loss on");
        }
        let params = params.deep_clone().context("copying the weights for a chain")?;
        let free = params.iter().map(|(n, _)| n.clone()).collect();
        let vars = params.vars();
        Ok(TransformerTarget {
            params,
            free,
            vars,
            need: ParamSet::ALL,
            model: model.clone(),
            rows,
            mode,
        })
    }

    /// The same target sampling only the tensors of `group`; the others stay at `w*`. An error
    /// when a pattern of the group matches none of the model's tensors.
    pub fn restrict(mut self, group: &Restriction) -> Result<TransformerTarget> {
        let free: Vec<String> = group.select(self.params.iter().map(|(n, _)| n.as_str())).map_err(anyhow::Error::msg)?.into_iter().map(str::to_string).collect();
        // `select` keeps the params' (name) order, which is the order the noise is drawn in.
        self.vars = self.params.iter().filter(|(n, _)| free.contains(n)).map(|(_, v)| v.clone()).collect();
        if self.mode == GradMode::Fast {
            // A one-layer model's tensors are all `Param`s; an unknown name would be a bug here.
            self.need = ParamSet::from_names(free.iter().map(String::as_str))
                .map_err(|n| anyhow::anyhow!("the fast path has no tensor `{n}`"))?;
        }
        self.free = free;
        Ok(self)
    }

    /// The names of the sampled tensors, in name order.
    pub fn free(&self) -> &[String] {
        &self.free
    }

    /// The gradient mode in use.
    pub fn mode(&self) -> GradMode {
        self.mode
    }

    /// The current weights.
    pub fn weights(&self) -> &Params {
        &self.params
    }

    fn batch(&self, rows: &[u32]) -> candle_core::Result<(Tensor, Tensor)> {
        let (toks, labs) = self.rows.gather(rows);
        let device = Device::Cpu;
        Ok((
            Tensor::from_vec(toks, (rows.len(), self.model.n_ctx), &device)?,
            Tensor::from_vec(labs, rows.len(), &device)?,
        ))
    }

    /// The fast path's loss and, with `want_grad`, the gradients of the sampled tensors.
    fn fast(&self, rows: &[u32], want_grad: bool) -> candle_core::Result<fast::Output> {
        let (toks, labs) = self.rows.gather(rows);
        let need = if want_grad { self.need } else { ParamSet::NONE };
        // One thread: chains run one per core (see the module docs).
        model::fast_loss_and_grads(&self.params, &self.model, &toks, &labs, need, 1)
            .map_err(|e| candle_core::Error::Msg(format!("{e:#}")))
    }
}

impl SgldTarget for TransformerTarget {
    fn params(&self) -> &[Var] {
        &self.vars
    }

    fn n_train(&self) -> usize {
        self.rows.len()
    }

    /// Mean cross-entropy (float64 on float32 logits, as in training) through candle's
    /// autograd, connected to the weights' graph.
    fn loss(&self, rows: &[u32]) -> candle_core::Result<Tensor> {
        let (x, y) = self.batch(rows)?;
        let model = Transformer::new(self.params.var_builder(), &self.model)?;
        model::cross_entropy_f64(&model.forward(&x)?, &y)
    }

    fn loss_and_grads(&self, rows: &[u32]) -> candle_core::Result<(f64, GradStore)> {
        match self.mode {
            GradMode::Autograd => {
                let loss = self.loss(rows)?;
                Ok((loss.to_scalar::<f64>()?, loss.backward()?))
            }
            GradMode::Fast => {
                let out = self.fast(rows, true)?;
                let mut grads = out.grads.ok_or_else(|| candle_core::Error::Msg("the fast path returned no gradients".into()))?;
                let mut store = GradStore::default();
                for (name, var) in self.free.iter().zip(&self.vars) {
                    let g = grads
                        .remove(name)
                        .ok_or_else(|| candle_core::Error::Msg(format!("the fast path returned no gradient for `{name}`")))?;
                    store.insert(var.as_tensor(), Tensor::from_vec(g, var.shape(), var.device())?);
                }
                Ok((out.loss, store))
            }
        }
    }

    fn loss_value(&self, rows: &[u32]) -> candle_core::Result<f64> {
        match self.mode {
            GradMode::Autograd => self.loss(rows)?.to_scalar::<f64>(),
            GradMode::Fast => Ok(self.fast(rows, false)?.loss),
        }
    }
}
