//! Figure descriptions built from the rows: each function returns the figures of one report
//! item as [`FigureSpec`]s (plain [`crate::plot`] structs), or the reason it is skipped.

use std::collections::BTreeMap;

use super::compare::{Arm, Comparison, Comparisons, PIZZA};
use super::findings::num;
use super::inputs::{CalibrationRow, Data, LlcRow, RunId, SymmetryRow, TraceRow, WHOLE_MODEL};
use super::summary::{self, grokking_step, RunCurves, RunSummary, GROK_THRESHOLD};
use super::weights::{LogitTable, Spectrum};
use crate::llc::diagnostics::{MALA_MIN, R_HAT_MAX};
use crate::stats;
use crate::plot::{alpha_color, palette, Axis, Chart, Color, Figure, Heatmap, Mark, Panel, Rule, Series, Shape};

/// One figure to draw, with its file stem and caption.
#[derive(Debug, Clone, PartialEq)]
pub struct FigureSpec {
    /// File stem (`.svg` and `.png` are added).
    pub stem: String,
    /// Caption for the HTML.
    pub caption: String,
    /// What to draw.
    pub figure: Figure,
}

/// The figures of one item, or why there are none.
pub type Built = Result<Vec<FigureSpec>, String>;

/// A file-name-safe version of a run id.
pub fn slug(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' { c } else { '_' }).collect()
}

/// `run (α = …)`.
pub fn run_label(id: &RunId) -> String {
    if id.alpha.is_finite() {
        format!("{} (α={})", id.run, num(id.alpha))
    } else {
        id.run.clone()
    }
}

const STEP_AXIS: &str = "step (optimizer updates, log scale)";
const LOG_NOTE: &str = "Steps are on a log scale, so step 0 (the initialisation) is not drawn.";

/// Keeps at most about `max` points of a curve drawn against a log step axis: all early points,
/// then one per equal slice of `log10(step + 1)`, always the last.
pub fn thin_log(points: Vec<(f64, f64)>, max: usize) -> Vec<(f64, f64)> {
    if points.len() <= max || max < 2 {
        return points;
    }
    let lx = |x: f64| (x.max(0.0) + 1.0).log10();
    let (lo, hi) = (lx(points[0].0), lx(points[points.len() - 1].0));
    let width = (hi - lo) / max as f64;
    if width <= 0.0 {
        return points;
    }
    let last = points[points.len() - 1];
    let mut out = Vec::with_capacity(max + 1);
    let mut bucket = i64::MIN;
    for p in points {
        let b = ((lx(p.0) - lo) / width) as i64;
        if b != bucket {
            out.push(p);
            bucket = b;
        }
    }
    if out.last() != Some(&last) {
        out.push(last);
    }
    out
}

const THIN: usize = 1200;

/// Per-run figures are drawn for at most this many runs (the first by run id); the page notes
/// the rest. Figures over all runs are not limited.
pub const MAX_PER_RUN: usize = 24;

fn grok_rule(step: Option<i64>) -> Vec<Rule> {
    step.map(|g| Rule { vertical: true, at: g as f64, color: Color::GREY, label: Some(format!("grokking, step {g}")) })
        .into_iter()
        .collect()
}

fn grok_sentence(step: Option<i64>) -> String {
    match step {
        Some(g) => format!(
            "Dashed line: grokking step {g}, the first evaluation from which validation accuracy stays ≥ {GROK_THRESHOLD}."
        ),
        None => format!("The run never keeps validation accuracy ≥ {GROK_THRESHOLD} to its end (no grokking step)."),
    }
}

/// Item 1: loss and accuracy against step, one figure per run.
pub fn training(curves: &BTreeMap<String, RunCurves>, runs: &BTreeMap<String, RunId>) -> Built {
    if curves.is_empty() {
        return Err("no run has training metrics".into());
    }
    let mut out = Vec::new();
    for (run, c) in curves.iter().take(MAX_PER_RUN) {
        let id = runs.get(run).cloned().unwrap_or_else(|| RunId::named(run));
        let grok = grokking_step(&c.val);
        let mut loss = Chart::new("loss", Axis::log(STEP_AXIS), Axis::log("cross-entropy loss (nats, log scale)"));
        let mut acc = Chart::new("accuracy", Axis::log(STEP_AXIS), Axis::linear("accuracy (fraction of rows)").range(0.0, 1.02));
        for (chart, pick) in [(&mut loss, 0), (&mut acc, 1)] {
            chart.rules = grok_rule(grok);
            for (i, (name, curve)) in [("train", &c.train), ("validation", &c.val)].into_iter().enumerate() {
                let pts = if pick == 0 { curve.loss_points() } else { curve.accuracy_points() };
                chart.series.push(Series::new(name, palette(i), Mark::Line { width: 2 }, thin_log(pts, THIN)));
            }
        }
        out.push(FigureSpec {
            stem: format!("curves_{}", slug(run)),
            caption: format!(
                "Training and validation loss (log scale) and accuracy of run {} against the optimizer step. {} {LOG_NOTE}",
                run_label(&id),
                grok_sentence(grok)
            ),
            figure: Figure::new(format!("Training curves: {}", run_label(&id)), vec![Panel::Chart(loss), Panel::Chart(acc)], 2),
        });
    }
    Ok(out)
}

/// The LLC series of one run: band (mean ± std), line with points, flagged estimates.
fn llc_series(est: &[&LlcRow], color: Color, label: &str, out: &mut Vec<Series>) {
    let pts: Vec<(f64, f64)> = est.iter().map(|r| (r.step as f64, r.mean)).collect();
    let has_std = est.iter().any(|r| r.std.is_finite());
    if has_std {
        out.push(Series::unlabelled(
            color,
            Mark::Band {
                lower: est.iter().map(|r| r.mean - r.std).collect(),
                upper: est.iter().map(|r| r.mean + r.std).collect(),
            },
            pts.clone(),
        ));
    }
    out.push(Series::new(label, color, Mark::LinePoints { width: 2, shape: Shape::Circle, size: 3 }, pts));
}

fn flagged_series(est: &[&LlcRow]) -> Option<Series> {
    let flagged: Vec<(f64, f64)> = est.iter().filter(|r| !r.flags.is_empty()).map(|r| (r.step as f64, r.mean)).collect();
    (!flagged.is_empty()).then(|| Series::new("flagged estimate", Color(200, 0, 0), Mark::Points { shape: Shape::Cross, size: 6 }, flagged))
}

fn step_range(steps: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    let (lo, hi) = steps.filter(|s| *s > 0.0).fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), s| (a.min(s), b.max(s)));
    (lo.is_finite() && hi > lo).then(|| (lo / 1.15, hi * 1.15))
}

