//! Queues an operator steers: an agent type's queue paused or resumed, its concurrency limit, a
//! project's tasks paused or resumed. Claims read these (`tasks::Claim`).

use super::{Batch, Checked, Write, Written};
use crate::domain::records::QueueSettings;
use crate::domain::{AgentType, EventType, Id};
use crate::events::EventDraft;
use crate::json::object_string;
use crate::store::codec::{decode, encode};
use redb::ReadableTable;

/// A change to one agent type's queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueChange {
    Pause,
    Resume,
    /// At most this many working tasks of the type (None: no limit).
    Limit(Option<u32>),
}

/// Changes an agent type's queue; answers its settings.
#[derive(Clone, Debug)]
pub struct SetQueue {
    pub agent_type: AgentType,
    pub change: QueueChange,
}

impl Write for SetQueue {
    type Plan = (SetQueue, QueueSettings);
    type Output = QueueSettings;

    fn check(self, batch: &Batch<'_>) -> Checked<(SetQueue, QueueSettings)> {
        batch.check_agent_type("agent_type", &self.agent_type)?;
        let settings = batch.queue_settings(&self.agent_type)?;
        Ok((self, settings))
    }

    fn apply((c, old): (SetQueue, QueueSettings), batch: &mut Batch<'_>) -> Written<QueueSettings> {
        let mut new = old.clone();
        let kind = match c.change {
            QueueChange::Pause => {
                new.paused = true;
                EventType::QueuePaused
            }
            QueueChange::Resume => {
                new.paused = false;
                EventType::QueueResumed
            }
            QueueChange::Limit(limit) => {
                new.max_working = limit;
                EventType::QueueLimitChanged
            }
        };
        let id = batch.intern_agent(&c.agent_type)?;
        batch
            .queues
            .open_mut()?
            .insert(id, encode(&new).as_slice())?;
        let data = object_string(|o| {
            o.str("agent_type", c.agent_type.as_str())
                .bool("paused", new.paused);
            match new.max_working {
                Some(n) => o.u64("max_working", u64::from(n)),
                None => o.null("max_working"),
            };
        });
        batch.emit(EventDraft {
            event_type: kind,
            project_id: None,
            task_id: None,
            agent_type: Some(c.agent_type.clone()),
            data,
        })?;
        // Claims waiting on this queue try again: it may hand out work now.
        batch.wake_all.push(id);
        Ok(new)
    }
}

/// Pauses or resumes one project's tasks (none is handed out while paused); answers whether it
/// is paused now.
#[derive(Clone, Debug)]
pub struct SetProjectPaused {
    pub project_id: Id,
    pub paused: bool,
}

impl Write for SetProjectPaused {
    type Plan = SetProjectPaused;
    type Output = bool;

    fn check(self, batch: &Batch<'_>) -> Checked<SetProjectPaused> {
        batch.require_project(&self.project_id)?;
        Ok(self)
    }

    fn apply(c: SetProjectPaused, batch: &mut Batch<'_>) -> Written<bool> {
        let key = c.project_id.as_bytes();
        let kind = if c.paused {
            batch.paused_projects.open_mut()?.insert(key, ())?;
            EventType::ProjectPaused
        } else {
            batch.paused_projects.open_mut()?.remove(key)?;
            let slots = batch.claimable.len() as u16;
            batch.wake_all.extend(0..slots);
            EventType::ProjectResumed
        };
        let data = object_string(|o| {
            o.id("project_id", c.project_id).bool("paused", c.paused);
        });
        batch.emit(EventDraft {
            event_type: kind,
            project_id: Some(c.project_id),
            task_id: None,
            agent_type: None,
            data,
        })?;
        Ok(c.paused)
    }
}

impl<'t> Batch<'t> {
    pub(super) fn queue_settings(&self, agent_type: &AgentType) -> Written<QueueSettings> {
        let Some(id) = self.agent_id(agent_type) else {
            return Ok(QueueSettings::default());
        };
        match self.queues.open()?.get(id)? {
            Some(bytes) => decode(bytes.value()),
            None => Ok(QueueSettings::default()),
        }
    }

    pub(super) fn project_paused(&self, project: &Id) -> Written<bool> {
        Ok(self
            .paused_projects
            .open()?
            .get(project.as_bytes())?
            .is_some())
    }
}
