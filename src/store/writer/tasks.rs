//! Tasks and their state changes, claims and leases, agents following their tasks and reset.

use std::ops::Bound;

use super::batch::read;
use super::{Batch, Checked, QueueEvent, Refusal, Write, Written};
use crate::domain::budget::BudgetScope;
use crate::domain::records::{Agent, Artifact, Task};
use crate::domain::tasks::Holder;
use crate::domain::tasks::TaskEdits;
use crate::domain::tasks::{Lease, TaskChange, TaskUpdate, agent_follows};
use crate::domain::{
    AgentType, DomainError, EventType, Id, Micros, TaskStatus, TaskTransition, Vocabulary,
    task_transition,
};
use crate::events::EventDraft;
use crate::json::object_string;
use crate::store::handoff::Waiter;
use crate::store::tables;
use redb::ReadableTable;

/// A new pending task in a project, working from artifacts of that project.
#[derive(Clone, Debug)]
pub struct CreateTask {
    pub project_id: Id,
    pub agent_type: AgentType,
    pub instructions: String,
    pub context_ids: Vec<Id>,
    /// 1 (highest) to 5 (lowest); `domain::tasks::DEFAULT_PRIORITY` when the client gave none.
    pub priority: u8,
}

impl Write for CreateTask {
    type Plan = CreateTask;
    type Output = Task;

    fn check(self, batch: &Batch<'_>) -> Checked<CreateTask> {
        batch.require_project(&self.project_id)?;
        batch.check_agent_type("agent_type", &self.agent_type)?;
        crate::domain::tasks::check_priority("priority", u64::from(self.priority))?;
        for (i, context_id) in self.context_ids.iter().enumerate() {
            let artifact: Option<Artifact> = read(batch.artifacts.open()?, context_id)?;
            if artifact.is_none_or(|a| a.project_id != self.project_id) {
                return Err(DomainError::invalid(
                    format!("context_ids[{i}]"),
                    format!(
                        "artifact {context_id} does not exist in project {}",
                        self.project_id
                    ),
                )
                .into());
            }
        }
        Ok(self)
    }

    fn apply(plan: CreateTask, batch: &mut Batch<'_>) -> Written<Task> {
        batch.insert_task(plan, None)
    }
}

/// A client's change of a task's status (the state machine decides whether it is legal).
#[derive(Clone, Debug)]
pub struct SetTaskStatus {
    pub task_id: Id,
    pub status: TaskStatus,
    /// JSON text.
    pub output: Option<String>,
    pub error_message: Option<String>,
    /// The claim the worker holds: required to complete or fail a claimed task.
    pub lease_id: Option<Id>,
}

pub struct StatusPlan {
    old: Task,
    transition: TaskTransition,
    output: Option<String>,
    error_message: Option<String>,
}

impl Write for SetTaskStatus {
    type Plan = StatusPlan;
    type Output = Task;

    fn check(self, batch: &Batch<'_>) -> Checked<StatusPlan> {
        let old: Task = read(batch.tasks.open()?, &self.task_id)?
            .ok_or_else(|| DomainError::not_found("task", self.task_id))?;
        crate::domain::tasks::fence_status_change(&old, self.status, self.lease_id)?;
        let transition = task_transition(old.status, self.status)?;
        Ok(StatusPlan {
            old,
            transition,
            output: self.output,
            error_message: self.error_message,
        })
    }

    fn apply(plan: StatusPlan, batch: &mut Batch<'_>) -> Written<Task> {
        batch.change_task(
            plan.old,
            TaskChange::To(plan.transition),
            TaskEdits {
                output: plan.output,
                error_message: plan.error_message,
                ..TaskEdits::default()
            },
        )
    }
}

/// Hands the oldest pending task of the agent type to one worker, under a lease. `None`: nothing
/// to hand out.
#[derive(Clone, Debug)]
pub struct Claim {
    pub agent_type: AgentType,
    pub worker_id: String,
    /// Microseconds.
    pub lease: Micros,
    /// The API key that claims (none when keys are off): recorded with the task.
    pub claimer: Option<String>,
}

