/*!
What every stage binary shares: the config flags (`--config`, repeatable `--set`, `--run`),
logging setup, and turning a result into an exit code with the whole error chain printed.
*/

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
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).try_init();
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
