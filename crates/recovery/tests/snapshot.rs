//! Snapshot files: round trips, crash and fault injection at every storage call of a write,
//! torn temporaries, bit flips, and the read-only promise of `load_newest`.

use std::io;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use iobuf::Lsn;
use iobuf::storage::{FaultKind, FsStorage, LockGuard, OpenMode, SimStorage, Storage, StorageFile};
use recovery::{LoadedSnapshot, RecoveryError, SnapshotInfo, SnapshotStore};

const CRASH_SEEDS: u64 = 24;

fn store(storage: &SimStorage) -> SnapshotStore {
    SnapshotStore::new(Arc::new(storage.clone()))
}

fn snapshot_name(generation: u64) -> String {
    format!("snapshot-{generation:020}")
}

/// A payload spanning several 512-byte sectors, different per `tag`, so a torn write is
/// visible and two snapshots are never confused.
fn payload(tag: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| tag.wrapping_mul(31) ^ (i as u8) ^ ((i >> 8) as u8))
        .collect()
}

fn load(storage: &SimStorage) -> Option<LoadedSnapshot> {
    store(storage).load_newest().expect("load_newest")
}

/// The encoded bytes of a valid snapshot of `generation`, made on a scratch disk.
fn valid_file_bytes(generation: u64, replay_from: Lsn, payload: &[u8]) -> Vec<u8> {
    let scratch = SimStorage::new();
    if generation > 1 {
        scratch.write_file_raw(&snapshot_name(generation - 1), b"placeholder");
    }
    let info = store(&scratch).write(replay_from, payload).unwrap();
    assert_eq!(info.generation, generation);
    scratch.read_file(&info.file_name).unwrap()
}

#[test]
fn write_then_load_round_trips_and_removes_older_files() {
    let storage = SimStorage::new();
    let snapshots = store(&storage);
    assert!(
        snapshots.load_newest().unwrap().is_none(),
        "empty directory"
    );

    let first = payload(1, 1300);
    let info = snapshots.write(Lsn(4096), &first).unwrap();
    assert_eq!(
        info,
        SnapshotInfo {
            file_name: snapshot_name(1),
            generation: 1,
            replay_from: Lsn(4096),
            len_bytes: 44 + 1300,
        }
    );
    let loaded = snapshots.load_newest().unwrap().unwrap();
    assert_eq!(loaded.info, info);
    assert_eq!(loaded.payload, first);
    assert!(loaded.rejected.is_empty());

    for generation in 2..6u64 {
        let bytes = payload(generation as u8, 100 * generation as usize);
        let info = snapshots.write(Lsn(generation * 1000), &bytes).unwrap();
        assert_eq!(info.generation, generation);
        assert_eq!(storage.file_names(), vec![snapshot_name(generation)]);
        let loaded = snapshots.load_newest().unwrap().unwrap();
        assert_eq!(loaded.info, info);
        assert_eq!(loaded.payload, bytes);
    }

    // An empty payload is a snapshot too.
    let info = snapshots.write(Lsn(7), &[]).unwrap();
    assert_eq!(info.len_bytes, 44);
    let loaded = snapshots.load_newest().unwrap().unwrap();
    assert_eq!((loaded.info, loaded.payload), (info, Vec::new()));

    // Durable once `write` returned: nothing unsynced is needed.
    let after = storage.crash_drop_all();
    let loaded = load(&after).unwrap();
    assert_eq!(loaded.info.generation, 6);
}

#[test]
fn generation_counts_invalid_and_temporary_files_and_foreign_names_are_untouched() {
    let storage = SimStorage::new();
    storage.write_file_raw(&snapshot_name(7), b"garbage, not a snapshot");
    storage.write_file_raw(&format!("{}.tmp", snapshot_name(9)), b"torn");
    for foreign in [
        "log.data",
        "snapshot-1",
        "snapshot-00000000000000000003.bak",
    ] {
        storage.write_file_raw(foreign, b"not ours");
    }
    let info = store(&storage).write(Lsn(1), b"new").unwrap();
    assert_eq!(info.generation, 10);
    assert_eq!(
        storage.file_names(),
        vec![
            "log.data".to_string(),
            "snapshot-00000000000000000003.bak".to_string(),
            snapshot_name(10),
            "snapshot-1".to_string(),
        ]
    );
}

