use std::collections::HashMap;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use serde_json::Value;

use crate::redact::Redactor;
use crate::store::{RunStore, StoreError};
use crate::trace::{Event, EventKind, RunState};

/// A function that sees each event as it is recorded, in the order of the journal.
///
/// It is called while the event is being recorded, so parallel steps wait for it: keep it quick
/// (hand the event to a channel for slow work).
pub type Observer = Arc<dyn Fn(&Event) + Send + Sync>;

/// Where events go: a shared list, observers that see each event as it happens, and optionally
/// a journal (a [`RunStore`]).
///
/// Journal writes are batched: events wait in a buffer until [`flush`](Self::flush). Every action
/// (starting a step, calling a tool, compensating) needs an [`ActionPermit`], and the only way to
/// get one is [`before_action`](Self::before_action), which flushes first: so everything that led
/// to an action is on record before the action happens.
///
/// Cloning is cheap; clones share everything.
#[derive(Clone, Default)]
pub struct EventSink {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    events: Mutex<Vec<Event>>,
    observers: Vec<Observer>,
    journal: Option<Journal>,
    /// The run's state, when the sink records a plan run: every event is applied to it.
    state: Option<Mutex<RunState>>,
    /// Redacts every event before anything (state, observers, journal) sees it.
    redactor: OnceLock<Arc<Redactor>>,
    /// The real arguments of effects whose recorded arguments were redacted, by call id: so
    /// that this process's rollback undoes them with the real values.
    real_effect_args: Mutex<HashMap<String, Value>>,
}

