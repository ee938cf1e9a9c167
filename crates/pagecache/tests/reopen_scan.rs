//! Reopening verifies log frames only from the snapshot's replay point on
//! (`recovery::OpenOptions::scan_from`). A fragment below it that the snapshot still refers
//! to is checked when it is read: damage there is a typed error from `get` on that page, not
//! at open and never a wrong value; damage after the replay point fails the open as before.

mod common;

use std::sync::Arc;

use common::Concat;
use iobuf::format::{FRAME_HEADER_LEN, SegmentHeader};
use iobuf::storage::{SimStorage, Storage};
use iobuf::{DATA_FILE_NAME, Lsn};
use pagecache::{Config, Error, PageCache, PageId};

const SEGMENT_LEN_BYTES: u64 = 4096;

/// Small segments, a budget that holds everything, no background threads.
fn config() -> Config {
    Config::builder()
        .segment_len_bytes(SEGMENT_LEN_BYTES)
        .io_buf_len_bytes(1024)
        .n_io_bufs(2)
        .blob_threshold_bytes(256)
        .flush_every(None)
        .cache_budget_bytes(1 << 20)
        .background_snapshots(false)
        .background_cleaning(false)
        .build()
        .expect("a valid configuration")
}

fn fragment(pid: u64) -> Vec<u8> {
    (0..60).map(|i| (pid as u8).wrapping_mul(13) ^ i).collect()
}

/// The file offset of the frame at `lsn` (segments are not reused: nothing is cleaned).
fn frame_offset(data: &[u8], lsn: Lsn) -> u64 {
    let base = lsn.0 - lsn.0 % SEGMENT_LEN_BYTES;
    (0..data.len() as u64)
        .step_by(SEGMENT_LEN_BYTES as usize)
        .find(|start| {
            SegmentHeader::decode(&data[*start as usize..])
                .is_ok_and(|header| header.base_lsn == Lsn(base))
        })
        .expect("the segment holding the frame")
        + lsn.0 % SEGMENT_LEN_BYTES
}

struct Store {
    storage: SimStorage,
    /// The LSN of each page's only fragment.
    lsns: Vec<Lsn>,
    replay_from: Lsn,
}

/// 160 pages of one fragment each; a snapshot after the first 120.
fn build() -> Store {
    let storage = SimStorage::new();
    let (cache, _) = PageCache::open(
        Arc::new(storage.clone()) as Arc<dyn Storage>,
        config(),
        Concat,
    )
    .expect("create");
    let mut lsns = Vec::new();
    let mut replay_from = Lsn(0);
    for pid in 0..160u64 {
        let (allocated, written) = cache.allocate(fragment(pid)).expect("allocate");
        assert_eq!(allocated, PageId(pid));
        lsns.push(written.lsn);
        if pid == 119 {
            // The snapshot replays from the stable LSN it sees.
            cache.flush().expect("flush");
            replay_from = cache.snapshot().expect("snapshot").replay_from;
        }
    }
    cache.close().expect("close");
    assert!(replay_from.0 >= 2 * SEGMENT_LEN_BYTES, "{replay_from}");
    Store {
        storage,
        lsns,
        replay_from,
    }
}

fn damage_fragment(storage: &SimStorage, lsn: Lsn) {
    let mut data = storage.read_file(DATA_FILE_NAME).expect("data file");
    // The frame header, the page cache's record header (9 bytes), then the fragment.
    let offset = frame_offset(&data, lsn) + FRAME_HEADER_LEN + 9 + 5;
    data[offset as usize] ^= 0x04;
    storage.write_file_raw(DATA_FILE_NAME, &data);
}

fn reopen(storage: &SimStorage) -> pagecache::Result<(PageCache<Concat>, pagecache::OpenReport)> {
    PageCache::open(
        Arc::new(storage.clone()) as Arc<dyn Storage>,
        config(),
        Concat,
    )
}

#[test]
fn damage_below_the_replay_point_is_a_typed_error_when_the_page_is_read() {
    let store = build();
    let victim = PageId(0);
    assert!(store.lsns[0].0 + SEGMENT_LEN_BYTES <= store.replay_from.0);
    damage_fragment(&store.storage, store.lsns[0]);

    let (cache, report) = reopen(&store.storage).expect("the damaged segment is not verified");
    assert!(report.log.verified_from > report.log.log_start, "{report}");
    assert!(report.snapshot.is_some());
    assert_eq!(report.n_pages, 160);
    match cache.get(victim) {
        Err(Error::Corruption { page, .. }) if page == Some(victim) => {}
        other => panic!("expected a corruption error naming the damaged page, got {other:?}"),
    }
    for pid in 1..160u64 {
        let page = cache.get(PageId(pid)).expect("intact").expect("live");
        assert_eq!(page.value, fragment(pid), "page {pid}");
    }
    cache.close().expect("close");
}

#[test]
fn damage_after_the_replay_point_still_fails_the_open() {
    let store = build();
    let victim = store
        .lsns
        .iter()
        .position(|lsn| *lsn > store.replay_from)
        .expect("a page written after the snapshot");
    damage_fragment(&store.storage, store.lsns[victim]);
    let before = store.storage.read_file(DATA_FILE_NAME);
    match reopen(&store.storage) {
        Err(Error::Recovery(recovery::RecoveryError::Corruption { .. })) => {}
        other => panic!(
            "expected a corruption error, got {:?}",
            other.map(|(_, report)| report)
        ),
    }
    assert_eq!(store.storage.read_file(DATA_FILE_NAME), before);
}

#[test]
fn an_undamaged_store_reopens_with_every_page_and_the_snapshot_used() {
    let store = build();
    for _ in 0..2 {
        let (cache, report) = reopen(&store.storage).expect("reopen");
        assert_eq!(
            report.snapshot.as_ref().map(|info| info.replay_from),
            Some(store.replay_from)
        );
        assert_eq!(report.n_pages, 160);
        for pid in 0..160u64 {
            let page = cache.get(PageId(pid)).expect("get").expect("live");
            assert_eq!(page.value, fragment(pid), "page {pid}");
        }
        cache.close().expect("close");
    }
}
