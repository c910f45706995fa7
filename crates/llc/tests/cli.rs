//! `llc estimate` and `llc calibrate` refuse a typo in the `llc:` section (or in `--set llc.*`)
//! at load, before sampling, and write nothing.

#[path = "../../../tests/support/common.rs"]
mod common;

#[test]
fn estimate_and_calibrate_refuse_a_typo_before_sampling() {
    let bin = env!("CARGO_BIN_EXE_llc");
    let ckpt = common::released_checkpoint();
    let ckpt = ckpt.to_str().unwrap();
    common::assert_refuses_llc_typo(bin, "llc-estimate", &["estimate", "--config", "bad.yaml", "--out", "llc.parquet", ckpt]);
    common::assert_refuses_llc_typo(bin, "llc-calibrate", &["calibrate", ckpt, "--config", "bad.yaml", "--out", "cal.parquet"]);
    common::assert_refuses_llc_typo(bin, "llc-set", &["estimate", "--set", "llc.epsilom=1e-4", "--out", "llc.parquet", ckpt]);
}
