//! The ring of IO buffers: lock-free reservations, sealing and rolling, writing out, the
//! contiguous written and stable LSNs, and group commit.
//!
//! # The protocol
//!
//! * **Reserve**: read the current slot's header; if it is sealed, wait for the roll; if the
//!   frame does not fit, seal it (taking a pin as the sealer) and roll; otherwise CAS
//!   `offset += len, writers += 1`. No lock on this path.
//! * **Roll** (only the sealer): decide whether the sealed buffer closes its segment, ask the
//!   segment accountant for a new segment if so, wait until the next slot's previous generation
//!   has been written, begin its new generation, publish it as current, then drop the pin.
//! * **Release** (complete or abort): CAS `writers -= 1`. The one thread whose CAS leaves the
//!   header sealed with zero writers writes the buffer out.
//! * **Written / stable**: buffers may be written out of order; `written_lsn` advances only over
//!   a contiguous run of written buffers, and `stable_lsn` is the `written_lsn` some completed
//!   `fdatasync` covered. One sync serves every waiter below its target (group commit).
//!
//! Segment-level bookkeeping (rare: once per segment) takes the accountant's mutex; nothing
//! per message does.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Instant;

use crossbeam_utils::Backoff;
use header_bits::Header;
use segment::{Lsn, SegmentAccountant, SegmentId};

use crate::config::ValidLogConfig;
use crate::error::{LogError, Result};
use crate::format::{
    self, BUFFER_START_FRAME_LEN, FRAME_HEADER_LEN, FrameKind, SEGMENT_HEADER_LEN, SegmentHeader,
};
use crate::metrics::LogMetrics;
use crate::slot::{Placement, Slot};
use crate::storage::{LockGuard, Storage, StorageFile};
use crate::waiters::Waiters;

/// What the background flusher waits on: a stop request, or a request to flush before its
/// interval is up.
#[derive(Debug, Default)]
pub(crate) struct FlusherSignal {
    state: Mutex<FlusherRequest>,
    condvar: Condvar,
}

#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct FlusherRequest {
    pub stop: bool,
    pub hurry: bool,
}

impl FlusherSignal {
    /// Wakes the flusher for a round now (a no-op without a flusher).
    pub(crate) fn hurry(&self) {
        lock(&self.state).hurry = true;
        self.condvar.notify_all();
    }

    pub(crate) fn stop(&self) {
        lock(&self.state).stop = true;
        self.condvar.notify_all();
    }

    /// Waits until the interval is up or a request comes; returns the request (and clears
    /// `hurry`).
    pub(crate) fn wait(&self, interval: std::time::Duration) -> FlusherRequest {
        let guard = lock(&self.state);
        let (mut guard, _) = self
            .condvar
            .wait_timeout_while(guard, interval, |request| !request.stop && !request.hurry)
            .unwrap_or_else(PoisonError::into_inner);
        let request = *guard;
        guard.hurry = false;
        request
    }
}

/// A segment the log has started and whose end is not yet stable.
#[derive(Clone, Copy, Debug)]
pub(crate) struct OpenSegment {
    pub segment: SegmentId,
    /// The LSN just past the segment's end.
    pub end_lsn: Lsn,
    /// The release point written into its header: once the segment is stable, that release
    /// is durable and the accountant may reuse segments below it.
    pub log_start_in_header: Lsn,
}

/// Where a restarted (or new) log continues.
#[derive(Debug)]
pub struct StartPoint {
    /// The next LSN to hand out. Everything below it is durable.
    pub tip: Lsn,
    /// The segment that holds `tip`'s logical segment, if `tip` continues a segment that is
    /// already Active in the accountant. `None` when the log must start a new segment at
    /// `tip` (which must then be a multiple of the segment length).
    pub tip_segment: Option<ContinuedSegment>,
    /// The durable release point (the log needs nothing below it).
    pub release_point: Lsn,
    /// The segment accountant, rebuilt from what is on disk (or new).
    pub accountant: SegmentAccountant,
    /// Blob files the recovered log refers to.
    pub live_blobs: Vec<Lsn>,
}

/// A segment the restarted log goes on writing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ContinuedSegment {
    /// The physical segment.
    pub segment: SegmentId,
    /// The salt in its header: new frames in it are sealed with the same salt.
    pub salt: u64,
}

