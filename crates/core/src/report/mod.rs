/*!
The `report` stage: reads the parquet tables of an experiment (and the final checkpoints, for
the two figures that need weights) and writes a self-contained `index.html` with every figure
as its own SVG and PNG file beside it (`<stem>.svg`, `<stem>.png`).

Layers, each testable on its own:

- [`inputs`]: finds the tables by file name and reads them through [`crate::tables`] into plain
  rows; a missing or unreadable table is recorded, never fatal.
- [`summary`]: per-run curves, grokking step, final measures and LLC (the run table).
- [`compare`]: the Pizza-against-other comparison at a fixed α (arms, settling, statistics).
- [`findings`]: statements computed from the summaries and the comparison, and its tables.
- [`weights`]: the correct-logit table and, as a fallback, the embedding spectrum from a
  checkpoint.
- [`figures`]: builds [`crate::plot::Figure`]s from the rows, or says why a figure is skipped.
- [`html`]: the page, a pure function of its contents.

Architecture invariants: the report reads only parquet tables (through `tables`) and
checkpoints (through `ckpt`); every number on the page is computed from them; a missing input
skips the figures that need it with a note in the page; the same inputs give the same bytes
(no timestamps, sorted inputs, deterministic drawing); every file is written atomically, the
figures first and `index.html` last.
*/

pub mod compare;
pub mod figures;
pub mod findings;
pub mod html;
pub mod inputs;
pub mod summary;
pub mod weights;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod compare_tests;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use tracing::{info, warn};

use crate::fsio;
use crate::plot;
use figures::{Built, FigureSpec};
use html::{InputLine, Item, Page, Section};
use inputs::{Data, Found, RunId, TableKind};
use summary::RunSummary;

/// What to report on and where to write it.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Experiment directory: tables are discovered in `DIR/`, `DIR/released/` and
    /// `DIR/runs/*/`, checkpoints in `DIR/runs/<run>/checkpoints/`.
    pub dir: Option<PathBuf>,
    /// Further table files, classified by file name (see [`TableKind::of_path`]).
    pub tables: Vec<PathBuf>,
    /// The released checkpoints' `symmetry` table (reference points).
    pub released: Option<PathBuf>,
    /// Output directory (`index.html` and the figure files beside it).
    pub out: PathBuf,
    /// Checkpoints per run shown in the SGLD trace figures.
    pub traces_per_run: usize,
    /// Skip the figures that load checkpoints (correct-logit tables, spectrum fallback).
    pub no_checkpoints: bool,
    /// The checkpoint of each run the Pizza-against-other comparison uses.
    pub compare_at: compare::CompareAt,
}

/// What was written.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The page.
    pub index: PathBuf,
    /// Figure stems written (each as `.svg` and `.png`).
    pub figures: Vec<String>,
    /// Figures skipped, with the reason.
    pub skipped: Vec<(String, String)>,
}

/// Collects the table files: discovered in the experiment directory plus the explicit ones.
pub fn find_tables(opts: &Options) -> Result<Found> {
    let mut found = match &opts.dir {
        Some(d) => {
            if !d.is_dir() {
                bail!("{}: no such experiment directory", d.display());
            }
            inputs::discover(d)?
        }
        None => Found::default(),
    };
    for t in &opts.tables {
        if !t.is_file() {
            bail!("{}: no such table file", t.display());
        }
        if TableKind::of_path(t).is_none() {
            let names: Vec<&str> = TableKind::ALL.iter().map(|k| k.file_name()).collect();
            bail!("{}: not a table the report reads (file names it knows: {})", t.display(), names.join(", "));
        }
        found.add(t.clone());
    }
    if let Some(r) = &opts.released {
        if !r.is_file() {
            bail!("{}: no such table file", r.display());
        }
        found.add_as(TableKind::Released, r.clone());
    }
    Ok(found)
}

