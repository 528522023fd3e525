//! Synchronous replication's waiting room (`--sync-replicas N`): a batch's answers are held until
//! N followers have made its log record durable, or `--sync-timeout-ms` has passed; then they
//! are 503 `not_replicated`, never silently asynchronous. Followers count while their log stream
//! is open (`Quorum::connected`) and report the last record they hold (`Quorum::acked`). A
//! thread of its own answers, so the writer goes on committing while batches wait.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::StoreError;

/// What a held batch does once it is replicated (`Ok`) or given up on.
pub(crate) type Answer = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

pub struct Quorum {
    needed: usize,
    timeout: Duration,
    state: Mutex<State>,
    wake: Condvar,
}

#[derive(Default)]
struct State {
    /// Connected followers by node id: open streams and the last record held.
    followers: HashMap<String, (usize, u64)>,
    /// Held batches, in LSN order.
    waiting: VecDeque<(u64, Instant, Answer)>,
    stopping: bool,
}

impl State {
    /// The newest record `needed` connected followers hold (0 with fewer connected).
    fn held(&self, needed: usize) -> u64 {
        let mut acked: Vec<u64> = self
            .followers
            .values()
            .filter(|(streams, _)| *streams > 0)
            .map(|(_, lsn)| *lsn)
            .collect();
        if acked.len() < needed {
            return 0;
        }
        acked.sort_unstable_by(|a, b| b.cmp(a));
        acked[needed - 1]
    }
}

/// A follower's open stream: it counts toward the quorum until this is dropped.
pub struct Connected {
    quorum: Arc<Quorum>,
    node: String,
}

impl Drop for Connected {
    fn drop(&mut self) {
        let mut state = self.quorum.state.lock();
        if let Some((streams, _)) = state.followers.get_mut(&self.node) {
            *streams -= 1;
            if *streams == 0 {
                state.followers.remove(&self.node);
            }
        }
    }
}

impl Quorum {
    /// A waiting room for `needed` followers, with its thread.
    pub(crate) fn start(needed: usize, timeout: Duration) -> std::io::Result<Arc<Quorum>> {
        let quorum = Arc::new(Quorum {
            needed: needed.max(1),
            timeout,
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
        });
        let answering = quorum.clone();
        std::thread::Builder::new()
            .name("flightdeck-sync-rep".into())
            .spawn(move || answering.run())?;
        Ok(quorum)
    }

    /// Followers a write waits for.
    pub fn needed(&self) -> usize {
        self.needed
    }

    /// Holds `answer` until record `lsn` is replicated or the timeout passes.
    pub(crate) fn wait(&self, lsn: u64, answer: Answer) {
        let mut state = self.state.lock();
        if state.stopping {
            drop(state);
            answer(Err(stopping()));
            return;
        }
        state
            .waiting
            .push_back((lsn, Instant::now() + self.timeout, answer));
        self.wake.notify_one();
    }

    /// A follower's stream opened; it counts while the guard lives.
    pub fn connected(self: &Arc<Self>, node: &str) -> Connected {
        let mut state = self.state.lock();
        state.followers.entry(node.to_owned()).or_insert((0, 0)).0 += 1;
        Connected {
            quorum: self.clone(),
            node: node.to_owned(),
        }
    }

    /// Follower `node` holds every record through `lsn` durably.
    pub fn acked(&self, node: &str, lsn: u64) {
        let mut state = self.state.lock();
        if let Some((_, acked)) = state.followers.get_mut(node) {
            *acked = (*acked).max(lsn);
            self.wake.notify_one();
        }
    }

    /// Connected followers with the last record each holds, by node id.
    pub fn followers(&self) -> Vec<(String, u64)> {
        let state = self.state.lock();
        let mut out: Vec<(String, u64)> = state
            .followers
            .iter()
            .map(|(node, (_, lsn))| (node.clone(), *lsn))
            .collect();
        out.sort();
        out
    }

    /// Answers everything held with 503 and holds nothing more (the server is stopping).
    pub(crate) fn stop(&self) {
        let held: Vec<Answer> = {
            let mut state = self.state.lock();
            state.stopping = true;
            self.wake.notify_one();
            state.waiting.drain(..).map(|(_, _, a)| a).collect()
        };
        for answer in held {
            answer(Err(stopping()));
        }
    }

