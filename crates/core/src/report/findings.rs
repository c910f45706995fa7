//! Findings: short statements computed from the run summaries, each with its numbers. Nothing
//! here is written by hand; a finding whose inputs are missing says so.

use std::collections::BTreeMap;

use super::compare::{self, Arm, Cell, Comparison, Comparisons, GroupResult, LabelsAt, DETECTABLE, LATE_FRACTION};
use super::html::Item;
use super::inputs::WHOLE_MODEL;
use super::summary::{RunSummary, GROK_THRESHOLD};
use crate::plot::fmt_sig;
use crate::stats;

/// One finding: a short title and a sentence with the numbers.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    /// What is compared.
    pub title: String,
    /// The result.
    pub text: String,
}

/// The final LLC of the same seed (and the same other settings) at the smallest and the largest
/// α of the experiment.
#[derive(Debug, Clone, PartialEq)]
pub struct Pair {
    /// Seed.
    pub seed: i64,
    /// Width (pairs are only formed at equal p, width, weight decay and training fraction).
    pub d_model: i64,
    /// Final LLC at the smallest α.
    pub llc_lo: f64,
    /// Final LLC at the largest α.
    pub llc_hi: f64,
}

/// Paired comparison of the final LLC between the smallest and the largest α.
#[derive(Debug, Clone, PartialEq)]
pub struct PairedLlc {
    /// Smallest α (0 in the paper's comparison: Pizza).
    pub alpha_lo: f64,
    /// Largest α (1: Clock).
    pub alpha_hi: f64,
    /// The pairs, sorted by (d_model, seed).
    pub pairs: Vec<Pair>,
    /// Pairs where the LLC at the largest α is below that at the smallest.
    pub below: usize,
    /// Mean of `llc_hi − llc_lo`.
    pub mean_diff: f64,
    /// Sample standard deviation (n − 1) of the differences; NaN for one pair.
    pub std_diff: f64,
    /// Smallest difference.
    pub min_diff: f64,
    /// Largest difference.
    pub max_diff: f64,
}

fn key(s: &RunSummary) -> (i64, i64, u64, u64, i64) {
    (s.id.p, s.id.d_model, s.id.weight_decay.to_bits(), s.id.train_frac.to_bits(), s.id.seed)
}

/// Pairs runs that differ only in α (smallest against largest α among runs with a final LLC).
/// `None` when fewer than two α values have an LLC, or no seed has both.
pub fn paired_final_llc(runs: &[RunSummary]) -> Option<PairedLlc> {
    let with: Vec<(&RunSummary, f64)> = runs
        .iter()
        .filter_map(|s| Some((s, s.llc_end?.mean)))
        .filter(|(s, v)| v.is_finite() && s.id.alpha.is_finite())
        .collect();
    let alpha_lo = with.iter().map(|(s, _)| s.id.alpha).fold(f64::INFINITY, f64::min);
    let alpha_hi = with.iter().map(|(s, _)| s.id.alpha).fold(f64::NEG_INFINITY, f64::max);
    if alpha_hi.partial_cmp(&alpha_lo) != Some(std::cmp::Ordering::Greater) {
        return None;
    }
    let mut lo: BTreeMap<_, f64> = BTreeMap::new();
    let mut hi: BTreeMap<_, f64> = BTreeMap::new();
    for (s, v) in &with {
        if s.id.alpha == alpha_lo {
            lo.insert(key(s), *v);
        } else if s.id.alpha == alpha_hi {
            hi.insert(key(s), *v);
        }
    }
    let mut pairs: Vec<Pair> = lo
        .iter()
        .filter_map(|(k, &l)| hi.get(k).map(|&h| Pair { seed: k.4, d_model: k.1, llc_lo: l, llc_hi: h }))
        .collect();
    if pairs.is_empty() {
        return None;
    }
    pairs.sort_by_key(|p| (p.d_model, p.seed));
    let diffs: Vec<f64> = pairs.iter().map(|p| p.llc_hi - p.llc_lo).collect();
    let d = stats::summary(&diffs);
    let (mean_diff, std_diff) = (d.mean, d.sd);
    Some(PairedLlc {
        alpha_lo,
        alpha_hi,
        below: pairs.iter().filter(|p| p.llc_hi < p.llc_lo).count(),
        mean_diff,
        std_diff,
        min_diff: diffs.iter().copied().fold(f64::INFINITY, f64::min),
        max_diff: diffs.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        pairs,
    })
}

