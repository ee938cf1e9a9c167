//! `OpenOptions::scan_from`: frames are verified only from the segment holding a given LSN on.
//!
//! * Damage in a segment wholly below `scan_from` is not reported at open (that segment is
//!   checked by its header only), but reading the damaged message is a typed error, and every
//!   other message, blobs included, reads back byte for byte.
//! * Damage at or after `scan_from`, and torn tails after crashes, are handled exactly as by
//!   a plain `open_log`: the same result, the same report facts, the same files afterwards.
//! * A `scan_from` past the end of the log is a `Corruption` error that changes nothing.

use std::sync::Arc;

use iobuf::format::SegmentHeader;
use iobuf::storage::{SimStorage, Storage};
use iobuf::{DATA_FILE_NAME, Location, LogConfig, LogError, Lsn, Stored};
use recovery::{OpenOptions, RecoveryError};

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

fn message_bytes(idx: usize, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (idx as u8).wrapping_mul(29).wrapping_add(i as u8) ^ 0xA5)
        .collect()
}

/// A closed log of several segments (a blob in the first one) and its messages.
fn build() -> (SimStorage, Vec<(Location, Vec<u8>)>) {
    let storage = SimStorage::new();
    let (log, _) = recovery::open_log(Arc::new(storage.clone()) as Arc<dyn Storage>, config())
        .expect("create the log");
    let mut messages = Vec::new();
    for idx in 0..90usize {
        let len = if idx == 3 { 400 } else { 20 + (idx * 17) % 90 };
        let bytes = message_bytes(idx, len);
        messages.push((log.write(&bytes).expect("write"), bytes));
        if idx % 7 == 0 {
            log.flush().expect("flush");
        }
    }
    assert_eq!(messages[3].0.stored, Stored::Blob);
    log.close().expect("close");
    (storage, messages)
}

fn copy_of(storage: &SimStorage) -> SimStorage {
    let copy = SimStorage::new();
    for name in storage.file_names() {
        copy.write_file_raw(&name, &storage.read_file(&name).expect("listed"));
    }
    copy
}

fn files(storage: &SimStorage) -> Vec<(String, Vec<u8>)> {
    let mut names = storage.file_names();
    names.sort();
    names
        .into_iter()
        .map(|name| {
            let bytes = storage.read_file(&name).expect("listed");
            (name, bytes)
        })
        .collect()
}

fn flip(storage: &SimStorage, offset: u64, mask: u8) {
    let mut bytes = storage.read_file(DATA_FILE_NAME).expect("data file");
    bytes[offset as usize] ^= mask;
    storage.write_file_raw(DATA_FILE_NAME, &bytes);
}

fn open(
    storage: &SimStorage,
    scan_from: Lsn,
) -> Result<(iobuf::Log, recovery::RecoveryReport), RecoveryError> {
    recovery::open_log_with(
        Arc::new(storage.clone()) as Arc<dyn Storage>,
        config(),
        OpenOptions::new().scan_from(scan_from),
    )
}

/// A point in the fourth logical segment: the first three are below it.
fn scan_point(messages: &[(Location, Vec<u8>)]) -> Lsn {
    messages
        .iter()
        .map(|(location, _)| location.lsn)
        .find(|lsn| lsn.0 >= 3 * SEGMENT_LEN_BYTES + 100)
        .expect("the log spans more than three segments")
}

