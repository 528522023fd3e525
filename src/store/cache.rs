//! The response cache: encoded answers (artifacts, project statuses) bounded by the bytes they
//! hold, changed only by the writer after a commit.
//!
//! Two kinds of entry. An artifact is one encoded response, dropped when the artifact changes. A
//! project status is a `StatusView`: the project's head and each task's encoded entry, which the
//! writer patches task by task, so a status answer after a write costs a concatenation instead of
//! reading and encoding every task of the project again.
//!
//! A reader that missed builds the entry from its own snapshot. Every change the writer makes is
//! also written to a bounded log under a rising epoch; before inserting, the reader replays onto
//! its entry what the log holds for that key since the epoch it read before its snapshot (or gives
//! up when the entry was invalidated meanwhile, or the log no longer reaches back that far). So a
//! build that overlaps a stream of writes to its project is still inserted, and nothing
//! uncommitted or stale ever is.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;

use super::{CacheKey, CacheStats, metric_names};
use crate::domain::Id;

/// Writer changes remembered for readers whose build overlaps them.
const LOG_ENTRIES: usize = 16_384;
/// Bookkeeping counted per cached task entry (map node, key, handle).
const TASK_OVERHEAD: usize = 64;

/// What one cache entry holds.
#[derive(Clone)]
pub(crate) enum Cached {
    Encoded(Bytes),
    Status(Arc<Mutex<StatusView>>),
}

/// A project's status answer in parts: `head` (the project's fields and `"tasks":[`), each task's
/// encoded entry in id order (oldest first), and the whole body once it was asked for.
#[derive(Debug)]
pub(crate) struct StatusView {
    pub head: Vec<u8>,
    pub tasks: BTreeMap<Id, Bytes>,
    task_bytes: usize,
    body: Option<Bytes>,
}

impl StatusView {
    pub fn new(head: Vec<u8>) -> StatusView {
        StatusView {
            head,
            tasks: BTreeMap::new(),
            task_bytes: 0,
            body: None,
        }
    }

    pub fn set_task(&mut self, id: Id, entry: Bytes) {
        self.task_bytes += entry.len();
        if let Some(old) = self.tasks.insert(id, entry) {
            self.task_bytes -= old.len();
        }
        self.body = None;
    }

    fn weight(&self) -> usize {
        self.head.len()
            + self.task_bytes
            + self.tasks.len() * TASK_OVERHEAD
            + self.body.as_ref().map_or(0, Bytes::len)
    }

    /// The whole answer, if it was assembled since the last change.
    pub fn assembled(&self) -> Option<Bytes> {
        self.body.clone()
    }

    /// The whole answer: the head, the task entries joined by commas, `]}`. Kept until the next
    /// change.
    pub fn body(&mut self) -> Bytes {
        if let Some(body) = &self.body {
            return body.clone();
        }
        let mut out = Vec::with_capacity(self.head.len() + self.task_bytes + self.tasks.len() + 2);
        out.extend_from_slice(&self.head);
        for (i, entry) in self.tasks.values().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(entry);
        }
        out.extend_from_slice(b"]}");
        let body = Bytes::from(out);
        self.body = Some(body.clone());
        body
    }
}

/// A change the writer made, as the cache learns of it after the commit.
#[derive(Clone, Debug)]
pub(crate) enum Change {
    /// The entry no longer holds (an artifact changed, a project's own fields changed).
    Invalidate(CacheKey),
    /// A task of the project was created or changed: its new encoded status entry.
    Task { project: Id, task: Id, entry: Bytes },
}

impl Change {
    fn key(&self) -> CacheKey {
        match self {
            Change::Invalidate(key) => *key,
            Change::Task { project, .. } => CacheKey::ProjectStatus(*project),
        }
    }
}

struct Entry {
    value: Cached,
    weight: usize,
}