/// A fresh salt for a new incarnation of a logical segment: random (per-process random keys
/// of the standard hasher), mixed with the base LSN, a counter and the time.
pub(crate) fn fresh_salt(base_lsn: Lsn) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(base_lsn.0);
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos());
    hasher.write_u128(nanos);
    hasher.finish()
}

/// A claimed range of a buffer: the frame a reservation fills in.
#[derive(Debug)]
pub(crate) struct Claim<'a> {
    pub slot: &'a Slot,
    pub offset_in_buf: u32,
    pub len_bytes: u32,
    pub lsn: Lsn,
    pub file_offset: u64,
    /// The salt of the segment the claim lies in.
    pub salt: u64,
}

impl Claim<'_> {
    /// The claimed frame bytes.
    pub(crate) fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: the claim owns this range: its header CAS reserved it and it holds the pin
        // until `Ring::release` consumes the claim, so no other slice overlaps it.
        unsafe {
            self.slot
                .bytes_mut(self.offset_in_buf as usize, self.len_bytes as usize)
        }
    }
}

pub(crate) struct Ring {
    pub config: ValidLogConfig,
    pub storage: Arc<dyn Storage>,
    pub data_file: Arc<dyn StorageFile>,
    slots: Box<[Slot]>,
    /// The ring index of the current generation (slot = index % n_slots).
    current_idx: AtomicU64,
    /// Every byte below it has been written to the data file (not necessarily synced).
    written_lsn: AtomicU64,
    /// Every byte below it is durable.
    stable_lsn: AtomicU64,
    /// Written buffers waiting for a gap below them to close: start -> end.
    written_out_of_order: Mutex<BTreeMap<u64, u64>>,
    /// One `fdatasync` at a time; the others wait for its result (group commit).
    sync_in_progress: AtomicBool,
    pub waiters: Waiters,
    accountant: Mutex<SegmentAccountant>,
    open_segments: Mutex<VecDeque<OpenSegment>>,
    /// The highest `release_before` asked for; it becomes durable with the next segment header.
    release_requested: AtomicU64,
    /// The release point known durable.
    release_durable: AtomicU64,
    /// LSNs of blob files the log still refers to.
    live_blobs: Mutex<BTreeSet<u64>>,
    /// How the background flusher (if any) is told to stop or to flush early.
    pub(crate) flusher_signal: FlusherSignal,
    /// The data file's length as this log last set it. The rolling thread extends the file
    /// and the syncing thread cuts free segments off its end; the lock orders the two
    /// `set_len` calls (taken after the accountant's lock when both are held).
    file_len_bytes: Mutex<u64>,
    poison: OnceLock<Arc<LogError>>,
    pub metrics: LogMetrics,
    /// Held for the ring's life: the directory is ours.
    _lock: Box<dyn LockGuard>,
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these mutexes leaves plain data behind (no invariant spans
    // the critical sections beyond what the code re-checks), so keep going.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Ring {
    pub(crate) fn start(
        config: ValidLogConfig,
        storage: Arc<dyn Storage>,
        data_file: Arc<dyn StorageFile>,
        lock_guard: Box<dyn LockGuard>,
        start: StartPoint,
    ) -> Result<Ring> {
        let geometry = config.geometry();
        let segment_len = geometry.segment_len_bytes();
        let slots: Box<[Slot]> = (0..config.n_io_bufs())
            .map(|_| Slot::new(config.io_buf_len_bytes()))
            .collect();
        let StartPoint {
            tip,
            tip_segment,
            release_point,
            mut accountant,
            live_blobs,
        } = start;
        let mut open_segments = VecDeque::new();
        let placement = match tip_segment {
            Some(ContinuedSegment { segment, salt }) => {
                let offset_in_segment = geometry.offset_in_segment(tip);
                let remaining = segment_len - offset_in_segment;
                assert!(
                    remaining >= BUFFER_START_FRAME_LEN + FRAME_HEADER_LEN,
                    "recovery must close a segment with no room left before starting the log"
                );
                open_segments.push_back(OpenSegment {
                    segment,
                    end_lsn: Lsn(geometry.segment_base_lsn(tip).0 + segment_len),
                    log_start_in_header: release_point,
                });
                Placement {
                    ring_idx: 0,
                    base_lsn: tip,
                    file_offset: geometry.file_offset(segment) + offset_in_segment,
                    capacity_bytes: remaining.min(u64::from(config.io_buf_len_bytes())) as u32,
                    starts_segment_with_log_start: None,
                    segment_salt: salt,
                }
            }
            None => {
                assert_eq!(
                    geometry.offset_in_segment(tip),
                    0,
                    "a log that starts a new segment starts it at a segment boundary"
                );
                let segment = accountant.next_segment(tip)?;
                open_segments.push_back(OpenSegment {
                    segment,
                    end_lsn: Lsn(tip.0 + segment_len),
                    log_start_in_header: release_point,
                });
                Placement {
                    ring_idx: 0,
                    base_lsn: tip,
                    file_offset: geometry.file_offset(segment),
                    capacity_bytes: segment_len.min(u64::from(config.io_buf_len_bytes())) as u32,
                    starts_segment_with_log_start: Some(release_point),
                    segment_salt: fresh_salt(tip),
                }
            }
        };
        slots[0].begin_generation(slots[0].header(), placement);
        let file_len_bytes = data_file
            .len()
            .map_err(|error| LogError::io("reading the data file's length", error))?;
        let ring = Ring {
            config,
            storage,
            data_file,
            slots,
            current_idx: AtomicU64::new(0),
            written_lsn: AtomicU64::new(tip.0),
            stable_lsn: AtomicU64::new(tip.0),
            written_out_of_order: Mutex::new(BTreeMap::new()),
            sync_in_progress: AtomicBool::new(false),
            waiters: Waiters::default(),
            accountant: Mutex::new(accountant),
            open_segments: Mutex::new(open_segments),
            release_requested: AtomicU64::new(release_point.0),
            release_durable: AtomicU64::new(release_point.0),
            live_blobs: Mutex::new(live_blobs.into_iter().map(|lsn| lsn.0).collect()),
            flusher_signal: FlusherSignal::default(),
            poison: OnceLock::new(),
            metrics: LogMetrics::default(),
            file_len_bytes: Mutex::new(file_len_bytes),
            _lock: lock_guard,
        };
        if let Some(first) = ring.open_segments_front() {
            ring.extend_file_to_cover(first)?;
        }
        Ok(ring)
    }

    fn open_segments_front(&self) -> Option<SegmentId> {
        lock(&self.open_segments).front().map(|open| open.segment)
    }

    /// Extends the data file (sparsely) to the end of `segment` if it lies past the end.
    /// Appends that stay within the file's length make `fdatasync` cheaper: it need not
    /// persist a new file size with every durable point (measured here: about 9.4 k against
    /// 6.9 k small durable appends per second on a growing file).
    fn extend_file_to_cover(&self, segment: SegmentId) -> Result<()> {
        let geometry = self.config.geometry();
        let segment_end = geometry.file_offset(segment) + geometry.segment_len_bytes();
        let mut file_len_bytes = lock(&self.file_len_bytes);
        if segment_end > *file_len_bytes {
            self.data_file
                .set_len(segment_end)
                .map_err(|error| self.poison(LogError::io("extending the data file", error)))?;
            *file_len_bytes = segment_end;
        }
        Ok(())
    }

    /// Cuts the Free segments that end the data file off it, so the file shrinks back after
    /// the log was cleaned down (the accountant hands out the lowest Free segment first, so
    /// the end of the file empties). Runs under the accountant's lock: no segment can be
    /// handed out between the decision and the cut, and a segment handed out before it is
    /// not Free, so it is never cut.
    ///
    /// A crash can undo the cut (the new length is not synced); the segments past it are
    /// Free, so recovery treats them as any other free segment.
    fn truncate_free_tail(&self) -> Result<()> {
        let mut accountant = lock(&self.accountant);
        let Some(n_segments) = accountant.truncatable_to() else {
            return Ok(());
        };
        accountant
            .truncate_file(n_segments)
            .map_err(|error| self.poison(LogError::Segment(error)))?;
        let new_len_bytes = n_segments * self.config.geometry().segment_len_bytes();
        let mut file_len_bytes = lock(&self.file_len_bytes);
        if new_len_bytes < *file_len_bytes {
            self.data_file
                .set_len(new_len_bytes)
                .map_err(|error| self.poison(LogError::io("truncating the data file", error)))?;
            *file_len_bytes = new_len_bytes;
        }
        Ok(())
    }

    fn slot(&self, ring_idx: u64) -> &Slot {
        &self.slots[(ring_idx % self.slots.len() as u64) as usize]
    }

    // ---------------------------------------------------------------- poison

    pub(crate) fn is_poisoned(&self) -> bool {
        self.poison.get().is_some()
    }

    pub(crate) fn check_poison(&self) -> Result<()> {
        match self.poison.get() {
            None => Ok(()),
            Some(first) => Err(LogError::Poisoned {
                first_failure: Arc::clone(first),
            }),
        }
    }

    /// Records the first failure; every later operation returns it. Returns the error to hand
    /// to the caller that hit it.
    pub(crate) fn poison(&self, error: LogError) -> LogError {
        let _ = self.poison.set(Arc::new(error.clone()));
        self.waiters.notify();
        error
    }

    // ---------------------------------------------------------------- positions

    pub(crate) fn stable_lsn(&self) -> Lsn {
        Lsn(self.stable_lsn.load(Ordering::Acquire))
    }

    pub(crate) fn written_lsn(&self) -> Lsn {
        Lsn(self.written_lsn.load(Ordering::Acquire))
    }

    /// A consistent view of the current generation: its header and placement read without a
    /// roll in between.
    fn current_view(&self) -> (&Slot, Header, Placement) {
        loop {
            let idx = self.current_idx.load(Ordering::Acquire);
            let slot = self.slot(idx);
            let before = slot.header();
            let placement = slot.placement();
            if slot.header() == before {
                return (slot, before, placement);
            }
        }
    }

    /// The next LSN the log will hand out: no message starts at or above it.
    pub(crate) fn tip(&self) -> Lsn {
        let (_, header, placement) = self.current_view();
        Lsn(placement.base_lsn.0 + u64::from(header.offset()))
    }

    pub(crate) fn release_requested(&self) -> Lsn {
        Lsn(self.release_requested.load(Ordering::Acquire))
    }

    pub(crate) fn release_durable(&self) -> Lsn {
        Lsn(self.release_durable.load(Ordering::Acquire))
    }

    /// Whether a segment header recording `release` is still needed to make it durable.
    fn is_release_pending(&self, release: Lsn) -> bool {
        release > self.release_durable()
    }

    pub(crate) fn request_release(&self, lsn: Lsn) {
        self.release_requested.fetch_max(lsn.0, Ordering::AcqRel);
    }

    pub(crate) fn with_accountant<T>(&self, f: impl FnOnce(&mut SegmentAccountant) -> T) -> T {
        f(&mut lock(&self.accountant))
    }

    pub(crate) fn add_live_blob(&self, lsn: Lsn) {
        lock(&self.live_blobs).insert(lsn.0);
    }

    // ---------------------------------------------------------------- reserve

    /// Claims `frame_len` bytes in the current buffer, rolling the ring when it is full.
    pub(crate) fn claim(&self, frame_len: u32) -> Result<Claim<'_>> {
        debug_assert!(frame_len <= self.config.max_frame_len_bytes());
        // Reading the clock costs as much as the rest of a claim: time one claim in 64.
        let started = sample_this_claim().then(Instant::now);
        let backoff = Backoff::new();
        loop {
            self.check_poison()?;
            let idx = self.current_idx.load(Ordering::Acquire);
            let slot = self.slot(idx);
            let header = slot.header();
            if header.is_sealed() {
                // The sealer is rolling the ring (and may be waiting for a slot to be written).
                if backoff.is_completed() {
                    LogMetrics::add(&self.metrics.n_reserve_waits, 1);
                    self.waiters.wait_until(|| {
                        self.current_idx.load(Ordering::Acquire) != idx || self.is_poisoned()
                    });
                } else {
                    backoff.snooze();
                }
                continue;
            }
            // Read after the header: if the slot began another generation in between, the CAS
            // below fails on the salt.
            let capacity = slot.capacity_bytes();
            let offset = header.offset();
            if u64::from(offset) + u64::from(frame_len) > u64::from(capacity) {
                self.try_seal_and_roll(slot, header, Some(frame_len))?;
                continue;
            }
            let Some(claimed) = header.bump_offset(frame_len).and_then(Header::add_writer) else {
                // MAX_WRITERS threads are in this buffer at once: let some finish.
                backoff.snooze();
                continue;
            };
            match slot.cas_header(header, claimed) {
                Ok(_) => {
                    let placement = slot.placement();
                    slot.count_claim();
                    if let Some(started) = started {
                        self.metrics.reserve_latency.record(started.elapsed());
                    }
                    return Ok(Claim {
                        slot,
                        offset_in_buf: offset,
                        len_bytes: frame_len,
                        lsn: Lsn(placement.base_lsn.0 + u64::from(offset)),
                        file_offset: placement.file_offset + u64::from(offset),
                        salt: placement.segment_salt,
                    });
                }
                Err(_) => backoff.spin(),
            }
        }
    }

