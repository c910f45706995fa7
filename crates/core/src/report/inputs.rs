//! Finding the tables (by file name) and reading them, through [`crate::tables`], into plain
//! rows. Every table is optional: a missing file leaves its kind empty, and a file that cannot be
//! read is recorded with its error, so that the figures that need it are skipped with a note.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use polars::prelude::{DataFrame, DataType};

use crate::tables::{self, analysis, llc, schemas};

/// The kinds of table the report reads, recognised by file name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TableKind {
    /// `metrics.parquet` (train): loss and accuracy per step.
    Metrics,
    /// `scan_spectrum.parquet` (checkpoint-scan): embedding spectrum per checkpoint.
    Spectrum,
    /// `symmetry.parquet` (symmetry): Pizza/Clock measures per checkpoint.
    Symmetry,
    /// `llc.parquet` (llc estimate, `tables::llc::LLC_SUMMARY`): one estimate per checkpoint.
    Llc,
    /// `llc_trace.parquet` (llc): SGLD loss per checkpoint, chain and draw.
    LlcTrace,
    /// `llc_calibration.parquet` (llc calibrate): estimates over ε × nβ (× γ).
    LlcCalibration,
    /// `released*.parquet`, or a `symmetry.parquet` inside a folder named `released`: the paper's
    /// released checkpoints through `symmetry` (reference points).
    Released,
}

impl TableKind {
    /// Every kind, in report order.
    pub const ALL: [TableKind; 7] = [
        TableKind::Metrics,
        TableKind::Spectrum,
        TableKind::Symmetry,
        TableKind::Llc,
        TableKind::LlcTrace,
        TableKind::LlcCalibration,
        TableKind::Released,
    ];

    /// The usual file name.
    pub fn file_name(self) -> &'static str {
        match self {
            TableKind::Metrics => "metrics.parquet",
            TableKind::Spectrum => "scan_spectrum.parquet",
            TableKind::Symmetry => "symmetry.parquet",
            TableKind::Llc => "llc.parquet",
            TableKind::LlcTrace => "llc_trace.parquet",
            TableKind::LlcCalibration => "llc_calibration.parquet",
            TableKind::Released => "released.parquet",
        }
    }

    /// The kind of a table file, from its name (`None`: not a table the report reads).
    pub fn of_path(path: &Path) -> Option<TableKind> {
        let name = path.file_name()?.to_str()?;
        let stem = name.strip_suffix(".parquet")?;
        let in_released = path.parent().and_then(Path::file_name).and_then(|n| n.to_str()) == Some("released");
        match stem {
            "metrics" => Some(TableKind::Metrics),
            "scan_spectrum" => Some(TableKind::Spectrum),
            "symmetry" if in_released => Some(TableKind::Released),
            "symmetry" => Some(TableKind::Symmetry),
            "llc" => Some(TableKind::Llc),
            "llc_trace" => Some(TableKind::LlcTrace),
            "llc_calibration" => Some(TableKind::LlcCalibration),
            s if s.starts_with("released") => Some(TableKind::Released),
            _ => None,
        }
    }
}

/// Table files found for a report, by kind, in a stable order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Found {
    /// Files of each kind.
    pub files: BTreeMap<TableKind, Vec<PathBuf>>,
    /// Parquet files that are not a table the report reads.
    pub ignored: Vec<PathBuf>,
}

impl Found {
    /// Adds one file under its kind (or to `ignored`).
    pub fn add(&mut self, path: PathBuf) {
        match TableKind::of_path(&path) {
            Some(kind) => self.add_as(kind, path),
            None => self.ignored.push(path),
        }
    }

    /// Adds one file under a given kind (duplicates are dropped).
    pub fn add_as(&mut self, kind: TableKind, path: PathBuf) {
        let v = self.files.entry(kind).or_default();
        if !v.contains(&path) {
            v.push(path);
        }
    }

