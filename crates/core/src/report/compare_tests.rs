//! The comparison at a fixed α on a synthetic experiment with known arms:
//!
//! - arm A (α = 0.6, d_model 128, seeds 0–14): Pizza (0–6) against `unclear` (7–12); seed 13's
//!   label changes late, seed 14's LLC is still moving, seed 3's whole-model estimate at the end
//!   is flagged, seed 8 has no step-0 estimate; LLC for the groups `all` and `attn` (the
//!   `restriction` column), `all` at five checkpoints;
//! - arm B (α = 1, d_model 256, seeds 0–25): 12 Pizza, 12 Clock, 2 `unclear`, whole-model LLC at
//!   steps 0 and 100 only (as in every cell but A's);
//! - a mixed cell too small to test (α = 0.5: 2 Pizza, 1 unclear) and a cell of one label.
//!
//! The statistics are `stats`' own (tested against scipy there); these tests check that the
//! report feeds them the right runs and prints what they return.

use std::path::Path;

use super::compare::{self, At, CompareAt, Comparison, Sides, Unsettled};
use super::findings::{interval_text, p_text};
use super::inputs::{self, LlcRow, RunId, SymmetryRow};
use super::tests::{check_svg, opts, png_size, referenced, Tmp};
use super::*;
use crate::stats::{self, BOOTSTRAP_RESAMPLES};
use crate::tables::{analysis, llc as llc_tables, train as train_tables, write_filled as write, Values};

/// One synthetic run.
struct Spec {
    alpha: f64,
    d_model: i64,
    seed: i64,
    /// Label at steps 80 and 90; at 100 `end_label` (the same unless the label changes late).
    label: &'static str,
    end_label: &'static str,
    /// Whole-model LLC at step 100 and at step 80.
    llc_end: f64,
    llc_80: f64,
    /// Whole-model LLC at step 0 (`None`: not estimated).
    llc_0: Option<f64>,
    /// The whole-model estimate at step 100 carries `flag_r_hat`.
    flagged_end: bool,
    /// Arm A's tables: `attn` rows besides `all`, and the LLC at five checkpoints.
    groups: bool,
}

impl Spec {
    fn run(&self) -> String {
        format!("a{}_d{}_s{:02}", self.alpha, self.d_model, self.seed)
    }
}

fn llc0(seed: i64) -> f64 {
    5.0 + 0.1 * (seed % 3) as f64
}
fn pizza_llc(seed: i64) -> f64 {
    50.0 + seed as f64
}
fn unclear_llc(seed: i64) -> f64 {
    40.0 + 0.5 * seed as f64
}
fn gs(label: &str, seed: i64) -> f64 {
    match label {
        "pizza" => 0.97 + 0.001 * seed as f64,
        "clock" => 0.4 + 0.002 * seed as f64,
        _ => 0.9 - 0.001 * seed as f64,
    }
}
fn di(label: &str, seed: i64) -> f64 {
    match label {
        "pizza" => 0.2 + 0.002 * seed as f64,
        "clock" => 0.85 - 0.001 * seed as f64,
        _ => 0.5 + 0.003 * seed as f64,
    }
}
fn train_loss(seed: i64, step: i64) -> f64 {
    0.5 / (1.0 + step as f64) + 0.001 * seed as f64
}
fn param_norm(seed: i64, step: i64) -> f64 {
    20.0 + 0.1 * seed as f64 + step as f64 / 100.0
}

fn specs() -> Vec<Spec> {
    let base = |alpha, d_model, seed, label| Spec {
        alpha,
        d_model,
        seed,
        label,
        end_label: label,
        llc_end: 0.0,
        llc_80: 0.0,
        llc_0: Some(llc0(seed)),
        flagged_end: false,
        groups: false,
    };
    let mut v = Vec::new();
    for seed in 0..15 {
        let label = if seed <= 6 || seed >= 13 { "pizza" } else { "unclear" };
        let end = if label == "pizza" { pizza_llc(seed) } else { unclear_llc(seed) };
        let mut s = Spec { llc_end: end, llc_80: end, groups: true, ..base(0.6, 128, seed, label) };
        match seed {
            3 => s.flagged_end = true,
            8 => s.llc_0 = None,
            13 => s.end_label = "unclear",
            14 => (s.llc_80, s.llc_end) = (40.0, 50.0), // +25 %
            _ => {}
        }
        v.push(s);
    }
    for seed in 0..26 {
        let label = match seed {
            0..=11 => "pizza",
            12..=23 => "clock",
            _ => "unclear",
        };
        let end = 30.0 + (seed % 6) as f64 + if label == "clock" { 0.5 } else { 0.0 };
        v.push(Spec { llc_end: end, llc_80: end, ..base(1.0, 256, seed, label) });
    }
    for (seed, label) in [(0, "pizza"), (1, "pizza"), (2, "unclear")] {
        v.push(Spec { llc_end: 10.0 + seed as f64, llc_80: 10.0 + seed as f64, ..base(0.5, 128, seed, label) });
    }
    for seed in 0..3 {
        v.push(Spec { llc_end: 20.0, llc_80: 20.0, ..base(0.0, 128, seed, "pizza") });
    }
    v
}