pub(crate) struct ResponseCache {
    entries: lru::LruCache<CacheKey, Entry>,
    /// Sum of the entries' weights; kept at or under `budget`.
    bytes: usize,
    budget: usize,
    /// Raised by every batch of writer changes.
    epoch: u64,
    /// The latest writer changes, oldest first, with the epoch that made them.
    log: VecDeque<(u64, Change)>,
    /// The newest epoch whose changes were (partly) trimmed from the log.
    trimmed_through: u64,
    hits: u64,
    misses: u64,
    evictions: u64,
}

impl ResponseCache {
    pub fn new(budget: usize) -> ResponseCache {
        ResponseCache {
            entries: lru::LruCache::unbounded(),
            bytes: 0,
            budget,
            epoch: 0,
            log: VecDeque::new(),
            trimmed_through: 0,
            hits: 0,
            misses: 0,
            evictions: 0,
        }
    }

    /// The largest entry worth keeping: an eighth of the budget.
    fn max_entry(&self) -> usize {
        self.budget / 8
    }

    /// The encoded response under `key`, counted as a hit or a miss; on a miss, the epoch to
    /// build against.
    pub fn lookup_encoded(&mut self, key: &CacheKey) -> Result<Bytes, u64> {
        let found = match self.entries.get(key) {
            Some(Entry {
                value: Cached::Encoded(bytes),
                ..
            }) => Some(bytes.clone()),
            _ => None,
        };
        self.count(found.ok_or(self.epoch))
    }

    /// The status view under `key`, like `lookup_encoded`.
    pub fn lookup_status(&mut self, key: &CacheKey) -> Result<Arc<Mutex<StatusView>>, u64> {
        let found = match self.entries.get(key) {
            Some(Entry {
                value: Cached::Status(view),
                ..
            }) => Some(view.clone()),
            _ => None,
        };
        self.count(found.ok_or(self.epoch))
    }

    fn count<T>(&mut self, found: Result<T, u64>) -> Result<T, u64> {
        if found.is_ok() {
            self.hits += 1;
            metrics::counter!(metric_names::CACHE_HITS).increment(1);
        } else {
            self.misses += 1;
            metrics::counter!(metric_names::CACHE_MISSES).increment(1);
        }
        found
    }

    /// Inserts what a reader built from a snapshot taken after it read `since`, replaying the
    /// writer's task changes made since then. Refused when the entry was invalidated meanwhile,
    /// when the log no longer reaches back to `since`, or when the entry is too large.
    pub fn insert_built(&mut self, key: CacheKey, value: Cached, since: u64) {
        if self.trimmed_through > since {
            return;
        }
        let later = self
            .log
            .iter()
            .rev()
            .take_while(|(epoch, _)| *epoch > since)
            .filter(|(_, change)| change.key() == key);
        let mut replay: Vec<&Change> = Vec::new();
        for (_, change) in later {
            match change {
                Change::Invalidate(_) => return,
                Change::Task { .. } => replay.push(change),
            }
        }
        let weight = match &value {
            Cached::Encoded(bytes) => {
                if !replay.is_empty() {
                    return;
                }
                bytes.len()
            }
            Cached::Status(view) => {
                let mut view = view.lock();
                for change in replay.into_iter().rev() {
                    if let Change::Task { task, entry, .. } = change {
                        view.set_task(*task, entry.clone());
                    }
                }
                view.weight()
            }
        };
        if weight > self.max_entry() {
            return;
        }
        if let Some(old) = self.entries.put(key, Entry { value, weight }) {
            self.bytes -= old.weight;
        }
        self.bytes += weight;
        self.evict();
    }

