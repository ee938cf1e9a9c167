//! One IO buffer of the ring: its header word, its bytes, and where it goes on disk.
//!
//! A slot is reused generation after generation. Each generation is set up by the thread that
//! rolled the ring onto it ([`Slot::begin_generation`]); the setup stores every field before it
//! publishes the new header word with `Release`, and a reserver reads the fields only after it
//! has seen that header with `Acquire`, so the fields always belong to the generation whose
//! header the reserver's CAS succeeded on.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use header_bits::Header;
use segment::Lsn;

use crate::format::FRAME_HEADER_LEN;

/// Where a generation of a slot lands, fixed when the generation begins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Placement {
    /// The ring index of this generation (slot = ring_idx % n_slots). Monotone.
    pub ring_idx: u64,
    /// The LSN of the buffer's byte 0.
    pub base_lsn: Lsn,
    /// The data-file offset of the buffer's byte 0.
    pub file_offset: u64,
    /// Bytes this generation may hold: the buffer length, or less where the segment ends.
    pub capacity_bytes: u32,
    /// If the buffer begins a segment: the release point to record in its segment header.
    /// `None` when the buffer continues a segment.
    pub starts_segment_with_log_start: Option<Lsn>,
    /// The salt of the segment the buffer lies in (see `format::SegmentHeader::salt`).
    pub segment_salt: u64,
}

impl Placement {
    /// Bytes at the front of the buffer that the log itself fills when writing it: the
    /// segment header (if the buffer begins a segment) and the buffer-start frame.
    pub(crate) fn prefix_len_bytes(&self) -> u32 {
        let segment_header = if self.starts_segment_with_log_start.is_some() {
            crate::format::SEGMENT_HEADER_LEN
        } else {
            0
        };
        (segment_header + crate::format::BUFFER_START_FRAME_LEN) as u32
    }
}

/// One IO buffer. Aligned to two cache lines so that slots never share one; the claim counter
/// sits right after the header word, in the line a claimer has just won with its CAS.
#[repr(C, align(128))]
pub(crate) struct Slot {
    /// The reservation word (see the `header-bits` crate).
    header: AtomicU64,
    /// Claims made in the current generation (a metric, added to the log's total when the
    /// buffer is written).
    n_claims: AtomicU32,
    /// `io_buf_len + FRAME_HEADER_LEN` bytes: the slack holds the padding-frame header that
    /// closes a segment.
    bytes: Box<[UnsafeCell<u8>]>,
    ring_idx: AtomicU64,
    base_lsn: AtomicU64,
    file_offset: AtomicU64,
    capacity_bytes: AtomicU32,
    /// `u64::MAX` when the buffer continues a segment, else the log start for the header.
    segment_log_start: AtomicU64,
    segment_salt: AtomicU64,
    /// Set by the sealer before it releases its pin: this buffer is the last of its segment,
    /// so its write also carries the padding frame that closes the segment.
    ends_segment: AtomicBool,
    /// No generation is in flight: the slot's last generation has been written (or the slot
    /// was never used). Only a free slot may begin a new generation.
    free: AtomicBool,
}

// SAFETY: the only non-Sync field is `bytes`, and access to it follows the reservation
// protocol: a writer touches only the byte range its header CAS claimed (ranges are disjoint),
// and the bytes are read as a whole only by the single thread that observed the generation
// sealed with zero writers, after every writer released (Acquire/Release on the header word).
unsafe impl Sync for Slot {}

const NO_SEGMENT_START: u64 = u64::MAX;

impl Slot {
    pub(crate) fn new(io_buf_len_bytes: u32) -> Slot {
        let len = io_buf_len_bytes as usize + FRAME_HEADER_LEN as usize;
        Slot {
            // Sealed and idle: nobody can reserve in it until a generation begins.
            header: AtomicU64::new(Header::INITIAL.seal().to_raw()),
            n_claims: AtomicU32::new(0),
            bytes: (0..len).map(|_| UnsafeCell::new(0)).collect(),
            ring_idx: AtomicU64::new(0),
            base_lsn: AtomicU64::new(0),
            file_offset: AtomicU64::new(0),
            capacity_bytes: AtomicU32::new(0),
            segment_log_start: AtomicU64::new(NO_SEGMENT_START),
            segment_salt: AtomicU64::new(0),
            ends_segment: AtomicBool::new(false),
            free: AtomicBool::new(true),
        }
    }

    pub(crate) fn header(&self) -> Header {
        Header::from_raw(self.header.load(Ordering::Acquire))
    }

