//! Axis ranges, tick positions and tick labels (in the transformed space of a log axis).

use super::Axis;

/// Tick positions at a "nice" step (1, 2 or 5 × 10^k) inside `[lo, hi]`, aiming at about
/// `target` ticks. Returns an empty vector for an empty or non-finite range.
pub fn nice_ticks(lo: f64, hi: f64, target: usize) -> Vec<f64> {
    if !(lo.is_finite() && hi.is_finite()) || hi <= lo {
        return Vec::new();
    }
    let step = nice_step((hi - lo) / target.max(1) as f64);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    (first..=last).map(|k| snap(k as f64 * step, step)).collect()
}

/// The smallest 1-2-5 step at least `raw`.
fn nice_step(raw: f64) -> f64 {
    let mag = 10f64.powf(raw.log10().floor());
    let f = raw / mag;
    let tol = 1e-9;
    let m = if f <= 1.0 + tol { 1.0 } else if f <= 2.0 + tol { 2.0 } else if f <= 5.0 + tol { 5.0 } else { 10.0 };
    m * mag
}

/// Rounds away floating-point noise (and −0) so that labels print cleanly.
fn snap(v: f64, step: f64) -> f64 {
    if v.abs() < step * 1e-9 {
        0.0
    } else {
        let digits = (-step.log10().floor()).max(0.0) as i32 + 2;
        let scale = 10f64.powi(digits);
        (v * scale).round() / scale
    }
}

/// Ticks of a log axis, in log10 units: whole decades when at least two fall inside
/// `[lo, hi]`; else 1, 2, 5 × 10^k; else nice steps of the exponent.
pub fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    if !(lo.is_finite() && hi.is_finite()) || hi <= lo {
        return Vec::new();
    }
    let eps = 1e-9;
    let decades: Vec<f64> = ((lo - eps).ceil() as i64..=(hi + eps).floor() as i64).map(|k| k as f64).collect();
    if decades.len() > 8 {
        // Many decades: every second (or n-th) one.
        let every = decades.len().div_ceil(7);
        return decades.into_iter().filter(|k| (*k as i64).rem_euclid(every as i64) == 0).collect();
    }
    if decades.len() >= 2 {
        return decades;
    }
    let mut out = Vec::new();
    for k in (lo.floor() as i64)..=(hi.ceil() as i64) {
        for m in [1.0f64, 2.0, 5.0] {
            let v = k as f64 + m.log10();
            if v >= lo - eps && v <= hi + eps {
                out.push(v);
            }
        }
    }
    if out.len() >= 2 {
        return out;
    }
    // A narrow range: nice steps of the values themselves.
    let t: Vec<f64> = nice_ticks(10f64.powf(lo), 10f64.powf(hi), 7).into_iter().filter(|v| *v > 0.0).map(f64::log10).collect();
    if t.len() >= 2 {
        t
    } else {
        nice_ticks(lo, hi, 4)
    }
}

/// The label of a tick at `v` (transformed units; `log` says whether the axis is logarithmic),
/// with `step` the distance between ticks (transformed units) to choose the precision.
pub fn tick_label(v: f64, step: f64, log: bool) -> String {
    if log {
        let x = 10f64.powf(v);
        let k = v.round();
        if (v - k).abs() < 1e-9 && !(-3.0..=4.0).contains(&k) {
            return format!("1e{}", k as i64);
        }
        return fmt_sig(x, 3);
    }
    if v == 0.0 {
        return "0".into();
    }
    let a = v.abs();
    if !(1e-3..1e5).contains(&a) {
        return format!("{v:.1e}");
    }
    let decimals = if step > 0.0 && step.is_finite() { (-step.log10().floor()).clamp(0.0, 6.0) as usize } else { 2 };
    format!("{v:.decimals$}")
}

/// `x` with `sig` significant digits, trailing zeros removed; exponent form outside 1e-3..1e5.
pub fn fmt_sig(x: f64, sig: usize) -> String {
    if !x.is_finite() {
        return format!("{x}");
    }
    if x == 0.0 {
        return "0".into();
    }
    let a = x.abs();
    if !(1e-3..1e5).contains(&a) {
        return format!("{x:.prec$e}", prec = sig.saturating_sub(1));
    }
    let mag = a.log10().floor() as i32;
    let decimals = (sig as i32 - 1 - mag).max(0) as usize;
    let s = format!("{x:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// An axis's transform: `log10` on a log axis; `None` for values that cannot be drawn.
pub fn transform(axis: &Axis, v: f64) -> Option<f64> {
    if !v.is_finite() {
        None
    } else if axis.log {
        (v > 0.0).then(|| v.log10())
    } else {
        Some(v)
    }
}

/// The drawn range (transformed units) of an axis over the given transformed values: the fixed
/// ends where set, else the data's extent with 4 % padding; never empty.
pub fn axis_range(axis: &Axis, values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        (lo, hi) = (0.0, 1.0);
    }
    if hi - lo < 1e-12 {
        let w = if axis.log { 0.5 } else if lo.abs() > 0.0 { lo.abs() * 0.1 } else { 0.5 };
        lo -= w;
        hi += w;
    } else {
        let pad = 0.04 * (hi - lo);
        lo -= pad;
        hi += pad;
    }
    let fixed_lo = axis.min.and_then(|v| transform(axis, v));
    let fixed_hi = axis.max.and_then(|v| transform(axis, v));
    let lo = fixed_lo.unwrap_or(lo);
    let hi = fixed_hi.unwrap_or(hi);
    if hi > lo {
        (lo, hi)
    } else {
        (lo, lo + 1.0)
    }
}

/// Ticks of an axis over `[lo, hi]` (transformed units) and the step used for labelling.
pub fn axis_ticks(axis: &Axis, lo: f64, hi: f64) -> (Vec<f64>, f64) {
    if !axis.categories.is_empty() {
        return ((0..axis.categories.len()).map(|i| i as f64).collect(), 1.0);
    }
    let mut t = if axis.log { log_ticks(lo, hi) } else { nice_ticks(lo, hi, 6) };
    if axis.integer && !axis.log && (t.len() < 2 || t[1] - t[0] < 1.0) {
        t = (lo.ceil() as i64..=hi.floor() as i64).map(|k| k as f64).collect();
    }
    let step = if t.len() >= 2 { t[1] - t[0] } else { hi - lo };
    (t, step)
}
