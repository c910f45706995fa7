/*!
Advisory locks on what a stage writes, so that two `make`s over one experiment at once (a
resubmitted job, a second terminal) never train one run twice or interleave their files.

- `train` locks its run directory ([`run_dir`], the file `<run>/.lock`) from before it looks for
  a checkpoint to resume from until its last write; the analysis stages lock their output table
  ([`output`], `.<name>.lock` beside it), so that `scan`, `symmetry` and `llc` of one run still
  run side by side.
- The lock is `flock(2)` on that file: the kernel releases it when the process ends, however it
  ends (SIGKILL included), so a lock is never stale. The file's text (pid, host, Slurm job,
  command, since when) only names the holder in the message a waiting process prints; the holder
  removes the file when it is done, and a killed holder's leftover file is taken over by the next.
- **A second process waits** (it does not refuse): both scenarios want the outputs, and waiting
  makes the second `make` end the way a single one would. After the wait, `train` finds the run
  finished and does not retrain (`train::resume::finished`), and an analysis stage whose output
  the holder wrote meanwhile does nothing ([`output`] returns `None`); `make` then carries on.
  The waiting process says whom it waits for, and Ctrl-C or SIGTERM stops the wait.
- Across machines the lock works where the shared file system supports `flock` (NFSv4, where
  Linux emulates it with byte-range locks; GPFS; BeeGFS; Lustre only when mounted with `-o flock`).
  Where it does not, the stage warns and runs unlocked.
*/

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};

/// How often a waiting process tries the lock again (and checks for a stop request).
const POLL: Duration = Duration::from_millis(200);

/// A held lock; released (and its file removed) on drop.
#[derive(Debug)]
pub struct Lock {
    file: Option<File>,
    path: PathBuf,
    /// The holder this process waited for, if it had to wait.
    pub waited_for: Option<String>,
}

impl Drop for Lock {
    fn drop(&mut self) {
        // Remove the name while still holding the lock: a waiter that opened this file sees, once
        // it gets the lock, that the name is gone and starts over on a fresh file.
        if self.file.is_some() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The lock of a run directory that `train` writes (`<dir>/.lock`), waiting while another
/// process holds it.
pub fn run_dir(dir: &Path) -> Result<Lock> {
    acquire(&dir.join(".lock"))
}

/// The lock of a stage's output table (`.<name>.lock` beside it), waiting while another process
/// holds it. `None` when this process had to wait and the holder wrote `out` meanwhile: the
/// output this stage was asked for exists now, from the same inputs, and there is nothing to do.
pub fn output(out: &Path) -> Result<Option<Lock>> {
    let name = out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let before = modified(out);
    let lock = acquire(&out.with_file_name(format!(".{name}.lock")))?;
    if let Some(holder) = &lock.waited_for {
        let now = modified(out);
        if now.is_some() && now != before {
            tracing::info!("{} was written by the process this one waited for ({holder}); nothing to do", out.display());
            return Ok(None);
        }
    }
    Ok(Some(lock))
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Takes the lock on `path` (created if absent), waiting while another process holds it.
pub fn acquire(path: &Path) -> Result<Lock> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating folder {}", dir.display()))?;
    }
    let mut waited_for: Option<String> = None;
    let started = Instant::now();
    loop {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .with_context(|| format!("opening the lock file {}", path.display()))?;
        match try_flock(&file) {
            Ok(true) => {}
            Ok(false) => {
                let holder = read_holder(&mut file);
                if waited_for.is_none() {
                    tracing::warn!("{} is locked by {holder}; waiting for it to finish (Ctrl-C to give up)", path.display());
                }
                waited_for = Some(holder);
                if crate::interrupt::requested() {
                    bail!("stopped while waiting for the lock {} (held by {}); nothing written", path.display(), waited_for.unwrap_or_default());
                }
                std::thread::sleep(POLL);
                continue;
            }
            Err(e) => {
                tracing::warn!("cannot lock {} ({e}); running unlocked: two processes writing here at once would not be kept apart", path.display());
                return Ok(Lock { file: None, path: path.to_path_buf(), waited_for: None });
            }
        }
        // The holder we waited for removes the name before it unlocks; if that happened, this
        // lock is on a file nobody else will ever open: start over on the current name.
        let same = std::fs::metadata(path).ok().zip(file.metadata().ok()).is_some_and(|(a, b)| a.ino() == b.ino() && a.dev() == b.dev());
        if !same {
            continue;
        }
        file.set_len(0).and_then(|_| file.rewind()).and_then(|_| file.write_all(holder_text().as_bytes())).and_then(|_| file.flush())
            .with_context(|| format!("writing the lock file {}", path.display()))?;
        if let Some(holder) = &waited_for {
            tracing::info!("got the lock {} after {:.1} s (it was held by {holder})", path.display(), started.elapsed().as_secs_f64());
        }
        return Ok(Lock { file: Some(file), path: path.to_path_buf(), waited_for });
    }
}

/// `flock(LOCK_EX | LOCK_NB)`: `Ok(false)` when another open file holds it.
fn try_flock(file: &File) -> std::io::Result<bool> {
    // SAFETY: flock on a file descriptor this function borrows; no memory is involved.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(err)
    }
}