impl Write for Claim {
    type Plan = Option<(Task, Lease, Option<String>)>;
    type Output = Option<Task>;

    /// The highest priority first; within a priority the projects take turns (the next project
    /// after the one the last claim of this agent type was served from, wrapping around), and
    /// within a project the oldest task first.
    fn check(self, batch: &Batch<'_>) -> Checked<Option<(Task, Lease, Option<String>)>> {
        // A type nothing has named has no tasks.
        let Some(code) = batch.agent_id(&self.agent_type) else {
            return Ok(None);
        };
        let pending = TaskStatus::Pending.code();
        let (lo_id, hi_id) = (Id([0; 16]), Id([0xff; 16]));
        let queue = &batch.task_ix.open()?.claim;
        let first = |range: (Bound<[u8; 36]>, Bound<[u8; 36]>)| -> Checked<Option<[u8; 36]>> {
            let (lo, hi) = (range.0.as_ref(), range.1.as_ref());
            match queue.range::<&[u8; 36]>((lo, hi))?.next() {
                Some(entry) => Ok(Some(*entry?.0.value())),
                None => Ok(None),
            }
        };
        let any = first((
            Bound::Included(tables::claim_key(code, pending, 0, &lo_id, &lo_id)),
            Bound::Included(tables::claim_key(code, pending, u8::MAX, &hi_id, &hi_id)),
        ))?;
        if any.is_none() {
            return Ok(None);
        }
        let settings = batch.queue_settings(&self.agent_type)?;
        if settings.paused {
            return Ok(None);
        }
        // Held by an exhausted budget over every task of the type.
        if batch.exhausted(&BudgetScope::Global)?
            || batch.exhausted(&BudgetScope::AgentType(self.agent_type.clone()))?
        {
            return Ok(None);
        }
        if let Some(limit) = settings.max_working
            && batch.agent(&self.agent_type)?.working_tasks >= limit
        {
            return Ok(None);
        }
        let turn = batch.claim_turn(code);
        let mut found = None;
        'priorities: for priority in crate::domain::tasks::PRIORITIES {
            let key =
                |project: &Id, id: &Id| tables::claim_key(code, pending, priority, project, id);
            // The projects after the one whose turn it was, then from the start; a paused
            // project is skipped (past all of its tasks).
            let mut after = turn;
            let mut wrapped = false;
            loop {
                let lo = match after {
                    Some(project) => Bound::Excluded(key(&project, &hi_id)),
                    None => Bound::Included(key(&lo_id, &lo_id)),
                };
                let Some(hit) = first((lo, Bound::Included(key(&hi_id, &hi_id))))? else {
                    if wrapped || turn.is_none() {
                        break;
                    }
                    wrapped = true;
                    after = None;
                    continue;
                };
                let project = tables::claim_key_project(&hit);
                if wrapped && turn.is_some_and(|t| project > t) {
                    break;
                }
                if !batch.project_paused(&project)?
                    && !batch.exhausted(&BudgetScope::Project(project))?
                {
                    found = Some(hit);
                    break 'priorities;
                }
                after = Some(project);
            }
        }
        let Some(hit) = found else {
            return Ok(None);
        };
        let old = batch.task_record(&tables::trailing_id(&hit), "the claim index")?;
        let lease = Lease {
            worker_id: self.worker_id,
            expires_at: batch.now.saturating_add(self.lease),
            lease_id: Id::new_v7(),
        };
        Ok(Some((old, lease, self.claimer)))
    }

    fn apply(
        plan: Option<(Task, Lease, Option<String>)>,
        batch: &mut Batch<'_>,
    ) -> Written<Option<Task>> {
        let Some((old, lease, claimer)) = plan else {
            return Ok(None);
        };
        if let Some(id) = batch.agent_id(&old.agent_type) {
            batch.claim_turns.push((id, old.project_id));
        }
        // Recorded only when keys are on (no key, no self-approval to refuse): a claim without
        // one touches no more of the file than before.
        if let Some(name) = &claimer {
            let mut claimers = batch.txn.open_table(tables::TASK_CLAIMERS)?;
            claimers.insert(old.id.as_bytes(), name.as_str())?;
        }
        let start = TaskChange::To(TaskTransition::Start);
        batch
            .change_task(
                old,
                start,
                TaskEdits {
                    lease: Some(lease),
                    ..TaskEdits::default()
                },
            )
            .map(Some)
    }
}

