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
//! - 5 → 6: agent and artifact types become names interned into ids (`type_names`, the defaults at
//!   the ids their enum codes had); index keys hold a two-byte id where they held a one-byte
//!   code. The agents, their history and the queue settings are rekeyed; the project indexes, the
//!   claim queue and the pending-since index are rebuilt from the records. Records do not change
//!   (a default type is stored as the enum stored it).
//! - 6 → 7: workflow runs become graphs of phases (each phase gains an `id` and `depends_on`; a
//!   run gains a status, the definition's version and why it ended) and tasks gain `workflow`,
//!   the context of a phase's task. Every run is rewritten as a chain (each phase depending on
//!   the one before, ids defaulted as a definition defaults them), every task with no workflow.
//!   HITL requests gain `assignees` and `on_timeout` (none for these). The table
//!   `workflow_defs` (definitions stored through the API) starts empty.
//!
//! The indexes keyed by type are built once, by the last step, whatever version a database starts
//! from: the earlier steps only delete the tables they replace.

use redb::{ReadableTable, WriteTransaction};

use super::codec::{decode, encode};
use super::tables;
use super::{Cause, StoreError};
use crate::domain::HitlStatus;
use crate::domain::records::{
    Artifact, EventRecord, HitlHistoryEntry, HitlRequest, PhaseRun, PhaseStatus, RunStatus, Task,
    WorkflowRun,
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
            assignees: Vec::new(),
            on_timeout: None,
        }
    }
}

/// A HITL request as schema versions 4 to 6 stored it (no assignees, no timeout).
#[derive(serde::Deserialize)]
struct HitlRequestV6 {
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
    history: Vec<HitlHistoryEntry>,
    responded_by: Option<String>,
}

impl From<HitlRequestV6> for HitlRequest {
    fn from(h: HitlRequestV6) -> HitlRequest {
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
            history: h.history,
            responded_by: h.responded_by,
            assignees: Vec::new(),
            on_timeout: None,
        }
    }
}

/// A HITL request as a database of schema `version` stores it, in today's shape (for `check`).
pub(super) fn decode_hitl(version: u64, bytes: &[u8]) -> Result<HitlRequest, StoreError> {
    if version < 4 {
        Ok(decode::<HitlRequestV3>(bytes)?.into())
    } else if version < 7 {
        Ok(decode::<HitlRequestV6>(bytes)?.into())
    } else {
        decode(bytes)
    }
}

/// Every request rewritten in today's shape (3 → 4: nobody named as the responder; 6 → 7: no
/// assignees, no timeout).
fn hitl_in_todays_shape(txn: &WriteTransaction, from: u64) -> Result<u64, StoreError> {
    let mut hitl = txn.open_table(tables::HITL)?;
    let mut old = Vec::new();
    for entry in hitl.iter()? {
        let (_, value) = entry?;
        old.push(decode_hitl(from, value.value())?);
    }
    let rewritten = old.len() as u64;
    for request in old {
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
            workflow: None,
        }
    }
}

/// A task as schema versions 3 to 6 stored it (no `workflow`).
#[derive(serde::Deserialize)]
struct TaskV6 {
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
    lease_id: Option<Id>,
    priority: u8,
    progress: Option<String>,
}