/// Where each run's checkpoints are: `DIR/runs/<run>` and the folder of every per-run table
/// that holds a `checkpoints/` folder, keyed by the run ids in the table.
fn run_dirs(opts: &Options, found: &Found, runs: &BTreeMap<String, RunId>) -> BTreeMap<String, PathBuf> {
    let mut out = BTreeMap::new();
    for kind in [TableKind::Metrics, TableKind::Symmetry, TableKind::Llc, TableKind::Spectrum] {
        for f in found.of(kind) {
            if let Some(parent) = f.parent() {
                if parent.join("checkpoints").is_dir() {
                    if let Some(name) = parent.file_name().and_then(|n| n.to_str()) {
                        if runs.contains_key(name) {
                            out.entry(name.to_string()).or_insert_with(|| parent.to_path_buf());
                        }
                    }
                }
            }
        }
    }
    if let Some(dir) = &opts.dir {
        for run in runs.keys() {
            let d = dir.join("runs").join(run);
            if d.join("checkpoints").is_dir() {
                out.entry(run.clone()).or_insert(d);
            }
        }
    }
    out
}

/// The final checkpoint of a run: its directory's newest, else the symmetry table's last row's
/// path when that file exists.
fn final_checkpoint(run: &str, dirs: &BTreeMap<String, PathBuf>, data: &Data) -> Option<PathBuf> {
    if let Some(d) = dirs.get(run) {
        if let Ok(Some(p)) = weights::final_checkpoint(d) {
            return Some(p);
        }
    }
    summary::final_symmetry(&data.symmetry.rows)
        .get(run)
        .map(|r| PathBuf::from(&r.checkpoint))
        .filter(|p| p.is_file())
}

/// Figure item 6's data: the spectrum table's last checkpoint per run, else each run's final
/// checkpoint.
fn spectra(
    data: &Data,
    runs: &BTreeMap<String, RunId>,
    dirs: &BTreeMap<String, PathBuf>,
    opts: &Options,
    notes: &mut Vec<String>,
) -> (Vec<(RunId, weights::Spectrum)>, String) {
    let mut out = Vec::new();
    if !data.spectrum.rows.is_empty() {
        let mut last: BTreeMap<String, i64> = BTreeMap::new();
        for r in &data.spectrum.rows {
            let e = last.entry(r.id.run.clone()).or_insert(r.step);
            *e = (*e).max(r.step);
        }
        for (run, step) in last {
            let mut entries: Vec<(i64, f64, bool)> = data
                .spectrum
                .rows
                .iter()
                .filter(|r| r.id.run == run && r.step == step && r.k >= 1)
                .map(|r| (r.k, r.share, r.is_key))
                .collect();
            entries.sort_by_key(|e| e.0);
            entries.dedup_by_key(|e| e.0);
            let id = runs.get(&run).cloned().unwrap_or_else(|| RunId::named(&run));
            out.push((id, weights::Spectrum { step, entries }));
        }
        return (out, "`scan_spectrum.parquet` (checkpoint-scan)".into());
    }
    if opts.no_checkpoints {
        return (out, String::new());
    }
    for (run, id) in runs {
        let Some(path) = final_checkpoint(run, dirs, data) else { continue };
        match weights::spectrum_from_checkpoint(&path) {
            Ok(s) => out.push((id.clone(), s)),
            Err(e) => notes.push(format!("Spectrum of run {run}: {e:#}")),
        }
    }
    (out, "computed here from each run's final checkpoint (no `scan_spectrum.parquet` given)".into())
}

