//! What happens to a task, its agent and its HITL requests when their state changes: every
//! transition (the client's, a claim's, a lease running out, a work timeout, a retry, a gate
//! reopening a completed task), the retry backoff, the escalation to a human after the last failed
//! attempt, the agent status that follows its tasks, and HITL answers and expiry. Pure: the writer
//! reads the records, asks these functions and writes what they answer.

use super::ids::Id;
use super::records::{Agent, HitlHistoryEntry, HitlRequest, Task};
use super::rules::{DomainError, TaskTransition, hitl_outcome};
use super::time::Micros;
use super::vocab::{AgentStatus, EventType, HitlAction, HitlStatus, TaskStatus, Vocabulary};

/// A task's priority: 1 is the highest, 5 the lowest.
pub const PRIORITIES: std::ops::RangeInclusive<u8> = 1..=5;
/// The priority of a task that was given none.
pub const DEFAULT_PRIORITY: u8 = 3;

/// Checks a priority given by a client or a definition.
pub fn check_priority(field: &str, priority: u64) -> Result<u8, DomainError> {
    u8::try_from(priority)
        .ok()
        .filter(|p| PRIORITIES.contains(p))
        .ok_or_else(|| {
            DomainError::invalid(field, format!("{priority} is not a priority from 1 to 5"))
        })
}

/// How workers' tasks are timed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskSettings {
    /// A working task older than this counts as a failed attempt (microseconds).
    pub task_timeout: Micros,
    /// Failed attempts after which a task stays failed and is escalated to a human.
    pub max_attempts: u32,
    /// The first retry's delay; each further one doubles it (microseconds).
    pub retry_backoff: Micros,
    /// A claim's lease when the worker does not ask for one (microseconds).
    pub default_lease: Micros,
    /// The longest a claim may wait for work (`wait_ms`), in microseconds.
    pub max_claim_wait: Micros,
}

impl Default for TaskSettings {
    fn default() -> TaskSettings {
        TaskSettings {
            task_timeout: 300_000_000,
            max_attempts: 3,
            retry_backoff: 1_000_000,
            default_lease: 60_000_000,
            max_claim_wait: 30_000_000,
        }
    }
}

impl TaskSettings {
    /// The delay before the retry that follows the `failures`-th failed attempt (1-based): the
    /// backoff, doubled for each earlier failure (at most 2^20 times).
    pub fn backoff(&self, failures: u32) -> Micros {
        self.retry_backoff
            .saturating_mul(1 << failures.saturating_sub(1).min(20))
    }

    /// The message a task timed out with.
    pub fn timeout_message(&self) -> String {
        format!(
            "timed out: working for longer than {} ms",
            self.task_timeout / 1000
        )
    }
}

/// How a task's status changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TaskChange {
    /// A transition of the state machine (`rules::task_transition`), asked by a client, a claim
    /// (`Start`) or a timer (`Fail` on a work timeout, `Retry` when a retry is due).
    To(TaskTransition),
    /// working → pending: the worker's lease ran out.
    LeaseExpired,
    /// working → pending: a budget over the task is exhausted; its worker must stop.
    HeldByBudget,
    /// completed → pending: a human rejected the work at a workflow gate; `feedback` is appended to
    /// the instructions.
    Reopened { feedback: String },
}

/// A worker taking a task, until `expires_at` unless it heartbeats; `lease_id` is the claim's
/// fencing token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub worker_id: String,
    pub expires_at: Micros,
    pub lease_id: Id,
}

/// Whether a worker presenting `given` still holds the task's claim. A claimed task accepts only
/// its current lease id; a task worked without a claim (BotArmy's `working` status) accepts only
/// none, so a stale worker whose lease went to a status change is refused too.
pub fn fence(task: &Task, given: Option<Id>) -> Result<(), DomainError> {
    match (task.lease_id, given) {
        (Some(held), Some(given)) if held == given => Ok(()),
        (None, None) => Ok(()),
        (Some(_), None) => Err(DomainError::LeaseLost {
            message: format!("task {} is held under a claim: give its lease_id", task.id),
        }),
        (_, Some(given)) => Err(DomainError::LeaseLost {
            message: format!(
                "lease {given} no longer holds task {} (it is {}); stop working on it",
                task.id, task.status
            ),
        }),
    }
}

