//! Damaged files at open: bit flips in the data file, truncation at every length, and bit
//! flips in blob files.
//!
//! Each trial starts from a pristine copy of a small, cleanly closed log (several segments,
//! inline messages, blobs and a batch) on a fresh [`SimStorage`], damages one thing, and opens
//! it with [`recovery::open_log`]. A panic anywhere (open, iteration, close) is turned into a
//! test failure naming the trial. The open must return `Ok` or a typed [`RecoveryError`]; an
//! `Ok` log never yields a message that was not written, byte for byte.
//!
//! Every run is exhaustive and still takes only a few seconds (each trial is about 20 us on
//! this 8 KiB log): every bit of the data file, every truncation length, every bit of one blob
//! file.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use iobuf::storage::{SimStorage, Storage};
use iobuf::{DATA_FILE_NAME, Location, LogConfig, LogError, Lsn, Stored};
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

/// A cleanly closed log and what was written to it, in LSN order.
struct Original {
    files: Vec<(String, Vec<u8>)>,
    messages: Vec<(Location, Vec<u8>)>,
}

fn message_bytes(idx: usize, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (idx as u8).wrapping_mul(37).wrapping_add(i as u8) ^ 0x5A)
        .collect()
}

/// Several segments of inline messages, a few blobs and one batch, closed cleanly.
fn build_original() -> Original {
    let storage = SimStorage::new();
    let (log, _) = recovery::open_log(Arc::new(storage.clone()) as Arc<dyn Storage>, config())
        .expect("create the log");
    let mut messages = Vec::new();
    for idx in 0..80usize {
        match idx {
            7 | 23 | 41 => {
                let bytes = message_bytes(idx, 300 + idx);
                let location = log.write(&bytes).unwrap();
                assert_eq!(location.stored, Stored::Blob);
                messages.push((location, bytes));
            }
            30 => {
                let batch: Vec<Vec<u8>> = (0..3).map(|k| message_bytes(idx + k, 40)).collect();
                let refs: Vec<&[u8]> = batch.iter().map(Vec::as_slice).collect();
                let locations = log.write_batch(&refs).unwrap();
                messages.extend(locations.into_iter().zip(batch));
            }
            _ => {
                let bytes = message_bytes(idx, 20 + (idx * 13) % 120);
                messages.push((log.write(&bytes).unwrap(), bytes));
            }
        }
        if idx % 9 == 0 {
            log.flush().unwrap();
        }
    }
    log.close().unwrap();
    let files = storage
        .file_names()
        .into_iter()
        .map(|name| {
            let bytes = storage.read_file(&name).unwrap();
            (name, bytes)
        })
        .collect();
    let original = Original { files, messages };
    // Sanity: the undamaged copy recovers everything.
    let outcome = open_damaged(&original, |_| {});
    match outcome {
        Opened::Ok { recovered, .. } => assert_eq!(recovered, original.messages),
        other => panic!("the pristine copy does not open: {other:?}"),
    }
    assert!(
        original.data_file().len() as u64 > 3 * SEGMENT_LEN_BYTES,
        "the log spans several segments"
    );
    original
}

impl Original {
    fn data_file(&self) -> &[u8] {
        self.file(DATA_FILE_NAME)
    }

    fn file(&self, name: &str) -> &[u8] {
        &self
            .files
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no file {name}"))
            .1
    }

    fn blob_names(&self) -> Vec<String> {
        self.files
            .iter()
            .map(|(name, _)| name.clone())
            .filter(|name| iobuf::format::parse_blob_file_name(name).is_some())
            .collect()
    }
}

/// What one trial saw.
#[derive(Debug)]
enum Opened {
    /// The open succeeded; iteration from the release point gave these messages, then
    /// `iter_error` if it stopped on an error.
    Ok {
        report: Box<RecoveryReport>,
        recovered: Vec<(Location, Vec<u8>)>,
        iter_error: Option<LogError>,
    },
    Err(RecoveryError),
}

