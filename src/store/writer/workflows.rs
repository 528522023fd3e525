//! Workflows: definitions stored through the API, a run started, each phase's task (with the
//! context of the phases it depends on), gates and hand-offs, a run failed or cancelled, the
//! project's completion. The rules are `domain::workflow`'s; this writes what they decide.

use std::collections::HashSet;

use super::artifacts::CreateArtifact;
use super::batch::read;
use super::tasks::CreateTask;
use super::{Batch, Checked, Write, Written};
use crate::domain::records::{HitlRequest, PhaseStatus, StoredWorkflow, Task, WorkflowRun};
use crate::domain::tasks::TaskChange;
use crate::domain::tasks::TaskEdits;
use crate::domain::workflow::{
    self as wf, Definition, DefinitionBody, Next, OnCompleted, Workflow,
};
use crate::domain::{
    AgentType, ArtifactType, DomainError, EventType, HitlAction, HitlStatus, Id, Limits,
    ProjectStatus, TaskStatus, TaskTransition,
};
use crate::events::EventDraft;
use crate::json::object_string;
use crate::store::codec::{decode, encode};
use crate::store::{StoreError, tables};
use redb::ReadableTable;

/// Starts a workflow on a project: the tasks of its phases that depend on nothing.
#[derive(Clone, Debug)]
pub struct StartWorkflow {
    pub project_id: Id,
    pub workflow: String,
    /// JSON text.
    pub context: Option<String>,
}

/// What a workflow event is about besides its run: the phase (index), its task, and the gate's
/// HITL request.
#[derive(Copy, Clone, Debug, Default)]
struct Concerning {
    phase: usize,
    task: Option<Id>,
    gate: Option<Id>,
}

impl Concerning {
    fn phase(phase: usize) -> Concerning {
        Concerning {
            phase,
            ..Concerning::default()
        }
    }
}

impl Write for StartWorkflow {
    type Plan = WorkflowRun;
    type Output = WorkflowRun;

    fn check(self, batch: &Batch<'_>) -> Checked<WorkflowRun> {
        let project = batch.require_project(&self.project_id)?;
        let Some(def) = batch.find_workflow(&self.workflow)? else {
            let mut known: Vec<String> = batch
                .shared
                .workflows
                .iter()
                .map(|w| w.name.clone())
                .collect();
            known.extend(batch.stored_workflow_names()?);
            return Err(DomainError::invalid(
                "workflow",
                format!(
                    "unknown workflow `{}`; known: {}",
                    self.workflow,
                    known.join(", ")
                ),
            )
            .into());
        };
        if let Some(run) = read::<WorkflowRun>(batch.workflows.open()?, &self.project_id)?
            && run.is_running()
        {
            return Err(DomainError::InvalidTransition {
                message: format!(
                    "project {} already runs the `{}` workflow",
                    self.project_id, run.workflow
                ),
            }
            .into());
        }
        // A closed `agent_types` or `artifact_types` list that leaves out a phase's type (the
        // built-in `sdlc` is not checked at start-up, a stored definition was checked when it
        // was stored, but the list may have closed since) refuses the run.
        {
            let types = batch.shared.types.read();
            def.check_allowed(&types.agents.allowed, &types.artifacts.allowed)?;
        }
        // Every phase's agent type gets its id now, so that no later phase can find the
        // vocabulary full.
        let agents: Vec<(&str, &AgentType)> = def
            .phases
            .iter()
            .map(|p| ("workflow", &p.agent_type))
            .collect();
        batch.check_types(&agents, &[])?;
        let run = def.start(&project, self.context, batch.now);
        wf::check(&run)?;
        Ok(run)
    }

    fn apply(mut run: WorkflowRun, batch: &mut Batch<'_>) -> Written<WorkflowRun> {
        for phase in &run.phases {
            batch.intern_agent(&phase.agent_type)?;
        }
        batch.workflow_event(&run, "workflow_started", Concerning::phase(0))?;
        for index in wf::ready(&run) {
            batch.start_phase(&mut run, index)?;
        }
        batch.put_workflow(&run)?;
        Ok(run)
    }
}

