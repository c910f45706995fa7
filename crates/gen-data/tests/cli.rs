//! `gen-data` as `make` runs it: the plan step and the dataset refuse a typo anywhere in the
//! experiment file before writing anything.

#[path = "../../../tests/support/stage_cli.rs"]
mod stage_cli;

use stage_cli::{assert_refused, run, Scratch, LLC_TYPO, PER_P_TYPO};

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
    let ran = run(BIN, &["--set", "llc.epsilom=1e-4", "--out", "dataset.parquet"], &dir);
    assert_refused(&ran, &dir, &inputs);
}
