//! Tasks: create (BotArmy), list with filters, get, and status transitions.

use crate::http::{Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::{AppState, Query, envelope, parse_id, parse_ids, parse_vocab, require};
use crate::domain::{AgentType, DomainError, Limits, TaskStatus, Vocabulary, check_len};
use crate::http::ApiError;
use crate::http::body::json;
use crate::json::object;
use crate::store::{Task, TaskFilter, command};

#[derive(Deserialize)]
struct CreateTask {
    agent_type: String,
    instructions: String,
    #[serde(default)]
    context_ids: Vec<String>,
    /// 1 (highest) to 5 (lowest) [default: 3].
    #[serde(default)]
    priority: Option<u64>,
}

pub async fn create(state: &AppState, project: &str, req: Request) -> Result<Response, ApiError> {
    let project_id = require(state, project)?;
    let key = super::idempotency_key(&req);
    let (body, bytes): (CreateTask, _) = req.json_and_bytes(state.max_body_bytes).await?;
    let agent_type: AgentType = state.store.agent_type("agent_type", &body.agent_type)?;
    check_len(
        "instructions",
        &body.instructions,
        Limits::INSTRUCTIONS,
        true,
    )?;
    if body.context_ids.len() > Limits::CONTEXT_IDS {
        return Err(ApiError::invalid_field(
            "context_ids",
            format!("at most {} ids", Limits::CONTEXT_IDS),
        ));
    }
    let context_ids = parse_ids("context_ids", &body.context_ids)?;
    let priority = match body.priority {
        Some(p) => crate::domain::tasks::check_priority("priority", p)?,
        None => crate::domain::tasks::DEFAULT_PRIORITY,
    };
    let command = command::CreateTask {
        project_id,
        agent_type,
        instructions: body.instructions,
        context_ids,
        priority,
    };
    let route = crate::http::Route::ProjectTasksCreate;
    let t = super::write_once(
        state,
        route,
        Some(project_id),
        key.as_ref(),
        &bytes,
        command,
    )
    .await?;
    // BotArmy's answer also names the Celery job that runs the task; flightdeck's tasks are run
    // by external workers, so there is none.
    Ok(json(
        StatusCode::CREATED,
        object(|o| {
            write(o, &t);
            o.null("celery_task_id");
        }),
    ))
}

pub fn list(state: &AppState, project: &str, query: &Query) -> Result<Response, ApiError> {
    let project_id = require(state, project)?;
    let filter = TaskFilter {
        status: query.vocab("status")?,
        agent_type: query.agent_type(state, "agent_type")?,
    };
    let mut page =
        state
            .store
            .project_tasks(&project_id, filter, query.cursor(), query.limit()?)?;
    // A working task's latest progress, as `GET /api/v1/tasks/{id}` shows it.
    for task in page
        .items
        .iter_mut()
        .filter(|t| t.status == crate::domain::TaskStatus::Working)
    {
        if let Some(report) = state.store.progress(&task.id) {
            task.progress = Some(report);
        }
    }
    let items: Vec<Vec<u8>> = page.items.iter().map(encode).collect();
    let (items, next) = super::fit(state, items, &page, |t| t.id);
    Ok(envelope(&items, next.as_deref()))
}

pub fn get(state: &AppState, id: &str) -> Result<Response, ApiError> {
    let id = parse_id("task_id", id)?;
    let mut task = state
        .store
        .get_task(&id)?
        .ok_or_else(|| DomainError::not_found("task", id))?;
    // The latest progress report, even before the task's next durable change stores it.
    if let Some(report) = state.store.progress(&id) {
        task.progress = Some(report);
    }
    let usage = state
        .store
        .usage_totals(crate::store::UsageScope::Task(id))?;
    let body = object(|o| {
        write(o, &task);
        o.object("usage", |u| super::usage::write_totals(u, &usage));
    });
    Ok(json(StatusCode::OK, body))
}

#[derive(Deserialize)]
struct SetStatus {
    status: String,
    #[serde(default)]
    output: Option<Box<RawValue>>,
    #[serde(default)]
    error_message: Option<String>,
    /// The claim's fencing token; required to complete or fail a claimed task.
    #[serde(default)]
    lease_id: Option<String>,
    /// Model usage reported with the change (one report or a list): recorded first, durably.
    #[serde(default)]
    usage: Option<Box<RawValue>>,
}

/// The `lease_id` of a body, parsed.
fn lease_id(text: Option<&str>) -> Result<Option<crate::domain::Id>, ApiError> {
    text.map(|t| parse_id("lease_id", t)).transpose()
}

pub async fn set_status(state: &AppState, id: &str, req: Request) -> Result<Response, ApiError> {
    let task_id = parse_id("task_id", id)?;
    let body: SetStatus = req.json(state.max_body_bytes).await?;
    let status: TaskStatus = parse_vocab("status", &body.status)?;
    if let Some(m) = &body.error_message {
        check_len("error_message", m, Limits::ERROR_MESSAGE, false)?;
    }
    let output = body.output.map(|raw| String::from(Box::<str>::from(raw)));
    let lease_id = lease_id(body.lease_id.as_deref())?;
    let usage = super::usage::parse_field(body.usage.as_deref())?;
    let command = command::SetTaskStatus {
        task_id,
        status,
        output,
        error_message: body.error_message,
        lease_id,
    };
    let t = if usage.is_empty() {
        state.store.write(command).await?
    } else {
        // Recorded in the change's commit, and the change goes ahead even if they used a
        // budget up.
        let by = (task_id, lease_id, None);
        super::usage::record_then(state, by, usage, false, command).await?
    };
    Ok(json(StatusCode::OK, encode(&t)))
}

#[derive(Deserialize)]
struct ClaimBody {
    agent_type: String,
    worker_id: String,
    #[serde(default)]
    lease_seconds: Option<f64>,
    /// With nothing to hand out, wait up to this long for a task (long poll).
    #[serde(default)]
    wait_ms: Option<u64>,
}

/// Claims waiting for work, by agent type (a gauge).
pub const WORKERS_WAITING: &str = "flightdeck_workers_waiting";

/// Describes this module's metrics, present from start-up.
pub fn describe_metrics() {
    metrics::describe_gauge!(
        WORKERS_WAITING,
        "Claims waiting for a task of their agent type (long poll)."
    );
    for agent in AgentType::defaults() {
        metrics::gauge!(WORKERS_WAITING, "agent_type" => agent.to_string()).set(0.0);
    }
}

/// A waiting claim, counted while it exists (a client that goes away drops it). The agent type
/// is one in use (it has an id), so its series are bounded by `--max-agent-types`.
struct Waiting<'s>(metrics::Gauge, &'s std::sync::atomic::AtomicUsize);

