/*!
Atomic file writes. Every output of every stage goes through [`write_atomic`], so that `make`
never mistakes a half-written file for a finished one: the bytes go to a temporary name in the same
folder, are fsync'ed, and only then renamed over the final name.
*/

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// The temporary name used while `path` is being written: hidden, same folder (so the rename is
/// atomic), and unique per process so that two writers never share one.
pub fn temp_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// Writes `path` atomically: `fill` writes the content, then the file is synced and renamed.
/// On any error the temporary file is removed and `path` is left as it was.
pub fn write_atomic<F>(path: &Path, fill: F) -> Result<()>
where
    F: FnOnce(&mut BufWriter<&mut File>) -> Result<()>,
{
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating folder {}", dir.display()))?;
    }
    let tmp = temp_path(path);
    let result = (|| -> Result<()> {
        let mut file = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        {
            let mut w = BufWriter::new(&mut file);
            fill(&mut w)?;
            w.flush().with_context(|| format!("writing {}", tmp.display()))?;
        }
        file.sync_all().with_context(|| format!("syncing {}", tmp.display()))?;
        std::fs::rename(&tmp, path)
            .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            // Make the rename itself durable; failure here is not worth failing the stage for.
            let _ = File::open(dir).and_then(|d| d.sync_all());
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Removes temporary files that a killed writer left in `dir` (names from [`temp_path`] whose
/// process is gone), so that a rerun leaves the folder as an uninterrupted run would.
pub fn remove_stale_temps(dir: &Path) -> Result<usize> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Ok(0) };
    let mut removed = 0;
    for e in entries {
        let path = e?.path();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let Some(pid) = name.strip_prefix('.').and_then(|n| n.rsplit_once(".tmp-")).map(|(_, pid)| pid.to_string()) else { continue };
        let alive = pid.parse::<u32>().is_ok_and(|pid| pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists());
        if !alive {
            std::fs::remove_file(&path).with_context(|| format!("removing stale {}", path.display()))?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Writes bytes atomically (see [`write_atomic`]).
pub fn write_bytes_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic(path, |w| {
        w.write_all(bytes).with_context(|| format!("writing {}", path.display()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_write_leaves_nothing() {
        let dir = std::env::temp_dir().join(format!("fsio-test-{}", std::process::id()));
        let path = dir.join("out.bin");
        let err = write_atomic(&path, |w| {
            w.write_all(b"partial")?;
            anyhow::bail!("simulated failure")
        });
        assert!(err.is_err());
        assert!(!path.exists());
        assert!(!temp_path(&path).exists());
        write_bytes_atomic(&path, b"whole").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"whole");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