    /// The files of one kind.
    pub fn of(&self, kind: TableKind) -> &[PathBuf] {
        self.files.get(&kind).map(Vec::as_slice).unwrap_or(&[])
    }
}

/// Finds the tables of an experiment directory: `DIR/*.parquet`, `DIR/released/*.parquet` and
/// `DIR/runs/*/*.parquet`, each classified by name; sorted, so the order never depends on the
/// file system.
pub fn discover(dir: &Path) -> Result<Found> {
    let mut found = Found::default();
    let mut folders = vec![dir.to_path_buf(), dir.join("released")];
    let runs = dir.join("runs");
    if runs.is_dir() {
        let mut run_dirs = list_dir(&runs)?.into_iter().filter(|p| p.is_dir()).collect::<Vec<_>>();
        run_dirs.sort();
        folders.extend(run_dirs);
    }
    for folder in folders {
        if !folder.is_dir() {
            continue;
        }
        let mut files: Vec<PathBuf> = list_dir(&folder)?
            .into_iter()
            .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "parquet"))
            .collect();
        files.sort();
        for f in files {
            found.add(f);
        }
    }
    Ok(found)
}

fn list_dir(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))?;
    let mut out = Vec::new();
    for e in entries {
        out.push(e.with_context(|| format!("listing {}", dir.display()))?.path());
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Plain rows.

/// The columns that identify a run ([`schemas::RUN_ID_COLUMNS`]), as the analysis stages write them.
pub use crate::run::RunIdent as RunId;

/// One row of the training metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricRow {
    /// Run.
    pub id: RunId,
    /// Optimizer step.
    pub step: i64,
    /// `train` or `val`.
    pub split: String,
    /// Mean cross-entropy.
    pub loss: f64,
    /// Accuracy.
    pub accuracy: f64,
}

/// One checkpoint's Pizza/Clock measures.
#[derive(Debug, Clone, PartialEq)]
pub struct SymmetryRow {
    /// Run.
    pub id: RunId,
    /// Step of the checkpoint.
    pub step: i64,
    /// Checkpoint file as the symmetry stage was given it.
    pub checkpoint: String,
    /// Accuracy on all pairs.
    pub accuracy: f64,
    /// Gradient symmetry.
    pub gradient_symmetry: f64,
    /// Distance irrelevance of the correct logit.
    pub distance_irrelevance: f64,
    /// Distance irrelevance of the largest wrong logit.
    pub distance_irrelevance_top_wrong: f64,
    /// Circularity.
    pub circularity: f64,
    /// `pizza`, `clock`, `non-circular` or `unclear`.
    pub solution: String,
}

/// One checkpoint's embedding spectrum entry.
#[derive(Debug, Clone, PartialEq)]
pub struct SpectrumRow {
    /// Run.
    pub id: RunId,
    /// Step of the checkpoint.
    pub step: i64,
    /// Frequency.
    pub k: i64,
    /// Share of the non-constant energy.
    pub share: f64,
    /// Key frequency.
    pub is_key: bool,
}

/// One LLC estimate.
#[derive(Debug, Clone, PartialEq)]
pub struct LlcRow {
    /// Run (only `run` is certain to be known).
    pub id: RunId,
    /// Step of the checkpoint.
    pub step: i64,
    /// Mean over chains.
    pub mean: f64,
    /// Std over chains.
    pub std: f64,
    /// `L(w*)`, when finite.
    pub loss_at_wstar: Option<f64>,
    /// Names of the health flags that are set: boolean columns that are true and count columns
    /// that are positive, among the columns named like a flag (`diverged`, `negative_mean`, …).
    pub flags: Vec<String>,
}

/// One SGLD draw's loss.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceRow {
    /// Run.
    pub run: String,
    /// Step of the checkpoint.
    pub step: i64,
    /// Chain.
    pub chain: i64,
    /// Draw.
    pub draw: i64,
    /// Minibatch loss.
    pub loss: f64,
}

