//! Exit codes, and the marker that makes an error "bad input".

use agenthelm::store::StoreError;
use agenthelm_workspace::{SourceError, SourceErrors, WorkspaceError};
use std::fmt;

/// Exit code: everything worked.
pub const SUCCESS: u8 = 0;
/// Exit code: the task or plan failed (after rollback).
pub const FAILED: u8 = 1;
/// Exit code: bad input (arguments, workspace file, plan file).
pub const BAD_INPUT: u8 = 2;

/// An error in what the user gave: arguments, a workspace file, a plan file. Exit code 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadInput(pub String);

impl fmt::Display for BadInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadInput {}

/// The task or plan ran and failed; the details were already printed. Exit code 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failed(pub String);

impl fmt::Display for Failed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Failed {}

/// The command stopped because of a signal (SIGTERM, SIGHUP) after leaving its run resumable.
/// Exit code 128 + the signal's number, as a shell reports a process that signal ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signalled {
    /// The signal.
    pub signal: nix::sys::signal::Signal,
    /// What happened and how to go on.
    pub message: String,
}

impl fmt::Display for Signalled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Signalled {}

/// The exit code for an error: 128 + the signal for [`Signalled`], 2 when any cause is bad
/// input, else 1.
pub fn code_for(error: &anyhow::Error) -> u8 {
    if let Some(signalled) = error.downcast_ref::<Signalled>() {
        return u8::try_from(128 + signalled.signal as i32).unwrap_or(FAILED);
    }
    let bad = error.chain().any(|cause| {
        cause.is::<BadInput>()
            || cause.is::<SourceError>()
            || cause.is::<SourceErrors>()
            || cause
                .downcast_ref::<WorkspaceError>()
                .is_some_and(WorkspaceError::is_bad_input)
    });
    if bad {
        BAD_INPUT
    } else {
        FAILED
    }
}

/// A store error while reading (runs, traces, resume): an unknown run id is bad input, the rest
/// names the store.
pub fn read_error(error: StoreError) -> anyhow::Error {
    BadInput(error.to_string()).into()
}
