//! The basic page operations, a restart, and a crash, on the simulated disk.

use std::sync::Arc;

mod common;

use common::Concat;
use iobuf::storage::SimStorage;
use pagecache::{Config, PageCache, PageId};

fn tiny_config(home_cells: bool) -> Config {
    Config::builder()
        .segment_len_bytes(4096)
        .io_buf_len_bytes(1024)
        .n_io_bufs(2)
        .blob_threshold_bytes(256)
        .flush_every(None)
        .cache_budget_bytes(2048)
        .consolidate_after_fragments(4)
        .snapshot_every_bytes(16 << 10)
        .background_snapshots(false)
        .background_cleaning(false)
        .id_persist_interval(8)
        .home_cells(home_cells)
        .build()
        .expect("valid")
}

#[test]
fn pages_survive_restart_cleaning_and_eviction() {
    survive_restart_cleaning_and_eviction(true);
}

/// The same with every entry on the heap.
#[test]
fn pages_survive_restart_cleaning_and_eviction_without_home_cells() {
    survive_restart_cleaning_and_eviction(false);
}

fn survive_restart_cleaning_and_eviction(home_cells: bool) {
    let config = || tiny_config(home_cells);
    let storage = Arc::new(SimStorage::new());
    let (cache, report) = PageCache::open(storage.clone(), config(), Concat).expect("open");
    assert!(report.log.created);
    let mut expected = std::collections::BTreeMap::new();
    let mut pids = Vec::new();
    for i in 0..50u8 {
        let (pid, _) = cache.allocate(vec![i]).expect("allocate");
        pids.push(pid);
        expected.insert(pid, vec![i]);
    }
    for round in 0..40u8 {
        for (n, pid) in pids.iter().enumerate() {
            let page = cache.get(*pid).expect("get").expect("live");
            assert_eq!(&page.value, &expected[pid], "page {pid:?} round {round}");
            if (n + round as usize).is_multiple_of(3) {
                let written = cache
                    .replace(*pid, page.version, vec![round, n as u8])
                    .expect("io")
                    .expect("fresh version");
                expected.insert(*pid, vec![round, n as u8]);
                let stale = cache.link(*pid, page.version, vec![9]).expect("io");
                assert_eq!(stale.unwrap_err().current, Some(written.version));
            } else {
                cache
                    .link(*pid, page.version, vec![round])
                    .expect("io")
                    .expect("fresh");
                expected.get_mut(pid).unwrap().push(round);
            }
        }
        if round % 10 == 0 {
            cache.snapshot().expect("snapshot");
        }
    }
    let freed = pids.pop().unwrap();
    let version = cache.get(freed).unwrap().unwrap().version;
    cache.free(freed, version).unwrap().unwrap();
    expected.remove(&freed);
    assert!(cache.free(freed, version).unwrap().is_err());
    cache
        .set_root("root", None, Some(pids[0]))
        .unwrap()
        .unwrap();
    let id = cache.generate_id().unwrap();
    let stats = cache.stats();
    eprintln!("{stats:?}");
    // One block: every id used is below 2048.
    let expected_block_bytes = if home_cells { 772 * 1024 } else { 0 };
    assert_eq!(stats.home_cell_bytes, expected_block_bytes);
    eprintln!(
        "relocations {} segments cleaned {} evicted {} page-ins {}",
        cache
            .metrics()
            .n_relocations
            .load(std::sync::atomic::Ordering::Relaxed),
        cache
            .metrics()
            .n_segments_cleaned
            .load(std::sync::atomic::Ordering::Relaxed),
        cache
            .metrics()
            .n_fragments_evicted
            .load(std::sync::atomic::Ordering::Relaxed),
        cache
            .metrics()
            .n_page_ins
            .load(std::sync::atomic::Ordering::Relaxed),
    );
    cache.close().expect("close");

    let (cache, report) = PageCache::open(storage.clone(), config(), Concat).expect("reopen");
    eprintln!("{report}");
    for (pid, value) in &expected {
        assert_eq!(
            &cache.get(*pid).unwrap().unwrap().value,
            value,
            "page {pid:?}"
        );
    }
    assert!(cache.get(freed).unwrap().is_none());
    assert_eq!(cache.root("root"), Some(pids[0]));
    assert!(cache.generate_id().unwrap() > id);
    drop(cache);

    let crashed = storage.crash(7);
    let (cache, _) = PageCache::open(Arc::new(crashed), config(), Concat).expect("after crash");
    for (pid, value) in &expected {
        assert_eq!(&cache.get(*pid).unwrap().unwrap().value, value);
    }
}

/// A budget of one byte: everything durable is evicted at the next chance, and nothing is
/// durable until `flush` (no background flusher, and far less than a buffer written). Chains
/// are consolidated only at 64 fragments.
fn one_byte_budget_config() -> Config {
    Config::builder()
        .segment_len_bytes(64 << 10)
        .io_buf_len_bytes(4096)
        .blob_threshold_bytes(1024)
        .flush_every(None)
        .cache_budget_bytes(1)
        .consolidate_after_fragments(64)
        .background_snapshots(false)
        .background_cleaning(false)
        .build()
        .expect("valid")
}

