//! Commands about the store itself: the readiness probe, the file's usage, alerts in the log.

use super::{Batch, Checked, Write, Written};
use crate::domain::EventType;
use crate::events::EventDraft;
use crate::store::tables;
use std::sync::atomic::Ordering;

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
            .insert(tables::META_PROBE, batch.now.max(0) as u64)?;
        Ok(())
    }
}

/// Measures the bytes of the file in use. It walks every B-tree (redb's `stats`), holding the
/// writer meanwhile — 0.3 s at 200,000 artifacts — so the monitor runs it only when the writer has
/// been idle, and less often the longer it takes. No event.
#[derive(Clone, Debug)]
pub struct MeasureUsage;

impl Write for MeasureUsage {
    type Plan = ();
    type Output = u64;

    fn check(self, _: &Batch<'_>) -> Checked<()> {
        Ok(())
    }

    fn apply((): (), batch: &mut Batch<'_>) -> Written<u64> {
        let stats = batch.txn.stats()?;
        let used = stats.allocated_pages() * stats.page_size() as u64;
        batch.shared.used_bytes.store(used, Ordering::Relaxed);
        Ok(used)
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