/// A worker's status change of a task out of `working` (completed or failed) must come with the
/// task's claim; any other change (a cancel, a retry, BotArmy's `working`) needs none, but one
/// that names a lease is held to it.
pub fn fence_status_change(
    task: &Task,
    to: TaskStatus,
    given: Option<Id>,
) -> Result<(), DomainError> {
    let finishing = matches!(to, TaskStatus::Completed | TaskStatus::Failed);
    if finishing || given.is_some() {
        fence(task, given)?;
    }
    Ok(())
}

/// What a change of a task's status comes to.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskUpdate {
    pub task: Task,
    pub event: EventType,
    /// The last allowed attempt failed: the agent goes to `error` and a human is asked.
    pub escalate: bool,
}

/// What a change of status brings with it besides the change itself.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TaskEdits {
    /// The claim's lease, when the change starts the task.
    pub lease: Option<Lease>,
    /// Replaces the task's output.
    pub output: Option<String>,
    /// Replaces the task's error message.
    pub error_message: Option<String>,
}

/// Applies a change to a task: its status, timestamps, attempts and failures, the retry time or
/// escalation, the lease, and the `edits` given.
pub fn change_task(
    old: &Task,
    change: TaskChange,
    edits: TaskEdits,
    now: Micros,
    settings: &TaskSettings,
) -> TaskUpdate {
    let TaskEdits {
        lease,
        output,
        error_message,
    } = edits;
    let mut task = old.clone();
    task.updated_at = now;
    if output.is_some() {
        task.output = output;
    }
    if error_message.is_some() {
        task.error_message = error_message;
    }
    let mut escalate = false;
    let event = match change {
        TaskChange::To(transition) => {
            task.status = match transition {
                TaskTransition::Start => TaskStatus::Working,
                TaskTransition::Complete => TaskStatus::Completed,
                TaskTransition::Fail => TaskStatus::Failed,
                TaskTransition::Cancel => TaskStatus::Cancelled,
                TaskTransition::Retry => TaskStatus::Pending,
            };
            match transition {
                TaskTransition::Start => {
                    task.started_at = Some(now);
                    task.timeout_at = Some(now.saturating_add(settings.task_timeout));
                    task.attempts += 1;
                    task.error_message = None;
                    task.completed_at = None;
                }
                TaskTransition::Complete | TaskTransition::Cancel => {
                    task.completed_at = Some(now);
                    task.retry_at = None;
                }
                TaskTransition::Fail => {
                    task.completed_at = Some(now);
                    task.failures += 1;
                    if task.failures < settings.max_attempts {
                        task.retry_at = Some(now.saturating_add(settings.backoff(task.failures)));
                    } else {
                        task.retry_at = None;
                        escalate = true;
                    }
                }
                TaskTransition::Retry => {
                    task.completed_at = None;
                    task.retry_at = None;
                }
            }
            transition.event_type()
        }
        TaskChange::LeaseExpired => {
            task.status = TaskStatus::Pending;
            EventType::TaskLeaseExpired
        }
        TaskChange::HeldByBudget => {
            task.status = TaskStatus::Pending;
            EventType::TaskHeld
        }
        TaskChange::Reopened { feedback } => {
            task.status = TaskStatus::Pending;
            task.completed_at = None;
            task.instructions
                .push_str(&format!("\n\nReviewer feedback: {feedback}"));
            EventType::TaskReopened
        }
    };
    match lease {
        Some(lease) => {
            task.worker_id = Some(lease.worker_id);
            task.lease_expires_at = Some(lease.expires_at);
            task.lease_id = Some(lease.lease_id);
        }
        None if task.status != TaskStatus::Working => {
            task.worker_id = None;
            task.lease_expires_at = None;
            task.timeout_at = None;
            task.lease_id = None;
        }
        // Moved to working without a claim: no lease to fence with.
        None if old.status != TaskStatus::Working => task.lease_id = None,
        None => {}
    }
    TaskUpdate {
        task,
        event,
        escalate,
    }
}

/// Who a heartbeat says it comes from: the worker (checked when given) and its claim's lease.
#[derive(Copy, Clone, Debug, Default)]
pub struct Holder<'a> {
    pub worker_id: Option<&'a str>,
    pub lease_id: Option<Id>,
}

