//! The [`Header`] value type and its transitions.
//!
//! Every transition is a pure function from one word to the next; the caller publishes the
//! result with a compare-and-swap against the word it started from. A transition that would
//! push a field past its limit returns `None` (or a [`ReserveRefusal`]) instead of wrapping
//! into the neighbouring field.

use core::fmt;

use crate::layout::{
    MAX_OFFSET, MAX_SALT, MAX_WRITERS, OFFSET_MASK, OFFSET_SHIFT, SALT_MASK, SALT_SHIFT,
    SEALED_MASK, WRITERS_MASK, WRITERS_SHIFT,
};

/// One value of an IO buffer's 64-bit header word.
///
/// A plain `Copy` value: load it from the buffer's `AtomicU64` with [`Header::from_raw`],
/// compute the next value with one of the transitions, and publish it with
/// `compare_exchange(old.to_raw(), new.to_raw(), ..)`. Every `u64` is a valid header.
///
/// See the [crate documentation](crate) for the bit layout and the reservation handshake.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Header(u64);

/// Why [`Header::try_reserve`] refused to claim a range.
///
/// Each reason asks the log for a different reaction, which is why this is not a bare
/// `Option`. The enum is deliberately exhaustive: a new reason would need a new reaction, so
/// adding one should break every `match` on it rather than fall into a wildcard arm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReserveRefusal {
    /// The buffer is sealed: it takes no more bytes in this generation. Move on to the
    /// next buffer.
    Sealed,
    /// The range would end past the buffer's capacity (or past [`MAX_OFFSET`]). Seal this
    /// buffer and roll to the next one.
    DoesNotFit,
    /// [`MAX_WRITERS`] writers already hold reservations in this buffer. Back off and retry;
    /// a writer completing frees a slot.
    TooManyWriters,
}

impl fmt::Display for ReserveRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReserveRefusal::Sealed => "the IO buffer is sealed",
            ReserveRefusal::DoesNotFit => "the reservation does not fit in the IO buffer",
            ReserveRefusal::TooManyWriters => {
                "the IO buffer already has the maximum number of writers"
            }
        })
    }
}

impl core::error::Error for ReserveRefusal {}

impl Header {
    /// The all-zero word: offset 0, no writers, unsealed, salt 0. The state of a fresh buffer.
    pub const INITIAL: Header = Header(0);

    /// Reinterprets a raw word, as loaded from an `AtomicU64`. Every `u64` is a valid header
    /// because the four fields cover all 64 bits.
    #[must_use]
    pub const fn from_raw(raw: u64) -> Header {
        Header(raw)
    }

    /// The raw word, to store into or compare against an `AtomicU64`.
    #[must_use]
    pub const fn to_raw(self) -> u64 {
        self.0
    }

    /// Builds a header from its four fields, or `None` if one of them exceeds its limit
    /// ([`MAX_OFFSET`], [`MAX_WRITERS`], [`MAX_SALT`]).
    #[must_use]
    pub const fn from_parts(
        offset: u32,
        n_writers: u32,
        sealed: bool,
        salt: u32,
    ) -> Option<Header> {
        if offset > MAX_OFFSET || n_writers > MAX_WRITERS || salt > MAX_SALT {
            return None;
        }
        let sealed_bits = if sealed { SEALED_MASK } else { 0 };
        Some(Header(
            ((offset as u64) << OFFSET_SHIFT)
                | ((n_writers as u64) << WRITERS_SHIFT)
                | sealed_bits
                | ((salt as u64) << SALT_SHIFT),
        ))
    }

    /// Bytes claimed so far in this generation of the buffer: the next reservation starts here.
    #[must_use]
    pub const fn offset(self) -> u32 {
        // The mask leaves at most `OFFSET_BITS` (< 32) bits, so the cast is lossless.
        ((self.0 & OFFSET_MASK) >> OFFSET_SHIFT) as u32
    }

    /// Number of writers holding a reservation that is not yet completed or aborted.
    #[must_use]
    pub const fn n_writers(self) -> u32 {
        ((self.0 & WRITERS_MASK) >> WRITERS_SHIFT) as u32
    }

    /// Whether the buffer is sealed: it accepts no more reservations in this generation.
    #[must_use]
    pub const fn is_sealed(self) -> bool {
        self.0 & SEALED_MASK != 0
    }

    /// The generation number of the buffer, modulo `MAX_SALT + 1`.
    #[must_use]
    pub const fn salt(self) -> u32 {
        ((self.0 & SALT_MASK) >> SALT_SHIFT) as u32
    }

    /// Sealed with no writers left: every reservation is complete, so the buffer may be
    /// written out. Exactly one thread should act on this; see the crate documentation.
    #[must_use]
    pub const fn is_sealed_and_idle(self) -> bool {
        self.is_sealed() && self.n_writers() == 0
    }

