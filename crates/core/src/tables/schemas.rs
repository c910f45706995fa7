//! The documented schema of every table the pipeline writes. The README's column lists are
//! generated from (and checked against) these.

use super::{ColType::*, Column, Schema};

const fn col(name: &'static str, dtype: super::ColType, doc: &'static str) -> Column {
    Column { name, dtype, doc }
}

/// `dataset.parquet` (gen-data): one row per pair `(a, b)`.
pub const DATASET: Schema = Schema {
    name: "dataset",
    columns: &[
        col("row", I64, "row index, a·p + b"),
        col("a", I64, "first operand"),
        col("b", I64, "second operand"),
        col("c", I64, "label, op(a, b) mod p"),
        col("split", Str, "`train` or `val`"),
        col("x0", I64, "token at position 0 (a)"),
        col("x1", I64, "token at position 1 (b, or b+p with separate vocabularies); x2 = p when the `=` token is on"),
    ],
};

/// Columns that identify a run in every per-run table.
pub const RUN_ID_COLUMNS: &[Column] = &[
    col("run", Str, "run id from the grid, e.g. `alpha0_seed1`"),
    col("p", I64, "modulus"),
    col("alpha", F64, "attention rate α"),
    col("seed", I64, "initialisation seed"),
    col("weight_decay", F64, "AdamW weight decay"),
    col("train_frac", F64, "training fraction"),
    col("d_model", I64, "residual width"),
];

/// `metrics.parquet` (train): one row per (step, split).
pub const TRAIN_METRICS: Schema = Schema {
    name: "train_metrics",
    columns: &[
        RUN_ID_COLUMNS[0], RUN_ID_COLUMNS[1], RUN_ID_COLUMNS[2], RUN_ID_COLUMNS[3],
        RUN_ID_COLUMNS[4], RUN_ID_COLUMNS[5], RUN_ID_COLUMNS[6],
        col("step", I64, "optimizer steps taken before these weights (checkpoint `step` is the same weights)"),
        col("split", Str, "`train` or `val`"),
        col("loss", F64, "mean cross-entropy (float64) on the split"),
        col("accuracy", F64, "fraction of rows whose argmax logit is the label"),
        col("lr", F64, "learning rate applied at this step (warm-up included)"),
        col("param_norm", F64, "L2 norm of all parameters"),
    ],
};

/// `bench.parquet` (make bench): one row per measurement.
pub const BENCH: Schema = Schema {
    name: "bench",
    columns: &[
        col("name", Str, "what was measured: train_step_full_batch, train_step_autograd_reference, sgld_step_b512, sgld_step_full_batch, llc_estimate_checkpoint, train_8_runs_one_process, …"),
        col("implementation", Str, "whose code: pizza (this pipeline), pytorch (torch_reference.py) or devinterp (devinterp_reference.py), measured in the same run"),
        col("p", I64, "modulus"),
        col("rows", I64, "rows per step (batch size)"),
        col("threads", I64, "threads used"),
        col("ms_per_step", F64, "median milliseconds per step (SGLD: wall time over chains × steps; a sweep: wall time over runs × steps; llc_estimate_checkpoint: the whole estimate)"),
        col("ms_min", F64, "fastest step"),
        col("gflop_per_step", F64, "FLOPs per step the factored computation needs (0 where not counted)"),
        col("gflops", F64, "achieved GFLOP/s"),
        col("peak_fraction", F64, "achieved fraction of the float32 peak of `threads` cores"),
        col("peak_rss_mb", F64, "peak resident memory of the process that made the measurement (the largest process of a sweep), MB"),
    ],
};

/// The tables documented in `docs/tables.md` (the analysis and LLC tables have their own pages).
pub const DOCUMENTED: &[&Schema] = &[&DATASET, &TRAIN_METRICS, &BENCH];

#[cfg(test)]
mod tests {
    /// docs/tables.md holds every schema's generated column table verbatim, so a column cannot
    /// be added without being documented. `UPDATE_DOCS=1` rewrites the tables in place.
    #[test]
    fn docs_list_every_column() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/tables.md");
        let text = std::fs::read_to_string(&path).expect("docs/tables.md");
        let mut missing = Vec::new();
        for schema in super::DOCUMENTED {
            let table = schema.markdown();
            if !text.contains(&table) {
                missing.push(format!("### `{}`\n\n{table}", schema.name));
            }
        }
        assert!(missing.is_empty(), "docs/tables.md is out of date; these tables should appear verbatim:\n{}", missing.join("\n"));
    }
}
