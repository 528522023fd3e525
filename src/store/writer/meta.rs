//! Commands about the store itself: the readiness probe, the file's usage, alerts in the log.

use super::{Batch, Checked, Write, Written};
use crate::domain::EventType;
use crate::domain::records::DeadLetter;
use crate::events::EventDraft;
use crate::store::codec::encode;
use crate::store::tables;
use redb::ReadableTable;

/// A write round trip for readiness: records the time in the meta table. No event.
#[derive(Clone, Debug)]
pub struct Probe;

impl Write for Probe {
    type Plan = ();
    type Output = ();

    fn check(self, _: &Batch<'_>) -> Checked<()> {
        Ok(())
    }

    fn apply((): (), batch: &mut Batch<'_>) -> Written<()> {
        batch
            .meta
            .open_mut()?
            .insert(tables::META_PROBE, batch.now.max(0) as u64)?;
        Ok(())
    }
}

/// A webhook's progress through the event log (`webhooks`): the seq of the last event it has
/// handled. No event (a webhook of every event would otherwise see its own progress).
#[derive(Clone, Debug)]
pub struct SetWebhookCursor {
    pub name: String,
    pub seq: u64,
}

impl Write for SetWebhookCursor {
    type Plan = SetWebhookCursor;
    type Output = ();

    fn check(self, _: &Batch<'_>) -> Checked<SetWebhookCursor> {
        Ok(self)
    }

    fn apply(c: SetWebhookCursor, batch: &mut Batch<'_>) -> Written<()> {
        let mut cursors = batch.txn.open_table(tables::WEBHOOK_CURSORS)?;
        cursors.insert(c.name.as_str(), c.seq)?;
        Ok(())
    }
}

/// A webhook gives up on an event (`webhooks`): the event is kept as a dead letter and, in the same
/// commit, the webhook's cursor moves past it, so a restart neither posts it again nor loses it.
/// Beyond `DEAD_LETTERS_KEPT` for the webhook, its oldest are dropped; the output counts them.
/// A retry that failed again writes the letter anew with `cursor: None`. No event.
#[derive(Clone, Debug)]
pub struct AddDeadLetter {
    pub name: String,
    pub seq: u64,
    pub letter: DeadLetter,
    /// The webhook's cursor after it, if it moves.
    pub cursor: Option<u64>,
}

impl Write for AddDeadLetter {
    type Plan = AddDeadLetter;
    /// Dead letters dropped to stay within the bound.
    type Output = usize;

    fn check(self, _: &Batch<'_>) -> Checked<AddDeadLetter> {
        Ok(self)
    }

    fn apply(c: AddDeadLetter, batch: &mut Batch<'_>) -> Written<usize> {
        let mut letters = batch.txn.open_table(tables::WEBHOOK_DEAD_LETTERS)?;
        letters.insert((c.name.as_str(), c.seq), encode(&c.letter).as_slice())?;
        let range = (c.name.as_str(), 0)..=(c.name.as_str(), u64::MAX);
        let held = letters.range(range.clone())?.count();
        let mut dropped = 0;
        if held > tables::DEAD_LETTERS_KEPT {
            let oldest: Vec<u64> = letters
                .range(range)?
                .take(held - tables::DEAD_LETTERS_KEPT)
                .map(|e| e.map(|(k, _)| k.value().1))
                .collect::<Result<_, _>>()?;
            for seq in oldest {
                letters.remove((c.name.as_str(), seq))?;
                dropped += 1;
            }
        }
        drop(letters);
        if let Some(seq) = c.cursor {
            let mut cursors = batch.txn.open_table(tables::WEBHOOK_CURSORS)?;
            cursors.insert(c.name.as_str(), seq)?;
        }
        Ok(dropped)
    }
}

/// Dead letters delivered by a retry, or discarded: removed, in one commit. The output counts those
/// that were there. No event.
#[derive(Clone, Debug)]
pub struct DeleteDeadLetters {
    pub name: String,
    pub seqs: Vec<u64>,
}

impl Write for DeleteDeadLetters {
    type Plan = DeleteDeadLetters;
    type Output = u64;

    fn check(self, _: &Batch<'_>) -> Checked<DeleteDeadLetters> {
        Ok(self)
    }

    fn apply(c: DeleteDeadLetters, batch: &mut Batch<'_>) -> Written<u64> {
        let mut letters = batch.txn.open_table(tables::WEBHOOK_DEAD_LETTERS)?;
        let mut removed = 0;
        for seq in c.seqs {
            if letters.remove((c.name.as_str(), seq))?.is_some() {
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// An alert changed state: only its event (`alert_firing` or `alert_resolved`), no record.
#[derive(Clone, Debug)]
pub struct RecordAlert {
    pub firing: bool,
    /// The event's data, a JSON object's text.
    pub data: String,
}

impl Write for RecordAlert {
    type Plan = RecordAlert;
    type Output = ();

    fn check(self, _: &Batch<'_>) -> Checked<RecordAlert> {
        Ok(self)
    }

    fn apply(c: RecordAlert, batch: &mut Batch<'_>) -> Written<()> {
        let kind = if c.firing {
            EventType::AlertFiring
        } else {
            EventType::AlertResolved
        };
        batch.emit(EventDraft {
            event_type: kind,
            project_id: None,
            task_id: None,
            agent_type: None,
            data: c.data,
        })?;
        Ok(())
    }
}

/// A test's injected fault: applying it panics.
#[cfg(test)]
pub struct InjectPanic;

#[cfg(test)]
impl Write for InjectPanic {
    type Plan = ();
    type Output = ();

    fn check(self, _: &Batch<'_>) -> Checked<()> {
        Ok(())
    }

    fn apply((): (), _: &mut Batch<'_>) -> Written<()> {
        panic!("injected fault")
    }
}