struct Journal {
    store: Arc<dyn RunStore>,
    /// How many of the recorded events are written: the rest wait for the next flush. Taken
    /// after the event list's lock. (The list itself is the buffer, so an event with a big
    /// output is not held twice.)
    written: Mutex<usize>,
    failed: AtomicBool,
    error: Mutex<Option<StoreError>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking observer must not make the record unreadable.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl EventSink {
    /// A sink that only collects.
    pub fn new() -> Self {
        Self::default()
    }

    /// A sink that collects and also calls each observer with every event, in order.
    pub fn with_observers(observers: Vec<Observer>) -> Self {
        Self::journaled(observers, None)
    }

    /// A sink that also writes every event to `journal` (when given), in batches at each
    /// [`flush`](Self::flush). After a failed write nothing more is written; see
    /// [`journal_error`](Self::journal_error).
    pub fn journaled(observers: Vec<Observer>, journal: Option<Arc<dyn RunStore>>) -> Self {
        Self::build(observers, journal, None)
    }

    /// A journaled sink (see [`journaled`](Self::journaled)) that also applies every event to
    /// `state`, the run's [`RunState`]: the same code that replays a journal, so the live state
    /// and the state rebuilt from the journal are the same. Read it with
    /// [`state`](Self::state).
    pub fn for_run(
        observers: Vec<Observer>,
        journal: Option<Arc<dyn RunStore>>,
        state: RunState,
    ) -> Self {
        Self::build(observers, journal, Some(state))
    }

    fn build(
        observers: Vec<Observer>,
        journal: Option<Arc<dyn RunStore>>,
        state: Option<RunState>,
    ) -> Self {
        EventSink {
            inner: Arc::new(Inner {
                events: Mutex::new(Vec::new()),
                observers,
                journal: journal.map(|store| Journal {
                    store,
                    written: Mutex::new(0),
                    failed: AtomicBool::new(false),
                    error: Mutex::new(None),
                }),
                state: state.map(Mutex::new),
                redactor: OnceLock::new(),
                real_effect_args: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Redacts every event with `redactor` before the run state, the observers and the journal
    /// see it: secrets and personal data never leave the process. Set it before the first
    /// event; a sink keeps the first redactor it is given.
    pub fn with_redactor(self, redactor: Arc<Redactor>) -> Self {
        if !redactor.is_empty() {
            let _ = self.inner.redactor.set(redactor);
        }
        self
    }

    /// The redactor of the sink's events, if it has one.
    pub fn redactor(&self) -> Option<&Redactor> {
        self.inner.redactor.get().map(|r| &**r)
    }

    /// The arguments an effect recorded with redacted arguments really had (in this process
    /// only: the journal never holds them).
    pub(crate) fn real_effect_args(&self, call_id: &str) -> Option<Value> {
        lock(&self.inner.real_effect_args).get(call_id).cloned()
    }

    /// `event` as it may be seen and kept.
    fn redact(&self, event: Event) -> Event {
        let Some(redactor) = self.inner.redactor.get() else {
            return event;
        };
        let Some(redacted) = event.redacted(redactor) else {
            return event;
        };
        if let EventKind::Effect { effect } = event.kind {
            lock(&self.inner.real_effect_args).insert(effect.call_id, effect.args);
        }
        redacted
    }

    /// Records an event and shows it to the observers.
    ///
    /// An observer that panics misses that event and nothing else happens: a bug in a progress
    /// display must not stop a run half-way, before its rollback.
    pub fn emit(&self, event: Event) {
        let event = self.redact(event);
        // One critical section for the event list, the journal, the run state and the observers:
        // all of them see the events of parallel steps in one and the same order.
        let mut events = lock(&self.inner.events);
        if let Some(state) = &self.inner.state {
            lock(state).apply(&event);
        }
        for observer in &self.inner.observers {
            // An observer that panics loses its view of this event, not the event.
            let _ = catch_unwind(AssertUnwindSafe(|| observer(&event)));
        }
        events.push(event);
    }

    /// Writes the events not yet in the journal, in one batch. `Ok` without a journal.
    pub fn flush(&self) -> Result<(), StoreError> {
        let events = lock(&self.inner.events);
        self.write_pending(&events)
    }

    /// Writes `events` (the event list, locked by the caller) from the first not yet written.
    fn write_pending(&self, events: &[Event]) -> Result<(), StoreError> {
        let Some(journal) = &self.inner.journal else {
            return Ok(());
        };
        let mut written = lock(&journal.written);
        if let Some(error) = self.journal_error() {
            return Err(error);
        }
        let pending = &events[(*written).min(events.len())..];
        if pending.is_empty() {
            return Ok(());
        }
        match journal.store.append_batch(pending) {
            Ok(()) => {
                *written = events.len();
                Ok(())
            }
            Err(error) => {
                *lock(&journal.error) = Some(error.clone());
                journal.failed.store(true, Ordering::Release);
                Err(error)
            }
        }
    }

    /// Takes in events that another process has already put in the run's journal (a worker
    /// carrying out a step, see `RemoteRunner`): the run
    /// state and the observers see them as if they were recorded here, and they are not written
    /// again. What this sink recorded before them is written first, so the journal keeps the
    /// order in which the state saw them.
    pub fn adopt(&self, adopted: Vec<Event>) {
        let mut events = lock(&self.inner.events);
        let pending_written = self.write_pending(&events).is_ok();
        for event in adopted {
            if let Some(state) = &self.inner.state {
                lock(state).apply(&event);
            }
            for observer in &self.inner.observers {
                let _ = catch_unwind(AssertUnwindSafe(|| observer(&event)));
            }
            events.push(event);
        }
        if let (Some(journal), true) = (&self.inner.journal, pending_written) {
            *lock(&journal.written) = events.len();
        }
    }

    /// Stops the journal as a failed write would: no action gets a permit after this, so the
    /// run stops where it is and can be resumed. For a coordinator that may no longer write the
    /// run (another one took it over). A sink without a journal keeps no error.
    pub fn halt(&self, error: StoreError) {
        let Some(journal) = &self.inner.journal else {
            return;
        };
        let mut kept = lock(&journal.error);
        if kept.is_none() {
            *kept = Some(error);
        }
        journal.failed.store(true, Ordering::Release);
    }

    /// The gate every action passes: puts everything recorded so far in the journal and, when
    /// that worked, hands out the permit that acting requires.
    ///
    /// Once a journal write has failed no permit is given again: what is not on record must not
    /// happen, so the run stops where it is, as a crash would stop it, and can be resumed.
    pub fn before_action(&self) -> Result<ActionPermit, JournalError> {
        self.flush()?;
        Ok(ActionPermit { _private: () })
    }

    /// Reads the run's state (`None` for a sink made without one, see [`for_run`](Self::for_run)).
    pub fn state<R>(&self, read: impl FnOnce(&RunState) -> R) -> Option<R> {
        self.inner.state.as_ref().map(|state| read(&lock(state)))
    }

    /// The first journal write that failed, if any.
    pub fn journal_error(&self) -> Option<StoreError> {
        let journal = self.inner.journal.as_ref()?;
        if !journal.failed.load(Ordering::Acquire) {
            return None;
        }
        lock(&journal.error).clone()
    }

    /// Takes every event recorded so far, leaving the sink empty. With a journal, the events
    /// not yet written are written first (a failure is kept, see
    /// [`journal_error`](Self::journal_error)).
    pub fn take(&self) -> Vec<Event> {
        let _ = self.flush();
        let mut events = lock(&self.inner.events);
        if let Some(journal) = &self.inner.journal {
            *lock(&journal.written) = 0;
        }
        std::mem::take(&mut *events)
    }

    /// How many events are recorded and not yet taken.
    pub fn len(&self) -> usize {
        lock(&self.inner.events).len()
    }

    /// Whether no event is recorded (or all were taken).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Proof that the journal held everything recorded when an action was about to happen.
///
/// Functions that act (start a step, call a tool, run a compensation) take one by value, and
/// only [`EventSink::before_action`] makes one, so no code path can act without passing the
/// gate. It cannot be built outside this module:
///
/// ```compile_fail
/// let permit = agenthelm::exec::ActionPermit { _private: () };
/// ```
///
/// Nor copied, so one gate admits one action:
///
/// ```compile_fail
/// fn twice(permit: agenthelm::exec::ActionPermit) -> (agenthelm::exec::ActionPermit, agenthelm::exec::ActionPermit) {
///     (permit, permit)
/// }
/// ```
#[derive(Debug)]
#[must_use = "a permit is for acting: pass it to the action it was asked for"]
pub struct ActionPermit {
    _private: (),
}

/// The journal could not record what led to an action, so the action must not happen.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("the run's journal could not be written ({source})")]
pub struct JournalError {
    /// Why the store refused the write.
    #[from]
    pub source: StoreError,
}

impl fmt::Debug for EventSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventSink")
            .field("events", &self.len())
            .field("observers", &self.inner.observers.len())
            .field("journaled", &self.inner.journal.is_some())
            .finish()
    }
}