impl<'s> Waiting<'s> {
    fn new(state: &'s AppState, name: &AgentType, agent: u16) -> Waiting<'s> {
        let count = state.store.waiting_claims(agent);
        count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let gauge = metrics::gauge!(WORKERS_WAITING, "agent_type" => name.to_string());
        gauge.increment(1.0);
        Waiting(gauge, count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.1.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        self.0.decrement(1.0);
    }
}

/// Most a lease may be asked for: a day.
const MAX_LEASE_SECONDS: f64 = 86_400.0;

fn lease(state: &AppState, seconds: Option<f64>) -> Result<crate::domain::Micros, ApiError> {
    match seconds {
        None => Ok(state.store.task_settings().default_lease),
        Some(s) if s > 0.0 && s <= MAX_LEASE_SECONDS => Ok((s * 1e6) as crate::domain::Micros),
        Some(s) => Err(ApiError::invalid_field(
            "lease_seconds",
            format!("{s} is not a duration from 0 (exclusive) to {MAX_LEASE_SECONDS} seconds"),
        )),
    }
}

/// `{agent_type, worker_id, lease_seconds?, wait_ms?}` → 200 the oldest pending task of that
/// type, now working for this worker, with the claim's `lease_id`; or 204 when there is none —
/// at once, or after waiting up to `wait_ms` for one. A waiting claim is woken by the writer
/// after the commit that made a task claimable (first come, first served), not by polling; one
/// whose client goes away is dropped with its connection and claims nothing.
pub async fn claim(state: &AppState, req: Request) -> Result<Response, ApiError> {
    let key = super::idempotency_key(&req);
    let claimer = req.caller().map(str::to_owned);
    let (body, bytes): (ClaimBody, _) = req.json_and_bytes(state.max_body_bytes).await?;
    let agent_type: AgentType = state.store.agent_type("agent_type", &body.agent_type)?;
    check_len("worker_id", &body.worker_id, Limits::NAME, true)?;
    let lease = lease(state, body.lease_seconds)?;
    let wait = wait(state, body.wait_ms)?;
    let deadline = tokio::time::Instant::now() + wait;
    let agent = match state.store.agent_id(&agent_type) {
        Some(id) => id,
        // A type nothing has named has nothing to hand out: a poll is answered at once; a claim
        // that waits gives the type its id first (one durable write, once per type), so the
        // tasks made for it later find it waiting.
        None if wait.is_zero() && key.is_none() => {
            return Ok(crate::http::body::empty(StatusCode::NO_CONTENT));
        }
        None => state.store.intern_agent_type(&agent_type).await?,
    };
    let signal = state.store.claimable(agent);
    let mut waiting = None;
    loop {
        // Registered before the try: a task committed between the try and the wait still wakes
        // this claim.
        let woken = signal.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        let command = command::Claim {
            agent_type: agent_type.clone(),
            worker_id: body.worker_id.clone(),
            lease,
            claimer: claimer.clone(),
        };
        let route = crate::http::Route::TaskClaim;
        // Nothing of the type pending: the writer would find nothing either, and a claim that
        // polls (no wait) is answered without a commit. A claim with a key always goes to the
        // writer, which remembers its answer.
        let nothing = key.is_none() && state.store.pending_count(agent) == 0;
        if !nothing
            && let Some(t) =
                super::write_once(state, route, None, key.as_ref(), &bytes, command).await?
        {
            return Ok(json(StatusCode::OK, encode_leased(&t)));
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(crate::http::body::empty(StatusCode::NO_CONTENT));
        }
        waiting.get_or_insert_with(|| Waiting::new(state, &agent_type, agent));
        // Without an idempotency key the writer may claim a task for this waiter inside the
        // commit that made it claimable (one durable commit instead of two); a claim with a key
        // claims for itself, so that its answer is remembered with the key.
        let mut ticket = key.is_none().then(|| {
            state
                .store
                .wait_for_task(agent, body.worker_id.clone(), lease, claimer.clone())
        });
        let handed = async {
            match ticket.as_mut() {
                Some(t) => (&mut t.task).await.ok(),
                None => std::future::pending().await,
            }
        };
        let woke = tokio::select! {
            biased;
            task = handed => match task {
                Some(t) => return Ok(json(StatusCode::OK, encode_leased(&t))),
                // The writer's batch failed: try again.
                None => Woke::Retry,
            },
            () = &mut woken => Woke::Retry,
            () = tokio::time::sleep_until(deadline) => Woke::TimeUp,
            // Shutting down: nothing more to hand out from here; the worker claims elsewhere.
            () = state.stopping.cancelled() => Woke::TimeUp,
        };
        // Leaving the queue: a task the writer handed over meanwhile is this claim's.
        if let Some(t) = ticket.as_mut() {
            t.task.close();
            if let Ok(task) = t.task.try_recv() {
                return Ok(json(StatusCode::OK, encode_leased(&task)));
            }
        }
        if matches!(woke, Woke::TimeUp) {
            return Ok(crate::http::body::empty(StatusCode::NO_CONTENT));
        }
    }
}

/// Why a waiting claim stopped waiting.
enum Woke {
    /// A task may have become claimable (or the writer's batch failed): try again.
    Retry,
    /// The wait is over (its time is up, or the server is stopping): 204.
    TimeUp,
}

fn wait(state: &AppState, wait_ms: Option<u64>) -> Result<std::time::Duration, ApiError> {
    let max = state.store.task_settings().max_claim_wait.max(0) as u64 / 1000;
    match wait_ms {
        None | Some(0) => Ok(std::time::Duration::ZERO),
        Some(ms) if ms <= max => Ok(std::time::Duration::from_millis(ms)),
        Some(ms) => Err(ApiError::invalid_field(
            "wait_ms",
            format!("{ms} is over the longest wait, {max} ms (--max-claim-wait-ms)"),
        )),
    }
}

#[derive(Deserialize, Default)]
struct HeartbeatBody {
    #[serde(default)]
    worker_id: Option<String>,
    #[serde(default)]
    lease_seconds: Option<f64>,
    /// The claim's fencing token; required for a claimed task.
    #[serde(default)]
    lease_id: Option<String>,
    /// A progress report may ride along (`POST …/progress`).
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    percent: Option<f64>,
    #[serde(default)]
    data: Option<Box<RawValue>>,
    /// Model usage reported with it (one report or a list): recorded first, durably.
    #[serde(default)]
    usage: Option<Box<RawValue>>,
}

/// Extends the claim's lease from now: 409 `lease_lost` unless the body holds the task's current
/// claim, 409 `task_cancelled` once it was cancelled, 409 unless it is working (for this worker).
pub async fn heartbeat(
    state: &std::sync::Arc<AppState>,
    id: &str,
    req: Request,
) -> Result<Response, ApiError> {
    let task_id = parse_id("task_id", id)?;
    let body: HeartbeatBody = req.optional_json(state.max_body_bytes).await?;
    let lease = lease(state, body.lease_seconds)?;
    let lease_id = lease_id(body.lease_id.as_deref())?;
    let usage = super::usage::parse_field(body.usage.as_deref())?;
    let command = command::Heartbeat {
        task_id,
        worker_id: body.worker_id.clone(),
        lease_id,
        lease,
    };
    let report = super::progress::Report {
        message: body.message,
        percent: body.percent,
        data: body.data,
    };
    if !report.is_empty() {
        super::progress::check(state, &report)?;
    }
    let beat = if usage.is_empty() {
        state.store.write(command).await?
    } else {
        // Recorded in the heartbeat's commit; reports that use a budget up answer 409
        // budget_exhausted (the task went back to pending in that commit).
        let by = (task_id, lease_id, body.worker_id);
        super::usage::record_then(state, by, usage, true, command).await?
    };
    let t = beat.map_err(|held| super::usage::held(task_id, &held))?;
    if !report.is_empty() {
        super::progress::publish(state, &t, &report)?;
    }
    Ok(json(StatusCode::OK, encode_leased(&t)))
}

pub(crate) fn encode(t: &Task) -> Vec<u8> {
    object(|o| write(o, t))
}

/// A task as its claim's holder sees it: with the `lease_id` (shown to nobody else).
fn encode_leased(t: &Task) -> Vec<u8> {
    object(|o| {
        write(o, t);
        o.opt_id("lease_id", t.lease_id);
    })
}

fn write(o: &mut crate::json::ObjectWriter<'_>, t: &Task) {
    o.id("task_id", t.id)
        .id("project_id", t.project_id)
        .str("agent_type", t.agent_type.as_str())
        .str("status", t.status.as_str())
        .u64("priority", u64::from(t.priority))
        .str("instructions", &t.instructions)
        .ids("context_ids", &t.context_ids)
        .opt_raw("output", t.output.as_deref())
        .opt_str("error_message", t.error_message.as_deref())
        .u64("attempts", u64::from(t.attempts))
        .u64("failures", u64::from(t.failures))
        .opt_str("worker_id", t.worker_id.as_deref())
        .opt_timestamp("lease_expires_at", t.lease_expires_at)
        .opt_timestamp("retry_at", t.retry_at)
        .opt_timestamp("timeout_at", t.timeout_at)
        .opt_raw("progress", t.progress.as_deref())
        .timestamp("created_at", t.created_at)
        .timestamp("updated_at", t.updated_at)
        .opt_timestamp("started_at", t.started_at)
        .opt_timestamp("completed_at", t.completed_at);
    // A workflow phase's task only: a client's task keeps BotArmy's shape.
    if let Some(workflow) = &t.workflow {
        o.raw("workflow", workflow);
    }
}

/// Decodes `bytes` as every request body of this resource (for the fuzzers).
#[cfg(feature = "fuzzing")]
pub(crate) fn decode_all(bytes: &[u8]) {
    let _ = crate::http::body::decode_json::<CreateTask>(bytes);
    let _ = crate::http::body::decode_json::<SetStatus>(bytes);
    let _ = crate::http::body::decode_json::<ClaimBody>(bytes);
    let _ = crate::http::body::decode_json::<HeartbeatBody>(bytes);
}
