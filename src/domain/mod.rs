//! Pure types and rules: ids, the vocabulary, the task state machine, HITL transitions and input
//! validation. Nothing here does I/O or knows about HTTP or redb.

mod ids;
mod rules;
mod time;
mod vocab;
pub mod workflow;

pub use ids::Id;
pub use rules::{DomainError, Limits, TaskTransition, check_len, hitl_outcome, task_transition};
pub use time::{Micros, format_timestamp, now_micros};
pub use vocab::{
    AgentStatus, AgentType, ArtifactType, EventType, HitlAction, HitlStatus, OversightLevel,
    ProjectStatus, TaskStatus, Vocabulary,
};