/// A heartbeat: the working task's lease extended to `expires_at`. Only the holder of its claim
/// may (`fence`), and only its worker when the heartbeat names one; a cancelled task says so.
pub fn heartbeat(
    old: &Task,
    holder: Holder<'_>,
    expires_at: Micros,
    now: Micros,
) -> Result<Task, DomainError> {
    let Holder {
        worker_id,
        lease_id,
    } = holder;
    if old.status == TaskStatus::Cancelled {
        return Err(DomainError::TaskCancelled {
            message: format!("task {} was cancelled; stop working on it", old.id),
        });
    }
    fence(old, lease_id)?;
    if old.status != TaskStatus::Working {
        return Err(DomainError::InvalidTransition {
            message: format!(
                "task {} is {}, not working: there is no lease to extend",
                old.id, old.status
            ),
        });
    }
    if let (Some(asked), Some(holder)) = (worker_id, old.worker_id.as_deref())
        && asked != holder
    {
        return Err(DomainError::InvalidTransition {
            message: format!("task {} is claimed by another worker", old.id),
        });
    }
    let mut task = old.clone();
    task.lease_expires_at = Some(expires_at);
    task.updated_at = now;
    Ok(task)
}

/// What a task's timer does at `now`, if its record still calls for it.
pub fn due_change(task: &Task, now: Micros) -> Option<TaskChange> {
    let due = |at: Option<Micros>| at.filter(|at| *at <= now);
    match task.status {
        // Both due: the earlier deadline acts (a lease first on a tie), as the timers are ordered.
        TaskStatus::Working => match (due(task.lease_expires_at), due(task.timeout_at)) {
            (Some(lease), Some(timeout)) if timeout < lease => {
                Some(TaskChange::To(TaskTransition::Fail))
            }
            (Some(_), _) => Some(TaskChange::LeaseExpired),
            (None, Some(_)) => Some(TaskChange::To(TaskTransition::Fail)),
            (None, None) => None,
        },
        TaskStatus::Failed if due(task.retry_at).is_some() => {
            Some(TaskChange::To(TaskTransition::Retry))
        }
        _ => None,
    }
}

/// The agent after one of its tasks changed from `old` to `new`: working while it holds a working
/// task; idle when its last one stops; `error`, with the reason, when the task was escalated.
/// `last_activity` moves only when something else changed.
pub fn agent_follows(agent: &Agent, old: &Task, new: &Task, escalate: bool, now: Micros) -> Agent {
    let mut next = agent.clone();
    if new.status == TaskStatus::Working {
        next.working_tasks += 1;
        next.current_task_id = Some(new.id);
        next.status = AgentStatus::Working;
        next.error_message = None;
    } else if old.status == TaskStatus::Working {
        next.working_tasks = next.working_tasks.saturating_sub(1);
        if next.current_task_id == Some(new.id) {
            next.current_task_id = None;
        }
        if new.status == TaskStatus::Failed {
            next.error_message = new.error_message.clone();
        }
        if next.working_tasks == 0 && next.status == AgentStatus::Working {
            next.status = AgentStatus::Idle;
        }
    }
    if escalate {
        next.status = AgentStatus::Error;
        next.error_message = Some(format!(
            "task {} failed {} times: {}",
            new.id,
            new.failures,
            new.error_message.as_deref().unwrap_or("no error message")
        ));
    }
    if next != *agent {
        next.last_activity = now;
    }
    next
}

/// An agent reset by an operator: idle, no current task, no error.
pub fn reset_agent(agent: &Agent, now: Micros) -> Agent {
    let mut next = agent.clone();
    next.status = AgentStatus::Idle;
    next.current_task_id = None;
    next.error_message = None;
    next.last_activity = now;
    next
}

/// The question and options of the HITL request an escalated task raises.
pub fn escalation(task: &Task) -> (String, Vec<String>) {
    let question = format!(
        "Task {} ({}) failed {} times, last with: {}. Retry it or cancel it?",
        task.id,
        task.agent_type,
        task.failures,
        task.error_message.as_deref().unwrap_or("no error message")
    );
    (question, vec!["retry".into(), "cancel".into()])
}

/// A new pending HITL request's expiry: `expires_in_seconds` from now.
pub fn hitl_expiry(now: Micros, expires_in_seconds: Option<u64>) -> Option<Micros> {
    expires_in_seconds.map(|s| {
        now.saturating_add(
            i64::try_from(s)
                .unwrap_or(i64::MAX)
                .saturating_mul(1_000_000),
        )
    })
}

/// Whether a pending request's expiry has passed at `now` (it can no longer be answered).
pub fn hitl_expired(request: &HitlRequest, now: Micros) -> bool {
    request.status == HitlStatus::Pending && request.expires_at.is_some_and(|at| at <= now)
}

/// What comes with an answer to a HITL request besides its action.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HitlReply {
    /// The amended content (required to amend).
    pub content: Option<String>,
    pub comment: Option<String>,
    /// Who answered: the key's name (none when keys are off).
    pub by: Option<String>,
}

