//! Counters and latency histograms of the log, readable while it runs.
//!
//! Everything is a relaxed atomic: metrics never order anything, and recording one costs an
//! uncontended-in-the-common-case `fetch_add`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A latency histogram with power-of-two buckets (bucket `i` holds durations in
/// `[2^i, 2^(i+1))` nanoseconds). Coarse (a factor of two) but lock-free and fixed-size.
#[derive(Debug)]
pub struct LatencyHistogram {
    buckets: [AtomicU64; 64],
    sum_nanos: AtomicU64,
    max_nanos: AtomicU64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_nanos: AtomicU64::new(0),
            max_nanos: AtomicU64::new(0),
        }
    }
}

impl LatencyHistogram {
    /// Records one duration.
    pub fn record(&self, elapsed: Duration) {
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX).max(1);
        let bucket = 63 - nanos.leading_zeros() as usize;
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
        self.max_nanos.fetch_max(nanos, Ordering::Relaxed);
    }

    /// How many durations were recorded.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// The sum of all recorded durations.
    pub fn total(&self) -> Duration {
        Duration::from_nanos(self.sum_nanos.load(Ordering::Relaxed))
    }

    /// The longest recorded duration.
    pub fn max(&self) -> Duration {
        Duration::from_nanos(self.max_nanos.load(Ordering::Relaxed))
    }

    /// An upper bound of the `quantile` (0.0 to 1.0) latency: the top of the bucket that
    /// holds it. `None` when nothing was recorded.
    pub fn quantile_upper_bound(&self, quantile: f64) -> Option<Duration> {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((quantile.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (bucket, count) in counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                let upper = if bucket >= 63 {
                    u64::MAX
                } else {
                    (1u64 << (bucket + 1)) - 1
                };
                return Some(Duration::from_nanos(
                    upper.min(self.max_nanos.load(Ordering::Relaxed)),
                ));
            }
        }
        Some(self.max())
    }
}

/// What the log counts. Read it with `Log::metrics()`.
#[derive(Debug, Default)]
pub struct LogMetrics {
    /// Messages reserved (completed or aborted), counted when their buffer is written.
    pub n_reservations: AtomicU64,
    /// Reservations aborted (explicitly or by drop).
    pub n_aborts: AtomicU64,
    /// Bytes of frames reserved, counted when their buffer is written.
    pub reserved_bytes: AtomicU64,
    /// IO buffers written to the data file.
    pub n_buffer_writes: AtomicU64,
    /// Bytes written to the data file.
    pub written_bytes: AtomicU64,
    /// `fdatasync` calls on the data file.
    pub n_syncs: AtomicU64,
    /// Messages stored as blob files.
    pub n_blobs_written: AtomicU64,
    /// Blob files deleted because their message was released.
    pub n_blobs_deleted: AtomicU64,
    /// Times a reserving thread had to sleep because the ring was full or rolling.
    pub n_reserve_waits: AtomicU64,
    /// Time from the start of `reserve` to a claimed range (one claim in 64 per thread is
    /// timed: reading the clock costs as much as a claim).
    pub reserve_latency: LatencyHistogram,
    /// Time of one buffer write (pwrite).
    pub write_latency: LatencyHistogram,
    /// Time of one data sync (fdatasync).
    pub sync_latency: LatencyHistogram,
}

impl LogMetrics {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_quantiles_bound_the_recorded_values() {
        let histogram = LatencyHistogram::default();
        assert_eq!(histogram.quantile_upper_bound(0.5), None);
        for micros in 1..=100u64 {
            histogram.record(Duration::from_micros(micros));
        }
        assert_eq!(histogram.count(), 100);
        let p50 = histogram.quantile_upper_bound(0.5).unwrap();
        assert!(
            p50 >= Duration::from_micros(50) && p50 < Duration::from_micros(100),
            "{p50:?}"
        );
        assert_eq!(
            histogram.quantile_upper_bound(1.0).unwrap(),
            Duration::from_micros(100)
        );
        assert_eq!(histogram.max(), Duration::from_micros(100));
    }
}
