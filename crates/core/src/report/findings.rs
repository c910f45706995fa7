//! Findings: short statements computed from the run summaries, each with its numbers. Nothing
//! here is written by hand; a finding whose inputs are missing says so.

use std::collections::BTreeMap;

use super::summary::{RunSummary, GROK_THRESHOLD};
use crate::plot::fmt_sig;

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

/// Mean and sample standard deviation (n − 1; NaN for fewer than two values).
pub fn mean_std(x: &[f64]) -> (f64, f64) {
    let n = x.len() as f64;
    if x.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let m = x.iter().sum::<f64>() / n;
    let s = if x.len() < 2 { f64::NAN } else { (x.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (n - 1.0)).sqrt() };
    (m, s)
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
    let (mean_diff, std_diff) = mean_std(&diffs);
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
                let (m, sd) = mean_std(v);
                if v.len() >= 2 {
                    format!("{k}: mean {} (std {}, {} runs)", num(m), num(sd), v.len())
                } else {
                    format!("{k}: {} (1 run)", num(m))
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
            .map(|(a, v)| format!("α = {}: mean step {} ({} runs)", alpha_text(*a), num(mean_std(v).0), v.len()))
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
            text: format!("In {before} of {} runs the LLC peaks at or before the grokking step ({}).", timed.len(), list.join("; ")),
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
            format!("{} of {with_llc} runs have flagged LLC estimates ({}).", flagged.len(), list.join("; "))
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
