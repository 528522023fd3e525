//! Migrations of databases written by older versions. They run at open, inside the write
//! transaction that records the new schema version, so a database is either migrated whole or not
//! touched (a crash mid-way leaves the old version, migrated again at the next open).
//!
//! - 1 → 2: an `agent_status_change` caused by a task moves from the global stream to that task's
//!   project stream — record, frame JSON and index entry — as version 2 writes it. Agent resets
//!   (no task) stay global.
//! - 2 → 3: tasks gain `lease_id`, the fencing token of their claim, and `priority`; workflow
//!   phases gain `priority`. Every task is rewritten with no lease id (a task claimed before the
//!   upgrade finishes like one moved to working without a claim) and the default priority, every
//!   workflow's phases with the default priority, and the claim queue index
//!   `ix_tasks_agent_status` (agent type, status, task) is replaced by `ix_tasks_claim` (agent
//!   type, status, priority, project, task).
//! - 3 → 4: HITL requests gain `responded_by` and their history entries `user_id` (the name of the
//!   API key that answered). Every request is rewritten with neither: answers given before the
//!   upgrade stay unattributed.
//! - 4 → 5: each record kind's project indexes move into one table (`ix_tasks`, `ix_artifacts`,
//!   `ix_hitl`, keyed by project, tag, code and id), rebuilt from the records; the eight tables
//!   they replace are deleted. Records do not change.

use redb::{ReadableTable, WriteTransaction};

use super::codec::{decode, encode};
use super::tables;
use super::{Cause, StoreError};
use crate::domain::HitlStatus;
use crate::domain::records::{
    Artifact, EventRecord, HitlHistoryEntry, HitlRequest, PhaseRun, PhaseStatus, Task, WorkflowRun,
};
use crate::domain::tasks::DEFAULT_PRIORITY;
use crate::domain::{AgentType, ArtifactType, Id, Micros, TaskStatus};

/// What a migration changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Migrated {
    pub events_moved: u64,
    pub tasks_rewritten: u64,
    pub hitl_rewritten: u64,
    /// Records whose project index entries were rebuilt (4 → 5).
    pub records_reindexed: u64,
}

/// A HITL request as schema versions 1 to 3 stored it (nobody named as the responder).
#[derive(serde::Deserialize)]
struct HitlRequestV3 {
    id: Id,
    project_id: Id,
    task_id: Option<Id>,
    question: String,
    options: Vec<String>,
    status: HitlStatus,
    created_at: Micros,
    updated_at: Micros,
    expires_at: Option<Micros>,
    responded_at: Option<Micros>,
    amended_content: Option<String>,
    response_comment: Option<String>,
    history: Vec<HitlHistoryEntryV3>,
}

#[derive(serde::Deserialize)]
struct HitlHistoryEntryV3 {
    action: String,
    at: Micros,
    content: Option<String>,
    comment: Option<String>,
}

impl From<HitlRequestV3> for HitlRequest {
    fn from(h: HitlRequestV3) -> HitlRequest {
        HitlRequest {
            id: h.id,
            project_id: h.project_id,
            task_id: h.task_id,
            question: h.question,
            options: h.options,
            status: h.status,
            created_at: h.created_at,
            updated_at: h.updated_at,
            expires_at: h.expires_at,
            responded_at: h.responded_at,
            amended_content: h.amended_content,
            response_comment: h.response_comment,
            history: h
                .history
                .into_iter()
                .map(|e| HitlHistoryEntry {
                    action: e.action,
                    at: e.at,
                    content: e.content,
                    comment: e.comment,
                    user_id: None,
                })
                .collect(),
            responded_by: None,
        }
    }
}

/// A HITL request as a database of schema `version` stores it, in today's shape (for `check`).
pub(super) fn decode_hitl(version: u64, bytes: &[u8]) -> Result<HitlRequest, StoreError> {
    if version < 4 {
        Ok(decode::<HitlRequestV3>(bytes)?.into())
    } else {
        decode(bytes)
    }
}

