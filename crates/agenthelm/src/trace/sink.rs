use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use super::Event;

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
}

impl EventSink {
    /// A sink that only collects.
    pub fn new() -> Self {
        Self::default()
    }

    /// A sink that collects and also calls each observer with every event, in order.
    pub fn with_observers(observers: Vec<Observer>) -> Self {
        EventSink {
            inner: Arc::new(Inner {
                events: Mutex::new(Vec::new()),
                observers,
            }),
        }
    }

    /// Records an event and shows it to the observers.
    ///
    /// An observer that panics misses that event and nothing else happens: a bug in a progress
    /// display must not stop a run half-way, before its rollback.
    pub fn emit(&self, event: Event) {
        for observer in &self.inner.observers {
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| observer(&event)));
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
