//! Claims handed a task inside the commit that made it claimable.
//!
//! A long-polling claim that found nothing leaves a waiter here, first come first served per agent
//! type. When a batch makes a task of that type claimable (a create, a retry, a lease that ran out,
//! a resumed queue), the writer claims it for the first waiter in that same transaction, before the
//! commit, and hands the claimed task over once the commit is durable: the worker holds its task
//! one commit after the create instead of two (the create's, then its own claim's).
//!
//! A waiter whose client goes away leaves the queue with its ticket. If it goes away between the
//! writer taking it and the commit, the hand-off fails to deliver and the writer releases the claim
//! in its next batch (`ReleaseClaim`: the task returns to pending, as when a lease runs out), so no
//! task stays held by a worker that never saw it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use tokio::sync::oneshot;

use crate::domain::Micros;
use crate::domain::records::Task;

/// A claim waiting to be handed a task.
pub(crate) struct Waiter {
    id: u64,
    pub(crate) worker_id: String,
    /// Microseconds.
    pub(crate) lease: Micros,
    /// The API key that claims, if keys are on.
    pub(crate) claimer: Option<String>,
    pub(crate) reply: oneshot::Sender<Task>,
}

/// The waiters, by agent type id, each queue oldest first.
pub(crate) struct Handoffs {
    queues: Vec<Mutex<VecDeque<Waiter>>>,
    next_id: AtomicU64,
}

impl Handoffs {
    /// Queues for agent type ids below `slots`.
    pub(crate) fn new(slots: usize) -> Handoffs {
        Handoffs {
            queues: (0..slots).map(|_| Mutex::new(VecDeque::new())).collect(),
            next_id: AtomicU64::new(0),
        }
    }

    fn queue(&self, agent: u16) -> &Mutex<VecDeque<Waiter>> {
        &self.queues[usize::from(agent)]
    }

    /// Joins the end of `agent`'s queue; the ticket leaves it when dropped.
    pub(crate) fn wait(
        &self,
        agent: u16,
        worker_id: String,
        lease: Micros,
        claimer: Option<String>,
    ) -> Ticket<'_> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (reply, task) = oneshot::channel();
        self.queue(agent).lock().push_back(Waiter {
            id,
            worker_id,
            lease,
            claimer,
            reply,
        });
        Ticket {
            handoffs: self,
            agent,
            id,
            task,
        }
    }

    /// The oldest waiter of `agent` (for the writer). A waiter leaves the queue when its ticket is
    /// dropped, so one taken here has a client, unless the client goes away in the meantime.
    pub(crate) fn take(&self, agent: u16) -> Option<Waiter> {
        self.queue(agent).lock().pop_front()
    }

    /// Puts a waiter the writer took but could not serve back at the front.
    pub(crate) fn put_back(&self, agent: u16, waiter: Waiter) {
        self.queue(agent).lock().push_front(waiter);
    }

    /// Whether any claim of `agent` waits here.
    pub(crate) fn any(&self, agent: u16) -> bool {
        !self.queue(agent).lock().is_empty()
    }

    #[cfg(test)]
    fn len(&self, agent: u16) -> usize {
        self.queue(agent).lock().len()
    }
}

/// A claim's place in its queue. The task arrives on `task` once the commit that claimed it for
/// this waiter is durable; a closed channel means the writer's batch failed (try again).
pub struct Ticket<'h> {
    handoffs: &'h Handoffs,
    agent: u16,
    id: u64,
    pub task: oneshot::Receiver<Task>,
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        // Still queued (the writer did not take it): leave. Taken: the receiver drops with this
        // ticket, so a hand-off in flight fails to deliver and the writer releases its claim.
        self.handoffs
            .queue(self.agent)
            .lock()
            .retain(|w| w.id != self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiters_are_served_in_arrival_order_and_leave_when_dropped() {
        let handoffs = Handoffs::new(8);
        let a = handoffs.wait(3, "a".into(), 1, None);
        let b = handoffs.wait(3, "b".into(), 1, None);
        let c = handoffs.wait(3, "c".into(), 1, None);
        assert_eq!(handoffs.len(3), 3);
        assert!(!handoffs.any(4));
        drop(b);
        assert_eq!(handoffs.len(3), 2);
        let first = handoffs.take(3).unwrap();
        assert_eq!(first.worker_id, "a");
        // Not served: back at the front, ahead of c.
        handoffs.put_back(3, first);
        assert_eq!(handoffs.take(3).unwrap().worker_id, "a");
        // a's ticket is dropped after the writer took it: nothing left to remove.
        drop(a);
        assert_eq!(handoffs.len(3), 1);
        assert_eq!(handoffs.take(3).unwrap().worker_id, "c");
        assert!(handoffs.take(3).is_none());
        drop(c);
        assert!(!handoffs.any(3));
    }
}
