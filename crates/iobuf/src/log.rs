//! The public face of the log: reservations, writes, batches, durability, reading back.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use segment::{AccountantConfig, Lsn, SegmentAccountant};

use crate::blob;
use crate::config::{LogConfig, ValidLogConfig};
use crate::error::{LogError, Result};
use crate::format::{
    self, BATCH_START_FRAME_LEN, BLOB_POINTER_FRAME_LEN, BlobPointer, FRAME_HEADER_LEN, FrameKind,
    SEGMENT_HEADER_LEN,
};
use crate::metrics::LogMetrics;
use crate::ring::{Claim, Ring, StartPoint, lock};
use crate::storage::{LockGuard, OpenMode, Storage, StorageFile};

/// The name of the data file (all segments) inside the log's directory.
pub const DATA_FILE_NAME: &str = "log.data";

/// How a message is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stored {
    /// In its frame, in the data file.
    Inline,
    /// In a blob file of its own; the frame holds a pointer.
    Blob,
}

/// Where a completed message lives: enough to read it back with [`Log::read`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Location {
    /// The message's LSN (the position of its frame in the logical log).
    pub lsn: Lsn,
    /// The byte offset of its frame in the data file.
    pub file_offset: u64,
    /// The message's length.
    pub len_bytes: u64,
    /// Inline or blob.
    pub stored: Stored,
}

impl Location {
    /// Bytes the message's frame takes in the data file (saturating: a location made up by
    /// a caller may hold any length).
    pub fn frame_len_bytes(&self) -> u64 {
        match self.stored {
            Stored::Inline => FRAME_HEADER_LEN.saturating_add(self.len_bytes),
            Stored::Blob => BLOB_POINTER_FRAME_LEN,
        }
    }
}

/// What a failed positional read of the data file means. Reading past the end of the file
/// is a location with nothing there (`NoMessage`, built by `missing`); any other failure
/// (EIO, say) is the device's, and is reported as [`LogError::Io`] so that a caller does
/// not take a failing disk for damaged data. A failed read does not poison the log: it
/// acknowledged nothing, and writes do not depend on it.
///
/// Fix: every read failure used to be `NoMessage`, which the page cache reports as
/// corruption of the page.
fn read_error(
    op: &'static str,
    error: std::io::Error,
    missing: impl FnOnce(String) -> LogError,
) -> LogError {
    if error.kind() == std::io::ErrorKind::UnexpectedEof {
        missing(format!("the file ends before it ({error})"))
    } else {
        LogError::io(op, error)
    }
}

/// A log of messages over a ring of IO buffers. Share it between threads by reference (all
/// methods take `&self`).
///
/// Open an existing log (or create one) with the `recovery` crate; [`Log::create`] makes a
/// new one in an empty directory.
pub struct Log {
    ring: Arc<Ring>,
    flusher: Option<Flusher>,
    closed: AtomicBool,
    /// The salts of segment headers already read by [`Log::read`]; see [`SaltCache`].
    salts: SaltCache,
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log")
            .field("stable_lsn", &self.ring.stable_lsn())
            .field("tip", &self.ring.tip())
            .field("poisoned", &self.ring.is_poisoned())
            .finish_non_exhaustive()
    }
}

impl Log {
    /// Creates a new, empty log in `storage`. Fails with [`LogError::AlreadyExists`] if the
    /// directory already holds a log's data file with anything in it, and with
    /// [`LogError::Locked`] if another opener holds the directory.
    pub fn create(storage: Arc<dyn Storage>, config: LogConfig) -> Result<Log> {
        let config = config.validate()?;
        let lock_guard = storage
            .try_lock()
            .map_err(|error| LogError::io("locking the log directory", error))?
            .ok_or(LogError::Locked)?;
        let existed = storage
            .exists(DATA_FILE_NAME)
            .map_err(|error| LogError::io("looking for the data file", error))?;
        let data_file = storage
            .open(DATA_FILE_NAME, OpenMode::CreateOrOpen)
            .map_err(|error| LogError::io("creating the data file", error))?;
        if existed {
            let len = data_file
                .len()
                .map_err(|error| LogError::io("reading the data file's length", error))?;
            if len > 0 {
                return Err(LogError::AlreadyExists);
            }
        }
        storage
            .sync_dir()
            .map_err(|error| LogError::io("syncing the log directory", error))?;
        let accountant = SegmentAccountant::new(AccountantConfig::new(
            config.geometry(),
            config.segments_in_flight(),
        ))?;
        let start = StartPoint {
            tip: Lsn(0),
            tip_segment: None,
            release_point: Lsn(0),
            accountant,
            live_blobs: Vec::new(),
        };
        Log::start(config, storage, data_file, lock_guard, start)
    }

