/*!
The `symmetry` stage: per checkpoint, the measures that tell Pizza from Clock (reference
section 4) and a `solution` label.

Output (`tables::analysis::write_symmetry`): the main table (`SYMMETRY`, one row per checkpoint)
at `--out` and `<stem>_freqs.parquet` beside it (`SYMMETRY_FREQS`, one row per checkpoint and
frequency `k = 1..=⌊p/2⌋`, with the single-frequency Clock and Pizza FVEs).
*/

use std::path::{Path, PathBuf};

use anyhow::Result;
use candle_core::DType;

use super::gradients::{self, GradientEngine, GradientSymmetry, Triples};
use super::{circularity, distance, fourier, operand_embeddings, w_e_tensor, Evaluation};
use crate::ckpt::Checkpoint;
use crate::config::AnalysisConfig;
use crate::run::{checkpoint_stage, RowKey, StageOptions};
use crate::tables;

/// Which algorithm a checkpoint implements, by [`classify`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Solution {
    /// Circular embedding, symmetric gradients, distance-dependent logits.
    Pizza,
    /// Circular embedding, asymmetric gradients, distance-irrelevant logits.
    Clock,
    /// The embedding does not lie on circles (e.g. not yet trained, or memorising).
    NonCircular,
    /// Circular but between the two (e.g. during the transition, or a mixture).
    Unclear,
}

impl Solution {
    /// The label in tables.
    pub fn as_str(self) -> &'static str {
        match self {
            Solution::Pizza => "pizza",
            Solution::Clock => "clock",
            Solution::NonCircular => "non-circular",
            Solution::Unclear => "unclear",
        }
    }
}

/// Below this circularity the embedding is `non-circular`.
pub const MIN_CIRCULARITY: f64 = 0.7;
/// Pizza: gradient symmetry at least this …
pub const PIZZA_MIN_GRADIENT_SYMMETRY: f64 = 0.98;
/// … and distance irrelevance at most this.
pub const PIZZA_MAX_DISTANCE_IRRELEVANCE: f64 = 0.5;
/// Clock: gradient symmetry at most this …
pub const CLOCK_MAX_GRADIENT_SYMMETRY: f64 = 0.9;
/// … and distance irrelevance at least this.
pub const CLOCK_MIN_DISTANCE_IRRELEVANCE: f64 = 0.5;

/// The `solution` label (thresholds above; their justification is in `docs/tables-analysis.md`).
/// NaN inputs give `unclear` (or `non-circular` for a NaN circularity).
pub fn classify(circularity: f64, gradient_symmetry: f64, distance_irrelevance: f64) -> Solution {
    if circularity.is_nan() || circularity < MIN_CIRCULARITY {
        Solution::NonCircular
    } else if gradient_symmetry >= PIZZA_MIN_GRADIENT_SYMMETRY && distance_irrelevance <= PIZZA_MAX_DISTANCE_IRRELEVANCE {
        Solution::Pizza
    } else if gradient_symmetry <= CLOCK_MAX_GRADIENT_SYMMETRY && distance_irrelevance >= CLOCK_MIN_DISTANCE_IRRELEVANCE {
        Solution::Clock
    } else {
        Solution::Unclear
    }
}

/// One frequency's row of the detail table.
#[derive(Debug, Clone, PartialEq)]
pub struct FreqFve {
    /// Frequency `k ≥ 1`.
    pub k: usize,
    /// Share of the embedding's non-constant energy.
    pub share: f64,
    /// Whether `k` is key.
    pub is_key: bool,
    /// Clock-form FVE at this frequency alone.
    pub fve_clock: f64,
    /// Pizza-form FVE at this frequency alone.
    pub fve_pizza: f64,
}

