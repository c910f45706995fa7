/*!
Experiment configuration: the YAML files under `pipelines/`, with nanoGPT-style overrides.

A file is read as a YAML tree; `per_p` overrides for the chosen `p` are merged in; `--set a.b=v`
overrides are applied last; only then is the tree deserialized, so an unknown key or a value of the
wrong type is an error that names the key (with the nearest valid key as a hint). A config that
deserializes is then [`Config::validate`]d for values that are out of range or contradict each
other. `impl Default` of each section is the only source of default values.

Every section is typed, `llc:` included ([`SgldConfig`]), and [`load`] checks everything a later
stage could trip over: the `per_p` blocks of every modulus (not only the one in force) and every
grid point. So `gen-data --plan`, the first step of `make`, refuses a typo anywhere in the file
before any training starts.

The sections' types live with the code that uses them ([`DataConfig`] in `data`,
[`ModelSettings`] in `model`, [`SgldConfig`] in `llc`); this module composes them.

The YAML crate is `serde_yaml_ng`, the maintained drop-in successor of the archived `serde_yaml`
(RUSTSEC-2024-0320); it is used only in this module.
*/

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_yaml_ng::Value;

use crate::data::DataConfig;
use crate::llc::SgldConfig;
use crate::model::{ModelConfig, ModelSettings};

/// The whole experiment: shared settings plus the grid of runs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Experiment name; outputs go under `data/<name>-p<p>/`.
    pub name: String,
    /// The dataset.
    pub data: DataConfig,
    /// The model.
    pub model: ModelSettings,
    /// Training.
    pub train: TrainConfig,
    /// Pizza/Clock analysis.
    pub analysis: AnalysisConfig,
    /// LLC estimation (the `llc` stage): the SGLD settings.
    pub llc: SgldConfig,
    /// Grid of runs: dotted key → list of values; every combination is one run.
    pub grid: BTreeMap<String, Vec<Value>>,
    /// Overrides applied when `data.p` has the given value (merged before `--set`).
    #[serde(deserialize_with = "per_p_keys")]
    pub per_p: BTreeMap<u64, Value>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            name: "default".into(),
            data: DataConfig::default(),
            model: ModelSettings::default(),
            train: TrainConfig::default(),
            analysis: AnalysisConfig::default(),
            llc: SgldConfig::default(),
            grid: BTreeMap::new(),
            per_p: BTreeMap::new(),
        }
    }
}

/// One segment of the checkpoint schedule: a checkpoint every `every` steps up to `until`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSegment {
    /// Last step covered by this segment (inclusive); absent means "to the end".
    #[serde(default)]
    pub until: Option<u64>,
    /// Spacing of checkpoints within the segment.
    pub every: u64,
}

/// When to write checkpoints: dense early and around the transition, sparse later.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CheckpointSchedule {
    /// Number of log-spaced steps between 1 and the last step (rounded, deduplicated).
    pub log_points: usize,
    /// Linear segments, applied in order.
    pub segments: Vec<ScheduleSegment>,
}

impl Default for CheckpointSchedule {
    fn default() -> Self {
        CheckpointSchedule {
            log_points: 20,
            segments: vec![
                ScheduleSegment { until: Some(1500), every: 50 },
                ScheduleSegment { until: Some(5000), every: 250 },
                ScheduleSegment { until: None, every: 1000 },
            ],
        }
    }
}

impl CheckpointSchedule {
    /// The sorted checkpoint steps for a run of `steps` optimizer steps; always holds 0 and `steps`.
    pub fn steps(&self, steps: u64) -> Vec<u64> {
        let mut out = std::collections::BTreeSet::from([0, steps]);
        if steps > 1 && self.log_points > 0 {
            let top = (steps as f64).ln();
            for i in 0..self.log_points {
                let x = top * i as f64 / (self.log_points.max(2) - 1) as f64;
                out.insert((x.exp().round() as u64).min(steps));
            }
        }
        let mut start = 0u64;
        for seg in &self.segments {
            let end = seg.until.unwrap_or(steps).min(steps);
            let mut s = start.div_ceil(seg.every.max(1)) * seg.every.max(1);
            while s <= end {
                out.insert(s);
                s += seg.every.max(1);
            }
            start = end;
        }
        out.into_iter().collect()
    }
}

