//! The reservation handshake run for real on one `AtomicU64`, using only this crate's
//! transitions: concurrent reserve (offset += len, writers += 1), release (writers -= 1) and
//! seal, then reuse with `next_generation`.
//!
//! Checked every round: the claimed ranges never overlap and exactly cover
//! `[0, final offset)`; exactly one seal CAS succeeds; exactly one thread sees its own CAS turn
//! the word into "sealed with zero writers"; a CAS prepared in an earlier state or generation
//! fails.

use std::sync::Barrier;
use std::sync::atomic::{
    AtomicU64, AtomicUsize,
    Ordering::{AcqRel, Acquire, Relaxed, Release},
};
use std::thread;

use header_bits::{Header, MAX_SALT, ReserveRefusal};

const N_THREADS: usize = 8;
const N_ROUNDS: u32 = 200;
const CAPACITY_BYTES: u32 = 1 << 20;
const MAX_CLAIM_BYTES: u32 = 4096;
/// The first round starts this many generations before the salt wraps, so the wrap from
/// `MAX_SALT` to 0 happens in the middle of the run.
const ROUNDS_BEFORE_WRAP: u32 = 100;

/// xorshift64*: enough randomness to vary claim sizes and hold times, with no dependency.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        // Zero is a fixed point of xorshift; mix the seed so it never is.
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform enough in `lo..=hi` for a test.
    fn in_range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

/// Counters shared by the threads of one round.
struct Round<'a> {
    word: &'a AtomicU64,
    /// Successful claims so far; the thread whose claim reaches `seal_after_claims` seals.
    n_claims: AtomicUsize,
    seal_after_claims: usize,
    /// Upper bounds, in spin-loop iterations, of how long a writer holds a reservation and
    /// how long it works between reservations. Varied per round: long holds keep writers
    /// active at the seal (the last releaser writes), long gaps leave the buffer idle (the
    /// sealer writes).
    hold_spins_max: u64,
    gap_spins_max: u64,
    /// Where a writer sometimes yields its time slice. With 8 threads on few cores, yielded
    /// threads pile up in that phase: while holding, the seal usually finds writers active;
    /// between reservations, it usually finds the buffer idle.
    yield_while_holding: bool,
    /// Lost CASes, to show the threads really contended.
    n_lost_cas: AtomicUsize,
    n_seal_successes: AtomicUsize,
    /// Threads whose own CAS produced a sealed-and-idle word, split by which CAS it was.
    n_idle_by_sealer: AtomicUsize,
    n_idle_by_releaser: AtomicUsize,
}

impl Round<'_> {
    fn load(&self) -> Header {
        Header::from_raw(self.word.load(Acquire))
    }

    fn cas(&self, old: Header, new: Header) -> bool {
        let won = self
            .word
            .compare_exchange(old.to_raw(), new.to_raw(), AcqRel, Acquire)
            .is_ok();
        if !won {
            self.n_lost_cas.fetch_add(1, Relaxed);
        }
        won
    }

    /// Seals unless someone else already has.
    fn seal(&self) {
        loop {
            let old = self.load();
            let Some(sealed) = old.try_seal() else {
                return;
            };
            if self.cas(old, sealed) {
                self.n_seal_successes.fetch_add(1, Relaxed);
                if sealed.is_sealed_and_idle() {
                    self.n_idle_by_sealer.fetch_add(1, Relaxed);
                }
                return;
            }
        }
    }

    /// Completes one reservation held by the caller.
    fn release(&self) {
        loop {
            let old = self.load();
            let released = old
                .remove_writer()
                .expect("the caller holds a reservation, so n_writers > 0");
            if self.cas(old, released) {
                if released.is_sealed_and_idle() {
                    self.n_idle_by_releaser.fetch_add(1, Relaxed);
                }
                return;
            }
        }
    }

    /// One thread's work: claim, hold, release, until the buffer is sealed. Returns the
    /// claimed ranges as `(start, len)`.
    fn run_writer(&self, rng: &mut Rng) -> Vec<(u32, u32)> {
        let mut claims = Vec::new();
        loop {
            let old = self.load();
            let len_bytes = rng.in_range(1, u64::from(MAX_CLAIM_BYTES)) as u32;
            let reserved = match old.try_reserve(len_bytes, CAPACITY_BYTES) {
                Ok(reserved) => reserved,
                Err(ReserveRefusal::Sealed) => return claims,
                Err(ReserveRefusal::DoesNotFit) => {
                    // What the log does when a message does not fit: seal and roll.
                    self.seal();
                    continue;
                }
                Err(ReserveRefusal::TooManyWriters) => {
                    panic!("{N_THREADS} threads cannot exceed the writer limit: {old:?}")
                }
            };
            if !self.cas(old, reserved) {
                continue;
            }
            claims.push((old.offset(), len_bytes));

            // Hold the reservation for a while ("copying the bytes in") so that claims,
            // releases and the seal interleave in many ways.
            spin(rng.in_range(0, self.hold_spins_max));
            let yield_now = rng.next().is_multiple_of(16);
            if yield_now && self.yield_while_holding {
                thread::yield_now();
            }
            self.release();

            if self.n_claims.fetch_add(1, Relaxed) + 1 == self.seal_after_claims {
                self.seal();
            }
            spin(rng.in_range(0, self.gap_spins_max));
            if yield_now && !self.yield_while_holding {
                thread::yield_now();
            }
        }
    }
}