/// Runs named at most in one finding's list.
const MAX_LISTED: usize = 12;

/// Up to `max` items joined by `; `, then `and N more`: lists in prose stay short when an
/// experiment has hundreds of runs.
pub fn named(list: &[String], max: usize) -> String {
    if list.len() <= max {
        list.join("; ")
    } else {
        format!("{}; and {} more", list[..max].join("; "), list.len() - max)
    }
}

/// A number for prose: 4 significant digits, `n/a` when not finite.
pub fn num(x: f64) -> String {
    if x.is_finite() {
        fmt_sig(x, 4)
    } else {
        "n/a".into()
    }
}

fn alpha_text(a: f64) -> String {
    num(a)
}

/// Every finding, in a fixed order.
pub fn findings(runs: &[RunSummary]) -> Vec<Finding> {
    let mut out = Vec::new();

    // 1. The question: does the LLC tell the two α apart, seed by seed?
    let title = "Final LLC, smallest against largest α (same seed)".to_string();
    match paired_final_llc(runs) {
        Some(p) => {
            let n = p.pairs.len();
            let spread = if n >= 2 {
                format!("std {} over {n} pairs, range {} to {}", num(p.std_diff), num(p.min_diff), num(p.max_diff))
            } else {
                "one pair, so no spread".to_string()
            };
            let list: Vec<String> = p
                .pairs
                .iter()
                .map(|q| format!("seed {}: {} vs {}", q.seed, num(q.llc_hi), num(q.llc_lo)))
                .collect();
            out.push(Finding {
                title,
                text: format!(
                    "In {} of {n} seeds the final LLC at α = {} is below that at α = {}. Mean difference LLC(α = {}) − LLC(α = {}) = {} ({spread}). Per seed (α = {} vs α = {}): {}.",
                    p.below,
                    alpha_text(p.alpha_hi),
                    alpha_text(p.alpha_lo),
                    alpha_text(p.alpha_hi),
                    alpha_text(p.alpha_lo),
                    num(p.mean_diff),
                    alpha_text(p.alpha_hi),
                    alpha_text(p.alpha_lo),
                    list.join("; ")
                ),
            });
        }
        None => out.push(Finding {
            title,
            text: "Not available: it needs final LLC estimates for the same seed at two values of α.".into(),
        }),
    }

    // 2. Solutions by α.
    let mut by_alpha: BTreeMap<u64, (f64, BTreeMap<String, usize>)> = BTreeMap::new();
    for s in runs {
        if let Some(sol) = &s.solution {
            let e = by_alpha.entry(order_key(s.id.alpha)).or_insert((s.id.alpha, BTreeMap::new()));
            *e.1.entry(sol.clone()).or_default() += 1;
        }
    }
    let title = "Solution at the last checkpoint, by α".to_string();
    if by_alpha.is_empty() {
        out.push(Finding { title, text: "Not available: no symmetry table.".into() });
    } else {
        let parts: Vec<String> = by_alpha
            .values()
            .map(|(a, counts)| {
                let c: Vec<String> = counts.iter().map(|(k, v)| format!("{k} {v}")).collect();
                format!("α = {}: {}", alpha_text(*a), c.join(", "))
            })
            .collect();
        out.push(Finding { title, text: format!("{}.", parts.join("; ")) });
    }

    // 3. Final LLC by solution label.
    let mut by_sol: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for s in runs {
        if let (Some(sol), Some(l)) = (&s.solution, s.llc_end) {
            if l.mean.is_finite() {
                by_sol.entry(sol.clone()).or_default().push(l.mean);
            }
        }
    }
    let title = "Final LLC by solution label".to_string();
    if by_sol.is_empty() {
        out.push(Finding { title, text: "Not available: it needs both the symmetry and the LLC tables.".into() });
    } else {
        let parts: Vec<String> = by_sol
            .iter()
            .map(|(k, v)| {
                let sm = stats::summary(v);
                if v.len() >= 2 {
                    format!("{k}: mean {} (std {}, {} runs)", num(sm.mean), num(sm.sd), v.len())
                } else {
                    format!("{k}: {} (1 run)", num(sm.mean))
                }
            })
            .collect();
        out.push(Finding { title, text: format!("{}.", parts.join("; ")) });
    }

    // 4. Grokking.
    let with_val: Vec<&RunSummary> = runs.iter().filter(|s| s.final_val_acc.is_some()).collect();
    let title = format!("Grokking (validation accuracy ≥ {GROK_THRESHOLD} from some step on)");
    if with_val.is_empty() {
        out.push(Finding { title, text: "Not available: no training metrics.".into() });
    } else {
        let grokked = with_val.iter().filter(|s| s.grok_step.is_some()).count();
        let mut steps_by_alpha: BTreeMap<u64, (f64, Vec<f64>)> = BTreeMap::new();
        for s in &with_val {
            if let Some(g) = s.grok_step {
                steps_by_alpha.entry(order_key(s.id.alpha)).or_insert((s.id.alpha, Vec::new())).1.push(g as f64);
            }
        }
        let parts: Vec<String> = steps_by_alpha
            .values()
            .map(|(a, v)| format!("α = {}: mean step {} ({} runs)", alpha_text(*a), num(stats::summary(v).mean), v.len()))
            .collect();
        let tail = if parts.is_empty() { String::new() } else { format!(" Grokking step {}.", parts.join("; ")) };
        out.push(Finding { title, text: format!("{grokked} of {} runs grokked.{tail}", with_val.len()) });
    }

    // 5. LLC peak against grokking.
    let timed: Vec<(&RunSummary, i64, i64)> =
        runs.iter().filter_map(|s| Some((s, s.llc_peak?.step, s.grok_step?))).collect();
    let title = "Step of the LLC peak against the grokking step".to_string();
    if timed.is_empty() {
        out.push(Finding { title, text: "Not available: it needs LLC estimates and a grokked run.".into() });
    } else {
        let before = timed.iter().filter(|(_, p, g)| p <= g).count();
        let list: Vec<String> = timed.iter().map(|(s, p, g)| format!("{}: peak {p}, grokking {g}", s.id.run)).collect();
        out.push(Finding {
            title,
            text: format!("In {before} of {} runs the LLC peaks at or before the grokking step ({}).", timed.len(), named(&list, MAX_LISTED)),
        });
    }

    // 6. Health of the estimates.
    let flagged: Vec<&RunSummary> = runs.iter().filter(|s| s.flags.iter().any(|f| f.contains('@'))).collect();
    let with_llc = runs.iter().filter(|s| s.llc_end.is_some()).count();
    if with_llc > 0 {
        let text = if flagged.is_empty() {
            format!("No LLC estimate of the {with_llc} runs with estimates carries a health flag.")
        } else {
            let list: Vec<String> = flagged
                .iter()
                .map(|s| format!("{}: {}", s.id.run, s.flags.iter().filter(|f| f.contains('@')).cloned().collect::<Vec<_>>().join(", ")))
                .collect();
            format!("{} of {with_llc} runs have flagged LLC estimates ({}).", flagged.len(), named(&list, MAX_LISTED))
        };
        out.push(Finding { title: "Health of the LLC estimates".into(), text });
    }
    out
}

