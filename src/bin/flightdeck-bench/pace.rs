//! Open-loop pacing: each client sends at a fixed rate, whatever the answers take, and each
//! request's latency is measured from the moment it was due — not from when a slow earlier answer
//! let it be sent — so queueing behind a stalled server is counted, not hidden (no coordinated
//! omission; the way wrk2 and vegeta measure). Closed-loop clients (`--closed-loop`) send the next
//! request as soon as the last one is answered, the saturation mode.

use std::time::{Duration, Instant};

/// The offered rates of the workflow phase, per second, for all clients of a kind together.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Rates {
    /// Status clients' requests (status queries and context-store reads in their fixed mix).
    pub status: f64,
    /// Workers' claim attempts (each claimed task is then given its artifact and completed).
    pub tasks: f64,
    /// The reviewer's looks at the pending approvals (each pending gate is then approved).
    pub review: f64,
}

impl Rates {
    pub const ZERO: Rates = Rates {
        status: 0.0,
        tasks: 0.0,
        review: 0.0,
    };

    /// Applies `CLASS=N` overrides (`status`, `tasks`, `review`).
    pub fn with(mut self, overrides: &[String]) -> Result<Rates, String> {
        for o in overrides {
            let (class, n) = o
                .split_once('=')
                .ok_or_else(|| format!("--rate {o}: expected CLASS=N"))?;
            let n: f64 = n
                .parse()
                .ok()
                .filter(|n: &f64| n.is_finite() && *n > 0.0)
                .ok_or_else(|| format!("--rate {o}: N must be a positive number per second"))?;
            match class {
                "status" => self.status = n,
                "tasks" => self.tasks = n,
                "review" => self.review = n,
                other => {
                    return Err(format!(
                        "--rate {other}=…: the classes are status, tasks and review"
                    ));
                }
            }
        }
        Ok(self)
    }

    /// Every rate times `factor`.
    pub fn scaled(self, factor: f64) -> Rates {
        Rates {
            status: self.status * factor,
            tasks: self.tasks * factor,
            review: self.review * factor,
        }
    }
}

/// Due times at a fixed rate, starting at `start`: the k-th is `start + k / rate`.
pub struct Pace {
    start: Instant,
    interval: Duration,
    next: u64,
}

impl Pace {
    /// One of `clients` clients sharing `rate` per second, the `n`-th: its schedule is offset by
    /// n / clients of an interval so the clients do not fire together.
    pub fn share(rate: f64, clients: usize, n: usize) -> Pace {
        let per_client = rate / clients.max(1) as f64;
        let interval = Duration::from_secs_f64(1.0 / per_client.max(1e-6));
        let offset = interval.mul_f64(n as f64 / clients.max(1) as f64);
        Pace {
            start: Instant::now() + offset,
            interval,
            next: 0,
        }
    }

    /// The next due time: sleeps until it, or answers at once when behind schedule.
    pub async fn due(&mut self) -> Instant {
        let due = self.start + self.interval.mul_f64(self.next as f64);
        self.next += 1;
        tokio::time::sleep_until(due.into()).await;
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_take_overrides_and_refuse_nonsense() {
        let base = Rates {
            status: 1.0,
            tasks: 2.0,
            review: 3.0,
        };
        let r = base
            .with(&["status=500".into(), "tasks=12.5".into()])
            .unwrap();
        assert_eq!((r.status, r.tasks, r.review), (500.0, 12.5, 3.0));
        for bad in ["status", "status=0", "status=-1", "status=x", "ws=5"] {
            assert!(base.with(&[bad.into()]).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn due_times_keep_their_schedule_when_a_client_falls_behind() {
        let mut pace = Pace::share(100.0, 2, 1);
        let first = pace.due().await;
        let second = pace.due().await;
        // 50 per second per client, the second client offset by half an interval.
        assert_eq!(second - first, Duration::from_millis(20));
        // A slow answer (100 ms) does not move the schedule: the next ones are due at once,
        // and each keeps its own due time.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let late = pace.due().await;
        assert_eq!(late - first, Duration::from_millis(40));
        // Its latency counts from then: at least the 80 ms it waited behind the slow answer.
        assert!(Instant::now() - late >= Duration::from_millis(80));
    }
}
