/*!
The comparison that answers the project's question without the α confound (issue 14): Pizza
runs against the other runs **at the same attention rate**, where only the seed decided which
solution a run found.

- An *arm* is a cell of runs that share every id column but the seed (p, α, d_model, weight
  decay, training fraction) and whose runs end with different labels (`solution` in
  `symmetry.parquet`).
- Each run is compared at one checkpoint ([`CompareAt`]; by default its last), labelled there,
  and enters only if it has *settled* ([`settling`]): the same label at every symmetry checkpoint
  of the last fifth of training, and a whole-model LLC that changed by less than
  [`LLC_SETTLED`] from the estimate nearest 80 % of training.
- The sides are `pizza` against `clock` where each has at least [`MIN_SIDE`] settled runs, else
  `pizza` against every other label ([`Sides`]). An arm is compared only where its sides are big
  enough that a two-sided Mann–Whitney test could reach p < [`DETECTABLE`] at all
  ([`can_detect`]); smaller mixed cells are listed, not tested.
- Per restriction group (`restriction` in `llc.parquet`) and checkpoint (the compared one, and
  step 0 as the control) a [`Comparison`] holds the summaries of each side, the difference of
  means with its bootstrap interval, the Mann–Whitney test and the Spearman correlations of the
  LLC with gradient symmetry and distance irrelevance over all runs of the arm. Only healthy
  estimates ([`LlcRow::healthy`]) enter; the others are listed with their reason.

Every number comes from [`crate::stats`]; this module only chooses the samples. Bootstrap seeds
are derived from the arm, group, checkpoint and statistic ([`seed`]), so every interval has its
own stream and the page is the same bytes on every run.
*/

use std::collections::{BTreeMap, BTreeSet};

use super::findings::{named, num};
use super::inputs::{Data, LlcRow, MetricRow, RunId, SymmetryRow, WHOLE_MODEL};
use crate::stats::{self, Interval, MannWhitney, Summary, BOOTSTRAP_RESAMPLES};

/// The fewest settled runs each of `pizza` and `clock` needs for the arm to compare the two
/// labels; below it the arm compares `pizza` with every other label (issue 14).
pub const MIN_SIDE: usize = 12;

/// The share of training, at its end, over which a run's label must not change.
pub const LATE_FRACTION: f64 = 0.2;

/// The largest relative change of the whole-model LLC, from the estimate nearest 80 % of
/// training to the compared one, of a run that counts as settled.
pub const LLC_SETTLED: f64 = 0.05;

/// The p-value below which the report calls a difference detectable (two-sided).
pub const DETECTABLE: f64 = 0.05;

/// The label of the side every arm tests.
pub const PIZZA: &str = "pizza";
/// The label of the other side where both have [`MIN_SIDE`] runs.
pub const CLOCK: &str = "clock";

/// Which checkpoint of each run is compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CompareAt {
    /// The run's last checkpoint with symmetry measures.
    #[default]
    Last,
    /// The checkpoint at this step (runs without symmetry measures there are left out).
    Step(i64),
}

/// What a run was compared with (and which runs the two-sample statistics use).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sides {
    /// `pizza` against `clock`; runs with other labels enter only the correlations.
    PizzaVsClock,
    /// `pizza` against every other label.
    PizzaVsRest,
}

impl Sides {
    /// The rule: `pizza` against `clock` where each has at least [`MIN_SIDE`] runs.
    pub fn choose(counts: &BTreeMap<String, usize>) -> Sides {
        let n = |l: &str| counts.get(l).copied().unwrap_or(0);
        if n(PIZZA) >= MIN_SIDE && n(CLOCK) >= MIN_SIDE {
            Sides::PizzaVsClock
        } else {
            Sides::PizzaVsRest
        }
    }

    /// `Some(true)` for the Pizza side, `Some(false)` for the other, `None` for neither.
    pub fn side(self, label: &str) -> Option<bool> {
        match (self, label) {
            (_, PIZZA) => Some(true),
            (Sides::PizzaVsClock, CLOCK) => Some(false),
            (Sides::PizzaVsClock, _) => None,
            (Sides::PizzaVsRest, _) => Some(false),
        }
    }