/// Returns a task claimed for a waiting claim that was gone by the time its commit was durable
/// (`handoff`) to pending, as when a lease runs out; nothing when the claim no longer holds it.
#[derive(Clone, Debug)]
pub struct ReleaseClaim {
    pub task_id: Id,
    pub lease_id: Id,
}

impl Write for ReleaseClaim {
    type Plan = Option<Task>;
    type Output = bool;

    fn check(self, batch: &Batch<'_>) -> Checked<Option<Task>> {
        let task: Option<Task> = read(batch.tasks.open()?, &self.task_id)?;
        Ok(task.filter(|t| t.status == TaskStatus::Working && t.lease_id == Some(self.lease_id)))
    }

    fn apply(plan: Option<Task>, batch: &mut Batch<'_>) -> Written<bool> {
        let Some(old) = plan else {
            return Ok(false);
        };
        batch.change_task(old, TaskChange::LeaseExpired, TaskEdits::default())?;
        Ok(true)
    }
}

impl<'t> Batch<'t> {
    /// Serves the waiting claims (`handoff`) of every agent type this batch made a task claimable
    /// for, first come first served, inside this transaction: each is claimed as its own `Claim`
    /// would be (priorities, turns, pauses, limits). The tasks are handed over after the commit.
    ///
    /// The one change of shared memory before the commit (ARCHITECTURE.md, invariants): a waiter
    /// leaves the shared queue here, so no later claim of this batch serves it again; if the
    /// batch fails, it is dropped, and its claim sees the channel closed and claims again.
    pub(super) fn serve_waiting_claims(&mut self) -> Written<Vec<(Waiter, Task)>> {
        let mut handed = Vec::new();
        for i in 0..self.claimable.len() {
            let agent = i as u16;
            if (self.claimable[i] == 0 && !self.wake_all.contains(&agent))
                || !self.shared.handoffs.any(agent)
            {
                continue;
            }
            let Some(name) = self.agent_name(agent) else {
                continue;
            };
            while let Some(waiter) = self.shared.handoffs.take(agent) {
                let claim = Claim {
                    agent_type: name.clone(),
                    worker_id: waiter.worker_id.clone(),
                    lease: waiter.lease,
                    claimer: waiter.claimer.clone(),
                };
                let plan = match claim.check(self) {
                    Ok(Some(plan)) => plan,
                    // Nothing (more) to hand out, or a refusal its own claim will meet.
                    Ok(None) | Err(Refusal::Domain(_) | Refusal::Corrupt(_)) => {
                        self.shared.handoffs.put_back(agent, waiter);
                        break;
                    }
                    Err(Refusal::Storage(e)) => return Err(e),
                };
                if let Some(task) = Claim::apply(Some(plan), self)? {
                    // One claimable task fewer to wake a waiting claim for.
                    self.claimable[i] = self.claimable[i].saturating_sub(1);
                    handed.push((waiter, task));
                }
            }
        }
        Ok(handed)
    }
}

/// Extends a working task's lease by `lease` from now; only the holder of its claim may (and only
/// its worker, when one is named).
#[derive(Clone, Debug)]
pub struct Heartbeat {
    pub task_id: Id,
    pub worker_id: Option<String>,
    pub lease_id: Option<Id>,
    /// Microseconds.
    pub lease: Micros,
}

impl Write for Heartbeat {
    type Plan = (Task, Task, Option<String>);
    /// The task with its lease extended; or, when a budget over it is exhausted, the budget's
    /// scope: the task went back to pending instead.
    type Output = Result<Task, super::Held>;

    fn check(self, batch: &Batch<'_>) -> Checked<(Task, Task, Option<String>)> {
        let old: Task = read(batch.tasks.open()?, &self.task_id)?
            .ok_or_else(|| DomainError::not_found("task", self.task_id))?;
        let expires_at = batch.now.saturating_add(self.lease);
        let holder = Holder {
            worker_id: self.worker_id.as_deref(),
            lease_id: self.lease_id,
        };
        let task = crate::domain::tasks::heartbeat(&old, holder, expires_at, batch.now)?;
        let held = batch.held_by(&old.project_id, &old.agent_type)?;
        Ok((old, task, held))
    }

