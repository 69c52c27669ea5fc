//! Process limits: open files, and how many steps run at once by default.
//!
//! Every running command tool costs the process several file descriptors (its stdin, stdout and
//! stderr pipes, and briefly the other ends while it starts), so unbounded parallelism runs out
//! of them: steps would fail with "Too many open files" instead of waiting for a slot.

use nix::sys::resource::{getrlimit, setrlimit, Resource};

/// At most this many steps run at once unless `--max-parallel` or the user default says
/// otherwise.
const DEFAULT_MAX_PARALLEL: usize = 16;
/// File descriptors set aside for everything but steps: the store, the runtime, MCP servers.
const RESERVED_FDS: u64 = 64;
/// File descriptors one running step may hold (a command tool's pipes while it starts, with
/// room to spare).
const FDS_PER_STEP: u64 = 8;

/// Raises the soft limit on open files to the hard limit, as far as the system allows; a
/// failure leaves the limit as it was (the default parallelism adapts to it).
pub fn raise_open_files_limit() {
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::debug!(soft, hard, error = %e, "cannot raise the open-files limit");
            }
        }
    }
}

/// How many steps run at once by default: [`DEFAULT_MAX_PARALLEL`], or fewer when the limit on
/// open files would not allow that many tools at once.
pub fn default_max_parallel() -> usize {
    let open_files = getrlimit(Resource::RLIMIT_NOFILE).map_or(u64::MAX, |(soft, _)| soft);
    max_parallel_for(open_files)
}

fn max_parallel_for(open_files: u64) -> usize {
    let fit = open_files.saturating_sub(RESERVED_FDS) / FDS_PER_STEP;
    usize::try_from(fit)
        .unwrap_or(usize::MAX)
        .clamp(1, DEFAULT_MAX_PARALLEL)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_fits_the_open_files_limit() {
        assert_eq!(max_parallel_for(1024), DEFAULT_MAX_PARALLEL);
        assert_eq!(max_parallel_for(u64::MAX), DEFAULT_MAX_PARALLEL);
        assert_eq!(max_parallel_for(128), 8);
        assert_eq!(max_parallel_for(20), 1);
    }
}
