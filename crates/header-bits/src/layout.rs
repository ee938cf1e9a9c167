//! Where each field lives in the 64-bit word: one `BITS`/`SHIFT`/`MASK`/`MAX` set per field,
//! plus compile-time proofs that the fields tile the word exactly.
//!
//! The fields are listed from the least significant bit upwards. Each `SHIFT` is derived from
//! the previous field's `SHIFT + BITS`, so changing one width moves everything above it and
//! the assertions at the bottom catch any width that no longer fits.

/// Width of the offset field (bytes claimed so far in the buffer).
pub const OFFSET_BITS: u32 = 28;
/// Position of the offset field's least significant bit.
pub const OFFSET_SHIFT: u32 = 0;
/// The offset field in place within the word.
pub const OFFSET_MASK: u64 = field_mask(OFFSET_SHIFT, OFFSET_BITS);
/// Largest offset the word can hold: the largest IO buffer, in bytes, it can describe.
pub const MAX_OFFSET: u32 = (1 << OFFSET_BITS) - 1;

/// Width of the active-writer count.
pub const WRITERS_BITS: u32 = 12;
/// Position of the writer count's least significant bit.
pub const WRITERS_SHIFT: u32 = OFFSET_SHIFT + OFFSET_BITS;
/// The writer count in place within the word.
pub const WRITERS_MASK: u64 = field_mask(WRITERS_SHIFT, WRITERS_BITS);
/// Largest number of writers that may hold reservations in one buffer at the same time.
pub const MAX_WRITERS: u32 = (1 << WRITERS_BITS) - 1;

/// Width of the sealed flag.
pub const SEALED_BITS: u32 = 1;
/// Position of the sealed flag.
pub const SEALED_SHIFT: u32 = WRITERS_SHIFT + WRITERS_BITS;
/// The sealed flag in place within the word.
pub const SEALED_MASK: u64 = field_mask(SEALED_SHIFT, SEALED_BITS);

/// Width of the salt (the buffer's generation number, modulo `2^SALT_BITS`).
pub const SALT_BITS: u32 = 23;
/// Position of the salt's least significant bit.
pub const SALT_SHIFT: u32 = SEALED_SHIFT + SEALED_BITS;
/// The salt in place within the word.
pub const SALT_MASK: u64 = field_mask(SALT_SHIFT, SALT_BITS);
/// Largest salt; [`Header::next_generation`](crate::Header::next_generation) wraps from it to 0.
pub const MAX_SALT: u32 = (1 << SALT_BITS) - 1;

/// `bits` one-bits starting at bit `shift`. Only called with constants checked below.
const fn field_mask(shift: u32, bits: u32) -> u64 {
    // `bits` is at most 63 for every field here, so the shift cannot overflow; a width of 64
    // would fail the "sum to 64 with four non-empty fields" assertion anyway.
    ((1u64 << bits) - 1) << shift
}

// Every field is non-empty and the widths fill the word exactly.
const _: () = assert!(OFFSET_BITS > 0 && WRITERS_BITS > 0 && SEALED_BITS > 0 && SALT_BITS > 0);
const _: () = assert!(OFFSET_BITS + WRITERS_BITS + SEALED_BITS + SALT_BITS == u64::BITS);
// The top field ends exactly at bit 64.
const _: () = assert!(SALT_SHIFT + SALT_BITS == u64::BITS);

// The masks are pairwise disjoint ...
const _: () = assert!(OFFSET_MASK & WRITERS_MASK == 0);
const _: () = assert!(OFFSET_MASK & SEALED_MASK == 0);
const _: () = assert!(OFFSET_MASK & SALT_MASK == 0);
const _: () = assert!(WRITERS_MASK & SEALED_MASK == 0);
const _: () = assert!(WRITERS_MASK & SALT_MASK == 0);
const _: () = assert!(SEALED_MASK & SALT_MASK == 0);
// ... and together cover all 64 bits, so every `u64` is a valid header (no reserved bits).
const _: () = assert!(OFFSET_MASK | WRITERS_MASK | SEALED_MASK | SALT_MASK == u64::MAX);

// Each `MAX_*` is exactly what its mask can hold, so "fits in the field" and "<= MAX_*" agree.
const _: () = assert!(OFFSET_MASK >> OFFSET_SHIFT == MAX_OFFSET as u64);
const _: () = assert!(WRITERS_MASK >> WRITERS_SHIFT == MAX_WRITERS as u64);
const _: () = assert!(SALT_MASK >> SALT_SHIFT == MAX_SALT as u64);
const _: () = assert!(SEALED_BITS == 1);

// Offsets are added in `u64` (see `Header::bump_offset`): the sum of two values of at most
// `u32::MAX` cannot overflow it.
const _: () = assert!(OFFSET_BITS < u32::BITS && SALT_BITS < u32::BITS);
