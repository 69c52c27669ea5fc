//! `agenthelm`: plan a goal with an LLM, approve the plan, execute it with parallel steps and
//! Saga rollback, from a terminal. A thin layer over the `agenthelm` library and the workspace
//! crate (`agenthelm-workspace`): argument parsing, terminal rendering, prompts and exit codes.

mod approval;
mod cli;
mod commands;
mod exit;
mod interrupt;
mod limits;
mod render;
mod telemetry;
mod timestamp;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    init_logging(cli.verbose);
    limits::raise_open_files_limit();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(exit::FAILED);
        }
    };
    let outcome = runtime.block_on(commands::dispatch(cli));
    // Dropping the runtime drops unfinished tool calls, which kills their process groups.
    drop(runtime);
    match outcome {
        Ok(()) => ExitCode::from(exit::SUCCESS),
        Err(error) => {
            let palette = render::Palette::stderr();
            // `{:#}` puts the whole chain of causes on one line.
            let message = format!("{error:#}").replace('\n', " ");
            eprintln!("{} {message}", palette.bad("error:"));
            ExitCode::from(exit::code_for(&error))
        }
    }
}

/// `-v` raises the level; `RUST_LOG` (when set) decides instead. Logs go to stderr.
fn init_logging(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let level = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.trim().is_empty() && verbose == 0 => EnvFilter::new(spec),
        _ => EnvFilter::new(level),
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
}
