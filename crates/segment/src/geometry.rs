//! Segment geometry: the segment length and the conversions between LSNs, segment ids and file
//! offsets.
//!
//! The LSN space is cut into *logical* segments of `segment_len_bytes`; logical segment `k`
//! covers LSNs `[k * len, (k + 1) * len)` and is stored in some physical segment `s`, at file
//! offsets `[s * len, (s + 1) * len)`, so that `lsn % len == file_offset % len`.

use crate::error::SegmentError;
use crate::ids::{Lsn, SegmentId};

/// The smallest segment length accepted. Tests use tiny segments so that segment rolls and
/// cleaning happen thousands of times per test.
pub const MIN_SEGMENT_LEN_BYTES: u64 = 256;

/// The largest segment length accepted.
pub const MAX_SEGMENT_LEN_BYTES: u64 = 1 << 30;

/// The validated segment length and the conversions that depend on it.
///
/// Invariant: `segment_len_bytes` is a power of two within
/// [`MIN_SEGMENT_LEN_BYTES`]`..=`[`MAX_SEGMENT_LEN_BYTES`], so every conversion is a shift or a
/// mask and never divides by zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Geometry {
    segment_len_bytes: u64,
    /// `log2(segment_len_bytes)`, cached so conversions are shifts.
    len_shift: u32,
}

impl Geometry {
    /// Validates `segment_len_bytes`: it must be a power of two within the bounds.
    ///
    /// # Errors
    ///
    /// [`SegmentError::BadSegmentLength`] otherwise.
    pub fn new(segment_len_bytes: u64) -> Result<Geometry, SegmentError> {
        let in_bounds =
            (MIN_SEGMENT_LEN_BYTES..=MAX_SEGMENT_LEN_BYTES).contains(&segment_len_bytes);
        if !in_bounds || !segment_len_bytes.is_power_of_two() {
            return Err(SegmentError::BadSegmentLength { segment_len_bytes });
        }
        Ok(Geometry {
            segment_len_bytes,
            len_shift: segment_len_bytes.trailing_zeros(),
        })
    }

    /// The length of every segment, in bytes.
    pub fn segment_len_bytes(self) -> u64 {
        self.segment_len_bytes
    }

    /// The file offset at which the physical segment starts.
    ///
    /// Saturates at `u64::MAX` for ids no real file can hold rather than wrapping around to
    /// an offset that belongs to another segment.
    pub fn file_offset(self, segment: SegmentId) -> u64 {
        segment
            .0
            .checked_shl(self.len_shift)
            .filter(|o| o >> self.len_shift == segment.0)
            .unwrap_or(u64::MAX)
    }

    /// The physical segment containing `file_offset`.
    pub fn segment_at(self, file_offset: u64) -> SegmentId {
        SegmentId(file_offset >> self.len_shift)
    }

    /// `lsn` rounded down to a multiple of the segment length: the first LSN of its logical
    /// segment.
    pub fn segment_base_lsn(self, lsn: Lsn) -> Lsn {
        Lsn(lsn.0 & !(self.segment_len_bytes - 1))
    }

    /// `lsn % segment_len_bytes`: where in its segment (logical or physical) `lsn` lies.
    pub fn offset_in_segment(self, lsn: Lsn) -> u64 {
        lsn.0 & (self.segment_len_bytes - 1)
    }

    /// Whether `lsn` is the first LSN of a logical segment.
    pub fn is_segment_aligned(self, lsn: Lsn) -> bool {
        self.offset_in_segment(lsn) == 0
    }

    /// The file offset at which the byte with LSN `lsn` lives, given that its logical segment is
    /// stored in physical segment `segment`.
    pub fn lsn_to_file_offset(self, segment: SegmentId, lsn: Lsn) -> u64 {
        self.file_offset(segment)
            .saturating_add(self.offset_in_segment(lsn))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_lengths() {
        for bad in [
            0,
            1,
            255,
            257,
            384,
            3 << 20,
            MAX_SEGMENT_LEN_BYTES * 2,
            u64::MAX,
        ] {
            assert_eq!(
                Geometry::new(bad),
                Err(SegmentError::BadSegmentLength {
                    segment_len_bytes: bad
                }),
                "{bad}"
            );
        }
        assert!(Geometry::new(MIN_SEGMENT_LEN_BYTES).is_ok());
        assert!(Geometry::new(MAX_SEGMENT_LEN_BYTES).is_ok());
    }

    #[test]
    fn conversions_agree() {
        let g = Geometry::new(4096).unwrap();
        assert_eq!(g.segment_len_bytes(), 4096);
        assert_eq!(g.file_offset(SegmentId(3)), 3 * 4096);
        assert_eq!(g.segment_at(3 * 4096), SegmentId(3));
        assert_eq!(g.segment_at(3 * 4096 + 4095), SegmentId(3));
        assert_eq!(g.segment_at(4 * 4096), SegmentId(4));
        assert_eq!(g.segment_base_lsn(Lsn(10_000)), Lsn(8192));
        assert_eq!(g.offset_in_segment(Lsn(10_000)), 10_000 - 8192);
        assert!(g.is_segment_aligned(Lsn(8192)));
        assert!(!g.is_segment_aligned(Lsn(8193)));
        let off = g.lsn_to_file_offset(SegmentId(5), Lsn(10_000));
        assert_eq!(off % 4096, 10_000 % 4096);
        assert_eq!(g.segment_at(off), SegmentId(5));
        assert_eq!(g.file_offset(SegmentId(u64::MAX)), u64::MAX);
    }
}
