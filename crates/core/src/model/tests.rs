//! The model against independent truth: the PyTorch goldens (reference section 3) and the paper's
//! released checkpoints (section 4).

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor};

use super::*;
use crate::ckpt;
use crate::config::TrainConfig;
use crate::data::DataConfig;
use crate::model::ModelSettings;
use crate::data::Dataset;
use crate::optim::AdamW;
use crate::testing::{fixture, rel_err};

struct Golden {
    cfg: ModelConfig,
    tensors: BTreeMap<String, Tensor>,
    meta: BTreeMap<String, String>,
}

fn golden(alpha: &str) -> Golden {
    let path = fixture(&format!("golden/golden_p11_d16_alpha{alpha}.safetensors"));
    let (tensors, meta) = ckpt::read_safetensors(&path).unwrap();
    let cfg = ModelConfig::from_paper_json(&meta["config"]).unwrap();
    Golden { cfg, tensors, meta }
}

impl Golden {
    fn group(&self, prefix: &str) -> BTreeMap<String, Tensor> {
        self.tensors
            .iter()
            .filter_map(|(k, v)| k.strip_prefix(prefix).map(|n| (n.to_string(), v.clone())))
            .collect()
    }
    fn train_rows(&self) -> Vec<u32> {
        self.tensors["train_idx"].to_vec1::<i64>().unwrap().into_iter().map(|i| i as u32).collect()
    }
}

fn all_pairs(p: u64) -> Dataset {
    Dataset::generate(&DataConfig { p, train_frac: 1.0, ..DataConfig::default() })
}

#[test]
fn golden_logits_loss_gradients_and_25_adamw_steps() {
    for alpha in ["0.0", "0.5", "1.0"] {
        let g = golden(alpha);
        assert_eq!(g.cfg.d_model, 16);
        let params = Params::from_tensors(&g.cfg, g.group("init."), "golden").unwrap();
        let model = Transformer::new(params.var_builder(), &g.cfg).unwrap();
        let data = all_pairs(11);
        let (x, _) = data.batch(&data.all_rows(), &Device::Cpu).unwrap();
        let logits = model.forward(&x).unwrap();
        let e = rel_err(&logits, &g.tensors["logits_last"]);
        assert!(e < 1e-4, "alpha {alpha}: logits rel err {e}");
        let e = rel_err(&model.forward_reference(&x).unwrap(), &g.tensors["logits_last"]);
        assert!(e < 1e-4, "alpha {alpha}: reference-path logits rel err {e}");

        let rows = g.train_rows();
        let (tx, ty) = data.batch(&rows, &Device::Cpu).unwrap();
        let loss = cross_entropy_f64(&model.forward(&tx).unwrap(), &ty).unwrap();
        let loss0: f64 = g.meta["loss0"].parse().unwrap();
        let l = loss.to_scalar::<f64>().unwrap();
        assert!(((l - loss0) / loss0).abs() < 1e-6, "alpha {alpha}: loss {l} vs {loss0}");
        let grads = loss.backward().unwrap();
        for (name, want) in g.group("grad.") {
            let var = params.get(&name).unwrap();
            let got = grads.get(var.as_tensor()).cloned().unwrap_or_else(|| var.as_tensor().zeros_like().unwrap());
            let e = rel_err(&got, &want);
            // A gradient that is exactly zero in the golden (W_Q, W_K at α = 0) must be zero here.
            let scale = want.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            if scale == 0.0 {
                assert_eq!(got.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap(), 0.0, "{name}");
            } else {
                assert!(e < 1e-4, "alpha {alpha}: grad {name} rel err {e}");
            }
        }

        let tcfg = TrainConfig { weight_decay: 2.0, lr: 1e-3, betas: [0.9, 0.98], eps: 1e-8, warmup_steps: 10, ..TrainConfig::default() };
        let mut opt = AdamW::new(&params, &tcfg).unwrap();
        let losses = g.tensors["losses"].to_vec1::<f64>().unwrap();
        for (t, want) in losses.iter().enumerate() {
            let loss = cross_entropy_f64(&model.forward(&tx).unwrap(), &ty).unwrap();
            let l = loss.to_scalar::<f64>().unwrap();
            assert!(((l - want) / want).abs() < 1e-5, "alpha {alpha}: loss before step {t}: {l} vs {want}");
            opt.step(&loss.backward().unwrap()).unwrap();
        }
        for (name, want) in g.group("after25.") {
            let e = rel_err(params.get(&name).unwrap().as_tensor(), &want);
            assert!(e < 1e-4, "alpha {alpha}: {name} after 25 steps rel err {e}");
        }
    }
}