/// Copies the original onto a fresh disk, lets `damage` change it, opens it and reads the
/// recovered log. Panics in the library are caught and returned as `Err(message)`.
fn try_open_damaged(
    original: &Original,
    damage: impl FnOnce(&SimStorage),
) -> Result<Opened, String> {
    let storage = SimStorage::new();
    for (name, bytes) in &original.files {
        storage.write_file_raw(name, bytes);
    }
    damage(&storage);
    let result = catch_unwind(AssertUnwindSafe(|| {
        match recovery::open_log(Arc::new(storage.clone()) as Arc<dyn Storage>, config()) {
            Err(error) => Opened::Err(error),
            Ok((log, report)) => {
                let mut recovered = Vec::new();
                let mut iter_error = None;
                match log.iter_from(report.log_start) {
                    Ok(iter) => {
                        for item in iter {
                            match item {
                                Ok(message) => recovered.push(message),
                                Err(error) => {
                                    iter_error = Some(error);
                                    break;
                                }
                            }
                        }
                    }
                    Err(error) => iter_error = Some(error),
                }
                drop(log);
                Opened::Ok {
                    report: Box::new(report),
                    recovered,
                    iter_error,
                }
            }
        }
    }));
    result.map_err(|payload| {
        payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "non-string panic".to_string())
    })
}

fn open_damaged(original: &Original, damage: impl FnOnce(&SimStorage)) -> Opened {
    try_open_damaged(original, damage).unwrap_or_else(|panic| panic!("panicked: {panic}"))
}

/// Whether `recovered` is a prefix of the originals with identical locations and bytes.
fn check_prefix(original: &Original, recovered: &[(Location, Vec<u8>)], what: &str) {
    assert!(
        recovered.len() <= original.messages.len(),
        "{what}: {} messages recovered, only {} written",
        recovered.len(),
        original.messages.len()
    );
    for (idx, (got, want)) in recovered.iter().zip(&original.messages).enumerate() {
        assert_eq!(
            got.0.lsn, want.0.lsn,
            "{what}: message {idx} has another LSN"
        );
        assert!(got.1 == want.1, "{what}: message {idx} has other bytes");
    }
}

/// Flips `bit` of the data file and checks the outcome: no panic; `Ok` gives exactly the
/// original log (the log was closed cleanly, so every message was durable and losing any of
/// them silently is a bug); otherwise a `Corruption` error (or, for the version field of a
/// segment header, a `format_version` mismatch).
fn flip_data_bit(original: &Original, bit: usize) -> Result<(), String> {
    let opened = try_open_damaged(original, |storage| {
        let mut bytes = original.data_file().to_vec();
        bytes[bit / 8] ^= 1 << (bit % 8);
        storage.write_file_raw(DATA_FILE_NAME, &bytes);
    })
    .map_err(|panic| format!("bit {bit} (byte {}): open panicked: {panic}", bit / 8))?;
    let where_ = format!(
        "bit {bit} (byte {}, segment {}, offset {})",
        bit / 8,
        bit / 8 / SEGMENT_LEN_BYTES as usize,
        bit / 8 % SEGMENT_LEN_BYTES as usize
    );
    match opened {
        Opened::Err(RecoveryError::Corruption { .. }) => Ok(()),
        Opened::Err(RecoveryError::ConfigMismatch {
            field: "format_version",
            ..
        }) => Ok(()),
        Opened::Err(other) => Err(format!("{where_}: unexpected error {other:?}")),
        Opened::Ok {
            report,
            recovered,
            iter_error,
        } => {
            if let Some(error) = iter_error {
                return Err(format!(
                    "{where_}: open was Ok ({report}) but iteration failed after {} messages: \
                     {error}",
                    recovered.len()
                ));
            }
            let n_prefix = recovered
                .iter()
                .zip(&original.messages)
                .take_while(|(got, want)| got.0.lsn == want.0.lsn && got.1 == want.1)
                .count();
            if n_prefix != recovered.len() {
                return Err(format!(
                    "{where_}: GARBAGE: recovered message {n_prefix} is not the original ({report})"
                ));
            }
            if recovered.len() != original.messages.len() {
                return Err(format!(
                    "{where_}: SILENT LOSS: open Ok but only {} of {} messages recovered ({report})",
                    recovered.len(),
                    original.messages.len()
                ));
            }
            Ok(())
        }
    }
}

