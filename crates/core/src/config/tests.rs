use super::*;

fn err(text: &str, sets: &[&str]) -> String {
    let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    format!("{:#}", load_str(text, &sets).expect_err("should be rejected"))
}

#[test]
fn defaults_are_the_papers() {
    let c = load_str("", &[]).unwrap();
    assert_eq!(c.data.p, 59);
    assert_eq!(c.data.train_frac, 0.8);
    assert_eq!(c.train.lr, 1e-3);
    assert_eq!(c.train.weight_decay, 2.0);
    assert_eq!(c.train.betas, [0.9, 0.98]);
    assert_eq!(c.train.eps, 1e-8);
    assert_eq!(c.train.steps, 20_000);
    assert_eq!(c.model.d_model, 128);
    assert_eq!(c.model_config().d_mlp, 512);
}

#[test]
fn overrides_and_per_p() {
    let text = "data: {p: 59}\nper_p:\n  113: {data.train_frac: 0.5, train.weight_decay: 1.5}\n";
    let c = load_str(text, &["data.p=113".into()]).unwrap();
    assert_eq!((c.data.p, c.data.train_frac, c.train.weight_decay), (113, 0.5, 1.5));
    // --set wins over per_p.
    let c = load_str(text, &["data.p=113".into(), "train.weight_decay=1".into()]).unwrap();
    assert_eq!(c.train.weight_decay, 1.0);
    let c = load_str(text, &[]).unwrap();
    assert_eq!((c.data.train_frac, c.train.weight_decay), (0.8, 2.0));
}

#[test]
fn unknown_keys_get_a_hint() {
    let e = err("train: {lrr: 0.1}", &[]);
    assert!(e.contains("lrr") && e.contains("did you mean `lr`"), "{e}");
    let e = err("", &["data.trian_frac=0.3"]);
    assert!(e.contains("did you mean `train_frac`"), "{e}");
}

#[test]
fn bad_values_name_the_field() {
    assert!(err("data: {p: 1}", &[]).contains("data.p"));
    assert!(err("data: {train_frac: 0}", &[]).contains("data.train_frac"));
    assert!(err("data: {train_frac: 1.5}", &[]).contains("data.train_frac"));
    assert!(err("data: {operation: pow}", &[]).contains("unknown variant `pow`"));
    assert!(err("model: {alpha: 2}", &[]).contains("model.alpha"));
    let e = err("train: {lr: fast}", &[]);
    assert!(e.contains("train.lr") && e.contains("invalid type"), "{e}");
    assert!(err("data: {p: [1, 2]}", &[]).contains("p"));
    assert!(err("data: {eq_token: true, separate_vocab: true}", &[]).contains("cannot both"));
    assert!(err("data: [unclosed", &[]).contains("malformed YAML"));
    assert!(err("- a list", &[]).contains("top level"));
    assert!(err("", &["train.lr"]).contains("key=value"));
    assert!(err("grid: {model.alpha: []}", &[]).contains("no values"));
}

#[test]
fn grid_expands_to_named_runs() {
    let c = load_str("grid: {model.alpha: [0, 1], train.seed: [0, 1, 2]}", &[]).unwrap();
    let runs = c.runs().unwrap();
    assert_eq!(runs.len(), 6);
    assert_eq!(runs[0].id, "alpha0_seed0");
    assert_eq!(runs[5].id, "alpha1_seed2");
    assert_eq!(runs[5].config.model.alpha, 1.0);
    assert_eq!(runs[5].config.train.seed, 2);
    assert!(runs[5].config.grid.is_empty());
    assert!(c.run(None).is_err());
    assert!(format!("{:#}", c.run(Some("alpha3")).unwrap_err()).contains("alpha0_seed0"));
    // A grid value of the wrong type is caught at expansion, which loading does.
    assert!(load_str("grid: {model.alpha: [zero]}", &[]).is_err());
}

#[test]
fn checkpoint_schedule_is_dense_early_and_has_both_ends() {
    let s = CheckpointSchedule::default().steps(20_000);
    assert_eq!(s.first(), Some(&0));
    assert_eq!(s.last(), Some(&20_000));
    assert!(s.contains(&1) && s.contains(&50) && s.contains(&1500) && s.contains(&1750) && s.contains(&6000));
    assert!(!s.contains(&1525));
    assert!(s.windows(2).all(|w| w[0] < w[1]));
    let s = CheckpointSchedule::default().steps(7);
    assert_eq!(s.first(), Some(&0));
    assert_eq!(s.last(), Some(&7));
}

