//! Counters and latency histograms of the page cache, readable while it runs.
//!
//! Counters bumped on every operation (gets, hits, writes) are striped over cache-padded
//! cells so two cores reading and writing pages do not fight over one cache line; the rare
//! ones are plain relaxed atomics. The log's own figures (reserve, write, sync) are in
//! [`iobuf::LogMetrics`], reachable through [`crate::PageCache::log_metrics`].

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crossbeam_utils::CachePadded;
pub use iobuf::LatencyHistogram;

const N_STRIPES: usize = 16;

/// A counter that many threads bump without sharing a cache line.
#[derive(Debug, Default)]
pub struct Counter {
    stripes: [CachePadded<AtomicU64>; N_STRIPES],
}

/// This thread's stripe, below [`N_STRIPES`]: threads take stripes in turn as they first
/// ask (also used by the cleaner's index of base records).
pub(crate) fn stripe_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local!(static INDEX: Cell<usize> = const { Cell::new(usize::MAX) });
    INDEX.with(|index| {
        if index.get() == usize::MAX {
            index.set(NEXT.fetch_add(1, Ordering::Relaxed) % N_STRIPES);
        }
        index.get()
    })
}

impl Counter {
    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.stripes[stripe_index()].fetch_add(n, Ordering::Relaxed);
    }

    /// The total so far.
    pub fn get(&self) -> u64 {
        self.stripes
            .iter()
            .map(|stripe| stripe.load(Ordering::Relaxed))
            .sum()
    }
}

/// What the page cache has done since it was opened.
#[derive(Debug, Default)]
pub struct Metrics {
    /// `get` calls.
    pub n_gets: Counter,
    /// `get` calls answered from memory alone.
    pub n_cache_hits: Counter,
    /// Pages read back from disk (one or more fragments each).
    pub n_page_ins: AtomicU64,
    /// Fragments read back from disk.
    pub n_fragments_paged_in: AtomicU64,
    /// Values dropped from memory by the eviction hand (a page's merged value counts once).
    pub n_fragments_evicted: AtomicU64,
    /// Pages the eviction hand looked at (its work, whether it evicted or not).
    pub n_eviction_visits: AtomicU64,
    /// Successful writes: allocations, links, replaces and frees.
    pub n_writes: Counter,
    /// Writes refused because the caller's version was stale.
    pub n_stale: AtomicU64,
    /// Writes that lost a CAS race to an eviction, page-in or relocation and retried.
    pub n_write_retries: AtomicU64,
    /// Chains merged into a new base by a writer.
    pub n_consolidations: AtomicU64,
    /// Pages rewritten by the cleaner.
    pub n_relocations: AtomicU64,
    /// Bytes of records the cleaner wrote.
    pub relocated_bytes: AtomicU64,
    /// Base records the cleaner examined (relocating the pages still using them). A page
    /// whose relocation failed is counted again when it is retried.
    pub n_records_examined: AtomicU64,
    /// Of `n_records_examined`, those the background cleaner examined (the rest were
    /// writes' shares).
    pub n_records_examined_in_background: AtomicU64,
    /// Segments the cleaner emptied and released.
    pub n_segments_cleaned: AtomicU64,
    /// Segments the cleaner read back from the data file to find their base records
    /// (written before open, or left out of its index at the cap); it knows the others'.
    /// Counted when read, so it can be one ahead of the segments cleaned.
    pub n_segments_read_back: AtomicU64,
    /// Snapshots written.
    pub n_snapshots: AtomicU64,
    /// Time to read a page's missing fragments back.
    pub page_in_latency: LatencyHistogram,
    /// Time of one pass of the eviction hand.
    pub eviction_latency: LatencyHistogram,
    /// Time of one write's share of cleaning (shares that examined nothing are not
    /// recorded).
    pub cleaning_latency: LatencyHistogram,
    /// Time to take and write a snapshot.
    pub snapshot_latency: LatencyHistogram,
}

impl Metrics {
    pub(crate) fn bump(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Reads a plain counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Cache hits over gets (1.0 when nothing was read).
    pub fn cache_hit_ratio(&self) -> f64 {
        let n_gets = self.n_gets.get();
        if n_gets == 0 {
            return 1.0;
        }
        self.n_cache_hits.get() as f64 / n_gets as f64
    }
}
