//! Opening a plain log: scan, durable prefix, torn tail, hand-over to the log.
//!
//! # The algorithm
//!
//! 1. Read every segment header. A header that does not verify marks a segment that is free
//!    (never written, erased, or torn before anything in it was durable). A valid header with
//!    another segment length is a [`RecoveryError::ConfigMismatch`].
//! 2. The release point `R` is the largest `log_start_lsn` in the headers. The log is the chain
//!    of logical segments from the one holding `R`, each following the previous with no gap.
//!    Each is scanned frame by frame; the chain ends at the first frame that does not verify
//!    (a *cut*) or at the first missing segment. If the header that recorded `R` is not itself
//!    in the chain (it was written past the cut, out of order), it is not durable: drop the
//!    headers past the cut and choose again. With [`OpenOptions::scan_from`], segments of the
//!    chain that end at or below the segment holding `scan_from` are taken on their header
//!    alone (their frames are neither read nor verified; the caller vouches that they were
//!    durable and verifies what it reads of them), and `scan_from` counts as one more marker
//!    in step 3.
//! 3. Every IO buffer begins with a marker recording the stable LSN when it was written. If any
//!    marker on disk (in the chain, past the cut, or in discarded segments) says the log was
//!    durable beyond where the chain ends, the damage is corruption, not a torn tail: the open
//!    fails with [`RecoveryError::Corruption`] and writes nothing.
//! 4. Otherwise the torn tail is erased (zeroed, so no stale frame past the cut can ever
//!    be taken for a valid one once the log writes there again), headers of segments past the
//!    cut are erased, blob files no recovered message refers to are deleted, and all of that
//!    is synced before the log starts at the cut.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use iobuf::format::{
    self, BUFFER_START_FRAME_LEN, FRAME_HEADER_LEN, FormatError, FrameKind, FrameScanner,
    SEGMENT_HEADER_LEN, ScanEnd, SegmentHeader,
};
use iobuf::storage::{FsStorage, OpenMode, Storage, StorageFile};
use iobuf::{
    ContinuedSegment, DATA_FILE_NAME, Geometry, Log, LogConfig, LogError, Lsn, SegmentId,
    StartPoint,
};
use segment::{
    AccountantConfig, RecoveredFacts, RecoveredSegment, RecoveredState, SegmentAccountant,
};

use crate::error::RecoveryError;
use crate::report::RecoveryReport;

type Result<T, E = RecoveryError> = std::result::Result<T, E>;

/// Opens (or creates) the log in the directory at `path` on the real file system.
pub fn open_log_dir(path: impl AsRef<Path>, config: LogConfig) -> Result<(Log, RecoveryReport)> {
    let storage =
        FsStorage::open_dir(path).map_err(|e| RecoveryError::io("opening the log directory", e))?;
    open_log(Arc::new(storage), config)
}

/// Opens the log in `storage`, recovering the durable prefix after a crash, or creates an
/// empty log if the directory holds none. Returns the running log and what recovery found.
///
/// Verifies every frame of every segment of the log; the same as [`open_log_with`] and
/// `OpenOptions::default()`.
pub fn open_log(storage: Arc<dyn Storage>, config: LogConfig) -> Result<(Log, RecoveryReport)> {
    open_log_with(storage, config, OpenOptions::default())
}

/// How [`open_log_with`] opens a log. The default verifies every frame, like [`open_log`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct OpenOptions {
    /// Frames are verified from the segment holding this LSN on; see
    /// [`OpenOptions::scan_from`].
    pub scan_from: Lsn,
}

impl OpenOptions {
    /// The default: verify every frame of the log.
    pub fn new() -> OpenOptions {
        OpenOptions::default()
    }