#[test]
fn works_on_the_real_file_system() {
    let dir = std::env::temp_dir().join(format!(
        "recovery-snapshot-test-{}-{:?}",
        std::process::id(),
        std::time::SystemTime::now()
    ));
    let storage = Arc::new(FsStorage::open_dir(&dir).unwrap());
    let snapshots = SnapshotStore::new(storage.clone());
    assert!(snapshots.load_newest().unwrap().is_none());
    let first = snapshots.write(Lsn(11), &payload(1, 3000)).unwrap();
    let second = snapshots.write(Lsn(22), &payload(2, 5000)).unwrap();
    assert_eq!((first.generation, second.generation), (1, 2));
    assert_eq!(storage.list().unwrap(), vec![snapshot_name(2)]);

    // A fresh store on the same directory (a restart) sees the same snapshot.
    let reopened = SnapshotStore::new(Arc::new(FsStorage::open_dir(&dir).unwrap()));
    let loaded = reopened.load_newest().unwrap().unwrap();
    assert_eq!(loaded.info, second);
    assert_eq!(loaded.payload, payload(2, 5000));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The directory the fault tests start from: one valid snapshot (generation 1) and a leftover
/// temporary from an interrupted write (so the write under test removes something first).
fn old_state() -> SimStorage {
    let storage = SimStorage::new();
    store(&storage).write(Lsn(500), &payload(1, 1200)).unwrap();
    storage.write_file_raw(&format!("{}.tmp", snapshot_name(4)), &payload(9, 700));
    storage
}

const NEW_GENERATION: u64 = 5;

fn new_payload() -> Vec<u8> {
    payload(2, 2100)
}

/// Checks that `loaded` is exactly the old snapshot or exactly the new one.
fn assert_old_or_new(loaded: &LoadedSnapshot, context: &str) {
    match loaded.info.generation {
        1 => {
            assert_eq!(loaded.info.replay_from, Lsn(500), "{context}");
            assert_eq!(loaded.payload, payload(1, 1200), "{context}");
        }
        NEW_GENERATION => {
            assert_eq!(loaded.info.replay_from, Lsn(900), "{context}");
            assert_eq!(loaded.payload, new_payload(), "{context}");
        }
        other => panic!("{context}: loaded generation {other}"),
    }
}

/// A failure at every storage call of a write, then a crash with many outcomes: the old or the
/// new snapshot comes back, whole, never garbage and never nothing. After `Ok`, only the new.
/// Then the next write on the crashed disk works and is the only snapshot left.
#[test]
fn crash_at_every_call_of_a_write_loads_old_or_new() {
    let clean = old_state();
    let n_before = clean.n_calls();
    store(&clean).write(Lsn(900), &new_payload()).unwrap();
    let n_write_calls = clean.n_calls() - n_before;
    assert_eq!(n_write_calls, 10, "the steps of one write");

    let mut n_loaded_by_generation = [0u32; 2];
    for n_ok_calls in 0..=n_write_calls {
        let kind = if n_ok_calls % 2 == 0 {
            FaultKind::Eio
        } else {
            FaultKind::Enospc
        };
        let storage = old_state();
        storage.fail_all_from(n_before + n_ok_calls, kind);
        let result = store(&storage).write(Lsn(900), &new_payload());
        let is_ok = n_ok_calls == n_write_calls;
        match &result {
            Ok(info) => assert!(is_ok, "{info:?}"),
            Err(RecoveryError::Io { source, .. }) => {
                assert!(!is_ok);
                assert_eq!(source.raw_os_error(), Some(kind.raw_os_error()));
            }
            Err(other) => panic!("unexpected error {other}"),
        }

        let mut crashed: Vec<(String, SimStorage)> = (0..CRASH_SEEDS)
            .map(|seed| (format!("seed {seed}"), storage.crash(seed)))
            .collect();
        crashed.push(("drop all".to_string(), storage.crash_drop_all()));
        crashed.push(("keep all".to_string(), storage.crash_keep_all()));
        for (how, after) in crashed {
            let context = format!("{n_ok_calls} calls ok, crash {how}");
            let loaded = load(&after).unwrap_or_else(|| panic!("{context}: nothing loaded"));
            assert_old_or_new(&loaded, &context);
            n_loaded_by_generation[usize::from(loaded.info.generation == NEW_GENERATION)] += 1;
            if is_ok {
                assert_eq!(loaded.info.generation, NEW_GENERATION, "{context}");
            }

            let next = store(&after).write(Lsn(1000), b"next").unwrap();
            assert_eq!(
                after.file_names(),
                vec![next.file_name.clone()],
                "{context}"
            );
            let loaded = load(&after).unwrap();
            assert_eq!((loaded.info, loaded.payload), (next, b"next".to_vec()));
        }
    }
    let [n_old, n_new] = n_loaded_by_generation;
    assert!(
        n_old > 0 && n_new > 0,
        "both outcomes occur: {n_old} old, {n_new} new"
    );
}

/// Records every storage call by name (with the open mode), then passes it on.
#[derive(Debug, Clone)]
struct RecordingStorage {
    inner: Arc<dyn Storage>,
    calls: Arc<Mutex<Vec<String>>>,
}

impl RecordingStorage {
    fn new(inner: Arc<dyn Storage>) -> RecordingStorage {
        RecordingStorage {
            inner,
            calls: Arc::new(Mutex::new(Vec::new())),
        }
    }

    fn calls(&self) -> MutexGuard<'_, Vec<String>> {
        self.calls.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn record(&self, call: String) {
        self.calls().push(call);
    }
}

#[derive(Debug)]
struct RecordingFile {
    inner: Arc<dyn StorageFile>,
    storage: RecordingStorage,
}

impl Storage for RecordingStorage {
    fn open(&self, name: &str, mode: OpenMode) -> io::Result<Arc<dyn StorageFile>> {
        self.record(format!("open {mode:?}"));
        Ok(Arc::new(RecordingFile {
            inner: self.inner.open(name, mode)?,
            storage: self.clone(),
        }))
    }
    fn remove(&self, name: &str) -> io::Result<()> {
        self.record("remove".to_string());
        self.inner.remove(name)
    }
    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        self.record("rename".to_string());
        self.inner.rename(from, to)
    }
    fn list(&self) -> io::Result<Vec<String>> {
        self.record("list".to_string());
        self.inner.list()
    }
    fn exists(&self, name: &str) -> io::Result<bool> {
        self.record("exists".to_string());
        self.inner.exists(name)
    }
    fn sync_dir(&self) -> io::Result<()> {
        self.record("sync_dir".to_string());
        self.inner.sync_dir()
    }
    fn try_lock(&self) -> io::Result<Option<Box<dyn LockGuard>>> {
        self.record("try_lock".to_string());
        self.inner.try_lock()
    }
}

