//! The bench binary's child-process protocol. The parent runs each [`Measurement`] in a fresh
//! process of the bench binary, `bench --child SPEC` plus the [`ChildSettings`] as flags (the
//! `Display` of a measurement is its SPEC, and `FromStr` reads it back), and reads the child's
//! [`Row`] from the last line of its standard output, one JSON object ([`answer`]); the parent
//! adds the child's peak memory. The flag names here are the bench binary's own.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;

use anyhow::{bail, Context, Result};

use super::{llc_checkpoint, process, sgld_step, train_step, Row};

/// One measurement of `make bench`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measurement {
    /// Full-batch training steps on the fast path (`train:P`).
    Train { p: u64 },
    /// Full-batch training steps through candle's autograd (`autograd:P`).
    Autograd { p: u64 },
    /// SGLD steps, minibatches of `batch` rows or full batch (`sgld:P:B`, `sgld:P:full`).
    Sgld { p: u64, batch: Option<usize> },
    /// One checkpoint's whole `llc estimate` with the experiment's settings (`llc:P`).
    Llc { p: u64 },
}

impl fmt::Display for Measurement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Measurement::Train { p } => write!(f, "train:{p}"),
            Measurement::Autograd { p } => write!(f, "autograd:{p}"),
            Measurement::Sgld { p, batch: Some(b) } => write!(f, "sgld:{p}:{b}"),
            Measurement::Sgld { p, batch: None } => write!(f, "sgld:{p}:full"),
            Measurement::Llc { p } => write!(f, "llc:{p}"),
        }
    }
}

impl FromStr for Measurement {
    type Err = anyhow::Error;

    fn from_str(spec: &str) -> Result<Measurement> {
        let parts: Vec<&str> = spec.split(':').collect();
        let p = |s: &str| s.parse::<u64>().with_context(|| format!("measurement `{spec}`: bad modulus"));
        Ok(match parts.as_slice() {
            ["train", m] => Measurement::Train { p: p(m)? },
            ["autograd", m] => Measurement::Autograd { p: p(m)? },
            ["sgld", m, "full"] => Measurement::Sgld { p: p(m)?, batch: None },
            ["sgld", m, b] => Measurement::Sgld { p: p(m)?, batch: Some(b.parse().with_context(|| format!("measurement `{spec}`: bad batch"))?) },
            ["llc", m] => Measurement::Llc { p: p(m)? },
            _ => bail!("measurement `{spec}`: unknown (train:P, autograd:P, sgld:P:B, sgld:P:full or llc:P)"),
        })
    }
}

/// The parent's settings a child measures with (its command line besides `--child`).
#[derive(Debug, Clone)]
pub struct ChildSettings {
    /// Threads.
    pub threads: usize,
    /// Timed training steps (autograd: at most 5).
    pub steps: usize,
    /// SGLD chains in total.
    pub sgld_chains: usize,
    /// SGLD steps per chain per repetition.
    pub sgld_steps: usize,
    /// SGLD repetitions.
    pub sgld_reps: usize,
    /// The experiment file whose `llc:` settings `llc:P` uses.
    pub llc_config: Option<PathBuf>,
}

impl Measurement {
    /// The child's side: the measurement, in this process.
    pub fn measure(&self, s: &ChildSettings) -> Result<Row> {
        match *self {
            Measurement::Train { p } => train_step(p, s.threads, s.steps, false),
            Measurement::Autograd { p } => train_step(p, s.threads, s.steps.min(5), true),
            Measurement::Sgld { p, batch } => sgld_step(p, batch, s.sgld_chains, s.threads, s.sgld_steps, s.sgld_reps),
            Measurement::Llc { p } => {
                let path = s.llc_config.as_ref().context("the llc measurement needs --llc-config")?;
                let cfg = crate::config::load(path, &[])?;
                llc_checkpoint(p, &crate::llc::SgldConfig { threads: s.threads, ..cfg.llc }, 1)
            }
        }
    }

    /// The parent's side: runs the measurement in a child process of the bench binary `exe` and
    /// records the child's peak memory in its row.
    pub fn in_child(&self, exe: &Path, s: &ChildSettings) -> Result<Row> {
        let mut cmd = Command::new(exe);
        cmd.arg("--child").arg(self.to_string());
        cmd.args(["--threads", &s.threads.to_string(), "--steps", &s.steps.to_string()]);
        cmd.args(["--sgld-chains", &s.sgld_chains.to_string(), "--sgld-steps", &s.sgld_steps.to_string()]);
        cmd.args(["--sgld-reps", &s.sgld_reps.to_string()]);
        if let Some(path) = &s.llc_config {
            cmd.arg("--llc-config").arg(path);
        }
        let what = format!("bench --child {self}");
        let m = process::run(cmd, &what)?;
        let line = m.stdout.lines().last().unwrap_or_default();
        let row: Row = serde_json::from_str(line).with_context(|| format!("{what} printed {:?}", m.stdout))?;
        Ok(Row { peak_rss_mb: m.peak_rss_mb, ..row })
    }
}

/// The child's answer: its row as one JSON line.
pub fn answer(row: &Row) -> Result<String> {
    Ok(serde_json::to_string(row)?)
}

/// The measurements of a `make bench` run, in table order: training at each modulus (and
/// autograd), then SGLD with minibatches of `sgld_batch` rows and full batch, then one
/// checkpoint's estimate.
pub fn plan(moduli: &[u64], autograd: bool, sgld_batch: Option<usize>, llc: bool) -> Vec<Measurement> {
    let mut out = Vec::new();
    for &p in moduli {
        out.push(Measurement::Train { p });
        if autograd {
            out.push(Measurement::Autograd { p });
        }
    }
    if let Some(b) = sgld_batch {
        for &p in moduli {
            out.push(Measurement::Sgld { p, batch: Some(b) });
            out.push(Measurement::Sgld { p, batch: None });
        }
    }
    if llc {
        out.extend(moduli.iter().map(|&p| Measurement::Llc { p }));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_round_trip_and_bad_ones_are_named() {
        let all = plan(&[59, 113], true, Some(512), true);
        let specs: Vec<String> = all.iter().map(Measurement::to_string).collect();
        assert_eq!(
            specs,
            ["train:59", "autograd:59", "train:113", "autograd:113", "sgld:59:512", "sgld:59:full", "sgld:113:512", "sgld:113:full", "llc:59", "llc:113"]
        );
        for m in all {
            assert_eq!(m.to_string().parse::<Measurement>().unwrap(), m);
        }
        for bad in ["train:x", "sgld:59:many", "walk:59", "train"] {
            let e = format!("{:#}", bad.parse::<Measurement>().unwrap_err());
            assert!(e.contains(bad), "{e}");
        }
    }
}
