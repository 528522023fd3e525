//! A connection future polled again in place when it wakes itself.
//!
//! hyper reads a request's body into a channel and lets its handler take it from there; the
//! handler runs inside the connection's own task, and taking the body wakes the connection (the
//! reader may go on). That wake comes while the task is being polled, and tokio treats a task
//! that wakes itself as one that yields: back of the run queue, and a parked worker thread is
//! woken to steal it (a futex wake, then a thread that finds the queue already drained). Every
//! request with a body paid that: about twice the system calls of a GET (see BENCHMARKS.md,
//! "Agents over MCP").
//!
//! [`Repoll`] gives the connection a waker of its own. A wake that arrives while the future is
//! being polled (from this thread or another) only marks it, and the future is polled again at
//! once, here; a wake at any other time wakes the task as before. The in-place polls are bounded,
//! after which it yields to tokio as any task would, so a connection cannot hold its worker.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use atomic_waker::AtomicWaker;

/// Not being polled: a wake goes to the task.
const IDLE: u8 = 0;
/// Being polled: a wake marks the future to be polled again.
const POLLING: u8 = 1;
/// Being polled, and woken meanwhile.
const WOKEN: u8 = 2;

/// Polls in place, after a wake that came during a poll, at most this many times before
/// yielding to the runtime.
const MAX_REPOLLS: usize = 8;

struct Shared {
    state: AtomicU8,
    task: AtomicWaker,
}

impl Wake for Shared {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        match self
            .state
            .compare_exchange(POLLING, WOKEN, Ordering::AcqRel, Ordering::Acquire)
        {
            // The poll under way sees the mark and polls again.
            Ok(_) | Err(WOKEN) => {}
            Err(_) => self.task.wake(),
        }
    }
}

pin_project_lite::pin_project! {
    /// `inner`, polled again in place when it wakes itself (see the module's documentation).
    pub struct Repoll<F> {
        #[pin]
        inner: F,
        shared: Arc<Shared>,
        waker: Waker,
    }
}

impl<F> Repoll<F> {
    pub fn new(inner: F) -> Repoll<F> {
        let shared = Arc::new(Shared {
            state: AtomicU8::new(IDLE),
            task: AtomicWaker::new(),
        });
        let waker = Waker::from(shared.clone());
        Repoll {
            inner,
            shared,
            waker,
        }
    }

    /// The wrapped future, for calls such as a graceful shutdown.
    pub fn inner(self: Pin<&mut Self>) -> Pin<&mut F> {
        self.project().inner
    }
}

impl<F: Future> Future for Repoll<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let mut this = self.project();
        // Registered before polling, so that a wake after the poll below reaches this task.
        this.shared.task.register(cx.waker());
        this.shared.state.store(POLLING, Ordering::Release);
        let mut own = Context::from_waker(this.waker);
        for _ in 0..=MAX_REPOLLS {
            if let Poll::Ready(output) = this.inner.as_mut().poll(&mut own) {
                this.shared.state.store(IDLE, Ordering::Release);
                return Poll::Ready(output);
            }
            match this.shared.state.compare_exchange(
                POLLING,
                IDLE,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Poll::Pending,
                // Woken during the poll: poll again, here.
                Err(_) => this.shared.state.store(POLLING, Ordering::Release),
            }
        }
        // Still waking itself: yield to the runtime like any task, so others get their turn.
        this.shared.state.store(IDLE, Ordering::Release);
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// A future that wakes itself `times` times during its polls, then finishes; it counts the
    /// polls it was given.
    struct SelfWaking {
        times: usize,
        polls: Arc<AtomicUsize>,
    }

    impl Future for SelfWaking {
        type Output = usize;
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<usize> {
            let polls = self.polls.fetch_add(1, Ordering::SeqCst) + 1;
            if self.times == 0 {
                return Poll::Ready(polls);
            }
            self.times -= 1;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }

    /// A waker that counts its wakes.
    struct Counting(AtomicUsize);
    impl Wake for Counting {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_self_wake_is_polled_again_in_place_and_the_task_is_not_woken() {
        let polls = Arc::new(AtomicUsize::new(0));
        let counting = Arc::new(Counting(AtomicUsize::new(0)));
        let waker = Waker::from(counting.clone());
        let mut cx = Context::from_waker(&waker);
        let mut future = Box::pin(Repoll::new(SelfWaking {
            times: 3,
            polls: polls.clone(),
        }));
        assert_eq!(future.as_mut().poll(&mut cx), Poll::Ready(4));
        assert_eq!(counting.0.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_future_that_keeps_waking_itself_yields_to_the_task_after_the_bound() {
        let polls = Arc::new(AtomicUsize::new(0));
        let counting = Arc::new(Counting(AtomicUsize::new(0)));
        let waker = Waker::from(counting.clone());
        let mut cx = Context::from_waker(&waker);
        let mut future = Box::pin(Repoll::new(SelfWaking {
            times: 100,
            polls: polls.clone(),
        }));
        assert_eq!(future.as_mut().poll(&mut cx), Poll::Pending);
        assert_eq!(polls.load(Ordering::SeqCst), MAX_REPOLLS + 1);
        assert_eq!(
            counting.0.load(Ordering::SeqCst),
            1,
            "the task was woken once"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_wake_from_another_thread_reaches_the_task_whenever_it_comes() {
        // A wake may come before, during or after a poll: every one of these must finish.
        for i in 0..2000u32 {
            let (tx, rx) = tokio::sync::oneshot::channel::<u32>();
            let waiter = tokio::spawn(Repoll::new(rx));
            let sender = std::thread::spawn(move || tx.send(i).unwrap());
            let got = tokio::time::timeout(std::time::Duration::from_secs(30), waiter)
                .await
                .expect("the task was woken")
                .unwrap()
                .unwrap();
            assert_eq!(got, i);
            sender.join().unwrap();
        }
    }
}