fn spin(n_iterations: u64) {
    for _ in 0..n_iterations {
        std::hint::spin_loop();
    }
}

#[test]
fn concurrent_reservations_cover_the_buffer_and_one_thread_writes() {
    let first = Header::from_parts(0, 0, false, MAX_SALT - ROUNDS_BEFORE_WRAP + 1)
        .expect("fields are in range");
    let word = AtomicU64::new(first.to_raw());
    let mut plan_rng = Rng::new(0x5EED);
    let (mut total_idle_by_sealer, mut total_idle_by_releaser) = (0, 0);
    let (mut total_claims, mut total_lost_cas) = (0, 0);
    let mut previous_generation_word: Option<Header> = None;

    for round_idx in 0..N_ROUNDS {
        let start = Header::from_raw(word.load(Acquire));
        assert_eq!(
            (start.offset(), start.n_writers(), start.is_sealed()),
            (0, 0, false),
            "round {round_idx} starts from a fresh generation"
        );
        // A CAS prepared against the previous generation's final word must fail now.
        if let Some(stale) = previous_generation_word {
            let cas = word.compare_exchange(stale.to_raw(), stale.to_raw(), AcqRel, Acquire);
            assert!(
                cas.is_err(),
                "round {round_idx}: stale CAS from {stale:?} failed"
            );
        }

        // A quarter of the rounds only seal when the buffer is full; the rest seal early.
        let seal_after_claims = if plan_rng.next().is_multiple_of(4) {
            usize::MAX
        } else {
            plan_rng.in_range(1, 600) as usize
        };
        let round = Round {
            word: &word,
            n_claims: AtomicUsize::new(0),
            seal_after_claims,
            hold_spins_max: [0, 20, 200][plan_rng.in_range(0, 2) as usize],
            gap_spins_max: [0, 200, 2_000][plan_rng.in_range(0, 2) as usize],
            yield_while_holding: plan_rng.next().is_multiple_of(2),
            n_lost_cas: AtomicUsize::new(0),
            n_seal_successes: AtomicUsize::new(0),
            n_idle_by_sealer: AtomicUsize::new(0),
            n_idle_by_releaser: AtomicUsize::new(0),
        };
        let barrier = Barrier::new(N_THREADS);
        let mut ranges: Vec<(u32, u32)> = thread::scope(|scope| {
            let handles: Vec<_> = (0..N_THREADS)
                .map(|thread_idx| {
                    let seed = u64::from(round_idx) * 1_000 + thread_idx as u64;
                    let (round, barrier) = (&round, &barrier);
                    scope.spawn(move || {
                        let mut rng = Rng::new(seed);
                        barrier.wait();
                        round.run_writer(&mut rng)
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().expect("writer thread panicked"))
                .collect()
        });

        let end = Header::from_raw(word.load(Acquire));
        assert!(
            end.is_sealed_and_idle(),
            "round {round_idx} ends sealed and idle: {end:?}"
        );
        assert_eq!(
            end.salt(),
            start.salt(),
            "the salt only changes between rounds"
        );
        assert!(end.offset() <= CAPACITY_BYTES);

        // Sorted by start, the ranges must tile [0, end.offset()) with no gap and no overlap.
        ranges.sort_unstable();
        let mut covered_to = 0u32;
        for &(claim_start, len) in &ranges {
            assert_eq!(
                claim_start, covered_to,
                "round {round_idx}: gap or overlap at {claim_start}"
            );
            covered_to = claim_start + len;
        }
        assert_eq!(
            covered_to,
            end.offset(),
            "round {round_idx}: claims cover the offset"
        );
        assert!(
            !ranges.is_empty(),
            "round {round_idx}: some claim succeeded before the seal"
        );

        assert_eq!(
            round.n_seal_successes.load(Relaxed),
            1,
            "round {round_idx}: one seal"
        );
        let by_sealer = round.n_idle_by_sealer.load(Relaxed);
        let by_releaser = round.n_idle_by_releaser.load(Relaxed);
        assert_eq!(
            by_sealer + by_releaser,
            1,
            "round {round_idx}: exactly one thread saw sealed-and-idle \
             (sealer {by_sealer}, releaser {by_releaser})"
        );
        total_idle_by_sealer += by_sealer;
        total_idle_by_releaser += by_releaser;
        total_claims += ranges.len();
        total_lost_cas += round.n_lost_cas.load(Relaxed);

        // A CAS prepared before the seal fails: the word has moved on within the generation.
        assert!(
            word.compare_exchange(start.to_raw(), start.to_raw(), AcqRel, Acquire)
                .is_err()
        );

        // Reuse the buffer. The salt wraps once during the run, and `next_generation` still
        // produces a word different from every word of the generation just finished.
        let next = end.next_generation();
        assert_ne!(next.salt(), end.salt());
        assert_eq!(
            end.checked_next_generation().is_none(),
            end.salt() == MAX_SALT
        );
        word.store(next.to_raw(), Release);
        previous_generation_word = Some(end);
    }

    assert_eq!(
        Header::from_raw(word.load(Acquire)).salt(),
        N_ROUNDS - ROUNDS_BEFORE_WRAP,
        "the salt wrapped past MAX_SALT exactly once"
    );
    // Which side writes the buffer depends on scheduling; show the split rather than assert it.
    println!(
        "{total_claims} claims, {total_lost_cas} lost CASes; sealed-and-idle observed by the \
         sealer in {total_idle_by_sealer} rounds, by the last releaser in \
         {total_idle_by_releaser} rounds"
    );
}