#[test]
fn parameter_count_matches_the_paper() {
    let c = ModelConfig::from_settings(&DataConfig::default(), &ModelSettings::default());
    assert_eq!(c.n_params(), 212_608);
}

#[test]
fn released_models_a_and_b_are_perfect_on_all_pairs() {
    for run in ["p99zdpze5l", "l8k1hzciux"] {
        let c = ckpt::load(&fixture(&format!("pizza/{run}.safetensors"))).unwrap();
        assert_eq!(c.model.p, 59);
        let model = c.transformer().unwrap();
        let data = all_pairs(59);
        let (x, y) = data.batch(&data.all_rows(), &Device::Cpu).unwrap();
        let logits = model.forward(&x).unwrap();
        assert_eq!(accuracy(&logits, &y).unwrap(), 1.0, "{run}");
        let e = rel_err(&logits, &model.forward_reference(&x).unwrap());
        assert!(e < 1e-5, "{run}: last-position path differs from the textbook path by {e}");
    }
}

#[test]
fn every_released_checkpoint_loads_and_runs() {
    let dir = fixture("pizza");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let c = ckpt::load(&path).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
        let model = c.transformer().unwrap();
        let data = Dataset::generate(&DataConfig::all_pairs(c.model.layout()));
        let (x, y) = data.batch(&data.all_rows(), &Device::Cpu).unwrap();
        let logits = model.forward(&x).unwrap();
        assert_eq!(logits.dims(), &[59 * 59, c.model.vocab]);
        let acc = accuracy(&logits, &y).unwrap();
        // Every released run was trained to convergence on 80 % of the pairs.
        // Accuracies from an independent numpy implementation of reference section 2 (einsum
        // transcription of the paper's model, all 3,481 pairs). Not every released run is perfect.
        let run = path.file_stem().unwrap().to_string_lossy().into_owned();
        let want = match run.as_str() {
            "f5dh675z97" => 0.018098247629991383,
            "n9n7h3p965" => 0.5825912094225797,
            "dy65ktpiij" => 0.9683998850904912,
            _ => 1.0,
        };
        assert!((acc - want).abs() < 1e-9, "{run}: accuracy {acc}, independent implementation {want}");
        let e = rel_err(&logits, &model.forward_reference(&x).unwrap());
        assert!(e < 1e-5, "{}: {e}", path.display());
        n += 1;
    }
    assert_eq!(n, 9);
}