#[test]
fn damage_below_scan_from_is_not_reported_at_open_but_when_read() {
    let (pristine, messages) = build();
    let scan_from = scan_point(&messages);
    let (victim, _) = messages
        .iter()
        .find(|(location, _)| location.stored == Stored::Inline && location.lsn.0 > 300)
        .expect("an inline message in the first segment");
    assert!(victim.lsn.0 < SEGMENT_LEN_BYTES);
    let damaged = copy_of(&pristine);
    // A byte of the body: under the frame's checksum.
    flip(&damaged, victim.file_offset + 24 + 2, 0x10);
    let before = files(&damaged);

    // The plain open verifies every frame: the damage is corruption, nothing changes.
    match recovery::open_log(Arc::new(damaged.clone()) as Arc<dyn Storage>, config()) {
        Err(RecoveryError::Corruption { .. }) => {}
        other => panic!("expected a corruption error, got {other:?}"),
    }
    assert_eq!(files(&damaged), before);

    let (log, report) = open(&damaged, scan_from).expect("the damaged segment is not verified");
    assert_eq!(report.log_start, Lsn(0));
    assert_eq!(report.verified_from, Lsn(3 * SEGMENT_LEN_BYTES));
    assert_eq!(
        report.messages_recovered,
        messages
            .iter()
            .filter(|(location, _)| location.lsn >= report.verified_from)
            .count() as u64
    );
    assert!(report.to_string().contains("frames verified from"));
    // Reading the damaged message is a typed error; everything else reads back, the blob
    // below `scan_from` included (its file was kept although its pointer was not read).
    match log.read(*victim) {
        Err(LogError::NoMessage { lsn, .. }) => assert_eq!(lsn, victim.lsn),
        other => panic!("expected a typed error for the damaged frame, got {other:?}"),
    }
    for (location, bytes) in &messages {
        if location != victim {
            assert_eq!(&log.read(*location).expect("an intact message"), bytes);
        }
    }
    // Iterating over the damaged segment finds the damage too.
    let whole: Result<Vec<_>, _> = log.iter_from(Lsn(0)).expect("iterate").collect();
    assert!(
        matches!(whole, Err(LogError::Corruption { .. })),
        "{whole:?}"
    );
    // From `scan_from` on, the log is exactly what was written.
    let tail: Vec<(Location, Vec<u8>)> = log
        .iter_from(scan_from)
        .expect("iterate")
        .collect::<Result<_, _>>()
        .expect("intact");
    let expected: Vec<(Location, Vec<u8>)> = messages
        .iter()
        .filter(|(location, _)| location.lsn >= scan_from)
        .cloned()
        .collect();
    assert_eq!(tail, expected);
    // The log goes on writing after the recovered tip.
    let location = log.write(b"after").expect("write");
    log.make_stable(location.lsn).expect("stable");
    assert_eq!(log.read(location).expect("read"), b"after");
    log.close().expect("close");
}

#[test]
fn damage_from_scan_from_on_is_handled_exactly_as_before() {
    let (pristine, messages) = build();
    let scan_from = scan_point(&messages);
    let data = pristine.read_file(DATA_FILE_NAME).expect("data file");
    let verified_from = Lsn(3 * SEGMENT_LEN_BYTES);
    let mut n_trials = 0;
    for segment_start in (0..data.len() as u64).step_by(SEGMENT_LEN_BYTES as usize) {
        let header = SegmentHeader::decode(&data[segment_start as usize..]).expect("header");
        if header.base_lsn < verified_from {
            continue;
        }
        for offset in segment_start..(segment_start + SEGMENT_LEN_BYTES).min(data.len() as u64) {
            let mask = 1u8 << (offset % 8);
            let plain = copy_of(&pristine);
            flip(&plain, offset, mask);
            let scanned = copy_of(&plain);
            let plain_result =
                recovery::open_log(Arc::new(plain.clone()) as Arc<dyn Storage>, config());
            let scanned_result = open(&scanned, scan_from);
            match (plain_result, scanned_result) {
                (Ok((plain_log, plain_report)), Ok((scanned_log, scanned_report))) => {
                    assert_eq!(plain_report.tip, scanned_report.tip, "offset {offset}");
                    assert_eq!(
                        plain_report.cut_at, scanned_report.cut_at,
                        "offset {offset}"
                    );
                    assert_eq!(
                        plain_report.bytes_erased, scanned_report.bytes_erased,
                        "offset {offset}"
                    );
                    let plain_tail: Vec<_> = plain_log
                        .iter_from(scan_from)
                        .expect("iterate")
                        .collect::<Result<_, _>>()
                        .expect("recovered");
                    let scanned_tail: Vec<_> = scanned_log
                        .iter_from(scan_from)
                        .expect("iterate")
                        .collect::<Result<_, _>>()
                        .expect("recovered");
                    assert_eq!(plain_tail, scanned_tail, "offset {offset}");
                }
                (Err(plain_error), Err(scanned_error)) => {
                    assert_eq!(
                        plain_error.to_string(),
                        scanned_error.to_string(),
                        "offset {offset}"
                    );
                }
                (plain_result, scanned_result) => panic!(
                    "offset {offset}: plain {:?}, with scan_from {:?}",
                    plain_result.map(|(_, report)| report),
                    scanned_result.map(|(_, report)| report)
                ),
            }
            assert_eq!(files(&plain), files(&scanned), "offset {offset}");
            n_trials += 1;
        }
    }
    assert!(n_trials >= SEGMENT_LEN_BYTES, "{n_trials} trials");
}

