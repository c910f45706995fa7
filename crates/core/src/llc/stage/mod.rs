/*!
The `llc estimate` and `llc calibrate` stages: transformer checkpoints in, tables out
(`tables::llc`); see `docs/llc.md` for the method, the settings and what the columns mean.

- `settings`: where each checkpoint's [`SgldConfig`] comes from ([`SettingsSource`]), and its
  resume hash ([`settings_hash`]).
- `select`: which checkpoints of the inputs are estimated, for which groups ([`Selection`],
  [`Job`]; `llc.steps`, `llc.first_group_steps`, `llc.trajectory` and the `--every`/`--steps` flags).
- `estimate`: the estimate stage with its resume ([`estimate_stage`], [`run_estimate`]).
- `reference`: `llc reference`, each checkpoint's estimate against long chains
  ([`reference_stage`], [`reference_settings`], [`agrees`]).
- `calibrate`: the calibration stage ([`calibrate_stage`]), its outcome printed as a table
  ([`CalibrationOutcome`]).

**Settings.** The SGLD settings are the experiment file's `llc:` section (`Config::llc`, an
[`SgldConfig`], checked when the file is loaded), with `--set llc.x=v` overrides through the
normal config path; the data (dataset, split, hence the rows and `n`) come
from each checkpoint's own `pizza_config` ([`super::transformer::TrainingRows`]). When the grid
varies `llc.*` keys, each checkpoint takes the settings of the grid run with its run id
([`SettingsSource`]).

**What is estimated.** One estimate per checkpoint and group of `llc.restrict`
([`crate::llc::restrict`]); which checkpoints, and which of them get only the first group, is
[`Selection::plan`]'s (the file's `llc.steps`, `llc.first_group_steps` and `llc.trajectory`, or the `--every`/`--steps`
flags). Each row carries its group in the `restriction` column.

**Resume.** After each estimate the rows so far are rewritten (atomically) to
`<stem>.partial.parquet` and `<stem>_trace.partial.parquet` beside the output. A rerun reuses a
row of those partial files, or of the output itself (a finished call's: adding a group to
`llc.restrict` or a step to `llc.steps` estimates only what is new), when its checkpoint path, `restriction`, `settings_hash` (the sampling settings:
threads, `restrict`, `steps`, `first_group_steps` and `trajectory` excluded) and `checkpoint_hash` (the file's bytes)
all match, so an interrupted stage redoes only unfinished estimates; the final tables are written only at the end (trace first, then the summary that
`make` waits for) and the partial files are removed. Because every estimate is a deterministic
function of its checkpoint and settings, the final bytes equal those of an uninterrupted run.
*/

mod calibrate;
mod estimate;
mod reference;
mod select;
mod settings;
#[cfg(test)]
mod tests;

pub use calibrate::{calibrate_stage, cell_settings, parse_batch_size, CalibrateOptions, CalibrationCell, CalibrationOutcome, SeriesRecommendation};
pub use estimate::{estimate_checkpoint, estimate_raw, estimate_restricted, estimate_stage, run_estimate, EstimateOptions, EstimateOutcome, EstimatePaths};
pub use reference::{agrees, reference_settings, reference_stage, ReferenceOutcome, REFERENCE_CHAINS, REFERENCE_DRAWS_FACTOR, REFERENCE_RELAXATIONS, REFERENCE_SE, REFERENCE_TOLERANCE};
pub use select::{check_steps, CheckpointStep, Job, Selection};
pub use settings::{settings_hash, settings_json, SettingsSource};

#[cfg(doc)]
use super::SgldConfig;
