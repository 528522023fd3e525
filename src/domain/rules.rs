//! The rules of the domain: which transitions are legal and what input is acceptable.

use super::vocab::{EventType, HitlAction, HitlStatus, TaskStatus, Vocabulary};

/// Why a request cannot be carried out, in domain terms. The HTTP layer maps each variant to a
/// status and an error code in one table (`http::error`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// No record of this kind has this id. `kind` is `project`, `task`, `artifact`, `hitl_request`.
    #[error("{kind} {id} not found")]
    NotFound { kind: &'static str, id: String },
    /// The record exists but its state does not allow the change.
    #[error("{message}")]
    InvalidTransition { message: String },
    /// The request names its assignees and the answering key is not one of them.
    #[error("{message}")]
    NotAnAssignee { message: String },
    /// The record is not the API's to change (a workflow of the config file, or the built-in).
    #[error("{message}")]
    ReadOnly { message: String },
    /// A field is missing, ill-typed, out of range or refers to something that is not there.
    #[error("{field}: {message}")]
    InvalidField { field: String, message: String },
    /// A name new to the server would pass the most agent or artifact types it keeps.
    #[error("{field}: `{name}` would be the {kind} number {}, past the {max} this server keeps (--max-{}s)", max + 1, kind.replace('_', "-"))]
    TooManyTypes {
        field: String,
        kind: &'static str,
        name: String,
        max: usize,
    },
    /// The worker's claim is no longer the task's (its lease ran out, another worker holds it, or
    /// it named none): it must stop working on the task.
    #[error("{message}")]
    LeaseLost { message: String },
    /// The task was cancelled while the worker held it: it must stop.
    #[error("{message}")]
    TaskCancelled { message: String },
    /// An idempotency key came back with another request.
    #[error("{message}")]
    IdempotencyKeyReused { message: String },
}