fn id_cols(s: &Spec, n: usize) -> Vec<(&'static str, Values)> {
    vec![
        ("run", vec![s.run(); n].into()),
        ("p", vec![59i64; n].into()),
        ("alpha", vec![s.alpha; n].into()),
        ("seed", vec![s.seed; n].into()),
        ("weight_decay", vec![1.0; n].into()),
        ("train_frac", vec![0.3; n].into()),
        ("d_model", vec![s.d_model; n].into()),
    ]
}

fn write_run(s: &Spec, dir: &Path) {
    let d = dir.join("runs").join(s.run());
    // Metrics: train and validation every 10 steps.
    let steps: Vec<i64> = (0..=100).step_by(10).flat_map(|t| [t, t]).collect();
    let n = steps.len();
    let split: Vec<&str> = (0..n).map(|i| if i % 2 == 0 { "train" } else { "val" }).collect();
    let mut cols = id_cols(s, n);
    cols.push(("loss", steps.iter().map(|&t| train_loss(s.seed, t)).collect::<Vec<_>>().into()));
    cols.push(("param_norm", steps.iter().map(|&t| param_norm(s.seed, t)).collect::<Vec<_>>().into()));
    cols.push(("step", steps.into()));
    cols.push(("split", split.into()));
    cols.push(("accuracy", vec![1.0; n].into()));
    write(cols, &train_tables::TRAIN_METRICS, &d.join("metrics.parquet"));

    // Symmetry: labels at 0 and 50 lie outside the last fifth, so they may differ.
    let steps = vec![0i64, 50, 80, 90, 100];
    let labels = vec!["non-circular", "unclear", s.label, s.label, s.end_label];
    let mut cols = id_cols(s, steps.len());
    cols.push(("gradient_symmetry", labels.iter().map(|l| gs(l, s.seed)).collect::<Vec<_>>().into()));
    cols.push(("distance_irrelevance", labels.iter().map(|l| di(l, s.seed)).collect::<Vec<_>>().into()));
    cols.push(("checkpoint", steps.iter().map(|t| format!("step_{t}")).collect::<Vec<_>>().into()));
    cols.push(("step", steps.into()));
    cols.push(("solution", labels.into()));
    write(cols, &analysis::SYMMETRY, &d.join("symmetry.parquet"));

    // LLC: (group, step, value, flagged).
    let mut rows: Vec<(&str, i64, f64, bool)> = Vec::new();
    if let Some(v) = s.llc_0 {
        rows.push(("all", 0, v, false));
    }
    if s.groups {
        rows.extend([("all", 20, 2.0 * s.llc_end, false), ("all", 50, 1.5 * s.llc_end, false), ("all", 80, s.llc_80, false)]);
    }
    rows.push(("all", 100, s.llc_end, s.flagged_end));
    if s.groups {
        if s.llc_0.is_some() {
            rows.push(("attn", 0, 1.0 + 0.01 * s.seed as f64, false));
        }
        rows.push(("attn", 100, s.llc_end / 4.0, false));
    }
    let n = rows.len();
    let mut cols = id_cols(s, n);
    cols.push(("step", rows.iter().map(|r| r.1).collect::<Vec<_>>().into()));
    cols.push(("llc_mean", rows.iter().map(|r| r.2).collect::<Vec<_>>().into()));
    cols.push(("llc_std", vec![1.0; n].into()));
    cols.push(("flag_r_hat", rows.iter().map(|r| r.3).collect::<Vec<_>>().into()));
    cols.push(("nbeta_setting", vec!["n_over_ln_n"; n].into()));
    cols.push(("loss_at_wstar_mode", vec!["full_training_set"; n].into()));
    cols.push(("epsilon_setting", vec!["2.5e-5"; n].into()));
    cols.push(("burn_in_setting", vec!["1200"; n].into()));
    cols.push(("steps_between_draws_setting", vec!["4"; n].into()));
    cols.push(("restriction", rows.iter().map(|r| r.0).collect::<Vec<_>>().into()));
    write(cols, &llc_tables::LLC_SUMMARY, &d.join("llc.parquet"));
}

fn experiment(dir: &Path) {
    for s in specs() {
        write_run(&s, dir);
    }
}

fn data(dir: &Path) -> inputs::Data {
    inputs::Data::read(&inputs::discover(dir).unwrap())
}

fn group<'a>(arm: &'a compare::Arm, name: &str) -> &'a compare::GroupResult {
    arm.groups.iter().find(|g| g.compared.group == name).unwrap()
}