/// Everything `symmetry` measures on one checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct SymmetryRecord {
    /// Row key.
    pub key: RowKey,
    /// Accuracy on all pairs.
    pub accuracy: f64,
    /// Gradient symmetry and how it was averaged.
    pub gradient_symmetry: GradientSymmetry,
    /// DI of the correct-class logit.
    pub distance_irrelevance: f64,
    /// DI of the largest wrong logit.
    pub distance_irrelevance_top_wrong: f64,
    /// Circularity of the operand token embeddings.
    pub circularity: f64,
    /// Clock-form FVE at the key frequencies (jointly).
    pub fve_clock: f64,
    /// Pizza-form FVE at the key frequencies (jointly).
    pub fve_pizza: f64,
    /// Key frequencies.
    pub key_freqs: Vec<usize>,
    /// Per-frequency detail, `k = 1..=⌊p/2⌋`.
    pub freqs: Vec<FreqFve>,
    /// The label.
    pub solution: Solution,
}

/// Measures one checkpoint. `cfg` decides between all `p³` triples and a seeded sample.
pub fn analyze(ckpt: &Checkpoint, cfg: &AnalysisConfig) -> Result<SymmetryRecord> {
    let m = &ckpt.model;
    let p = m.p;
    let started = std::time::Instant::now();
    let ev = Evaluation::new(ckpt)?;
    let accuracy = ev.loss_accuracy(&ev.logits, &ev.data.all_rows()).1;

    let t_eval = started.elapsed().as_secs_f64();
    let engine = GradientEngine::new(&ckpt.params, m, DType::F32)?;
    let triples = Triples::choose(p, cfg.max_exact_triples, cfg.sample_triples, cfg.seed);
    let gs = gradients::gradient_symmetry(&engine, m, &w_e_tensor(ckpt)?, &ev.data.tokens, &triples)?;
    let t_grad = started.elapsed().as_secs_f64();

    let (correct, wrong) = distance::correct_and_top_wrong(&ev.logits, ev.vocab, &ev.data.labels, p);
    let (tokens, w_e) = operand_embeddings(ckpt)?;
    let circ = circularity::circularity(&tokens, p, m.d_model);

    let spectrum = fourier::embedding_spectrum(&w_e, m.d_model, m.vocab, p);
    let shares = fourier::shares(&spectrum);
    let key_freqs = fourier::key_frequencies(&spectrum);
    let fve = fourier::FveData::new(&ev.logits, ev.vocab, p);
    let freqs = (1..spectrum.len())
        .map(|k| FreqFve {
            k,
            share: shares[k],
            is_key: key_freqs.contains(&k),
            fve_clock: fve.fve(&[k], fourier::Form::Clock),
            fve_pizza: fve.fve(&[k], fourier::Form::Pizza),
        })
        .collect();
    let di = distance::distance_irrelevance(&correct, p);
    tracing::debug!(
        checkpoint = %ckpt.path.display(),
        evaluate_s = t_eval,
        gradient_symmetry_s = t_grad - t_eval,
        rest_s = started.elapsed().as_secs_f64() - t_grad,
        engine = engine.name(),
        "symmetry timings"
    );
    Ok(SymmetryRecord {
        key: RowKey::of(ckpt),
        accuracy,
        gradient_symmetry: gs,
        distance_irrelevance: di,
        distance_irrelevance_top_wrong: distance::distance_irrelevance(&wrong, p),
        circularity: circ,
        fve_clock: fve.fve(&key_freqs, fourier::Form::Clock),
        fve_pizza: fve.fve(&key_freqs, fourier::Form::Pizza),
        key_freqs,
        freqs,
        solution: classify(circ, gs.value, di),
    })
}

/// The whole stage: expands `inputs`, analyses every checkpoint with `cfg` and writes the tables.
pub fn run(inputs: &[PathBuf], out: &Path, cfg: &AnalysisConfig, opts: &StageOptions) -> Result<Vec<SymmetryRecord>> {
    checkpoint_stage(inputs, out, opts, "symmetry", |ckpt| analyze(ckpt, cfg), |paths, records| {
        for r in records {
            tracing::debug!(checkpoint = %r.key.checkpoint, solution = r.solution.as_str(), "label");
        }
        let settings = [("analysis_config", serde_json::to_string(cfg)?), ("key_factor", fourier::KEY_FACTOR.to_string())];
        tables::analysis::write_symmetry(records, out, &tables::meta("symmetry", paths, &settings))
    })
}