    /// Verifies frames only from the segment holding `lsn` on, for a caller that knows, from
    /// a record of its own (a checksummed snapshot), that the log was durable up to `lsn` and
    /// that it reads nothing below `lsn` without checking it.
    ///
    /// Segments of the log wholly below `lsn` are checked by their header only (the chain of
    /// headers is still followed and checked, so the log's extent and the segment bookkeeping
    /// are exact); their frames are not read. This is safe because no legitimate torn tail
    /// can lie below a point that was durable, every stable marker in such a segment records
    /// less than `lsn` (a marker never exceeds the start of its own buffer), and a damaged
    /// frame there is still found when it is read: [`iobuf::Log::read`] and
    /// [`iobuf::Log::iter_from`] verify every frame they return, so the damage surfaces as a
    /// typed error at that time instead of at open.
    ///
    /// `lsn` is also a claim the open checks: if the log ends before it, the open fails with
    /// [`RecoveryError::Corruption`] (the caller's record says those bytes were durable)
    /// and writes nothing. Blob files in the unverified range are kept, since their pointers
    /// were not read. An `lsn` below the log's release point changes nothing.
    pub fn scan_from(mut self, lsn: Lsn) -> OpenOptions {
        self.scan_from = lsn;
        self
    }
}

/// Opens the log in `storage` like [`open_log`], with `options`.
pub fn open_log_with(
    storage: Arc<dyn Storage>,
    config: LogConfig,
    options: OpenOptions,
) -> Result<(Log, RecoveryReport)> {
    let started = Instant::now();
    let config = config.validate().map_err(LogError::from)?;
    let lock = storage
        .try_lock()
        .map_err(|e| RecoveryError::io("locking the log directory", e))?
        .ok_or(RecoveryError::Locked)?;
    let existed = storage
        .exists(DATA_FILE_NAME)
        .map_err(|e| RecoveryError::io("looking for the data file", e))?;
    let data_file = storage
        .open(DATA_FILE_NAME, OpenMode::CreateOrOpen)
        .map_err(|e| RecoveryError::io("opening the data file", e))?;
    if !existed {
        storage
            .sync_dir()
            .map_err(|e| RecoveryError::io("syncing the new data file's directory entry", e))?;
    }
    let geometry = config.geometry();
    let mut scan = Scan::new(geometry, Arc::clone(&data_file), options.scan_from)?;
    let headers = scan.read_headers()?;
    let outcome = scan.find_log(headers)?;
    scan.check_not_corrupt(&outcome)?;

    // Every check passed: from here on, recovery changes files.
    let mut report = RecoveryReport {
        created: scan.file_len_bytes == 0,
        log_start: outcome.release_point,
        ..RecoveryReport::default()
    };
    let start = scan.repair(&outcome, &mut report)?;
    let blobs = sort_blobs(&*storage, &outcome, start.tip)?;
    report.orphan_blobs_deleted = blobs.n_deleted;
    report.verified_from = outcome.verified_from;
    report.bytes_scanned = scan.bytes_scanned;
    report.segments_scanned = scan.segments_scanned;
    report.messages_recovered = outcome.n_messages;
    report.known_stable = outcome.known_stable;
    report.tip = start.tip;

    let accountant_config = AccountantConfig::new(geometry, config.segments_in_flight());
    let facts = RecoveredFacts {
        n_segments_in_file: scan.n_segments_in_file,
        segments: outcome.chain_facts(start.tip_segment.map(|continued| continued.segment)),
        fragments: Vec::new(),
        release_point: outcome.release_point,
    };
    let accountant =
        SegmentAccountant::rebuild(accountant_config, &facts).map_err(LogError::from)?;
    let log = Log::start(
        config,
        storage,
        data_file,
        lock,
        StartPoint {
            tip: start.tip,
            tip_segment: start.tip_segment,
            release_point: outcome.release_point,
            accountant,
            live_blobs: blobs.live,
        },
    )?;
    report.elapsed = started.elapsed();
    Ok((log, report))
}

/// A segment with a valid header.
#[derive(Clone, Copy, Debug)]
struct Found {
    segment: SegmentId,
    header: SegmentHeader,
}

/// How the chain of segments ends.
#[derive(Debug)]
enum ChainEnd {
    /// The segment that would hold `next_base` is missing: the chain's last segment (if any)
    /// is complete.
    Missing { next_base: Lsn },
    /// A frame in `segment` did not verify.
    Cut {
        segment: SegmentId,
        base: Lsn,
        /// The salt of the segment's header.
        salt: u64,
        offset_in_segment: u64,
        reason: String,
        /// The segment's bytes (for erasing the tail).
        bytes: Vec<u8>,
    },
}