/// A comparison equals `stats`' functions on the given samples and (for ρ) the given runs.
fn assert_stats(c: &Comparison, cell: &compare::Cell, pizza: &[f64], other: &[f64], llc: &[f64], gs: &[f64], di: &[f64]) {
    let (g, at) = (c.group.as_str(), c.at);
    assert_eq!(c.pizza, stats::summary(pizza), "{g} {at:?}");
    assert_eq!(c.other, stats::summary(other), "{g} {at:?}");
    assert_eq!(c.mann_whitney, stats::mann_whitney_u(pizza, other), "{g} {at:?}");
    let seed = |s| compare::seed(cell, g, at, s);
    assert_eq!(c.diff, stats::bootstrap_mean_diff(pizza, other, BOOTSTRAP_RESAMPLES, seed("mean-diff")));
    assert_eq!(c.rho_gs, stats::bootstrap_spearman(llc, gs, BOOTSTRAP_RESAMPLES, seed("spearman-gs")));
    assert_eq!(c.rho_di, stats::bootstrap_spearman(llc, di, BOOTSTRAP_RESAMPLES, seed("spearman-di")));
    assert!(c.diff.resamples >= 10_000);
}

#[test]
fn arms_statistics_are_stats_on_the_right_runs() {
    let tmp = Tmp::new("compare-stats");
    let dir = tmp.0.join("exp");
    experiment(&dir);
    let cmp = compare::comparisons(&data(&dir), CompareAt::Last);

    // Two arms in cell order (d_model, then α); the α = 0.5 cell is too small, α = 0 has one label.
    assert_eq!(cmp.arms.len(), 2);
    let (a, b) = (&cmp.arms[0], &cmp.arms[1]);
    assert_eq!((a.cell.alpha, a.cell.d_model, b.cell.alpha, b.cell.d_model), (0.6, 128, 1.0, 256));
    assert_eq!(cmp.small.len(), 1);
    assert_eq!(cmp.small[0].cell.alpha, 0.5);

    // The side rule: A has 7 settled Pizza and 6 unclear (fewer than 12 each): Pizza against the
    // rest. B has exactly 12 Pizza and 12 Clock: Pizza against Clock, the 2 unclear runs only in ρ.
    assert_eq!(a.sides, Sides::PizzaVsRest);
    assert_eq!(b.sides, Sides::PizzaVsClock);

    // Settling: seed 13's label changed in the last fifth, seed 14's LLC moved by +25 %.
    let run = |arm: &compare::Arm, seed: i64| arm.runs.iter().find(|r| r.id.seed == seed).unwrap().clone();
    assert_eq!(
        run(a, 13).settling.unsettled,
        Some(Unsettled::LabelChangedLate(vec![(80, "pizza".into()), (90, "pizza".into()), (100, "unclear".into())]))
    );
    assert_eq!(run(a, 14).settling.unsettled, Some(Unsettled::LlcStillMoving { from: 80, change: 0.25 }));
    assert_eq!(run(a, 0).settling.llc_change, Some((80, 0.0)));
    assert_eq!(run(a, 0).settling.label_checkpoints, 3);
    assert!(b.runs.iter().all(|r| r.settled() && r.settling.llc_change.is_none()), "B has no estimate near 80 %");

    // Arm A, whole model, compared checkpoint: seed 3 is flagged, 13 and 14 are unsettled.
    let pizza: Vec<f64> = [0, 1, 2, 4, 5, 6].iter().map(|&s| pizza_llc(s)).collect();
    let other: Vec<f64> = (7..=12).map(unclear_llc).collect();
    let seeds: Vec<i64> = vec![0, 1, 2, 4, 5, 6, 7, 8, 9, 10, 11, 12];
    let lab = |s: i64| if s <= 6 { "pizza" } else { "unclear" };
    let all = &group(a, "all").compared;
    assert_eq!(all.points.iter().map(|p| p.run.as_str()).collect::<Vec<_>>(), seeds.iter().map(|s| format!("a0.6_d128_s{s:02}")).collect::<Vec<_>>());
    let left = |run: &str, label: &str, why: &str| compare::LeftOut { run: run.to_string(), label: label.to_string(), why: why.to_string() };
    assert_eq!(all.left_out, vec![left("a0.6_d128_s03", "pizza", "flag_r_hat")]);
    let llc: Vec<f64> = seeds.iter().map(|&s| if s <= 6 { pizza_llc(s) } else { unclear_llc(s) }).collect();
    let g: Vec<f64> = seeds.iter().map(|&s| gs(lab(s), s)).collect();
    let d: Vec<f64> = seeds.iter().map(|&s| di(lab(s), s)).collect();
    assert_stats(all, &a.cell, &pizza, &other, &llc, &g, &d);
    assert!(all.detectable(), "every Pizza value is above every other: p = {}", all.mann_whitney.p);
    assert_eq!(all.mann_whitney.rank_biserial, 1.0);

    // Step 0: seed 3 is healthy there, seed 8 has no estimate.
    let init = group(a, "all").init.as_ref().unwrap();
    assert_eq!(init.left_out, vec![left("a0.6_d128_s08", "unclear", "no estimate at step 0")]);
    let seeds0: Vec<i64> = vec![0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12];
    let p0: Vec<f64> = (0..=6).map(llc0).collect();
    let o0: Vec<f64> = [7, 9, 10, 11, 12].iter().map(|&s| llc0(s)).collect();
    let l0: Vec<f64> = seeds0.iter().map(|&s| llc0(s)).collect();
    let g0: Vec<f64> = seeds0.iter().map(|&s| gs(lab(s), s)).collect();
    let d0: Vec<f64> = seeds0.iter().map(|&s| di(lab(s), s)).collect();
    assert_stats(init, &a.cell, &p0, &o0, &l0, &g0, &d0);

    // The `attn` group: seed 3's attn estimate is healthy.
    let attn = &group(a, "attn").compared;
    assert_eq!(a.groups.iter().map(|g| g.compared.group.as_str()).collect::<Vec<_>>(), vec!["all", "attn"]);
    let pa: Vec<f64> = (0..=6).map(|s| pizza_llc(s) / 4.0).collect();
    let oa: Vec<f64> = (7..=12).map(|s| unclear_llc(s) / 4.0).collect();
    let seeds_a: Vec<i64> = (0..=12).collect();
    let la: Vec<f64> = seeds_a.iter().map(|&s| if s <= 6 { pizza_llc(s) / 4.0 } else { unclear_llc(s) / 4.0 }).collect();
    let ga: Vec<f64> = seeds_a.iter().map(|&s| gs(lab(s), s)).collect();
    let da: Vec<f64> = seeds_a.iter().map(|&s| di(lab(s), s)).collect();
    assert_stats(attn, &a.cell, &pa, &oa, &la, &ga, &da);

    // Covariates at step 100, over the settled runs of each side (seed 3 included: it is settled).
    let loss_p: Vec<f64> = (0..=6).map(|s| train_loss(s, 100)).collect();
    let loss_o: Vec<f64> = (7..=12).map(|s| train_loss(s, 100)).collect();
    assert_eq!(a.covariates[0].name, "training loss");
    assert_eq!(a.covariates[0].pizza, stats::summary(&loss_p));
    assert_eq!(a.covariates[0].mann_whitney, stats::mann_whitney_u(&loss_p, &loss_o));
    let norm_p: Vec<f64> = (0..=6).map(|s| param_norm(s, 100)).collect();
    assert_eq!(a.covariates[1].pizza, stats::summary(&norm_p));

    // Arm B: whole-model rows only; Pizza against Clock, with the unclear seeds 24 and 25 in the
    // correlations only.
    assert_eq!(b.groups.len(), 1);
    let c = &b.groups[0].compared;
    assert_eq!(c.group, "all");
    let end = |s: i64| 30.0 + (s % 6) as f64 + if (12..=23).contains(&s) { 0.5 } else { 0.0 };
    let bp: Vec<f64> = (0..12).map(end).collect();
    let bc: Vec<f64> = (12..24).map(end).collect();
    let labb = |s: i64| match s {
        0..=11 => "pizza",
        12..=23 => "clock",
        _ => "unclear",
    };
    let lb: Vec<f64> = (0..26).map(end).collect();
    let gb: Vec<f64> = (0..26).map(|s| gs(labb(s), s)).collect();
    let db: Vec<f64> = (0..26).map(|s| di(labb(s), s)).collect();
    assert_stats(c, &b.cell, &bp, &bc, &lb, &gb, &db);
    assert_eq!((c.pizza.n, c.other.n, c.points.len()), (12, 12, 26));

    // Seeds differ per statistic, group, checkpoint and arm.
    let s = |cell, g, at, st| compare::seed(cell, g, at, st);
    let all_seeds = [
        s(&a.cell, "all", At::Compared, "mean-diff"),
        s(&a.cell, "all", At::Compared, "spearman-gs"),
        s(&a.cell, "all", At::Init, "mean-diff"),
        s(&a.cell, "attn", At::Compared, "mean-diff"),
        s(&b.cell, "all", At::Compared, "mean-diff"),
    ];
    let unique: std::collections::BTreeSet<u64> = all_seeds.iter().copied().collect();
    assert_eq!(unique.len(), all_seeds.len());

    // Without LLC estimates the arms are still found (by label), with nothing to compare or draw.
    let mut no_llc = data(&dir);
    no_llc.llc.rows.clear();
    let cmp = compare::comparisons(&no_llc, CompareAt::Last);
    assert_eq!(cmp.arms.len(), 2);
    assert!(cmp.arms.iter().all(|a| a.groups.is_empty() && a.runs.iter().filter(|r| !r.settled()).count() <= 1));
    let (figs, notes) = figures::comparison(&cmp, &no_llc);
    assert!(figs.is_empty());
    assert_eq!(notes[0], "No comparison figures for α = 0.6, d_model 128: none of its runs has an LLC estimate.");
    assert!(super::findings::arm_finding(&cmp.arms[0], &cmp.cells).text.contains("no run of the arm has an LLC estimate"));
}

