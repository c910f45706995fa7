//! `gen-data` as `make` runs it: the plan step and the dataset refuse a typo anywhere in the
//! experiment file before writing anything, and the log, written to a file, is plain text.

#[path = "../../../tests/support/common.rs"]
mod common;

use common::{assert_no_escapes, assert_refused, run, Scratch, LLC_TYPO, PER_P_TYPO};

const BIN: &str = env!("CARGO_BIN_EXE_gen-data");

#[test]
fn plan_and_dataset_refuse_a_typo_in_a_late_section() {
    let dir = Scratch::new("gen-data-typo");
    dir.file("bad.yaml", LLC_TYPO);
    dir.file("bad_per_p.yaml", PER_P_TYPO);
    let inputs = ["bad.yaml", "bad_per_p.yaml"];
    for config in inputs {
        assert_refused(&run(BIN, &["--config", config, "--plan", "data"], &dir), &dir, &inputs);
        assert_refused(&run(BIN, &["--config", config, "--out", "dataset.parquet"], &dir), &dir, &inputs);
    }
    // An override is checked the same way.
    assert_refused(&run(BIN, &["--set", "llc.epsilom=1e-4", "--out", "dataset.parquet"], &dir), &dir, &inputs);
}

/// Logs written to a file carry no colour codes.
#[test]
fn a_log_file_holds_no_escape_codes() {
    let dir = Scratch::new("gen-data-log");
    let ran = run(BIN, &["--set", "data.p=7", "--out", "dataset.parquet"], &dir);
    assert!(ran.success && ran.text().contains("wrote"), "{}", ran.text());
    assert_no_escapes(&ran);
}
