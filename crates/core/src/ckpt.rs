/*!
Checkpoints as safetensors: the weights under the paper's tensor names (so its loader and ours read
the same files), the paper's config JSON under the metadata key `config`, and our provenance
(`pizza_config`, `step`, `run`, `seed`, `config_hash`, `git_sha`, `format`).

Files are written by our own few-line serializer rather than `safetensors::serialize`, because that
one emits the metadata from a `HashMap` in random order, and checkpoints must be byte-identical for
the same config and seed. Reading goes through the `safetensors` crate, which validates the header
and offsets, so a truncated or corrupt file is an error, never a panic or a huge allocation.

Optimizer state lives beside a checkpoint in `<stem>.optim.safetensors` (tensors `m.<name>` and
`v.<name>`), so the checkpoint itself keeps exactly the released files' layout.
*/

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};

use crate::config::Config;
use crate::fsio;
use crate::model::{ModelConfig, Params, Transformer};

/// Value of the `format` metadata key in files we write.
pub const FORMAT: &str = "clock-pizza/1";

/// A loaded checkpoint: its model shape, optional run config and step, and its tensors.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// Where it came from.
    pub path: PathBuf,
    /// The model's shape (from the paper-style `config` metadata).
    pub model: ModelConfig,
    /// Our full config, when the checkpoint was written by `train`.
    pub run: Option<Config>,
    /// Run id, when written by `train`.
    pub run_id: Option<String>,
    /// Optimizer steps taken, when known.
    pub step: Option<u64>,
    /// All metadata.
    pub meta: BTreeMap<String, String>,
    /// The weights.
    pub params: Params,
}

impl Checkpoint {
    /// Builds the model over this checkpoint's weights.
    pub fn transformer(&self) -> Result<Transformer> {
        Transformer::new(self.params.var_builder(), &self.model)
            .with_context(|| format!("building the model from {}", self.path.display()))
    }

    /// A label for tables: the run id, else the file stem (e.g. the released run ids).
    pub fn run_label(&self) -> String {
        self.run_id.clone().unwrap_or_else(|| {
            self.path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
        })
    }
}

/// Writes tensors (all F32) and metadata as a safetensors file, atomically and deterministically:
/// tensors in name order, metadata keys sorted.
pub fn write_safetensors(path: &Path, tensors: &BTreeMap<String, Tensor>, meta: &BTreeMap<String, String>) -> Result<()> {
    let mut header = serde_json::Map::new();
    if !meta.is_empty() {
        header.insert("__metadata__".into(), serde_json::to_value(meta)?);
    }
    let mut blobs = Vec::with_capacity(tensors.len());
    let mut offset = 0usize;
    for (name, t) in tensors {
        let data = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        let bytes: Vec<u8> = data.iter().flat_map(|x| x.to_le_bytes()).collect();
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": "F32", "shape": t.dims(), "data_offsets": [offset, offset + bytes.len()]}),
        );
        offset += bytes.len();
        blobs.push(bytes);
    }
    // serde_json's Map is a BTreeMap here (no `preserve_order`), so keys come out sorted.
    let mut json = serde_json::to_string(&serde_json::Value::Object(header))?.into_bytes();
    while json.len() % 8 != 0 {
        json.push(b' ');
    }
    fsio::write_atomic(path, |w| {
        w.write_all(&(json.len() as u64).to_le_bytes())?;
        w.write_all(&json)?;
        for b in &blobs {
            w.write_all(b)?;
        }
        Ok(())
    })
}

/// Reads every tensor (converted to F32) and the metadata of a safetensors file.
pub fn read_safetensors(path: &Path) -> Result<(BTreeMap<String, Tensor>, BTreeMap<String, String>)> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .with_context(|| format!("{}: not a valid safetensors file (truncated or corrupt?)", path.display()))?;
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
        .with_context(|| format!("{}: unreadable safetensors header", path.display()))?;
    let meta: BTreeMap<String, String> = header.metadata().clone().unwrap_or_default().into_iter().collect();
    let mut tensors = BTreeMap::new();
    for (name, view) in st.tensors() {
        let dtype = match view.dtype() {
            safetensors::Dtype::F32 => DType::F32,
            safetensors::Dtype::F64 => DType::F64,
            safetensors::Dtype::F16 => DType::F16,
            safetensors::Dtype::BF16 => DType::BF16,
            safetensors::Dtype::I64 => DType::I64,
            other => bail!("{}: tensor `{name}` has unsupported dtype {other:?}", path.display()),
        };
        let t = Tensor::from_raw_buffer(view.data(), dtype, view.shape(), &Device::Cpu)
            .with_context(|| format!("{}: tensor `{name}`", path.display()))?;
        tensors.insert(name, t);
    }
    Ok((tensors, meta))
}

