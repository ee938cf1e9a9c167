//! Bit-packing of the 64-bit header word of an IO buffer.
//!
//! The log keeps one `AtomicU64` per IO buffer. Its lock-free reservation protocol runs
//! entirely on that word: a compare-and-swap (CAS) on it claims bytes in the buffer, registers
//! and retires writers, and seals the buffer. This crate is only the arithmetic on the word:
//! pure `const fn`s on a `Copy` value, [`Header`], that say what the next word is (or that
//! there is none). The caller owns the atomic and performs the CAS.
//!
//! # Bit layout
//!
//! ```text
//!  63                     41  40  39            28  27                              0
//! +-------------------------+----+----------------+----------------------------------+
//! |      salt (23 bits)     | S  | n_writers (12) |         offset (28 bits)         |
//! +-------------------------+----+----------------+----------------------------------+
//!                            sealed (1 bit)
//! ```
//!
//! | field       | bits   | limit                                   |
//! |-------------|--------|-----------------------------------------|
//! | `offset`    | 0..28  | [`MAX_OFFSET`] = 2^28 - 1 bytes (256 MiB - 1) |
//! | `n_writers` | 28..40 | [`MAX_WRITERS`] = 4095                  |
//! | `sealed`    | 40     | one flag                                |
//! | `salt`      | 41..64 | [`MAX_SALT`] = 2^23 - 1, then wraps to 0 |
//!
//! Each field has `*_BITS`, `*_SHIFT` and `*_MASK` constants; `const` assertions prove at
//! compile time that the widths sum to 64 and the masks are disjoint and cover the word.
//!
//! # Invariants
//!
//! - Every `u64` is a valid header: there are no reserved bits, so [`Header::from_raw`]
//!   cannot fail and decoding never panics.
//! - No transition carries into a neighbouring field: at a limit it returns `None` (or a
//!   [`ReserveRefusal`]) rather than a wrong word.
//! - Used as the handshake below prescribes, within one generation (one salt value) the offset
//!   never decreases, the sealed flag never clears, and once sealed the offset is frozen and
//!   the writer count only decreases. Only [`Header::next_generation`] starts over, and it
//!   always changes the salt.
//!
//! # The reservation handshake
//!
//! 1. **Reserve**: load `h`, compute `h.try_reserve(len, capacity)` (offset += len and
//!    writers += 1), CAS `h` to it. The claimed range is `h.offset() .. h.offset() + len`.
//!    `Sealed` means move to the next buffer; `DoesNotFit` means seal this one and roll.
//! 2. **Complete or abort**: after copying the bytes in, CAS `h` to `h.remove_writer()`.
//! 3. **Seal**: CAS `h` to `h.try_seal()` (not the idempotent [`Header::seal`], so that a CAS
//!    success means *this* thread sealed).
//! 4. **Write**: the thread whose own successful CAS (a seal or a release) produced a word
//!    that [`is_sealed_and_idle`](Header::is_sealed_and_idle) writes the buffer out. Exactly
//!    one CAS per generation produces that word: the flag is set once, after which the writer
//!    count only falls, so it reaches zero once — at the seal itself if no writer was active,
//!    otherwise at the last release.
//! 5. **Reuse**: when the buffer is free again, its word becomes `h.next_generation()`.
//!
//! Both CASes of a writer should use `AcqRel`, so that its copied bytes are visible to the
//! thread that later observes the buffer sealed and idle.
//!
//! ```
//! use std::sync::atomic::{AtomicU64, Ordering::{AcqRel, Acquire, Release}};
//! use header_bits::Header;
//!
//! let word = AtomicU64::new(Header::INITIAL.to_raw());
//! // Reserve 100 bytes in a 4 KiB buffer.
//! let old = Header::from_raw(word.load(Acquire));
//! let new = old.try_reserve(100, 4096).unwrap();
//! assert!(word.compare_exchange(old.to_raw(), new.to_raw(), AcqRel, Acquire).is_ok());
//! let claimed = old.offset()..new.offset();
//! assert_eq!(claimed, 0..100);
//! // Another thread seals while the writer is still copying: it must not write yet.
//! let sealed = new.try_seal().unwrap();
//! assert!(word.compare_exchange(new.to_raw(), sealed.to_raw(), AcqRel, Acquire).is_ok());
//! assert!(!sealed.is_sealed_and_idle());
//! // The writer completes: its CAS makes the buffer sealed and idle, so it writes it out.
//! let done = sealed.remove_writer().unwrap();
//! assert!(word.compare_exchange(sealed.to_raw(), done.to_raw(), AcqRel, Acquire).is_ok());
//! assert!(done.is_sealed_and_idle());
//! // Reuse: a CAS prepared against any word of the old generation now fails.
//! word.store(done.next_generation().to_raw(), Release);
//! assert!(word.compare_exchange(old.to_raw(), new.to_raw(), AcqRel, Acquire).is_err());
//! ```
//!
//! # Why a stale CAS cannot succeed, and the ABA window
//!
//! A CAS compares all 64 bits, salt included. A thread that loaded the word in generation `g`
//! and was then delayed holds salt `g mod 2^23`; once the buffer is reused, the word carries
//! `g + 1`, `g + 2`, ..., so the stale CAS fails unless the buffer has been reused a multiple
//! of 2^23 = 8,388,608 times during the delay *and* the offset, writer count and seal flag
//! happen to match as well. Every reuse includes writing the buffer to the file; even at an
//! implausible million reuses of one buffer per second, the thread would have to stall for
//! about 8.4 seconds between its load and its CAS. Callers that would rather stop than wrap
//! can use [`Header::checked_next_generation`].
//!
//! Within one generation a repeated word is harmless: the offset only grows and the seal flag
//! only sets, so an identical word can only come back after writers joined and left at the
//! same offset (zero-length reservations), which leaves the buffer in exactly the state the
//! stale thread computed from.
//!
//! # What this crate deliberately does not do
//!
//! - No atomics, no retry loops, no backoff, no memory orderings: the log owns the
//!   `AtomicU64` and the CAS loop (so it can switch in a model checker).
//! - No knowledge of LSNs, segments or buffer sizes: the capacity is a parameter.
//! - Nothing is persisted: the word lives only in memory, so its layout may change freely.
//! - No dependencies, `no_std`, no `unsafe`. [`ReserveRefusal`] is a plain enum rather than a
//!   `thiserror` error because a refused reservation is a normal outcome the log matches on.
#![no_std]
#![forbid(unsafe_code)]

mod header;
mod layout;

pub use header::{Header, ReserveRefusal};
pub use layout::{
    MAX_OFFSET, MAX_SALT, MAX_WRITERS, OFFSET_BITS, OFFSET_MASK, OFFSET_SHIFT, SALT_BITS,
    SALT_MASK, SALT_SHIFT, SEALED_BITS, SEALED_MASK, SEALED_SHIFT, WRITERS_BITS, WRITERS_MASK,
    WRITERS_SHIFT,
};
