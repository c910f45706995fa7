//! `symmetry` refuses a typo in a section it does not read (here `llc:`) before analysing.

#[path = "../../../tests/support/stage_cli.rs"]
mod stage_cli;

use stage_cli::{assert_refused, released_checkpoint, run, Scratch, LLC_TYPO};

const BIN: &str = env!("CARGO_BIN_EXE_symmetry");

#[test]
fn symmetry_refuses_a_typo_in_the_llc_section_before_any_work() {
    let dir = Scratch::new("symmetry-typo");
    dir.file("bad.yaml", LLC_TYPO);
    let ckpt = released_checkpoint();
    let ran = run(BIN, &["--config", "bad.yaml", "--out", "symmetry.parquet", ckpt.to_str().unwrap()], &dir);
    assert_refused(&ran, &dir, &["bad.yaml"]);
}
