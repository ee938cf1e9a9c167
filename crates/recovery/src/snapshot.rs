//! Snapshot files: naming, atomic durable write, verification and fallback on load.
//!
//! The page cache periodically writes a snapshot of its page table so that a restart replays
//! only the log written after it. This module owns the *files*; what goes in them is an opaque
//! payload of bytes. The layout and the crash analysis of every step are in `docs/format.md`
//! ("Snapshot files").
//!
//! # Names
//!
//! * `snapshot-{generation:020}`: a complete snapshot. The only names [`SnapshotStore::load_newest`]
//!   looks at.
//! * `snapshot-{generation:020}.tmp`: a snapshot being written. Never loaded, whatever its
//!   content (the original filtered temporaries under another name than it wrote them, and so
//!   loaded torn ones); removed by the next write.
//!
//! Every other name is ignored and never touched.
//!
//! # Why a write is atomic
//!
//! The file is written and `fdatasync`ed under its temporary name, renamed, and the directory is
//! `fsync`ed; only then are older snapshots removed. A crash at any point leaves either the old
//! snapshot (the rename was not durable) or the new one, complete and synced, and the loader
//! checks both checksums and the length anyway, so even a file system that broke these
//! promises could not make it return wrong bytes: only fall back to an older snapshot.

use std::sync::{Arc, Mutex, PoisonError};

use iobuf::Lsn;
use iobuf::storage::{OpenMode, Storage, StorageFile};

use crate::error::RecoveryError;

/// The first 8 bytes of every snapshot file.
pub(crate) const SNAPSHOT_MAGIC: [u8; 8] = *b"LLSNAPv1";
/// The version of the snapshot file layout; a file with another one is rejected.
pub(crate) const SNAPSHOT_FORMAT_VERSION: u32 = 1;
/// Bytes before the payload: magic (8), format version (4), generation (8), replay_from (8),
/// payload length (8), payload CRC (4), header CRC (4).
pub(crate) const SNAPSHOT_HEADER_LEN: usize = 44;
/// [`SNAPSHOT_HEADER_LEN`] as a file offset.
const SNAPSHOT_HEADER_LEN_BYTES: u64 = SNAPSHOT_HEADER_LEN as u64;
/// The largest payload accepted: 4 GiB. A bound keeps a file of absurd length from being read
/// into memory at load, and the same bound at write means nothing written is ever refused.
pub const MAX_SNAPSHOT_PAYLOAD_LEN_BYTES: u64 = 1 << 32;

/// The name prefix of snapshot files and their temporaries.
const NAME_PREFIX: &str = "snapshot-";
/// The suffix of a snapshot being written.
const TMP_SUFFIX: &str = ".tmp";
/// The number of decimal digits of the generation in a name.
const GENERATION_DIGITS: usize = 20;

// The header offsets below must add up to the header length.
const MAGIC_RANGE: std::ops::Range<usize> = 0..8;
const VERSION_RANGE: std::ops::Range<usize> = 8..12;
const GENERATION_RANGE: std::ops::Range<usize> = 12..20;
const REPLAY_FROM_RANGE: std::ops::Range<usize> = 20..28;
const PAYLOAD_LEN_RANGE: std::ops::Range<usize> = 28..36;
const PAYLOAD_CRC_RANGE: std::ops::Range<usize> = 36..40;
const HEADER_CRC_RANGE: std::ops::Range<usize> = 40..44;
const _: () = assert!(HEADER_CRC_RANGE.end == SNAPSHOT_HEADER_LEN);

/// Snapshot files in a directory, newest generation wins.
///
/// Writes through one store are serialized by an internal lock; two stores (or two processes)
/// writing the same directory at once are not supported (the directory lock of the log keeps a
/// second process out).
#[derive(Debug)]
pub struct SnapshotStore {
    storage: Arc<dyn Storage>,
    /// Serializes [`SnapshotStore::write`]: two interleaved writes could pick the same
    /// generation or remove each other's files.
    write_lock: Mutex<()>,
}

/// Where a snapshot is and what it says, without its payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// The file name, `snapshot-` and the 20-digit generation.
    pub file_name: String,
    /// The generation: 1 for the first snapshot of a directory, then one more each write.
    pub generation: u64,
    /// The LSN from which the caller must replay the log after loading this snapshot.
    pub replay_from: Lsn,
    /// The length of the whole file (header and payload).
    pub len_bytes: u64,
}

