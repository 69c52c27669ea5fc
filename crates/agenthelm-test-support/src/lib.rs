//! Helpers shared by the test suites of the AgentHelm crates (a dev-dependency only).
//!
//! - [`TempDir`]: a fresh folder under the system's temp dir, removed when dropped.
//! - [`MockServer`]: a loopback HTTP server answering from a script and recording requests; it
//!   runs on its own threads, so sync tests, async tests and child processes can all talk to it.
//! - [`PgServer`]: a PostgreSQL server in a temp folder on a free loopback port, for the
//!   PostgreSQL run store's tests.
//! - [`NatsServer`]: a NATS server with JetStream in a temp folder on a free loopback port, for
//!   the cluster's work-queue tests.
//! - [`stops_running`] / [`stops_running_within`] / [`is_running`]: process checks by pid, for
//!   "no process left behind".
//!
//! Helpers panic on setup failures: they only ever run inside tests, where a panic is the failure
//! report.

mod client;
mod http;
mod nats;
mod postgres;
mod process;
mod temp;

pub use client::{request, Answer};
pub use http::{Gate, MockServer, Received, Reply};
pub use nats::NatsServer;
pub use postgres::PgServer;
pub use process::{is_running, pid_in, stops_running, stops_running_within};
pub use temp::TempDir;