    /// Compare-and-swap on the header word. A lost race returns the current word.
    pub(crate) fn cas_header(&self, current: Header, new: Header) -> Result<Header, Header> {
        crate::debug_delay();
        self.header
            .compare_exchange(
                current.to_raw(),
                new.to_raw(),
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .map(Header::from_raw)
            .map_err(Header::from_raw)
    }

    /// Counts one claim in this generation.
    pub(crate) fn count_claim(&self) {
        self.n_claims.fetch_add(1, Ordering::Relaxed);
    }

    /// The claims counted in this generation.
    pub(crate) fn n_claims(&self) -> u32 {
        self.n_claims.load(Ordering::Relaxed)
    }

    pub(crate) fn capacity_bytes(&self) -> u32 {
        self.capacity_bytes.load(Ordering::Acquire)
    }

    pub(crate) fn is_free(&self) -> bool {
        self.free.load(Ordering::Acquire)
    }

    pub(crate) fn mark_free(&self) {
        self.free.store(true, Ordering::Release);
    }

    pub(crate) fn set_ends_segment(&self, ends: bool) {
        self.ends_segment.store(ends, Ordering::Release);
    }

    pub(crate) fn ends_segment(&self) -> bool {
        self.ends_segment.load(Ordering::Acquire)
    }

    /// The placement of the generation the caller holds a pin on (or has sealed).
    pub(crate) fn placement(&self) -> Placement {
        let log_start = self.segment_log_start.load(Ordering::Acquire);
        Placement {
            ring_idx: self.ring_idx.load(Ordering::Acquire),
            base_lsn: Lsn(self.base_lsn.load(Ordering::Acquire)),
            file_offset: self.file_offset.load(Ordering::Acquire),
            capacity_bytes: self.capacity_bytes.load(Ordering::Acquire),
            starts_segment_with_log_start: (log_start != NO_SEGMENT_START)
                .then_some(Lsn(log_start)),
            segment_salt: self.segment_salt.load(Ordering::Acquire),
        }
    }

    /// Starts a new generation at `placement`, with `previous` the slot's current (sealed,
    /// idle, written) header. Publishes the new header last.
    pub(crate) fn begin_generation(&self, previous: Header, placement: Placement) {
        debug_assert!(
            self.is_free(),
            "a slot began a generation while still in flight"
        );
        debug_assert!(previous.is_sealed_and_idle());
        debug_assert!(
            placement.capacity_bytes as usize + FRAME_HEADER_LEN as usize <= self.bytes.len()
        );
        self.free.store(false, Ordering::Release);
        self.ring_idx.store(placement.ring_idx, Ordering::Release);
        self.base_lsn.store(placement.base_lsn.0, Ordering::Release);
        self.file_offset
            .store(placement.file_offset, Ordering::Release);
        self.capacity_bytes
            .store(placement.capacity_bytes, Ordering::Release);
        self.segment_log_start.store(
            placement
                .starts_segment_with_log_start
                .map_or(NO_SEGMENT_START, |lsn| lsn.0),
            Ordering::Release,
        );
        self.segment_salt
            .store(placement.segment_salt, Ordering::Release);
        self.ends_segment.store(false, Ordering::Release);
        self.n_claims.store(0, Ordering::Relaxed);
        let fresh = previous
            .next_generation()
            .bump_offset(placement.prefix_len_bytes())
            .expect("a buffer prefix always fits in the header's offset field");
        self.header.store(fresh.to_raw(), Ordering::Release);
    }

    /// The bytes `[start, start + len)` of the buffer, for the writer that claimed them.
    ///
    /// # Safety
    /// The caller must own the range: it claimed it with a successful header CAS (or it is
    /// the single thread writing out the sealed, idle buffer), holds its pin until it stops
    /// using the slice, and no other live slice overlaps it.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn bytes_mut(&self, start: usize, len: usize) -> &mut [u8] {
        assert!(
            start + len <= self.bytes.len(),
            "claimed range out of the buffer"
        );
        // SAFETY: `start <= len(bytes)` (asserted above), so the pointer stays within (or one
        // past the end of) the boxed slice.
        let first = unsafe { self.bytes.as_ptr().add(start) };
        // SAFETY: `UnsafeCell<u8>` has the layout of `u8`, the cells are contiguous in the
        // boxed slice, the range is in bounds (asserted), and the caller guarantees exclusive
        // access to it for the slice's lifetime.
        unsafe { std::slice::from_raw_parts_mut(UnsafeCell::raw_get(first), len) }
    }
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot")
            .field("header", &self.header())
            .field("placement", &self.placement())
            .field("free", &self.is_free())
            .finish_non_exhaustive()
    }
}