/// One point of a calibration sweep.
#[derive(Debug, Clone, PartialEq)]
pub struct CalibrationRow {
    /// Run.
    pub run: String,
    /// Step of the checkpoint the sweep was run on.
    pub step: i64,
    /// Step size ε.
    pub epsilon: f64,
    /// nβ (resolved number).
    pub nbeta: f64,
    /// Localisation γ.
    pub gamma: f64,
    /// Mean over chains.
    pub mean: f64,
    /// Std over chains.
    pub std: f64,
    /// The point `llc calibrate` recommends.
    pub recommended: bool,
}

/// The rows of one kind of table, with the files they came from and the files that failed.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded<T> {
    /// Rows of every file that could be read, in file order.
    pub rows: Vec<T>,
    /// Files read.
    pub files: Vec<PathBuf>,
    /// Files that could not be read, with the error.
    pub errors: Vec<(PathBuf, String)>,
}

impl<T> Default for Loaded<T> {
    fn default() -> Self {
        Loaded { rows: Vec::new(), files: Vec::new(), errors: Vec::new() }
    }
}

impl<T> Loaded<T> {
    /// Reads every file with `read`, keeping going past failures.
    fn read_all(paths: &[PathBuf], read: impl Fn(&Path) -> Result<Vec<T>>) -> Loaded<T> {
        let mut out = Loaded::default();
        for p in paths {
            match read(p) {
                Ok(rows) => {
                    out.rows.extend(rows);
                    out.files.push(p.clone());
                }
                Err(e) => out.errors.push((p.clone(), format!("{e:#}"))),
            }
        }
        out
    }

    /// Why a figure that needs this table cannot be drawn, or `None` when it has rows.
    pub fn missing(&self, kind: TableKind) -> Option<String> {
        if !self.rows.is_empty() {
            return None;
        }
        if self.files.is_empty() && self.errors.is_empty() {
            return Some(format!("input table `{}` is absent", kind.file_name()));
        }
        if !self.errors.is_empty() {
            let list: Vec<String> = self.errors.iter().map(|(p, e)| format!("{}: {e}", p.display())).collect();
            return Some(format!("input table `{}` could not be read ({})", kind.file_name(), list.join("; ")));
        }
        Some(format!("input table `{}` has no rows", kind.file_name()))
    }
}

/// Everything the report reads.
#[derive(Debug, Clone, Default)]
pub struct Data {
    /// Training metrics.
    pub metrics: Loaded<MetricRow>,
    /// Embedding spectra.
    pub spectrum: Loaded<SpectrumRow>,
    /// Pizza/Clock measures.
    pub symmetry: Loaded<SymmetryRow>,
    /// LLC estimates.
    pub llc: Loaded<LlcRow>,
    /// SGLD traces.
    pub trace: Loaded<TraceRow>,
    /// Calibration sweeps.
    pub calibration: Loaded<CalibrationRow>,
    /// Released checkpoints' measures.
    pub released: Loaded<SymmetryRow>,
}

impl Data {
    /// Reads every table found.
    pub fn read(found: &Found) -> Data {
        Data {
            metrics: Loaded::read_all(found.of(TableKind::Metrics), read_metrics),
            spectrum: Loaded::read_all(found.of(TableKind::Spectrum), read_spectrum),
            symmetry: Loaded::read_all(found.of(TableKind::Symmetry), read_symmetry),
            llc: Loaded::read_all(found.of(TableKind::Llc), read_llc),
            trace: Loaded::read_all(found.of(TableKind::LlcTrace), read_trace),
            calibration: Loaded::read_all(found.of(TableKind::LlcCalibration), read_calibration),
            released: Loaded::read_all(found.of(TableKind::Released), read_symmetry),
        }
    }

