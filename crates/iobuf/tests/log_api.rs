//! The log's API on the simulated storage: writes, reads, iteration, batches, blobs, aborts,
//! durability points, release, poisoning. Tiny buffers and segments so buffer rolls, segment
//! rolls and ring laps happen constantly.

use std::sync::Arc;

use iobuf::storage::{FaultKind, SimStorage, Storage};
use iobuf::{Location, Log, LogConfig, LogError, Lsn, Stored};

fn tiny_config() -> LogConfig {
    LogConfig {
        segment_len_bytes: 2048,
        io_buf_len_bytes: 512,
        n_io_bufs: 3,
        blob_threshold_bytes: 200,
        flush_every: None,
    }
}

fn message(i: usize) -> Vec<u8> {
    // Lengths 0..=260 cover empty messages, messages that barely fit, and blobs (> 200).
    let len = (i * 37) % 261;
    (0..len).map(|j| (i + j) as u8).collect()
}

fn new_log() -> (SimStorage, Log) {
    let storage = SimStorage::new();
    let log = Log::create(Arc::new(storage.clone()), tiny_config()).unwrap();
    (storage, log)
}

/// Writes each message and returns where it went, with its bytes.
fn write_each(log: &Log, messages: impl IntoIterator<Item = Vec<u8>>) -> Vec<(Location, Vec<u8>)> {
    messages
        .into_iter()
        .map(|bytes| (log.write(&bytes).unwrap(), bytes))
        .collect()
}

