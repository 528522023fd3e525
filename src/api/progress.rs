//! Task progress: a worker's reports reach the project's WebSocket subscribers at once, as
//! ephemeral frames (no seq, not fsynced, not replayed), at most 10 per second per task with the
//! latest winning; the latest is shown with the task and stored with it at its next durable change.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::{AppState, parse_id};
use crate::domain::{DomainError, Id, Limits, TaskStatus, check_len, now_micros};
use crate::http::{ApiError, Request, Response, StatusCode};
use crate::json::object;
use crate::store::Task;

/// Frames per task at most this often.
const EVERY: Duration = Duration::from_millis(100);
/// Tasks whose send times are remembered; beyond it, the idle ones are forgotten.
const TRACKED: usize = 10_000;

/// A progress report as a worker sends it (with a heartbeat, or alone).
#[derive(Deserialize, Default)]
pub(super) struct Report {
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub percent: Option<f64>,
    #[serde(default)]
    pub data: Option<Box<RawValue>>,
}

impl Report {
    pub fn is_empty(&self) -> bool {
        self.message.is_none() && self.percent.is_none() && self.data.is_none()
    }

    pub fn validate(&self) -> Result<(), ApiError> {
        if let Some(m) = &self.message {
            check_len("message", m, Limits::COMMENT, false)?;
        }
        if let Some(p) = self.percent
            && !(0.0..=100.0).contains(&p)
        {
            return Err(ApiError::invalid_field(
                "percent",
                format!("{p} is not from 0 to 100"),
            ));
        }
        Ok(())
    }

    /// `{message?, percent?, data?, at}` as JSON text.
    fn encode(&self, at: crate::domain::Micros) -> String {
        String::from_utf8(object(|o| {
            o.opt_str("message", self.message.as_deref());
            if let Some(p) = self.percent {
                o.f64("percent", p);
            }
            o.opt_raw("data", self.data.as_ref().map(|d| d.get()))
                .timestamp("at", at);
        }))
        .unwrap_or_default()
    }
}

/// The report's fields beside `lease_id`. They are repeated here and in the heartbeat's body rather
/// than flattened from `Report`: serde's `flatten` buffers the value, which a `RawValue` refuses.
#[derive(Deserialize)]
struct ProgressBody {
    #[serde(default)]
    lease_id: Option<String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    percent: Option<f64>,
    #[serde(default)]
    data: Option<Box<RawValue>>,
    /// Model usage reported with it (one report or a list): recorded durably before the answer.
    #[serde(default)]
    usage: Option<Box<RawValue>>,
}

/// When each task's last frame went out, and the report waiting for its turn.
#[derive(Default)]
pub struct Coalescer {
    tasks: Mutex<HashMap<Id, Slot>>,
    /// Largest report accepted (`--max-progress-bytes`), encoded.
    max_report_bytes: usize,
}

struct Slot {
    sent: Instant,
    waiting: Option<Vec<u8>>,
}

impl Coalescer {
    pub fn new(max_report_bytes: usize) -> Arc<Coalescer> {
        Arc::new(Coalescer {
            tasks: Mutex::default(),
            max_report_bytes,
        })
    }
}

/// `POST /api/v1/tasks/{id}/progress {lease_id, message?, percent?, data?}` → 202.
pub async fn post(state: &Arc<AppState>, id: &str, req: Request) -> Result<Response, ApiError> {
    let task_id = parse_id("task_id", id)?;
    let body: ProgressBody = req.json(state.max_body_bytes).await?;
    let lease_id = body
        .lease_id
        .as_deref()
        .map(|t| parse_id("lease_id", t))
        .transpose()?;
    let report = Report {
        message: body.message,
        percent: body.percent,
        data: body.data,
    };
    report.validate()?;
    let usage = super::usage::parse_field(body.usage.as_deref())?;
    if !usage.is_empty() {
        super::usage::record(state, task_id, lease_id, None, usage, true).await?;
    }
    let task = state
        .store
        .get_task(&task_id)?
        .ok_or_else(|| DomainError::not_found("task", task_id))?;
    if task.status == TaskStatus::Cancelled {
        return Err(DomainError::TaskCancelled {
            message: format!("task {task_id} was cancelled; stop working on it"),
        }
        .into());
    }
    crate::domain::tasks::fence(&task, lease_id)?;
    if task.status != TaskStatus::Working {
        return Err(DomainError::InvalidTransition {
            message: format!("task {task_id} is {}, not working", task.status),
        }
        .into());
    }
    // A budget over the task ran out: the task goes back to pending (a write only then).
    if state
        .store
        .budget_held(&task.project_id, &task.agent_type)?
        .is_some()
        && let Some(held) = state
            .store
            .write(crate::store::command::ReleaseHeld { task_id, lease_id })
            .await?
    {
        return Err(super::usage::held(task_id, &held));
    }
    publish(state, &task, &report)?;
    Ok(crate::http::body::json(
        StatusCode::ACCEPTED,
        object(|o| {
            o.id("task_id", task_id).bool("accepted", true);
        }),
    ))
}