/// A snapshot that verified, with the newer ones that did not.
#[derive(Debug, Clone)]
pub struct LoadedSnapshot {
    /// The snapshot loaded.
    pub info: SnapshotInfo,
    /// The payload, byte for byte as it was passed to [`SnapshotStore::write`].
    pub payload: Vec<u8>,
    /// The newer snapshot files that were skipped, newest first, and why.
    pub rejected: Vec<RejectedSnapshot>,
}

/// A snapshot file that did not verify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedSnapshot {
    /// Its file name.
    pub file_name: String,
    /// Which check failed.
    pub reason: String,
}

/// What a snapshot header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SnapshotHeader {
    generation: u64,
    replay_from: Lsn,
    payload_len_bytes: u64,
    payload_crc: u32,
}

impl SnapshotHeader {
    fn encode(&self) -> [u8; SNAPSHOT_HEADER_LEN] {
        let mut bytes = [0u8; SNAPSHOT_HEADER_LEN];
        bytes[MAGIC_RANGE].copy_from_slice(&SNAPSHOT_MAGIC);
        bytes[VERSION_RANGE].copy_from_slice(&SNAPSHOT_FORMAT_VERSION.to_le_bytes());
        bytes[GENERATION_RANGE].copy_from_slice(&self.generation.to_le_bytes());
        bytes[REPLAY_FROM_RANGE].copy_from_slice(&self.replay_from.0.to_le_bytes());
        bytes[PAYLOAD_LEN_RANGE].copy_from_slice(&self.payload_len_bytes.to_le_bytes());
        bytes[PAYLOAD_CRC_RANGE].copy_from_slice(&self.payload_crc.to_le_bytes());
        let header_crc = crc32fast::hash(&bytes[..HEADER_CRC_RANGE.start]);
        bytes[HEADER_CRC_RANGE].copy_from_slice(&header_crc.to_le_bytes());
        bytes
    }

    /// Decodes and checks a header: magic, version, header CRC. The payload is checked by
    /// [`decode_file`].
    fn decode(bytes: &[u8]) -> Result<SnapshotHeader, String> {
        let header = bytes.get(..SNAPSHOT_HEADER_LEN).ok_or_else(|| {
            format!(
                "file of {} bytes is shorter than the {SNAPSHOT_HEADER_LEN}-byte header",
                bytes.len()
            )
        })?;
        if header[MAGIC_RANGE] != SNAPSHOT_MAGIC {
            return Err("bad magic: not a snapshot file".to_string());
        }
        let header_crc = read_u32(header, HEADER_CRC_RANGE);
        let computed_crc = crc32fast::hash(&header[..HEADER_CRC_RANGE.start]);
        if header_crc != computed_crc {
            return Err(format!(
                "header checksum mismatch: stored {header_crc:#010x}, computed {computed_crc:#010x}"
            ));
        }
        // The version is checked after the checksum so a flipped bit reads as damage, not as a
        // file from another version.
        let version = read_u32(header, VERSION_RANGE);
        if version != SNAPSHOT_FORMAT_VERSION {
            return Err(format!(
                "format version {version}, expected {SNAPSHOT_FORMAT_VERSION}"
            ));
        }
        Ok(SnapshotHeader {
            generation: read_u64(header, GENERATION_RANGE),
            replay_from: Lsn(read_u64(header, REPLAY_FROM_RANGE)),
            payload_len_bytes: read_u64(header, PAYLOAD_LEN_RANGE),
            payload_crc: read_u32(header, PAYLOAD_CRC_RANGE),
        })
    }
}

/// Reads a little-endian `u32` from a range of a slice already known to hold the whole header.
fn read_u32(header: &[u8], range: std::ops::Range<usize>) -> u32 {
    let mut raw = [0u8; 4];
    raw.copy_from_slice(&header[range]);
    u32::from_le_bytes(raw)
}

/// Reads a little-endian `u64` from a range of a slice already known to hold the whole header.
fn read_u64(header: &[u8], range: std::ops::Range<usize>) -> u64 {
    let mut raw = [0u8; 8];
    raw.copy_from_slice(&header[range]);
    u64::from_le_bytes(raw)
}

