//! Fault injection with reopen: every storage call of a workload, and every storage call of
//! recovery itself, is made to fail in turn (with `EIO` and with `ENOSPC`); after the failure
//! and a crash, reopening must give back every acknowledged message, byte for byte, and
//! nothing that was not written.
//!
//! The workload (writes of every size class including blobs, batches, `make_stable` every few
//! operations, a final `flush` and `close`) runs once on a clean [`SimStorage`] to count its
//! calls; then once per call index and fault kind.

use std::sync::Arc;

use iobuf::storage::{FaultKind, SimStorage, Storage};
use iobuf::{Location, Log, LogConfig, Lsn};

fn config() -> LogConfig {
    LogConfig {
        segment_len_bytes: 2048,
        io_buf_len_bytes: 384,
        n_io_bufs: 3,
        blob_threshold_bytes: 150,
        flush_every: None,
    }
}

const CRASH_SEEDS: [u64; 5] = [1, 2, 5, 0xDEAD_BEEF, 42_424_242];

fn open(storage: &SimStorage) -> Result<(Log, recovery::RecoveryReport), recovery::RecoveryError> {
    recovery::open_log(Arc::new(storage.clone()) as Arc<dyn Storage>, config())
}

fn message_bytes(op_idx: usize, k: usize, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (op_idx as u8).wrapping_mul(29) ^ (k as u8).wrapping_mul(7) ^ (i as u8))
        .collect()
}

/// What the workload saw.
#[derive(Debug, Default)]
struct Outcome {
    /// Completed messages in LSN order.
    completed: Vec<(Location, Vec<u8>)>,
    /// The messages of the operation that failed, if it was a write: in doubt (they may or
    /// may not be on disk), in order.
    in_doubt: Vec<Vec<u8>>,
    /// How many of `completed` (a prefix) were acknowledged durable.
    n_acknowledged: usize,
    /// The first error, as text.
    first_error: Option<String>,
    /// The log, if the workload got as far as opening it and did not close it.
    log: Option<Log>,
}

impl Outcome {
    fn acknowledge_below(&mut self, end: Lsn) {
        let n = self
            .completed
            .iter()
            .take_while(|(location, _)| location.lsn < end)
            .count();
        self.n_acknowledged = self.n_acknowledged.max(n);
    }
}

/// Runs the workload until its first error. With `close`, ends with a flush and a close;
/// without, leaves the log open (for a crash with unsynced data).
fn run_workload(storage: &SimStorage, close: bool) -> Outcome {
    let mut outcome = Outcome::default();
    let log = match open(storage) {
        Ok((log, _)) => log,
        Err(error) => {
            outcome.first_error = Some(format!("open: {error}"));
            return outcome;
        }
    };
    let result = (|| -> Result<(), iobuf::LogError> {
        for op_idx in 0..80usize {
            match op_idx % 7 {
                2 => {
                    // A blob.
                    let bytes = message_bytes(op_idx, 0, 200 + op_idx * 5);
                    outcome.in_doubt = vec![bytes.clone()];
                    let location = log.write(&bytes)?;
                    outcome.completed.push((location, bytes));
                }
                5 => {
                    // A batch, one member of it a blob every other time.
                    let lens = if op_idx % 2 == 0 {
                        vec![30, 170, 12]
                    } else {
                        vec![50, 60, 40]
                    };
                    let batch: Vec<Vec<u8>> = lens
                        .iter()
                        .enumerate()
                        .map(|(k, len)| message_bytes(op_idx, k, *len))
                        .collect();
                    outcome.in_doubt = batch.clone();
                    let refs: Vec<&[u8]> = batch.iter().map(Vec::as_slice).collect();
                    let locations = log.write_batch(&refs)?;
                    outcome.completed.extend(locations.into_iter().zip(batch));
                }
                _ => {
                    let bytes = message_bytes(op_idx, 0, (op_idx * 17) % 140);
                    outcome.in_doubt = vec![bytes.clone()];
                    let location = log.write(&bytes)?;
                    outcome.completed.push((location, bytes));
                }
            }
            outcome.in_doubt.clear();
            if op_idx % 4 == 3 {
                let (last, _) = outcome.completed.last().expect("something was written");
                let lsn = last.lsn;
                log.make_stable(lsn)?;
                outcome.acknowledge_below(Lsn(lsn.0 + 1));
            }
        }
        Ok(())
    })();
    if let Err(error) = result {
        outcome.first_error = Some(error.to_string());
        // Fail-stop: nothing is acknowledged after the first error.
        let probe = log.write(b"after the failure");
        if let Ok(location) = probe {
            assert!(
                log.make_stable(location.lsn).is_err(),
                "make_stable acknowledged a write after the log failed ({error})"
            );
        }
        assert!(
            log.flush().is_err(),
            "flush succeeded after the log failed ({error})"
        );
        outcome.log = Some(log);
        return outcome;
    }
    if !close {
        outcome.log = Some(log);
        return outcome;
    }
    match log.flush() {
        Ok(stable) => outcome.acknowledge_below(stable),
        Err(error) => {
            outcome.first_error = Some(format!("flush: {error}"));
            assert!(log.flush().is_err(), "flush succeeded after a failed flush");
            outcome.log = Some(log);
            return outcome;
        }
    }
    match log.close() {
        Ok(()) => outcome.n_acknowledged = outcome.completed.len(),
        Err(error) => outcome.first_error = Some(format!("close: {error}")),
    }
    outcome
}

