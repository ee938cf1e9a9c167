//! The on-disk format of the log: the segment header, frames (a fixed header and a body), the
//! bodies of the control frames (batch start, blob pointer, buffer start), the blob file header,
//! and [`FrameScanner`], which walks the frames of one segment image.
//!
//! Every persisted integer is a fixed-width little-endian `u32` or `u64`; every checksum is
//! CRC-32 (`crc32fast`). `docs/format.md` draws each structure byte by byte.
//!
//! Invariants this module enforces:
//! - A frame header records the frame's own LSN, which must equal the segment's base LSN plus
//!   the frame's offset in the segment, and that LSN is under the checksum. Zeroed space (kind 0
//!   is invalid) and stale frames left by an earlier use of a reused segment (whose base LSN was
//!   different) therefore never decode as valid frames.
//! - A batch is yielded by the scanner whole or not at all: every frame of it is verified before
//!   the first one is returned.
//! - Decoding never panics, never indexes past a slice and never overflows, whatever the bytes:
//!   lengths read from disk are untrusted and checked before they are used.
//!
//! What it deliberately does not do: IO of any kind, and judging what the end of a scan means.
//! The scanner reports *where* and *why* it stopped; telling a torn tail from corruption (using
//! the largest `BufferStart` stable LSN) is recovery's job.

use segment::Lsn;

/// The version written into segment and blob headers; decoders reject any other value.
pub const FORMAT_VERSION: u32 = 1;
/// The magic bytes at offset 4 of every segment header.
pub const SEGMENT_MAGIC: [u8; 4] = *b"PLOG";
/// The magic bytes at offset 4 of every blob file.
pub const BLOB_MAGIC: [u8; 4] = *b"PLBL";

/// Length of the header at offset 0 of every physical segment.
pub const SEGMENT_HEADER_LEN: u64 = 48;
/// [`SEGMENT_HEADER_LEN`] as a `usize`, for slicing and array lengths.
pub const SEGMENT_HEADER_LEN_USIZE: usize = 48;
/// Length of the fixed header in front of every frame body.
pub const FRAME_HEADER_LEN: u64 = 24;
/// [`FRAME_HEADER_LEN`] as a `usize`, for slicing and array lengths.
pub const FRAME_HEADER_LEN_USIZE: usize = 24;
/// Length of a `BufferStart` body: one `u64` stable LSN.
pub const BUFFER_START_BODY_LEN: u64 = 16;
/// Length of a `BatchStart` body.
pub const BATCH_START_BODY_LEN: u64 = 16;
/// Length of a `BlobPointer` body.
pub const BLOB_POINTER_BODY_LEN: u64 = 16;
/// Total length of a `BufferStart` frame (header and body).
pub const BUFFER_START_FRAME_LEN: u64 = FRAME_HEADER_LEN + BUFFER_START_BODY_LEN;
/// Total length of a `BatchStart` frame (header and body).
pub const BATCH_START_FRAME_LEN: u64 = FRAME_HEADER_LEN + BATCH_START_BODY_LEN;
/// Total length of a `BlobPointer` frame (header and body).
pub const BLOB_POINTER_FRAME_LEN: u64 = FRAME_HEADER_LEN + BLOB_POINTER_BODY_LEN;
/// Length of the header at offset 0 of every blob file; the value follows it.
pub const BLOB_HEADER_LEN: u64 = 32;
/// [`BLOB_HEADER_LEN`] as a `usize`, for slicing and array lengths.
pub const BLOB_HEADER_LEN_USIZE: usize = 32;
/// The largest frame body: the length field is a `u32`.
pub const MAX_FRAME_BODY_LEN_BYTES: u64 = u32::MAX as u64;
/// The largest segment a header may describe: a Padding frame right after the segment header
/// must still have a body length that fits the `u32` length field.
pub const MAX_SEGMENT_LEN_BYTES: u64 = 1 << 32;

const _: () = assert!(SEGMENT_HEADER_LEN_USIZE as u64 == SEGMENT_HEADER_LEN);
const _: () = assert!(FRAME_HEADER_LEN_USIZE as u64 == FRAME_HEADER_LEN);
const _: () = assert!(BLOB_HEADER_LEN_USIZE as u64 == BLOB_HEADER_LEN);
const _: () = assert!(BUFFER_START_FRAME_LEN == 40);
const _: () = assert!(BATCH_START_FRAME_LEN == 40);
const _: () = assert!(BLOB_POINTER_FRAME_LEN == 40);
const _: () = assert!(
    MAX_SEGMENT_LEN_BYTES - SEGMENT_HEADER_LEN - FRAME_HEADER_LEN <= MAX_FRAME_BODY_LEN_BYTES
);

// Field offsets. The decoders below only read at these constant offsets inside fixed-size
// arrays whose length was checked first, so no offset here can index past its array.
const SH_CRC: usize = 0;
const SH_MAGIC: usize = 4;
const SH_VERSION: usize = 8;
const SH_RESERVED_A: usize = 12;
const SH_SEGMENT_LEN: usize = 16;
const SH_BASE_LSN: usize = 24;
const SH_LOG_START_LSN: usize = 32;
const SH_SALT: usize = 40;

const FH_CRC: usize = 0;
const FH_KIND: usize = 4;
const FH_RESERVED_A: usize = 5;
const FH_BODY_LEN: usize = 8;
const FH_RESERVED_B: usize = 12;
const FH_LSN: usize = 16;

const BATCH_N_FRAMES: usize = 0;
const BATCH_RESERVED: usize = 4;
const BATCH_BODY_LEN: usize = 8;

const BP_BLOB_LEN: usize = 0;
const BP_BLOB_CRC: usize = 8;
const BP_RESERVED: usize = 12;

const BH_CRC: usize = 0;
const BH_MAGIC: usize = 4;
const BH_VERSION: usize = 8;
const BH_VALUE_CRC: usize = 12;
const BH_LSN: usize = 16;
const BH_VALUE_LEN: usize = 24;

/// Errors decoding a segment header, a blob header or a control-frame body.
#[derive(thiserror::Error, Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FormatError {
    /// Fewer bytes than the structure needs.
    #[error("truncated: need {needed_bytes} bytes, have {available_bytes}")]
    Truncated {
        /// Bytes the structure needs.
        needed_bytes: u64,
        /// Bytes that were present.
        available_bytes: u64,
    },
    /// The magic bytes are not this format's: not a file we wrote, or overwritten.
    #[error("bad magic {found:02x?}")]
    BadMagic {
        /// The four bytes found where the magic belongs.
        found: [u8; 4],
    },
    /// A format version this code does not read.
    #[error("unsupported format version {found} (this build reads {FORMAT_VERSION})")]
    UnsupportedVersion {
        /// The version on disk.
        found: u32,
    },
    /// The stored checksum does not match the bytes.
    #[error("checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    BadChecksum {
        /// The checksum stored on disk.
        stored: u32,
        /// The checksum of the bytes as read.
        computed: u32,
    },
    /// A reserved field is not zero.
    #[error("reserved field {field} is not zero")]
    ReservedNonZero {
        /// Which field.
        field: &'static str,
    },
    /// A fixed-size body has the wrong length.
    #[error("body is {found_bytes} bytes, expected {expected_bytes}")]
    BadBodyLen {
        /// The length the body must have.
        expected_bytes: u64,
        /// The length it has.
        found_bytes: u64,
    },
    /// A segment header describes a segment length that is not a power of two greater than
    /// [`SEGMENT_HEADER_LEN`] and at most [`MAX_SEGMENT_LEN_BYTES`].
    #[error("invalid segment length {segment_len_bytes}")]
    BadSegmentLen {
        /// The length on disk.
        segment_len_bytes: u64,
    },
    /// A segment header's base LSN is not a multiple of its segment length.
    #[error("base {base_lsn} is not a multiple of the segment length {segment_len_bytes}")]
    MisalignedBaseLsn {
        /// The base LSN on disk.
        base_lsn: Lsn,
        /// The segment length on disk.
        segment_len_bytes: u64,
    },
    /// A blob value's length differs from the one its header (or pointer) records.
    #[error("blob value is {found_bytes} bytes, expected {expected_bytes}")]
    ValueLenMismatch {
        /// The recorded length.
        expected_bytes: u64,
        /// The length of the value as read.
        found_bytes: u64,
    },
    /// A blob value's checksum differs from the one its header (or pointer) records.
    #[error("blob value checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    ValueChecksumMismatch {
        /// The recorded checksum.
        stored: u32,
        /// The checksum of the value as read.
        computed: u32,
    },
}

/// Why there is no valid frame at some offset of a segment.
#[derive(thiserror::Error, Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameError {
    /// The offset lies past the end of the segment bytes given.
    #[error("offset {offset_in_segment} is past the end of the {segment_len_bytes} segment bytes")]
    OffsetPastEnd {
        /// The offset asked for.
        offset_in_segment: u64,
        /// The length of the segment bytes.
        segment_len_bytes: u64,
    },
    /// Fewer than [`FRAME_HEADER_LEN`] bytes remain at the offset.
    #[error("frame header truncated: {available_bytes} of {FRAME_HEADER_LEN} bytes present")]
    Truncated {
        /// Bytes present from the offset to the end of the segment bytes.
        available_bytes: u64,
    },
    /// The kind byte is not a known [`FrameKind`] (0 is what zeroed space reads as).
    #[error("invalid frame kind {0}")]
    BadKind(u8),
    /// A reserved header field is not zero.
    #[error("reserved frame header field {field} is not zero")]
    ReservedNonZero {
        /// Which field.
        field: &'static str,
    },
    /// The LSN in the header is not the LSN of the frame's position: a stale frame from an
    /// earlier use of the segment, a misplaced write, or damage.
    #[error("frame records {found}, but its position is {expected}")]
    LsnMismatch {
        /// `base_lsn + offset_in_segment`.
        expected: Lsn,
        /// The LSN in the header.
        found: Lsn,
    },
    /// `base_lsn + offset_in_segment` does not fit in a `u64`.
    #[error("base {base_lsn} plus offset {offset_in_segment} overflows the LSN space")]
    LsnOverflow {
        /// The base LSN given.
        base_lsn: Lsn,
        /// The offset given.
        offset_in_segment: u64,
    },
    /// The body length runs past the end of the segment bytes.
    #[error(
        "frame body of {body_len_bytes} bytes runs past the end ({available_bytes} bytes left)"
    )]
    BodyTooLong {
        /// The body length in the header.
        body_len_bytes: u32,
        /// Bytes present after the header.
        available_bytes: u64,
    },
    /// The stored checksum does not match the header (and body, for the kinds it covers).
    #[error("frame checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    BadChecksum {
        /// The checksum stored in the header.
        stored: u32,
        /// The checksum of the bytes as read.
        computed: u32,
    },
    /// The checksum matched but the body of a control frame is malformed.
    #[error("bad {kind:?} body: {cause}")]
    BadBody {
        /// The frame's kind.
        kind: FrameKind,
        /// What is wrong with the body.
        cause: FormatError,
    },
    /// A Padding frame does not run exactly to the end of the segment.
    #[error("padding ends at offset {end_offset}, not at the segment end {segment_len_bytes}")]
    PaddingNotAtEnd {
        /// Where the padding frame ends.
        end_offset: u64,
        /// The length of the segment bytes.
        segment_len_bytes: u64,
    },
    /// A frame of a kind that may not appear inside a batch (only Data and BlobPointer may).
    #[error("a {kind:?} frame may not appear inside a batch")]
    NotAllowedInBatch {
        /// The kind found.
        kind: FrameKind,
    },
    /// A batch's frames do not add up to the length its BatchStart declares.
    #[error("batch declares {declared_bytes} bytes of frames, found {found_bytes}")]
    BatchLenMismatch {
        /// `batch_body_len_bytes` from the BatchStart.
        declared_bytes: u64,
        /// The bytes its frames cover (so far, if they ran past the declared length).
        found_bytes: u64,
    },
    /// A batch is missing a frame or has an invalid one, so none of it counts.
    #[error(
        "incomplete batch: {n_frames_valid} of {n_frames} frames valid; at offset \
         {failed_at_offset}: {cause}"
    )]
    BatchIncomplete {
        /// Frames the BatchStart announces.
        n_frames: u32,
        /// Frames that were valid before the failure.
        n_frames_valid: u32,
        /// Offset in the segment where the check failed.
        failed_at_offset: u64,
        /// What failed there.
        cause: Box<FrameError>,
    },
}