/// Saves a model checkpoint (see the module docs for the metadata).
pub fn save(path: &Path, params: &Params, model: &ModelConfig, extra_meta: &BTreeMap<String, String>) -> Result<()> {
    let mut meta = extra_meta.clone();
    meta.insert("config".into(), model.to_paper_json());
    meta.insert("format".into(), FORMAT.into());
    write_safetensors(path, &params.tensors()?, &meta)
}

/// Loads a checkpoint: ours or one of the paper's released files.
pub fn load(path: &Path) -> Result<Checkpoint> {
    let (tensors, meta) = read_safetensors(path)?;
    let config_json = meta
        .get("config")
        .with_context(|| format!("{}: metadata has no `config` (the model's settings as JSON)", path.display()))?;
    let model = ModelConfig::from_paper_json(config_json).with_context(|| format!("{}: metadata `config`", path.display()))?;
    let run = match meta.get("pizza_config") {
        Some(text) => {
            let run = Config::from_json(text).with_context(|| format!("{}: metadata `pizza_config`", path.display()))?;
            if run.model_config() != model {
                bail!(
                    "{}: metadata `pizza_config` describes {:?} but `config` describes {:?}",
                    path.display(), run.model_config(), model
                );
            }
            Some(run)
        }
        None => None,
    };
    let step = match meta.get("step") {
        Some(s) => Some(s.parse::<u64>().with_context(|| format!("{}: metadata `step` = {s:?} is not an integer", path.display()))?),
        None => None,
    };
    let params = Params::from_tensors(&model, tensors, &path.display().to_string())?;
    Ok(Checkpoint { path: path.to_path_buf(), model, run, run_id: meta.get("run").cloned(), step, meta, params })
}

/// File name of the checkpoint at `step` inside a run's `checkpoints/` folder.
pub fn checkpoint_name(step: u64) -> String {
    format!("step_{step:07}.safetensors")
}

/// Optimizer-state file that belongs to a checkpoint file.
pub fn optim_path(ckpt: &Path) -> PathBuf {
    ckpt.with_extension("optim.safetensors")
}

/// The checkpoints of a run directory (or of its `checkpoints/` folder), sorted by step.
pub fn list_run(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let folder = if dir.join("checkpoints").is_dir() { dir.join("checkpoints") } else { dir.to_path_buf() };
    let entries = std::fs::read_dir(&folder).with_context(|| format!("listing {}", folder.display()))?;
    let mut out = Vec::new();
    for e in entries {
        let path = e?.path();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let Some(stem) = name.strip_prefix("step_").and_then(|n| n.strip_suffix(".safetensors")) else { continue };
        if let Ok(step) = stem.parse::<u64>() {
            out.push((step, path));
        }
    }
    out.sort();
    Ok(out)
}

/// Expands stage inputs (run directories or checkpoint files) into checkpoint files in order:
/// each directory's checkpoints by step, files as given. A directory with no checkpoints is an error.
pub fn expand_inputs(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for input in inputs {
        if input.is_dir() {
            let found = list_run(input)?;
            if found.is_empty() {
                bail!("{}: no checkpoints (expected files named step_NNNNNNN.safetensors)", input.display());
            }
            out.extend(found.into_iter().map(|(_, p)| p));
        } else if input.is_file() {
            out.push(input.clone());
        } else {
            bail!("{}: no such file or directory", input.display());
        }
    }
    Ok(out)
}

/// `git rev-parse --short HEAD` of the working directory, or `unknown`.
pub fn git_sha() -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}
