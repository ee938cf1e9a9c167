//! Four threads link fragments to a few shared pages with compare-and-swap retry loops (read
//! the page, link at its version, retry on `Stale`), on a tiny configuration so that
//! consolidation, eviction, page-ins, cleaning (by the writers and by the background
//! cleaner) and background snapshots race with the writers. Every fragment is unique
//! (thread, sequence number). At the end, and again after a close and a reopen, each page
//! holds exactly the acknowledged fragments: as a set, and per thread in the order that
//! thread linked them.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use common::{Concat, count};
use iobuf::storage::SimStorage;
use pagecache::{Config, PageCache, PageId};

const N_THREADS: u32 = 4;
const N_PAGES: usize = 5;
const LINKS_PER_THREAD: u32 = 1000;
const FRAGMENT_LEN: usize = 8;

fn config() -> Config {
    Config::builder()
        .segment_len_bytes(4096)
        .io_buf_len_bytes(1024)
        .n_io_bufs(2)
        .blob_threshold_bytes(512)
        // The flusher makes fragments durable, so the eviction hand can drop them while the
        // writers run.
        .flush_every(Some(Duration::from_millis(2)))
        .cache_budget_bytes(1024)
        .consolidate_after_fragments(3)
        .snapshot_every_bytes(8 << 10)
        .background_snapshots(true)
        .background_cleaning(true)
        .build()
        .expect("valid")
}

fn fragment(thread: u32, seq: u32) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(FRAGMENT_LEN);
    bytes.extend_from_slice(&thread.to_le_bytes());
    bytes.extend_from_slice(&seq.to_le_bytes());
    bytes
}

/// The fragments a page's value holds, in chain order.
fn fragments(value: &[u8]) -> Vec<(u32, u32)> {
    assert_eq!(value.len() % FRAGMENT_LEN, 0, "a value is whole fragments");
    value
        .chunks_exact(FRAGMENT_LEN)
        .map(|chunk| {
            let thread = u32::from_le_bytes(chunk[0..4].try_into().expect("4 bytes"));
            let seq = u32::from_le_bytes(chunk[4..8].try_into().expect("4 bytes"));
            (thread, seq)
        })
        .collect()
}

/// Checks every page against the acknowledged links: the same set, no duplicate, and each
/// thread's fragments in the order it linked them.
fn check(
    cache: &PageCache<Concat>,
    pids: &[PageId],
    acked: &BTreeMap<PageId, BTreeSet<(u32, u32)>>,
) {
    for pid in pids {
        let value = cache.get(*pid).expect("get").expect("live").value;
        let found = fragments(&value);
        let as_set: BTreeSet<(u32, u32)> = found.iter().copied().collect();
        assert_eq!(as_set.len(), found.len(), "page {pid:?} holds a duplicate");
        assert_eq!(&as_set, &acked[pid], "page {pid:?}");
        for thread in 0..N_THREADS {
            let seqs: Vec<u32> = found
                .iter()
                .filter(|(t, _)| *t == thread)
                .map(|(_, seq)| *seq)
                .collect();
            assert!(
                seqs.windows(2).all(|pair| pair[0] < pair[1]),
                "page {pid:?}: thread {thread}'s fragments out of order: {seqs:?}"
            );
        }
    }
}

#[test]
fn racing_links_keep_exactly_the_acknowledged_fragments() {
    let storage = Arc::new(SimStorage::new());
    let (cache, _) = PageCache::open(storage.clone(), config(), Concat).expect("open");
    let pids: Vec<PageId> = (0..N_PAGES)
        .map(|_| cache.allocate(Vec::new()).expect("allocate").0)
        .collect();

    let mut acked: BTreeMap<PageId, BTreeSet<(u32, u32)>> =
        pids.iter().map(|pid| (*pid, BTreeSet::new())).collect();
    let mut n_retries = 0u64;
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..N_THREADS)
            .map(|thread| {
                let cache = &cache;
                let pids = &pids;
                scope.spawn(move || {
                    let mut done = Vec::new();
                    let mut n_retries = 0u64;
                    for seq in 0..LINKS_PER_THREAD {
                        // Threads walk the pages at different strides, so each page sees
                        // every thread and the pairs that collide keep changing.
                        let pid = pids[(seq as usize * (thread as usize + 1)) % N_PAGES];
                        let mut fragment = fragment(thread, seq);
                        loop {
                            let page = cache.get(pid).expect("get").expect("live");
                            match cache.link(pid, page.version, fragment).expect("link") {
                                Ok(_) => break,
                                Err(stale) => {
                                    assert!(stale.current.is_some(), "the page stays live");
                                    fragment = stale.fragment;
                                    n_retries += 1;
                                }
                            }
                        }
                        done.push((pid, (thread, seq)));
                    }
                    (done, n_retries)
                })
            })
            .collect();
        for handle in handles {
            let (done, retries) = handle.join().expect("writer thread");
            n_retries += retries;
            for (pid, fragment) in done {
                acked.get_mut(&pid).expect("known page").insert(fragment);
            }
        }
    });

    let metrics = cache.metrics();
    eprintln!(
        "retries {n_retries}, stale {}, write retries {}, consolidations {}, evicted {}, \
         page-ins {}, relocations {}, segments cleaned {}, snapshots {}",
        count(&metrics.n_stale),
        count(&metrics.n_write_retries),
        count(&metrics.n_consolidations),
        count(&metrics.n_fragments_evicted),
        count(&metrics.n_page_ins),
        count(&metrics.n_relocations),
        count(&metrics.n_segments_cleaned),
        count(&metrics.n_snapshots),
    );
    assert!(count(&metrics.n_consolidations) > 0);
    assert!(
        count(&metrics.n_segments_cleaned) > 0,
        "cleaning raced with the writers"
    );
    assert_eq!(cache.background_error().map(|e| e.to_string()), None);
    check(&cache, &pids, &acked);
    cache.close().expect("close");

    let (cache, report) = PageCache::open(storage.clone(), config(), Concat).expect("reopen");
    eprintln!("{report}");
    check(&cache, &pids, &acked);
    cache.close().expect("close");
}