/// What a frame holds. The discriminant is the kind byte on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameKind {
    /// A user message; the body is its bytes.
    Data = 1,
    /// An abandoned reservation; the body is junk that readers skip and never return.
    Aborted = 2,
    /// Fills the rest of a segment after its last message.
    Padding = 3,
    /// Announces that the next `n_frames` frames form one batch.
    BatchStart = 4,
    /// Points to a large value stored in its own blob file.
    BlobPointer = 5,
    /// Begins each IO buffer; records the stable LSN known when the buffer was written.
    BufferStart = 6,
}

impl FrameKind {
    /// The kind for a kind byte read from disk, or `None` if the byte is not a valid kind.
    pub const fn from_byte(byte: u8) -> Option<FrameKind> {
        match byte {
            1 => Some(FrameKind::Data),
            2 => Some(FrameKind::Aborted),
            3 => Some(FrameKind::Padding),
            4 => Some(FrameKind::BatchStart),
            5 => Some(FrameKind::BlobPointer),
            6 => Some(FrameKind::BufferStart),
            _ => None,
        }
    }

    /// The kind byte written to disk.
    pub const fn as_byte(self) -> u8 {
        self as u8
    }

    /// Whether the frame checksum covers the body. Padding and Aborted bodies are junk nobody
    /// reads, so only their header is checksummed (and the writer need not fill them).
    pub const fn checksum_covers_body(self) -> bool {
        !matches!(self, FrameKind::Aborted | FrameKind::Padding)
    }

    /// The body length a frame of this kind must have, for the control kinds whose body is
    /// fixed; `None` for kinds whose body length varies.
    pub const fn fixed_body_len(self) -> Option<u64> {
        match self {
            FrameKind::BufferStart => Some(BUFFER_START_BODY_LEN),
            FrameKind::BatchStart => Some(BATCH_START_BODY_LEN),
            FrameKind::BlobPointer => Some(BLOB_POINTER_BODY_LEN),
            FrameKind::Data | FrameKind::Aborted | FrameKind::Padding => None,
        }
    }
}

/// The length of a whole frame (header and body) whose body is `body_len_bytes` long.
pub const fn frame_len_bytes(body_len_bytes: u64) -> u64 {
    FRAME_HEADER_LEN + body_len_bytes
}

// Little-endian field access. Callers pass fixed-size arrays (or slices whose length they have
// just checked) and constant offsets inside them.
fn get_u32(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(word)
}

fn get_u64(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

fn put_u32(bytes: &mut [u8], at: usize, value: u32) {
    bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
}

fn put_u64(bytes: &mut [u8], at: usize, value: u64) {
    bytes[at..at + 8].copy_from_slice(&value.to_le_bytes());
}

/// The first `N` bytes of `bytes` as an array, or `Truncated` if there are fewer.
fn prefix<const N: usize>(bytes: &[u8]) -> Result<&[u8; N], FormatError> {
    bytes
        .get(..N)
        .and_then(|head| <&[u8; N]>::try_from(head).ok())
        .ok_or(FormatError::Truncated {
            needed_bytes: N as u64,
            available_bytes: bytes.len() as u64,
        })
}

/// Exactly `N` bytes, or `BadBodyLen`.
fn exact<const N: usize>(body: &[u8]) -> Result<&[u8; N], FormatError> {
    <&[u8; N]>::try_from(body).map_err(|_| FormatError::BadBodyLen {
        expected_bytes: N as u64,
        found_bytes: body.len() as u64,
    })
}

fn check_checksum(stored: u32, covered: &[u8]) -> Result<(), FormatError> {
    let computed = crc32fast::hash(covered);
    if stored == computed {
        Ok(())
    } else {
        Err(FormatError::BadChecksum { stored, computed })
    }
}

fn check_zero_u32(bytes: &[u8], at: usize, field: &'static str) -> Result<(), FormatError> {
    if get_u32(bytes, at) == 0 {
        Ok(())
    } else {
        Err(FormatError::ReservedNonZero { field })
    }
}

/// The header at offset 0 of every physical segment.
///
/// Layout (48 bytes): `crc32(4..48): u32`, magic `b"PLOG"`, `version: u32`, reserved `u32`,
/// `segment_len_bytes: u64`, `base_lsn: u64`, `log_start_lsn: u64`, `salt: u64`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    /// The segment length of the configuration that wrote the segment.
    pub segment_len_bytes: u64,
    /// The LSN of byte 0 of this segment; a multiple of `segment_len_bytes`.
    pub base_lsn: Lsn,
    /// The release point the writer knew: the log needs nothing below it.
    pub log_start_lsn: Lsn,
    /// A random value chosen each time a logical segment is started, and covered by the
    /// checksum of every frame in it. Frames left on disk by an earlier incarnation of the
    /// same logical segment (written before a crash, then cut) never verify under a new one,
    /// even where the header that named them was torn and so could not be erased.
    pub salt: u64,
}

impl SegmentHeader {
    /// Encodes the header, checksum included.
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_LEN_USIZE] {
        debug_assert!(
            self.segment_len_bytes.is_power_of_two()
                && self.segment_len_bytes > SEGMENT_HEADER_LEN
                && self.segment_len_bytes <= MAX_SEGMENT_LEN_BYTES
                && self.base_lsn.0.is_multiple_of(self.segment_len_bytes),
            "encoding a segment header that decode would reject: {self:?}"
        );
        let mut bytes = [0u8; SEGMENT_HEADER_LEN_USIZE];
        bytes[SH_MAGIC..SH_MAGIC + 4].copy_from_slice(&SEGMENT_MAGIC);
        put_u32(&mut bytes, SH_VERSION, FORMAT_VERSION);
        put_u64(&mut bytes, SH_SEGMENT_LEN, self.segment_len_bytes);
        put_u64(&mut bytes, SH_BASE_LSN, self.base_lsn.0);
        put_u64(&mut bytes, SH_LOG_START_LSN, self.log_start_lsn.0);
        put_u64(&mut bytes, SH_SALT, self.salt);
        let crc = crc32fast::hash(&bytes[SH_MAGIC..]);
        put_u32(&mut bytes, SH_CRC, crc);
        bytes
    }

    /// Decodes and verifies the header in the first [`SEGMENT_HEADER_LEN`] bytes of `bytes`
    /// (any bytes after them are ignored, so a whole segment may be passed).
    ///
    /// Checks, in order: length, magic, version (an unknown version may checksum differently),
    /// checksum, reserved fields, then that the segment length is a power of two in
    /// `(SEGMENT_HEADER_LEN, MAX_SEGMENT_LEN_BYTES]` and the base LSN a multiple of it.
    /// Whether the length matches the current configuration is the caller's question.
    ///
    /// # Errors
    ///
    /// The [`FormatError`] naming the first check that failed.
    pub fn decode(bytes: &[u8]) -> Result<SegmentHeader, FormatError> {
        let bytes = prefix::<SEGMENT_HEADER_LEN_USIZE>(bytes)?;
        check_magic(bytes, SH_MAGIC, SEGMENT_MAGIC)?;
        check_version(bytes, SH_VERSION)?;
        check_checksum(get_u32(bytes, SH_CRC), &bytes[SH_MAGIC..])?;
        check_zero_u32(bytes, SH_RESERVED_A, "segment_header.reserved_12")?;
        let segment_len_bytes = get_u64(bytes, SH_SEGMENT_LEN);
        if !segment_len_bytes.is_power_of_two()
            || segment_len_bytes <= SEGMENT_HEADER_LEN
            || segment_len_bytes > MAX_SEGMENT_LEN_BYTES
        {
            return Err(FormatError::BadSegmentLen { segment_len_bytes });
        }
        let base_lsn = Lsn(get_u64(bytes, SH_BASE_LSN));
        if !base_lsn.0.is_multiple_of(segment_len_bytes) {
            return Err(FormatError::MisalignedBaseLsn {
                base_lsn,
                segment_len_bytes,
            });
        }
        Ok(SegmentHeader {
            segment_len_bytes,
            base_lsn,
            log_start_lsn: Lsn(get_u64(bytes, SH_LOG_START_LSN)),
            salt: get_u64(bytes, SH_SALT),
        })
    }
}

fn check_magic(bytes: &[u8], at: usize, magic: [u8; 4]) -> Result<(), FormatError> {
    let mut found = [0u8; 4];
    found.copy_from_slice(&bytes[at..at + 4]);
    if found == magic {
        Ok(())
    } else {
        Err(FormatError::BadMagic { found })
    }
}

fn check_version(bytes: &[u8], at: usize) -> Result<(), FormatError> {
    let found = get_u32(bytes, at);
    if found == FORMAT_VERSION {
        Ok(())
    } else {
        Err(FormatError::UnsupportedVersion { found })
    }
}

/// A frame header decoded without its checksum verified (the checksum needs the body).
///
/// Useful to learn how many body bytes to read after reading a header on its own; everything
/// it says must be confirmed by [`decode_frame`] on the whole frame before it is trusted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// The frame's kind.
    pub kind: FrameKind,
    /// Length of the body that follows the header.
    pub body_len_bytes: u32,
    /// The LSN the header records.
    pub lsn: Lsn,
}

impl FrameHeader {
    /// Decodes the header in the first [`FRAME_HEADER_LEN`] bytes of `bytes`, checking the
    /// kind and the reserved fields but NOT the checksum.
    ///
    /// # Errors
    ///
    /// [`FrameError::Truncated`], [`FrameError::BadKind`] or [`FrameError::ReservedNonZero`].
    pub fn decode_unverified(bytes: &[u8]) -> Result<FrameHeader, FrameError> {
        let header = bytes
            .get(..FRAME_HEADER_LEN_USIZE)
            .ok_or(FrameError::Truncated {
                available_bytes: bytes.len() as u64,
            })?;
        let kind_byte = header[FH_KIND];
        let kind = FrameKind::from_byte(kind_byte).ok_or(FrameError::BadKind(kind_byte))?;
        if header[FH_RESERVED_A..FH_BODY_LEN].iter().any(|&b| b != 0) {
            return Err(FrameError::ReservedNonZero {
                field: "frame_header.reserved_5",
            });
        }
        if get_u32(header, FH_RESERVED_B) != 0 {
            return Err(FrameError::ReservedNonZero {
                field: "frame_header.reserved_12",
            });
        }
        Ok(FrameHeader {
            kind,
            body_len_bytes: get_u32(header, FH_BODY_LEN),
            lsn: Lsn(get_u64(header, FH_LSN)),
        })
    }
}

/// The checksum of a frame: its segment's salt (8 bytes, little-endian, not stored in the
/// frame), header bytes 4..24, then the body if the kind's checksum covers it.
fn frame_crc(header: &[u8], body: &[u8], kind: FrameKind, salt: u64) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&salt.to_le_bytes());
    hasher.update(&header[FH_KIND..FRAME_HEADER_LEN_USIZE]);
    if kind.checksum_covers_body() {
        hasher.update(body);
    }
    hasher.finalize()
}

