//! Regression tests for the weak points of the design this project follows
//! (`shared/design/known-weak-points.md`), and for the typed refusals of `open_log`.

use std::collections::BTreeSet;
use std::sync::Arc;

use iobuf::format::{FRAME_HEADER_LEN, parse_blob_file_name};
use iobuf::storage::{SimStorage, Storage};
use iobuf::{DATA_FILE_NAME, Location, Log, LogConfig, Lsn, SegmentId, Stored};
use recovery::{RecoveryError, RecoveryReport};

const SEGMENT_LEN_BYTES: u64 = 2048;

fn config() -> LogConfig {
    LogConfig {
        segment_len_bytes: SEGMENT_LEN_BYTES,
        io_buf_len_bytes: 384,
        n_io_bufs: 3,
        blob_threshold_bytes: 150,
        flush_every: None,
    }
}

fn open_with(
    storage: &SimStorage,
    config: LogConfig,
) -> Result<(Log, RecoveryReport), RecoveryError> {
    recovery::open_log(Arc::new(storage.clone()) as Arc<dyn Storage>, config)
}

fn open(storage: &SimStorage) -> (Log, RecoveryReport) {
    open_with(storage, config()).unwrap_or_else(|error| panic!("open failed: {error}"))
}

fn bytes_for(tag: usize, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| {
            (tag as u8)
                .wrapping_mul(41)
                .wrapping_add((i as u8).wrapping_mul(3))
                ^ 0xA5
        })
        .collect()
}

fn read_all(log: &Log, report: &RecoveryReport) -> Vec<(Location, Vec<u8>)> {
    log.iter_from(report.log_start)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap_or_else(|error| panic!("iterating the recovered log: {error}"))
}

fn snapshot(storage: &SimStorage) -> Vec<(String, Vec<u8>)> {
    storage
        .file_names()
        .into_iter()
        .map(|name| {
            let bytes = storage.read_file(&name).unwrap();
            (name, bytes)
        })
        .collect()
}

fn assert_same_messages(got: &[(Location, Vec<u8>)], want: &[(Location, Vec<u8>)], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: message count");
    for (idx, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g.0.lsn, w.0.lsn, "{what}: message {idx} LSN");
        assert!(g.1 == w.1, "{what}: message {idx} bytes differ");
    }
}

/// Weak point 1. In the original, a plain log (no pages) reopened after a restart never
/// rebuilt the segment accountant's end of file, so once it wrote past the recovered last
/// segment it was handed the file's first segment again and overwrote the oldest data. Here:
/// write several segments, close, reopen, write several more segments, close, reopen: every
/// message of both runs is present and exact, and the file grew instead of wrapping.
#[test]
fn weak_point_1_reopened_log_does_not_overwrite_its_oldest_segment() {
    let storage = SimStorage::new();
    let mut written = Vec::new();
    let (log, _) = open(&storage);
    for idx in 0..50 {
        let bytes = bytes_for(idx, 60 + idx % 50);
        written.push((log.write(&bytes).unwrap(), bytes));
    }
    log.close().unwrap();
    let len_after_first = storage.read_file(DATA_FILE_NAME).unwrap().len() as u64;
    assert!(len_after_first > 2 * SEGMENT_LEN_BYTES);

    let (log, report) = open(&storage);
    assert_same_messages(&read_all(&log, &report), &written, "after the first reopen");
    for idx in 50..110 {
        let bytes = bytes_for(idx, 60 + idx % 50);
        written.push((log.write(&bytes).unwrap(), bytes));
    }
    log.close().unwrap();
    let len_after_second = storage.read_file(DATA_FILE_NAME).unwrap().len() as u64;
    assert!(
        len_after_second >= len_after_first + 2 * SEGMENT_LEN_BYTES,
        "the second run appended segments ({len_after_first} -> {len_after_second} bytes)"
    );

    let (log, report) = open(&storage);
    assert_eq!(report.log_start, Lsn(0));
    assert_same_messages(
        &read_all(&log, &report),
        &written,
        "after the second reopen",
    );
    log.close().unwrap();
}