/// What the scan decided.
#[derive(Debug)]
struct Outcome {
    release_point: Lsn,
    /// The chain, in LSN order.
    chain: Vec<Found>,
    end: ChainEnd,
    /// Valid headers past the chain's end: written out of order, never durable.
    beyond: Vec<Found>,
    n_messages: u64,
    known_stable: Lsn,
    blob_lsns: BTreeSet<Lsn>,
    /// Where the chain ends as an LSN.
    end_lsn: Lsn,
    /// Frames were verified from here on: the base of the segment holding the release point,
    /// or of the one holding `scan_from` when that is higher (see [`OpenOptions::scan_from`]).
    verified_from: Lsn,
}

/// Where the log continues.
struct Continue {
    tip: Lsn,
    tip_segment: Option<ContinuedSegment>,
}

impl Outcome {
    fn chain_facts(&self, active: Option<SegmentId>) -> Vec<RecoveredSegment> {
        self.chain
            .iter()
            .map(|found| RecoveredSegment {
                segment: found.segment,
                base_lsn: found.header.base_lsn,
                state: if Some(found.segment) == active {
                    RecoveredState::Active
                } else {
                    RecoveredState::Inactive
                },
            })
            .collect()
    }
}

struct Scan {
    geometry: Geometry,
    data_file: Arc<dyn StorageFile>,
    file_len_bytes: u64,
    n_segments_in_file: u64,
    bytes_scanned: u64,
    segments_scanned: u64,
    /// Segments whose header does not verify.
    headerless: Vec<SegmentId>,
    /// Frames below the segment holding this LSN are not verified (headers still are).
    scan_from: Lsn,
}

impl Scan {
    fn new(geometry: Geometry, data_file: Arc<dyn StorageFile>, scan_from: Lsn) -> Result<Scan> {
        let file_len_bytes = data_file
            .len()
            .map_err(|e| RecoveryError::io("reading the data file's length", e))?;
        Ok(Scan {
            geometry,
            data_file,
            file_len_bytes,
            n_segments_in_file: file_len_bytes.div_ceil(geometry.segment_len_bytes()),
            bytes_scanned: 0,
            segments_scanned: 0,
            headerless: Vec::new(),
            scan_from,
        })
    }

    /// Reads `[offset, offset + buf.len())`; bytes past the end of the file read as zeros.
    fn read_zero_extended(&mut self, buf: &mut [u8], offset: u64) -> Result<()> {
        let available = self
            .file_len_bytes
            .saturating_sub(offset)
            .min(buf.len() as u64) as usize;
        let (present, absent) = buf.split_at_mut(available);
        if !present.is_empty() {
            self.data_file
                .read_exact_at(present, offset)
                .map_err(|e| RecoveryError::io("reading the data file", e))?;
        }
        absent.fill(0);
        self.bytes_scanned += available as u64;
        Ok(())
    }

    fn read_segment(&mut self, segment: SegmentId) -> Result<Vec<u8>> {
        let mut bytes = vec![0u8; self.geometry.segment_len_bytes() as usize];
        let offset = self.geometry.file_offset(segment);
        self.read_zero_extended(&mut bytes, offset)?;
        self.segments_scanned += 1;
        Ok(bytes)
    }

