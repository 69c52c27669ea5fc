//! The work that travels: what a coordinator asks a worker to do, the keys that name it, and
//! how its outcome is kept.

use agenthelm::orchestrate::{RemoteOutcome, StepWork, UndoWork};
use agenthelm::store::WorkOutcome;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One piece of work, as kept in the store (the queue carries only its key).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Job {
    /// Carry out a step.
    Step(StepWork),
    /// Carry out a compensating action.
    Undo(UndoWork),
}

/// The key of round `round` of a step: the same in every attempt of that round, so a
/// redelivered step keeps its tools' idempotency keys. A new round starts only when a step is
/// run again on purpose (after it waited for a person's decision).
pub fn step_key(run_id: &str, step_id: &str, round: u32) -> String {
    format!("{run_id}/{step_id}/step/{round}")
}

/// The run a work key belongs to (every key starts with its run's id, which holds no `/`).
pub fn run_of(key: &str) -> &str {
    key.split('/').next().unwrap_or(key)
}

/// The round of a step's key (see [`step_key`]); `None` for other keys.
pub fn round_of(key: &str) -> Option<u32> {
    let (rest, round) = key.rsplit_once('/')?;
    rest.ends_with("/step")
        .then(|| round.parse().ok())
        .flatten()
}

/// The key of compensating action `action` of a step.
pub fn undo_key(run_id: &str, step_id: &str, action: usize) -> String {
    format!("{run_id}/{step_id}/undo/{action}")
}

/// The subject a worker announces finished work of `run_id` on (core NATS, a wake-up only:
/// the outcome itself is in the store).
pub fn done_subject(run_id: &str) -> String {
    let token: String = run_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("agenthelm.done.{token}")
}

/// A step's outcome as the store keeps it.
pub fn from_step(outcome: &RemoteOutcome, attempt: i64) -> WorkOutcome {
    let error = match outcome {
        RemoteOutcome::Failed { error } => Some(error.clone()),
        _ => None,
    };
    WorkOutcome {
        success: matches!(outcome, RemoteOutcome::Completed { .. }),
        value: serde_json::to_value(outcome).unwrap_or(Value::Null),
        error,
        attempt,
    }
}

/// A compensation's outcome as the store keeps it.
pub fn from_undo(outcome: &Result<(), String>, attempt: i64) -> WorkOutcome {
    match outcome {
        Ok(()) => WorkOutcome::succeeded(Value::Null, attempt),
        Err(error) => WorkOutcome::failed(error.clone(), attempt),
    }
}

/// The step outcome a stored one stands for (one the store failed itself, say after its
/// deliveries ran out, is a failure with its reason).
pub fn to_step(outcome: &WorkOutcome) -> RemoteOutcome {
    serde_json::from_value(outcome.value.clone()).unwrap_or_else(|_| RemoteOutcome::Failed {
        error: outcome
            .error
            .clone()
            .unwrap_or_else(|| "the work failed without a reason".to_owned()),
    })
}

/// The compensation outcome a stored one stands for.
pub fn to_undo(outcome: &WorkOutcome) -> Result<(), String> {
    match (&outcome.error, outcome.success) {
        (None, true) => Ok(()),
        (error, _) => Err(error
            .clone()
            .unwrap_or_else(|| "the compensation failed without a reason".to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn outcomes_survive_the_store() {
        for outcome in [
            RemoteOutcome::Completed {
                value: json!({"id": 7}),
                call: Some("a#1".into()),
            },
            RemoteOutcome::Failed {
                error: "boom".into(),
            },
            RemoteOutcome::Parked,
        ] {
            assert_eq!(to_step(&from_step(&outcome, 1)), outcome);
        }
        assert_eq!(to_undo(&from_undo(&Err("no".into()), 2)), Err("no".into()));
        assert_eq!(to_undo(&from_undo(&Ok(()), 2)), Ok(()));
    }

    #[test]
    fn work_failed_by_the_store_is_a_step_failure_with_its_reason() {
        let exhausted = WorkOutcome {
            success: false,
            value: Value::Null,
            error: Some("delivered 5 times without a result".into()),
            attempt: 5,
        };
        assert_eq!(
            to_step(&exhausted),
            RemoteOutcome::Failed {
                error: "delivered 5 times without a result".into()
            }
        );
    }

    #[test]
    fn keys_name_their_run() {
        assert_eq!(run_of(&step_key("run-1", "a/b", 2)), "run-1");
        assert_eq!(run_of(&undo_key("run-1", "a", 0)), "run-1");
    }

    #[test]
    fn rounds_are_read_back_from_step_keys_only() {
        assert_eq!(round_of(&step_key("r", "a/b", 3)), Some(3));
        assert_eq!(round_of(&undo_key("r", "a", 3)), None);
        assert_eq!(round_of("nonsense"), None);
    }

    #[test]
    fn subjects_hold_only_safe_characters() {
        assert_eq!(done_subject("run-1a.b c*"), "agenthelm.done.run-1a_b_c_");
    }
}
