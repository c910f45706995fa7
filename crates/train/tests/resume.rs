//! Kill `train` with SIGKILL at several moments, run it again, and compare every output byte with
//! a run that was never interrupted (issue: reliability).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

#[path = "../../../tests/support/common.rs"]
mod common;

use common::snapshot;

const CONFIG: &str = "name: resume\ndata: {p: 13}\nmodel: {d_model: 32}\ntrain:\n  steps: 1500\n  checkpoints: {log_points: 5, segments: [{every: 100}]}\n";

fn train(cfg: &Path, out: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_train"));
    c.arg("--config").arg(cfg).arg("--out").arg(out).env("RAYON_NUM_THREADS", "2");
    c
}

fn checkpoints(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("checkpoints")).map(|r| r.count()).unwrap_or(0)
}

#[test]
fn killed_and_resumed_runs_are_byte_identical() {
    let root = std::env::temp_dir().join(format!("resume-test-{}", std::process::id()));
    std::fs::create_dir_all(&root).unwrap();
    let cfg = root.join("c.yaml");
    std::fs::write(&cfg, CONFIG).unwrap();
    let clean = root.join("clean");
    assert!(train(&cfg, &clean).status().unwrap().success());
    let want = snapshot(&clean);
    assert!(want.contains_key(Path::new("metrics.parquet")));

    // Kill after 2, 8 and 16 files have appeared in checkpoints/, then resume to the end.
    for (i, after) in [2usize, 8, 16].into_iter().enumerate() {
        let out = root.join(format!("killed{i}"));
        let mut child = train(&cfg, &out).spawn().unwrap();
        let start = Instant::now();
        while checkpoints(&out) < after && start.elapsed() < Duration::from_secs(60) {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        assert!(!out.join("metrics.parquet").exists() || snapshot(&out) == want, "killed run {i} finished early with other bytes");
        let status = train(&cfg, &out).status().unwrap();
        assert!(status.success(), "resume {i} failed");
        let got = snapshot(&out);
        assert_eq!(got.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>(), "resume {i}: other files");
        for (k, v) in &want {
            assert!(got[k] == *v, "resume {i}: {} differs from the uninterrupted run", k.display());
        }
    }

    // A run directory written with other training settings is refused, naming the section, not
    // silently mixed.
    let other = root.join("other.yaml");
    std::fs::write(&other, CONFIG.replace("d_model: 32", "d_model: 16")).unwrap();
    let o = train(&other, &clean).output().unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("other training settings (model differ)"), "{}", String::from_utf8_lossy(&o.stderr));

    // An edit of the sections training does not read (here `llc:`) leaves the run finished: the
    // Makefile does not retrain for it, and neither does `train` by hand.
    let edited = root.join("edited.yaml");
    std::fs::write(&edited, format!("{CONFIG}llc: {{chains: 3}}\n")).unwrap();
    let o = train(&edited, &clean).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("nothing to do"), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(snapshot(&clean) == want, "the finished run changed");
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn runs_trained_together_match_runs_trained_alone() {
    let root = std::env::temp_dir().join(format!("many-test-{}", std::process::id()));
    std::fs::create_dir_all(&root).unwrap();
    let cfg = root.join("grid.yaml");
    std::fs::write(&cfg, "name: many\ndata: {p: 11}\nmodel: {d_model: 16}\ntrain: {steps: 60, checkpoints: {log_points: 3, segments: [{every: 30}]}}\ngrid: {model.alpha: [0, 1], train.seed: [0, 1], train.weight_decay: [1, 2]}\n").unwrap();
    let together = root.join("together");
    let st = Command::new(env!("CARGO_BIN_EXE_train"))
        .args(["--run", "all", "--threads", "2", "--config"]).arg(&cfg).arg("--out").arg(&together)
        .status().unwrap();
    assert!(st.success());
    let mut ids: Vec<String> = std::fs::read_dir(&together).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    ids.sort();
    assert_eq!(ids.len(), 8, "one directory per run of the 2 × 2 × 2 grid: {ids:?}");
    for id in &ids {
        let alone = root.join(id);
        let st = Command::new(env!("CARGO_BIN_EXE_train"))
            .args(["--run", id.as_str(), "--config"]).arg(&cfg).arg("--out").arg(&alone)
            .env("RAYON_NUM_THREADS", "1")
            .status().unwrap();
        assert!(st.success());
        assert_eq!(snapshot(&together.join(id)), snapshot(&alone), "{id} differs when trained with the others");
    }
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn a_diverging_run_stops_with_the_step_and_keeps_good_checkpoints() {
    let root = std::env::temp_dir().join(format!("nan-test-{}", std::process::id()));
    std::fs::create_dir_all(&root).unwrap();
    let cfg = root.join("c.yaml");
    // Decoupled decay with lr·wd ≫ 1 multiplies every weight by about −10⁴ per step: the loss
    // overflows to inf/NaN within a few steps.
    std::fs::write(&cfg, "data: {p: 11}\nmodel: {d_model: 16}\ntrain: {steps: 50, lr: 10, weight_decay: 1000, warmup_steps: 0, checkpoints: {log_points: 0, segments: [{every: 1}]}}\n").unwrap();
    let out = root.join("run");
    let o = train(&cfg, &out).output().unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("training loss became") && err.contains("at step"), "{err}");
    assert!(!out.join("metrics.parquet").exists());
    // Every checkpoint that was written is complete, finite and loadable.
    let ckpts = pizza_core::ckpt::list_run(&out).unwrap();
    assert!(!ckpts.is_empty());
    for (_, p) in ckpts {
        pizza_core::ckpt::load(&p).unwrap_or_else(|e| panic!("{e:#}"));
    }
    std::fs::remove_dir_all(&root).unwrap();
}
