//! Reads: one redb read transaction per call (MVCC: never blocked by the writer), index range scans
//! with opaque cursors, and the encoded-artifact cache.

use std::collections::HashMap;
use std::ops::Bound;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use bytes::Bytes;
use redb::{
    ReadTransaction, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
};
use serde::de::DeserializeOwned;

use crate::domain::{AgentType, ArtifactType, HitlStatus, Id, TaskStatus, Vocabulary};

use super::cache::Cached;
use super::codec::decode;
use super::tables::{self, trailing_id};
use super::{CacheKey, ProjectSummary, Store, StoreError, begin_read, metric_names};
use crate::domain::records::{
    Agent, AgentHistoryEntry, Artifact, EventRecord, HitlRequest, Project, Task,
};

/// A read transaction that records its duration, by operation, when dropped.
pub(super) struct TimedTxn {
    txn: ReadTransaction,
    started: Instant,
    operation: &'static str,
}

impl std::ops::Deref for TimedTxn {
    type Target = ReadTransaction;
    fn deref(&self) -> &ReadTransaction {
        &self.txn
    }
}

impl Drop for TimedTxn {
    fn drop(&mut self) {
        metrics::histogram!(metric_names::READ_SECONDS, "operation" => self.operation)
            .record(self.started.elapsed().as_secs_f64());
    }
}

/// One page of a list and the cursor of the next one, if there is more.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

/// An event as the log holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct LoggedEvent {
    pub seq: u64,
    pub project_id: Option<Id>,
    /// The frame's JSON text.
    pub json: String,
}

#[derive(Debug, Clone, Default)]
pub struct TaskFilter {
    pub status: Option<TaskStatus>,
    pub agent_type: Option<AgentType>,
}

#[derive(Debug, Clone, Default)]
pub struct ArtifactFilter {
    pub artifact_type: Option<ArtifactType>,
    pub source_agent: Option<AgentType>,
    /// Summaries only: the content is dropped as each artifact is read.
    pub summaries: bool,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct HitlFilter {
    pub status: Option<HitlStatus>,
}

type RecordDef = TableDefinition<'static, &'static [u8; 16], &'static [u8]>;

/// Cursors are the hex of the last id returned; clients treat them as opaque.
pub fn encode_cursor(id: &Id) -> String {
    id.0.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn decode_cursor(cursor: &str) -> Result<Id, StoreError> {
    if cursor.len() != 32 || !cursor.is_ascii() {
        return Err(StoreError::InvalidCursor);
    }
    let mut id = [0u8; 16];
    for (i, byte) in id.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&cursor[2 * i..2 * i + 2], 16)
            .map_err(|_| StoreError::InvalidCursor)?;
    }
    Ok(Id(id))
}

impl Store {
    pub(super) fn txn(&self, operation: &'static str) -> Result<TimedTxn, StoreError> {
        Ok(TimedTxn {
            txn: begin_read(&self.shared)?,
            started: Instant::now(),
            operation,
        })
    }

    pub fn get_project(&self, id: &Id) -> Result<Option<Project>, StoreError> {
        get(&*self.txn("get")?, tables::PROJECTS, id)
    }

    pub fn get_task(&self, id: &Id) -> Result<Option<Task>, StoreError> {
        get(&*self.txn("get")?, tables::TASKS, id)
    }

    pub fn get_artifact(&self, id: &Id) -> Result<Option<Artifact>, StoreError> {
        get(&*self.txn("get")?, tables::ARTIFACTS, id)
    }

    pub fn get_hitl(&self, id: &Id) -> Result<Option<HitlRequest>, StoreError> {
        get(&*self.txn("get")?, tables::HITL, id)
    }

    /// An artifact's encoded response, from the cache or encoded by `encode` and cached.
    pub fn artifact_response(
        &self,
        id: &Id,
        encode: impl FnOnce(&Artifact) -> Vec<u8>,
    ) -> Result<Option<Bytes>, StoreError> {
        let key = CacheKey::Artifact(*id);
        let looked_up = self.shared.cache.lock().lookup_encoded(&key);
        let since = match looked_up {
            Ok(hit) => return Ok(Some(hit)),
            Err(since) => since,
        };
        let Some(artifact) = self.get_artifact(id)? else {
            return Ok(None);
        };
        let encoded = Bytes::from(encode(&artifact));
        self.shared
            .cache
            .lock()
            .insert_built(key, Cached::Encoded(encoded.clone()), since);
        Ok(Some(encoded))
    }