/// A sortable key for an f64 (α values are finite and non-negative in practice).
fn order_key(x: f64) -> u64 {
    let b = x.to_bits();
    if x.is_sign_negative() {
        !b
    } else {
        b | (1 << 63)
    }
}

// ---------------------------------------------------------------------------------------------
// The comparison at a fixed α (`super::compare`): one sentence per arm, the notes and the tables.

/// A p-value or correlation for prose: 2 significant digits, `n/a` when undefined.
pub fn p_text(p: f64) -> String {
    if p.is_finite() {
        fmt_sig(p, 2)
    } else {
        "n/a".into()
    }
}

/// `14.2 [8.1, 20.3]`, with the count of undefined resamples when there are any.
pub fn interval_text(i: &stats::Interval, sig: usize) -> String {
    let f = |x: f64| if x.is_finite() { fmt_sig(x, sig) } else { "n/a".into() };
    let mut s = format!("{} [{}, {}]", f(i.estimate), f(i.low), f(i.high));
    if i.undefined > 0 && i.estimate.is_finite() {
        s.push_str(&format!(" ({} of {} resamples undefined)", i.undefined, i.resamples));
    }
    s
}

/// `12.3 ± 1.2 (median 12)`; `–` for an empty sample.
pub fn summary_text(s: &stats::Summary) -> String {
    match s.n {
        0 => "–".into(),
        1 => num(s.mean),
        _ => format!("{} ± {} (median {})", num(s.mean), num(s.sd), num(s.median)),
    }
}

