//! The report on small synthetic experiments: four runs (α ∈ {0, 1} × seed ∈ {0, 1}) with
//! metrics, symmetry, LLC and trace tables written through `tables::write_parquet`, and tiny
//! checkpoints (p = 5, d_model = 8) for two of them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::Device;

use super::findings::paired_final_llc;
use super::inputs::{self, TableKind};
use super::summary::{grokking_step, Curve};
use super::*;
use crate::model::Activation;
use crate::model::{ModelConfig, Params};
use crate::tables::{analysis, llc as llc_tables, train as train_tables, write_filled as write, Values};

const P: i64 = 5;

/// `(run, α, seed)` of the synthetic grid.
const RUNS: [(&str, f64, i64); 4] =
    [("alpha0_seed0", 0.0, 0), ("alpha0_seed1", 0.0, 1), ("alpha1_seed0", 1.0, 0), ("alpha1_seed1", 1.0, 1)];

/// Final LLC of each run: seed 0 has α = 1 below α = 0 (40 < 50), seed 1 does not (36 > 30).
fn final_llc(run: &str) -> f64 {
    match run {
        "alpha0_seed0" => 50.0,
        "alpha1_seed0" => 40.0,
        "alpha0_seed1" => 30.0,
        "alpha1_seed1" => 36.0,
        _ => unreachable!(),
    }
}

pub(super) struct Tmp(pub(super) PathBuf);