impl StorageFile for RecordingFile {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.storage.record("read_exact_at".to_string());
        self.inner.read_exact_at(buf, offset)
    }
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.storage.record("write_all_at".to_string());
        self.inner.write_all_at(buf, offset)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.storage.record("sync_data".to_string());
        self.inner.sync_data()
    }
    fn len(&self) -> io::Result<u64> {
        self.storage.record("len".to_string());
        self.inner.len()
    }
    fn set_len(&self, len_bytes: u64) -> io::Result<()> {
        self.storage.record("set_len".to_string());
        self.inner.set_len(len_bytes)
    }
}

/// The write performs exactly the documented steps, in order: the directory sync after the
/// rename comes before any older snapshot is removed.
#[test]
fn write_steps_are_in_the_documented_order() {
    let storage = old_state();
    let recording = RecordingStorage::new(Arc::new(storage.clone()));
    SnapshotStore::new(Arc::new(recording.clone()))
        .write(Lsn(900), &new_payload())
        .unwrap();
    assert_eq!(
        *recording.calls(),
        [
            "list",
            "remove",
            "open CreateNew",
            "write_all_at",
            "write_all_at",
            "sync_data",
            "rename",
            "sync_dir",
            "remove",
            "sync_dir"
        ]
    );
}

/// Weak point 8: a rename whose directory was never synced can be undone by a crash. A crash
/// right after the rename (the `sync_dir` after it fails) reverts it: load returns the previous
/// snapshot, and the older one was not removed first.
#[test]
fn crash_between_rename_and_directory_sync_keeps_the_previous_snapshot() {
    let clean = old_state();
    let n_before = clean.n_calls();
    let recording = RecordingStorage::new(Arc::new(clean.clone()));
    SnapshotStore::new(Arc::new(recording.clone()))
        .write(Lsn(900), &new_payload())
        .unwrap();
    let rename_idx = recording
        .calls()
        .iter()
        .position(|call| call == "rename")
        .unwrap() as u64;

    let storage = old_state();
    storage.fail_call(n_before + rename_idx + 1, FaultKind::Eio);
    let err = store(&storage).write(Lsn(900), &new_payload()).unwrap_err();
    assert!(err.to_string().contains("syncing the directory"), "{err}");
    // The rename is visible before the crash...
    assert_eq!(load(&storage).unwrap().info.generation, NEW_GENERATION);
    assert!(storage.file_names().contains(&snapshot_name(1)));
    // ...and a crash that keeps no unsynced directory change reverts it.
    let after = storage.crash_drop_all();
    let loaded = load(&after).unwrap();
    assert_eq!(loaded.info.generation, 1);
    assert_old_or_new(&loaded, "rename reverted");
    assert!(loaded.rejected.is_empty());
}