/// Checks a whole snapshot file named with `name_generation`; returns its header (the payload
/// is everything after [`SNAPSHOT_HEADER_LEN`]), or why the file is rejected.
fn decode_file(bytes: &[u8], name_generation: u64) -> Result<SnapshotHeader, String> {
    let header = SnapshotHeader::decode(bytes)?;
    // `decode` checked the length; `get` keeps this path free of unchecked indexing anyway.
    let payload = bytes.get(SNAPSHOT_HEADER_LEN..).unwrap_or_default();
    let payload_len_bytes = u64::try_from(payload.len()).unwrap_or(u64::MAX);
    if header.payload_len_bytes != payload_len_bytes {
        return Err(format!(
            "header says {} payload bytes but the file holds {payload_len_bytes}",
            header.payload_len_bytes
        ));
    }
    let computed_crc = crc32fast::hash(payload);
    if header.payload_crc != computed_crc {
        return Err(format!(
            "payload checksum mismatch: stored {:#010x}, computed {computed_crc:#010x}",
            header.payload_crc
        ));
    }
    if header.generation != name_generation {
        return Err(format!(
            "header says generation {} but the name says {name_generation}",
            header.generation
        ));
    }
    Ok(header)
}

/// The name of the complete snapshot of `generation`.
fn snapshot_name(generation: u64) -> String {
    format!(
        "{NAME_PREFIX}{generation:0width$}",
        width = GENERATION_DIGITS
    )
}

/// The name of the temporary file of `generation`.
fn tmp_name(generation: u64) -> String {
    format!("{}{TMP_SUFFIX}", snapshot_name(generation))
}

/// What a directory entry is, to this module.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NameKind {
    /// `snapshot-` + 20 digits. `None` when the digits do not fit a `u64`.
    Snapshot(Option<u64>),
    /// `snapshot-` + 20 digits + `.tmp`. `None` when the digits do not fit a `u64`.
    Tmp(Option<u64>),
    /// Anything else: not ours.
    Other,
}

fn classify_name(name: &str) -> NameKind {
    let Some(rest) = name.strip_prefix(NAME_PREFIX) else {
        return NameKind::Other;
    };
    let (digits, is_tmp) = match rest.strip_suffix(TMP_SUFFIX) {
        Some(digits) => (digits, true),
        None => (rest, false),
    };
    if digits.len() != GENERATION_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return NameKind::Other;
    }
    let generation = digits.parse::<u64>().ok();
    if is_tmp {
        NameKind::Tmp(generation)
    } else {
        NameKind::Snapshot(generation)
    }
}

impl SnapshotStore {
    /// A store for the snapshot files of the directory behind `storage`. Touches nothing.
    pub fn new(storage: Arc<dyn Storage>) -> SnapshotStore {
        SnapshotStore {
            storage,
            write_lock: Mutex::new(()),
        }
    }

    /// Writes a new snapshot atomically and durably, then removes the older ones.
    /// `replay_from` is the LSN from which the caller must replay the log after loading it.
    ///
    /// Steps: remove leftover temporaries; write `snapshot-{generation:020}.tmp` (header, then
    /// payload); `sync_data` it; rename it to `snapshot-{generation:020}`; `sync_dir`; only then
    /// remove the older snapshot files and `sync_dir` again. The generation is one more than the
    /// highest present in the directory (complete or temporary, valid or not), starting at 1.
    ///
    /// When this returns `Ok`, the new snapshot survives any crash. When it returns an error,
    /// the directory holds the previous snapshot (and perhaps the new one, complete): the
    /// caller must keep everything the previous one needs (the log from its `replay_from`)
    /// until a later write succeeds. Nothing is retried.
    ///
    /// # Errors
    ///
    /// [`RecoveryError::SnapshotTooLarge`] for a payload over
    /// [`MAX_SNAPSHOT_PAYLOAD_LEN_BYTES`], [`RecoveryError::SnapshotGenerationsExhausted`] if a
    /// file with generation `u64::MAX` exists, [`RecoveryError::Io`] when a storage call fails.
    pub fn write(&self, replay_from: Lsn, payload: &[u8]) -> Result<SnapshotInfo, RecoveryError> {
        let payload_len_bytes = checked_payload_len(payload.len())?;
        // The lock guards no data, so a panic in another writer leaves nothing to repair.
        let _serialized = self
            .write_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);