/// Figure item 7's data: one Pizza and one Clock run (by the symmetry table's final label, else
/// the smallest and the largest α), with their correct-logit tables.
fn logit_tables(
    data: &Data,
    runs: &[RunSummary],
    dirs: &BTreeMap<String, PathBuf>,
    notes: &mut Vec<String>,
) -> Vec<(String, weights::LogitTable)> {
    // Candidates for each panel: runs with the label, smallest α first for Pizza and largest
    // first for Clock; without such a run, the run with the smallest (largest) α.
    let mut by_alpha: Vec<&RunSummary> = runs.iter().filter(|s| s.id.alpha.is_finite()).collect();
    by_alpha.sort_by(|a, b| a.id.alpha.total_cmp(&b.id.alpha).then(a.id.seed.cmp(&b.id.seed)).then(a.id.run.cmp(&b.id.run)));
    let labelled = |label: &str, high_alpha: bool| {
        let mut v: Vec<&RunSummary> = by_alpha.iter().copied().filter(|s| s.solution.as_deref() == Some(label)).collect();
        if high_alpha {
            v.sort_by(|a, b| b.id.alpha.total_cmp(&a.id.alpha).then(a.id.seed.cmp(&b.id.seed)).then(a.id.run.cmp(&b.id.run)));
        }
        v
    };
    let mut picks: Vec<(String, Vec<&RunSummary>)> = Vec::new();
    let pizza = labelled("pizza", false);
    let clock = labelled("clock", true);
    let why = if runs.iter().any(|s| s.solution.is_some()) { "no run is labelled" } else { "there is no symmetry table, so no run is labelled" };
    match (pizza.is_empty(), by_alpha.first()) {
        (false, _) => picks.push(("Pizza".into(), pizza)),
        (true, Some(lo)) => {
            notes.push(format!("The first correct-logit panel shows the run with the smallest α: {why} pizza."));
            picks.push(("smallest α".into(), vec![*lo]));
        }
        (true, None) => notes.push(format!("No Pizza panel: {why} pizza and no run has a known α.")),
    }
    match (clock.is_empty(), by_alpha.last()) {
        (false, _) => picks.push(("Clock".into(), clock)),
        (true, Some(hi)) if by_alpha.first().is_some_and(|lo| lo.id.alpha < hi.id.alpha) => {
            notes.push(format!("The second correct-logit panel shows the run with the largest α: {why} clock."));
            picks.push(("largest α".into(), vec![*hi]));
        }
        _ => notes.push(format!("No Clock panel: {why} clock and no run has a larger α than the first panel's.")),
    }
    let mut out = Vec::new();
    for (what, candidates) in picks {
        let mut done = false;
        for s in &candidates {
            let Some(path) = final_checkpoint(&s.id.run, dirs, data) else { continue };
            match weights::correct_logit_table(&path) {
                Ok(t) => {
                    let step = t.step.map(|s| format!(", step {s}")).unwrap_or_default();
                    let di = s.distance_irrelevance.map(|d| format!(", DI {}", findings::num(d))).unwrap_or_default();
                    out.push((format!("{what}: {}{step}{di}", figures::run_label(&s.id)), t));
                    done = true;
                    break;
                }
                Err(e) => notes.push(format!("Correct-logit table of run {}: {e:#}", s.id.run)),
            }
        }
        if !done {
            notes.push(format!("No final checkpoint could be read for the panel {what}."));
        }
    }
    out
}

/// One section's items from built figures: rendered and written, or skipped.
fn emit(
    what: &str,
    built: Built,
    figdir: &Path,
    outcome: &mut Outcome,
    items: &mut Vec<Item>,
) -> Result<()> {
    match built {
        Err(reason) => {
            outcome.skipped.push((what.to_string(), reason.clone()));
            items.push(Item::Skipped { what: what.to_string(), reason });
        }
        Ok(specs) => {
            for FigureSpec { stem, caption, figure } in specs {
                let alt = figure.title.clone();
                match plot::render(&figure) {
                    Ok(r) => {
                        fsio::write_bytes_atomic(&figdir.join(format!("{stem}.svg")), r.svg.as_bytes())?;
                        fsio::write_bytes_atomic(&figdir.join(format!("{stem}.png")), &r.png)?;
                        outcome.figures.push(stem.clone());
                        items.push(Item::Figure { stem, alt, caption, width: r.width, height: r.height });
                    }
                    Err(e) => {
                        let reason = format!("drawing failed: {e:#}");
                        outcome.skipped.push((stem.clone(), reason.clone()));
                        items.push(Item::Skipped { what: format!("figure `{stem}`"), reason });
                    }
                }
            }
        }
    }
    Ok(())
}