/// Fills in the frame header in `frame[..24]` for a frame whose body is already in
/// `frame[24..]` (so `frame.len() == 24 + body_len`), computing the checksum over header bytes
/// 4..24 and the body (the header only for Padding and Aborted). This is what a writer calls
/// on its reservation once the body is in place. The body bytes are not touched.
///
/// # Panics
///
/// These are bugs in the caller, not conditions of the input: if `frame` is shorter than
/// [`FRAME_HEADER_LEN`], if the body is longer than [`MAX_FRAME_BODY_LEN_BYTES`], or if a
/// control kind's body does not have its fixed length ([`FrameKind::fixed_body_len`]).
pub fn seal_frame(frame: &mut [u8], kind: FrameKind, lsn: Lsn, salt: u64) {
    assert!(
        frame.len() >= FRAME_HEADER_LEN_USIZE,
        "a frame needs {FRAME_HEADER_LEN} header bytes, the reservation has {}",
        frame.len()
    );
    let (header, body) = frame.split_at_mut(FRAME_HEADER_LEN_USIZE);
    let body_len_bytes = u32::try_from(body.len()).unwrap_or_else(|_| {
        panic!(
            "frame body of {} bytes exceeds the u32 length field",
            body.len()
        )
    });
    if let Some(fixed) = kind.fixed_body_len() {
        assert_eq!(
            u64::from(body_len_bytes),
            fixed,
            "a {kind:?} body must be {fixed} bytes"
        );
    }
    fill_header(header, kind, body_len_bytes, lsn, body, salt);
}

/// Writes the whole frame header for a body of `body_len_bytes` (the `body` bytes are only
/// read for the checksum, and only for kinds whose checksum covers them).
fn fill_header(
    header: &mut [u8],
    kind: FrameKind,
    body_len_bytes: u32,
    lsn: Lsn,
    body: &[u8],
    salt: u64,
) {
    header.fill(0);
    header[FH_KIND] = kind.as_byte();
    put_u32(header, FH_BODY_LEN, body_len_bytes);
    put_u64(header, FH_LSN, lsn.0);
    let crc = frame_crc(header, body, kind, salt);
    put_u32(header, FH_CRC, crc);
}

/// Copies `body` into `dst[24..]` and seals the frame: a convenience over [`seal_frame`] for
/// frames whose body is built separately (the control frames).
///
/// # Panics
///
/// If `dst.len() != FRAME_HEADER_LEN + body.len()`, and as [`seal_frame`].
pub fn write_frame(dst: &mut [u8], kind: FrameKind, lsn: Lsn, body: &[u8], salt: u64) {
    assert_eq!(
        dst.len(),
        FRAME_HEADER_LEN_USIZE + body.len(),
        "destination must hold exactly the header and the body"
    );
    dst[FRAME_HEADER_LEN_USIZE..].copy_from_slice(body);
    seal_frame(dst, kind, lsn, salt);
}

/// Writes a Padding frame filling all of `dst`, which must run to the end of the segment. Only
/// the header is written: the padding body is not checksummed and its contents do not matter.
///
/// # Panics
///
/// If `dst` is shorter than [`FRAME_HEADER_LEN`] (with fewer bytes left the segment is complete
/// without padding) or its body would exceed [`MAX_FRAME_BODY_LEN_BYTES`].
pub fn write_padding(dst: &mut [u8], lsn: Lsn, salt: u64) {
    seal_frame(dst, FrameKind::Padding, lsn, salt);
}

/// The header of a Padding frame at `lsn` that is `padding_len_bytes` long, header included,
/// and so runs to the end of its segment. The padding body is not checksummed, so a writer may
/// put just these 24 bytes on disk and leave the rest of the segment unwritten.
///
/// # Panics
///
/// If `padding_len_bytes` is less than [`FRAME_HEADER_LEN`] (with fewer bytes left the segment
/// is complete without padding) or its body would exceed [`MAX_FRAME_BODY_LEN_BYTES`].
pub fn padding_frame_header(
    lsn: Lsn,
    padding_len_bytes: u64,
    salt: u64,
) -> [u8; FRAME_HEADER_LEN_USIZE] {
    let body_len_bytes = padding_len_bytes
        .checked_sub(FRAME_HEADER_LEN)
        .and_then(|body_len| u32::try_from(body_len).ok())
        .unwrap_or_else(|| {
            panic!("no padding frame is {padding_len_bytes} bytes long (24..=2^32+23 allowed)")
        });
    let mut header = [0u8; FRAME_HEADER_LEN_USIZE];
    fill_header(
        &mut header,
        FrameKind::Padding,
        body_len_bytes,
        lsn,
        &[],
        salt,
    );
    header
}

/// Encodes a BufferStart body: the stable LSN known when the IO buffer was written, and the
/// salt of the segment the buffer lies in. The salt is repeated here (it is also in the
/// segment header) so that a buffer's marker can be verified on its own even when its
/// segment's header is damaged: recovery then still learns how far the log was durable.
pub fn encode_buffer_start(
    known_stable_lsn: Lsn,
    salt: u64,
) -> [u8; BUFFER_START_BODY_LEN as usize] {
    let mut body = [0u8; BUFFER_START_BODY_LEN as usize];
    body[..8].copy_from_slice(&known_stable_lsn.0.to_le_bytes());
    body[8..].copy_from_slice(&salt.to_le_bytes());
    body
}

/// Decodes the stable LSN of a BufferStart body.
///
/// # Errors
///
/// `BadBodyLen` if the body is not [`BUFFER_START_BODY_LEN`] bytes.
pub fn decode_buffer_start(body: &[u8]) -> Result<Lsn, FormatError> {
    let body = exact::<{ BUFFER_START_BODY_LEN as usize }>(body)?;
    Ok(Lsn(get_u64(body, 0)))
}

/// Decodes the salt a BufferStart body repeats. Unverified bytes until the frame's checksum
/// has been checked with this very salt.
///
/// # Errors
///
/// `BadBodyLen` if the body is not [`BUFFER_START_BODY_LEN`] bytes.
pub fn decode_buffer_start_salt(body: &[u8]) -> Result<u64, FormatError> {
    let body = exact::<{ BUFFER_START_BODY_LEN as usize }>(body)?;
    Ok(get_u64(body, 8))
}

/// The body of a BatchStart frame: the `n_frames` frames that immediately follow it, covering
/// `batch_body_len_bytes` bytes (headers and bodies), form one batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchStart {
    /// How many frames the batch holds.
    pub n_frames: u32,
    /// Total bytes of those frames, headers included.
    pub batch_body_len_bytes: u64,
}

impl BatchStart {
    /// Encodes the body: `n_frames: u32`, reserved `u32`, `batch_body_len_bytes: u64`.
    pub fn encode(&self) -> [u8; BATCH_START_BODY_LEN as usize] {
        let mut body = [0u8; BATCH_START_BODY_LEN as usize];
        put_u32(&mut body, BATCH_N_FRAMES, self.n_frames);
        put_u64(&mut body, BATCH_BODY_LEN, self.batch_body_len_bytes);
        body
    }

    /// Decodes a BatchStart body.
    ///
    /// # Errors
    ///
    /// [`FormatError::BadBodyLen`] if it is not 16 bytes, [`FormatError::ReservedNonZero`].
    pub fn decode(body: &[u8]) -> Result<BatchStart, FormatError> {
        let body = exact::<{ BATCH_START_BODY_LEN as usize }>(body)?;
        check_zero_u32(body, BATCH_RESERVED, "batch_start.reserved_4")?;
        Ok(BatchStart {
            n_frames: get_u32(body, BATCH_N_FRAMES),
            batch_body_len_bytes: get_u64(body, BATCH_BODY_LEN),
        })
    }
}

/// Encodes a BatchStart body (see [`BatchStart`]).
pub fn encode_batch_start(
    n_frames: u32,
    batch_body_len_bytes: u64,
) -> [u8; BATCH_START_BODY_LEN as usize] {
    BatchStart {
        n_frames,
        batch_body_len_bytes,
    }
    .encode()
}

/// The body of a BlobPointer frame. The value lives in the file named
/// [`blob_file_name`]`(pointer frame's LSN)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlobPointer {
    /// Length of the value in the blob file.
    pub blob_len_bytes: u64,
    /// CRC-32 of the value bytes.
    pub blob_crc32: u32,
}

impl BlobPointer {
    /// Encodes the body: `blob_len_bytes: u64`, `blob_crc32: u32`, reserved `u32`.
    pub fn encode(&self) -> [u8; BLOB_POINTER_BODY_LEN as usize] {
        let mut body = [0u8; BLOB_POINTER_BODY_LEN as usize];
        put_u64(&mut body, BP_BLOB_LEN, self.blob_len_bytes);
        put_u32(&mut body, BP_BLOB_CRC, self.blob_crc32);
        body
    }

    /// Decodes a BlobPointer body.
    ///
    /// # Errors
    ///
    /// [`FormatError::BadBodyLen`] if it is not 16 bytes, [`FormatError::ReservedNonZero`].
    pub fn decode(body: &[u8]) -> Result<BlobPointer, FormatError> {
        let body = exact::<{ BLOB_POINTER_BODY_LEN as usize }>(body)?;
        check_zero_u32(body, BP_RESERVED, "blob_pointer.reserved_12")?;
        Ok(BlobPointer {
            blob_len_bytes: get_u64(body, BP_BLOB_LEN),
            blob_crc32: get_u32(body, BP_BLOB_CRC),
        })
    }

    /// The pointer for `value`.
    pub fn for_value(value: &[u8]) -> BlobPointer {
        BlobPointer {
            blob_len_bytes: value.len() as u64,
            blob_crc32: crc32fast::hash(value),
        }
    }

    /// Checks that `value` has the length and checksum this pointer records.
    ///
    /// # Errors
    ///
    /// [`FormatError::ValueLenMismatch`] or [`FormatError::ValueChecksumMismatch`].
    pub fn verify_value(&self, value: &[u8]) -> Result<(), FormatError> {
        verify_blob_value(self.blob_len_bytes, self.blob_crc32, value)
    }
}

const BLOB_FILE_PREFIX: &str = "blob-";
const BLOB_FILE_DIGITS: usize = 20;

/// The name of the file holding the value of the BlobPointer frame at `lsn`:
/// `blob-` and the LSN as 20 decimal digits, so names sort in LSN order.
pub fn blob_file_name(lsn: Lsn) -> String {
    format!("{BLOB_FILE_PREFIX}{:020}", lsn.0)
}

/// The LSN named by a blob file name, or `None` if `name` is not exactly a name that
/// [`blob_file_name`] produces (temporary files and strangers are thus ignored).
pub fn parse_blob_file_name(name: &str) -> Option<Lsn> {
    let digits = name.strip_prefix(BLOB_FILE_PREFIX)?;
    // `u64::from_str` would also accept a leading `+`; only the canonical form is ours.
    if digits.len() != BLOB_FILE_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u64>().ok().map(Lsn)
}

/// The header at offset 0 of a blob file; the value follows it.
///
/// Layout (32 bytes): `crc32(4..32): u32`, magic `b"PLBL"`, `version: u32`,
/// `value_crc32: u32`, `lsn: u64` (of the pointer frame), `value_len_bytes: u64`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlobHeader {
    /// LSN of the BlobPointer frame that refers to this blob.
    pub lsn: Lsn,
    /// Length of the value that follows the header.
    pub value_len_bytes: u64,
    /// CRC-32 of the value bytes.
    pub value_crc32: u32,
}

impl BlobHeader {
    /// The header for `value`, written by the pointer frame at `lsn`.
    pub fn for_value(lsn: Lsn, value: &[u8]) -> BlobHeader {
        BlobHeader {
            lsn,
            value_len_bytes: value.len() as u64,
            value_crc32: crc32fast::hash(value),
        }
    }

    /// Encodes the header, checksum included.
    pub fn encode(&self) -> [u8; BLOB_HEADER_LEN_USIZE] {
        let mut bytes = [0u8; BLOB_HEADER_LEN_USIZE];
        bytes[BH_MAGIC..BH_MAGIC + 4].copy_from_slice(&BLOB_MAGIC);
        put_u32(&mut bytes, BH_VERSION, FORMAT_VERSION);
        put_u32(&mut bytes, BH_VALUE_CRC, self.value_crc32);
        put_u64(&mut bytes, BH_LSN, self.lsn.0);
        put_u64(&mut bytes, BH_VALUE_LEN, self.value_len_bytes);
        let crc = crc32fast::hash(&bytes[BH_MAGIC..]);
        put_u32(&mut bytes, BH_CRC, crc);
        bytes
    }

