//! A cache budget of a few KiB over a hundred times more data: 2 000 pages of 200 bytes are
//! written, flushed, read back again and again (by one reader, then by two at once), then
//! rewritten. Resident bytes must stay within the budget plus a stated overhead:
//!
//! * values not yet durable (only durable values can be evicted): the pages the user wrote
//!   since the last flush (each keeps its whole merged value until the write is durable),
//!   and the pages the cleaner relocated since then (each one merged base of at most one
//!   page's size);
//! * at most one page per concurrent reader (a reader pages in, then runs the eviction
//!   hand; another reader's page-in may land just after the hand stopped).
//!
//! The maximum excess seen is printed.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use common::{Concat, charged_bytes, count};
use iobuf::storage::SimStorage;
use pagecache::{Config, PageCache, PageId};

const N_PAGES: u64 = 2000;
const PAGE_LEN_BYTES: usize = 200;
const BUDGET_BYTES: u64 = 4 << 10;
const FLUSH_EVERY_WRITES: u64 = 10;

fn config() -> Config {
    Config::builder()
        .segment_len_bytes(64 << 10)
        .io_buf_len_bytes(16 << 10)
        .n_io_bufs(4)
        .blob_threshold_bytes(8 << 10)
        .flush_every(None)
        .cache_budget_bytes(BUDGET_BYTES)
        .background_snapshots(false)
        .background_cleaning(false)
        .build()
        .expect("valid")
}

fn value(pid: u64, round: u64) -> Vec<u8> {
    (0..PAGE_LEN_BYTES)
        .map(|i| (pid as usize * 13 + round as usize * 7 + i) as u8)
        .collect()
}

/// One page's charge against the budget.
fn page_bytes() -> u64 {
    charged_bytes(PAGE_LEN_BYTES)
}

/// Tracks the writes not yet durable and the largest excess over the budget.
struct Tracker {
    unflushed_bytes: u64,
    relocations_at_flush: u64,
    max_resident_bytes: u64,
}

impl Tracker {
    fn new() -> Tracker {
        Tracker {
            unflushed_bytes: 0,
            relocations_at_flush: 0,
            max_resident_bytes: 0,
        }
    }

    fn wrote(&mut self, cache: &PageCache<Concat>, n_writes: u64) {
        self.unflushed_bytes += page_bytes();
        if n_writes.is_multiple_of(FLUSH_EVERY_WRITES) {
            cache.flush().expect("flush");
            self.unflushed_bytes = 0;
            self.relocations_at_flush = count(&cache.metrics().n_relocations);
        }
        self.check(cache, 0);
    }

    /// Checks resident bytes against the budget, the writes not yet durable and
    /// `n_readers` pages.
    fn check(&mut self, cache: &PageCache<Concat>, n_readers: u64) {
        let resident = cache.stats().resident_bytes;
        let relocated = count(&cache.metrics().n_relocations) - self.relocations_at_flush;
        let overhead = self.unflushed_bytes + relocated * page_bytes() + n_readers * page_bytes();
        assert!(
            resident <= BUDGET_BYTES + overhead,
            "resident {resident} > budget {BUDGET_BYTES} + overhead {overhead} \
             (unflushed {}, relocated pages {relocated}, readers {n_readers})",
            self.unflushed_bytes
        );
        self.max_resident_bytes = self.max_resident_bytes.max(resident);
    }
}

#[test]
fn resident_bytes_stay_within_the_budget() {
    let storage = Arc::new(SimStorage::new());
    let (cache, _) = PageCache::open(storage, config(), Concat).expect("open");
    let mut tracker = Tracker::new();
    let mut n_writes = 0u64;
    for pid in 0..N_PAGES {
        let (allocated, _) = cache.allocate(value(pid, 0)).expect("allocate");
        assert_eq!(allocated, PageId(pid));
        n_writes += 1;
        tracker.wrote(&cache, n_writes);
    }
    cache.flush().expect("flush");
    tracker.unflushed_bytes = 0;
    tracker.relocations_at_flush = count(&cache.metrics().n_relocations);

    // One reader: after each read the hand has run, so only the page just read may be over.
    for round in 0..3 {
        for pid in 0..N_PAGES {
            let page = cache.get(PageId(pid)).expect("get").expect("live");
            assert_eq!(page.value, value(pid, 0), "page {pid} round {round}");
            tracker.check(&cache, 1);
        }
    }

    // Two readers at once: each may be one page over while the other holds the hand.
    let max_seen = AtomicU64::new(0);
    std::thread::scope(|scope| {
        for reader in 0..2u64 {
            let cache = &cache;
            let max_seen = &max_seen;
            scope.spawn(move || {
                for round in 0..2 {
                    for i in 0..N_PAGES {
                        let pid = (i * 7 + reader * 1000 + round) % N_PAGES;
                        let page = cache.get(PageId(pid)).expect("get").expect("live");
                        assert_eq!(page.value, value(pid, 0));
                        let resident = cache.stats().resident_bytes;
                        max_seen.fetch_max(resident, Ordering::Relaxed);
                        assert!(
                            resident <= BUDGET_BYTES + 2 * page_bytes(),
                            "resident {resident} with two readers (reader {reader} round {round} i {i})"
                        );
                    }
                }
            });
        }
    });
    tracker.max_resident_bytes = tracker
        .max_resident_bytes
        .max(max_seen.load(Ordering::Relaxed));

    // Rewrite everything twice: the cleaner relocates, the hand evicts behind the flushes.
    for round in 1..3 {
        for pid in 0..N_PAGES {
            let page = cache.get(PageId(pid)).expect("get").expect("live");
            assert_eq!(page.value, value(pid, round - 1));
            cache
                .replace(PageId(pid), page.version, value(pid, round))
                .expect("replace")
                .expect("fresh version");
            n_writes += 1;
            tracker.wrote(&cache, n_writes);
        }
    }

    let metrics = cache.metrics();
    eprintln!(
        "budget {BUDGET_BYTES} B, max resident {} B (excess {} B, one page is {} B); \
         hit ratio {:.3}, page-ins {}, evicted {}, relocations {}",
        tracker.max_resident_bytes,
        tracker.max_resident_bytes as i64 - BUDGET_BYTES as i64,
        page_bytes(),
        metrics.cache_hit_ratio(),
        count(&metrics.n_page_ins),
        count(&metrics.n_fragments_evicted),
        count(&metrics.n_relocations),
    );
    assert!(count(&metrics.n_page_ins) >= 3 * N_PAGES);
    cache.close().expect("close");
}