/// Stores a definition under a name (`PUT /api/v1/workflows/{name}`): a new version, unless the
/// body is the stored one's.
#[derive(Clone, Debug)]
pub struct PutWorkflow {
    pub name: String,
    /// The body's JSON text, kept as the client sent it.
    pub json: String,
    pub body: DefinitionBody,
}

/// What a `PUT` did.
#[derive(Clone, Debug)]
pub struct PutOutcome {
    pub definition: Definition,
    /// No definition had the name (a deleted one counts as none).
    pub created: bool,
    /// The body was the stored one's: nothing was written.
    pub unchanged: bool,
}

impl Write for PutWorkflow {
    type Plan = (StoredWorkflow, PutOutcome);
    type Output = PutOutcome;

    fn check(self, batch: &Batch<'_>) -> Checked<Self::Plan> {
        batch.writable_workflow(&self.name)?;
        let old = batch.stored_workflow(&self.name)?;
        let previous = old.as_ref().map_or(0, |o| o.version);
        let live = old.as_ref().filter(|o| o.json.is_some());
        if live.is_none() {
            let stored = batch.stored_workflow_names()?.len();
            if stored >= Limits::WORKFLOW_DEFINITIONS {
                return Err(DomainError::invalid(
                    "name",
                    format!(
                        "{stored} workflows are stored, the most this server keeps; delete one first"
                    ),
                )
                .into());
            }
        }
        let mut workflow = self.body.parse(&self.name, previous.saturating_add(1))?;
        // The same definition, however its JSON is written, keeps its version.
        let unchanged = match live {
            Some(o) => crate::store::read::definition_of(&self.name, o)?
                .is_some_and(|d| d.workflow.phases == workflow.phases),
            None => false,
        };
        let version = if unchanged {
            previous
        } else {
            previous.checked_add(1).ok_or_else(|| {
                DomainError::invalid("name", "this definition has run out of versions")
            })?
        };
        workflow.version = version;
        {
            let types = batch.shared.types.read();
            workflow.check_allowed(&types.agents.allowed, &types.artifacts.allowed)?;
        }
        let created_at = live.map_or(batch.now, |o| o.created_at);
        let updated_at = if unchanged {
            live.map_or(batch.now, |o| o.updated_at)
        } else {
            batch.now
        };
        let record = StoredWorkflow {
            version,
            json: if unchanged {
                live.and_then(|o| o.json.clone())
            } else {
                Some(self.json)
            },
            created_at,
            updated_at,
        };
        let outcome = PutOutcome {
            definition: Definition {
                workflow,
                created_at,
                updated_at,
            },
            created: live.is_none(),
            unchanged,
        };
        Ok((record, outcome))
    }

    fn apply((record, outcome): Self::Plan, batch: &mut Batch<'_>) -> Written<PutOutcome> {
        if !outcome.unchanged {
            let mut table = batch.txn.open_table(tables::WORKFLOW_DEFS)?;
            table.insert(
                outcome.definition.workflow.name.as_str(),
                encode(&record).as_slice(),
            )?;
        }
        Ok(outcome)
    }
}

/// Deletes a definition stored through the API. Runs started from it go on with their copy.
#[derive(Clone, Debug)]
pub struct DeleteWorkflow {
    pub name: String,
}

impl Write for DeleteWorkflow {
    type Plan = (String, StoredWorkflow);
    type Output = ();

    fn check(self, batch: &Batch<'_>) -> Checked<Self::Plan> {
        batch.writable_workflow(&self.name)?;
        match batch.stored_workflow(&self.name)? {
            Some(old) if old.json.is_some() => {
                let record = StoredWorkflow {
                    json: None,
                    updated_at: batch.now,
                    ..old
                };
                Ok((self.name, record))
            }
            _ => Err(DomainError::not_found("workflow", &self.name).into()),
        }
    }

    fn apply((name, record): Self::Plan, batch: &mut Batch<'_>) -> Written<()> {
        // The name stays, without a definition, so that a new one goes on from its version.
        let mut table = batch.txn.open_table(tables::WORKFLOW_DEFS)?;
        table.insert(name.as_str(), encode(&record).as_slice())?;
        Ok(())
    }
}