fn hitl_with_responders(txn: &WriteTransaction) -> Result<u64, StoreError> {
    let mut hitl = txn.open_table(tables::HITL)?;
    let mut old = Vec::new();
    for entry in hitl.iter()? {
        let (_, value) = entry?;
        old.push(decode::<HitlRequestV3>(value.value())?);
    }
    let rewritten = old.len() as u64;
    for request in old {
        let request = HitlRequest::from(request);
        hitl.insert(request.id.as_bytes(), encode(&request).as_slice())?;
    }
    Ok(rewritten)
}

/// A task as schema versions 1 and 2 stored it (no `lease_id`).
#[derive(serde::Deserialize)]
struct TaskV2 {
    id: Id,
    project_id: Id,
    agent_type: AgentType,
    status: TaskStatus,
    instructions: String,
    context_ids: Vec<Id>,
    output: Option<String>,
    error_message: Option<String>,
    created_at: Micros,
    updated_at: Micros,
    started_at: Option<Micros>,
    completed_at: Option<Micros>,
    attempts: u32,
    failures: u32,
    worker_id: Option<String>,
    lease_expires_at: Option<Micros>,
    retry_at: Option<Micros>,
    timeout_at: Option<Micros>,
}

impl From<TaskV2> for Task {
    fn from(t: TaskV2) -> Task {
        Task {
            id: t.id,
            project_id: t.project_id,
            agent_type: t.agent_type,
            status: t.status,
            instructions: t.instructions,
            context_ids: t.context_ids,
            output: t.output,
            error_message: t.error_message,
            created_at: t.created_at,
            updated_at: t.updated_at,
            started_at: t.started_at,
            completed_at: t.completed_at,
            attempts: t.attempts,
            failures: t.failures,
            worker_id: t.worker_id,
            lease_expires_at: t.lease_expires_at,
            retry_at: t.retry_at,
            timeout_at: t.timeout_at,
            lease_id: None,
            priority: DEFAULT_PRIORITY,
            progress: None,
        }
    }
}

/// A workflow run as schema versions 1 and 2 stored it (phases without `priority`).
#[derive(serde::Deserialize)]
struct WorkflowRunV2 {
    project_id: Id,
    workflow: String,
    context: Option<String>,
    phases: Vec<PhaseRunV2>,
    current: u32,
    completed: bool,
    started_at: Micros,
    completed_at: Option<Micros>,
}

#[derive(serde::Deserialize)]
struct PhaseRunV2 {
    agent_type: AgentType,
    instructions: String,
    produces: Vec<ArtifactType>,
    gated: bool,
    status: PhaseStatus,
    task_id: Option<Id>,
    gate_id: Option<Id>,
}

impl From<WorkflowRunV2> for WorkflowRun {
    fn from(r: WorkflowRunV2) -> WorkflowRun {
        WorkflowRun {
            project_id: r.project_id,
            workflow: r.workflow,
            context: r.context,
            phases: r
                .phases
                .into_iter()
                .map(|p| PhaseRun {
                    agent_type: p.agent_type,
                    instructions: p.instructions,
                    produces: p.produces,
                    gated: p.gated,
                    status: p.status,
                    task_id: p.task_id,
                    gate_id: p.gate_id,
                    priority: DEFAULT_PRIORITY,
                })
                .collect(),
            current: r.current,
            completed: r.completed,
            started_at: r.started_at,
            completed_at: r.completed_at,
        }
    }
}

/// The claim queue index of schema versions 1 and 2.
const TASKS_BY_AGENT_STATUS_V2: redb::TableDefinition<&[u8; 18], ()> =
    redb::TableDefinition::new("ix_tasks_agent_status");