/// Bit flips anywhere in the data file of a cleanly closed log never panic, never yield a
/// message that was not written, and never silently drop durable messages: the open either
/// reports `Corruption` or returns the whole original log (the flip hit bytes no reader
/// checks, such as padding bodies or unused space).
#[test]
fn bit_flips_in_the_data_file_are_detected_or_harmless() {
    let original = build_original();
    let n_bits = original.data_file().len() * 8;
    let bits: Vec<usize> = (0..n_bits).collect();
    let failures: Vec<String> = bits
        .iter()
        .filter_map(|&bit| flip_data_bit(&original, bit).err())
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} flipped bits went wrong; first ones:\n{}",
        failures.len(),
        bits.len(),
        failures
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Truncating the data file at any length never panics: the open gives a typed error, or a
/// log that is a prefix of the original with identical bytes.
#[test]
fn truncation_at_every_length_gives_a_prefix_or_an_error() {
    let original = build_original();
    let len = original.data_file().len();
    let mut n_ok = 0;
    let mut n_err = 0;
    for cut_len in 0..len {
        let opened = try_open_damaged(&original, |storage| {
            storage.write_file_raw(DATA_FILE_NAME, &original.data_file()[..cut_len]);
        })
        .unwrap_or_else(|panic| panic!("truncated to {cut_len} bytes: panicked: {panic}"));
        match opened {
            Opened::Err(_) => n_err += 1,
            Opened::Ok {
                recovered,
                iter_error,
                report,
            } => {
                assert!(
                    iter_error.is_none(),
                    "truncated to {cut_len}: open Ok ({report}) but iteration failed: \
                     {iter_error:?}"
                );
                check_prefix(&original, &recovered, &format!("truncated to {cut_len}"));
                n_ok += 1;
            }
        }
    }
    eprintln!("truncation: {n_ok} opened with a prefix, {n_err} typed errors");
}

/// Bit flips in a blob file: the open is `Ok` or a typed error, and reading the blob's
/// message (directly or by iterating) returns `LogError::BlobCorruption`, never other bytes.
#[test]
fn bit_flips_in_a_blob_file_are_blob_corruption() {
    let original = build_original();
    let blob_names = original.blob_names();
    assert_eq!(blob_names.len(), 3);
    let (blob_location, blob_bytes) = original
        .messages
        .iter()
        .find(|(location, _)| location.stored == Stored::Blob)
        .cloned()
        .unwrap();
    let name = iobuf::format::blob_file_name(blob_location.lsn);
    let pristine = original.file(&name).to_vec();
    for bit in 0..pristine.len() * 8 {
        let storage = SimStorage::new();
        for (file_name, bytes) in &original.files {
            storage.write_file_raw(file_name, bytes);
        }
        let mut damaged = pristine.clone();
        damaged[bit / 8] ^= 1 << (bit % 8);
        storage.write_file_raw(&name, &damaged);
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            let (log, report) =
                match recovery::open_log(Arc::new(storage.clone()) as Arc<dyn Storage>, config()) {
                    Ok(opened) => opened,
                    Err(_) => return,
                };
            let read = log.read(blob_location);
            assert!(
                matches!(read, Err(LogError::BlobCorruption { lsn, .. }) if lsn == blob_location.lsn),
                "bit {bit}: read gave {:?}",
                read.map(|bytes| bytes == blob_bytes)
            );
            let iterated: Vec<_> = log.iter_from(report.log_start).unwrap().collect();
            let position = iterated
                .iter()
                .position(|item| item.is_err())
                .expect("iteration reports the damaged blob");
            assert!(
                matches!(&iterated[position], Err(LogError::BlobCorruption { lsn, .. }) if *lsn == blob_location.lsn),
                "bit {bit}: iteration gave {:?}",
                iterated[position]
            );
            for (item, want) in iterated[..position].iter().zip(&original.messages) {
                let got = item.as_ref().unwrap();
                assert_eq!(got.0.lsn, want.0.lsn);
                assert!(got.1 == want.1, "bit {bit}: other bytes before the blob");
            }
        }));
        if let Err(payload) = outcome {
            let message = payload
                .downcast_ref::<String>()
                .cloned()
                .unwrap_or_else(|| "non-string panic".to_string());
            panic!("blob {name}, bit {bit}: {message}");
        }
    }
}

/// Sanity check of the trial machinery, and the reference numbers printed by the sweeps.
#[test]
fn pristine_copy_recovers_everything() {
    let original = build_original();
    match open_damaged(&original, |_| {}) {
        Opened::Ok {
            report, recovered, ..
        } => {
            assert_eq!(report.log_start, Lsn(0));
            assert_eq!(recovered.len(), original.messages.len());
        }
        Opened::Err(error) => panic!("{error}"),
    }
}