    /// Decodes and verifies the header in the first [`BLOB_HEADER_LEN`] bytes of `bytes`
    /// (the value may follow; it is not checked here, see [`BlobHeader::verify_value`]).
    ///
    /// # Errors
    ///
    /// [`FormatError::Truncated`], [`FormatError::BadMagic`],
    /// [`FormatError::UnsupportedVersion`] or [`FormatError::BadChecksum`].
    pub fn decode(bytes: &[u8]) -> Result<BlobHeader, FormatError> {
        let bytes = prefix::<BLOB_HEADER_LEN_USIZE>(bytes)?;
        check_magic(bytes, BH_MAGIC, BLOB_MAGIC)?;
        check_version(bytes, BH_VERSION)?;
        check_checksum(get_u32(bytes, BH_CRC), &bytes[BH_MAGIC..])?;
        Ok(BlobHeader {
            lsn: Lsn(get_u64(bytes, BH_LSN)),
            value_len_bytes: get_u64(bytes, BH_VALUE_LEN),
            value_crc32: get_u32(bytes, BH_VALUE_CRC),
        })
    }

    /// Checks that `value` has the length and checksum this header records.
    ///
    /// # Errors
    ///
    /// [`FormatError::ValueLenMismatch`] or [`FormatError::ValueChecksumMismatch`].
    pub fn verify_value(&self, value: &[u8]) -> Result<(), FormatError> {
        verify_blob_value(self.value_len_bytes, self.value_crc32, value)
    }

    /// Whether this header belongs to the BlobPointer frame at `lsn` with body `pointer`.
    pub fn matches_pointer(&self, lsn: Lsn, pointer: &BlobPointer) -> bool {
        self.lsn == lsn
            && self.value_len_bytes == pointer.blob_len_bytes
            && self.value_crc32 == pointer.blob_crc32
    }
}

fn verify_blob_value(
    expected_len_bytes: u64,
    stored_crc: u32,
    value: &[u8],
) -> Result<(), FormatError> {
    let found_bytes = value.len() as u64;
    if found_bytes != expected_len_bytes {
        return Err(FormatError::ValueLenMismatch {
            expected_bytes: expected_len_bytes,
            found_bytes,
        });
    }
    let computed = crc32fast::hash(value);
    if computed != stored_crc {
        return Err(FormatError::ValueChecksumMismatch {
            stored: stored_crc,
            computed,
        });
    }
    Ok(())
}

/// A decoded, verified frame borrowed from a segment's bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The frame's kind.
    pub kind: FrameKind,
    /// The LSN of the frame's first byte.
    pub lsn: Lsn,
    /// Where the frame starts in its segment.
    pub offset_in_segment: u64,
    /// The body (junk for Aborted and Padding, which are not checksummed).
    pub body: &'a [u8],
}

impl Frame<'_> {
    /// Length of the whole frame: header plus body.
    pub fn len_bytes(&self) -> u64 {
        frame_len_bytes(self.body.len() as u64)
    }

    /// The offset in the segment just past this frame: where the next frame starts.
    pub fn end_offset_in_segment(&self) -> u64 {
        // Cannot saturate for a decoded frame: it lies inside the segment bytes.
        self.offset_in_segment.saturating_add(self.len_bytes())
    }

    /// The LSN just past this frame.
    pub fn end_lsn(&self) -> Lsn {
        // Cannot saturate for a decoded frame: `decode_frame` checks its end LSN fits.
        Lsn(self.lsn.0.saturating_add(self.len_bytes()))
    }
}

/// Decodes and verifies the frame at `offset_in_segment` of `segment` (the bytes of one whole
/// physical segment, or a prefix of it), whose base LSN is `base_lsn`.
///
/// Checks, in order: that a whole header is present, the kind, the reserved fields, that the
/// recorded LSN is `base_lsn + offset_in_segment`, that the body fits in `segment`, the
/// checksum, and finally the fixed-size bodies of control frames. A Padding frame is accepted
/// wherever it ends; the rule that it must end the segment is the scanner's.
///
/// To verify one frame read on its own, pass its bytes with `base_lsn` set to the LSN it must
/// have and `offset_in_segment` 0.
///
/// # Errors
///
/// The [`FrameError`] naming the first check that failed.
pub fn decode_frame(
    segment: &[u8],
    base_lsn: Lsn,
    offset_in_segment: u64,
    salt: u64,
) -> Result<Frame<'_>, FrameError> {
    let segment_len_bytes = segment.len() as u64;
    let past_end = FrameError::OffsetPastEnd {
        offset_in_segment,
        segment_len_bytes,
    };
    if offset_in_segment > segment_len_bytes {
        return Err(past_end);
    }
    // `offset_in_segment <= segment.len()`, so it fits in a usize.
    let rest = usize::try_from(offset_in_segment)
        .ok()
        .and_then(|start| segment.get(start..))
        .ok_or(past_end)?;
    let header = FrameHeader::decode_unverified(rest)?;
    let expected = base_lsn
        .0
        .checked_add(offset_in_segment)
        .ok_or(FrameError::LsnOverflow {
            base_lsn,
            offset_in_segment,
        })?;
    if header.lsn.0 != expected {
        return Err(FrameError::LsnMismatch {
            expected: Lsn(expected),
            found: header.lsn,
        });
    }
    let after_header = &rest[FRAME_HEADER_LEN_USIZE..];
    let body = usize::try_from(header.body_len_bytes)
        .ok()
        .and_then(|body_len| after_header.get(..body_len))
        .ok_or(FrameError::BodyTooLong {
            body_len_bytes: header.body_len_bytes,
            available_bytes: after_header.len() as u64,
        })?;
    // The end LSN must fit too, so `Frame::end_lsn` and the next frame's LSN never overflow.
    if expected
        .checked_add(frame_len_bytes(u64::from(header.body_len_bytes)))
        .is_none()
    {
        return Err(FrameError::LsnOverflow {
            base_lsn,
            offset_in_segment,
        });
    }
    let stored = get_u32(rest, FH_CRC);
    let computed = frame_crc(&rest[..FRAME_HEADER_LEN_USIZE], body, header.kind, salt);
    if stored != computed {
        return Err(FrameError::BadChecksum { stored, computed });
    }
    check_body(header.kind, body).map_err(|cause| FrameError::BadBody {
        kind: header.kind,
        cause,
    })?;
    Ok(Frame {
        kind: header.kind,
        lsn: header.lsn,
        offset_in_segment,
        body,
    })
}

/// Checks a control frame's body: its fixed length and its reserved fields. A body that fails
/// this passed the checksum, so it was written this way: a writer bug, not a torn write.
fn check_body(kind: FrameKind, body: &[u8]) -> Result<(), FormatError> {
    match kind {
        FrameKind::BufferStart => decode_buffer_start(body).map(|_| ()),
        FrameKind::BatchStart => BatchStart::decode(body).map(|_| ()),
        FrameKind::BlobPointer => BlobPointer::decode(body).map(|_| ()),
        FrameKind::Data | FrameKind::Aborted | FrameKind::Padding => Ok(()),
    }
}

/// Why a [`FrameScanner`] stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScanEnd {
    /// The segment is complete: a Padding frame ran to its end, or fewer than FRAME_HEADER_LEN
    /// bytes remained (`segment.len()` is treated as the segment length).
    Complete,
    /// No valid frame at this offset: a torn tail or damage. `reason` says which check failed.
    Invalid {
        /// Where the scan stopped: the offset of the invalid frame, or of the BatchStart of an
        /// incomplete batch.
        offset_in_segment: u64,
        /// Which check failed.
        reason: FrameError,
    },
}

/// Walks a segment's frames in order starting at `start_offset` (normally
/// [`SEGMENT_HEADER_LEN`]).
///
/// Yields every valid frame (all kinds, including BufferStart, Aborted and Padding) and stops
/// at the first offset without one; [`FrameScanner::end`] then says why. A BatchStart is checked
/// together with all its frames BEFORE any of them is yielded: if any is missing or invalid, or
/// is of a kind other than Data and BlobPointer, or they do not cover exactly the declared
/// length, the scan ends at the BatchStart's offset with [`FrameError::BatchIncomplete`].
/// A Padding frame must run exactly to the end of `segment`.
#[derive(Clone, Debug)]
pub struct FrameScanner<'a> {
    segment: &'a [u8],
    base_lsn: Lsn,
    /// The segment's salt (from its header), covered by every frame's checksum.
    salt: u64,
    /// Offset of the next frame to decode, or where the scan stopped.
    cursor: u64,
    /// Frames of an already verified batch still to yield.
    batch_frames_left: u32,
    end: Option<ScanEnd>,
}

impl<'a> FrameScanner<'a> {
    /// A scanner over `segment` (one whole physical segment, or a prefix of it: its length is
    /// taken as the segment length) whose base LSN is `base_lsn` and salt `salt`, starting at
    /// `start_offset`.
    pub fn new(segment: &'a [u8], base_lsn: Lsn, start_offset: u64, salt: u64) -> Self {
        FrameScanner {
            segment,
            base_lsn,
            salt,
            cursor: start_offset,
            batch_frames_left: 0,
            end: None,
        }
    }

    /// Why the scan stopped; `None` until the iterator has returned `None`.
    pub fn end(&self) -> Option<ScanEnd> {
        self.end.clone()
    }

    /// The offset just past the last frame yielded (the start offset before any): where the
    /// next frame would begin, and once the scan has ended, where the valid frames stop.
    pub fn next_offset_in_segment(&self) -> u64 {
        self.cursor
    }

    fn step(&mut self) -> Result<Frame<'a>, ScanEnd> {
        let segment_len_bytes = self.segment.len() as u64;
        let at = self.cursor;
        let invalid = |reason| ScanEnd::Invalid {
            offset_in_segment: at,
            reason,
        };
        if self.batch_frames_left > 0 {
            // Verified by `check_batch` already; decoding again only builds the `Frame`.
            let frame =
                decode_frame(self.segment, self.base_lsn, at, self.salt).map_err(invalid)?;
            debug_assert!(matches!(
                frame.kind,
                FrameKind::Data | FrameKind::BlobPointer
            ));
            self.batch_frames_left -= 1;
            return Ok(frame);
        }
        match segment_len_bytes.checked_sub(at) {
            None => {
                return Err(invalid(FrameError::OffsetPastEnd {
                    offset_in_segment: at,
                    segment_len_bytes,
                }));
            }
            Some(remaining) if remaining < FRAME_HEADER_LEN => return Err(ScanEnd::Complete),
            Some(_) => {}
        }
        let frame = decode_frame(self.segment, self.base_lsn, at, self.salt).map_err(invalid)?;
        match frame.kind {
            FrameKind::Padding => {
                let end_offset = frame.end_offset_in_segment();
                if end_offset != segment_len_bytes {
                    return Err(invalid(FrameError::PaddingNotAtEnd {
                        end_offset,
                        segment_len_bytes,
                    }));
                }
            }
            FrameKind::BatchStart => {
                self.batch_frames_left =
                    check_batch(self.segment, self.base_lsn, self.salt, &frame).map_err(invalid)?;
            }
            FrameKind::Data
            | FrameKind::Aborted
            | FrameKind::BlobPointer
            | FrameKind::BufferStart => {}
        }
        Ok(frame)
    }
}

