//! Which checkpoints of the inputs the estimate stage runs on.

use std::path::PathBuf;

use anyhow::{bail, Result};

use crate::ckpt;

/// Which checkpoints of the inputs `llc estimate` runs on: its flags, declared here so that a new
/// way to choose them is one edit.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Selection {
    /// Only every N-th checkpoint of each run directory (positions 0, N, 2N, …, and the last).
    #[arg(long, value_name = "N")]
    pub every: Option<usize>,
    /// Only the checkpoints at these steps, e.g. `--steps 0,500,1500` (run directories only).
    #[arg(long, value_delimiter = ',', value_name = "STEP,..")]
    pub steps: Option<Vec<u64>>,
}

impl Selection {
    /// The selected checkpoints of `inputs` (see [`select_checkpoints`]).
    pub fn checkpoints(&self, inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
        select_checkpoints(inputs, self.every, self.steps.as_deref())
    }
}

/// The checkpoints of the inputs: run directories expanded in step order (with `every`, each
/// directory's checkpoints at positions 0, N, 2N, … plus its last; with `steps`, only those
/// steps), checkpoint files kept as given whatever the filters.
pub fn select_checkpoints(inputs: &[PathBuf], every: Option<usize>, steps: Option<&[u64]>) -> Result<Vec<PathBuf>> {
    if every == Some(0) {
        bail!("--every must be at least 1");
    }
    let mut out = Vec::new();
    for input in inputs {
        if !input.is_dir() {
            out.extend(ckpt::expand_inputs(std::slice::from_ref(input))?);
            continue;
        }
        let found = ckpt::list_run(input)?;
        if found.is_empty() {
            bail!("{}: no checkpoints (expected files named step_NNNNNNN.safetensors)", input.display());
        }
        let last = found.len() - 1;
        let mut kept: Vec<&(u64, PathBuf)> = found
            .iter()
            .enumerate()
            .filter(|(i, _)| every.is_none_or(|n| i % n == 0 || *i == last))
            .map(|(_, c)| c)
            .collect();
        if let Some(steps) = steps {
            kept.retain(|(s, _)| steps.contains(s));
            let missing: Vec<String> = steps.iter().filter(|s| !found.iter().any(|(f, _)| f == *s)).map(u64::to_string).collect();
            if !missing.is_empty() {
                tracing::warn!("{}: no checkpoint at step(s) {}", input.display(), missing.join(", "));
            }
        }
        out.extend(kept.into_iter().map(|(_, p)| p.clone()));
    }
    if out.is_empty() {
        bail!("no checkpoint selected (check --steps and --every against the run directories)");
    }
    Ok(out)
}