/// A human's answer to a pending request, given by `by` (the API key's name; None without keys).
/// Amending requires content.
pub fn answer_hitl(
    old: &HitlRequest,
    action: HitlAction,
    reply: HitlReply,
    now: Micros,
) -> Result<HitlRequest, DomainError> {
    let HitlReply {
        content,
        comment,
        by,
    } = reply;
    let status = hitl_outcome(old.status, action)?;
    // Without API keys nobody is named: assignees are a rule between keys.
    if let Some(by) = &by
        && !old.assignees.is_empty()
        && !old.assignees.contains(by)
    {
        return Err(DomainError::NotAnAssignee {
            message: format!(
                "not_an_assignee: request {} is for {}; API key {by:?} may not answer it",
                old.id,
                old.assignees.join(", ")
            ),
        });
    }
    if action == HitlAction::Amend && content.is_none() {
        return Err(DomainError::invalid("content", "is required to amend"));
    }
    let mut request = old.clone();
    request.status = status;
    request.updated_at = now;
    request.responded_at = Some(now);
    request.response_comment = comment.clone();
    if action == HitlAction::Amend {
        request.amended_content = content.clone();
    }
    request.responded_by = by.clone();
    request.history.push(HitlHistoryEntry {
        action: action.as_str().into(),
        at: now,
        content,
        comment,
        user_id: by,
    });
    Ok(request)
}

/// A pending request whose time ran out.
/// Most API key names a request's `assignees` or `escalate_to` lists.
pub const MAX_KEY_NAMES: usize = 20;

/// API key names as a request names them: 1 to 64 of `A-Z a-z 0-9 . _ -` each, at most
/// `MAX_KEY_NAMES`, none twice.
pub fn check_key_names(field: &str, names: &[String]) -> Result<(), DomainError> {
    if names.len() > MAX_KEY_NAMES {
        return Err(DomainError::invalid(
            field,
            format!("at most {MAX_KEY_NAMES} names"),
        ));
    }
    for (i, name) in names.iter().enumerate() {
        let ok = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !ok {
            return Err(DomainError::invalid(
                format!("{field}[{i}]"),
                format!("`{name}` is not an API key name (1 to 64 of A-Z a-z 0-9 . _ -)"),
            ));
        }
        if names[..i].contains(name) {
            return Err(DomainError::invalid(
                format!("{field}[{i}]"),
                format!("names `{name}` twice"),
            ));
        }
    }
    Ok(())
}

/// A request's timeout from its fields (`[seconds, on_timeout, escalate_to]` name them):
/// `on_timeout` defaults to `reject`; `escalate` needs `escalate_to`, which nothing else takes.
pub fn hitl_timeout(
    fields: [&str; 3],
    seconds: Option<u64>,
    on_timeout: Option<&str>,
    escalate_to: &[String],
) -> Result<Option<crate::domain::records::HitlTimeout>, DomainError> {
    use crate::domain::records::{HitlTimeout, TimeoutAction};
    let [seconds_field, action_field, escalate_field] = fields;
    let Some(seconds) = seconds else {
        if on_timeout.is_some() {
            return Err(DomainError::invalid(
                action_field,
                format!("needs {seconds_field}"),
            ));
        }
        if !escalate_to.is_empty() {
            return Err(DomainError::invalid(
                escalate_field,
                format!("needs {seconds_field}"),
            ));
        }
        return Ok(None);
    };
    if seconds == 0 || seconds > crate::domain::Limits::MAX_EXPIRES_IN_SECONDS {
        return Err(DomainError::invalid(
            seconds_field,
            format!(
                "must be from 1 to {}",
                crate::domain::Limits::MAX_EXPIRES_IN_SECONDS
            ),
        ));
    }
    let action = match on_timeout {
        None => TimeoutAction::Reject,
        Some(text) => TimeoutAction::parse(text).ok_or_else(|| {
            DomainError::invalid(
                action_field,
                format!("`{text}` is not one of reject, approve, escalate"),
            )
        })?,
    };
    check_key_names(escalate_field, escalate_to)?;
    match (action, escalate_to.is_empty()) {
        (TimeoutAction::Escalate, true) => {
            return Err(DomainError::invalid(
                escalate_field,
                "names nobody: escalate needs the API key names to escalate to",
            ));
        }
        (TimeoutAction::Reject | TimeoutAction::Approve, false) => {
            return Err(DomainError::invalid(
                escalate_field,
                format!("is only for {action_field} escalate"),
            ));
        }
        _ => {}
    }
    Ok(Some(HitlTimeout {
        seconds,
        action,
        escalate_to: escalate_to.to_vec(),
        escalated: false,
    }))
}