/// A path for display: relative to the experiment directory when inside it.
fn shown(p: &Path, dir: Option<&Path>) -> String {
    dir.and_then(|d| p.strip_prefix(d).ok()).unwrap_or(p).display().to_string()
}

fn input_lines(found: &Found, data: &Data, dir: Option<&Path>) -> Vec<InputLine> {
    let mut lines = Vec::new();
    let status = |p: &Path, files: &[PathBuf], errors: &[(PathBuf, String)]| -> String {
        if let Some((_, e)) = errors.iter().find(|(q, _)| q == p) {
            format!("not read: {e}")
        } else if files.iter().any(|q| q == p) {
            "read".to_string()
        } else {
            "not read".to_string()
        }
    };
    for kind in TableKind::ALL {
        for p in found.of(kind) {
            let s = match kind {
                TableKind::Metrics => status(p, &data.metrics.files, &data.metrics.errors),
                TableKind::Spectrum => status(p, &data.spectrum.files, &data.spectrum.errors),
                TableKind::Symmetry => status(p, &data.symmetry.files, &data.symmetry.errors),
                TableKind::Llc => status(p, &data.llc.files, &data.llc.errors),
                TableKind::LlcTrace => status(p, &data.trace.files, &data.trace.errors),
                TableKind::LlcCalibration => status(p, &data.calibration.files, &data.calibration.errors),
                TableKind::Released => status(p, &data.released.files, &data.released.errors),
            };
            lines.push(InputLine { kind: kind.file_name().to_string(), path: shown(p, dir), status: s });
        }
    }
    for p in &found.ignored {
        lines.push(InputLine { kind: "(not used)".into(), path: shown(p, dir), status: "not a table the report reads".into() });
    }
    lines
}

