//! The basic page operations, a restart, and a crash, on the simulated disk.

use std::sync::Arc;

mod common;

use common::Concat;
use iobuf::storage::SimStorage;
use pagecache::{Config, PageCache, PageId};

fn tiny_config() -> Config {
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
        .id_persist_interval(8)
        .build()
        .expect("valid")
}

#[test]
fn pages_survive_restart_cleaning_and_eviction() {
    let storage = Arc::new(SimStorage::new());
    let (cache, report) = PageCache::open(storage.clone(), tiny_config(), Concat).expect("open");
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

    let (cache, report) = PageCache::open(storage.clone(), tiny_config(), Concat).expect("reopen");
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
    let (cache, _) =
        PageCache::open(Arc::new(crashed), tiny_config(), Concat).expect("after crash");
    for (pid, value) in &expected {
        assert_eq!(&cache.get(*pid).unwrap().unwrap().value, value);
    }
    let _ = PageId(0);
}