    /// How the other side is named in prose (`clock` or `other`).
    pub fn other(self) -> &'static str {
        match self {
            Sides::PizzaVsClock => "clock",
            Sides::PizzaVsRest => "other",
        }
    }

    /// The rule as applied, for the page.
    pub fn describe(self) -> String {
        match self {
            Sides::PizzaVsClock => format!("`pizza` against `clock` (each has at least {MIN_SIDE} settled runs)"),
            Sides::PizzaVsRest => format!("`pizza` against every other label (`pizza` or `clock` has fewer than {MIN_SIDE} settled runs)"),
        }
    }
}

/// Whether samples of `n1` and `n2` values can give a two-sided Mann–Whitney p below
/// [`DETECTABLE`] at all: the smallest exact p is 2 / C(n1 + n2, n1) (e.g. 4 against 4: 0.029;
/// 3 against 4: 0.057). Smaller arms are reported as too small instead of as "no difference".
pub fn can_detect(n1: usize, n2: usize) -> bool {
    if n1 == 0 || n2 == 0 {
        return false;
    }
    // C(n1 + n2, n1) > 2 / DETECTABLE, computed in floating point (it only needs to pass 40).
    let c = (1..=n1.min(n2)).fold(1.0f64, |c, i| c * (n1.max(n2) + i) as f64 / i as f64);
    2.0 / c < DETECTABLE
}

/// The id columns an arm shares (everything but the run name and the seed).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cell {
    /// Modulus.
    pub p: i64,
    /// Attention rate.
    pub alpha: f64,
    /// Width.
    pub d_model: i64,
    /// AdamW weight decay.
    pub weight_decay: f64,
    /// Training fraction.
    pub train_frac: f64,
}

impl Cell {
    fn of(id: &RunId) -> Cell {
        Cell { p: id.p, alpha: id.alpha, d_model: id.d_model, weight_decay: id.weight_decay, train_frac: id.train_frac }
    }

    fn same(&self, o: &Cell) -> bool {
        self.p == o.p
            && self.alpha.to_bits() == o.alpha.to_bits()
            && self.d_model == o.d_model
            && self.weight_decay.to_bits() == o.weight_decay.to_bits()
            && self.train_frac.to_bits() == o.train_frac.to_bits()
    }

    fn order(&self, o: &Cell) -> std::cmp::Ordering {
        (self.p, self.d_model)
            .cmp(&(o.p, o.d_model))
            .then(self.alpha.total_cmp(&o.alpha))
            .then(self.weight_decay.total_cmp(&o.weight_decay))
            .then(self.train_frac.total_cmp(&o.train_frac))
    }

    /// The id columns besides α and width in which `all` holds cells that differ:
    /// `(prose prefix, file-name prefix, value)`.
    fn varying(&self, all: &[Cell]) -> Vec<(&'static str, &'static str, String)> {
        let mut v = Vec::new();
        if all.iter().any(|c| c.p != self.p) {
            v.push(("p = ", "p", self.p.to_string()));
        }
        if all.iter().any(|c| c.weight_decay.to_bits() != self.weight_decay.to_bits()) {
            v.push(("weight decay ", "wd", num(self.weight_decay)));
        }
        if all.iter().any(|c| c.train_frac.to_bits() != self.train_frac.to_bits()) {
            v.push(("train frac ", "tf", num(self.train_frac)));
        }
        v
    }

    /// `α = 0.6, d_model 128`, with p, weight decay and training fraction added where `all` holds
    /// cells that differ in them.
    pub fn describe(&self, all: &[Cell]) -> String {
        let head = format!("α = {}, d_model {}", num(self.alpha), self.d_model);
        self.varying(all).into_iter().fold(head, |s, (name, _, v)| format!("{s}, {name}{v}"))
    }

    /// A file-name part: `alpha0.6_d128`, with `_p59`, `_wd2`, `_tf0.8` as in [`Cell::describe`]
    /// (so that every arm's stem is distinct).
    pub fn stem(&self, all: &[Cell]) -> String {
        let head = format!("alpha{}_d{}", num(self.alpha), self.d_model);
        self.varying(all).into_iter().fold(head, |s, (_, prefix, v)| format!("{s}_{prefix}{v}"))
    }

