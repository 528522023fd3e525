//! HITL requests: created, answered, expired, bulk-approved; a project's oversight level.

use super::*;

impl<'t> Batch<'t> {
    pub(super) fn create_hitl(
        &mut self,
        project_id: Id,
        task_id: Option<Id>,
        question: String,
        options: Vec<String>,
        expires_in_seconds: Option<u64>,
    ) -> ApplyResult<Reply> {
        self.require_project(&project_id)?;
        if let Some(task_id) = task_id {
            let task: Option<Task> = read(&self.tasks, &task_id)?;
            if task.is_none_or(|t| t.project_id != project_id) {
                return Err(DomainError::invalid(
                    "task_id",
                    format!("task {task_id} does not exist in project {project_id}"),
                )
                .into());
            }
        }
        let expires_at = expires_in_seconds.map(|s| {
            self.now.saturating_add(
                i64::try_from(s)
                    .unwrap_or(i64::MAX)
                    .saturating_mul(1_000_000),
            )
        });
        let request = HitlRequest {
            id: Id::new_v7(),
            project_id,
            task_id,
            question,
            options,
            status: HitlStatus::Pending,
            created_at: self.now,
            updated_at: self.now,
            expires_at,
            responded_at: None,
            amended_content: None,
            response_comment: None,
            history: vec![HitlHistoryEntry {
                action: "created".into(),
                at: self.now,
                content: None,
                comment: None,
            }],
        };
        self.put_hitl(None, &request)?;
        let data = object_string(|o| {
            o.id("request_id", request.id)
                .str("question", &request.question)
                .strs("options", &request.options)
                .str("status", request.status.as_str())
                .opt_timestamp("expires_at", request.expires_at);
        });
        self.emit(
            EventType::HitlRequestCreated,
            Some(project_id),
            task_id,
            None,
            data,
        )?;
        Ok(Reply::Hitl(request))
    }

    pub(super) fn respond_hitl(
        &mut self,
        hitl_id: Id,
        action: HitlAction,
        content: Option<String>,
        comment: Option<String>,
    ) -> ApplyResult<Reply> {
        let old: HitlRequest = read(&self.hitl, &hitl_id)?
            .ok_or_else(|| DomainError::not_found("hitl_request", hitl_id))?;
        if old.status == HitlStatus::Pending && old.expires_at.is_some_and(|e| e <= self.now) {
            return Ok(Reply::HitlExpired(self.expire_hitl(old)?));
        }
        let status = hitl_outcome(old.status, action)?;
        if action == HitlAction::Amend && content.is_none() {
            return Err(DomainError::invalid("content", "is required to amend").into());
        }
        let mut request = old.clone();
        request.status = status;
        request.updated_at = self.now;
        request.responded_at = Some(self.now);
        request.response_comment = comment.clone();
        if action == HitlAction::Amend {
            request.amended_content = content.clone();
        }
        request.history.push(HitlHistoryEntry {
            action: action.as_str().into(),
            at: self.now,
            content,
            comment,
        });
        self.put_hitl(Some(&old), &request)?;
        let data = object_string(|o| {
            o.id("request_id", request.id)
                .str("action", action.as_str())
                .str("status", request.status.as_str())
                .str("user_response", request.status.as_str())
                .opt_raw("amended_content", request.amended_content.as_deref())
                .opt_str("comment", request.response_comment.as_deref());
        });
        self.emit(
            EventType::HitlResponse,
            Some(request.project_id),
            request.task_id,
            None,
            data,
        )?;
        let workflow_resumed = self.after_gate_answered(&request, action)?;
        Ok(Reply::HitlAnswered {
            request,
            workflow_resumed,
        })
    }

    pub(super) fn expire_hitl(&mut self, old: HitlRequest) -> ApplyResult<HitlRequest> {
        let mut request = old.clone();
        request.status = HitlStatus::Expired;
        request.updated_at = self.now;
        request.history.push(HitlHistoryEntry {
            action: "expire".into(),
            at: self.now,
            content: None,
            comment: None,
        });
        self.put_hitl(Some(&old), &request)?;
        let data = object_string(|o| {
            o.id("request_id", request.id)
                .str("status", request.status.as_str())
                .opt_timestamp("expires_at", request.expires_at);
        });
        self.emit(
            EventType::HitlExpired,
            Some(request.project_id),
            request.task_id,
            None,
            data,
        )?;
        Ok(request)
    }

    pub(super) fn bulk_approve(
        &mut self,
        hitl_ids: Vec<Id>,
        comment: Option<String>,
    ) -> ApplyResult<Reply> {
        let mut approved = Vec::new();
        let mut skipped = Vec::new();
        for id in hitl_ids {
            match self.respond_hitl(id, HitlAction::Approve, None, comment.clone()) {
                Ok(Reply::HitlAnswered { request, .. }) => approved.push(request),
                Ok(Reply::HitlExpired(_)) => skipped.push((id, "expired".to_string())),
                Ok(_) => return Err(misanswered("respond_hitl")),
                Err(ApplyError::Domain(e)) => skipped.push((id, e.to_string())),
                Err(storage) => return Err(storage),
            }
        }
        Ok(Reply::BulkApproved { approved, skipped })
    }

    pub(super) fn set_oversight_level(
        &mut self,
        project_id: Id,
        level: OversightLevel,
    ) -> ApplyResult<Reply> {
        let old = self.require_project(&project_id)?;
        let mut project = old.clone();
        project.oversight_level = level;
        project.updated_at = self.now;
        self.projects
            .insert(project.id.as_bytes(), encode(&project).as_slice())?;
        self.changes
            .push(CacheChange::Invalidate(CacheKey::ProjectStatus(project.id)));
        let data = object_string(|o| {
            o.str("level", level.as_str())
                .str("previous_level", old.oversight_level.as_str());
        });
        self.emit(
            EventType::OversightLevelChanged,
            Some(project_id),
            None,
            None,
            data,
        )?;
        Ok(Reply::Project(project))
    }
}