/// Reads the whole recovered log of `storage`, or says why it could not.
fn recover(storage: &SimStorage) -> Result<Vec<(Location, Vec<u8>)>, String> {
    let (log, report) = open(storage).map_err(|error| format!("reopen failed: {error}"))?;
    let messages = log
        .iter_from(report.log_start)
        .map_err(|error| error.to_string())?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| format!("iterating the recovered log ({report}): {error}"))?;
    log.close()
        .map_err(|error| format!("closing the recovered log: {error}"))?;
    Ok(messages)
}

/// Checks a recovered log against the workload: every acknowledged message present and
/// exact, the whole a prefix of what was completed (then possibly the in-doubt operation).
fn check_recovered(
    recovered: &[(Location, Vec<u8>)],
    outcome: &Outcome,
    what: &str,
) -> Result<(), String> {
    let n_common = recovered.len().min(outcome.completed.len());
    for (idx, (got, want)) in recovered.iter().zip(&outcome.completed).enumerate() {
        if got.0.lsn != want.0.lsn || got.1 != want.1 {
            return Err(format!(
                "{what}: recovered message {idx} (lsn {}) is not completed message {idx} (lsn {})",
                got.0.lsn, want.0.lsn
            ));
        }
    }
    if recovered.len() < outcome.n_acknowledged {
        return Err(format!(
            "{what}: LOST ACKNOWLEDGED DATA: {} messages recovered, {} acknowledged \
             (first error: {:?})",
            recovered.len(),
            outcome.n_acknowledged,
            outcome.first_error
        ));
    }
    let extra = &recovered[n_common..];
    if !extra.is_empty() {
        let matches_in_doubt = extra.len() <= outcome.in_doubt.len()
            && extra
                .iter()
                .zip(&outcome.in_doubt)
                .all(|(got, want)| got.1 == *want);
        if !matches_in_doubt {
            return Err(format!(
                "{what}: {} messages recovered past the {} completed ones, not the in-doubt \
                 operation's",
                extra.len(),
                outcome.completed.len()
            ));
        }
    }
    Ok(())
}

