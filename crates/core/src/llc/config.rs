/*!
Settings of an LLC estimate ([`SgldConfig`]), the single source of their defaults, and their
resolution against a concrete target (`nβ` rules, full batch, ε as a multiple of `1/nβ`, step
counts in relaxation times: [`SgldConfig::schedule`]).
*/

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::restrict::{self, Restriction};
use super::stage::CheckpointStep;
use super::LlcError;

/// Settings of one LLC estimate: the SGLD sampler, the chains, and the diagnostics.
///
/// `Default` is the only source of defaults. They are starting points for a calibration sweep
/// (see [`super::calibrate`]), not settings validated for any particular model; the validated
/// settings for the analytic models are [`super::analytic::AnalyticModel::recommended_settings`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SgldConfig {
    /// SGLD step size ε (devinterp's `lr`): a number, or `{per_nbeta: c}` for `ε = c/nβ`, so
    /// that one setting serves every p (the drift `nβ·∇L` grows with nβ).
    pub epsilon: Epsilon,
    /// Localisation strength γ (devinterp's `localization`): keeps the chain near `w*`.
    pub gamma: f64,
    /// Inverse temperature times n.
    pub nbeta: NBeta,
    /// Rows per minibatch; `None` is full batch.
    pub batch_size: Option<usize>,
    /// Number of independent chains.
    pub chains: usize,
    /// Recorded draws per chain.
    pub draws: usize,
    /// SGLD steps per chain before the first draw: a number, or `{relaxations: r}` for
    /// `ceil(r·2/(εγ))` steps at the rung's ε (see [`StepCount`]).
    pub burn_in: StepCount,
    /// SGLD steps per draw (thinning), a number or `{relaxations: x}`; at least 1 step.
    pub steps_between_draws: StepCount,
    /// Step halvings of the ladder of `llc estimate` ([`super::ladder`]): an estimate flagged for
    /// its step (MALA, spikes, divergence) is redone at ε/2, at most this many times (fewer when
    /// a halving asked for by spikes alone did not shrink them: [`super::ladder::spikes_shrank`]).
    pub halvings: u32,
    /// Draw doublings of the ladder: an estimate whose chains disagree (R-hat) or are still
    /// rising, with nothing wrong with its step, goes on with twice the draws (continuing its
    /// chains), at most this many times. Cheap since the chains continue, and what small groups
    /// need: the attention-restricted LLC of a trained model mixes over many relaxation times.
    pub lengthenings: u32,
    /// Seed of all sampling randomness; chain `i` uses ChaCha8 streams `2i` (noise) and `2i + 1`
    /// (minibatches).
    pub seed: u64,
    /// How `L(w*)`, the loss subtracted in the estimate, is computed.
    pub loss_at_wstar: LossAtWstar,
    /// Number of minibatches averaged for [`LossAtWstar::FirstBatches`]; 0 means one per chain,
    /// as devinterp 1.3 does. Ignored for the full-training-set mode.
    pub loss_at_wstar_batches: usize,
    /// Measure the MALA acceptance probability on every k-th step after burn-in (one extra
    /// forward and backward pass each); 0 disables it.
    pub mala_every: usize,
    /// A chain is stopped as diverged when a minibatch loss is non-finite or exceeds
    /// `L(w*) + divergence_factor·(|L(w*)| + d/(2nβ))`, `d` the number of parameters: `d/(2nβ)`
    /// is the largest mean rise a healthy chain can show (a regular model, λ = d/2).
    pub divergence_factor: f64,
    /// Precondition the steps RMSProp-style (pSGLD); ε then scales `G`-weighted steps.
    pub rmsprop: bool,
    /// RMSProp decay α of the running mean of squared drifts. The default 0.999 (devinterp:
    /// 0.99) keeps the preconditioner from following the chain's own excursions, which biases
    /// the samples (see `sampler::RmsProp`).
    pub rmsprop_alpha: f64,
    /// RMSProp δ: the preconditioner is `1/(√V + δ)`, at most `1/δ`.
    pub rmsprop_eps: f64,
    /// Worker threads for the chains (0 = `RAYON_NUM_THREADS`, else one per core). Does not
    /// change any number.
    pub threads: usize,

    // What the `llc estimate` stage estimates (not how: the estimator ignores these, and they
    // are left out of the settings hash). Serialized only when set, so settings without them
    // serialize as they did before they existed.
    /// The groups of tensors to estimate the LLC of, one estimate each (see
    /// [`super::restrict`]): presets (`all`, `embed`, `attn`, `mlp`, `unembed`) or lists of
    /// tensor names and globs. The default `[all]` is the whole-model LLC.
    #[serde(deserialize_with = "restrict::deserialize_groups", skip_serializing_if = "restrict::is_default_groups")]
    pub restrict: Vec<Restriction>,
    /// The checkpoints every run is estimated at (step numbers of the checkpoint schedule, or
    /// `last`); `None` is every checkpoint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub steps: Option<Vec<CheckpointStep>>,
    /// Run ids (globs) also estimated at every other checkpoint, for the first group of
    /// `restrict` only: LLC trajectories for a few runs. Ignored without `steps` (every
    /// checkpoint is estimated then anyway).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub trajectory: Vec<String>,
    /// Checkpoints every run is also estimated at for the first group of `restrict` only: a
    /// whole-model check between the `steps` (e.g. the settling check at 80 % of training)
    /// without the cost of every group there. Ignored without `steps`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub first_group_steps: Vec<CheckpointStep>,
}