impl From<TaskV6> for Task {
    fn from(t: TaskV6) -> Task {
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
            lease_id: t.lease_id,
            priority: t.priority,
            progress: t.progress,
            workflow: None,
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

impl From<WorkflowRunV2> for WorkflowRunV6 {
    fn from(r: WorkflowRunV2) -> WorkflowRunV6 {
        WorkflowRunV6 {
            project_id: r.project_id,
            workflow: r.workflow,
            context: r.context,
            phases: r
                .phases
                .into_iter()
                .map(|p| PhaseRunV6 {
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

/// A workflow run as schema versions 3 to 6 stored it: a line of phases, one at a time.
#[derive(serde::Deserialize)]
struct WorkflowRunV6 {
    project_id: Id,
    workflow: String,
    context: Option<String>,
    phases: Vec<PhaseRunV6>,
    /// The running phase (every phase before it was done).
    #[allow(dead_code)]
    current: u32,
    completed: bool,
    started_at: Micros,
    completed_at: Option<Micros>,
}

#[derive(serde::Deserialize)]
struct PhaseRunV6 {
    agent_type: AgentType,
    instructions: String,
    produces: Vec<ArtifactType>,
    gated: bool,
    status: PhaseStatus,
    task_id: Option<Id>,
    gate_id: Option<Id>,
    priority: u8,
}

/// A line of phases becomes a chain: each depends on the one before, with the id its definition
/// gives it by default (its agent type; `coder.2` for a second `coder`).
impl From<WorkflowRunV6> for WorkflowRun {
    fn from(r: WorkflowRunV6) -> WorkflowRun {
        let mut ids: Vec<String> = Vec::with_capacity(r.phases.len());
        let mut phases = Vec::with_capacity(r.phases.len());
        for (i, p) in r.phases.into_iter().enumerate() {
            let base = p.agent_type.as_str().to_string();
            let mut id = base.clone();
            let mut n = 2;
            while ids.contains(&id) {
                id = format!("{base}.{n}");
                n += 1;
            }
            ids.push(id.clone());
            phases.push(PhaseRun {
                agent_type: p.agent_type,
                instructions: p.instructions,
                produces: p.produces,
                gated: p.gated,
                status: p.status,
                task_id: p.task_id,
                gate_id: p.gate_id,
                priority: p.priority,
                id,
                depends_on: (i as u32).checked_sub(1).into_iter().collect(),
                for_each: None,
                items: Vec::new(),
                items_done: 0,
                gate_timeout: None,
                gate_assignees: Vec::new(),
            });
        }
        WorkflowRun {
            project_id: r.project_id,
            workflow: r.workflow,
            context: r.context,
            phases,
            status: if r.completed {
                RunStatus::Completed
            } else {
                RunStatus::Running
            },
            started_at: r.started_at,
            completed_at: r.completed_at,
            version: 1,
            reason: None,
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

/// Deletes the project indexes of schemas 1 to 4, which schema 5 merged (the last step builds
/// the merged ones).
fn merge_project_indexes(txn: &WriteTransaction) -> Result<(), StoreError> {
    delete_tables(txn, &PROJECT_INDEXES_V4)
}

fn delete_tables(txn: &WriteTransaction, names: &[&str]) -> Result<(), StoreError> {
    for name in names {
        let old: redb::TableDefinition<&[u8], ()> = redb::TableDefinition::new(name);
        txn.delete_table(old)
            .map_err(|e| StoreError::storage(format!("cannot delete {name}"), e))?;
    }
    Ok(())
}

/// The tables of schema 5 and before whose keys held a one-byte enum code: the indexes are
/// rebuilt, the others rekeyed.
const CODE_KEYED_INDEXES_V5: [&str; 5] = [
    "ix_tasks",
    "ix_artifacts",
    "ix_hitl",
    "ix_tasks_claim",
    "ix_tasks_pending_since",
];
const AGENTS_V5: redb::TableDefinition<u8, &[u8]> = redb::TableDefinition::new("agents");
const AGENT_HISTORY_V5: redb::TableDefinition<&[u8; 9], &[u8]> =
    redb::TableDefinition::new("agent_history");
const QUEUES_V5: redb::TableDefinition<u8, &[u8]> = redb::TableDefinition::new("queues");

/// 5 → 6: the defaults interned at their codes, the agents, their history and the queues rekeyed
/// by id (a default's id is its code, so each value keeps its place), and every index keyed by
/// type rebuilt from the records. Answers the records reindexed.
fn intern_types(txn: &WriteTransaction, from: u64) -> Result<u64, StoreError> {
    super::types::seed_defaults(&mut txn.open_table(tables::TYPE_NAMES)?)?;
    if from >= 3 {
        let mut queues = Vec::new();
        for entry in txn.open_table(QUEUES_V5)?.iter()? {
            let (k, v) = entry?;
            queues.push((k.value(), v.value().to_vec()));
        }
        txn.delete_table(QUEUES_V5)
            .map_err(|e| StoreError::Storage(Cause::of(e)))?;
        let mut table = txn.open_table(tables::QUEUES)?;
        for (code, value) in queues {
            table.insert(u16::from(code), value.as_slice())?;
        }
    }
    let mut agents = Vec::new();
    for entry in txn.open_table(AGENTS_V5)?.iter()? {
        let (k, v) = entry?;
        agents.push((k.value(), v.value().to_vec()));
    }
    txn.delete_table(AGENTS_V5)
        .map_err(|e| StoreError::Storage(Cause::of(e)))?;
    let mut table = txn.open_table(tables::AGENTS)?;
    for (code, value) in agents {
        table.insert(u16::from(code), value.as_slice())?;
    }
    drop(table);
    let mut history = Vec::new();
    for entry in txn.open_table(AGENT_HISTORY_V5)?.iter()? {
        let (k, v) = entry?;
        let k = *k.value();
        let mut seq = [0u8; 8];
        seq.copy_from_slice(&k[1..]);
        history.push((k[0], u64::from_be_bytes(seq), v.value().to_vec()));
    }
    txn.delete_table(AGENT_HISTORY_V5)
        .map_err(|e| StoreError::Storage(Cause::of(e)))?;
    let mut table = txn.open_table(tables::AGENT_HISTORY)?;
    for (code, seq, value) in history {
        table.insert(
            &tables::agent_history_key(u16::from(code), seq),
            value.as_slice(),
        )?;
    }
    drop(table);
    delete_tables(txn, &CODE_KEYED_INDEXES_V5)?;
    let defaults = super::StoreConfig::new(".");
    let types = super::types::Registry::load(
        &txn.open_table(tables::TYPE_NAMES)?,
        defaults.agent_types,
        defaults.artifact_types,
    )?;
    let mut reindexed = 0;
    {
        let records = txn.open_table(tables::TASKS)?;
        let mut index = txn.open_table(tables::TASK_INDEX)?;
        let mut claim = txn.open_table(tables::TASKS_CLAIM)?;
        let mut since = txn.open_table(tables::TASKS_PENDING_SINCE)?;
        for entry in records.iter()? {
            let task: Task = decode(entry?.1.value())?;
            let keys = tables::TaskKeys::of(&task, &types);
            for key in keys.shared() {
                index.insert(&key, ())?;
            }
            claim.insert(&keys.claim, ())?;
            if let Some(key) = tables::pending_since_key(&task, &types) {
                since.insert(&key, ())?;
            }
            reindexed += 1;
        }
    }
    {
        let records = txn.open_table(tables::ARTIFACTS)?;
        let mut index = txn.open_table(tables::ARTIFACT_INDEX)?;
        for entry in records.iter()? {
            let artifact: Artifact = decode(entry?.1.value())?;
            for key in tables::ArtifactKeys::of(&artifact, &types).shared() {
                index.insert(&key, ())?;
            }
            reindexed += 1;
        }
    }
    {
        let records = txn.open_table(tables::HITL)?;
        let mut index = txn.open_table(tables::HITL_INDEX)?;
        for entry in records.iter()? {
            let request: HitlRequest = decode(entry?.1.value())?;
            for key in tables::HitlKeys::of(&request, &types).shared() {
                index.insert(&key, ())?;
            }
            reindexed += 1;
        }
    }
    Ok(reindexed)
}

/// A workflow run as a database of schema `version` stores it, in today's shape.
pub(super) fn decode_workflow(version: u64, bytes: &[u8]) -> Result<WorkflowRun, StoreError> {
    if version < 3 {
        Ok(WorkflowRunV6::from(decode::<WorkflowRunV2>(bytes)?).into())
    } else if version < 7 {
        Ok(decode::<WorkflowRunV6>(bytes)?.into())
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
    if from < 7 {
        done.tasks_rewritten += tasks_in_todays_shape(txn, from)?;
        workflows_as_graphs(txn, from)?;
    }
    if from < 7 {
        done.hitl_rewritten += hitl_in_todays_shape(txn, from)?;
    }
    if from < 5 {
        merge_project_indexes(txn)?;
    }
    if from < 6 {
        done.records_reindexed += intern_types(txn, from)?;
    }
    if from < 9 {
        budget_timers(txn)?;
    }
    Ok(done)
}

/// Schema 9 gives each budget of a day or month window the timer of its window's end (schema 8's
/// budgets, the first, moved to a new window only when a report came).
fn budget_timers(txn: &WriteTransaction) -> Result<(), StoreError> {
    let budgets = txn.open_table(tables::BUDGETS)?;
    let mut timers = txn.open_table(tables::TIMERS)?;
    for entry in budgets.iter()? {
        let (_, value) = entry?;
        let budget: crate::domain::budget::Budget = decode(value.value())?;
        if let Some(key) = tables::budget_timer(&budget) {
            timers.insert(&key, ())?;
        }
    }
    Ok(())
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
    } else if version < 7 {
        Ok(decode::<TaskV6>(bytes)?.into())
    } else {
        decode(bytes)
    }
}

/// Every task rewritten in today's shape (2 → 3: a lease id and a priority; 6 → 7: the
/// `workflow` of a phase's task, none for these); before 3 the old claim index goes.
fn tasks_in_todays_shape(txn: &WriteTransaction, from: u64) -> Result<u64, StoreError> {
    let mut tasks = txn.open_table(tables::TASKS)?;
    let mut old = Vec::new();
    for entry in tasks.iter()? {
        let (_, value) = entry?;
        old.push(decode_task(from, value.value())?);
    }
    let rewritten = old.len() as u64;
    for task in old {
        tasks.insert(task.id.as_bytes(), encode(&task).as_slice())?;
    }
    drop(tasks);
    if from < 3 {
        txn.delete_table(TASKS_BY_AGENT_STATUS_V2)
            .map_err(|e| StoreError::Storage(Cause::of(e)))?;
    }
    Ok(rewritten)
}

/// Every run rewritten as a graph of phases (6 → 7), each depending on the one before.
fn workflows_as_graphs(txn: &WriteTransaction, from: u64) -> Result<(), StoreError> {
    let mut workflows = txn.open_table(tables::WORKFLOWS)?;
    let mut old = Vec::new();
    for entry in workflows.iter()? {
        let (_, value) = entry?;
        old.push(decode_workflow(from, value.value())?);
    }
    for run in old {
        workflows.insert(run.project_id.as_bytes(), encode(&run).as_slice())?;
    }
    Ok(())
}