        let names = self
            .storage
            .list()
            .map_err(|e| RecoveryError::io("listing snapshot files", e))?;
        let mut highest_generation = 0u64;
        let mut older_snapshots = Vec::new();
        let mut leftover_tmps = Vec::new();
        for name in names {
            match classify_name(&name) {
                NameKind::Snapshot(Some(generation)) => {
                    highest_generation = highest_generation.max(generation);
                    older_snapshots.push(name);
                }
                NameKind::Tmp(Some(generation)) => {
                    highest_generation = highest_generation.max(generation);
                    leftover_tmps.push(name);
                }
                // A 20-digit name over u64::MAX was not written by this code; the loader
                // reports such a snapshot name as rejected, and neither touches it.
                NameKind::Snapshot(None) | NameKind::Tmp(None) | NameKind::Other => {}
            }
        }
        let generation = highest_generation
            .checked_add(1)
            .ok_or(RecoveryError::SnapshotGenerationsExhausted)?;

        // Leftover temporaries are from writes a crash or an error interrupted. Their removal
        // need not be durable: a temporary that comes back is never loaded.
        for name in &leftover_tmps {
            self.storage
                .remove(name)
                .map_err(|e| RecoveryError::io("removing a leftover temporary snapshot", e))?;
        }

        let header = SnapshotHeader {
            generation,
            replay_from,
            payload_len_bytes,
            payload_crc: crc32fast::hash(payload),
        };
        let header_bytes = header.encode();
        debug_assert_eq!(SnapshotHeader::decode(&header_bytes), Ok(header));

        let tmp = tmp_name(generation);
        let file = self
            .storage
            .open(&tmp, OpenMode::CreateNew)
            .map_err(|e| RecoveryError::io("creating a temporary snapshot", e))?;
        write_snapshot_bytes(&*file, &header_bytes, payload)?;
        drop(file);

        let final_name = snapshot_name(generation);
        self.storage
            .rename(&tmp, &final_name)
            .map_err(|e| RecoveryError::io("renaming a temporary snapshot", e))?;
        // Until this sync the rename may be undone by a crash; older snapshots stay until then.
        self.storage
            .sync_dir()
            .map_err(|e| RecoveryError::io("syncing the directory after a snapshot rename", e))?;

        // Every other complete snapshot is older (the generation is above all of them).
        for name in &older_snapshots {
            self.storage
                .remove(name)
                .map_err(|e| RecoveryError::io("removing an older snapshot", e))?;
        }
        if !older_snapshots.is_empty() {
            self.storage.sync_dir().map_err(|e| {
                RecoveryError::io("syncing the directory after removing older snapshots", e)
            })?;
        }

