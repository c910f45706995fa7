//! Per-run summaries (the report's run table): curves, the grokking step, the final Pizza/Clock
//! measures and the LLC at the end and at its peak. Pure functions of the rows.

use std::collections::BTreeMap;

use super::inputs::{Data, LlcRow, MetricRow, RunId, SymmetryRow};

/// Validation accuracy that counts as solved. The grokking step is the first evaluated step
/// from which the validation accuracy stays at or above this for every later evaluation (so a
/// transient spike above it does not count, and neither does a run that falls back).
pub const GROK_THRESHOLD: f64 = 0.99;

/// One split's curve, sorted by step.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Curve {
    /// Steps, increasing.
    pub steps: Vec<i64>,
    /// Loss at each step.
    pub loss: Vec<f64>,
    /// Accuracy at each step.
    pub accuracy: Vec<f64>,
}

impl Curve {
    fn from_rows(mut rows: Vec<&MetricRow>) -> Curve {
        rows.sort_by_key(|r| r.step);
        rows.dedup_by_key(|r| r.step);
        Curve {
            steps: rows.iter().map(|r| r.step).collect(),
            loss: rows.iter().map(|r| r.loss).collect(),
            accuracy: rows.iter().map(|r| r.accuracy).collect(),
        }
    }

    /// `(step, loss)` pairs.
    pub fn loss_points(&self) -> Vec<(f64, f64)> {
        self.steps.iter().zip(&self.loss).map(|(&s, &l)| (s as f64, l)).collect()
    }

    /// `(step, accuracy)` pairs.
    pub fn accuracy_points(&self) -> Vec<(f64, f64)> {
        self.steps.iter().zip(&self.accuracy).map(|(&s, &a)| (s as f64, a)).collect()
    }
}

/// A run's training and validation curves.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunCurves {
    /// Training split.
    pub train: Curve,
    /// Validation split.
    pub val: Curve,
}

/// Curves of every run in the metrics rows.
pub fn curves(rows: &[MetricRow]) -> BTreeMap<String, RunCurves> {
    let mut by: BTreeMap<String, (Vec<&MetricRow>, Vec<&MetricRow>)> = BTreeMap::new();
    for r in rows {
        let e = by.entry(r.id.run.clone()).or_default();
        if r.split == "train" {
            e.0.push(r);
        } else if r.split == "val" {
            e.1.push(r);
        }
    }
    by.into_iter().map(|(k, (t, v))| (k, RunCurves { train: Curve::from_rows(t), val: Curve::from_rows(v) })).collect()
}

/// The grokking step of a validation curve (see [`GROK_THRESHOLD`]).
pub fn grokking_step(val: &Curve) -> Option<i64> {
    let mut first = None;
    for (&s, &a) in val.steps.iter().zip(&val.accuracy).rev() {
        if a >= GROK_THRESHOLD {
            first = Some(s);
        } else {
            break;
        }
    }
    first
}

/// The last row of each run by step.
fn last_by_run<T>(rows: &[T], key: impl Fn(&T) -> (&str, i64)) -> BTreeMap<String, &T> {
    let mut out: BTreeMap<String, &T> = BTreeMap::new();
    for r in rows {
        let (run, step) = key(r);
        match out.get(run) {
            Some(have) if key(have).1 >= step => {}
            _ => {
                out.insert(run.to_string(), r);
            }
        }
    }
    out
}

/// The symmetry row of each run's last checkpoint.
pub fn final_symmetry(rows: &[SymmetryRow]) -> BTreeMap<String, &SymmetryRow> {
    last_by_run(rows, |r| (r.id.run.as_str(), r.step))
}

/// The localisation γ of the estimates, in words: the value of an LLC estimate depends on γ
/// (docs/llc.md, "The localisation γ"), so a reader comparing numbers across reports needs it.
pub fn gamma_note(rows: &[LlcRow]) -> String {
    let gammas: std::collections::BTreeSet<String> = rows.iter().map(|r| super::findings::num(r.gamma)).collect();
    match gammas.len() {
        0 => String::new(),
        1 => format!("Localisation γ = {}: an estimate is comparable only with estimates at the same γ.", gammas.into_iter().next().unwrap_or_default()),
        _ => format!("Localisation γ = {} (several values: an estimate is comparable only with estimates at the same γ).", gammas.into_iter().collect::<Vec<_>>().join(", ")),
    }
}