/// Records a report as the task's latest and sends it to the project's subscribers now, or when
/// the task's next frame is due (the latest report then).
///
/// A report larger than `--max-progress-bytes` (encoded) is refused with 413: checked before any
/// write (`check`), so a heartbeat carrying one extends no lease.
pub(super) fn publish(state: &Arc<AppState>, task: &Task, report: &Report) -> Result<(), ApiError> {
    report.validate()?;
    let at = now_micros();
    let encoded = report.encode(at);
    check_size(state, encoded.len())?;
    // Not kept (the board is at its bound): sent now if it is the task's turn, else dropped,
    // never held for later.
    let kept = state.store.set_progress(task.id, encoded.clone());
    let frame = object(|o| {
        o.str("event_type", "task_progress")
            .id("project_id", task.project_id)
            .id("task_id", task.id)
            .str("agent_type", task.agent_type.as_str())
            .raw("data", &encoded)
            .timestamp("timestamp", at);
    });
    let now = Instant::now();
    let send_later = {
        let mut tasks = state.progress.tasks.lock();
        if tasks.len() >= TRACKED {
            tasks.retain(|_, s| s.waiting.is_some() || now.duration_since(s.sent) < EVERY);
        }
        match tasks.get_mut(&task.id) {
            // Not its turn and not kept: dropped rather than held.
            Some(slot) if !kept && now.duration_since(slot.sent) < EVERY => None,
            Some(slot) if now.duration_since(slot.sent) < EVERY => {
                // Not its turn: the latest waits; one timer per task sends it.
                let armed = slot.waiting.is_some();
                slot.waiting = Some(frame);
                (!armed).then(|| slot.sent + EVERY)
            }
            _ => {
                tasks.insert(
                    task.id,
                    Slot {
                        sent: now,
                        waiting: None,
                    },
                );
                state.ws.hub.publish_ephemeral(task.project_id, at, &frame);
                None
            }
        }
    };
    if let Some(due) = send_later {
        let (state, task_id, project) = (state.clone(), task.id, task.project_id);
        tokio::spawn(async move {
            tokio::time::sleep_until(due.into()).await;
            let frame = {
                let mut tasks = state.progress.tasks.lock();
                tasks.get_mut(&task_id).and_then(|slot| {
                    slot.sent = Instant::now();
                    slot.waiting.take()
                })
            };
            if let Some(frame) = frame {
                state
                    .ws
                    .hub
                    .publish_ephemeral(project, now_micros(), &frame);
            }
        });
    }
    Ok(())
}

/// 413 for a report larger than `--max-progress-bytes`, encoded.
fn check_size(state: &AppState, bytes: usize) -> Result<(), ApiError> {
    let max = state.progress.max_report_bytes;
    if bytes > max {
        return Err(ApiError::new(
            crate::http::ErrorCode::PayloadTooLarge,
            format!(
                "the progress report is {bytes} bytes encoded; at most {max} \
                 (--max-progress-bytes): send less data, or an artifact"
            ),
        ));
    }
    Ok(())
}

/// Checks a report before the write that carries it (a heartbeat's): its fields, and its size.
pub(super) fn check(state: &AppState, report: &Report) -> Result<(), ApiError> {
    report.validate()?;
    // The timestamp is of fixed width: any time measures the same.
    check_size(state, report.encode(0).len())
}
