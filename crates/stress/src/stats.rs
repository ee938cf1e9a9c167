//! Latency histograms per operation kind, and how figures are printed.

use std::time::Duration;

use hdrhistogram::Histogram;

/// The longest latency a histogram tells apart: an hour. Longer ones are recorded as an hour.
const MAX_TRACKED_NANOS: u64 = 3_600_000_000_000;

/// Latencies of one operation kind in nanoseconds, 3 significant digits. Each worker thread
/// keeps its own (recording is then a plain increment) and they are merged at the end.
#[derive(Debug, Clone)]
pub struct Latencies(Histogram<u64>);

impl Default for Latencies {
    fn default() -> Self {
        // The bounds are constants that hdrhistogram accepts (low >= 1, high >= 2 * low,
        // sigfig <= 5), so this cannot fail.
        Latencies(
            Histogram::new_with_bounds(1, MAX_TRACKED_NANOS, 3)
                .expect("constant histogram bounds are valid"),
        )
    }
}

impl Latencies {
    /// Records one operation's latency.
    pub fn record(&mut self, elapsed: Duration) {
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.0.saturating_record(nanos.clamp(1, MAX_TRACKED_NANOS));
    }

    /// Adds another thread's latencies.
    pub fn merge(&mut self, other: &Latencies) {
        // Both have the same bounds (they come from `default`), so no value is out of range.
        self.0
            .add(&other.0)
            .expect("histograms with equal bounds always merge");
    }

    /// How many operations were recorded.
    pub fn count(&self) -> u64 {
        self.0.len()
    }
}

/// One operation kind's figures for the report.
#[derive(Clone, Debug, PartialEq)]
pub struct OpStats {
    /// The operation (`append`, `make_stable`, `open`).
    pub name: &'static str,
    /// Operations done.
    pub count: u64,
    /// Operations per second of wall time.
    pub per_second: f64,
    /// Median latency, nanoseconds.
    pub p50_nanos: u64,
    /// 90th percentile, nanoseconds.
    pub p90_nanos: u64,
    /// 99th percentile, nanoseconds.
    pub p99_nanos: u64,
    /// 99.9th percentile, nanoseconds.
    pub p999_nanos: u64,
    /// Longest, nanoseconds.
    pub max_nanos: u64,
}

impl OpStats {
    /// The figures of `latencies` over a run of `elapsed`.
    pub fn new(name: &'static str, latencies: &Latencies, elapsed: Duration) -> OpStats {
        let histogram = &latencies.0;
        let count = histogram.len();
        let at = |quantile: f64| {
            if count == 0 {
                0
            } else {
                histogram.value_at_quantile(quantile)
            }
        };
        OpStats {
            name,
            count,
            per_second: count as f64 / elapsed.as_secs_f64().max(1e-9),
            p50_nanos: at(0.5),
            p90_nanos: at(0.9),
            p99_nanos: at(0.99),
            p999_nanos: at(0.999),
            max_nanos: if count == 0 { 0 } else { histogram.max() },
        }
    }
}

/// `1.23 µs`, `45.6 ms`, `2.00 s`.
pub fn fmt_nanos(nanos: u64) -> String {
    let nanos = nanos as f64;
    if nanos < 1e3 {
        format!("{nanos:.0} ns")
    } else if nanos < 1e6 {
        format!("{:.2} µs", nanos / 1e3)
    } else if nanos < 1e9 {
        format!("{:.2} ms", nanos / 1e6)
    } else {
        format!("{:.2} s", nanos / 1e9)
    }
}

/// `1.23 M/s`, `4.56 k/s`, `7.8 /s`: the benchmarks' format, so figures read the same in both.
pub use bench_support::fmt_rate;

/// Decimal megabytes, like `dd`: `123.4 MB`.
pub fn fmt_mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_the_merged_histograms() {
        let mut a = Latencies::default();
        let mut b = Latencies::default();
        for micros in 1..=50 {
            a.record(Duration::from_micros(micros));
        }
        for micros in 51..=100 {
            b.record(Duration::from_micros(micros));
        }
        a.merge(&b);
        let stats = OpStats::new("append", &a, Duration::from_secs(2));
        assert_eq!(stats.count, 100);
        assert_eq!(stats.per_second, 50.0);
        assert!((49_900..=50_100).contains(&stats.p50_nanos), "{stats:?}");
        assert!((99_000..=100_100).contains(&stats.p99_nanos), "{stats:?}");
        assert!(stats.max_nanos >= 99_900, "{stats:?}");
        let empty = OpStats::new("none", &Latencies::default(), Duration::ZERO);
        assert_eq!((empty.count, empty.p50_nanos, empty.max_nanos), (0, 0, 0));
    }

    #[test]
    fn figures_print_with_units() {
        assert_eq!(fmt_nanos(999), "999 ns");
        assert_eq!(fmt_nanos(1_500), "1.50 µs");
        assert_eq!(fmt_nanos(2_000_000_000), "2.00 s");
        assert_eq!(fmt_rate(2.5e6), "2.50 M/s");
        assert_eq!(fmt_rate(12.0), "12.0 /s");
        assert_eq!(fmt_mb(123_400_000), "123.4 MB");
    }
}