/// Verifies every frame of the batch that `batch_start` announces; returns how many there are.
fn check_batch(
    segment: &[u8],
    base_lsn: Lsn,
    salt: u64,
    batch_start: &Frame<'_>,
) -> Result<u32, FrameError> {
    let batch = BatchStart::decode(batch_start.body).map_err(|cause| FrameError::BadBody {
        kind: FrameKind::BatchStart,
        cause,
    })?;
    let first_offset = batch_start.end_offset_in_segment();
    let declared_bytes = batch.batch_body_len_bytes;
    let mut cursor = first_offset;
    let mut n_frames_valid = 0;
    let incomplete = |n_frames_valid, failed_at_offset, cause| FrameError::BatchIncomplete {
        n_frames: batch.n_frames,
        n_frames_valid,
        failed_at_offset,
        cause: Box::new(cause),
    };
    // Every frame advances `cursor` by at least FRAME_HEADER_LEN and the loop stops once it
    // passes the declared length or the segment, so a huge `n_frames` cannot make it spin.
    while n_frames_valid < batch.n_frames {
        let frame = decode_frame(segment, base_lsn, cursor, salt)
            .map_err(|e| incomplete(n_frames_valid, cursor, e))?;
        if !matches!(frame.kind, FrameKind::Data | FrameKind::BlobPointer) {
            return Err(incomplete(
                n_frames_valid,
                cursor,
                FrameError::NotAllowedInBatch { kind: frame.kind },
            ));
        }
        let found_bytes = frame.end_offset_in_segment() - first_offset;
        if found_bytes > declared_bytes {
            return Err(incomplete(
                n_frames_valid,
                cursor,
                FrameError::BatchLenMismatch {
                    declared_bytes,
                    found_bytes,
                },
            ));
        }
        cursor = frame.end_offset_in_segment();
        n_frames_valid += 1;
    }
    let found_bytes = cursor - first_offset;
    if found_bytes != declared_bytes {
        return Err(incomplete(
            n_frames_valid,
            cursor,
            FrameError::BatchLenMismatch {
                declared_bytes,
                found_bytes,
            },
        ));
    }
    Ok(batch.n_frames)
}

impl<'a> Iterator for FrameScanner<'a> {
    type Item = Frame<'a>;

    fn next(&mut self) -> Option<Frame<'a>> {
        if self.end.is_some() {
            return None;
        }
        match self.step() {
            Ok(frame) => {
                self.cursor = frame.end_offset_in_segment();
                Some(frame)
            }
            Err(end) => {
                self.end = Some(end);
                None
            }
        }
    }
}

impl std::iter::FusedIterator for FrameScanner<'_> {}

#[cfg(test)]
mod tests {
    /// The salt the tests' segments are written with.
    const TEST_SALT: u64 = 0x5A17_5A17_0BAD_CAFE;

    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;

    const SEGMENT_LEN: usize = 4096;

    fn cases() -> u32 {
        std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(256)
    }

    // ----- Building segment images -----

    /// A frame inside a batch.
    #[derive(Clone, Debug)]
    enum Inner {
        Data(Vec<u8>),
        Blob(BlobPointer),
    }

    /// A top-level unit laid out in a segment.
    #[derive(Clone, Debug)]
    enum Item {
        Data(Vec<u8>),
        /// An aborted reservation of this many body bytes; the body is left as junk.
        Aborted(usize),
        Blob(BlobPointer),
        BufferStart(u64),
        Batch(Vec<Inner>),
    }

    /// How the segment ends once no more items fit (or the items run out).
    #[derive(Clone, Copy, Debug)]
    enum Tail {
        Padding,
        /// A last Data frame sized to leave exactly this many (< 24) junk bytes, if it fits.
        Short(usize),
    }

    /// A frame the scanner must yield.
    #[derive(Clone, Debug, PartialEq, Eq)]
    struct Expected {
        kind: FrameKind,
        lsn: Lsn,
        offset: u64,
        body: Vec<u8>,
    }

    impl Expected {
        fn end(&self) -> u64 {
            self.offset + frame_len_bytes(self.body.len() as u64)
        }
    }

    /// A top-level unit: a lone frame, or a BatchStart with its frames.
    #[derive(Clone, Debug)]
    struct Unit {
        first_frame_idx: usize,
        n_frames: usize,
        start: u64,
        end: u64,
    }

    #[derive(Clone, Debug)]
    struct Image {
        bytes: Vec<u8>,
        base_lsn: Lsn,
        frames: Vec<Expected>,
        units: Vec<Unit>,
    }

    impl Image {
        /// Whether flipping byte `byte_idx` must invalidate the frame holding it, and the
        /// index of the unit holding it.
        fn covering_unit(&self, byte_idx: u64) -> Option<usize> {
            self.units.iter().position(|unit| {
                self.frames[unit.first_frame_idx..unit.first_frame_idx + unit.n_frames]
                    .iter()
                    .any(|f| {
                        let covered_end = if f.kind.checksum_covers_body() {
                            f.end()
                        } else {
                            f.offset + FRAME_HEADER_LEN
                        };
                        (f.offset..covered_end).contains(&byte_idx)
                    })
            })
        }
    }

    /// Deterministic junk, so images do not need thousands of generated bytes.
    fn junk(seed: u64, len: usize) -> Vec<u8> {
        let mut state = seed | 1;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect()
    }

    fn put_frame(
        bytes: &mut [u8],
        base_lsn: Lsn,
        at: u64,
        kind: FrameKind,
        body: Option<&[u8]>,
        body_len: usize,
    ) -> Expected {
        let start = at as usize;
        let end = start + FRAME_HEADER_LEN_USIZE + body_len;
        let lsn = Lsn(base_lsn.0 + at);
        match body {
            Some(body) => write_frame(&mut bytes[start..end], kind, lsn, body, TEST_SALT),
            None => seal_frame(&mut bytes[start..end], kind, lsn, TEST_SALT),
        }
        Expected {
            kind,
            lsn,
            offset: at,
            body: bytes[start + FRAME_HEADER_LEN_USIZE..end].to_vec(),
        }
    }

    fn build(items: &[Item], base_idx: u64, tail: Tail, seed: u64) -> Image {
        let base_lsn = Lsn(base_idx * SEGMENT_LEN as u64);
        let mut bytes = junk(seed, SEGMENT_LEN);
        let header = SegmentHeader {
            segment_len_bytes: SEGMENT_LEN as u64,
            base_lsn,
            log_start_lsn: Lsn(0),
            salt: TEST_SALT,
        };
        bytes[..SEGMENT_HEADER_LEN_USIZE].copy_from_slice(&header.encode());
        let mut frames = Vec::new();
        let mut units = Vec::new();
        let mut at = SEGMENT_HEADER_LEN;
        let len = SEGMENT_LEN as u64;
        for item in items {
            let first_frame_idx = frames.len();
            let unit_len = match item {
                Item::Data(body) => frame_len_bytes(body.len() as u64),
                Item::Aborted(body_len) => frame_len_bytes(*body_len as u64),
                Item::Blob(_) => BLOB_POINTER_FRAME_LEN,
                Item::BufferStart(_) => BUFFER_START_FRAME_LEN,
                Item::Batch(inner) => BATCH_START_FRAME_LEN + inner_len(inner),
            };
            if at + unit_len > len {
                break;
            }
            let start = at;
            match item {
                Item::Data(body) => frames.push(put_frame(
                    &mut bytes,
                    base_lsn,
                    at,
                    FrameKind::Data,
                    Some(body),
                    body.len(),
                )),
                Item::Aborted(body_len) => frames.push(put_frame(
                    &mut bytes,
                    base_lsn,
                    at,
                    FrameKind::Aborted,
                    None,
                    *body_len,
                )),
                Item::Blob(p) => frames.push(put_frame(
                    &mut bytes,
                    base_lsn,
                    at,
                    FrameKind::BlobPointer,
                    Some(&p.encode()),
                    16,
                )),
                Item::BufferStart(stable) => {
                    let body = encode_buffer_start(Lsn(*stable), TEST_SALT);
                    frames.push(put_frame(
                        &mut bytes,
                        base_lsn,
                        at,
                        FrameKind::BufferStart,
                        Some(&body),
                        BUFFER_START_BODY_LEN as usize,
                    ));
                }
                Item::Batch(inner) => {
                    let body = encode_batch_start(inner.len() as u32, inner_len(inner));
                    frames.push(put_frame(
                        &mut bytes,
                        base_lsn,
                        at,
                        FrameKind::BatchStart,
                        Some(&body),
                        16,
                    ));
                    let mut inner_at = at + BATCH_START_FRAME_LEN;
                    for frame in inner {
                        let f = match frame {
                            Inner::Data(body) => put_frame(
                                &mut bytes,
                                base_lsn,
                                inner_at,
                                FrameKind::Data,
                                Some(body),
                                body.len(),
                            ),
                            Inner::Blob(p) => put_frame(
                                &mut bytes,
                                base_lsn,
                                inner_at,
                                FrameKind::BlobPointer,
                                Some(&p.encode()),
                                16,
                            ),
                        };
                        inner_at = f.end();
                        frames.push(f);
                    }
                    assert_eq!(inner_at, start + unit_len);
                }
            }
            at = start + unit_len;
            units.push(Unit {
                first_frame_idx,
                n_frames: frames.len() - first_frame_idx,
                start,
                end: at,
            });
        }
        let remaining = len - at;
        if remaining >= FRAME_HEADER_LEN {
            let first_frame_idx = frames.len();
            match tail {
                Tail::Short(left) if remaining >= FRAME_HEADER_LEN + left as u64 => {
                    let body_len = (remaining - FRAME_HEADER_LEN) as usize - left;
                    let body = junk(seed ^ 0x5555, body_len);
                    frames.push(put_frame(
                        &mut bytes,
                        base_lsn,
                        at,
                        FrameKind::Data,
                        Some(&body),
                        body_len,
                    ));
                }
                _ => {
                    write_padding(&mut bytes[at as usize..], Lsn(base_lsn.0 + at), TEST_SALT);
                    frames.push(Expected {
                        kind: FrameKind::Padding,
                        lsn: Lsn(base_lsn.0 + at),
                        offset: at,
                        body: bytes[at as usize + FRAME_HEADER_LEN_USIZE..].to_vec(),
                    });
                }
            }
            let start = at;
            at = frames[first_frame_idx].end();
            units.push(Unit {
                first_frame_idx,
                n_frames: 1,
                start,
                end: at,
            });
        }
        assert!(
            len - at < FRAME_HEADER_LEN
                || frames.last().is_some_and(|f| f.kind == FrameKind::Padding)
        );
        Image {
            bytes,
            base_lsn,
            frames,
            units,
        }
    }

    fn inner_len(inner: &[Inner]) -> u64 {
        inner
            .iter()
            .map(|f| match f {
                Inner::Data(body) => frame_len_bytes(body.len() as u64),
                Inner::Blob(_) => BLOB_POINTER_FRAME_LEN,
            })
            .sum()
    }

    fn scan(bytes: &[u8], base_lsn: Lsn) -> (Vec<Expected>, ScanEnd) {
        let mut scanner = FrameScanner::new(bytes, base_lsn, SEGMENT_HEADER_LEN, TEST_SALT);
        let got = scanner
            .by_ref()
            .map(|f| Expected {
                kind: f.kind,
                lsn: f.lsn,
                offset: f.offset_in_segment,
                body: f.body.to_vec(),
            })
            .collect();
        let end = scanner.end().expect("the scan ended");
        assert_eq!(scanner.next(), None, "the scanner is fused");
        (got, end)
    }

    /// Every BatchStart yielded is followed by all of its frames.
    fn assert_batches_whole(got: &[Expected]) {
        let mut idx = 0;
        while idx < got.len() {
            if got[idx].kind == FrameKind::BatchStart {
                let batch = BatchStart::decode(&got[idx].body).expect("valid batch body");
                let members = got
                    .get(idx + 1..idx + 1 + batch.n_frames as usize)
                    .expect("batch yielded whole");
                let covered: u64 = members
                    .iter()
                    .map(|f| frame_len_bytes(f.body.len() as u64))
                    .sum();
                assert_eq!(covered, batch.batch_body_len_bytes);
                idx += batch.n_frames as usize;
            }
            idx += 1;
        }
    }