fn read_holder(file: &mut File) -> String {
    let mut text = String::new();
    let _ = file.rewind().and_then(|_| file.read_to_string(&mut text));
    match text.trim() {
        "" => "another process (it has not written its name yet)".to_string(),
        t => t.to_string(),
    }
}

/// Who holds a lock, in one line: pid, host, Slurm job, since when, command.
fn holder_text() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_else(|_| "unknown host".into());
    let job = std::env::var("SLURM_JOB_ID").map(|j| format!(", Slurm job {j}")).unwrap_or_default();
    let mut args = std::env::args();
    let prog = args.next().map(|a| Path::new(&a).file_name().map_or(a.clone(), |n| n.to_string_lossy().into_owned())).unwrap_or_default();
    let command: Vec<String> = std::iter::once(prog).chain(args).collect();
    format!("pid {} on {host}{job}, since {}: {}\n", std::process::id(), utc(SystemTime::now()), command.join(" "))
}

/// `YYYY-MM-DD HH:MM:SS UTC` (days to civil date: Howard Hinnant's algorithm).
pub fn utc(t: SystemTime) -> String {
    let secs = t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_matches_known_dates() {
        // `date -u -d @0`, `@951782400` (a leap day) and `@1796124878`.
        let at = |s: u64| utc(SystemTime::UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(at(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(at(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(at(1_796_124_878), "2026-12-01 11:34:38 UTC");
    }

    #[test]
    fn a_second_holder_waits_and_learns_who_held_the_lock() {
        let dir = std::env::temp_dir().join(format!("lock-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let first = run_dir(&dir).unwrap();
        assert!(first.waited_for.is_none());
        let text = std::fs::read_to_string(dir.join(".lock")).unwrap();
        assert!(text.starts_with(&format!("pid {} on ", std::process::id())), "{text}");
        // flock locks belong to open files, so a second open in this process conflicts too.
        let waiter = std::thread::spawn({
            let dir = dir.clone();
            move || run_dir(&dir).unwrap()
        });
        std::thread::sleep(Duration::from_millis(600));
        assert!(!waiter.is_finished(), "the second holder did not wait");
        drop(first);
        let second = waiter.join().unwrap();
        let held_by = second.waited_for.clone().expect("the second holder waited");
        assert!(held_by.contains(&format!("pid {}", std::process::id())) && held_by.contains("since"), "{held_by}");
        drop(second);
        assert!(!dir.join(".lock").exists(), "the lock file is removed on release");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_output_written_while_waiting_is_not_redone() {
        let dir = std::env::temp_dir().join(format!("lock-out-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("llc.parquet");
        let held = output(&out).unwrap().expect("nobody holds it");
        assert!(dir.join(".llc.parquet.lock").exists());
        let waiter = std::thread::spawn({
            let out = out.clone();
            move || output(&out).unwrap().is_none()
        });
        std::thread::sleep(Duration::from_millis(400));
        std::fs::write(&out, b"written by the holder").unwrap();
        drop(held);
        assert!(waiter.join().unwrap(), "the waiter should find the output written and do nothing");
        // Without waiting, an existing output is no reason to skip: make asked for it again.
        assert!(output(&out).unwrap().is_some());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
