//! The hub: who is subscribed to what, and the fan-out of committed events. Each event's frame is
//! encoded once (header included) and the same bytes are queued to every subscriber. Publishing
//! never waits: a subscriber whose queue is over its byte bound is marked lagged and its queue is
//! dropped; its connection then closes with the seq to resume from.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

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

/// One subscriber's bounded queue.
pub struct Outbox {
    inner: Mutex<OutboxInner>,
    notify: Notify,
    limit_bytes: usize,
}

#[derive(Default)]
struct OutboxInner {
    queue: VecDeque<Queued>,
    bytes: usize,
    lagged: bool,
}

impl Outbox {
    pub fn new(limit_bytes: usize) -> Arc<Outbox> {
        Arc::new(Outbox {
            inner: Mutex::default(),
            notify: Notify::new(),
            limit_bytes,
        })
    }

    fn push(&self, item: Queued) {
        {
            let mut inner = self.inner.lock();
            if inner.lagged {
                return;
            }
            if inner.bytes + item.frame.len() > self.limit_bytes {
                // What is queued will not be sent; the connection resumes after what it wrote.
                inner.lagged = true;
                inner.queue.clear();
                inner.bytes = 0;
            } else {
                inner.bytes += item.frame.len();
                inner.queue.push_back(item);
            }
        }
        self.notify.notify_one();
    }

    /// Everything queued, and whether the subscriber has lagged.
    pub fn take(&self) -> (VecDeque<Queued>, bool) {
        let mut inner = self.inner.lock();
        inner.bytes = 0;
        (std::mem::take(&mut inner.queue), inner.lagged)
    }

    /// Resolves when something was pushed since the last call (a push never goes unnoticed).
    pub async fn wait(&self) {
        self.notify.notified().await;
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
#[derive(Default)]
pub struct Hub {
    registry: RwLock<Registry>,
    next_id: AtomicU64,
}

impl Hub {
    pub fn new() -> Arc<Hub> {
        Arc::new(Hub::default())
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
