//! Space amplification under uniform overwrites: 10 000 pages of 100 bytes, each replaced
//! again and again at random until the log has been rewritten about five times over. In the
//! steady state the data file must stay within 1.5x the live bytes. The ratio and the write
//! amplification (bytes the log wrote over bytes the user wrote) are printed. The bound
//! assumes durability every 100 writes (see `FLUSH_EVERY_WRITES`). It is checked with the
//! writes cleaning alone and with the background cleaner (on 40 000 pages, see there).

mod common;

use std::sync::Arc;

use common::{Concat, count, read_all};
use iobuf::storage::SimStorage;
use pagecache::{Config, PageCache, PageId, Version};

const N_PAGES: u64 = 10_000;
const VALUE_LEN_BYTES: usize = 100;
/// The durability lag. A segment the cleaner released becomes reusable only once a later
/// segment header recording the release is durable (safe reuse), so the file holds the span
/// the cleaner keeps (about 1.3x live) plus the segments written since the last sync. Measured
/// on this workload: file/live 1.43 flushing every 100 writes (1.48 while a release waited
/// for its whole segment to be durable, not just the header), and before that fix 1.58 every
/// 500 writes, 1.97 every 2000, with the span at 1.3x live in all cases. (Under the
/// background flusher the log asks for an early sync whenever a header records a release.)
const FLUSH_EVERY_WRITES: u64 = 100;

/// The tests' store; `background_cleaning` as given (off, the figures are the same on every
/// run).
fn config_with(background_cleaning: bool) -> Config {
    Config::builder()
        .segment_len_bytes(64 << 10)
        .io_buf_len_bytes(16 << 10)
        .n_io_bufs(4)
        .blob_threshold_bytes(8 << 10)
        .flush_every(None)
        .cache_budget_bytes(4 << 20)
        .background_snapshots(false)
        .background_cleaning(background_cleaning)
        .build()
        .expect("valid")
}

fn config() -> Config {
    config_with(false)
}

/// A small deterministic generator (xorshift), so the workload is the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn value(seed: u64) -> Vec<u8> {
    (0..VALUE_LEN_BYTES)
        .map(|i| (seed as usize + i) as u8)
        .collect()
}

/// Allocates pages `0..n_pages` and flushes; returns their versions.
fn allocate_pages(cache: &PageCache<Concat>, n_pages: u64) -> Vec<Version> {
    let versions = (0..n_pages)
        .map(|pid| {
            let (allocated, written) = cache.allocate(value(pid)).expect("allocate");
            assert_eq!(allocated, PageId(pid));
            written.version
        })
        .collect();
    cache.flush().expect("flush");
    versions
}

/// Replaces random pages of `versions` (flushing every `FLUSH_EVERY_WRITES`) until the log
/// has written five times the live bytes it started with; `after_flush` sees the cache and
/// the bytes written so far after each flush. Returns the number of replaces.
fn overwrite_uniformly(
    cache: &PageCache<Concat>,
    versions: &mut [Version],
    seed: u64,
    mut after_flush: impl FnMut(&PageCache<Concat>, u64),
) -> u64 {
    let live_at_start = cache.stats().live_bytes;
    let written_at_start = count(&cache.log_metrics().written_bytes);
    let written = || count(&cache.log_metrics().written_bytes) - written_at_start;
    let mut rng = Rng(seed);
    let mut n_writes = 0u64;
    while written() < 5 * live_at_start {
        let pid = rng.next() % versions.len() as u64;
        let replaced = cache
            .replace(PageId(pid), versions[pid as usize], value(n_writes))
            .expect("replace")
            .expect("single writer");
        versions[pid as usize] = replaced.version;
        n_writes += 1;
        if n_writes.is_multiple_of(FLUSH_EVERY_WRITES) {
            cache.flush().expect("flush");
            after_flush(cache, written());
        }
    }
    cache.flush().expect("flush");
    n_writes
}

#[test]
fn uniform_overwrites_keep_the_file_within_one_and_a_half_times_live() {
    uniform_overwrites_within_bound(false, N_PAGES);
}