/// Cancels a project's running workflow and its open tasks and gates.
#[derive(Clone, Debug)]
pub struct CancelWorkflow {
    pub project_id: Id,
    /// Why, if the caller said.
    pub reason: Option<String>,
}

impl Write for CancelWorkflow {
    type Plan = WorkflowRun;
    type Output = WorkflowRun;

    fn check(self, batch: &Batch<'_>) -> Checked<WorkflowRun> {
        batch.require_project(&self.project_id)?;
        let run = read::<WorkflowRun>(batch.workflows.open()?, &self.project_id)?
            .ok_or_else(|| DomainError::not_found("workflow", self.project_id))?;
        if !run.is_running() {
            return Err(DomainError::InvalidTransition {
                message: format!(
                    "the `{}` workflow of project {} is {}, not running",
                    run.workflow,
                    self.project_id,
                    run.status.as_str()
                ),
            }
            .into());
        }
        if let Some(reason) = &self.reason {
            crate::domain::check_len("reason", reason, Limits::COMMENT, false)?;
        }
        let mut run = run;
        let reason = self
            .reason
            .unwrap_or_else(|| "cancelled through the API".to_string());
        run.reason = Some(reason);
        Ok(run)
    }

    fn apply(mut run: WorkflowRun, batch: &mut Batch<'_>) -> Written<WorkflowRun> {
        let reason = run.reason.take().unwrap_or_default();
        let at = wf::current(&run);
        batch.end_run(&mut run, None, reason, "workflow_cancelled", at)?;
        Ok(run)
    }
}

impl<'t> Batch<'t> {
    fn put_workflow(&mut self, run: &WorkflowRun) -> Written<()> {
        self.workflows
            .open_mut()?
            .insert(run.project_id.as_bytes(), encode(run).as_slice())?;
        Ok(())
    }

    /// The definition a run of `name` would start from: the config file's or the built-in, else
    /// one stored through the API.
    fn find_workflow(&self, name: &str) -> Result<Option<Workflow>, StoreError> {
        if let Some(def) = self.shared.workflows.iter().find(|w| w.name == name) {
            return Ok(Some(def.clone()));
        }
        let table = self.txn.open_table(tables::WORKFLOW_DEFS)?;
        match table.get(name)? {
            Some(bytes) => crate::store::read::stored_workflow(name, bytes.value()),
            None => Ok(None),
        }
    }

    fn stored_workflow(&self, name: &str) -> Result<Option<StoredWorkflow>, StoreError> {
        let table = self.txn.open_table(tables::WORKFLOW_DEFS)?;
        match table.get(name)? {
            Some(bytes) => Ok(Some(decode(bytes.value())?)),
            None => Ok(None),
        }
    }

    fn stored_workflow_names(&self) -> Result<Vec<String>, StoreError> {
        let table = self.txn.open_table(tables::WORKFLOW_DEFS)?;
        let mut names = Vec::new();
        for entry in table.iter()? {
            let (key, value) = entry?;
            let record: StoredWorkflow = decode(value.value())?;
            if record.json.is_some() {
                names.push(key.value().to_string());
            }
        }
        Ok(names)
    }

    /// 409 `read_only` for the built-in and the config file's definitions.
    fn writable_workflow(&self, name: &str) -> Result<(), DomainError> {
        match self.shared.workflows.iter().find(|w| w.name == name) {
            Some(def) => Err(DomainError::ReadOnly {
                message: format!(
                    "the workflow `{name}` is {}: change it in the config file",
                    match def.source {
                        wf::Source::Builtin => "built in",
                        _ => "the config file's",
                    }
                ),
            }),
            None => Ok(()),
        }
    }

