//! Where actions happen: the [`StepContext`] an agent works in, the tool invoker that applies a
//! tool's contract, and the [`EventSink`] that records events and writes them to the journal.
//!
//! This layer owns the crate's central promise, "journal before acting": every action (starting
//! a step, calling a tool, compensating) needs an [`ActionPermit`], which only
//! [`EventSink::before_action`] hands out, after the journal has everything recorded so far: a
//! run killed at any moment can be resumed from its record.

mod budget;
mod context;
pub(crate) mod invoke;
mod replay;
mod sink;
mod text;

pub use budget::{BudgetGuard, Reservation, ASSUMED_MAX_OUTPUT_TOKENS};
pub use context::StepContext;
pub use replay::{Divergence, DivergenceKind, ReplayOptions, ReplaySource};
pub use sink::{ActionPermit, EventSink, JournalError, Observer};
pub(crate) use text::TextForwarder;
pub use text::{TextDelta, TextObserver};
