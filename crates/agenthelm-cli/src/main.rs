//! `agenthelm`: plan a goal with an LLM, approve the plan, execute it with parallel steps and
//! Saga rollback, from a terminal. A thin layer over the `agenthelm` library and the workspace
//! crate (`agenthelm-workspace`): argument parsing, terminal rendering, prompts and exit codes.

mod approval;
mod cli;
mod cluster;
mod commands;
mod exit;
mod interrupt;
mod limits;
mod live;
mod out;
mod progress;
mod render;
mod telemetry;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return usage_error(error),
    };
    limits::raise_open_files_limit();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            init_logging(cli.verbose, None);
            out::note(&format!("error: cannot start the async runtime: {e}"));
            return ExitCode::from(exit::FAILED);
        }
    };
    // A long-lived `serve` exports its live spans when the environment names a collector; a
    // malformed setting stops it before it serves.
    let live = match &cli.command {
        cli::Command::Serve(_) => {
            let _entered = runtime.enter();
            telemetry::live_export()
        }
        _ => Ok(None),
    };
    let live = match live {
        Ok(live) => live,
        Err(error) => {
            init_logging(cli.verbose, None);
            return failed(error);
        }
    };
    init_logging(cli.verbose, live.as_ref());
    let outcome = runtime.block_on(commands::dispatch(cli));
    if let Some(live) = live {
        runtime.block_on(telemetry::finish_live(live));
    }
    // Dropping the runtime drops unfinished tool calls, which kills their process groups.
    drop(runtime);
    match outcome {
        Ok(()) => ExitCode::from(exit::SUCCESS),
        Err(error) => failed(error),
    }
}

/// The error on standard error, and the exit code its kind calls for.
fn failed(error: anyhow::Error) -> ExitCode {
    let palette = render::Palette::stderr();
    // `{:#}` puts the whole chain of causes on one line.
    let message = render::safe(&format!("{error:#}")).replace('\n', " ");
    out::note(&format!("{} {message}", palette.bad("error:")));
    ExitCode::from(exit::code_for(&error))
}

/// Help and version as clap prints them; a usage error with the arguments it quotes escaped
/// (they may hold control characters), on standard error with clap's exit code (2).
fn usage_error(error: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        error.kind(),
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
    ) {
        error.exit()
    }
    out::note(&render::safe(&error.render().to_string()));
    ExitCode::from(u8::try_from(error.exit_code()).unwrap_or(exit::BAD_INPUT))
}

/// `-v` raises the level; `RUST_LOG` (when set) decides instead. Logs go to stderr. With a live
/// export, the library's spans also go to the collector (whatever the log level).
fn init_logging(verbose: u8, live: Option<&agenthelm::otlp::LiveExport>) {
    use tracing_subscriber::prelude::*;
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
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(|| out::LogWriter)
        .with_ansi(false)
        .with_filter(filter);
    let _ = tracing_subscriber::registry()
        .with(logs)
        .with(live.map(agenthelm::otlp::LiveExport::layer))
        .try_init();
}
