//! Test support shared by the unit tests: fixture lookup and tensor comparison.

use std::path::PathBuf;

use candle_core::{DType, Tensor};

/// The shared fixtures folder: `$PIZZA_FIXTURES`, else `../shared/fixtures` beside the checkout.
/// Panics with a clear message when it is missing, so a test never passes without its truth.
pub fn fixtures_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("PIZZA_FIXTURES") {
        return PathBuf::from(dir);
    }
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures");
    assert!(
        dir.is_dir(),
        "fixtures folder {} is missing: the tests need ../shared/fixtures beside the checkout (or set PIZZA_FIXTURES)",
        dir.display()
    );
    dir
}

/// One fixture file (panics with the path if absent).
pub fn fixture(rel: &str) -> PathBuf {
    let p = fixtures_dir().join(rel);
    assert!(p.exists(), "fixture {} is missing", p.display());
    p
}

/// ‖a − b‖ / ‖b‖ over all elements (in f64); `‖a‖` if `b` is zero.
pub fn rel_err(a: &Tensor, b: &Tensor) -> f64 {
    let a = a.to_dtype(DType::F64).unwrap().flatten_all().unwrap();
    let b = b.to_dtype(DType::F64).unwrap().flatten_all().unwrap();
    let diff = (&a - &b).unwrap().sqr().unwrap().sum_all().unwrap().to_scalar::<f64>().unwrap().sqrt();
    let norm = b.sqr().unwrap().sum_all().unwrap().to_scalar::<f64>().unwrap().sqrt();
    if norm == 0.0 { diff } else { diff / norm }
}
