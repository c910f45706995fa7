/*!
The core of the Clock-and-Pizza pipeline: everything the stage binaries do lives here, so that it
can be unit-tested and reused. Each module is named after one part of the domain.

- [`config`]: experiment and run configuration (YAML with `--set` overrides).
- [`data`]: the modular-arithmetic dataset and its train/validation split.
- [`model`]: the paper's transformer, with the released checkpoints' tensor names.
- [`optim`]: AdamW with PyTorch semantics and the warm-up schedule.
- [`train`]: one training run, checkpoints and the per-step metrics table.
- [`ckpt`]: safetensors checkpoints (weights, metadata, optimizer state).
- [`metrics`]: Pizza/Clock metrics (gradient symmetry, distance irrelevance, circularity, Fourier).
- [`sampler`], [`llc`]: SGLD and the Local Learning Coefficient with its diagnostics.
- [`tables`]: all parquet I/O, one schema per table.
- [`fsio`]: atomic writes (temporary name, fsync, rename).
- [`interrupt`], [`lock`]: stopping cleanly on Ctrl-C and SIGTERM; advisory locks on what a stage writes.
*/

pub mod bench;
pub mod ckpt;
pub mod cli;
pub mod config;
pub mod data;
pub mod fsio;
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
pub mod sampler;
pub mod tables;
pub mod train;
#[cfg(test)]
pub(crate) mod testing;
