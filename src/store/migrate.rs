//! Migrations of databases written by older versions. They run at open, inside the write
//! transaction that records the new schema version, so a database is either migrated whole or not
//! touched (a crash mid-way leaves the old version, migrated again at the next open).
//!
//! - 1 → 2: an `agent_status_change` caused by a task moves from the global stream to that task's
//!   project stream — record, frame JSON and index entry — as version 2 writes it. Agent resets
//!   (no task) stay global.

use redb::{ReadableTable, WriteTransaction};

use super::StoreError;
use super::codec::{decode, encode};
use super::tables;
use crate::domain::Id;
use crate::domain::records::{EventRecord, Task};

/// What a migration changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Migrated {
    pub events_moved: u64,
}

/// Brings a database of schema version `from` to [`tables::SCHEMA_VERSION`].
pub(super) fn migrate(txn: &WriteTransaction, from: u64) -> Result<Migrated, StoreError> {
    let mut done = Migrated::default();
    if from < 2 {
        done.events_moved += agent_events_to_projects(txn)?;
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
            .map_err(|e| StoreError::Storage(format!("event {seq} is not JSON: {e}")))?;
        if frame["event_type"] != "agent_status_change" {
            continue;
        }
        let Some(task_id) = frame["task_id"].as_str().and_then(Id::parse) else {
            continue;
        };
        let Some(task) = tasks.get(&task_id.0)? else {
            continue;
        };
        let project = decode::<Task>(task.value())?.project_id;
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