    /// Exact text of the cell, for seeds (every digit of every value).
    fn key(&self) -> String {
        format!("p={} alpha={:?} d_model={} wd={:?} tf={:?}", self.p, self.alpha, self.d_model, self.weight_decay, self.train_frac)
    }
}

/// Why a settled-looking run is left out of its arm.
#[derive(Debug, Clone, PartialEq)]
pub enum Unsettled {
    /// The label differs between symmetry checkpoints of the last fifth of training:
    /// `(step, label)` of each of them.
    LabelChangedLate(Vec<(i64, String)>),
    /// The whole-model LLC changed by `change` (relative) from step `from` to the compared step.
    LlcStillMoving {
        /// The estimate nearest 80 % of training.
        from: i64,
        /// Relative change, signed.
        change: f64,
    },
}

impl Unsettled {
    /// The reason's name, as the page groups them.
    pub fn name(&self) -> &'static str {
        match self {
            Unsettled::LabelChangedLate(_) => "label changed late",
            Unsettled::LlcStillMoving { .. } => "LLC still moving",
        }
    }

    fn detail(&self) -> String {
        match self {
            Unsettled::LabelChangedLate(v) => {
                v.iter().map(|(s, l)| format!("{l} at {s}")).collect::<Vec<_>>().join(", ")
            }
            Unsettled::LlcStillMoving { from, change } => format!("{:+.1} % since step {from}", 100.0 * change),
        }
    }
}

/// How a run's settling was checked.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Settling {
    /// Symmetry checkpoints in the last fifth of training (the label is checked when ≥ 2).
    pub label_checkpoints: usize,
    /// The step of the whole-model estimate nearest 80 % of training and the relative change
    /// from it, when both it and the compared estimate exist and are healthy.
    pub llc_change: Option<(i64, f64)>,
    /// Why the run is left out, if it is.
    pub unsettled: Option<Unsettled>,
}

/// One run of an arm, at its compared checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct ArmRun {
    /// The run.
    pub id: RunId,
    /// The compared checkpoint's step.
    pub step: i64,
    /// Its label there.
    pub label: String,
    /// Gradient symmetry there.
    pub gradient_symmetry: f64,
    /// Distance irrelevance there.
    pub distance_irrelevance: f64,
    /// Training loss at the compared step (the last training row at or before it).
    pub train_loss: Option<f64>,
    /// Parameter norm at the same row.
    pub param_norm: Option<f64>,
    /// The settling checks.
    pub settling: Settling,
}

impl ArmRun {
    /// Whether the run enters the comparison.
    pub fn settled(&self) -> bool {
        self.settling.unsettled.is_none()
    }
}

/// The checkpoint a [`Comparison`] is at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum At {
    /// Each run's compared checkpoint.
    Compared,
    /// Step 0, the control: same α, same distribution of initial weights.
    Init,
}

impl At {
    /// For headings.
    pub fn name(self) -> &'static str {
        match self {
            At::Compared => "compared checkpoint",
            At::Init => "step 0",
        }
    }
}

/// One run's value in a comparison.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// Run id.
    pub run: String,
    /// Label at the compared checkpoint.
    pub label: String,
    /// The LLC estimate.
    pub llc: f64,
    /// Gradient symmetry at the compared checkpoint.
    pub gradient_symmetry: f64,
    /// Distance irrelevance at the compared checkpoint.
    pub distance_irrelevance: f64,
}

/// A settled run whose estimate did not enter a comparison. The label is kept because health can
/// depend on it (the same-α arm's unembedding: 13 of 32 Pizzas flagged, 1 of 14 others), and
/// then leaving runs out is not neutral.
#[derive(Debug, Clone, PartialEq)]
pub struct LeftOut {
    pub run: String,
    /// Its label at the compared checkpoint.
    pub label: String,
    /// Why: the estimate's flags, or that there is none at that step.
    pub why: String,
}