    /// Adds `by_bytes` to the offset, touching no other field.
    ///
    /// Returns `None` if the result would exceed [`MAX_OFFSET`], **or if the header is
    /// sealed**. The log never grows a sealed buffer; refusing here is a safety net so that
    /// `h.bump_offset(len).and_then(Header::add_writer)` can never put a writer into a buffer
    /// that another thread may already be writing out. `by_bytes == 0` on an unsealed header
    /// returns the header unchanged.
    #[must_use]
    pub const fn bump_offset(self, by_bytes: u32) -> Option<Header> {
        if self.is_sealed() {
            return None;
        }
        // Summed in u64 so that a huge `by_bytes` is refused instead of overflowing.
        let new_offset = self.offset() as u64 + by_bytes as u64;
        if new_offset > MAX_OFFSET as u64 {
            return None;
        }
        Some(Header(
            (self.0 & !OFFSET_MASK) | (new_offset << OFFSET_SHIFT),
        ))
    }

    /// Adds one writer, touching no other field. `None` if [`MAX_WRITERS`] are already active.
    ///
    /// This is the bare counter step and does not look at the sealed flag; the reservation
    /// path should use [`Header::try_reserve`] (or `bump_offset` first), which refuses a
    /// sealed buffer.
    #[must_use]
    pub const fn add_writer(self) -> Option<Header> {
        if self.n_writers() >= MAX_WRITERS {
            return None;
        }
        Some(Header(self.0 + (1 << WRITERS_SHIFT)))
    }

    /// Removes one writer (a reservation was completed or aborted), touching no other field.
    /// `None` if there are no writers. Allowed on a sealed header: that is how the last
    /// writer of a sealed buffer brings it to [`is_sealed_and_idle`](Header::is_sealed_and_idle).
    #[must_use]
    pub const fn remove_writer(self) -> Option<Header> {
        if self.n_writers() == 0 {
            return None;
        }
        Some(Header(self.0 - (1 << WRITERS_SHIFT)))
    }

    /// Sets the sealed flag, touching no other field. Idempotent.
    ///
    /// Because sealing a sealed header returns the same word, a CAS with it always
    /// "succeeds" and proves nothing. A thread that needs to know whether *it* sealed the
    /// buffer (and so whether it is responsible for writing an idle buffer) should use
    /// [`Header::try_seal`].
    #[must_use]
    pub const fn seal(self) -> Header {
        Header(self.0 | SEALED_MASK)
    }

    /// Seals an unsealed header; `None` if it is already sealed.
    ///
    /// After a successful CAS with the result, the caller is the one thread that sealed this
    /// generation; if the result [`is_sealed_and_idle`](Header::is_sealed_and_idle), it must
    /// write the buffer out.
    #[must_use]
    pub const fn try_seal(self) -> Option<Header> {
        if self.is_sealed() {
            return None;
        }
        Some(self.seal())
    }

    /// The header of the buffer's next use: salt + 1 (wrapping to 0 after [`MAX_SALT`]),
    /// offset 0, no writers, unsealed.
    ///
    /// The result always differs from `self`, because the salt always changes, so a CAS
    /// prepared against any header of the previous generation fails.
    #[must_use]
    pub const fn next_generation(self) -> Header {
        let next_salt = if self.salt() == MAX_SALT {
            0
        } else {
            self.salt() + 1
        };
        Header((next_salt as u64) << SALT_SHIFT)
    }

    /// Like [`Header::next_generation`], but `None` when the salt would wrap from
    /// [`MAX_SALT`] to 0 (for callers that would rather fail than shorten the ABA window).
    #[must_use]
    pub const fn checked_next_generation(self) -> Option<Header> {
        if self.salt() == MAX_SALT {
            return None;
        }
        Some(self.next_generation())
    }

    /// The reservation step in one transition: claims `len_bytes` starting at
    /// [`offset`](Header::offset) and adds one writer.
    ///
    /// The range fits when `offset + len_bytes <= min(capacity_bytes, MAX_OFFSET)`. Checks
    /// run in this order, so the reason names the most useful reaction:
    /// [`Sealed`](ReserveRefusal::Sealed), then [`DoesNotFit`](ReserveRefusal::DoesNotFit),
    /// then [`TooManyWriters`](ReserveRefusal::TooManyWriters). On success the claimed range
    /// is `self.offset() .. self.offset() + len_bytes`, and only the offset and the writer
    /// count differ from `self`. A zero-length reservation is allowed (it only adds a writer).
    pub const fn try_reserve(
        self,
        len_bytes: u32,
        capacity_bytes: u32,
    ) -> Result<Header, ReserveRefusal> {
        if self.is_sealed() {
            return Err(ReserveRefusal::Sealed);
        }
        let end_bytes = self.offset() as u64 + len_bytes as u64;
        if end_bytes > capacity_bytes as u64 {
            return Err(ReserveRefusal::DoesNotFit);
        }
        let Some(bumped) = self.bump_offset(len_bytes) else {
            // Only reachable when `capacity_bytes > MAX_OFFSET`: the word cannot describe
            // the end of the range.
            return Err(ReserveRefusal::DoesNotFit);
        };
        match bumped.add_writer() {
            Some(reserved) => Ok(reserved),
            None => Err(ReserveRefusal::TooManyWriters),
        }
    }
}