    /// Seals the generation whose header is `header`, if no one else did first, and rolls.
    /// `trigger_frame_len` is the frame that did not fit, if any.
    /// Returns whether this thread sealed it.
    fn try_seal_and_roll(
        &self,
        slot: &Slot,
        header: Header,
        trigger_frame_len: Option<u32>,
    ) -> Result<bool> {
        // The sealer takes a pin so the buffer cannot be written before it has recorded
        // whether the buffer closes its segment. `try_seal` refuses an already sealed word,
        // so exactly one thread wins this CAS.
        let Some(sealed_pinned) = header.try_seal().and_then(Header::add_writer) else {
            return Ok(false);
        };
        if slot.cas_header(header, sealed_pinned).is_err() {
            return Ok(false);
        }
        let rolled = self.roll(slot, sealed_pinned, trigger_frame_len);
        let released = self.release(slot);
        rolled.and(released).map(|()| true)
    }

    /// Seals the current buffer even if it holds no message and makes it durable. Its
    /// buffer-start marker then records that everything before it is durable, so recovery
    /// can tell damage anywhere in the log from a torn tail. Called on a clean close.
    pub(crate) fn write_final_marker(&self) -> Result<()> {
        let backoff = Backoff::new();
        let end = loop {
            self.check_poison()?;
            let (slot, header, placement) = self.current_view();
            if header.is_sealed() {
                backoff.snooze();
                continue;
            }
            if self.try_seal_and_roll(slot, header, None)? {
                break Lsn(placement.base_lsn.0 + u64::from(header.offset()));
            }
        };
        self.make_stable(end)
    }

