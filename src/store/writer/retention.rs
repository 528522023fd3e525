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
        Ok(oldest_events(batch, self.through, self.max)?)
    }

    fn apply(doomed: Vec<(u64, Id)>, batch: &mut Batch<'_>) -> Written<u64> {
        remove_events(batch, &doomed)
    }
}

/// Events beyond the retention that one batch removes besides as many as it appends, so that a
/// log left longer (a lowered `--event-retention`) shrinks back while writes go on.
const CATCH_UP: usize = 64;

/// Keeps the log at its newest `--event-retention` events as the batch appends: removes as many
/// of the oldest as go beyond it, at most as many as the batch appended plus `CATCH_UP`. A few
/// microseconds on each write instead of a bulk delete that would hold every write up; the
/// removals are part of the batch's record, so a replay trims alike.
pub(super) fn trim_to_retention(batch: &mut Batch<'_>) -> Written<()> {
    let appended = batch.next_seq - batch.first_seq;
    if appended == 0 {
        return Ok(());
    }
    let Some(through) = (batch.next_seq - 1).checked_sub(batch.shared.event_retention) else {
        return Ok(());
    };
    let doomed = oldest_events(batch, through, appended as usize + CATCH_UP)?;
    remove_events(batch, &doomed)?;
    Ok(())
}

/// The oldest events with seq <= `through`, at most `max`, each with the stream it is indexed in.
fn oldest_events(batch: &Batch<'_>, through: u64, max: usize) -> Written<Vec<(u64, Id)>> {
    let mut doomed = Vec::new();
    for entry in batch.events.open()?.range(..=through)?.take(max) {
        let (seq, value) = entry?;
        let record: EventRecord = decode(value.value())?;
        doomed.push((
            seq.value(),
            record.project_id.unwrap_or(tables::GLOBAL_STREAM),
        ));
    }
    Ok(doomed)
}

/// Removes events and their index entries; answers how many.
fn remove_events(batch: &mut Batch<'_>, doomed: &[(u64, Id)]) -> Written<u64> {
    for (seq, stream) in doomed {
        batch.events.open_mut()?.remove(*seq)?;
        batch
            .events_by_project
            .open_mut()?
            .remove(&tables::event_project_key(stream, *seq))?;
    }
    Ok(doomed.len() as u64)
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
            // Its count is taken again at its next change.
            batch
                .history_len
                .insert(u16::from_be_bytes([key[0], key[1]]), None);
        }
        Ok(doomed.len() as u64)
    }
}

/// How many status changes agent type `id`'s history holds in this batch: the batch's count,
/// else the one kept since it was last counted, else counted now (once per type after the store
/// opened, or after a bulk trim).
pub(super) fn history_len(batch: &Batch<'_>, id: u16) -> Written<u64> {
    let known = match batch.history_len.get(&id) {
        Some(known) => *known,
        None => batch.shared.history_len.lock().get(&id).copied(),
    };
    if let Some(n) = known {
        return Ok(n);
    }
    let lo = tables::agent_history_key(id, 0);
    let hi = tables::agent_history_key(id, u64::MAX);
    let mut n = 0;
    for entry in batch.agent_history.open()?.range::<&[u8; 10]>(&lo..=&hi)? {
        entry?;
        n += 1;
    }
    Ok(n)
}

/// After a status change made agent type `id`'s history `len` long: removes its oldest beyond
/// `--agent-history-retention`, at most `1 + CATCH_UP` of them, and keeps the count.
pub(super) fn trim_history(batch: &mut Batch<'_>, id: u16, len: u64) -> Written<()> {
    let beyond = len.saturating_sub(batch.shared.agent_history_retention);
    let mut left = len;
    if beyond > 0 {
        let lo = tables::agent_history_key(id, 0);
        let hi = tables::agent_history_key(id, u64::MAX);
        let mut doomed = Vec::new();
        for entry in batch
            .agent_history
            .open()?
            .range::<&[u8; 10]>(&lo..=&hi)?
            .take((beyond as usize).min(1 + CATCH_UP))
        {
            doomed.push(*entry?.0.value());
        }
        for key in &doomed {
            batch.agent_history.open_mut()?.remove(key)?;
        }
        left -= doomed.len() as u64;
    }
    batch.history_len.insert(id, Some(left));
    Ok(())
}
