//! The page cache's configuration: a builder, validated once into a [`Config`].

use std::time::Duration;

use iobuf::{LogConfig, ValidLogConfig};

/// Why a configuration was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The log's settings (segment and buffer sizes, buffer count, blob threshold, flush
    /// interval) were refused.
    #[error(transparent)]
    Log(#[from] iobuf::ConfigError),
    /// A chain must be allowed at least a base and one delta before it is consolidated.
    #[error("consolidate_after_fragments is {value}; it must be at least 2")]
    ConsolidateTooEarly {
        /// What was asked for.
        value: u32,
    },
    /// The cleaner's space target must leave room to work and be a finite number.
    #[error("space_amplification_target is {value}; it must be between {min} and {max}")]
    SpaceTarget {
        /// What was asked for.
        value: f64,
        /// The smallest accepted value.
        min: f64,
        /// The largest accepted value.
        max: f64,
    },
    /// A snapshot interval of zero would snapshot continuously.
    #[error("snapshot_every_bytes must be at least one segment ({min} bytes), got {value}")]
    SnapshotInterval {
        /// What was asked for.
        value: u64,
        /// The smallest accepted value.
        min: u64,
    },
    /// The id generator must persist at least one id at a time.
    #[error("id_persist_interval must be at least 1")]
    IdPersistInterval,
    /// The cleaner must be allowed to look at one base record per write at least.
    #[error("clean_records_per_write must be at least 1")]
    CleanRecordsPerWrite,
}

/// Settings of a page cache. Build one with [`Config::builder`].
///
/// Two of them are written into the directory and cannot change for an existing page cache:
/// the segment length and the format version (opening with another segment length is
/// [`crate::Error::ConfigMismatch`]). All others may change from one open to the next.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub(crate) log: ValidLogConfig,
    pub(crate) cache_budget_bytes: u64,
    pub(crate) consolidate_after_fragments: u32,
    pub(crate) space_amplification_target: f64,
    pub(crate) snapshot_every_bytes: u64,
    pub(crate) background_snapshots: bool,
    pub(crate) background_cleaning: bool,
    pub(crate) home_cells: bool,
    pub(crate) id_persist_interval: u64,
    pub(crate) clean_records_per_write: u32,
}

impl Config {
    /// A builder holding the defaults.
    pub fn builder() -> ConfigBuilder {
        ConfigBuilder::default()
    }

    /// The log's configuration.
    pub fn log(&self) -> &ValidLogConfig {
        &self.log
    }

    /// Bytes of resident fragments the cache keeps at most (see the crate doc for the
    /// overhead on top).
    pub fn cache_budget_bytes(&self) -> u64 {
        self.cache_budget_bytes
    }

    /// A chain reaching this many fragments is consolidated by the writer into a new base.
    pub fn consolidate_after_fragments(&self) -> u32 {
        self.consolidate_after_fragments
    }

    /// The cleaner keeps the log's span below this multiple of the live bytes.
    pub fn space_amplification_target(&self) -> f64 {
        self.space_amplification_target
    }

    /// A snapshot is taken each time this many bytes of log were written since the last one.
    pub fn snapshot_every_bytes(&self) -> u64 {
        self.snapshot_every_bytes
    }

    /// Whether a background thread takes snapshots.
    pub fn background_snapshots(&self) -> bool {
        self.background_snapshots
    }

    /// Whether a background thread cleans (writes then take a share only when it falls
    /// behind).
    pub fn background_cleaning(&self) -> bool {
        self.background_cleaning
    }

    /// Whether entries are built in home cells (see [`ConfigBuilder::home_cells`]).
    pub fn home_cells(&self) -> bool {
        self.home_cells
    }

    /// How many ids the id generator persists ahead.
    pub fn id_persist_interval(&self) -> u64 {
        self.id_persist_interval
    }

    /// How many base records a write may examine for cleaning.
    pub fn clean_records_per_write(&self) -> u32 {
        self.clean_records_per_write
    }
}

/// Builds a [`Config`]; every setter has a sensible default. [`ConfigBuilder::build`] checks
/// every limit and returns a typed error, never panics.
#[derive(Clone, Debug, PartialEq)]
pub struct ConfigBuilder {
    log: LogConfig,
    cache_budget_bytes: u64,
    consolidate_after_fragments: u32,
    space_amplification_target: f64,
    snapshot_every_bytes: u64,
    background_snapshots: bool,
    background_cleaning: bool,
    home_cells: bool,
    id_persist_interval: u64,
    clean_records_per_write: u32,
}

