//! The hub: who is subscribed to what, and the fan-out of committed events. Each event's frame is
//! encoded once (header included) and the same bytes are queued to every subscriber. Publishing
//! never waits: a subscriber whose queue is over its byte bound is marked lagged and its queue is
//! dropped; its connection then closes with the seq to resume from. Every queue also counts
//! against one global budget: over it, the subscribers holding the most unsent bytes are marked
//! lagged, largest first, until the rest fits.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use tokio::sync::Notify;

use super::CommittedEvent;
use crate::domain::{Id, Micros};

/// A frame waiting in a subscriber's queue.
#[derive(Clone, Debug)]
pub struct Queued {
    /// The event's seq; 0 for an ephemeral frame (task progress: not logged, not replayed, not
    /// subject to the exactly-once gate).
    pub seq: u64,
    pub project: Option<Id>,
    pub committed_at: Micros,
    pub frame: Bytes,
}

/// What a queued frame costs its subscriber beyond the frame's bytes: its queue slot and the
/// writer's handle to it. Counted with the frame, so a queue of many small frames is bounded by
/// the memory it really holds, not only by its payload.
pub const ITEM_OVERHEAD: usize = std::mem::size_of::<Queued>() + std::mem::size_of::<Bytes>();

/// The cost of one queued frame against the bounds.
fn cost(item: &Queued) -> usize {
    item.frame.len() + ITEM_OVERHEAD
}

/// The bytes not yet written to any WebSocket, summed over every connection, against the global
/// budget (`--ws-total-queue-mib`).
#[derive(Debug)]
pub struct Budget {
    used: AtomicUsize,
    /// The part of `used` that lagged connections' writers still hold in blocked writes: it is
    /// freed when those writes end (at the latest at the write timeout), and closing other
    /// connections would not free it sooner, so it does not count towards the budget.
    doomed: AtomicUsize,
    limit: usize,
}

impl Budget {
    pub fn new(limit: usize) -> Arc<Budget> {
        Arc::new(Budget {
            used: AtomicUsize::new(0),
            doomed: AtomicUsize::new(0),
            limit,
        })
    }

    /// Unsent bytes of every connection together: queued frames and those being written.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// What counts against the limit: `used` less what lagged connections hold in writes that
    /// are already doomed to end.
    fn counted(&self) -> usize {
        self.used()
            .saturating_sub(self.doomed.load(Ordering::Relaxed))
    }

    fn add(&self, bytes: usize) {
        self.used.fetch_add(bytes, Ordering::Relaxed);
    }

    fn sub(&self, bytes: usize) {
        if bytes > 0 {
            self.used.fetch_sub(bytes, Ordering::Relaxed);
        }
    }

    fn doom(&self, bytes: usize) {
        self.doomed.fetch_add(bytes, Ordering::Relaxed);
    }

    fn undoom(&self, bytes: usize) {
        if bytes > 0 {
            self.doomed.fetch_sub(bytes, Ordering::Relaxed);
        }
    }
}

/// One subscriber's bounded queue. Its bound (and the global budget) counts what it holds until
/// the bytes are written: frames queued, and the batch the writer took and is writing.
pub struct Outbox {
    inner: Mutex<OutboxInner>,
    notify: Notify,
    limit_bytes: usize,
    budget: Arc<Budget>,
}

#[derive(Default)]
struct OutboxInner {
    queue: VecDeque<Queued>,
    /// Cost of the frames in `queue`.
    queued: usize,
    /// Cost of the frames the writer took and has not finished writing.
    in_flight: usize,
    lagged: bool,
}

impl OutboxInner {
    /// Drops the queue (it will not be sent; the connection resumes after what it wrote); the
    /// batch being written is doomed (nothing is taken after a lag, so it is all of it).
    fn lag(&mut self, budget: &Budget) {
        if !self.lagged {
            budget.doom(self.in_flight);
        }
        self.lagged = true;
        self.queue = VecDeque::new();
        budget.sub(std::mem::take(&mut self.queued));
    }

    /// The batch being written is done with.
    fn written(&mut self, budget: &Budget) {
        let bytes = std::mem::take(&mut self.in_flight);
        budget.sub(bytes);
        if self.lagged {
            budget.undoom(bytes);
        }
    }
}

impl Outbox {
    pub fn new(limit_bytes: usize, budget: Arc<Budget>) -> Arc<Outbox> {
        Arc::new(Outbox {
            inner: Mutex::default(),
            notify: Notify::new(),
            limit_bytes,
            budget,
        })
    }

