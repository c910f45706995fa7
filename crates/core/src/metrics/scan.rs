/*!
The `checkpoint-scan` stage: per checkpoint, losses and accuracies recomputed from the weights,
parameter norms, the Fourier spectrum of the operand token embeddings, its key frequencies and
Nanda's restricted and excluded losses.

Output (`tables::analysis::write_scan`): the main table (`SCAN`, one row per checkpoint) at
`--out`, and two long detail tables beside it: `<stem>_spectrum.parquet` (`SCAN_SPECTRUM`, one row
per checkpoint and frequency) and `<stem>_norms.parquet` (`SCAN_NORMS`, one row per checkpoint and
tensor).
*/

use std::path::{Path, PathBuf};

use anyhow::Result;

use super::{fourier, operand_embeddings, Evaluation};
use crate::ckpt::Checkpoint;
use crate::run::{checkpoint_stage, RowKey, StageOptions};
use crate::tables;

/// Everything `checkpoint-scan` measures on one checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct ScanRecord {
    /// Row key.
    pub key: RowKey,
    /// (loss, accuracy) on the training rows; NaN for a foreign checkpoint.
    pub train: (f64, f64),
    /// (loss, accuracy) on the validation rows; NaN for a foreign checkpoint or an empty split.
    pub val: (f64, f64),
    /// (loss, accuracy) on all pairs.
    pub all: (f64, f64),
    /// L2 norm of all parameters.
    pub param_norm: f64,
    /// L2 norm of each tensor, by name.
    pub tensor_norms: Vec<(String, f64)>,
    /// Energy of each frequency `k = 0..=⌊p/2⌋` of the operand token embeddings.
    pub spectrum: Vec<f64>,
    /// Key frequencies (see [`fourier::key_frequencies`]).
    pub key_freqs: Vec<usize>,
    /// Loss on all pairs of the restricted logits.
    pub restricted_loss: f64,
    /// Loss on the training rows (all pairs if foreign) of the excluded logits.
    pub excluded_loss: f64,
}

impl ScanRecord {
    /// Share of the non-constant energy held by the key frequencies.
    pub fn key_energy_share(&self) -> f64 {
        let s = fourier::shares(&self.spectrum);
        self.key_freqs.iter().map(|&k| s[k]).sum()
    }
}

/// Measures one checkpoint.
pub fn scan_checkpoint(ckpt: &Checkpoint) -> Result<ScanRecord> {
    let ev = Evaluation::new(ckpt)?;
    let m = &ckpt.model;
    let all_rows = ev.data.all_rows();
    let nan = (f64::NAN, f64::NAN);
    let (train, val) = if ev.has_split {
        (ev.loss_accuracy(&ev.logits, &ev.data.train), ev.loss_accuracy(&ev.logits, &ev.data.val))
    } else {
        (nan, nan)
    };
    let all = ev.loss_accuracy(&ev.logits, &all_rows);

    let (_, w_e) = operand_embeddings(ckpt)?;
    let spectrum = fourier::embedding_spectrum(&w_e, m.d_model, m.vocab, m.p);
    let key_freqs = fourier::key_frequencies(&spectrum);
    let (restricted, excluded) = fourier::ablate_sum_frequencies(&ev.logits, ev.vocab, m.p, &key_freqs);
    let excluded_rows = if ev.has_split { &ev.data.train } else { &all_rows };
    Ok(ScanRecord {
        key: RowKey::of(ckpt),
        train,
        val,
        all,
        param_norm: ckpt.params.norm()?,
        tensor_norms: ckpt.params.norms()?,
        spectrum,
        restricted_loss: ev.loss_accuracy(&restricted, &all_rows).0,
        excluded_loss: ev.loss_accuracy(&excluded, excluded_rows).0,
        key_freqs,
    })
}

/// The whole stage: expands `inputs` (run directories or checkpoint files), scans every
/// checkpoint and writes the tables (detail tables first, the main table at `out` last).
pub fn run(inputs: &[PathBuf], out: &Path, opts: &StageOptions) -> Result<Vec<ScanRecord>> {
    checkpoint_stage(inputs, out, opts, "checkpoint-scan", scan_checkpoint, |paths, records| {
        let meta = tables::meta("checkpoint-scan", paths, &[("key_factor", fourier::KEY_FACTOR.to_string())]);
        tables::analysis::write_scan(records, out, &meta)
    })
}