    /// Creates a phase's task. Its context: every artifact of the project so far except those of
    /// the agent types of phases it does not depend on (running beside it), and, in `workflow`,
    /// each phase it depends on, directly or not, by id, with its task's output and artifacts.
    fn start_phase(&mut self, run: &mut WorkflowRun, index: usize) -> Written<()> {
        let phase = wf::phase(run, index)?.clone();
        // Ready once, started once: an empty fan-out completing at once may have started the
        // phases its own hand-off made ready, which an outer hand-off's list names too.
        if !run.is_running() || phase.status != PhaseStatus::Waiting {
            return Ok(());
        }
        let ancestors = wf::ancestors(run, index);
        let related: Vec<&AgentType> = ancestors
            .iter()
            .map(|&a| &run.phases[a].agent_type)
            .chain(std::iter::once(&phase.agent_type))
            .collect();
        let mut unrelated: Vec<&AgentType> = Vec::new();
        for p in &run.phases {
            if !related.contains(&&p.agent_type) && !unrelated.contains(&&p.agent_type) {
                unrelated.push(&p.agent_type);
            }
        }
        let mut excluded: HashSet<Id> = HashSet::new();
        for agent in unrelated {
            excluded.extend(self.artifacts_of(&run.project_id, agent, usize::MAX)?);
        }
        let lo = tables::project_key(&run.project_id, tables::ARTIFACT_ALL, 0, &Id([0; 16]));
        let hi = tables::project_key(&run.project_id, tables::ARTIFACT_ALL, 0, &Id([0xff; 16]));
        let mut context_ids = Vec::new();
        for entry in self
            .artifact_ix
            .open()?
            .shared
            .range::<&[u8; 35]>(&lo..=&hi)?
        {
            if context_ids.len() == Limits::CONTEXT_IDS {
                break;
            }
            let id = tables::trailing_id(entry?.0.value());
            if !excluded.contains(&id) {
                context_ids.push(id);
            }
        }
        // Outputs, nearest phases first, until the budget is spent; the rest are left out (null,
        // counted in `outputs_omitted`), to be read from their tasks.
        let mut budget = Limits::UPSTREAM_OUTPUT_BYTES;
        let mut take = |output: Option<String>| match output {
            Some(text) if text.len() <= budget => {
                budget -= text.len();
                (text, false)
            }
            Some(_) => ("null".to_string(), true),
            None => ("null".to_string(), false),
        };
        let mut upstream: Vec<(String, Vec<u8>)> = Vec::with_capacity(ancestors.len());
        for &a in ancestors.iter().rev() {
            let up = &run.phases[a];
            let artifacts =
                self.artifacts_of(&run.project_id, &up.agent_type, Limits::CONTEXT_IDS)?;
            let tasks: Vec<Id> = up.task_id.into_iter().chain(up.items.clone()).collect();
            let mut outputs: Vec<Vec<u8>> = Vec::with_capacity(tasks.len());
            let mut omitted = 0u64;
            for task in &tasks {
                let (text, left_out) = take(self.task_record(task, "the workflow")?.output);
                omitted += u64::from(left_out);
                outputs.push(text.into_bytes());
            }
            let json = crate::json::object(|o| {
                o.str("agent_type", up.agent_type.as_str());
                if up.for_each.is_some() {
                    // A fan-out's outputs, in its list's order.
                    o.ids("task_ids", &up.items)
                        .raw_array("outputs", outputs.iter().map(Vec::as_slice));
                } else {
                    let output = outputs.first().map_or(&b"null"[..], Vec::as_slice);
                    o.opt_id("task_id", up.task_id)
                        .raw("output", std::str::from_utf8(output).unwrap_or("null"));
                }
                if omitted > 0 {
                    o.u64("outputs_omitted", omitted);
                }
                o.ids("artifacts", &artifacts);
            });
            upstream.push((up.id.clone(), json));
        }
        upstream.reverse();
        let workflow = |item: Option<(usize, usize, &str)>| {
            object_string(|o| {
                o.str("workflow", &run.workflow)
                    .u64("version", u64::from(run.version))
                    .str("phase", &phase.id);
                if let Some((index, count, item)) = item {
                    o.raw("item", item)
                        .u64("index", index as u64)
                        .u64("count", count as u64);
                }
                o.object("upstream", |u| {
                    for (id, json) in &upstream {
                        // Valid UTF-8: written by the JSON writer.
                        u.raw(id, std::str::from_utf8(json).unwrap_or("null"));
                    }
                });
            })
        };
        if phase.for_each.is_none() {
            let task = self.insert_task(
                CreateTask {
                    project_id: run.project_id,
                    agent_type: phase.agent_type.clone(),
                    instructions: phase.instructions.clone(),
                    context_ids,
                    priority: phase.priority,
                },
                Some(workflow(None)),
            )?;
            wf::phase_started(run, index, task.id)?;
            return self.workflow_event(
                run,
                "phase_started",
                Concerning {
                    phase: index,
                    task: Some(task.id),
                    gate: None,
                },
            );
        }
        // A fan-out: one task per element of the list, or the run fails saying why.
        let source_output = match phase
            .for_each
            .as_ref()
            .and_then(|(from, _)| run.phases.get(*from as usize).and_then(|p| p.task_id))
        {
            Some(task) => self.task_record(&task, "the workflow")?.output,
            None => None,
        };
        let parsed: Option<serde_json::Value> = source_output
            .as_deref()
            .and_then(|text| serde_json::from_str(text).ok());
        let list = match wf::fan_out_list(run, index, parsed.as_ref(), self.shared.max_fan_out) {
            Ok(list) => list,
            Err(reason) => return self.end_run(run, Some(index), reason, "workflow_failed", index),
        };
        let count = list.len();
        let mut tasks = Vec::with_capacity(count);
        for (i, item) in list.iter().enumerate() {
            let text = item.to_string();
            let task = self.insert_task(
                CreateTask {
                    project_id: run.project_id,
                    agent_type: phase.agent_type.clone(),
                    instructions: wf::render_item(&phase.instructions, item),
                    context_ids: context_ids.clone(),
                    priority: phase.priority,
                },
                Some(workflow(Some((i, count, &text)))),
            )?;
            tasks.push(task.id);
        }
        wf::items_started(run, index, tasks)?;
        self.workflow_event(run, "phase_started", Concerning::phase(index))?;
        if count == 0 {
            // Nothing to do: the phase is done at once (a gate still asks its human).
            return self.phase_finished(run, index, None);
        }
        Ok(())
    }

