//! `agenthelm completions bash|zsh|fish`.

use clap::CommandFactory;

use crate::cli::{Cli, CompletionsArgs, Shell};

/// Prints the completion script for a shell.
pub fn run(args: &CompletionsArgs) -> anyhow::Result<()> {
    let shell = match args.shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    // Generated into memory: clap_complete panics when its writer fails (a closed pipe).
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "agenthelm", &mut script);
    crate::out::raw(&script)
}
