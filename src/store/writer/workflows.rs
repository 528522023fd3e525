//! Workflows: a run started, each phase's task, gates and hand-offs, the project's completion.

use super::*;

impl<'t> Batch<'t> {
    // ----- workflows ----------------------------------------------------------------------------

    pub(super) fn start_workflow(
        &mut self,
        project_id: Id,
        name: String,
        context: Option<String>,
    ) -> ApplyResult<Reply> {
        let project = self.require_project(&project_id)?;
        let Some(def) = self
            .shared
            .workflows
            .iter()
            .find(|w| w.name == name)
            .cloned()
        else {
            let known: Vec<&str> = self
                .shared
                .workflows
                .iter()
                .map(|w| w.name.as_str())
                .collect();
            return Err(DomainError::invalid(
                "workflow",
                format!("unknown workflow `{name}`; known: {}", known.join(", ")),
            )
            .into());
        };
        if let Some(run) = read::<WorkflowRun>(&self.workflows, &project_id)?
            && !run.completed
        {
            return Err(DomainError::InvalidTransition {
                message: format!(
                    "project {project_id} already runs the `{}` workflow",
                    run.workflow
                ),
            }
            .into());
        }
        let phases = def
            .phases
            .iter()
            .map(|p| -> Result<PhaseRun, DomainError> {
                Ok(PhaseRun {
                    // Definitions are validated at start-up; a bad one still refuses, not panics.
                    agent_type: AgentType::parse(&p.agent_type).ok_or_else(|| {
                        DomainError::unknown_value::<AgentType>("agent_type", &p.agent_type)
                    })?,
                    instructions: crate::domain::workflow::render(
                        &p.instructions,
                        &project.name,
                        context.as_deref(),
                    ),
                    produces: p
                        .produces
                        .iter()
                        .filter_map(|k| ArtifactType::parse(k))
                        .collect(),
                    gated: crate::domain::workflow::gated(project.oversight_level, p.gate),
                    status: PhaseStatus::Waiting,
                    task_id: None,
                    gate_id: None,
                })
            })
            .collect::<Result<Vec<_>, DomainError>>()?;
        let mut run = WorkflowRun {
            project_id,
            workflow: name,
            context,
            phases,
            current: 0,
            completed: false,
            started_at: self.now,
            completed_at: None,
        };
        self.workflow_event(&run, "workflow_started", None, None)?;
        self.start_phase(&mut run, 0)?;
        self.workflows
            .insert(project_id.as_bytes(), encode(&run).as_slice())?;
        Ok(Reply::Workflow(run))
    }

    /// Creates a phase's task, with every artifact of the project so far as its context.
    pub(super) fn start_phase(&mut self, run: &mut WorkflowRun, index: usize) -> ApplyResult<()> {
        let lo = tables::key2(&run.project_id, &Id([0; 16]));
        let hi = tables::key2(&run.project_id, &Id([0xff; 16]));
        let mut context_ids = Vec::new();
        for entry in self
            .artifacts_by_project
            .range::<&[u8; 32]>(&lo..=&hi)?
            .take(crate::domain::Limits::CONTEXT_IDS)
        {
            context_ids.push(tables::trailing_id(entry?.0.value()));
        }
        let phase = phase_at(run, index)?;
        let reply = self.create_task(
            run.project_id,
            phase.agent_type,
            phase.instructions.clone(),
            context_ids,
        )?;
        let Reply::Task(task) = reply else {
            return Err(misanswered("create_task"));
        };
        run.current = index as u32;
        run.phases[index].task_id = Some(task.id);
        run.phases[index].status = PhaseStatus::Running;
        self.workflow_event(run, "phase_started", Some(task.id), None)
    }

    /// A completed task that is its workflow's current phase: gate the hand-off or hand off.
    pub(super) fn after_task_completed(&mut self, task: &Task) -> ApplyResult<()> {
        let Some(mut run) = read::<WorkflowRun>(&self.workflows, &task.project_id)? else {
            return Ok(());
        };
        let index = run.current as usize;
        if run.completed || phase_at(&run, index)?.task_id != Some(task.id) {
            return Ok(());
        }
        if run.phases[index].gated {
            let next = run
                .phases
                .get(index + 1)
                .map_or("completion".to_string(), |p| p.agent_type.to_string());
            let question = format!(
                "Approve the {} phase's work on this project and hand it to {next}?",
                run.phases[index].agent_type
            );
            let options = vec!["approve".into(), "reject".into(), "amend".into()];
            let Reply::Hitl(gate) =
                self.create_hitl(task.project_id, Some(task.id), question, options, None)?
            else {
                return Err(misanswered("create_hitl"));
            };
            run.phases[index].status = PhaseStatus::AwaitingApproval;
            run.phases[index].gate_id = Some(gate.id);
            self.workflow_event(&run, "gate_opened", Some(task.id), Some(gate.id))?;
        } else {
            self.hand_off(&mut run)?;
        }
        self.workflows
            .insert(task.project_id.as_bytes(), encode(&run).as_slice())?;
        Ok(())
    }