fn step_axis(range: Option<(f64, f64)>) -> Axis {
    match range {
        Some((lo, hi)) => Axis::log(STEP_AXIS).range(lo, hi),
        None => Axis::log(STEP_AXIS),
    }
}

/// Item 2: the LLC along training (band ±1 std over chains) above the validation loss, one
/// figure per run, plus one figure with every run.
pub fn llc_along(data: &Data, curves: &BTreeMap<String, RunCurves>, runs: &BTreeMap<String, RunId>) -> Built {
    if let Some(why) = data.llc.missing(super::inputs::TableKind::Llc) {
        return Err(why);
    }
    let by_run = summary::llc_by_run(&data.llc.rows);
    let mut out = Vec::new();
    let y_llc = "LLC estimate λ (mean ± 1 std over chains)";
    let y_loss = "loss (nats, log scale)";
    let all_steps = || {
        by_run
            .values()
            .flat_map(|v| v.iter().map(|r| r.step as f64))
            .chain(curves.values().flat_map(|c| c.val.steps.iter().chain(&c.train.steps).map(|&s| s as f64)))
    };
    let range_all = step_range(all_steps());
    for (run, est) in by_run.iter().take(MAX_PER_RUN) {
        let id = runs.get(run).cloned().unwrap_or_else(|| RunId::named(run));
        let c = curves.get(run);
        let grok = c.and_then(|c| grokking_step(&c.val));
        let steps = est
            .iter()
            .map(|r| r.step as f64)
            .chain(c.into_iter().flat_map(|c| c.val.steps.iter().chain(&c.train.steps).map(|&s| s as f64)));
        let range = step_range(steps);
        let mut top = Chart::new("LLC", step_axis(range), Axis::linear(y_llc));
        top.rules = grok_rule(grok);
        llc_series(est, palette(0), "LLC", &mut top.series);
        top.series.extend(flagged_series(est));
        let mut panels = vec![Panel::Chart(top)];
        let mut note = String::new();
        if let Some(c) = c {
            let mut bottom = Chart::new("loss", step_axis(range), Axis::log(y_loss));
            bottom.rules = grok_rule(grok);
            bottom.series.push(Series::new("train", palette(1), Mark::Line { width: 1 }, thin_log(c.train.loss_points(), THIN)));
            bottom.series.push(Series::new("validation", palette(2), Mark::Line { width: 2 }, thin_log(c.val.loss_points(), THIN)));
            panels.push(Panel::Chart(bottom));
        } else {
            note = " The loss panel is missing: this run has no training metrics.".into();
        }
        let flagged: Vec<String> =
            est.iter().filter(|r| !r.flags.is_empty()).map(|r| format!("step {} ({})", r.step, r.flags.join(", "))).collect();
        let flag_note = if flagged.is_empty() { String::new() } else { format!(" Flagged estimates: {}.", flagged.join("; ")) };
        out.push(FigureSpec {
            stem: format!("llc_{}", slug(run)),
            caption: format!(
                "LLC of run {} at each checkpoint (band: ±1 std over chains; red crosses: estimates with health flags), above the training and validation loss on the same step axis. {} {LOG_NOTE}{flag_note}{note}",
                run_label(&id),
                grok_sentence(grok)
            ),
            figure: Figure::new(format!("LLC along training: {}", run_label(&id)), panels, 1),
        });
    }
    if (2..=MAX_PER_RUN).contains(&by_run.len()) {
        let mut top = Chart::new("LLC, every run", step_axis(range_all), Axis::linear(y_llc));
        let mut bottom = Chart::new("validation loss, every run", step_axis(range_all), Axis::log(y_loss));
        for (i, (run, est)) in by_run.iter().enumerate() {
            let id = runs.get(run).cloned().unwrap_or_else(|| RunId::named(run));
            llc_series(est, palette(i), &run_label(&id), &mut top.series);
            if let Some(c) = curves.get(run) {
                bottom.series.push(Series::new(run_label(&id), palette(i), Mark::Line { width: 2 }, thin_log(c.val.loss_points(), THIN)));
            }
        }
        out.push(FigureSpec {
            stem: "llc_all_runs".into(),
            caption: format!("LLC (band ±1 std over chains) and validation loss of every run, one colour per run. {LOG_NOTE}"),
            figure: Figure::new("LLC along training, every run", vec![Panel::Chart(top), Panel::Chart(bottom)], 1),
        });
    }
    Ok(out)
}

/// A released checkpoint's measures, drawn as a reference.
#[derive(Debug, Clone, PartialEq)]
pub struct Reference {
    /// Legend text.
    pub label: String,
    /// α of the run.
    pub alpha: f64,
    /// Gradient symmetry.
    pub gradient_symmetry: f64,
    /// Distance irrelevance (correct logit).
    pub distance_irrelevance: f64,
    /// Circularity, when known.
    pub circularity: f64,
}

/// The released checkpoints: from the `released` table's last row per run when given, else the
/// values of the reference document (independent implementation, all pairs and all p³ triples).
pub fn references(released: &[SymmetryRow]) -> (Vec<Reference>, &'static str) {
    if !released.is_empty() {
        let last = summary::final_symmetry(released);
        let refs = last
            .values()
            .map(|r| Reference {
                label: format!("{} (released, α={})", r.id.run, num(r.id.alpha)),
                alpha: r.id.alpha,
                gradient_symmetry: r.gradient_symmetry,
                distance_irrelevance: r.distance_irrelevance,
                circularity: r.circularity,
            })
            .collect();
        return (refs, "the `released` symmetry table");
    }
    (
        vec![
            Reference {
                label: "Model A (released, α=0)".into(),
                alpha: 0.0,
                gradient_symmetry: 0.99376,
                distance_irrelevance: 0.17174,
                circularity: 0.99782,
            },
            Reference {
                label: "Model B (released, α=1)".into(),
                alpha: 1.0,
                gradient_symmetry: 0.34613,
                distance_irrelevance: 0.84826,
                circularity: 0.99891,
            },
        ],
        "the reference values of the paper's released Model A and Model B (no `released` table given)",
    )
}

fn ref_color(i: usize) -> Color {
    if i & 1 == 0 {
        Color::BLACK
    } else {
        Color::GREY
    }
}