    fn apply(
        (old, mut task, held): (Task, Task, Option<String>),
        batch: &mut Batch<'_>,
    ) -> Written<Result<Task, super::Held>> {
        if let Some(scope) = held {
            batch.change_task(old, TaskChange::HeldByBudget, TaskEdits::default())?;
            return Ok(Err(super::Held { scope }));
        }
        if let Some(report) = batch.take_progress(&task.id, task.status) {
            task.progress = Some(report);
        }
        batch.put_task(Some(&old), &task)?;
        Ok(Ok(task))
    }
}

/// Gives an agent type an id before anything is written under it: a claim that waits for the
/// first task of a type nothing has named yet.
#[derive(Clone, Debug)]
pub struct InternAgentType {
    pub name: AgentType,
}

impl Write for InternAgentType {
    type Plan = AgentType;
    type Output = ();

    fn check(self, batch: &Batch<'_>) -> Checked<AgentType> {
        batch.check_agent_type("agent_type", &self.name)?;
        Ok(self.name)
    }

    fn apply(name: AgentType, batch: &mut Batch<'_>) -> Written<()> {
        batch.intern_agent(&name)?;
        Ok(())
    }
}

/// An operator's reset of an agent: idle, no current task, no error.
#[derive(Clone, Debug)]
pub struct ResetAgent {
    pub agent_type: AgentType,
}

impl Write for ResetAgent {
    type Plan = Agent;
    type Output = Agent;

    fn check(self, batch: &Batch<'_>) -> Checked<Agent> {
        batch.check_agent_type("agent_type", &self.agent_type)?;
        Ok(batch.agent(&self.agent_type)?)
    }

    fn apply(before: Agent, batch: &mut Batch<'_>) -> Written<Agent> {
        let agent = crate::domain::tasks::reset_agent(&before, batch.now);
        batch.put_agent(&before, &agent, None)?;
        Ok(agent)
    }
}

impl<'t> Batch<'t> {
    /// A task's latest progress report, to store with its durable change: copied from the board,
    /// and taken off it after the commit when the task stops working.
    fn take_progress(&mut self, task: &Id, status: TaskStatus) -> Option<String> {
        let report = self.shared.progress.lock().get(task).cloned();
        if status != TaskStatus::Working && report.is_some() {
            self.progress_done.push(*task);
        }
        report
    }

    /// The project whose turn it was for `agent`'s last claim: this batch's, or the last
    /// committed one's.
    fn claim_turn(&self, agent: u16) -> Option<Id> {
        let served = self.claim_turns.iter().rev().find(|(a, _)| *a == agent);
        served
            .map(|(_, project)| *project)
            .or_else(|| self.shared.claim_turn.lock()[usize::from(agent)])
    }

    /// The agent type of an id in use (or interned by this batch).
    fn agent_name(&self, id: u16) -> Option<AgentType> {
        let types = self.shared.types.read();
        match types.agents.name(id) {
            Some(name) => Some(name.clone()),
            None => self
                .new_agents
                .get(usize::from(id).checked_sub(types.agents.len())?)
                .cloned(),
        }
    }

    /// Writes a new pending task (its references already checked) and its event; `workflow` is
    /// a phase's context (`Task::workflow`).
    pub(super) fn insert_task(&mut self, c: CreateTask, workflow: Option<String>) -> Written<Task> {
        let task = Task {
            id: Id::new_v7(),
            project_id: c.project_id,
            agent_type: c.agent_type,
            status: TaskStatus::Pending,
            instructions: c.instructions,
            context_ids: c.context_ids,
            output: None,
            error_message: None,
            created_at: self.now,
            updated_at: self.now,
            started_at: None,
            completed_at: None,
            attempts: 0,
            failures: 0,
            worker_id: None,
            lease_expires_at: None,
            retry_at: None,
            timeout_at: None,
            lease_id: None,
            priority: c.priority,
            progress: None,
            workflow,
        };
        self.put_task(None, &task)?;
        let data = task_event_data(&task);
        self.emit(EventDraft {
            event_type: EventType::TaskCreated,
            project_id: Some(task.project_id),
            task_id: Some(task.id),
            agent_type: Some(task.agent_type.clone()),
            data,
        })?;
        Ok(task)
    }