    fn blob_strategy() -> impl Strategy<Value = BlobPointer> {
        (any::<u64>(), any::<u32>()).prop_map(|(blob_len_bytes, blob_crc32)| BlobPointer {
            blob_len_bytes,
            blob_crc32,
        })
    }

    fn item_strategy() -> impl Strategy<Value = Item> {
        let inner = prop_oneof![
            3 => vec(any::<u8>(), 0..300).prop_map(Inner::Data),
            1 => blob_strategy().prop_map(Inner::Blob),
        ];
        prop_oneof![
            4 => vec(any::<u8>(), 0..300).prop_map(Item::Data),
            1 => (0usize..200).prop_map(Item::Aborted),
            1 => blob_strategy().prop_map(Item::Blob),
            1 => any::<u64>().prop_map(Item::BufferStart),
            2 => vec(inner, 0..5).prop_map(Item::Batch),
        ]
    }

    fn image_strategy() -> impl Strategy<Value = Image> {
        let tail = prop_oneof![Just(Tail::Padding), (0usize..24).prop_map(Tail::Short)];
        (
            vec(item_strategy(), 0..40),
            0u64..(1 << 40),
            tail,
            any::<u64>(),
        )
            .prop_map(|(items, base_idx, tail, seed)| build(&items, base_idx, tail, seed))
    }

    /// A fixed image holding every kind, for the exhaustive deterministic tests.
    fn fixed_image() -> Image {
        let items = vec![
            Item::BufferStart(12_345),
            Item::Data(b"hello".to_vec()),
            Item::Aborted(30),
            Item::Data(Vec::new()),
            Item::Batch(vec![
                Inner::Data(b"one".to_vec()),
                Inner::Blob(BlobPointer {
                    blob_len_bytes: 1 << 20,
                    blob_crc32: 0xdead_beef,
                }),
                Inner::Data(vec![7; 100]),
            ]),
            Item::Blob(BlobPointer {
                blob_len_bytes: 99,
                blob_crc32: 5,
            }),
            Item::Batch(Vec::new()),
            Item::Data(vec![0xab; 250]),
        ];
        build(&items, 3, Tail::Padding, 42)
    }

    // ----- Properties -----

    /// What a truncated image must yield: whole units up to the cut (a Padding unit only if it
    /// still ends the slice), then `None` (Complete) if fewer than a header's bytes remain,
    /// else `Some(offset)` (Invalid there).
    fn expected_truncated(image: &Image, cut: u64) -> (Vec<Expected>, Option<u64>) {
        let mut yielded = Vec::new();
        let mut at = SEGMENT_HEADER_LEN;
        for unit in &image.units {
            let is_padding = image.frames[unit.first_frame_idx].kind == FrameKind::Padding;
            if unit.end > cut || (is_padding && unit.end != cut) {
                break;
            }
            yielded.extend_from_slice(
                &image.frames[unit.first_frame_idx..unit.first_frame_idx + unit.n_frames],
            );
            at = unit.end;
        }
        let complete = cut >= at && cut - at < FRAME_HEADER_LEN;
        (yielded, if complete { None } else { Some(at) })
    }

    fn check_truncations(
        image: &Image,
        cuts: impl Iterator<Item = u64>,
    ) -> Result<(), TestCaseError> {
        for cut in cuts {
            let (got, end) = scan(&image.bytes[..cut as usize], image.base_lsn);
            let (want, want_end) = expected_truncated(image, cut);
            prop_assert_eq!(&got, &want, "cut at {}", cut);
            let end_offset = match end {
                ScanEnd::Complete => None,
                ScanEnd::Invalid {
                    offset_in_segment, ..
                } => Some(offset_in_segment),
            };
            prop_assert_eq!(end_offset, want_end, "cut at {}", cut);
            assert_batches_whole(&got);
        }
        Ok(())
    }

    fn check_bit_flip(image: &Image, bit_idx: u64) -> Result<(), TestCaseError> {
        let byte_idx = bit_idx / 8;
        let mut bytes = image.bytes.clone();
        bytes[byte_idx as usize] ^= 1 << (bit_idx % 8);
        let (got, end) = scan(&bytes, image.base_lsn);
        // Aborted and Padding bodies are junk outside the checksum: a flip there shows up in
        // the yielded body, and that is fine. Compare them by length only.
        let unchecked = |frames: &[Expected]| -> Vec<Expected> {
            frames
                .iter()
                .map(|f| {
                    let mut f = f.clone();
                    if !f.kind.checksum_covers_body() {
                        f.body.fill(0);
                    }
                    f
                })
                .collect()
        };
        prop_assert!(
            unchecked(&image.frames).starts_with(&unchecked(&got)),
            "bit {}: yielded frames that were never written",
            bit_idx
        );
        assert_batches_whole(&got);
        match image.covering_unit(byte_idx) {
            Some(unit_idx) => {
                let unit = &image.units[unit_idx];
                // Everything before the damaged unit survives; the damaged unit never appears.
                prop_assert_eq!(got.len(), unit.first_frame_idx, "bit {}", bit_idx);
                prop_assert!(
                    matches!(end, ScanEnd::Invalid { offset_in_segment, .. } if offset_in_segment == unit.start),
                    "bit {}: ended {:?}, expected Invalid at {}",
                    bit_idx,
                    end,
                    unit.start
                );
            }
            None => {
                // Segment header, Aborted or Padding body, or the short tail: nobody reads it.
                prop_assert_eq!(got.len(), image.frames.len(), "bit {}", bit_idx);
                prop_assert_eq!(end, ScanEnd::Complete);
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(cases()))]

        #[test]
        fn scanner_yields_exactly_what_was_written(image in image_strategy()) {
            let (got, end) = scan(&image.bytes, image.base_lsn);
            prop_assert_eq!(got, image.frames.clone());
            prop_assert_eq!(end, ScanEnd::Complete);
        }

        #[test]
        fn single_bit_flips_yield_a_prefix(image in image_strategy(), bits in vec(0..(SEGMENT_LEN as u64 * 8), 1..16)) {
            for bit_idx in bits {
                check_bit_flip(&image, bit_idx)?;
            }
        }

        #[test]
        fn truncation_at_every_length_yields_whole_units(image in image_strategy()) {
            check_truncations(&image, 0..=SEGMENT_LEN as u64)?;
        }

        #[test]
        fn decoders_never_panic_on_arbitrary_bytes(
            bytes in vec(any::<u8>(), 0..200),
            base_lsn in prop_oneof![any::<u64>(), Just(u64::MAX), Just(0)],
            offset in prop_oneof![0u64..250, any::<u64>()],
        ) {
            let _ = decode_frame(&bytes, Lsn(base_lsn), offset, TEST_SALT);
            let _ = FrameHeader::decode_unverified(&bytes);
            let _ = SegmentHeader::decode(&bytes);
            let _ = BlobHeader::decode(&bytes);
            let _ = BlobPointer::decode(&bytes);
            let _ = BatchStart::decode(&bytes);
            let _ = decode_buffer_start(&bytes);
            let mut scanner = FrameScanner::new(&bytes, Lsn(base_lsn), offset, TEST_SALT);
            prop_assert!(scanner.by_ref().count() <= bytes.len() / FRAME_HEADER_LEN_USIZE);
            prop_assert!(scanner.end().is_some());
        }

        #[test]
        fn forged_frames_never_panic(
            kind in 0u8..8,
            body_len in prop_oneof![0u32..64, any::<u32>()],
            n_frames in any::<u32>(),
            batch_len in prop_oneof![0u64..200, any::<u64>()],
            base_lsn in prop_oneof![0u64..1 << 20, Just(u64::MAX - 40), any::<u64>()],
            tail in vec(any::<u8>(), 0..200),
        ) {
            // A header with a valid checksum and arbitrary fields: exercises every path after
            // the checksum, which random bytes almost never reach.
            let mut bytes = vec![0u8; 24];
            bytes[FH_KIND] = kind;
            put_u32(&mut bytes, FH_BODY_LEN, body_len);
            put_u64(&mut bytes, FH_LSN, base_lsn);
            if kind == FrameKind::BatchStart.as_byte() {
                bytes.extend_from_slice(&encode_batch_start(n_frames, batch_len));
            }
            bytes.extend_from_slice(&tail);
            let covered_end = (24 + body_len as usize).min(bytes.len());
            let mut hasher = crc32fast::Hasher::new();
            hasher.update(&TEST_SALT.to_le_bytes());
            hasher.update(&bytes[4..covered_end]);
            let crc = hasher.finalize();
            put_u32(&mut bytes, FH_CRC, crc);
            let _ = decode_frame(&bytes, Lsn(base_lsn), 0, TEST_SALT);
            let mut scanner = FrameScanner::new(&bytes, Lsn(base_lsn), 0, TEST_SALT);
            prop_assert!(scanner.by_ref().count() <= bytes.len() / FRAME_HEADER_LEN_USIZE);
        }

        #[test]
        fn segment_header_round_trips(
            shift in 7u32..=32,
            base_idx in any::<u32>(),
            log_start_lsn in any::<u64>(),
        ) {
            let segment_len_bytes = 1u64 << shift;
            let header = SegmentHeader { segment_len_bytes, base_lsn: Lsn(u64::from(base_idx) << shift), log_start_lsn: Lsn(log_start_lsn) , salt: TEST_SALT};
            prop_assert_eq!(SegmentHeader::decode(&header.encode()), Ok(header));
        }

        #[test]
        fn blob_structures_round_trip(lsn in any::<u64>(), len in any::<u64>(), crc in any::<u32>()) {
            let header = BlobHeader { lsn: Lsn(lsn), value_len_bytes: len, value_crc32: crc };
            prop_assert_eq!(BlobHeader::decode(&header.encode()), Ok(header));
            let pointer = BlobPointer { blob_len_bytes: len, blob_crc32: crc };
            prop_assert_eq!(BlobPointer::decode(&pointer.encode()), Ok(pointer));
            prop_assert!(header.matches_pointer(Lsn(lsn), &pointer));
            prop_assert_eq!(parse_blob_file_name(&blob_file_name(Lsn(lsn))), Some(Lsn(lsn)));
        }

        #[test]
        fn blob_file_names_parse_only_canonical_names(name in "blob-[0-9+ ]{18,22}|[a-z-]{0,8}[0-9]{0,21}") {
            if let Some(lsn) = parse_blob_file_name(&name) {
                prop_assert_eq!(blob_file_name(lsn), name);
            }
        }
    }

    // ----- Examples -----

    #[test]
    fn every_kind_round_trips_through_seal_and_decode() {
        let bodies: Vec<(FrameKind, Vec<u8>)> = vec![
            (FrameKind::Data, b"payload".to_vec()),
            (FrameKind::Data, Vec::new()),
            (FrameKind::Aborted, vec![9; 13]),
            (FrameKind::Padding, vec![1; 40]),
            (FrameKind::BatchStart, encode_batch_start(3, 99).to_vec()),
            (
                FrameKind::BlobPointer,
                BlobPointer {
                    blob_len_bytes: 7,
                    blob_crc32: 8,
                }
                .encode()
                .to_vec(),
            ),
            (
                FrameKind::BufferStart,
                encode_buffer_start(Lsn(77), TEST_SALT).to_vec(),
            ),
        ];
        for (kind, body) in bodies {
            let mut frame = vec![0xee; 24 + body.len()];
            frame[24..].copy_from_slice(&body);
            let lsn = Lsn(1000);
            seal_frame(&mut frame, kind, lsn, TEST_SALT);
            let decoded = decode_frame(&frame, lsn, 0, TEST_SALT).expect("sealed frame decodes");
            assert_eq!(
                decoded,
                Frame {
                    kind,
                    lsn,
                    offset_in_segment: 0,
                    body: &body
                },
                "{kind:?}"
            );
            assert_eq!(decoded.len_bytes(), frame.len() as u64);
            assert_eq!(decoded.end_lsn(), Lsn(1000 + frame.len() as u64));
            assert_eq!(FrameKind::from_byte(kind.as_byte()), Some(kind));
            // A frame at an offset: the same bytes placed after others.
            let mut segment = vec![0u8; 100];
            let at = segment.len();
            segment.extend_from_slice(&frame);
            seal_frame(&mut segment[at..], kind, Lsn(5000 + at as u64), TEST_SALT);
            assert_eq!(
                decode_frame(&segment, Lsn(5000), at as u64, TEST_SALT).map(|f| f.body),
                Ok(&body[..])
            );
        }
        assert_eq!(
            decode_buffer_start(&encode_buffer_start(Lsn(u64::MAX), TEST_SALT)),
            Ok(Lsn(u64::MAX))
        );
        assert_eq!(
            BatchStart::decode(&encode_batch_start(u32::MAX, u64::MAX)),
            Ok(BatchStart {
                n_frames: u32::MAX,
                batch_body_len_bytes: u64::MAX
            })
        );
        for byte in [0u8, 7, 255] {
            assert_eq!(FrameKind::from_byte(byte), None);
        }
    }