/// Training hyper-parameters (the paper's values are the defaults).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Optimizer steps (the paper: 20,000).
    pub steps: u64,
    /// Peak learning rate.
    pub lr: f64,
    /// Decoupled weight decay (the journal: it must be 2, not 1e-2).
    pub weight_decay: f64,
    /// Adam betas.
    pub betas: [f64; 2],
    /// Adam epsilon.
    pub eps: f64,
    /// Linear warm-up length: `lr_t = lr·min(t/warmup_steps, 1)`.
    pub warmup_steps: u64,
    /// Minibatch size; absent means full batch (the paper).
    pub batch_size: Option<usize>,
    /// Seed of the initialisation (and of the minibatch order).
    pub seed: u64,
    /// Compute validation loss every this many steps (1 = every step).
    pub eval_every: u64,
    /// Checkpoint schedule.
    pub checkpoints: CheckpointSchedule,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            steps: 20_000,
            lr: 1e-3,
            weight_decay: 2.0,
            betas: [0.9, 0.98],
            eps: 1e-8,
            warmup_steps: 10,
            batch_size: None,
            seed: 0,
            eval_every: 1,
            checkpoints: CheckpointSchedule::default(),
        }
    }
}

/// Settings of the analysis stages.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AnalysisConfig {
    /// Use all `p³` triples for gradient symmetry when `p³` is at most this; else sample.
    pub max_exact_triples: u64,
    /// Number of sampled triples when not exact.
    pub sample_triples: usize,
    /// Seed of the triple sample.
    pub seed: u64,
}

impl Default for AnalysisConfig {
    fn default() -> Self {
        AnalysisConfig { max_exact_triples: 2_000_000, sample_triples: 100_000, seed: 0 }
    }
}

impl Config {
    /// Checks ranges and consistency that types alone cannot express.
    pub fn validate(&self) -> Result<()> {
        let d = &self.data;
        if d.p < 2 {
            bail!("data.p must be an integer ≥ 2, got {}", d.p);
        }
        if d.p > 1 << 16 {
            bail!("data.p = {} is too large: the dataset would have p² = {} rows (limit p ≤ 65536; memory runs out long before)", d.p, d.p * d.p);
        }
        if !(d.train_frac > 0.0 && d.train_frac <= 1.0) {
            bail!("data.train_frac must be in (0, 1], got {}", d.train_frac);
        }
        if ((d.p * d.p) as f64 * d.train_frac).round() < 1.0 {
            bail!("data.train_frac = {} leaves no training rows for p = {}", d.train_frac, d.p);
        }
        if d.eq_token && d.separate_vocab {
            bail!("data.eq_token and data.separate_vocab cannot both be set (the paper has no such model)");
        }
        let m = &self.model;
        if m.d_model == 0 || m.n_heads == 0 || m.n_layers == 0 {
            bail!("model.d_model, model.n_heads and model.n_layers must be positive");
        }
        if m.d_model > 1 << 14 || m.d_mlp.unwrap_or(0) > 1 << 16 || m.n_layers > 64 {
            bail!("model sizes are out of range (d_model ≤ 16384, d_mlp ≤ 65536, n_layers ≤ 64)");
        }
        if m.n_heads > m.d_model {
            bail!("model.n_heads = {} exceeds model.d_model = {} (d_head would be 0)", m.n_heads, m.d_model);
        }
        if m.d_mlp == Some(0) {
            bail!("model.d_mlp must be positive");
        }
        if !(0.0..=1.0).contains(&m.alpha) {
            bail!("model.alpha must be in [0, 1], got {}", m.alpha);
        }
        let t = &self.train;
        if !(t.lr > 0.0 && t.lr.is_finite()) {
            bail!("train.lr must be positive, got {}", t.lr);
        }
        if !(t.weight_decay >= 0.0 && t.weight_decay.is_finite()) {
            bail!("train.weight_decay must be ≥ 0, got {}", t.weight_decay);
        }
        if t.betas.iter().any(|b| !(0.0..1.0).contains(b)) {
            bail!("train.betas must be in [0, 1), got {:?}", t.betas);
        }
        if !(t.eps > 0.0) {
            bail!("train.eps must be positive, got {}", t.eps);
        }
        if t.batch_size == Some(0) {
            bail!("train.batch_size must be positive (or absent for full batch)");
        }
        if t.eval_every == 0 {
            bail!("train.eval_every must be ≥ 1");
        }
        if t.checkpoints.segments.iter().any(|s| s.every == 0) {
            bail!("train.checkpoints.segments[].every must be ≥ 1");
        }
        if t.steps > 10_000_000 {
            bail!("train.steps = {} is unreasonably large (limit 10,000,000)", t.steps);
        }
        self.llc.validate().context("in section llc")?;
        self.llc.validate_steps(&t.checkpoints.steps(t.steps)).context("in section llc")?;
        for (key, values) in &self.grid {
            if values.is_empty() {
                bail!("grid.{key} has no values");
            }
        }
        Ok(())
    }

