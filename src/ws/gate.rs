//! The exactly-once gate of one connection: which events its subscriptions want, and for each
//! delivery stream the highest seq already written, so the copy of an event that arrives both by
//! replay and live is dropped. Pure: no I/O, no clock.
//!
//! A stream is one order of delivery: every event (an `all` subscription), the events of one
//! project, or the events of no project. Within a stream, frames reach the gate in non-decreasing
//! seq — a subscription's replay is read from the log and written before any live frame of that
//! subscription is taken from the outbox — so dropping every seq at or below the stream's highest
//! drops exactly the second copies.

use std::collections::{HashMap, HashSet};

use crate::domain::Id;

/// Which delivery order a frame belongs to.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
enum Stream {
    All,
    Global,
    Project(Id),
}

#[derive(Clone, Debug, Default)]
pub struct Gate {
    /// Subscribed to every event.
    all: bool,
    projects: HashSet<Id>,
    /// The highest seq written per stream.
    delivered: HashMap<Stream, u64>,
}

impl Gate {
    /// `None`: every event; a project: its events and those of no project.
    pub fn subscribe(&mut self, project: Option<Id>) {
        match project {
            None => self.all = true,
            Some(p) => {
                self.projects.insert(p);
            }
        }
    }

    /// The client already has every event of this subscription up to `since` (it resumes from
    /// there): none of them is written again, live or replayed.
    pub fn resume_after(&mut self, project: Option<Id>, since: u64) {
        for stream in self.streams(project) {
            let delivered = self.delivered.entry(stream).or_insert(0);
            *delivered = (*delivered).max(since);
        }
    }

    /// The highest seq below which every event a subscription to `project` wants has been
    /// written (or was declared had by `resume_after`): a replay for it can start there.
    pub fn written(&self, project: Option<Id>) -> u64 {
        self.streams(project)
            .iter()
            .map(|s| self.delivered.get(s).copied().unwrap_or(0))
            .min()
            .unwrap_or(0)
    }

    pub fn unsubscribe(&mut self, project: Option<Id>) {
        match project {
            None => self.all = false,
            Some(p) => {
                self.projects.remove(&p);
            }
        }
    }

    /// The streams a subscription to `project` is delivered through.
    fn streams(&self, project: Option<Id>) -> Vec<Stream> {
        match (self.all, project) {
            (true, _) | (false, None) => vec![self.stream_of(project)],
            (false, Some(p)) => vec![Stream::Project(p), Stream::Global],
        }
    }

    fn stream_of(&self, project: Option<Id>) -> Stream {
        match (self.all, project) {
            (true, _) => Stream::All,
            (false, None) => Stream::Global,
            (false, Some(p)) => Stream::Project(p),
        }
    }

    /// Whether the subscriptions want a frame of this project (or of none).
    pub fn wants(&self, project: Option<Id>) -> bool {
        self.all || project.is_none_or(|p| self.projects.contains(&p))
    }

