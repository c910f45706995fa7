//! `llc estimate` under the signals a cluster sends (issue 15): SIGTERM keeps the finished
//! checkpoints' rows and the rerun gives the bytes of an uninterrupted run; a checkpoint that
//! cannot finish within the grace period, or a second signal, ends the process at once, leaving
//! nothing half-written.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use pizza_core::data::Dataset;
use pizza_core::run::RunDir;
use pizza_core::train;

/// A tiny run (p = 11, d_model = 16, checkpoints at 0, 10, 20, 30) and an experiment file whose
/// `llc:` section takes `draws` draws per chain.
fn setup(name: &str, draws: usize) -> (PathBuf, PathBuf, PathBuf) {
    let root = std::env::temp_dir().join(format!("llc-signals-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let yaml = format!(
        "data: {{p: 11, train_frac: 0.8}}\nmodel: {{d_model: 16, n_heads: 4}}\ntrain: {{steps: 30, checkpoints: {{log_points: 0, segments: [{{every: 10}}]}}}}\nllc: {{epsilon: 1.0e-3, gamma: 100, batch_size: 32, chains: 2, draws: {draws}, burn_in: 4, mala_every: 3}}\n"
    );
    let cfg_path = root.join("c.yaml");
    std::fs::write(&cfg_path, &yaml).unwrap();
    let cfg = pizza_core::config::load_str(&yaml, &[]).unwrap();
    let run = root.join("run");
    train::run(&cfg, "run", &Dataset::generate(&cfg.data), &RunDir::new(&run)).unwrap();
    (root, cfg_path, run)
}

fn llc(cfg: &Path, run: &Path, out: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_llc"));
    c.arg("estimate").arg("--config").arg(cfg).arg("--out").arg(out).arg(run);
    c.env("RAYON_NUM_THREADS", "1").stdout(Stdio::null()).stderr(Stdio::piped());
    c
}

fn sigterm(child: &Child) {
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn wait_for(what: impl Fn() -> bool) {
    let start = Instant::now();
    while !what() && start.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Files the stage left in `dir` (outputs, partial tables, temporaries, locks).
fn left_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir).map_or(Vec::new(), |r| r.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect());
    v.sort();
    v
}

#[test]
fn sigterm_keeps_the_finished_checkpoints_and_the_rerun_is_byte_identical() {
    let (root, cfg, run) = setup("term", 300);
    let whole = root.join("whole/llc.parquet");
    let o = llc(&cfg, &run, &whole).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));

    let part = root.join("part/llc.parquet");
    let partial = root.join("part/llc.partial.parquet");
    let child = llc(&cfg, &run, &part).spawn().unwrap();
    wait_for(|| partial.exists());
    sigterm(&child);
    let o = child.wait_with_output().unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("estimates; they are kept, and running the same command again resumes"), "{err}");
    assert_eq!(left_in(&root.join("part")), ["llc.partial.parquet", "llc_trace.partial.parquet"], "{err}");

    let o = llc(&cfg, &run, &part).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("finished estimate(s) of an interrupted run"), "{}", stderr(&o));
    for name in ["llc.parquet", "llc_trace.parquet"] {
        assert!(std::fs::read(root.join("whole").join(name)).unwrap() == std::fs::read(root.join("part").join(name)).unwrap(), "{name} differs from the uninterrupted run");
    }
    assert_eq!(left_in(&root.join("part")), ["llc.parquet", "llc_trace.parquet"]);
    std::fs::remove_dir_all(&root).unwrap();
}

/// One checkpoint of 40,000 draws per chain takes far longer than the grace period: the stage
/// exits when the grace period ends, not when the checkpoint would have finished.
#[test]
fn a_checkpoint_longer_than_the_grace_period_is_abandoned_in_time() {
    let (root, cfg, run) = setup("grace", 40_000);
    let out = root.join("out/llc.parquet");
    let child = llc(&cfg, &run, &out).env("PIZZA_STOP_GRACE_S", "1").spawn().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let signalled = Instant::now();
    sigterm(&child);
    let o = child.wait_with_output().unwrap();
    let took = signalled.elapsed();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(130), "{err}");
    assert!(err.contains("no safe point reached within 1 s of the stop request"), "{err}");
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(8), "exited {took:?} after SIGTERM with a 1 s grace period");
    assert!(left_in(&root.join("out")).iter().all(|f| f == ".llc.parquet.lock"), "left: {:?}", left_in(&root.join("out")));
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn a_second_signal_exits_at_once() {
    let (root, cfg, run) = setup("twice", 40_000);
    let out = root.join("out/llc.parquet");
    let child = llc(&cfg, &run, &out).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let signalled = Instant::now();
    sigterm(&child);
    std::thread::sleep(Duration::from_millis(300));
    sigterm(&child);
    let o = child.wait_with_output().unwrap();
    let took = signalled.elapsed();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(130), "{err}");
    assert!(err.contains("stop requested again: exiting now"), "{err}");
    // Well before the default 15 s grace period, and before the checkpoint could finish.
    assert!(took < Duration::from_secs(8), "exited {took:?} after the first signal");
    std::fs::remove_dir_all(&root).unwrap();
}
