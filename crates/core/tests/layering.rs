//! Architecture invariants that a reading of the source can check.

#[path = "../../../tests/support/common.rs"]
mod common;

use std::path::Path;

/// Only `tables` uses the dataframe library: no source file of any crate outside
/// `crates/core/src/tables/` names it, so every table's columns are named, written and read in
/// one place. (Its name is spelled in two halves here, so that this file does not name it.)
#[test]
fn only_tables_uses_the_dataframe_library() {
    let word = ["pol", "ars"].concat();
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let offenders: Vec<String> = common::snapshot(&crates)
        .into_iter()
        .filter(|(p, bytes)| p.extension().is_some_and(|x| x == "rs") && !p.starts_with("core/src/tables") && String::from_utf8_lossy(bytes).contains(&word))
        .map(|(p, _)| p.display().to_string())
        .collect();
    assert!(offenders.is_empty(), "only crates/core/src/tables/ may use {word}; these files mention it: {offenders:?}");
}
