//! One module per command; this one finds the workspace and dispatches.

mod chat;
mod completions;
mod config;
mod execute;
mod init;
mod mcp;
mod plan;
mod replay;
mod resume;
mod run;
mod runs;
mod serve;
mod show;
mod traces;
mod worker;

use std::path::{Path, PathBuf};

use crate::cli::{Cli, Command};
use crate::exit::BadInput;
use agenthelm_workspace::{self as workspace, UserConfig, Workspace};

/// What every command may need: the `--config` flag and the user defaults.
pub struct Session {
    config: Option<PathBuf>,
    user: UserConfig,
}

/// Runs the command the user asked for.
pub async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    // Commands that need no settings run even when the settings file is broken.
    match cli.command {
        Command::Init(args) => return init::run(&args),
        Command::Completions(args) => return completions::run(&args),
        Command::Config(args) => return config::run(&args, cli.config.as_deref()),
        _ => {}
    }
    let session = Session {
        config: cli.config,
        user: UserConfig::load()?,
    };
    match cli.command {
        Command::Run(args) => run::run(&session, &args).await,
        Command::Plan(args) => plan::run(&session, &args).await,
        Command::Show(args) => show::run(&session, &args).await,
        Command::Execute(args) => execute::run(&session, &args).await,
        Command::Resume(args) => resume::run(&session, &args).await,
        Command::Replay(args) => replay::run(&session, &args).await,
        Command::Serve(args) => serve::run(&session, &args).await,
        Command::Worker(args) => worker::run(&session, &args).await,
        Command::Runs(args) => runs::run(&session, &args),
        Command::Traces(args) => traces::run(&session, &args),
        Command::Chat(args) => chat::run(&session, &args).await,
        Command::Mcp(args) => mcp::run(&session, &args).await,
        Command::Init(_) | Command::Completions(_) | Command::Config(_) => Ok(()),
    }
}

impl Session {
    /// The workspace file: `--config`, else `agenthelm.yaml` in the current folder or a parent,
    /// else (for a plan file) beside the plan or in a parent of its folder.
    pub fn workspace_file(&self, plan: Option<&Path>) -> anyhow::Result<PathBuf> {
        locate(self.config.as_deref(), plan)
    }

    /// Reads and checks the workspace.
    pub fn workspace(&self, plan: Option<&Path>) -> anyhow::Result<Workspace> {
        Ok(Workspace::load(&self.workspace_file(plan)?)?)
    }

    /// The user defaults.
    pub fn user(&self) -> &UserConfig {
        &self.user
    }
}

/// Where the workspace file is, by the rules of [`Session::workspace_file`].
pub fn locate(config: Option<&Path>, plan: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(file) = config {
        // Only whether it exists: reading it says what else is wrong (a folder, a FIFO, ...).
        if !file.exists() {
            return Err(BadInput(format!(
                "--config {}: no such workspace file",
                file.display()
            ))
            .into());
        }
        return Ok(file.to_path_buf());
    }
    let cwd = std::env::current_dir()
        .map_err(|e| BadInput(format!("cannot read the current folder: {e}")))?;
    let beside_plan = plan
        .and_then(|p| std::path::absolute(p).ok())
        .and_then(|p| p.parent().map(Path::to_path_buf));
    let found = match workspace::discover(&cwd)? {
        Some(file) => Some(file),
        None => match beside_plan {
            Some(dir) => workspace::discover(&dir)?,
            None => None,
        },
    };
    found.ok_or_else(|| {
        BadInput(format!(
            "no {} found in {} or its parents: run `agenthelm init` or pass --config PATH",
            workspace::FILE_NAME,
            cwd.display()
        ))
        .into()
    })
}