    fn push(&self, item: Queued) {
        {
            let mut inner = self.inner.lock();
            if inner.lagged {
                return;
            }
            let cost = cost(&item);
            if inner.queued + inner.in_flight + cost > self.limit_bytes {
                inner.lag(&self.budget);
            } else {
                inner.queued += cost;
                self.budget.add(cost);
                inner.queue.push_back(item);
            }
        }
        self.notify.notify_one();
    }

    /// The next frames to write, about `max_bytes` of them (at least one), and whether the
    /// subscriber has lagged. They stay counted until [`Outbox::written`]; what is left is
    /// signalled again, so the writer comes back for it.
    pub fn take(&self, max_bytes: usize) -> (Vec<Queued>, bool) {
        let mut inner = self.inner.lock();
        let mut taken = Vec::new();
        let mut bytes = 0;
        while bytes < max_bytes {
            let Some(item) = inner.queue.pop_front() else {
                break;
            };
            bytes += cost(&item);
            taken.push(item);
        }
        inner.queued -= bytes;
        inner.in_flight += bytes;
        if !inner.queue.is_empty() {
            self.notify.notify_one();
        }
        (taken, inner.lagged)
    }

    /// The frames last taken are written (or will never be): they no longer count.
    pub fn written(&self) {
        self.inner.lock().written(&self.budget);
    }

    /// Whether the subscriber has lagged (its queue was dropped).
    pub fn lagged(&self) -> bool {
        self.inner.lock().lagged
    }

    /// Bytes not yet written: queued and being written.
    pub fn unsent(&self) -> usize {
        let inner = self.inner.lock();
        inner.queued + inner.in_flight
    }

    /// Marks the subscriber lagged and drops its queue (the global budget is exceeded); false if
    /// it already was.
    fn lag(&self) -> bool {
        let lagged = {
            let mut inner = self.inner.lock();
            let was = inner.lagged;
            inner.lag(&self.budget);
            !was
        };
        self.notify.notify_one();
        lagged
    }

    /// Resolves when something was pushed since the last call (a push never goes unnoticed).
    pub async fn wait(&self) {
        self.notify.notified().await;
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        let inner = self.inner.get_mut();
        self.budget.sub(std::mem::take(&mut inner.queued));
        inner.written(&self.budget);
    }
}

struct Member {
    outbox: Arc<Outbox>,
    projects: HashSet<Id>,
}

#[derive(Default)]
struct Registry {
    members: HashMap<u64, Member>,
    /// Members that receive every event.
    all: HashSet<u64>,
    by_project: HashMap<Id, HashSet<u64>>,
}

/// The fan-out point between the writer thread and the WebSocket connections.
pub struct Hub {
    registry: RwLock<Registry>,
    next_id: AtomicU64,
    budget: Arc<Budget>,
}

impl Hub {
    /// A hub whose connections' unsent bytes together stay within `budget_bytes`.
    pub fn new(budget_bytes: usize) -> Arc<Hub> {
        Arc::new(Hub {
            registry: RwLock::default(),
            next_id: AtomicU64::new(0),
            budget: Budget::new(budget_bytes),
        })
    }

    /// The global budget, which every outbox of this hub counts against.
    pub fn budget(&self) -> &Arc<Budget> {
        &self.budget
    }

    /// Over budget: the connections holding the most unsent bytes are marked lagged (their
    /// queues dropped; each closes with 4008 and the seq to resume from) until what is left
    /// would fit. Publishing never waits for it; the walk happens only when over budget.
    fn enforce_budget(&self, registry: &Registry) {
        let counted = self.budget.counted();
        let Some(mut over) = counted.checked_sub(self.budget.limit).filter(|o| *o > 0) else {
            return;
        };
        // Lagged connections are closing already; what they still hold is doomed, not counted.
        let mut holders: Vec<(usize, &Arc<Outbox>)> = registry
            .members
            .values()
            .filter(|m| !m.outbox.lagged())
            .map(|m| (m.outbox.unsent(), &m.outbox))
            .filter(|(unsent, _)| *unsent > 0)
            .collect();
        holders.sort_unstable_by_key(|h| std::cmp::Reverse(h.0));
        for (unsent, outbox) in holders {
            if outbox.lag() {
                over = over.saturating_sub(unsent);
                if over == 0 {
                    break;
                }
            }
        }
    }