/// The same with the background cleaner, on four times the pages.
///
/// A review found that a write past the pacing limit that found the segment's last pages
/// lent to the thread went on writing, so a descheduled thread let the file grow (2.5x in 5
/// of 10 runs on a busy machine); such a write now waits for the pages. This test does not
/// catch that on its own (on 40 000 pages it passed without the wait in another review's 14
/// runs); the unit test of the wait in `cache.rs` does.
///
/// Why more pages: with the thread, two threads share the cleaner, and when the test's
/// threads outnumber the cores (the other tests of this file run at the same time) one may
/// be descheduled while it holds the cleaner's lock, and writes below the pacing limit go on
/// meanwhile, as they do with several writers. That costs a segment or two of span. With
/// these tiny segments a segment is 5 % of 10 000 pages' live bytes (file/live 1.48 to 1.58
/// in 8 of 25 parallel runs, 1.43 alone), and about 1 % of 40 000 pages' (1.33 to 1.37
/// in 22 parallel runs, 1.33 with the writes alone).
#[test]
fn uniform_overwrites_keep_the_file_within_bound_with_the_background_cleaner() {
    uniform_overwrites_within_bound(true, 4 * N_PAGES);
}

fn uniform_overwrites_within_bound(background_cleaning: bool, n_pages: u64) {
    let storage = Arc::new(SimStorage::new());
    let config = config_with(background_cleaning);
    let (cache, _) = PageCache::open(storage.clone(), config.clone(), Concat).expect("open");
    let mut versions = allocate_pages(&cache, n_pages);
    let mut user_bytes = n_pages * VALUE_LEN_BYTES as u64;
    let live_after_fill = cache.stats().live_bytes;

    let mut max_ratio_late = 0f64;
    let n_writes = overwrite_uniformly(
        &cache,
        &mut versions,
        0x9E37_79B9_7F4A_7C15,
        |cache, written_bytes| {
            // The steady state: after the log was rewritten twice over.
            if written_bytes > 2 * live_after_fill {
                let stats = cache.stats();
                max_ratio_late =
                    max_ratio_late.max(stats.file_len_bytes as f64 / stats.live_bytes as f64);
            }
        },
    );
    user_bytes += n_writes * VALUE_LEN_BYTES as u64;

    let stats = cache.stats();
    let ratio = stats.file_len_bytes as f64 / stats.live_bytes as f64;
    let span_ratio = stats.log_span_bytes as f64 / stats.live_bytes as f64;
    let log_written = count(&cache.log_metrics().written_bytes);
    let write_amplification = log_written as f64 / user_bytes as f64;
    let metrics = cache.metrics();
    let cleaning = if background_cleaning {
        "with the background cleaner"
    } else {
        "writes cleaning alone"
    };
    eprintln!(
        "{cleaning}: {n_writes} overwrites; file {} B, live {} B: file/live {ratio:.2} (max in \
         steady state {max_ratio_late:.2}), span/live {span_ratio:.2}; write amplification {:.2} \
         ({log_written} B logged for {user_bytes} B of values); relocations {} ({} B), \
         segments cleaned {}",
        stats.file_len_bytes,
        stats.live_bytes,
        write_amplification,
        count(&metrics.n_relocations),
        count(&metrics.relocated_bytes),
        count(&metrics.n_segments_cleaned),
    );
    assert!(
        ratio <= 1.5,
        "the data file is {ratio:.2}x the live bytes at the end"
    );
    assert!(
        max_ratio_late <= 1.5,
        "the data file reached {max_ratio_late:.2}x the live bytes in the steady state"
    );

    if background_cleaning {
        // The thread did some of the cleaning (woken by the writes as the span passed its
        // aim; its first look, at open, found an empty store).
        assert!(count(&metrics.n_records_examined_in_background) > 0);
    }

    // Every page still reads back after a reopen.
    cache.close().expect("close");
    let (cache, _) = PageCache::open(storage, config, Concat).expect("reopen");
    for pid in (0..n_pages).step_by(97) {
        let page = cache.get(PageId(pid)).expect("get").expect("live");
        assert_eq!(page.value.len(), VALUE_LEN_BYTES);
    }
    cache.close().expect("close");
}

