//! Signals. Ctrl-C for commands that do not run a plan: the work in progress is dropped, which
//! kills the process groups of running command tools (they do not get the terminal's Ctrl-C
//! themselves, since each runs in a group of its own). For plan runs ([`watch_run`]): Ctrl-C
//! cancels (rolls back), SIGTERM and SIGHUP suspend (the run stays resumable).

use agenthelm::orchestrate::CancelToken;
use nix::sys::signal::Signal;
use std::future::Future;
use std::sync::atomic::{AtomicI32, Ordering};
use tokio::signal::unix::{signal, SignalKind};

use crate::exit::Failed;

/// The signal that suspended this process's run, 0 while none did. Process-wide, as signals are.
static SUSPENDED_BY: AtomicI32 = AtomicI32::new(0);

/// The signal (SIGTERM or SIGHUP) that suspended a run of this process, if one did.
pub fn suspended_by() -> Option<Signal> {
    Signal::try_from(SUSPENDED_BY.load(Ordering::SeqCst)).ok()
}

/// Watches the signals that stop a plan run, until the returned task is aborted.
///
/// Ctrl-C cancels it (after printing `notice`): no new step starts, running steps get their
/// grace period, and completed work is rolled back; later Ctrl-Cs are ignored so the rollback
/// can finish. SIGTERM and SIGHUP, what service managers and closed terminals send, suspend it:
/// no new step starts, running steps get their grace period and are then stopped (their process
/// groups killed), nothing is rolled back, and the run is left for `agenthelm resume`.
pub fn watch_run(
    cancel: CancelToken,
    notice: &'static str,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    // Registered before the run starts, so an early signal is not lost.
    let mut interrupts = signal(SignalKind::interrupt())?;
    let mut terminates = signal(SignalKind::terminate())?;
    let mut hangups = signal(SignalKind::hangup())?;
    Ok(tokio::spawn(async move {
        let mut interrupted = false;
        loop {
            let received = tokio::select! {
                Some(()) = interrupts.recv() => Signal::SIGINT,
                Some(()) = terminates.recv() => Signal::SIGTERM,
                Some(()) = hangups.recv() => Signal::SIGHUP,
                else => return,
            };
            if received == Signal::SIGINT {
                if !std::mem::replace(&mut interrupted, true) {
                    crate::out::note(notice);
                    cancel.cancel();
                }
            } else if SUSPENDED_BY
                .compare_exchange(0, received as i32, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
            {
                crate::out::note(&format!(
                    "{}: no new steps start; running steps get their grace period, then are \
                     stopped; nothing is rolled back, the run can be resumed",
                    received.as_str()
                ));
                cancel.suspend();
            }
        }
    }))
}

/// Runs `work` until it finishes or the user presses Ctrl-C.
pub async fn or_ctrl_c<F: Future>(work: F) -> anyhow::Result<F::Output> {
    let mut interrupts = signal(SignalKind::interrupt())?;
    tokio::select! {
        output = work => Ok(output),
        _ = interrupts.recv() => Err(Failed("interrupted: running tools were stopped".into()).into()),
    }
}

/// Resolves at the first Ctrl-C, SIGTERM or SIGHUP: when a server should stop taking requests.
/// (Its runs are suspended then, not rolled back: the next start picks them up.)
pub async fn shutdown_signal() {
    let (Ok(mut interrupts), Ok(mut terminates), Ok(mut hangups)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) else {
        // Without signal handlers the server runs until it is killed.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = interrupts.recv() => {}
        _ = terminates.recv() => {}
        _ = hangups.recv() => {}
    }
}