/// Who answers a request whose timeout passed, in its history and `responded_by`.
pub const SYSTEM: &str = "system";

/// What a pending request's timeout does when its `expires_at` passes.
#[derive(Clone, Debug, PartialEq)]
pub enum TimedOut {
    /// Approved or rejected by the system.
    Answered(HitlRequest, HitlAction),
    /// Open to the escalation reviewers, with a fresh timeout.
    Escalated(HitlRequest),
    /// Nothing left to do (no timeout action, or escalated once already): expired.
    Expired(HitlRequest),
}

pub fn time_out_hitl(old: &HitlRequest, now: Micros) -> TimedOut {
    use crate::domain::records::TimeoutAction;
    let Some(timeout) = old.on_timeout.as_ref().filter(|t| !t.escalated) else {
        let mut request = expire_hitl(old, now);
        if old.on_timeout.is_some()
            && let Some(entry) = request.history.last_mut()
        {
            entry.user_id = Some(SYSTEM.into());
        }
        return TimedOut::Expired(request);
    };
    let comment = Some(format!("timed out after {} s", timeout.seconds));
    let action = match timeout.action {
        TimeoutAction::Approve => HitlAction::Approve,
        TimeoutAction::Reject => HitlAction::Reject,
        TimeoutAction::Escalate => {
            let mut request = old.clone();
            request.assignees = timeout.escalate_to.clone();
            request.expires_at = hitl_expiry(now, Some(timeout.seconds));
            request.updated_at = now;
            request.on_timeout = Some(crate::domain::records::HitlTimeout {
                escalated: true,
                ..timeout.clone()
            });
            request.history.push(HitlHistoryEntry {
                action: "escalate".into(),
                at: now,
                content: None,
                comment: Some(format!(
                    "timed out after {} s; escalated to {}",
                    timeout.seconds,
                    timeout.escalate_to.join(", ")
                )),
                user_id: Some(SYSTEM.into()),
            });
            return TimedOut::Escalated(request);
        }
    };
    let mut request = old.clone();
    request.status = match action {
        HitlAction::Approve => HitlStatus::Approved,
        _ => HitlStatus::Rejected,
    };
    request.updated_at = now;
    request.responded_at = Some(now);
    request.response_comment = comment.clone();
    request.responded_by = Some(SYSTEM.into());
    request.history.push(HitlHistoryEntry {
        action: action.as_str().into(),
        at: now,
        content: None,
        comment,
        user_id: Some(SYSTEM.into()),
    });
    TimedOut::Answered(request, action)
}