impl fmt::Debug for Header {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Header")
            .field("offset", &self.offset())
            .field("n_writers", &self.n_writers())
            .field("sealed", &self.is_sealed())
            .field("salt", &self.salt())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use std::format;

    use super::*;
    use crate::layout::{MAX_OFFSET, MAX_SALT, MAX_WRITERS};

    fn parts(offset: u32, n_writers: u32, sealed: bool, salt: u32) -> Header {
        Header::from_parts(offset, n_writers, sealed, salt).expect("test parts are in range")
    }

    #[test]
    fn initial_is_all_zero_fields() {
        let h = Header::INITIAL;
        assert_eq!(h.to_raw(), 0);
        assert_eq!(
            (h.offset(), h.n_writers(), h.is_sealed(), h.salt()),
            (0, 0, false, 0)
        );
        assert!(!h.is_sealed_and_idle());
    }

    #[test]
    fn fields_land_in_documented_bits() {
        assert_eq!(parts(1, 0, false, 0).to_raw(), 1);
        assert_eq!(parts(0, 1, false, 0).to_raw(), 1 << 28);
        assert_eq!(parts(0, 0, true, 0).to_raw(), 1 << 40);
        assert_eq!(parts(0, 0, false, 1).to_raw(), 1 << 41);
        assert_eq!(
            parts(MAX_OFFSET, MAX_WRITERS, true, MAX_SALT).to_raw(),
            u64::MAX
        );
    }

    #[test]
    fn from_parts_rejects_out_of_range_fields() {
        assert_eq!(Header::from_parts(MAX_OFFSET + 1, 0, false, 0), None);
        assert_eq!(Header::from_parts(0, MAX_WRITERS + 1, false, 0), None);
        assert_eq!(Header::from_parts(0, 0, false, MAX_SALT + 1), None);
    }

    #[test]
    fn debug_names_every_field() {
        let text = format!("{:?}", parts(12, 3, true, 7));
        assert_eq!(
            text,
            "Header { offset: 12, n_writers: 3, sealed: true, salt: 7 }"
        );
    }

    #[test]
    fn bump_offset_refuses_sealed_and_overflow() {
        let h = parts(100, 1, false, 5);
        assert_eq!(h.bump_offset(0), Some(h));
        assert_eq!(h.seal().bump_offset(1), None);
        assert_eq!(h.bump_offset(u32::MAX), None);
        assert_eq!(
            h.bump_offset(MAX_OFFSET - 100),
            Some(parts(MAX_OFFSET, 1, false, 5))
        );
        assert_eq!(h.bump_offset(MAX_OFFSET - 99), None);
    }

    #[test]
    fn try_reserve_reports_why() {
        let h = parts(1000, 2, false, 9);
        assert_eq!(h.try_reserve(24, 1024), Ok(parts(1024, 3, false, 9)));
        assert_eq!(h.try_reserve(25, 1024), Err(ReserveRefusal::DoesNotFit));
        assert_eq!(h.seal().try_reserve(1, 1024), Err(ReserveRefusal::Sealed));
        let full = parts(0, MAX_WRITERS, false, 0);
        assert_eq!(
            full.try_reserve(1, 1024),
            Err(ReserveRefusal::TooManyWriters)
        );
        // A capacity beyond what the word can describe is capped at MAX_OFFSET.
        let near_end = parts(MAX_OFFSET - 1, 0, false, 0);
        assert_eq!(
            near_end.try_reserve(2, u32::MAX),
            Err(ReserveRefusal::DoesNotFit)
        );
        assert_eq!(
            near_end.try_reserve(1, u32::MAX),
            Ok(parts(MAX_OFFSET, 1, false, 0))
        );
    }

    #[test]
    fn seal_paths() {
        let h = parts(10, 0, false, 3);
        assert_eq!(h.try_seal(), Some(h.seal()));
        assert_eq!(h.seal().try_seal(), None);
        assert!(h.seal().is_sealed_and_idle());
        assert!(!parts(10, 1, true, 3).is_sealed_and_idle());
    }

    #[test]
    fn generations_wrap_only_when_unchecked() {
        let last = parts(5, 2, true, MAX_SALT);
        assert_eq!(last.next_generation(), Header::INITIAL);
        assert_eq!(last.checked_next_generation(), None);
        assert_eq!(
            parts(5, 2, true, 4).checked_next_generation(),
            Some(parts(0, 0, false, 5))
        );
    }

    #[test]
    fn refusal_displays_a_reason() {
        assert_eq!(
            format!("{}", ReserveRefusal::Sealed),
            "the IO buffer is sealed"
        );
    }
}
