use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use super::Event;
use crate::store::{RunStore, StoreError};

/// A function that sees each event as it is recorded.
pub type Observer = Arc<dyn Fn(&Event) + Send + Sync>;

/// Where events go: a shared list plus observers that see each event as it happens.
///
/// Cloning is cheap; clones share the same list.
#[derive(Clone, Default)]
pub struct EventSink {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    events: Mutex<Vec<Event>>,
    observers: Vec<Observer>,
    journal: Option<Arc<dyn RunStore>>,
    journal_failed: AtomicBool,
    journal_error: Mutex<Option<StoreError>>,
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

    /// A sink that first writes each event to `journal` (when given), then shows it to the
    /// observers and collects it. After a failed write nothing more is written; see
    /// [`journal_error`](Self::journal_error).
    pub fn journaled(observers: Vec<Observer>, journal: Option<Arc<dyn RunStore>>) -> Self {
        EventSink {
            inner: Arc::new(Inner {
                observers,
                journal,
                ..Inner::default()
            }),
        }
    }

    /// The first journal write that failed, if any.
    pub fn journal_error(&self) -> Option<StoreError> {
        if !self.inner.journal_failed.load(Ordering::Acquire) {
            return None;
        }
        self.inner
            .journal_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Records an event and shows it to the observers.
    pub fn emit(&self, event: Event) {
        if let Some(journal) = &self.inner.journal {
            if !self.inner.journal_failed.load(Ordering::Acquire) {
                if let Err(e) = journal.append(&event) {
                    *self
                        .inner
                        .journal_error
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner) = Some(e);
                    self.inner.journal_failed.store(true, Ordering::Release);
                }
            }
        }
        for observer in &self.inner.observers {
            observer(&event);
        }
        self.lock().push(event);
    }

    /// Takes every event recorded so far, leaving the sink empty.
    pub fn take(&self) -> Vec<Event> {
        std::mem::take(&mut *self.lock())
    }

    /// How many events are recorded and not yet taken.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no event is recorded (or all were taken).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Event>> {
        // A panicking observer must not make the record unreadable.
        self.inner
            .events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl fmt::Debug for EventSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventSink")
            .field("events", &self.len())
            .field("observers", &self.inner.observers.len())
            .finish()
    }
}