    /// Step 1: every valid segment header, by base LSN.
    fn read_headers(&mut self) -> Result<BTreeMap<Lsn, Found>> {
        let segment_len = self.geometry.segment_len_bytes();
        let mut headers: BTreeMap<Lsn, Found> = BTreeMap::new();
        for index in 0..self.n_segments_in_file {
            let segment = SegmentId(index);
            let mut bytes = [0u8; SEGMENT_HEADER_LEN as usize];
            self.read_zero_extended(&mut bytes, self.geometry.file_offset(segment))?;
            let header = match SegmentHeader::decode(&bytes) {
                Ok(header) => header,
                Err(FormatError::UnsupportedVersion { found }) => {
                    return Err(RecoveryError::ConfigMismatch {
                        field: "format_version",
                        on_disk: u64::from(found),
                        requested: u64::from(format::FORMAT_VERSION),
                    });
                }
                // Free, erased, or torn before anything in it was durable; if it mattered,
                // the stable markers turn it into a corruption error below.
                Err(_) => {
                    self.headerless.push(segment);
                    continue;
                }
            };
            if header.segment_len_bytes != segment_len {
                return Err(RecoveryError::ConfigMismatch {
                    field: "segment_len_bytes",
                    on_disk: header.segment_len_bytes,
                    requested: segment_len,
                });
            }
            if let Some(other) = headers.insert(header.base_lsn, Found { segment, header }) {
                return Err(RecoveryError::Corruption {
                    segment,
                    offset_in_segment: 0,
                    reason: format!(
                        "segments {} and {segment} both claim base LSN {}",
                        other.segment, header.base_lsn
                    ),
                });
            }
        }
        Ok(headers)
    }

    /// Step 2: the chain of segments that is the log.
    fn find_log(&mut self, all_headers: BTreeMap<Lsn, Found>) -> Result<Outcome> {
        let segment_len = self.geometry.segment_len_bytes();
        let highest_seen_end = all_headers
            .keys()
            .last()
            .map_or(Lsn(0), |base| Lsn(base.0 + segment_len));
        let mut candidates = all_headers.clone();
        // Where the log would have had to begin in the last attempt: if nothing durable is
        // found, the durable log ends there, and any marker on disk claiming more is damage.
        let mut expected_start = Lsn(0);
        let mut outcome = loop {
            let Some(release_point) = candidates.values().map(|f| f.header.log_start_lsn).max()
            else {
                // Nothing durable at all. Start past every LSN ever seen, so no LSN that some
                // earlier run handed out is handed out again.
                break Outcome {
                    release_point: highest_seen_end,
                    chain: Vec::new(),
                    end: ChainEnd::Missing {
                        next_base: highest_seen_end,
                    },
                    beyond: Vec::new(),
                    n_messages: 0,
                    known_stable: Lsn(0),
                    blob_lsns: BTreeSet::new(),
                    end_lsn: expected_start,
                    verified_from: highest_seen_end,
                };
            };
            expected_start = self.geometry.segment_base_lsn(release_point);
            let outcome = self.walk_chain(&candidates, release_point)?;
            let release_is_durable = outcome
                .chain
                .iter()
                .any(|found| found.header.log_start_lsn == release_point);
            if release_is_durable {
                break outcome;
            }
            // The header that recorded the release point lies past the end of the chain:
            // written out of order, never durable. Forget everything from the chain's end on
            // (or, for an empty chain, from where it should have started) and choose again.
            let keep_below = match outcome.chain.last() {
                Some(last) => Lsn(last.header.base_lsn.0 + 1),
                None => self.geometry.segment_base_lsn(release_point),
            };
            candidates.retain(|base, _| *base < keep_below);
        };
        // Every valid header past the chain was written out of order and is not part of the
        // log: its segment is erased before the log writes again.
        let erase_from = match outcome.chain.last() {
            Some(last) => Lsn(last.header.base_lsn.0 + 1),
            None => Lsn(0),
        };
        outcome.beyond = all_headers
            .range(erase_from..)
            .map(|(_, found)| *found)
            .collect();
        Ok(outcome)
    }