/// Weak point 7 of the original: it wrote snapshots under one temporary name and filtered
/// temporaries under another, so a torn temporary was picked up as the newest snapshot. Here a
/// `*.tmp` file is never loaded, whether garbage, torn, or even complete and valid.
#[test]
fn temporary_files_are_never_loaded() {
    let valid = valid_file_bytes(2, Lsn(77), &payload(5, 900));
    let torn = {
        let mut torn = valid.clone();
        torn[600..].fill(0);
        torn
    };
    let contents: [(&str, Vec<u8>); 5] = [
        ("empty", Vec::new()),
        ("garbage", payload(3, 1000)),
        ("torn", torn),
        ("truncated", valid[..500].to_vec()),
        ("complete", valid.clone()),
    ];
    for (what, bytes) in contents {
        let storage = SimStorage::new();
        store(&storage).write(Lsn(10), b"the real one").unwrap();
        storage.write_file_raw(&format!("{}.tmp", snapshot_name(2)), &bytes);
        storage.write_file_raw(&format!("{}.tmp", snapshot_name(3)), &bytes);
        let loaded = load(&storage).unwrap();
        assert_eq!(loaded.info.generation, 1, "{what}");
        assert_eq!(loaded.payload, b"the real one", "{what}");
        assert!(
            loaded.rejected.is_empty(),
            "{what}: temporaries are not candidates"
        );

        // Alone, a temporary is still nothing to load.
        let alone = SimStorage::new();
        alone.write_file_raw(&format!("{}.tmp", snapshot_name(2)), &bytes);
        assert!(load(&alone).is_none(), "{what}");
    }
}

/// A bit flipped anywhere in the newest snapshot makes load fall back to the previous one (or
/// return `None` without one), never panic or return wrong bytes. Truncating or extending it
/// does the same.
#[test]
fn damage_anywhere_falls_back_to_the_previous_snapshot() {
    let previous_payload = payload(1, 90);
    let previous = valid_file_bytes(1, Lsn(100), &previous_payload);
    let newest = valid_file_bytes(2, Lsn(200), &payload(2, 70));

    let with_previous = SimStorage::new();
    with_previous.write_file_raw(&snapshot_name(1), &previous);
    let alone = SimStorage::new();

    let check = |damaged: &[u8], what: &str| {
        with_previous.write_file_raw(&snapshot_name(2), damaged);
        let loaded = load(&with_previous).unwrap_or_else(|| panic!("{what}: None"));
        assert_eq!(loaded.info.generation, 1, "{what}");
        assert_eq!(loaded.info.replay_from, Lsn(100), "{what}");
        assert_eq!(loaded.payload, previous_payload, "{what}");
        assert_eq!(loaded.rejected.len(), 1, "{what}");
        assert_eq!(loaded.rejected[0].file_name, snapshot_name(2), "{what}");

        alone.write_file_raw(&snapshot_name(2), damaged);
        assert!(load(&alone).is_none(), "{what}");
    };

    for byte_idx in 0..newest.len() {
        for bit in 0..8 {
            let mut damaged = newest.clone();
            damaged[byte_idx] ^= 1 << bit;
            check(&damaged, &format!("bit {bit} of byte {byte_idx} flipped"));
        }
    }
    for len in 0..newest.len() {
        check(&newest[..len], &format!("truncated to {len} bytes"));
    }
    let mut extended = newest.clone();
    extended.push(0);
    check(&extended, "one byte appended");

    // The undamaged newest loads, and nothing is rejected.
    with_previous.write_file_raw(&snapshot_name(2), &newest);
    let loaded = load(&with_previous).unwrap();
    assert_eq!(loaded.info.generation, 2);
    assert!(loaded.rejected.is_empty());
}

