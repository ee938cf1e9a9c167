//! The background cleaner (`Config::background_cleaning`) cleans by itself: a store whose log
//! spans more than the space target allows is brought back within it by the thread alone,
//! with no write to share the work and no write to wake it, and every page keeps its value
//! through the relocations, a close and a reopen.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Concat, count, read_all};
use iobuf::storage::SimStorage;
use pagecache::{Config, PageCache, PageId};

const N_PAGES: u64 = 3_000;
const VALUE_LEN_BYTES: usize = 100;
const SEGMENT_LEN_BYTES: u64 = 64 << 10;
/// The target the store is written under, and the tighter one it is reopened with.
const LOOSE_TARGET: f64 = 2.0;
const TIGHT_TARGET: f64 = 1.2;

fn config(background_cleaning: bool, space_amplification_target: f64) -> Config {
    Config::builder()
        .segment_len_bytes(SEGMENT_LEN_BYTES)
        .io_buf_len_bytes(16 << 10)
        .n_io_bufs(4)
        .blob_threshold_bytes(8 << 10)
        // Released segments are reused once a sync made the release durable.
        .flush_every(Some(Duration::from_millis(1)))
        .cache_budget_bytes(16 << 20)
        .space_amplification_target(space_amplification_target)
        .background_snapshots(false)
        .background_cleaning(background_cleaning)
        .build()
        .expect("valid")
}

fn span_over_live(cache: &PageCache<Concat>) -> f64 {
    let stats = cache.stats();
    stats.log_span_bytes as f64 / stats.live_bytes as f64
}

#[test]
fn the_thread_alone_brings_a_reopened_store_within_a_tighter_target() {
    let storage = Arc::new(SimStorage::new());

    // A store written with only the writes cleaning, under a loose target: its log spans
    // about twice the live bytes.
    let (cache, _) =
        PageCache::open(storage.clone(), config(false, LOOSE_TARGET), Concat).expect("open");
    let mut versions = Vec::new();
    for pid in 0..N_PAGES {
        let (allocated, written) = cache
            .allocate(vec![pid as u8; VALUE_LEN_BYTES])
            .expect("allocate");
        assert_eq!(allocated, PageId(pid));
        versions.push(written.version);
    }
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    for step in 0..6 * N_PAGES {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let pid = state % N_PAGES;
        let value = vec![(step % 251) as u8; VALUE_LEN_BYTES];
        let written = cache
            .replace(PageId(pid), versions[pid as usize], value)
            .expect("replace")
            .expect("one writer");
        versions[pid as usize] = written.version;
    }
    let loose_ratio = span_over_live(&cache);
    assert!(
        loose_ratio > TIGHT_TARGET + 0.3,
        "the setup should leave the span well over the tighter target: {loose_ratio:.2}"
    );
    let model = read_all(&cache);
    cache.close().expect("close");

    // Reopened with the thread on and a tighter target, and left alone: no write.
    let (cache, _) =
        PageCache::open(storage.clone(), config(true, TIGHT_TARGET), Concat).expect("reopen");
    // Within the target, give or take the segment being cleaned (its pages are moved a
    // batch at a time; the span counts the whole segment until it is released).
    let within = TIGHT_TARGET + SEGMENT_LEN_BYTES as f64 / cache.stats().live_bytes as f64;
    let started = Instant::now();
    while span_over_live(&cache) > within {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the thread did not clean: span/live {:.2}, {} segments cleaned, error {:?}",
            span_over_live(&cache),
            count(&cache.metrics().n_segments_cleaned),
            cache.background_error()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let metrics = cache.metrics();
    eprintln!(
        "span/live {loose_ratio:.2} at target {LOOSE_TARGET}, {:.2} at {TIGHT_TARGET} after \
         {:.2?}: {} segments cleaned, {} records examined by the thread ({} in all), {} \
         relocations",
        span_over_live(&cache),
        started.elapsed(),
        count(&metrics.n_segments_cleaned),
        count(&metrics.n_records_examined_in_background),
        count(&metrics.n_records_examined),
        count(&metrics.n_relocations),
    );
    assert!(count(&metrics.n_segments_cleaned) > 0);
    assert_eq!(
        count(&metrics.n_records_examined_in_background),
        count(&metrics.n_records_examined),
        "no write ran, so the thread examined every record"
    );
    assert_eq!(cache.background_error().map(|e| e.to_string()), None);
    assert_eq!(read_all(&cache), model, "after cleaning, in memory");
    cache.close().expect("close");

    let (cache, _) = PageCache::open(storage, config(false, TIGHT_TARGET), Concat).expect("reopen");
    assert_eq!(
        read_all(&cache),
        model,
        "after cleaning, closing and reopening"
    );
}