/// Fails each call of the workload in turn (EIO, then ENOSPC): the workload ends with an
/// error, nothing is acknowledged after it, and after a crash (several seeds, plus one that
/// keeps only synced data) the reopened log holds every acknowledged message exactly and is a
/// prefix of what was completed.
#[test]
fn every_failed_call_of_the_workload_keeps_acknowledged_data() {
    let clean = SimStorage::new();
    let clean_outcome = run_workload(&clean, true);
    assert!(
        clean_outcome.first_error.is_none(),
        "{:?}",
        clean_outcome.first_error
    );
    let n_calls = clean.n_calls();
    assert!(n_calls > 50, "the workload makes {n_calls} calls");
    eprintln!("the workload makes {n_calls} storage calls");
    let mut failures = Vec::new();
    for call_idx in 0..n_calls {
        for kind in [FaultKind::Eio, FaultKind::Enospc] {
            let storage = SimStorage::new();
            storage.fail_call(call_idx, kind);
            let mut outcome = run_workload(&storage, true);
            let what = format!("call {call_idx} failing with {kind:?}");
            if outcome.first_error.is_none() {
                failures.push(format!("{what}: the workload saw no error"));
                continue;
            }
            let log = outcome.log.take();
            let mut crashed: Vec<(String, SimStorage)> = CRASH_SEEDS
                .iter()
                .map(|seed| (format!("crash({seed})"), storage.crash(*seed)))
                .collect();
            crashed.push(("crash_drop_all".to_string(), storage.crash_drop_all()));
            drop(log);
            for (crash, survivor) in crashed {
                let what = format!("{what}, {crash}");
                if let Err(failure) = recover(&survivor)
                    .and_then(|recovered| check_recovered(&recovered, &outcome, &what))
                {
                    failures.push(failure);
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures over {n_calls} call indexes; first ones:\n{}",
        failures.len(),
        failures[..failures.len().min(20)].join("\n")
    );
}

/// Fails each call of recovery itself in turn, on a disk left by a crash with unsynced data
/// (a torn tail, unreferenced blobs): the open returns a typed error, and a second open
/// without faults (on the same disk, and after another crash) still recovers every
/// acknowledged message.
#[test]
fn every_failed_call_of_recovery_is_an_error_and_a_retry_recovers() {
    let storage = SimStorage::new();
    let mut outcome = run_workload(&storage, false);
    assert!(outcome.first_error.is_none(), "{:?}", outcome.first_error);
    // Unsynced data past the last acknowledgement: several more writes, no sync.
    let log = outcome.log.take().unwrap();
    for k in 0..20usize {
        let bytes = message_bytes(100 + k, k, if k % 3 == 0 { 190 } else { 90 });
        let location = log.write(&bytes).unwrap();
        outcome.completed.push((location, bytes));
    }
    assert!(outcome.n_acknowledged < outcome.completed.len());
    let mut n_checked_states = 0;
    let mut failures = Vec::new();
    // `u64::MAX` stands for `crash_keep_all` (every unsynced write lands).
    let crash = |seed: u64| {
        if seed == u64::MAX {
            storage.crash_keep_all()
        } else {
            storage.crash(seed)
        }
    };
    let seeds: Vec<u64> = CRASH_SEEDS.iter().copied().chain([u64::MAX]).collect();
    for &seed in &seeds {
        // The same seed on the dead handle gives the same surviving disk every time.
        let count = crash(seed);
        let clean_open = open(&count);
        let n_calls = count.n_calls();
        let Ok((clean_log, report)) = clean_open else {
            panic!("seed {seed}: clean reopen failed: {:?}", clean_open.err());
        };
        drop(clean_log);
        n_checked_states += 1;
        eprintln!("seed {seed}: recovery makes {n_calls} calls; {report}");
        for call_idx in 0..n_calls {
            for kind in [FaultKind::Eio, FaultKind::Enospc] {
                let what = format!("seed {seed}, recovery call {call_idx} failing with {kind:?}");
                let survivor = crash(seed);
                survivor.fail_call(call_idx, kind);
                // Any `RecoveryError` is typed; what matters is that the open fails.
                if let Ok((log, _)) = open(&survivor) {
                    drop(log);
                    failures.push(format!("{what}: open succeeded"));
                    continue;
                }
                // Retry on the same disk, and after a crash of the half-repaired disk.
                let retry = recover(&survivor)
                    .and_then(|recovered| check_recovered(&recovered, &outcome, &what));
                if let Err(failure) = retry {
                    failures.push(format!("retry: {failure}"));
                }
                let again = crash(seed);
                again.fail_call(call_idx, kind);
                let _ = open(&again).map(|(log, _)| drop(log));
                for crash_seed in [3u64, 77] {
                    let after = again.crash(crash_seed);
                    let retry = recover(&after)
                        .and_then(|recovered| check_recovered(&recovered, &outcome, &what));
                    if let Err(failure) = retry {
                        failures.push(format!("retry after crash({crash_seed}): {failure}"));
                    }
                }
            }
        }
    }
    drop(log);
    assert_eq!(n_checked_states, seeds.len());
    assert!(
        failures.is_empty(),
        "{} failures; first ones:\n{}",
        failures.len(),
        failures[..failures.len().min(20)].join("\n")
    );
}