impl DomainError {
    pub fn not_found(kind: &'static str, id: impl ToString) -> DomainError {
        DomainError::NotFound {
            kind,
            id: id.to_string(),
        }
    }

    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> DomainError {
        DomainError::InvalidField {
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn unknown_value<V: Vocabulary>(field: &str, got: &str) -> DomainError {
        DomainError::invalid(
            field,
            format!("unknown {} `{got}`; allowed: {}", V::KIND, V::allowed()),
        )
    }
}

/// A legal change of task status, named by the event it emits.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum TaskTransition {
    /// pending → working
    Start,
    /// working → completed
    Complete,
    /// working → failed
    Fail,
    /// pending | working | failed → cancelled
    Cancel,
    /// failed → pending
    Retry,
}

impl TaskTransition {
    pub fn event_type(self) -> EventType {
        match self {
            TaskTransition::Start => EventType::TaskStarted,
            TaskTransition::Complete => EventType::TaskCompleted,
            TaskTransition::Fail => EventType::TaskFailed,
            TaskTransition::Cancel => EventType::TaskCancelled,
            TaskTransition::Retry => EventType::TaskRetried,
        }
    }
}

/// The task state machine: pending → working → completed | failed; pending | working | failed →
/// cancelled (a failed task waiting for its retry, or failed for good, can be called off);
/// failed → pending (retry). Anything else is an invalid transition.
pub fn task_transition(from: TaskStatus, to: TaskStatus) -> Result<TaskTransition, DomainError> {
    use TaskStatus::{Cancelled, Completed, Failed, Pending, Working};
    let transition = match (from, to) {
        (Pending, Working) => TaskTransition::Start,
        (Working, Completed) => TaskTransition::Complete,
        (Working, Failed) => TaskTransition::Fail,
        (Pending | Working | Failed, Cancelled) => TaskTransition::Cancel,
        (Failed, Pending) => TaskTransition::Retry,
        _ => {
            return Err(DomainError::InvalidTransition {
                message: format!("a task cannot go from {from} to {to}"),
            });
        }
    };
    Ok(transition)
}

/// HITL: pending → approved | rejected | amended (by a human) or expired (by time), once.
pub fn hitl_outcome(current: HitlStatus, action: HitlAction) -> Result<HitlStatus, DomainError> {
    if current != HitlStatus::Pending {
        return Err(DomainError::InvalidTransition {
            message: format!("the HITL request is already {current}; it can be answered only once"),
        });
    }
    Ok(match action {
        HitlAction::Approve => HitlStatus::Approved,
        HitlAction::Reject => HitlStatus::Rejected,
        HitlAction::Amend => HitlStatus::Amended,
    })
}

/// Documented maximum lengths, in characters, of client-supplied strings and lists.
pub struct Limits;

impl Limits {
    pub const NAME: usize = 200;
    pub const DESCRIPTION: usize = 10_000;
    pub const INSTRUCTIONS: usize = 100_000;
    pub const QUESTION: usize = 10_000;
    pub const OPTION: usize = 500;
    pub const OPTIONS: usize = 50;
    pub const COMMENT: usize = 10_000;
    pub const ERROR_MESSAGE: usize = 10_000;
    pub const CONTEXT_IDS: usize = 1_000;
    /// Phases of one workflow definition.
    pub const PHASES: usize = 100;
    /// Workflow definitions stored through the API.
    pub const WORKFLOW_DEFINITIONS: usize = 1000;
    /// Bytes of upstream outputs a workflow phase's task carries in `workflow.upstream`, all
    /// phases together; outputs beyond are left out (the worker reads them from their tasks).
    pub const UPSTREAM_OUTPUT_BYTES: usize = 64 * 1024;
    pub const BATCH_IDS: usize = 1_000;
    pub const MAX_EXPIRES_IN_SECONDS: u64 = 365 * 24 * 3600;
}

/// Checks a string's length in characters, and that a required one is not blank.
pub fn check_len(field: &str, value: &str, max: usize, required: bool) -> Result<(), DomainError> {
    if required && value.trim().is_empty() {
        return Err(DomainError::invalid(field, "must not be empty"));
    }
    let chars = value.chars().count();
    if chars > max {
        return Err(DomainError::invalid(
            field,
            format!("is {chars} characters long; the maximum is {max}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use TaskStatus::*;

    #[test]
    fn task_transitions_follow_the_state_machine() {
        let legal = [
            (Pending, Working, TaskTransition::Start),
            (Working, Completed, TaskTransition::Complete),
            (Working, Failed, TaskTransition::Fail),
            (Pending, Cancelled, TaskTransition::Cancel),
            (Failed, Cancelled, TaskTransition::Cancel),
            (Working, Cancelled, TaskTransition::Cancel),
            (Failed, Pending, TaskTransition::Retry),
        ];
        for from in TaskStatus::ALL {
            for to in TaskStatus::ALL {
                let expected = legal
                    .iter()
                    .find(|(f, t, _)| f == from && t == to)
                    .map(|l| l.2);
                match (task_transition(*from, *to), expected) {
                    (Ok(got), Some(want)) => assert_eq!(got, want),
                    (Err(DomainError::InvalidTransition { .. }), None) => {}
                    (got, want) => panic!("{from} -> {to}: got {got:?}, want {want:?}"),
                }
            }
        }
    }

    #[test]
    fn hitl_is_answered_once() {
        assert_eq!(
            hitl_outcome(HitlStatus::Pending, HitlAction::Amend),
            Ok(HitlStatus::Amended)
        );
        for status in HitlStatus::ALL
            .iter()
            .filter(|s| **s != HitlStatus::Pending)
        {
            assert!(hitl_outcome(*status, HitlAction::Approve).is_err());
        }
    }

    #[test]
    fn lengths_are_counted_in_characters() {
        assert!(check_len("name", "ééé", 3, true).is_ok());
        assert!(check_len("name", "éééé", 3, true).is_err());
        assert!(check_len("name", "  ", 3, true).is_err());
        assert!(check_len("description", "", 3, false).is_ok());
    }
}
