//! A simulation without IO: uniform random overwrites of 10 000 pages with the cleaner
//! running. The data file must stay within 1.5x the live bytes in steady state.

use std::collections::VecDeque;

use segment::{
    AccountantConfig, AccountingBatch, Geometry, Lsn, PageId, SegmentAccountant, SegmentId,
};

const N_PAGES: u64 = 10_000;
const PAGE_LEN_BYTES: u64 = 100;
const SEGMENT_LEN_BYTES: u64 = 4096;
/// The IO buffer ring: segments handed out recently, and how far the stable LSN lags behind.
const N_RING: u32 = 4;
const STABLE_LAG_SEGMENTS: usize = 2;

/// A tiny deterministic xorshift generator (no dependency, same run every time).
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// The log and cleaner around the accountant: fills segments with page writes, applies each
/// segment's batch when it is full, deactivates with a lag, and relocates whatever the
/// accountant says when it wants cleaning.
struct Sim {
    acct: SegmentAccountant,
    segment: SegmentId,
    used_bytes: u64,
    next_base_lsn: u64,
    batch: AccountingBatch,
    unstable: VecDeque<SegmentId>,
    relocations: VecDeque<(PageId, SegmentId)>,
    n_relocated: u64,
}

impl Sim {
    fn new(threshold: f64, target: f64) -> Sim {
        let geometry = Geometry::new(SEGMENT_LEN_BYTES).unwrap();
        let config = AccountantConfig {
            cleaning_threshold_live_fraction: threshold,
            target_space_amplification: target,
            ..AccountantConfig::new(geometry, N_RING).with_pages()
        };
        let mut acct = SegmentAccountant::new(config).unwrap();
        let segment = acct.next_segment(Lsn(0)).unwrap();
        Sim {
            acct,
            segment,
            used_bytes: 0,
            next_base_lsn: SEGMENT_LEN_BYTES,
            batch: AccountingBatch::new(segment),
            unstable: VecDeque::new(),
            relocations: VecDeque::new(),
            n_relocated: 0,
        }
    }

    fn write(&mut self, page: PageId) {
        if self.used_bytes + PAGE_LEN_BYTES > SEGMENT_LEN_BYTES {
            self.roll();
        }
        self.batch.replace(page, PAGE_LEN_BYTES);
        self.used_bytes += PAGE_LEN_BYTES;
    }

    fn roll(&mut self) {
        self.acct.apply(&self.batch).unwrap();
        self.unstable.push_back(self.segment);
        while self.unstable.len() > STABLE_LAG_SEGMENTS {
            let s = self.unstable.pop_front().unwrap();
            self.acct.deactivate(s).unwrap();
        }
        self.segment = self.acct.next_segment(Lsn(self.next_base_lsn)).unwrap();
        self.next_base_lsn += SEGMENT_LEN_BYTES;
        self.used_bytes = 0;
        self.batch.reset(self.segment);
        if self.relocations.is_empty()
            && self.acct.cleaning_wanted()
            && let Some(victim) = self.acct.pick_cleaning_victim()
        {
            for page in self.acct.pages_to_relocate(victim).unwrap() {
                self.relocations.push_back((page, victim));
            }
        }
    }

    /// One user write, preceded by every relocation the cleaner has queued.
    fn user_write(&mut self, page: PageId) {
        while let Some((p, victim)) = self.relocations.pop_front() {
            // Skip pages the user overwrote since (their copy in the victim is already dead).
            let still_there = self
                .acct
                .page_fragments(p)
                .is_some_and(|f| f.iter().any(|&(s, _)| s == victim));
            if still_there {
                self.n_relocated += 1;
                self.write(p);
            }
        }
        self.write(page);
    }
}

/// Runs the workload and returns the worst and final space amplification in steady state
/// and the number of pages the cleaner relocated.
fn run(threshold: f64, target: f64, n_rounds: u64) -> (f64, f64, u64) {
    let mut sim = Sim::new(threshold, target);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for p in 0..N_PAGES {
        sim.user_write(PageId(p));
    }
    let mut worst: f64 = 0.0;
    for i in 0..n_rounds * N_PAGES {
        sim.user_write(PageId(rng.below(N_PAGES)));
        // Steady state: after two full rounds of overwrites.
        if i >= 2 * N_PAGES {
            let amp = sim.acct.stats().space_amplification().unwrap();
            worst = worst.max(amp);
        }
    }
    let stats = sim.acct.stats();
    assert_eq!(stats.live_bytes, N_PAGES * PAGE_LEN_BYTES);
    sim.acct.check_invariants();
    (worst, stats.space_amplification().unwrap(), sim.n_relocated)
}

#[test]
fn uniform_overwrites_stay_within_1_5x() {
    let (worst, last, n_relocated) = run(
        AccountantConfig::DEFAULT_CLEANING_THRESHOLD_LIVE_FRACTION,
        AccountantConfig::DEFAULT_TARGET_SPACE_AMPLIFICATION,
        12,
    );
    println!(
        "uniform overwrites of {N_PAGES} pages x {PAGE_LEN_BYTES} B, {SEGMENT_LEN_BYTES} B segments: \
         space amplification worst {worst:.3}, final {last:.3}; {n_relocated} pages relocated \
         for {} user writes",
        13 * N_PAGES
    );
    assert!(worst <= 1.5, "space amplification reached {worst:.3}");
}