    /// Starts a log at a point recovery established. This is how the `recovery` crate hands
    /// over an opened directory; most users call that crate instead.
    pub fn start(
        config: ValidLogConfig,
        storage: Arc<dyn Storage>,
        data_file: Arc<dyn StorageFile>,
        lock_guard: Box<dyn LockGuard>,
        start: StartPoint,
    ) -> Result<Log> {
        let flush_every = config.flush_every();
        let ring = Arc::new(Ring::start(config, storage, data_file, lock_guard, start)?);
        let flusher = match flush_every {
            Some(interval) => Some(Flusher::spawn(Arc::clone(&ring), interval)?),
            None => None,
        };
        Ok(Log {
            ring,
            flusher,
            closed: AtomicBool::new(false),
            salts: SaltCache::default(),
        })
    }

    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(LogError::Closed);
        }
        self.ring.check_poison()
    }

    /// Reserves room for a message of `len_bytes`. Fill [`Reservation::buffer_mut`], then
    /// [`Reservation::complete`] it (or abort it). Messages longer than the blob threshold
    /// are stored in a blob file.
    pub fn reserve(&self, len_bytes: usize) -> Result<Reservation<'_>> {
        self.check_open()?;
        let config = &self.ring.config;
        if len_bytes > config.blob_threshold_bytes() as usize {
            // The length is the caller's: an impossible one is an error, not an abort.
            let mut blob_value = Vec::new();
            blob_value
                .try_reserve_exact(len_bytes)
                .map_err(|_| LogError::MessageTooLarge {
                    len_bytes: len_bytes as u64,
                })?;
            blob_value.resize(len_bytes, 0);
            let claim = self.ring.claim(BLOB_POINTER_FRAME_LEN as u32)?;
            return Ok(Reservation {
                log: self,
                claim: Some(claim),
                blob_value: Some(blob_value),
            });
        }
        let claim = self
            .ring
            .claim(FRAME_HEADER_LEN as u32 + len_bytes as u32)?;
        Ok(Reservation {
            log: self,
            claim: Some(claim),
            blob_value: None,
        })
    }

    /// Appends one message. Returns where it lives; make it durable with
    /// [`Log::make_stable`] on its LSN, or [`Log::flush`].
    pub fn write(&self, message: &[u8]) -> Result<Location> {
        let mut reservation = self.reserve(message.len())?;
        reservation.buffer_mut().copy_from_slice(message);
        reservation.complete()
    }

    /// Appends several messages that recovery returns all or none of. The batch (its frames,
    /// not the blob values of large messages) must fit in one IO buffer.
    pub fn write_batch(&self, messages: &[&[u8]]) -> Result<Vec<Location>> {
        self.check_open()?;
        if messages.is_empty() {
            return Err(LogError::EmptyBatch);
        }
        let config = &self.ring.config;
        let frames_len: u64 = BATCH_START_FRAME_LEN
            + messages
                .iter()
                .map(|message| config.frame_len_for_message(message.len()))
                .sum::<u64>();
        let max = u64::from(config.max_frame_len_bytes());
        if frames_len > max {
            return Err(LogError::BatchTooLarge {
                frames_len_bytes: frames_len,
                max_bytes: max,
            });
        }
        let mut claim = self.ring.claim(frames_len as u32)?;
        match self.fill_batch(&mut claim, messages) {
            Ok(locations) => {
                self.ring.release(claim.slot)?;
                Ok(locations)
            }
            Err(error) => {
                let lsn = claim.lsn;
                let salt = claim.salt;
                format::seal_frame(claim.bytes_mut(), FrameKind::Aborted, lsn, salt);
                LogMetrics::add(&self.ring.metrics.n_aborts, 1);
                let _ = self.ring.release(claim.slot);
                Err(error)
            }
        }
    }

    fn fill_batch(&self, claim: &mut Claim<'_>, messages: &[&[u8]]) -> Result<Vec<Location>> {
        let config = self.ring.config.clone();
        let batch_lsn = claim.lsn;
        let salt = claim.salt;
        let batch_file_offset = claim.file_offset;
        let mut locations = Vec::with_capacity(messages.len());
        let mut offset = BATCH_START_FRAME_LEN as usize;
        // Blob values first: each is durable before any frame of the batch is sealed.
        for message in messages {
            let frame_len = config.frame_len_for_message(message.len()) as usize;
            let lsn = Lsn(batch_lsn.0 + offset as u64);
            let file_offset = batch_file_offset + offset as u64;
            let frame = &mut claim.bytes_mut()[offset..offset + frame_len];
            if message.len() > config.blob_threshold_bytes() as usize {
                let pointer = self.write_blob(lsn, message)?;
                frame[FRAME_HEADER_LEN as usize..].copy_from_slice(&pointer.encode());
                format::seal_frame(frame, FrameKind::BlobPointer, lsn, salt);
                locations.push(Location {
                    lsn,
                    file_offset,
                    len_bytes: message.len() as u64,
                    stored: Stored::Blob,
                });
            } else {
                frame[FRAME_HEADER_LEN as usize..].copy_from_slice(message);
                format::seal_frame(frame, FrameKind::Data, lsn, salt);
                locations.push(Location {
                    lsn,
                    file_offset,
                    len_bytes: message.len() as u64,
                    stored: Stored::Inline,
                });
            }
            offset += frame_len;
        }
        let bytes = claim.bytes_mut();
        let body_len = (bytes.len() - BATCH_START_FRAME_LEN as usize) as u64;
        let start = &mut bytes[..BATCH_START_FRAME_LEN as usize];
        start[FRAME_HEADER_LEN as usize..]
            .copy_from_slice(&format::encode_batch_start(messages.len() as u32, body_len));
        format::seal_frame(start, FrameKind::BatchStart, batch_lsn, salt);
        Ok(locations)
    }

    fn write_blob(&self, lsn: Lsn, value: &[u8]) -> Result<BlobPointer> {
        let pointer = blob::write_blob(&self.ring.storage, lsn, value)
            .map_err(|error| self.ring.poison(error))?;
        self.ring.add_live_blob(lsn);
        LogMetrics::add(&self.ring.metrics.n_blobs_written, 1);
        Ok(pointer)
    }

    /// Makes the message at `lsn`, and every message below it, durable. One write and one
    /// `fdatasync` serve every thread waiting on the same buffer (group commit). An LSN the
    /// log never handed out is an error at once, not a wait.
    pub fn make_stable(&self, lsn: Lsn) -> Result<()> {
        self.check_open()?;
        if self.ring.stable_lsn() > lsn {
            return Ok(());
        }
        let tip = self.ring.tip();
        if lsn >= tip {
            return Err(LogError::NotReserved { lsn, tip });
        }
        self.ring.make_stable(Lsn(lsn.0 + 1))
    }

    /// Makes every message reserved so far durable (waiting for reservations still being
    /// filled). Returns the stable LSN.
    pub fn flush(&self) -> Result<Lsn> {
        self.check_open()?;
        self.ring.make_stable(self.ring.tip())?;
        Ok(self.ring.stable_lsn())
    }

    /// Every message below this LSN is durable.
    pub fn stable_lsn(&self) -> Lsn {
        self.ring.stable_lsn()
    }

    /// The next LSN the log will hand out.
    pub fn tip(&self) -> Lsn {
        self.ring.tip()
    }

    /// Reads the message at `location` back. A message not yet written to the data file is
    /// written first (without waiting for a sync).
    pub fn read(&self, location: Location) -> Result<Vec<u8>> {
        self.read_frame_then(location, |body| match body {
            MessageBytes::Borrowed(bytes) => bytes.to_vec(),
            MessageBytes::Owned(value) => value,
        })
    }

    /// Reads the message at `location` back, like [`Log::read`], and hands its bytes to `f`
    /// instead of returning a copy: an inline message is read into a buffer the calling
    /// thread reuses, so a reader that decodes the bytes at once (the page cache paging a
    /// fragment in) allocates nothing for the read. The frame is verified (checksum, LSN,
    /// the segment's salt) before `f` sees it, exactly as in [`Log::read`].
    pub fn read_with<T>(&self, location: Location, f: impl FnOnce(&[u8]) -> T) -> Result<T> {
        self.read_frame_then(location, |body| match body {
            MessageBytes::Borrowed(bytes) => f(bytes),
            MessageBytes::Owned(value) => f(&value),
        })
    }

    /// The read behind [`Log::read`] and [`Log::read_with`]: one positional read of the
    /// frame into the thread's read buffer, verified, then `f` on its body (or on the blob
    /// value it points at).
    fn read_frame_then<T>(
        &self,
        location: Location,
        f: impl FnOnce(MessageBytes<'_>) -> T,
    ) -> Result<T> {
        self.check_open()?;
        let missing = |reason: String| LogError::NoMessage {
            lsn: location.lsn,
            reason,
        };
        // A location is input. One whose frame cannot exist is refused before anything is
        // sealed, allocated or read: frames never cross a segment's end, and none lies past
        // the tip.
        let frame_len = location.frame_len_bytes();
        let geometry = self.ring.config.geometry();
        let room = geometry.segment_len_bytes() - geometry.offset_in_segment(location.lsn);
        if frame_len > room {
            return Err(missing(format!(
                "a frame of {frame_len} bytes would run past its segment's end"
            )));
        }
        let frame_end = location
            .lsn
            .0
            .checked_add(frame_len)
            .map(Lsn)
            .ok_or_else(|| missing("the location's end overflows".into()))?;
        // Everything written lies below the tip, so only a frame not written yet is compared
        // with it: the tip reads the current buffer's header, the line every reservation
        // writes, and most reads are of frames written long ago.
        if self.ring.written_lsn() < frame_end {
            if frame_end > self.ring.tip() {
                return Err(missing("the location lies past the log's tip".into()));
            }
            self.ring.make_written(frame_end)?;
        }
        // At most a segment long (checked above), and a segment is at most 1 GiB.
        let len = usize::try_from(frame_len).expect("a frame fits its segment");
        with_read_buffer(len, |frame_bytes| {
            self.ring
                .data_file
                .read_exact_at(frame_bytes, location.file_offset)
                .map_err(|error| read_error("reading a frame", error, missing))?;
            let frame = self.verify_frame(frame_bytes, location)?;
            match (frame.kind, location.stored) {
                (FrameKind::Data, Stored::Inline) => Ok(f(MessageBytes::Borrowed(frame.body))),
                (FrameKind::BlobPointer, Stored::Blob) => {
                    let pointer = BlobPointer::decode(frame.body)
                        .map_err(|error| missing(error.to_string()))?;
                    let value = blob::read_blob(&self.ring.storage, location.lsn, &pointer)?;
                    Ok(f(MessageBytes::Owned(value)))
                }
                (kind, stored) => Err(missing(format!(
                    "the frame is {kind:?}, the location says {stored:?}"
                ))),
            }
        })
    }

    /// Verifies the frame read (just before this call) for `location`, whose salt is in its
    /// segment's header.
    ///
    /// The salt of a segment header this log already read is remembered, so a read costs
    /// one positional read, not two. A running log never gives a logical segment a second
    /// salt: a new segment gets a new base LSN (LSNs are never reused) and a fresh salt, and a
    /// segment continued after a restart keeps its salt; the remembered salt is used only for
    /// the base LSN it was read with. What the header read also told is whether the physical
    /// segment still holds that logical segment: once released and reused, its old frames
    /// may still verify where the new incarnation has not written yet, and such a location
    /// must be `NoMessage`, not the old bytes. So the remembered salt is used only when
    /// `location` is at or above the durable release point, read after the frame: a segment
    /// is reused only once a release covering all of it is durable, and that point only
    /// moves forward, so the frame was read before its segment could be reused. Below it,
    /// or when the frame does not verify, the header is read as before, so such a read
    /// fails exactly as if nothing had been remembered.
    fn verify_frame<'b>(
        &self,
        frame_bytes: &'b [u8],
        location: Location,
    ) -> Result<format::Frame<'b>> {
        let geometry = self.ring.config.geometry();
        let segment_start = location
            .file_offset
            .checked_sub(geometry.offset_in_segment(location.lsn))
            .ok_or_else(|| LogError::NoMessage {
                lsn: location.lsn,
                reason: "the location's file offset does not match its LSN".into(),
            })?;
        let segment_idx = geometry.segment_at(segment_start).0;
        let base_lsn = geometry.segment_base_lsn(location.lsn);
        // The atomic first: below the release point the cache is not consulted at all.
        if location.lsn >= self.ring.release_durable()
            && let Some(salt) = self.salts.get(segment_idx, base_lsn)
            && let Ok(frame) = format::decode_frame(frame_bytes, location.lsn, 0, salt)
        {
            return Ok(frame);
        }
        let salt = self.segment_salt_at(location, segment_start)?;
        self.salts.remember(segment_idx, base_lsn, salt);
        format::decode_frame(frame_bytes, location.lsn, 0, salt).map_err(|error| {
            LogError::NoMessage {
                lsn: location.lsn,
                reason: format!("no valid frame there ({error})"),
            }
        })
    }

    /// The salt of the segment holding `location` (which starts at `segment_start` in the
    /// data file), from its header on disk.
    fn segment_salt_at(&self, location: Location, segment_start: u64) -> Result<u64> {
        let geometry = self.ring.config.geometry();
        let missing = |reason: String| LogError::NoMessage {
            lsn: location.lsn,
            reason,
        };
        let mut header_bytes = [0u8; SEGMENT_HEADER_LEN as usize];
        self.ring
            .data_file
            .read_exact_at(&mut header_bytes, segment_start)
            .map_err(|error| read_error("reading a segment header", error, missing))?;
        let header = format::SegmentHeader::decode(&header_bytes)
            .map_err(|error| missing(format!("no valid segment header ({error})")))?;
        if header.base_lsn != geometry.segment_base_lsn(location.lsn) {
            return Err(missing(format!(
                "its segment now holds base {} (released and reused)",
                header.base_lsn
            )));
        }
        Ok(header.salt)
    }

    /// Iterates over the durable messages from `lsn` on (the first message at or after it),
    /// in LSN order, up to the stable LSN at the time of the call.
    pub fn iter_from(&self, lsn: Lsn) -> Result<LogIter<'_>> {
        self.iter_range(lsn, Lsn(u64::MAX))
    }

    /// Like [`iter_from`](Self::iter_from), but only the messages that start below `end`
    /// (or the stable LSN, if lower). Nothing past the segment holding `end`'s last byte is
    /// read: a scan of one segment (`end` its last LSN plus one) reads that segment alone, not
    /// the next one to find where it stops.
    pub fn iter_range(&self, lsn: Lsn, end: Lsn) -> Result<LogIter<'_>> {
        self.check_open()?;
        let stable = self.ring.stable_lsn();
        Ok(LogIter {
            log: self,
            start: lsn,
            next_lsn: lsn,
            end: end.min(stable),
            stable,
            segment: None,
        })
    }

    /// Tells the log that nothing below `lsn` is needed any more: once this release is
    /// durable (it is recorded in the next segment header), whole segments below it are
    /// reused and blob files below it deleted.
    pub fn release_before(&self, lsn: Lsn) {
        self.ring.request_release(lsn);
    }

    /// The release point that is durable.
    pub fn durable_release_point(&self) -> Lsn {
        self.ring.release_durable()
    }

    /// Counters and latency histograms.
    pub fn metrics(&self) -> &LogMetrics {
        &self.ring.metrics
    }

    /// The configuration the log runs on.
    pub fn config(&self) -> &ValidLogConfig {
        &self.ring.config
    }

    /// Runs `f` on the segment accountant (for statistics and tests).
    pub fn with_accountant<T>(&self, f: impl FnOnce(&SegmentAccountant) -> T) -> T {
        self.ring.with_accountant(|accountant| f(accountant))
    }

    /// Flushes everything, stops the background flusher and releases the directory. Errors
    /// that `Drop` could only print are returned here.
    pub fn close(mut self) -> Result<()> {
        self.shut_down()
    }

    fn shut_down(&mut self) -> Result<()> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let flushed = if self.ring.is_poisoned() {
            self.ring.check_poison()
        } else {
            self.ring
                .make_stable(self.ring.tip())
                .and_then(|()| self.ring.write_final_marker())
        };
        if let Some(flusher) = self.flusher.take() {
            flusher.stop();
        }
        flushed
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        if let Err(error) = self.shut_down() {
            // Drop cannot return it; the durable prefix is intact and reopening recovers it.
            eprintln!("iobuf: closing the log on drop failed: {error}");
        }
    }
}

