//! Projects, tasks and their state changes, claims and leases, the timers that fire them, agents reset.

use super::*;

impl<'t> Batch<'t> {
    // ----- commands -------------------------------------------------------------------------

    pub(super) fn create_project(
        &mut self,
        name: String,
        description: Option<String>,
    ) -> ApplyResult<Reply> {
        let project = Project {
            id: Id::new_v7(),
            name,
            description,
            status: ProjectStatus::Active,
            oversight_level: OversightLevel::Medium,
            created_at: self.now,
            updated_at: self.now,
        };
        self.projects
            .insert(project.id.as_bytes(), encode(&project).as_slice())?;
        self.summaries.insert(project.id, ProjectSummary::default());
        let data = object_string(|o| {
            o.id("id", project.id)
                .str("name", &project.name)
                .opt_str("description", project.description.as_deref())
                .str("status", project.status.as_str())
                .timestamp("created_at", project.created_at);
        });
        self.emit(
            EventType::ProjectCreated,
            Some(project.id),
            None,
            None,
            data,
        )?;
        Ok(Reply::Project(project))
    }

    pub(super) fn create_task(
        &mut self,
        project_id: Id,
        agent_type: AgentType,
        instructions: String,
        context_ids: Vec<Id>,
    ) -> ApplyResult<Reply> {
        self.require_project(&project_id)?;
        for (i, context_id) in context_ids.iter().enumerate() {
            let artifact: Option<Artifact> = read(&self.artifacts, context_id)?;
            if artifact.is_none_or(|a| a.project_id != project_id) {
                return Err(DomainError::invalid(
                    format!("context_ids[{i}]"),
                    format!("artifact {context_id} does not exist in project {project_id}"),
                )
                .into());
            }
        }
        let task = Task {
            id: Id::new_v7(),
            project_id,
            agent_type,
            status: TaskStatus::Pending,
            instructions,
            context_ids,
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
        };
        self.put_task(None, &task)?;
        let data = task_event_data(&task);
        self.emit(
            EventType::TaskCreated,
            Some(project_id),
            Some(task.id),
            Some(agent_type),
            data,
        )?;
        Ok(Reply::Task(task))
    }

    pub(super) fn set_task_status(
        &mut self,
        task_id: Id,
        status: TaskStatus,
        output: Option<String>,
        error_message: Option<String>,
    ) -> ApplyResult<Reply> {
        let old: Task =
            read(&self.tasks, &task_id)?.ok_or_else(|| DomainError::not_found("task", task_id))?;
        let transition = task_transition(old.status, status)?;
        let task = self.change_task(old, Change::To(transition), output, error_message, None)?;
        Ok(Reply::Task(task))
    }

    /// The oldest pending task of the agent type, now working for `worker_id` under a lease.
    pub(super) fn claim(
        &mut self,
        agent_type: AgentType,
        worker_id: String,
        lease: Micros,
    ) -> ApplyResult<Reply> {
        let lo =
            tables::agent_status_key(agent_type.code(), TaskStatus::Pending.code(), &Id([0; 16]));
        let hi = tables::agent_status_key(
            agent_type.code(),
            TaskStatus::Pending.code(),
            &Id([0xff; 16]),
        );
        let first = match self
            .tasks_by_agent_status
            .range::<&[u8; 18]>(&lo..=&hi)?
            .next()
        {
            Some(entry) => Some(tables::trailing_id(entry?.0.value())),
            None => None,
        };
        let Some(id) = first else {
            return Ok(Reply::NothingToClaim);
        };
        let old: Task = read(&self.tasks, &id)?.ok_or_else(|| {
            StoreError::Corrupt(format!("claim index names task {id}, which is missing"))
        })?;
        let claim = Claim {
            worker_id,
            lease_expires_at: self.now.saturating_add(lease),
        };
        let task = self.change_task(
            old,
            Change::To(TaskTransition::Start),
            None,
            None,
            Some(claim),
        )?;
        Ok(Reply::Task(task))
    }