impl Default for ConfigBuilder {
    fn default() -> Self {
        ConfigBuilder {
            log: LogConfig::default(),
            cache_budget_bytes: 256 << 20,
            consolidate_after_fragments: 8,
            space_amplification_target: 1.3,
            snapshot_every_bytes: 32 << 20,
            background_snapshots: true,
            background_cleaning: true,
            home_cells: true,
            id_persist_interval: 1 << 20,
            clean_records_per_write: 16,
        }
    }
}

/// The smallest and largest accepted [`ConfigBuilder::space_amplification_target`].
const SPACE_TARGET_RANGE: (f64, f64) = (1.1, 100.0);

impl ConfigBuilder {
    /// Length of one segment of the data file (a power of two). Persisted: it cannot change
    /// for an existing page cache. Default 2 MiB (see `iobuf::LogConfig::segment_len_bytes`).
    pub fn segment_len_bytes(mut self, segment_len_bytes: u64) -> Self {
        self.log.segment_len_bytes = segment_len_bytes;
        self
    }

    /// Length of one IO buffer (bounds the largest fragment stored inline). Default 1 MiB.
    pub fn io_buf_len_bytes(mut self, io_buf_len_bytes: u32) -> Self {
        self.log.io_buf_len_bytes = io_buf_len_bytes;
        self
    }

    /// Number of IO buffers. Default 8.
    pub fn n_io_bufs(mut self, n_io_bufs: u32) -> Self {
        self.log.n_io_bufs = n_io_bufs;
        self
    }

    /// Fragments whose record is longer than this go to a file of their own. Default 64 KiB.
    pub fn blob_threshold_bytes(mut self, blob_threshold_bytes: u32) -> Self {
        self.log.blob_threshold_bytes = blob_threshold_bytes;
        self
    }

    /// How often a background flusher makes everything durable; `None` leaves durability to
    /// explicit `flush`/`make_stable` calls. Default 200 ms.
    pub fn flush_every(mut self, flush_every: Option<Duration>) -> Self {
        self.log.flush_every = flush_every;
        self
    }

    /// Bytes of resident values the cache keeps at most. Zero keeps nothing resident beyond
    /// the pages whose latest writes are not durable yet. Default 256 MiB.
    pub fn cache_budget_bytes(mut self, cache_budget_bytes: u64) -> Self {
        self.cache_budget_bytes = cache_budget_bytes;
        self
    }

    /// A chain reaching this many fragments is merged by the writer into a new base. At least
    /// 2. Default 8.
    pub fn consolidate_after_fragments(mut self, n_fragments: u32) -> Self {
        self.consolidate_after_fragments = n_fragments;
        self
    }

    /// The cleaner relocates live pages out of the oldest segments while the log spans more
    /// than this multiple of the live bytes (plus a few segments of slack; see the crate doc).
    /// Between 1.1 and 100. Default 1.3, which keeps the data file within 1.5x the live data
    /// under uniform overwrites once the store is large next to a few segments (see the
    /// crate doc's section on cleaning).
    pub fn space_amplification_target(mut self, target: f64) -> Self {
        self.space_amplification_target = target;
        self
    }

    /// Take a snapshot of the page table each time this many bytes of log were written since
    /// the last one; a restart replays at most about this much log. At least one segment.
    /// Default 32 MiB.
    pub fn snapshot_every_bytes(mut self, snapshot_every_bytes: u64) -> Self {
        self.snapshot_every_bytes = snapshot_every_bytes;
        self
    }

    /// Whether a background thread takes snapshots (default `true`). Tests that want every
    /// snapshot on their own thread turn it off and call [`crate::PageCache::snapshot`].
    pub fn background_snapshots(mut self, enabled: bool) -> Self {
        self.background_snapshots = enabled;
        self
    }

    /// Whether a background thread does the cleaning (default `true`). It relocates pages
    /// while the log spans more than half a segment below what the space target allows, so
    /// writes, which clean from the target on, find nothing to do while it keeps up; when it
    /// falls behind they take their shares as always, and the space target holds as without
    /// it (give or take a segment or two when threads outnumber cores; see `cleaner_thread.rs`).
    /// With one writer and a core to spare this takes cleaning off the writer's path
    /// (`bench_pages` B1). Off, only the writes clean, each at most as much as
    /// [`clean_records_per_write`](Self::clean_records_per_write) and the pacing allow, and
    /// no other thread relocates pages: tests that want the work on their own thread turn it
    /// off.
    pub fn background_cleaning(mut self, enabled: bool) -> Self {
        self.background_cleaning = enabled;
        self
    }