/// Item 3: gradient symmetry, distance irrelevance and circularity along training.
pub fn symmetry_along(data: &Data, refs: &[Reference]) -> Built {
    if let Some(why) = data.symmetry.missing(super::inputs::TableKind::Symmetry) {
        return Err(why);
    }
    let mut by_run: BTreeMap<String, Vec<&SymmetryRow>> = BTreeMap::new();
    for r in &data.symmetry.rows {
        by_run.entry(r.id.run.clone()).or_default().push(r);
    }
    type Pick = fn(&SymmetryRow) -> f64;
    type RefPick = fn(&Reference) -> f64;
    let measures: [(&str, &str, Pick, RefPick); 3] = [
        ("gradient symmetry", "gradient symmetry (mean cosine)", |r| r.gradient_symmetry, |x| x.gradient_symmetry),
        ("distance irrelevance", "distance irrelevance (correct logit)", |r| r.distance_irrelevance, |x| x.distance_irrelevance),
        ("circularity", "circularity (mean circle score)", |r| r.circularity, |x| x.circularity),
    ];
    let steps = data.symmetry.rows.iter().map(|r| r.step as f64);
    let range = step_range(steps);
    let mut panels = Vec::new();
    for (title, ylabel, pick, rpick) in measures {
        let mut ch = Chart::new(title, step_axis(range), Axis::linear(ylabel));
        for (i, r) in refs.iter().enumerate() {
            let v = rpick(r);
            if v.is_finite() {
                ch.rules.push(Rule { vertical: false, at: v, color: ref_color(i), label: Some(r.label.clone()) });
            }
        }
        // Few runs: one colour per run. Many: one colour per α, one legend row per α.
        let by_colour_alpha = by_run.len() > 10;
        let mut seen_alpha: Vec<u64> = Vec::new();
        for (i, (_, rows)) in by_run.iter().enumerate() {
            let mut rows = rows.clone();
            rows.sort_by_key(|r| r.step);
            let pts: Vec<(f64, f64)> = rows.iter().map(|r| (r.step as f64, pick(r))).collect();
            let id = &rows[0].id;
            if by_colour_alpha {
                let first = !seen_alpha.contains(&id.alpha.to_bits());
                seen_alpha.push(id.alpha.to_bits());
                let label = first.then(|| format!("α = {}", num(id.alpha)));
                ch.series.push(Series { label, color: alpha_color(id.alpha), mark: Mark::Line { width: 1 }, points: pts });
            } else {
                ch.series.push(Series::new(run_label(id), palette(i), Mark::LinePoints { width: 2, shape: Shape::Circle, size: 3 }, pts));
            }
        }
        panels.push(Panel::Chart(ch));
    }
    Ok(vec![FigureSpec {
        stem: "symmetry_along_training".into(),
        caption: format!(
            "Gradient symmetry, distance irrelevance and circularity at each checkpoint, {}; dashed horizontal lines are the released checkpoints' values. {LOG_NOTE}",
            if by_run.len() > 10 { "one line per run, coloured by α" } else { "one colour per run" }
        ),
        figure: Figure::new("Pizza/Clock measures along training", panels, 3),
    }])
}

/// Groups values by α (sorted), keeping the α itself.
fn by_alpha<T>(items: impl Iterator<Item = (f64, T)>) -> Vec<(f64, Vec<T>)> {
    let mut out: Vec<(f64, Vec<T>)> = Vec::new();
    for (a, t) in items {
        match out.iter_mut().find(|(b, _)| b.to_bits() == a.to_bits()) {
            Some((_, v)) => v.push(t),
            None => out.push((a, vec![t])),
        }
    }
    out.sort_by(|x, y| x.0.total_cmp(&y.0));
    out
}

/// Item 4: gradient symmetry against distance irrelevance at the final checkpoints, coloured by
/// α, with the released checkpoints as reference points.
pub fn gs_vs_di(data: &Data, refs: &[Reference], ref_source: &str) -> Built {
    if let Some(why) = data.symmetry.missing(super::inputs::TableKind::Symmetry) {
        return Err(why);
    }
    let last = summary::final_symmetry(&data.symmetry.rows);
    let mut ch = Chart::new(
        "final checkpoints",
        Axis::linear("distance irrelevance (correct logit)"),
        Axis::linear("gradient symmetry (mean cosine)"),
    );
    for (alpha, rows) in by_alpha(last.values().map(|r| (r.id.alpha, *r))) {
        let pts: Vec<(f64, f64)> = rows.iter().map(|r| (r.distance_irrelevance, r.gradient_symmetry)).collect();
        let label = format!("α = {} ({} run{})", num(alpha), rows.len(), if rows.len() == 1 { "" } else { "s" });
        ch.series.push(Series::new(label, alpha_color(alpha), Mark::Points { shape: Shape::Circle, size: 6 }, pts));
    }
    for (i, r) in refs.iter().enumerate() {
        let shape = if i & 1 == 0 { Shape::Diamond } else { Shape::Square };
        ch.series.push(Series::new(r.label.clone(), ref_color(i), Mark::Points { shape, size: 6 }, vec![(r.distance_irrelevance, r.gradient_symmetry)]));
    }
    Ok(vec![FigureSpec {
        stem: "gs_vs_di_final".into(),
        caption: format!(
            "Gradient symmetry against distance irrelevance at the last checkpoint of each of {} runs, coloured by α (blue: α = 0, red: α = 1); Pizza solutions sit top left, Clock solutions bottom right. Black and grey markers: {ref_source}.",
            last.len()
        ),
        figure: Figure::new("Gradient symmetry against distance irrelevance", vec![Panel::Chart(ch)], 1),
    }])
}

/// Item 5: final LLC against α, one point per seed (error bars: ±1 std over chains).
pub fn llc_vs_alpha(runs: &[RunSummary]) -> Built {
    let with: Vec<&RunSummary> = runs.iter().filter(|s| s.llc_end.is_some() && s.id.alpha.is_finite()).collect();
    if with.is_empty() {
        return Err("no run has both an LLC estimate and a known α (needs `llc.parquet` and the run's id columns)".into());
    }
    let widths: Vec<i64> = {
        let mut w: Vec<i64> = with.iter().map(|s| s.id.d_model).collect();
        w.sort();
        w.dedup();
        w
    };
    let mut groups: BTreeMap<(i64, i64), Vec<&RunSummary>> = BTreeMap::new();
    for s in &with {
        groups.entry((s.id.d_model, s.id.seed)).or_default().push(s);
    }
    let (amin, amax) = with.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), s| (a.min(s.id.alpha), b.max(s.id.alpha)));
    let span = if amax > amin { amax - amin } else { 1.0 };
    let n = groups.len();
    let mut ch = Chart::new("final LLC", Axis::linear("attention rate α"), Axis::linear("final LLC estimate λ (± 1 std over chains)"));
    for (i, ((d, seed), list)) in groups.iter().enumerate() {
        let off = (i as f64 - (n as f64 - 1.0) / 2.0) * 0.012 * span;
        let mut list = list.clone();
        list.sort_by(|a, b| a.id.alpha.total_cmp(&b.id.alpha));
        let l: Vec<_> = list.iter().filter_map(|s| s.llc_end.map(|e| (s.id.alpha, e))).collect();
        let label = if widths.len() > 1 { format!("seed {seed}, d_model {d}") } else { format!("seed {seed}") };
        ch.series.push(Series::new(
            label,
            palette(i),
            Mark::ErrorBars {
                lower: l.iter().map(|(_, e)| e.mean - e.std).collect(),
                upper: l.iter().map(|(_, e)| e.mean + e.std).collect(),
                shape: Shape::Circle,
                size: 4,
            },
            l.iter().map(|(a, e)| (a + off, e.mean)).collect(),
        ));
    }
    let means: Vec<(f64, f64)> = by_alpha(with.iter().filter_map(|s| Some((s.id.alpha, s.llc_end?.mean))))
        .into_iter()
        .map(|(a, v)| (a, v.iter().sum::<f64>() / v.len() as f64))
        .collect();
    if means.len() >= 2 {
        ch.series.push(Series::new("mean over seeds", Color::GREY, Mark::Dashed { width: 2 }, means));
    }
    Ok(vec![FigureSpec {
        stem: "final_llc_vs_alpha".into(),
        caption: format!(
            "LLC at the last estimated checkpoint of each run against α, one colour per seed (points are shifted slightly sideways so that they do not overlap); error bars: ±1 std over chains; dashed: mean over seeds. {} runs.",
            with.len()
        ),
        figure: Figure::new("Final LLC against attention rate α", vec![Panel::Chart(ch)], 1),
    }])
}

