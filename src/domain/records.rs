//! The records the store keeps. The store encodes each with postcard behind a one-byte format
//! version (`store::codec`); field order is the encoding, so fields are only ever appended.
//! Client JSON (artifact content and metadata, task output, HITL content) is kept as the client's
//! text, validated once on the way in, and spliced into responses as it is.

use serde::{Deserialize, Serialize};

use crate::domain::{
    AgentStatus, AgentType, ArtifactType, HitlStatus, Id, Micros, OversightLevel, ProjectStatus,
    TaskStatus,
};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Project {
    pub id: Id,
    pub name: String,
    pub description: Option<String>,
    pub status: ProjectStatus,
    pub oversight_level: OversightLevel,
    pub created_at: Micros,
    pub updated_at: Micros,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Task {
    pub id: Id,
    pub project_id: Id,
    pub agent_type: AgentType,
    pub status: TaskStatus,
    pub instructions: String,
    /// Artifacts of the same project this task works from.
    pub context_ids: Vec<Id>,
    /// The client's JSON text.
    pub output: Option<String>,
    pub error_message: Option<String>,
    pub created_at: Micros,
    pub updated_at: Micros,
    pub started_at: Option<Micros>,
    pub completed_at: Option<Micros>,
    /// How many times the task has entered `working`.
    pub attempts: u32,
    /// How many of those attempts failed (by the worker, or by timing out).
    pub failures: u32,
    /// The worker holding the task while it works.
    pub worker_id: Option<String>,
    /// When the worker's claim runs out unless it heartbeats.
    pub lease_expires_at: Option<Micros>,
    /// When a failed task goes back to pending by itself.
    pub retry_at: Option<Micros>,
    /// When a working task has worked too long and counts as a failed attempt.
    pub timeout_at: Option<Micros>,
    /// The fencing token of the claim the task is working under: every later heartbeat and the
    /// completion or failure must carry it. None when it was not claimed (or not since schema 3).
    pub lease_id: Option<Id>,
    /// 1 (highest) to 5 (lowest): claims hand out the highest first.
    pub priority: u8,
    /// The worker's latest progress report (`{message?, percent?, data?, at}` as JSON text), as of
    /// the task's last durable change.
    pub progress: Option<String>,
    /// A workflow phase's task: JSON text of `{workflow, version, phase, upstream}`, the upstream
    /// being every phase it depends on, directly or not, by id, with its task, output and
    /// artifacts. None for a task a client created (and before schema 7).
    pub workflow: Option<String>,
}

/// The state of one agent type. Absent from the table means idle and never active.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Agent {
    pub agent_type: AgentType,
    pub status: AgentStatus,
    /// The task most recently started by this agent type, while any is working.
    pub current_task_id: Option<Id>,
    /// How many tasks of this agent type are working now; the status is `working` while it is > 0.
    pub working_tasks: u32,
    pub last_activity: Micros,
    pub error_message: Option<String>,
}

impl Agent {
    pub fn idle(agent_type: AgentType) -> Agent {
        Agent {
            agent_type,
            status: AgentStatus::Idle,
            current_task_id: None,
            working_tasks: 0,
            last_activity: 0,
            error_message: None,
        }
    }
}

/// One entry of an agent's status history, keyed by (agent type, event seq).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AgentHistoryEntry {
    pub seq: u64,
    pub agent_type: AgentType,
    pub status: AgentStatus,
    pub task_id: Option<Id>,
    pub error_message: Option<String>,
    pub at: Micros,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Artifact {
    pub id: Id,
    pub project_id: Id,
    pub source_agent: AgentType,
    pub artifact_type: ArtifactType,
    /// The client's JSON text.
    pub content: String,
    /// The client's JSON text.
    pub metadata: Option<String>,
    pub created_at: Micros,
    pub updated_at: Micros,
    /// 1 at creation, raised by every update.
    pub version: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HitlRequest {
    pub id: Id,
    pub project_id: Id,
    pub task_id: Option<Id>,
    pub question: String,
    pub options: Vec<String>,
    pub status: HitlStatus,
    pub created_at: Micros,
    pub updated_at: Micros,
    pub expires_at: Option<Micros>,
    pub responded_at: Option<Micros>,
    /// The client's JSON text of an amendment.
    pub amended_content: Option<String>,
    pub response_comment: Option<String>,
    pub history: Vec<HitlHistoryEntry>,
    /// The name of the API key that answered (None without keys, or before schema 4); `system`
    /// when its timeout answered it.
    pub responded_by: Option<String>,
    /// The API key names that may answer it (empty: any key with the reviewer role). Schema 7.
    pub assignees: Vec<String>,
    /// What its `expires_at` does when it passes (None: it expires). Schema 7.
    pub on_timeout: Option<HitlTimeout>,
}

/// A HITL request's timeout: after `seconds` unanswered it is rejected, approved, or escalated
/// to `escalate_to` (its assignees from then on) with a fresh `seconds`; an escalated request
/// that times out again expires.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HitlTimeout {
    pub seconds: u64,
    pub action: TimeoutAction,
    pub escalate_to: Vec<String>,
    /// It was escalated already: the next timeout expires it.
    pub escalated: bool,
}

/// What a HITL request's timeout does.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TimeoutAction {
    Reject,
    Approve,
    Escalate,
}