impl Default for SgldConfig {
    fn default() -> Self {
        SgldConfig {
            // The shipped defaults (pipelines/default.yaml repeats them); docs/llc.md, "Choosing
            // the step per checkpoint", has the measurements behind them. At p = 59
            // (n = 2785, nβ ≈ 351) ε ≈ 2.5e-5, 2.5 relaxation times ≈ 2000 steps of burn-in and
            // draws 4 steps apart (400 steps for 100 draws). The burn-in outlasts the overshoot:
            // a chain's loss rises past its level within 1-1.5 relaxation times and comes back
            // to it by ~2.5 (docs/llc.md, "Burn-in: the overshoot").
            epsilon: Epsilon::PerNBeta(8.8e-3),
            // 100, measured against 200 and 300 (docs/llc.md, "The localisation γ"): there the
            // chains of p = 113's memorisation peak and of width 256 at initialisation are
            // healthy where at 100 they are flagged, but at this ε some checkpoints of p = 59
            // read 6-9 % above long chains with no flag raised (εγ, the step against the
            // localisation's relaxation, grows with γ), and at 300 width 64's initialisation
            // reads negative. A flagged estimate is honest; a silently biased one is not.
            gamma: 100.0,
            nbeta: NBeta::Rule(NBetaRule::NOverLnN),
            // 512, not 256: the minibatch's gradient noise heats the chains by ~ε/B, and at 256
            // that read 5-9 % above long chains at half the step on trained checkpoints; at 512
            // every checkpoint of both references agrees within 5 %, for ~1.25x per step
            // (docs/llc.md, "The minibatch").
            batch_size: Some(512),
            chains: 2,
            draws: 100,
            burn_in: StepCount::Relaxations(2.5),
            steps_between_draws: StepCount::Relaxations(0.005),
            // Four: trained d_model 32 models need ε/16 (docs/llc.md, "Width 32"); a halving
            // costs only where an estimate is flagged for its step.
            halvings: 4,
            lengthenings: 4,
            seed: 0,
            loss_at_wstar: LossAtWstar::FullTrainingSet,
            loss_at_wstar_batches: 0,
            mala_every: 10,
            divergence_factor: 100.0,
            rmsprop: false,
            rmsprop_alpha: 0.999,
            rmsprop_eps: 0.1,
            threads: 0,
            restrict: restrict::default_groups(),
            steps: None,
            trajectory: Vec::new(),
            first_group_steps: Vec::new(),
        }
    }
}

