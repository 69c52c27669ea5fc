//! AgentHelm across machines (DESIGN.md §10).
//!
//! PostgreSQL is the source of truth: the journal, each run's lease (owner and epoch), each
//! piece of work's attempts. NATS JetStream carries the work: a work-queue stream with one
//! durable pull consumer per worker pool. A [`Coordinator`] owns a run through its lease,
//! journals and schedules it, and sends each step (and each compensating action) to the pool
//! of its agent; a [`Worker`] carries the work out and commits the outcome, first writer wins.
//!
//! What each failure does is in `docs/cluster.md`.

mod batch;
mod coordinator;
mod error;
pub mod queue;
mod settings;
mod wakeup;
pub mod work;
mod worker;

pub use coordinator::Coordinator;
pub use error::ClusterError;
pub use queue::{
    Delivery, Exhausted, ExhaustedWork, Notifications, PoolConsumer, QueueError, QueueSettings,
    WorkQueue,
};
pub use settings::{ClusterSettings, DEFAULT_POOL};
pub use worker::{Worker, WorkerOptions};