    /// Begins the generation after the sealed one in `slot`.
    fn roll(&self, slot: &Slot, sealed: Header, trigger_frame_len: Option<u32>) -> Result<()> {
        let geometry = self.config.geometry();
        let segment_len = geometry.segment_len_bytes();
        let placement = slot.placement();
        let filled = u64::from(sealed.offset());
        let next_lsn = placement.base_lsn.0 + filled;
        let segment_end = geometry.segment_base_lsn(placement.base_lsn).0 + segment_len;
        let remaining_in_segment = segment_end - next_lsn;
        let smallest_next_buffer =
            BUFFER_START_FRAME_LEN + trigger_frame_len.map_or(FRAME_HEADER_LEN, u64::from);
        let ends_segment = remaining_in_segment < smallest_next_buffer;
        slot.set_ends_segment(ends_segment);
        let io_buf_len = u64::from(self.config.io_buf_len_bytes());
        let mut wake_flusher = false;
        let next = if ends_segment {
            let log_start = self.release_requested();
            // This header records a release: the released segments become reusable once it
            // is durable. Waiting for the flusher's next round would let the file grow by
            // whatever is written meanwhile (20 MiB at 100 MB/s and 200 ms), so ask for that
            // round as soon as the new generation (holding the header) is current: one extra
            // sync per segment, and only while segments are being released.
            wake_flusher = self.is_release_pending(log_start);
            let segment = self
                .with_accountant(|accountant| accountant.next_segment(Lsn(segment_end)))
                .map_err(|error| self.poison(LogError::Segment(error)))?;
            lock(&self.open_segments).push_back(OpenSegment {
                segment,
                end_lsn: Lsn(segment_end + segment_len),
                log_start_in_header: log_start,
            });
            self.extend_file_to_cover(segment)?;
            Placement {
                ring_idx: placement.ring_idx + 1,
                base_lsn: Lsn(segment_end),
                file_offset: geometry.file_offset(segment),
                capacity_bytes: segment_len.min(io_buf_len) as u32,
                starts_segment_with_log_start: Some(log_start),
                segment_salt: fresh_salt(Lsn(segment_end)),
            }
        } else {
            Placement {
                ring_idx: placement.ring_idx + 1,
                base_lsn: Lsn(next_lsn),
                file_offset: placement.file_offset + filled,
                capacity_bytes: remaining_in_segment.min(io_buf_len) as u32,
                starts_segment_with_log_start: None,
                segment_salt: placement.segment_salt,
            }
        };
        let next_slot = self.slot(next.ring_idx);
        if !next_slot.is_free() {
            LogMetrics::add(&self.metrics.n_reserve_waits, 1);
            self.waiters
                .wait_until(|| next_slot.is_free() || self.is_poisoned());
        }
        self.check_poison()?;
        next_slot.begin_generation(next_slot.header(), next);
        self.current_idx.store(next.ring_idx, Ordering::Release);
        self.waiters.notify();
        if wake_flusher {
            // Only now: the flusher syncs up to the tip it reads, which must be past the
            // header (woken earlier, it could sync the old segment and sleep its interval).
            self.flusher_signal.hurry();
        }
        Ok(())
    }

