//! Two `make train`s over one experiment at once (a resubmitted job, a second terminal; issue 15):
//! every run is trained once. The second process to reach a run waits for the first's lock on the
//! run directory, then finds the run finished and does nothing; both `make`s succeed, and the run
//! directories hold the bytes of a single `make`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

#[path = "../../../tests/support/common.rs"]
mod common;

use common::snapshot;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// `make -j2 train` on the tiny pipeline with 1,500 steps (a few seconds per run, so that the two
/// `make`s overlap), not yet waited for.
fn make_train(data: &Path) -> std::process::Child {
    Command::new("make")
        .current_dir(repo())
        .args(["-j2", "train", "PIPELINE=pipelines/tiny.yaml", "STEPS=1500", "RELEASED_DIR=", &format!("DATA={}", data.display())])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running make")
}

#[test]
fn two_makes_at_once_train_every_run_once() {
    let root = std::env::temp_dir().join(format!("two-makes-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let single = root.join("single");
    let o = make_train(&single).wait_with_output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let data = root.join("both");
    let (a, b) = (make_train(&data), make_train(&data));
    let (oa, ob) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    let log = |o: &std::process::Output| format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    let (la, lb) = (log(&oa), log(&ob));
    assert!(oa.status.success() && ob.status.success(), "first make:\n{la}\nsecond make:\n{lb}");
    let both = format!("{la}\n{lb}");
    for run in ["alpha0", "alpha1"] {
        let dir = format!("runs/{run} ");
        let trained = both.lines().filter(|l| l.contains("finished") && l.contains(&dir) && l.contains("resumed_from=0")).count();
        assert_eq!(trained, 1, "{run} was trained {trained} times:\n{both}");
        assert!(!both.contains(&format!("resuming from {}", data.join("tiny-p11/runs").join(run).display())), "{run} was resumed from the other make's checkpoints:\n{both}");
    }
    // A waiter names the holder on meeting the lock, or (when the holder had not yet written its
    // name) on getting it.
    assert!(both.contains("is locked by pid") || both.contains("(it was held by pid"), "neither make waited for the other:\n{both}");
    assert_eq!(snapshot(&data.join("tiny-p11/runs")), snapshot(&single.join("tiny-p11/runs")), "two makes at once wrote other bytes than one");
    std::fs::remove_dir_all(&root).unwrap();
}
