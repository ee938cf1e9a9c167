//! A fragment's disk location as a page's chain keeps it: 16 bytes instead of the 32 of
//! [`iobuf::Location`].
//!
//! Every live page's entry holds its chain's locations in place (up to seven at the default
//! consolidation length), so their size is most of an entry's. `bench_pages`' mixed workload
//! over 100 000 pages is bound by the latency of memory, and with 32-byte locations its pages
//! took about 40 MiB (an 8-byte slot, a 304-byte entry and a value each), more than the 32 MiB
//! of the machine's last-level cache; with these, about 30 MiB.
//!
//! What is dropped is what the segment geometry already knows: segments are a power of two
//! long, and a frame's file offset agrees with its LSN below the segment length (see
//! [`Geometry`]), so the file offset is the physical segment plus the LSN's offset in it.
//! The length keeps 31 bits and the storage kind the last one.

use iobuf::{Geometry, Location, Lsn, SegmentId, Stored};

use crate::error::Error;

/// Marks a location whose message is stored in a blob file.
const BLOB_FLAG: u32 = 1 << 31;

/// The longest record (a 9-byte header and the fragment's encoding) a page can hold: a page's
/// chain keeps each record's length in 31 bits. A longer one is
/// [`crate::Error::RecordTooLarge`], and nothing is written. The merged base that a
/// consolidation or the cleaner writes is a record too, so a page's merged value, encoded,
/// must stay below the limit: a link whose consolidation would pass it fails, and the cleaner
/// cannot move such a page (its record stays pending, each later write's share of cleaning
/// tries it again and fails, with the error in [`crate::PageCache::background_error`], and
/// cleaning gets no further).
pub const MAX_RECORD_LEN_BYTES: u64 = (BLOB_FLAG - 1) as u64;

/// A [`Location`] for a page's chain (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PackedLocation {
    lsn: Lsn,
    /// The physical segment the frame is in.
    segment: u32,
    /// The message's length (low 31 bits) and [`BLOB_FLAG`].
    len_and_storage: u32,
}

/// Why a [`Location`] has no [`PackedLocation`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Unpackable {
    /// The message is longer than [`MAX_RECORD_LEN_BYTES`].
    TooLong { len_bytes: u64 },
    /// The frame lies in a segment whose number does not fit 32 bits.
    SegmentBeyondLimit { segment: u64 },
    /// The file offset does not agree with the LSN below the segment length (only a
    /// location read from a damaged file can be like this).
    OffsetDisagrees { lsn: Lsn, file_offset: u64 },
    /// The LSN is `u64::MAX`, which an entry's oldest LSN uses to mark a freed page (only a
    /// location read from a damaged file can have it: no frame starts there).
    LsnAtLimit,
}

impl Unpackable {
    /// The error of a write whose new record has this location.
    pub(crate) fn into_write_error(self) -> Error {
        match self {
            Unpackable::TooLong { len_bytes } => Error::RecordTooLarge {
                len_bytes,
                max_len_bytes: MAX_RECORD_LEN_BYTES,
            },
            Unpackable::SegmentBeyondLimit { segment } => Error::DataFileTooLarge { segment },
            // A location handed out by the log agrees with its LSN by construction, and no
            // frame starts at the last LSN there is.
            Unpackable::OffsetDisagrees { .. } | Unpackable::LsnAtLimit => {
                unreachable!("the log handed out a location no frame can have")
            }
        }
    }
}

impl std::fmt::Display for Unpackable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unpackable::TooLong { len_bytes } => write!(
                f,
                "a location of a {len_bytes}-byte message, longer than the \
                 {MAX_RECORD_LEN_BYTES} bytes a page's chain can hold"
            ),
            Unpackable::SegmentBeyondLimit { segment } => write!(
                f,
                "a location in segment {segment}, beyond the 2^32 segments a page's chain \
                 can address"
            ),
            Unpackable::OffsetDisagrees { lsn, file_offset } => write!(
                f,
                "a location at file offset {file_offset}, which does not agree with its lsn \
                 {} below the segment length",
                lsn.0
            ),
            Unpackable::LsnAtLimit => {
                write!(f, "a location at lsn u64::MAX, where no frame starts")
            }
        }
    }
}

impl PackedLocation {
    /// Fills slots that do not hold a location yet.
    pub(crate) const PLACEHOLDER: PackedLocation = PackedLocation {
        lsn: Lsn(0),
        segment: 0,
        len_and_storage: 0,
    };

    /// `location` in 16 bytes, for a log of `geometry`.
    pub(crate) fn pack(location: Location, geometry: Geometry) -> Result<Self, Unpackable> {
        if location.lsn == Lsn(u64::MAX) {
            return Err(Unpackable::LsnAtLimit);
        }
        if geometry.offset_in_segment(Lsn(location.file_offset))
            != geometry.offset_in_segment(location.lsn)
        {
            return Err(Unpackable::OffsetDisagrees {
                lsn: location.lsn,
                file_offset: location.file_offset,
            });
        }
        let segment = geometry.segment_at(location.file_offset).0;
        let segment =
            u32::try_from(segment).map_err(|_| Unpackable::SegmentBeyondLimit { segment })?;
        if location.len_bytes > MAX_RECORD_LEN_BYTES {
            return Err(Unpackable::TooLong {
                len_bytes: location.len_bytes,
            });
        }
        let storage = match location.stored {
            Stored::Inline => 0,
            Stored::Blob => BLOB_FLAG,
        };
        Ok(PackedLocation {
            lsn: location.lsn,
            segment,
            // Below `BLOB_FLAG`, checked above.
            len_and_storage: location.len_bytes as u32 | storage,
        })
    }