    /// Drops one writer (or the sealer's pin); the thread that leaves the buffer sealed and
    /// idle writes it out.
    pub(crate) fn release(&self, slot: &Slot) -> Result<()> {
        let mut header = slot.header();
        loop {
            let released = header
                .remove_writer()
                .expect("released a buffer pin that was not held");
            match slot.cas_header(header, released) {
                Ok(_) if released.is_sealed_and_idle() => return self.write_slot(slot, released),
                Ok(_) => return Ok(()),
                Err(current) => header = current,
            }
        }
    }

    // ---------------------------------------------------------------- write out

    fn write_slot(&self, slot: &Slot, header: Header) -> Result<()> {
        let placement = slot.placement();
        let result = self.write_slot_bytes(slot, header, placement);
        // The bytes have been handed to the storage (or abandoned after a failure): the slot
        // may take the next generation.
        slot.mark_free();
        self.waiters.notify();
        result
    }

    fn write_slot_bytes(&self, slot: &Slot, header: Header, placement: Placement) -> Result<()> {
        self.check_poison()?;
        let geometry = self.config.geometry();
        let base = placement.base_lsn.0;
        let filled = header.offset() as usize;
        // SAFETY: this thread saw the generation sealed with zero writers: every claim has
        // been released, no new claim can succeed on a sealed header, and the slot begins no
        // new generation until `mark_free`, which our caller calls after we return.
        let bytes = unsafe {
            slot.bytes_mut(
                0,
                placement.capacity_bytes as usize + FRAME_HEADER_LEN as usize,
            )
        };
        let mut prefix_pos = 0;
        if let Some(log_start) = placement.starts_segment_with_log_start {
            let segment_header = SegmentHeader {
                segment_len_bytes: geometry.segment_len_bytes(),
                base_lsn: placement.base_lsn,
                log_start_lsn: log_start,
                salt: placement.segment_salt,
            };
            bytes[..SEGMENT_HEADER_LEN as usize].copy_from_slice(&segment_header.encode());
            prefix_pos = SEGMENT_HEADER_LEN as usize;
        }
        let buffer_start = &mut bytes[prefix_pos..prefix_pos + BUFFER_START_FRAME_LEN as usize];
        buffer_start[FRAME_HEADER_LEN as usize..].copy_from_slice(&format::encode_buffer_start(
            self.stable_lsn(),
            placement.segment_salt,
        ));
        format::seal_frame(
            buffer_start,
            FrameKind::BufferStart,
            Lsn(base + prefix_pos as u64),
            placement.segment_salt,
        );
        let mut write_len = filled;
        let mut end_lsn = base + filled as u64;
        if slot.ends_segment() {
            let segment_end =
                geometry.segment_base_lsn(placement.base_lsn).0 + geometry.segment_len_bytes();
            let remaining = segment_end - end_lsn;
            if remaining >= FRAME_HEADER_LEN {
                let padding =
                    format::padding_frame_header(Lsn(end_lsn), remaining, placement.segment_salt);
                bytes[filled..filled + FRAME_HEADER_LEN as usize].copy_from_slice(&padding);
                write_len += FRAME_HEADER_LEN as usize;
            }
            end_lsn = segment_end;
        }
        if cfg!(debug_assertions) {
            verify_buffer(
                &bytes[..filled],
                placement.base_lsn,
                prefix_pos as u64,
                placement.segment_salt,
            );
        }
        let started = Instant::now();
        self.data_file
            .write_all_at(&bytes[..write_len], placement.file_offset)
            .map_err(|error| self.poison(LogError::io("writing an IO buffer", error)))?;
        self.metrics.write_latency.record(started.elapsed());
        LogMetrics::add(&self.metrics.n_buffer_writes, 1);
        LogMetrics::add(&self.metrics.written_bytes, write_len as u64);
        LogMetrics::add(&self.metrics.n_reservations, u64::from(slot.n_claims()));
        LogMetrics::add(
            &self.metrics.reserved_bytes,
            u64::from(header.offset() - placement.prefix_len_bytes()),
        );
        self.mark_written(base, end_lsn);
        Ok(())
    }