#[test]
fn a_file_under_another_generation_name_is_rejected() {
    let storage = SimStorage::new();
    store(&storage).write(Lsn(1), b"one").unwrap();
    store(&storage).write(Lsn(2), b"two").unwrap();
    let two = storage.read_file(&snapshot_name(2)).unwrap();
    storage.write_file_raw(&snapshot_name(3), &two);
    let loaded = load(&storage).unwrap();
    assert_eq!(loaded.info.generation, 2);
    assert_eq!(loaded.rejected.len(), 1);
    assert!(loaded.rejected[0].reason.contains("generation"));
}

#[test]
fn odd_names_are_ignored_and_an_overflowing_generation_is_rejected() {
    let storage = SimStorage::new();
    store(&storage).write(Lsn(3), b"real").unwrap();
    let valid = storage.read_file(&snapshot_name(1)).unwrap();
    for odd in [
        "snapshot-2",
        "snapshot-000000000000000000002",
        "snapshot-0000000000000000000x",
        "snapshot-00000000000000000002.bak",
        "Snapshot-00000000000000000002",
    ] {
        storage.write_file_raw(odd, &valid);
    }
    storage.write_file_raw("snapshot-99999999999999999999", &valid);
    let loaded = load(&storage).unwrap();
    assert_eq!(loaded.info.generation, 1);
    assert_eq!(loaded.payload, b"real");
    assert_eq!(loaded.rejected.len(), 1);
    assert_eq!(
        loaded.rejected[0].file_name,
        "snapshot-99999999999999999999"
    );
}

#[test]
fn last_generation_is_a_typed_error_and_changes_nothing() {
    let storage = SimStorage::new();
    storage.write_file_raw(&snapshot_name(u64::MAX), b"whatever");
    let err = store(&storage).write(Lsn(1), b"x").unwrap_err();
    assert!(
        matches!(err, RecoveryError::SnapshotGenerationsExhausted),
        "{err}"
    );
    assert_eq!(storage.file_names(), vec![snapshot_name(u64::MAX)]);
}

/// `load_newest` makes only reading calls, and the disk (current and durable) is unchanged.
#[test]
fn load_newest_is_read_only() {
    let storage = SimStorage::new();
    store(&storage).write(Lsn(1), &payload(1, 800)).unwrap();
    store(&storage).write(Lsn(2), &payload(2, 800)).unwrap();
    let good = storage.read_file(&snapshot_name(2)).unwrap();
    storage.write_file_raw(&snapshot_name(1), &good); // wrong generation: rejected
    storage.write_file_raw(&snapshot_name(3), b"garbage"); // rejected
    storage.write_file_raw(&format!("{}.tmp", snapshot_name(4)), b"torn");
    storage.write_file_raw("log.data", b"not ours");

    let snapshot_of = |storage: &SimStorage| -> Vec<(String, Vec<u8>)> {
        storage
            .file_names()
            .into_iter()
            .map(|name| {
                let bytes = storage.read_file(&name).unwrap();
                (name, bytes)
            })
            .collect()
    };
    let before = snapshot_of(&storage);

    let recording = RecordingStorage::new(Arc::new(storage.clone()));
    let loaded = SnapshotStore::new(Arc::new(recording.clone()))
        .load_newest()
        .unwrap()
        .unwrap();
    assert_eq!(loaded.info.generation, 2);
    assert_eq!(loaded.rejected.len(), 1);
    let calls = recording.calls().clone();
    assert!(!calls.is_empty());
    for call in &calls {
        assert!(
            ["list", "exists", "open MustExist", "len", "read_exact_at"].contains(&call.as_str()),
            "mutating call {call}"
        );
    }
    // One positional read per file examined (generation 3, then 2).
    assert_eq!(calls.iter().filter(|c| *c == "read_exact_at").count(), 2);

    assert_eq!(snapshot_of(&storage), before);
    assert_eq!(snapshot_of(&storage.crash_drop_all()), before);
}

/// An IO error while loading is an error, not a reason to fall back silently.
#[test]
fn io_errors_while_loading_are_errors() {
    let storage = SimStorage::new();
    store(&storage).write(Lsn(1), b"one").unwrap();
    let n_before = storage.n_calls();
    load(&storage).unwrap();
    let n_load_calls = storage.n_calls() - n_before;
    for call_idx in 0..n_load_calls {
        let start = storage.n_calls();
        storage.fail_call(start + call_idx, FaultKind::Eio);
        let err = store(&storage).load_newest().unwrap_err();
        assert!(matches!(err, RecoveryError::Io { .. }), "{err}");
        storage.clear_faults();
    }
    assert_eq!(load(&storage).unwrap().payload, b"one");
}