    /// The project's artifacts whose source agent is `agent`, oldest first, at most `limit`.
    fn artifacts_of(
        &self,
        project: &Id,
        agent: &AgentType,
        limit: usize,
    ) -> Result<Vec<Id>, StoreError> {
        let Some(code) = self.agent_id(agent) else {
            return Ok(Vec::new());
        };
        let lo = tables::project_key(project, tables::ARTIFACT_BY_SOURCE, code, &Id([0; 16]));
        let hi = tables::project_key(project, tables::ARTIFACT_BY_SOURCE, code, &Id([0xff; 16]));
        let mut ids = Vec::new();
        for entry in self
            .artifact_ix
            .open()?
            .shared
            .range::<&[u8; 35]>(&lo..=&hi)?
            .take(limit)
        {
            ids.push(tables::trailing_id(entry?.0.value()));
        }
        Ok(ids)
    }

    /// A completed task that is a running phase's: gate the hand-off or hand off.
    pub(super) fn after_task_completed(&mut self, task: &Task) -> Written<()> {
        let Some(mut run) = read::<WorkflowRun>(self.workflows.open()?, &task.project_id)? else {
            return Ok(());
        };
        match wf::on_completed(&mut run, task.id) {
            OnCompleted::Nothing => return Ok(()),
            OnCompleted::ItemDone(phase) => self.workflow_event(
                &run,
                "item_completed",
                Concerning {
                    phase,
                    task: Some(task.id),
                    gate: None,
                },
            )?,
            OnCompleted::OpenGate { phase, .. } | OnCompleted::HandOff(phase) => {
                self.phase_finished(&mut run, phase, Some(task.id))?
            }
        }
        self.put_workflow(&run)
    }