    fn run(&self) {
        let mut state = self.state.lock();
        while !state.stopping {
            let held = state.held(self.needed);
            let now = Instant::now();
            let mut ready = Vec::new();
            while let Some((lsn, deadline, _)) = state.waiting.front() {
                if *lsn <= held {
                    let (_, _, answer) = state.waiting.pop_front().expect("front");
                    ready.push((answer, Ok(())));
                } else if *deadline <= now {
                    let (lsn, _, answer) = state.waiting.pop_front().expect("front");
                    let connected = state.followers.values().filter(|f| f.0 > 0).count();
                    ready.push((
                        answer,
                        Err(not_replicated(lsn, self.needed, connected, self.timeout)),
                    ));
                } else {
                    break;
                }
            }
            if !ready.is_empty() {
                // Answered outside the lock: followers' acks go on meanwhile.
                drop(state);
                for (answer, outcome) in ready {
                    answer(outcome);
                }
                state = self.state.lock();
                continue;
            }
            match state.waiting.front().map(|(_, deadline, _)| *deadline) {
                Some(deadline) => {
                    self.wake.wait_until(&mut state, deadline);
                }
                None => self.wake.wait(&mut state),
            }
        }
    }
}

fn stopping() -> StoreError {
    StoreError::NotReplicated(
        "the server is stopping before enough followers held this write; it is on the leader, \
         and may or may not survive a failover"
            .into(),
    )
}

fn not_replicated(lsn: u64, needed: usize, connected: usize, timeout: Duration) -> StoreError {
    StoreError::NotReplicated(format!(
        "record {lsn} is on the leader, but fewer than {needed} followers (of {connected} \
         connected) held it within {} ms (--sync-timeout-ms): it may not survive a failover; \
         retry with the same Idempotency-Key to learn its outcome",
        timeout.as_millis()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answered(quorum: &Quorum, lsn: u64) -> std::sync::mpsc::Receiver<Result<(), String>> {
        let (tx, rx) = std::sync::mpsc::channel();
        quorum.wait(
            lsn,
            Box::new(move |outcome| {
                let _ = tx.send(outcome.map_err(|e| e.to_string()));
            }),
        );
        rx
    }

    #[test]
    fn a_write_is_answered_once_enough_connected_followers_hold_it() {
        let quorum = Quorum::start(2, Duration::from_secs(60)).unwrap();
        let a = quorum.connected("a");
        let _b = quorum.connected("b");
        let first = answered(&quorum, 5);
        quorum.acked("a", 7);
        assert!(
            first.recv_timeout(Duration::from_millis(50)).is_err(),
            "one follower of two"
        );
        quorum.acked("b", 5);
        assert_eq!(first.recv_timeout(Duration::from_secs(10)).unwrap(), Ok(()));
        // Acks of a follower not connected do not count; one that goes stops counting.
        quorum.acked("c", 100);
        let second = answered(&quorum, 6);
        drop(a);
        quorum.acked("b", 6);
        assert!(second.recv_timeout(Duration::from_millis(50)).is_err());
        let _a = quorum.connected("a");
        quorum.acked("a", 6);
        assert_eq!(
            second.recv_timeout(Duration::from_secs(10)).unwrap(),
            Ok(())
        );
        assert_eq!(quorum.followers(), vec![("a".into(), 6), ("b".into(), 6)]);
        quorum.stop();
    }

    #[test]
    fn a_write_not_replicated_in_time_is_refused_and_stopping_refuses_the_rest() {
        let quorum = Quorum::start(1, Duration::from_millis(20)).unwrap();
        let late = answered(&quorum, 1);
        let refused = late
            .recv_timeout(Duration::from_secs(10))
            .unwrap()
            .unwrap_err();
        assert!(
            refused.contains("fewer than 1 followers (of 0 connected)"),
            "{refused}"
        );
        let quorum = Quorum::start(1, Duration::from_secs(60)).unwrap();
        let held = answered(&quorum, 1);
        quorum.stop();
        let refused = held
            .recv_timeout(Duration::from_secs(10))
            .unwrap()
            .unwrap_err();
        assert!(refused.contains("stopping"), "{refused}");
        let after = answered(&quorum, 2);
        assert!(
            after
                .recv_timeout(Duration::from_secs(10))
                .unwrap()
                .is_err()
        );
    }
}