/// Item 6: the embedding's Fourier spectrum at each run's final checkpoint.
pub fn spectra(list: &[(RunId, Spectrum)], source: &str) -> Built {
    if list.is_empty() {
        return Err("no spectrum: `scan_spectrum.parquet` is absent and no final checkpoint could be read".into());
    }
    let panels = list
        .iter()
        .map(|(id, s)| {
            let mut ch = Chart::new(
                format!("{}, step {}", run_label(id), s.step),
                Axis::linear("frequency k").integer(),
                Axis::linear("share of non-constant energy").range(0.0, s.entries.iter().map(|e| e.1).fold(0.05, f64::max) * 1.08),
            );
            let key: Vec<(f64, f64)> = s.entries.iter().filter(|e| e.2).map(|e| (e.0 as f64, e.1)).collect();
            let other: Vec<(f64, f64)> = s.entries.iter().filter(|e| !e.2).map(|e| (e.0 as f64, e.1)).collect();
            ch.series.push(Series::new("other frequency", Color(150, 150, 150), Mark::Stems { width: 3 }, other));
            ch.series.push(Series::new("key frequency", palette(3), Mark::Stems { width: 4 }, key));
            Panel::Chart(ch)
        })
        .collect();
    Ok(vec![FigureSpec {
        stem: "embedding_spectrum_final".into(),
        caption: format!(
            "Fourier spectrum of the token embedding (share of the non-constant energy at each frequency k = 1..⌊p/2⌋) at the final checkpoint of each run; red: key frequencies. Source: {source}."
        ),
        figure: Figure::new("Embedding Fourier spectrum, final checkpoints", panels, 2),
    }])
}

/// Item 7: correct-logit tables by `(a + b)` and `(a − b)`.
pub fn logit_tables(list: &[(String, LogitTable)]) -> Built {
    if list.is_empty() {
        return Err("no final checkpoint could be read for a Pizza or a Clock run".into());
    }
    let panels = list
        .iter()
        .map(|(title, t)| {
            let c: Vec<f64> = (0..t.p).map(|i| i as f64).collect();
            Panel::Heatmap(Heatmap {
                title: title.clone(),
                x: Axis::linear("(a − b) mod p"),
                y: Axis::linear("(a + b) mod p"),
                x_centres: c.clone(),
                y_centres: c,
                values: t.values.clone(),
                colorbar_label: "correct-class logit".into(),
                annotate: false,
            })
        })
        .collect();
    Ok(vec![FigureSpec {
        stem: "correct_logit_tables".into(),
        caption: "Correct-class logit of every pair (a, b) at the final checkpoint, in row (a + b) mod p and column (a − b) mod p. Clock: each row is nearly constant (the logit depends on a + b only; distance irrelevance near 1). Pizza: the logit also varies along a row with the distance a − b (distance irrelevance small).".into(),
        figure: Figure::new("Correct-logit tables", panels, 2),
    }])
}

/// Up to `max` steps spread over the sorted `steps`: the first, the last and evenly between.
pub fn spread(steps: &[i64], max: usize) -> Vec<i64> {
    if steps.len() <= max {
        return steps.to_vec();
    }
    let mut out: Vec<i64> = (0..max).map(|i| steps[(i * (steps.len() - 1)) / (max - 1).max(1)]).collect();
    out.dedup();
    out
}

/// Item 8a: SGLD loss traces for a few checkpoints of each run.
pub fn traces(data: &Data, per_run: usize) -> Built {
    if let Some(why) = data.trace.missing(super::inputs::TableKind::LlcTrace) {
        return Err(why);
    }
    let mut by: BTreeMap<String, BTreeMap<i64, BTreeMap<i64, Vec<&TraceRow>>>> = BTreeMap::new();
    for t in data.trace.rows.iter().filter(|t| t.restriction == WHOLE_MODEL) {
        by.entry(t.run.clone()).or_default().entry(t.step).or_default().entry(t.chain).or_default().push(t);
    }
    if by.is_empty() {
        return Err("the trace table holds no whole-model traces (`restriction` = `all`)".into());
    }
    let est: BTreeMap<(String, i64), &LlcRow> =
        data.llc.rows.iter().filter(|r| r.whole_model()).map(|r| ((r.id.run.clone(), r.step), r)).collect();
    let mut out = Vec::new();
    for (run, steps) in by.iter().take(MAX_PER_RUN) {
        let all: Vec<i64> = steps.keys().copied().collect();
        let chosen = spread(&all, per_run);
        let mut panels = Vec::new();
        for step in &chosen {
            let e = est.get(&(run.clone(), *step));
            let title = match e {
                Some(e) => format!("step {step}: λ = {} ± {}", num(e.mean), num(e.std)),
                None => format!("step {step}"),
            };
            let mut ch = Chart::new(title, Axis::linear("SGLD draw").integer(), Axis::linear("minibatch loss L_B (nats)"));
            if let Some(lw) = e.and_then(|e| e.loss_at_wstar) {
                ch.rules.push(Rule { vertical: false, at: lw, color: Color::BLACK, label: Some("L(w*)".into()) });
            }
            for (chain, rows) in &steps[step] {
                let mut rows = rows.clone();
                rows.sort_by_key(|r| r.draw);
                let pts = rows.iter().map(|r| (r.draw as f64, r.loss)).collect();
                ch.series.push(Series::new(format!("chain {chain}"), palette(*chain as usize), Mark::Line { width: 1 }, pts));
            }
            panels.push(Panel::Chart(ch));
        }
        out.push(FigureSpec {
            stem: format!("sgld_traces_{}", slug(run)),
            caption: format!(
                "SGLD minibatch loss along each chain for {} of the {} checkpoints of run {run} with traces (first, last and evenly between). A healthy chain rises from L(w*) and levels off.",
                chosen.len(),
                all.len()
            ),
            figure: Figure::new(format!("SGLD loss traces: {run}"), panels, 2),
        });
    }
    Ok(out)
}