    /// Records a batch's changes (after its commit) and applies them: invalidated entries are
    /// dropped; task changes are returned with the views they patch, which the caller patches
    /// outside this lock and then reweighs.
    pub fn apply(
        &mut self,
        changes: Vec<Change>,
    ) -> Vec<(CacheKey, Arc<Mutex<StatusView>>, Change)> {
        if changes.is_empty() {
            return Vec::new();
        }
        self.epoch += 1;
        let mut patches = Vec::new();
        for change in changes {
            let key = change.key();
            match &change {
                Change::Invalidate(_) => {
                    if let Some(old) = self.entries.pop(&key) {
                        self.bytes -= old.weight;
                    }
                }
                Change::Task { .. } => {
                    if let Some(Entry {
                        value: Cached::Status(view),
                        ..
                    }) = self.entries.peek(&key)
                    {
                        patches.push((key, view.clone(), change.clone()));
                    }
                }
            }
            self.log.push_back((self.epoch, change));
        }
        while self.log.len() > LOG_ENTRIES {
            if let Some((epoch, _)) = self.log.pop_front() {
                self.trimmed_through = epoch;
            }
        }
        patches
    }

    /// Forgets every entry (a follower, after a record of the leader's log it cannot patch
    /// entries for): what readers are building now, from before, is refused too.
    pub fn clear(&mut self) {
        self.epoch += 1;
        self.trimmed_through = self.epoch;
        self.log.clear();
        self.entries.clear();
        self.bytes = 0;
    }

    /// A status view's weight changed (patched, or its body assembled): account for it, and drop
    /// it if it grew past the largest entry worth keeping.
    pub fn reweigh(&mut self, key: &CacheKey, view: &Arc<Mutex<StatusView>>, weight: usize) {
        let max = self.max_entry();
        let Some(entry) = self.entries.peek_mut(key) else {
            return;
        };
        if !matches!(&entry.value, Cached::Status(v) if Arc::ptr_eq(v, view)) {
            return;
        }
        self.bytes = self.bytes - entry.weight + weight;
        entry.weight = weight;
        if weight > max
            && let Some(old) = self.entries.pop(key)
        {
            self.bytes -= old.weight;
        }
        self.evict();
    }

    fn evict(&mut self) {
        while self.bytes > self.budget {
            let Some((_, old)) = self.entries.pop_lru() else {
                break;
            };
            self.bytes -= old.weight;
            self.evictions += 1;
            metrics::counter!(metric_names::CACHE_EVICTIONS).increment(1);
        }
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            entries: self.entries.len() as u64,
            bytes: self.bytes as u64,
            budget: self.budget as u64,
            hits: self.hits,
            misses: self.misses,
            evictions: self.evictions,
        }
    }
}