/// Weak point 5. In the original, one bad checksum anywhere in the log silently ended
/// recovery, and the headers of every later segment were then overwritten: data was dropped
/// with no error. Here: one flipped byte in the body of a message in the middle of a cleanly
/// closed log makes the open fail with `Corruption` naming that message's segment and frame
/// offset; the data file is byte-for-byte unchanged, and a second open gives the same error.
#[test]
fn weak_point_5_bad_checksum_in_the_middle_is_corruption_and_changes_nothing() {
    let storage = SimStorage::new();
    let (log, _) = open(&storage);
    let mut locations = Vec::new();
    for idx in 0..100 {
        locations.push(log.write(&bytes_for(idx, 40 + idx % 60)).unwrap());
    }
    log.close().unwrap();
    // A message in the second of at least four segments.
    let victim = locations
        .iter()
        .find(|location| {
            location.stored == Stored::Inline
                && location.len_bytes > 8
                && location.file_offset / SEGMENT_LEN_BYTES == 1
        })
        .copied()
        .unwrap();
    let data = storage.read_file(DATA_FILE_NAME).unwrap();
    assert!(data.len() as u64 >= 4 * SEGMENT_LEN_BYTES);
    let mut damaged = data.clone();
    damaged[(victim.file_offset + FRAME_HEADER_LEN + 3) as usize] ^= 0x10;
    storage.write_file_raw(DATA_FILE_NAME, &damaged);
    let before = snapshot(&storage);

    let check = |attempt: &str| {
        let error = open_with(&storage, config())
            .map(|(log, _)| log)
            .unwrap_err();
        match &error {
            RecoveryError::Corruption {
                segment,
                offset_in_segment,
                ..
            } => {
                assert_eq!(
                    *segment,
                    SegmentId(victim.file_offset / SEGMENT_LEN_BYTES),
                    "{attempt}: {error}"
                );
                assert_eq!(
                    *offset_in_segment,
                    victim.file_offset % SEGMENT_LEN_BYTES,
                    "{attempt}: {error}"
                );
            }
            other => panic!("{attempt}: expected Corruption, got {other:?}"),
        }
        assert!(
            snapshot(&storage) == before,
            "{attempt}: the failed open changed files"
        );
    };
    check("first open");
    check("second open");
}

/// Weak point 6. In the original, write batches were not enforced at recovery: half a batch
/// could come back. Here batches of several messages spanning many 512-byte sectors (a
/// buffer of 4 KiB) are written without syncing, and the disk crashes with many seeds
/// (`crash(seed)` tears writes at sector boundaries): each batch comes back whole or not at
/// all, and the recovered log is a prefix of what was written.
#[test]
fn weak_point_6_a_batch_is_never_half_recovered() {
    let config = LogConfig {
        segment_len_bytes: 16 << 10,
        io_buf_len_bytes: 4096,
        n_io_bufs: 3,
        blob_threshold_bytes: 1024,
        flush_every: None,
    };
    let storage = SimStorage::new();
    let (log, _) = open_with(&storage, config.clone()).unwrap();
    // (location, bytes, batch index)
    let mut written: Vec<(Location, Vec<u8>, usize)> = Vec::new();
    for batch_idx in 0..12usize {
        let batch: Vec<Vec<u8>> = (0..6)
            .map(|k| bytes_for(batch_idx * 8 + k, 400 + 30 * k))
            .collect();
        let refs: Vec<&[u8]> = batch.iter().map(Vec::as_slice).collect();
        let locations = log.write_batch(&refs).unwrap();
        let first = locations[0].file_offset;
        let last = locations.last().unwrap();
        assert!(
            last.file_offset + last.frame_len_bytes() - first >= 4 * SimStorage::SECTOR_LEN_BYTES,
            "a batch spans several sectors"
        );
        for (location, bytes) in locations.into_iter().zip(batch) {
            written.push((location, bytes, batch_idx));
        }
        if batch_idx == 2 {
            log.make_stable(written.last().unwrap().0.lsn).unwrap();
        }
    }
    let n_stable = written.iter().filter(|w| w.2 <= 2).count();
    let mut n_partial_outcomes = BTreeSet::new();
    for seed in 0..200u64 {
        let survivor = storage.crash(seed);
        let (reopened, report) = open_with(&survivor, config.clone())
            .unwrap_or_else(|error| panic!("seed {seed}: {error}"));
        let recovered = read_all(&reopened, &report);
        reopened.close().unwrap();
        assert!(recovered.len() >= n_stable, "seed {seed}: lost stable data");
        for (idx, (got, want)) in recovered.iter().zip(&written).enumerate() {
            assert_eq!(got.0.lsn, want.0.lsn, "seed {seed}: message {idx}");
            assert!(got.1 == want.1, "seed {seed}: message {idx} bytes differ");
        }
        if let (Some(_), Some(next)) = (recovered.last(), written.get(recovered.len())) {
            let last_batch = written[recovered.len() - 1].2;
            assert_ne!(
                next.2,
                last_batch,
                "seed {seed}: batch {last_batch} half recovered ({} messages, {report})",
                recovered.len()
            );
        }
        n_partial_outcomes.insert(recovered.len());
    }
    drop(log);
    assert!(
        n_partial_outcomes.len() > 2,
        "the seeds produce several outcomes: {n_partial_outcomes:?}"
    );
}

