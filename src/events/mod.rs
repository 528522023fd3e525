//! Events: the wire format of the event log (one JSON object per event, identical in the log, in
//! `GET /api/v1/events` and in WebSocket frames) and the hand-off of committed events to whoever
//! publishes them.

pub mod frame;
pub mod hub;
pub mod peek;

use std::sync::Arc;

use bytes::Bytes;

use crate::domain::{AgentType, EventType, Id, Micros, Vocabulary};
use crate::json::ObjectWriter;

/// An event as the writer committed it. `json` is the exact frame text.
#[derive(Clone, Debug)]
pub struct CommittedEvent {
    pub seq: u64,
    pub project_id: Option<Id>,
    /// The commit time, as in the frame's `timestamp`.
    pub committed_at: Micros,
    pub json: Bytes,
}

/// Receives every committed batch of events, in seq order, right after the commit. It must not
/// block: the writer thread calls it.
pub type Publisher = Arc<dyn Fn(&[CommittedEvent]) + Send + Sync>;

/// A publisher that drops everything, for stores nobody subscribes to.
pub fn no_publisher() -> Publisher {
    Arc::new(|_| {})
}

/// What an event says, before it has a seq and a timestamp.
pub struct EventDraft {
    pub event_type: EventType,
    pub project_id: Option<Id>,
    pub task_id: Option<Id>,
    pub agent_type: Option<AgentType>,
    /// A JSON object.
    pub data: String,
}

/// Encodes an event as its frame:
/// `{"seq":…,"event_type":…,"project_id":…,"task_id":…,"agent_type":…,"data":{…},"timestamp":…}`.
pub fn encode(seq: u64, timestamp: Micros, draft: &EventDraft) -> String {
    let mut out = Vec::with_capacity(160 + draft.data.len());
    let mut o = ObjectWriter::new(&mut out);
    o.u64("seq", seq)
        .str("event_type", draft.event_type.as_str())
        .opt_id("project_id", draft.project_id)
        .opt_id("task_id", draft.task_id)
        .opt_str("agent_type", draft.agent_type.as_ref().map(|a| a.as_str()))
        .raw("data", &draft.data)
        .timestamp("timestamp", timestamp);
    o.finish();
    String::from_utf8(out).expect("the object writer writes only UTF-8")
}
