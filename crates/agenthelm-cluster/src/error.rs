//! What can go wrong in a cluster process.

use agenthelm::store::StoreError;

use crate::queue::QueueError;

/// Why a coordinator or worker could not start or go on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// The work queue (NATS) refused or could not be reached.
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// The run store (PostgreSQL) refused or could not be reached.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A pool name that cannot be used.
    #[error("{0}")]
    Settings(String),
}