impl SgldConfig {
    /// Fixed settings without the ladder: ε = 1e-4, γ = 100, nβ = n/ln n, full batch, 4 chains ×
    /// 200 draws after 200 steps, every step a draw, no ladder (the defaults before issue 12).
    /// The base of the analytic models' settings and of the tests, which must not move when the
    /// shipped defaults ([`SgldConfig::default`]) are tuned.
    pub fn plain() -> SgldConfig {
        SgldConfig {
            epsilon: Epsilon::Value(1e-4),
            gamma: 100.0,
            batch_size: None,
            chains: 4,
            draws: 200,
            burn_in: StepCount::Steps(200),
            steps_between_draws: StepCount::Steps(1),
            halvings: 0,
            lengthenings: 0,
            ..SgldConfig::default()
        }
    }

    /// Checks the values that do not depend on the target.
    pub fn validate(&self) -> Result<(), LlcError> {
        let bad = |m: String| Err(LlcError::InvalidConfig(m));
        let (Epsilon::Value(e) | Epsilon::PerNBeta(e)) = self.epsilon;
        if !(e.is_finite() && e > 0.0) {
            return bad(format!("epsilon must be positive and finite, got {}", self.epsilon));
        }
        for (name, count) in [("burn_in", self.burn_in), ("steps_between_draws", self.steps_between_draws)] {
            match count {
                StepCount::Relaxations(r) if !(r.is_finite() && r >= 0.0) => {
                    return bad(format!("{name}: relaxations must be non-negative and finite, got {r}"));
                }
                StepCount::Relaxations(_) if self.gamma == 0.0 => {
                    return bad(format!("{name} is given in relaxation times 2/(εγ), which do not exist at gamma = 0; give a number of steps"));
                }
                _ => {}
            }
        }
        if !(self.gamma.is_finite() && self.gamma >= 0.0) {
            return bad(format!(
                "gamma must be non-negative and finite, got {}",
                self.gamma
            ));
        }
        if let NBeta::Value(v) = self.nbeta {
            if !(v.is_finite() && v > 0.0) {
                return bad(format!("nbeta must be positive and finite, got {v}"));
            }
        }
        if self.chains == 0 || self.draws == 0 || self.steps_between_draws == StepCount::Steps(0) {
            return bad("chains, draws and steps_between_draws must be at least 1".into());
        }
        if self.batch_size == Some(0) {
            return bad("batch_size must be at least 1 (omit it for full batch)".into());
        }
        if self.rmsprop && !(0.0..1.0).contains(&self.rmsprop_alpha) {
            return bad(format!(
                "rmsprop_alpha must be in [0, 1), got {}",
                self.rmsprop_alpha
            ));
        }
        if self.rmsprop && (self.rmsprop_eps.is_nan() || self.rmsprop_eps <= 0.0) {
            return bad(format!(
                "rmsprop_eps must be positive, got {}",
                self.rmsprop_eps
            ));
        }
        if self.divergence_factor.is_nan() || self.divergence_factor <= 0.0 {
            return bad(format!(
                "divergence_factor must be positive, got {}",
                self.divergence_factor
            ));
        }
        self.validate_selection().map_err(LlcError::InvalidConfig)
    }

    /// Checks `restrict`, `steps` and `trajectory` as far as the settings alone allow (the
    /// steps against the schedule: [`SgldConfig::validate_steps`]).
    fn validate_selection(&self) -> Result<(), String> {
        restrict::check_groups(&self.restrict)?;
        if let Some(steps) = &self.steps {
            if steps.is_empty() {
                return Err("llc.steps is an empty list; leave it out to estimate every checkpoint".into());
            }
            if let Some((_, s)) = steps.iter().enumerate().find(|(i, s)| steps[..*i].contains(s)) {
                return Err(format!("llc.steps lists `{s}` twice"));
            }
        }
        if let Some((_, s)) = self.first_group_steps.iter().enumerate().find(|(i, s)| self.first_group_steps[..*i].contains(s)) {
            return Err(format!("llc.first_group_steps lists `{s}` twice"));
        }
        if let Some(s) = self.first_group_steps.iter().find(|s| self.steps.as_ref().is_some_and(|all| all.contains(s))) {
            return Err(format!("llc.first_group_steps lists `{s}`, which llc.steps already estimates for every group"));
        }
        if let Some(g) = self.trajectory.iter().find(|g| g.trim().is_empty()) {
            return Err(format!("llc.trajectory: `{g}` is not a run id or glob"));
        }
        Ok(())
    }