#[test]
fn page_prints_the_statistics_and_draws_the_figures() {
    let tmp = Tmp::new("compare-page");
    let dir = tmp.0.join("exp");
    experiment(&dir);
    let out = tmp.0.join("out");
    let o = run(&opts(&dir, &out)).unwrap();
    let html = std::fs::read_to_string(out.join("index.html")).unwrap();
    let cmp = compare::comparisons(&data(&dir), CompareAt::Last);
    let a = &cmp.arms[0];
    let all = &group(a, "all").compared;

    // The finding: one sentence with the numbers `stats` returned, in the page.
    let sentence = format!(
        "At α = 0.6, d_model 128 (n = 6 pizza, 6 other; step 100): the whole-model LLC of Pizza runs is {} % higher than that of the other runs (difference {}, Mann–Whitney p = {}, r = 1)",
        crate::plot::fmt_sig(100.0 * (all.pizza.mean - all.other.mean) / all.other.mean, 2),
        interval_text(&all.diff, 3),
        p_text(all.mann_whitney.p)
    );
    assert!(html.contains(&html::esc(&sentence)), "{sentence}\n{html}");
    let init = group(a, "all").init.as_ref().unwrap();
    assert!(html.contains(&format!("; at step 0 there is no detectable difference (p = {})", p_text(init.mann_whitney.p))));
    assert!(html.contains("At α = 1, d_model 256 (n = 12 pizza, 12 clock; step 100)"));
    // The table row of arm A's whole model at the compared checkpoint.
    assert!(html.contains(&format!(
        "<td>{}</td><td>{}</td><td>1</td>",
        html::esc(&interval_text(&all.diff, 3)),
        p_text(all.mann_whitney.p)
    )));
    assert!(html.contains("<td>1 (pizza 1; flag_r_hat: a0.6_d128_s03)</td>"));
    // Exclusions, with their reasons and counts.
    assert!(html.contains("Left out as not settled: LLC still moving: 1 (a0.6_d128_s14 (+25.0 % since step 80)); label changed late: 1 (a0.6_d128_s13 (pizza at 80, pizza at 90, unclear at 100))."), "{html}");
    assert!(html.contains("Settled: 13 of 15"));
    // The settling finding over all 47 labelled runs (every cell): A's two unsettled runs; the
    // label is checked everywhere (steps 80, 90, 100), the LLC only on A's 13 runs with a healthy
    // estimate at 80 and 100 and a label that held (not seed 3: flagged at 100; not seed 13).
    let settling = "45 of 47 labelled runs pass the settling checks at their compared checkpoint: the same label at every symmetry checkpoint of the last 20 % of training (checked on 47 runs) and a whole-model LLC within 5 % of the healthy estimate nearest 80 % of training (checked on 13). Not settled: LLC still moving: 1 (a0.6_d128_s14 (+25.0 % since step 80)); label changed late: 1 (a0.6_d128_s13 (pizza at 80, pizza at 90, unclear at 100)); their values at the compared checkpoint are not settled ones. The LLC of 33 runs that pass could not be checked (no healthy whole-model estimate within a fifth of training of the 80 % point).";
    assert!(html.contains(&html::esc(settling)), "{html}");
    assert!(html.contains("α = 0.5, d_model 128 (pizza 2, unclear 1)"));
    assert!(html.contains("No LLC-along-training figure for α = 1, d_model 256"));
    // The labels-along-training table's last row of arm A (counted by hand in the test below).
    assert!(html.contains("<tr><td class=\"l\">α = 0.6, d_model 128</td><td>100</td><td>15</td><td>pizza 8, unclear 7</td><td>1</td></tr>"), "{html}");

    // The figures exist, are referenced, and are valid SVG and PNG.
    for stem in [
        "compare_llc_by_label_alpha0.6_d128",
        "compare_llc_vs_gs_alpha0.6_d128",
        "compare_llc_along_alpha0.6_d128",
        "compare_llc_by_label_alpha1_d256",
        "compare_llc_vs_gs_alpha1_d256",
    ] {
        assert!(o.figures.iter().any(|f| f == stem), "missing {stem}; have {:?}", o.figures);
        check_svg(&std::fs::read_to_string(out.join(format!("{stem}.svg"))).unwrap());
        let (w, h) = png_size(&std::fs::read(out.join(format!("{stem}.png"))).unwrap());
        assert!(w > 0 && h > 0);
    }
    assert!(!o.figures.iter().any(|f| f == "compare_llc_along_alpha1_d256"));
    for r in referenced(&html) {
        assert!(out.join(&r).is_file(), "{r}");
    }
    if let Ok(keep) = std::env::var("REPORT_TEST_KEEP") {
        let keep = Path::new(&keep).join("compare");
        std::fs::create_dir_all(&keep).unwrap();
        std::fs::copy(out.join("index.html"), keep.join("index.html")).unwrap();
        for stem in &o.figures {
            for ext in ["svg", "png"] {
                std::fs::copy(out.join(format!("{stem}.{ext}")), keep.join(format!("{stem}.{ext}"))).unwrap();
            }
        }
    }

    // Comparing at another step: step 90 has no LLC, so every estimate is left out as missing.
    let at90 = compare::comparisons(&data(&dir), CompareAt::Step(90));
    let c = &group(&at90.arms[0], "all").compared;
    assert!(c.points.is_empty() && c.left_out.iter().all(|l| l.why == "no estimate at step 90"));
    // Seed 13's label is pizza at 90 and the last fifth before 90 (72–90) holds 80 and 90.
    assert!(at90.arms[0].runs.iter().find(|r| r.id.seed == 13).unwrap().settled());
}