    /// Phase `index` has done its work (`task` the last of it, if any): open its gate, or hand
    /// off.
    fn phase_finished(
        &mut self,
        run: &mut WorkflowRun,
        index: usize,
        task: Option<Id>,
    ) -> Written<()> {
        match wf::finished(run, index) {
            OnCompleted::OpenGate {
                phase,
                question,
                options,
            } => {
                let at = &run.phases[phase];
                let timeout = at.gate_timeout.clone();
                let expires_at = crate::domain::tasks::hitl_expiry(
                    self.now,
                    timeout.as_ref().map(|t| t.seconds),
                );
                let new = super::hitl::NewHitl {
                    project_id: run.project_id,
                    task_id: task,
                    question,
                    options,
                    expires_at,
                };
                let gate = self.insert_hitl_for(new, at.gate_assignees.clone(), timeout)?;
                wf::gate_opened(run, phase, gate.id)?;
                self.workflow_event(
                    run,
                    "gate_opened",
                    Concerning {
                        phase,
                        task,
                        gate: Some(gate.id),
                    },
                )
            }
            OnCompleted::HandOff(phase) => self.hand_off(run, phase),
            OnCompleted::Nothing | OnCompleted::ItemDone(_) => Ok(()),
        }
    }

    /// A task that failed for good (no retry left) or was cancelled: if it is a running phase's,
    /// the run fails, and its other open tasks and gates are cancelled.
    pub(super) fn after_task_ended(&mut self, task: &Task) -> Written<()> {
        let Some(mut run) = read::<WorkflowRun>(self.workflows.open()?, &task.project_id)? else {
            return Ok(());
        };
        let Some(phase) = wf::phase_of_task(&run, task.id) else {
            return Ok(());
        };
        let id = &run.phases[phase].id;
        let reason = match task.status {
            TaskStatus::Cancelled => format!("the task {} of phase `{id}` was cancelled", task.id),
            _ => format!(
                "the task {} of phase `{id}` failed for good after {} attempts: {}",
                task.id,
                task.attempts,
                task.error_message.as_deref().unwrap_or("no error message")
            ),
        };
        self.end_run(&mut run, Some(phase), reason, "workflow_failed", phase)
    }

    /// A gate that timed out unanswered after its escalation (expired): its run fails.
    pub(super) fn after_gate_expired(&mut self, request: &HitlRequest) -> Written<()> {
        let Some(mut run) = read::<WorkflowRun>(self.workflows.open()?, &request.project_id)?
        else {
            return Ok(());
        };
        let Some(phase) = wf::open_gate(&run, request.id) else {
            return Ok(());
        };
        let reason = format!(
            "the gate of phase `{}` (request {}) timed out unanswered",
            run.phases[phase].id, request.id
        );
        self.end_run(&mut run, Some(phase), reason, "workflow_failed", phase)
    }

    /// Ends a running run (failed at `failed`, or cancelled): stored first, so that the tasks
    /// it cancels do not come back to it, then its event, then its open tasks cancelled and its
    /// open gates expired.
    fn end_run(
        &mut self,
        run: &mut WorkflowRun,
        failed: Option<usize>,
        reason: String,
        action: &str,
        at: usize,
    ) -> Written<()> {
        let ended = wf::end(run, failed, reason, self.now)?;
        self.put_workflow(run)?;
        self.workflow_event(run, action, Concerning::phase(at))?;
        for id in ended.tasks {
            let old = self.task_record(&id, "the workflow")?;
            // A failed task waiting for its retry is called off too, or the retry would bring it
            // back for a run that is over.
            if matches!(
                old.status,
                TaskStatus::Pending | TaskStatus::Working | TaskStatus::Failed
            ) {
                self.change_task(
                    old,
                    TaskChange::To(TaskTransition::Cancel),
                    TaskEdits::default(),
                )?;
            }
        }
        for id in ended.gates {
            if let Some(old) = read::<HitlRequest>(self.hitl.open()?, &id)?
                && old.status == HitlStatus::Pending
            {
                self.expire_hitl(old)?;
            }
        }
        Ok(())
    }