impl Tmp {
    pub(super) fn new(name: &str) -> Tmp {
        let d = std::env::temp_dir().join(format!("report-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Tmp(d)
    }
}

impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn id_cols(run: &str, alpha: f64, seed: i64, n: usize) -> Vec<(&'static str, Values)> {
    vec![
        ("run", vec![run; n].into()),
        ("p", vec![P; n].into()),
        ("alpha", vec![alpha; n].into()),
        ("seed", vec![seed; n].into()),
        ("weight_decay", vec![2.0; n].into()),
        ("train_frac", vec![0.8; n].into()),
        ("d_model", vec![8i64; n].into()),
    ]
}

fn metrics(run: &str, alpha: f64, seed: i64, path: &Path) {
    // Train every step 0..=100; validation every 10 steps; validation accuracy reaches 1 at step
    // 60 (α = 0) or 80 (α = 1), with a transient spike to 1 at step 20.
    let grok = if alpha == 0.0 { 60 } else { 80 };
    let mut step = Vec::new();
    let mut split = Vec::new();
    let mut loss = Vec::new();
    let mut acc = Vec::new();
    for t in 0..=100i64 {
        step.push(t);
        split.push("train");
        loss.push(4.0 / (1.0 + t as f64));
        acc.push((t as f64 / 30.0).min(1.0));
        if t % 10 == 0 {
            step.push(t);
            split.push("val");
            loss.push(if t >= grok { 0.01 } else { 3.0 });
            acc.push(if t >= grok || t == 20 { 1.0 } else { 0.1 + seed as f64 * 0.01 });
        }
    }
    let n = step.len();
    let mut cols = id_cols(run, alpha, seed, n);
    cols.push(("step", (step).into()));
    cols.push(("split", (split).into()));
    cols.push(("loss", (loss).into()));
    cols.push(("accuracy", (acc).into()));
    cols.push(("lr", (vec![1e-3; n]).into()));
    cols.push(("param_norm", (vec![10.0; n]).into()));
    write(cols, &train_tables::TRAIN_METRICS, path);
}

fn symmetry(run: &str, alpha: f64, seed: i64, path: &Path) {
    let steps = vec![0i64, 50, 100];
    let n = steps.len();
    let (gs, di, sol) = if alpha == 0.0 { (0.99, 0.15, "pizza") } else { (0.4, 0.85, "clock") };
    let mut cols = id_cols(run, alpha, seed, n);
    cols.push(("step", (steps.clone()).into()));
    cols.push(("checkpoint", (steps.iter().map(|s| format!("ckpt_{s}")).collect::<Vec<_>>()).into()));
    cols.push(("accuracy", (vec![0.1, 0.9, 1.0]).into()));
    cols.push(("gradient_symmetry", (vec![0.5, (0.5 + gs) / 2.0, gs]).into()));
    cols.push(("gradient_symmetry_exact", (vec![true; n]).into()));
    cols.push(("gradient_symmetry_triples", (vec![P * P * P; n]).into()));
    cols.push(("distance_irrelevance", (vec![0.5, (0.5 + di) / 2.0, di]).into()));
    cols.push(("distance_irrelevance_top_wrong", (vec![0.5, 0.5, di + 0.02]).into()));
    cols.push(("circularity", (vec![0.2, 0.7, 0.99]).into()));
    cols.push(("fve_clock", (vec![0.0, 0.3, 1.0 - gs]).into()));
    cols.push(("fve_pizza", (vec![0.0, 0.3, gs]).into()));
    cols.push(("key_freqs", (vec![vec![], vec![1i64], vec![1, 2]]).into()));
    cols.push(("n_key_freqs", (vec![0i64, 1, 2]).into()));
    cols.push(("solution", (vec!["non-circular", "unclear", sol]).into()));
    write(cols, &analysis::SYMMETRY, path);
}

fn llc(run: &str, alpha: f64, seed: i64, path: &Path) {
    let steps = vec![0i64, 10, 50, 100];
    let n = steps.len();
    let end = final_llc(run);
    let mut cols = id_cols(run, alpha, seed, n);
    cols.push(("step", (steps).into()));
    cols.push(("checkpoint", (vec!["x"; n]).into()));
    cols.push(("restriction", (vec!["all"; n]).into()));
    cols.push(("llc_mean", (vec![5.0, 2.0 * end, 1.5 * end, end]).into()));
    cols.push(("llc_std", (vec![0.5, 2.0, 1.5, 1.0]).into()));
    cols.push(("loss_at_wstar", (vec![4.0, 1.0, 0.1, 0.01]).into()));
    // One flagged estimate (alpha1_seed1 at step 10) to see the flags in the run table.
    cols.push(("negative_mean", (vec![false, run == "alpha1_seed1", false, false]).into()));
    // A count of flagged chains (a flag when positive) and counts that are not flags.
    cols.push(("n_diverged", (vec![0i64, 0, 0, i64::from(run == "alpha0_seed1")]).into()));
    cols.push(("chains", (vec![4i64; n]).into()));
    cols.push(("n_train", (vec![20i64; n]).into()));
    // The settings columns parse back into settings.
    cols.push(("nbeta_setting", (vec!["n_over_ln_n"; n]).into()));
    cols.push(("loss_at_wstar_mode", (vec!["full_training_set"; n]).into()));
    cols.push(("epsilon_setting", (vec!["{per_nbeta: 8.8e-3}"; n]).into()));
    cols.push(("burn_in_setting", (vec!["{relaxations: 1.5}"; n]).into()));
    cols.push(("steps_between_draws_setting", (vec!["4"; n]).into()));
    // The step ladder's record: alpha0_seed0 retried at step 10 (its first ε halved).
    let retried = run == "alpha0_seed0";
    cols.push(("epsilon", (vec![2e-4, if retried { 1e-4 } else { 2e-4 }, 2e-4, 4e-4]).into()));
    cols.push(("step_rungs", (vec![1i64, if retried { 2 } else { 1 }, 1, 1]).into()));
    let rejected = if retried { "ε 2.000e-4, 200 draws: flag_mala → ε/2" } else { "" };
    cols.push(("rejected_steps", (vec!["", rejected, "", ""]).into()));
    cols.push(("r_hat", (vec![1.01, 1.02, 1.0, 1.03]).into()));
    cols.push(("mala_acceptance", (vec![0.95, 0.85, 0.9, 0.92]).into()));
    cols.push(("gamma", (vec![300.0; n]).into()));
    write(cols, &llc_tables::LLC_SUMMARY, path);
}

fn trace(run: &str, path: &Path) {
    let (mut step, mut chain, mut draw, mut loss) = (vec![], vec![], vec![], vec![]);
    for s in [0i64, 10, 50, 100] {
        for c in 0..2i64 {
            for d in 0..6i64 {
                step.push(s);
                chain.push(c);
                draw.push(d);
                loss.push(0.01 + 0.1 * (1.0 - (-(d as f64)).exp()) + 0.01 * c as f64);
            }
        }
    }
    let n = step.len();
    let cols = vec![
        ("run", (vec![run; n]).into()),
        ("step", (step).into()),
        ("restriction", (vec!["all"; n]).into()),
        ("chain", (chain).into()),
        ("draw", (draw).into()),
        ("loss", (loss).into()),
    ];
    write(cols, &llc_tables::LLC_TRACE, path);
}

fn calibration(run: &str, path: &Path) {
    let (mut eps, mut nbeta, mut mean, mut rec) = (vec![], vec![], vec![], vec![]);
    for nb in [10.0, 100.0] {
        for e in [1e-5, 1e-4, 1e-3] {
            eps.push(e);
            nbeta.push(nb);
            mean.push(30.0 + nb / 10.0 + 1e4 * e);
            rec.push(nb == 10.0 && e == 1e-4);
        }
    }
    let n = eps.len();
    let cols = vec![
        ("run", (vec![run; n]).into()),
        ("step", (vec![100i64; n]).into()),
        ("epsilon", (eps).into()),
        ("gamma", (vec![100.0; n]).into()),
        ("nbeta", (nbeta).into()),
        ("llc_mean", (mean).into()),
        ("llc_std", (vec![1.0; n]).into()),
        ("recommended", (rec).into()),
    ];
    write(cols, &llc_tables::LLC_CALIBRATION, path);
}

fn checkpoint(alpha: f64, seed: u64, path: &Path) {
    let cfg = ModelConfig {
        p: P as usize,
        vocab: P as usize,
        n_ctx: 2,
        d_model: 8,
        n_heads: 2,
        d_head: 4,
        d_mlp: 16,
        n_layers: 1,
        act: Activation::Relu,
        alpha,
    };
    let params = Params::init(&cfg, seed, &Device::Cpu).unwrap();
    let meta = BTreeMap::from([("step".to_string(), "100".to_string())]);
    crate::ckpt::save(path, &params, &cfg, &meta).unwrap();
}

/// The synthetic experiment; `with_llc` false leaves out the LLC tables.
fn experiment(dir: &Path, with_llc: bool) {
    for (run, alpha, seed) in RUNS {
        let d = dir.join("runs").join(run);
        metrics(run, alpha, seed, &d.join("metrics.parquet"));
        symmetry(run, alpha, seed, &d.join("symmetry.parquet"));
        if with_llc {
            llc(run, alpha, seed, &d.join("llc.parquet"));
        }
        if seed == 0 {
            checkpoint(alpha, seed as u64, &d.join("checkpoints").join(crate::ckpt::checkpoint_name(100)));
            if with_llc {
                trace(run, &d.join("llc_trace.parquet"));
            }
        }
    }
}

pub(super) fn opts(dir: &Path, out: &Path) -> Options {
    Options { dir: Some(dir.to_path_buf()), out: out.to_path_buf(), traces_per_run: 3, ..Options::default() }
}

/// Width and height from a PNG's IHDR chunk, after checking the signature.
pub(super) fn png_size(bytes: &[u8]) -> (u32, u32) {
    assert!(bytes.len() > 24, "PNG too short");
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "not a PNG signature");
    assert_eq!(&bytes[12..16], b"IHDR");
    (u32::from_be_bytes(bytes[16..20].try_into().unwrap()), u32::from_be_bytes(bytes[20..24].try_into().unwrap()))
}

/// A rough well-formedness check: tags nest and close, the root is `svg`.
pub(super) fn check_svg(text: &str) {
    let t = text.trim_start();
    assert!(t.starts_with("<svg") || t.starts_with("<?xml"), "SVG starts with {:?}", &t[..t.len().min(40)]);
    let mut stack: Vec<String> = Vec::new();
    let mut rest = t;
    let mut saw_svg = false;
    while let Some(i) = rest.find('<') {
        rest = &rest[i..];
        if rest.starts_with("<?") {
            rest = &rest[rest.find("?>").expect("unclosed <?") + 2..];
            continue;
        }
        if rest.starts_with("<!--") {
            rest = &rest[rest.find("-->").expect("unclosed comment") + 3..];
            continue;
        }
        let end = rest.find('>').expect("unclosed tag");
        let tag = &rest[1..end];
        if let Some(name) = tag.strip_prefix('/') {
            assert_eq!(stack.pop().as_deref(), Some(name.trim()), "mismatched </{name}>");
        } else if !tag.ends_with('/') {
            let name = tag.split_whitespace().next().unwrap().to_string();
            saw_svg |= name == "svg";
            stack.push(name);
        }
        rest = &rest[end + 1..];
    }
    assert!(saw_svg && stack.is_empty(), "unclosed tags {stack:?}");
}

/// Every file reference of the page (src and href, anchors left out).
pub(super) fn referenced(html: &str) -> Vec<String> {
    let mut out = Vec::new();
    for pat in ["src=\"", "href=\""] {
        let mut rest = html;
        while let Some(i) = rest.find(pat) {
            rest = &rest[i + pat.len()..];
            let end = rest.find('"').unwrap();
            let target = &rest[..end];
            if !target.starts_with('#') {
                out.push(target.to_string());
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

#[test]
fn full_report_is_complete_and_valid() {
    let tmp = Tmp::new("full");
    let dir = tmp.0.join("exp");
    experiment(&dir, true);
    let out = tmp.0.join("out");
    let o = run(&opts(&dir, &out)).unwrap();
    let html = std::fs::read_to_string(out.join("index.html")).unwrap();
    if let Ok(keep) = std::env::var("REPORT_TEST_KEEP") {
        // For looking at the figures by eye.
        let keep = PathBuf::from(keep);
        std::fs::create_dir_all(&keep).unwrap();
        std::fs::copy(out.join("index.html"), keep.join("index.html")).unwrap();
        for stem in &o.figures {
            for ext in ["svg", "png"] {
                let rel = format!("{stem}.{ext}");
                std::fs::copy(out.join(&rel), keep.join(&rel)).unwrap();
            }
        }
    }

    // Every reference resolves; every figure written is referenced as SVG and PNG.
    let refs = referenced(&html);
    for r in &refs {
        assert!(!r.contains('/') && !r.contains(':'), "reference outside the report folder: {r}");
        assert!(out.join(r).is_file(), "{r} is referenced but missing");
    }
    for stem in &o.figures {
        for ext in ["svg", "png"] {
            let rel = format!("{stem}.{ext}");
            assert!(refs.contains(&rel), "{rel} not referenced");
        }
        let png = std::fs::read(out.join(format!("{stem}.png"))).unwrap();
        let (w, h) = png_size(&png);
        assert!(w > 0 && h > 0);
        let svg = std::fs::read_to_string(out.join(format!("{stem}.svg"))).unwrap();
        assert!(!svg.is_empty());
        check_svg(&svg);
    }
    // The LLC section says at which γ the estimates were made (the tables' `gamma` column).
    assert!(html.contains("Localisation γ = 300: an estimate is comparable only with estimates at the same γ."));
    // No scripts, no external resources.
    assert!(!html.contains("<script") && !html.contains("http://") && !html.contains("https://"));
    assert!(html.contains("<style>"));

    // The figures of every item with data.
    let want = [
        "curves_alpha0_seed0",
        "curves_alpha1_seed1",
        "llc_alpha0_seed0",
        "llc_all_runs",
        "symmetry_along_training",
        "gs_vs_di_final",
        "final_llc_vs_alpha",
        "embedding_spectrum_final",
        "correct_logit_tables",
        "sgld_traces_alpha0_seed0",
        "sgld_step_alpha0_seed0",
        "phase_diagram_alpha",
    ];
    for w in want {
        assert!(o.figures.iter().any(|f| f == w), "missing figure {w}; have {:?}", o.figures);
    }
    // The calibration grid has no table: skipped with a note, not an error.
    assert_eq!(o.skipped.len(), 1, "{:?}", o.skipped);
    assert!(html.contains("Skipped: calibration grid, because input table <code>llc_calibration.parquet</code> is absent."));
    // Reference points: no released table, so the reference values.
    assert!(html.contains("Model A and Model B"));

    // Run table: grokking steps (validation spike at step 20 ignored), labels, flags, LLC.
    assert!(html.contains("<td class=\"l\">alpha0_seed0</td>"));
    assert!(html.contains("negative_mean@10"));
    assert!(html.contains("<td class=\"l flags\">diverged@100</td>"), "diverged flag missing");
    assert!(!html.contains("rmsprop@"));
    assert!(!html.contains("chains@") && !html.contains("n_train@"));
    let runs = summary::summarize(&inputs::Data::read(&inputs::discover(&dir).unwrap()));
    let g: Vec<Option<i64>> = runs.iter().map(|s| s.grok_step).collect();
    assert_eq!(g, vec![Some(60), Some(60), Some(80), Some(80)]);
    assert_eq!(runs[0].solution.as_deref(), Some("pizza"));
    assert_eq!(runs[2].solution.as_deref(), Some("clock"));
    assert_eq!(runs[0].llc_end.unwrap().mean, 50.0);
    assert_eq!(runs[0].llc_peak.unwrap().step, 10);
}

/// The series of a chart by legend text.
fn series<'a>(c: &'a crate::plot::Chart, label: &str) -> Option<&'a crate::plot::Series> {
    c.series.iter().find(|s| s.label.as_deref() == Some(label))
}

#[test]
fn step_size_and_diagnostics_per_run() {
    use crate::llc::diagnostics::{MALA_MIN, R_HAT_MAX};
    use crate::plot::Panel;
    let tmp = Tmp::new("steps");
    let dir = tmp.0.join("exp");
    experiment(&dir, true);
    let data = inputs::Data::read(&inputs::discover(&dir).unwrap());
    let curves = summary::curves(&data.metrics.rows);
    let figs = figures::step_diagnostics(&data, &curves, &data.runs()).unwrap();
    let stems: Vec<&str> = figs.iter().map(|f| f.stem.as_str()).collect();
    assert_eq!(stems, ["sgld_step_alpha0_seed0", "sgld_step_alpha0_seed1", "sgld_step_alpha1_seed0", "sgld_step_alpha1_seed1"]);
    for f in &figs {
        let chart = |p: &'_ Panel| match p {
            Panel::Chart(c) => c.clone(),
            Panel::Heatmap(_) => panic!("a heatmap in {}", f.stem),
        };
        let charts: Vec<crate::plot::Chart> = f.figure.panels.iter().map(chart).collect();
        // Three stacked panels: ε on a log axis, R-hat and MALA with their flag lines.
        assert_eq!((charts.len(), f.figure.cols), (3, 1), "{}", f.stem);
        assert!(charts[0].y.log && charts[0].x.log && charts.iter().all(|c| c.x == charts[0].x));
        assert!(charts[0].rules.is_empty());
        assert_eq!(charts[1].rules.iter().map(|r| (r.vertical, r.at)).collect::<Vec<_>>(), [(false, R_HAT_MAX)]);
        assert_eq!(charts[2].rules.iter().map(|r| (r.vertical, r.at)).collect::<Vec<_>>(), [(false, MALA_MIN)]);
        // One point per checkpoint after step 0 (10, 50, 100), the table's values.
        let retried = f.stem == "sgld_step_alpha0_seed0";
        let eps10 = if retried { 1e-4 } else { 2e-4 };
        let want = [
            vec![(10.0, eps10), (50.0, 2e-4), (100.0, 4e-4)],
            vec![(10.0, 1.02), (50.0, 1.0), (100.0, 1.03)],
            vec![(10.0, 0.85), (50.0, 0.9), (100.0, 0.92)],
        ];
        for (c, w) in charts.iter().zip(&want) {
            assert_eq!(&c.series[0].points, w, "{}: {}", f.stem, c.title);
            // The retried checkpoint (alpha0_seed0, step 10) is marked in every panel, and
            // nothing else is.
            let marked = series(c, "retried (ladder rungs > 1)").map(|s| s.points.clone());
            assert_eq!(marked, retried.then(|| vec![w[0]]), "{}: {}", f.stem, c.title);
            // Flagged: alpha1_seed1 at step 10 (negative mean), alpha0_seed1 at 100 (diverged).
            let flagged = series(c, "flagged estimate").map(|s| s.points.clone());
            let want_flag = match f.stem.as_str() {
                "sgld_step_alpha1_seed1" => Some(vec![w[0]]),
                "sgld_step_alpha0_seed1" => Some(vec![w[2]]),
                _ => None,
            };
            assert_eq!(flagged, want_flag, "{}: {}", f.stem, c.title);
            let (rs, fs) = (series(c, "retried (ladder rungs > 1)"), series(c, "flagged estimate"));
            if let (Some(r), Some(fl)) = (rs, fs) {
                assert_ne!((r.color, &r.mark), (fl.color, &fl.mark), "retried and flagged look alike");
            }
        }
        assert!(f.caption.contains("Step 0 (not on the log axis): ε 2.000e-4, R-hat 1.01, MALA 0.95, 1 rung."), "{}", f.caption);
        assert_eq!(f.caption.contains("Retried: step 10 (2 rungs: ε 2.000e-4, 200 draws: flag_mala → ε/2)."), retried, "{}", f.caption);
        check_svg(&crate::plot::render(&f.figure).unwrap().svg);
    }
    // In the page, in the SGLD section.
    let out = tmp.0.join("out");
    let o = run(&opts(&dir, &out)).unwrap();
    for run in ["alpha0_seed0", "alpha1_seed1"] {
        assert!(o.figures.iter().any(|f| *f == format!("sgld_step_{run}")), "{:?}", o.figures);
    }
    let html = std::fs::read_to_string(out.join("index.html")).unwrap();
    let (sgld, steps) = (html.find("sgld_traces_alpha0_seed0.svg").unwrap(), html.find("sgld_step_alpha0_seed0.svg").unwrap());
    assert!(sgld < steps);
}

#[test]
fn findings_match_hand_computation() {
    let tmp = Tmp::new("findings");
    let dir = tmp.0.join("exp");
    experiment(&dir, true);
    let data = inputs::Data::read(&inputs::discover(&dir).unwrap());
    let runs = summary::summarize(&data);
    let p = paired_final_llc(&runs).unwrap();
    // Differences LLC(α=1) − LLC(α=0): seed 0: 40 − 50 = −10; seed 1: 36 − 30 = 6.
    // Mean (−10 + 6)/2 = −2; sample std sqrt(((−10 + 2)² + (6 + 2)²)/1) = sqrt(128).
    assert_eq!((p.alpha_lo, p.alpha_hi), (0.0, 1.0));
    assert_eq!(p.pairs.len(), 2);
    assert_eq!(p.below, 1);
    assert!((p.mean_diff - -2.0).abs() < 1e-12);
    assert!((p.std_diff - 128f64.sqrt()).abs() < 1e-12);
    assert_eq!((p.min_diff, p.max_diff), (-10.0, 6.0));
    let f = findings::findings(&runs);
    assert!(f[0].text.starts_with("In 1 of 2 seeds the final LLC at α = 1 is below that at α = 0."), "{}", f[0].text);
    assert!(f[0].text.contains("= -2 (std 11.31 over 2 pairs, range -10 to 6)"), "{}", f[0].text);
    assert_eq!(f[1].text, "α = 0: pizza 2; α = 1: clock 2.");
    // Mean final LLC by label: pizza (50 + 30)/2 = 40, clock (40 + 36)/2 = 38.
    assert!(f[2].text.contains("clock: mean 38 (std") && f[2].text.contains("pizza: mean 40 (std"), "{}", f[2].text);
    assert!(f[3].text.starts_with("4 of 4 runs grokked."), "{}", f[3].text);
    // The LLC peaks at step 10 in every run, before grokking (60 or 80).
    assert!(f[4].text.starts_with("In 4 of 4 runs the LLC peaks at or before the grokking step"), "{}", f[4].text);
    assert_eq!(f[5].text, "2 of 4 runs have flagged LLC estimates (alpha0_seed1: diverged@100; alpha1_seed1: negative_mean@10).");
}

#[test]
fn same_tables_give_same_bytes() {
    let tmp = Tmp::new("determinism");
    let dir = tmp.0.join("exp");
    experiment(&dir, true);
    let (a, b) = (tmp.0.join("a"), tmp.0.join("b"));
    let oa = run(&opts(&dir, &a)).unwrap();
    let ob = run(&opts(&dir, &b)).unwrap();
    assert_eq!(oa.figures, ob.figures);
    assert_eq!(std::fs::read(a.join("index.html")).unwrap(), std::fs::read(b.join("index.html")).unwrap());
    for stem in &oa.figures {
        for ext in ["svg", "png"] {
            let rel = format!("{stem}.{ext}");
            assert_eq!(std::fs::read(a.join(&rel)).unwrap(), std::fs::read(b.join(&rel)).unwrap(), "{rel}");
        }
    }
}

#[test]
fn partial_data_skips_with_notes() {
    let tmp = Tmp::new("partial");
    let dir = tmp.0.join("exp");
    experiment(&dir, false);
    // A corrupt table is reported, not fatal.
    std::fs::write(dir.join("runs/alpha0_seed0/llc.parquet"), b"not parquet").unwrap();
    let out = tmp.0.join("out");
    let o = run(&Options { no_checkpoints: true, ..opts(&dir, &out) }).unwrap();
    let html = std::fs::read_to_string(out.join("index.html")).unwrap();
    assert!(html.contains("Skipped: LLC along training, because input table <code>llc.parquet</code> could not be read"), "{html}");
    assert!(html.contains("Skipped: SGLD loss traces, because input table <code>llc_trace.parquet</code> is absent."));
    assert!(html.contains("Skipped: final LLC against α"));
    assert!(html.contains("Skipped: correct-logit tables, because checkpoints were not to be read"));
    assert!(html.contains("Not available: it needs final LLC estimates"));
    // What has data is still drawn.
    assert!(o.figures.iter().any(|f| f == "gs_vs_di_final"));
    assert!(o.figures.iter().any(|f| f == "phase_diagram_alpha"));
    for r in referenced(&html) {
        assert!(out.join(&r).is_file(), "{r}");
    }

    // Nothing at all: still a page.
    let empty = tmp.0.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let o = run(&opts(&empty, &tmp.0.join("out-empty"))).unwrap();
    assert!(o.figures.is_empty());
    let html = std::fs::read_to_string(tmp.0.join("out-empty/index.html")).unwrap();
    assert!(html.contains("No input table was found."));
    assert!(html.contains("No run is labelled: input table <code>symmetry.parquet</code> is absent."));
    assert!(html.contains("Not available: no run is labelled (input table <code>symmetry.parquet</code> is absent)."));
}

#[test]
fn explicit_tables_and_released_reference() {
    let tmp = Tmp::new("explicit");
    let dir = tmp.0.join("exp");
    experiment(&dir, true);
    // A released table: the symmetry schema, one row per released run.
    let rel = tmp.0.join("released.parquet");
    symmetry("p99zdpze5l", 0.0, -1, &rel);
    let cal = tmp.0.join("llc_calibration.parquet");
    calibration("alpha0_seed0", &cal);
    let tables = vec![dir.join("runs/alpha0_seed0/metrics.parquet"), dir.join("runs/alpha1_seed0/symmetry.parquet"), cal];
    let out = tmp.0.join("out");
    let o = run(&Options { dir: None, tables, released: Some(rel), out: out.clone(), traces_per_run: 2, no_checkpoints: false, compare_at: Default::default() })
        .unwrap();
    let html = std::fs::read_to_string(out.join("index.html")).unwrap();
    assert!(html.contains("the <code>released</code> symmetry table"));
    assert!(o.figures.iter().any(|f| f == "llc_calibration"), "{:?}", o.skipped);
    if let Ok(keep) = std::env::var("REPORT_TEST_KEEP") {
        std::fs::create_dir_all(&keep).unwrap();
        std::fs::copy(out.join("llc_calibration.png"), Path::new(&keep).join("llc_calibration.png")).unwrap();
    }
    assert!(o.figures.iter().any(|f| f == "curves_alpha0_seed0"));
    assert!(!o.figures.iter().any(|f| f == "curves_alpha1_seed0"));
    // The checkpoint of alpha1_seed0 is found beside its table.
    assert!(o.figures.iter().any(|f| f == "correct_logit_tables"), "{:?}", o.skipped);
    // An unknown table name is an error that lists the known names.
    let bad = tmp.0.join("other.parquet");
    std::fs::write(&bad, b"x").unwrap();
    let e = run(&Options { tables: vec![bad], ..opts(&dir, &out) }).unwrap_err();
    assert!(format!("{e:#}").contains("llc_trace.parquet"));
}

#[test]
fn grokking_step_needs_accuracy_to_stay_up() {
    let c = |acc: &[f64]| Curve { steps: (0..acc.len() as i64).map(|i| i * 10).collect(), loss: vec![1.0; acc.len()], accuracy: acc.to_vec() };
    assert_eq!(grokking_step(&c(&[0.1, 1.0, 0.2, 0.995, 1.0])), Some(30));
    assert_eq!(grokking_step(&c(&[0.1, 1.0, 0.5])), None);
    assert_eq!(grokking_step(&c(&[])), None);
    assert_eq!(grokking_step(&c(&[1.0, 1.0])), Some(0));
}

#[test]
fn table_kinds_from_file_names() {
    let k = |p: &str| TableKind::of_path(Path::new(p));
    assert_eq!(k("x/runs/a/metrics.parquet"), Some(TableKind::Metrics));
    assert_eq!(k("x/metrics.partial.parquet"), None);
    assert_eq!(k("x/released/symmetry.parquet"), Some(TableKind::Released));
    assert_eq!(k("x/released_symmetry.parquet"), Some(TableKind::Released));
    assert_eq!(k("x/llc_trace.parquet"), Some(TableKind::LlcTrace));
    assert_eq!(k("x/scan_spectrum.parquet"), Some(TableKind::Spectrum));
    assert_eq!(k("x/dataset.parquet"), None);
}

#[test]
fn thinning_keeps_ends_and_early_steps() {
    let pts: Vec<(f64, f64)> = (0..20_000).map(|i| (i as f64, 1.0)).collect();
    let t = figures::thin_log(pts, 500);
    assert!(t.len() <= 520, "{}", t.len());
    assert_eq!(t[0].0, 0.0);
    assert_eq!(t[1].0, 1.0);
    assert_eq!(t.last().unwrap().0, 19_999.0);
    assert_eq!(figures::spread(&[0, 10, 20, 30, 40, 50, 60], 4), vec![0, 20, 40, 60]);
}

#[test]
fn phase_diagram_over_alpha_and_width() {
    use super::inputs::RunId;
    use super::summary::{LlcAt, RunSummary};
    let mut runs = Vec::new();
    for (w, d) in [(64i64, 0.0), (128, 0.2)] {
        for a in [0.0, 0.5, 1.0] {
            for seed in 0..2i64 {
                let gs = 1.0 - a * (0.6 - d) + 0.01 * seed as f64;
                let at = |step, mean| Some(LlcAt { step, mean, std: 1.0, healthy: true });
                runs.push(RunSummary {
                    id: RunId { run: format!("w{w}_a{a}_s{seed}"), p: 59, alpha: a, seed, weight_decay: 2.0, train_frac: 0.8, d_model: w },
                    last_step: Some(100),
                    final_train_acc: Some(1.0),
                    final_val_acc: Some(1.0),
                    final_train_loss: Some(0.01),
                    final_val_loss: Some(0.01),
                    grok_step: Some(50),
                    solution: Some(if gs > 0.7 { "pizza" } else { "clock" }.into()),
                    gradient_symmetry: Some(gs),
                    distance_irrelevance: Some(1.0 - gs),
                    llc_end: at(100, 40.0 + 10.0 * a + w as f64 / 16.0 + seed as f64),
                    llc_step0: at(0, 5.0 + seed as f64),
                    llc_peak: None,
                    flags: vec![],
                });
            }
        }
    }
    // A flagged final estimate stays out of the LLC means: w128, α = 1, seed 1.
    let flagged = runs.iter_mut().find(|s| s.id.run == "w128_a1_s1").unwrap();
    flagged.llc_end = Some(LlcAt { step: 100, mean: 1e6, std: 1.0, healthy: false });
    let figs = figures::phase_diagram(&runs).unwrap();
    let stems: Vec<&str> = figs.iter().map(|f| f.stem.as_str()).collect();
    assert_eq!(stems, vec!["phase_diagram_alpha", "phase_diagram_alpha_width"]);
    // Lines against α: GS, DI, LLC (last), LLC (step 0) and the Pizza share per width.
    let titles: Vec<String> = figs[0]
        .figure
        .panels
        .iter()
        .map(|p| match p {
            crate::plot::Panel::Chart(c) => c.title.clone(),
            crate::plot::Panel::Heatmap(h) => h.title.clone(),
        })
        .collect();
    assert_eq!(titles, ["gradient symmetry", "distance irrelevance", "LLC, last estimate", "LLC, step 0", "share of runs labelled pizza"]);
    assert!(figs[0].caption.contains("1 runs have a flagged LLC estimate"), "{}", figs[0].caption);
    assert!(figs[0].caption.contains("its seeds: 2 per cell"));
    let heat = |i: usize| {
        let crate::plot::Panel::Heatmap(h) = &figs[1].figure.panels[i] else { panic!("not a heatmap") };
        h.clone()
    };
    // Heatmaps: GS, DI, LLC last, LLC step 0, share pizza, share clock; rows width, columns α.
    assert_eq!(figs[1].figure.panels.len(), 6);
    let h = heat(0);
    // Mean over the two seeds at α = 0.5, width 128: 1 − 0.5·0.4 + 0.005.
    assert_eq!((h.x_centres.len(), h.y_centres.len()), (3, 2));
    assert!((h.values[3 + 1] - (1.0 - 0.5 * 0.4 + 0.005)).abs() < 1e-12);
    // LLC at width 128, α = 1: the flagged seed 1 is left out, so seed 0's value alone.
    assert_eq!(heat(2).values[3 + 2], 40.0 + 10.0 + 8.0);
    assert_eq!(heat(2).values[3 + 1], 40.0 + 5.0 + 8.0 + 0.5);
    assert_eq!(heat(3).values[0], 5.5);
    // Shares: GS at width 64 is 1 − 0.6α (+0.01 for seed 1): pizza at α = 0 and 0.5 (0.70 and
    // 0.71 > 0.7? 0.7 is not, 0.71 is), clock at α = 1.
    let (pizza, clock) = (heat(4), heat(5));
    assert_eq!(pizza.title, "share of runs labelled pizza");
    assert_eq!(&pizza.values[..3], &[1.0, 0.5, 0.0]);
    assert_eq!(&clock.values[..3], &[0.0, 0.5, 1.0]);
    assert!(pizza.values.iter().zip(&clock.values).all(|(p, c)| p + c == 1.0));
    for f in &figs {
        let r = crate::plot::render(&f.figure).unwrap();
        check_svg(&r.svg);
        if let Ok(keep) = std::env::var("REPORT_TEST_KEEP") {
            std::fs::create_dir_all(&keep).unwrap();
            std::fs::write(Path::new(&keep).join(format!("{}.png", f.stem)), &r.png).unwrap();
        }
    }

    // One width: the label panel shows every label's share against α.
    let one: Vec<RunSummary> = runs.iter().filter(|s| s.id.d_model == 64).cloned().collect();
    let figs = figures::phase_diagram(&one).unwrap();
    assert_eq!(figs.len(), 1);
    let crate::plot::Panel::Chart(c) = figs[0].figure.panels.last().unwrap() else { panic!() };
    assert_eq!(c.title, "share of runs per label");
    assert_eq!(c.series.iter().map(|s| s.label.clone().unwrap()).collect::<Vec<_>>(), ["pizza", "clock"]);
    assert_eq!(c.series[0].points, vec![(0.0, 1.0), (0.5, 0.5), (1.0, 0.0)]);
}