    /// Projects, newest first.
    pub fn list_projects(
        &self,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<Project>, StoreError> {
        let txn = self.txn("list")?;
        let table = txn.open_table(tables::PROJECTS)?;
        let after = cursor.map(decode_cursor).transpose()?;
        let range = match &after {
            Some(id) => table.range::<&[u8; 16]>((Bound::Unbounded, Bound::Excluded(&id.0)))?,
            None => table.range::<&[u8; 16]>(..)?,
        };
        let mut items = Vec::new();
        let mut held = 0usize;
        let mut cut = false;
        for entry in range.rev() {
            let (_, value) = entry?;
            let size = value.value().len();
            if !items.is_empty()
                && items.len() < limit
                && held.saturating_add(size) > self.shared.page_bytes
            {
                cut = true;
                break;
            }
            held = held.saturating_add(size);
            items.push(decode::<Project>(value.value())?);
            if items.len() > limit {
                break;
            }
        }
        Ok(paginate((items, cut), limit, |p: &Project| p.id))
    }

    /// A project's tasks, oldest first, through the most selective index for the filter.
    pub fn project_tasks(
        &self,
        project: &Id,
        filter: TaskFilter,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<Task>, StoreError> {
        let txn = self.txn("list")?;
        let after = cursor.map(decode_cursor).transpose()?;
        let agent = match &filter.agent_type {
            Some(a) => match self.shared.types.read().agent(a) {
                Some(id) => Some(id),
                // A name nothing was ever done under has no tasks.
                None => return Ok(paginate((Vec::new(), false), limit, |t: &Task| t.id)),
            },
            None => None,
        };
        let keep = |t: &mut Task| {
            filter.status.is_none_or(|s| t.status == s)
                && filter
                    .agent_type
                    .as_ref()
                    .is_none_or(|a| &t.agent_type == a)
        };
        let items = match (filter.status, agent) {
            (Some(status), _) => scan(
                &txn,
                tables::TASK_INDEX,
                &tables::project_prefix(project, tables::TASK_BY_STATUS, status.code().into()),
                after,
                limit,
                self.shared.page_bytes,
                tables::TASKS,
                keep,
            )?,
            (None, Some(agent)) => scan(
                &txn,
                tables::TASK_INDEX,
                &tables::project_prefix(project, tables::TASK_BY_AGENT, agent),
                after,
                limit,
                self.shared.page_bytes,
                tables::TASKS,
                keep,
            )?,
            (None, None) => scan(
                &txn,
                tables::TASK_INDEX,
                &tables::project_prefix(project, tables::TASK_ALL, 0),
                after,
                limit,
                self.shared.page_bytes,
                tables::TASKS,
                keep,
            )?,
        };
        Ok(paginate(items, limit, |t| t.id))
    }

    /// A project's artifacts, oldest first.
    pub fn project_artifacts(
        &self,
        project: &Id,
        filter: ArtifactFilter,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<Artifact>, StoreError> {
        let txn = self.txn("list")?;
        let after = cursor.map(decode_cursor).transpose()?;
        let (kind, source) = {
            let types = self.shared.types.read();
            (
                filter.artifact_type.as_ref().map(|t| types.artifact(t)),
                filter.source_agent.as_ref().map(|s| types.agent(s)),
            )
        };
        if kind == Some(None) || source == Some(None) {
            // A name nothing was ever done under has no artifacts.
            return Ok(paginate((Vec::new(), false), limit, |a: &Artifact| a.id));
        }
        let keep = |a: &mut Artifact| {
            let wanted = filter
                .artifact_type
                .as_ref()
                .is_none_or(|t| &a.artifact_type == t)
                && filter
                    .source_agent
                    .as_ref()
                    .is_none_or(|s| &a.source_agent == s);
            if wanted && filter.summaries {
                // Not answered: not held, and not counted against the page's bytes.
                a.content = String::new();
            }
            wanted
        };
        let items = match (kind.flatten(), source.flatten()) {
            (Some(kind), _) => scan(
                &txn,
                tables::ARTIFACT_INDEX,
                &tables::project_prefix(project, tables::ARTIFACT_BY_TYPE, kind),
                after,
                limit,
                self.shared.page_bytes,
                tables::ARTIFACTS,
                keep,
            )?,
            (None, Some(source)) => scan(
                &txn,
                tables::ARTIFACT_INDEX,
                &tables::project_prefix(project, tables::ARTIFACT_BY_SOURCE, source),
                after,
                limit,
                self.shared.page_bytes,
                tables::ARTIFACTS,
                keep,
            )?,
            (None, None) => scan(
                &txn,
                tables::ARTIFACT_INDEX,
                &tables::project_prefix(project, tables::ARTIFACT_ALL, 0),
                after,
                limit,
                self.shared.page_bytes,
                tables::ARTIFACTS,
                keep,
            )?,
        };
        Ok(paginate(items, limit, |a| a.id))
    }

    /// The artifacts found among `ids`, in the order asked, read until they hold `--max-page-bytes`
    /// (at least one is read): the ids not looked at are returned second.
    pub fn artifacts_by_ids(&self, ids: &[Id]) -> Result<(Vec<Artifact>, Vec<Id>), StoreError> {
        let txn = self.txn("get")?;
        let table = txn.open_table(tables::ARTIFACTS)?;
        let mut found = Vec::with_capacity(ids.len());
        let mut held = 0usize;
        for (i, id) in ids.iter().enumerate() {
            if let Some(bytes) = table.get(id.as_bytes())? {
                let size = bytes.value().len();
                if !found.is_empty() && held.saturating_add(size) > self.shared.page_bytes {
                    return Ok((found, ids[i..].to_vec()));
                }
                held = held.saturating_add(size);
                found.push(decode(bytes.value())?);
            }
        }
        Ok((found, Vec::new()))
    }

    /// A project's HITL requests, newest first (as BotArmy lists them).
    pub fn project_hitl(
        &self,
        project: &Id,
        filter: HitlFilter,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<HitlRequest>, StoreError> {
        let txn = self.txn("list")?;
        let after = cursor.map(decode_cursor).transpose()?;
        let items = match filter.status {
            Some(status) => scan_newest(
                &txn,
                tables::HITL_INDEX,
                &tables::project_prefix(
                    project,
                    tables::HITL_BY_STATUS_IN_PROJECT,
                    status.code().into(),
                ),
                after,
                limit,
                self.shared.page_bytes,
                tables::HITL,
                |_| true,
            )?,
            None => scan_newest(
                &txn,
                tables::HITL_INDEX,
                &tables::project_prefix(project, tables::HITL_ALL, 0),
                after,
                limit,
                self.shared.page_bytes,
                tables::HITL,
                |_| true,
            )?,
        };
        Ok(paginate(items, limit, |h| h.id))
    }

    /// HITL requests in one status across all projects, newest first.
    pub fn hitl_by_status(
        &self,
        status: HitlStatus,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<HitlRequest>, StoreError> {
        self.hitl_of_status(status, cursor, limit, |_| true)
    }

    fn hitl_of_status(
        &self,
        status: HitlStatus,
        cursor: Option<&str>,
        limit: usize,
        keep: impl Fn(&mut HitlRequest) -> bool,
    ) -> Result<Page<HitlRequest>, StoreError> {
        let txn = self.txn("list")?;
        let after = cursor.map(decode_cursor).transpose()?;
        let items = scan_newest(
            &txn,
            tables::HITL_BY_STATUS,
            &[status.code()],
            after,
            limit,
            self.shared.page_bytes,
            tables::HITL,
            keep,
        )?;
        Ok(paginate(items, limit, |h| h.id))
    }

    /// The pending requests whose assignees name `name`, newest first (a reviewer's inbox).
    pub fn hitl_assigned(
        &self,
        name: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<HitlRequest>, StoreError> {
        self.hitl_of_status(HitlStatus::Pending, cursor, limit, |h| {
            h.assignees.iter().any(|a| a == name)
        })
    }

    /// Every agent type's state: the listed ones (the closed list, or the defaults) first, then
    /// every other type in use, in the order they were first used.
    pub fn agents(&self) -> Result<Vec<Agent>, StoreError> {
        let mut names = self.agent_types();
        let txn = self.txn("agents")?;
        let table = txn.open_table(tables::AGENTS)?;
        let types = self.shared.types.read();
        // A default the operator's closed list leaves out is still shown once it has a record.
        for name in AgentType::defaults() {
            if !names.contains(&name)
                && let Some(id) = types.agent(&name)
                && table.get(id)?.is_some()
            {
                names.push(name);
            }
        }
        names
            .into_iter()
            .map(|a| match types.agent(&a) {
                Some(id) => match table.get(id)? {
                    Some(bytes) => decode(bytes.value()),
                    None => Ok(Agent::idle(a)),
                },
                None => Ok(Agent::idle(a)),
            })
            .collect()
    }

    /// The agent types to show: the listed ones (the closed list, or the defaults), then every
    /// other one a record, claim or queue setting named, in the order of their first use. (The
    /// defaults have ids from the start; they are not "in use" for it.)
    pub fn agent_types(&self) -> Vec<AgentType> {
        let types = self.shared.types.read();
        let mut names = types.agents.allowed.listed();
        for name in types.agents.names() {
            if name.default_index().is_none() && !names.contains(name) {
                names.push(name.clone());
            }
        }
        names
    }

    /// The artifact types to show, as `agent_types`.
    pub fn artifact_types(&self) -> Vec<ArtifactType> {
        let types = self.shared.types.read();
        let mut names = types.artifacts.allowed.listed();
        for name in types.artifacts.names() {
            if name.default_index().is_none() && !names.contains(name) {
                names.push(name.clone());
            }
        }
        names
    }

    /// An agent type's state (idle for a name never used).
    pub fn agent(&self, agent_type: &AgentType) -> Result<Agent, StoreError> {
        let Some(id) = self.shared.types.read().agent(agent_type) else {
            return Ok(Agent::idle(agent_type.clone()));
        };
        let txn = self.txn("agents")?;
        let table = txn.open_table(tables::AGENTS)?;
        match table.get(id)? {
            Some(bytes) => decode(bytes.value()),
            None => Ok(Agent::idle(agent_type.clone())),
        }
    }

    /// An agent's status changes, newest first. The cursor is the seq of the last entry returned.
    pub fn agent_history(
        &self,
        agent_type: &AgentType,
        before_seq: Option<u64>,
        limit: usize,
    ) -> Result<(Vec<AgentHistoryEntry>, Option<u64>), StoreError> {
        let Some(id) = self.shared.types.read().agent(agent_type) else {
            return Ok((Vec::new(), None));
        };
        let txn = self.txn("agents")?;
        let table = txn.open_table(tables::AGENT_HISTORY)?;
        let lo = tables::agent_history_key(id, 0);
        let hi = tables::agent_history_key(id, before_seq.unwrap_or(u64::MAX));
        let range = if before_seq.is_some() {
            table.range::<&[u8; 10]>((Bound::Included(&lo), Bound::Excluded(&hi)))?
        } else {
            table.range::<&[u8; 10]>(&lo..=&hi)?
        };
        let mut items: Vec<AgentHistoryEntry> = Vec::new();
        for entry in range.rev() {
            let (_, value) = entry?;
            items.push(decode(value.value())?);
            if items.len() > limit {
                break;
            }
        }
        let more = items.len() > limit;
        items.truncate(limit);
        let next = if more {
            items.last().map(|e| e.seq)
        } else {
            None
        };
        Ok((items, next))
    }

    /// The seq of the newest status change of `agent_type` beyond the `keep` newest ones: what
    /// retention trims through. `None` when there are at most `keep`.
    pub fn agent_history_cutoff(
        &self,
        agent_type: &AgentType,
        keep: u64,
    ) -> Result<Option<u64>, StoreError> {
        let Some(id) = self.shared.types.read().agent(agent_type) else {
            return Ok(None);
        };
        let txn = self.txn("agents")?;
        let table = txn.open_table(tables::AGENT_HISTORY)?;
        let lo = tables::agent_history_key(id, 0);
        let hi = tables::agent_history_key(id, u64::MAX);
        let Some(entry) = table
            .range::<&[u8; 10]>(&lo..=&hi)?
            .rev()
            .nth(keep as usize)
        else {
            return Ok(None);
        };
        let (key, _) = entry?;
        let mut seq = [0u8; 8];
        seq.copy_from_slice(&key.value()[2..]);
        Ok(Some(u64::from_be_bytes(seq)))
    }

    /// A webhook's stored cursor: the seq of the last event it handled.
    pub fn webhook_cursor(&self, name: &str) -> Result<Option<u64>, StoreError> {
        let txn = self.txn("webhook_cursors")?;
        let cursors = txn.open_table(tables::WEBHOOK_CURSORS)?;
        Ok(cursors.get(name)?.map(|v| v.value()))
    }

    /// The API key whose claim the task last went to (`Claim::claimer`).
    pub fn task_claimer(&self, task: &Id) -> Result<Option<String>, StoreError> {
        let txn = self.txn("get")?;
        let claimers = txn.open_table(tables::TASK_CLAIMERS)?;
        Ok(claimers
            .get(task.as_bytes())?
            .map(|v| v.value().to_string()))
    }

    /// A webhook's dead letters, oldest first.
    pub fn dead_letters(
        &self,
        name: &str,
    ) -> Result<Vec<(u64, crate::domain::records::DeadLetter)>, StoreError> {
        let txn = self.txn("webhook_dead_letters")?;
        let letters = txn.open_table(tables::WEBHOOK_DEAD_LETTERS)?;
        let mut out = Vec::new();
        for entry in letters.range((name, 0)..=(name, u64::MAX))? {
            let (key, value) = entry?;
            out.push((key.value().1, decode(value.value())?));
        }
        Ok(out)
    }

    /// One of a webhook's dead letters.
    pub fn dead_letter(
        &self,
        name: &str,
        seq: u64,
    ) -> Result<Option<crate::domain::records::DeadLetter>, StoreError> {
        let txn = self.txn("webhook_dead_letters")?;
        let letters = txn.open_table(tables::WEBHOOK_DEAD_LETTERS)?;
        match letters.get((name, seq))? {
            Some(value) => Ok(Some(decode(value.value())?)),
            None => Ok(None),
        }
    }

    /// Dead letters of every webhook together (the `WebhookDeadLetters` alert's signal).
    pub fn dead_letter_count(&self) -> Result<u64, StoreError> {
        use redb::ReadableTableMetadata;
        let txn = self.txn("webhook_dead_letters")?;
        Ok(txn.open_table(tables::WEBHOOK_DEAD_LETTERS)?.len()?)
    }

    /// Events with seq > `since`, oldest first, all of them or one project's. Returns the frames'
    /// JSON text and whether more remain.
    pub fn events(
        &self,
        project: Option<&Id>,
        since: u64,
        limit: usize,
    ) -> Result<(Vec<(u64, String)>, bool), StoreError> {
        let txn = self.txn("events")?;
        let events = txn.open_table(tables::EVENTS)?;
        // Not before the oldest event kept: the project index may still name trimmed ones.
        let start = since.saturating_add(1).max(oldest_kept(&events)?);
        let mut out: Vec<(u64, String)> = Vec::new();
        // A page stops at `limit` events or at the page's bytes, whichever comes first.
        let (budget, mut held, mut cut) = (self.shared.page_bytes, 0usize, false);
        let mut full = |out: &Vec<(u64, String)>, json: &str| {
            if !out.is_empty() && out.len() < limit && held.saturating_add(json.len()) > budget {
                cut = true;
                return true;
            }
            held = held.saturating_add(json.len());
            false
        };
        match project {
            None => {
                for entry in events.range(start..)? {
                    let (seq, value) = entry?;
                    let record: EventRecord = decode(value.value())?;
                    if full(&out, &record.json) {
                        break;
                    }
                    out.push((seq.value(), record.json));
                    if out.len() > limit {
                        break;
                    }
                }
            }
            Some(project) => {
                let index = txn.open_table(tables::EVENTS_BY_PROJECT)?;
                let lo = tables::event_project_key(project, start);
                let hi = tables::event_project_key(project, u64::MAX);
                for entry in index.range::<&[u8; 24]>(&lo..=&hi)? {
                    let (key, _) = entry?;
                    let mut seq_bytes = [0u8; 8];
                    seq_bytes.copy_from_slice(&key.value()[16..]);
                    let seq = u64::from_be_bytes(seq_bytes);
                    let value = events.get(seq)?.ok_or_else(|| {
                        StoreError::Corrupt(format!("index names event {seq}, which is missing"))
                    })?;
                    let record: EventRecord = decode(value.value())?;
                    if full(&out, &record.json) {
                        break;
                    }
                    out.push((seq, record.json));
                    if out.len() > limit {
                        break;
                    }
                }
            }
        }
        let more = out.len() > limit || cut;
        out.truncate(limit);
        Ok((out, more))
    }

    /// What a subscription missed: events with seq > `since`, oldest first — every event, or one
    /// project's together with the events that have no project. Returns whether more remain.
    pub fn replay(
        &self,
        project: Option<&Id>,
        since: u64,
        limit: usize,
    ) -> Result<(Vec<LoggedEvent>, bool), StoreError> {
        let txn = self.txn("replay")?;
        let events = txn.open_table(tables::EVENTS)?;
        // Not before the oldest event kept: the project index may still name trimmed ones.
        let start = since.saturating_add(1).max(oldest_kept(&events)?);
        let mut out = Vec::new();
        // A page also stops at the page's bytes (one event at least): what a replay holds at once.
        let (budget, mut held, mut cut) = (self.shared.page_bytes, 0usize, false);
        let mut push = |seq: u64, value: &[u8]| -> Result<bool, StoreError> {
            let record: EventRecord = decode(value)?;
            if !out.is_empty()
                && out.len() < limit
                && held.saturating_add(record.json.len()) > budget
            {
                cut = true;
                return Ok(true);
            }
            held = held.saturating_add(record.json.len());
            out.push(LoggedEvent {
                seq,
                project_id: record.project_id,
                json: record.json,
            });
            Ok(out.len() > limit)
        };
        match project {
            None => {
                for entry in events.range(start..)? {
                    let (seq, value) = entry?;
                    if push(seq.value(), value.value())? {
                        break;
                    }
                }
            }
            Some(project) => {
                let index = txn.open_table(tables::EVENTS_BY_PROJECT)?;
                let stream = |p: &Id| -> Result<_, StoreError> {
                    let lo = tables::event_project_key(p, start);
                    let hi = tables::event_project_key(p, u64::MAX);
                    Ok(index.range::<&[u8; 24]>(&lo..=&hi)?.map(|entry| {
                        entry.map(|(key, _)| {
                            let mut seq = [0u8; 8];
                            seq.copy_from_slice(&key.value()[16..]);
                            u64::from_be_bytes(seq)
                        })
                    }))
                };
                let mut mine = stream(project)?.peekable();
                let mut global = stream(&tables::GLOBAL_STREAM)?.peekable();
                loop {
                    // Merge the two seq-ordered streams.
                    let next = match (mine.peek(), global.peek()) {
                        (Some(Ok(a)), Some(Ok(b))) if b < a => global.next(),
                        (Some(_), _) => mine.next(),
                        (None, Some(_)) => global.next(),
                        (None, None) => None,
                    };
                    let Some(seq) = next else { break };
                    let seq = seq?;
                    let value = events.get(seq)?.ok_or_else(|| {
                        StoreError::Corrupt(format!("index names event {seq}, which is missing"))
                    })?;
                    if push(seq, value.value())? {
                        break;
                    }
                }
            }
        }
        let more = out.len() > limit || cut;
        out.truncate(limit);
        Ok((out, more))
    }

    /// The oldest retained event seq (0 when the log is empty).
    pub fn oldest_seq(&self) -> Result<u64, StoreError> {
        let txn = self.txn("events")?;
        oldest_kept(&txn.open_table(tables::EVENTS)?)
    }

    /// The streams of the project index: every project's, and the one of events without a
    /// project (`TrimEventIndex`).
    pub fn event_streams(&self) -> Vec<Id> {
        let mut streams: Vec<Id> = self.shared.summaries.read().keys().copied().collect();
        streams.sort_unstable();
        streams.push(tables::GLOBAL_STREAM);
        streams
    }

    /// Whether the project index still names events trimmed from any of `streams`: what
    /// `TrimEventIndex` would remove.
    pub fn event_index_has_trimmed(&self, streams: &[Id]) -> Result<bool, StoreError> {
        let txn = self.txn("events")?;
        let kept = oldest_kept(&txn.open_table(tables::EVENTS)?)?;
        if kept == 0 {
            return Ok(false);
        }
        let index = txn.open_table(tables::EVENTS_BY_PROJECT)?;
        for stream in streams {
            let lo = tables::event_project_key(stream, 0);
            let hi = tables::event_project_key(stream, kept);
            if index.range::<&[u8; 24]>(&lo..&hi)?.next().is_some() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Records per table, for monitoring.
    pub fn table_sizes(&self) -> Result<Vec<(&'static str, u64)>, StoreError> {
        let txn = self.txn("list")?;
        Ok(vec![
            ("projects", txn.open_table(tables::PROJECTS)?.len()?),
            ("tasks", txn.open_table(tables::TASKS)?.len()?),
            ("artifacts", txn.open_table(tables::ARTIFACTS)?.len()?),
            ("hitl_requests", txn.open_table(tables::HITL)?.len()?),
            ("events", txn.open_table(tables::EVENTS)?.len()?),
        ])
    }
}

pub(super) fn get<T: DeserializeOwned>(
    txn: &ReadTransaction,
    def: RecordDef,
    id: &Id,
) -> Result<Option<T>, StoreError> {
    let table = txn.open_table(def)?;
    match table.get(id.as_bytes())? {
        Some(bytes) => Ok(Some(decode(bytes.value())?)),
        None => Ok(None),
    }
}

/// `prefix` followed by `fill` up to N bytes.
fn bound<const N: usize>(prefix: &[u8], tail: &[u8; 16]) -> [u8; N] {
    let mut k = [0u8; N];
    k[..prefix.len()].copy_from_slice(prefix);
    k[prefix.len()..].copy_from_slice(tail);
    k
}

/// What a scan found: the records, and whether it stopped at its byte bound with more to read.
pub(super) type Scanned<T> = (Vec<T>, bool);

/// Scans the index entries under `prefix` after the cursor id, in key order (oldest first),
/// fetching each record and keeping those `keep` accepts, until `limit + 1` are found (the extra
/// one says there is more) or the records kept hold `max_bytes` (stored bytes; at least one is
/// kept).
#[allow(clippy::too_many_arguments)]
pub(super) fn scan<T: DeserializeOwned + serde::Serialize, const N: usize>(
    txn: &ReadTransaction,
    index: TableDefinition<'static, &'static [u8; N], ()>,
    prefix: &[u8],
    after: Option<Id>,
    limit: usize,
    max_bytes: usize,
    records: RecordDef,
    keep: impl Fn(&mut T) -> bool,
) -> Result<Scanned<T>, StoreError> {
    scan_in(
        txn,
        index,
        prefix,
        Walk::Forward { after },
        limit,
        max_bytes,
        records,
        keep,
    )
}

/// `scan`, newest first: the cursor id bounds the range from above.
#[allow(clippy::too_many_arguments)]
fn scan_newest<T: DeserializeOwned + serde::Serialize, const N: usize>(
    txn: &ReadTransaction,
    index: TableDefinition<'static, &'static [u8; N], ()>,
    prefix: &[u8],
    before: Option<Id>,
    limit: usize,
    max_bytes: usize,
    records: RecordDef,
    keep: impl Fn(&mut T) -> bool,
) -> Result<Scanned<T>, StoreError> {
    scan_in(
        txn,
        index,
        prefix,
        Walk::Backward { before },
        limit,
        max_bytes,
        records,
        keep,
    )
}

/// Which way a scan walks an index, from its cursor (none: from the end it starts at).
#[derive(Copy, Clone)]
enum Walk {
    /// Oldest first, after the cursor.
    Forward { after: Option<Id> },
    /// Newest first, before the cursor.
    Backward { before: Option<Id> },
}

#[allow(clippy::too_many_arguments)]
fn scan_in<T: DeserializeOwned + serde::Serialize, const N: usize>(
    txn: &ReadTransaction,
    index: TableDefinition<'static, &'static [u8; N], ()>,
    prefix: &[u8],
    walk: Walk,
    limit: usize,
    max_bytes: usize,
    records: RecordDef,
    keep: impl Fn(&mut T) -> bool,
) -> Result<Scanned<T>, StoreError> {
    let (cursor, newest_first) = match walk {
        Walk::Forward { after } => (after, false),
        Walk::Backward { before } => (before, true),
    };
    debug_assert_eq!(prefix.len() + 16, N);
    let index = txn.open_table(index)?;
    let records = txn.open_table(records)?;
    let lo: [u8; N] = bound(prefix, &[0; 16]);
    let hi: [u8; N] = bound(prefix, &[0xff; 16]);
    let at: Option<[u8; N]> = cursor.map(|id| bound(prefix, &id.0));
    let range = match (&at, newest_first) {
        (None, _) => index.range::<&[u8; N]>(&lo..=&hi)?,
        (Some(at), false) => {
            index.range::<&[u8; N]>((Bound::Excluded(at), Bound::Included(&hi)))?
        }
        (Some(at), true) => index.range::<&[u8; N]>((Bound::Included(&lo), Bound::Excluded(at)))?,
    };
    let entries: Box<dyn Iterator<Item = _>> = if newest_first {
        Box::new(range.rev())
    } else {
        Box::new(range)
    };
    let mut items = Vec::new();
    let mut held = 0usize;
    for entry in entries {
        let (key, _) = entry?;
        let id = trailing_id(key.value());
        let bytes = records.get(id.as_bytes())?.ok_or_else(|| {
            StoreError::Corrupt(format!("index entry names {id}, which is missing"))
        })?;
        let mut record: T = decode(bytes.value())?;
        if keep(&mut record) {
            // What the kept record holds (`keep` may have trimmed it: an artifact's summary).
            let size = if max_bytes == usize::MAX {
                0
            } else {
                super::codec::encode(&record).len()
            };
            if !items.is_empty() && items.len() < limit && held.saturating_add(size) > max_bytes {
                return Ok((items, true));
            }
            held = held.saturating_add(size);
            items.push(record);
            if items.len() > limit {
                break;
            }
        }
    }
    Ok((items, false))
}

/// The page of a scan: at most `limit` items, and the cursor after the last when there is more
/// (an extra item was found, or the scan stopped at its byte bound).
fn paginate<T>((mut items, cut): Scanned<T>, limit: usize, id: impl Fn(&T) -> Id) -> Page<T> {
    let more = items.len() > limit || cut;
    items.truncate(limit);
    let next_cursor = if more {
        items.last().map(|t| encode_cursor(&id(t)))
    } else {
        None
    };
    Page { items, next_cursor }
}

/// Pending tasks per agent type (by id, `slots` of them), counted in the claim queue.
pub(crate) fn pending_by_agent(
    db: &redb::Database,
    slots: usize,
) -> Result<Vec<AtomicU64>, StoreError> {
    let txn = db.begin_read()?;
    let queue = txn.open_table(tables::TASKS_CLAIM)?;
    let pending = TaskStatus::Pending.code();
    let (lo, hi) = (Id([0; 16]), Id([0xff; 16]));
    let mut counts = Vec::with_capacity(slots);
    for agent in 0..slots {
        let agent = u16::try_from(agent).unwrap_or(u16::MAX);
        let from = tables::claim_key(agent, pending, 0, &lo, &lo);
        let to = tables::claim_key(agent, pending, u8::MAX, &hi, &hi);
        let n = queue.range::<&[u8; 36]>(&from..=&to)?.count();
        counts.push(AtomicU64::new(n as u64));
    }
    Ok(counts)
}

/// The agent and artifact types in use, as the database records them, with what the store
/// takes.
/// A definition stored through the API (`tables::WORKFLOW_DEFS`), parsed; None once deleted.
pub(crate) fn stored_definition(
    name: &str,
    bytes: &[u8],
) -> Result<Option<crate::domain::workflow::Definition>, StoreError> {
    definition_of(name, &decode(bytes)?)
}

/// The definition a stored record holds, parsed; None once deleted.
pub(crate) fn definition_of(
    name: &str,
    record: &crate::domain::records::StoredWorkflow,
) -> Result<Option<crate::domain::workflow::Definition>, StoreError> {
    let Some(json) = &record.json else {
        return Ok(None);
    };
    let body: crate::domain::workflow::DefinitionBody = serde_json::from_str(json)
        .map_err(|e| StoreError::Corrupt(format!("workflow definition `{name}`: {e}")))?;
    let workflow = body
        .parse(name, record.version)
        .map_err(|e| StoreError::Corrupt(format!("workflow definition `{name}`: {e}")))?;
    Ok(Some(crate::domain::workflow::Definition {
        workflow,
        created_at: record.created_at,
        updated_at: record.updated_at,
    }))
}

/// The workflow a definition stored through the API describes, if it was not deleted.
pub(crate) fn stored_workflow(
    name: &str,
    bytes: &[u8],
) -> Result<Option<crate::domain::workflow::Workflow>, StoreError> {
    Ok(stored_definition(name, bytes)?.map(|d| d.workflow))
}

pub(crate) fn registry(
    db: &redb::Database,
    config: &super::StoreConfig,
) -> Result<super::types::Registry, StoreError> {
    let txn = db.begin_read()?;
    let table = txn.open_table(tables::TYPE_NAMES)?;
    super::types::Registry::load(
        &table,
        config.agent_types.clone(),
        config.artifact_types.clone(),
    )
}

/// Rebuilds every project's summary from the indexes, and finds the newest event seq.
pub(crate) fn rebuild_summaries(
    db: &redb::Database,
) -> Result<(HashMap<Id, ProjectSummary>, u64), StoreError> {
    let txn = db.begin_read()?;
    let mut projects = Vec::new();
    for entry in txn.open_table(tables::PROJECTS)?.iter()? {
        let (key, _) = entry?;
        projects.push(Id(*key.value()));
    }
    let summaries = summarize(&txn, projects)?;
    let newest_logged = txn
        .open_table(tables::EVENTS)?
        .last()?
        .map(|(k, _)| k.value())
        .unwrap_or(0);
    let recorded = txn
        .open_table(tables::META)?
        .get(tables::META_LAST_SEQ)?
        .map(|v| v.value())
        .unwrap_or(0);
    let latest_seq = newest_logged.max(recorded);
    Ok((summaries, latest_seq))
}

/// The summaries of `projects` (those that exist), from the indexes.
pub(crate) fn summarize(
    txn: &ReadTransaction,
    projects: impl IntoIterator<Item = Id>,
) -> Result<HashMap<Id, ProjectSummary>, StoreError> {
    let known = txn.open_table(tables::PROJECTS)?;
    let task_index = txn.open_table(tables::TASK_INDEX)?;
    let artifact_index = txn.open_table(tables::ARTIFACT_INDEX)?;
    let hitl_index = txn.open_table(tables::HITL_INDEX)?;
    let events_by_project = txn.open_table(tables::EVENTS_BY_PROJECT)?;
    let pending = HitlStatus::Pending.code();
    let mut summaries = HashMap::new();
    for project in projects {
        if known.get(&project.0)?.is_none() {
            continue;
        }
        let mut summary = ProjectSummary::default();
        for (code, slot) in (0u16..).zip(summary.task_counts.iter_mut()) {
            let prefix = tables::project_prefix(&project, tables::TASK_BY_STATUS, code);
            *slot = count_under(&task_index, &prefix)?;
        }
        let prefix = tables::project_prefix(&project, tables::ARTIFACT_ALL, 0);
        summary.artifacts = count_under(&artifact_index, &prefix)?;
        let prefix =
            tables::project_prefix(&project, tables::HITL_BY_STATUS_IN_PROJECT, pending.into());
        summary.hitl_pending = count_under(&hitl_index, &prefix)?;
        let lo = tables::event_project_key(&project, 0);
        let hi = tables::event_project_key(&project, u64::MAX);
        if let Some(last) = events_by_project.range::<&[u8; 24]>(&lo..=&hi)?.next_back() {
            let (key, _) = last?;
            let mut seq = [0u8; 8];
            seq.copy_from_slice(&key.value()[16..]);
            summary.latest_seq = u64::from_be_bytes(seq);
        }
        summaries.insert(project, summary);
    }
    Ok(summaries)
}

/// How many entries of a project-prefixed index lie under `prefix`.
fn count_under(
    index: &redb::ReadOnlyTable<&'static [u8; 35], ()>,
    prefix: &[u8; 19],
) -> Result<u64, StoreError> {
    let lo: [u8; 35] = bound(prefix, &[0; 16]);
    let hi: [u8; 35] = bound(prefix, &[0xff; 16]);
    Ok(index.range::<&[u8; 35]>(&lo..=&hi)?.count() as u64)
}

/// The seq of the oldest event kept (0 for none): where reads of the project index start, as it
/// may still name events trimmed before it (`TrimEventIndex` removes those later).
fn oldest_kept(events: &redb::ReadOnlyTable<u64, &[u8]>) -> Result<u64, StoreError> {
    Ok(events.first()?.map(|(k, _)| k.value()).unwrap_or(0))
}