#[test]
fn json_round_trip_and_hash() {
    let c = load_str("model: {alpha: 0.5}\nper_p: {113: {train.steps: 5}}\nllc: {chains: 2}", &[]).unwrap();
    let back = Config::from_json(&c.to_json().unwrap()).unwrap();
    assert_eq!(back, c);
    let shipped = load(std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../pipelines/default.yaml")), &[]).unwrap();
    for run in shipped.runs().unwrap() {
        assert_eq!(Config::from_json(&run.config.to_json().unwrap()).unwrap(), run.config);
    }
    assert_eq!(back.hash().unwrap(), c.hash().unwrap());
    assert_ne!(load_str("", &[]).unwrap().hash().unwrap(), c.hash().unwrap());
}

#[test]
fn memory_estimate_refuses_huge_p() {
    let small = load_str("", &[]).unwrap();
    let big = load_str("", &["data.p=4001".into()]).unwrap();
    let (a, b) = (crate::train::memory_estimate(&small), crate::train::memory_estimate(&big));
    // p = 59 needs tens of MB; p = 4001 needs more than this machine has (24 GiB).
    assert!(a < 200 << 20, "{a}");
    assert!(b > 64 << 30, "{b}");
    assert!(load_str("", &["data.p=70000".into()]).is_err());
}

#[test]
fn llc_section_parses_with_overrides_and_hints() {
    use crate::llc::{NBeta, NBetaRule, SgldConfig};
    let cfg = load_str("llc:\n  epsilon: 1.0e-3\n  batch_size: 512\n", &["llc.epsilon=2e-4".into(), "llc.nbeta=b_over_ln_b".into()]).unwrap();
    let s = &cfg.llc;
    assert_eq!(s.epsilon, 2e-4);
    assert_eq!(s.batch_size, Some(512));
    assert_eq!(s.nbeta, NBeta::Rule(NBetaRule::BOverLnB));
    assert_eq!(s.chains, SgldConfig::default().chains);
    assert_eq!(load_str("", &[]).unwrap().llc, SgldConfig::default());
    let e = err("llc:\n  epsilom: 1.0e-3\n", &[]);
    assert!(e.contains("epsilom") && e.contains("did you mean `epsilon`"), "{e}");
    assert!(err("llc:\n  chains: 0\n", &[]).contains("chains"));
}

/// A mistake in a section that only a later stage reads, or in a `per_p` block of a modulus not
/// in force, or in one grid point, is refused when the file is loaded.
#[test]
fn every_per_p_block_and_grid_point_is_checked_at_load() {
    let e = err("per_p:\n  113: {llc.epsilom: 1.0e-4}\n", &[]);
    assert!(e.contains("per_p.113") && e.contains("did you mean `epsilon`"), "{e}");
    let e = err("per_p:\n  113: {train.lr: -1}\n", &["data.p=59".into()]);
    assert!(e.contains("per_p.113") && e.contains("train.lr"), "{e}");
    // The same block is fine for the modulus in force, and a good block for another p is fine.
    assert!(load_str("per_p:\n  113: {train.lr: 1.0e-4}\n", &[]).is_ok());
    let c = load_str("per_p:\n  113: {train.lr: 1.0e-4}\n", &["data.p=113".into()]).unwrap();
    assert_eq!(c.train.lr, 1e-4);
    let e = err("grid: {llc.gamma: [1, -5]}", &[]);
    assert!(e.contains("grid point") && e.contains("gamma"), "{e}");
    let e = err("grid: {llc.gama: [1, 5]}", &[]);
    assert!(e.contains("did you mean `gamma`"), "{e}");
}

/// `llc validate` starts from a model's own settings; `--set llc.x=v` overrides only what it
/// names, through the same parser and hints as an experiment file.
#[test]
fn section_overrides_change_only_what_they_name() {
    use crate::llc::{LossAtWstar, NBeta, NBetaRule, SgldConfig};
    let base = SgldConfig { epsilon: 1e-4.into(), chains: 3, ..SgldConfig::plain() };
    let sets: Vec<String> = ["llc.epsilon=1e-3", "llc.nbeta=b_over_ln_b", "llc.batch_size=100", "llc.loss_at_wstar=first_batches"].map(String::from).to_vec();
    let s = override_section(&base, "llc", &sets).unwrap();
    assert_eq!(s.epsilon, 1e-3);
    assert_eq!(s.nbeta, NBeta::Rule(NBetaRule::BOverLnB));
    assert_eq!(s.batch_size, Some(100));
    assert_eq!(s.loss_at_wstar, LossAtWstar::FirstBatches);
    assert_eq!(SgldConfig { epsilon: base.epsilon, nbeta: base.nbeta, batch_size: None, loss_at_wstar: base.loss_at_wstar, ..s }, base);
    assert_eq!(override_section(&base, "llc", &[]).unwrap(), base);
    assert!(override_section(&base, "llc", &["llc.nbeta=lots".into()]).is_err());
    let e = format!("{:#}", override_section(&base, "llc", &["llc.epsilom=1".into()]).unwrap_err());
    assert!(e.contains("did you mean `epsilon`"), "{e}");
    assert!(format!("{:#}", override_section(&base, "llc", &["train.lr=1".into()]).unwrap_err()).contains("only llc.*"));
}