    /// Every run seen in any per-run table, by id, with the fullest identity available (the
    /// metrics and symmetry tables carry all id columns; the LLC tables may carry only `run`).
    pub fn runs(&self) -> BTreeMap<String, RunId> {
        let mut out: BTreeMap<String, RunId> = BTreeMap::new();
        let ids = self
            .metrics
            .rows
            .iter()
            .map(|r| &r.id)
            .chain(self.symmetry.rows.iter().map(|r| &r.id))
            .chain(self.spectrum.rows.iter().map(|r| &r.id))
            .chain(self.llc.rows.iter().map(|r| &r.id));
        for id in ids {
            match out.get(&id.run) {
                Some(have) if have.p != 0 => {}
                _ => {
                    out.insert(id.run.clone(), id.clone());
                }
            }
        }
        for t in &self.trace.rows {
            out.entry(t.run.clone()).or_insert_with(|| RunId::named(&t.run));
        }
        out
    }
}

// ---------------------------------------------------------------------------------------------
// Readers: one per table, each checking the table's schema first.

fn has(df: &DataFrame, name: &str) -> bool {
    df.column(name).is_ok()
}

fn read_ids(df: &DataFrame, path: &Path) -> Result<Vec<RunId>> {
    let run = tables::col_str(df, "run", path)?;
    if !schemas::RUN_ID_COLUMNS.iter().all(|c| has(df, c.name)) {
        return Ok(run.iter().map(|r| RunId::named(r)).collect());
    }
    let p = tables::col_i64(df, "p", path)?;
    let alpha = tables::col_f64(df, "alpha", path)?;
    let seed = tables::col_i64(df, "seed", path)?;
    let wd = tables::col_f64(df, "weight_decay", path)?;
    let tf = tables::col_f64(df, "train_frac", path)?;
    let d = tables::col_i64(df, "d_model", path)?;
    Ok((0..run.len())
        .map(|i| RunId {
            run: run[i].clone(),
            p: p[i],
            alpha: alpha[i],
            seed: seed[i],
            weight_decay: wd[i],
            train_frac: tf[i],
            d_model: d[i],
        })
        .collect())
}

fn read_metrics(path: &Path) -> Result<Vec<MetricRow>> {
    let df = tables::read_parquet(path, &schemas::TRAIN_METRICS)?;
    let ids = read_ids(&df, path)?;
    let step = tables::col_i64(&df, "step", path)?;
    let split = tables::col_str(&df, "split", path)?;
    let loss = tables::col_f64(&df, "loss", path)?;
    let acc = tables::col_f64(&df, "accuracy", path)?;
    Ok(ids
        .into_iter()
        .enumerate()
        .map(|(i, id)| MetricRow { id, step: step[i], split: split[i].clone(), loss: loss[i], accuracy: acc[i] })
        .collect())
}

fn read_symmetry(path: &Path) -> Result<Vec<SymmetryRow>> {
    let df = tables::read_parquet(path, &analysis::SYMMETRY)?;
    let ids = read_ids(&df, path)?;
    let step = tables::col_i64(&df, "step", path)?;
    let ckpt = tables::col_str(&df, "checkpoint", path)?;
    let acc = tables::col_f64(&df, "accuracy", path)?;
    let gs = tables::col_f64(&df, "gradient_symmetry", path)?;
    let di = tables::col_f64(&df, "distance_irrelevance", path)?;
    let dit = tables::col_f64(&df, "distance_irrelevance_top_wrong", path)?;
    let circ = tables::col_f64(&df, "circularity", path)?;
    let sol = tables::col_str(&df, "solution", path)?;
    Ok(ids
        .into_iter()
        .enumerate()
        .map(|(i, id)| SymmetryRow {
            id,
            step: step[i],
            checkpoint: ckpt[i].clone(),
            accuracy: acc[i],
            gradient_symmetry: gs[i],
            distance_irrelevance: di[i],
            distance_irrelevance_top_wrong: dit[i],
            circularity: circ[i],
            solution: sol[i].clone(),
        })
        .collect())
}

