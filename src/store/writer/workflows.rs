//! Workflows: a run started, each phase's task, gates and hand-offs, the project's completion. The
//! rules are `domain::workflow`'s; this writes what they decide.

use super::artifacts::CreateArtifact;
use super::batch::read;
use super::tasks::CreateTask;
use super::{Batch, Checked, Write, Written};
use crate::domain::records::{HitlRequest, Task, WorkflowRun};
use crate::domain::tasks::TaskChange;
use crate::domain::tasks::TaskEdits;
use crate::domain::workflow::{self as wf, Next, OnCompleted};
use crate::domain::{
    AgentType, ArtifactType, DomainError, EventType, HitlAction, Id, ProjectStatus,
};
use crate::events::EventDraft;
use crate::json::object_string;
use crate::store::codec::encode;
use crate::store::{StoreError, tables};
use redb::ReadableTable;

/// Starts a workflow on a project: its first phase's task.
#[derive(Clone, Debug)]
pub struct StartWorkflow {
    pub project_id: Id,
    pub workflow: String,
    /// JSON text.
    pub context: Option<String>,
}

/// What a workflow event is about besides its run: the phase's task, and the gate's HITL request.
#[derive(Copy, Clone, Debug, Default)]
struct Concerning {
    task: Option<Id>,
    gate: Option<Id>,
}

impl Write for StartWorkflow {
    type Plan = WorkflowRun;
    type Output = WorkflowRun;

    fn check(self, batch: &Batch<'_>) -> Checked<WorkflowRun> {
        let project = batch.require_project(&self.project_id)?;
        let workflows = &batch.shared.workflows;
        let Some(def) = workflows.iter().find(|w| w.name == self.workflow) else {
            let known: Vec<&str> = workflows.iter().map(|w| w.name.as_str()).collect();
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
        if let Some(run) = read::<WorkflowRun>(&batch.workflows, &self.project_id)?
            && !run.completed
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
        // built-in `sdlc` is not checked at start-up) refuses the run.
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
        wf::current(&run)?;
        Ok(run)
    }

    fn apply(mut run: WorkflowRun, batch: &mut Batch<'_>) -> Written<WorkflowRun> {
        for phase in &run.phases {
            batch.intern_agent(&phase.agent_type)?;
        }
        batch.workflow_event(
            &run,
            "workflow_started",
            Concerning {
                task: None,
                gate: None,
            },
        )?;
        batch.start_phase(&mut run, 0)?;
        batch.put_workflow(&run)?;
        Ok(run)
    }
}

impl<'t> Batch<'t> {
    fn put_workflow(&mut self, run: &WorkflowRun) -> Written<()> {
        self.workflows
            .insert(run.project_id.as_bytes(), encode(run).as_slice())?;
        Ok(())
    }

    /// Creates a phase's task, with every artifact of the project so far as its context.
    fn start_phase(&mut self, run: &mut WorkflowRun, index: usize) -> Written<()> {
        let lo = tables::project_key(&run.project_id, tables::ARTIFACT_ALL, 0, &Id([0; 16]));
        let hi = tables::project_key(&run.project_id, tables::ARTIFACT_ALL, 0, &Id([0xff; 16]));
        let mut context_ids = Vec::new();
        for entry in self
            .artifact_ix
            .shared
            .range::<&[u8; 35]>(&lo..=&hi)?
            .take(crate::domain::Limits::CONTEXT_IDS)
        {
            context_ids.push(tables::trailing_id(entry?.0.value()));
        }
        let phase = run.phases.get(index).ok_or_else(|| {
            StoreError::Corrupt(format!(
                "the workflow of project {} has no phase {index}",
                run.project_id
            ))
        })?;
        let task = self.insert_task(CreateTask {
            project_id: run.project_id,
            agent_type: phase.agent_type.clone(),
            instructions: phase.instructions.clone(),
            context_ids,
            priority: phase.priority,
        })?;
        wf::phase_started(run, index, task.id)?;
        self.workflow_event(
            run,
            "phase_started",
            Concerning {
                task: Some(task.id),
                gate: None,
            },
        )
    }