/// Weak point 8. In the original, large-value files were never fsynced before the pointer to
/// them became durable, and new directory entries were never synced either. Here blobs are
/// written and made stable, then the disk crashes with many seeds (and with one that keeps
/// only synced data): every stable blob reads back exactly.
#[test]
fn weak_point_8_a_blob_whose_pointer_is_durable_is_durable() {
    let storage = SimStorage::new();
    let (log, _) = open(&storage);
    let mut stable = Vec::new();
    for idx in 0..10 {
        let bytes = bytes_for(idx, 200 + 37 * idx);
        let location = log.write(&bytes).unwrap();
        assert_eq!(location.stored, Stored::Blob);
        if idx % 3 == 2 {
            log.make_stable(location.lsn).unwrap();
        }
        stable.push((location, bytes));
    }
    log.make_stable(stable.last().unwrap().0.lsn).unwrap();
    // More blobs, not stable: they may vanish, the stable ones may not.
    for idx in 10..14 {
        log.write(&bytes_for(idx, 300)).unwrap();
    }
    let mut survivors: Vec<(String, SimStorage)> = (0..100u64)
        .map(|seed| (format!("crash({seed})"), storage.crash(seed)))
        .collect();
    survivors.push(("crash_drop_all".to_string(), storage.crash_drop_all()));
    drop(log);
    for (what, survivor) in survivors {
        let (reopened, report) = open(&survivor);
        let recovered = read_all(&reopened, &report);
        assert!(recovered.len() >= stable.len(), "{what}: lost stable blobs");
        assert_same_messages(&recovered[..stable.len()], &stable, &what);
        for (location, bytes) in &stable {
            assert!(
                reopened.read(*location).unwrap() == *bytes,
                "{what}: read of {}",
                location.lsn
            );
        }
        reopened.close().unwrap();
    }
}

/// A configuration that contradicts the files (another segment length) is refused with
/// `ConfigMismatch { field: "segment_len_bytes" }`, and no file changes.
#[test]
fn config_mismatch_is_refused_and_changes_nothing() {
    let storage = SimStorage::new();
    let (log, _) = open(&storage);
    for idx in 0..20 {
        log.write(&bytes_for(idx, 90)).unwrap();
    }
    log.write(&bytes_for(99, 400)).unwrap();
    log.close().unwrap();
    let before = snapshot(&storage);
    let other = LogConfig {
        segment_len_bytes: 4 * SEGMENT_LEN_BYTES,
        ..config()
    };
    for attempt in 0..2 {
        match open_with(&storage, other.clone()) {
            Err(RecoveryError::ConfigMismatch {
                field: "segment_len_bytes",
                on_disk,
                requested,
            }) => {
                assert_eq!(on_disk, SEGMENT_LEN_BYTES);
                assert_eq!(requested, 4 * SEGMENT_LEN_BYTES);
            }
            Err(other) => panic!("attempt {attempt}: {other:?}"),
            Ok(_) => panic!("attempt {attempt}: opened with the wrong segment length"),
        }
        assert!(
            snapshot(&storage) == before,
            "attempt {attempt}: files changed"
        );
    }
    // The right configuration still opens everything.
    let (log, report) = open(&storage);
    assert_eq!(read_all(&log, &report).len(), 21);
    log.close().unwrap();
}

/// A second `open_log` on a directory whose log is alive is `Locked`; once the first log is
/// closed, it opens.
#[test]
fn second_open_while_alive_is_locked() {
    let storage = SimStorage::new();
    let (log, _) = open(&storage);
    let location = log.write(b"first").unwrap();
    log.make_stable(location.lsn).unwrap();
    for _ in 0..2 {
        match open_with(&storage, config()) {
            Err(RecoveryError::Locked) => {}
            Err(other) => panic!("expected Locked, got {other:?}"),
            Ok(_) => panic!("two logs open on one directory"),
        }
    }
    // The refused opener did not disturb the live log.
    let second = log.write(b"second").unwrap();
    log.make_stable(second.lsn).unwrap();
    log.close().unwrap();
    let (log, report) = open(&storage);
    let recovered = read_all(&log, &report);
    assert_eq!(recovered.len(), 2);
    assert_eq!(recovered[0].1, b"first");
    assert_eq!(recovered[1].1, b"second");
    log.close().unwrap();
}