    /// Model hyper-parameters resolved against the data's token layout (vocabulary, context).
    pub fn model_config(&self) -> ModelConfig {
        ModelConfig::from_settings(&self.data, &self.model)
    }

    /// The runs of the grid, each a config with its grid point applied and `grid` emptied.
    pub fn runs(&self) -> Result<Vec<Run>> {
        let mut points: Vec<Vec<(String, Value)>> = vec![vec![]];
        for (key, values) in &self.grid {
            points = points
                .into_iter()
                .flat_map(|pt| {
                    values.iter().map(move |v| {
                        let mut pt = pt.clone();
                        pt.push((key.clone(), v.clone()));
                        pt
                    })
                })
                .collect();
        }
        let base = serde_yaml_ng::to_value(self).context("serializing config")?;
        let mut runs = Vec::with_capacity(points.len());
        for pt in points {
            let mut tree = base.clone();
            let mut id = Vec::new();
            for (key, v) in &pt {
                set_path(&mut tree, key, v.clone()).with_context(|| format!("grid key `{key}`"))?;
                let short = key.rsplit('.').next().unwrap_or(key);
                id.push(format!("{short}{}", scalar_text(v)));
            }
            if let Value::Mapping(m) = &mut tree {
                m.insert("grid".into(), Value::Mapping(Default::default()));
            }
            let config: Config = from_tree(tree).with_context(|| format!("grid point {pt:?}"))?;
            config.validate().with_context(|| format!("grid point {pt:?}"))?;
            let id = if id.is_empty() { "run".to_string() } else { id.join("_") };
            runs.push(Run { id, config });
        }
        Ok(runs)
    }

    /// The run with this id (see [`Config::runs`]); with no id, the only run.
    pub fn run(&self, id: Option<&str>) -> Result<Run> {
        let runs = self.runs()?;
        match id {
            Some(id) => {
                let names: Vec<_> = runs.iter().map(|r| r.id.clone()).collect();
                runs.into_iter().find(|r| r.id == id).with_context(|| {
                    format!("no run `{id}` in the grid; runs are: {}", names.join(", "))
                })
            }
            None if runs.len() == 1 => Ok(runs.into_iter().next().expect("one run")),
            None => bail!(
                "the grid has {} runs; pick one with --run (one of: {})",
                runs.len(),
                runs.iter().map(|r| r.id.as_str()).collect::<Vec<_>>().join(", ")
            ),
        }
    }

    /// The resolved config as YAML (written next to every output).
    pub fn to_yaml(&self) -> Result<String> {
        serde_yaml_ng::to_string(self).context("serializing config to YAML")
    }

    /// The resolved config as JSON (stored in checkpoint and parquet metadata).
    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string(self).context("serializing config to JSON")
    }

    /// The sections training reads (`data`, `model`, `train`): the Makefile's `train-<run>.json`
    /// fragment, and what a run directory's checkpoints must agree on to be resumed or counted as
    /// finished, so that editing `llc:` or `analysis:` neither reruns nor refuses training.
    pub fn training_part(&self) -> serde_json::Value {
        serde_json::json!({"data": self.data, "model": self.model, "train": self.train})
    }

    /// A short, stable hash of the resolved config (FNV-1a over its JSON).
    pub fn hash(&self) -> Result<String> {
        Ok(crate::hash::hex(self.to_json()?.as_bytes()))
    }

    /// Parses a config from JSON (as stored in checkpoint metadata).
    pub fn from_json(text: &str) -> Result<Config> {
        let tree: Value = serde_json::from_str(text).context("parsing config JSON")?;
        from_tree(tree)
    }
}

