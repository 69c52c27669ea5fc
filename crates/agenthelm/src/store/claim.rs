//! Claims: a run is carried on by one process at a time. Two processes resuming one run (or a
//! resume while `execute` still runs it) would otherwise repeat its steps and compensations.
//!
//! A claim names its owner (host and process id) and is refreshed by a heartbeat. Another
//! claimant is refused while the owner lives; a dead owner's claim is taken over: on the same
//! host when its process is gone, from another host once the heartbeat is older than [`LEASE`].
//! Each store keeps the claim in its own way ([`RunStore::claim_run`](super::RunStore::claim_run)),
//! checking and taking it in one step no other claimant can interleave with.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

use super::StoreError;
use crate::trace::now_ms;

/// How long a claim held from another host stays valid without a heartbeat.
pub const LEASE: Duration = Duration::from_secs(60);

/// How often a run's claim is refreshed while the run goes on (well within [`LEASE`]).
pub const HEARTBEAT: Duration = Duration::from_secs(15);

/// Who carries on a run: a process on a host.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Owner {
    /// The host's name.
    pub host: String,
    /// The process id on that host.
    pub pid: u32,
}

impl Owner {
    /// This process on this host.
    pub fn this_process() -> Self {
        Owner {
            host: this_host(),
            pid: std::process::id(),
        }
    }
}

/// `process 42 on build-1`.
impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "process {} on {}", self.pid, self.host)
    }
}

/// A claim as a store keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ClaimRecord {
    pub(crate) owner: Owner,
    /// Tells this claim from a later one of the same owner, so only its holder refreshes or
    /// releases it.
    pub(crate) token: String,
    pub(crate) heartbeat_ms: u64,
}

impl ClaimRecord {
    /// A new claim for `owner`, beating now.
    pub(crate) fn new(owner: &Owner) -> Self {
        ClaimRecord {
            owner: owner.clone(),
            token: format!("{}-{:016x}", owner.pid, fastrand::u64(..)),
            heartbeat_ms: now_ms(),
        }
    }

    /// Whether the owner is gone: its process, when it ran on this host and that can be seen;
    /// otherwise its heartbeat is older than the lease.
    fn is_stale(&self) -> bool {
        let on_this_host = self.owner.host == this_host();
        match process_alive(self.owner.pid).filter(|_| on_this_host) {
            Some(alive) => !alive,
            None => now_ms().saturating_sub(self.heartbeat_ms) > LEASE.as_millis() as u64,
        }
    }

    /// Refuses a new claim of `run_id` while `existing` is held by a live owner.
    pub(crate) fn may_take(existing: Option<&ClaimRecord>, run_id: &str) -> Result<(), StoreError> {
        match existing {
            Some(held) if !held.is_stale() => Err(StoreError::Claimed {
                run_id: run_id.to_owned(),
                owner: held.owner.clone(),
            }),
            _ => Ok(()),
        }
    }
}

/// A store's hold on one run; see [`Claim`].
pub trait Lease: Send + Sync {
    /// Renews the heartbeat; an error when the claim was lost (taken over or removed).
    fn refresh(&self) -> Result<(), StoreError>;
}

/// The right to carry on one run, held until dropped (dropping releases it in the store).
pub struct Claim {
    lease: Option<Box<dyn Lease>>,
}

impl Claim {
    /// A claim kept by `lease`, which releases it when dropped.
    pub fn new(lease: impl Lease + 'static) -> Self {
        Claim {
            lease: Some(Box::new(lease)),
        }
    }

    /// A claim that guards nothing, for stores that cannot keep claims.
    pub fn unguarded() -> Self {
        Claim { lease: None }
    }

    /// Renews the heartbeat (see [`HEARTBEAT`]).
    pub fn refresh(&self) -> Result<(), StoreError> {
        self.lease.as_ref().map_or(Ok(()), |lease| lease.refresh())
    }
}

impl fmt::Debug for Claim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Claim")
            .field("guarded", &self.lease.is_some())
            .finish()
    }
}

/// This host's name (`unknown-host` when it cannot be read).
fn this_host() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|file| std::fs::read_to_string(file).ok())
        .map(|name| name.trim().to_owned())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "unknown-host".to_owned())
}

/// Whether process `pid` runs on this host (a zombie does not): `None` where that cannot be
/// seen, and the lease decides.
fn process_alive(pid: u32) -> Option<bool> {
    // Without a readable /proc (another system, or /proc not mounted) nothing can be seen.
    if !cfg!(target_os = "linux") || std::fs::metadata("/proc/self/stat").is_err() {
        return None;
    }
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return Some(false);
    };
    // The state follows the command name, which is in parentheses and may contain spaces.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    Some(state.is_some_and(|s| s != "Z"))
}