/// The project indexes of schema versions 1 to 4, one table each, which schema 5 merged.
const PROJECT_INDEXES_V4: [&str; 8] = [
    "ix_tasks_project",
    "ix_tasks_project_status",
    "ix_tasks_project_agent",
    "ix_artifacts_project",
    "ix_artifacts_project_type",
    "ix_artifacts_project_source",
    "ix_hitl_project",
    "ix_hitl_project_status",
];

/// The tables of today's schema that a database of `version` does not have yet (for `check`,
/// which skips them: an older database's own project indexes are not checked).
pub(super) fn absent_tables(version: u64) -> &'static [&'static str] {
    match version {
        ..3 => &[
            "TASKS_CLAIM",
            "TASKS_PENDING_SINCE",
            "QUEUES",
            "PAUSED_PROJECTS",
            "IDEMPOTENCY",
            "IDEMPOTENCY_BY_AGE",
            "TASK_INDEX",
            "ARTIFACT_INDEX",
            "HITL_INDEX",
        ],
        3 | 4 => &["TASK_INDEX", "ARTIFACT_INDEX", "HITL_INDEX"],
        _ => &[],
    }
}

/// Fills schema 5's project indexes from the records (in today's shape: the earlier steps have
/// run) and deletes the tables they replace.
fn merge_project_indexes(txn: &WriteTransaction) -> Result<u64, StoreError> {
    let mut reindexed = fill_index(txn, tables::TASKS, tables::TASK_INDEX, |t: &Task| {
        tables::TaskKeys::of(t).shared()
    })?;
    reindexed += fill_index(
        txn,
        tables::ARTIFACTS,
        tables::ARTIFACT_INDEX,
        |a: &Artifact| tables::ArtifactKeys::of(a).shared(),
    )?;
    reindexed += fill_index(txn, tables::HITL, tables::HITL_INDEX, |h: &HitlRequest| {
        tables::HitlKeys::of(h).shared()
    })?;
    for name in PROJECT_INDEXES_V4 {
        let old: redb::TableDefinition<&[u8], ()> = redb::TableDefinition::new(name);
        txn.delete_table(old)
            .map_err(|e| StoreError::storage(format!("cannot delete {name}"), e))?;
    }
    Ok(reindexed)
}

/// Inserts every record's entries of a project index; answers the records read.
fn fill_index<T: serde::de::DeserializeOwned, K: Iterator<Item = [u8; 34]>>(
    txn: &WriteTransaction,
    records: redb::TableDefinition<&[u8; 16], &[u8]>,
    index: redb::TableDefinition<&[u8; 34], ()>,
    keys: impl Fn(&T) -> K,
) -> Result<u64, StoreError> {
    let records = txn.open_table(records)?;
    let mut index = txn.open_table(index)?;
    let mut read = 0;
    for entry in records.iter()? {
        let record: T = decode(entry?.1.value())?;
        for key in keys(&record) {
            index.insert(&key, ())?;
        }
        read += 1;
    }
    Ok(read)
}

/// A workflow run as a database of schema `version` stores it, in today's shape.
pub(super) fn decode_workflow(version: u64, bytes: &[u8]) -> Result<WorkflowRun, StoreError> {
    if version < 3 {
        Ok(decode::<WorkflowRunV2>(bytes)?.into())
    } else {
        decode(bytes)
    }
}

/// Brings a database of schema version `from` to [`tables::SCHEMA_VERSION`].
pub(super) fn migrate(txn: &WriteTransaction, from: u64) -> Result<Migrated, StoreError> {
    let mut done = Migrated::default();
    if from < 2 {
        done.events_moved += agent_events_to_projects(txn)?;
    }
    if from < 3 {
        done.tasks_rewritten += tasks_with_lease_ids_and_priorities(txn)?;
        workflows_with_priorities(txn)?;
    }
    if from < 4 {
        done.hitl_rewritten += hitl_with_responders(txn)?;
    }
    if from < 5 {
        done.records_reindexed += merge_project_indexes(txn)?;
    }
    Ok(done)
}