/// A blob whose pointer frame was cut by a crash is deleted at reopen: over many seeds at
/// least one reports `orphan_blobs_deleted > 0`, and after every reopen each blob file on
/// disk belongs to a recovered message.
#[test]
fn orphan_blobs_are_deleted_at_reopen() {
    let storage = SimStorage::new();
    let (log, _) = open(&storage);
    for idx in 0..6 {
        log.write(&bytes_for(idx, 50)).unwrap();
        log.write(&bytes_for(idx + 100, 250)).unwrap();
    }
    log.flush().unwrap();
    // Blobs whose files are durable at once but whose pointers are not synced.
    for idx in 6..12 {
        log.write(&bytes_for(idx, 70)).unwrap();
        log.write(&bytes_for(idx + 100, 260)).unwrap();
    }
    let mut total_deleted = 0;
    for seed in 0..60u64 {
        let survivor = storage.crash(seed);
        let (reopened, report) = open(&survivor);
        total_deleted += report.orphan_blobs_deleted;
        let recovered = read_all(&reopened, &report);
        let blob_lsns: BTreeSet<Lsn> = recovered
            .iter()
            .filter(|(location, _)| location.stored == Stored::Blob)
            .map(|(location, _)| location.lsn)
            .collect();
        for name in survivor.file_names() {
            if let Some(lsn) = parse_blob_file_name(&name) {
                assert!(
                    blob_lsns.contains(&lsn),
                    "seed {seed}: blob file {name} has no recovered pointer ({report})"
                );
            }
        }
        reopened.close().unwrap();
    }
    drop(log);
    assert!(total_deleted > 0, "no seed left an orphan blob to delete");
}

/// A cleanly closed log of five segments (the last one partly filled) with blobs; returns the
/// storage and every message in LSN order.
fn five_segment_log() -> (SimStorage, Vec<(Location, Vec<u8>)>) {
    let storage = SimStorage::new();
    let (log, _) = open(&storage);
    let mut written = Vec::new();
    for idx in 0..90 {
        let len = if idx % 20 == 7 { 300 } else { 40 + idx % 70 };
        let bytes = bytes_for(idx, len);
        written.push((log.write(&bytes).unwrap(), bytes));
    }
    log.close().unwrap();
    let len = storage.read_file(DATA_FILE_NAME).unwrap().len() as u64;
    assert!(len > 4 * SEGMENT_LEN_BYTES, "{len} bytes");
    (storage, written)
}

/// Opens a log whose header of `segment` has one flipped bit (in the base LSN field, under the
/// header's checksum) and checks that the open is a `Corruption` error that changes nothing.
/// Every message was durable (clean close), so an `Ok` that returns fewer messages is silent
/// loss.
fn check_damaged_header_is_corruption(segment: u64) {
    let (storage, written) = five_segment_log();
    let mut data = storage.read_file(DATA_FILE_NAME).unwrap();
    data[(segment * SEGMENT_LEN_BYTES + 26) as usize] ^= 0x04;
    storage.write_file_raw(DATA_FILE_NAME, &data);
    let before = snapshot(&storage);
    match open_with(&storage, config()) {
        Err(RecoveryError::Corruption { .. }) => {}
        Err(other) => panic!("segment {segment}: expected Corruption, got {other:?}"),
        Ok((log, report)) => {
            let recovered = read_all(&log, &report);
            let after = snapshot(&storage);
            panic!(
                "segment {segment}: SILENT LOSS: open Ok with {} of {} durable messages ({report}); \
                 files changed by the open: {}",
                recovered.len(),
                written.len(),
                after != before
            );
        }
    }
    assert!(
        snapshot(&storage) == before,
        "the failed open changed files"
    );
}

/// Found by the bit-flip sweep in `corruption.rs`: one flipped bit in the header of the first
/// segment of a cleanly closed log made `open_log` return `Ok` with an empty log; the open
/// then erased the headers of every other segment and deleted every blob file. (With no
/// durable chain left, the scan set the chain's end to the highest LSN ever seen, so the
/// buffer markers, which say the log was durable up to near that point, never looked past it.)
#[test]
fn damaged_first_segment_header_is_corruption_not_an_empty_log() {
    check_damaged_header_is_corruption(0);
}

/// Found by the bit-flip sweep in `corruption.rs`: one flipped bit in the header of the last
/// segment of a cleanly closed log made `open_log` return `Ok` with the log cut at that
/// segment's base, silently dropping every durable message in it. (The chain ends as
/// "missing segment"; a segment whose header does not verify is never scanned for buffer
/// markers, and the final marker written by the clean close lives in that very segment.)
#[test]
fn damaged_last_segment_header_is_corruption_not_a_shorter_log() {
    check_damaged_header_is_corruption(4);
}

/// Control for the two tests above: a flipped bit in the header of a middle segment is
/// already reported as `Corruption` (a marker in a later segment proves the loss).
#[test]
fn damaged_middle_segment_header_is_corruption() {
    check_damaged_header_is_corruption(2);
}