    /// Extends a working task's lease; only its worker may, when a worker id is given.
    pub(super) fn heartbeat(
        &mut self,
        task_id: Id,
        worker_id: Option<String>,
        lease: Micros,
    ) -> ApplyResult<Reply> {
        let old: Task =
            read(&self.tasks, &task_id)?.ok_or_else(|| DomainError::not_found("task", task_id))?;
        if old.status != TaskStatus::Working {
            return Err(DomainError::InvalidTransition {
                message: format!(
                    "task {task_id} is {}, not working: there is no lease to extend",
                    old.status
                ),
            }
            .into());
        }
        if let (Some(asked), Some(holder)) = (&worker_id, &old.worker_id)
            && asked != holder
        {
            return Err(DomainError::InvalidTransition {
                message: format!("task {task_id} is claimed by another worker"),
            }
            .into());
        }
        let mut task = old.clone();
        task.lease_expires_at = Some(self.now.saturating_add(lease));
        task.updated_at = self.now;
        self.put_task(Some(&old), &task)?;
        Ok(Reply::Task(task))
    }

    /// Applies a change of status with everything that follows from it: timestamps, the lease,
    /// failures and their retry or escalation, the event, and the agent's status.
    pub(super) fn change_task(
        &mut self,
        old: Task,
        change: Change,
        output: Option<String>,
        error_message: Option<String>,
        claim: Option<Claim>,
    ) -> ApplyResult<Task> {
        let mut task = old.clone();
        task.updated_at = self.now;
        if output.is_some() {
            task.output = output;
        }
        if error_message.is_some() {
            task.error_message = error_message;
        }
        let mut escalate = false;
        let event = match change {
            Change::To(transition) => {
                task.status = match transition {
                    TaskTransition::Start => TaskStatus::Working,
                    TaskTransition::Complete => TaskStatus::Completed,
                    TaskTransition::Fail => TaskStatus::Failed,
                    TaskTransition::Cancel => TaskStatus::Cancelled,
                    TaskTransition::Retry => TaskStatus::Pending,
                };
                match transition {
                    TaskTransition::Start => {
                        task.started_at = Some(self.now);
                        task.timeout_at = Some(self.now.saturating_add(self.settings.task_timeout));
                        task.attempts += 1;
                        task.error_message = None;
                        task.completed_at = None;
                    }
                    TaskTransition::Complete | TaskTransition::Cancel => {
                        task.completed_at = Some(self.now);
                        task.retry_at = None;
                    }
                    TaskTransition::Fail => {
                        task.completed_at = Some(self.now);
                        task.failures += 1;
                        if task.failures < self.settings.max_attempts {
                            let backoff = self
                                .settings
                                .retry_backoff
                                .saturating_mul(1 << (task.failures - 1).min(20));
                            task.retry_at = Some(self.now.saturating_add(backoff));
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
            Change::LeaseExpired => {
                task.status = TaskStatus::Pending;
                EventType::TaskLeaseExpired
            }
        };
        match claim {
            Some(c) => {
                task.worker_id = Some(c.worker_id);
                task.lease_expires_at = Some(c.lease_expires_at);
            }
            None if task.status != TaskStatus::Working => {
                task.worker_id = None;
                task.lease_expires_at = None;
                task.timeout_at = None;
            }
            None => {}
        }
        self.put_task(Some(&old), &task)?;
        let data = task_event_data(&task);
        self.emit(
            event,
            Some(task.project_id),
            Some(task.id),
            Some(task.agent_type),
            data,
        )?;
        // The agent follows its tasks: working while it holds a working task.
        let mut agent = self.agent(task.agent_type)?;
        let before = agent.clone();
        if task.status == TaskStatus::Working {
            agent.working_tasks += 1;
            agent.current_task_id = Some(task.id);
            agent.status = AgentStatus::Working;
            agent.error_message = None;
        } else if old.status == TaskStatus::Working {
            agent.working_tasks = agent.working_tasks.saturating_sub(1);
            if agent.current_task_id == Some(task.id) {
                agent.current_task_id = None;
            }
            if task.status == TaskStatus::Failed {
                agent.error_message = task.error_message.clone();
            }
            if agent.working_tasks == 0 && agent.status == AgentStatus::Working {
                agent.status = AgentStatus::Idle;
            }
        }
        if escalate {
            agent.status = AgentStatus::Error;
            agent.error_message = Some(format!(
                "task {} failed {} times: {}",
                task.id,
                task.failures,
                task.error_message.as_deref().unwrap_or("no error message")
            ));
        }
        if agent != before {
            agent.last_activity = self.now;
            self.put_agent(&before, &agent, Some((task.id, task.project_id)))?;
        }
        if task.status == TaskStatus::Completed {
            self.after_task_completed(&task)?;
        }
        if escalate {
            let question = format!(
                "Task {} ({}) failed {} times, last with: {}. Retry it or cancel it?",
                task.id,
                task.agent_type,
                task.failures,
                task.error_message.as_deref().unwrap_or("no error message")
            );
            self.create_hitl(
                task.project_id,
                Some(task.id),
                question,
                vec!["retry".into(), "cancel".into()],
                None,
            )?;
        }
        Ok(task)
    }

    /// Fires every timer due by `now` (at most `max`): lease expiries, work timeouts, retries and
    /// HITL expiries. A timer whose record no longer calls for it is simply gone: timers are an
    /// index derived from the records.
    pub(super) fn fire_timers(&mut self, now: Micros, max: usize) -> ApplyResult<Reply> {
        let hi = tables::timer_key(now, tables::TimerKind::HitlExpiry, &Id([0xff; 16]));
        let mut due = Vec::new();
        for entry in self.timers.range::<&[u8; 25]>(..=&hi)?.take(max) {
            let (key, _) = entry?;
            let key = *key.value();
            due.push((
                key,
                tables::TimerKind::from_code(key[8]),
                tables::trailing_id(&key),
            ));
        }
        let mut fired = 0u64;
        for (key, kind, id) in due {
            let before = fired;
            match kind {
                Some(tables::TimerKind::LeaseExpiry) => {
                    if let Some(old) = read::<Task>(&self.tasks, &id)?
                        && old.status == TaskStatus::Working
                        && old.lease_expires_at.is_some_and(|at| at <= now)
                    {
                        self.change_task(old, Change::LeaseExpired, None, None, None)?;
                        fired += 1;
                    }
                }
                Some(tables::TimerKind::WorkTimeout) => {
                    if let Some(old) = read::<Task>(&self.tasks, &id)?
                        && old.status == TaskStatus::Working
                        && self.work_deadline(&old).is_some_and(|at| at <= now)
                    {
                        let message = format!(
                            "timed out: working for longer than {} ms",
                            self.settings.task_timeout / 1000
                        );
                        self.change_task(
                            old,
                            Change::To(TaskTransition::Fail),
                            None,
                            Some(message),
                            None,
                        )?;
                        fired += 1;
                    }
                }
                Some(tables::TimerKind::Retry) => {
                    if let Some(old) = read::<Task>(&self.tasks, &id)?
                        && old.status == TaskStatus::Failed
                        && old.retry_at.is_some_and(|at| at <= now)
                    {
                        self.change_task(old, Change::To(TaskTransition::Retry), None, None, None)?;
                        fired += 1;
                    }
                }
                Some(tables::TimerKind::HitlExpiry) => {
                    if let Some(old) = read::<HitlRequest>(&self.hitl, &id)?
                        && old.status == HitlStatus::Pending
                        && old.expires_at.is_some_and(|at| at <= now)
                    {
                        self.expire_hitl(old)?;
                        fired += 1;
                    }
                }
                None => {}
            }
            if fired == before {
                // A timer no record calls for (it cannot be, but it must not fire forever).
                tracing::warn!(?kind, %id, "removing a timer that no record calls for");
                self.timers.remove(&key)?;
            }
        }
        Ok(Reply::Fired(fired))
    }

    pub(super) fn work_deadline(&self, task: &Task) -> Option<Micros> {
        (task.status == TaskStatus::Working)
            .then_some(task.timeout_at)
            .flatten()
    }

    pub(super) fn reset_agent(&mut self, agent_type: AgentType) -> ApplyResult<Reply> {
        let before = self.agent(agent_type)?;
        let mut agent = before.clone();
        agent.status = AgentStatus::Idle;
        agent.current_task_id = None;
        agent.error_message = None;
        agent.last_activity = self.now;
        self.put_agent(&before, &agent, None)?;
        Ok(Reply::Agent(agent))
    }
}

pub(super) fn task_event_data(task: &Task) -> String {
    object_string(|o| {
        o.id("task_id", task.id)
            .str("agent_type", task.agent_type.as_str())
            .str("status", task.status.as_str())
            .u64("attempts", u64::from(task.attempts))
            .opt_raw("output", task.output.as_deref())
            .opt_str("error_message", task.error_message.as_deref());
    })
}