/// One point of the grid.
#[derive(Debug, Clone)]
pub struct Run {
    /// Identifier, e.g. `alpha0_seed1`: the grid keys' last segments and values.
    pub id: String,
    /// The resolved config of this run.
    pub config: Config,
}

/// Loads a YAML experiment file with `--set key=value` overrides (see the module docs).
pub fn load(path: &Path, sets: &[String]) -> Result<Config> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading config {}", path.display()))?;
    load_str(&text, sets).with_context(|| format!("in config {}", path.display()))
}

/// [`load`] on a string (for tests and embedded defaults).
pub fn load_str(text: &str, sets: &[String]) -> Result<Config> {
    let mut tree: Value = serde_yaml_ng::from_str(text).context("malformed YAML")?;
    if tree.is_null() {
        tree = Value::Mapping(Default::default());
    }
    if !tree.is_mapping() {
        bail!("the top level must be a mapping of sections (data, model, train, …)");
    }
    let overrides = parse_sets(sets)?;
    for (k, v) in &overrides {
        set_path(&mut tree, k, v.clone()).with_context(|| format!("--set {k}"))?;
    }
    let p = tree.get("data").and_then(|d| d.get("p")).and_then(Value::as_u64).unwrap_or(DataConfig::default().p);
    let config = resolve(tree.clone(), p, &overrides)?;
    // The other moduli's per_p blocks, each as if its p were chosen (`--set data.p` aside), so
    // that a mistake in `per_p.113` is found now and not when someone first runs with P=113.
    let others: Vec<(String, Value)> = overrides.iter().filter(|(k, _)| k != "data.p").cloned().collect();
    for &q in config.per_p.keys().filter(|&&q| q != p) {
        let mut t = tree.clone();
        set_path(&mut t, "data.p", Value::Number(q.into()))?;
        resolve(t, q, &others).with_context(|| format!("per_p.{q} (checked as if data.p = {q})"))?;
    }
    // Every grid point (each stage expands the grid again; this finds a bad point before any).
    let runs = config.runs()?;
    config.llc.validate_trajectory(runs.iter().map(|r| r.id.as_str())).context("in section llc")?;
    Ok(config)
}

/// The config for modulus `p`: the tree with its `per_p` block for `p` merged in, then the
/// overrides again (so they win), deserialized and validated.
fn resolve(mut tree: Value, p: u64, overrides: &[(String, Value)]) -> Result<Config> {
    if let Some(over) = per_p_block(&tree, p) {
        let Value::Mapping(map) = over else { bail!("per_p.{p} must be a mapping of dotted keys") };
        for (k, v) in map {
            let k = k.as_str().with_context(|| format!("per_p.{p}: keys must be strings"))?.to_string();
            set_path(&mut tree, &k, v).with_context(|| format!("per_p.{p}.{k}"))?;
        }
        for (k, v) in overrides {
            set_path(&mut tree, k, v.clone())?;
        }
    }
    let config: Config = from_tree(tree)?;
    config.validate()?;
    Ok(config)
}

/// The `per_p` block of modulus `p`, keyed by the number or (as in JSON) by its text.
fn per_p_block(tree: &Value, p: u64) -> Option<Value> {
    let Some(Value::Mapping(blocks)) = tree.get("per_p") else { return None };
    blocks.iter().find(|(k, _)| per_p_key(k) == Some(p)).map(|(_, v)| v.clone())
}