    #[test]
    fn padding_header_alone_equals_a_written_padding_frame() {
        for len in [24usize, 25, 100, 4000] {
            let mut frame = vec![0x5a; len];
            write_padding(&mut frame, Lsn(777), TEST_SALT);
            assert_eq!(
                padding_frame_header(Lsn(777), len as u64, TEST_SALT)[..],
                frame[..24]
            );
            let mut unwritten_body = vec![0u8; len];
            unwritten_body[..24].copy_from_slice(&padding_frame_header(
                Lsn(777),
                len as u64,
                TEST_SALT,
            ));
            let (got, end) = {
                let mut scanner = FrameScanner::new(&unwritten_body, Lsn(777), 0, TEST_SALT);
                (scanner.by_ref().count(), scanner.end())
            };
            assert_eq!((got, end), (1, Some(ScanEnd::Complete)));
        }
    }

    #[test]
    fn padding_and_aborted_checksums_ignore_the_body() {
        let mut frame = vec![0u8; 64];
        write_padding(&mut frame, Lsn(4096 + 4032), TEST_SALT);
        frame[30] ^= 0xff;
        let decoded = decode_frame(&frame, Lsn(4096), 0, TEST_SALT);
        assert_eq!(
            decoded,
            Err(FrameError::LsnMismatch {
                expected: Lsn(4096),
                found: Lsn(8128)
            })
        );
        assert_eq!(
            decode_frame(&frame, Lsn(8128), 0, TEST_SALT).map(|f| f.kind),
            Ok(FrameKind::Padding)
        );
        let mut aborted = vec![3u8; 50];
        seal_frame(&mut aborted, FrameKind::Aborted, Lsn(0), TEST_SALT);
        aborted[49] ^= 1;
        assert_eq!(
            decode_frame(&aborted, Lsn(0), 0, TEST_SALT).map(|f| f.kind),
            Ok(FrameKind::Aborted)
        );
        let mut data = vec![3u8; 50];
        seal_frame(&mut data, FrameKind::Data, Lsn(0), TEST_SALT);
        data[49] ^= 1;
        assert!(matches!(
            decode_frame(&data, Lsn(0), 0, TEST_SALT),
            Err(FrameError::BadChecksum { .. })
        ));
    }

    #[test]
    fn segment_header_errors_are_precise() {
        let good = SegmentHeader {
            segment_len_bytes: 4096,
            base_lsn: Lsn(8192),
            log_start_lsn: Lsn(100),
            salt: TEST_SALT,
        };
        let bytes = good.encode();
        let mut long = bytes.to_vec();
        long.extend_from_slice(&[1; 100]);
        assert_eq!(
            SegmentHeader::decode(&long),
            Ok(good),
            "trailing segment bytes are ignored"
        );
        assert_eq!(
            SegmentHeader::decode(&bytes[..47]),
            Err(FormatError::Truncated {
                needed_bytes: 48,
                available_bytes: 47
            })
        );
        assert_eq!(
            SegmentHeader::decode(&[0; 48]),
            Err(FormatError::BadMagic { found: [0; 4] })
        );
        let mut b = bytes;
        b[8] = 2;
        assert_eq!(
            SegmentHeader::decode(&b),
            Err(FormatError::UnsupportedVersion { found: 2 })
        );
        let mut b = bytes;
        b[30] ^= 4;
        assert!(matches!(
            SegmentHeader::decode(&b),
            Err(FormatError::BadChecksum { .. })
        ));

        // Well-checksummed headers with bad fields.
        let reseal = |mut b: [u8; 48]| {
            let crc = crc32fast::hash(&b[4..]);
            put_u32(&mut b, 0, crc);
            b
        };
        let mut b = bytes;
        b[12] = 1;
        assert_eq!(
            SegmentHeader::decode(&reseal(b)),
            Err(FormatError::ReservedNonZero {
                field: "segment_header.reserved_12"
            })
        );
        // Bytes 40..48 are the salt, not reserved: any value decodes.
        let mut b = bytes;
        b[47] = 1;
        let expected_salt = u64::from_le_bytes(b[40..48].try_into().unwrap());
        assert_eq!(
            SegmentHeader::decode(&reseal(b)).map(|header| header.salt),
            Ok(expected_salt)
        );
        for bad_len in [0u64, 3000, 32, 48, 1 << 33, u64::MAX] {
            let mut b = bytes;
            put_u64(&mut b, SH_SEGMENT_LEN, bad_len);
            put_u64(&mut b, SH_BASE_LSN, 0);
            assert_eq!(
                SegmentHeader::decode(&reseal(b)),
                Err(FormatError::BadSegmentLen {
                    segment_len_bytes: bad_len
                })
            );
        }
        let mut b = bytes;
        put_u64(&mut b, SH_BASE_LSN, 8192 + 48);
        assert_eq!(
            SegmentHeader::decode(&reseal(b)),
            Err(FormatError::MisalignedBaseLsn {
                base_lsn: Lsn(8240),
                segment_len_bytes: 4096
            })
        );
    }

    #[test]
    fn blob_header_and_value_checks() {
        let value = b"a large value".to_vec();
        let header = BlobHeader::for_value(Lsn(4242), &value);
        let pointer = BlobPointer::for_value(&value);
        assert!(header.matches_pointer(Lsn(4242), &pointer));
        assert!(!header.matches_pointer(Lsn(4243), &pointer));
        let mut file = header.encode().to_vec();
        file.extend_from_slice(&value);
        let decoded = BlobHeader::decode(&file).expect("header decodes");
        assert_eq!(decoded, header);
        assert_eq!(decoded.verify_value(&file[32..]), Ok(()));
        assert_eq!(pointer.verify_value(&file[32..]), Ok(()));
        assert_eq!(
            decoded.verify_value(&file[32..40]),
            Err(FormatError::ValueLenMismatch {
                expected_bytes: 13,
                found_bytes: 8
            })
        );
        let mut damaged = value.clone();
        damaged[0] ^= 1;
        assert!(matches!(
            pointer.verify_value(&damaged),
            Err(FormatError::ValueChecksumMismatch { .. })
        ));
        assert_eq!(
            BlobHeader::decode(&file[..31]),
            Err(FormatError::Truncated {
                needed_bytes: 32,
                available_bytes: 31
            })
        );
        assert_eq!(
            BlobHeader::decode(
                &SegmentHeader {
                    segment_len_bytes: 4096,
                    base_lsn: Lsn(0),
                    log_start_lsn: Lsn(0),
                    salt: TEST_SALT
                }
                .encode()
            ),
            Err(FormatError::BadMagic { found: *b"PLOG" })
        );
        let mut b = header.encode();
        b[20] ^= 1;
        assert!(matches!(
            BlobHeader::decode(&b),
            Err(FormatError::BadChecksum { .. })
        ));
        let mut body = pointer.encode();
        body[15] = 1;
        assert_eq!(
            BlobPointer::decode(&body),
            Err(FormatError::ReservedNonZero {
                field: "blob_pointer.reserved_12"
            })
        );
        assert_eq!(
            BlobPointer::decode(&body[..15]),
            Err(FormatError::BadBodyLen {
                expected_bytes: 16,
                found_bytes: 15
            })
        );
    }