/// Item 8b: the calibration grid, LLC against ε for each nβ (one panel per run, checkpoint and
/// γ), with the recommended point marked.
pub fn calibration(rows: &[CalibrationRow], missing: Option<String>) -> Built {
    if let Some(why) = missing {
        return Err(why);
    }
    let mut panels_by: BTreeMap<(String, i64, u64), Vec<&CalibrationRow>> = BTreeMap::new();
    for r in rows {
        panels_by.entry((r.run.clone(), r.step, r.gamma.to_bits())).or_default().push(r);
    }
    let mut panels = Vec::new();
    for ((run, step, _), list) in &panels_by {
        let gamma = list[0].gamma;
        let mut title = format!("{run}, step {step}");
        if gamma.is_finite() {
            title.push_str(&format!(", γ = {}", num(gamma)));
        }
        let mut ch = Chart::new(title, Axis::log("SGLD step size ε (log scale)"), Axis::linear("LLC estimate λ (± 1 std over chains)"));
        for (i, (nbeta, pts)) in by_alpha(list.iter().map(|r| (r.nbeta, *r))).into_iter().enumerate() {
            let mut pts = pts;
            pts.sort_by(|a, b| a.epsilon.total_cmp(&b.epsilon));
            let xy: Vec<(f64, f64)> = pts.iter().map(|r| (r.epsilon, r.mean)).collect();
            ch.series.push(Series::unlabelled(
                palette(i),
                Mark::Band { lower: pts.iter().map(|r| r.mean - r.std).collect(), upper: pts.iter().map(|r| r.mean + r.std).collect() },
                xy.clone(),
            ));
            ch.series.push(Series::new(format!("nβ = {}", num(nbeta)), palette(i), Mark::LinePoints { width: 2, shape: Shape::Circle, size: 3 }, xy));
        }
        let rec: Vec<(f64, f64)> = list.iter().filter(|r| r.recommended).map(|r| (r.epsilon, r.mean)).collect();
        if !rec.is_empty() {
            ch.series.push(Series::new("recommended", Color::BLACK, Mark::Points { shape: Shape::Diamond, size: 7 }, rec));
        }
        panels.push(Panel::Chart(ch));
    }
    Ok(vec![FigureSpec {
        stem: "llc_calibration".into(),
        caption: "Calibration sweep: LLC estimate against the SGLD step size ε, one line per nβ (band ±1 std over chains); the black diamond is the setting `llc calibrate` recommends. A good setting lies where the estimate is flat in both ε and nβ.".into(),
        figure: Figure::new("LLC calibration grid", panels, 2),
    }])
}

/// Marker colour of a checkpoint where the step ladder retried (`step_rungs > 1`).
const RETRIED_COLOR: Color = Color(255, 127, 14);

/// Item 8c: the step size the ladder chose (`llc::ladder`) and the diagnostics it was judged by,
/// along training, one figure per run: ε (log scale), split R-hat with [`R_HAT_MAX`] and MALA
/// acceptance with [`MALA_MIN`], stacked on the step axis of the LLC figures, with retried and
/// flagged checkpoints marked in every panel. What makes each LLC estimate trustworthy (or not)
/// is on this page, not only in the table.
pub fn step_diagnostics(data: &Data, curves: &BTreeMap<String, RunCurves>, runs: &BTreeMap<String, RunId>) -> Built {
    if let Some(why) = data.llc.missing(super::inputs::TableKind::Llc) {
        return Err(why);
    }
    let by_run = summary::llc_by_run(&data.llc.rows);
    if by_run.is_empty() {
        return Err("the LLC table holds no whole-model estimates (`restriction` = `all`)".into());
    }
    if !by_run.values().flatten().any(|r| r.epsilon.is_finite()) {
        return Err("no whole-model estimate records its step size (column `epsilon`)".into());
    }
    type Pick = fn(&LlcRow) -> f64;
    let panels_of: [(&str, Axis, Pick, Option<Rule>); 3] = [
        ("SGLD step size ε chosen", Axis::log("step size ε (log scale)"), |r| r.epsilon, None),
        (
            "split R-hat over chains",
            Axis::linear("split R-hat"),
            |r| r.r_hat,
            Some(Rule { vertical: false, at: R_HAT_MAX, color: Color::BLACK, label: Some(format!("flag above R-hat {}", num(R_HAT_MAX))) }),
        ),
        (
            "MALA acceptance",
            Axis::linear("mean MALA acceptance (fraction)"),
            |r| r.mala_acceptance,
            Some(Rule { vertical: false, at: MALA_MIN, color: Color::BLACK, label: Some(format!("flag below {}", num(MALA_MIN))) }),
        ),
    ];
    let mut out = Vec::new();
    for (run, est) in by_run.iter().take(MAX_PER_RUN) {
        let id = runs.get(run).cloned().unwrap_or_else(|| RunId::named(run));
        let c = curves.get(run);
        // The LLC figure's step range, so that the two figures line up.
        let range = step_range(
            est.iter()
                .map(|r| r.step as f64)
                .chain(c.into_iter().flat_map(|c| c.val.steps.iter().chain(&c.train.steps).map(|&s| s as f64))),
        );
        // Step 0 cannot sit on the log step axis; the caption gives its values.
        let drawn: Vec<&LlcRow> = est.iter().copied().filter(|r| r.step > 0).collect();
        let mut panels = Vec::new();
        for (title, y, pick, rule) in panels_of.iter().cloned() {
            let mut ch = Chart::new(title, step_axis(range), y);
            ch.rules.extend(rule);
            let at = |keep: fn(&LlcRow) -> bool| -> Vec<(f64, f64)> {
                drawn.iter().filter(|r| keep(r)).map(|r| (r.step as f64, pick(r))).filter(|p| p.1.is_finite()).collect()
            };
            ch.series.push(Series::new(title, palette(0), Mark::LinePoints { width: 2, shape: Shape::Circle, size: 3 }, at(|_| true)));
            let retried = at(|r| r.step_rungs > 1);
            if !retried.is_empty() {
                ch.series.push(Series::new("retried (ladder rungs > 1)", RETRIED_COLOR, Mark::Points { shape: Shape::Triangle, size: 6 }, retried));
            }
            let flagged = at(|r| !r.flags.is_empty());
            if !flagged.is_empty() {
                ch.series.push(Series::new("flagged estimate", Color(200, 0, 0), Mark::Points { shape: Shape::Cross, size: 6 }, flagged));
            }
            panels.push(Panel::Chart(ch));
        }
        let mut notes = String::new();
        if let Some(r0) = est.iter().find(|r| r.step == 0) {
            notes.push_str(&format!(
                " Step 0 (not on the log axis): ε {:.3e}, R-hat {}, MALA {}, {} rung{}{}.",
                r0.epsilon,
                num(r0.r_hat),
                num(r0.mala_acceptance),
                r0.step_rungs,
                if r0.step_rungs == 1 { "" } else { "s" },
                if r0.flags.is_empty() { String::new() } else { format!(", flagged {}", r0.flags.join(", ")) }
            ));
        }
        let retried: Vec<String> = est
            .iter()
            .filter(|r| r.step_rungs > 1)
            .map(|r| {
                let why = if r.rejected_steps.is_empty() { String::new() } else { format!(": {}", r.rejected_steps) };
                format!("step {} ({} rungs{why})", r.step, r.step_rungs)
            })
            .collect();
        if !retried.is_empty() {
            notes.push_str(&format!(" Retried: {}.", retried.join("; ")));
        }
        let flagged: Vec<String> =
            est.iter().filter(|r| !r.flags.is_empty()).map(|r| format!("step {} ({})", r.step, r.flags.join(", "))).collect();
        if !flagged.is_empty() {
            notes.push_str(&format!(" Flagged: {}.", flagged.join("; ")));
        }
        if !drawn.iter().any(|r| r.mala_acceptance.is_finite()) {
            notes.push_str(" MALA acceptance was not measured for this run.");
        }
        out.push(FigureSpec {
            stem: format!("sgld_step_{}", slug(run)),
            caption: format!(
                "The SGLD step size ε the step ladder chose at each checkpoint of run {} (log scale), with the split R-hat and the MALA acceptance it was judged by: a trustworthy estimate has R-hat below its line ({}) and acceptance above its line ({}), and a drop in ε (orange triangle: the ladder retried there) marks a checkpoint where the loss surface is sharper; red crosses are estimates still flagged. {LOG_NOTE}{notes}",
                run_label(&id),
                num(R_HAT_MAX),
                num(MALA_MIN)
            ),
            figure: Figure::new(format!("SGLD step size and diagnostics along training: {}", run_label(&id)), panels, 1),
        });
    }
    Ok(out)
}

