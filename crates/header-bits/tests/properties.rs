//! Property tests: every transition changes only its own field, is exact when it succeeds, and
//! returns `None` (or a refusal) at every limit instead of a wrong word.

use header_bits::{Header, MAX_OFFSET, MAX_SALT, MAX_WRITERS, ReserveRefusal};
use proptest::prelude::*;

/// Cases per property; the long CI mode sets `PROPTEST_CASES=10000`.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

/// A field value in `0..=max`, with the limits and their neighbours drawn often: uniform draws
/// would almost never hit `MAX_WRITERS` (1 in 4096) or `MAX_SALT`.
fn field(max: u32) -> impl Strategy<Value = u32> {
    prop_oneof![Just(0), Just(1), Just(max - 1), Just(max), 0..=max, 0..=max,]
}

/// Headers with edge-biased fields, plus fully arbitrary raw words.
fn header() -> impl Strategy<Value = Header> {
    prop_oneof![
        3 => (field(MAX_OFFSET), field(MAX_WRITERS), any::<bool>(), field(MAX_SALT)).prop_map(
            |(offset, n_writers, sealed, salt)| {
                Header::from_parts(offset, n_writers, sealed, salt).expect("fields are in range")
            }
        ),
        1 => any::<u64>().prop_map(Header::from_raw),
    ]
}

/// Byte counts that straddle the offset limit and `u32` overflow.
fn bytes() -> impl Strategy<Value = u32> {
    prop_oneof![
        Just(0),
        Just(1),
        Just(MAX_OFFSET),
        Just(MAX_OFFSET + 1),
        Just(u32::MAX),
        0..=4096u32,
        any::<u32>(),
    ]
}