    /// The whole location again, for a log of `geometry` (the one it was packed for).
    pub(crate) fn unpack(self, geometry: Geometry) -> Location {
        let segment_start = geometry.file_offset(SegmentId(u64::from(self.segment)));
        Location {
            lsn: self.lsn,
            file_offset: segment_start + geometry.offset_in_segment(self.lsn),
            len_bytes: u64::from(self.len_and_storage & !BLOB_FLAG),
            stored: self.stored(),
        }
    }

    /// The message's LSN.
    pub(crate) fn lsn(self) -> Lsn {
        self.lsn
    }

    fn stored(self) -> Stored {
        if self.len_and_storage & BLOB_FLAG == 0 {
            Stored::Inline
        } else {
            Stored::Blob
        }
    }

    /// Bytes the message's frame takes in the data file.
    pub(crate) fn frame_len_bytes(self) -> u64 {
        // No geometry is needed for the length; the file offset is left out.
        Location {
            lsn: self.lsn,
            file_offset: 0,
            len_bytes: u64::from(self.len_and_storage & !BLOB_FLAG),
            stored: self.stored(),
        }
        .frame_len_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geometry() -> Geometry {
        Geometry::new(4096).expect("a power of two in bounds")
    }

    fn location(lsn: u64, segment: u64, len_bytes: u64, stored: Stored) -> Location {
        Location {
            lsn: Lsn(lsn),
            file_offset: segment * 4096 + lsn % 4096,
            len_bytes,
            stored,
        }
    }

    #[test]
    fn a_packed_location_unpacks_to_the_same_location() {
        let cases = [
            location(0, 0, 0, Stored::Inline),
            location(4096 * 7 + 100, 3, 100, Stored::Inline),
            location(4096 * 9 + 4095, 1, MAX_RECORD_LEN_BYTES, Stored::Blob),
            location(u64::MAX - 4096, u64::from(u32::MAX), 1 << 20, Stored::Blob),
        ];
        for original in cases {
            let packed = PackedLocation::pack(original, geometry()).expect("packable");
            assert_eq!(packed.unpack(geometry()), original);
            assert_eq!(packed.lsn(), original.lsn);
            assert_eq!(packed.frame_len_bytes(), original.frame_len_bytes());
        }
        assert_eq!(size_of::<PackedLocation>(), 16);
    }

    #[test]
    fn packing_follows_the_geometry_from_the_smallest_segments_to_the_largest() {
        for segment_len in [
            segment::MIN_SEGMENT_LEN_BYTES,
            1 << 20,
            segment::MAX_SEGMENT_LEN_BYTES,
        ] {
            let geometry = Geometry::new(segment_len).expect("a valid segment length");
            for (lsn, segment) in [
                (segment_len * 5 + 17, 2u64),
                (segment_len - 1, 0),
                (segment_len * 3, u64::from(u32::MAX)),
            ] {
                let original = Location {
                    lsn: Lsn(lsn),
                    file_offset: segment * segment_len + lsn % segment_len,
                    len_bytes: 60,
                    stored: Stored::Inline,
                };
                let packed = PackedLocation::pack(original, geometry).expect("packable");
                assert_eq!(
                    packed.unpack(geometry),
                    original,
                    "segment length {segment_len}"
                );
            }
        }
    }

    #[test]
    fn a_location_a_chain_cannot_hold_is_a_typed_refusal() {
        let too_long = location(100, 0, MAX_RECORD_LEN_BYTES + 1, Stored::Blob);
        assert_eq!(
            PackedLocation::pack(too_long, geometry()),
            Err(Unpackable::TooLong {
                len_bytes: MAX_RECORD_LEN_BYTES + 1
            })
        );
        let far = location(100, 1 << 32, 10, Stored::Inline);
        assert_eq!(
            PackedLocation::pack(far, geometry()),
            Err(Unpackable::SegmentBeyondLimit { segment: 1 << 32 })
        );
        let mut at_limit = location(100, 2, 10, Stored::Inline);
        at_limit.lsn = Lsn(u64::MAX);
        at_limit.file_offset = 2 * 4096 + u64::MAX % 4096;
        assert_eq!(
            PackedLocation::pack(at_limit, geometry()),
            Err(Unpackable::LsnAtLimit)
        );
        let mut disagreeing = location(100, 2, 10, Stored::Inline);
        disagreeing.file_offset += 1;
        assert!(matches!(
            PackedLocation::pack(disagreeing, geometry()),
            Err(Unpackable::OffsetDisagrees { .. })
        ));
        assert!(matches!(
            Unpackable::TooLong { len_bytes: 1 << 31 }.into_write_error(),
            Error::RecordTooLarge { .. }
        ));
        assert!(matches!(
            Unpackable::SegmentBeyondLimit { segment: 1 << 32 }.into_write_error(),
            Error::DataFileTooLarge { .. }
        ));
    }
}
