//! HITL requests: created, answered, expired, bulk-approved.

use super::batch::read;
use super::{Batch, Checked, Refusal, Write, Written};
use crate::domain::records::{HitlHistoryEntry, HitlRequest, HitlTimeout, Task};
use crate::domain::tasks::{HitlReply, TimedOut};
use crate::domain::{
    DomainError, EventType, HitlAction, HitlStatus, Id, Micros, Vocabulary, hitl_outcome,
};
use crate::events::EventDraft;
use crate::json::object_string;
use std::collections::HashMap;

/// A question to a human about a project (and optionally one of its tasks).
#[derive(Clone, Debug)]
pub struct CreateHitl {
    pub project_id: Id,
    pub task_id: Option<Id>,
    pub question: String,
    pub options: Vec<String>,
    pub expires_in_seconds: Option<u64>,
    /// The API key names that may answer it (empty: any reviewer).
    pub assignees: Vec<String>,
    /// A timeout (`timeout_seconds`, `on_timeout`, `escalate_to`); then `expires_in_seconds`
    /// is none.
    pub on_timeout: Option<HitlTimeout>,
}

impl Write for CreateHitl {
    type Plan = CreateHitl;
    type Output = HitlRequest;

    fn check(self, batch: &Batch<'_>) -> Checked<CreateHitl> {
        batch.require_project(&self.project_id)?;
        if let Some(task_id) = self.task_id {
            let task: Option<Task> = read(batch.tasks.open()?, &task_id)?;
            if task.is_none_or(|t| t.project_id != self.project_id) {
                return Err(DomainError::invalid(
                    "task_id",
                    format!(
                        "task {task_id} does not exist in project {}",
                        self.project_id
                    ),
                )
                .into());
            }
        }
        Ok(self)
    }

    fn apply(c: CreateHitl, batch: &mut Batch<'_>) -> Written<HitlRequest> {
        let seconds = c
            .on_timeout
            .as_ref()
            .map(|t| t.seconds)
            .or(c.expires_in_seconds);
        let expires_at = crate::domain::tasks::hitl_expiry(batch.now, seconds);
        batch.insert_hitl_for(
            NewHitl {
                project_id: c.project_id,
                task_id: c.task_id,
                question: c.question,
                options: c.options,
                expires_at,
            },
            c.assignees,
            c.on_timeout,
        )
    }
}

/// A human's answer to a HITL request.
#[derive(Clone, Debug)]
pub struct RespondHitl {
    pub hitl_id: Id,
    pub action: HitlAction,
    /// JSON text.
    pub content: Option<String>,
    pub comment: Option<String>,
    /// Who answers: the API key's name (None without keys).
    pub by: Option<String>,
}

/// What answering a HITL request came to.
#[derive(Clone, Debug, PartialEq)]
pub enum HitlAnswer {
    /// Answered; `workflow_resumed` when it was a workflow's open gate, which the answer moved on
    /// (handed off, or sent back to its phase).
    Answered {
        request: HitlRequest,
        workflow_resumed: bool,
    },
    /// The request had passed its `expires_at`: it is now `expired` and was not answered.
    Expired(HitlRequest),
}

pub enum AnswerPlan {
    Answer {
        old: HitlRequest,
        new: Box<HitlRequest>,
        action: HitlAction,
    },
    Expire(HitlRequest),
    /// Expired already (by its timer): answered as expired, nothing written.
    Expired(HitlRequest),
}

impl Write for RespondHitl {
    type Plan = AnswerPlan;
    type Output = HitlAnswer;

    fn check(self, batch: &Batch<'_>) -> Checked<AnswerPlan> {
        let old: HitlRequest = read(batch.hitl.open()?, &self.hitl_id)?
            .ok_or_else(|| DomainError::not_found("hitl_request", self.hitl_id))?;
        batch.plan_answer(
            old,
            self.action,
            HitlReply {
                content: self.content,
                comment: self.comment,
                by: self.by,
            },
        )
    }

    fn apply(plan: AnswerPlan, batch: &mut Batch<'_>) -> Written<HitlAnswer> {
        batch.answer_hitl(plan)
    }
}

/// Approves many HITL requests; each that cannot be approved is skipped with the reason.
#[derive(Clone, Debug)]
pub struct BulkApproveHitl {
    pub hitl_ids: Vec<Id>,
    pub comment: Option<String>,
    /// Who approves: the API key's name (None without keys).
    pub by: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct BulkApproved {
    pub approved: Vec<HitlRequest>,
    /// (id, why it was not approved).
    pub skipped: Vec<(Id, String)>,
}

pub struct BulkPlan {
    answers: Vec<AnswerPlan>,
    skipped: Vec<(Id, String)>,
}

impl Write for BulkApproveHitl {
    type Plan = BulkPlan;
    type Output = BulkApproved;