/// The statistics of one group at one checkpoint of an arm.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// Restriction group.
    pub group: String,
    /// Which checkpoint.
    pub at: At,
    /// Every settled run with a healthy estimate, in run order.
    pub points: Vec<Point>,
    /// Settled runs without a healthy estimate.
    pub left_out: Vec<LeftOut>,
    /// The Pizza side's LLC.
    pub pizza: Summary,
    /// The other side's LLC.
    pub other: Summary,
    /// mean(pizza) − mean(other), with its bootstrap interval.
    pub diff: Interval,
    /// Mann–Whitney U of pizza against other (rank-biserial > 0: Pizza larger).
    pub mann_whitney: MannWhitney,
    /// Spearman's ρ of the LLC with gradient symmetry over every point.
    pub rho_gs: Interval,
    /// Spearman's ρ of the LLC with distance irrelevance over every point.
    pub rho_di: Interval,
}

impl Comparison {
    /// Whether the Mann–Whitney test finds a difference (p < [`DETECTABLE`]).
    pub fn detectable(&self) -> bool {
        self.mann_whitney.p < DETECTABLE
    }
}

/// A per-run covariate (training loss, parameter norm) on each side.
#[derive(Debug, Clone, PartialEq)]
pub struct Covariate {
    /// What it is.
    pub name: &'static str,
    /// The Pizza side.
    pub pizza: Summary,
    /// The other side.
    pub other: Summary,
    /// Mann–Whitney of pizza against other.
    pub mann_whitney: MannWhitney,
}

/// One restriction group: the compared checkpoint, and step 0 where any run has an estimate.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupResult {
    /// At the compared checkpoint.
    pub compared: Comparison,
    /// At step 0.
    pub init: Option<Comparison>,
}

/// One arm, compared.
#[derive(Debug, Clone, PartialEq)]
pub struct Arm {
    /// What its runs share.
    pub cell: Cell,
    /// Every labelled run of the cell, settled or not, in run order.
    pub runs: Vec<ArmRun>,
    /// The side rule as applied.
    pub sides: Sides,
    /// Per group, `all` first, then by name.
    pub groups: Vec<GroupResult>,
    /// Training loss and parameter norm at the compared step, per side.
    pub covariates: Vec<Covariate>,
}

impl Arm {
    /// The whole-model result, or the first group's where there is none.
    pub fn headline(&self) -> Option<&GroupResult> {
        self.groups.iter().find(|g| g.compared.group == WHOLE_MODEL).or(self.groups.first())
    }

    /// The settled runs' label counts.
    pub fn settled_counts(&self) -> BTreeMap<String, usize> {
        label_counts(self.runs.iter().filter(|r| r.settled()))
    }

    /// The compared steps of the runs: `step N` or `steps A–B`.
    pub fn steps_text(&self) -> String {
        let lo = self.runs.iter().map(|r| r.step).min().unwrap_or(0);
        let hi = self.runs.iter().map(|r| r.step).max().unwrap_or(0);
        if lo == hi {
            format!("step {lo}")
        } else {
            format!("steps {lo}–{hi}")
        }
    }
}

/// A cell with several labels whose sides are too small to test ([`can_detect`]).
#[derive(Debug, Clone, PartialEq)]
pub struct SmallCell {
    /// The cell.
    pub cell: Cell,
    /// Settled runs per label.
    pub counts: BTreeMap<String, usize>,
    /// Runs left out as unsettled.
    pub unsettled: usize,
}

/// Everything the report shows about the comparison.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Comparisons {
    /// Arms compared, in cell order (p, d_model, α, …).
    pub arms: Vec<Arm>,
    /// Cells with several labels but too few runs.
    pub small: Vec<SmallCell>,
    /// Runs with no symmetry row at their compared checkpoint (so no label).
    pub unlabelled: Vec<String>,
    /// Every cell seen (arms or not), for [`Cell::describe`].
    pub cells: Vec<Cell>,
    /// Every labelled run at its compared checkpoint, arms or not, in cell order: whether the
    /// experiment's values there are settled ones.
    pub labelled: Vec<ArmRun>,
}

/// Runs per label.
pub fn label_counts<'a>(runs: impl Iterator<Item = &'a ArmRun>) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for r in runs {
        *out.entry(r.label.clone()).or_default() += 1;
    }
    out
}

/// The bootstrap seed of one statistic: FNV-1a of the arm, group, checkpoint and statistic, so
/// that each interval draws its own stream and a new arm or group changes no other interval.
pub fn seed(cell: &Cell, group: &str, at: At, statistic: &str) -> u64 {
    crate::hash::fnv1a(format!("{}|{group}|{}|{statistic}", cell.key(), at.name()).as_bytes())
}

