//! `train` refuses a typo in a section it does not read (here `llc:`) before training.

#[path = "../../../tests/support/stage_cli.rs"]
mod stage_cli;

use stage_cli::{assert_refused, run, Scratch, LLC_TYPO};

const BIN: &str = env!("CARGO_BIN_EXE_train");

#[test]
fn train_refuses_a_typo_in_the_llc_section_before_training() {
    let dir = Scratch::new("train-typo");
    dir.file("bad.yaml", LLC_TYPO);
    assert_refused(&run(BIN, &["--config", "bad.yaml", "--out", "run"], &dir), &dir, &["bad.yaml"]);
}
