//! What a timed loop produced: a count and the wall time it took.

use std::time::Duration;

/// Operations done and the wall time they took: the result of a timed loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Measured {
    /// Operations completed inside the timing.
    pub n_ops: u64,
    /// The wall time they took.
    pub elapsed: Duration,
}

impl Measured {
    /// No operations in no time: where a sum of [`Measured::add`]s starts.
    pub const ZERO: Measured = Measured {
        n_ops: 0,
        elapsed: Duration::ZERO,
    };

    /// Adds `other`'s operations and time to these, for one figure measured in rounds.
    pub fn add(&mut self, other: Measured) {
        self.n_ops += other.n_ops;
        self.elapsed += other.elapsed;
    }

    /// Operations per second. An `elapsed` below 1 ns counts as 1 ns, so the rate is finite.
    pub fn per_second(&self) -> f64 {
        self.n_ops as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Bytes written and the wall time they took: the result of
/// [`ceiling_sequential_write`](crate::ceiling_sequential_write).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Written {
    /// Bytes written inside the timing.
    pub total_bytes: u64,
    /// The wall time they took, the final sync included.
    pub elapsed: Duration,
}

impl Written {
    /// Bytes per second. An `elapsed` below 1 ns counts as 1 ns, so the rate is finite.
    pub fn bytes_per_second(&self) -> f64 {
        self.total_bytes as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_add_up_and_rates_stay_finite() {
        let mut total = Measured::ZERO;
        for _ in 0..4 {
            total.add(Measured {
                n_ops: 250,
                elapsed: Duration::from_millis(250),
            });
        }
        assert_eq!(total.n_ops, 1000);
        assert_eq!(total.per_second(), 1000.0);
        assert!(Measured::ZERO.per_second().is_finite());
        let written = Written {
            total_bytes: 3 << 20,
            elapsed: Duration::from_secs(3),
        };
        assert_eq!(written.bytes_per_second(), (1 << 20) as f64);
    }
}