        Ok(SnapshotInfo {
            file_name: final_name,
            generation,
            replay_from,
            len_bytes: SNAPSHOT_HEADER_LEN_BYTES + payload_len_bytes,
        })
    }

    /// Loads the newest snapshot that verifies: the name parses, then magic, format version,
    /// header CRC, payload length = file length - header length, payload CRC, and the
    /// generation in the header equals the one in the name. A snapshot that fails a check is
    /// skipped (recorded in [`LoadedSnapshot::rejected`]) and the next older one is tried.
    /// `Ok(None)` when no snapshot verifies (or there is none).
    ///
    /// Read-only: never writes, removes or renames anything, so a caller that then refuses
    /// the open leaves the files as they were. Ignores `*.tmp` and every name that is not
    /// exactly `snapshot-` + 20 digits. Each file is read with one positional read.
    ///
    /// # Errors
    ///
    /// [`RecoveryError::Io`] when listing or reading fails (other than a file that vanished
    /// between the listing and its opening, which counts as rejected): an IO error says
    /// nothing about the file's content, so it is not a reason to fall back to an older one.
    pub fn load_newest(&self) -> Result<Option<LoadedSnapshot>, RecoveryError> {
        let names = self
            .storage
            .list()
            .map_err(|e| RecoveryError::io("listing snapshot files", e))?;
        let mut rejected = Vec::new();
        let mut candidates = Vec::new();
        for name in names {
            match classify_name(&name) {
                NameKind::Snapshot(Some(generation)) => candidates.push((generation, name)),
                NameKind::Snapshot(None) => rejected.push(RejectedSnapshot {
                    file_name: name,
                    reason: "generation in the name does not fit a u64".to_string(),
                }),
                NameKind::Tmp(_) | NameKind::Other => {}
            }
        }
        candidates.sort_unstable_by_key(|(generation, _)| std::cmp::Reverse(*generation));

        for (generation, name) in candidates {
            match self.read_candidate(&name, generation)? {
                Candidate::Valid(info, payload) => {
                    return Ok(Some(LoadedSnapshot {
                        info,
                        payload,
                        rejected,
                    }));
                }
                Candidate::Rejected(reason) => rejected.push(RejectedSnapshot {
                    file_name: name,
                    reason,
                }),
            }
        }
        Ok(None)
    }

    /// Reads and verifies one snapshot file. An error is an IO failure; a file that does not
    /// verify is a [`Candidate::Rejected`].
    fn read_candidate(&self, name: &str, generation: u64) -> Result<Candidate, RecoveryError> {
        let file = match self.storage.open(name, OpenMode::MustExist) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Candidate::Rejected(
                    "vanished between listing and opening".to_string(),
                ));
            }
            Err(e) => return Err(RecoveryError::io("opening a snapshot", e)),
        };
        let len_bytes = file
            .len()
            .map_err(|e| RecoveryError::io("reading a snapshot's length", e))?;
        let max_len_bytes = SNAPSHOT_HEADER_LEN_BYTES + MAX_SNAPSHOT_PAYLOAD_LEN_BYTES;
        if len_bytes > max_len_bytes {
            return Ok(Candidate::Rejected(format!(
                "file of {len_bytes} bytes is longer than any snapshot ({max_len_bytes})"
            )));
        }
        let Ok(len_usize) = usize::try_from(len_bytes) else {
            return Ok(Candidate::Rejected(format!(
                "file of {len_bytes} bytes does not fit in memory"
            )));
        };
        let mut bytes = vec![0u8; len_usize];
        file.read_exact_at(&mut bytes, 0)
            .map_err(|e| RecoveryError::io("reading a snapshot", e))?;
        Ok(match decode_file(&bytes, generation) {
            Ok(header) => {
                bytes.drain(..SNAPSHOT_HEADER_LEN);
                let info = SnapshotInfo {
                    file_name: name.to_string(),
                    generation,
                    replay_from: header.replay_from,
                    len_bytes,
                };
                Candidate::Valid(info, bytes)
            }
            Err(reason) => Candidate::Rejected(reason),
        })
    }
}

/// The payload length as persisted, or [`RecoveryError::SnapshotTooLarge`] over the limit.
fn checked_payload_len(len: usize) -> Result<u64, RecoveryError> {
    let len_bytes = u64::try_from(len).unwrap_or(u64::MAX);
    if len_bytes > MAX_SNAPSHOT_PAYLOAD_LEN_BYTES {
        return Err(RecoveryError::SnapshotTooLarge {
            payload_len_bytes: len_bytes,
            max_payload_len_bytes: MAX_SNAPSHOT_PAYLOAD_LEN_BYTES,
        });
    }
    Ok(len_bytes)
}

/// One snapshot file, read.
enum Candidate {
    /// It verified: its info and payload.
    Valid(SnapshotInfo, Vec<u8>),
    /// It did not: why.
    Rejected(String),
}