    /// Whether a page's entries are built in its two home cells (default `true`), places at
    /// an address computed from its id, so that a read loads the entry together with its
    /// table slot instead of after it: on `bench_pages`' B1 mix (50/50 link/get on 100 000
    /// pages, one thread) a cache with them did 11 % more operations per second than one
    /// without, in alternating windows within one process. The price is memory:
    /// two entries per id (384 bytes with `Vec` fragments) in blocks of 2048 ids, against
    /// one entry per page on the heap without them (see the crate doc, and
    /// [`Stats::home_cell_bytes`](crate::Stats::home_cell_bytes)). Turn them off when page
    /// metadata must stay small, or when pages are so few and hot that their entries stay in
    /// the CPU's caches anyway.
    pub fn home_cells(mut self, enabled: bool) -> Self {
        self.home_cells = enabled;
        self
    }

    /// The id generator makes this many ids durable at a time (one sync per interval). Ids not
    /// handed out before a restart are skipped. Default 2^20.
    pub fn id_persist_interval(mut self, interval: u64) -> Self {
        self.id_persist_interval = interval;
        self
    }

    /// Each write examines at most this many base records of the oldest segment for
    /// cleaning (each may cost a page's rewrite; the other records need no look) while the
    /// log span is within a quarter segment of the space target, and up to 16 times as
    /// many when the span runs further past. This bounds the cleaning work (and latency) a
    /// write takes on. Default 16.
    pub fn clean_records_per_write(mut self, n_records: u32) -> Self {
        self.clean_records_per_write = n_records;
        self
    }

    /// Checks every setting.
    pub fn build(self) -> Result<Config, ConfigError> {
        let log = self.log.validate()?;
        if self.consolidate_after_fragments < 2 {
            return Err(ConfigError::ConsolidateTooEarly {
                value: self.consolidate_after_fragments,
            });
        }
        let (min, max) = SPACE_TARGET_RANGE;
        let target = self.space_amplification_target;
        if !(min..=max).contains(&target) {
            // Also refuses NaN, for which every comparison is false.
            return Err(ConfigError::SpaceTarget {
                value: target,
                min,
                max,
            });
        }
        if self.snapshot_every_bytes < log.segment_len_bytes() {
            return Err(ConfigError::SnapshotInterval {
                value: self.snapshot_every_bytes,
                min: log.segment_len_bytes(),
            });
        }
        if self.id_persist_interval == 0 {
            return Err(ConfigError::IdPersistInterval);
        }
        if self.clean_records_per_write == 0 {
            return Err(ConfigError::CleanRecordsPerWrite);
        }
        Ok(Config {
            log,
            cache_budget_bytes: self.cache_budget_bytes,
            consolidate_after_fragments: self.consolidate_after_fragments,
            space_amplification_target: target,
            snapshot_every_bytes: self.snapshot_every_bytes,
            background_snapshots: self.background_snapshots,
            background_cleaning: self.background_cleaning,
            home_cells: self.home_cells,
            id_persist_interval: self.id_persist_interval,
            clean_records_per_write: self.clean_records_per_write,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_build() {
        let config = Config::builder().build().expect("defaults are valid");
        assert_eq!(config.consolidate_after_fragments(), 8);
        assert_eq!(config.log().segment_len_bytes(), 2 << 20);
    }

    #[test]
    fn every_limit_is_a_typed_error() {
        assert!(matches!(
            Config::builder().segment_len_bytes(1000).build(),
            Err(ConfigError::Log(_))
        ));
        assert!(matches!(
            Config::builder().consolidate_after_fragments(1).build(),
            Err(ConfigError::ConsolidateTooEarly { value: 1 })
        ));
        for target in [f64::NAN, 0.5, 1.0, f64::INFINITY] {
            assert!(matches!(
                Config::builder().space_amplification_target(target).build(),
                Err(ConfigError::SpaceTarget { .. })
            ));
        }
        assert!(matches!(
            Config::builder().snapshot_every_bytes(0).build(),
            Err(ConfigError::SnapshotInterval { .. })
        ));
        assert!(matches!(
            Config::builder().id_persist_interval(0).build(),
            Err(ConfigError::IdPersistInterval)
        ));
        assert!(matches!(
            Config::builder().clean_records_per_write(0).build(),
            Err(ConfigError::CleanRecordsPerWrite)
        ));
        assert!(matches!(
            Config::builder().flush_every(Some(Duration::ZERO)).build(),
            Err(ConfigError::Log(_))
        ));
    }
}
