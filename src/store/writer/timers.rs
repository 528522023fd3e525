//! The timers: lease expiries, work timeouts, retries, HITL expiries and the ends of budget
//! windows, fired when due.

use super::batch::read;
use super::{Batch, Checked, Write, Written};
use crate::domain::records::{HitlRequest, Task};
use crate::domain::tasks::TaskChange;
use crate::domain::tasks::TaskEdits;
use crate::domain::{Id, Micros, TaskTransition};
use crate::store::tables;
use redb::ReadableTable;

/// Fires the timers due by `now`, at most `max` of them; answers how many acted.
#[derive(Clone, Debug)]
pub struct FireTimers {
    pub now: Micros,
    pub max: usize,
}

/// What one due timer does.
pub enum Due {
    /// The task as read, its change, and the kind of the timer that called for it.
    Task(Task, TaskChange, Option<tables::TimerKind>),
    Hitl(HitlRequest),
    /// A budget whose window ended, by its scope's key.
    Budget(String),
    /// A timer no record calls for (it cannot be, but it must not fire forever): removed.
    Stale([u8; 25]),
}

impl Write for FireTimers {
    type Plan = (Micros, Vec<Due>);
    type Output = u64;

    /// A timer whose record no longer calls for it is simply gone: timers are an index derived
    /// from the records. Each record acts at most once per round (its first due timer); what its
    /// change leaves due fires in the next round.
    fn check(self, batch: &Batch<'_>) -> Checked<Self::Plan> {
        let now = self.now;
        // Every timer of every kind due by `now`.
        let mut hi = tables::timer_key(now, tables::TimerKind::LeaseExpiry, &Id([0xff; 16]));
        hi[8] = 0xff;
        let mut due = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for entry in batch
            .timers
            .open()?
            .range::<&[u8; 25]>(..=&hi)?
            .take(self.max)
        {
            let key = *entry?.0.value();
            let id = tables::trailing_id(&key);
            let kind = tables::TimerKind::from_code(key[8]);
            if !seen.insert(id) {
                continue;
            }
            let action = match kind {
                Some(tables::TimerKind::HitlExpiry) => {
                    read::<HitlRequest>(batch.hitl.open()?, &id)?
                        .filter(|h| crate::domain::tasks::hitl_expired(h, now))
                        .map(Due::Hitl)
                }
                Some(tables::TimerKind::BudgetWindow) => batch
                    .budget_of_timer(&key)?
                    .map(|b| Due::Budget(b.scope.key())),
                Some(_) => read::<Task>(batch.tasks.open()?, &id)?.and_then(|task| {
                    crate::domain::tasks::due_change(&task, now)
                        .filter(|change| timer_calls_for(kind, change))
                        .map(|change| Due::Task(task, change, kind))
                }),
                None => None,
            };
            due.push(action.unwrap_or(Due::Stale(key)));
        }
        Ok((now, due))
    }

    /// An earlier action of the round may have changed a record a later one read (a task that
    /// failed for good fails its workflow run, which cancels the run's other tasks): each acts
    /// on the record as it is now, if it still calls for its timer.
    fn apply((now, due): Self::Plan, batch: &mut Batch<'_>) -> Written<u64> {
        let mut fired = 0;
        for action in due {
            match action {
                Due::Task(read_then, change, kind) => {
                    let Some(old) = read::<Task>(batch.tasks.open()?, &read_then.id)? else {
                        continue;
                    };
                    let change = if old == read_then {
                        change
                    } else {
                        match crate::domain::tasks::due_change(&old, now)
                            .filter(|change| timer_calls_for(kind, change))
                        {
                            Some(change) => change,
                            None => continue,
                        }
                    };
                    let message = matches!(change, TaskChange::To(TaskTransition::Fail))
                        .then(|| batch.settings.timeout_message());
                    batch.change_task(
                        old,
                        change,
                        TaskEdits {
                            error_message: message,
                            ..TaskEdits::default()
                        },
                    )?;
                    fired += 1;
                }
                Due::Hitl(read_then) => {
                    let Some(old) = read::<HitlRequest>(batch.hitl.open()?, &read_then.id)?
                        .filter(|h| crate::domain::tasks::hitl_expired(h, now))
                    else {
                        continue;
                    };
                    batch.time_out(old)?;
                    fired += 1;
                }
                Due::Budget(scope) => {
                    if batch.new_budget_window(&scope)? {
                        fired += 1;
                    }
                }
                Due::Stale(key) => {
                    tracing::warn!(
                        kind = key[8],
                        id = %tables::trailing_id(&key),
                        "removing a timer that no record calls for"
                    );
                    batch.timers.open_mut()?.remove(&key)?;
                }
            }
        }
        Ok(fired)
    }
}

/// Whether a task's due change is the one this kind of timer stands for.
fn timer_calls_for(kind: Option<tables::TimerKind>, change: &TaskChange) -> bool {
    use tables::TimerKind::{LeaseExpiry, Retry, WorkTimeout};
    matches!(
        (kind, change),
        (Some(LeaseExpiry | WorkTimeout), TaskChange::LeaseExpired)
            | (
                Some(LeaseExpiry | WorkTimeout),
                TaskChange::To(TaskTransition::Fail)
            )
            | (Some(Retry), TaskChange::To(TaskTransition::Retry))
    )
}
