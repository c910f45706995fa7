/*!
Ctrl-C. The first SIGINT sets a flag that long loops poll at safe points (between training steps,
between checkpoints of an analysis), so that a stage stops with its finished outputs intact and
says what it kept; a second SIGINT exits at once (atomic writes still leave nothing half-written).
*/

use std::sync::atomic::{AtomicBool, Ordering};

static REQUESTED: AtomicBool = AtomicBool::new(false);

/// Installs the handler (idempotent; binaries call it through `cli::init_logging`).
pub fn install() {
    let _ = ctrlc::set_handler(|| {
        if REQUESTED.swap(true, Ordering::SeqCst) {
            eprintln!("interrupted again: exiting now");
            std::process::exit(130);
        }
        eprintln!("interrupt: finishing the current step, then stopping (Ctrl-C again to exit now)");
    });
}

/// Whether Ctrl-C was pressed.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}
