//! Trimming the event log and the agent history to their retention.

use super::{Batch, Checked, Write, Written};
use crate::domain::{AgentType, Id};
use crate::store::tables;
use redb::ReadableTable;

/// Deletes the oldest events, those with seq <= `through`, at most `max` of them; answers how many.
/// No event. Their entries in the project index stay until `TrimEventIndex` removes them
/// (readers start at the oldest event kept, so they never meet one).
#[derive(Clone, Debug)]
pub struct TrimEvents {
    pub through: u64,
    pub max: usize,
}

impl Write for TrimEvents {
    type Plan = Vec<u64>;
    type Output = u64;

    fn check(self, batch: &Batch<'_>) -> Checked<Vec<u64>> {
        Ok(oldest_events(batch, self.through, self.max)?)
    }

    fn apply(doomed: Vec<u64>, batch: &mut Batch<'_>) -> Written<u64> {
        remove_events(batch, &doomed)
    }
}

/// Removes the project-index entries of trimmed events (seq below the oldest event kept) in the
/// given streams (projects, or `tables::GLOBAL_STREAM`), at most `max` of them; answers how
/// many. No event. Each stream's such entries sit together at the start of its range, so a
/// stream cleaned every few seconds costs a page or two, where removing each entry with its
/// event would rewrite that page at every checkpoint.
#[derive(Clone, Debug)]
pub struct TrimEventIndex {
    pub streams: Vec<Id>,
    pub max: usize,
}

impl Write for TrimEventIndex {
    type Plan = Vec<[u8; 24]>;
    type Output = u64;

    fn check(self, batch: &Batch<'_>) -> Checked<Vec<[u8; 24]>> {
        let kept = match batch.events.open()?.first()? {
            Some((seq, _)) => seq.value(),
            // No event kept: none was ever written (the retention keeps one at least).
            None => return Ok(Vec::new()),
        };
        let mut doomed = Vec::new();
        for stream in &self.streams {
            let lo = tables::event_project_key(stream, 0);
            let hi = tables::event_project_key(stream, kept);
            for entry in batch
                .events_by_project
                .open()?
                .range::<&[u8; 24]>(&lo..&hi)?
                .take(self.max - doomed.len())
            {
                doomed.push(*entry?.0.value());
            }
            if doomed.len() == self.max {
                break;
            }
        }
        Ok(doomed)
    }

    fn apply(doomed: Vec<[u8; 24]>, batch: &mut Batch<'_>) -> Written<u64> {
        for key in &doomed {
            batch.events_by_project.open_mut()?.remove(key)?;
        }
        Ok(doomed.len() as u64)
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

/// The seqs of the oldest events with seq <= `through`, at most `max`.
fn oldest_events(batch: &Batch<'_>, through: u64, max: usize) -> Written<Vec<u64>> {
    let mut doomed = Vec::new();
    for entry in batch.events.open()?.range(..=through)?.take(max) {
        doomed.push(entry?.0.value());
    }
    Ok(doomed)
}

/// Removes events (not their index entries: `TrimEventIndex`); answers how many.
fn remove_events(batch: &mut Batch<'_>, doomed: &[u64]) -> Written<u64> {
    for seq in doomed {
        batch.events.open_mut()?.remove(*seq)?;
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