impl TimeoutAction {
    pub const ALL: [TimeoutAction; 3] = [
        TimeoutAction::Reject,
        TimeoutAction::Approve,
        TimeoutAction::Escalate,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TimeoutAction::Reject => "reject",
            TimeoutAction::Approve => "approve",
            TimeoutAction::Escalate => "escalate",
        }
    }

    pub fn parse(text: &str) -> Option<TimeoutAction> {
        TimeoutAction::ALL.into_iter().find(|a| a.as_str() == text)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HitlHistoryEntry {
    /// `created`, `approve`, `reject`, `amend` or `expire`.
    pub action: String,
    pub at: Micros,
    /// The client's JSON text.
    pub content: Option<String>,
    pub comment: Option<String>,
    /// The name of the API key that gave this answer (None without keys, for `created` and
    /// `expire`, and before schema 4).
    pub user_id: Option<String>,
}

/// Where a workflow phase stands.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PhaseStatus {
    Waiting,
    Running,
    AwaitingApproval,
    Done,
    /// Its task failed for good (or was cancelled by a client): the run failed with it.
    Failed,
    /// The run failed or was cancelled before this phase was done.
    Cancelled,
}

impl PhaseStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PhaseStatus::Waiting => "waiting",
            PhaseStatus::Running => "running",
            PhaseStatus::AwaitingApproval => "awaiting_approval",
            PhaseStatus::Done => "done",
            PhaseStatus::Failed => "failed",
            PhaseStatus::Cancelled => "cancelled",
        }
    }
}

/// Where a workflow run stands.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RunStatus {
    Running,
    /// Every phase is done (and the project completed).
    Completed,
    /// A phase's task failed for good; `WorkflowRun::reason` says which and why.
    Failed,
    /// `POST /api/v1/projects/{id}/workflow/cancel`.
    Cancelled,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Completed => "completed",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
        }
    }
}

/// One phase of a running workflow, with its definition copied in when the workflow started.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PhaseRun {
    pub agent_type: AgentType,
    pub instructions: String,
    pub produces: Vec<ArtifactType>,
    /// Whether the hand-off after it waits for a human (decided at start from the oversight level).
    pub gated: bool,
    pub status: PhaseStatus,
    pub task_id: Option<Id>,
    /// The HITL request gating the hand-off, while it waits.
    pub gate_id: Option<Id>,
    /// The priority of the phase's task.
    pub priority: u8,
    /// The phase's id in its definition (unique in the run).
    pub id: String,
    /// The phases (indexes into the run's) whose completion it waits for.
    pub depends_on: Vec<u32>,
    /// A fan-out: the phase (index) whose task's output holds the list, and the path to it in
    /// that output (`sections`, `plan.parts`).
    pub for_each: Option<(u32, String)>,
    /// A fan-out's tasks, one per element of the list, in its order.
    pub items: Vec<Id>,
    /// How many of them have completed (the phase is done, or gated, when all have).
    pub items_done: u32,
    /// The gate's timeout (`gate_timeout_seconds`, `gate_on_timeout`, `gate_escalate_to`).
    pub gate_timeout: Option<HitlTimeout>,
    /// Who may answer the gate (`gate_assignees`; empty: any reviewer).
    pub gate_assignees: Vec<String>,
}

/// A project's workflow, keyed by project.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkflowRun {
    pub project_id: Id,
    pub workflow: String,
    /// The client's JSON text.
    pub context: Option<String>,
    pub phases: Vec<PhaseRun>,
    pub status: RunStatus,
    pub started_at: Micros,
    /// When it completed, failed or was cancelled.
    pub completed_at: Option<Micros>,
    /// The version of the definition it started with (1 for the built-in and the config file's).
    pub version: u32,
    /// Why it failed or was cancelled.
    pub reason: Option<String>,
}

impl WorkflowRun {
    pub fn is_running(&self) -> bool {
        self.status == RunStatus::Running
    }
}

/// A workflow definition stored through the API (`PUT /api/v1/workflows/{name}`), by name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredWorkflow {
    /// 1 at creation, raised by every change (a re-creation after a delete goes on counting).
    pub version: u32,
    /// The definition's JSON text (`{phases: [...]}`) as the client sent it; None once deleted.
    pub json: Option<String>,
    pub created_at: Micros,
    pub updated_at: Micros,
}

/// How an operator steers one agent type's queue; absent from the table means running, no limit.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueSettings {
    /// A paused queue hands out nothing; its tasks stay pending.
    pub paused: bool,
    /// No claim beyond this many working tasks of the type.
    pub max_working: Option<u32>,
}

/// A create remembered under its idempotency key: which request it was, and what it produced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotencyRecord {
    /// A digest of the request body.
    pub fingerprint: [u8; 20],
    /// The command's output, encoded as the store encodes records.
    pub output: Vec<u8>,
    pub at: Micros,
}

/// An event a webhook could not deliver (`webhooks`): kept, with why, until retried or discarded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub event_type: String,
    /// The event's frame (JSON text), as the log held it: a retry posts it even after the log
    /// was trimmed.
    pub frame: String,
    /// The last attempt's error.
    pub error: String,
    /// Attempts made, retries included.
    pub attempts: u32,
    /// When it was put here (or last retried).
    pub at: Micros,
}

/// One entry of the event log: the frame's JSON text and, for the index, its project.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    pub project_id: Option<Id>,
    pub json: String,
}
