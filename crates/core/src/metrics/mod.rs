/*!
Pizza/Clock metrics and the two analysis stages built on them.

The measures (each in its own file, each a pure function of plain slices or tensors):

- [`gradients`]: `∂Q_c/∂e_a`, `∂Q_c/∂e_b` (closed form for one-layer models, autograd otherwise)
  and the gradient symmetry over all `p³` triples or a seeded sample.
- [`distance`]: distance irrelevance of the correct and of the largest wrong logit.
- [`circularity`]: PCA of the operand token embeddings and the circle score of the first four
  components.
- [`fourier`]: the embedding's Fourier spectrum, key frequencies, Nanda's restricted/excluded
  logits and the Clock/Pizza logit fractions of variance explained.

The stages (one row per checkpoint, keyed by the run's identifying columns, `step` and
`checkpoint`; schemas in `tables::analysis`, documented in `docs/tables-analysis.md`):

- [`scan`]: losses and accuracies on the train/validation/all pairs, parameter norms, the
  embedding spectrum, key frequencies, restricted and excluded loss (`checkpoint-scan`).
- [`symmetry`]: gradient symmetry, distance irrelevance, circularity, logit FVEs and the
  `solution` label (`symmetry`).

Inputs are checkpoints of our runs (with their run config, so the training split is regenerated)
or the paper's released files ("foreign": no run config, no split; every pair is used). This
module shares the per-checkpoint evaluation ([`Evaluation`]) between the two stages; the stage
driver and the row keys are `crate::run`'s.
*/

pub mod circularity;
pub mod distance;
pub mod fourier;
pub mod gradients;
pub mod scan;
pub mod symmetry;

#[cfg(test)]
mod tests;

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};

use crate::ckpt::Checkpoint;
use crate::data::Dataset;
use crate::run::dataset_for;

/// A checkpoint's model evaluated on every pair: what both stages start from.
#[derive(Debug, Clone)]
pub struct Evaluation {
    /// The dataset: the run's (with its split) or, for a foreign checkpoint, every pair with the
    /// model's token layout and no split.
    pub data: Dataset,
    /// Whether `data.train`/`data.val` are the run's real split (false for foreign checkpoints).
    pub has_split: bool,
    /// Logits at the last position, row-major `p² × vocab`, in float64 (computed in float32).
    pub logits: Vec<f64>,
    /// Width of a logit row.
    pub vocab: usize,
}

/// Rows per forward pass when evaluating all pairs.
const EVAL_CHUNK: usize = 8192;

impl Evaluation {
    /// Runs the model (float32, as trained) on every pair.
    pub fn new(ckpt: &Checkpoint) -> Result<Evaluation> {
        let (data, has_split) = dataset_for(ckpt)?;
        let model = gradients::detached_model(&ckpt.params, &ckpt.model, DType::F32)?;
        let vocab = ckpt.model.vocab;
        let rows = data.all_rows();
        let mut logits = Vec::with_capacity(rows.len() * vocab);
        for chunk in rows.chunks(EVAL_CHUNK) {
            let (x, _) = data.batch(chunk, &Device::Cpu)?;
            let l = model.forward(&x)?.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
            logits.extend(l);
        }
        Ok(Evaluation { data, has_split, logits, vocab })
    }

    /// Mean cross-entropy (float64, over the whole vocabulary, as in training) and accuracy on
    /// `rows`, for these logits or replacement logits of the same layout.
    pub fn loss_accuracy(&self, logits: &[f64], rows: &[u32]) -> (f64, f64) {
        loss_accuracy(logits, self.vocab, &self.data.labels, rows)
    }
}

/// Mean cross-entropy and accuracy of row-major logits (`vocab` wide) on `rows`; NaN for no rows.
/// The argmax takes the first of tied maxima.
pub fn loss_accuracy(logits: &[f64], vocab: usize, labels: &[u32], rows: &[u32]) -> (f64, f64) {
    if rows.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let (mut loss, mut hits) = (0.0, 0usize);
    for &r in rows {
        let r = r as usize;
        let row = &logits[r * vocab..(r + 1) * vocab];
        let (arg, max) = row.iter().enumerate().fold((0, f64::NEG_INFINITY), |(i, m), (j, &x)| if x > m { (j, x) } else { (i, m) });
        let lse = max + row.iter().map(|x| (x - max).exp()).sum::<f64>().ln();
        loss += lse - row[labels[r] as usize];
        hits += usize::from(arg == labels[r] as usize);
    }
    (loss / rows.len() as f64, hits as f64 / rows.len() as f64)
}

/// The first `p` columns of `embed.W_E` (the operand tokens) as a row-major `p × d_model` matrix
/// in float64, and `embed.W_E` itself row-major `d_model × vocab`.
pub fn operand_embeddings(ckpt: &Checkpoint) -> Result<(Vec<f64>, Vec<f64>)> {
    let w_e = ckpt.params.get("embed.W_E").context("parameter `embed.W_E` is missing")?.as_tensor();
    let full = w_e.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
    let tokens = w_e.narrow(1, 0, ckpt.model.p)?.t()?.to_dtype(DType::F64)?.contiguous()?.flatten_all()?.to_vec1::<f64>()?;
    Ok((tokens, full))
}

/// `embed.W_E` as a detached tensor.
pub fn w_e_tensor(ckpt: &Checkpoint) -> Result<Tensor> {
    Ok(ckpt.params.get("embed.W_E").context("parameter `embed.W_E` is missing")?.as_tensor().detach())
}

