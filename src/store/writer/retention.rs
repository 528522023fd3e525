//! Trimming the event log and the agent history to their retention.

use super::{Batch, Checked, Write, Written};
use crate::domain::records::EventRecord;
use crate::domain::{AgentType, Id};
use crate::store::codec::decode;
use crate::store::tables;
use redb::ReadableTable;

/// Deletes the oldest events, those with seq <= `through`, at most `max` of them; answers how many.
/// No event.
#[derive(Clone, Debug)]
pub struct TrimEvents {
    pub through: u64,
    pub max: usize,
}

impl Write for TrimEvents {
    type Plan = Vec<(u64, Id)>;
    type Output = u64;

    fn check(self, batch: &Batch<'_>) -> Checked<Vec<(u64, Id)>> {
        let mut doomed = Vec::new();
        for entry in batch.events.open()?.range(..=self.through)?.take(self.max) {
            let (seq, value) = entry?;
            let record: EventRecord = decode(value.value())?;
            doomed.push((
                seq.value(),
                record.project_id.unwrap_or(tables::GLOBAL_STREAM),
            ));
        }
        Ok(doomed)
    }

    fn apply(doomed: Vec<(u64, Id)>, batch: &mut Batch<'_>) -> Written<u64> {
        for (seq, stream) in &doomed {
            batch.events.open_mut()?.remove(*seq)?;
            batch
                .events_by_project
                .open_mut()?
                .remove(&tables::event_project_key(stream, *seq))?;
        }
        Ok(doomed.len() as u64)
    }
}

/// Deletes an agent type's oldest status changes, those with seq <= `through`, at most `max` of
/// them; answers how many. No event.
#[derive(Clone, Debug)]
pub struct TrimAgentHistory {
    pub agent_type: AgentType,
    pub through: u64,
    pub max: usize,
}

impl Write for TrimAgentHistory {
    type Plan = Vec<[u8; 10]>;
    type Output = u64;

    fn check(self, batch: &Batch<'_>) -> Checked<Vec<[u8; 10]>> {
        // A type never interned has no history.
        let Some(id) = batch.agent_id(&self.agent_type) else {
            return Ok(Vec::new());
        };
        let lo = tables::agent_history_key(id, 0);
        let hi = tables::agent_history_key(id, self.through);
        let mut doomed = Vec::new();
        for entry in batch
            .agent_history
            .open()?
            .range::<&[u8; 10]>(&lo..=&hi)?
            .take(self.max)
        {
            doomed.push(*entry?.0.value());
        }
        Ok(doomed)
    }

    fn apply(doomed: Vec<[u8; 10]>, batch: &mut Batch<'_>) -> Written<u64> {
        for key in &doomed {
            batch.agent_history.open_mut()?.remove(key)?;
        }
        Ok(doomed.len() as u64)
    }
}