    fn walk_chain(
        &mut self,
        candidates: &BTreeMap<Lsn, Found>,
        release_point: Lsn,
    ) -> Result<Outcome> {
        let segment_len = self.geometry.segment_len_bytes();
        let mut base = self.geometry.segment_base_lsn(release_point);
        let mut chain = Vec::new();
        let mut n_messages = 0;
        let mut known_stable = Lsn(0);
        let mut blob_lsns = BTreeSet::new();
        // Segments that end at or below this base are checked by their header only.
        let verified_from = base.max(self.geometry.segment_base_lsn(self.scan_from));
        let end = loop {
            let Some(found) = candidates.get(&base).copied() else {
                break ChainEnd::Missing { next_base: base };
            };
            chain.push(found);
            if base < verified_from {
                base = Lsn(base.0 + segment_len);
                continue;
            }
            let bytes = self.read_segment(found.segment)?;
            let mut scanner =
                FrameScanner::new(&bytes, base, SEGMENT_HEADER_LEN, found.header.salt);
            for frame in scanner.by_ref() {
                match frame.kind {
                    FrameKind::BufferStart => {
                        if let Ok(stable) = format::decode_buffer_start(frame.body) {
                            known_stable = known_stable.max(stable);
                        }
                    }
                    FrameKind::Data if frame.lsn >= release_point => n_messages += 1,
                    FrameKind::BlobPointer if frame.lsn >= release_point => {
                        n_messages += 1;
                        blob_lsns.insert(frame.lsn);
                    }
                    _ => {}
                }
            }
            match scanner.end() {
                Some(ScanEnd::Complete) | None => base = Lsn(base.0 + segment_len),
                Some(ScanEnd::Invalid {
                    offset_in_segment,
                    reason,
                }) => {
                    break ChainEnd::Cut {
                        segment: found.segment,
                        base,
                        salt: found.header.salt,
                        offset_in_segment,
                        reason: reason.to_string(),
                        bytes,
                    };
                }
            }
        };
        let end_lsn = match &end {
            ChainEnd::Missing { next_base } => *next_base,
            ChainEnd::Cut {
                base,
                offset_in_segment,
                ..
            } => Lsn(base.0 + offset_in_segment),
        };
        Ok(Outcome {
            release_point,
            chain,
            end,
            beyond: Vec::new(),
            n_messages,
            known_stable,
            blob_lsns,
            end_lsn,
            verified_from,
        })
    }

    /// Step 3: no marker on disk may claim durability past the end of the chain.
    fn check_not_corrupt(&mut self, outcome: &Outcome) -> Result<()> {
        // (marker, segment, offset) of every marker found past the end of the chain.
        let mut markers_past_end: Vec<(Lsn, SegmentId, u64)> = Vec::new();
        if let ChainEnd::Cut {
            segment,
            base,
            salt,
            offset_in_segment,
            bytes,
            ..
        } = &outcome.end
            && let Some((stable, offset)) =
                max_marker_from(bytes, *base, offset_in_segment + 1, *salt)
        {
            markers_past_end.push((stable, *segment, offset));
        }
        for found in &outcome.beyond {
            let bytes = self.read_segment(found.segment)?;
            if let Some((stable, offset)) =
                max_marker_from(&bytes, found.header.base_lsn, 0, found.header.salt)
            {
                markers_past_end.push((stable, found.segment, offset));
            }
        }
        if let ChainEnd::Missing { .. } = &outcome.end {
            // The chain stops because no valid header names the next logical segment. If that
            // segment's header is merely damaged, its own markers are the only witness that
            // it was durable: look for them in every segment without a valid header, taking it
            // for the missing segment. (Legitimately torn segments never claim durability past
            // their own start.)
            for segment in self.headerless.clone() {
                let bytes = self.read_segment(segment)?;
                if let Some((stable, offset)) = max_self_salted_marker(&bytes, outcome.end_lsn) {
                    markers_past_end.push((stable, segment, offset));
                }
            }
        }
        let (known_stable, witness) = match markers_past_end.into_iter().max() {
            Some((stable, segment, offset)) if stable > outcome.known_stable => {
                (stable, Some((segment, offset)))
            }
            _ => (outcome.known_stable, None),
        };
        let mut witness = witness.map_or_else(
            || "a buffer marker in the recovered log".to_string(),
            |(segment, offset)| format!("a buffer marker in {segment} at offset {offset}"),
        );
        // The caller's own record (see `OpenOptions::scan_from`) is one more witness.
        let known_stable = if self.scan_from > known_stable {
            witness = "the caller's record (OpenOptions::scan_from)".to_string();
            self.scan_from
        } else {
            known_stable
        };
        if known_stable <= outcome.end_lsn {
            return Ok(());
        }
        Err(match &outcome.end {
            ChainEnd::Cut {
                segment,
                offset_in_segment,
                reason,
                ..
            } => RecoveryError::Corruption {
                segment: *segment,
                offset_in_segment: *offset_in_segment,
                reason: format!(
                    "{reason}; but {witness} records that the log was durable up to {known_stable}, \
                     past this point ({})",
                    outcome.end_lsn
                ),
            },
            ChainEnd::Missing { next_base } => {
                let (segment, offset_in_segment) =
                    outcome.chain.last().map_or((SegmentId(0), 0), |found| {
                        (found.segment, self.geometry.segment_len_bytes())
                    });
                RecoveryError::Corruption {
                    segment,
                    offset_in_segment,
                    reason: format!(
                        "the segment holding LSN {next_base} is missing or its header is damaged; \
                         but {witness} records that the log was durable up to {known_stable}"
                    ),
                }
            }
        })
    }

