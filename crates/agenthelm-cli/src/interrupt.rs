//! Ctrl-C for commands that do not run a plan: the work in progress is dropped, which kills the
//! process groups of running command tools (they do not get the terminal's Ctrl-C themselves,
//! since each runs in a group of its own).

use std::future::Future;

use crate::exit::Failed;

/// Runs `work` until it finishes or the user presses Ctrl-C.
pub async fn or_ctrl_c<F: Future>(work: F) -> anyhow::Result<F::Output> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupts = signal(SignalKind::interrupt())?;
    tokio::select! {
        output = work => Ok(output),
        _ = interrupts.recv() => Err(Failed("interrupted: running tools were stopped".into()).into()),
    }
}
