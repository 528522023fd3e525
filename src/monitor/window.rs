//! Windowed latency at bounded cost: a ring of fixed-width time slots, each a log-scale histogram
//! (8 buckets per doubling from 1 µs to about 2 minutes), plus request and error counts. Quantiles
//! over the last 1 or 5 minutes merge the slots in range and report the upper bound of the bucket
//! holding the rank (at most ~9 % above the true value). Memory is fixed per series.

use parking_lot::Mutex;

/// Width of one slot, in seconds.
pub const SLOT_SECONDS: u64 = 10;
/// Slots kept: five minutes plus the one being filled.
const SLOTS: usize = 31;
const SUB_BUCKETS: usize = 8;
const DOUBLINGS: usize = 27;
const BUCKETS: usize = 8 + SUB_BUCKETS * DOUBLINGS;

#[derive(Clone)]
struct Slot {
    /// Which slot of time this is (seconds / SLOT_SECONDS); a stale index means empty.
    index: u64,
    buckets: Box<[u32; BUCKETS]>,
    count: u64,
    errors: u64,
    max_micros: u64,
}

impl Slot {
    fn empty() -> Slot {
        Slot {
            index: u64::MAX,
            buckets: Box::new([0; BUCKETS]),
            count: 0,
            errors: 0,
            max_micros: 0,
        }
    }
}

/// Latency, rate and error figures over a window.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Summary {
    pub count: u64,
    pub errors: u64,
    /// Seconds.
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
    /// Per second over the window.
    pub rate: f64,
    pub error_ratio: f64,
}

/// One series of observations.
pub struct Window {
    slots: Mutex<Vec<Slot>>,
}

impl Default for Window {
    fn default() -> Window {
        Window {
            slots: Mutex::new(vec![Slot::empty(); SLOTS]),
        }
    }
}

fn bucket_of(micros: u64) -> usize {
    if micros < 8 {
        return micros as usize;
    }
    let doubling = 63 - micros.leading_zeros() as usize; // floor(log2), at least 3
    let sub = ((micros >> (doubling - 3)) & 7) as usize; // the three bits after the leading one
    (8 + (doubling - 3) * SUB_BUCKETS + sub).min(BUCKETS - 1)
}

/// The largest value (µs) that falls into `bucket`.
fn upper_bound(bucket: usize) -> u64 {
    if bucket < 8 {
        return bucket as u64;
    }
    let doubling = 3 + (bucket - 8) / SUB_BUCKETS;
    let sub = ((bucket - 8) % SUB_BUCKETS) as u64;
    ((9 + sub) << (doubling - 3)) - 1
}

impl Window {
    /// Records one observation at `now_secs` (seconds on any monotonic clock).
    pub fn record(&self, now_secs: u64, micros: u64, error: bool) {
        let index = now_secs / SLOT_SECONDS;
        let mut slots = self.slots.lock();
        let slot = &mut slots[(index % SLOTS as u64) as usize];
        if slot.index != index {
            *slot = Slot {
                index,
                ..Slot::empty()
            };
        }
        slot.buckets[bucket_of(micros)] += 1;
        slot.count += 1;
        slot.errors += u64::from(error);
        slot.max_micros = slot.max_micros.max(micros);
    }

    /// Figures over the last `seconds` (rounded up to whole slots) ending at `now_secs`.
    pub fn summary(&self, now_secs: u64, seconds: u64) -> Summary {
        summarize(&[self], now_secs, seconds)
    }
}

/// Figures over several series merged, over the last `seconds` ending at `now_secs`.
pub fn summarize(windows: &[&Window], now_secs: u64, seconds: u64) -> Summary {
    let newest = now_secs / SLOT_SECONDS;
    let span = seconds.div_ceil(SLOT_SECONDS).clamp(1, SLOTS as u64 - 1);
    let oldest = newest.saturating_sub(span - 1);
    let mut merged = vec![0u64; BUCKETS];
    let (mut count, mut errors, mut max) = (0u64, 0u64, 0u64);
    for window in windows {
        for slot in window
            .slots
            .lock()
            .iter()
            .filter(|s| s.index != u64::MAX && s.index >= oldest && s.index <= newest)
        {
            for (m, b) in merged.iter_mut().zip(slot.buckets.iter()) {
                *m += u64::from(*b);
            }
            count += slot.count;
            errors += slot.errors;
            max = max.max(slot.max_micros);
        }
    }
    let quantile = |q: f64| -> f64 {
        if count == 0 {
            return 0.0;
        }
        let rank = ((count as f64 * q).ceil() as u64).max(1);
        let mut seen = 0;
        for (bucket, n) in merged.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return upper_bound(bucket).min(max) as f64 / 1e6;
            }
        }
        max as f64 / 1e6
    };
    let covered = (span * SLOT_SECONDS) as f64;
    Summary {
        count,
        errors,
        p50: quantile(0.50),
        p95: quantile(0.95),
        p99: quantile(0.99),
        max: max as f64 / 1e6,
        rate: count as f64 / covered,
        error_ratio: if count == 0 {
            0.0
        } else {
            errors as f64 / count as f64
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_bound_their_values() {
        let mut last = 0;
        for micros in [
            0u64,
            1,
            2,
            7,
            8,
            9,
            15,
            16,
            100,
            1000,
            1234,
            50_000,
            1_000_000,
            10_000_000,
            100_000_000,
        ] {
            let b = bucket_of(micros);
            assert!(b >= last, "{micros}");
            last = b;
            assert!(
                upper_bound(b) >= micros,
                "{micros} in bucket {b} bounded by {}",
                upper_bound(b)
            );
            if micros >= 8 && b < BUCKETS - 1 {
                assert!(
                    upper_bound(b) as f64 <= micros as f64 * 1.13 + 1.0,
                    "{micros}: {}",
                    upper_bound(b)
                );
            }
        }
    }

    #[test]
    fn quantiles_over_one_and_five_minutes() {
        let w = Window::default();
        // Minute 0: 100 fast requests; minute 4: 100 slow ones, 5 of them errors.
        for i in 0..100 {
            w.record(i % 60, 100, false);
            w.record(240 + i % 60, 200_000, i < 5);
        }
        let last_minute = w.summary(299, 60);
        assert_eq!(last_minute.count, 100);
        assert!((0.2..0.23).contains(&last_minute.p50), "{last_minute:?}");
        assert_eq!(last_minute.errors, 5);
        assert!((last_minute.error_ratio - 0.05).abs() < 1e-9);
        let five = w.summary(299, 300);
        assert_eq!(five.count, 200);
        assert!(five.p50 < 0.00012, "{five:?}");
        assert!(five.p99 >= 0.2, "{five:?}");
        assert_eq!(five.max, 0.2);
        // Ten minutes later everything has aged out.
        assert_eq!(w.summary(899, 300).count, 0);
        // Several series merge.
        let other = Window::default();
        other.record(299, 5_000_000, true);
        let both = summarize(&[&w, &other], 299, 60);
        assert_eq!((both.count, both.errors), (101, 6));
        assert_eq!(both.max, 5.0);
    }
}
