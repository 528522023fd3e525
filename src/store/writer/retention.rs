//! Trimming the event log and the agent history to their retention.

use super::*;

impl<'t> Batch<'t> {
    pub(super) fn trim_events(&mut self, through: u64, max: usize) -> ApplyResult<Reply> {
        let mut doomed = Vec::new();
        for entry in self.events.range(..=through)?.take(max) {
            let (seq, value) = entry?;
            let record: EventRecord = decode(value.value())?;
            doomed.push((
                seq.value(),
                record.project_id.unwrap_or(tables::GLOBAL_STREAM),
            ));
        }
        for (seq, stream) in &doomed {
            self.events.remove(*seq)?;
            self.events_by_project
                .remove(&tables::event_project_key(stream, *seq))?;
        }
        Ok(Reply::Trimmed(doomed.len() as u64))
    }

    pub(super) fn trim_agent_history(
        &mut self,
        agent_type: AgentType,
        through: u64,
        max: usize,
    ) -> ApplyResult<Reply> {
        let lo = tables::agent_history_key(agent_type.code(), 0);
        let hi = tables::agent_history_key(agent_type.code(), through);
        let mut doomed = Vec::new();
        for entry in self.agent_history.range::<&[u8; 9]>(&lo..=&hi)?.take(max) {
            let (key, _) = entry?;
            doomed.push(*key.value());
        }
        for key in &doomed {
            self.agent_history.remove(key)?;
        }
        Ok(Reply::Trimmed(doomed.len() as u64))
    }
}
