//! The yardsticks in `../shared/bench`, run side by side with our own rows in one `make bench`:
//! `torch_reference.py` (the textbook PyTorch training step) and `devinterp_reference.py`
//! (devinterp 1.3.2's SGLD on the same model). They run under a Python the user provides (a
//! throwaway virtualenv with torch, numpy and devinterp); nothing here depends on them.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};
use serde_json::Value;

use super::{process, Row};

/// Where the yardsticks are and what runs them.
#[derive(Debug, Clone)]
pub struct Yardsticks<'a> {
    /// A Python with torch (and devinterp 1.3.2 for the SGLD yardstick).
    pub python: &'a Path,
    /// The folder holding `torch_reference.py` and `devinterp_reference.py`.
    pub dir: &'a Path,
    /// Threads each yardstick may use (`torch.set_num_threads`).
    pub threads: usize,
}

impl Yardsticks<'_> {
    fn command(&self, script: &str) -> Result<Command> {
        let path = self.dir.join(script);
        anyhow::ensure!(path.is_file(), "{}: not found (--reference-dir names the folder of the yardsticks)", path.display());
        let mut cmd = Command::new(self.python);
        // The scripts import each other by module name.
        cmd.current_dir(self.dir).arg(script).arg("--threads").arg(self.threads.to_string());
        Ok(cmd)
    }

    /// One full-batch training step of `torch_reference.py` at modulus `p` (train fraction 0.8,
    /// d_model 128), as a row named like ours (`train_step_full_batch`) with implementation
    /// `pytorch`. Its peak RSS is the whole Python process's.
    pub fn torch_train_step(&self, p: u64, steps: usize) -> Result<Row> {
        let mut cmd = self.command("torch_reference.py")?;
        cmd.args(["--p", &p.to_string(), "--steps", &steps.to_string()]);
        let what = format!("torch_reference.py at p = {p}");
        let m = process::run(cmd, &what)?;
        let v = last_json(&m.stdout).with_context(|| what.clone())?;
        Ok(Row {
            name: "train_step_full_batch".into(),
            implementation: "pytorch".into(),
            p,
            rows: field(&v, "train_rows", &what)? as usize,
            threads: field(&v, "threads", &what)? as usize,
            ms_per_step: field(&v, "median_ms", &what)?,
            ms_min: field(&v, "min_ms", &what)?,
            peak_rss_mb: m.peak_rss_mb,
            ..Row::default()
        })
    }

    /// devinterp's SGLD throughput at modulus `p` over `chains` chains of `draws` draws, minibatch
    /// `batch` (`None`: the whole training split, `rows`), as a row named like ours
    /// (`sgld_step_b512`, `sgld_step_full_batch`) with implementation `devinterp`.
    /// `ms_per_step` is the script's wall time over chains·draws, as for our rows.
    pub fn devinterp_sgld(&self, p: u64, batch: Option<usize>, rows: usize, chains: usize, draws: usize) -> Result<Row> {
        let b = batch.unwrap_or(rows).min(rows);
        let mut cmd = self.command("devinterp_reference.py")?;
        cmd.args(["--p", &p.to_string(), "--batch", &b.to_string(), "--chains", &chains.to_string(), "--draws", &draws.to_string()]);
        let what = format!("devinterp_reference.py at p = {p}, batch {b}");
        let m = process::run(cmd, &what)?;
        let v = last_json(&m.stdout).with_context(|| what.clone())?;
        let ms = 1e3 / field(&v, "sgld_steps_per_s", &what)?;
        Ok(Row {
            name: super::sgld_row_name(b, rows),
            implementation: "devinterp".into(),
            p,
            rows: b,
            threads: field(&v, "threads", &what)? as usize,
            ms_per_step: ms,
            ms_min: ms,
            peak_rss_mb: m.peak_rss_mb,
            ..Row::default()
        })
    }
}

/// The PyTorch training step at each modulus, and (with `sgld` = (batch, chains, draws))
/// devinterp's SGLD at the moduli and training rows of our full-batch training rows in `ours`:
/// minibatches of `batch` rows with `draws` draws, full batch with a fifth of them (at least 10).
/// A yardstick that fails (say, devinterp is not installed) is reported and skipped, so that our
/// own rows are still written.
pub fn yardstick_rows(y: &Yardsticks, moduli: &[u64], steps: usize, sgld: Option<(usize, usize, usize)>, ours: &[Row]) -> Vec<Row> {
    let mut rows = Vec::new();
    let mut keep = |row: Result<Row>| match row {
        Ok(row) => rows.push(row),
        Err(e) => tracing::warn!("yardstick skipped: {e:#}"),
    };
    for &p in moduli {
        keep(y.torch_train_step(p, steps));
    }
    if let Some((sgld_batch, chains, draws)) = sgld {
        for r in ours.iter().filter(|r| r.name == "train_step_full_batch") {
            keep(y.devinterp_sgld(r.p, Some(sgld_batch), r.rows, chains, draws));
            keep(y.devinterp_sgld(r.p, None, r.rows, chains, (draws / 5).max(10)));
        }
    }
    rows
}

/// The last line of `stdout` that parses as a JSON object (the scripts print one per setting;
/// Python warnings go to standard error).
fn last_json(stdout: &str) -> Result<Value> {
    stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str::<Value>(l.trim()).ok().filter(Value::is_object))
        .with_context(|| format!("no JSON line in its output:\n{stdout}"))
}

fn field(v: &Value, key: &str, what: &str) -> Result<f64> {
    v.get(key).and_then(Value::as_f64).with_context(|| format!("{what}: its JSON has no number `{key}`: {v}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_last_json_line_and_names_missing_fields() {
        let out = "warming up\n{\"p\": 59, \"median_ms\": 270.5}\n{\"p\": 113, \"median_ms\": 993.25, \"threads\": 2}\n";
        let v = last_json(out).unwrap();
        assert_eq!(field(&v, "median_ms", "t").unwrap(), 993.25);
        assert_eq!(field(&v, "threads", "t").unwrap(), 2.0);
        let err = field(&v, "min_ms", "torch_reference.py").unwrap_err().to_string();
        assert!(err.contains("torch_reference.py") && err.contains("min_ms"), "{err}");
        assert!(last_json("Traceback (most recent call last):\n").is_err());
    }
}
