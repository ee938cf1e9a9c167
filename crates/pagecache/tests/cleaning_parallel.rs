//! A segment must not be released while a batch of its pages is still out with another
//! write: one write is parked in the middle of relocating a page (its materializer's
//! `encode` blocks), and other writes go on cleaning meanwhile. (A write that must clean
//! waits a moment for the parked batch, then takes it as stalled and goes on: the parked
//! write is released only after the others are done.)

mod common;

use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use common::{Concat, count, read_all, tiny_config};
use iobuf::storage::SimStorage;
use pagecache::{DecodeError, Materializer, PageCache, PageId};

const MARKER: &[u8] = b"PARK";
const N_PAGES: u64 = 32;

thread_local! {
    static MAY_PARK: Cell<bool> = const { Cell::new(false) };
}

#[derive(Default)]
struct Gate {
    /// (parked, released)
    state: Mutex<(bool, bool)>,
    changed: Condvar,
    armed: AtomicBool,
}

impl Gate {
    fn park(&self) {
        let mut state = self.state.lock().unwrap();
        state.0 = true;
        self.changed.notify_all();
        while !state.1 {
            state = self.changed.wait(state).unwrap();
        }
    }
    fn wait_parked(&self, timeout: Duration) -> bool {
        let state = self.state.lock().unwrap();
        let (state, _) = self
            .changed
            .wait_timeout_while(state, timeout, |state| !state.0)
            .unwrap();
        state.0
    }
    fn release(&self) {
        self.state.lock().unwrap().1 = true;
        self.changed.notify_all();
    }
}

/// Releases the gate however the test ends, so the parked writer never hangs the scope.
struct ReleaseOnDrop<'a>(&'a Gate);
impl Drop for ReleaseOnDrop<'_> {
    fn drop(&mut self) {
        self.0.release();
    }
}

/// `Concat`, except that encoding the marker page's value on the parking thread blocks
/// until the gate is released (a relocation encodes the page's merged value).
#[derive(Clone)]
struct Gated(Arc<Gate>);

impl Materializer for Gated {
    type Fragment = Vec<u8>;

    fn encode(&self, fragment: &Vec<u8>, out: &mut Vec<u8>) {
        if fragment.starts_with(MARKER)
            && MAY_PARK.with(Cell::get)
            && self.0.armed.swap(false, Ordering::SeqCst)
        {
            self.0.park();
        }
        out.extend_from_slice(fragment);
    }

    fn decode(&self, bytes: &[u8]) -> Result<Vec<u8>, DecodeError> {
        Concat.decode(bytes)
    }

    fn merge(&self, chain: &[&Vec<u8>]) -> Vec<u8> {
        Concat.merge(chain)
    }

    fn size_in_bytes(&self, fragment: &Vec<u8>) -> usize {
        Concat.size_in_bytes(fragment)
    }
}

fn write(cache: &PageCache<Gated>, model: &mut BTreeMap<PageId, Vec<u8>>, pid: PageId, step: u64) {
    let page = cache.get(pid).expect("get").expect("live");
    let base: Vec<u8> = step
        .to_le_bytes()
        .iter()
        .copied()
        .cycle()
        .take(40)
        .collect();
    cache
        .replace(pid, page.version, base.clone())
        .expect("replace")
        .expect("one writer per page");
    model.insert(pid, base);
    if step % 8 == 7 {
        cache.flush().expect("flush");
    }
}

#[test]
fn a_segment_is_not_released_while_a_batch_of_its_pages_is_out() {
    let gate = Arc::new(Gate::default());
    let storage = Arc::new(SimStorage::new());
    let (cache, _) =
        PageCache::open(storage.clone(), tiny_config(false), Gated(gate.clone())).expect("open");
    let mut model = BTreeMap::new();
    // The marker page first (its base in the oldest segment), then two sets of pages: one
    // for the writer that parks, one for the writes made while it is parked.
    let marker_value = MARKER.repeat(10);
    let (marker, _) = cache.allocate(marker_value.clone()).expect("allocate");
    model.insert(marker, marker_value);
    for pid in 0..2 * N_PAGES {
        let base = vec![pid as u8; 40];
        let (allocated, _) = cache.allocate(base.clone()).expect("allocate");
        model.insert(allocated, base);
    }
    cache.flush().expect("flush");
    gate.armed.store(true, Ordering::SeqCst);

    let cleaned_while_parked = AtomicU64::new(0);
    std::thread::scope(|scope| {
        let _release = ReleaseOnDrop(&gate);
        let parker = scope.spawn(|| {
            MAY_PARK.with(|may| may.set(true));
            let mut model = BTreeMap::new();
            // Writes until one of them, cleaning, relocates the marker page and parks.
            for step in 0..20_000 {
                if !gate.armed.load(Ordering::SeqCst) {
                    break;
                }
                write(&cache, &mut model, PageId(1 + step % N_PAGES), step);
            }
            model
        });
        assert!(
            gate.wait_parked(Duration::from_secs(30)),
            "the marker page was never relocated by the parking writer"
        );
        // The parked write holds a batch with the marker page in it: however much the others
        // write and clean, its segment is not released.
        let metrics = cache.metrics();
        let cleaned_before = count(&metrics.n_segments_cleaned);
        let mut mine = BTreeMap::new();
        for step in 0..2_000 {
            write(
                &cache,
                &mut mine,
                PageId(1 + N_PAGES + step % N_PAGES),
                step,
            );
        }
        cleaned_while_parked.store(
            count(&metrics.n_segments_cleaned) - cleaned_before,
            Ordering::SeqCst,
        );
        gate.release();
        let theirs = parker.join().expect("parking writer");
        model.extend(theirs);
        model.extend(mine);
    });
    assert_eq!(
        cleaned_while_parked.load(Ordering::SeqCst),
        0,
        "a segment was released while a batch of its pages was being relocated"
    );
    // Cleaning goes on once the batch is back, and every page reads back.
    let cleaned_at_release = count(&cache.metrics().n_segments_cleaned);
    for step in 0..1_000 {
        write(
            &cache,
            &mut model,
            PageId(1 + step % (2 * N_PAGES)),
            100_000 + step,
        );
    }
    assert!(
        count(&cache.metrics().n_segments_cleaned) > cleaned_at_release,
        "cleaning never resumed once the batch came back"
    );
    assert_eq!(read_all(&cache), model, "in memory");
    cache.close().expect("close");
    let (reopened, _) = PageCache::open(storage, tiny_config(false), Gated(gate)).expect("reopen");
    assert_eq!(read_all(&reopened), model, "after reopening");
}