fn agent_events_to_projects(txn: &WriteTransaction) -> Result<u64, StoreError> {
    let mut events = txn.open_table(tables::EVENTS)?;
    let mut index = txn.open_table(tables::EVENTS_BY_PROJECT)?;
    let tasks = txn.open_table(tables::TASKS)?;
    let lo = tables::event_project_key(&tables::GLOBAL_STREAM, 0);
    let hi = tables::event_project_key(&tables::GLOBAL_STREAM, u64::MAX);
    let mut global = Vec::new();
    for entry in index.range::<&[u8; 24]>(&lo..=&hi)? {
        let (key, _) = entry?;
        let mut seq = [0u8; 8];
        seq.copy_from_slice(&key.value()[16..]);
        global.push(u64::from_be_bytes(seq));
    }
    let mut moved = 0;
    for seq in global {
        let Some(value) = events.get(seq)? else {
            continue;
        };
        let mut record: EventRecord = decode(value.value())?;
        drop(value);
        let frame: serde_json::Value = serde_json::from_str(&record.json)
            .map_err(|e| StoreError::storage(format!("event {seq} is not JSON"), e))?;
        if frame["event_type"] != "agent_status_change" {
            continue;
        }
        let Some(task_id) = frame["task_id"].as_str().and_then(Id::parse) else {
            continue;
        };
        let Some(task) = tasks.get(&task_id.0)? else {
            continue;
        };
        let project = decode::<TaskV2>(task.value())?.project_id;
        record.project_id = Some(project);
        // The frame's own `project_id` is its third field, before any data.
        record.json = record.json.replacen(
            "\"project_id\":null",
            &format!("\"project_id\":\"{project}\""),
            1,
        );
        events.insert(seq, encode(&record).as_slice())?;
        index.remove(&tables::event_project_key(&tables::GLOBAL_STREAM, seq))?;
        index.insert(&tables::event_project_key(&project, seq), ())?;
        moved += 1;
    }
    Ok(moved)
}

/// A task record as a database of schema `version` stores it, in today's shape (for `check`,
/// which reads older databases without migrating them).
pub(super) fn decode_task(version: u64, bytes: &[u8]) -> Result<Task, StoreError> {
    if version < 3 {
        Ok(decode::<TaskV2>(bytes)?.into())
    } else {
        decode(bytes)
    }
}

fn tasks_with_lease_ids_and_priorities(txn: &WriteTransaction) -> Result<u64, StoreError> {
    let mut tasks = txn.open_table(tables::TASKS)?;
    let mut claim = txn.open_table(tables::TASKS_CLAIM)?;
    let mut since = txn.open_table(tables::TASKS_PENDING_SINCE)?;
    let mut old = Vec::new();
    for entry in tasks.iter()? {
        let (_, value) = entry?;
        old.push(decode::<TaskV2>(value.value())?);
    }
    let rewritten = old.len() as u64;
    for task in old {
        let task = Task::from(task);
        tasks.insert(task.id.as_bytes(), encode(&task).as_slice())?;
        claim.insert(&tables::TaskKeys::of(&task).claim, ())?;
        if let Some(key) = tables::pending_since_key(&task) {
            since.insert(&key, ())?;
        }
    }
    drop((tasks, claim, since));
    txn.delete_table(TASKS_BY_AGENT_STATUS_V2)
        .map_err(|e| StoreError::Storage(Cause::of(e)))?;
    Ok(rewritten)
}

fn workflows_with_priorities(txn: &WriteTransaction) -> Result<(), StoreError> {
    let mut workflows = txn.open_table(tables::WORKFLOWS)?;
    let mut old = Vec::new();
    for entry in workflows.iter()? {
        let (_, value) = entry?;
        old.push(decode::<WorkflowRunV2>(value.value())?);
    }
    for run in old {
        let run = WorkflowRun::from(run);
        workflows.insert(run.project_id.as_bytes(), encode(&run).as_slice())?;
    }
    Ok(())
}