    /// Step 4: erase the torn tail and the segments past it, sync, and say where the log
    /// continues.
    fn repair(&mut self, outcome: &Outcome, report: &mut RecoveryReport) -> Result<Continue> {
        let segment_len = self.geometry.segment_len_bytes();
        let mut wrote = false;
        let next = match &outcome.end {
            ChainEnd::Missing { next_base } => Continue {
                tip: *next_base,
                tip_segment: None,
            },
            ChainEnd::Cut {
                segment,
                base,
                salt,
                offset_in_segment,
                bytes,
                ..
            } => {
                let cut = *offset_in_segment as usize;
                let last_non_zero = bytes
                    .iter()
                    .rposition(|byte| *byte != 0)
                    .map_or(0, |i| i + 1);
                let remaining = segment_len - offset_in_segment;
                // A segment with no room for another buffer is closed with a padding frame
                // (or left as is when not even a frame header fits).
                let close_segment = remaining < BUFFER_START_FRAME_LEN + FRAME_HEADER_LEN;
                let mut erase = vec![0u8; last_non_zero.saturating_sub(cut)];
                if close_segment && remaining >= FRAME_HEADER_LEN {
                    let padding = format::padding_frame_header(
                        Lsn(base.0 + offset_in_segment),
                        remaining,
                        *salt,
                    );
                    if erase.len() < padding.len() {
                        erase.resize(padding.len(), 0);
                    }
                    erase[..padding.len()].copy_from_slice(&padding);
                }
                let end_lsn = Lsn(base.0 + offset_in_segment);
                report.bytes_erased = last_non_zero.saturating_sub(cut) as u64;
                let header = bytes
                    .get(cut..)
                    .and_then(|rest| format::FrameHeader::decode_unverified(rest).ok());
                if header.is_some_and(|header| header.lsn == end_lsn) {
                    report.cut_at = Some(end_lsn);
                }
                if !erase.is_empty() {
                    let offset = self.geometry.file_offset(*segment) + offset_in_segment;
                    self.data_file
                        .write_all_at(&erase, offset)
                        .map_err(|e| RecoveryError::io("erasing the torn tail", e))?;
                    wrote = true;
                }
                if close_segment {
                    Continue {
                        tip: Lsn(base.0 + segment_len),
                        tip_segment: None,
                    }
                } else {
                    Continue {
                        tip: Lsn(base.0 + offset_in_segment),
                        tip_segment: Some(ContinuedSegment {
                            segment: *segment,
                            salt: *salt,
                        }),
                    }
                }
            }
        };
        for found in &outcome.beyond {
            self.data_file
                .write_all_at(
                    &[0u8; SEGMENT_HEADER_LEN as usize],
                    self.geometry.file_offset(found.segment),
                )
                .map_err(|e| RecoveryError::io("erasing a segment past the cut", e))?;
            report.segments_discarded += 1;
            wrote = true;
        }
        if wrote {
            self.data_file
                .sync_data()
                .map_err(|e| RecoveryError::io("syncing the repaired data file", e))?;
        }
        Ok(next)
    }
}

