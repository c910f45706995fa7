/*!
What the Makefile needs to know about an experiment: its output folder, its runs, and one small
"config fragment" file per stage input. A stage's target depends on the fragment of the config
sections it reads, and a fragment is rewritten only when its content changes, so editing the
`llc:` section of an experiment reruns the LLC stage but not training.
*/

use std::path::Path;

use anyhow::Result;

use crate::config::Config;
use crate::fsio;

/// Writes the fragments under `<root>/<exp>/.config/` and returns the make variables
/// (`EXP := <name>-p<p>`, `RUNS := <ids>`).
pub fn write(cfg: &Config, root: &Path) -> Result<String> {
    let exp = format!("{}-p{}", cfg.name, cfg.data.p);
    let dir = root.join(&exp).join(".config");
    let runs = cfg.runs()?;
    write_if_changed(&dir.join("data.json"), &serde_json::to_string_pretty(&cfg.data)?)?;
    for run in &runs {
        let text = serde_json::to_string_pretty(&run.config.training_part())?;
        write_if_changed(&dir.join(format!("train-{}.json", run.id)), &text)?;
    }
    write_if_changed(&dir.join("analysis.json"), &serde_json::to_string_pretty(&cfg.analysis)?)?;
    write_if_changed(&dir.join("llc.json"), &serde_json::to_string_pretty(&cfg.llc)?)?;
    Ok(format!(
        "EXP := {exp}\nRUNS := {}\n",
        runs.iter().map(|r| r.id.as_str()).collect::<Vec<_>>().join(" ")
    ))
}

/// Writes `text` to `path` unless the file already holds exactly that (keeping its mtime).
fn write_if_changed(path: &Path, text: &str) -> Result<()> {
    if std::fs::read_to_string(path).is_ok_and(|old| old == text) {
        return Ok(());
    }
    fsio::write_bytes_atomic(path, text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fragments_change_only_with_their_section() {
        let root = std::env::temp_dir().join(format!("plan-test-{}", std::process::id()));
        let base = "name: t\ngrid: {model.alpha: [0, 1]}\n";
        let vars = write(&crate::config::load_str(base, &[]).unwrap(), &root).unwrap();
        assert_eq!(vars, "EXP := t-p59\nRUNS := alpha0 alpha1\n");
        let dir = root.join("t-p59/.config");
        let mtime = |f: &str| std::fs::metadata(dir.join(f)).unwrap().modified().unwrap();
        let before = ["data.json", "train-alpha0.json", "analysis.json", "llc.json"].map(mtime);
        std::thread::sleep(std::time::Duration::from_millis(20));
        write(&crate::config::load_str(&format!("{base}llc: {{chains: 3}}\n"), &[]).unwrap(), &root).unwrap();
        let after = ["data.json", "train-alpha0.json", "analysis.json", "llc.json"].map(mtime);
        assert_eq!(before[..3], after[..3], "an llc change touched other fragments");
        assert_ne!(before[3], after[3], "the llc fragment did not change");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