#[test]
fn torn_tails_after_crashes_are_cut_exactly_as_before() {
    for seed in 0..40u64 {
        let storage = SimStorage::new();
        let (log, _) = recovery::open_log(Arc::new(storage.clone()) as Arc<dyn Storage>, config())
            .expect("create");
        let mut stable = Lsn(0);
        for idx in 0..120usize {
            let location = log
                .write(&message_bytes(idx, 30 + (idx * 11) % 70))
                .expect("write");
            if idx == 80 {
                stable = log.flush().expect("flush");
                assert!(stable > location.lsn);
            }
        }
        // Nothing after message 80 was asked to be durable: the crash tears it.
        let crashed = storage.crash(seed);
        drop(log);
        let plain = copy_of(&crashed);
        let scanned = copy_of(&crashed);
        let (plain_log, plain_report) =
            recovery::open_log(Arc::new(plain.clone()) as Arc<dyn Storage>, config())
                .expect("recover");
        let (scanned_log, scanned_report) = open(&scanned, stable).expect("recover");
        assert_eq!(plain_report.tip, scanned_report.tip, "seed {seed}");
        assert_eq!(plain_report.cut_at, scanned_report.cut_at, "seed {seed}");
        assert_eq!(
            plain_report.segments_discarded, scanned_report.segments_discarded,
            "seed {seed}"
        );
        assert!(scanned_report.verified_from > Lsn(0), "seed {seed}");
        let plain_all: Vec<_> = plain_log
            .iter_from(Lsn(0))
            .expect("iterate")
            .collect::<Result<_, _>>()
            .expect("recovered");
        let scanned_all: Vec<_> = scanned_log
            .iter_from(Lsn(0))
            .expect("iterate")
            .collect::<Result<_, _>>()
            .expect("recovered");
        assert_eq!(plain_all, scanned_all, "seed {seed}");
        drop(plain_log);
        drop(scanned_log);
        assert_eq!(files(&plain), files(&scanned), "seed {seed}");
    }
}

#[test]
fn scan_from_past_the_end_of_the_log_is_corruption_and_changes_nothing() {
    let (pristine, _) = build();
    let (log, report) = open(&copy_of(&pristine), Lsn(0)).expect("open");
    let tip = report.tip;
    log.close().expect("close");
    for scan_from in [
        Lsn(tip.0 + 1000),
        Lsn(tip.0 + 10 * SEGMENT_LEN_BYTES),
        Lsn(u64::MAX),
    ] {
        let storage = copy_of(&pristine);
        let before = files(&storage);
        match open(&storage, scan_from) {
            Err(RecoveryError::Corruption { reason, .. }) => {
                assert!(reason.contains("OpenOptions::scan_from"), "{reason}");
            }
            other => panic!("expected a corruption error, got {other:?}"),
        }
        assert_eq!(files(&storage), before);
    }
    // An empty directory with a claim of durable data is not a new log either.
    let empty = SimStorage::new();
    assert!(matches!(
        open(&empty, Lsn(500)),
        Err(RecoveryError::Corruption { .. })
    ));
}