    fn mark_written(&self, start: u64, end: u64) {
        {
            let mut out_of_order = lock(&self.written_out_of_order);
            let mut written = self.written_lsn.load(Ordering::Acquire);
            if start == written {
                written = end;
                while let Some(next_end) = out_of_order.remove(&written) {
                    written = next_end;
                }
                self.written_lsn.store(written, Ordering::Release);
            } else {
                debug_assert!(start > written, "a buffer was written twice");
                out_of_order.insert(start, end);
            }
        }
        self.waiters.notify();
    }

    // ---------------------------------------------------------------- durability

    /// Seals the current buffer if it holds messages below `end`, or a segment header
    /// recording a release that is not durable yet, so that it gets written. Returns the end
    /// to wait for: `end`, or less when `end` points into the current buffer's prefix (where
    /// no message starts) and the buffer was left alone.
    fn seal_through(&self, end: Lsn) -> Result<Lsn> {
        loop {
            self.check_poison()?;
            let (slot, header, placement) = self.current_view();
            if header.is_sealed() || end <= placement.base_lsn {
                return Ok(end);
            }
            // A buffer that starts a segment whose header records a release not yet durable
            // is sealed even without a message: the release becomes durable only with that
            // header, and the flusher woken for it (see `roll`) may read the tip before any
            // message reaches the buffer.
            //
            // Fix: such a buffer was treated like any empty one, so the woken round synced
            // only the previous segment and the release waited a whole flush interval
            // (`tests/log_api.rs`, `a_flush_makes_a_release_in_a_message_less_header_durable`).
            let holds_pending_release = placement
                .starts_segment_with_log_start
                .is_some_and(|release| self.is_release_pending(release));
            if header.offset() <= placement.prefix_len_bytes() && !holds_pending_release {
                // No message in the current buffer; everything below `end` that is a message
                // lies in earlier buffers.
                return Ok(placement.base_lsn);
            }
            self.try_seal_and_roll(slot, header, None)?;
        }
    }