/// The largest stable-LSN marker in a valid BufferStart frame at or after `from_offset`,
/// found by trying every position (a frame's LSN must match its position, so stale or random
/// bytes do not pass). Returns the marker and its offset.
fn max_marker_from(bytes: &[u8], base: Lsn, from_offset: u64, salt: u64) -> Option<(Lsn, u64)> {
    let kind_byte = FrameKind::BufferStart.as_byte();
    let mut best: Option<(Lsn, u64)> = None;
    let last_start = bytes.len().checked_sub(BUFFER_START_FRAME_LEN as usize)?;
    for offset in (from_offset as usize)..=last_start {
        if bytes[offset + 4] != kind_byte {
            continue;
        }
        let Ok(frame) = format::decode_frame(
            &bytes[..offset + BUFFER_START_FRAME_LEN as usize],
            base,
            offset as u64,
            salt,
        ) else {
            continue;
        };
        if frame.kind != FrameKind::BufferStart {
            continue;
        }
        if let Ok(stable) = format::decode_buffer_start(frame.body)
            && best.is_none_or(|(best_stable, _)| stable > best_stable)
        {
            best = Some((stable, offset as u64));
        }
    }
    best
}

/// Like [`max_marker_from`], for a segment whose header (and so whose salt) is damaged: each
/// BufferStart frame repeats its segment's salt in its body, so a candidate at the right
/// position with the right LSN is verified with the salt it carries. A torn frame (header from
/// one write, body from another) fails that checksum like any other.
fn max_self_salted_marker(bytes: &[u8], base: Lsn) -> Option<(Lsn, u64)> {
    let mut best: Option<(Lsn, u64)> = None;
    let last_start = bytes.len().checked_sub(BUFFER_START_FRAME_LEN as usize)?;
    for offset in 0..=last_start {
        let Ok(header) = format::FrameHeader::decode_unverified(&bytes[offset..]) else {
            continue;
        };
        if header.kind != FrameKind::BufferStart
            || header.lsn.0 != base.0.wrapping_add(offset as u64)
        {
            continue;
        }
        let body_start = offset + FRAME_HEADER_LEN as usize;
        let body_end = offset + BUFFER_START_FRAME_LEN as usize;
        let Ok(salt) = format::decode_buffer_start_salt(&bytes[body_start..body_end]) else {
            continue;
        };
        let Ok(frame) = format::decode_frame(&bytes[..body_end], base, offset as u64, salt) else {
            continue;
        };
        if let Ok(stable) = format::decode_buffer_start(frame.body)
            && best.is_none_or(|(best_stable, _)| stable > best_stable)
        {
            best = Some((stable, offset as u64));
        }
    }
    best
}

/// The blob files after recovery.
struct Blobs {
    /// Those the log keeps (and deletes once they are released).
    live: Vec<Lsn>,
    /// Orphans deleted.
    n_deleted: u64,
}

/// Deletes blob files that no recovered message refers to: below the release point, past
/// the tip (their pointer was cut), or never pointed to at all. A blob file in the range
/// whose frames were not verified (below `verified_from`) is kept: its pointer was not read,
/// and the range is durable by the caller's record.
fn sort_blobs(storage: &dyn Storage, outcome: &Outcome, tip: Lsn) -> Result<Blobs> {
    let names = storage
        .list()
        .map_err(|e| RecoveryError::io("listing the log directory", e))?;
    let mut blobs = Blobs {
        live: Vec::new(),
        n_deleted: 0,
    };
    for name in names {
        let Some(lsn) = format::parse_blob_file_name(&name) else {
            continue;
        };
        let unverified = lsn >= outcome.release_point && lsn < outcome.verified_from;
        let live = lsn >= outcome.release_point
            && lsn < tip
            && (unverified || outcome.blob_lsns.contains(&lsn));
        if live {
            blobs.live.push(lsn);
        } else {
            storage
                .remove(&name)
                .map_err(|e| RecoveryError::io("deleting an orphan blob file", e))?;
            blobs.n_deleted += 1;
        }
    }
    if blobs.n_deleted > 0 {
        storage
            .sync_dir()
            .map_err(|e| RecoveryError::io("syncing the directory after deleting blobs", e))?;
    }
    Ok(blobs)
}
