//! Human-in-the-loop requests (BotArmy routes): create, get, history, respond, lists, bulk
//! approval and the project's oversight level.

use crate::http::ErrorCode;
use crate::http::{Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::{AppState, Query, bare_list, find, parse_id, parse_ids, parse_vocab, require};
use crate::domain::{
    DomainError, HitlAction, HitlStatus, Limits, OversightLevel, Vocabulary, check_len,
};
use crate::http::ApiError;
use crate::http::body::json;
use crate::json::{ObjectWriter, object};
use crate::store::command::{self, BulkApproved, HitlAnswer};
use crate::store::{HitlFilter, HitlRequest};

#[derive(Deserialize)]
struct CreateHitl {
    project_id: String,
    #[serde(default)]
    task_id: Option<String>,
    question: String,
    #[serde(default)]
    options: Vec<String>,
    #[serde(default)]
    expires_in_seconds: Option<u64>,
    #[serde(default)]
    timeout_seconds: Option<u64>,
    #[serde(default)]
    on_timeout: Option<String>,
    #[serde(default)]
    escalate_to: Vec<String>,
    #[serde(default)]
    assignees: Vec<String>,
}

/// With API keys, each name must be a configured key's (a request no key could answer would
/// wait for nobody); without keys, nobody is named and any well-formed name is taken.
pub(crate) fn known_keys(state: &AppState, field: &str, names: &[String]) -> Result<(), ApiError> {
    crate::domain::tasks::check_key_names(field, names)?;
    if state.keys.enabled() {
        for (i, name) in names.iter().enumerate() {
            if !state.keys.has_name(name) {
                return Err(ApiError::invalid_field(
                    &format!("{field}[{i}]"),
                    format!("no API key is named `{name}`"),
                ));
            }
        }
    }
    Ok(())
}

pub async fn create(state: &AppState, req: Request) -> Result<Response, ApiError> {
    let key = super::idempotency_key(&req);
    let (body, bytes): (CreateHitl, _) = req.json_and_bytes(state.max_body_bytes).await?;
    let project_id = crate::domain::Id::parse(&body.project_id).ok_or_else(|| {
        ApiError::invalid_field("project_id", format!("`{}` is not a UUID", body.project_id))
    })?;
    let task_id =
        match &body.task_id {
            Some(t) => Some(crate::domain::Id::parse(t).ok_or_else(|| {
                ApiError::invalid_field("task_id", format!("`{t}` is not a UUID"))
            })?),
            None => None,
        };
    check_len("question", &body.question, Limits::QUESTION, true)?;
    if body.options.len() > Limits::OPTIONS {
        return Err(ApiError::invalid_field(
            "options",
            format!("at most {} options", Limits::OPTIONS),
        ));
    }
    for (i, option) in body.options.iter().enumerate() {
        check_len(&format!("options[{i}]"), option, Limits::OPTION, true)?;
    }
    if let Some(s) = body.expires_in_seconds
        && (s == 0 || s > Limits::MAX_EXPIRES_IN_SECONDS)
    {
        return Err(ApiError::invalid_field(
            "expires_in_seconds",
            format!("must be from 1 to {}", Limits::MAX_EXPIRES_IN_SECONDS),
        ));
    }
    let on_timeout = crate::domain::tasks::hitl_timeout(
        ["timeout_seconds", "on_timeout", "escalate_to"],
        body.timeout_seconds,
        body.on_timeout.as_deref(),
        &body.escalate_to,
    )?;
    if on_timeout.is_some() && body.expires_in_seconds.is_some() {
        return Err(ApiError::invalid_field(
            "expires_in_seconds",
            "give either expires_in_seconds (it expires) or timeout_seconds (its on_timeout acts)",
        ));
    }
    known_keys(state, "escalate_to", &body.escalate_to)?;
    known_keys(state, "assignees", &body.assignees)?;
    let command = command::CreateHitl {
        project_id,
        task_id,
        question: body.question,
        options: body.options,
        expires_in_seconds: body.expires_in_seconds,
        assignees: body.assignees,
        on_timeout,
    };
    let route = crate::http::Route::HitlCreate;
    let h = super::write_once(state, route, None, key.as_ref(), &bytes, command).await?;
    Ok(json(StatusCode::CREATED, encode(&h)))
}

pub fn get(state: &AppState, id: &str) -> Result<Response, ApiError> {
    let request = load(state, id)?;
    Ok(json(StatusCode::OK, encode(&request)))
}

/// BotArmy: `{history:[{timestamp, action, user_id, content, comment}]}` (plus `request_id` and
/// `status`). `user_id` is the name of the API key that gave the answer (null without keys).
pub fn history(state: &AppState, id: &str) -> Result<Response, ApiError> {
    let request = load(state, id)?;
    let entries = history_entries(&request);
    let body = object(|o| {
        o.id("request_id", request.id)
            .str("status", request.status.as_str())
            .raw_array("history", entries.iter().map(Vec::as_slice));
    });
    Ok(json(StatusCode::OK, body))
}

#[derive(Deserialize)]
struct Respond {
    action: String,
    #[serde(default)]
    content: Option<Box<RawValue>>,
    #[serde(default)]
    comment: Option<String>,
}

/// BotArmy: `{request_id, action, status, message, workflow_resumed}`, plus `responded_by`: the
/// name of the API key that answered (`by`; null without keys).
pub async fn respond(
    state: &AppState,
    id: &str,
    req: Request,
    by: Option<String>,
) -> Result<Response, ApiError> {
    let hitl_id = parse_id("request_id", id)?;
    let body: Respond = req.json(state.max_body_bytes).await?;
    if let Some(refusal) = self_approval(state, &hitl_id, by.as_deref())? {
        return Err(ApiError::new(ErrorCode::SelfApproval, refusal));
    }
    let action: HitlAction = parse_vocab("action", &body.action)?;
    if let Some(c) = &body.comment {
        check_len("comment", c, Limits::COMMENT, false)?;
    }
    let content = body.content.map(|raw| String::from(Box::<str>::from(raw)));
    let command = command::RespondHitl {
        hitl_id,
        action,
        content,
        comment: body.comment,
        by,
    };
    match state.store.write(command).await? {
        HitlAnswer::Answered {
            request: h,
            workflow_resumed,
        } => {
            let message = match action {
                HitlAction::Approve => "Request approved.",
                HitlAction::Reject => "Request rejected.",
                HitlAction::Amend => "Request amended.",
            };
            let body = object(|o| {
                o.id("request_id", h.id)
                    .str("action", action.as_str())
                    .str("status", h.status.as_str())
                    .str("message", message)
                    .bool("workflow_resumed", workflow_resumed)
                    .opt_str("responded_by", h.responded_by.as_deref())
                    .object("request", |r| write(r, &h));
            });
            Ok(json(StatusCode::OK, body))
        }
        HitlAnswer::Expired(h) => Err(ApiError::new(
            ErrorCode::HitlExpired,
            match h.status {
                HitlStatus::Pending => format!(
                    "HITL request {} timed out before it was answered and was escalated to {}: one of them may answer it now",
                    h.id,
                    h.assignees.join(", ")
                ),
                HitlStatus::Expired => {
                    format!("HITL request {} expired before it was answered", h.id)
                }
                status => format!(
                    "HITL request {} timed out before it was answered; the system {} it",
                    h.id, status
                ),
            },
        )),
    }
}

/// BotArmy: the project's requests as a bare array, newest first; `?status=` (or
/// `?status_filter=`) filters.
pub fn list(state: &AppState, project: &str, query: &Query) -> Result<Response, ApiError> {
    let project_id = require(state, project)?;
    let status = match query.get("status").or(query.get("status_filter")) {
        Some(s) => Some(parse_vocab::<HitlStatus>("status", s)?),
        None => None,
    };
    let page = state.store.project_hitl(
        &project_id,
        HitlFilter { status },
        query.cursor(),
        query.limit()?,
    )?;
    let items: Vec<Vec<u8>> = page.items.iter().map(encode).collect();
    let (items, next) = super::fit(state, items, &page, |h| h.id);
    Ok(bare_list(&items, next.as_deref()))
}

/// BotArmy: the pending requests that have not expired, newest first, as a bare array; of one
/// project with `?project_id=`; `?assignee=NAME` (`me`: the caller's key) keeps those whose
/// assignees name it: a reviewer's own inbox.
pub fn pending(
    state: &AppState,
    query: &Query,
    caller: Option<&str>,
) -> Result<Response, ApiError> {
    let assignee = match query.get("assignee") {
        None => None,
        Some("me") => Some(caller.ok_or_else(|| {
            ApiError::invalid_field(
                "assignee",
                "`me` is the caller's API key, and this request presented none",
            )
        })?),
        Some(name) => {
            crate::domain::tasks::check_key_names("assignee", &[name.to_string()])?;
            Some(name)
        }
    };
    if let Some(name) = assignee {
        let page = state
            .store
            .hitl_assigned(name, query.cursor(), query.limit()?)?;
        let items: Vec<Vec<u8>> = page.items.iter().map(encode).collect();
        let (items, next) = super::fit(state, items, &page, |h| h.id);
        return Ok(bare_list(&items, next.as_deref()));
    }
    let page = match query.id("project_id")? {
        Some(project) => {
            require(state, &project.to_string())?;
            state.store.project_hitl(
                &project,
                HitlFilter {
                    status: Some(HitlStatus::Pending),
                },
                query.cursor(),
                query.limit()?,
            )?
        }
        None => state
            .store
            .hitl_by_status(HitlStatus::Pending, query.cursor(), query.limit()?)?,
    };
    let items: Vec<Vec<u8>> = page.items.iter().map(encode).collect();
    let (items, next) = super::fit(state, items, &page, |h| h.id);
    Ok(bare_list(&items, next.as_deref()))
}

#[derive(Deserialize)]
struct BulkApprove {
    request_ids: Vec<String>,
    #[serde(default)]
    comment: Option<String>,
}

/// Why the key `by` may not answer the request: it claimed the request's task itself (`None`
/// when it may, when keys are off, or with `--allow-self-approval`).
fn self_approval(
    state: &AppState,
    id: &crate::domain::Id,
    by: Option<&str>,
) -> Result<Option<String>, ApiError> {
    let Some(by) = by else {
        return Ok(None);
    };
    if state.allow_self_approval {
        return Ok(None);
    }
    let Some(task) = state.store.get_hitl(id)?.and_then(|h| h.task_id) else {
        return Ok(None);
    };
    if state.store.task_claimer(&task)?.as_deref() == Some(by) {
        return Ok(Some(format!(
            "self_approval: API key {by:?} claimed task {task}, which request {id} is about; another key must answer it"
        )));
    }
    Ok(None)
}

/// BotArmy: approves every listed pending request in one transaction; reports the others. `by` is
/// the approving API key's name; the requests about tasks it claimed are among the others
/// (`self_approval`).
pub async fn bulk_approve(
    state: &AppState,
    req: Request,
    by: Option<String>,
) -> Result<Response, ApiError> {
    let body: BulkApprove = req.json(state.max_body_bytes).await?;
    if body.request_ids.len() > Limits::BATCH_IDS {
        return Err(ApiError::invalid_field(
            "request_ids",
            format!("at most {} ids", Limits::BATCH_IDS),
        ));
    }
    if let Some(c) = &body.comment {
        check_len("comment", c, Limits::COMMENT, false)?;
    }
    let asked = parse_ids("request_ids", &body.request_ids)?;
    // A request about a task this key claimed is skipped, the others approved.
    let mut hitl_ids = Vec::with_capacity(asked.len());
    let mut refused = Vec::new();
    for id in asked {
        match self_approval(state, &id, by.as_deref())? {
            Some(reason) => refused.push((id, reason)),
            None => hitl_ids.push(id),
        }
    }
    let command = command::BulkApproveHitl {
        hitl_ids,
        comment: body.comment,
        by,
    };
    let BulkApproved {
        approved,
        mut skipped,
    } = state.store.write(command).await?;
    skipped.extend(refused);
    let approved_ids: Vec<_> = approved.iter().map(|h| h.id).collect();
    let errors: Vec<String> = skipped
        .iter()
        .map(|(id, reason)| format!("{id}: {reason}"))
        .collect();
    let skipped: Vec<Vec<u8>> = skipped
        .iter()
        .map(|(id, reason)| {
            object(|o| {
                o.id("request_id", *id).str("reason", reason);
            })
        })
        .collect();
    let message = format!(
        "Approved {} of {} requests.",
        approved_ids.len(),
        approved_ids.len() + errors.len()
    );
    let body = object(|o| {
        o.u64("approved_count", approved_ids.len() as u64)
            .u64("failed_count", errors.len() as u64)
            .strs("errors", &errors)
            .str("message", &message)
            .ids("approved", &approved_ids)
            .raw_array("skipped", skipped.iter().map(Vec::as_slice));
    });
    Ok(json(StatusCode::OK, body))
}

/// BotArmy: `{project_id, oversight_level}` (plus `level`, flightdeck's earlier name).
pub fn oversight_get(state: &AppState, project: &str) -> Result<Response, ApiError> {
    let p = find(state, project)?;
    let body = object(|o| {
        o.id("project_id", p.id)
            .str("oversight_level", p.oversight_level.as_str())
            .str("level", p.oversight_level.as_str());
    });
    Ok(json(StatusCode::OK, body))
}

#[derive(Deserialize)]
struct SetLevel {
    level: String,
}

pub async fn oversight_set(
    state: &AppState,
    project: &str,
    req: Request,
) -> Result<Response, ApiError> {
    let project_id = require(state, project)?;
    let body: SetLevel = req.json(state.max_body_bytes).await?;
    let level: OversightLevel = parse_vocab("level", &body.level)?;
    let command = command::SetOversightLevel { project_id, level };
    let p = state.store.write(command).await?;
    let level = p.oversight_level.as_str();
    let body = object(|o| {
        o.str("message", &format!("Oversight level set to {level}."))
            .id("project_id", p.id)
            .str("oversight_level", level)
            .str("level", level);
    });
    Ok(json(StatusCode::OK, body))
}

fn load(state: &AppState, id: &str) -> Result<HitlRequest, ApiError> {
    let id = parse_id("request_id", id)?;
    state
        .store
        .get_hitl(&id)?
        .ok_or_else(|| DomainError::not_found("hitl_request", id).into())
}

fn write(o: &mut ObjectWriter<'_>, h: &HitlRequest) {
    let responded = h.status != HitlStatus::Pending && h.status != HitlStatus::Expired;
    o.id("request_id", h.id)
        .id("project_id", h.project_id)
        .opt_id("task_id", h.task_id)
        .str("question", &h.question)
        .strs("options", &h.options)
        .str("status", h.status.as_str())
        .opt_str("user_response", responded.then(|| h.status.as_str()));
    match &h.amended_content {
        Some(content) => o.object("amended_content", |a| {
            a.raw("amended_content", content)
                .opt_str("comment", h.response_comment.as_deref());
        }),
        None => o.null("amended_content"),
    };
    let history = history_entries(h);
    o.opt_str("response_comment", h.response_comment.as_deref())
        .raw_array("history", history.iter().map(Vec::as_slice))
        .opt_timestamp("expires_at", h.expires_at)
        .opt_timestamp("responded_at", h.responded_at)
        .opt_str("responded_by", h.responded_by.as_deref())
        .timestamp("created_at", h.created_at)
        .timestamp("updated_at", h.updated_at);
    // Only on requests that have them: the others keep BotArmy's shape.
    if !h.assignees.is_empty() {
        o.strs("assignees", &h.assignees);
    }
    if let Some(t) = &h.on_timeout {
        o.u64("timeout_seconds", t.seconds)
            .str("on_timeout", t.action.as_str())
            .strs("escalate_to", &t.escalate_to)
            .bool("escalated", t.escalated);
    }
}

/// The answers given, oldest first, as BotArmy's history entries.
fn history_entries(h: &HitlRequest) -> Vec<Vec<u8>> {
    h.history
        .iter()
        .map(|entry| {
            object(|o| {
                o.timestamp("timestamp", entry.at)
                    .str("action", &entry.action)
                    .opt_str("user_id", entry.user_id.as_deref())
                    .opt_raw("content", entry.content.as_deref())
                    .opt_str("comment", entry.comment.as_deref());
            })
        })
        .collect()
}

fn encode(h: &HitlRequest) -> Vec<u8> {
    object(|o| write(o, h))
}

#[cfg(feature = "fuzzing")]
/// Decodes `bytes` as every request body of this resource (for the fuzzers).
pub(crate) fn decode_all(bytes: &[u8]) {
    let _ = crate::http::body::decode_json::<CreateHitl>(bytes);
    let _ = crate::http::body::decode_json::<Respond>(bytes);
    let _ = crate::http::body::decode_json::<BulkApprove>(bytes);
    let _ = crate::http::body::decode_json::<SetLevel>(bytes);
}