/// Arm A by hand: every run is `non-circular` at step 0 and `unclear` at 50; at 80 and 90 seeds
/// 0–6, 13 and 14 are Pizza, 7–12 unclear; at 100 seed 13 has turned `unclear`.
#[test]
fn labels_along_training_count_each_checkpoint_and_the_changes() {
    let tmp = Tmp::new("compare-labels");
    let dir = tmp.0.join("exp");
    experiment(&dir);
    let cells = compare::labels_along_training(&data(&dir));
    let order: Vec<(f64, i64)> = cells.iter().map(|(c, _)| (c.alpha, c.d_model)).collect();
    assert_eq!(order, [(0.0, 128), (0.5, 128), (0.6, 128), (1.0, 256)]);
    let row = |l: &compare::LabelsAt| (l.step, l.counts.iter().map(|(k, v)| (k.clone(), *v)).collect::<Vec<_>>(), l.changed);
    let c = |pairs: &[(&str, usize)]| pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect::<Vec<_>>();
    assert_eq!(
        cells[2].1.iter().map(row).collect::<Vec<_>>(),
        vec![
            (0, c(&[("non-circular", 15)]), 0),
            (50, c(&[("unclear", 15)]), 15),
            (80, c(&[("pizza", 9), ("unclear", 6)]), 9),
            (90, c(&[("pizza", 9), ("unclear", 6)]), 0),
            (100, c(&[("pizza", 8), ("unclear", 7)]), 1),
        ]
    );
    // Arm B's 26 runs: 12 Pizza, 12 Clock and 2 unclear from step 80 on, none changing after.
    assert_eq!(row(&cells[3].1[4]), (100, c(&[("clock", 12), ("pizza", 12), ("unclear", 2)]), 0));
}