/// The settling checks of one run compared at step `s` (issue 14, item 3): `sym` its symmetry
/// rows, `llc` its healthy whole-model estimates, both sorted by step.
///
/// The label must be the same at every symmetry checkpoint with step ≥ (1 − [`LATE_FRACTION`])·s.
/// The LLC is compared between the estimate at `s` and the one nearest 0.8·s among those with
/// step in [0.6·s, s) (so within a fifth of training of the 80 % point; a run with estimates at
/// step 0 and the end only is not checked); it must change by less than [`LLC_SETTLED`].
pub fn settling(s: i64, sym: &[&SymmetryRow], llc: &[&LlcRow]) -> Settling {
    let late = (1.0 - LATE_FRACTION) * s as f64;
    let window: Vec<&&SymmetryRow> = sym.iter().filter(|r| r.step as f64 >= late && r.step <= s).collect();
    let mut out = Settling { label_checkpoints: window.len(), ..Settling::default() };
    if window.iter().any(|r| r.solution != window[0].solution) {
        out.unsettled = Some(Unsettled::LabelChangedLate(window.iter().map(|r| (r.step, r.solution.clone())).collect()));
        return out;
    }
    let target = 0.8 * s as f64;
    let end = llc.iter().find(|r| r.step == s);
    let near = llc
        .iter()
        .filter(|r| r.step as f64 >= 0.6 * s as f64 && r.step < s)
        .min_by(|a, b| (a.step as f64 - target).abs().total_cmp(&(b.step as f64 - target).abs()).then(a.step.cmp(&b.step)));
    if let (Some(end), Some(near)) = (end, near) {
        let change = (end.mean - near.mean) / near.mean.abs();
        out.llc_change = Some((near.step, change));
        let settled = change.abs() < LLC_SETTLED; // false for a NaN change
        if !settled {
            out.unsettled = Some(Unsettled::LlcStillMoving { from: near.step, change });
        }
    }
    out
}

/// The training row at or before `step` (the latest).
fn train_row_at<'a>(rows: &[&'a MetricRow], step: i64) -> Option<&'a MetricRow> {
    rows.iter().filter(|r| r.split == "train" && r.step <= step).max_by_key(|r| r.step).copied()
}

/// One group at one checkpoint.
fn compare(cell: &Cell, group: &str, at: At, sides: Sides, runs: &[&ArmRun], est: &BTreeMap<(&str, &str, i64), &LlcRow>) -> Comparison {
    let mut points = Vec::new();
    let mut left_out = Vec::new();
    for r in runs {
        let step = match at {
            At::Compared => r.step,
            At::Init => 0,
        };
        let leave = |why: String| LeftOut { run: r.id.run.clone(), label: r.label.clone(), why };
        match est.get(&(r.id.run.as_str(), group, step)) {
            None => left_out.push(leave(format!("no estimate at step {step}"))),
            Some(e) if !e.healthy() => left_out.push(leave(e.unhealthy_reason())),
            Some(e) => points.push(Point {
                run: r.id.run.clone(),
                label: r.label.clone(),
                llc: e.mean,
                gradient_symmetry: r.gradient_symmetry,
                distance_irrelevance: r.distance_irrelevance,
            }),
        }
    }
    let side = |want: bool| -> Vec<f64> { points.iter().filter(|p| sides.side(&p.label) == Some(want)).map(|p| p.llc).collect() };
    let (pz, ot) = (side(true), side(false));
    let llc: Vec<f64> = points.iter().map(|p| p.llc).collect();
    let gs: Vec<f64> = points.iter().map(|p| p.gradient_symmetry).collect();
    let di: Vec<f64> = points.iter().map(|p| p.distance_irrelevance).collect();
    let sd = |stat: &str| seed(cell, group, at, stat);
    Comparison {
        group: group.to_string(),
        at,
        pizza: stats::summary(&pz),
        other: stats::summary(&ot),
        diff: stats::bootstrap_mean_diff(&pz, &ot, BOOTSTRAP_RESAMPLES, sd("mean-diff")),
        mann_whitney: stats::mann_whitney_u(&pz, &ot),
        rho_gs: stats::bootstrap_spearman(&llc, &gs, BOOTSTRAP_RESAMPLES, sd("spearman-gs")),
        rho_di: stats::bootstrap_spearman(&llc, &di, BOOTSTRAP_RESAMPLES, sd("spearman-di")),
        points,
        left_out,
    }
}

