//! `train` refuses a typo in a section it does not read (here `llc:`) before training, and its
//! log, written to a file, is plain text.

#[path = "../../../tests/support/common.rs"]
mod common;

use common::{assert_no_escapes, assert_refuses_llc_typo, run, Scratch, TINY};

const BIN: &str = env!("CARGO_BIN_EXE_train");

#[test]
fn train_refuses_a_typo_in_the_llc_section_before_training() {
    assert_refuses_llc_typo(BIN, "train-typo", &["--config", "bad.yaml", "--out", "run"]);
}

/// Logs written to a file carry no escape codes: no colour, no progress-bar redraws.
#[test]
fn a_log_file_holds_no_escape_codes() {
    let dir = Scratch::new("train-log");
    dir.file("tiny.yaml", TINY);
    let ran = run(BIN, &["--config", "tiny.yaml", "--out", "run"], &dir);
    assert!(ran.success, "{}", ran.text());
    assert!(ran.text().contains("INFO") && ran.text().contains("finished"), "{}", ran.text());
    assert_no_escapes(&ran);
}
