//! What each agent type's queue holds right now, for operators (`GET /api/v1/queues`).

use std::collections::VecDeque;
use std::sync::atomic::Ordering;

use redb::ReadableDatabase;

use crate::domain::records::{QueueSettings, Task};
use crate::domain::{AgentType, Id, Micros, TaskStatus, Vocabulary};

use super::codec::decode;
use super::{Store, StoreError, tables};

/// One agent type's queue.
#[derive(Clone, Debug, PartialEq)]
pub struct QueueView {
    pub agent_type: AgentType,
    pub paused: bool,
    pub max_working: Option<u32>,
    /// Pending tasks (claimable unless their project is paused).
    pub pending: u64,
    /// Failed tasks waiting for their retry.
    pub scheduled: u64,
    pub working: u32,
    /// Claims waiting for a task of this type (long poll).
    pub workers_waiting: u64,
    /// How long the oldest pending task has been pending, in seconds; None when none is.
    pub oldest_pending_age_seconds: Option<f64>,
}

/// Queue waits remembered for the alert signal: the most recent, at most this many.
const WAITS_KEPT: usize = 65_536;

pub(super) fn remember_wait(waits: &mut VecDeque<(Micros, f64)>, at: Micros, seconds: f64) {
    if waits.len() == WAITS_KEPT {
        waits.pop_front();
    }
    waits.push_back((at, seconds));
}

/// How many claims waited, and their p99 wait in seconds (nearest rank), over the last `window`
/// seconds before `now`.
pub(super) fn wait_p99(waits: &VecDeque<(Micros, f64)>, window: u64, now: Micros) -> (u64, f64) {
    let since = now.saturating_sub(
        i64::try_from(window)
            .unwrap_or(i64::MAX)
            .saturating_mul(1_000_000),
    );
    let mut recent: Vec<f64> = waits
        .iter()
        .rev()
        .take_while(|(at, _)| *at >= since)
        .map(|(_, s)| *s)
        .collect();
    if recent.is_empty() {
        return (0, 0.0);
    }
    recent.sort_by(f64::total_cmp);
    let rank = ((recent.len() as f64) * 0.99).ceil() as usize;
    (recent.len() as u64, recent[rank.clamp(1, recent.len()) - 1])
}

impl Store {
    /// Claims that waited over the last `window` seconds, and their p99 queue wait in seconds.
    pub fn queue_wait_p99(&self, window: u64) -> (u64, f64) {
        wait_p99(
            &self.shared.queue_waits.lock(),
            window,
            self.shared.clock.now(),
        )
    }

    /// Every agent type's queue, as of one snapshot (`now` for the ages).
    pub fn queues(&self, now: Micros) -> Result<Vec<QueueView>, StoreError> {
        let txn = self.shared.database()?.begin_read()?;
        let settings = txn.open_table(tables::QUEUES)?;
        let since = txn.open_table(tables::TASKS_PENDING_SINCE)?;
        let claim = txn.open_table(tables::TASKS_CLAIM)?;
        let tasks = txn.open_table(tables::TASKS)?;
        let agents = self.agents()?;
        let failed = TaskStatus::Failed.code();
        let (lo, hi) = (Id([0; 16]), Id([0xff; 16]));
        let names = self.agent_types();
        let mut out = Vec::with_capacity(names.len());
        for agent in names {
            let Some(code) = self.agent_id(&agent) else {
                // Listed, never used: an empty queue.
                out.push(QueueView {
                    agent_type: agent,
                    paused: false,
                    max_working: None,
                    pending: 0,
                    scheduled: 0,
                    working: 0,
                    workers_waiting: 0,
                    oldest_pending_age_seconds: None,
                });
                continue;
            };
            let i = usize::from(code);
            let s: QueueSettings = match settings.get(code)? {
                Some(v) => decode(v.value())?,
                None => QueueSettings::default(),
            };
            let mut from = [0u8; 26];
            from[..2].copy_from_slice(&code.to_be_bytes());
            let mut to = [0xffu8; 26];
            to[..2].copy_from_slice(&code.to_be_bytes());
            let oldest = match since.range::<&[u8; 26]>(&from..=&to)?.next() {
                Some(entry) => {
                    let key = *entry?.0.value();
                    let mut at = [0u8; 8];
                    at.copy_from_slice(&key[2..10]);
                    let at = u64::from_be_bytes(at) as Micros;
                    Some(now.saturating_sub(at).max(0) as f64 / 1e6)
                }
                None => None,
            };
            // Failed tasks of the type, those with a retry due.
            let mut scheduled = 0;
            let first = tables::claim_key(code, failed, 0, &lo, &lo);
            let last = tables::claim_key(code, failed, u8::MAX, &hi, &hi);
            for entry in claim.range::<&[u8; 36]>(&first..=&last)? {
                let id = tables::trailing_id(entry?.0.value());
                if let Some(v) = tasks.get(id.as_bytes())?
                    && decode::<Task>(v.value())?.retry_at.is_some()
                {
                    scheduled += 1;
                }
            }
            let working = agents
                .iter()
                .find(|a| a.agent_type == agent)
                .map_or(0, |a| a.working_tasks);
            out.push(QueueView {
                agent_type: agent,
                paused: s.paused,
                max_working: s.max_working,
                pending: self.shared.pending[i].load(Ordering::Relaxed),
                scheduled,
                working,
                workers_waiting: self.shared.waiting[i].load(Ordering::Relaxed) as u64,
                oldest_pending_age_seconds: oldest,
            });
        }
        Ok(out)
    }

    /// The count of claims waiting for a task of the agent type of id `agent` (kept by the
    /// API's waiting claims).
    pub fn waiting_claims(&self, agent: u16) -> &std::sync::atomic::AtomicUsize {
        &self.shared.waiting[usize::from(agent)]
    }

    /// Whether the project's tasks are paused.
    pub fn project_paused(&self, project: &Id) -> Result<bool, StoreError> {
        let txn = self.shared.database()?.begin_read()?;
        let paused = txn.open_table(tables::PAUSED_PROJECTS)?;
        Ok(paused.get(project.as_bytes())?.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_p99_covers_the_window_and_memory_is_bounded() {
        let mut waits = VecDeque::new();
        let s = 1_000_000;
        // 200 waits of 1 s long ago, then 100 recent ones of 1..=100 ms.
        for i in 0..200 {
            remember_wait(&mut waits, i, 1.0);
        }
        for i in 1..=100 {
            remember_wait(&mut waits, 1_000 * s + i, i as f64 / 1000.0);
        }
        let (n, p99) = wait_p99(&waits, 60, 1_000 * s + 100);
        assert_eq!(n, 100);
        assert_eq!(p99, 0.099);
        assert_eq!(wait_p99(&waits, 60, 5_000 * s), (0, 0.0));
        for i in 0..(WAITS_KEPT as i64 + 10) {
            remember_wait(&mut waits, i, 0.0);
        }
        assert_eq!(waits.len(), WAITS_KEPT);
    }
}