    /// Adds a subscriber with no subscriptions yet; returns its id.
    pub fn join(&self, outbox: Arc<Outbox>) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let member = Member {
            outbox,
            projects: HashSet::new(),
        };
        self.registry.write().members.insert(id, member);
        id
    }

    pub fn leave(&self, id: u64) {
        let mut registry = self.registry.write();
        if let Some(member) = registry.members.remove(&id) {
            registry.all.remove(&id);
            for project in member.projects {
                remove_from_project(&mut registry, project, id);
            }
        }
    }

    /// Subscribes to one project's events, or to every event (`None`).
    pub fn subscribe(&self, id: u64, project: Option<Id>) {
        let mut registry = self.registry.write();
        let Some(member) = registry.members.get_mut(&id) else {
            return;
        };
        match project {
            None => {
                registry.all.insert(id);
            }
            Some(p) => {
                member.projects.insert(p);
                registry.by_project.entry(p).or_default().insert(id);
            }
        }
    }

    pub fn unsubscribe(&self, id: u64, project: Option<Id>) {
        let mut registry = self.registry.write();
        let Some(member) = registry.members.get_mut(&id) else {
            return;
        };
        match project {
            None => {
                registry.all.remove(&id);
            }
            Some(p) => {
                member.projects.remove(&p);
                remove_from_project(&mut registry, p, id);
            }
        }
    }

    pub fn subscribers(&self) -> usize {
        self.registry.read().members.len()
    }

    /// Queues each event's frame to every subscriber it concerns: a project's events to that
    /// project's subscribers and to those of everything; events without a project to everyone.
    pub fn publish(&self, events: &[CommittedEvent]) {
        let registry = self.registry.read();
        for event in events {
            let item = Queued {
                seq: event.seq,
                project: event.project_id,
                committed_at: event.committed_at,
                frame: super::frame::text(&event.json),
            };
            match event.project_id {
                None => {
                    for member in registry.members.values() {
                        member.outbox.push(item.clone());
                    }
                }
                Some(project) => {
                    for id in &registry.all {
                        push_to(&registry, *id, &item);
                    }
                    if let Some(ids) = registry.by_project.get(&project) {
                        // A member of both sets already has it.
                        for id in ids.iter().filter(|id| !registry.all.contains(id)) {
                            push_to(&registry, *id, &item);
                        }
                    }
                }
            }
        }
        self.enforce_budget(&registry);
    }
}

impl Hub {
    /// Queues an ephemeral frame (no seq, never logged) to the project's subscribers and those of
    /// everything.
    pub fn publish_ephemeral(&self, project: Id, at: Micros, json: &[u8]) {
        let item = Queued {
            seq: 0,
            project: Some(project),
            committed_at: at,
            frame: super::frame::text(json),
        };
        let registry = self.registry.read();
        for id in &registry.all {
            push_to(&registry, *id, &item);
        }
        if let Some(ids) = registry.by_project.get(&project) {
            for id in ids.iter().filter(|id| !registry.all.contains(id)) {
                push_to(&registry, *id, &item);
            }
        }
        self.enforce_budget(&registry);
    }
}

fn push_to(registry: &Registry, id: u64, item: &Queued) {
    if let Some(member) = registry.members.get(&id) {
        member.outbox.push(item.clone());
    }
}