    fn check(self, batch: &Batch<'_>) -> Checked<BulkPlan> {
        let mut answers = Vec::new();
        let mut skipped = Vec::new();
        // What a repeat of an id listed earlier meets: the state the earlier one left.
        let mut again: HashMap<Id, String> = HashMap::new();
        let answered_as = |status: HitlStatus| {
            hitl_outcome(status, HitlAction::Approve)
                .err()
                .map_or_else(|| status.to_string(), |e| e.to_string())
        };
        for id in self.hitl_ids {
            if let Some(reason) = again.get(&id) {
                skipped.push((id, reason.clone()));
                continue;
            }
            let Some(old) = read::<HitlRequest>(batch.hitl.open()?, &id)? else {
                let reason = DomainError::not_found("hitl_request", id).to_string();
                again.insert(id, reason.clone());
                skipped.push((id, reason));
                continue;
            };
            let by = self.by.clone();
            match batch.plan_answer(
                old,
                HitlAction::Approve,
                HitlReply {
                    content: None,
                    comment: self.comment.clone(),
                    by,
                },
            ) {
                Ok(AnswerPlan::Expire(old)) => {
                    again.insert(id, answered_as(HitlStatus::Expired));
                    skipped.push((id, "expired".to_string()));
                    answers.push(AnswerPlan::Expire(old));
                }
                Ok(AnswerPlan::Expired(_)) => {
                    again.insert(id, "expired".to_string());
                    skipped.push((id, "expired".to_string()));
                }
                Ok(plan) => {
                    again.insert(id, answered_as(HitlStatus::Approved));
                    answers.push(plan);
                }
                Err(Refusal::Domain(e)) => {
                    again.insert(id, e.to_string());
                    skipped.push((id, e.to_string()));
                }
                Err(other) => return Err(other),
            }
        }
        Ok(BulkPlan { answers, skipped })
    }

    fn apply(plan: BulkPlan, batch: &mut Batch<'_>) -> Written<BulkApproved> {
        let mut approved = Vec::new();
        for answer in plan.answers {
            if let HitlAnswer::Answered { request, .. } = batch.answer_hitl(answer)? {
                approved.push(request);
            }
        }
        Ok(BulkApproved {
            approved,
            skipped: plan.skipped,
        })
    }
}

impl<'t> Batch<'t> {
    /// The answer to `old`, or its expiry when its time has passed.
    fn plan_answer(
        &self,
        old: HitlRequest,
        action: HitlAction,
        reply: HitlReply,
    ) -> Checked<AnswerPlan> {
        if crate::domain::tasks::hitl_expired(&old, self.now) {
            return Ok(AnswerPlan::Expire(old));
        }
        if old.status == HitlStatus::Expired {
            return Ok(AnswerPlan::Expired(old));
        }
        let new = crate::domain::tasks::answer_hitl(&old, action, reply, self.now)?;
        Ok(AnswerPlan::Answer {
            old,
            new: Box::new(new),
            action,
        })
    }

    fn answer_hitl(&mut self, plan: AnswerPlan) -> Written<HitlAnswer> {
        let (old, request, action) = match plan {
            AnswerPlan::Expire(old) => return Ok(HitlAnswer::Expired(self.time_out(old)?)),
            AnswerPlan::Expired(old) => return Ok(HitlAnswer::Expired(old)),
            AnswerPlan::Answer { old, new, action } => (old, *new, action),
        };
        self.put_hitl(Some(&old), &request)?;
        let data = object_string(|o| {
            o.id("request_id", request.id)
                .str("action", action.as_str())
                .str("status", request.status.as_str())
                .str("user_response", request.status.as_str())
                .opt_raw("amended_content", request.amended_content.as_deref())
                .opt_str("comment", request.response_comment.as_deref())
                .opt_str("responded_by", request.responded_by.as_deref());
        });
        self.emit(EventDraft {
            event_type: EventType::HitlResponse,
            project_id: Some(request.project_id),
            task_id: request.task_id,
            agent_type: None,
            data,
        })?;
        let workflow_resumed = self.after_gate_answered(&request, action)?;
        Ok(HitlAnswer::Answered {
            request,
            workflow_resumed,
        })
    }

    /// Writes a new pending request (its references already checked) and its event.
    pub(super) fn insert_hitl(
        &mut self,
        project_id: Id,
        task_id: Option<Id>,
        question: String,
        options: Vec<String>,
        expires_at: Option<Micros>,
    ) -> Written<HitlRequest> {
        let new = NewHitl {
            project_id,
            task_id,
            question,
            options,
            expires_at,
        };
        self.insert_hitl_for(new, Vec::new(), None)
    }