#[test]
fn side_rule_and_detectability() {
    let counts = |v: &[(&str, usize)]| v.iter().map(|(k, n)| (k.to_string(), *n)).collect();
    assert_eq!(Sides::choose(&counts(&[("pizza", 12), ("clock", 12)])), Sides::PizzaVsClock);
    assert_eq!(Sides::choose(&counts(&[("pizza", 12), ("clock", 11), ("unclear", 9)])), Sides::PizzaVsRest);
    assert_eq!(Sides::choose(&counts(&[("pizza", 30), ("unclear", 30)])), Sides::PizzaVsRest);
    assert_eq!(Sides::PizzaVsClock.side("unclear"), None);
    assert_eq!(Sides::PizzaVsRest.side("clock"), Some(false));
    assert_eq!(compare::MIN_SIDE, 12);
    // 2 / C(n1 + n2, n1) < 0.05: C(8, 4) = 70, C(7, 3) = 35, C(8, 3) = 56, C(10, 2) = 45, C(9, 2) = 36.
    for (n1, n2, ok) in [(4, 4, true), (3, 4, false), (3, 5, true), (2, 8, true), (2, 7, false), (1, 40, true), (1, 38, false), (0, 50, false)] {
        assert_eq!(compare::can_detect(n1, n2), ok, "{n1} vs {n2}");
        assert_eq!(compare::can_detect(n2, n1), ok, "{n2} vs {n1}");
    }
}

fn sym(step: i64, label: &str) -> SymmetryRow {
    SymmetryRow {
        id: RunId::named("r"),
        step,
        checkpoint: String::new(),
        accuracy: 1.0,
        gradient_symmetry: 0.9,
        distance_irrelevance: 0.5,
        distance_irrelevance_top_wrong: 0.5,
        circularity: 1.0,
        solution: label.into(),
    }
}

fn est(step: i64, mean: f64) -> LlcRow {
    LlcRow { id: RunId::named("r"), step, restriction: "all".into(), mean, std: 1.0, loss_at_wstar: None, flags: vec![], epsilon: 1e-4, step_rungs: 1, rejected_steps: String::new(), r_hat: 1.0, mala_acceptance: 0.9, gamma: 300.0 }
}

