/*!
What every stage binary shares: the config flags (`--config`, repeatable `--set`, `--run`),
logging and progress bars, and turning a result into an exit code with the whole error chain
printed.

Logs and progress bars go to stderr. Both are for people at a terminal: written to a file or a
pipe (`make all > log 2>&1`, a Slurm log) the logs carry no colour codes and no progress bar is
drawn, so a log file is plain text. `NO_COLOR` (any non-empty value) turns colour off at a
terminal too.
*/

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

use crate::config::{self, Config, Run};

/// Flags that select an experiment config and one run of its grid.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Configuration")]
pub struct ConfigArgs {
    /// Experiment file (YAML, see pipelines/); defaults apply when absent.
    #[arg(long, value_name = "YAML")]
    pub config: Option<PathBuf>,
    /// Override one setting, e.g. `--set train.lr=3e-4` (repeatable; applied after the file).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
}

impl ConfigArgs {
    /// The resolved experiment config.
    pub fn load(&self) -> Result<Config> {
        match &self.config {
            Some(path) => config::load(path, &self.sets),
            None => config::load_str("", &self.sets),
        }
    }

    /// The resolved config of one run of the grid.
    pub fn load_run(&self, run: Option<&str>) -> Result<Run> {
        self.load()?.run(run)
    }
}

/// Keeps candle's own thread pool to one thread unless `CANDLE_NUM_THREADS` says otherwise: for
/// the binaries that sample (`llc`, `bench`). SGLD runs one chain per core, and candle's pool for
/// element-wise ops on large tensors (≥ 64k elements: the SGLD update of W_in and W_out) would
/// only fight the chains for the cores (it made the update 2–7× slower with two chains on two
/// cores). It must run before candle first uses the pool, so first thing in `main`; it changes no
/// number (element-wise results do not depend on it).
pub fn one_candle_thread() {
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
}

/// Logs to stderr (`RUST_LOG` overrides the default `info`) and installs the Ctrl-C handler.
pub fn init_logging() {
    crate::interrupt::install();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour())
        .with_target(false)
        .try_init();
}

/// Whether log lines may carry colour: stderr is a terminal and `NO_COLOR` is unset or empty.
fn colour() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// A progress bar of `len` steps on stderr with this `indicatif` template; hidden unless `show`
/// and stderr is a terminal (a bar redrawn into a log file is only noise).
pub fn progress_bar(len: u64, template: &str, show: bool) -> indicatif::ProgressBar {
    if !(show && std::io::stderr().is_terminal()) {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(indicatif::ProgressStyle::with_template(template).unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()));
    bar
}

/// Checks a binary's flags (for its unit test): clap's own consistency checks, and a doc line on
/// every flag of every subcommand.
pub fn assert_documented(cmd: &clap::Command) {
    cmd.clone().debug_assert();
    for c in std::iter::once(cmd).chain(cmd.get_subcommands()) {
        for arg in c.get_arguments().filter(|a| a.get_id() != "help" && a.get_id() != "version") {
            assert!(arg.get_help().is_some() || arg.is_hide_set(), "`{} --{}` has no doc", c.get_name(), arg.get_id());
        }
    }
}

/// Maps a stage's result to an exit code, printing the error chain (`{:#}`) on failure.
pub fn exit(name: &str, result: Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