/// Each run's whole-model LLC estimates ([`LlcRow::whole_model`]), sorted by step: what every
/// per-run LLC figure and the run table show. Estimates restricted to a group of parameters
/// enter only the comparison ([`super::compare`]).
pub fn llc_by_run(rows: &[LlcRow]) -> BTreeMap<String, Vec<&LlcRow>> {
    let mut out: BTreeMap<String, Vec<&LlcRow>> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.whole_model()) {
        out.entry(r.id.run.clone()).or_default().push(r);
    }
    for v in out.values_mut() {
        v.sort_by_key(|r| r.step);
    }
    out
}

/// An LLC estimate at one step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LlcAt {
    /// Step of the checkpoint.
    pub step: i64,
    /// Mean over chains.
    pub mean: f64,
    /// Std over chains.
    pub std: f64,
    /// See [`LlcRow::healthy`].
    pub healthy: bool,
}

impl LlcAt {
    fn of(r: &LlcRow) -> LlcAt {
        LlcAt { step: r.step, mean: r.mean, std: r.std, healthy: r.healthy() }
    }

    /// The estimate when it is healthy.
    pub fn healthy_mean(&self) -> Option<f64> {
        self.healthy.then_some(self.mean)
    }
}

/// One line of the run table.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSummary {
    /// The run.
    pub id: RunId,
    /// Last step with metrics.
    pub last_step: Option<i64>,
    /// Final training accuracy.
    pub final_train_acc: Option<f64>,
    /// Final validation accuracy.
    pub final_val_acc: Option<f64>,
    /// Final training loss.
    pub final_train_loss: Option<f64>,
    /// Final validation loss.
    pub final_val_loss: Option<f64>,
    /// See [`grokking_step`].
    pub grok_step: Option<i64>,
    /// Solution label at the last checkpoint with symmetry measures.
    pub solution: Option<String>,
    /// Gradient symmetry at that checkpoint.
    pub gradient_symmetry: Option<f64>,
    /// Distance irrelevance at that checkpoint.
    pub distance_irrelevance: Option<f64>,
    /// LLC at the last checkpoint with an estimate.
    pub llc_end: Option<LlcAt>,
    /// LLC at step 0 (the initialisation), when estimated.
    pub llc_step0: Option<LlcAt>,
    /// The largest LLC mean along training.
    pub llc_peak: Option<LlcAt>,
    /// Things to look at: `not grokked`, LLC health flags (`flag@step`).
    pub flags: Vec<String>,
}

/// Summaries of every run, sorted by run id.
pub fn summarize(data: &Data) -> Vec<RunSummary> {
    let runs = data.runs();
    let curves = curves(&data.metrics.rows);
    let sym = final_symmetry(&data.symmetry.rows);
    let llc = llc_by_run(&data.llc.rows);
    runs.into_values()
        .map(|id| {
            let c = curves.get(&id.run);
            let last = |cv: &Curve, v: &Vec<f64>| if cv.steps.is_empty() { None } else { v.last().copied() };
            let grok = c.and_then(|c| grokking_step(&c.val));
            let s = sym.get(&id.run);
            let est = llc.get(&id.run);
            let llc_end = est.and_then(|v| v.last()).map(|r| LlcAt::of(r));
            let llc_step0 = est.and_then(|v| v.first()).filter(|r| r.step == 0).map(|r| LlcAt::of(r));
            let llc_peak = est.and_then(|v| {
                v.iter().filter(|r| r.mean.is_finite()).max_by(|a, b| a.mean.total_cmp(&b.mean)).map(|r| LlcAt::of(r))
            });
            let mut flags = Vec::new();
            if let Some(c) = c {
                if !c.val.steps.is_empty() && grok.is_none() {
                    flags.push("not grokked".to_string());
                }
            }
            if let Some(v) = est {
                for r in v {
                    for f in &r.flags {
                        flags.push(format!("{f}@{}", r.step));
                    }
                }
            }
            RunSummary {
                last_step: c.and_then(|c| c.train.steps.last().or(c.val.steps.last()).copied()),
                final_train_acc: c.and_then(|c| last(&c.train, &c.train.accuracy)),
                final_val_acc: c.and_then(|c| last(&c.val, &c.val.accuracy)),
                final_train_loss: c.and_then(|c| last(&c.train, &c.train.loss)),
                final_val_loss: c.and_then(|c| last(&c.val, &c.val.loss)),
                grok_step: grok,
                solution: s.map(|r| r.solution.clone()),
                gradient_symmetry: s.map(|r| r.gradient_symmetry),
                distance_irrelevance: s.map(|r| r.distance_irrelevance),
                llc_end,
                llc_step0,
                llc_peak,
                flags,
                id,
            }
        })
        .collect()
}
