//! The batch: each table opened once per transaction, at its first use, and the records' writes
//! with their index entries, summaries, cache changes and events.

use super::{Batch, BatchOutput, Checked, Lazy, RecordTable, Written};
use crate::domain::names::{AgentKind, ArtifactKind};
use crate::domain::records::{
    Agent, AgentHistoryEntry, Artifact, EventRecord, HitlRequest, Project, Task,
};
use crate::domain::{
    AgentType, ArtifactType, DomainError, EventType, HitlStatus, Id, Micros, TaskStatus, Vocabulary,
};
use crate::events;
use crate::events::{CommittedEvent, EventDraft};
use crate::json::object_string;
use crate::store::cache::Change as CacheChange;
use crate::store::codec::{decode, encode};
use crate::store::tables::{ArtifactIndexes, HitlIndexes, TaskIndexes, Versions};
use crate::store::types::Kind;
use crate::store::wal::LoggedTxn;
use crate::store::{CacheKey, ProjectSummary, Shared, StoreError, tables};
use bytes::Bytes;
use redb::ReadableTable;
use serde::de::DeserializeOwned;
use std::collections::HashMap;

impl<'t> Batch<'t> {
    pub(super) fn open(
        txn: &'t LoggedTxn,
        shared: &'t Shared,
        now: Micros,
        next_seq: u64,
    ) -> Result<Batch<'t>, StoreError> {
        Ok(Batch {
            txn,
            shared,
            now,
            next_seq,
            meta: Lazy::new(txn, |t| t.open_table(tables::META)),
            first_seq: next_seq,
            projects: Lazy::new(txn, |t| t.open_table(tables::PROJECTS)),
            tasks: Lazy::new(txn, |t| t.open_table(tables::TASKS)),
            artifacts: Lazy::new(txn, |t| t.open_table(tables::ARTIFACTS)),
            hitl: Lazy::new(txn, |t| t.open_table(tables::HITL)),
            agents: Lazy::new(txn, |t| t.open_table(tables::AGENTS)),
            agent_history: Lazy::new(txn, |t| t.open_table(tables::AGENT_HISTORY)),
            events: Lazy::new(txn, |t| t.open_table(tables::EVENTS)),
            task_ix: Lazy::new(txn, TaskIndexes::open),
            timers: Lazy::new(txn, |t| t.open_table(tables::TIMERS)),
            workflows: Lazy::new(txn, |t| t.open_table(tables::WORKFLOWS)),
            settings: &shared.settings,
            artifact_ix: Lazy::new(txn, ArtifactIndexes::open),
            hitl_ix: Lazy::new(txn, HitlIndexes::open),
            events_by_project: Lazy::new(txn, |t| t.open_table(tables::EVENTS_BY_PROJECT)),
            pending_since: Lazy::new(txn, |t| t.open_table(tables::TASKS_PENDING_SINCE)),
            queues: Lazy::new(txn, |t| t.open_table(tables::QUEUES)),
            paused_projects: Lazy::new(txn, |t| t.open_table(tables::PAUSED_PROJECTS)),
            idempotency: Lazy::new(txn, |t| t.open_table(tables::IDEMPOTENCY)),
            idempotency_by_age: Lazy::new(txn, |t| t.open_table(tables::IDEMPOTENCY_BY_AGE)),
            budgets: Lazy::new(txn, |t| t.open_table(tables::BUDGETS)),
            committed: Vec::new(),
            summaries: HashMap::new(),
            changes: Vec::new(),
            claimable: vec![0; shared.claimable.len()],
            pending_delta: vec![0; shared.claimable.len()],
            type_names: Lazy::new(txn, |t| t.open_table(tables::TYPE_NAMES)),
            new_agents: Vec::new(),
            new_artifacts: Vec::new(),
            queue: Vec::new(),
            wake_all: Vec::new(),
            claim_turns: Vec::new(),
            progress_done: Vec::new(),
            remembered: 0,
            history_len: HashMap::new(),
        })
    }

    pub(super) fn finish(mut self) -> Result<BatchOutput, StoreError> {
        if self.next_seq != self.first_seq {
            self.meta
                .open_mut()?
                .insert(tables::META_LAST_SEQ, self.next_seq - 1)?;
        }
        Ok(BatchOutput {
            next_seq: self.next_seq,
            events: self.committed,
            summaries: self.summaries,
            changes: self.changes,
            claimable: self.claimable,
            pending_delta: self.pending_delta,
            queue: self.queue,
            wake_all: self.wake_all,
            claim_turns: self.claim_turns,
            progress_done: self.progress_done,
            handed: Vec::new(),
            lsn: None,
            new_agents: self.new_agents,
            new_artifacts: self.new_artifacts,
            history_len: self.history_len,
        })
    }

    // ----- the types in use ------------------------------------------------------------------

    /// The ids of the types in use, this batch's new ones included, for index keys.
    fn ids(&self) -> BatchIds<'_> {
        BatchIds {
            registry: self.shared.types.read(),
            new_agents: &self.new_agents,
            new_artifacts: &self.new_artifacts,
        }
    }

    /// The id of an agent type in use (or interned by this batch).
    pub(super) fn agent_id(&self, name: &AgentType) -> Option<u16> {
        self.ids().agent_id(name)
    }

    /// For `check`: whether `name` is in use or one more agent type fits (`too_many_types`).
    pub(super) fn check_agent_type(
        &self,
        field: &str,
        name: &AgentType,
    ) -> Result<(), DomainError> {
        self.check_types(&[(field, name)], &[])
    }

    /// For `check`: whether every name given is in use or all the new ones among them fit, each
    /// vocabulary within its `--max-*-types` (`too_many_types` names the first that does not).
    pub(super) fn check_types(
        &self,
        agents: &[(&str, &AgentType)],
        artifacts: &[(&str, &ArtifactType)],
    ) -> Result<(), DomainError> {
        let types = self.shared.types.read();
        let mut fresh: Vec<&AgentType> = Vec::new();
        for (field, name) in agents {
            if types.agent(name).is_some() || self.new_agents.contains(name) {
                continue;
            }
            if !fresh.contains(name) {
                types
                    .agents
                    .room_for(field, name, self.new_agents.len() + fresh.len())?;
                fresh.push(name);
            }
        }
        let mut fresh: Vec<&ArtifactType> = Vec::new();
        for (field, name) in artifacts {
            if types.artifact(name).is_some() || self.new_artifacts.contains(name) {
                continue;
            }
            if !fresh.contains(name) {
                types
                    .artifacts
                    .room_for(field, name, self.new_artifacts.len() + fresh.len())?;
                fresh.push(name);
            }
        }
        Ok(())
    }

    /// The id of `name`, given to it in this transaction if it is new (its `check` made sure
    /// it fits).
    pub(super) fn intern_agent(&mut self, name: &AgentType) -> Written<u16> {
        if let Some(id) = self.agent_id(name) {
            return Ok(id);
        }
        let id = self.shared.types.read().agents.len() + self.new_agents.len();
        // `check` keeps ids below the slots the claim state has; past them is a bug, refused
        // rather than indexed out of bounds.
        let id = u16::try_from(id)
            .ok()
            .filter(|id| usize::from(*id) < self.shared.agent_slots())
            .ok_or_else(|| StoreError::Corrupt(format!("no id left for agent type {name}")))?;
        self.type_names
            .open_mut()?
            .insert((AgentKind::CODE, id), name.as_str())?;
        self.new_agents.push(name.clone());
        Ok(id)
    }

    /// As `intern_agent`, for an artifact type.
    pub(super) fn intern_artifact(&mut self, name: &ArtifactType) -> Written<u16> {
        if let Some(id) = self.ids().artifact_id(name) {
            return Ok(id);
        }
        let id = self.shared.types.read().artifacts.len() + self.new_artifacts.len();
        let id = u16::try_from(id)
            .map_err(|_| StoreError::Corrupt(format!("no id left for artifact type {name}")))?;
        self.type_names
            .open_mut()?
            .insert((ArtifactKind::CODE, id), name.as_str())?;
        self.new_artifacts.push(name.clone());
        Ok(id)
    }

    // ----- records and their indexes ---------------------------------------------------------

    /// For `check`: the project, or `not_found`.
    pub(super) fn require_project(&self, id: &Id) -> Checked<Project> {
        Ok(
            read(self.projects.open()?, id)?
                .ok_or_else(|| DomainError::not_found("project", id))?,
        )
    }

    /// For `apply`: a project a record refers to, which must exist.
    pub(super) fn project_record(&self, id: &Id) -> Written<Project> {
        read(self.projects.open()?, id)?
            .ok_or_else(|| StoreError::Corrupt(format!("project {id} is referred to but missing")))
    }

    /// A task a record or an index refers to, which must exist.
    pub(super) fn task_record(&self, id: &Id, referrer: &str) -> Result<Task, StoreError> {
        read(self.tasks.open()?, id)?.ok_or_else(|| {
            StoreError::Corrupt(format!("{referrer} names task {id}, which is missing"))
        })
    }

    pub(super) fn put_project(&mut self, project: &Project) -> Written<()> {
        self.projects
            .open_mut()?
            .insert(project.id.as_bytes(), encode(project).as_slice())?;
        self.changes
            .push(CacheChange::Invalidate(CacheKey::ProjectStatus(project.id)));
        Ok(())
    }

    /// The batch's copy of a project's summary, taken from the shared map on first touch.
    pub(super) fn summary(&mut self, project: Id) -> &mut ProjectSummary {
        let shared = self.shared;
        self.summaries.entry(project).or_insert_with(|| {
            shared
                .summaries
                .read()
                .get(&project)
                .cloned()
                .unwrap_or_default()
        })
    }

    pub(super) fn put_task(&mut self, old: Option<&Task>, new: &Task) -> Written<()> {
        let agent = usize::from(self.intern_agent(&new.agent_type)?);
        self.tasks
            .open_mut()?
            .insert(new.id.as_bytes(), encode(new).as_slice())?;
        self.changes.push(CacheChange::Task {
            project: new.project_id,
            task: new.id,
            entry: Bytes::from(crate::store::status::task_status_entry(new)),
        });
        let ids = BatchIds {
            registry: self.shared.types.read(),
            new_agents: &self.new_agents,
            new_artifacts: &self.new_artifacts,
        };
        self.task_ix.open_mut()?.reindex(
            Versions {
                old,
                new: Some(new),
            },
            &ids,
        )?;
        tables::move_key(
            self.pending_since.open_mut()?,
            Versions {
                old: old.and_then(|o| tables::pending_since_key(o, &ids)),
                new: tables::pending_since_key(new, &ids),
            },
        )?;
        drop(ids);
        let was_pending = old.is_some_and(|o| o.status == TaskStatus::Pending);
        let is_pending = new.status == TaskStatus::Pending;
        if is_pending && !was_pending {
            self.claimable[agent] += 1;
        }
        self.pending_delta[agent] += i64::from(is_pending) - i64::from(was_pending);
        let old_timers = old.map(tables::task_timers).unwrap_or_default();
        for (old_key, new_key) in old_timers.into_iter().zip(tables::task_timers(new)) {
            tables::move_key(
                self.timers.open_mut()?,
                Versions {
                    old: old_key,
                    new: new_key,
                },
            )?;
        }
        let summary = self.summary(new.project_id);
        if let Some(old) = old {
            let slot = &mut summary.task_counts[usize::from(old.status.code())];
            *slot = slot.saturating_sub(1);
        }
        summary.task_counts[usize::from(new.status.code())] += 1;
        Ok(())
    }

    /// Writes, replaces (`old` and `new`) or deletes (`new` = None) an artifact.
    pub(super) fn put_artifact(&mut self, artifact: Versions<&Artifact>) -> Written<()> {
        let Versions { old, new } = artifact;
        if let Some(a) = new {
            self.intern_artifact(&a.artifact_type)?;
            self.intern_agent(&a.source_agent)?;
        }
        match new {
            Some(a) => {
                self.artifacts
                    .open_mut()?
                    .insert(a.id.as_bytes(), encode(a).as_slice())?;
            }
            None => {
                if let Some(o) = old {
                    self.artifacts.open_mut()?.remove(o.id.as_bytes())?;
                }
            }
        }
        let ids = BatchIds {
            registry: self.shared.types.read(),
            new_agents: &self.new_agents,
            new_artifacts: &self.new_artifacts,
        };
        self.artifact_ix.open_mut()?.reindex(artifact, &ids)?;
        drop(ids);
        if let Some(o) = old {
            self.changes
                .push(CacheChange::Invalidate(CacheKey::Artifact(o.id)));
        }
        let delta: i64 = i64::from(new.is_some()) - i64::from(old.is_some());
        let project = new.or(old).map(|a| a.project_id);
        if let (Some(project), true) = (project, delta != 0) {
            let summary = self.summary(project);
            summary.artifacts = summary.artifacts.saturating_add_signed(delta);
        }
        Ok(())
    }

    pub(super) fn put_hitl(&mut self, old: Option<&HitlRequest>, new: &HitlRequest) -> Written<()> {
        self.hitl
            .open_mut()?
            .insert(new.id.as_bytes(), encode(new).as_slice())?;
        let ids = BatchIds {
            registry: self.shared.types.read(),
            new_agents: &self.new_agents,
            new_artifacts: &self.new_artifacts,
        };
        self.hitl_ix.open_mut()?.reindex(
            Versions {
                old,
                new: Some(new),
            },
            &ids,
        )?;
        drop(ids);
        tables::move_key(
            self.timers.open_mut()?,
            Versions {
                old: old.and_then(tables::hitl_timer),
                new: tables::hitl_timer(new),
            },
        )?;
        let was_pending = old.is_some_and(|o| o.status == HitlStatus::Pending);
        let is_pending = new.status == HitlStatus::Pending;
        if was_pending != is_pending {
            let summary = self.summary(new.project_id);
            summary.hitl_pending = if is_pending {
                summary.hitl_pending + 1
            } else {
                summary.hitl_pending.saturating_sub(1)
            };
        }
        Ok(())
    }

    pub(super) fn agent(&self, agent_type: &AgentType) -> Written<Agent> {
        let Some(id) = self.agent_id(agent_type) else {
            return Ok(Agent::idle(agent_type.clone()));
        };
        match self.agents.open()?.get(id)? {
            Some(bytes) => Ok(decode(bytes.value())?),
            None => Ok(Agent::idle(agent_type.clone())),
        }
    }

    /// Stores an agent's new state, its history entry and its `agent_status_change` event. A
    /// change caused by a task belongs to that task's project stream (its subscribers, not every
    /// connection, are told); a reset belongs to no project and reaches everyone.
    pub(super) fn put_agent(
        &mut self,
        before: &Agent,
        agent: &Agent,
        cause: Option<(Id, Id)>,
    ) -> Written<()> {
        let (task_id, project_id) = cause.unzip();
        let id = self.intern_agent(&agent.agent_type)?;
        self.agents
            .open_mut()?
            .insert(id, encode(agent).as_slice())?;
        let data = object_string(|o| {
            o.str("agent_type", agent.agent_type.as_str())
                .str("status", agent.status.as_str())
                .str("previous_status", before.status.as_str())
                .opt_id("current_task_id", agent.current_task_id)
                .opt_str("error_message", agent.error_message.as_deref());
        });
        let seq = self.emit(EventDraft {
            event_type: EventType::AgentStatusChange,
            project_id,
            task_id,
            agent_type: Some(agent.agent_type.clone()),
            data,
        })?;
        let entry = AgentHistoryEntry {
            seq,
            agent_type: agent.agent_type.clone(),
            status: agent.status,
            task_id,
            error_message: agent.error_message.clone(),
            at: self.now,
        };
        let key = tables::agent_history_key(id, seq);
        let len = super::retention::history_len(self, id)? + 1;
        self.agent_history
            .open_mut()?
            .insert(&key, encode(&entry).as_slice())?;
        super::retention::trim_history(self, id, len)
    }

    /// Appends an event to the log with the next seq, indexed by its project.
    pub(super) fn emit(&mut self, draft: EventDraft) -> Written<u64> {
        let seq = self.next_seq;
        let EventDraft { project_id, .. } = draft;
        let json = events::encode(seq, self.now, &draft);
        let record = EventRecord { project_id, json };
        self.events
            .open_mut()?
            .insert(seq, encode(&record).as_slice())?;
        let stream = project_id.unwrap_or(tables::GLOBAL_STREAM);
        self.events_by_project
            .open_mut()?
            .insert(&tables::event_project_key(&stream, seq), ())?;
        if let Some(project) = project_id {
            self.summary(project).latest_seq = seq;
        }
        self.next_seq += 1;
        self.committed.push(CommittedEvent {
            seq,
            project_id,
            committed_at: self.now,
            json: Bytes::from(record.json),
        });
        Ok(seq)
    }
}