/// Writes the header and the payload of a temporary snapshot and makes them durable.
fn write_snapshot_bytes(
    file: &dyn StorageFile,
    header_bytes: &[u8; SNAPSHOT_HEADER_LEN],
    payload: &[u8],
) -> Result<(), RecoveryError> {
    file.write_all_at(header_bytes, 0)
        .map_err(|e| RecoveryError::io("writing a snapshot header", e))?;
    file.write_all_at(payload, SNAPSHOT_HEADER_LEN_BYTES)
        .map_err(|e| RecoveryError::io("writing a snapshot payload", e))?;
    file.sync_data()
        .map_err(|e| RecoveryError::io("syncing a temporary snapshot", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode_file(generation: u64, replay_from: u64, payload: &[u8]) -> Vec<u8> {
        let header = SnapshotHeader {
            generation,
            replay_from: Lsn(replay_from),
            payload_len_bytes: payload.len() as u64,
            payload_crc: crc32fast::hash(payload),
        };
        let mut bytes = header.encode().to_vec();
        bytes.extend_from_slice(payload);
        bytes
    }

    #[test]
    fn header_round_trips_and_is_little_endian() {
        let header = SnapshotHeader {
            generation: 0x0102_0304_0506_0708,
            replay_from: Lsn(0x1112_1314_1516_1718),
            payload_len_bytes: 0x2122_2324_2526_2728,
            payload_crc: 0x3132_3334,
        };
        let bytes = header.encode();
        assert_eq!(&bytes[0..8], b"LLSNAPv1");
        assert_eq!(&bytes[8..12], &[1, 0, 0, 0]);
        assert_eq!(bytes[12], 0x08);
        assert_eq!(bytes[19], 0x01);
        assert_eq!(bytes[20], 0x18);
        assert_eq!(bytes[28], 0x28);
        assert_eq!(bytes[36], 0x34);
        assert_eq!(SnapshotHeader::decode(&bytes), Ok(header));
    }

    #[test]
    fn decode_file_checks_everything() {
        let bytes = encode_file(7, 100, b"payload");
        let header = decode_file(&bytes, 7).unwrap();
        assert_eq!(header.replay_from, Lsn(100));
        assert!(decode_file(&bytes, 8).unwrap_err().contains("generation"));
        assert!(
            decode_file(&bytes[..bytes.len() - 1], 7)
                .unwrap_err()
                .contains("payload bytes")
        );
        assert!(
            decode_file(&bytes[..10], 7)
                .unwrap_err()
                .contains("shorter")
        );
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(
            decode_file(&longer, 7)
                .unwrap_err()
                .contains("payload bytes")
        );
        let mut flipped = bytes.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(
            decode_file(&flipped, 7)
                .unwrap_err()
                .contains("payload checksum")
        );
        let mut flipped = bytes;
        flipped[9] ^= 1;
        assert!(
            decode_file(&flipped, 7)
                .unwrap_err()
                .contains("header checksum")
        );
    }

    #[test]
    fn payload_over_the_limit_is_a_typed_error() {
        assert_eq!(checked_payload_len(0).unwrap(), 0);
        let max = usize::try_from(MAX_SNAPSHOT_PAYLOAD_LEN_BYTES).unwrap();
        assert_eq!(
            checked_payload_len(max).unwrap(),
            MAX_SNAPSHOT_PAYLOAD_LEN_BYTES
        );
        let err = checked_payload_len(max + 1).unwrap_err();
        assert!(matches!(
            err,
            RecoveryError::SnapshotTooLarge {
                payload_len_bytes,
                max_payload_len_bytes: MAX_SNAPSHOT_PAYLOAD_LEN_BYTES,
            } if payload_len_bytes == MAX_SNAPSHOT_PAYLOAD_LEN_BYTES + 1
        ));
    }

    #[test]
    fn empty_payload_is_a_valid_snapshot() {
        let bytes = encode_file(1, 0, b"");
        assert_eq!(bytes.len(), SNAPSHOT_HEADER_LEN);
        assert_eq!(decode_file(&bytes, 1).unwrap().payload_len_bytes, 0);
    }

    #[test]
    fn names_are_classified_exactly() {
        assert_eq!(snapshot_name(42), "snapshot-00000000000000000042");
        assert_eq!(tmp_name(42), "snapshot-00000000000000000042.tmp");
        assert_eq!(
            classify_name(&snapshot_name(42)),
            NameKind::Snapshot(Some(42))
        );
        assert_eq!(classify_name(&tmp_name(42)), NameKind::Tmp(Some(42)));
        assert_eq!(
            classify_name(&snapshot_name(u64::MAX)),
            NameKind::Snapshot(Some(u64::MAX))
        );
        assert_eq!(
            classify_name("snapshot-99999999999999999999"),
            NameKind::Snapshot(None)
        );
        for other in [
            "snapshot-42",
            "snapshot-000000000000000000042",
            "snapshot-0000000000000000004x",
            "snapshot-+0000000000000000042",
            "snapshot-00000000000000000042.tmp.tmp",
            "snapshot-00000000000000000042.bak",
            "xsnapshot-00000000000000000042",
            "snapshot-",
            "log.data",
            "LOCK",
        ] {
            assert_eq!(classify_name(other), NameKind::Other, "{other}");
        }
    }
}
