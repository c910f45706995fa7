/*!
The core of the Clock-and-Pizza pipeline: everything the stage binaries do lives here, so that it
can be unit-tested and reused. Each module is named after one part of the domain.

- [`config`]: experiment and run configuration (YAML with `--set` overrides).
- [`data`]: the modular-arithmetic dataset and its train/validation split.
- [`model`]: the paper's transformer, with the released checkpoints' tensor names.
- [`optim`]: AdamW with PyTorch semantics and the warm-up schedule.
- [`train`]: one training run, checkpoints and the per-step metrics table.
- [`run`]: a run directory, the identity its table rows carry, and the per-checkpoint stage loop.
- [`ckpt`]: safetensors checkpoints (weights, metadata, optimizer state).
- [`metrics`]: Pizza/Clock metrics (gradient symmetry, distance irrelevance, circularity, Fourier).
- [`sampler`], [`llc`]: SGLD and the Local Learning Coefficient with its diagnostics.
- [`tables`]: all parquet I/O, one schema per table.
- [`stats`]: two-sample statistics for the report (Mann–Whitney, Spearman, seeded bootstrap intervals).
- [`fsio`]: atomic writes (temporary name, fsync, rename). [`hash`]: FNV-1a fingerprints.
- [`interrupt`], [`lock`]: stopping cleanly on Ctrl-C and SIGTERM; advisory locks on what a stage writes.
*/

pub mod bench;
pub mod ckpt;
pub mod cli;
pub mod config;
pub mod data;
pub mod fsio;
pub mod hash;
pub mod interrupt;
pub mod llc;
pub mod lock;
pub mod metrics;
pub mod model;
pub mod optim;
pub mod plan;
pub mod plot;
pub mod report;
pub mod rng;
pub mod run;
pub mod sampler;
pub mod stats;
pub mod tables;
pub mod train;
#[cfg(test)]
pub(crate) mod testing;
