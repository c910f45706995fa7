//! What a cluster does to a run (issue 15). SIGTERM (Slurm's time limit, preemption, `scancel`)
//! makes `train` keep a resume point at the step it stopped at, outside the checkpoint schedule,
//! and the rerun continues from there to the bytes of a run that was never interrupted. Two
//! `train` processes over one run directory at once train it once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

#[path = "../../../tests/support/common.rs"]
mod common;

use common::snapshot;

/// Checkpoints at steps 0, 5000 and 6000 only, so that a signal almost always arrives between two
/// of them and the run has to write a resume point; 6,000 steps (~2.5 s on a quiet 2-core
/// machine) so that neither signal can come after the run has finished (at 1,500 steps a quiet
/// machine once finished the resumed run within the second stop's 400 ms).
const CONFIG: &str = "name: signals\ndata: {p: 13}\nmodel: {d_model: 32}\ntrain:\n  steps: 6000\n  checkpoints: {log_points: 0, segments: [{every: 5000}]}\n";
const SCHEDULE: [u64; 3] = [0, 5000, 6000];

fn train(cfg: &Path, out: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_train"));
    c.arg("--config").arg(cfg).arg("--out").arg(out).env("RAYON_NUM_THREADS", "2");
    c.stdout(Stdio::null()).stderr(Stdio::piped());
    c
}

fn setup(name: &str) -> (PathBuf, PathBuf) {
    let root = std::env::temp_dir().join(format!("signals-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let cfg = root.join("c.yaml");
    std::fs::write(&cfg, CONFIG).unwrap();
    (root, cfg)
}

fn assert_same(got: &BTreeMap<PathBuf, Vec<u8>>, want: &BTreeMap<PathBuf, Vec<u8>>, what: &str) {
    assert_eq!(got.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>(), "{what}: other files");
    for (k, v) in want {
        assert!(got[k] == *v, "{what}: {} differs from the uninterrupted run", k.display());
    }
}

fn sigterm(child: &Child) {
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Starts `train`, waits until `ready` holds (or 60 s), sleeps `delay`, sends SIGTERM and returns
/// what the process said; checks that it stopped cleanly and kept what the issue asks for.
fn stop_with_sigterm(cfg: &Path, out: &Path, ready: impl Fn() -> bool, delay: Duration) -> u64 {
    let child = train(cfg, out).spawn().unwrap();
    let start = Instant::now();
    while !ready() && start.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(2));
    }
    std::thread::sleep(delay);
    sigterm(&child);
    let o = child.wait_with_output().unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "train should exit 1 after a clean stop:\n{err}");
    let at = err.find("stopped at step ").unwrap_or_else(|| panic!("no 'stopped at step' in:\n{err}"));
    let step: u64 = err[at + 16..].split_whitespace().next().unwrap().parse().unwrap();
    assert!(err.contains("with its optimizer state and the metrics so far"), "{err}");
    assert!(!out.join("metrics.parquet").exists());
    // The checkpoints are exactly the schedule's, whatever the step the run stopped at.
    for (s, _) in pizza_core::ckpt::list_run(out).unwrap() {
        assert!(SCHEDULE.contains(&s), "checkpoint at step {s} is not on the schedule");
    }
    let resume = out.join("resume.safetensors");
    if SCHEDULE.contains(&step) {
        assert!(err.contains(&format!("step_{step:07}.safetensors")), "{err}");
    } else {
        assert!(err.contains("resume.safetensors"), "{err}");
        assert!(resume.is_file() && out.join("resume.optim.safetensors").is_file());
        let c = pizza_core::ckpt::load(&resume).unwrap();
        assert_eq!(c.step, Some(step));
    }
    step
}

#[test]
fn sigterm_keeps_a_resume_point_and_the_rerun_is_byte_identical() {
    let (root, cfg) = setup("term");
    let clean = root.join("clean");
    assert!(train(&cfg, &clean).status().unwrap().success());
    let want = snapshot(&clean);

    // Stopped twice (the second time after resuming from the first resume point), then finished.
    let out = root.join("stopped");
    let first_ckpt = out.join("checkpoints").join("step_0000000.safetensors");
    let s1 = stop_with_sigterm(&cfg, &out, || first_ckpt.exists(), Duration::from_millis(200));
    let s2 = stop_with_sigterm(&cfg, &out, || true, Duration::from_millis(400));
    assert!(s2 >= s1, "the second stop ({s2}) is before the first ({s1})");
    let o = train(&cfg, &out).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    if !SCHEDULE.contains(&s2) {
        assert!(stderr(&o).contains("resume.safetensors"), "the rerun did not continue from the resume point:\n{}", stderr(&o));
    }
    assert_same(&snapshot(&out), &want, &format!("stopped at steps {s1} and {s2}, then resumed"));
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn two_trains_over_one_run_directory_train_it_once() {
    let (root, cfg) = setup("lock");
    let clean = root.join("clean");
    assert!(train(&cfg, &clean).status().unwrap().success());
    let want = snapshot(&clean);

    let out = root.join("both");
    let a = train(&cfg, &out).spawn().unwrap();
    let b = train(&cfg, &out).spawn().unwrap();
    let (pa, pb) = (a.id(), b.id());
    let (oa, ob) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    let (ea, eb) = (stderr(&oa), stderr(&ob));
    assert!(oa.status.success() && ob.status.success(), "a:\n{ea}\nb:\n{eb}");
    let waited: Vec<(&str, u32)> = [(ea.as_str(), pb), (eb.as_str(), pa)].into_iter().filter(|(e, _)| e.contains("is locked by")).collect();
    assert_eq!(waited.len(), 1, "exactly one process should have waited for the other:\na:\n{ea}\nb:\n{eb}");
    let (err, holder) = waited[0];
    // The holder is named when the waiter first meets the lock or, if the holder had not yet
    // written its name then, when the waiter gets the lock.
    let named = err.contains(&format!("is locked by pid {holder} on ")) || err.contains(&format!("it was held by pid {holder} on "));
    assert!(named && err.contains("since"), "the waiter does not name the holder:\n{err}");
    assert!(err.contains("already holds the finished run; nothing to do"), "the waiter trained again:\n{err}");
    assert!(!err.contains("resuming from"), "the waiter resumed from the holder's checkpoints:\n{err}");
    assert_same(&snapshot(&out), &want, "two trains at once");
    std::fs::remove_dir_all(&root).unwrap();
}