/// A claimed message slot. Fill [`Reservation::buffer_mut`] and [`Reservation::complete`]
/// it, or [`Reservation::abort`] it. Dropping it unresolved aborts it (never panics).
#[derive(Debug)]
pub struct Reservation<'a> {
    log: &'a Log,
    claim: Option<Claim<'a>>,
    /// For a message above the blob threshold: its value, written to a blob file on complete.
    blob_value: Option<Vec<u8>>,
}

impl Reservation<'_> {
    /// The LSN the message will have.
    pub fn lsn(&self) -> Lsn {
        self.claim.as_ref().map_or(Lsn(0), |claim| claim.lsn)
    }

    /// Where the message will live once completed: the same [`Location`] that
    /// [`Reservation::complete`] returns. Known at reservation time, so a caller can publish
    /// the location (in a page table, say) before completing the message.
    pub fn location(&self) -> Location {
        let claim = self
            .claim
            .as_ref()
            .expect("a reservation holds its claim until resolved");
        match &self.blob_value {
            None => Location {
                lsn: claim.lsn,
                file_offset: claim.file_offset,
                len_bytes: u64::from(claim.len_bytes) - FRAME_HEADER_LEN,
                stored: Stored::Inline,
            },
            Some(value) => Location {
                lsn: claim.lsn,
                file_offset: claim.file_offset,
                len_bytes: value.len() as u64,
                stored: Stored::Blob,
            },
        }
    }

    /// The message's bytes, to fill in before completing.
    pub fn buffer_mut(&mut self) -> &mut [u8] {
        if let Some(value) = self.blob_value.as_mut() {
            return value;
        }
        let claim = self
            .claim
            .as_mut()
            .expect("a reservation holds its claim until resolved");
        &mut claim.bytes_mut()[FRAME_HEADER_LEN as usize..]
    }

    /// Seals the message: it counts, and will be written with its buffer. Returns where it
    /// lives. Durability comes from [`Log::make_stable`] or [`Log::flush`].
    pub fn complete(mut self) -> Result<Location> {
        let location = self.location();
        let mut claim = self
            .claim
            .take()
            .expect("a reservation holds its claim until resolved");
        let lsn = claim.lsn;
        let salt = claim.salt;
        let ring = &self.log.ring;
        match self.blob_value.take() {
            None => format::seal_frame(claim.bytes_mut(), FrameKind::Data, lsn, salt),
            Some(value) => match self.log.write_blob(lsn, &value) {
                Ok(pointer) => {
                    claim.bytes_mut()[FRAME_HEADER_LEN as usize..]
                        .copy_from_slice(&pointer.encode());
                    format::seal_frame(claim.bytes_mut(), FrameKind::BlobPointer, lsn, salt);
                }
                Err(error) => {
                    format::seal_frame(claim.bytes_mut(), FrameKind::Aborted, lsn, salt);
                    let _ = ring.release(claim.slot);
                    return Err(error);
                }
            },
        }
        ring.release(claim.slot)?;
        // A message completed after the log failed is not acknowledged.
        ring.check_poison()?;
        Ok(location)
    }

    /// Abandons the message: recovery skips it and readers never see it.
    pub fn abort(mut self) -> Result<()> {
        self.abort_claim()
    }

    fn abort_claim(&mut self) -> Result<()> {
        let Some(mut claim) = self.claim.take() else {
            return Ok(());
        };
        let lsn = claim.lsn;
        let salt = claim.salt;
        format::seal_frame(claim.bytes_mut(), FrameKind::Aborted, lsn, salt);
        LogMetrics::add(&self.log.ring.metrics.n_aborts, 1);
        self.log.ring.release(claim.slot)
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if let Err(error) = self.abort_claim() {
            // The log is poisoned and every later call reports it; do not turn it into a panic.
            eprintln!("iobuf: aborting a dropped reservation failed: {error}");
        }
    }
}

