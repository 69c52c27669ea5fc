//! AgentHelm across machines (DESIGN.md §10).
//!
//! PostgreSQL is the source of truth: the journal, each run's lease (owner and epoch), each
//! piece of work's attempts. NATS JetStream carries the work: a work-queue stream with one
//! durable pull consumer per worker pool. A coordinator owns a run through its lease, journals
//! and schedules it, and sends each step (and each compensating action) to the pool of its
//! agent; workers run them and commit the outcome, first writer wins.

pub mod queue;

pub use queue::{
    Delivery, Exhausted, ExhaustedWork, Notifications, PoolConsumer, QueueError, QueueSettings,
    WorkQueue,
};