fn covariate(name: &'static str, sides: Sides, runs: &[&ArmRun], get: impl Fn(&ArmRun) -> Option<f64>) -> Covariate {
    let side = |want: bool| -> Vec<f64> {
        runs.iter().filter(|r| sides.side(&r.label) == Some(want)).filter_map(|r| get(r)).filter(|v| v.is_finite()).collect()
    };
    let (pz, ot) = (side(true), side(false));
    Covariate { name, pizza: stats::summary(&pz), other: stats::summary(&ot), mann_whitney: stats::mann_whitney_u(&pz, &ot) }
}

/// Restriction groups in page order: `all` first, then by name.
fn group_order(a: &str, b: &str) -> std::cmp::Ordering {
    (a != WHOLE_MODEL).cmp(&(b != WHOLE_MODEL)).then(a.cmp(b))
}

/// Finds the arms of an experiment and compares them.
pub fn comparisons(data: &Data, at: CompareAt) -> Comparisons {
    let runs = data.runs();
    let mut sym: BTreeMap<&str, Vec<&SymmetryRow>> = BTreeMap::new();
    for r in &data.symmetry.rows {
        sym.entry(r.id.run.as_str()).or_default().push(r);
    }
    for v in sym.values_mut() {
        v.sort_by_key(|r| r.step);
    }
    let mut metrics: BTreeMap<&str, Vec<&MetricRow>> = BTreeMap::new();
    for r in &data.metrics.rows {
        metrics.entry(r.id.run.as_str()).or_default().push(r);
    }
    // Each (run, group, step)'s estimate; a repeated key keeps the first row read.
    let mut est: BTreeMap<(&str, &str, i64), &LlcRow> = BTreeMap::new();
    for r in &data.llc.rows {
        est.entry((r.id.run.as_str(), r.restriction.as_str(), r.step)).or_insert(r);
    }
    let mut healthy_whole: BTreeMap<&str, Vec<&LlcRow>> = BTreeMap::new();
    for r in est.values().filter(|r| r.whole_model() && r.healthy()) {
        healthy_whole.entry(r.id.run.as_str()).or_default().push(r);
    }

    let mut out = Comparisons::default();
    let mut cells: Vec<(Cell, Vec<ArmRun>)> = Vec::new();
    for (run, id) in &runs {
        let Some(rows) = sym.get(run.as_str()) else { continue };
        let row = match at {
            CompareAt::Last => rows.last().copied(),
            CompareAt::Step(s) => rows.iter().find(|r| r.step == s).copied(),
        };
        let Some(row) = row else {
            out.unlabelled.push(run.clone());
            continue;
        };
        let whole = healthy_whole.get(run.as_str()).map(Vec::as_slice).unwrap_or(&[]);
        let train = metrics.get(run.as_str()).and_then(|m| train_row_at(m, row.step));
        let arm_run = ArmRun {
            id: id.clone(),
            step: row.step,
            label: row.solution.clone(),
            gradient_symmetry: row.gradient_symmetry,
            distance_irrelevance: row.distance_irrelevance,
            train_loss: train.map(|t| t.loss),
            param_norm: train.map(|t| t.param_norm),
            settling: settling(row.step, rows, whole),
        };
        let cell = Cell::of(id);
        match cells.iter_mut().find(|(c, _)| c.same(&cell)) {
            Some((_, v)) => v.push(arm_run),
            None => cells.push((cell, vec![arm_run])),
        }
    }
    cells.sort_by(|a, b| a.0.order(&b.0));
    out.cells = cells.iter().map(|(c, _)| *c).collect();
    out.labelled = cells.iter().flat_map(|(_, runs)| runs.iter().cloned()).collect();

    for (cell, runs) in cells {
        let labels: BTreeSet<&str> = runs.iter().map(|r| r.label.as_str()).collect();
        if labels.len() < 2 || !labels.contains(PIZZA) {
            continue;
        }
        let settled: Vec<&ArmRun> = runs.iter().filter(|r| r.settled()).collect();
        let n = label_counts(settled.iter().copied());
        let sides = Sides::choose(&n);
        let (n_pizza, n_other) = settled.iter().fold((0, 0), |(a, b), r| match sides.side(&r.label) {
            Some(true) => (a + 1, b),
            Some(false) => (a, b + 1),
            None => (a, b),
        });
        if !can_detect(n_pizza, n_other) {
            out.small.push(SmallCell { cell, counts: n, unsettled: runs.len() - settled.len() });
            continue;
        }
        let mut groups: Vec<&str> = settled
            .iter()
            .flat_map(|r| est.range((r.id.run.as_str(), "", i64::MIN)..).take_while(move |(k, _)| k.0 == r.id.run).map(|(k, _)| k.1))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        groups.sort_by(|a, b| group_order(a, b));
        let results = groups
            .iter()
            .map(|g| {
                let has_init = settled.iter().any(|r| est.contains_key(&(r.id.run.as_str(), *g, 0)));
                GroupResult {
                    compared: compare(&cell, g, At::Compared, sides, &settled, &est),
                    init: has_init.then(|| compare(&cell, g, At::Init, sides, &settled, &est)),
                }
            })
            .collect();
        let covariates = vec![
            covariate("training loss", sides, &settled, |r| r.train_loss),
            covariate("parameter norm", sides, &settled, |r| r.param_norm),
        ];
        out.arms.push(Arm { cell, runs, sides, groups: results, covariates });
    }
    out
}