/// Item 9: the phase diagram over α (and width), as the paper draws it (issue 15): at each
/// run's last checkpoint the gradient symmetry and distance irrelevance, the share of runs per
/// label, and the whole-model LLC (at the last estimate, and at step 0 where estimated; flagged
/// estimates left out). A cell of the grid is one (α, width); its runs are the seeds.
///
/// Two figures: lines against α (every run a point, the mean over seeds a line, one colour per
/// width; the label shares as one line per label at a single width, or the Pizza share per width
/// at several), and, with several widths, heatmaps over α × width of the means and of each
/// label's share.
pub fn phase_diagram(runs: &[RunSummary]) -> Built {
    let mut alphas: Vec<f64> = runs
        .iter()
        .filter(|s| s.id.alpha.is_finite() && (s.gradient_symmetry.is_some() || s.llc_end.is_some()))
        .map(|s| s.id.alpha)
        .collect();
    alphas.sort_by(f64::total_cmp);
    alphas.dedup();
    if alphas.len() < 2 {
        return Err("the experiment does not sweep α (fewer than two values of α with symmetry or LLC results)".into());
    }
    let mut widths: Vec<i64> = runs.iter().map(|s| s.id.d_model).filter(|d| *d > 0).collect();
    widths.sort();
    widths.dedup();
    let in_cell = |w: i64, a: f64| runs.iter().filter(move |s| s.id.d_model == w && s.id.alpha.to_bits() == a.to_bits());
    let mean = |v: &[f64]| if v.is_empty() { f64::NAN } else { v.iter().sum::<f64>() / v.len() as f64 };
    type Get = fn(&RunSummary) -> Option<f64>;
    let measures: [(&str, &str, Get); 4] = [
        ("gradient symmetry", "gradient symmetry (last checkpoint)", |s| s.gradient_symmetry),
        ("distance irrelevance", "distance irrelevance (last checkpoint)", |s| s.distance_irrelevance),
        ("LLC, last estimate", "whole-model LLC λ (last estimate)", |s| s.llc_end.and_then(|e| e.healthy_mean())),
        ("LLC, step 0", "whole-model LLC λ (step 0)", |s| s.llc_step0.and_then(|e| e.healthy_mean())),
    ];
    let labels = label_order(runs.iter().filter_map(|s| s.solution.clone()));
    // Share of the labelled runs of a cell that carry `label` (NaN: no labelled run).
    let share = |w: i64, a: f64, label: &str| {
        let labelled: Vec<&str> = in_cell(w, a).filter_map(|s| s.solution.as_deref()).collect();
        if labelled.is_empty() {
            f64::NAN
        } else {
            labelled.iter().filter(|l| **l == label).count() as f64 / labelled.len() as f64
        }
    };

    let mut panels = Vec::new();
    let mut absent = Vec::new();
    for (title, ylabel, get) in measures {
        if !runs.iter().any(|s| get(s).is_some_and(f64::is_finite)) {
            absent.push(title);
            continue;
        }
        let mut ch = Chart::new(title, Axis::linear("attention rate α"), Axis::linear(ylabel));
        for (wi, w) in widths.iter().enumerate() {
            let pts: Vec<(f64, f64)> = runs
                .iter()
                .filter(|s| s.id.d_model == *w && s.id.alpha.is_finite())
                .filter_map(|s| Some((s.id.alpha, get(s)?)))
                .filter(|(_, v)| v.is_finite())
                .collect();
            if pts.is_empty() {
                continue;
            }
            let means: Vec<(f64, f64)> = by_alpha(pts.iter().copied()).into_iter().map(|(a, v)| (a, mean(&v))).collect();
            let color = palette(wi);
            ch.series.push(Series::new(format!("d_model {w}: runs"), color, Mark::Points { shape: Shape::Circle, size: 3 }, pts));
            ch.series.push(Series::new(format!("d_model {w}: mean"), color, Mark::LinePoints { width: 2, shape: Shape::Square, size: 4 }, means));
        }
        panels.push(Panel::Chart(ch));
    }
    if !labels.is_empty() {
        let y = Axis::linear("share of the cell's runs").range(0.0, 1.02);
        let line = |label: String, color: Color, w: i64| {
            let pts: Vec<(f64, f64)> = alphas.iter().map(|&a| (a, share(w, a, &label))).filter(|p| p.1.is_finite()).collect();
            Series::new(label, color, Mark::LinePoints { width: 2, shape: Shape::Circle, size: 3 }, pts)
        };
        if widths.len() == 1 {
            let mut ch = Chart::new("share of runs per label", Axis::linear("attention rate α"), y);
            ch.series = labels.iter().map(|l| line(l.clone(), label_color(l), widths[0])).collect();
            panels.push(Panel::Chart(ch));
        } else if labels.iter().any(|l| l == PIZZA) {
            let mut ch = Chart::new("share of runs labelled pizza", Axis::linear("attention rate α"), y);
            for (wi, w) in widths.iter().enumerate() {
                let mut s = line(PIZZA.to_string(), palette(wi), *w);
                s.label = Some(format!("d_model {w}"));
                ch.series.push(s);
            }
            panels.push(Panel::Chart(ch));
        }
    }
    let flagged = runs.iter().filter(|s| s.llc_end.is_some_and(|e| !e.healthy) || s.llc_step0.is_some_and(|e| !e.healthy)).count();
    let mut note = String::new();
    if !absent.is_empty() {
        note.push_str(&format!(" No data for: {}.", absent.join(", ")));
    }
    if flagged > 0 {
        note.push_str(&format!(" {flagged} runs have a flagged LLC estimate there, left out of the LLC panels."));
    }
    let seeds: Vec<usize> =
        widths.iter().flat_map(|&w| alphas.iter().map(move |&a| (w, a))).map(|(w, a)| in_cell(w, a).count()).filter(|&n| n > 0).collect();
    let (lo, hi) = (seeds.iter().min().copied().unwrap_or(0), seeds.iter().max().copied().unwrap_or(0));
    let per_cell = if lo == hi { format!("{lo}") } else { format!("{lo}–{hi}") };
    let mut out = vec![FigureSpec {
        stem: "phase_diagram_alpha".into(),
        caption: format!(
            "Phase diagram over α: gradient symmetry and distance irrelevance at each run's last checkpoint, and the whole-model LLC at its last estimate and at step 0, for every run (small points) with the mean over seeds (line), one colour per width; the label panel shows the share of each cell's runs (its seeds: {per_cell} per cell) with each label at the last checkpoint.{note}"
        ),
        figure: Figure::new("Phase diagram over attention rate α", panels, 3),
    }];
    if widths.len() >= 2 {
        let grid = |value: &dyn Fn(i64, f64) -> f64| -> Vec<f64> {
            widths.iter().flat_map(|&w| alphas.iter().map(move |&a| (w, a))).map(|(w, a)| value(w, a)).collect()
        };
        let annotate = alphas.len() * widths.len() <= 80;
        let heat = |title: String, values: Vec<f64>, bar: &str| {
            Panel::Heatmap(Heatmap {
                title,
                x: Axis::linear("attention rate α"),
                y: Axis::log("width d_model (log scale)"),
                x_centres: alphas.clone(),
                y_centres: widths.iter().map(|&w| w as f64).collect(),
                values,
                colorbar_label: bar.to_string(),
                annotate,
            })
        };
        let mut panels = Vec::new();
        for (title, _, get) in measures {
            let values = grid(&|w, a| mean(&in_cell(w, a).filter_map(get).filter(|v| v.is_finite()).collect::<Vec<_>>()));
            if values.iter().any(|v| v.is_finite()) {
                panels.push(heat(format!("{title}, mean over seeds"), values, title));
            }
        }
        for l in &labels {
            panels.push(heat(format!("share of runs labelled {l}"), grid(&|w, a| share(w, a, l)), &format!("share {l}")));
        }
        out.push(FigureSpec {
            stem: "phase_diagram_alpha_width".into(),
            caption: format!(
                "Phase diagram over α and width: mean over the seeds of each cell ({per_cell} per cell) of the gradient symmetry, distance irrelevance and whole-model LLC, and the share of the cell's runs with each label (grey: no run).{note}"
            ),
            figure: Figure::new("Phase diagram over α and width", panels, 3),
        });
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// The comparison at a fixed α (issue 14; data from `super::compare`).

/// The colour of a solution label: Pizza blue and Clock red (as α's colours), the rest neutral.
pub fn label_color(label: &str) -> Color {
    match label {
        "pizza" => palette(0),
        "clock" => palette(3),
        "unclear" => palette(4),
        "non-circular" => palette(7),
        _ => palette(1),
    }
}

/// Labels in page order: pizza, clock, non-circular, unclear, then any other by name; each once.
pub fn label_order(labels: impl Iterator<Item = String>) -> Vec<String> {
    let rank = |l: &str| ["pizza", "clock", "non-circular", "unclear"].iter().position(|k| *k == l).unwrap_or(4);
    let mut v: Vec<String> = labels.collect::<std::collections::BTreeSet<_>>().into_iter().collect();
    v.sort_by(|a, b| rank(a).cmp(&rank(b)).then(a.cmp(b)));
    v
}

/// Tukey's hinges and median of a sample: `(lower hinge, median, upper hinge)`, the hinges the
/// medians of the lower and upper halves (each including the median for odd n). NaN if empty.
pub fn hinges(x: &[f64]) -> (f64, f64, f64) {
    let mut v = x.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let lower = stats::summary(&v[..n.div_ceil(2)]).median;
    let upper = stats::summary(&v[n / 2..]).median;
    (lower, stats::summary(&v).median, upper)
}

/// Estimates along training a run needs to appear in the LLC-along-training figure.
pub const MIN_ALONG: usize = 4;

/// A sideways offset in [−0.2, 0.2] for the `i`-th point of a category (golden-ratio spacing:
/// spread out, deterministic).
fn jitter(i: usize) -> f64 {
    ((i as f64 * 0.618_033_988_75).fract() - 0.5) * 0.4
}

/// The LLC by label at one checkpoint of one group: a box per label (hinges, whiskers to the
/// extremes) with every run as a point over it.
fn by_label_panel(c: &Comparison, labels: &[String]) -> Panel {
    let mut ch = Chart::new(
        format!("{}, {}", group_title(&c.group), c.at.name()),
        Axis::categorical("label at the compared checkpoint", labels.to_vec()),
        Axis::linear("LLC estimate λ"),
    );
    for (i, l) in labels.iter().enumerate() {
        let v: Vec<f64> = c.points.iter().filter(|p| &p.label == l).map(|p| p.llc).collect();
        if v.is_empty() {
            continue;
        }
        let (q1, med, q3) = hinges(&v);
        let (lo, hi) = v.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| (a.min(x), b.max(x)));
        let x = i as f64;
        ch.series.push(Series::unlabelled(
            label_color(l),
            Mark::Boxes { lower: vec![q1], upper: vec![q3], low: vec![lo], high: vec![hi], half_width: 0.3 },
            vec![(x, med)],
        ));
        let pts = v.iter().enumerate().map(|(k, &y)| (x + jitter(k), y)).collect();
        ch.series.push(Series::new(format!("{l} (n = {})", v.len()), label_color(l), Mark::Points { shape: Shape::Circle, size: 3 }, pts));
    }
    Panel::Chart(ch)
}

fn group_title(group: &str) -> String {
    if group == WHOLE_MODEL {
        "whole model".to_string()
    } else {
        format!("group {group}")
    }
}

/// The figures of the comparison, three per arm: the LLC by label at step 0 and at the compared
/// checkpoint, the LLC against gradient symmetry, and the LLC along training per label. Notes
/// say what could not be drawn.
pub fn comparison(cmp: &Comparisons, data: &Data) -> (Vec<FigureSpec>, Vec<String>) {
    let mut out = Vec::new();
    let mut notes = Vec::new();
    for arm in &cmp.arms {
        let name = arm.cell.describe(&cmp.cells);
        if arm.groups.is_empty() {
            notes.push(format!("No comparison figures for {name}: none of its runs has an LLC estimate."));
            continue;
        }
        let stem = slug(&arm.cell.stem(&cmp.cells));
        let labels = label_order(arm.runs.iter().filter(|r| r.settled()).map(|r| r.label.clone()));
        let has_init = arm.groups.iter().any(|g| g.init.is_some());
        let mut panels = Vec::new();
        for g in &arm.groups {
            if let Some(i) = &g.init {
                panels.push(by_label_panel(i, &labels));
            } else if has_init {
                // Keeps the rows aligned: step 0 left, the compared checkpoint right.
                let title = format!("{}, step 0", group_title(&g.compared.group));
                panels.push(Panel::Chart(Chart::new(title, Axis::categorical("label", labels.clone()), Axis::linear("LLC estimate λ"))));
            }
            panels.push(by_label_panel(&g.compared, &labels));
        }
        out.push(FigureSpec {
            stem: format!("compare_llc_by_label_{stem}"),
            caption: format!(
                "LLC by label at {name}: each settled run with a healthy estimate as a point over a box (median, Tukey's hinges, whiskers to the extremes); {}one row per parameter group. Labels are those of the compared checkpoint ({}).",
                if has_init { "left: step 0 (the control), right: the compared checkpoint; " } else { "" },
                arm.steps_text()
            ),
            figure: Figure::new(format!("LLC by label: {name}"), panels, if has_init { 2 } else { 3 }),
        });

        let panels = arm
            .groups
            .iter()
            .map(|g| {
                let c = &g.compared;
                let mut ch = Chart::new(group_title(&c.group), Axis::linear("gradient symmetry (compared checkpoint)"), Axis::linear("LLC estimate λ"));
                for l in &labels {
                    let pts: Vec<(f64, f64)> = c.points.iter().filter(|p| &p.label == l).map(|p| (p.gradient_symmetry, p.llc)).collect();
                    if !pts.is_empty() {
                        ch.series.push(Series::new(l.clone(), label_color(l), Mark::Points { shape: Shape::Circle, size: 4 }, pts));
                    }
                }
                Panel::Chart(ch)
            })
            .collect();
        out.push(FigureSpec {
            stem: format!("compare_llc_vs_gs_{stem}"),
            caption: format!(
                "LLC against gradient symmetry at the compared checkpoint ({}) of every settled run of {name} with a healthy estimate, coloured by label, one panel per parameter group. The table above gives Spearman's ρ for each panel.",
                arm.steps_text()
            ),
            figure: Figure::new(format!("LLC against gradient symmetry: {name}"), panels, 3),
        });

        match along(arm, data, &labels) {
            Ok(panels) => out.push(FigureSpec {
                stem: format!("compare_llc_along_{stem}"),
                caption: format!(
                    "LLC along training of the settled runs of {name} with at least {MIN_ALONG} healthy estimates, per label: the median over runs at each checkpoint (line) and Tukey's hinges (band), one panel per parameter group. {LOG_NOTE}"
                ),
                figure: Figure::new(format!("LLC along training by label: {name}"), panels, 3),
            }),
            Err(why) => notes.push(format!("No LLC-along-training figure for {name}: {why}.")),
        }
    }
    (out, notes)
}

/// The panels of the LLC-along-training figure of one arm.
fn along(arm: &Arm, data: &Data, labels: &[String]) -> Result<Vec<Panel>, String> {
    let label_of: BTreeMap<&str, &str> =
        arm.runs.iter().filter(|r| r.settled()).map(|r| (r.id.run.as_str(), r.label.as_str())).collect();
    // group → run → healthy estimates by step.
    let mut by: BTreeMap<&str, BTreeMap<&str, Vec<&LlcRow>>> = BTreeMap::new();
    for r in data.llc.rows.iter().filter(|r| r.healthy() && label_of.contains_key(r.id.run.as_str())) {
        by.entry(r.restriction.as_str()).or_default().entry(r.id.run.as_str()).or_default().push(r);
    }
    let mut panels = Vec::new();
    for g in arm.groups.iter().map(|g| g.compared.group.as_str()) {
        let Some(runs) = by.get(g) else { continue };
        let mut ch = Chart::new(group_title(g), step_axis(None), Axis::linear("LLC estimate λ (median, hinges over runs)"));
        for l in labels {
            let mut at: BTreeMap<i64, Vec<f64>> = BTreeMap::new();
            let mut n = 0;
            for est in runs.iter().filter(|(run, est)| label_of[**run] == l.as_str() && est.len() >= MIN_ALONG).map(|(_, e)| e) {
                n += 1;
                for e in est {
                    at.entry(e.step).or_default().push(e.mean);
                }
            }
            if n == 0 {
                continue;
            }
            let h: Vec<(f64, (f64, f64, f64))> = at.iter().map(|(s, v)| (*s as f64, hinges(v))).collect();
            ch.series.push(Series::unlabelled(
                label_color(l),
                Mark::Band { lower: h.iter().map(|p| p.1 .0).collect(), upper: h.iter().map(|p| p.1 .2).collect() },
                h.iter().map(|p| (p.0, p.1 .1)).collect(),
            ));
            ch.series.push(Series::new(
                format!("{l} ({n} runs)"),
                label_color(l),
                Mark::LinePoints { width: 2, shape: Shape::Circle, size: 3 },
                h.iter().map(|p| (p.0, p.1 .1)).collect(),
            ));
        }
        if !ch.series.is_empty() {
            panels.push(Panel::Chart(ch));
        }
    }
    if panels.is_empty() {
        return Err(format!("no settled run has healthy LLC estimates at {MIN_ALONG} or more checkpoints"));
    }
    Ok(panels)
}
