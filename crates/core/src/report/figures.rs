//! Figure descriptions built from the rows: each function returns the figures of one report
//! item as [`FigureSpec`]s (plain [`crate::plot`] structs), or the reason it is skipped.

use std::collections::BTreeMap;

use super::findings::num;
use super::inputs::{CalibrationRow, Data, LlcRow, RunId, SymmetryRow, TraceRow};
use super::summary::{self, grokking_step, RunCurves, RunSummary, GROK_THRESHOLD};
use super::weights::{LogitTable, Spectrum};
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
    for t in &data.trace.rows {
        by.entry(t.run.clone()).or_default().entry(t.step).or_default().entry(t.chain).or_default().push(t);
    }
    let est: BTreeMap<(String, i64), &LlcRow> = data.llc.rows.iter().map(|r| ((r.id.run.clone(), r.step), r)).collect();
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

/// Item 9: the phase diagram over α (and width): gradient symmetry, distance irrelevance and
/// the final LLC.
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
    type Get = fn(&RunSummary) -> Option<f64>;
    let measures: [(&str, &str, Get); 3] = [
        ("gradient symmetry", "gradient symmetry (final)", |s| s.gradient_symmetry),
        ("distance irrelevance", "distance irrelevance (final)", |s| s.distance_irrelevance),
        ("LLC", "LLC estimate λ (final)", |s| s.llc_end.map(|e| e.mean)),
    ];
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
            let means: Vec<(f64, f64)> = by_alpha(pts.iter().copied())
                .into_iter()
                .map(|(a, v)| (a, v.iter().sum::<f64>() / v.len() as f64))
                .collect();
            let color = palette(wi);
            ch.series.push(Series::new(format!("d_model {w}: runs"), color, Mark::Points { shape: Shape::Circle, size: 3 }, pts));
            ch.series.push(Series::new(format!("d_model {w}: mean"), color, Mark::LinePoints { width: 2, shape: Shape::Square, size: 4 }, means));
        }
        panels.push(Panel::Chart(ch));
    }
    let note = if absent.is_empty() { String::new() } else { format!(" No data for: {}.", absent.join(", ")) };
    let mut out = vec![FigureSpec {
        stem: "phase_diagram_alpha".into(),
        caption: format!(
            "Phase diagram over α: final gradient symmetry, distance irrelevance and LLC of every run (small points) and their mean over seeds (line), one colour per width.{note}"
        ),
        figure: Figure::new("Phase diagram over attention rate α", panels, 3),
    }];
    if widths.len() >= 2 {
        let mut panels = Vec::new();
        for (title, _, get) in measures {
            let mut values = Vec::with_capacity(alphas.len() * widths.len());
            for w in &widths {
                for a in &alphas {
                    let v: Vec<f64> = runs
                        .iter()
                        .filter(|s| s.id.d_model == *w && s.id.alpha.to_bits() == a.to_bits())
                        .filter_map(get)
                        .filter(|v| v.is_finite())
                        .collect();
                    values.push(if v.is_empty() { f64::NAN } else { v.iter().sum::<f64>() / v.len() as f64 });
                }
            }
            if values.iter().all(|v| !v.is_finite()) {
                continue;
            }
            panels.push(Panel::Heatmap(Heatmap {
                title: format!("{title}, mean over seeds"),
                x: Axis::linear("attention rate α"),
                y: Axis::log("width d_model (log scale)"),
                x_centres: alphas.clone(),
                y_centres: widths.iter().map(|&w| w as f64).collect(),
                values,
                colorbar_label: title.to_string(),
                annotate: alphas.len() * widths.len() <= 80,
            }));
        }
        out.push(FigureSpec {
            stem: "phase_diagram_alpha_width".into(),
            caption: "Phase diagram over α and width: mean over seeds of the final gradient symmetry, distance irrelevance and LLC (grey: no run).".into(),
            figure: Figure::new("Phase diagram over α and width", panels, 3),
        });
    }
    Ok(out)
}
