//! Benchmark of the accountant's write-path operations at 1 M pages.
//!
//! Run with `cargo run --release -p segment --example bench_accountant`. Prints nanoseconds per
//! operation for: recording a change in a batch, applying a buffer's batch (per change),
//! deactivating a segment (including the deaths it makes final), picking a cleaning victim,
//! and handing out the next segment.

use std::hint::black_box;
use std::time::{Duration, Instant};

use segment::{
    AccountantConfig, AccountingBatch, Geometry, Lsn, PageId, SegmentAccountant, SegmentId,
};

const N_PAGES: u64 = 1_000_000;
const PAGE_LEN_BYTES: u64 = 128;
const SEGMENT_LEN_BYTES: u64 = 64 * 1024;
const BUFFER_LEN_BYTES: u64 = 16 * 1024;
const OPS_PER_BUFFER: u64 = BUFFER_LEN_BYTES / PAGE_LEN_BYTES;
const BUFFERS_PER_SEGMENT: u64 = SEGMENT_LEN_BYTES / BUFFER_LEN_BYTES;

struct Timers {
    record: Duration,
    n_record: u64,
    apply: Duration,
    n_apply_ops: u64,
    n_apply_calls: u64,
    deactivate: Duration,
    n_deactivate: u64,
    pick: Duration,
    n_pick: u64,
    next: Duration,
    n_next: u64,
}

fn rng(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

fn main() {
    let geometry = Geometry::new(SEGMENT_LEN_BYTES).expect("valid segment length");
    let config = AccountantConfig::new(geometry, 8).with_pages();
    let mut acct = SegmentAccountant::new(config).expect("valid config");
    let mut t = Timers {
        record: Duration::ZERO,
        n_record: 0,
        apply: Duration::ZERO,
        n_apply_ops: 0,
        n_apply_calls: 0,
        deactivate: Duration::ZERO,
        n_deactivate: 0,
        pick: Duration::ZERO,
        n_pick: 0,
        next: Duration::ZERO,
        n_next: 0,
    };
    let mut base_lsn = 0;
    let mut state = 0x2545_F491_4F6C_DD1D_u64;
    let mut pending: Vec<SegmentId> = Vec::new();
    let mut relocate: Vec<PageId> = Vec::new();
    let mut batch = AccountingBatch::with_capacity(SegmentId(0), OPS_PER_BUFFER as usize);
    // Fill 1 M pages, then overwrite uniformly 3 M times with cleaning; time everything.
    let total_writes = 4 * N_PAGES;
    let mut n_written = 0;
    while n_written < total_writes {
        let start = Instant::now();
        let segment = acct
            .next_segment(Lsn(base_lsn))
            .expect("aligned, fresh LSN");
        t.next += start.elapsed();
        t.n_next += 1;
        base_lsn += SEGMENT_LEN_BYTES;
        for _ in 0..BUFFERS_PER_SEGMENT {
            batch.reset(segment);
            // Relocations first, then user writes; the pages are chosen outside the timer.
            let mut pages: Vec<PageId> = Vec::with_capacity(OPS_PER_BUFFER as usize);
            while pages.len() < OPS_PER_BUFFER as usize {
                let page = match relocate.pop() {
                    Some(p) => p,
                    None if n_written < N_PAGES => {
                        n_written += 1;
                        PageId(n_written - 1)
                    }
                    None => {
                        n_written += 1;
                        PageId(rng(&mut state) % N_PAGES)
                    }
                };
                pages.push(page);
            }
            let start = Instant::now();
            for &p in &pages {
                batch.replace(p, PAGE_LEN_BYTES);
            }
            t.record += start.elapsed();
            t.n_record += pages.len() as u64;
            let start = Instant::now();
            acct.apply(black_box(&batch)).expect("valid batch");
            t.apply += start.elapsed();
            t.n_apply_ops += batch.len() as u64;
            t.n_apply_calls += 1;
        }
        pending.push(segment);
        // The stable LSN lags two segments behind.
        if pending.len() > 2 {
            let s = pending.remove(0);
            let start = Instant::now();
            acct.deactivate(s).expect("Active");
            t.deactivate += start.elapsed();
            t.n_deactivate += 1;
        }
        if relocate.is_empty() && acct.cleaning_wanted() {
            let start = Instant::now();
            let victim = acct.pick_cleaning_victim();
            t.pick += start.elapsed();
            t.n_pick += 1;
            if let Some(v) = victim {
                relocate = acct.pages_to_relocate(v).expect("known segment");
            }
        }
    }
    let ns = |d: Duration, n: u64| d.as_nanos() as f64 / n.max(1) as f64;
    let stats = acct.stats();
    println!(
        "{} pages, {} B pages, {} KiB segments, {} KiB buffers, {} writes ({} relocations included)",
        acct.n_pages(),
        PAGE_LEN_BYTES,
        SEGMENT_LEN_BYTES / 1024,
        BUFFER_LEN_BYTES / 1024,
        t.n_record,
        t.n_record - total_writes
    );
    println!(
        "record a change in a batch : {:8.1} ns/op ({} ops)",
        ns(t.record, t.n_record),
        t.n_record
    );
    println!(
        "apply a buffer's batch     : {:8.1} ns per change, {:8.1} us per buffer ({} buffers)",
        ns(t.apply, t.n_apply_ops),
        ns(t.apply, t.n_apply_calls) / 1000.0,
        t.n_apply_calls
    );
    println!(
        "deactivate a segment       : {:8.1} ns/op ({} ops)",
        ns(t.deactivate, t.n_deactivate),
        t.n_deactivate
    );
    println!(
        "pick a cleaning victim     : {:8.1} ns/op ({} ops)",
        ns(t.pick, t.n_pick),
        t.n_pick
    );
    println!(
        "next segment               : {:8.1} ns/op ({} ops)",
        ns(t.next, t.n_next),
        t.n_next
    );
    println!(
        "file {} segments, space amplification {:.3}",
        stats.n_segments_in_file,
        stats.space_amplification().unwrap_or(f64::NAN)
    );
}
