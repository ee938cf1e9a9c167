//! The key-value store of `examples/kv.rs` keeps every key across a clean close, a drop after
//! a flush, and simulated crashes; concurrent writers lose nothing while leaves split.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use iobuf::storage::SimStorage;
use pagecache::{Config, Metrics};

#[allow(dead_code)] // The test uses the store, not the example's `main`.
#[path = "../examples/kv.rs"]
mod kv;

use kv::{KvStore, MAX_KEYS_PER_LEAF};

const N_KEYS: u64 = 2_000;

/// Small segments and buffers, full leaves stored as blobs, and a cache budget of a few
/// leaves, so that segment rolls, blobs, cleaning, eviction and page-ins happen throughout.
fn small_config(flush_every: Option<std::time::Duration>) -> Config {
    Config::builder()
        .segment_len_bytes(32 << 10)
        .io_buf_len_bytes(8 << 10)
        .n_io_bufs(2)
        .blob_threshold_bytes(4 << 10)
        .flush_every(flush_every)
        .cache_budget_bytes(16 << 10)
        .consolidate_after_fragments(4)
        .snapshot_every_bytes(64 << 10)
        .background_snapshots(false)
        .background_cleaning(false)
        .build()
        .expect("a valid configuration")
}

/// A scrambled but reproducible sequence (splitmix64).
fn mix(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn key(i: u64) -> Vec<u8> {
    format!("key-{i:06}").into_bytes()
}

fn value(i: u64, round: u64) -> Vec<u8> {
    format!(
        "value {i} round {round} {}",
        "x".repeat((mix(i) % 40) as usize)
    )
    .into_bytes()
}

/// Inserts `N_KEYS` keys in a scrambled order, overwrites every fifth and removes every
/// seventh; returns what the store must hold. Flushes now and then: eviction and cleaning
/// only touch durable data, so without flushes they would have nothing to do.
fn fill(store: &KvStore) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut model = BTreeMap::new();
    let mut order: Vec<u64> = (0..N_KEYS).collect();
    order.sort_by_key(|&i| mix(i));
    for (n, &i) in order.iter().enumerate() {
        store.insert(&key(i), &value(i, 0)).expect("insert");
        model.insert(key(i), value(i, 0));
        if n % 100 == 99 {
            store.flush().expect("flush");
        }
    }
    for &i in order.iter().filter(|&&i| i % 5 == 0) {
        store.insert(&key(i), &value(i, 1)).expect("overwrite");
        model.insert(key(i), value(i, 1));
    }
    for &i in order.iter().filter(|&&i| i % 7 == 0) {
        assert!(store.remove(&key(i)).expect("remove"), "key {i} was there");
        model.remove(&key(i));
    }
    assert!(
        !store.remove(&key(7)).expect("remove"),
        "key 7 is already gone"
    );
    model
}

/// Every key reads back as in `model` (removed and never-written keys read as absent), and a
/// scan along the sibling links gives exactly the model, in order.
fn check(store: &KvStore, model: &BTreeMap<Vec<u8>, Vec<u8>>) {
    for i in 0..N_KEYS + 10 {
        assert_eq!(
            store.get(&key(i)).expect("get"),
            model.get(&key(i)).cloned(),
            "key {i}"
        );
    }
    let scanned = store.scan().expect("scan");
    let expected: Vec<(Vec<u8>, Vec<u8>)> = model.clone().into_iter().collect();
    assert_eq!(scanned, expected);
}

/// A fresh directory under the temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!("kv-example-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn keys_survive_close_and_reopen() {
    let dir = TempDir::new("close");
    let store = KvStore::open_dir(&dir.0, small_config(None)).expect("open");
    let model = fill(&store);
    check(&store, &model);
    // The small configuration made the cache work, not just hold everything in memory.
    let metrics = store.cache().metrics();
    let n_page_ins = Metrics::get(&metrics.n_page_ins);
    let n_segments_cleaned = Metrics::get(&metrics.n_segments_cleaned);
    let n_consolidations = Metrics::get(&metrics.n_consolidations);
    eprintln!(
        "page-ins {n_page_ins}, segments cleaned {n_segments_cleaned}, consolidations {n_consolidations}"
    );
    assert!(n_page_ins > 0 && n_segments_cleaned > 0 && n_consolidations > 0);
    store.close().expect("close");

    let store = KvStore::open_dir(&dir.0, small_config(None)).expect("reopen");
    check(&store, &model);
    // The reopened store keeps working: splits after a restart find the directory again.
    let mut model = model;
    for i in N_KEYS..N_KEYS + 10 {
        store.insert(&key(i), &value(i, 2)).expect("insert");
        model.insert(key(i), value(i, 2));
    }
    check(&store, &model);
    store.close().expect("close");
}

