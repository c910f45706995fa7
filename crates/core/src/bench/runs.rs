//! Runs per hour for a sweep: one `train` process training a batch of runs (`--run all`, one run
//! per thread) against one process per run, all at once or two at a time (what `make -j8` and
//! `make -j2` would do).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{ensure, Context, Result};

use super::{process, Row};

/// A sweep of `runs` runs (α ∈ {0, 1} × `runs / 2` seeds) of `steps` full-batch steps at
/// modulus `p`, trained by the `train` binary at `train_bin` under the folder `work`.
#[derive(Debug, Clone)]
pub struct Sweep {
    pub train_bin: PathBuf,
    pub work: PathBuf,
    pub p: u64,
    pub runs: usize,
    pub steps: usize,
    pub threads: usize,
}

/// How the sweep's runs are spread over processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `train --run all`: one process, one run per thread.
    OneProcess,
    /// One process per run, at most this many at a time.
    Processes(usize),
}

impl Layout {
    fn name(self, runs: usize) -> String {
        match self {
            Layout::OneProcess => format!("train_{runs}_runs_one_process"),
            Layout::Processes(k) if k >= runs => format!("train_{runs}_runs_{runs}_processes_at_once"),
            Layout::Processes(k) => format!("train_{runs}_runs_processes_{k}_at_a_time"),
        }
    }
}

impl Sweep {
    /// The sweep's experiment file, written under `work`, its run ids and its training rows.
    fn setup(&self) -> Result<(PathBuf, Vec<String>, usize)> {
        ensure!(self.runs >= 2 && self.runs % 2 == 0, "--runs must be even (α = 0 and α = 1 for each seed), got {}", self.runs);
        std::fs::create_dir_all(&self.work).with_context(|| format!("creating {}", self.work.display()))?;
        let seeds: Vec<String> = (0..self.runs / 2).map(|s| s.to_string()).collect();
        let yaml = format!(
            "name: bench-runs\ndata: {{p: {}}}\ntrain: {{steps: {}}}\ngrid:\n  model.alpha: [0.0, 1.0]\n  train.seed: [{}]\n",
            self.p,
            self.steps,
            seeds.join(", ")
        );
        let path = self.work.join("runs.yaml");
        std::fs::write(&path, yaml).with_context(|| format!("writing {}", path.display()))?;
        let cfg = crate::config::load(&path, &[])?;
        let rows = crate::data::Dataset::generate(&cfg.data).train.len();
        Ok((path, cfg.runs()?.into_iter().map(|r| r.id).collect(), rows))
    }

    fn command(&self, config: &Path, runs: &[&str], out: &Path, threads: Option<usize>) -> Command {
        let mut cmd = Command::new(&self.train_bin);
        cmd.arg("--config").arg(config).arg("--out").arg(out);
        for r in runs {
            cmd.args(["--run", r]);
        }
        if let Some(t) = threads {
            cmd.args(["--threads", &t.to_string()]);
        }
        // Progress bars of eight processes at once would only garble the terminal.
        cmd.env("RUST_LOG", "warn");
        cmd
    }

    /// Trains the whole sweep laid out as `layout`, from scratch, and times it.
    pub fn measure(&self, layout: Layout) -> Result<Row> {
        let (config, ids, rows) = self.setup()?;
        let out = self.work.join(format!("{layout:?}").replace(['(', ')'], ""));
        if out.exists() {
            std::fs::remove_dir_all(&out).with_context(|| format!("clearing {}", out.display()))?;
        }
        let started = std::time::Instant::now();
        let mut peak: f64 = 0.0;
        match layout {
            Layout::OneProcess => {
                let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
                let m = process::run(self.command(&config, &ids, &out, Some(self.threads)), "train --run <all runs>")?;
                peak = m.peak_rss_mb;
            }
            Layout::Processes(k) => {
                for chunk in ids.chunks(k.max(1)) {
                    let running = chunk
                        .iter()
                        .map(|id| process::spawn(self.command(&config, &[id.as_str()], &out.join(id), None), &format!("train --run {id}")))
                        .collect::<Result<Vec<_>>>()?;
                    for r in running {
                        peak = peak.max(r.wait()?.peak_rss_mb);
                    }
                }
            }
        }
        let ms = started.elapsed().as_secs_f64() * 1e3 / (self.runs * self.steps) as f64;
        Ok(Row {
            name: layout.name(self.runs),
            implementation: "pizza".into(),
            p: self.p,
            rows,
            threads: self.threads,
            ms_per_step: ms,
            ms_min: ms,
            peak_rss_mb: peak,
            ..Row::default()
        })
    }
}

/// Runs per hour of a sweep row (its `ms_per_step` is wall time per run-step).
pub fn runs_per_hour(row: &Row, steps: usize) -> f64 {
    3.6e6 / (row.ms_per_step * steps as f64)
}

/// The sweep trained in one process, in one process per run all at once and, when there are
/// fewer threads than runs, `threads` processes at a time; the work folder `work` is removed
/// afterwards.
pub fn sweep_rows(train_bin: PathBuf, work: PathBuf, p: u64, runs: usize, steps: usize, threads: usize) -> Result<Vec<Row>> {
    let sweep = Sweep { train_bin, work, p, runs, steps, threads };
    let mut rows = Vec::new();
    let mut layouts = vec![Layout::OneProcess, Layout::Processes(runs)];
    if threads < runs {
        layouts.push(Layout::Processes(threads));
    }
    for layout in layouts {
        let r = sweep.measure(layout)?;
        tracing::info!("{}: {:.0} runs of {steps} steps per hour", r.name, runs_per_hour(&r, steps));
        rows.push(r);
    }
    std::fs::remove_dir_all(&sweep.work).with_context(|| format!("removing {}", sweep.work.display()))?;
    Ok(rows)
}