#[test]
fn settling_windows() {
    let s = [sym(0, "clock"), sym(79, "clock"), sym(80, "pizza"), sym(100, "pizza")];
    let s: Vec<&SymmetryRow> = s.iter().collect();
    // Step 79 lies before the last fifth of 100 steps, 80 inside it.
    assert_eq!(compare::settling(100, &s, &[]).unsettled, None);
    assert_eq!(compare::settling(100, &s, &[]).label_checkpoints, 2);
    let late = [sym(80, "clock"), sym(100, "pizza")];
    let late: Vec<&SymmetryRow> = late.iter().collect();
    assert!(matches!(compare::settling(100, &late, &[]).unsettled, Some(Unsettled::LabelChangedLate(_))));

    // The estimate nearest 80 % among [60, 100): 75 rather than 60 or 0; a change of exactly 5 %
    // (40 → 42) is not settled, 4.75 % is.
    let e = [est(0, 1.0), est(60, 10.0), est(75, 40.0), est(100, 42.0)];
    let e: Vec<&LlcRow> = e.iter().collect();
    let st = compare::settling(100, &s, &e);
    assert_eq!(st.llc_change, Some((75, 0.05)));
    assert_eq!(st.unsettled, Some(Unsettled::LlcStillMoving { from: 75, change: 0.05 }));
    let e = [est(75, 40.0), est(100, 41.9)];
    let e: Vec<&LlcRow> = e.iter().collect();
    assert_eq!(compare::settling(100, &s, &e).unsettled, None);
    // Only step 0 and the end: nothing near 80 %, so the LLC is not checked.
    let e = [est(0, 1.0), est(59, 1.0), est(100, 42.0)];
    let e: Vec<&LlcRow> = e.iter().collect();
    assert_eq!(compare::settling(100, &s, &e).llc_change, None);
}

#[test]
fn four_runs_have_no_arm_in_one_line() {
    // `make all`'s design: α ∈ {0, 1} × 2 seeds, one label per cell (the report's own synthetic
    // experiment in `tests.rs`).
    let tmp = Tmp::new("compare-none");
    let dir = tmp.0.join("exp");
    for s in specs().into_iter().filter(|s| s.alpha == 0.0) {
        write_run(&s, &dir);
    }
    let out = tmp.0.join("out");
    let o = run(&opts(&dir, &out)).unwrap();
    let html = std::fs::read_to_string(out.join("index.html")).unwrap();
    assert!(!o.figures.iter().any(|f| f.starts_with("compare_")));
    assert!(o.skipped.iter().all(|(what, _)| !what.contains("comparison")));
    // Once in the findings, once in the section, each one line.
    assert_eq!(html.matches("No arm with enough runs").count(), 2, "{html}");
    let section = &html[html.find("<section id=\"compare\">").unwrap()..];
    let section = &section[..section.find("</section>").unwrap()];
    assert_eq!(section.matches("<p class=\"note\">").count(), 1, "{section}");
    assert!(!section.contains("<table>"));
}

#[test]
fn cells_name_only_what_differs() {
    let c = |p, alpha, wd| compare::Cell { p, alpha, d_model: 128, weight_decay: wd, train_frac: 0.3 };
    let all = [c(59, 0.6, 1.0), c(59, 0.65, 1.0)];
    assert_eq!(all[0].describe(&all), "α = 0.6, d_model 128");
    assert_eq!(all[1].stem(&all), "alpha0.65_d128");
    let all = [c(59, 0.6, 1.0), c(113, 0.6, 2.0)];
    assert_eq!(all[1].describe(&all), "α = 0.6, d_model 128, p = 113, weight decay 2");
    assert_eq!(all[1].stem(&all), "alpha0.6_d128_p113_wd2");
}