    /// Writes a change of a task's status (`domain::tasks::change_task`) with everything that
    /// follows from it: the event, the agent's status, the workflow's next step on completion and
    /// the human asked after the last failed attempt.
    pub(super) fn change_task(
        &mut self,
        old: Task,
        change: TaskChange,
        edits: TaskEdits,
    ) -> Written<Task> {
        let step = match &change {
            TaskChange::To(t) => Some(*t),
            _ => None,
        };
        let expired = matches!(change, TaskChange::LeaseExpired);
        let TaskUpdate {
            task,
            event,
            escalate,
        } = crate::domain::tasks::change_task(&old, change, edits, self.now, self.settings);
        let mut task = task;
        if let Some(report) = self.take_progress(&task.id, task.status) {
            task.progress = Some(report);
        }
        let agent_type = task.agent_type.clone();
        let seconds = |since: Micros| (self.now.saturating_sub(since)).max(0) as f64 / 1e6;
        match step {
            // A pending task changes only when it starts: `updated_at` is when it became pending.
            Some(TaskTransition::Start) => {
                self.queue.push(QueueEvent::Waited(
                    agent_type.clone(),
                    seconds(old.updated_at),
                ));
            }
            Some(TaskTransition::Complete | TaskTransition::Fail) => {
                if let Some(started) = old.started_at {
                    self.queue
                        .push(QueueEvent::Ran(agent_type.clone(), seconds(started)));
                }
            }
            Some(TaskTransition::Retry) => self.queue.push(QueueEvent::Retried(agent_type.clone())),
            _ => {}
        }
        if expired {
            self.queue
                .push(QueueEvent::LeaseExpired(agent_type.clone()));
        }
        if escalate {
            self.queue.push(QueueEvent::Escalated(agent_type.clone()));
        }
        // Under a concurrency limit, a task that stops working makes room for a waiting claim.
        if old.status == TaskStatus::Working
            && task.status != TaskStatus::Working
            && self.queue_settings(&agent_type)?.max_working.is_some()
            && let Some(id) = self.agent_id(&agent_type)
        {
            self.claimable[usize::from(id)] += 1;
        }
        self.put_task(Some(&old), &task)?;
        let data = task_event_data(&task);
        self.emit(EventDraft {
            event_type: event,
            project_id: Some(task.project_id),
            task_id: Some(task.id),
            agent_type: Some(task.agent_type.clone()),
            data,
        })?;
        let before = self.agent(&task.agent_type)?;
        let agent = agent_follows(&before, &old, &task, escalate, self.now);
        if agent != before {
            self.put_agent(&before, &agent, Some((task.id, task.project_id)))?;
        }
        if task.status == TaskStatus::Completed {
            self.after_task_completed(&task)?;
        }
        // A task that failed for good, or was cancelled, fails its workflow phase's run.
        if task.status == TaskStatus::Cancelled
            || (task.status == TaskStatus::Failed && task.retry_at.is_none())
        {
            self.after_task_ended(&task)?;
        }
        if escalate {
            let (question, options) = crate::domain::tasks::escalation(&task);
            self.insert_hitl(task.project_id, Some(task.id), question, options, None)?;
        }
        Ok(task)
    }
}

pub(super) fn task_event_data(task: &Task) -> String {
    object_string(|o| {
        o.id("task_id", task.id)
            .str("agent_type", task.agent_type.as_str())
            .str("status", task.status.as_str())
            .u64("attempts", u64::from(task.attempts))
            .opt_str("worker_id", task.worker_id.as_deref())
            .u64("priority", u64::from(task.priority))
            .opt_raw("output", task.output.as_deref())
            .opt_str("error_message", task.error_message.as_deref());
    })
}