    /// Checks `steps` against the run's checkpoint schedule (sorted steps, e.g.
    /// `train.checkpoints.steps(train.steps)`).
    pub fn validate_steps(&self, schedule: &[u64]) -> Result<(), LlcError> {
        if let Some(steps) = &self.steps {
            super::stage::check_steps("llc.steps", steps, schedule).map_err(LlcError::InvalidConfig)?;
        }
        super::stage::check_steps("llc.first_group_steps", &self.first_group_steps, schedule).map_err(LlcError::InvalidConfig)
    }

    /// Checks that every glob of `trajectory` matches one of the experiment's run ids (a glob
    /// that matches none is a typo).
    pub fn validate_trajectory<'a>(&self, runs: impl IntoIterator<Item = &'a str> + Clone) -> Result<(), LlcError> {
        for g in &self.trajectory {
            if !runs.clone().into_iter().any(|r| restrict::glob_match(g, r)) {
                let ids: Vec<&str> = runs.clone().into_iter().collect();
                return Err(LlcError::InvalidConfig(format!("llc.trajectory: `{g}` matches none of the runs ({})", ids.join(", "))));
            }
        }
        Ok(())
    }

    /// The settings that determine an estimate's numbers: `threads` zeroed (it changes no
    /// number) and `restrict`, `steps`, `trajectory`, `first_group_steps` at their defaults (they choose what is
    /// estimated, not how). What the tables' `settings_hash` hashes.
    pub fn sampling(&self) -> SgldConfig {
        SgldConfig {
            threads: 0,
            restrict: restrict::default_groups(),
            steps: None,
            trajectory: Vec::new(),
            first_group_steps: Vec::new(),
            ..self.clone()
        }
    }

    /// The step size and step counts of one rung of the ladder at this nβ: ε resolved
    /// ([`Epsilon::resolve`]) and halved `rung.halved` times, burn-in and thinning resolved at
    /// that ε (a number of steps doubled with each halving, so every rung samples the same time
    /// ε × steps), the draws doubled `rung.lengthened` times.
    pub fn schedule(&self, nbeta: f64, rung: Rung) -> Schedule {
        let epsilon = self.epsilon.resolve(nbeta) / f64::from(1u32 << rung.halved);
        let steps = |c: StepCount| c.resolve(epsilon, self.gamma, rung.halved);
        Schedule {
            epsilon,
            burn_in: steps(self.burn_in),
            steps_between_draws: steps(self.steps_between_draws).max(1),
            draws: self.draws << rung.lengthened,
        }
    }

    /// The batch size for `n` training rows, checked.
    pub fn resolved_batch_size(&self, n: usize) -> Result<usize, LlcError> {
        match self.batch_size {
            None => Ok(n),
            Some(b) if (1..=n).contains(&b) => Ok(b),
            Some(b) => Err(LlcError::InvalidConfig(format!(
                "batch_size {b} is not in 1..={n}"
            ))),
        }
    }
}

/// Where a rung of the ladder stands: how often ε was halved, and how often the draws were
/// doubled. `Rung::default()` is the settings as given.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rung {
    /// Halvings of ε (each doubling the steps counted in steps).
    pub halved: u32,
    /// Doublings of the draws.
    pub lengthened: u32,
}

/// The resolved step size and step counts an estimate ran with (see [`SgldConfig::schedule`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    /// Step size ε.
    pub epsilon: f64,
    /// Steps before the first draw.
    pub burn_in: usize,
    /// Steps per draw, at least 1.
    pub steps_between_draws: usize,
    /// Recorded draws per chain.
    pub draws: usize,
}

