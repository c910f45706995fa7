//! Finding the tables (by file name) and reading them, through [`crate::tables`], into plain
//! rows. Every table is optional: a missing file leaves its kind empty, and a file that cannot be
//! read is recorded with its error, so that the figures that need it are skipped with a note.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::tables;

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

/// The columns that identify a run (`tables::ids::RUN_ID_COLUMNS`), as the stages write them.
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
    /// L2 norm of all parameters.
    pub param_norm: f64,
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
    /// Run.
    pub id: RunId,
    /// Step of the checkpoint.
    pub step: i64,
    /// The parameter group SGLD moved (`restriction`; [`WHOLE_MODEL`] for every parameter).
    pub restriction: String,
    /// Mean over chains.
    pub mean: f64,
    /// Std over chains.
    pub std: f64,
    /// `L(w*)`, when finite.
    pub loss_at_wstar: Option<f64>,
    /// Names of the health flags that are set (`tables::llc::SummaryRow::flag_names`).
    pub flags: Vec<String>,
    /// The SGLD step size ε that produced the estimate (the last rung of the step ladder,
    /// `llc::ladder`; column `epsilon`).
    pub epsilon: f64,
    /// Rungs of the step ladder run: 1 when the first rung was healthy, more when it retried.
    pub step_rungs: i64,
    /// The rejected rungs in words (`llc::ladder::rejected_text`), empty when none.
    pub rejected_steps: String,
    /// Split R-hat over chains (NaN with one chain).
    pub r_hat: f64,
    /// Mean MALA acceptance (NaN when not measured).
    pub mala_acceptance: f64,
    /// Localisation γ: the estimate is the LLC at the scale 1/√γ, comparable only at equal γ.
    pub gamma: f64,
}

/// The `restriction` of a whole-model estimate (the preset `all` of `llc::restrict`).
pub const WHOLE_MODEL: &str = "all";

impl LlcRow {
    /// An estimate of the whole model (not restricted to a group of parameters).
    pub fn whole_model(&self) -> bool {
        self.restriction == WHOLE_MODEL
    }

    /// Whether the estimate may enter a comparison: no health flag (the flags of
    /// `llc::diagnostics`, as the table's flag columns record them) and a finite value.
    pub fn healthy(&self) -> bool {
        self.flags.is_empty() && self.mean.is_finite()
    }

    /// Why the estimate is not [`healthy`](Self::healthy): its flag names, or `not finite`.
    pub fn unhealthy_reason(&self) -> String {
        if self.flags.is_empty() {
            "not finite".to_string()
        } else {
            self.flags.join(", ")
        }
    }
}

/// One SGLD draw's loss.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceRow {
    /// Run.
    pub run: String,
    /// Step of the checkpoint.
    pub step: i64,
    /// The parameter group SGLD moved.
    pub restriction: String,
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
// Readers: each table's own reader in `tables`, its rows cut down to what the figures use.

fn read_metrics(path: &Path) -> Result<Vec<MetricRow>> {
    Ok(tables::train::read_metrics(path)?
        .into_iter()
        .map(|(id, r)| MetricRow {
            id,
            step: r.step,
            split: r.split.as_str().to_string(),
            loss: r.loss,
            accuracy: r.accuracy,
            param_norm: r.param_norm,
        })
        .collect())
}

fn read_symmetry(path: &Path) -> Result<Vec<SymmetryRow>> {
    Ok(tables::analysis::read_symmetry(path)?
        .into_iter()
        .map(|r| SymmetryRow {
            id: r.key.ident,
            step: r.key.step,
            checkpoint: r.key.checkpoint,
            accuracy: r.accuracy,
            gradient_symmetry: r.gradient_symmetry,
            distance_irrelevance: r.distance_irrelevance,
            distance_irrelevance_top_wrong: r.distance_irrelevance_top_wrong,
            circularity: r.circularity,
            solution: r.solution,
        })
        .collect())
}

fn read_spectrum(path: &Path) -> Result<Vec<SpectrumRow>> {
    Ok(tables::analysis::read_spectrum(path)?
        .into_iter()
        .map(|r| SpectrumRow { id: r.key.ident, step: r.key.step, k: r.k, share: r.share, is_key: r.is_key })
        .collect())
}

fn read_llc(path: &Path) -> Result<Vec<LlcRow>> {
    Ok(tables::llc::read_summary(path)?
        .into_iter()
        .map(|r| LlcRow {
            flags: r.flag_names().into_iter().map(str::to_string).collect(),
            id: r.key.ident,
            step: r.key.step,
            restriction: r.restriction,
            mean: r.llc_mean,
            std: r.llc_std,
            loss_at_wstar: Some(r.loss_at_wstar).filter(|v| v.is_finite()),
            epsilon: r.schedule.epsilon,
            step_rungs: r.step_rungs,
            rejected_steps: r.rejected_steps,
            r_hat: r.r_hat,
            mala_acceptance: r.mala_acceptance,
            gamma: r.settings.gamma,
        })
        .collect())
}

fn read_trace(path: &Path) -> Result<Vec<TraceRow>> {
    Ok(tables::llc::read_trace(path)?
        .into_iter()
        .map(|(k, t)| TraceRow { run: k.run, step: k.step, restriction: k.restriction, chain: t.chain, draw: t.draw, loss: t.loss })
        .collect())
}

fn read_calibration(path: &Path) -> Result<Vec<CalibrationRow>> {
    Ok(tables::llc::read_calibration(path)?
        .into_iter()
        .map(|r| CalibrationRow {
            run: r.key.run,
            step: r.key.step,
            epsilon: r.epsilon,
            nbeta: r.nbeta,
            gamma: r.gamma,
            mean: r.llc_mean,
            std: r.llc_std,
            recommended: r.recommended,
        })
        .collect())
}
