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

/// Logs to stderr (`RUST_LOG` overrides the default `info`) and installs the Ctrl-C handler.
pub fn init_logging() {
    crate::interrupt::install();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false)
        // No colour codes in logs that go to a file or a pipe (make's output, srun, sbatch).
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
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
