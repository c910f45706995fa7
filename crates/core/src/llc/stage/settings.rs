//! Where each checkpoint's SGLD settings come from, and the hash that keys resumed rows.

use std::collections::BTreeMap;

use anyhow::{Context, Result};

use crate::ckpt::Checkpoint;
use crate::config::Config;
use crate::llc::SgldConfig;

/// Where each checkpoint's settings come from (see the module docs).
#[derive(Debug, Clone)]
pub enum SettingsSource {
    /// The same settings for every checkpoint.
    Fixed(SgldConfig),
    /// The grid varies `llc.*` keys: the settings of the grid run with the checkpoint's run id.
    PerRun(BTreeMap<String, SgldConfig>),
}

impl SettingsSource {
    /// From an experiment config: with `run`, that grid run's `llc:` section; else the file's,
    /// unless the grid varies `llc.*` keys.
    pub fn from_config(cfg: &Config, run: Option<&str>) -> Result<SettingsSource> {
        if let Some(id) = run {
            let r = cfg.run(Some(id))?;
            return Ok(SettingsSource::Fixed(r.config.llc));
        }
        if cfg.grid.keys().any(|k| k.starts_with("llc.")) {
            let by_run = cfg.runs()?.into_iter().map(|r| (r.id, r.config.llc)).collect();
            return Ok(SettingsSource::PerRun(by_run));
        }
        Ok(SettingsSource::Fixed(cfg.llc.clone()))
    }

    /// One set of settings (`llc calibrate`): with `run`, that grid run's `llc:` section; else the
    /// file's.
    pub fn one(cfg: &Config, run: Option<&str>) -> Result<SgldConfig> {
        Ok(match run {
            Some(id) => cfg.run(Some(id))?.config.llc,
            None => cfg.llc.clone(),
        })
    }

    /// The settings for one checkpoint.
    pub fn for_checkpoint(&self, ckpt: &Checkpoint) -> Result<SgldConfig> {
        match self {
            SettingsSource::Fixed(s) => Ok(s.clone()),
            SettingsSource::PerRun(by_run) => {
                let id = ckpt.run_label();
                by_run.get(&id).cloned().with_context(|| {
                    format!(
                        "{}: the grid varies llc.* settings, but this checkpoint's run `{id}` is not one of the grid's runs ({}); pass --run to choose",
                        ckpt.path.display(),
                        by_run.keys().cloned().collect::<Vec<_>>().join(", ")
                    )
                })
            }
        }
    }
}

/// The settings that determine an estimate's numbers ([`SgldConfig::sampling`]: no thread
/// count, no `restrict`, `steps` or `trajectory`), as JSON.
pub fn settings_json(s: &SgldConfig) -> Result<String> {
    Ok(serde_json::to_string(&s.sampling())?)
}

/// FNV-1a of [`settings_json`], as 16 hex digits.
pub fn settings_hash(s: &SgldConfig) -> Result<String> {
    Ok(crate::hash::hex(settings_json(s)?.as_bytes()))
}