fn remove_from_project(registry: &mut Registry, project: Id, id: u64) {
    if let Some(set) = registry.by_project.get_mut(&project) {
        set.remove(&id);
        if set.is_empty() {
            registry.by_project.remove(&project);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(seq: u64, project: Id, bytes: usize) -> CommittedEvent {
        CommittedEvent {
            seq,
            project_id: Some(project),
            committed_at: 0,
            json: Bytes::from(vec![b'x'; bytes]),
        }
    }

    /// Frame bytes (payload plus a 4-byte header under 64 KiB) plus the per-item overhead.
    fn cost_of(bytes: usize) -> usize {
        bytes + 4 + ITEM_OVERHEAD
    }

    #[test]
    fn an_outbox_counts_queued_and_in_flight_bytes_until_written_and_frees_them_when_dropped() {
        let budget = Budget::new(usize::MAX);
        let outbox = Outbox::new(10 * cost_of(1000), budget.clone());
        let p = Id([1; 16]);
        for seq in 1..=6 {
            outbox.push(Queued {
                seq,
                project: Some(p),
                committed_at: 0,
                frame: crate::events::frame::text(&[b'x'; 1000]),
            });
        }
        assert_eq!(budget.used(), 6 * cost_of(1000));
        // A write takes about its batch size; the rest stays queued, all still counted.
        let (taken, lagged) = outbox.take(2 * cost_of(1000));
        assert_eq!((taken.len(), lagged), (2, false));
        assert_eq!(outbox.unsent(), 6 * cost_of(1000));
        outbox.written();
        assert_eq!(outbox.unsent(), 4 * cost_of(1000));
        assert_eq!(budget.used(), 4 * cost_of(1000));
        // The per-connection bound counts in-flight bytes too: 4 queued + 6 taken fill it.
        let (taken, _) = outbox.take(usize::MAX);
        assert_eq!(taken.len(), 4);
        for seq in 7..=12 {
            outbox.push(Queued {
                seq,
                project: Some(p),
                committed_at: 0,
                frame: crate::events::frame::text(&[b'x'; 1000]),
            });
        }
        assert!(!outbox.lagged(), "exactly at the bound");
        outbox.push(Queued {
            seq: 13,
            project: Some(p),
            committed_at: 0,
            frame: crate::events::frame::text(&[b'x'; 1000]),
        });
        assert!(outbox.lagged(), "one frame over the bound");
        assert_eq!(outbox.unsent(), 4 * cost_of(1000), "the queue is dropped");
        drop(outbox);
        assert_eq!(budget.used(), 0, "a closed connection frees what it held");
    }

    #[test]
    fn over_the_global_budget_the_largest_queues_lag_first_until_the_rest_fits() {
        let hub = Hub::new(25 * cost_of(1000));
        let (a, b, c) = (Id([1; 16]), Id([2; 16]), Id([3; 16]));
        let mut members = Vec::new();
        for project in [a, b, c] {
            let outbox = Outbox::new(usize::MAX, hub.budget().clone());
            let id = hub.join(outbox.clone());
            hub.subscribe(id, Some(project));
            members.push(outbox);
        }
        // Project a's subscriber gets 14 frames, b's 9, c's 2: 25, exactly the budget.
        let mut seq = 0;
        let mut publish = |project: Id, n: usize| {
            let events: Vec<CommittedEvent> = (0..n)
                .map(|_| {
                    seq += 1;
                    event(seq, project, 1000)
                })
                .collect();
            hub.publish(&events);
        };
        publish(a, 14);
        publish(b, 9);
        publish(c, 2);
        assert_eq!(hub.budget().used(), 25 * cost_of(1000));
        assert!(members.iter().all(|m| !m.lagged()), "within the budget");
        // Three more for c: over by 3. Dropping a's 14 is enough; b and c keep theirs.
        publish(c, 3);
        let lagged: Vec<bool> = members.iter().map(|m| m.lagged()).collect();
        assert_eq!(lagged, [true, false, false]);
        assert_eq!(hub.budget().used(), 14 * cost_of(1000));
        // Twenty more for c: c now holds the most (25 against b's 9) and goes; b keeps its 9.
        publish(c, 20);
        let lagged: Vec<bool> = members.iter().map(|m| m.lagged()).collect();
        assert_eq!(lagged, [true, false, true], "c now holds the most");
        assert_eq!(hub.budget().used(), 9 * cost_of(1000));
    }

    #[test]
    fn what_a_lagged_writer_still_holds_does_not_close_other_connections() {
        let hub = Hub::new(10 * cost_of(1000));
        let (a, b) = (Id([1; 16]), Id([2; 16]));
        let stalled = Outbox::new(usize::MAX, hub.budget().clone());
        let id = hub.join(stalled.clone());
        hub.subscribe(id, Some(a));
        let healthy = Outbox::new(usize::MAX, hub.budget().clone());
        let id = hub.join(healthy.clone());
        hub.subscribe(id, Some(b));
        let events = |project: Id, first: u64, n: u64| -> Vec<CommittedEvent> {
            (first..first + n)
                .map(|seq| event(seq, project, 1000))
                .collect()
        };
        // The stalled client's writer takes 8 frames and blocks writing them; 4 more queue.
        hub.publish(&events(a, 1, 8));
        let (taken, _) = stalled.take(usize::MAX);
        assert_eq!(taken.len(), 8);
        hub.publish(&events(a, 9, 4));
        // Over the budget (12 > 10): the stalled one, the largest, lags; its 8 in flight stay
        // used until its write ends, but no longer count.
        assert!(stalled.lagged());
        assert_eq!(hub.budget().used(), 8 * cost_of(1000));
        assert_eq!(hub.budget().counted(), 0);
        // The healthy client's 9 queued frames are within the budget: it stays open.
        hub.publish(&events(b, 13, 9));
        assert!(!healthy.lagged(), "not closed for bytes it does not hold");
        assert_eq!(hub.budget().counted(), 9 * cost_of(1000));
        // The blocked write ends: everything of the stalled client is freed.
        stalled.written();
        assert_eq!(hub.budget().used(), 9 * cost_of(1000));
        assert_eq!(hub.budget().counted(), 9 * cost_of(1000));
        drop((stalled, healthy));
        assert_eq!(
            hub.budget().used(),
            9 * cost_of(1000),
            "the hub still holds them"
        );
    }
}