/// The phase sweep's shape (11 α × 5 widths × 3 seeds = 165 runs, symmetry at the last
/// checkpoint, LLC at step 0 and the last): the page stays short. No cell has enough seeds for an
/// arm (one line says so), per-run figures stop at `figures::MAX_PER_RUN`, lists in the findings
/// are cut, and the phase diagram draws every cell.
#[test]
fn a_phase_sweep_gives_a_short_page() {
    let tmp = Tmp::new("compare-sweep");
    let dir = tmp.0.join("exp");
    let widths = [32i64, 64, 128, 256, 512];
    for (wi, &d_model) in widths.iter().enumerate() {
        for k in 0..11 {
            let alpha = k as f64 / 10.0;
            for seed in 0..3 {
                // Pizza below an α that grows with width; the seed decides near the switch.
                let label = if alpha + 0.05 * (seed as f64) < 0.3 + 0.1 * wi as f64 { "pizza" } else { "clock" };
                let end = 40.0 + 10.0 * alpha + seed as f64;
                let s = Spec { alpha, d_model, seed, label, end_label: label, llc_end: end, llc_80: end, llc_0: Some(llc0(seed)), flagged_end: seed == 2 && k == 10, groups: false };
                write_run(&s, &dir);
            }
        }
    }
    let out = tmp.0.join("out");
    let o = run(&Options { no_checkpoints: true, ..opts(&dir, &out) }).unwrap();
    let html = std::fs::read_to_string(out.join("index.html")).unwrap();
    assert_eq!(html.matches("No arm with enough runs").count(), 2);
    assert!(html.contains("Cells with several labels but too few settled runs to test: α = 0.2, d_model 32 (clock 1, pizza 2);"), "{html}");
    assert!(html.contains("α = 0.6, d_model 512 (clock 1, pizza 2).</li>"));
    // 165 runs' LLC peaks: 12 named, the rest counted.
    assert!(html.contains("; and 153 more)."), "{html}");
    assert!(html.contains("5 of 165 runs have flagged LLC estimates") && !html.contains("; and 0 more"));
    assert!(o.figures.iter().filter(|f| f.starts_with("curves_")).count() == figures::MAX_PER_RUN);
    assert!(o.figures.iter().any(|f| f == "phase_diagram_alpha_width"));
    let figs = figures::phase_diagram(&summary::summarize(&data(&dir))).unwrap();
    let crate::plot::Panel::Heatmap(h) = &figs[1].figure.panels[0] else { panic!() };
    assert_eq!((h.x_centres.len(), h.y_centres.len(), h.annotate), (11, 5, true));
    assert!(figs[0].caption.contains("its seeds: 3 per cell"));
    assert!(html.len() < 400_000, "{} bytes", html.len());
}

/// The groups are tested together: a group differs detectably where its Holm-adjusted p is below
/// 0.05, and one below 0.05 only alone is named as that. Against 1…6, Pizzas 7…12 give the exact
/// two-sided p = 2/C(12, 6) = 2/924; with 1.5 in place of 7 the Pizzas lose 5 of the 36 pairs,
/// U = 31, p = 2·19/924 (19 arrangements have at most 5 losses: 1 + 1 + 2 + 3 + 5 + 7, the
/// partitions of 0…5); interleaved values give U = 21, p far above. Holm over four: 4·2/924 =
/// 0.0087 and 3·38/924 = 0.12.
#[test]
fn the_groups_are_judged_by_holms_adjusted_p() {
    let other = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
    let comparison = |group: &str, pizza: &[f64]| Comparison {
        group: group.to_string(),
        at: At::Compared,
        points: Vec::new(),
        left_out: Vec::new(),
        pizza: stats::summary(pizza),
        other: stats::summary(&other),
        diff: stats::bootstrap_mean_diff(pizza, &other, 100, 0),
        mann_whitney: stats::mann_whitney_u(pizza, &other),
        rho_gs: stats::bootstrap_spearman(&[], &[], 1, 0),
        rho_di: stats::bootstrap_spearman(&[], &[], 1, 0),
    };
    let interleaved = [1.5, 2.5, 3.5, 4.5, 5.5, 6.5];
    let groups: Vec<compare::GroupResult> = [
        comparison("embed", &[7.0, 8.0, 9.0, 10.0, 11.0, 12.0]),
        comparison("attn", &[1.5, 8.0, 9.0, 10.0, 11.0, 12.0]),
        comparison("mlp", &interleaved),
        comparison("unembed", &interleaved),
    ]
    .into_iter()
    .map(|compared| compare::GroupResult { compared, init: None })
    .collect();
    let (p1, p2) = (groups[0].compared.mann_whitney.p, groups[1].compared.mann_whitney.p);
    assert!((p1 - 2.0 / 924.0).abs() < 1e-12 && (p2 - 38.0 / 924.0).abs() < 1e-12, "{p1} {p2}");
    let refs: Vec<&compare::GroupResult> = groups.iter().collect();
    let text = findings::groups_clause(&refs);
    let want = format!(
        "; of the parameter groups `embed` (Pizza higher, p = {}, adjusted {}, r = 1) differs detectably (Holm's adjustment over the 4 groups); `attn` (Pizza higher, p = {}, adjusted {}, r = {}) reaches p < 0.05 alone but not after Holm's adjustment for the 4 groups tested; `mlp`, `unembed` do not differ",
        p_text(p1),
        p_text(4.0 * p1),
        p_text(p2),
        p_text(3.0 * p2),
        p_text(groups[1].compared.mann_whitney.rank_biserial)
    );
    assert_eq!(text, want);
    // One group alone is not adjusted.
    assert_eq!(findings::groups_clause(&refs[1..2]), format!("; of the parameter groups `attn` (Pizza higher, p = {}, r = {}) differs detectably", p_text(p2), p_text(groups[1].compared.mann_whitney.rank_biserial)));
}