/// A `per_p` key as a modulus: an integer in YAML, a string in JSON (checkpoint metadata).
fn per_p_key(k: &Value) -> Option<u64> {
    match k {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// `per_p` keys are integers in YAML but strings in JSON (checkpoint metadata): accept both.
fn per_p_keys<'de, D: serde::Deserializer<'de>>(de: D) -> std::result::Result<BTreeMap<u64, Value>, D::Error> {
    use serde::de::Error;
    let raw = serde_yaml_ng::Mapping::deserialize(de)?;
    raw.into_iter()
        .map(|(k, v)| per_p_key(&k).map(|p| (p, v)).ok_or_else(|| D::Error::custom(format!("per_p keys must be moduli (integers), got {k:?}"))))
        .collect()
}

/// Applies `--set <section>.key=value` overrides to one section's settings by the same path as
/// [`load`] (YAML values; an unknown key refused with the nearest valid key), for a command that
/// starts from settings of its own rather than from an experiment file (`llc validate`).
pub fn override_section<T: Serialize + DeserializeOwned>(base: &T, section: &str, sets: &[String]) -> Result<T> {
    let mut tree = Value::Mapping(Default::default());
    set_path(&mut tree, section, serde_yaml_ng::to_value(base).context("serializing the settings")?)?;
    for (k, v) in parse_sets(sets)? {
        if k.split('.').next() != Some(section) || k == section {
            bail!("--set {k}: only {section}.* settings can be set here");
        }
        set_path(&mut tree, &k, v).with_context(|| format!("--set {k}"))?;
    }
    let sub = tree.get(section).cloned().unwrap_or(Value::Null);
    from_tree(sub).map_err(|e| anyhow::anyhow!("{section}: {e}"))
}

/// Deserializes a tree, turning serde's "unknown field" into a hint with the nearest valid key.
fn from_tree<T: DeserializeOwned>(tree: Value) -> Result<T> {
    // Through text, because only the string deserializer reports the dotted path of a bad value
    // (`train.lr: invalid type …`); its line numbers refer to the merged tree, so they are dropped.
    let text = serde_yaml_ng::to_string(&tree).context("re-serializing the merged config")?;
    serde_yaml_ng::from_str::<T>(&text).map_err(|e| {
        let msg = e.to_string();
        let msg = match msg.rfind(" at line ") {
            Some(i) => msg[..i].to_string(),
            None => msg,
        };
        match unknown_field_hint(&msg) {
            Some(hint) => anyhow::anyhow!("{msg} ({hint})"),
            None => anyhow::anyhow!("{msg}"),
        }
    })
}

fn parse_sets(sets: &[String]) -> Result<Vec<(String, Value)>> {
    sets.iter()
        .map(|s| {
            let (k, v) = s.split_once('=').with_context(|| format!("--set `{s}`: expected key=value"))?;
            let k = k.trim();
            if k.is_empty() || k.split('.').any(str::is_empty) {
                bail!("--set `{s}`: the key must be a dotted path like train.lr");
            }
            let v: Value = serde_yaml_ng::from_str(v).with_context(|| format!("--set `{s}`: bad value"))?;
            Ok((k.to_string(), v))
        })
        .collect()
}

/// Sets a dotted path in a YAML tree, creating mappings on the way.
fn set_path(tree: &mut Value, path: &str, value: Value) -> Result<()> {
    let mut node = tree;
    let parts: Vec<&str> = path.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        if node.is_null() {
            *node = Value::Mapping(Default::default());
        }
        let Value::Mapping(map) = node else {
            bail!("`{}` is not a section, cannot set `{path}`", parts[..i].join("."));
        };
        let key = Value::String((*part).to_string());
        if i + 1 == parts.len() {
            map.insert(key, value);
            return Ok(());
        }
        node = map.entry(key).or_insert(Value::Null);
    }
    Ok(())
}

fn scalar_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        // 0.0 and 0 name the same run: `alpha0`, not `alpha0.0`.
        Value::Number(n) => match n.as_f64() {
            Some(x) if x.fract() == 0.0 && x.abs() < 1e15 => format!("{}", x as i64),
            _ => n.to_string(),
        },
        Value::Bool(b) => b.to_string(),
        other => serde_yaml_ng::to_string(other).unwrap_or_default().trim().replace(['\n', ' '], ""),
    }
}

/// From serde's "unknown field `x`, expected one of `a`, `b`" builds "did you mean `a`?" (or, for
/// `a:1`, the missing space).
pub fn unknown_field_hint(msg: &str) -> Option<String> {
    let rest = msg.split("unknown field `").nth(1)?;
    let (field, rest) = rest.split_once('`')?;
    let candidates: Vec<&str> = rest.split('`').skip(1).step_by(2).collect();
    // `{per_nbeta:4.4e-3}` is one key with no value in YAML, the commonest slip on a `--set` line.
    if let Some((key, value)) = field.split_once(':') {
        if candidates.contains(&key.trim()) {
            return Some(format!("YAML needs a space after the colon: `{{{}: {}}}`", key.trim(), value.trim()));
        }
    }
    let best = candidates.iter().min_by_key(|c| edit_distance(field, c))?;
    (edit_distance(field, best) <= field.len().max(2) / 2 + 1).then(|| format!("did you mean `{best}`?"))
}

/// Levenshtein distance, for key hints.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests;
