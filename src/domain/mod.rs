//! Pure types and rules: ids, the vocabulary, the records, the task state machine and everything
//! that follows a task's change (`tasks`), HITL transitions,
//! workflows and input validation. Nothing here does I/O or knows about HTTP or redb.

pub mod budget;
mod ids;
pub mod names;
pub mod records;
mod rules;
pub mod tasks;
mod time;
pub mod usage;
mod vocab;
pub mod workflow;

pub use ids::Id;
pub use names::{AgentType, ArtifactType};
pub use rules::{DomainError, Limits, TaskTransition, check_len, hitl_outcome, task_transition};
pub use tasks::TaskSettings;
pub use time::{Micros, format_timestamp, now_micros};
pub use vocab::{
    AgentStatus, EventType, HitlAction, HitlStatus, OversightLevel, ProjectStatus, TaskStatus,
    Vocabulary,
};
