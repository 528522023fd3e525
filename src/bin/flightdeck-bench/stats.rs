//! The driver's arithmetic: latency samples and their percentiles, and the check that an event
//! stream arrived exactly once and in order.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Every latency of one operation class, in microseconds, and its error count. Exact: the
/// percentiles are read from the sorted samples, not estimated.
#[derive(Default, Debug, Clone)]
pub struct Samples {
    micros: Vec<u32>,
    errors: u64,
}

impl Samples {
    pub fn record(&mut self, elapsed: Duration) {
        self.record_micros(elapsed.as_micros() as u64);
    }

    pub fn record_micros(&mut self, micros: u64) {
        self.micros.push(micros.min(u64::from(u32::MAX)) as u32);
    }

    pub fn error(&mut self) {
        self.errors += 1;
    }

    pub fn merge(&mut self, other: Samples) {
        self.micros.extend(other.micros);
        self.errors += other.errors;
    }

    pub fn len(&self) -> usize {
        self.micros.len()
    }

    pub fn summary(mut self) -> Summary {
        self.micros.sort_unstable();
        let ms = |p: f64| f64::from(percentile(&self.micros, p)) / 1000.0;
        Summary {
            count: self.micros.len() as u64,
            errors: self.errors,
            p50_ms: ms(50.0),
            p95_ms: ms(95.0),
            p99_ms: ms(99.0),
            max_ms: ms(100.0),
        }
    }
}

/// The nearest-rank percentile of sorted samples: the smallest sample with at least `p` percent
/// of all samples at or below it (0 for no samples).
pub fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Count, errors and percentiles of one class, in milliseconds.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, Default, PartialEq)]
pub struct Summary {
    pub count: u64,
    pub errors: u64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// What one WebSocket connection received of its stream, in arrival order.
#[derive(Default, Debug, Clone)]
pub struct StreamCheck {
    received: Vec<u64>,
    out_of_order: u64,
}

/// The verdict on a stream against the events the server committed to it.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamVerdict {
    pub expected: u64,
    pub delivered: u64,
    pub missing: u64,
    pub duplicated: u64,
    /// Arrived after an event with a higher seq.
    pub reordered: u64,
    /// Received but never committed to this stream.
    pub unexpected: u64,
}

impl StreamVerdict {
    pub fn add(&mut self, other: StreamVerdict) {
        self.expected += other.expected;
        self.delivered += other.delivered;
        self.missing += other.missing;
        self.duplicated += other.duplicated;
        self.reordered += other.reordered;
        self.unexpected += other.unexpected;
    }

    pub fn is_exact(&self) -> bool {
        self.missing == 0 && self.duplicated == 0 && self.reordered == 0 && self.unexpected == 0
    }
}

impl StreamCheck {
    /// Notes one received event. Seqs must rise strictly; anything else is a duplicate or a
    /// reordering (told apart in [`StreamCheck::verify`]).
    pub fn observe(&mut self, seq: u64) {
        if let Some(&last) = self.received.last()
            && seq < last
        {
            self.out_of_order += 1;
        }
        self.received.push(seq);
    }

    /// Whether every seq of `expected` (sorted) has been received.
    pub fn has_all(&self, expected: &[u64]) -> bool {
        let mut got = self.received.clone();
        got.sort_unstable();
        expected.iter().all(|s| got.binary_search(s).is_ok())
    }

    /// Compares what arrived with `expected`, the sorted seqs the server committed to this stream
    /// up to some point; received seqs above the last expected one are not judged.
    pub fn verify(&self, expected: &[u64]) -> StreamVerdict {
        let bound = expected.last().copied().unwrap_or(0);
        let judged: Vec<u64> = self
            .received
            .iter()
            .copied()
            .filter(|&s| s <= bound)
            .collect();
        let mut unique = judged.clone();
        unique.sort_unstable();
        unique.dedup();
        let duplicated = (judged.len() - unique.len()) as u64;
        let delivered = unique
            .iter()
            .filter(|s| expected.binary_search(s).is_ok())
            .count() as u64;
        // A duplicate also arrives "late"; count as reordered only what is not a duplicate.
        let reordered = self.out_of_order.saturating_sub(duplicated);
        StreamVerdict {
            expected: expected.len() as u64,
            delivered,
            missing: expected.len() as u64 - delivered,
            duplicated,
            reordered,
            unexpected: unique.len() as u64 - delivered,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        // 1..=100: the p-th percentile is p itself.
        let sorted: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&sorted, 50.0), 50);
        assert_eq!(percentile(&sorted, 95.0), 95);
        assert_eq!(percentile(&sorted, 99.0), 99);
        assert_eq!(percentile(&sorted, 100.0), 100);
        assert_eq!(percentile(&sorted, 0.0), 1);
        // Few samples: the p99 of 10 samples is the largest.
        let ten: Vec<u32> = (1..=10).map(|n| n * 10).collect();
        assert_eq!(percentile(&ten, 99.0), 100);
        assert_eq!(percentile(&ten, 50.0), 50);
        assert_eq!(percentile(&ten, 51.0), 60);
        assert_eq!(percentile(&[], 99.0), 0);
    }

    #[test]
    fn summary_sorts_counts_and_converts() {
        let mut s = Samples::default();
        for micros in [3000, 1000, 2000, 5000, 4000] {
            s.record_micros(micros);
        }
        s.error();
        let mut other = Samples::default();
        other.record(Duration::from_millis(6));
        other.error();
        s.merge(other);
        let summary = s.summary();
        assert_eq!(summary.count, 6);
        assert_eq!(summary.errors, 2);
        assert_eq!(summary.p50_ms, 3.0);
        assert_eq!(summary.p95_ms, 6.0);
        assert_eq!(summary.max_ms, 6.0);
    }

    #[test]
    fn stream_check_finds_missing_duplicated_reordered_and_unexpected() {
        let expected = [2, 4, 6, 8, 10];
        let exact = stream(&[2, 4, 6, 8, 10, 12]);
        let v = exact.verify(&expected);
        assert!(v.is_exact(), "{v:?}");
        assert_eq!((v.expected, v.delivered), (5, 5));
        assert!(exact.has_all(&expected));

        let missing = stream(&[2, 4, 8, 10]);
        let v = missing.verify(&expected);
        assert_eq!((v.missing, v.duplicated, v.reordered), (1, 0, 0));
        assert!(!missing.has_all(&expected));

        let duplicated = stream(&[2, 4, 4, 6, 8, 10]);
        assert_eq!(duplicated.verify(&expected).duplicated, 1);
        let replayed_again = stream(&[2, 4, 6, 2, 8, 10]);
        let v = replayed_again.verify(&expected);
        assert_eq!((v.duplicated, v.reordered, v.missing), (1, 0, 0));

        let reordered = stream(&[2, 6, 4, 8, 10]);
        let v = reordered.verify(&expected);
        assert_eq!((v.reordered, v.duplicated, v.missing), (1, 0, 0));
        assert!(!v.is_exact());

        let foreign = stream(&[2, 3, 4, 6, 8, 10]);
        assert_eq!(foreign.verify(&expected).unexpected, 1);
    }

    fn stream(seqs: &[u64]) -> StreamCheck {
        let mut s = StreamCheck::default();
        for &seq in seqs {
            s.observe(seq);
        }
        s
    }
}
