//! Integration tests of the simulated storage through `Arc<dyn Storage>`, the way the log uses
//! it: a tiny checksummed append log and an atomically replaced snapshot file, crashed at
//! random points, plus a random-operation model test of what reads see.

use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;

use iobuf::storage::{FaultKind, OpenMode, SimStorage, Storage, StorageFile};

fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// xorshift64*: the tests' own source of random operations.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

/// FNV-1a, enough to tell a torn record from a whole one in a test.
fn checksum(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811C_9DC5u32, |hash, &b| {
        (hash ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// The payload of record `record_idx`: its length and bytes depend only on the index.
fn payload(record_idx: u32) -> Vec<u8> {
    let len_bytes = 1 + (record_idx * 37 % 700) as usize;
    (0..len_bytes)
        .map(|i| (record_idx as usize * 31 + i) as u8)
        .collect()
}

/// Record layout: payload length (u32 LE), checksum of the payload (u32 LE), payload.
fn encode(record_idx: u32) -> Vec<u8> {
    let body = payload(record_idx);
    let mut frame = Vec::with_capacity(8 + body.len());
    frame.extend_from_slice(&(body.len() as u32).to_le_bytes());
    frame.extend_from_slice(&checksum(&body).to_le_bytes());
    frame.extend_from_slice(&body);
    frame
}

/// Scans records from the start; stops at the first incomplete or bad one.
fn recover(storage: &dyn Storage) -> io::Result<u32> {
    if !storage.exists("log")? {
        return Ok(0);
    }
    let file = storage.open("log", OpenMode::MustExist)?;
    let file_len_bytes = file.len()?;
    let (mut offset, mut n_records) = (0u64, 0u32);
    while offset + 8 <= file_len_bytes {
        let mut header = [0u8; 8];
        file.read_exact_at(&mut header, offset)?;
        let body_len_bytes = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let expected = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        if body_len_bytes == 0 || offset + 8 + u64::from(body_len_bytes) > file_len_bytes {
            break;
        }
        let mut body = vec![0u8; body_len_bytes as usize];
        file.read_exact_at(&mut body, offset + 8)?;
        if checksum(&body) != expected || body != payload(n_records) {
            break;
        }
        offset += 8 + u64::from(body_len_bytes);
        n_records += 1;
    }
    Ok(n_records)
}

/// Appends records in batches, syncing after some, crashes at a random point with a random
/// seed, and checks the recovered log is a prefix holding at least every synced record.
#[test]
fn synced_records_survive_random_crashes() {
    for case_idx in 0..u64::from(cases(300)) {
        let mut rng = Rng::new(case_idx);
        let sim = SimStorage::new();
        let storage: Arc<dyn Storage> = Arc::new(sim.clone());
        let file = storage.open("log", OpenMode::CreateNew).unwrap();
        storage.sync_dir().unwrap();
        let (mut offset, mut n_written, mut n_synced) = (0u64, 0u32, 0u32);
        for _ in 0..rng.below(30) {
            let frame = encode(n_written);
            file.write_all_at(&frame, offset).unwrap();
            offset += frame.len() as u64;
            n_written += 1;
            if rng.below(3) == 0 {
                file.sync_data().unwrap();
                n_synced = n_written;
            }
        }
        let after = sim.crash(rng.below(u64::MAX));
        let n_recovered = recover(&after).unwrap();
        assert!(
            (n_synced..=n_written).contains(&n_recovered),
            "case {case_idx}: recovered {n_recovered}, synced {n_synced}, written {n_written}"
        );
        assert_eq!(recover(&sim.crash_keep_all()).unwrap(), n_written);
        assert_eq!(recover(&sim.crash_drop_all()).unwrap(), n_synced);
    }
}

/// Replaces `snap` the right way: write a temporary, sync it, rename over, sync the directory.
/// With `sync_tmp == false` the temporary's content is not synced before the rename: the bug
/// the simulation must expose.
fn replace_snapshot(storage: &dyn Storage, content: &[u8], sync_tmp: bool) -> io::Result<()> {
    let tmp = storage.open("snap.tmp", OpenMode::CreateOrOpen)?;
    tmp.set_len(0)?;
    tmp.write_all_at(content, 0)?;
    if sync_tmp {
        tmp.sync_data()?;
    }
    storage.rename("snap.tmp", "snap")?;
    storage.sync_dir()
}

#[test]
fn atomic_rename_protocol_survives_and_a_missing_sync_is_caught() {
    let old = vec![0xAAu8; 1500];
    let new = vec![0xBBu8; 2100];
    let mut n_bad_when_unsynced = 0;
    for seed in 0..u64::from(cases(200)) {
        for sync_tmp in [true, false] {
            let sim = SimStorage::new();
            replace_snapshot(&sim, &old, true).unwrap();
            // Crash in the middle of the second replacement: before the final sync_dir.
            let tmp = sim.open("snap.tmp", OpenMode::CreateNew).unwrap();
            tmp.write_all_at(&new, 0).unwrap();
            if sync_tmp {
                tmp.sync_data().unwrap();
            }
            sim.rename("snap.tmp", "snap").unwrap();
            let after = sim.crash(seed);
            let snap = after.read_file("snap").expect("a snapshot always exists");
            let is_whole = snap == old || snap == new;
            if sync_tmp {
                assert!(
                    is_whole,
                    "seed {seed}: the correct protocol tore the snapshot"
                );
            } else if !is_whole {
                n_bad_when_unsynced += 1;
            }
            // A completed replacement is durable.
            if sync_tmp {
                let sim = SimStorage::new();
                replace_snapshot(&sim, &old, true).unwrap();
                replace_snapshot(&sim, &new, true).unwrap();
                assert_eq!(sim.crash(seed).read_file("snap").unwrap(), new);
            }
        }
    }
    assert!(
        n_bad_when_unsynced > 0,
        "renaming an unsynced file over the snapshot must be able to lose it"
    );
}

/// A log that stops at its first IO error (fail-stop): for every call index, failing it with
/// either errno leaves a disk whose recovered log holds every acknowledged record.
#[test]
fn failing_each_call_in_turn_never_loses_acknowledged_records() {
    /// Appends 12 records, syncing every 3; returns how many were acknowledged durable.
    fn workload(storage: &dyn Storage) -> (u32, io::Result<()>) {
        let mut n_acked = 0;
        let result = (|| {
            let file = storage.open("log", OpenMode::CreateOrOpen)?;
            storage.sync_dir()?;
            let mut offset = 0u64;
            for record_idx in 0..12u32 {
                let frame = encode(record_idx);
                file.write_all_at(&frame, offset)?;
                offset += frame.len() as u64;
                if record_idx % 3 == 2 {
                    file.sync_data()?;
                    n_acked = record_idx + 1;
                }
            }
            Ok(())
        })();
        (n_acked, result)
    }

    let clean = SimStorage::new();
    let (n_acked, result) = workload(&clean);
    result.unwrap();
    assert_eq!(n_acked, 12);
    let n_calls = clean.n_calls();
    assert_eq!(n_calls, 2 + 12 + 4);

    for fail_idx in 0..n_calls {
        for kind in [FaultKind::Eio, FaultKind::Enospc] {
            let sim = SimStorage::new();
            sim.fail_call(fail_idx, kind);
            let (n_acked, result) = workload(&sim);
            let err = result.unwrap_err();
            assert_eq!(err.raw_os_error(), Some(kind.raw_os_error()));
            assert_eq!(
                sim.n_calls(),
                fail_idx + 1,
                "fail-stop: nothing after the error"
            );
            for seed in 0..8 {
                let n_recovered = recover(&sim.crash(seed)).unwrap();
                assert!(n_recovered >= n_acked, "call {fail_idx} seed {seed}");
            }
        }
    }
}

/// Random operations through `dyn Storage`, checked against a map of names to contents after
/// every step; at the end `crash_keep_all` must equal the model.
#[test]
fn random_operations_match_a_simple_model() {
    const NAMES: [&str; 4] = ["a", "b", "c", "d"];
    for case_idx in 0..u64::from(cases(100)) {
        let mut rng = Rng::new(case_idx + 1_000);
        let sim = SimStorage::new();
        let storage: &dyn Storage = &sim;
        let mut model: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        let mut handles: BTreeMap<String, Arc<dyn StorageFile>> = BTreeMap::new();
        for _ in 0..60 {
            let name = NAMES[rng.below(4) as usize];
            match rng.below(8) {
                0 => {
                    let file = storage.open(name, OpenMode::CreateOrOpen).unwrap();
                    model.entry(name.to_string()).or_default();
                    handles.insert(name.to_string(), file);
                }
                1 | 2 => {
                    if let (Some(file), Some(content)) = (handles.get(name), model.get_mut(name)) {
                        let offset = rng.below(2000) as usize;
                        let data = vec![rng.below(256) as u8; rng.below(900) as usize];
                        file.write_all_at(&data, offset as u64).unwrap();
                        if content.len() < offset + data.len() {
                            content.resize(offset + data.len(), 0);
                        }
                        content[offset..offset + data.len()].copy_from_slice(&data);
                    }
                }
                3 => {
                    if let (Some(file), Some(content)) = (handles.get(name), model.get_mut(name)) {
                        let len_bytes = rng.below(2500);
                        file.set_len(len_bytes).unwrap();
                        content.resize(len_bytes as usize, 0);
                    }
                }
                4 => {
                    if let Some(file) = handles.get(name) {
                        file.sync_data().unwrap();
                    }
                }
                5 => {
                    let result = storage.remove(name);
                    assert_eq!(result.is_ok(), model.remove(name).is_some());
                    handles.remove(name);
                }
                6 => {
                    let to = NAMES[rng.below(4) as usize];
                    let result = storage.rename(name, to);
                    match model.remove(name) {
                        Some(content) => {
                            result.unwrap();
                            model.insert(to.to_string(), content);
                            if let Some(file) = handles.remove(name) {
                                handles.insert(to.to_string(), file);
                            }
                        }
                        None => assert_eq!(result.unwrap_err().kind(), io::ErrorKind::NotFound),
                    }
                }
                _ => storage.sync_dir().unwrap(),
            }
            let names: Vec<String> = model.keys().cloned().collect();
            assert_eq!(storage.list().unwrap(), names, "case {case_idx}");
            for (name, content) in &model {
                assert_eq!(
                    sim.read_file(name).as_ref(),
                    Some(content),
                    "case {case_idx}"
                );
            }
        }
        // Every surviving file of a random crash is no longer than the longest it ever was.
        let crashed = sim.crash(case_idx);
        for name in crashed.file_names() {
            assert!(crashed.read_file(&name).unwrap().len() <= 2900);
        }
        let kept = sim.crash_keep_all();
        let kept_files: BTreeMap<String, Vec<u8>> = kept
            .file_names()
            .into_iter()
            .map(|name| {
                let content = kept.read_file(&name).unwrap();
                (name, content)
            })
            .collect();
        assert_eq!(kept_files, model, "case {case_idx}");
    }
}