fn fields(h: Header) -> (u32, u32, bool, u32) {
    (h.offset(), h.n_writers(), h.is_sealed(), h.salt())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn raw_round_trips_for_any_word(raw in any::<u64>()) {
        let h = Header::from_raw(raw);
        prop_assert_eq!(h.to_raw(), raw);
        // Decoding the fields and encoding them again gives the same word: no bit is lost.
        let (offset, n_writers, sealed, salt) = fields(h);
        prop_assert_eq!(Header::from_parts(offset, n_writers, sealed, salt), Some(h));
    }

    #[test]
    fn parts_round_trip(
        offset in field(MAX_OFFSET),
        n_writers in field(MAX_WRITERS),
        sealed in any::<bool>(),
        salt in field(MAX_SALT),
    ) {
        let h = Header::from_parts(offset, n_writers, sealed, salt).expect("in range");
        prop_assert_eq!(fields(h), (offset, n_writers, sealed, salt));
        prop_assert_eq!(h.is_sealed_and_idle(), sealed && n_writers == 0);
    }

    #[test]
    fn from_parts_refuses_out_of_range(h in header(), over in 1..=1000u32) {
        let (offset, n_writers, sealed, salt) = fields(h);
        prop_assert_eq!(Header::from_parts(MAX_OFFSET + over, n_writers, sealed, salt), None);
        prop_assert_eq!(Header::from_parts(offset, MAX_WRITERS + over, sealed, salt), None);
        prop_assert_eq!(Header::from_parts(offset, n_writers, sealed, MAX_SALT + over), None);
    }

    #[test]
    fn bump_offset_is_exact_or_refused(h in header(), by in bytes()) {
        let (offset, n_writers, sealed, salt) = fields(h);
        let fits = u64::from(offset) + u64::from(by) <= u64::from(MAX_OFFSET);
        match h.bump_offset(by) {
            Some(bumped) => {
                prop_assert!(!sealed && fits);
                prop_assert_eq!(fields(bumped), (offset + by, n_writers, sealed, salt));
            }
            None => prop_assert!(sealed || !fits),
        }
    }

    #[test]
    fn add_writer_changes_only_the_count(h in header()) {
        let (offset, n_writers, sealed, salt) = fields(h);
        match h.add_writer() {
            Some(added) => {
                prop_assert!(n_writers < MAX_WRITERS);
                prop_assert_eq!(fields(added), (offset, n_writers + 1, sealed, salt));
                prop_assert_eq!(added.remove_writer(), Some(h));
            }
            None => prop_assert_eq!(n_writers, MAX_WRITERS),
        }
    }

    #[test]
    fn remove_writer_changes_only_the_count(h in header()) {
        let (offset, n_writers, sealed, salt) = fields(h);
        match h.remove_writer() {
            Some(removed) => {
                prop_assert!(n_writers > 0);
                prop_assert_eq!(fields(removed), (offset, n_writers - 1, sealed, salt));
                prop_assert_eq!(removed.add_writer(), Some(h));
            }
            None => prop_assert_eq!(n_writers, 0),
        }
    }

    #[test]
    fn seal_is_idempotent_and_touches_nothing_else(h in header()) {
        let (offset, n_writers, _, salt) = fields(h);
        let sealed = h.seal();
        prop_assert_eq!(fields(sealed), (offset, n_writers, true, salt));
        prop_assert_eq!(sealed.seal(), sealed);
        // `try_seal` agrees with `seal`, and succeeds only on an unsealed header.
        prop_assert_eq!(h.try_seal(), (!h.is_sealed()).then_some(sealed));
        prop_assert_eq!(sealed.try_seal(), None);
    }

    #[test]
    fn next_generation_always_changes_the_word(h in header()) {
        let next = h.next_generation();
        prop_assert_ne!(next, h);
        let expected_salt = if h.salt() == MAX_SALT { 0 } else { h.salt() + 1 };
        prop_assert_eq!(fields(next), (0, 0, false, expected_salt));
        prop_assert_ne!(next.salt(), h.salt());
    }

    #[test]
    fn checked_next_generation_refuses_only_the_wrap(h in header()) {
        match h.checked_next_generation() {
            Some(next) => {
                prop_assert!(h.salt() < MAX_SALT);
                prop_assert_eq!(next, h.next_generation());
                prop_assert_eq!(next.salt(), h.salt() + 1);
            }
            None => prop_assert_eq!(h.salt(), MAX_SALT),
        }
    }

    #[test]
    fn try_reserve_is_bump_plus_writer_or_says_why(
        h in header(),
        len in bytes(),
        capacity in prop_oneof![Just(MAX_OFFSET), Just(u32::MAX), Just(1u32 << 20), any::<u32>()],
    ) {
        let (offset, n_writers, sealed, salt) = fields(h);
        let end = u64::from(offset) + u64::from(len);
        let limit = u64::from(capacity.min(MAX_OFFSET));
        match h.try_reserve(len, capacity) {
            Ok(reserved) => {
                prop_assert!(!sealed && end <= limit && n_writers < MAX_WRITERS);
                prop_assert_eq!(fields(reserved), (offset + len, n_writers + 1, sealed, salt));
                prop_assert_eq!(Some(reserved), h.bump_offset(len).and_then(Header::add_writer));
            }
            Err(ReserveRefusal::Sealed) => prop_assert!(sealed),
            Err(ReserveRefusal::DoesNotFit) => prop_assert!(!sealed && end > limit),
            Err(ReserveRefusal::TooManyWriters) => {
                prop_assert!(!sealed && end <= limit && n_writers == MAX_WRITERS);
            }
        }
    }
}

/// The limits named in the brief, checked directly rather than by chance.
#[test]
fn every_limit_returns_none() {
    let at = |offset, n_writers, salt| {
        Header::from_parts(offset, n_writers, false, salt).expect("fields are in range")
    };
    assert_eq!(at(MAX_OFFSET, 0, 0).bump_offset(1), None);
    assert_eq!(at(0, 0, 0).bump_offset(MAX_OFFSET + 1), None);
    assert_eq!(at(MAX_OFFSET, 0, 0).bump_offset(u32::MAX), None);
    assert_eq!(at(0, MAX_WRITERS, 0).add_writer(), None);
    assert_eq!(at(0, 0, 0).remove_writer(), None);
    assert_eq!(at(0, 0, MAX_SALT).checked_next_generation(), None);
    assert_eq!(at(0, 0, MAX_SALT).next_generation(), Header::INITIAL);
    assert_eq!(Header::INITIAL.seal().bump_offset(0), None);
}
