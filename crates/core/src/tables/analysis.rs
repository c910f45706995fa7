//! Schemas of the analysis tables: `checkpoint-scan` (main table plus the spectrum and
//! parameter-norm detail tables) and `symmetry` (main table plus the per-frequency table).
//! Every table starts with the same key columns: [`super::schemas::RUN_ID_COLUMNS`], `step` and
//! `checkpoint`; `docs/tables-analysis.md` documents how each value is computed.

use super::schemas::RUN_ID_COLUMNS as ID;
use super::{ColType::*, Column, Schema};

const fn col(name: &'static str, dtype: super::ColType, doc: &'static str) -> Column {
    Column { name, dtype, doc }
}

const STEP: Column = col("step", I64, "optimizer steps of the checkpoint; for a released (foreign) checkpoint the paper's `epoch`, else -1");
const CHECKPOINT: Column = col("checkpoint", Str, "checkpoint file as given (run directories expanded to their files)");

/// `scan.parquet` (checkpoint-scan): one row per checkpoint.
pub const SCAN: Schema = Schema {
    name: "scan",
    columns: &[
        ID[0], ID[1], ID[2], ID[3], ID[4], ID[5], ID[6], STEP, CHECKPOINT,
        col("train_loss", F64, "mean cross-entropy (float64) on the run's training rows; NaN for a foreign checkpoint"),
        col("train_accuracy", F64, "accuracy on the training rows; NaN for a foreign checkpoint"),
        col("val_loss", F64, "mean cross-entropy on the validation rows; NaN for a foreign checkpoint or an empty split"),
        col("val_accuracy", F64, "accuracy on the validation rows; NaN for a foreign checkpoint or an empty split"),
        col("all_loss", F64, "mean cross-entropy on all p² pairs"),
        col("all_accuracy", F64, "accuracy on all p² pairs"),
        col("param_norm", F64, "L2 norm of all parameters together"),
        col("key_freqs", Str, "key frequencies of the token embedding, comma-separated ascending (empty: none)"),
        col("n_key_freqs", I64, "number of key frequencies"),
        col("key_energy_share", F64, "share of the embedding's non-constant Fourier energy in the key frequencies"),
        col("restricted_loss", F64, "loss on all pairs of the logits restricted to the key frequencies' cos/sin(w(a+b)) components plus each class's mean"),
        col("excluded_loss", F64, "loss on the training rows (all pairs if foreign) of the logits with those components removed"),
    ],
};

/// `scan_spectrum.parquet` (beside `scan.parquet`): one row per checkpoint and frequency.
pub const SCAN_SPECTRUM: Schema = Schema {
    name: "scan_spectrum",
    columns: &[
        ID[0], ID[1], ID[2], ID[3], ID[4], ID[5], ID[6], STEP, CHECKPOINT,
        col("k", I64, "frequency, 0..=floor(p/2), of the operand token embeddings along the token axis"),
        col("norm", F64, "norm of frequency k: sqrt of the energy in the unit cos_k and sin_k directions, summed over d_model"),
        col("share", F64, "share of the non-constant energy (0 for k = 0)"),
        col("is_key", Bool, "k is a key frequency"),
    ],
};

/// `scan_norms.parquet` (beside `scan.parquet`): one row per checkpoint and parameter tensor.
pub const SCAN_NORMS: Schema = Schema {
    name: "scan_norms",
    columns: &[
        ID[0], ID[1], ID[2], ID[3], ID[4], ID[5], ID[6], STEP, CHECKPOINT,
        col("tensor", Str, "parameter name (the released checkpoints' names, e.g. `blocks.0.mlp.W_in`)"),
        col("norm", F64, "L2 (Frobenius) norm of the tensor"),
    ],
};

/// `symmetry.parquet` (symmetry): one row per checkpoint.
pub const SYMMETRY: Schema = Schema {
    name: "symmetry",
    columns: &[
        ID[0], ID[1], ID[2], ID[3], ID[4], ID[5], ID[6], STEP, CHECKPOINT,
        col("accuracy", F64, "accuracy on all p² pairs"),
        col("gradient_symmetry", F64, "mean cosine between dQ_c/de_a and dQ_c/de_b over the triples (a, b, c)"),
        col("gradient_symmetry_exact", Bool, "true: all p³ triples; false: a seeded uniform sample"),
        col("gradient_symmetry_triples", I64, "number of triples averaged (p³ when exact, analysis.sample_triples otherwise)"),
        col("distance_irrelevance", F64, "distance irrelevance of the correct-class logit"),
        col("distance_irrelevance_top_wrong", F64, "distance irrelevance of the largest wrong logit"),
        col("circularity", F64, "mean circle score of the first four principal components of the operand token embeddings"),
        col("fve_clock", F64, "fraction of variance of the (per-pair centred) logits explained by cos(w(a+b-c)) at the key frequencies"),
        col("fve_pizza", F64, "the same for the Pizza form 2|cos(w(a-b)/2)|(|cos(w(a+b-c)/2)|-|sin(w(a+b-c)/2)|)"),
        col("key_freqs", Str, "key frequencies used for the FVEs (same rule as checkpoint-scan), comma-separated"),
        col("n_key_freqs", I64, "number of key frequencies"),
        col("solution", Str, "`pizza`, `clock`, `non-circular` or `unclear` (thresholds in docs/tables-analysis.md)"),
    ],
};

/// `symmetry_freqs.parquet` (beside `symmetry.parquet`): one row per checkpoint and frequency
/// `k = 1..=floor(p/2)`.
pub const SYMMETRY_FREQS: Schema = Schema {
    name: "symmetry_freqs",
    columns: &[
        ID[0], ID[1], ID[2], ID[3], ID[4], ID[5], ID[6], STEP, CHECKPOINT,
        col("k", I64, "frequency"),
        col("share", F64, "share of the embedding's non-constant Fourier energy"),
        col("is_key", Bool, "k is a key frequency"),
        col("fve_clock", F64, "FVE of the centred logits by the Clock form at this frequency alone"),
        col("fve_pizza", F64, "FVE of the centred logits by the Pizza form at this frequency alone"),
    ],
};

/// Every analysis schema, for documentation and tests.
pub const ALL: &[&Schema] = &[&SCAN, &SCAN_SPECTRUM, &SCAN_NORMS, &SYMMETRY, &SYMMETRY_FREQS];