/// The ids of the types in use as a batch sees them: the registry's, then the batch's new ones.
pub(super) struct BatchIds<'b> {
    registry: parking_lot::RwLockReadGuard<'b, crate::store::types::Registry>,
    new_agents: &'b [AgentType],
    new_artifacts: &'b [ArtifactType],
}

impl BatchIds<'_> {
    fn agent_id(&self, name: &AgentType) -> Option<u16> {
        self.registry.agent(name).or_else(|| {
            let at = self.new_agents.iter().position(|n| n == name)?;
            u16::try_from(self.registry.agents.len() + at).ok()
        })
    }

    fn artifact_id(&self, name: &ArtifactType) -> Option<u16> {
        self.registry.artifact(name).or_else(|| {
            let at = self.new_artifacts.iter().position(|n| n == name)?;
            u16::try_from(self.registry.artifacts.len() + at).ok()
        })
    }
}

impl tables::TypeIds for BatchIds<'_> {
    fn agent(&self, name: &AgentType) -> u16 {
        self.agent_id(name).unwrap_or(tables::UNKNOWN_TYPE)
    }
    fn artifact(&self, name: &ArtifactType) -> u16 {
        self.artifact_id(name).unwrap_or(tables::UNKNOWN_TYPE)
    }
}

pub(super) fn read<T: DeserializeOwned>(
    table: &RecordTable<'_>,
    id: &Id,
) -> Result<Option<T>, StoreError> {
    match table.get(id.as_bytes())? {
        Some(bytes) => Ok(Some(decode(bytes.value())?)),
        None => Ok(None),
    }
}
