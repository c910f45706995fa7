//! What the integration tests share (each includes this file with `#[path]`): the files under a
//! folder, a scratch folder, running a stage binary there with stderr going to a file, as under
//! `make all > log 2>&1`, and the checks on what it printed and left behind.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// An experiment file with one typo (`epsilom`) in the `llc:` section, which only the llc stage
/// uses: every stage must refuse it at load, before any work.
pub const LLC_TYPO: &str = "name: typo\ndata: {p: 7}\nmodel: {d_model: 8, n_heads: 2}\ntrain: {steps: 4}\nllc:\n  epsilom: 1.0e-4\n";

/// The same typo inside the `per_p` block of a modulus that is not in force.
pub const PER_P_TYPO: &str = "name: typo\ndata: {p: 7}\nper_p:\n  113: {llc.epsilom: 1.0e-4}\n";

/// A small experiment that trains in a second.
pub const TINY: &str = "name: tiny\ndata: {p: 7}\nmodel: {d_model: 8, n_heads: 2}\ntrain: {steps: 20}\n";

/// Every file under `dir` (relative path → bytes), in path order.
pub fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(p.strip_prefix(dir).unwrap().to_path_buf(), std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

/// One of the paper's released checkpoints, as an input the analysis stages accept.
pub fn released_checkpoint() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/pizza/p99zdpze5l.safetensors");
    assert!(p.is_file(), "fixture {} is missing", p.display());
    p
}

/// A temporary folder, removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        let d = std::env::temp_dir().join(format!("stage-cli-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Scratch(d)
    }

    /// Writes `text` to `name` in the folder and returns its path.
    pub fn file(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.0.join(rel)
    }

    /// Every file under the folder, relative paths, sorted.
    pub fn files(&self) -> Vec<PathBuf> {
        snapshot(&self.0).into_keys().collect()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What a stage run left: its exit status and its stderr, captured through a file.
pub struct Ran {
    pub success: bool,
    pub stderr: Vec<u8>,
}

impl Ran {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// Runs `bin` with `args` in the scratch folder, stderr redirected to a file there (removed
/// afterwards) and `NO_COLOR` unset, so that what it writes is what a log file would hold.
pub fn run(bin: &str, args: &[&str], dir: &Scratch) -> Ran {
    let log = std::env::temp_dir().join(format!("stage-cli-stderr-{}-{}", std::process::id(), dir.0.file_name().unwrap().to_string_lossy()));
    let status = Command::new(bin)
        .args(args)
        .current_dir(&dir.0)
        .env_remove("NO_COLOR")
        .env("RAYON_NUM_THREADS", "2")
        .stderr(std::fs::File::create(&log).unwrap())
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("running {bin}: {e}"));
    let stderr = std::fs::read(&log).unwrap();
    std::fs::remove_file(&log).unwrap();
    Ran { success: status.success(), stderr }
}

/// Runs `bin` in a fresh scratch folder holding `bad.yaml` ([`LLC_TYPO`]) with `args` (which name
/// it) and checks that it refused the typo and wrote nothing.
pub fn assert_refuses_llc_typo(bin: &str, name: &str, args: &[&str]) {
    let dir = Scratch::new(name);
    dir.file("bad.yaml", LLC_TYPO);
    assert_refused(&run(bin, args, &dir), &dir, &["bad.yaml"]);
}

/// The stage refused the `epsilom` typo: a non-zero exit, the key and its nearest valid name in
/// the message, and no file in the folder but the experiment file(s) `inputs`.
pub fn assert_refused(ran: &Ran, dir: &Scratch, inputs: &[&str]) {
    let text = ran.text();
    assert!(!ran.success, "the stage accepted the typo:\n{text}");
    assert!(text.contains("epsilom") && text.contains("did you mean `epsilon`"), "no hint in:\n{text}");
    let left: Vec<PathBuf> = dir.files().into_iter().filter(|f| !inputs.iter().any(|i| f == Path::new(i))).collect();
    assert!(left.is_empty(), "the stage wrote {left:?} before refusing the config");
}

/// No ANSI escape (ESC, 0x1b) in what the stage wrote to stderr: colour codes and progress-bar
/// redraws belong to terminals, not to log files.
pub fn assert_no_escapes(ran: &Ran) {
    assert!(!ran.stderr.contains(&0x1b), "stderr written to a file holds escape codes:\n{:?}", ran.text());
}
