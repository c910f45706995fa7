//! What the estimate stage computes: which checkpoints of the inputs, and for which groups of
//! `llc.restrict` each. One mechanism for the experiment file (`llc.steps`, `llc.trajectory`) and
//! the command line (`--every`, `--steps`), the flags overriding the file.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use anyhow::{bail, Context, Result};
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::settings::SettingsSource;
use crate::ckpt::{self, Checkpoint};
use crate::llc::restrict::{glob_match, Restriction};
use crate::llc::SgldConfig;

/// A checkpoint step as `llc.steps` and `--steps` name it: a step number, or `last` (the run's
/// last checkpoint, `train.steps` once training has finished).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum CheckpointStep {
    /// The checkpoint after this many optimizer steps.
    At(u64),
    /// The run's last checkpoint.
    Last,
}

impl fmt::Display for CheckpointStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckpointStep::At(s) => write!(f, "{s}"),
            CheckpointStep::Last => f.write_str("last"),
        }
    }
}

impl FromStr for CheckpointStep {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "last" => Ok(CheckpointStep::Last),
            t => t.parse().map(CheckpointStep::At).map_err(|_| format!("a checkpoint step is a step number or `last`, got `{t}`")),
        }
    }
}

impl Serialize for CheckpointStep {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            CheckpointStep::At(step) => s.serialize_u64(*step),
            CheckpointStep::Last => s.serialize_str("last"),
        }
    }
}