/// Writes the report.
pub fn run(opts: &Options) -> Result<Outcome> {
    let found = find_tables(opts)?;
    let n_files: usize = found.files.values().map(Vec::len).sum();
    if n_files == 0 {
        warn!("no input tables found; the report will only say so");
    }
    let data = Data::read(&found);
    for (p, e) in data
        .metrics
        .errors
        .iter()
        .chain(&data.symmetry.errors)
        .chain(&data.spectrum.errors)
        .chain(&data.llc.errors)
        .chain(&data.trace.errors)
        .chain(&data.calibration.errors)
        .chain(&data.released.errors)
    {
        warn!("{}: {e}", p.display());
    }
    let runs_by_id = data.runs();
    let runs = summary::summarize(&data);
    let curves = summary::curves(&data.metrics.rows);
    let dirs = run_dirs(opts, &found, &runs_by_id);
    let (refs, ref_source) = figures::references(&data.released.rows);

    // Figures sit beside index.html (flat, so that `make` and tests can list them).
    let figdir = opts.out.clone();
    std::fs::create_dir_all(&figdir).with_context(|| format!("creating {}", figdir.display()))?;
    let mut outcome = Outcome { index: opts.out.join("index.html"), figures: Vec::new(), skipped: Vec::new() };
    let mut sections = Vec::new();
    // A section: `first` (notes, tables), then the figures of each part, then `notes`.
    let mut section = |id: &str, title: &str, intro: &str, first: Vec<Item>, parts: Vec<(&str, Built)>, notes: Vec<String>, outcome: &mut Outcome| -> Result<()> {
        let mut items = first;
        for (what, built) in parts {
            emit(what, built, &figdir, outcome, &mut items)?;
        }
        items.extend(notes.into_iter().map(Item::Note));
        sections.push(Section { id: id.into(), title: title.into(), intro: intro.into(), items });
        Ok(())
    };

    let limit = |n: usize, what: &str| -> Vec<String> {
        if n > figures::MAX_PER_RUN {
            vec![format!("{what} are drawn for the first {} of {n} runs (by run id).", figures::MAX_PER_RUN)]
        } else {
            Vec::new()
        }
    };
    section(
        "training",
        "Training curves",
        "Loss and accuracy on the training and validation splits against the optimizer step, one figure per run, with the grokking step marked.",
        vec![],
        vec![("training curves", figures::training(&curves, &runs_by_id))],
        limit(curves.len(), "Training curves"),
        &mut outcome,
    )?;
    let n_llc_runs = summary::llc_by_run(&data.llc.rows).len();
    let n_trace_runs = data.trace.rows.iter().map(|t| t.run.as_str()).collect::<std::collections::BTreeSet<_>>().len();
    section(
        "llc",
        "LLC along training",
        &format!(
            "The Local Learning Coefficient estimated by SGLD at each checkpoint (mean and ±1 std over chains), drawn over the loss curves. {}",
            summary::gamma_note(&data.llc.rows)
        ),
        vec![],
        vec![("LLC along training", figures::llc_along(&data, &curves, &runs_by_id))],
        limit(n_llc_runs, "LLC figures"),
        &mut outcome,
    )?;
    section(
        "symmetry",
        "Pizza/Clock measures along training",
        "Gradient symmetry (high for Pizza), distance irrelevance (high for Clock) and circularity of the embedding at each checkpoint.",
        vec![],
        vec![("measures along training", figures::symmetry_along(&data, &refs))],
        vec![],
        &mut outcome,
    )?;
    section(
        "scatter",
        "Gradient symmetry against distance irrelevance",
        "The paper's scatter: each run's final checkpoint, coloured by α, with the released checkpoints for reference.",
        vec![],
        vec![("gradient symmetry against distance irrelevance", figures::gs_vs_di(&data, &refs, ref_source))],
        vec![],
        &mut outcome,
    )?;
    section(
        "llc-alpha",
        "Final LLC against α",
        "The LLC at the last estimated checkpoint of each run against its attention rate α, one point per seed.",
        vec![],
        vec![("final LLC against α", figures::llc_vs_alpha(&runs))],
        vec![],
        &mut outcome,
    )?;
    let cmp = compare::comparisons(&data, opts.compare_at);
    info!(arms = cmp.arms.len(), "compared Pizza against the other runs at each fixed α");
    let (mut first, parts, notes) = if cmp.arms.is_empty() {
        let why = match data.symmetry.missing(TableKind::Symmetry) {
            Some(m) => format!("No run is labelled: {m}."),
            None => findings::no_arm_text(&cmp),
        };
        (vec![Item::Note(why)], vec![], vec![])
    } else {
        let mut first: Vec<Item> = findings::comparison_notes(&cmp).into_iter().map(Item::Note).collect();
        first.extend(findings::comparison_tables(&cmp));
        let (specs, notes) = figures::comparison(&cmp, &data);
        (first, vec![("comparison figures", Ok(specs))], notes)
    };
    // Where some cell mixes labels, how they got there (the pilot of a same-α experiment).
    if !cmp.arms.is_empty() || !cmp.small.is_empty() {
        first.extend(findings::labels_table(&compare::labels_along_training(&data)));
    }
    section(
        "compare",
        "Pizza against other solutions at a fixed α",
        &format!(
            "The comparison that holds everything but the solution fixed: within each arm (runs that differ only in the seed) the LLC of the Pizza runs against that of the other runs, at each run's compared checkpoint ({}) and at step 0 as the control, for the whole model and each parameter group. A run enters only once settled: the same label at every symmetry checkpoint of the last {} % of training, and a whole-model LLC that changed by less than {} % since the estimate nearest 80 % of training. Only estimates without a health flag enter. A difference is called detectable where the two-sided Mann–Whitney p is below {}; for the parameter groups, tested together, where Holm's adjusted p is (the findings give both).",
            match opts.compare_at {
                compare::CompareAt::Last => "its last checkpoint".to_string(),
                compare::CompareAt::Step(s) => format!("the checkpoint at step {s}"),
            },
            (100.0 * compare::LATE_FRACTION).round(),
            (100.0 * compare::LLC_SETTLED).round(),
            compare::DETECTABLE
        ),
        first,
        parts,
        notes,
        &mut outcome,
    )?;
    section(
        "phase",
        "Phase diagram",
        "When the experiment sweeps α (and width), as the paper draws it: gradient symmetry and distance irrelevance at each run's last checkpoint, the share of runs per label, and the whole-model LLC (last estimate and step 0), over α and width; the runs of a cell are its seeds.",
        vec![],
        vec![("phase diagram", figures::phase_diagram(&runs))],
        vec![],
        &mut outcome,
    )?;
    let mut notes = Vec::new();
    let (spec, source) = spectra(&data, &runs_by_id, &dirs, opts, &mut notes);
    let built = if spec.is_empty() && opts.no_checkpoints && data.spectrum.rows.is_empty() {
        Err(data.spectrum.missing(TableKind::Spectrum).unwrap_or_default() + " and checkpoints were not to be read (--no-checkpoints)")
    } else {
        figures::spectra(&spec, &source)
    };
    section(
        "spectrum",
        "Fourier spectrum of the embedding",
        "How the token embedding's energy is spread over frequencies at the end of training: a generalising solution concentrates it on a few key frequencies.",
        vec![],
        vec![("embedding spectrum", built)],
        notes,
        &mut outcome,
    )?;
    let mut notes = Vec::new();
    let built = if opts.no_checkpoints {
        Err("checkpoints were not to be read (--no-checkpoints)".to_string())
    } else {
        figures::logit_tables(&logit_tables(&data, &runs, &dirs, &mut notes))
    };
    section(
        "logits",
        "Correct-logit tables",
        "The correct-class logit over all pairs at the final checkpoint of one Pizza and one Clock run, arranged by (a + b) and (a − b) as in the distance-irrelevance measure.",
        vec![],
        vec![("correct-logit tables", built)],
        notes,
        &mut outcome,
    )?;
    section(
        "sgld",
        "SGLD diagnostics",
        "Loss traces of the SGLD chains behind the LLC estimates, the ε × nβ calibration grid when one was run, and per run the step size the step ladder chose at each checkpoint with the R-hat and MALA acceptance it was judged by.",
        vec![],
        vec![
            ("SGLD loss traces", figures::traces(&data, opts.traces_per_run.max(1))),
            ("calibration grid", figures::calibration(&data.calibration.rows, data.calibration.missing(TableKind::LlcCalibration))),
            ("step size and diagnostics along training", figures::step_diagnostics(&data, &curves, &runs_by_id)),
        ],
        limit(n_trace_runs, "SGLD traces").into_iter().chain(limit(n_llc_runs, "Step-size figures")).collect(),
        &mut outcome,
    )?;

    let title = match &opts.dir {
        Some(d) => format!(
            "Clock and Pizza report: {}",
            d.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| d.display().to_string())
        ),
        None => "Clock and Pizza report".to_string(),
    };
    let page = Page {
        title,
        source: opts.dir.as_ref().map(|d| d.display().to_string()),
        findings: findings::comparison_findings(&cmp, data.symmetry.missing(TableKind::Symmetry)).into_iter().chain(findings::findings(&runs)).collect(),
        runs,
        sections,
        inputs: input_lines(&found, &data, opts.dir.as_deref()),
    };
    fsio::write_bytes_atomic(&outcome.index, html::page(&page).as_bytes())?;
    info!(figures = outcome.figures.len(), skipped = outcome.skipped.len(), "wrote {}", outcome.index.display());
    Ok(outcome)
}