    /// Waits until every byte below `end` is written to the data file (not synced).
    pub(crate) fn make_written(&self, end: Lsn) -> Result<()> {
        let end = self.seal_through(end)?;
        self.waiters
            .wait_until(|| self.written_lsn() >= end || self.is_poisoned());
        self.check_poison()
    }

    /// Waits until every byte below `end` is durable: seals what holds it, waits for the
    /// writes, and joins or starts one `fdatasync` (group commit).
    pub(crate) fn make_stable(&self, end: Lsn) -> Result<()> {
        if self.stable_lsn() >= end {
            return self.check_poison();
        }
        // Group commit: while a sync is in flight, let the current buffer gather the messages
        // of every thread that asks for durability meanwhile. Sealing it now would give each
        // of them a write and a sync of its own.
        if self.sync_in_progress.load(Ordering::Acquire) {
            self.waiters.wait_until(|| {
                !self.sync_in_progress.load(Ordering::Acquire)
                    || self.stable_lsn() >= end
                    || self.is_poisoned()
            });
            if self.stable_lsn() >= end {
                return self.check_poison();
            }
        }
        let end = self.seal_through(end)?;
        self.waiters
            .wait_until(|| self.written_lsn() >= end || self.is_poisoned());
        loop {
            self.check_poison()?;
            if self.stable_lsn() >= end {
                return Ok(());
            }
            if self
                .sync_in_progress
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                let result = self.sync_written();
                self.sync_in_progress.store(false, Ordering::Release);
                self.waiters.notify();
                result?;
            } else {
                self.waiters.wait_until(|| {
                    !self.sync_in_progress.load(Ordering::Acquire)
                        || self.stable_lsn() >= end
                        || self.is_poisoned()
                });
            }
        }
    }

    /// One `fdatasync` covering everything written so far. Called by one thread at a time.
    fn sync_written(&self) -> Result<()> {
        let target = self.written_lsn();
        if target <= self.stable_lsn() {
            return Ok(());
        }
        let started = Instant::now();
        self.data_file
            .sync_data()
            .map_err(|error| self.poison(LogError::io("syncing the data file", error)))?;
        self.metrics.sync_latency.record(started.elapsed());
        LogMetrics::add(&self.metrics.n_syncs, 1);
        self.stable_lsn.fetch_max(target.0, Ordering::AcqRel);
        self.after_stable(target)
    }

    /// Bookkeeping once `stable` is durable: segments wholly below it become Inactive, and
    /// the release points in the headers below it are now durable.
    ///
    /// Fix: a header's release point used to count as durable only once its whole segment
    /// was, so a released segment waited a full segment of writes longer than needed before
    /// reuse (one more segment in the file for nothing). Recovery takes the release point
    /// from any header of the chain, and a header below the stable LSN is in the chain (the
    /// chain can only be cut after it), so the header being durable is what counts.
    fn after_stable(&self, stable: Lsn) -> Result<()> {
        let newly_durable_release = {
            let mut open = lock(&self.open_segments);
            // The newest release point recorded in a header that is durable now: those of
            // the segments wholly below `stable`, and that of the oldest segment still open
            // if its header is.
            let mut durable_release = None;
            while let Some(front) = open.front().copied() {
                if front.end_lsn > stable {
                    break;
                }
                open.pop_front();
                self.with_accountant(|accountant| accountant.deactivate(front.segment))
                    .map_err(|error| self.poison(LogError::Segment(error)))?;
                durable_release = durable_release.max(Some(front.log_start_in_header));
            }
            if let Some(front) = open.front().copied() {
                let header_end =
                    front.end_lsn.0 - self.config.segment_len_bytes() + SEGMENT_HEADER_LEN;
                if header_end <= stable.0 {
                    durable_release = durable_release.max(Some(front.log_start_in_header));
                }
            }
            let newly_durable_release =
                durable_release.filter(|&release| self.is_release_pending(release));
            if let Some(release) = newly_durable_release {
                // Published in `release_durable` before the accountant may hand the segments
                // below it out again: a read trusts a remembered salt only for a location at
                // or above `release_durable` (see `Log::verify_frame`), so no segment may be
                // reused while that point still lies below it. (`deactivate` above frees only
                // below the accountant's older release point, published already.)
                self.release_durable.fetch_max(release.0, Ordering::AcqRel);
                self.with_accountant(|accountant| accountant.release_before(release));
            }
            newly_durable_release
        };
        if let Some(release) = newly_durable_release {
            self.delete_blobs_below(release);
            self.truncate_free_tail()?;
        }
        Ok(())
    }

    /// Blob files of released messages are garbage once the release is durable. A failure to
    /// delete one leaks nothing for good: recovery deletes blob files below the release point.
    fn delete_blobs_below(&self, release: Lsn) {
        let dead: Vec<u64> = {
            let mut live = lock(&self.live_blobs);
            let keep = live.split_off(&release.0);
            std::mem::replace(&mut *live, keep).into_iter().collect()
        };
        for lsn in dead {
            if self
                .storage
                .remove(&format::blob_file_name(Lsn(lsn)))
                .is_ok()
            {
                LogMetrics::add(&self.metrics.n_blobs_deleted, 1);
            }
        }
    }
}

/// Whether this thread times its current claim: one in 64, counted per thread.
fn sample_this_claim() -> bool {
    use std::cell::Cell;
    thread_local!(static CLAIMS: Cell<u32> = const { Cell::new(0) });
    CLAIMS.with(|claims| {
        let n = claims.get().wrapping_add(1);
        claims.set(n);
        n % 64 == 1
    })
}

/// Checks every frame of a buffer right before it is written (debug builds): a bug in the
/// ring must never reach the disk as a frame recovery would stop at.
fn verify_buffer(filled: &[u8], base_lsn: Lsn, frames_start: u64, salt: u64) {
    let mut scanner = format::FrameScanner::new(filled, base_lsn, frames_start, salt);
    let mut end = frames_start;
    for frame in scanner.by_ref() {
        end = frame.offset_in_segment + frame.len_bytes();
    }
    assert_eq!(
        end,
        filled.len() as u64,
        "an IO buffer about to be written does not parse to its end: {:?}",
        scanner.end()
    );
}
