//! Bit-packing of the 64-bit header word of an IO buffer.
//!
//! (Filled in by issue 2.) Pure `const fn`s, `no_std`, no unsafe, no atomics.
#![no_std]
#![forbid(unsafe_code)]
