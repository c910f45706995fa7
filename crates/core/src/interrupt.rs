/*!
Stop requests: Ctrl-C (SIGINT), and SIGTERM and SIGHUP, which a scheduler sends at a job's time
limit, on preemption or on `scancel` (Slurm sends SIGTERM, then SIGKILL after `KillWait`, 30 s by
default).

A stage that can stop cleanly (`train`, `llc estimate`, `llc calibrate`) calls
[`stop_at_safe_points`]. Then the first signal sets a flag that its loops poll at safe points
(between training steps, between checkpoints of an analysis): it writes what it has, and exits
non-zero saying what it kept. Two things bound how long that takes, so that a stage always stops
well inside `KillWait`:
- a watchdog: if no safe point is reached within [`grace`] of the signal (15 s; the environment
  variable `PIZZA_STOP_GRACE_S` changes it), the process exits at once. That loses only the unit
  of work in progress (one LLC checkpoint, one training step): every output is written
  atomically, so what was kept before is complete;
- a second signal exits at once.

A process that declared no safe points exits at once on the first signal (as without a handler,
but with a message): nothing in it would poll the flag.
*/

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

static REQUESTED: AtomicBool = AtomicBool::new(false);
static SAFE_POINTS: AtomicBool = AtomicBool::new(false);

/// Exit status of a process stopped by a signal before it reached a safe point (128 + SIGINT,
/// what a shell reports for Ctrl-C).
pub const EXIT_NOW: i32 = 130;

/// How long a stage may take from the first signal to its safe point: `PIZZA_STOP_GRACE_S`
/// seconds, else 15 (half of Slurm's default `KillWait`).
pub fn grace() -> Duration {
    let secs = std::env::var("PIZZA_STOP_GRACE_S").ok().and_then(|s| s.trim().parse::<f64>().ok());
    Duration::from_secs_f64(secs.filter(|s| s.is_finite() && *s >= 0.0).unwrap_or(15.0))
}

/// Installs the handler for SIGINT, SIGTERM and SIGHUP (idempotent; binaries call it through
/// `cli::init_logging`).
pub fn install() {
    let _ = ctrlc::set_handler(|| {
        if REQUESTED.swap(true, Ordering::SeqCst) {
            eprintln!("stop requested again: exiting now");
            std::process::exit(EXIT_NOW);
        }
        if !SAFE_POINTS.load(Ordering::SeqCst) {
            eprintln!("stop requested (Ctrl-C or SIGTERM): exiting now; no output is left half-written");
            std::process::exit(EXIT_NOW);
        }
        let grace = grace();
        eprintln!(
            "stop requested (Ctrl-C or SIGTERM): finishing the current step, then keeping what is done (within {} s; a second signal exits now)",
            grace.as_secs_f64()
        );
        std::thread::spawn(move || {
            std::thread::sleep(grace);
            eprintln!(
                "no safe point reached within {} s of the stop request: exiting now; what was written before is complete (outputs are written atomically) and a rerun resumes from it",
                grace.as_secs_f64()
            );
            std::process::exit(EXIT_NOW);
        });
    });
}

/// Declares that this process polls [`requested`] and stops cleanly at its next safe point.
pub fn stop_at_safe_points() {
    SAFE_POINTS.store(true, Ordering::SeqCst);
}

/// Whether a stop was requested.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}