#[test]
fn messages_read_back_exactly_across_buffer_and_segment_rolls() {
    let (_storage, log) = new_log();
    let mut written: Vec<(Location, Vec<u8>)> = Vec::new();
    for i in 0..500 {
        let bytes = message(i);
        let location = log.write(&bytes).unwrap();
        written.push((location, bytes));
    }
    for window in written.windows(2) {
        assert!(window[0].0.lsn < window[1].0.lsn, "LSNs increase");
    }
    for (location, bytes) in &written {
        assert_eq!(&log.read(*location).unwrap(), bytes, "{location:?}");
    }
    log.flush().unwrap();
    let iterated: Vec<(Location, Vec<u8>)> = log
        .iter_from(Lsn(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(iterated, written);
    assert!(
        log.with_accountant(|a| a.n_segments_in_file()) > 20,
        "segments rolled"
    );
    assert!(written.iter().any(|(l, _)| l.stored == Stored::Blob));
    log.close().unwrap();
}

#[test]
fn next_with_lends_each_message_that_next_would_copy() {
    let (_storage, log) = new_log();
    let written = write_each(&log, (0..300).map(message));
    log.flush().unwrap();
    let mut iter = log.iter_from(Lsn(0)).unwrap();
    let mut lent = Vec::new();
    while let Some(item) = iter.next_with(|location, bytes| (location, bytes.to_vec())) {
        lent.push(item.unwrap());
    }
    assert_eq!(lent, written, "inline messages and blobs alike");
    assert!(written.iter().any(|(l, _)| l.stored == Stored::Blob));
    assert!(iter.next_with(|_, _| ()).is_none(), "stays at the end");
}

/// Regression: the cleaner scanned one segment with `iter_from` and stopped at the first
/// message past it, which made the iterator read the whole next segment just to find that
/// message. `iter_range` stops at its end without touching storage past the segment it is in.
#[test]
fn iter_range_reads_nothing_past_its_end() {
    let (storage, log) = new_log();
    let segment_len = tiny_config().segment_len_bytes;
    // Inline: no blob file to read.
    let written = write_each(&log, (0..100).map(|i| vec![i as u8; 60]));
    log.flush().unwrap();
    assert!(
        written.last().unwrap().0.lsn.0 > 2 * segment_len,
        "three segments at least"
    );
    let end = Lsn(segment_len);
    let expected: Vec<_> = written
        .iter()
        .filter(|(l, _)| l.lsn < end)
        .cloned()
        .collect();

    let mut iter = log.iter_range(Lsn(0), end).unwrap();
    let first = iter.next().unwrap().unwrap();
    // The first segment is in memory now; any further storage call fails.
    storage.fail_all_from(storage.n_calls(), FaultKind::Eio);
    let mut seen = vec![first];
    for item in iter {
        seen.push(item.expect("nothing past the first segment is read"));
    }
    assert_eq!(seen, expected);

    // `iter_from` goes on to the next segment, and so meets the fault.
    let mut unbounded = log
        .iter_from(Lsn(expected.last().unwrap().0.lsn.0))
        .unwrap();
    storage.clear_faults();
    assert!(unbounded.next().unwrap().is_ok());
    storage.fail_all_from(storage.n_calls(), FaultKind::Eio);
    assert!(
        unbounded.next().unwrap().is_err(),
        "it reads the next segment"
    );
    storage.clear_faults();
}

/// Regression: `iter_range` used to read the segment only up to `end`, so an `end` inside a
/// message cut its frame short and the scan reported corruption (or, with less than a frame
/// header left, silently skipped the message although it starts below `end`).
#[test]
fn iter_range_yields_the_message_that_end_falls_inside() {
    let (_storage, log) = new_log();
    let written = write_each(&log, (0..100).map(|i| vec![i as u8; 60]));
    log.flush().unwrap();
    for (idx, (location, _)) in written.iter().enumerate().step_by(5) {
        for into_frame in [1, 5, 40] {
            let end = Lsn(location.lsn.0 + into_frame);
            let seen: Vec<_> = log
                .iter_range(Lsn(0), end)
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap_or_else(|error| panic!("end {end:?}: {error}"));
            assert_eq!(seen, written[..=idx].to_vec(), "end {end:?}");
        }
    }
}

/// Regression: a made-up location used to overflow computing its frame's length (a panic in
/// debug builds), or size the read buffer from its length (an allocation that can abort), or
/// seal the current buffer to "write" a frame past the tip; each is `NoMessage` now.
#[test]
fn a_location_whose_frame_cannot_exist_is_no_message() {
    let (_storage, log) = new_log();
    let real = log.write(&message(1)).unwrap();
    log.flush().unwrap();
    let segment_len = tiny_config().segment_len_bytes;
    let made_up = [
        Location {
            len_bytes: u64::MAX,
            ..real
        },
        Location {
            len_bytes: segment_len,
            ..real
        },
        Location {
            lsn: Lsn(real.lsn.0 + 100 * segment_len),
            file_offset: real.file_offset,
            ..real
        },
        Location {
            lsn: Lsn(u64::MAX - 8),
            ..real
        },
    ];
    for location in made_up {
        match log.read(location) {
            Err(LogError::NoMessage { .. }) => {}
            other => panic!("{location:?}: {other:?}"),
        }
    }
    assert_eq!(log.read(real).unwrap(), message(1));
}

#[test]
fn iter_from_starts_at_the_first_message_at_or_after_the_lsn() {
    let (_storage, log) = new_log();
    let locations: Vec<Location> = (0..100).map(|i| log.write(&message(i)).unwrap()).collect();
    log.flush().unwrap();
    for (idx, location) in locations.iter().enumerate().step_by(7) {
        let first = log
            .iter_from(location.lsn)
            .unwrap()
            .next()
            .unwrap()
            .unwrap();
        assert_eq!(first.0, *location);
        // One past a message's start: the iteration begins at the next message.
        let after = log.iter_from(Lsn(location.lsn.0 + 1)).unwrap().next();
        match locations.get(idx + 1) {
            Some(next) => assert_eq!(after.unwrap().unwrap().0, *next),
            None => assert!(after.is_none()),
        }
    }
}

#[test]
fn iteration_stops_at_the_stable_lsn() {
    let (_storage, log) = new_log();
    let stable = log.write(b"stable").unwrap();
    log.make_stable(stable.lsn).unwrap();
    let _pending = log.write(b"not yet stable").unwrap();
    let all: Vec<_> = log
        .iter_from(Lsn(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].1, b"stable");
}

#[test]
fn aborted_and_dropped_reservations_never_appear() {
    let (_storage, log) = new_log();
    let kept = log.write(b"first").unwrap();
    let mut aborted = log.reserve(10).unwrap();
    aborted.buffer_mut().copy_from_slice(b"aborted!!!");
    aborted.abort().unwrap();
    {
        let mut dropped = log.reserve(300).unwrap(); // a blob-sized one, too
        dropped.buffer_mut()[0] = 1;
    }
    let last = log.write(b"last").unwrap();
    log.flush().unwrap();
    let all: Vec<_> = log
        .iter_from(Lsn(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        all,
        vec![(kept, b"first".to_vec()), (last, b"last".to_vec())]
    );
    assert_eq!(
        log.metrics()
            .n_aborts
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );
}

#[test]
fn batches_are_contiguous_and_read_back() {
    let (_storage, log) = new_log();
    let big = vec![7u8; 300];
    let batch: Vec<&[u8]> = vec![b"a", b"bb", &big, b""];
    for _ in 0..20 {
        let locations = log.write_batch(&batch).unwrap();
        assert_eq!(locations.len(), 4);
        assert_eq!(locations[2].stored, Stored::Blob);
        for (location, bytes) in locations.iter().zip(&batch) {
            assert_eq!(&log.read(*location).unwrap(), bytes);
        }
    }
    assert!(matches!(log.write_batch(&[]), Err(LogError::EmptyBatch)));
    let too_big = vec![0u8; 150];
    let batch: Vec<&[u8]> = vec![&too_big, &too_big, &too_big];
    assert!(matches!(
        log.write_batch(&batch),
        Err(LogError::BatchTooLarge { .. })
    ));
}

/// Weak point 4: `make_stable` for an LSN that was never reserved blocked forever in the
/// original. It must return an error at once.
#[test]
fn make_stable_of_an_unreserved_lsn_is_an_error_not_a_hang() {
    let (_storage, log) = new_log();
    let location = log.write(b"x").unwrap();
    let far = Lsn(location.lsn.0 + 1_000_000);
    match log.make_stable(far) {
        Err(LogError::NotReserved { lsn, tip }) => {
            assert_eq!(lsn, far);
            assert!(tip > location.lsn);
        }
        other => panic!("expected NotReserved, got {other:?}"),
    }
    assert!(matches!(
        log.make_stable(log.tip()),
        Err(LogError::NotReserved { .. })
    ));
    log.make_stable(location.lsn).unwrap();
    assert!(log.stable_lsn() > location.lsn);
}

#[test]
fn one_sync_per_durable_point() {
    let (_storage, log) = new_log();
    for i in 0..50u64 {
        let location = log.write(&i.to_le_bytes()).unwrap();
        log.make_stable(location.lsn).unwrap();
    }
    let metrics = log.metrics();
    let n_syncs = metrics.n_syncs.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(n_syncs, 50, "exactly one fdatasync per durable append");
    // Already stable: no further sync.
    log.flush().unwrap();
    assert_eq!(
        metrics.n_syncs.load(std::sync::atomic::Ordering::Relaxed),
        50
    );
}

/// Weak point 3 / 8 (log side): a blob's file is durable before its pointer, and a released
/// blob's file is deleted once the release is durable, so none leak.
#[test]
fn released_blobs_are_deleted_and_none_leak() {
    let (storage, log) = new_log();
    let blob = vec![42u8; 1000];
    let location = log.write(&blob).unwrap();
    assert_eq!(location.stored, Stored::Blob);
    let blob_name = iobuf::format::blob_file_name(location.lsn);
    assert!(storage.file_names().contains(&blob_name));
    assert_eq!(log.read(location).unwrap(), blob);
    log.release_before(Lsn(location.lsn.0 + 1));
    // The release becomes durable with the next segment header once that segment is stable.
    for i in 0..200 {
        log.write(&message(i % 150)).unwrap();
    }
    log.flush().unwrap();
    assert!(log.durable_release_point() > location.lsn);
    assert!(
        !storage.file_names().contains(&blob_name),
        "released blob file deleted"
    );
}

#[test]
fn release_before_lets_segments_be_reused_so_the_file_stops_growing() {
    let (_storage, log) = new_log();
    let mut max_segments_warmup = 0;
    let mut max_segments_later = 0;
    for round in 0..40 {
        for i in 0..50 {
            log.write(&message(i % 100)).unwrap();
        }
        log.flush().unwrap();
        log.release_before(log.stable_lsn());
        let n_segments = log.with_accountant(|a| a.n_segments_in_file());
        if round <= 10 {
            max_segments_warmup = max_segments_warmup.max(n_segments);
        } else {
            max_segments_later = max_segments_later.max(n_segments);
        }
    }
    // Without reuse the 30 later rounds alone would fill about 60 more segments. The file
    // may move by a segment either way (free segments ending it are cut off, then the end
    // is extended again when the log needs a segment).
    assert!(
        max_segments_later <= max_segments_warmup + 1,
        "the data file kept growing: at most {max_segments_warmup} segments in the first 10 \
         rounds, {max_segments_later} later"
    );
}

/// Regression: the data file never shrank. After a burst grew it, releasing the log freed
/// the segments but the file kept its peak length for good (the page cache's bench showed a
/// 104 MiB file for 21 MiB live). Free segments that end the file are now cut off it.
#[test]
fn the_file_shrinks_back_once_the_segments_ending_it_are_released() {
    let (storage, log) = new_log();
    let segment_len = tiny_config().segment_len_bytes;
    for i in 0..2000 {
        log.write(&message(i % 100)).unwrap();
    }
    log.flush().unwrap();
    let peak_segments = log.with_accountant(|a| a.n_segments_in_file());
    assert!(
        peak_segments >= 20,
        "the burst filled {peak_segments} segments"
    );
    // Release everything, again and again while writing a little: the log moves to the
    // lowest free segments and the end of the file empties.
    for round in 0..20 {
        for i in 0..20 {
            log.write(&message(round + i)).unwrap();
        }
        log.flush().unwrap();
        log.release_before(log.stable_lsn());
    }
    let n_segments = log.with_accountant(|a| a.n_segments_in_file());
    let file_len = storage.read_file(iobuf::DATA_FILE_NAME).unwrap().len() as u64;
    assert!(
        n_segments <= 6,
        "the file kept {n_segments} of its {peak_segments} segments"
    );
    assert_eq!(
        file_len,
        n_segments * segment_len,
        "the file was cut to the accountant's length"
    );
    // What is still live reads back after the cut.
    let last = log.write(b"after the cut").unwrap();
    log.flush().unwrap();
    assert_eq!(log.read(last).unwrap(), b"after the cut");
}

/// Regression: a release point written into a segment header counted as durable only once
/// that whole segment was, so every released segment waited a segment of writes longer than
/// needed before it could be reused (the page cache's file carried one segment more than it
/// needed). The header being durable is what recovery relies on, so that is what counts.
#[test]
fn a_release_is_durable_as_soon_as_the_next_segment_header_is() {
    let (_storage, log) = new_log();
    let segment_len = tiny_config().segment_len_bytes;
    let released = fill_three_segments_and_release_the_first(&log);
    assert!(log.durable_release_point() < released);
    // Write into the next segment until its header (which records the release) is durable,
    // but stop well before that segment is full.
    let next_base = write_a_little_into_the_next_segment(&log);
    log.flush().unwrap();
    assert!(log.stable_lsn().0 < next_base + segment_len / 2);
    assert_eq!(
        log.durable_release_point(),
        released,
        "the header recording the release is durable, so the release is"
    );
}

/// Writes three segments of small messages, makes them durable and releases the first
/// segment (not durable yet: that waits for a header recording it). Returns the release.
fn fill_three_segments_and_release_the_first(log: &Log) -> Lsn {
    let segment_len = tiny_config().segment_len_bytes;
    while log.tip().0 < 3 * segment_len {
        log.write(b"fill").unwrap();
    }
    log.flush().unwrap();
    let released = Lsn(segment_len);
    log.release_before(released);
    released
}

/// Writes small messages into the segment after the current one, a few frames past its
/// header; returns that segment's base LSN.
fn write_a_little_into_the_next_segment(log: &Log) -> u64 {
    let segment_len = tiny_config().segment_len_bytes;
    let next_base = (log.tip().0 / segment_len + 1) * segment_len;
    while log.tip().0 < next_base + 64 {
        log.write(b"small").unwrap();
    }
    next_base
}

/// Regression: a flush right after a segment roll, while the new buffer held only its
/// prefix (the segment header recording a release, and the buffer-start frame), left that
/// buffer alone as one with no message, so the release did not become durable. The
/// background flusher woken for the release could read the tip in that window and then slept
/// a whole interval (`a_header_recording_a_release_wakes_the_flusher` failed now and then).
/// Here the window is made on purpose: each message is flushed on its own, sized so that
/// some flush ends the segment exactly and rolls into a message-less buffer.
#[test]
fn a_flush_makes_a_release_in_a_message_less_header_durable() {
    use iobuf::format::{BUFFER_START_FRAME_LEN, FRAME_HEADER_LEN, SEGMENT_HEADER_LEN};
    let (_storage, log) = new_log();
    let segment_len = tiny_config().segment_len_bytes;
    let released = fill_three_segments_and_release_the_first(&log);
    let prefix_len = SEGMENT_HEADER_LEN + BUFFER_START_FRAME_LEN;
    let start_segment = log.tip().0 / segment_len;
    loop {
        // After a flush the current buffer is fresh; a message that fits it leaves the
        // segment (if it ends it) with nothing of its own in the next one.
        let remaining = segment_len - log.tip().0 % segment_len;
        let room = remaining.saturating_sub(BUFFER_START_FRAME_LEN + FRAME_HEADER_LEN);
        log.write(&vec![7u8; room.min(40) as usize]).unwrap();
        log.flush().unwrap();
        if log.tip().0 % segment_len == prefix_len {
            break;
        }
        assert!(
            log.tip().0 / segment_len < start_segment + 4,
            "no flush ended a segment exactly"
        );
    }
    // The roll put the release into the new segment's header; the buffer holding it has no
    // message. This flush must write it anyway.
    assert!(log.durable_release_point() < released);
    log.flush().unwrap();
    assert!(
        log.durable_release_point() >= released,
        "the release recorded in the new segment's header is not durable after a flush"
    );
    log.close().unwrap();
}

/// Regression: with the background flusher on, a release became durable only at the
/// flusher's next round, so under a fast writer the data file grew by everything written in
/// one interval (about 20 MiB at 100 MB/s and 200 ms) before a released segment could be
/// reused. Starting a segment whose header records a release now asks the flusher for a
/// round at once. The interval here is a minute: only that request can make it in time.
#[test]
fn a_header_recording_a_release_wakes_the_flusher() {
    let storage = SimStorage::new();
    let config = LogConfig {
        flush_every: Some(std::time::Duration::from_secs(60)),
        ..tiny_config()
    };
    let log = Log::create(Arc::new(storage), config).unwrap();
    let released = fill_three_segments_and_release_the_first(&log);
    write_a_little_into_the_next_segment(&log);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while log.durable_release_point() < released {
        assert!(
            std::time::Instant::now() < deadline,
            "the release was not made durable without an explicit flush"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    log.close().unwrap();
}

#[test]
fn a_second_opener_of_the_directory_is_refused() {
    let (storage, _log) = new_log();
    let second = Log::create(Arc::new(storage.clone()), tiny_config());
    assert!(matches!(second, Err(LogError::Locked)));
}

/// `reserve` used to allocate a large message's buffer with `vec![0; len]`, so an impossible
/// length from the caller (here `usize::MAX`) panicked or aborted the process instead of
/// returning an error. It must be a typed error, and the log must stay usable.
#[test]
fn an_impossible_message_length_is_a_typed_error_not_a_panic() {
    let (_storage, log) = new_log();
    for len_bytes in [usize::MAX, isize::MAX as usize] {
        match log.reserve(len_bytes) {
            Err(LogError::MessageTooLarge { len_bytes: got }) => {
                assert_eq!(got, len_bytes as u64)
            }
            other => panic!("expected MessageTooLarge for {len_bytes}, got {other:?}"),
        }
    }
    let location = log.write(b"still fine").unwrap();
    assert_eq!(log.read(location).unwrap(), b"still fine");
}

#[test]
fn an_invalid_configuration_is_a_typed_error() {
    let storage = SimStorage::new();
    let config = LogConfig {
        n_io_bufs: 1,
        ..tiny_config()
    };
    assert!(matches!(
        Log::create(Arc::new(storage), config),
        Err(LogError::Config(_))
    ));
}

/// Fail-stop: fail each storage call in turn. After the first failure every operation
/// returns an error, and nothing is acknowledged as durable after it.
#[test]
fn any_failed_storage_call_poisons_the_log() {
    // Count the calls of a clean run of the workload.
    let workload = |log: &Log| -> Result<(), LogError> {
        for i in 0..60 {
            let location = log.write(&message(i))?;
            if i % 10 == 0 {
                log.make_stable(location.lsn)?;
            }
        }
        log.flush()?;
        Ok(())
    };
    let clean = SimStorage::new();
    {
        let log = Log::create(Arc::new(clean.clone()), tiny_config()).unwrap();
        workload(&log).unwrap();
        log.close().unwrap();
    }
    let n_calls = clean.n_calls();
    assert!(n_calls > 50, "the workload makes {n_calls} storage calls");
    for call_idx in 0..n_calls {
        for kind in [FaultKind::Eio, FaultKind::Enospc] {
            let storage = SimStorage::new();
            storage.fail_call(call_idx, kind);
            let log =
                match Log::create(Arc::new(storage.clone()) as Arc<dyn Storage>, tiny_config()) {
                    Ok(log) => log,
                    Err(error) => {
                        assert_eq!(error.raw_os_error(), Some(kind.raw_os_error()));
                        continue;
                    }
                };
            let stable_before_failure = log.stable_lsn();
            let error = match workload(&log) {
                Err(error) => error,
                Ok(()) => {
                    // The failing call is one of those a clean close makes.
                    let error = log.close().expect_err("the injected failure must surface");
                    assert_eq!(error.raw_os_error(), Some(kind.raw_os_error()), "{error}");
                    continue;
                }
            };
            assert_eq!(error.raw_os_error(), Some(kind.raw_os_error()), "{error}");
            // Poisoned: every later call fails, and the stable LSN no longer moves.
            let stable = log.stable_lsn();
            assert!(stable >= stable_before_failure);
            assert!(log.write(b"after").is_err());
            assert!(log.flush().is_err());
            assert!(log.reserve(3).is_err());
            assert_eq!(log.stable_lsn(), stable);
            assert!(log.close().is_err());
        }
    }
}

/// `read_with` hands over the same verified bytes as `read`, inline and blob, and a read
/// nested inside another read's closure gets a buffer of its own.
#[test]
fn read_with_sees_what_read_returns_and_nests() {
    let (_storage, log) = new_log();
    let written = write_each(&log, (0..300).map(message));
    assert!(written.iter().any(|(l, _)| l.stored == Stored::Blob));
    for pair in written.windows(2) {
        let [(outer, outer_bytes), (inner, inner_bytes)] = pair else {
            unreachable!()
        };
        let seen = log
            .read_with(*outer, |bytes| {
                let nested = log.read_with(*inner, <[u8]>::to_vec).unwrap();
                assert_eq!(&nested, inner_bytes, "{inner:?}");
                bytes.to_vec()
            })
            .unwrap();
        assert_eq!(&seen, outer_bytes, "{outer:?}");
        assert_eq!(&log.read(*outer).unwrap(), outer_bytes);
    }
}

/// The log remembers the salt of each segment header it read, so later reads skip the
/// header. A location whose segment was released and reused since must still be
/// `NoMessage` (its old frame may still verify where the new incarnation has not written
/// yet: the remembered salt must not make it readable), and locations in the new
/// incarnation read back right.
#[test]
fn a_read_after_its_segment_was_reused_is_no_message_even_with_the_salt_remembered() {
    let (_storage, log) = new_log();
    let segment_len = tiny_config().segment_len_bytes;
    let old = write_each(&log, (0..20).map(|i| vec![i as u8; 40]));
    log.flush().unwrap();
    // Read them all: their segments' salts are now remembered.
    for (location, bytes) in &old {
        assert_eq!(&log.read(*location).unwrap(), bytes);
    }
    let physical = |location: &Location| location.file_offset / segment_len;
    let logical = |location: &Location| location.lsn.0 / segment_len;
    let (first, _) = &old[0];
    // A newer location in the first physical segment, holding another logical segment.
    let reuses_first =
        |location: &Location| physical(location) == physical(first) && logical(location) != 0;
    let mut newer: Vec<(Location, Vec<u8>)> = Vec::new();
    for round in 0..400 {
        for i in 0..10 {
            let bytes = vec![(round * 10 + i) as u8; 40];
            newer.push((log.write(&bytes).unwrap(), bytes));
        }
        log.flush().unwrap();
        log.release_before(log.stable_lsn());
        if newer.iter().any(|(location, _)| reuses_first(location)) {
            break;
        }
    }
    log.flush().unwrap();
    let reused: Vec<&(Location, Vec<u8>)> = newer
        .iter()
        .filter(|(location, _)| reuses_first(location))
        .collect();
    assert!(!reused.is_empty(), "the first segment was never reused");
    for (location, _) in old.iter().filter(|(location, _)| logical(location) == 0) {
        match log.read(*location) {
            Err(LogError::NoMessage { .. }) => {}
            other => panic!("a stale location {location:?} read as {other:?}"),
        }
        match log.read_with(*location, <[u8]>::to_vec) {
            Err(LogError::NoMessage { .. }) => {}
            other => panic!("a stale location {location:?} read as {other:?}"),
        }
    }
    for (location, bytes) in reused {
        assert_eq!(&log.read(*location).unwrap(), bytes);
    }
}

/// A read that the device fails is an IO error carrying the errno, not "no message there"
/// (which the page cache reports as corruption), and it does not poison the log: the same
/// read succeeds once the device answers again, and writes go on.
#[test]
fn a_failed_read_is_an_io_error_and_does_not_poison_the_log() {
    let (storage, log) = new_log();
    let location = log.write(b"a message on disk").unwrap();
    log.flush().unwrap();
    assert_eq!(log.read(location).unwrap(), b"a message on disk");
    // The salt is remembered now, so the read is one call: the frame's pread.
    storage.fail_call(storage.n_calls(), FaultKind::Eio);
    let error = log.read(location).expect_err("the device failed the read");
    assert!(matches!(error, LogError::Io { .. }), "{error:?}");
    assert_eq!(error.raw_os_error(), Some(FaultKind::Eio.raw_os_error()));
    assert_eq!(log.read(location).unwrap(), b"a message on disk");
    let later = log.write(b"after").unwrap();
    log.make_stable(later.lsn).unwrap();
    assert_eq!(log.read(later).unwrap(), b"after");
    log.close().unwrap();
}