#[test]
fn keys_survive_a_drop_without_close_after_a_flush() {
    let dir = TempDir::new("drop");
    let store = KvStore::open_dir(
        &dir.0,
        small_config(Some(std::time::Duration::from_millis(50))),
    )
    .expect("open");
    let model = fill(&store);
    store.flush().expect("flush");
    drop(store);

    let store = KvStore::open_dir(&dir.0, small_config(None)).expect("reopen");
    check(&store, &model);
}

#[test]
fn flushed_keys_survive_a_crash_and_later_ones_come_back_as_a_prefix() {
    let storage = Arc::new(SimStorage::new());
    let store = KvStore::open(storage.clone(), small_config(None)).expect("open");
    let model = fill(&store);
    store.flush().expect("flush");
    // Writes after the flush (with splits among them) may or may not survive the crash.
    let n_extra = 4 * MAX_KEYS_PER_LEAF as u64;
    for i in N_KEYS + 10..N_KEYS + 10 + n_extra {
        store.insert(&key(i), &value(i, 3)).expect("insert");
    }
    let crashed: Vec<SimStorage> = (0..4).map(|seed| storage.crash(seed)).collect();
    // Every call through the old handle now fails; dropping the store reports it and moves on.
    drop(store);

    for (seed, survivor) in crashed.into_iter().enumerate() {
        let store = KvStore::open(Arc::new(survivor), small_config(None)).expect("reopen");
        let scanned: BTreeMap<Vec<u8>, Vec<u8>> = store.scan().expect("scan").into_iter().collect();
        let mut model = model.clone();
        // The unflushed inserts are a prefix of the order they were made in.
        let mut n_kept = 0;
        for i in N_KEYS + 10..N_KEYS + 10 + n_extra {
            if let Some(found) = scanned.get(&key(i)) {
                assert_eq!(found, &value(i, 3), "seed {seed} key {i}");
                assert_eq!(n_kept, i - N_KEYS - 10, "seed {seed}: key {i} after a gap");
                n_kept += 1;
                model.insert(key(i), value(i, 3));
            }
        }
        assert_eq!(scanned, model, "seed {seed}");
        check(&store, &model);
        eprintln!("seed {seed}: {n_kept} of {n_extra} unflushed inserts survived");
    }
}

#[test]
fn a_crash_before_any_flush_leaves_an_openable_store() {
    for n_inserts in [0u64, 1, 70, 300] {
        let storage = Arc::new(SimStorage::new());
        let store = KvStore::open(storage.clone(), small_config(None)).expect("open");
        for i in 0..n_inserts {
            store.insert(&key(i), &value(i, 0)).expect("insert");
        }
        let survivor = storage.crash(n_inserts);
        drop(store);
        let store = KvStore::open(Arc::new(survivor), small_config(None)).expect("reopen");
        let scanned = store.scan().expect("scan");
        // Inserts were made in key order, so what survived is the first keys.
        for (idx, (k, v)) in scanned.iter().enumerate() {
            assert_eq!((k, v), (&key(idx as u64), &value(idx as u64, 0)));
        }
        store
            .insert(b"after", b"crash")
            .expect("the store still takes writes");
        assert_eq!(store.get(b"after").expect("get"), Some(b"crash".to_vec()));
    }
}

#[test]
fn concurrent_writers_lose_nothing_while_leaves_split() {
    let storage = Arc::new(SimStorage::new());
    let store = KvStore::open(storage, small_config(None)).expect("open");
    let n_threads = 4u64;
    std::thread::scope(|scope| {
        for thread_idx in 0..n_threads {
            let store = &store;
            scope.spawn(move || {
                for i in (thread_idx..N_KEYS).step_by(n_threads as usize) {
                    store.insert(&key(i), &value(i, 0)).expect("insert");
                }
            });
        }
    });
    let model: BTreeMap<_, _> = (0..N_KEYS).map(|i| (key(i), value(i, 0))).collect();
    check(&store, &model);
}