/// A resident page keeps one merged value, whatever its chain's length: a link merges its
/// delta onto the value instead of keeping the fragment beside it. A link to an evicted page
/// keeps only its delta until a read pages in the rest.
#[test]
fn a_resident_page_holds_one_merged_value() {
    let config = one_byte_budget_config();
    let (cache, _) = PageCache::open(Arc::new(SimStorage::new()), config, Concat).expect("open");
    let (pid, _) = cache.allocate(vec![0; 10]).expect("allocate");
    for n in 1..=5u8 {
        let page = cache.get(pid).expect("get").expect("live");
        cache
            .link(pid, page.version, vec![n; 10])
            .expect("io")
            .expect("fresh");
        assert_eq!(
            cache.stats().resident_bytes,
            common::charged_bytes(10 * (1 + n as usize)),
            "one value of the merged length after {n} links"
        );
    }

    // Once durable, the next read's eviction pass drops the merged value.
    cache.flush().expect("flush");
    let evicted_before = common::count(&cache.metrics().n_fragments_evicted);
    let page = cache.get(pid).expect("get").expect("live");
    assert_eq!(cache.stats().resident_bytes, 0, "evicted once durable");
    assert_eq!(
        common::count(&cache.metrics().n_fragments_evicted),
        evicted_before + 1
    );

    // Two links to the evicted page keep just their deltas (not durable, so not evictable).
    let written = cache
        .link(pid, page.version, vec![6; 10])
        .expect("io")
        .expect("fresh");
    cache
        .link(pid, written.version, vec![7; 10])
        .expect("io")
        .expect("fresh");
    assert_eq!(cache.stats().resident_bytes, 2 * common::charged_bytes(10));

    // A get reads back the base and the five deltas, merges the two resident ones after
    // them, and keeps the merged value (still not durable as a whole).
    let paged_in_before = common::count(&cache.metrics().n_fragments_paged_in);
    let page = cache.get(pid).expect("get").expect("live");
    let expected: Vec<u8> = (0..=7u8).flat_map(|n| [n; 10]).collect();
    assert_eq!(page.value, expected);
    assert_eq!(
        common::count(&cache.metrics().n_fragments_paged_in),
        paged_in_before + 6
    );
    assert_eq!(cache.stats().resident_bytes, common::charged_bytes(80));
}

#[test]
fn a_pinned_read_stays_valid_while_its_page_is_evicted_rewritten_and_freed() {
    // Every read of a durable page pages it in and the next eviction pass drops it again.
    let config = one_byte_budget_config();
    let (cache, _) = PageCache::open(Arc::new(SimStorage::new()), config, Concat).expect("open");
    let value_of = |n: u64| vec![n as u8; 40];
    let pids: Vec<PageId> = (0..32)
        .map(|n| cache.allocate(value_of(n)).expect("allocate").0)
        .collect();
    cache.flush().expect("flush");
    // The flush already let eviction drop values written over the budget; count from here.
    let metrics = cache.metrics();
    let (evicted_before, page_ins_before) = (
        common::count(&metrics.n_fragments_evicted),
        common::count(&metrics.n_page_ins),
    );

    let pinned = cache.pin();
    let first = cache
        .get_pinned(pids[0], &pinned)
        .expect("get")
        .expect("live");
    assert_eq!(first.value, &value_of(0));
    // Every other read pages in and evicts; the first page is rewritten, evicted and freed.
    let mut others = Vec::new();
    for (n, pid) in pids.iter().enumerate().skip(1) {
        let page = cache.get_pinned(*pid, &pinned).expect("get").expect("live");
        assert_eq!(page.value, &value_of(n as u64));
        others.push(page);
    }
    assert!(
        common::count(&metrics.n_page_ins) >= page_ins_before + 31,
        "every read paged in"
    );
    let written = cache
        .replace(pids[0], first.version, vec![0xee; 40])
        .expect("io")
        .expect("fresh");
    cache.flush().expect("flush");
    cache.get(pids[1]).expect("get");
    cache
        .free(pids[0], written.version)
        .expect("io")
        .expect("fresh");
    cache.flush().expect("flush");
    assert!(cache.get(pids[0]).expect("get").is_none(), "freed");
    assert!(
        common::count(&metrics.n_fragments_evicted) > evicted_before,
        "the reads evicted"
    );

    // Everything read under the pin is still what it was when read.
    assert_eq!(first.value, &value_of(0));
    for (n, page) in others.iter().enumerate() {
        assert_eq!(page.value, &value_of(n as u64 + 1));
    }
    drop(pinned);
    cache.close().expect("close");
}