    /// Whether the subscriptions want this event and it was not written yet; records it as
    /// written.
    pub fn pass(&mut self, seq: u64, project: Option<Id>) -> bool {
        if !self.wants(project) {
            return false;
        }
        let delivered = self.delivered.entry(self.stream_of(project)).or_insert(0);
        if seq <= *delivered {
            return false;
        }
        *delivered = seq;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn project(n: u8) -> Option<Id> {
        (n > 0).then_some(Id([n; 16]))
    }

    proptest! {
        /// A subscription to one project (or to everything) registered while events are being
        /// published: replay gives the logged events after `since` up to some point, live gives
        /// every event from some earlier point on, either with arbitrary repeats, and the two are
        /// merged in any order that keeps each stream's frames in seq order. Every wanted event
        /// after `since` comes out exactly once, in seq order within its stream.
        #[test]
        fn each_wanted_event_passes_once_in_order(
            log in prop::collection::vec(0u8..4, 1..60),
            subscribe_all in any::<bool>(),
            since_at in 0usize..60,
            replay_end in 0usize..60,
            live_from in 0usize..60,
            repeats in prop::collection::vec(0usize..60, 0..10),
            choices in prop::collection::vec(any::<bool>(), 0..300),
        ) {
            let n = log.len();
            let events: Vec<(u64, Option<Id>)> =
                log.iter().enumerate().map(|(i, p)| (i as u64 + 1, project(*p))).collect();
            let mine = if subscribe_all { None } else { project(1) };
            let wanted = |p: Option<Id>| subscribe_all || p.is_none() || p == project(1);
            let since = (since_at % (n + 1)) as u64;
            // Replay reads the log at some point after `since`; live starts with the first event
            // published after the subscription registered, no later than right after what replay
            // read (no gap between them) — and possibly before `since`, when a client resumes
            // from a seq it got elsewhere.
            let replay_end = (since as usize).max(replay_end % (n + 1));
            let live_from = (live_from % (n + 1)).min(replay_end);
            let with_repeats = |mut items: Vec<(u64, Option<Id>)>| {
                for r in &repeats {
                    if !items.is_empty() {
                        let i = r % items.len();
                        items.insert(i, items[i]);
                    }
                }
                items
            };
            let replay = with_repeats(
                events[since as usize..replay_end].iter().copied().filter(|e| wanted(e.1)).collect(),
            );
            // The hub hands a connection only what it subscribed to.
            let live = with_repeats(
                events[live_from..].iter().copied().filter(|e| wanted(e.1)).collect(),
            );
            // Any merge that keeps each stream's order: per stream, replay's frames before live's.
            let stream = |p: Option<Id>| if subscribe_all { 0 } else if p.is_none() { 1 } else { 2 };
            let mut queues: Vec<std::collections::VecDeque<(u64, Option<Id>)>> = vec![Default::default(); 3];
            for e in replay.iter().chain(live.iter()) {
                queues[stream(e.1)].push_back(*e);
            }
            let mut gate = Gate::default();
            gate.subscribe(mine);
            gate.resume_after(mine, since);
            let mut out: Vec<(u64, Option<Id>)> = Vec::new();
            let mut pick = choices.iter().cycle();
            while queues.iter().any(|q| !q.is_empty()) {
                let nonempty: Vec<usize> = (0..3).filter(|i| !queues[*i].is_empty()).collect();
                let which = if *pick.next().unwrap_or(&false) { nonempty[0] } else { *nonempty.last().unwrap() };
                let e = queues[which].pop_front().unwrap();
                if gate.pass(e.0, e.1) {
                    out.push(e);
                }
            }
            let mut got: Vec<u64> = out.iter().map(|e| e.0).collect();
            let want: Vec<u64> = events[since as usize..]
                .iter()
                .filter(|e| wanted(e.1))
                .map(|e| e.0)
                .collect();
            for s in 0..3 {
                let per: Vec<u64> = out.iter().filter(|e| stream(e.1) == s).map(|e| e.0).collect();
                prop_assert!(per.windows(2).all(|w| w[0] < w[1]), "stream {s} out of order: {per:?}");
            }
            got.sort_unstable();
            prop_assert_eq!(got, want);
        }

        /// What a replay skips, starting at `written`, is exactly what the gate would drop: no
        /// wanted event at or below it passes, whatever subscriptions and passes came before.
        #[test]
        fn a_replay_may_start_where_the_gate_has_written(
            subscriptions in prop::collection::vec(0u8..4, 1..4),
            passed in prop::collection::vec((1u64..80, 0u8..4), 0..80),
            since in 0u64..80,
            replay_for in 0u8..4,
        ) {
            let mut gate = Gate::default();
            for p in &subscriptions {
                gate.subscribe(project(*p));
            }
            for (seq, p) in &passed {
                gate.pass(*seq, project(*p));
            }
            let mine = project(replay_for);
            gate.subscribe(mine);
            gate.resume_after(mine, since);
            let start = gate.written(mine);
            prop_assert!(start >= since);
            for seq in 1..=start {
                for p in [None, mine] {
                    prop_assert!(!gate.clone().pass(seq, p), "{seq} {p:?} would pass below {start}");
                }
            }
        }
    }

    #[test]
    fn unwanted_and_repeated_events_are_dropped() {
        let mut gate = Gate::default();
        gate.subscribe(project(1));
        assert!(gate.pass(1, project(1)));
        assert!(!gate.pass(1, project(1)), "a second copy");
        assert!(!gate.pass(2, project(2)), "another project's event");
        assert!(gate.pass(3, None), "an event of no project");
        assert!(!gate.pass(3, None));
        gate.unsubscribe(project(1));
        assert!(!gate.pass(4, project(1)));
        gate.subscribe(None);
        assert!(gate.pass(5, project(2)));
    }
}