pub fn expire_hitl(old: &HitlRequest, now: Micros) -> HitlRequest {
    let mut request = old.clone();
    request.status = HitlStatus::Expired;
    request.updated_at = now;
    request.history.push(HitlHistoryEntry {
        action: "expire".into(),
        at: now,
        content: None,
        comment: None,
        user_id: None,
    });
    request
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{AgentType, Id};

    fn settings() -> TaskSettings {
        TaskSettings {
            task_timeout: 10_000,
            max_attempts: 3,
            retry_backoff: 100,
            default_lease: 1_000,
            max_claim_wait: 1_000,
        }
    }

    fn task(status: TaskStatus) -> Task {
        Task {
            id: Id::new_v7(),
            project_id: Id::new_v7(),
            agent_type: AgentType::CODER,
            status,
            instructions: "do it".into(),
            context_ids: vec![],
            output: None,
            error_message: None,
            created_at: 0,
            updated_at: 0,
            started_at: None,
            completed_at: None,
            attempts: 0,
            failures: 0,
            worker_id: None,
            lease_expires_at: None,
            retry_at: None,
            timeout_at: None,
            lease_id: None,
            priority: DEFAULT_PRIORITY,
            progress: None,
            workflow: None,
        }
    }

    fn claim(t: &Task, now: Micros) -> Task {
        let lease = Lease {
            worker_id: "w1".into(),
            expires_at: now + 1_000,
            lease_id: Id::new_v7(),
        };
        let s = settings();
        change_task(
            t,
            TaskChange::To(TaskTransition::Start),
            TaskEdits {
                lease: Some(lease),
                ..TaskEdits::default()
            },
            now,
            &s,
        )
        .task
    }

    #[test]
    fn a_claim_starts_an_attempt_under_a_lease_with_a_timeout() {
        let t = claim(&task(TaskStatus::Pending), 50);
        assert_eq!(t.status, TaskStatus::Working);
        assert_eq!(t.attempts, 1);
        assert_eq!(t.worker_id.as_deref(), Some("w1"));
        assert_eq!(t.lease_expires_at, Some(1_050));
        assert_eq!(t.timeout_at, Some(10_050));
        assert_eq!(t.started_at, Some(50));
    }

    #[test]
    fn failures_back_off_doubling_then_escalate_on_the_last_attempt() {
        let s = settings();
        let mut t = task(TaskStatus::Pending);
        let mut retries = Vec::new();
        for round in 0..3 {
            let now = 1_000 * (round + 1);
            t = claim(&t, now);
            let update = change_task(
                &t,
                TaskChange::To(TaskTransition::Fail),
                TaskEdits {
                    error_message: Some("boom".into()),
                    ..TaskEdits::default()
                },
                now,
                &s,
            );
            t = update.task;
            assert_eq!(t.status, TaskStatus::Failed);
            assert_eq!(t.worker_id, None, "the lease is released");
            assert_eq!(t.timeout_at, None);
            if round < 2 {
                assert!(!update.escalate);
                retries.push(t.retry_at.unwrap() - now);
                let due = due_change(&t, t.retry_at.unwrap()).unwrap();
                assert_eq!(due, TaskChange::To(TaskTransition::Retry));
                assert_eq!(due_change(&t, t.retry_at.unwrap() - 1), None);
                t = change_task(&t, due, TaskEdits::default(), now, &s).task;
                assert_eq!(t.status, TaskStatus::Pending);
            } else {
                assert!(update.escalate);
                assert_eq!(t.retry_at, None);
            }
        }
        assert_eq!(retries, vec![100, 200]);
        assert_eq!(t.failures, 3);
        assert_eq!(t.attempts, 3);
    }

    #[test]
    fn a_lease_runs_out_before_the_work_timeout() {
        let t = claim(&task(TaskStatus::Pending), 0);
        assert_eq!(due_change(&t, 999), None);
        assert_eq!(due_change(&t, 1_000), Some(TaskChange::LeaseExpired));
        let mut extended = heartbeat(
            &t,
            Holder {
                worker_id: Some("w1"),
                lease_id: t.lease_id,
            },
            20_000,
            500,
        )
        .unwrap();
        assert_eq!(
            due_change(&extended, 10_000),
            Some(TaskChange::To(TaskTransition::Fail))
        );
        extended = change_task(
            &extended,
            TaskChange::LeaseExpired,
            TaskEdits::default(),
            20_000,
            &settings(),
        )
        .task;
        assert_eq!(extended.status, TaskStatus::Pending);
        assert_eq!(extended.lease_expires_at, None);
        assert_eq!(extended.worker_id, None);
    }

    #[test]
    fn only_the_holder_heartbeats_and_only_while_working() {
        let t = claim(&task(TaskStatus::Pending), 0);
        assert!(
            heartbeat(
                &t,
                Holder {
                    worker_id: Some("w2"),
                    lease_id: t.lease_id
                },
                5,
                1
            )
            .is_err()
        );
        let extended = heartbeat(
            &t,
            Holder {
                worker_id: None,
                lease_id: t.lease_id,
            },
            5,
            1,
        )
        .unwrap();
        assert_eq!(extended.lease_expires_at, Some(5));
        assert!(
            heartbeat(
                &task(TaskStatus::Pending),
                Holder {
                    worker_id: None,
                    lease_id: None
                },
                5,
                1
            )
            .is_err()
        );
    }

    #[test]
    fn only_the_current_claim_finishes_or_heartbeats_a_claimed_task() {
        let first = claim(&task(TaskStatus::Pending), 0);
        let stale = first.lease_id;
        assert!(stale.is_some());
        // The lease runs out; another worker claims the task under a fresh lease.
        let s = settings();
        let expired = change_task(
            &first,
            TaskChange::LeaseExpired,
            TaskEdits::default(),
            2_000,
            &s,
        )
        .task;
        assert_eq!(expired.lease_id, None);
        let second = claim(&expired, 2_000);
        assert_ne!(second.lease_id, stale);
        let lost = |r: Result<(), DomainError>| matches!(r, Err(DomainError::LeaseLost { .. }));
        assert!(lost(fence_status_change(
            &second,
            TaskStatus::Completed,
            stale
        )));
        assert!(lost(fence_status_change(&second, TaskStatus::Failed, None)));
        assert!(fence_status_change(&second, TaskStatus::Completed, second.lease_id).is_ok());
        // A human's cancel needs no lease; a stale heartbeat is refused, a cancelled task says so.
        assert!(fence_status_change(&second, TaskStatus::Cancelled, None).is_ok());
        assert!(matches!(
            heartbeat(
                &second,
                Holder {
                    worker_id: None,
                    lease_id: stale
                },
                9,
                3
            ),
            Err(DomainError::LeaseLost { .. })
        ));
        let cancelled = change_task(
            &second,
            TaskChange::To(TaskTransition::Cancel),
            TaskEdits::default(),
            3_000,
            &s,
        )
        .task;
        assert!(matches!(
            heartbeat(
                &cancelled,
                Holder {
                    worker_id: None,
                    lease_id: second.lease_id
                },
                9,
                3
            ),
            Err(DomainError::TaskCancelled { .. })
        ));
        // The pending task after expiry: the stale worker's completion is a lost lease.
        assert!(lost(fence_status_change(
            &expired,
            TaskStatus::Completed,
            stale
        )));
        // Worked without a claim (BotArmy's `working`): no lease is needed, and none is accepted.
        let unclaimed = change_task(
            &task(TaskStatus::Pending),
            TaskChange::To(TaskTransition::Start),
            TaskEdits::default(),
            0,
            &s,
        )
        .task;
        assert_eq!(unclaimed.lease_id, None);
        assert!(fence_status_change(&unclaimed, TaskStatus::Completed, None).is_ok());
        assert!(lost(fence_status_change(
            &unclaimed,
            TaskStatus::Completed,
            stale
        )));
    }

    #[test]
    fn a_reopened_task_is_pending_with_the_feedback() {
        let mut t = task(TaskStatus::Completed);
        t.completed_at = Some(9);
        let update = change_task(
            &t,
            TaskChange::Reopened {
                feedback: "more tests".into(),
            },
            TaskEdits::default(),
            10,
            &settings(),
        );
        assert_eq!(update.event, EventType::TaskReopened);
        assert_eq!(update.task.status, TaskStatus::Pending);
        assert_eq!(update.task.completed_at, None);
        assert!(
            update
                .task
                .instructions
                .ends_with("\n\nReviewer feedback: more tests")
        );
    }

    #[test]
    fn the_agent_follows_its_tasks() {
        let idle = Agent::idle(AgentType::CODER);
        let pending = task(TaskStatus::Pending);
        let working = claim(&pending, 5);
        let busy = agent_follows(&idle, &pending, &working, false, 5);
        assert_eq!(busy.status, AgentStatus::Working);
        assert_eq!(busy.working_tasks, 1);
        assert_eq!(busy.current_task_id, Some(working.id));
        assert_eq!(busy.last_activity, 5);
        let mut failed = working.clone();
        failed.status = TaskStatus::Failed;
        failed.failures = 3;
        failed.error_message = Some("boom".into());
        let after = agent_follows(&busy, &working, &failed, true, 9);
        assert_eq!(after.status, AgentStatus::Error);
        assert_eq!(after.working_tasks, 0);
        assert_eq!(after.current_task_id, None);
        assert!(
            after
                .error_message
                .unwrap()
                .contains("failed 3 times: boom")
        );
        // A change that does not touch the agent leaves it as it was, activity included.
        let unchanged = agent_follows(&idle, &pending, &pending, false, 99);
        assert_eq!(unchanged, idle);
        assert_eq!(reset_agent(&busy, 7).status, AgentStatus::Idle);
    }

    /// A pending request asked at 0, expiring at `expires_at`.
    fn pending_request(expires_at: Option<Micros>) -> HitlRequest {
        HitlRequest {
            id: Id::new_v7(),
            project_id: Id::new_v7(),
            task_id: None,
            question: "ok?".into(),
            options: vec![],
            status: HitlStatus::Pending,
            created_at: 0,
            updated_at: 0,
            expires_at,
            responded_at: None,
            amended_content: None,
            response_comment: None,
            history: vec![],
            responded_by: None,
            assignees: vec![],
            on_timeout: None,
        }
    }

    #[test]
    fn a_hitl_request_is_answered_once_and_amend_needs_content() {
        let request = pending_request(Some(100));
        assert!(
            answer_hitl(
                &request,
                HitlAction::Amend,
                HitlReply {
                    content: None,
                    comment: None,
                    by: None
                },
                1
            )
            .is_err()
        );
        let amended = answer_hitl(
            &request,
            HitlAction::Amend,
            HitlReply {
                content: Some("{}".into()),
                comment: None,
                by: Some("alice".into()),
            },
            1,
        )
        .unwrap();
        assert_eq!(amended.responded_by.as_deref(), Some("alice"));
        assert_eq!(
            amended.history.last().unwrap().user_id.as_deref(),
            Some("alice")
        );
        assert_eq!(amended.status, HitlStatus::Amended);
        assert_eq!(amended.amended_content.as_deref(), Some("{}"));
        assert!(
            answer_hitl(
                &amended,
                HitlAction::Approve,
                HitlReply {
                    content: None,
                    comment: None,
                    by: None
                },
                2
            )
            .is_err()
        );
        assert!(!hitl_expired(&request, 99));
        assert!(hitl_expired(&request, 100));
        let expired = expire_hitl(&request, 100);
        assert_eq!(expired.status, HitlStatus::Expired);
        assert_eq!(expired.history.last().unwrap().action, "expire");
        assert_eq!(hitl_expiry(10, Some(2)), Some(2_000_010));
    }

    #[test]
    fn assignees_alone_answer_and_a_timeout_acts_once_then_expires() {
        use crate::domain::records::{HitlTimeout, TimeoutAction};
        let mut request = HitlRequest {
            assignees: vec!["alice".into()],
            on_timeout: Some(HitlTimeout {
                seconds: 5,
                action: TimeoutAction::Escalate,
                escalate_to: vec!["lead".into()],
                escalated: false,
            }),
            ..pending_request(Some(10))
        };
        let reply = |by: Option<&str>| HitlReply {
            content: None,
            comment: None,
            by: by.map(String::from),
        };
        let e = answer_hitl(&request, HitlAction::Approve, reply(Some("bob")), 1).unwrap_err();
        assert!(matches!(e, DomainError::NotAnAssignee { .. }), "{e}");
        assert!(answer_hitl(&request, HitlAction::Approve, reply(Some("alice")), 1).is_ok());
        assert!(answer_hitl(&request, HitlAction::Approve, reply(None), 1).is_ok());
        let TimedOut::Escalated(escalated) = time_out_hitl(&request, 10) else {
            panic!("escalates first")
        };
        assert_eq!(escalated.assignees, vec!["lead".to_string()]);
        assert_eq!(escalated.expires_at, Some(10 + 5_000_000));
        assert_eq!(escalated.status, HitlStatus::Pending);
        let entry = escalated.history.last().unwrap();
        assert_eq!(
            (entry.action.as_str(), entry.user_id.as_deref()),
            ("escalate", Some(SYSTEM))
        );
        let TimedOut::Expired(expired) = time_out_hitl(&escalated, 5_000_010) else {
            panic!("then expires")
        };
        assert_eq!(expired.status, HitlStatus::Expired);
        assert_eq!(
            expired.history.last().unwrap().user_id.as_deref(),
            Some(SYSTEM)
        );
        request.on_timeout.as_mut().unwrap().action = TimeoutAction::Approve;
        let TimedOut::Answered(approved, HitlAction::Approve) = time_out_hitl(&request, 10) else {
            panic!("approves")
        };
        assert_eq!(approved.status, HitlStatus::Approved);
        assert_eq!(approved.responded_by.as_deref(), Some(SYSTEM));
        assert_eq!(
            approved.response_comment.as_deref(),
            Some("timed out after 5 s")
        );
        request.on_timeout = None;
        assert!(
            matches!(time_out_hitl(&request, 10), TimedOut::Expired(e) if e.history.last().unwrap().user_id.is_none())
        );
        // What a timeout may say.
        let t = |s, a, e: &[&str]| {
            let e: Vec<String> = e.iter().map(|n| n.to_string()).collect();
            hitl_timeout(["t", "o", "e"], s, a, &e)
        };
        assert_eq!(t(None, None, &[]).unwrap(), None);
        assert_eq!(
            t(Some(3), None, &[]).unwrap().unwrap().action,
            TimeoutAction::Reject
        );
        assert!(t(None, Some("approve"), &[]).is_err());
        assert!(t(Some(3), Some("escalate"), &[]).is_err());
        assert!(t(Some(3), Some("approve"), &["lead"]).is_err());
        assert!(t(Some(3), Some("escalate"), &["lead", "lead"]).is_err());
        assert!(t(Some(3), Some("escalate"), &["no way"]).is_err());
        assert!(t(Some(0), None, &[]).is_err());
        assert!(t(Some(3), Some("escalate"), &["lead"]).is_ok());
    }
}