    /// A completed task that is its workflow's current phase: gate the hand-off or hand off.
    pub(super) fn after_task_completed(&mut self, task: &Task) -> Written<()> {
        let Some(mut run) = read::<WorkflowRun>(&self.workflows, &task.project_id)? else {
            return Ok(());
        };
        match wf::on_completed(&run, task.id)? {
            OnCompleted::Nothing => return Ok(()),
            OnCompleted::OpenGate { question, options } => {
                let gate =
                    self.insert_hitl(task.project_id, Some(task.id), question, options, None)?;
                wf::gate_opened(&mut run, gate.id)?;
                self.workflow_event(
                    &run,
                    "gate_opened",
                    Concerning {
                        task: Some(task.id),
                        gate: Some(gate.id),
                    },
                )?;
            }
            OnCompleted::HandOff => self.hand_off(&mut run)?,
        }
        self.put_workflow(&run)
    }

    /// The current phase is done: start the next, or complete the project.
    fn hand_off(&mut self, run: &mut WorkflowRun) -> Written<()> {
        let done = wf::current(run)?.task_id;
        let next = wf::hand_off(run, self.now)?;
        self.workflow_event(
            run,
            "phase_completed",
            Concerning {
                task: done,
                gate: None,
            },
        )?;
        match next {
            Next::Phase(index) => self.start_phase(run, index),
            Next::Complete => {
                let mut project = self.project_record(&run.project_id)?;
                project.status = ProjectStatus::Completed;
                project.updated_at = self.now;
                self.put_project(&project)?;
                self.workflow_event(
                    run,
                    "project_completed",
                    Concerning {
                        task: None,
                        gate: None,
                    },
                )
            }
        }
    }

    /// A human answered a workflow gate: approve hands off; amend stores the amended content as
    /// an artifact, then hands off; reject sends the phase's task back with the comment.
    /// Whether the request was the workflow's open gate (and so the workflow moved on).
    pub(super) fn after_gate_answered(
        &mut self,
        request: &HitlRequest,
        action: HitlAction,
    ) -> Written<bool> {
        let Some(mut run) = read::<WorkflowRun>(&self.workflows, &request.project_id)? else {
            return Ok(false);
        };
        if !wf::is_open_gate(&run, request.id)? {
            return Ok(false);
        }
        match action {
            HitlAction::Approve => self.hand_off(&mut run)?,
            HitlAction::Amend => {
                let content = request
                    .amended_content
                    .clone()
                    .unwrap_or_else(|| "null".into());
                let source_agent = wf::current(&run)?.agent_type.clone();
                self.insert_artifact(CreateArtifact {
                    project_id: run.project_id,
                    source_agent,
                    artifact_type: ArtifactType::HITL_RESPONSE,
                    content,
                    metadata: None,
                })?;
                self.hand_off(&mut run)?;
            }
            HitlAction::Reject => {
                let task_id = wf::gate_rejected(&mut run)?;
                let old = self.task_record(&task_id, "the workflow")?;
                let feedback = wf::rejection_feedback(request.response_comment.as_deref());
                self.change_task(old, TaskChange::Reopened { feedback }, TaskEdits::default())?;
                self.workflow_event(
                    &run,
                    "phase_rejected",
                    Concerning {
                        task: Some(task_id),
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
        let Concerning { task, gate } = concerning;
        let phase = wf::current(run)?;
        let data = object_string(|o| {
            o.str("workflow", &run.workflow)
                .str("action", action)
                .u64("phase", u64::from(run.current))
                .str("phase_agent", phase.agent_type.as_str())
                .opt_id("request_id", gate);
        });
        self.emit(EventDraft {
            event_type: EventType::WorkflowEvent,
            project_id: Some(run.project_id),
            task_id: task,
            agent_type: Some(phase.agent_type.clone()),
            data,
        })?;
        Ok(())
    }
}