/// A message's bytes as [`Log::read_frame_then`] hands them over: inline ones in the
/// thread's read buffer, blob values in a vector of their own.
enum MessageBytes<'a> {
    Borrowed(&'a [u8]),
    Owned(Vec<u8>),
}

/// Read buffers larger than this are freed after the read instead of being kept for the
/// thread's next one, so a rare large frame does not pin its size in every reading thread.
const KEPT_READ_BUFFER_MAX_BYTES: usize = 64 << 10;

thread_local! {
    /// The calling thread's buffer for [`Log::read`] and [`Log::read_with`].
    static READ_BUFFER: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Runs `f` on `len` bytes of the thread's read buffer. The buffer is taken out of its cell
/// for the call, so a nested read (from inside `f`) gets a buffer of its own instead of
/// aliasing this one. The bytes are not zeroed: `f` reads into them first.
fn with_read_buffer<T>(len: usize, f: impl FnOnce(&mut [u8]) -> T) -> T {
    let mut buffer = READ_BUFFER.try_with(|cell| cell.take()).unwrap_or_default();
    if buffer.len() < len {
        // Exactly: a doubled capacity would pass the limit below for frames well under it.
        buffer.reserve_exact(len - buffer.len());
        buffer.resize(len, 0);
    }
    let out = f(&mut buffer[..len]);
    if buffer.capacity() <= KEPT_READ_BUFFER_MAX_BYTES {
        // Gone only while the thread is exiting; the buffer is then simply freed.
        let _ = READ_BUFFER.try_with(|cell| cell.set(buffer));
    }
    out
}

/// The salt and base LSN of each physical segment whose header [`Log::read`] has read, by
/// segment index, so later reads in the same segment skip reading the header again. Short
/// critical sections under one mutex: a lookup is a few loads, next to a system call.
#[derive(Debug, Default)]
struct SaltCache {
    /// `(base LSN, salt)` per physical segment index, `None` when never read.
    by_segment: Mutex<Vec<Option<(Lsn, u64)>>>,
}

impl SaltCache {
    /// The salt last read from the header of physical segment `segment_idx`, if that header
    /// had base `base_lsn`.
    fn get(&self, segment_idx: u64, base_lsn: Lsn) -> Option<u64> {
        let by_segment = lock(&self.by_segment);
        let idx = usize::try_from(segment_idx).ok()?;
        match by_segment.get(idx) {
            Some(Some((base, salt))) if *base == base_lsn => Some(*salt),
            _ => None,
        }
    }

    fn remember(&self, segment_idx: u64, base_lsn: Lsn, salt: u64) {
        let Ok(idx) = usize::try_from(segment_idx) else {
            return;
        };
        let mut by_segment = lock(&self.by_segment);
        if by_segment.len() <= idx {
            by_segment.resize(idx + 1, None);
        }
        by_segment[idx] = Some((base_lsn, salt));
    }
}

/// The durable messages of a log in LSN order; see [`Log::iter_from`].
#[derive(Debug)]
pub struct LogIter<'a> {
    log: &'a Log,
    start: Lsn,
    next_lsn: Lsn,
    /// Messages start below this.
    end: Lsn,
    /// A segment is read whole, or up to this if it holds it: a frame boundary, unlike `end`,
    /// which may fall inside a frame. A segment is loaded only for an LSN below `end`, so
    /// nothing past the segment holding `end`'s last byte is read.
    stable: Lsn,
    segment: Option<LoadedSegment>,
}

