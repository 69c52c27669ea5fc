//! Live events of the runs this server carries on, numbered by their position in each run's
//! journal, for the event streams of [`crate::api`].
//!
//! The orchestrator's observer sees each event as it is recorded, before it reaches the store
//! (journal writes are batched): the hub numbers it and keeps the latest few per run, so a
//! stream that read the store's history can go on from the hub without a gap.

use agenthelm::Event;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use tokio::sync::broadcast;

/// How many recent events a run keeps for streams that catch up from the store.
const RECENT: usize = 4096;

/// An event with its position in its run's journal (from 1).
pub type Numbered = (usize, Arc<Event>);

/// The live events of every run.
#[derive(Default)]
pub struct Hub {
    runs: Mutex<HashMap<String, Channel>>,
}

struct Channel {
    /// The position the next event gets.
    next: usize,
    recent: VecDeque<Numbered>,
    sender: broadcast::Sender<Numbered>,
}

impl Channel {
    fn new(next: usize) -> Self {
        Channel {
            next,
            recent: VecDeque::new(),
            sender: broadcast::channel(1024).0,
        }
    }
}

/// A stream's view of one run: the recent events kept and the live ones to come.
pub struct Subscription {
    /// Recent events, oldest first.
    pub recent: Vec<Numbered>,
    /// Events from now on.
    pub live: broadcast::Receiver<Numbered>,
}

impl Hub {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Channel>> {
        self.runs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Run `run_id` is about to go on with `recorded` events in its journal: the next one is
    /// `recorded + 1`.
    pub fn open(&self, run_id: &str, recorded: usize) {
        let mut runs = self.lock();
        let channel = runs
            .entry(run_id.to_owned())
            .or_insert_with(|| Channel::new(recorded + 1));
        channel.next = recorded + 1;
    }

    /// Numbers `event` (of the run it names) and sends it to the run's streams.
    pub fn publish(&self, event: &Event) {
        let Some(run_id) = event.run_id.as_deref() else {
            return;
        };
        let mut runs = self.lock();
        let channel = runs
            .entry(run_id.to_owned())
            .or_insert_with(|| Channel::new(1));
        let numbered = (channel.next, Arc::new(event.clone()));
        channel.next += 1;
        if channel.recent.len() == RECENT {
            channel.recent.pop_front();
        }
        channel.recent.push_back(numbered.clone());
        // No stream listening is fine.
        let _ = channel.sender.send(numbered);
    }

    /// Run `run_id` will do nothing more: its streams end, and its recent events are dropped.
    pub fn close(&self, run_id: &str) {
        // Dropping the sender ends every stream once it has what was sent.
        self.lock().remove(run_id);
    }

    /// Ends every stream: the server is stopping (an open stream would keep it waiting).
    pub fn close_all(&self) {
        self.lock().clear();
    }

    /// Run `run_id` is parked (waiting for a person): streams stay open, and the events kept
    /// are dropped (they are in the store).
    pub fn pause(&self, run_id: &str) {
        if let Some(channel) = self.lock().get_mut(run_id) {
            channel.recent.clear();
        }
    }

    /// What a new stream of `run_id` starts from; `None` when the hub has no channel for the
    /// run (it is not carried on by this server now: its journal is all there is).
    pub fn subscribe(&self, run_id: &str) -> Option<Subscription> {
        let runs = self.lock();
        let channel = runs.get(run_id)?;
        Some(Subscription {
            recent: channel.recent.iter().cloned().collect(),
            live: channel.sender.subscribe(),
        })
    }
}