/// The weight of a view, read under its own lock.
pub(crate) fn view_weight(view: &StatusView) -> usize {
    view.weight()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> Id {
        Id([n; 16])
    }

    fn view(tasks: &[(u8, &'static str)]) -> Arc<Mutex<StatusView>> {
        let mut v = StatusView::new(b"{\"tasks\":[".to_vec());
        for (n, text) in tasks {
            v.set_task(id(*n), Bytes::from_static(text.as_bytes()));
        }
        Arc::new(Mutex::new(v))
    }

    fn status_body(cache: &mut ResponseCache, key: CacheKey) -> Option<Bytes> {
        cache.lookup_status(&key).ok().map(|v| v.lock().body())
    }

    #[test]
    fn the_budget_bounds_the_bytes_held() {
        let mut cache = ResponseCache::new(8 * 100);
        for n in 0..20u8 {
            cache.insert_built(
                CacheKey::Artifact(id(n)),
                Cached::Encoded(Bytes::from(vec![b'x'; 90])),
                cache.epoch,
            );
        }
        let stats = cache.stats();
        assert_eq!(stats.entries, 8);
        assert_eq!(stats.bytes, 8 * 90);
        assert_eq!(stats.evictions, 12);
        // The newest survive.
        assert!(cache.lookup_encoded(&CacheKey::Artifact(id(19))).is_ok());
        assert!(cache.lookup_encoded(&CacheKey::Artifact(id(0))).is_err());
        // Larger than an eighth of the budget: not kept.
        cache.insert_built(
            CacheKey::Artifact(id(99)),
            Cached::Encoded(Bytes::from(vec![b'x'; 101])),
            cache.epoch,
        );
        assert!(cache.lookup_encoded(&CacheKey::Artifact(id(99))).is_err());
    }

    #[test]
    fn a_build_overlapping_task_changes_replays_them() {
        let mut cache = ResponseCache::new(1 << 20);
        let key = CacheKey::ProjectStatus(id(1));
        let since = cache.lookup_status(&key).unwrap_err();
        // The writer commits two changes while the reader builds from an older snapshot.
        cache.apply(vec![Change::Task {
            project: id(1),
            task: id(2),
            entry: Bytes::from_static(b"B2"),
        }]);
        cache.apply(vec![Change::Task {
            project: id(1),
            task: id(3),
            entry: Bytes::from_static(b"C"),
        }]);
        cache.insert_built(key, Cached::Status(view(&[(2, "B1")])), since);
        assert_eq!(status_body(&mut cache, key).unwrap(), "{\"tasks\":[B2,C]}");
    }

    #[test]
    fn a_build_overlapping_an_invalidation_is_not_kept() {
        let mut cache = ResponseCache::new(1 << 20);
        let key = CacheKey::ProjectStatus(id(1));
        let since = cache.lookup_status(&key).unwrap_err();
        cache.apply(vec![Change::Invalidate(key)]);
        cache.insert_built(key, Cached::Status(view(&[(2, "B")])), since);
        assert!(cache.lookup_status(&key).is_err());
        let artifact = CacheKey::Artifact(id(5));
        let since = cache.lookup_encoded(&artifact).unwrap_err();
        cache.apply(vec![Change::Invalidate(artifact)]);
        cache.insert_built(artifact, Cached::Encoded(Bytes::from_static(b"old")), since);
        assert!(cache.lookup_encoded(&artifact).is_err());
        // Changes to other keys do not stop an insert.
        let since = cache.lookup_encoded(&artifact).unwrap_err();
        cache.apply(vec![Change::Invalidate(CacheKey::Artifact(id(6)))]);
        cache.insert_built(artifact, Cached::Encoded(Bytes::from_static(b"new")), since);
        assert!(cache.lookup_encoded(&artifact).is_ok());
    }

    #[test]
    fn a_log_that_no_longer_reaches_back_refuses_the_insert() {
        let mut cache = ResponseCache::new(1 << 30);
        let key = CacheKey::ProjectStatus(id(1));
        let since = cache.lookup_status(&key).unwrap_err();
        for _ in 0..LOG_ENTRIES + 1 {
            cache.apply(vec![Change::Invalidate(CacheKey::Artifact(id(9)))]);
        }
        cache.insert_built(key, Cached::Status(view(&[])), since);
        assert!(cache.lookup_status(&key).is_err());
    }

    #[test]
    fn writer_patches_reach_cached_views() {
        let mut cache = ResponseCache::new(1 << 20);
        let key = CacheKey::ProjectStatus(id(1));
        let since = cache.lookup_status(&key).unwrap_err();
        cache.insert_built(key, Cached::Status(view(&[(2, "A"), (4, "D")])), since);
        assert_eq!(status_body(&mut cache, key).unwrap(), "{\"tasks\":[A,D]}");
        let patches = cache.apply(vec![Change::Task {
            project: id(1),
            task: id(3),
            entry: Bytes::from_static(b"C"),
        }]);
        assert_eq!(patches.len(), 1);
        for (key, view, change) in patches {
            if let Change::Task { task, entry, .. } = change {
                let weight = {
                    let mut v = view.lock();
                    v.set_task(task, entry);
                    view_weight(&v)
                };
                cache.reweigh(&key, &view, weight);
            }
        }
        assert_eq!(status_body(&mut cache, key).unwrap(), "{\"tasks\":[A,C,D]}");
    }
}