/// The labels of one cell's runs at one symmetry checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelsAt {
    /// Step of the checkpoint.
    pub step: i64,
    /// Runs with a label there, per label.
    pub counts: BTreeMap<String, usize>,
    /// Runs whose label differs from their label at the cell's previous checkpoint.
    pub changed: usize,
}

/// How the labels moved with training length (issue 14's pilot, issue 15's settling): per cell
/// of runs that differ only in the seed, in cell order, the label counts at every step where
/// one of its runs has a symmetry row, and how many runs changed label since the step before.
pub fn labels_along_training(data: &Data) -> Vec<(Cell, Vec<LabelsAt>)> {
    let mut cells: Vec<(Cell, BTreeMap<&str, BTreeMap<i64, &str>>)> = Vec::new();
    for r in &data.symmetry.rows {
        let cell = Cell::of(&r.id);
        let i = match cells.iter().position(|(c, _)| c.same(&cell)) {
            Some(i) => i,
            None => {
                cells.push((cell, BTreeMap::new()));
                cells.len() - 1
            }
        };
        cells[i].1.entry(r.id.run.as_str()).or_default().insert(r.step, r.solution.as_str());
    }
    cells.sort_by(|a, b| a.0.order(&b.0));
    cells
        .into_iter()
        .map(|(cell, runs)| {
            let steps: BTreeSet<i64> = runs.values().flat_map(|by_step| by_step.keys().copied()).collect();
            let mut prev: Option<i64> = None;
            let rows = steps
                .into_iter()
                .map(|step| {
                    let mut counts = BTreeMap::new();
                    let mut changed = 0;
                    for by_step in runs.values() {
                        let Some(label) = by_step.get(&step) else { continue };
                        *counts.entry(label.to_string()).or_default() += 1;
                        if prev.and_then(|p| by_step.get(&p)).is_some_and(|before| before != label) {
                            changed += 1;
                        }
                    }
                    prev = Some(step);
                    LabelsAt { step, counts, changed }
                })
                .collect();
            (cell, rows)
        })
        .collect()
}

/// The unsettled runs among `runs`, grouped by reason: `label changed late: 2 (a: …; b: …)`.
pub fn unsettled_text<'a>(runs: impl IntoIterator<Item = &'a ArmRun>, max_named: usize) -> Option<String> {
    let mut by: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for r in runs {
        if let Some(u) = &r.settling.unsettled {
            by.entry(u.name()).or_default().push(format!("{} ({})", r.id.run, u.detail()));
        }
    }
    if by.is_empty() {
        return None;
    }
    let parts: Vec<String> = by
        .iter()
        .map(|(name, list)| format!("{name}: {} ({})", list.len(), named(list, max_named)))
        .collect();
    Some(parts.join("; "))
}