fn group_phrase(group: &str) -> String {
    if group == WHOLE_MODEL {
        "whole-model LLC".into()
    } else {
        format!("LLC restricted to `{group}`")
    }
}

/// The difference in words: `12 % higher (difference 14.2 [8.1, 20.3], Mann–Whitney p = 0.003,
/// r = 0.62)`, or that there is none detectable.
fn difference_clause(c: &Comparison, other: &str) -> String {
    let numbers = format!(
        "difference {}, Mann–Whitney p = {}, r = {}",
        interval_text(&c.diff, 3),
        p_text(c.mann_whitney.p),
        p_text(c.mann_whitney.rank_biserial)
    );
    let what = group_phrase(&c.group);
    if c.detectable() {
        let rel = 100.0 * (c.pizza.mean - c.other.mean) / c.other.mean.abs();
        let dir = if c.pizza.mean > c.other.mean { "higher" } else { "lower" };
        let pct = if rel.is_finite() { format!("{} % {dir}", fmt_sig(rel.abs(), 2)) } else { dir.to_string() };
        format!("the {what} of Pizza runs is {pct} than that of the {other} runs ({numbers})")
    } else {
        format!("there is no detectable difference in the {what} between Pizza and {other} runs ({numbers})")
    }
}

/// The finding of one arm, one sentence with its numbers.
pub fn arm_finding(arm: &Arm, cells: &[Cell]) -> Finding {
    let name = arm.cell.describe(cells);
    let other = arm.sides.other();
    let title = format!("Pizza against {} at {name}", if other == "clock" { "Clock" } else { "the other solutions" });
    let Some(h) = arm.headline() else {
        return Finding { title, text: format!("At {name} no run of the arm has an LLC estimate.") };
    };
    let c = &h.compared;
    let mut text = format!("At {name} (n = {} pizza, {} {other}; {}): {}", c.pizza.n, c.other.n, arm.steps_text(), difference_clause(c, other));
    match &h.init {
        Some(i) if i.detectable() => text.push_str(&format!(
            "; at step 0 the difference is already detectable (difference {}, p = {}), so it is not the solution's alone",
            interval_text(&i.diff, 3),
            p_text(i.mann_whitney.p)
        )),
        Some(i) => text.push_str(&format!("; at step 0 there is no detectable difference (p = {})", p_text(i.mann_whitney.p))),
        None => text.push_str("; there is no step-0 estimate to control with"),
    }
    let rest: Vec<&GroupResult> = arm.groups.iter().filter(|g| g.compared.group != c.group).collect();
    if !rest.is_empty() {
        text.push_str(&groups_clause(&rest));
    }
    text.push_str(&format!(
        "; over the arm's {} runs ρ(LLC, gradient symmetry) = {} and ρ(LLC, distance irrelevance) = {}.",
        c.points.len(),
        interval_text(&c.rho_gs, 2),
        interval_text(&c.rho_di, 2)
    ));
    Finding { title, text }
}