    /// Phase `index` is done: start the phases now ready, or complete the project.
    fn hand_off(&mut self, run: &mut WorkflowRun, index: usize) -> Written<()> {
        let done = wf::phase(run, index)?.task_id;
        let next = wf::hand_off(run, index, self.now)?;
        self.workflow_event(
            run,
            "phase_completed",
            Concerning {
                phase: index,
                task: done,
                gate: None,
            },
        )?;
        match next {
            Next::Phases(ready) => {
                for phase in ready {
                    // A fan-out that cannot start fails the run: nothing more starts then.
                    self.start_phase(run, phase)?;
                }
                Ok(())
            }
            Next::Complete => {
                let mut project = self.project_record(&run.project_id)?;
                project.status = ProjectStatus::Completed;
                project.updated_at = self.now;
                self.put_project(&project)?;
                self.workflow_event(run, "project_completed", Concerning::phase(index))
            }
        }
    }

    /// A human answered a workflow gate: approve hands off; amend stores the amended content as
    /// an artifact, then hands off; reject sends the phase's task back with the comment.
    /// Whether the request was an open gate of the run (and so the run moved on).
    pub(super) fn after_gate_answered(
        &mut self,
        request: &HitlRequest,
        action: HitlAction,
    ) -> Written<bool> {
        let Some(mut run) = read::<WorkflowRun>(self.workflows.open()?, &request.project_id)?
        else {
            return Ok(false);
        };
        let Some(phase) = wf::open_gate(&run, request.id) else {
            return Ok(false);
        };
        match action {
            HitlAction::Approve => self.hand_off(&mut run, phase)?,
            HitlAction::Amend => {
                let content = request
                    .amended_content
                    .clone()
                    .unwrap_or_else(|| "null".into());
                let source_agent = run.phases[phase].agent_type.clone();
                self.insert_artifact(CreateArtifact {
                    project_id: run.project_id,
                    source_agent,
                    artifact_type: ArtifactType::HITL_RESPONSE,
                    content,
                    metadata: None,
                })?;
                self.hand_off(&mut run, phase)?;
            }
            HitlAction::Reject => {
                let tasks = wf::gate_rejected(&mut run, phase)?;
                if tasks.is_empty() {
                    // An empty fan-out rejected: it runs again, its list read again (empty
                    // again, it is done at once and its gate asks again).
                    self.workflow_event(
                        &run,
                        "phase_rejected",
                        Concerning {
                            phase,
                            task: None,
                            gate: Some(request.id),
                        },
                    )?;
                    self.start_phase(&mut run, phase)?;
                    self.put_workflow(&run)?;
                    return Ok(true);
                }
                let feedback = wf::rejection_feedback(request.response_comment.as_deref());
                for task_id in &tasks {
                    let old = self.task_record(task_id, "the workflow")?;
                    if old.status == TaskStatus::Completed {
                        let feedback = feedback.clone();
                        self.change_task(
                            old,
                            TaskChange::Reopened { feedback },
                            TaskEdits::default(),
                        )?;
                    }
                }
                self.workflow_event(
                    &run,
                    "phase_rejected",
                    Concerning {
                        phase,
                        task: tasks.first().copied().filter(|_| tasks.len() == 1),
                        gate: Some(request.id),
                    },
                )?;
            }
        }
        self.put_workflow(&run)?;
        Ok(true)
    }

    fn workflow_event(
        &mut self,
        run: &WorkflowRun,
        action: &str,
        concerning: Concerning,
    ) -> Written<()> {
        let Concerning { phase, task, gate } = concerning;
        let at = wf::phase(run, phase)?;
        let data = object_string(|o| {
            o.str("workflow", &run.workflow)
                .str("action", action)
                .u64("phase", phase as u64)
                .str("phase_id", &at.id)
                .str("phase_agent", at.agent_type.as_str())
                .opt_id("request_id", gate)
                .opt_str(
                    "reason",
                    run.reason.as_deref().filter(|_| !run.is_running()),
                );
        });
        self.emit(EventDraft {
            event_type: EventType::WorkflowEvent,
            project_id: Some(run.project_id),
            task_id: task,
            agent_type: Some(at.agent_type.clone()),
            data,
        })?;
        Ok(())
    }
}