/// One segment read into memory, with the messages still to yield.
#[derive(Debug)]
struct LoadedSegment {
    /// The first LSN of the logical segment.
    base: Lsn,
    /// The data-file offset of the physical segment holding it.
    file_offset: u64,
    bytes: Vec<u8>,
    /// (kind, lsn, body start, body end) of the remaining messages, in order, reversed.
    messages: Vec<(FrameKind, Lsn, u64, usize, usize)>,
}

impl LogIter<'_> {
    fn load_segment(&mut self) -> Result<Option<LoadedSegment>> {
        let ring = &self.log.ring;
        let geometry = ring.config.geometry();
        let base = geometry.segment_base_lsn(self.next_lsn);
        let Some(segment) = ring.with_accountant(|accountant| accountant.segment_for_lsn(base))
        else {
            return Err(LogError::NoMessage {
                lsn: self.next_lsn,
                reason: "its segment has been released".to_string(),
            });
        };
        let readable = (self.stable.0 - base.0).min(geometry.segment_len_bytes());
        let mut bytes = vec![0u8; readable as usize];
        let file_offset = geometry.file_offset(segment);
        // The last bytes of a segment may never have been written (a segment ends without a
        // padding frame when fewer bytes than a frame header remain): they read as zeros.
        let file_len = ring
            .data_file
            .len()
            .map_err(|error| LogError::io("reading the data file's length", error))?;
        let present = file_len.saturating_sub(file_offset).min(readable) as usize;
        ring.data_file
            .read_exact_at(&mut bytes[..present], file_offset)
            .map_err(|error| LogError::io("reading a segment", error))?;
        let corrupt = |offset_in_segment: u64, reason: String| LogError::Corruption {
            segment,
            offset_in_segment,
            reason,
        };
        let header = format::SegmentHeader::decode(&bytes)
            .map_err(|error| corrupt(0, format!("segment header: {error}")))?;
        if header.base_lsn != base {
            return Err(LogError::NoMessage {
                lsn: self.next_lsn,
                reason: format!("{segment} was reused while iterating: {header:?}"),
            });
        }
        let mut scanner = format::FrameScanner::new(&bytes, base, SEGMENT_HEADER_LEN, header.salt);
        let mut messages = Vec::new();
        for frame in scanner.by_ref() {
            if matches!(frame.kind, FrameKind::Data | FrameKind::BlobPointer)
                && frame.lsn >= self.start
            {
                let body_start = (frame.offset_in_segment + FRAME_HEADER_LEN) as usize;
                messages.push((
                    frame.kind,
                    frame.lsn,
                    frame.len_bytes(),
                    body_start,
                    body_start + frame.body.len(),
                ));
            }
        }
        if let Some(format::ScanEnd::Invalid {
            offset_in_segment,
            reason,
        }) = scanner.end()
        {
            // The read stops at the stable LSN; damage below it is corruption.
            if offset_in_segment < readable {
                return Err(corrupt(offset_in_segment, reason.to_string()));
            }
        }
        messages.reverse();
        Ok(Some(LoadedSegment {
            base,
            file_offset,
            bytes,
            messages,
        }))
    }

    /// Like [`Iterator::next`], but lends the message's bytes to `f` instead of copying
    /// them out: a scan that looks at a few bytes of each message (a cleaner reading record
    /// headers) allocates nothing per message. A blob's value is still read whole.
    pub fn next_with<T>(&mut self, f: impl FnOnce(Location, &[u8]) -> T) -> Option<Result<T>> {
        match self.next_message(f) {
            Ok(Some(item)) => Some(Ok(item)),
            Ok(None) => None,
            Err(error) => {
                // Stop after reporting an error.
                self.next_lsn = self.end;
                Some(Err(error))
            }
        }
    }

    fn next_message<T>(&mut self, f: impl FnOnce(Location, &[u8]) -> T) -> Result<Option<T>> {
        let geometry = self.log.ring.config.geometry();
        loop {
            if self.next_lsn >= self.end {
                return Ok(None);
            }
            if self.segment.is_none() {
                self.segment = self.load_segment()?;
            }
            let Some(loaded) = self.segment.as_mut() else {
                return Ok(None);
            };
            let Some((kind, lsn, frame_len, body_start, body_end)) = loaded.messages.pop() else {
                // Next segment. (Not from `next_lsn`: a last message that ends exactly at the
                // segment's end leaves `next_lsn` in the next segment already.)
                self.next_lsn = Lsn(loaded.base.0 + geometry.segment_len_bytes());
                self.segment = None;
                continue;
            };
            if lsn >= self.end {
                return Ok(None);
            }
            self.next_lsn = Lsn(lsn.0 + frame_len);
            let file_offset = loaded.file_offset + geometry.offset_in_segment(lsn);
            let body = &loaded.bytes[body_start..body_end];
            return match kind {
                FrameKind::BlobPointer => {
                    let pointer =
                        BlobPointer::decode(body).map_err(|error| LogError::BlobCorruption {
                            lsn,
                            reason: error.to_string(),
                        })?;
                    let value = blob::read_blob(&self.log.ring.storage, lsn, &pointer)?;
                    let location = Location {
                        lsn,
                        file_offset,
                        len_bytes: value.len() as u64,
                        stored: Stored::Blob,
                    };
                    Ok(Some(f(location, &value)))
                }
                _ => {
                    let location = Location {
                        lsn,
                        file_offset,
                        len_bytes: body.len() as u64,
                        stored: Stored::Inline,
                    };
                    Ok(Some(f(location, body)))
                }
            };
        }
    }
}

impl Iterator for LogIter<'_> {
    type Item = Result<(Location, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_with(|location, bytes| (location, bytes.to_vec()))
    }
}

/// The background flusher: makes everything durable every interval, so durability lag is
/// bounded even when nobody calls `flush`. The ring can also ask it for a round early
/// (see [`crate::ring::FlusherSignal`]).
struct Flusher {
    ring: Arc<Ring>,
    thread: JoinHandle<()>,
}

impl Flusher {
    fn spawn(ring: Arc<Ring>, interval: std::time::Duration) -> Result<Flusher> {
        let ring_for_thread = Arc::clone(&ring);
        let thread = std::thread::Builder::new()
            .name("iobuf-flusher".to_string())
            .spawn(move || {
                let ring = ring_for_thread;
                loop {
                    let request = ring.flusher_signal.wait(interval);
                    if request.stop || ring.is_poisoned() {
                        return;
                    }
                    // A failure poisons the ring; every caller then sees it.
                    let _ = ring.make_stable(ring.tip());
                }
            })
            .map_err(|error| LogError::io("starting the flusher thread", error))?;
        Ok(Flusher { ring, thread })
    }

    fn stop(self) {
        self.ring.flusher_signal.stop();
        let _ = self.thread.join();
    }
}