/// Regression: the cleaner's floor on the log span was `n_io_bufs + 2` whole segments, as if
/// each buffer could hold a segment open. With segments much larger than the ring (here 8
/// buffers of 8 KiB and 256 KiB segments) that floor alone was larger than the space target:
/// 10 segments of 256 KiB (2.5 MiB) for about 1.3 MiB live, and the span stayed at 1.87x
/// live. The floor is now the segments the ring can cover (one) plus two.
#[test]
fn segments_larger_than_the_ring_do_not_hold_the_span_above_the_target() {
    let config = Config::builder()
        .segment_len_bytes(256 << 10)
        .io_buf_len_bytes(8 << 10)
        .n_io_bufs(8)
        .flush_every(None)
        .blob_threshold_bytes(4 << 10)
        .cache_budget_bytes(4 << 20)
        .background_snapshots(false)
        .background_cleaning(false)
        .build()
        .expect("valid");
    let (cache, _) = PageCache::open(Arc::new(SimStorage::new()), config, Concat).expect("open");
    let mut versions = allocate_pages(&cache, N_PAGES);
    overwrite_uniformly(&cache, &mut versions, 0x2545_F491_4F6C_DD1D, |_, _| {});
    let stats = cache.stats();
    let span_ratio = stats.log_span_bytes as f64 / stats.live_bytes as f64;
    eprintln!(
        "256 KiB segments, 8 x 8 KiB buffers: span {} B, live {} B: span/live {span_ratio:.2}",
        stats.log_span_bytes, stats.live_bytes
    );
    // The cleaner keeps the span at the 1.3x target, give or take the segment it is
    // cleaning (about 0.2x live here).
    assert!(span_ratio <= 1.55, "the log span is {span_ratio:.2}x live");
    cache.close().expect("close");
}

/// The cleaner knows the base records of every segment written since open (`bases.rs`) and
/// reads back only the others: in a fresh store, at most the first segment (it holds the
/// tip at open); after a reopen, the segments written before it. Every page keeps its last
/// value throughout.
#[test]
fn the_cleaner_reads_back_only_segments_written_before_open() {
    let storage = Arc::new(SimStorage::new());
    let (cache, _) = PageCache::open(storage.clone(), config(), Concat).expect("open");
    let mut versions = allocate_pages(&cache, N_PAGES);
    overwrite_uniformly(&cache, &mut versions, 0x9E37_79B9_7F4A_7C15, |_, _| {});
    let cleaned_and_read_back = |cache: &PageCache<Concat>| {
        let metrics = cache.metrics();
        (
            count(&metrics.n_segments_cleaned),
            count(&metrics.n_segments_read_back),
        )
    };
    let (n_cleaned, n_read_back) = cleaned_and_read_back(&cache);
    eprintln!("fresh store: {n_cleaned} segments cleaned, {n_read_back} read back");
    assert!(n_cleaned > 20, "the workload cleans many segments");
    assert!(n_read_back <= 1, "{n_read_back} segments were read back");
    // The pages are resident; the reopen below reads them from what the cleaning kept.
    let expected = read_all(&cache);
    cache.close().expect("close");

    let (cache, _) = PageCache::open(storage.clone(), config(), Concat).expect("reopen");
    assert_eq!(read_all(&cache), expected);
    let span_at_open = cache.stats().log_span_bytes;
    for (pid, version) in versions.iter_mut().enumerate() {
        *version = cache
            .get(PageId(pid as u64))
            .expect("get")
            .expect("live")
            .version;
    }
    overwrite_uniformly(&cache, &mut versions, 0x2545_F491_4F6C_DD1D, |_, _| {});
    let (n_cleaned, n_read_back) = cleaned_and_read_back(&cache);
    let segment_len_bytes = config().log().segment_len_bytes();
    let n_before_open = span_at_open.div_ceil(segment_len_bytes) + 1;
    eprintln!(
        "reopened: {n_cleaned} segments cleaned, {n_read_back} read back, {n_before_open} \
         segments at most written before open"
    );
    assert!(
        n_read_back >= 1,
        "segments written before open are read back"
    );
    assert!(
        n_read_back <= n_before_open,
        "{n_read_back} segments read back, more than the {n_before_open} written before open"
    );
    assert!(n_cleaned > n_read_back + 20);
    // The pages are resident; the reopen below reads them from what the cleaning kept.
    let expected = read_all(&cache);
    cache.close().expect("close");
    let (cache, _) = PageCache::open(storage, config(), Concat).expect("reopen");
    assert_eq!(read_all(&cache), expected);
    cache.close().expect("close");
}