/// The SGLD step size: a number, or a multiple of `1/nβ` (written `{per_nbeta: c}`).
///
/// Why per nβ: the drift is `(ε/2)·(nβ·∇L + γ·(w − w*))`, and on the transformers the `nβ·∇L`
/// part dominates, so the stable step scales as `1/nβ` (p = 59 and p = 113 have nβ = 351 and 729).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Epsilon {
    /// ε itself.
    Value(f64),
    /// ε = c/nβ.
    PerNBeta(f64),
}

impl Epsilon {
    /// ε at this nβ.
    pub fn resolve(&self, nbeta: f64) -> f64 {
        match *self {
            Epsilon::Value(e) => e,
            Epsilon::PerNBeta(c) => c / nbeta,
        }
    }
}

impl From<f64> for Epsilon {
    fn from(e: f64) -> Self {
        Epsilon::Value(e)
    }
}

impl PartialEq<f64> for Epsilon {
    fn eq(&self, other: &f64) -> bool {
        *self == Epsilon::Value(*other)
    }
}

/// A number of SGLD steps: a count, or a number of relaxation times `2/(εγ)` of the
/// localisation (written `{relaxations: r}`), the time the chain takes to forget its start
/// when γ dominates the curvature.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum StepCount {
    /// This many steps (at the settings' ε; doubled with every halving of ε).
    Steps(usize),
    /// `ceil(r·2/(εγ))` steps at the ε they run with.
    Relaxations(f64),
}

impl StepCount {
    /// The steps at step size `epsilon` (already halved `halved` times) and localisation `gamma`.
    pub fn resolve(&self, epsilon: f64, gamma: f64, halved: u32) -> usize {
        match *self {
            StepCount::Steps(n) => n << halved,
            // Rounded to 1e-9 steps first, so that 1200.0000000001 steps (floating point for
            // 1200) are 1200 and not 1201.
            StepCount::Relaxations(r) => {
                let steps = r * 2.0 / (epsilon * gamma);
                ((steps * 1e9).round() / 1e9).ceil() as usize
            }
        }
    }
}

impl From<usize> for StepCount {
    fn from(n: usize) -> Self {
        StepCount::Steps(n)
    }
}

impl PartialEq<usize> for StepCount {
    fn eq(&self, other: &usize) -> bool {
        *self == StepCount::Steps(*other)
    }
}

/// The map forms of [`Epsilon`] and [`StepCount`]: one key each, unknown keys refused (with the
/// config loader's nearest-key hint).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PerNBetaForm {
    per_nbeta: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RelaxationsForm {
    relaxations: f64,
}

impl Serialize for Epsilon {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        match *self {
            Epsilon::Value(e) => s.serialize_f64(e),
            Epsilon::PerNBeta(c) => {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("per_nbeta", &c)?;
                m.end()
            }
        }
    }
}

