//! A cleaning step that fails must leave its work to be done again, never release a segment
//! that a page still uses.
//!
//! The case that showed it: relocating a page that is not in memory reads its chain back,
//! and a read can fail (`EIO`) without poisoning the log. The cleaner used to take the record
//! off its list before relocating, so after the error it went on with the next record,
//! finished the segment and released it while the page's chain still began there; the
//! segment was reused and the page's bytes overwritten.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::{Concat, read_all, tiny_config};
use iobuf::storage::{FaultKind, SimStorage};
use pagecache::{PageCache, PageId};

const N_PAGES: u64 = 64;
/// Storage calls after the setup that are made to fail, one per trial.
const N_TRIALS: u64 = 120;

/// The next write of a round over pages `first_pid..first_pid + N_PAGES`: mostly 4-byte
/// deltas, and every 8th write to a page a fresh 40-byte base, so values stay small (inline
/// in the log, not large-value files).
fn next_write(
    cache: &PageCache<Concat>,
    model: &mut BTreeMap<PageId, Vec<u8>>,
    first_pid: u64,
    step: u64,
) -> pagecache::Result<()> {
    let pid = PageId(first_pid + step % N_PAGES);
    let page = cache.get(pid)?.expect("every page is live");
    let stamp = (step as u32).to_le_bytes();
    if (step / N_PAGES).is_multiple_of(8) {
        let base: Vec<u8> = stamp.iter().copied().cycle().take(40).collect();
        cache
            .replace(pid, page.version, base.clone())?
            .expect("one writer: versions are fresh");
        model.insert(pid, base);
    } else {
        cache
            .link(pid, page.version, stamp.to_vec())?
            .expect("one writer: versions are fresh");
        model
            .get_mut(&pid)
            .expect("allocated")
            .extend_from_slice(&stamp);
    }
    Ok(())
}

/// Runs `n_writes` writes from `first_step` over the pages from `first_pid`, flushing every
/// 8 so pages can be evicted and segments cleaned. Stops at the first error (the log may be
/// poisoned).
fn run_writes(
    cache: &PageCache<Concat>,
    model: &mut BTreeMap<PageId, Vec<u8>>,
    first_pid: u64,
    first_step: u64,
    n_writes: u64,
) -> pagecache::Result<()> {
    for step in first_step..first_step + n_writes {
        next_write(cache, model, first_pid, step)?;
        if step % 8 == 7 {
            cache.flush()?;
        }
    }
    Ok(())
}

#[test]
fn a_relocation_that_fails_is_retried_and_its_segment_kept() {
    let mut n_cleaning_failures = 0;
    for trial in 0..N_TRIALS {
        let storage = Arc::new(SimStorage::new());
        let (cache, _) =
            PageCache::open(storage.clone(), tiny_config(false), Concat).expect("open");
        let mut model = BTreeMap::new();
        // Two sets of pages: the first is written until the fault, the second after it, so a
        // page whose relocation failed is not rewritten (which would hide the loss).
        for pid in 0..2 * N_PAGES {
            let base = vec![pid as u8; 40];
            let (allocated, _) = cache.allocate(base.clone()).expect("allocate");
            assert_eq!(allocated, PageId(pid));
            model.insert(allocated, base);
        }
        run_writes(&cache, &mut model, 0, 0, 200).expect("writes before any fault");

        // One call fails. A failed user write or flush may have poisoned the log: such a
        // trial is not about cleaning, and reopening is another test's business.
        storage.fail_call(storage.n_calls() + trial, FaultKind::Eio);
        if run_writes(&cache, &mut model, 0, 200, 100).is_err() {
            continue;
        }
        storage.clear_faults();
        if cache.background_error().is_some() {
            n_cleaning_failures += 1;
        }
        // Enough writes after the fault to clean and reuse every segment several times over.
        run_writes(&cache, &mut model, N_PAGES, 300, 600).expect("writes after the fault");
        assert_eq!(read_all(&cache), model, "trial {trial}: in memory");
        cache.close().expect("close");

        let (reopened, _) = PageCache::open(storage.clone(), tiny_config(false), Concat)
            .expect("reopen after a clean close");
        assert_eq!(read_all(&reopened), model, "trial {trial}: after reopening");
    }
    assert!(
        n_cleaning_failures > 0,
        "no trial made cleaning fail; the window of failed calls missed it"
    );
}
