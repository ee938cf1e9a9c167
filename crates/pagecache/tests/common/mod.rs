//! Shared pieces of the page cache's integration tests: a byte-string materializer, the tiny
//! configurations that make eviction, cleaning and snapshots run constantly, and small
//! helpers to read counters and whole stores.
//!
//! Each test binary uses only part of this module, hence the `dead_code` allowance.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use pagecache::{Config, DecodeError, Materializer, PageCache, PageId};

/// Fragments are byte strings; a page's value is their concatenation, so the value shows
/// every fragment in chain order and a lost or duplicated fragment is visible.
pub struct Concat;

impl Materializer for Concat {
    type Fragment = Vec<u8>;

    fn encode(&self, fragment: &Vec<u8>, out: &mut Vec<u8>) {
        out.extend_from_slice(fragment);
    }

    fn decode(&self, bytes: &[u8]) -> Result<Vec<u8>, DecodeError> {
        Ok(bytes.to_vec())
    }

    fn merge(&self, chain: &[&Vec<u8>]) -> Vec<u8> {
        chain
            .iter()
            .flat_map(|fragment| fragment.iter().copied())
            .collect()
    }

    fn size_in_bytes(&self, fragment: &Vec<u8>) -> usize {
        fragment.len() + std::mem::size_of::<Vec<u8>>()
    }
}

/// What `Concat` charges the cache for a fragment of `len_bytes` bytes.
pub fn charged_bytes(len_bytes: usize) -> u64 {
    (len_bytes + std::mem::size_of::<Vec<u8>>()) as u64
}

/// The proptest case count: `PROPTEST_CASES`, else `default`.
pub fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

/// The smallest useful store: 4 KiB segments, two 1 KiB buffers, a 1 KiB cache, chains
/// consolidated at 3 fragments, a snapshot every two segments. Durability only when the test
/// asks (no flusher thread). With `background_threads`, snapshots and cleaning run on their
/// own threads too; without, everything runs on the test's threads, in an order the test
/// decides.
pub fn tiny_config(background_threads: bool) -> Config {
    Config::builder()
        .segment_len_bytes(4096)
        .io_buf_len_bytes(1024)
        .n_io_bufs(2)
        .blob_threshold_bytes(256)
        .flush_every(None)
        .cache_budget_bytes(1024)
        .consolidate_after_fragments(3)
        .snapshot_every_bytes(8 << 10)
        .background_snapshots(background_threads)
        .background_cleaning(background_threads)
        .id_persist_interval(4)
        .build()
        .expect("a valid tiny configuration")
}

/// Reads a plain counter of [`pagecache::Metrics`].
pub fn count(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// Every live page of the store, by reading each id below the high-water mark.
pub fn read_all<M: Materializer>(cache: &PageCache<M>) -> BTreeMap<PageId, M::Fragment> {
    let mut pages = BTreeMap::new();
    for pid in 0..cache.stats().page_id_high_water {
        if let Some(page) = cache.get(PageId(pid)).expect("get") {
            pages.insert(PageId(pid), page.value);
        }
    }
    pages
}
