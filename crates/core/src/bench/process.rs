//! Child processes whose wall time and peak memory the benchmark records.
//!
//! Every measurement runs in a fresh process (the bench binary re-executes itself, or the
//! PyTorch and devinterp yardsticks run under their Python), so that each row's peak resident
//! memory is that of the measurement alone and not the high-water mark of everything measured
//! before it in the same process.

use std::process::{Child, Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};

/// What one finished child left behind.
#[derive(Debug)]
pub struct Measured {
    /// Its standard output (progress and logs go to standard error, which is passed through).
    pub stdout: String,
    /// Peak resident set size in MB, from the kernel's accounting of the child (`wait4`). It is
    /// at least the parent's RSS at the spawn (until `exec` the child shares the parent's
    /// memory); the bench parent holds ~15 MB, well below any measurement.
    pub peak_rss_mb: f64,
    /// Seconds from spawn to exit.
    pub seconds: f64,
}

/// A spawned child and when it started.
pub struct Running {
    child: Child,
    what: String,
    started: Instant,
}

/// Starts `cmd` with its standard output captured; `what` names it in errors.
pub fn spawn(mut cmd: Command, what: &str) -> Result<Running> {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {what} ({cmd:?})"))?;
    Ok(Running { child, what: what.to_string(), started: Instant::now() })
}

impl Running {
    /// Waits for the child; fails, naming it, if it did not exit with status 0.
    pub fn wait(mut self) -> Result<Measured> {
        use std::io::Read;
        let mut stdout = String::new();
        if let Some(mut out) = self.child.stdout.take() {
            out.read_to_string(&mut stdout).with_context(|| format!("reading the output of {}", self.what))?;
        }
        let pid = self.child.id() as libc::pid_t;
        let mut status: libc::c_int = 0;
        // SAFETY: `rusage` is plain data the kernel fills; `pid` is our own unreaped child, and
        // once `wait4` reaps it `Child` is forgotten below so std never waits on it again.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        let rc = loop {
            let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
            if rc == -1 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            break rc;
        };
        let seconds = self.started.elapsed().as_secs_f64();
        std::mem::forget(self.child);
        if rc != pid {
            bail!("waiting for {}: {}", self.what, std::io::Error::last_os_error());
        }
        if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
            bail!("{} failed (wait status {status}); its messages are above", self.what);
        }
        // Linux reports ru_maxrss in KiB.
        Ok(Measured { stdout, peak_rss_mb: usage.ru_maxrss as f64 * 1024.0 / 1e6, seconds })
    }
}

/// Runs `cmd` to completion.
pub fn run(cmd: Command, what: &str) -> Result<Measured> {
    spawn(cmd, what)?.wait()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel's peak-RSS figure for a child that holds a known amount of memory (`dd` with a
    /// 256 MiB block, on every Linux). The figure for a child is at least the parent's RSS when
    /// it was spawned (the child shares the parent's memory until `exec`), and this test process
    /// can be tens of MB, so the block is made far larger than that and compared with `true`.
    #[test]
    fn peak_rss_sees_the_childs_memory() {
        let mut cmd = Command::new("dd");
        cmd.args(["if=/dev/zero", "of=/dev/null", "bs=256M", "count=1", "status=none"]);
        let big = run(cmd, "dd").unwrap().peak_rss_mb;
        let small = run(Command::new("true"), "true").unwrap().peak_rss_mb;
        assert!(big > 268.0 && big < 400.0, "peak RSS {big} MB for a 256 MiB (268.4 MB) buffer");
        assert!(big - small > 150.0, "peak RSS {small} MB for `true` against {big} MB for the buffer");
    }

    #[test]
    fn a_failing_child_is_an_error_naming_it() {
        let err = run(Command::new("false"), "the yardstick").unwrap_err();
        assert!(format!("{err:#}").contains("the yardstick failed"), "{err:#}");
        let mut echo = Command::new("echo");
        echo.arg("row");
        assert_eq!(run(echo, "echo").unwrap().stdout, "row\n");
    }
}