    #[test]
    fn blob_file_names() {
        assert_eq!(blob_file_name(Lsn(42)), "blob-00000000000000000042");
        assert_eq!(blob_file_name(Lsn(u64::MAX)), "blob-18446744073709551615");
        assert_eq!(
            parse_blob_file_name("blob-00000000000000000042"),
            Some(Lsn(42))
        );
        for bad in [
            "blob-42",
            "blob-+0000000000000000042",
            "blob-000000000000000000042",
            "blob-18446744073709551616",
            "blob-0000000000000000004a",
            "blob-00000000000000000042.tmp",
            "blob_00000000000000000042",
            "",
        ] {
            assert_eq!(parse_blob_file_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn fixed_image_scans_exactly() {
        let image = fixed_image();
        let (got, end) = scan(&image.bytes, image.base_lsn);
        assert_eq!(got, image.frames);
        assert_eq!(end, ScanEnd::Complete);
        let kinds: Vec<FrameKind> = got.iter().map(|f| f.kind).collect();
        use FrameKind::*;
        assert_eq!(
            kinds,
            [
                BufferStart,
                Data,
                Aborted,
                Data,
                BatchStart,
                Data,
                BlobPointer,
                Data,
                BlobPointer,
                BatchStart,
                Data,
                Padding
            ]
        );
    }

    /// Every single-bit error anywhere in a segment image that holds every kind of frame.
    #[test]
    fn fixed_image_every_bit_flip() {
        let image = fixed_image();
        for bit_idx in 0..image.bytes.len() as u64 * 8 {
            check_bit_flip(&image, bit_idx).unwrap_or_else(|e| panic!("{e}"));
        }
    }

    #[test]
    fn fixed_image_every_truncation() {
        let image = fixed_image();
        check_truncations(&image, 0..=image.bytes.len() as u64).unwrap_or_else(|e| panic!("{e}"));
    }

    /// A reused segment still holding frames of its previous life yields nothing.
    #[test]
    fn stale_frames_from_an_earlier_base_lsn_are_invalid() {
        let image = fixed_image();
        for other_base in [
            Lsn(0),
            Lsn(image.base_lsn.0 + 4096),
            Lsn(image.base_lsn.0 + (1 << 40)),
        ] {
            let (got, end) = scan(&image.bytes, other_base);
            assert!(got.is_empty());
            assert_eq!(
                end,
                ScanEnd::Invalid {
                    offset_in_segment: SEGMENT_HEADER_LEN,
                    reason: FrameError::LsnMismatch {
                        expected: Lsn(other_base.0 + SEGMENT_HEADER_LEN),
                        found: Lsn(image.base_lsn.0 + SEGMENT_HEADER_LEN),
                    },
                }
            );
        }
    }

    #[test]
    fn zeroed_bytes_are_invalid() {
        let zeros = vec![0u8; SEGMENT_LEN];
        let (got, end) = scan(&zeros, Lsn(0));
        assert!(got.is_empty());
        assert_eq!(
            end,
            ScanEnd::Invalid {
                offset_in_segment: 48,
                reason: FrameError::BadKind(0)
            }
        );
        // Zeroes after valid frames: the scan stops where the writes stopped.
        let mut image = fixed_image();
        let cut = image.units[3].end as usize;
        image.bytes[cut..].fill(0);
        let (got, end) = scan(&image.bytes, image.base_lsn);
        assert_eq!(got, image.frames[..4]);
        assert_eq!(
            end,
            ScanEnd::Invalid {
                offset_in_segment: cut as u64,
                reason: FrameError::BadKind(0)
            }
        );
    }

    #[test]
    fn padding_must_end_the_segment() {
        let mut bytes = vec![0u8; 256];
        write_padding(&mut bytes[48..200], Lsn(1024 + 48), TEST_SALT);
        let (got, end) = scan(&bytes, Lsn(1024));
        assert!(got.is_empty());
        assert_eq!(
            end,
            ScanEnd::Invalid {
                offset_in_segment: 48,
                reason: FrameError::PaddingNotAtEnd {
                    end_offset: 200,
                    segment_len_bytes: 256
                },
            }
        );
        // Padding as the very first frame, filling the segment: complete and empty.
        write_padding(&mut bytes[48..], Lsn(1024 + 48), TEST_SALT);
        let (got, end) = scan(&bytes, Lsn(1024));
        assert_eq!(got.len(), 1);
        assert_eq!(end, ScanEnd::Complete);
    }

    fn batch_segment(n_frames: u32, declared: u64, inner: &[(FrameKind, &[u8])]) -> Vec<u8> {
        let mut bytes = vec![0u8; 512];
        let mut at = 48usize;
        write_frame(
            &mut bytes[at..at + 40],
            FrameKind::BatchStart,
            Lsn(at as u64),
            &encode_batch_start(n_frames, declared),
            TEST_SALT,
        );
        at += 40;
        for (kind, body) in inner {
            let end = at + 24 + body.len();
            write_frame(&mut bytes[at..end], *kind, Lsn(at as u64), body, TEST_SALT);
            at = end;
        }
        write_padding(&mut bytes[at..], Lsn(at as u64), TEST_SALT);
        bytes
    }

    fn batch_failure(bytes: &[u8]) -> FrameError {
        let (got, end) = scan(bytes, Lsn(0));
        assert!(got.is_empty(), "nothing of a bad batch is yielded: {got:?}");
        match end {
            ScanEnd::Invalid {
                offset_in_segment: 48,
                reason: FrameError::BatchIncomplete { cause, .. },
            } => *cause,
            other => panic!("expected an incomplete batch at 48, got {other:?}"),
        }
    }

    #[test]
    fn batches_are_all_or_nothing() {
        let ok = batch_segment(
            2,
            24 + 3 + 24 + 40 - 24,
            &[
                (FrameKind::Data, b"abc"),
                (
                    FrameKind::BlobPointer,
                    &BlobPointer::for_value(b"v").encode(),
                ),
            ],
        );
        let (got, end) = scan(&ok, Lsn(0));
        assert_eq!(
            got.iter().map(|f| f.kind).collect::<Vec<_>>(),
            [
                FrameKind::BatchStart,
                FrameKind::Data,
                FrameKind::BlobPointer,
                FrameKind::Padding
            ]
        );
        assert_eq!(end, ScanEnd::Complete);

        // Declares more frames than follow: the padding after it is not allowed in a batch.
        let more = batch_segment(2, 27, &[(FrameKind::Data, b"abc")]);
        assert_eq!(
            batch_failure(&more),
            FrameError::NotAllowedInBatch {
                kind: FrameKind::Padding
            }
        );
        // Declares more bytes than its frames cover.
        let longer = batch_segment(1, 28, &[(FrameKind::Data, b"abc")]);
        assert_eq!(
            batch_failure(&longer),
            FrameError::BatchLenMismatch {
                declared_bytes: 28,
                found_bytes: 27
            }
        );
        // Declares fewer bytes than its frames cover.
        let shorter = batch_segment(1, 26, &[(FrameKind::Data, b"abc")]);
        assert_eq!(
            batch_failure(&shorter),
            FrameError::BatchLenMismatch {
                declared_bytes: 26,
                found_bytes: 27
            }
        );
        // Control frames may not nest inside a batch.
        for kind in [
            FrameKind::BufferStart,
            FrameKind::BatchStart,
            FrameKind::Aborted,
        ] {
            let body: &[u8] = match kind {
                FrameKind::BufferStart => &[0; 16],
                FrameKind::BatchStart => &[0; 16],
                _ => &[1, 2],
            };
            let nested = batch_segment(1, 24 + body.len() as u64, &[(kind, body)]);
            assert_eq!(
                batch_failure(&nested),
                FrameError::NotAllowedInBatch { kind }
            );
        }
        // A damaged member invalidates the whole batch, BatchStart included.
        let mut damaged = ok.clone();
        damaged[48 + 40 + 24] ^= 1;
        assert!(matches!(
            batch_failure(&damaged),
            FrameError::BadChecksum { .. }
        ));
        // A torn batch: the segment bytes end inside it.
        assert!(matches!(
            batch_failure(&ok[..48 + 40 + 24 + 3 + 30]),
            FrameError::BodyTooLong { .. }
        ));
        // An enormous frame count with a small declared length stops at the first mismatch.
        let huge = batch_segment(u32::MAX, 27, &[(FrameKind::Data, b"abc")]);
        assert_eq!(
            batch_failure(&huge),
            FrameError::NotAllowedInBatch {
                kind: FrameKind::Padding
            }
        );
    }

    #[test]
    fn frame_header_errors_are_precise() {
        let mut frame = vec![0u8; 24 + 16];
        write_frame(
            &mut frame,
            FrameKind::BufferStart,
            Lsn(64),
            &encode_buffer_start(Lsn(3), TEST_SALT),
            TEST_SALT,
        );
        assert_eq!(
            decode_frame(&frame, Lsn(64), 0, TEST_SALT).map(|f| decode_buffer_start(f.body)),
            Ok(Ok(Lsn(3)))
        );
        assert_eq!(
            decode_frame(&frame[..23], Lsn(64), 0, TEST_SALT),
            Err(FrameError::Truncated {
                available_bytes: 23
            })
        );
        assert_eq!(
            decode_frame(&frame, Lsn(64), 41, TEST_SALT),
            Err(FrameError::OffsetPastEnd {
                offset_in_segment: 41,
                segment_len_bytes: 40
            })
        );
        assert_eq!(
            decode_frame(&frame, Lsn(64), u64::MAX, TEST_SALT),
            Err(FrameError::OffsetPastEnd {
                offset_in_segment: u64::MAX,
                segment_len_bytes: 40
            })
        );
        assert_eq!(
            decode_frame(&frame[..39], Lsn(64), 0, TEST_SALT),
            Err(FrameError::BodyTooLong {
                body_len_bytes: 16,
                available_bytes: 15
            })
        );
        let mut b = frame.clone();
        b[6] = 1;
        assert_eq!(
            decode_frame(&b, Lsn(64), 0, TEST_SALT),
            Err(FrameError::ReservedNonZero {
                field: "frame_header.reserved_5"
            })
        );
        let mut b = frame.clone();
        b[13] = 1;
        assert_eq!(
            decode_frame(&b, Lsn(64), 0, TEST_SALT),
            Err(FrameError::ReservedNonZero {
                field: "frame_header.reserved_12"
            })
        );
        let mut b = frame.clone();
        b[4] = 9;
        assert_eq!(
            decode_frame(&b, Lsn(64), 0, TEST_SALT),
            Err(FrameError::BadKind(9))
        );
        assert_eq!(
            FrameHeader::decode_unverified(&frame),
            Ok(FrameHeader {
                kind: FrameKind::BufferStart,
                body_len_bytes: 16,
                lsn: Lsn(64)
            })
        );

        // LSN arithmetic at the top of the space.
        let mut top = vec![0u8; 24 + 16];
        write_frame(
            &mut top,
            FrameKind::BufferStart,
            Lsn(u64::MAX - 10),
            &[0; 16],
            TEST_SALT,
        );
        assert_eq!(
            decode_frame(&top, Lsn(u64::MAX - 10), 0, TEST_SALT),
            Err(FrameError::LsnOverflow {
                base_lsn: Lsn(u64::MAX - 10),
                offset_in_segment: 0
            })
        );
        let mut shifted = vec![0u8; 1];
        shifted.extend_from_slice(&top);
        assert_eq!(
            decode_frame(&shifted, Lsn(u64::MAX), 1, TEST_SALT),
            Err(FrameError::LsnOverflow {
                base_lsn: Lsn(u64::MAX),
                offset_in_segment: 1
            })
        );

        // Well-checksummed control frames with malformed bodies: a writer bug, reported as such.
        let mut short = vec![0u8; 24 + 4];
        short[4] = FrameKind::BufferStart.as_byte();
        put_u32(&mut short, FH_BODY_LEN, 4);
        let crc = frame_crc(
            &short[..24],
            &short[24..],
            FrameKind::BufferStart,
            TEST_SALT,
        );
        put_u32(&mut short, FH_CRC, crc);
        assert_eq!(
            decode_frame(&short, Lsn(0), 0, TEST_SALT),
            Err(FrameError::BadBody {
                kind: FrameKind::BufferStart,
                cause: FormatError::BadBodyLen {
                    expected_bytes: 16,
                    found_bytes: 4
                },
            })
        );
        let mut body = encode_batch_start(1, 24);
        body[5] = 1;
        let mut bad_batch = vec![0u8; 40];
        write_frame(
            &mut bad_batch,
            FrameKind::BatchStart,
            Lsn(0),
            &[0; 16],
            TEST_SALT,
        );
        bad_batch[24..].copy_from_slice(&body);
        let crc = frame_crc(
            &bad_batch[..24],
            &bad_batch[24..],
            FrameKind::BatchStart,
            TEST_SALT,
        );
        put_u32(&mut bad_batch, FH_CRC, crc);
        assert_eq!(
            decode_frame(&bad_batch, Lsn(0), 0, TEST_SALT),
            Err(FrameError::BadBody {
                kind: FrameKind::BatchStart,
                cause: FormatError::ReservedNonZero {
                    field: "batch_start.reserved_4"
                },
            })
        );
    }

    #[test]
    fn short_remainders_complete_the_segment() {
        for left in 0..24usize {
            let mut bytes = vec![0xcc; 256];
            let body_len = 256 - 48 - 24 - left;
            let lsn = Lsn(256 * 9 + 48);
            seal_frame(
                &mut bytes[48..48 + 24 + body_len],
                FrameKind::Data,
                lsn,
                TEST_SALT,
            );
            let (got, end) = scan(&bytes, Lsn(256 * 9));
            assert_eq!(got.len(), 1);
            assert_eq!(end, ScanEnd::Complete, "{left} bytes left");
        }
        // Starting past the end is the caller's mistake, reported, not a panic.
        let mut scanner = FrameScanner::new(&[0u8; 10], Lsn(0), 48, TEST_SALT);
        assert_eq!(scanner.next(), None);
        assert!(matches!(
            scanner.end(),
            Some(ScanEnd::Invalid {
                reason: FrameError::OffsetPastEnd { .. },
                ..
            })
        ));
        assert_eq!(scanner.next_offset_in_segment(), 48);
    }

    /// A frame from an earlier incarnation of the same logical segment (same base LSN, same
    /// position, another salt) never verifies: this is what makes re-using a base LSN after a
    /// crash safe even where the old segment's header was torn and could not be erased.
    #[test]
    fn a_frame_under_another_salt_never_verifies() {
        let mut segment = vec![0u8; 256];
        let at = SEGMENT_HEADER_LEN_USIZE;
        write_frame(
            &mut segment[at..at + 29],
            FrameKind::Data,
            Lsn(4096 + at as u64),
            b"hello",
            TEST_SALT,
        );
        assert!(decode_frame(&segment, Lsn(4096), at as u64, TEST_SALT).is_ok());
        assert!(matches!(
            decode_frame(&segment, Lsn(4096), at as u64, TEST_SALT ^ 1),
            Err(FrameError::BadChecksum { .. })
        ));
        let mut scanner =
            FrameScanner::new(&segment, Lsn(4096), at as u64, TEST_SALT.rotate_left(7));
        assert_eq!(scanner.next(), None);
        assert!(matches!(scanner.end(), Some(ScanEnd::Invalid { .. })));
    }
}
