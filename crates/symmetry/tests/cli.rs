//! `symmetry` refuses a typo in a section it does not read (here `llc:`) before analysing.

#[path = "../../../tests/support/common.rs"]
mod common;

#[test]
fn symmetry_refuses_a_typo_in_the_llc_section_before_any_work() {
    let ckpt = common::released_checkpoint();
    let args = ["--config", "bad.yaml", "--out", "symmetry.parquet", ckpt.to_str().unwrap()];
    common::assert_refuses_llc_typo(env!("CARGO_BIN_EXE_symmetry"), "symmetry-typo", &args);
}