    /// The current phase is done: start the next, or complete the project.
    pub(super) fn hand_off(&mut self, run: &mut WorkflowRun) -> ApplyResult<()> {
        let index = run.current as usize;
        phase_at(run, index)?;
        run.phases[index].status = PhaseStatus::Done;
        run.phases[index].gate_id = None;
        self.workflow_event(run, "phase_completed", run.phases[index].task_id, None)?;
        if index + 1 < run.phases.len() {
            return self.start_phase(run, index + 1);
        }
        run.completed = true;
        run.completed_at = Some(self.now);
        let old = self.require_project(&run.project_id)?;
        let mut project = old.clone();
        project.status = ProjectStatus::Completed;
        project.updated_at = self.now;
        self.projects
            .insert(project.id.as_bytes(), encode(&project).as_slice())?;
        self.changes
            .push(CacheChange::Invalidate(CacheKey::ProjectStatus(project.id)));
        self.workflow_event(run, "project_completed", None, None)
    }

    /// A human answered a workflow gate: approve hands off; amend stores the amended content as
    /// an artifact, then hands off; reject sends the phase's task back with the comment.
    /// Whether the request was the workflow's open gate (and so the workflow moved on).
    pub(super) fn after_gate_answered(
        &mut self,
        request: &HitlRequest,
        action: HitlAction,
    ) -> ApplyResult<bool> {
        let Some(mut run) = read::<WorkflowRun>(&self.workflows, &request.project_id)? else {
            return Ok(false);
        };
        let index = run.current as usize;
        if run.completed || phase_at(&run, index)?.gate_id != Some(request.id) {
            return Ok(false);
        }
        match action {
            HitlAction::Approve => self.hand_off(&mut run)?,
            HitlAction::Amend => {
                let content = request
                    .amended_content
                    .clone()
                    .unwrap_or_else(|| "null".into());
                let agent = run.phases[index].agent_type;
                self.create_artifact(
                    run.project_id,
                    agent,
                    ArtifactType::HitlResponse,
                    content,
                    None,
                )?;
                self.hand_off(&mut run)?;
            }
            HitlAction::Reject => {
                let task_id = run.phases[index].task_id.ok_or_else(|| {
                    StoreError::Corrupt(format!(
                        "the workflow of project {} gates phase {index}, which has no task",
                        run.project_id
                    ))
                })?;
                let old: Task = read(&self.tasks, &task_id)?.ok_or_else(|| {
                    StoreError::Corrupt(format!("workflow names task {task_id}, which is missing"))
                })?;
                let mut task = old.clone();
                task.status = TaskStatus::Pending;
                task.completed_at = None;
                task.updated_at = self.now;
                task.instructions.push_str(&format!(
                    "\n\nReviewer feedback: {}",
                    request
                        .response_comment
                        .as_deref()
                        .unwrap_or("rejected without a comment")
                ));
                self.put_task(Some(&old), &task)?;
                let data = task_event_data(&task);
                self.emit(
                    EventType::TaskReopened,
                    Some(task.project_id),
                    Some(task.id),
                    Some(task.agent_type),
                    data,
                )?;
                run.phases[index].status = PhaseStatus::Running;
                run.phases[index].gate_id = None;
                self.workflow_event(&run, "phase_rejected", Some(task_id), Some(request.id))?;
            }
        }
        self.workflows
            .insert(run.project_id.as_bytes(), encode(&run).as_slice())?;
        Ok(true)
    }

    pub(super) fn workflow_event(
        &mut self,
        run: &WorkflowRun,
        action: &str,
        task: Option<Id>,
        gate: Option<Id>,
    ) -> ApplyResult<()> {
        let phase = phase_at(run, run.current as usize)?;
        let data = object_string(|o| {
            o.str("workflow", &run.workflow)
                .str("action", action)
                .u64("phase", u64::from(run.current))
                .str("phase_agent", phase.agent_type.as_str())
                .opt_id("request_id", gate);
        });
        self.emit(
            EventType::WorkflowEvent,
            Some(run.project_id),
            task,
            Some(phase.agent_type),
            data,
        )?;
        Ok(())
    }
}

/// A stored workflow's phase, or `Corrupt` when the run names a phase it does not have.
pub(super) fn phase_at(run: &WorkflowRun, index: usize) -> Result<&PhaseRun, StoreError> {
    run.phases.get(index).ok_or_else(|| {
        StoreError::Corrupt(format!(
            "the workflow of project {} is at phase {index} of {}",
            run.project_id,
            run.phases.len()
        ))
    })
}

/// A step of the writer answered with a reply of another kind: a bug, reported as a storage
/// failure (the batch is abandoned) instead of a panic.
pub(super) fn misanswered(step: &str) -> ApplyError {
    ApplyError::Storage(StoreError::Storage(format!(
        "{step} answered with an unexpected reply"
    )))
}