/// The parameter groups' differences at the compared checkpoint, tested together: a group
/// differs detectably where its Holm-adjusted p ([`stats::holm`] over the groups) is below
/// [`DETECTABLE`]; one below it only alone is named as such, not as a difference.
pub(crate) fn groups_clause(groups: &[&GroupResult]) -> String {
    let adjusted = stats::holm(&groups.iter().map(|g| g.compared.mann_whitney.p).collect::<Vec<_>>());
    let m = adjusted.iter().filter(|p| !p.is_nan()).count();
    let (mut yes, mut alone, mut no) = (Vec::new(), Vec::new(), Vec::new());
    for (&g, &adj) in groups.iter().zip(&adjusted) {
        if adj < DETECTABLE {
            yes.push((g, adj));
        } else if g.compared.detectable() {
            alone.push((g, adj));
        } else {
            no.push(format!("`{}`", g.compared.group));
        }
    }
    let listed = |v: &[(&GroupResult, f64)]| {
        v.iter()
            .map(|(g, adj)| {
                let k = &g.compared;
                let dir = if k.pizza.mean > k.other.mean { "Pizza higher" } else { "Pizza lower" };
                let control = match &g.init {
                    Some(i) if i.detectable() => format!("; also at step 0, p = {}", p_text(i.mann_whitney.p)),
                    _ => String::new(),
                };
                let adjusted = if m > 1 { format!(", adjusted {}", p_text(*adj)) } else { String::new() };
                format!("`{}` ({dir}, p = {}{adjusted}, r = {}{control})", k.group, p_text(k.mann_whitney.p), p_text(k.mann_whitney.rank_biserial))
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let s = |n: usize, one: &'static str, many: &'static str| if n == 1 { one } else { many };
    let mut parts = Vec::new();
    if !yes.is_empty() {
        let over = if m > 1 { format!(" (Holm's adjustment over the {m} groups)") } else { String::new() };
        parts.push(format!("of the parameter groups {} differ{} detectably{over}", listed(&yes), s(yes.len(), "s", "")));
    }
    if !alone.is_empty() {
        parts.push(format!(
            "{} reach{} p < {} alone but not after Holm's adjustment for the {m} groups tested",
            listed(&alone),
            s(alone.len(), "es", ""),
            p_text(DETECTABLE)
        ));
    }
    if !no.is_empty() {
        parts.push(if parts.is_empty() {
            format!("no parameter group ({}) differs detectably", no.join(", "))
        } else {
            format!("{} do{} not differ", no.join(", "), s(no.len(), "es", ""))
        });
    }
    format!("; {}", parts.join("; "))
}

/// The comparison's findings: one per arm, or one line saying there is no arm (`no_labels`: why
/// no run is labelled, when the symmetry table is missing).
pub fn comparison_findings(cmp: &Comparisons, no_labels: Option<String>) -> Vec<Finding> {
    let mut out: Vec<Finding> = if !cmp.arms.is_empty() {
        cmp.arms.iter().map(|a| arm_finding(a, &cmp.cells)).collect()
    } else {
        let title = "Pizza against other solutions at a fixed α".to_string();
        match no_labels {
            Some(why) => vec![Finding { title, text: format!("Not available: no run is labelled ({why}).") }],
            None => vec![Finding { title, text: no_arm_text(cmp) }],
        }
    };
    out.extend(settling_finding(cmp));
    out
}

/// Whether the values at each run's compared checkpoint are settled ones, by the comparison's
/// rule ([`compare::settling`]), over every labelled run: an experiment too short to settle
/// says so on its first page (issue 14's "say plainly").
pub fn settling_finding(cmp: &Comparisons) -> Option<Finding> {
    let runs = &cmp.labelled;
    if runs.is_empty() {
        return None;
    }
    let settled = runs.iter().filter(|r| r.settled()).count();
    let label_checked = runs.iter().filter(|r| r.settling.label_checkpoints >= 2).count();
    let llc_checked = runs.iter().filter(|r| r.settling.llc_change.is_some()).count();
    let mut text = format!(
        "{settled} of {} labelled runs pass the settling checks at their compared checkpoint: the same label at every symmetry checkpoint of the last {} % of training (checked on {label_checked} runs) and a whole-model LLC within {} % of the healthy estimate nearest 80 % of training (checked on {llc_checked}).",
        runs.len(),
        (100.0 * LATE_FRACTION).round(),
        (100.0 * compare::LLC_SETTLED).round()
    );
    if let Some(u) = compare::unsettled_text(runs, 8) {
        text.push_str(&format!(" Not settled: {u}; their values at the compared checkpoint are not settled ones."));
    }
    let unchecked = runs.len() - runs.iter().filter(|r| r.settling.llc_change.is_some() || !r.settled()).count();
    if unchecked > 0 {
        text.push_str(&format!(" The LLC of {unchecked} runs that pass could not be checked (no healthy whole-model estimate within a fifth of training of the 80 % point)."));
    }
    Some(Finding { title: "Settling at the compared checkpoint".into(), text })
}

/// Why there is no arm, in one line.
pub fn no_arm_text(cmp: &Comparisons) -> String {
    let mut text = format!(
        "No arm with enough runs: no cell of runs that differ only in the seed has settled Pizza and other runs in numbers a two-sided Mann–Whitney test could tell apart at p < {DETECTABLE} (at least 4 against 4, or 3 against 5)."
    );
    if let Some(small) = small_cells_text(cmp) {
        text.push(' ');
        text.push_str(&small);
    }
    text
}

/// The mixed cells too small to test, or `None`.
fn small_cells_text(cmp: &Comparisons) -> Option<String> {
    if cmp.small.is_empty() {
        return None;
    }
    let list: Vec<String> = cmp
        .small
        .iter()
        .map(|s| {
            let u = if s.unsettled > 0 { format!(", {} unsettled", s.unsettled) } else { String::new() };
            format!("{} ({}{u})", s.cell.describe(&cmp.cells), counts_text(&s.counts).join(", "))
        })
        .collect();
    Some(format!("Cells with several labels but too few settled runs to test: {}.", named(&list, 5)))
}

/// One note per arm: its runs, the side rule, and who was left out as unsettled and why.
pub fn comparison_notes(cmp: &Comparisons) -> Vec<String> {
    let mut notes = Vec::new();
    for arm in &cmp.arms {
        let all: Vec<String> = counts_text(&super::compare::label_counts(arm.runs.iter()));
        let settled = arm.runs.iter().filter(|r| r.settled()).count();
        let label_checked = arm.runs.iter().filter(|r| r.settling.label_checkpoints >= 2).count();
        let llc_checked = arm.runs.iter().filter(|r| r.settling.llc_change.is_some()).count();
        let mut n = format!(
            "{}: {} labelled runs ({}), compared at {}; sides: {}. Settled: {settled} of {}; the label was checked on {label_checked} runs (two or more symmetry checkpoints in the last {} % of training), the LLC on {llc_checked} (a healthy whole-model estimate within a fifth of training of the 80 % point).",
            arm.cell.describe(&cmp.cells),
            arm.runs.len(),
            all.join(", "),
            arm.steps_text(),
            arm.sides.describe(),
            arm.runs.len(),
            (100.0 * LATE_FRACTION).round()
        );
        if let Some(u) = compare::unsettled_text(&arm.runs, 8) {
            n.push_str(&format!(" Left out as not settled: {u}."));
        }
        notes.push(n);
    }
    notes.extend(small_cells_text(cmp));
    if !cmp.unlabelled.is_empty() {
        notes.push(format!(
            "{} runs have no symmetry measures at their compared checkpoint, so no label, and are in no arm: {}.",
            cmp.unlabelled.len(),
            named(&cmp.unlabelled, 8)
        ));
    }
    notes
}

fn counts_text(c: &BTreeMap<String, usize>) -> Vec<String> {
    c.iter().map(|(k, v)| format!("{k} {v}")).collect()
}

/// The estimates left out, per side and by reason: `2 (pizza 1, other 1; flag_r_hat: a; no
/// estimate at step 0: b)`. A run on neither side (an `unclear` one in Pizza against Clock) counts
/// under its label.
fn left_out_text(c: &Comparison, sides: compare::Sides) -> String {
    if c.left_out.is_empty() {
        return "0".into();
    }
    let mut side: BTreeMap<String, usize> = BTreeMap::new();
    let mut by: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for l in &c.left_out {
        let name = match sides.side(&l.label) {
            Some(true) => compare::PIZZA.to_string(),
            Some(false) => sides.other().to_string(),
            None => l.label.clone(),
        };
        *side.entry(name).or_default() += 1;
        by.entry(l.why.as_str()).or_default().push(l.run.clone());
    }
    let parts: Vec<String> = by.iter().map(|(why, runs)| format!("{why}: {}", named(runs, 3))).collect();
    format!("{} ({}; {})", c.left_out.len(), counts_text(&side).join(", "), parts.join("; "))
}

/// The statistics table (one row per arm, group and checkpoint) and the covariate table.
pub fn comparison_tables(cmp: &Comparisons) -> Vec<Item> {
    let mut rows = Vec::new();
    let mut cov = Vec::new();
    for arm in &cmp.arms {
        let name = arm.cell.describe(&cmp.cells);
        let other = arm.sides.other();
        for g in &arm.groups {
            for c in std::iter::once(&g.compared).chain(&g.init) {
                rows.push(vec![
                    name.clone(),
                    c.group.clone(),
                    c.at.name().to_string(),
                    format!("pizza {} vs {other} {}", c.pizza.n, c.other.n),
                    summary_text(&c.pizza),
                    summary_text(&c.other),
                    interval_text(&c.diff, 3),
                    p_text(c.mann_whitney.p),
                    p_text(c.mann_whitney.rank_biserial),
                    interval_text(&c.rho_gs, 2),
                    interval_text(&c.rho_di, 2),
                    left_out_text(c, arm.sides),
                ]);
            }
        }
        for c in &arm.covariates {
            cov.push(vec![
                name.clone(),
                c.name.to_string(),
                format!("pizza {} vs {other} {}", c.pizza.n, c.other.n),
                summary_text(&c.pizza),
                summary_text(&c.other),
                p_text(c.mann_whitney.p),
            ]);
        }
    }
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let tables = vec![
        Item::Table {
            caption: format!(
                "LLC of Pizza against the other side, per arm, parameter group and checkpoint. Summaries: mean ± sd (median); difference: mean(pizza) − mean(other) with a percentile-bootstrap 95 % interval ({} resamples per side); Mann–Whitney: two-sided p and rank-biserial r (> 0: Pizza larger); ρ: Spearman over every run of the arm with a healthy estimate (all labels), with a paired-bootstrap 95 % interval. The p-values are per test, not corrected for the several groups.",
                stats::BOOTSTRAP_RESAMPLES
            ),
            head: s(&["arm", "group", "checkpoint", "n", "pizza", "other", "difference [95 % CI]", "Mann–Whitney p", "r", "ρ(LLC, gradient symmetry)", "ρ(LLC, distance irrelevance)", "left out (unhealthy or missing)"]),
            left: 4,
            rows,
        },
        Item::Table {
            caption: "Training loss and parameter norm at the compared checkpoint (the last training row of `metrics.parquet` at or before it), per side: where these differ as the LLC does, the LLC difference may be only a difference in them.".into(),
            head: s(&["arm", "measure", "n", "pizza", "other", "Mann–Whitney p"]),
            left: 3,
            rows: cov,
        },
    ];
    tables.into_iter().filter(|t| !matches!(t, Item::Table { rows, .. } if rows.is_empty())).collect()
}

/// The table of [`compare::labels_along_training`]: one row per cell and checkpoint (`None`
/// without symmetry rows).
pub fn labels_table(cells: &[(Cell, Vec<LabelsAt>)]) -> Option<Item> {
    let all: Vec<Cell> = cells.iter().map(|(c, _)| *c).collect();
    let rows: Vec<Vec<String>> = cells
        .iter()
        .flat_map(|(cell, at)| {
            let name = cell.describe(&all);
            at.iter().map(move |l| {
                let counts: Vec<String> = l.counts.iter().map(|(k, v)| format!("{k} {v}")).collect();
                vec![name.clone(), l.step.to_string(), l.counts.values().sum::<usize>().to_string(), counts.join(", "), l.changed.to_string()]
            })
        })
        .collect();
    (!rows.is_empty()).then(|| Item::Table {
        caption: "How the labels moved with training length: per cell of runs that differ only in the seed, the labels (`solution` in `symmetry.parquet`) at each checkpoint with symmetry measures, and how many runs changed label since the cell's previous such checkpoint.".into(),
        head: ["cell", "step", "runs", "labels", "changed since the previous checkpoint"].iter().map(|x| x.to_string()).collect(),
        left: 1,
        rows,
    })
}