impl Serialize for StepCount {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        match *self {
            StepCount::Steps(n) => s.serialize_u64(n as u64),
            StepCount::Relaxations(r) => {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("relaxations", &r)?;
                m.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Epsilon {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Epsilon;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a step size (a number) or {per_nbeta: c}")
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Epsilon, E> {
                Ok(Epsilon::Value(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Epsilon, E> {
                Ok(Epsilon::Value(v as f64))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Epsilon, E> {
                Ok(Epsilon::Value(v as f64))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Epsilon, A::Error> {
                PerNBetaForm::deserialize(de::value::MapAccessDeserializer::new(map)).map(|f| Epsilon::PerNBeta(f.per_nbeta))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for StepCount {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = StepCount;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number of steps or {relaxations: r}")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<StepCount, E> {
                usize::try_from(v).map(StepCount::Steps).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<StepCount, E> {
                usize::try_from(v).map(StepCount::Steps).map_err(|_| E::custom(format!("a number of steps cannot be negative, got {v}")))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<StepCount, A::Error> {
                RelaxationsForm::deserialize(de::value::MapAccessDeserializer::new(map)).map(|f| StepCount::Relaxations(f.relaxations))
            }
        }
        d.deserialize_any(V)
    }
}

/// As written in YAML: `2.5e-5` or `{per_nbeta: 0.0088}`.
impl fmt::Display for Epsilon {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Epsilon::Value(e) => write!(f, "{e:e}"),
            Epsilon::PerNBeta(c) => write!(f, "{{per_nbeta: {c:e}}}"),
        }
    }
}

/// As written in YAML: `1200` or `{relaxations: 1.5}`.
impl fmt::Display for StepCount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StepCount::Steps(n) => write!(f, "{n}"),
            StepCount::Relaxations(r) => write!(f, "{{relaxations: {r}}}"),
        }
    }
}

impl FromStr for Epsilon {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        serde_yaml_ng::from_str(s).map_err(|e| format!("epsilon must be a number or {{per_nbeta: c}}, got {s:?}: {e}"))
    }
}

impl FromStr for StepCount {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        serde_yaml_ng::from_str(s).map_err(|e| format!("a step count must be a number or {{relaxations: r}}, got {s:?}: {e}"))
    }
}

/// The inverse temperature times n. Written as a rule name (`n_over_ln_n`, `b_over_ln_b`) or a
/// number, in YAML and on the command line alike.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum NBeta {
    /// Derived from the data size.
    Rule(NBetaRule),
    /// An explicit value.
    Value(f64),
}

/// How nβ follows from the data size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NBetaRule {
    /// `n / ln n`, n the number of training rows: β = 1/ln n, the WBIC temperature of the
    /// LLC literature (Lau et al.).
    NOverLnN,
    /// `B / ln B`, B the minibatch size: devinterp ≥ 1.0's default.
    BOverLnB,
}

impl NBeta {
    /// The value for `n` training rows and minibatches of `batch` rows.
    pub fn resolve(&self, n: usize, batch: usize) -> Result<f64, LlcError> {
        let over_ln = |k: usize, what: &str| {
            if k < 2 {
                Err(LlcError::InvalidConfig(format!(
                    "{what} = {k} is too small for {what}/ln {what}"
                )))
            } else {
                Ok(k as f64 / (k as f64).ln())
            }
        };
        match *self {
            NBeta::Rule(NBetaRule::NOverLnN) => over_ln(n, "n"),
            NBeta::Rule(NBetaRule::BOverLnB) => over_ln(batch, "B"),
            NBeta::Value(v) => Ok(v),
        }
    }
}

impl fmt::Display for NBeta {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NBeta::Rule(NBetaRule::NOverLnN) => f.write_str("n_over_ln_n"),
            NBeta::Rule(NBetaRule::BOverLnB) => f.write_str("b_over_ln_b"),
            NBeta::Value(v) => write!(f, "{v}"),
        }
    }
}

impl FromStr for NBeta {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "n_over_ln_n" => Ok(NBeta::Rule(NBetaRule::NOverLnN)),
            "b_over_ln_b" => Ok(NBeta::Rule(NBetaRule::BOverLnB)),
            other => other.parse::<f64>().map(NBeta::Value).map_err(|_| {
                format!("nbeta must be n_over_ln_n, b_over_ln_b or a number, got {other:?}")
            }),
        }
    }
}

/// How the reference loss `L(w*)` of the estimate is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossAtWstar {
    /// The mean loss over the whole training set at `w*`: the quantity in the LLC's definition.
    FullTrainingSet,
    /// devinterp 1.3: the mean of the minibatch losses at `w*` over the first few minibatches of
    /// a shuffled epoch (`loss_at_wstar_batches` of them, capped at one epoch).
    FirstBatches,
}

impl fmt::Display for LossAtWstar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LossAtWstar::FullTrainingSet => "full_training_set",
            LossAtWstar::FirstBatches => "first_batches",
        })
    }
}

impl FromStr for LossAtWstar {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "full_training_set" => Ok(LossAtWstar::FullTrainingSet),
            "first_batches" => Ok(LossAtWstar::FirstBatches),
            other => Err(format!(
                "expected full_training_set or first_batches, got {other:?}"
            )),
        }
    }
}