fn read_spectrum(path: &Path) -> Result<Vec<SpectrumRow>> {
    let df = tables::read_parquet(path, &analysis::SCAN_SPECTRUM)?;
    let ids = read_ids(&df, path)?;
    let step = tables::col_i64(&df, "step", path)?;
    let k = tables::col_i64(&df, "k", path)?;
    let share = tables::col_f64(&df, "share", path)?;
    let key = tables::col_bool(&df, "is_key", path)?;
    Ok(ids
        .into_iter()
        .enumerate()
        .map(|(i, id)| SpectrumRow { id, step: step[i], k: k[i], share: share[i], is_key: key[i] })
        .collect())
}

/// Words that mark a health-flag column of the LLC table: a boolean column (set when true) or a
/// count of flagged chains (set when positive) whose name contains one of them.
const FLAG_WORDS: &[&str] = &["diverg", "negative", "converg", "rising", "flag", "unhealthy"];

fn read_llc(path: &Path) -> Result<Vec<LlcRow>> {
    let df = tables::read_parquet(path, &llc::LLC_SUMMARY)?;
    let ids = read_ids(&df, path)?;
    let step = tables::col_i64(&df, "step", path)?;
    let mean = tables::col_f64(&df, "llc_mean", path)?;
    let std = tables::col_f64(&df, "llc_std", path)?;
    let lw = tables::col_f64(&df, "loss_at_wstar", path)?;
    // Health flags (see FLAG_WORDS): booleans that are true, counts that are positive.
    let mut flag_cols: Vec<(String, Vec<bool>)> = Vec::new();
    for c in df.columns() {
        let name = c.name().to_string();
        if !FLAG_WORDS.iter().any(|w| name.contains(w)) {
            continue;
        }
        match c.dtype() {
            DataType::Boolean => flag_cols.push((name.clone(), tables::col_bool(&df, &name, path)?)),
            DataType::Int64 => {
                let v = tables::col_i64(&df, &name, path)?;
                flag_cols.push((name.clone(), v.iter().map(|x| *x > 0).collect()));
            }
            _ => {}
        }
    }
    flag_cols.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(ids
        .into_iter()
        .enumerate()
        .map(|(i, id)| LlcRow {
            id,
            step: step[i],
            mean: mean[i],
            std: std[i],
            loss_at_wstar: Some(lw[i]).filter(|v| v.is_finite()),
            flags: flag_cols.iter().filter(|(_, v)| v[i]).map(|(n, _)| n.strip_prefix("n_").unwrap_or(n).to_string()).collect(),
        })
        .collect())
}

fn read_trace(path: &Path) -> Result<Vec<TraceRow>> {
    let df = tables::read_parquet(path, &llc::LLC_TRACE)?;
    let run = tables::col_str(&df, "run", path)?;
    let step = tables::col_i64(&df, "step", path)?;
    let chain = tables::col_i64(&df, "chain", path)?;
    let draw = tables::col_i64(&df, "draw", path)?;
    let loss = tables::col_f64(&df, "loss", path)?;
    Ok((0..run.len())
        .map(|i| TraceRow { run: run[i].clone(), step: step[i], chain: chain[i], draw: draw[i], loss: loss[i] })
        .collect())
}

fn read_calibration(path: &Path) -> Result<Vec<CalibrationRow>> {
    let df = tables::read_parquet(path, &llc::LLC_CALIBRATION)?;
    let run = tables::col_str(&df, "run", path)?;
    let step = tables::col_i64(&df, "step", path)?;
    let gamma = tables::col_f64(&df, "gamma", path)?;
    let eps = tables::col_f64(&df, "epsilon", path)?;
    let nbeta = tables::col_f64(&df, "nbeta", path)?;
    let mean = tables::col_f64(&df, "llc_mean", path)?;
    let std = tables::col_f64(&df, "llc_std", path)?;
    let rec = tables::col_bool(&df, "recommended", path)?;
    Ok((0..run.len())
        .map(|i| CalibrationRow {
            run: run[i].clone(),
            step: step[i],
            epsilon: eps[i],
            nbeta: nbeta[i],
            gamma: gamma[i],
            mean: mean[i],
            std: std[i],
            recommended: rec[i],
        })
        .collect())
}