#[test]
fn checkpoint_round_trip_is_byte_stable() {
    let c = ckpt::load(&fixture("pizza/f5dh675z97.safetensors")).unwrap();
    let dir = std::env::temp_dir().join(format!("ckpt-test-{}", std::process::id()));
    let (a, b) = (dir.join("a.safetensors"), dir.join("b.safetensors"));
    ckpt::save(&a, &c.params, &c.model, &BTreeMap::from([("step".into(), "7".into())])).unwrap();
    let back = ckpt::load(&a).unwrap();
    assert_eq!(back.step, Some(7));
    assert_eq!(back.model, c.model);
    ckpt::save(&b, &back.params, &back.model, &BTreeMap::from([("step".into(), "7".into())])).unwrap();
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    for (name, t) in c.params.tensors().unwrap() {
        assert_eq!(rel_err(&t, back.params.get(&name).unwrap().as_tensor()), 0.0);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn init_has_the_papers_scales() {
    let c = ModelConfig::from_settings(&DataConfig::default(), &ModelSettings::default());
    let p = Params::init(&c, 0, &Device::Cpu).unwrap();
    for (name, _, sd) in c.param_specs() {
        let t = p.get(&name).unwrap().as_tensor().to_dtype(DType::F64).unwrap();
        let n = t.elem_count() as f64;
        let rms = (t.sqr().unwrap().sum_all().unwrap().to_scalar::<f64>().unwrap() / n).sqrt();
        assert!((rms - sd).abs() <= 0.05 * sd.max(1e-12) + if sd == 0.0 { 0.0 } else { 3.0 * sd / n.sqrt() }, "{name}: rms {rms} vs {sd}");
    }
    let again = Params::init(&c, 0, &Device::Cpu).unwrap();
    assert_eq!(rel_err(p.get("embed.W_E").unwrap().as_tensor(), again.get("embed.W_E").unwrap().as_tensor()), 0.0);
}

/// The fast path against the goldens and against autograd through the textbook forward.
#[test]
fn fast_path_matches_goldens_and_autograd() {
    for alpha in ["0.0", "0.5", "1.0"] {
        let g = golden(alpha);
        let params = Params::from_tensors(&g.cfg, g.group("init."), "golden").unwrap();
        let data = all_pairs(11);
        let rows = g.train_rows();
        let toks: Vec<u32> = rows.iter().flat_map(|&r| data.tokens[r as usize * 2..r as usize * 2 + 2].to_vec()).collect();
        let labs: Vec<u32> = rows.iter().map(|&r| data.labels[r as usize]).collect();
        let flat = params.flat().unwrap();
        for threads in [1, 2] {
            let out = fast::loss_and_grad(&g.cfg, &fast::Weights::from_map(&flat).unwrap(), &toks, &labs, true, threads);
            let loss0: f64 = g.meta["loss0"].parse().unwrap();
            assert!(((out.loss - loss0) / loss0).abs() < 1e-6, "alpha {alpha}: {} vs {loss0}", out.loss);
            for (name, want) in g.group("grad.") {
                let got = Tensor::from_vec(out.grads.as_ref().unwrap()[&name].clone(), want.dims(), &Device::Cpu).unwrap();
                let scale = want.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
                let e = rel_err(&got, &want);
                assert!(if scale == 0.0 { e < 1e-12 } else { e < 1e-4 }, "alpha {alpha}: grad {name} rel err {e}");
            }
        }
    }
    // A trained p = 59 model, where the softmax is far from uniform: against autograd.
    let c = ckpt::load(&fixture("pizza/l8k1hzciux.safetensors")).unwrap();
    let model = Transformer::new(c.params.var_builder(), &c.model).unwrap();
    let data = all_pairs(59);
    let rows: Vec<u32> = (0..3481).step_by(7).collect();
    let (x, y) = data.batch(&rows, &Device::Cpu).unwrap();
    let loss = cross_entropy_f64(&model.forward_reference(&x).unwrap(), &y).unwrap();
    let grads = loss.backward().unwrap();
    let toks = x.flatten_all().unwrap().to_vec1::<u32>().unwrap();
    let labs = y.to_vec1::<u32>().unwrap();
    let flat = c.params.flat().unwrap();
    let one = fast::loss_and_grad(&c.model, &fast::Weights::from_map(&flat).unwrap(), &toks, &labs, true, 1);
    let two = fast::loss_and_grad(&c.model, &fast::Weights::from_map(&flat).unwrap(), &toks, &labs, true, 2);
    let l = loss.to_scalar::<f64>().unwrap();
    assert!((one.loss - l).abs() <= 1e-4 * l.abs().max(1e-6), "{} vs {l}", one.loss);
    assert_eq!(one.grads, two.grads, "thread count changed the gradients");
    for (name, var) in c.params.iter() {
        let want = grads.get(var.as_tensor()).unwrap();
        let got = Tensor::from_vec(one.grads.as_ref().unwrap()[name].clone(), want.dims(), &Device::Cpu).unwrap();
        let e = rel_err(&got, want);
        assert!(e < 1e-3, "Model B: grad {name} rel err {e}");
    }
}

/// The fast path on the other token layouts (Nanda's `=` token: three positions; the paper's
/// separate vocabularies) against autograd through the textbook forward.
#[test]
fn fast_path_matches_autograd_on_other_layouts() {
    for (eq, sep) in [(true, false), (false, true)] {
        let data_cfg = DataConfig { p: 13, eq_token: eq, separate_vocab: sep, train_frac: 1.0, ..DataConfig::default() };
        let settings = ModelSettings { d_model: 24, n_heads: 3, alpha: 0.5, ..Default::default() };
        let cfg = ModelConfig::from_settings(&data_cfg, &settings);
        let params = Params::init(&cfg, 3, &Device::Cpu).unwrap();
        let model = Transformer::new(params.var_builder(), &cfg).unwrap();
        let data = Dataset::generate(&data_cfg);
        let rows: Vec<u32> = (0..169).step_by(2).collect();
        let (x, y) = data.batch(&rows, &Device::Cpu).unwrap();
        let loss = cross_entropy_f64(&model.forward_reference(&x).unwrap(), &y).unwrap();
        let grads = loss.backward().unwrap();
        let (toks, labs) = data.gather(&rows);
        let out = loss_and_grad(&params, &cfg, &toks, &labs, true, 2).unwrap();
        let l = loss.to_scalar::<f64>().unwrap();
        assert!((out.loss - l).abs() < 1e-5 * l, "eq {eq} sep {sep}: {} vs {l}", out.loss);
        for (name, var) in params.iter() {
            let want = grads.get(var.as_tensor()).unwrap();
            let got = Tensor::from_vec(out.grads.as_ref().unwrap()[name].clone(), want.dims(), &Device::Cpu).unwrap();
            let e = rel_err(&got, want);
            assert!(e < 1e-4, "eq {eq} sep {sep}: grad {name} rel err {e}");
        }
    }
}

/// Bad checkpoints are refused with the file and the tensor named: a NaN weight, a shape that
/// does not match the config, a missing tensor, a config that contradicts `pizza_config`.
#[test]
fn bad_checkpoints_are_refused_with_the_file_and_tensor_named() {
    let dir = std::env::temp_dir().join(format!("badckpt-{}", std::process::id()));
    let cfg = crate::config::load_str("data: {p: 7}\nmodel: {d_model: 8, n_heads: 2}", &[]).unwrap();
    let mc = cfg.model_config();
    let params = Params::init(&mc, 0, &Device::Cpu).unwrap();
    let mut tensors = params.tensors().unwrap();
    let meta = BTreeMap::from([("config".to_string(), mc.to_paper_json())]);

    let mut nan = tensors.clone();
    let w = nan["blocks.0.mlp.W_in"].flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let mut w2 = w.clone();
    w2[5] = f32::NAN;
    nan.insert("blocks.0.mlp.W_in".into(), Tensor::from_vec(w2, nan["blocks.0.mlp.W_in"].dims(), &Device::Cpu).unwrap());
    let p = dir.join("nan.safetensors");
    ckpt::write_safetensors(&p, &nan, &meta).unwrap();
    let e = format!("{:#}", ckpt::load(&p).unwrap_err());
    assert!(e.contains("nan.safetensors") && e.contains("blocks.0.mlp.W_in") && e.contains("non-finite"), "{e}");

    let mut wrong = tensors.clone();
    wrong.insert("unembed.W_U".into(), Tensor::zeros((8, 6), DType::F32, &Device::Cpu).unwrap());
    let p = dir.join("shape.safetensors");
    ckpt::write_safetensors(&p, &wrong, &meta).unwrap();
    let e = format!("{:#}", ckpt::load(&p).unwrap_err());
    assert!(e.contains("shape.safetensors") && e.contains("unembed.W_U") && e.contains("[8, 6]") && e.contains("[8, 7]"), "{e}");

    tensors.remove("pos_embed.W_pos");
    let p = dir.join("missing.safetensors");
    ckpt::write_safetensors(&p, &tensors, &meta).unwrap();
    let e = format!("{:#}", ckpt::load(&p).unwrap_err());
    assert!(e.contains("missing.safetensors") && e.contains("pos_embed.W_pos") && e.contains("missing"), "{e}");

    let other = crate::config::load_str("data: {p: 7}\nmodel: {d_model: 16, n_heads: 2}", &[]).unwrap();
    let mut meta2 = meta.clone();
    meta2.insert("pizza_config".into(), other.to_json().unwrap());
    let p = dir.join("contradiction.safetensors");
    ckpt::write_safetensors(&p, &params.tensors().unwrap(), &meta2).unwrap();
    let e = format!("{:#}", ckpt::load(&p).unwrap_err());
    assert!(e.contains("contradiction.safetensors") && e.contains("pizza_config"), "{e}");

    let p = dir.join("noconfig.safetensors");
    ckpt::write_safetensors(&p, &params.tensors().unwrap(), &BTreeMap::new()).unwrap();
    let e = format!("{:#}", ckpt::load(&p).unwrap_err());
    assert!(e.contains("noconfig.safetensors") && e.contains("`config`"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// On two released p = 59 checkpoints over all 3,481 pairs, every gradient of the fast path is
/// within 1e-3 of float64 autograd (it is about as close as float32 autograd is: at a trained
/// model the gradients are sums that cancel almost entirely; measured worst case 6e-4 for `b_in`,
/// where float32 autograd is 2.5e-3 off).
#[test]
fn fast_path_matches_float64_autograd_on_released_checkpoints() {
    for run in ["2k4ohj6bhd", "l8k1hzciux"] {
        let c = ckpt::load(&fixture(&format!("pizza/{run}.safetensors"))).unwrap();
        let data = all_pairs(59);
        let (toks, labs) = data.gather(&data.all_rows());
        let (l64, g64) = crate::testing::autograd_f64(&c.params, &c.model, &toks, &labs);
        let flat = c.params.flat().unwrap();
        let out = fast::loss_and_grad(&c.model, &fast::Weights::from_map(&flat).unwrap(), &toks, &labs, true, 2);
        assert!(((out.loss - l64) / l64).abs() < 1e-5, "{run}: loss {} vs {l64}", out.loss);
        for (name, want) in &g64 {
            let got = Tensor::from_vec(out.grads.as_ref().unwrap()[name].clone(), want.dims(), &Device::Cpu).unwrap();
            let e = rel_err(&got, want);
            assert!(e < 1e-3, "{run}: grad {name} rel err {e} against float64 autograd");
        }
    }
}

/// Same bits whatever the thread count (1, 2, 3) and whether the per-pair loops run as AVX2 or
/// SSE2 code: on all 3,481 pairs of a released p = 59 checkpoint (14 chunks, 59 tokens per
/// position) and on a 512-row minibatch, for the loss, the correct count and every gradient.
#[test]
fn fast_path_bits_do_not_depend_on_threads_or_vector_width() {
    let c = ckpt::load(&fixture("pizza/l8k1hzciux.safetensors")).unwrap();
    let data = all_pairs(59);
    let flat = c.params.flat().unwrap();
    let w = fast::Weights::from_map(&flat).unwrap();
    let batch: Vec<u32> = (0..512).map(|i| (i * 37 % 3481) as u32).collect();
    for rows in [data.all_rows(), batch] {
        let (toks, labs) = data.gather(&rows);
        let run = |threads| fast::loss_and_grad(&c.model, &w, &toks, &labs, true, threads);
        let bits = |o: &fast::Output| {
            let g = o.grads.as_ref().unwrap();
            (o.loss.to_bits(), o.correct, g.iter().map(|(k, v)| (k.clone(), v.iter().map(|x| x.to_bits()).collect::<Vec<_>>())).collect::<Vec<_>>())
        };
        let one = bits(&run(1));
        for threads in [2, 3] {
            assert!(bits(&run(threads)) == one, "{} rows: {threads} threads changed the bits", rows.len());
        }
        fast::set_wide(false);
        let narrow = bits(&run(1));
        fast::set_wide(true);
        assert!(narrow == one, "{} rows: the SSE2 build of the per-pair loops differs from the AVX2 build", rows.len());
    }
}

/// Asking for some gradients gives exactly (bit for bit) those of the full backward, and only
/// those: each tensor alone, the attention's four, and none (the forward alone), at α = 1 (a
/// released model; every step of the backward is live) and α = 0 (the golden; no score path).
#[test]
fn a_subset_of_gradients_is_the_full_backwards_bits() {
    use crate::model::names::{Param, ParamSet};
    let c = ckpt::load(&fixture("pizza/l8k1hzciux.safetensors")).unwrap();
    let g0 = golden("0.0");
    let p0 = Params::from_tensors(&g0.cfg, g0.group("init."), "golden").unwrap();
    let mut sets: Vec<ParamSet> = Param::ALL.iter().map(|&p| ParamSet::of(&[p])).collect();
    sets.push(ParamSet::of(&[Param::WQ, Param::WK, Param::WV, Param::WO]));
    sets.push(ParamSet::NONE);
    for (cfg, params, p) in [(&c.model, &c.params, 59u64), (&g0.cfg, &p0, 11)] {
        let data = all_pairs(p);
        let rows: Vec<u32> = (0..(p * p) as u32).step_by(7).collect();
        let (toks, labs) = data.gather(&rows);
        let flat = params.flat().unwrap();
        let w = fast::Weights::from_map(&flat).unwrap();
        let full = fast::loss_and_grads(cfg, &w, &toks, &labs, ParamSet::ALL, 2);
        let all = full.grads.as_ref().unwrap();
        for set in &sets {
            let part = fast::loss_and_grads(cfg, &w, &toks, &labs, *set, 2);
            assert_eq!(part.loss.to_bits(), full.loss.to_bits());
            match &part.grads {
                None => assert!(set.is_empty()),
                Some(g) => {
                    let names: Vec<&str> = g.keys().map(String::as_str).collect();
                    assert_eq!(names, set.iter().map(|p| p.name()).collect::<Vec<_>>(), "only the tensors asked for");
                    for (name, v) in g {
                        assert!(v.iter().zip(&all[name]).all(|(a, b)| a.to_bits() == b.to_bits()), "p = {p}: {name} alone differs from the full backward");
                    }
                }
            }
        }
    }
}