impl<'de> Deserialize<'de> for CheckpointStep {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = CheckpointStep;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a checkpoint step (a number) or `last`")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<CheckpointStep, E> {
                Ok(CheckpointStep::At(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<CheckpointStep, E> {
                u64::try_from(v).map(CheckpointStep::At).map_err(|_| E::custom(format!("a step cannot be negative, got {v}")))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<CheckpointStep, E> {
                s.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// Checks `llc.steps` against the run's checkpoint schedule (`schedule`, sorted, from
/// `train.checkpoints.steps(train.steps)`): every step a checkpoint of the schedule or `last`.
/// The error names the step and the scheduled steps nearest to it.
pub fn check_steps(key: &str, steps: &[CheckpointStep], schedule: &[u64]) -> Result<(), String> {
    for s in steps {
        let CheckpointStep::At(step) = *s else { continue };
        if schedule.binary_search(&step).is_ok() {
            continue;
        }
        let above = schedule.partition_point(|&x| x < step);
        let near: Vec<String> = schedule[above.saturating_sub(2)..(above + 2).min(schedule.len())].iter().map(u64::to_string).collect();
        return Err(format!(
            "{key}: step {step} is not a checkpoint of the schedule (train.checkpoints with train.steps = {}); the nearest scheduled steps are {}",
            schedule.last().copied().unwrap_or(0),
            near.join(", ")
        ));
    }
    Ok(())
}

/// Which checkpoints of the inputs `llc estimate` runs on: its flags, declared here so that a new
/// way to choose them is one edit. Either flag replaces the experiment file's `llc.steps` and
/// `llc.trajectory` (see [`Selection::plan`]).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Selection {
    /// Only every N-th checkpoint of each run directory (positions 0, N, 2N, …, and the last);
    /// overrides llc.steps and llc.trajectory.
    #[arg(long, value_name = "N")]
    pub every: Option<usize>,
    /// Only the checkpoints at these steps, e.g. `--steps 0,500,last` (run directories only);
    /// overrides llc.steps and llc.trajectory.
    #[arg(long, value_delimiter = ',', value_name = "STEP,..")]
    pub steps: Option<Vec<CheckpointStep>>,
}

/// One checkpoint to estimate, and the groups of `llc.restrict` to estimate it for (in the
/// settings' order).
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// The checkpoint file.
    pub path: PathBuf,
    /// The groups.
    pub groups: Vec<Restriction>,
}

impl Selection {
    /// Whether a flag was given (it then replaces the file's selection).
    fn given(&self) -> bool {
        self.every.is_some() || self.steps.is_some()
    }

    /// The estimates to compute for `inputs`, in input order and, within a run directory, in
    /// step order.
    ///
    /// A checkpoint file is estimated as given, for every group. In a run directory, with a
    /// flag: the checkpoints it selects (a `--steps` step the directory lacks is a warning), for
    /// every group. Without one, by the run's settings: `llc.steps` absent, every checkpoint for
    /// every group; present, those checkpoints for every group (a listed step the directory
    /// lacks is an error: the run is unfinished or was trained with another schedule), and, when
    /// the run id matches a glob of `llc.trajectory`, every other checkpoint for the first group.
    ///
    /// Each run directory's first checkpoint and each file is loaded here, so a group that
    /// matches none of a model's tensors fails before any sampling starts.
    pub fn plan(&self, inputs: &[PathBuf], settings: &SettingsSource) -> Result<Vec<Job>> {
        if self.every == Some(0) {
            bail!("--every must be at least 1");
        }
        let mut jobs = Vec::new();
        for input in inputs {
            if !input.is_dir() {
                for path in ckpt::expand_inputs(std::slice::from_ref(input))? {
                    let c = ckpt::load(&path)?;
                    let groups = checked_groups(&c, &settings.for_checkpoint(&c)?)?;
                    jobs.push(Job { path, groups });
                }
                continue;
            }
            let found = ckpt::list_run(input)?;
            let Some((_, first_path)) = found.first() else {
                bail!("{}: no checkpoints (expected files named step_NNNNNNN.safetensors)", input.display());
            };
            let first = ckpt::load(first_path)?;
            let s = settings.for_checkpoint(&first)?;
            let groups = checked_groups(&first, &s)?;
            let last = found.len() - 1;
            let all = |path: &PathBuf| Job { path: path.clone(), groups: groups.clone() };
            if self.given() {
                let wanted = |i: usize, step: u64| {
                    self.every.is_none_or(|n| i % n == 0 || i == last)
                        && self.steps.as_ref().is_none_or(|s| s.iter().any(|w| resolve(*w, &found) == Some(step)))
                };
                if let Some(steps) = &self.steps {
                    let missing: Vec<String> = steps.iter().filter(|s| resolve(**s, &found).is_none()).map(|s| s.to_string()).collect();
                    if !missing.is_empty() {
                        tracing::warn!("{}: no checkpoint at step(s) {}", input.display(), missing.join(", "));
                    }
                }
                jobs.extend(found.iter().enumerate().filter(|(i, (s, _))| wanted(*i, *s)).map(|(_, (_, p))| all(p)));
                continue;
            }
            let Some(steps) = &s.steps else {
                jobs.extend(found.iter().map(|(_, p)| all(p)));
                continue;
            };
            let resolved = |key: &str, list: &[CheckpointStep]| -> Result<Vec<u64>> {
                list.iter()
                    .map(|&w| {
                        resolve(w, &found).with_context(|| {
                            format!(
                                "{}: {key} lists step {w}, but the run has no checkpoint there (its last is step {}): is its training finished, with this schedule?",
                                input.display(),
                                found[last].0
                            )
                        })
                    })
                    .collect()
            };
            let chosen = resolved("llc.steps", steps)?;
            let first_group = resolved("llc.first_group_steps", &s.first_group_steps)?;
            let run = first.run_label();
            let trajectory = s.trajectory.iter().any(|g| glob_match(g, &run));
            for (step, path) in &found {
                if chosen.contains(step) {
                    jobs.push(all(path));
                } else if trajectory || first_group.contains(step) {
                    jobs.push(Job { path: path.clone(), groups: groups[..1].to_vec() });
                }
            }
        }
        if jobs.is_empty() {
            bail!("no checkpoint selected (check --steps and --every against the run directories)");
        }
        Ok(jobs)
    }
}

/// The step of `w` among a run directory's checkpoints, if it has one there.
fn resolve(w: CheckpointStep, found: &[(u64, PathBuf)]) -> Option<u64> {
    match w {
        CheckpointStep::At(s) => found.iter().any(|(f, _)| *f == s).then_some(s),
        CheckpointStep::Last => found.last().map(|(s, _)| *s),
    }
}

/// The groups of `settings` (the checkpoint's), each checked against `ckpt`'s tensors.
fn checked_groups(ckpt: &Checkpoint, settings: &SgldConfig) -> Result<Vec<Restriction>> {
    for g in &settings.restrict {
        g.select(ckpt.params.iter().map(|(n, _)| n.as_str())).map_err(|e| anyhow::anyhow!("{}: {e}", ckpt.path.display()))?;
    }
    Ok(settings.restrict.clone())
}
