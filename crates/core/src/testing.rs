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

/// Loss and gradients (by name) of the rows `tokens` (`B × n_ctx`), `labels` by candle's autograd
/// through the textbook forward in float64: the reference for the float32 paths. At a trained
/// model's tiny gradients the sums cancel almost entirely, and float32 autograd is itself off
/// by up to ~3e-3 relative, too far to judge another float32 computation by.
pub fn autograd_f64(
    params: &crate::model::Params,
    cfg: &crate::model::ModelConfig,
    tokens: &[u32],
    labels: &[u32],
) -> (f64, std::collections::BTreeMap<String, Tensor>) {
    let dev = candle_core::Device::Cpu;
    let vars: Vec<(String, candle_core::Var)> = params
        .iter()
        .map(|(name, v)| (name.clone(), candle_core::Var::from_tensor(&v.as_tensor().to_dtype(DType::F64).unwrap()).unwrap()))
        .collect();
    let map = vars.iter().map(|(n, v)| (n.clone(), v.as_tensor().clone())).collect();
    let model = crate::model::Transformer::new(candle_nn::VarBuilder::from_tensors(map, DType::F64, &dev), cfg).unwrap();
    let x = Tensor::from_vec(tokens.to_vec(), (labels.len(), cfg.n_ctx), &dev).unwrap();
    let y = Tensor::from_vec(labels.to_vec(), labels.len(), &dev).unwrap();
    let loss = crate::model::cross_entropy_f64(&model.forward_reference(&x).unwrap(), &y).unwrap();
    let grads = loss.backward().unwrap();
    let by_name = vars.iter().map(|(n, v)| (n.clone(), grads.get(v.as_tensor()).unwrap().clone())).collect();
    (loss.to_scalar::<f64>().unwrap(), by_name)
}
