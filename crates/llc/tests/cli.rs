//! `llc estimate` and `llc calibrate` refuse a typo in the `llc:` section at load, before
//! sampling, and write nothing.

#[path = "../../../tests/support/stage_cli.rs"]
mod stage_cli;

use stage_cli::{assert_refused, released_checkpoint, run, Scratch, LLC_TYPO};

const BIN: &str = env!("CARGO_BIN_EXE_llc");

#[test]
fn estimate_and_calibrate_refuse_a_typo_before_sampling() {
    let dir = Scratch::new("llc-typo");
    dir.file("bad.yaml", LLC_TYPO);
    let ckpt = released_checkpoint();
    let ckpt = ckpt.to_str().unwrap();
    assert_refused(&run(BIN, &["estimate", "--config", "bad.yaml", "--out", "llc.parquet", ckpt], &dir), &dir, &["bad.yaml"]);
    assert_refused(&run(BIN, &["calibrate", ckpt, "--config", "bad.yaml", "--out", "cal.parquet"], &dir), &dir, &["bad.yaml"]);
    // The override path is checked the same way.
    let ran = run(BIN, &["estimate", "--set", "llc.epsilom=1e-4", "--out", "llc.parquet", ckpt], &dir);
    assert_refused(&ran, &dir, &["bad.yaml"]);
}