    /// `insert_hitl`, for a request only `assignees` may answer (empty: any reviewer), with its
    /// timeout (`expires_at` is then its deadline).
    pub(super) fn insert_hitl_for(
        &mut self,
        new: NewHitl,
        assignees: Vec<String>,
        on_timeout: Option<HitlTimeout>,
    ) -> Written<HitlRequest> {
        let NewHitl {
            project_id,
            task_id,
            question,
            options,
            expires_at,
        } = new;
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
                user_id: None,
            }],
            responded_by: None,
            assignees,
            on_timeout,
        };
        self.put_hitl(None, &request)?;
        let data = object_string(|o| {
            o.id("request_id", request.id)
                .str("question", &request.question)
                .strs("options", &request.options)
                .str("status", request.status.as_str())
                .opt_timestamp("expires_at", request.expires_at);
            if !request.assignees.is_empty() {
                o.strs("assignees", &request.assignees);
            }
            if let Some(t) = &request.on_timeout {
                o.str("on_timeout", t.action.as_str());
            }
        });
        self.emit(EventDraft {
            event_type: EventType::HitlRequestCreated,
            project_id: Some(project_id),
            task_id,
            agent_type: None,
            data,
        })?;
        Ok(request)
    }

    pub(super) fn expire_hitl(&mut self, old: HitlRequest) -> Written<HitlRequest> {
        let request = crate::domain::tasks::expire_hitl(&old, self.now);
        self.put_expired(&old, request)
    }

    /// Writes `old` as `request`, expired, and its `hitl_expired`.
    fn put_expired(&mut self, old: &HitlRequest, request: HitlRequest) -> Written<HitlRequest> {
        self.put_hitl(Some(old), &request)?;
        let data = object_string(|o| {
            o.id("request_id", request.id)
                .str("status", request.status.as_str())
                .opt_timestamp("expires_at", request.expires_at);
        });
        self.emit(EventDraft {
            event_type: EventType::HitlExpired,
            project_id: Some(request.project_id),
            task_id: request.task_id,
            agent_type: None,
            data,
        })?;
        Ok(request)
    }

    /// A pending request's `expires_at` passed: what its timeout says (`time_out_hitl`), with
    /// `hitl_timed_out` first; a request without one simply expires, as before.
    pub(super) fn time_out(&mut self, old: HitlRequest) -> Written<HitlRequest> {
        if old.on_timeout.is_none() {
            return self.expire_hitl(old);
        }
        let outcome = crate::domain::tasks::time_out_hitl(&old, self.now);
        let (action, request) = match &outcome {
            TimedOut::Answered(r, action) => (action.as_str(), r),
            TimedOut::Escalated(r) => ("escalate", r),
            TimedOut::Expired(r) => ("expire", r),
        };
        let data = object_string(|o| {
            o.id("request_id", request.id)
                .str("action", action)
                .str("status", request.status.as_str());
            if let Some(t) = &old.on_timeout {
                o.u64("timeout_seconds", t.seconds);
            }
        });
        self.emit(EventDraft {
            event_type: EventType::HitlTimedOut,
            project_id: Some(request.project_id),
            task_id: request.task_id,
            agent_type: None,
            data,
        })?;
        match outcome {
            TimedOut::Answered(new, action) => {
                match self.answer_hitl(AnswerPlan::Answer {
                    old,
                    new: Box::new(new),
                    action,
                })? {
                    HitlAnswer::Answered { request, .. } | HitlAnswer::Expired(request) => {
                        Ok(request)
                    }
                }
            }
            TimedOut::Escalated(request) => {
                self.put_hitl(Some(&old), &request)?;
                let data = object_string(|o| {
                    o.id("request_id", request.id)
                        .strs("assignees", &request.assignees)
                        .opt_timestamp("expires_at", request.expires_at);
                });
                self.emit(EventDraft {
                    event_type: EventType::HitlEscalated,
                    project_id: Some(request.project_id),
                    task_id: request.task_id,
                    agent_type: None,
                    data,
                })?;
                Ok(request)
            }
            TimedOut::Expired(request) => {
                let request = self.put_expired(&old, request)?;
                self.after_gate_expired(&request)?;
                Ok(request)
            }
        }
    }
}

/// A new request's fields (`insert_hitl`).
pub(super) struct NewHitl {
    pub project_id: Id,
    pub task_id: Option<Id>,
    pub question: String,
    pub options: Vec<String>,
    pub expires_at: Option<Micros>,
}
