//! The last hour of each service-level class, for the console's charts: every 30 s the monitor
//! loop records each class's p99 and request rate over the 30 s just ended. Bounded: 120 points
//! per class, a few KiB in all.

use std::collections::VecDeque;

use super::window::Summary;
use crate::domain::Micros;

/// Seconds between points.
pub const STEP_SECONDS: u64 = 30;
/// Points kept: one hour.
pub const POINTS: usize = 120;

/// The classes charted, in the order of `Point::classes`.
pub const CLASSES: [&str; 4] = [
    "status_query",
    "task_operation",
    "context_retrieval",
    "websocket_delivery",
];

/// One class over one step.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ClassPoint {
    /// Seconds.
    pub p99: f64,
    /// Per second.
    pub rate: f64,
    pub count: u64,
}

/// Every class over the step that ended at `at`.
#[derive(Clone, Debug, PartialEq)]
pub struct Point {
    pub at: Micros,
    pub classes: [ClassPoint; 4],
}

/// The points of the last hour, oldest first.
#[derive(Default)]
pub struct History {
    points: VecDeque<Point>,
    /// The step (uptime seconds / STEP_SECONDS) last recorded.
    last_step: Option<u64>,
}

impl History {
    /// Whether the step of `uptime_secs` has no point yet (the caller then measures and records).
    pub fn due(&self, uptime_secs: u64) -> bool {
        let step = uptime_secs / STEP_SECONDS;
        step > 0 && self.last_step != Some(step)
    }

    /// Records the point of the step of `uptime_secs`, dropping the oldest beyond an hour.
    pub fn record(&mut self, uptime_secs: u64, at: Micros, summaries: [Summary; 4]) {
        self.last_step = Some(uptime_secs / STEP_SECONDS);
        let classes = summaries.map(|s| ClassPoint {
            p99: s.p99,
            rate: s.count as f64 / STEP_SECONDS as f64,
            count: s.count,
        });
        self.points.push_back(Point { at, classes });
        while self.points.len() > POINTS {
            self.points.pop_front();
        }
    }

    pub fn points(&self) -> impl Iterator<Item = &Point> {
        self.points.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(count: u64, p99: f64) -> Summary {
        Summary {
            count,
            p99,
            ..Summary::default()
        }
    }

    #[test]
    fn one_point_per_step_and_an_hour_at_most() {
        let mut h = History::default();
        assert!(!h.due(10), "the first step is not over yet");
        assert!(h.due(30));
        h.record(30, 1, [summary(60, 0.002); 4]);
        assert!(!h.due(45), "the same step");
        assert!(h.due(60));
        let first = h.points().next().unwrap();
        assert_eq!(first.classes[0].rate, 2.0);
        assert_eq!(first.classes[0].p99, 0.002);
        for step in 2..200u64 {
            h.record(step * STEP_SECONDS, step as Micros, [summary(step, 0.0); 4]);
        }
        assert_eq!(h.points().count(), POINTS);
        // The oldest went first: the newest hour remains.
        assert_eq!(h.points().next().unwrap().at, (200 - POINTS) as Micros);
        assert_eq!(h.points().last().unwrap().at, 199);
    }
}
