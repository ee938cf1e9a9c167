//! What every workload shares: the target directory, opening and pre-scanning the log, the
//! appending threads with their acknowledgements, and the verification pass.
//!
//! A workload is one module (`pages`, `log`, `recover`) with a `run` function that returns a
//! [`RunReport`](crate::report::RunReport). `pages` opens a page cache rather than a bare log
//! and has its own threads and checks (`pages.rs`, `page_check.rs`); the rest of this module
//! serves the two log workloads.

pub mod log;
pub mod pages;
pub mod recover;

use std::collections::{BTreeMap, VecDeque};
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use bench_support::ScratchDir;
use iobuf::{Log, LogConfig, LogMetrics, Lsn};
use recovery::RecoveryReport;

use crate::cli::{Cli, SyncMode};
use crate::error::Error;
use crate::message::{self, MessageKey};
use crate::progress::{Goal, Progress};
use crate::report::Verification;
use crate::stats::{Latencies, OpStats};
use crate::verify::{self, Expect, Outcome, StreamId, Verifier};

/// Where status lines go: stdout, unless stdout is reserved for the JSON object.
#[derive(Clone, Copy, Debug)]
pub struct Out {
    /// `--json` was given.
    pub json: bool,
}

impl Out {
    /// Prints one status line.
    pub fn say(self, text: &str) {
        if self.json {
            eprintln!("{text}");
        } else {
            println!("{text}");
        }
    }
}

/// The directory a run writes to; a temporary one is removed when this is dropped (also when
/// the run fails).
#[derive(Debug)]
pub struct Target {
    /// The log directory.
    pub dir: PathBuf,
    /// The temporary directory, removed when dropped; `None` for the user's `--dir`.
    temporary: Option<ScratchDir>,
}

impl Target {
    /// Whether it is the user's (`--dir`, kept) rather than a temporary one.
    pub fn kept(&self) -> bool {
        self.temporary.is_none()
    }

    /// `--dir` (created if missing) or a fresh directory under the system's temp dir.
    pub fn prepare(dir: Option<&Path>) -> Result<Target, Error> {
        match dir {
            Some(dir) => {
                fs::create_dir_all(dir)
                    .map_err(|e| Error::io(format!("creating directory {}", dir.display()), e))?;
                Ok(Target {
                    dir: dir.to_path_buf(),
                    temporary: None,
                })
            }
            None => {
                // A new directory, never data that someone else owns (it is removed at the end).
                let temporary = ScratchDir::create(&std::env::temp_dir(), "stress")
                    .map_err(|e| Error::io("making the temporary directory", e))?;
                Ok(Target {
                    dir: temporary.path().to_path_buf(),
                    temporary: Some(temporary),
                })
            }
        }
    }
}

/// The log configuration every workload uses: the default, which is what a user gets.
pub fn log_config() -> LogConfig {
    LogConfig::default()
}

/// Opens the log in `dir`, mapping a refusal (locked, corrupt) to [`Error::Open`].
pub fn open(dir: &Path) -> Result<(Log, RecoveryReport), Error> {
    recovery::open_log_dir(dir, log_config()).map_err(|source| Error::Open {
        dir: dir.to_path_buf(),
        source,
    })
}

/// Closes `log` after `error` ended the run, and returns `error`. The log's own close error
/// (a poisoned log repeats the first failure) adds nothing; closing here rather than dropping
/// keeps the log from printing it a second time.
pub fn close_after(log: Log, error: Error) -> Error {
    let _ = log.close();
    error
}

/// What a directory held before this run.
#[derive(Clone, Debug, Default)]
pub struct Existing {
    /// What the open found.
    pub report: RecoveryReport,
    /// Each earlier stream's length: it must be the same at the end.
    pub streams: BTreeMap<StreamId, u64>,
    /// The run number this run uses (one past the highest in the log).
    pub run: u32,
}

impl Existing {
    /// The earlier streams as expectations: exactly as long as they were.
    pub fn expectations(&self) -> BTreeMap<StreamId, Expect> {
        self.streams
            .iter()
            .map(|(&stream, &len)| {
                (
                    stream,
                    Expect {
                        durable: len,
                        exact: Some(len),
                    },
                )
            })
            .collect()
    }
}

/// Opens the log and checks whatever an earlier run left there (a kept `--dir`), so this run
/// can continue it with the next run number and verify both at the end.
pub fn open_and_scan(dir: &Path) -> Result<(Log, Existing), Error> {
    let (log, report) = open(dir)?;
    let outcome = verify::verify_log(&log, report.log_start, Verifier::learning())
        .map_err(|e| Error::log("reading the log already in the directory", e))?;
    if !outcome.passed() {
        return Err(Error::Verification(format!(
            "the log already in {} is not intact (or was not written by stress): {}",
            dir.display(),
            outcome.problems_line()
        )));
    }
    let run = outcome
        .found
        .keys()
        .map(|&(run, _)| run.saturating_add(1))
        .max()
        .unwrap_or(0);
    Ok((
        log,
        Existing {
            report,
            streams: outcome.found,
            run,
        },
    ))
}

/// Reopens `dir`, reads every message back and compares with `expected`. Returns the
/// verification, the raw outcome and how long the open took.
pub fn verify_dir(
    dir: &Path,
    expected: BTreeMap<StreamId, Expect>,
) -> Result<(Verification, Outcome, Duration), Error> {
    let started = Instant::now();
    let (log, report) = open(dir)?;
    let open_elapsed = started.elapsed();
    let outcome = verify::verify_log(&log, report.log_start, Verifier::new(expected))
        .map_err(|e| Error::log("reading the log back", e))?;
    log.close()
        .map_err(|e| Error::log("closing the verified log", e))?;
    let verification = Verification {
        passed: outcome.passed(),
        unit: "messages",
        page_cache_open: None,
        messages_checked: outcome.n_checked,
        durable_expected: outcome.n_durable_expected,
        recovery: report,
        problems: outcome.problems.clone(),
        problems_line: outcome.problems_line(),
    };
    Ok((verification, outcome, open_elapsed))
}

/// Bytes of the files under `dir` (the data file, blob files, the lock file).
pub fn dir_size(dir: &Path) -> Result<u64, Error> {
    let mut total = 0;
    let entries =
        fs::read_dir(dir).map_err(|e| Error::io(format!("listing {}", dir.display()), e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(format!("listing {}", dir.display()), e))?;
        let metadata = entry
            .metadata()
            .map_err(|e| Error::io(format!("reading {}", entry.path().display()), e))?;
        if metadata.is_dir() {
            total += dir_size(&entry.path())?;
        } else {
            total += metadata.len();
        }
    }
    Ok(total)
}

/// How often an unsynced thread leaves a checkpoint for the stable-LSN watcher.
const CHECKPOINT_EVERY: u64 = 256;

/// What the appending threads acknowledged durable, per thread: seqs `0..acked[thread]`.
///
/// Threads that call `make_stable` acknowledge right after it returns. Threads that never
/// sync leave `(lsn, seq)` checkpoints, and the watcher acknowledges those below the log's
/// stable LSN (the background flusher moved it), so `--sync none` is checked too. In a
/// crash-loop child every acknowledgement is also written to stdout, the parent's pipe,
/// *after* the durability call returned: the parent may miss the last ones (the kill), never
/// see one too early.
#[derive(Debug)]
pub struct Acks {
    acked: Vec<AtomicU64>,
    checkpoints: Vec<Mutex<VecDeque<(Lsn, u64)>>>,
    to_stdout: bool,
}

impl Acks {
    /// For `n_threads`; `to_stdout` in a crash-loop child.
    pub fn new(n_threads: u32, to_stdout: bool) -> Acks {
        Acks {
            acked: (0..n_threads).map(|_| AtomicU64::new(0)).collect(),
            checkpoints: (0..n_threads).map(|_| Mutex::default()).collect(),
            to_stdout,
        }
    }

    /// Seqs `0..=seq` of `thread` are durable.
    pub fn ack(&self, thread: u32, seq: u64) -> Result<(), Error> {
        self.acked[thread as usize].fetch_max(seq + 1, Ordering::Relaxed);
        if self.to_stdout {
            // Stdout is line-buffered: each line is one write into the pipe.
            writeln!(std::io::stdout().lock(), "ack {thread} {seq}")
                .map_err(|e| Error::io("writing an acknowledgement to the parent", e))?;
        }
        Ok(())
    }

    fn checkpoint(&self, thread: u32, lsn: Lsn, seq: u64) {
        if let Ok(mut queue) = self.checkpoints[thread as usize].lock() {
            queue.push_back((lsn, seq));
        }
    }

    /// Acknowledges every checkpoint below `stable` (every message below it is durable).
    pub fn poll(&self, stable: Lsn) -> Result<(), Error> {
        for (thread, queue) in self.checkpoints.iter().enumerate() {
            let mut newest = None;
            if let Ok(mut queue) = queue.lock() {
                while let Some(&(lsn, seq)) = queue.front()
                    && lsn < stable
                {
                    newest = Some(seq);
                    queue.pop_front();
                }
            }
            if let Some(seq) = newest {
                self.ack(thread as u32, seq)?;
            }
        }
        Ok(())
    }

    /// Messages acknowledged so far, over all threads.
    pub fn total(&self) -> u64 {
        self.acked.iter().map(|a| a.load(Ordering::Relaxed)).sum()
    }
}

/// How the appending threads run.
#[derive(Clone, Copy, Debug)]
pub struct AppendPlan {
    /// The run number written into each message.
    pub run: u32,
    /// Threads.
    pub n_threads: u32,
    /// Bytes per message.
    pub message_len_bytes: u32,
    /// When to make appends durable.
    pub sync: SyncMode,
    /// Messages per `make_stable` with [`SyncMode::Batch`].
    pub batch_len: u32,
    /// For how long, or how many messages in all.
    pub goal: Goal,
}

impl AppendPlan {
    /// The plan the command line asks for (threads, message length, sync mode), for run `run`,
    /// until `goal`.
    pub fn from_cli(cli: &Cli, run: u32, goal: Goal) -> AppendPlan {
        AppendPlan {
            run,
            n_threads: cli.threads,
            message_len_bytes: cli.message_len_bytes,
            sync: cli.sync_mode(),
            batch_len: cli.batch_len,
            goal,
        }
    }
}

/// What [`append_then_verify`] measured.
#[derive(Debug)]
pub struct AppendRun {
    /// What the appending threads did.
    pub appended: Appended,
    /// How long the final flush took.
    pub final_flush: Duration,
    /// Bytes the log wrote to its data file.
    pub bytes_written: u64,
    /// `fdatasync` calls.
    pub n_syncs: u64,
    /// Seconds spent in `fdatasync`.
    pub sync_secs: f64,
    /// The check of every message after reopening.
    pub verification: Verification,
    /// The raw outcome of that check.
    pub outcome: Outcome,
    /// How long the reopen took.
    pub open_elapsed: Duration,
}

/// The body of the `log` and `recover` workloads: append as the command line says until
/// `goal` (showing progress under `label`), flush, close, then reopen `target` and check every
/// message, this run's and the ones `existing` found. `say_verifying` is printed before the
/// reopen.
pub fn append_then_verify(
    cli: &Cli,
    target: &Target,
    log: Log,
    existing: &Existing,
    goal: Goal,
    label: &str,
    say_verifying: impl FnOnce(),
) -> Result<AppendRun, Error> {
    let plan = AppendPlan::from_cli(cli, existing.run, goal);
    let acks = Acks::new(cli.threads, false);
    let mut progress = Progress::start(label, plan.goal, true);
    let appended = run_appenders(&log, plan, &acks, &mut progress);
    progress.finish();
    let appended = match appended {
        Ok(appended) => appended,
        Err(error) => return Err(close_after(log, error)),
    };
    let flush_started = Instant::now();
    if let Err(e) = log.flush() {
        return Err(close_after(
            log,
            Error::log("flushing at the end of the run", e),
        ));
    }
    let final_flush = flush_started.elapsed();
    let metrics = log.metrics();
    let bytes_written = LogMetrics::get(&metrics.written_bytes);
    let n_syncs = LogMetrics::get(&metrics.n_syncs);
    let sync_secs = metrics.sync_latency.total().as_secs_f64();
    log.close()
        .map_err(|e| Error::log("closing the log after the run", e))?;

    say_verifying();
    let mut expected = existing.expectations();
    for (thread, &written) in appended.written.iter().enumerate() {
        expected.insert(
            (existing.run, thread as u32),
            Expect {
                durable: written,
                exact: Some(written),
            },
        );
    }
    let (verification, outcome, open_elapsed) = verify_dir(&target.dir, expected)?;
    Ok(AppendRun {
        appended,
        final_flush,
        bytes_written,
        n_syncs,
        sync_secs,
        verification,
        outcome,
        open_elapsed,
    })
}

/// What the appending threads did.
#[derive(Debug)]
pub struct Appended {
    /// Wall time from start to the last thread's end.
    pub elapsed: Duration,
    /// `Log::write` latencies.
    pub append: Latencies,
    /// `Log::make_stable` latencies.
    pub make_stable: Latencies,
    /// Messages written per thread.
    pub written: Vec<u64>,
    /// Messages acknowledged durable while running.
    pub acked: u64,
}

impl Appended {
    /// Messages written by all threads.
    pub fn n_appends(&self) -> u64 {
        self.written.iter().sum()
    }

    /// The report's rows for the appends, and for the durable points if any were asked for.
    pub fn op_stats(&self) -> Vec<OpStats> {
        let mut ops = vec![OpStats::new("append", &self.append, self.elapsed)];
        if self.make_stable.count() > 0 {
            ops.push(OpStats::new("make_stable", &self.make_stable, self.elapsed));
        }
        ops
    }
}

struct WorkerResult {
    append: Latencies,
    make_stable: Latencies,
    written: u64,
}

/// Runs the appending threads against `log`, showing progress, until the goal is reached or a
/// thread fails (then the first error is returned).
pub fn run_appenders(
    log: &Log,
    plan: AppendPlan,
    acks: &Acks,
    progress: &mut Progress,
) -> Result<Appended, Error> {
    let stop = AtomicBool::new(false);
    let done: Vec<AtomicU64> = (0..plan.n_threads).map(|_| AtomicU64::new(0)).collect();
    let quota = |thread: u32| match plan.goal {
        Goal::Time(_) => None,
        Goal::Count(n) => {
            let base = n / u64::from(plan.n_threads);
            let extra = u64::from(u64::from(thread) < n % u64::from(plan.n_threads));
            Some(base + extra)
        }
    };
    let started = Instant::now();
    let results = thread::scope(|scope| {
        let workers: Vec<_> = (0..plan.n_threads)
            .map(|thread| {
                let (stop, done) = (&stop, &done[thread as usize]);
                scope.spawn(move || {
                    let result = append_loop(log, plan, thread, quota(thread), acks, stop, done);
                    if result.is_err() {
                        // One failure ends the run for everyone.
                        stop.store(true, Ordering::Relaxed);
                    }
                    result
                })
            })
            .collect();
        let mut watch_error = None;
        loop {
            thread::sleep(Duration::from_millis(50));
            if let Err(error) = acks.poll(log.stable_lsn()) {
                watch_error = Some(error);
                stop.store(true, Ordering::Relaxed);
            }
            progress.update(done.iter().map(|d| d.load(Ordering::Relaxed)).sum());
            let time_up = matches!(plan.goal, Goal::Time(d) if started.elapsed() >= d);
            if time_up || stop.load(Ordering::Relaxed) || workers.iter().all(|w| w.is_finished()) {
                break;
            }
        }
        stop.store(true, Ordering::Relaxed);
        let results: Vec<_> = workers
            .into_iter()
            .map(|worker| {
                worker
                    .join()
                    .unwrap_or(Err(Error::Internal("an appending thread panicked")))
            })
            .collect();
        (results, watch_error)
    });
    let elapsed = started.elapsed();
    let (results, watch_error) = results;
    if let Some(error) = watch_error {
        return Err(error);
    }
    let mut appended = Appended {
        elapsed,
        append: Latencies::default(),
        make_stable: Latencies::default(),
        written: Vec::new(),
        acked: 0,
    };
    for result in results {
        let result = result?;
        appended.append.merge(&result.append);
        appended.make_stable.merge(&result.make_stable);
        appended.written.push(result.written);
    }
    appended.acked = acks.total();
    Ok(appended)
}

fn append_loop(
    log: &Log,
    plan: AppendPlan,
    thread: u32,
    quota: Option<u64>,
    acks: &Acks,
    stop: &AtomicBool,
    done: &AtomicU64,
) -> Result<WorkerResult, Error> {
    let mut message = vec![0u8; plan.message_len_bytes as usize];
    let mut result = WorkerResult {
        append: Latencies::default(),
        make_stable: Latencies::default(),
        written: 0,
    };
    let batch_len = u64::from(plan.batch_len.max(1));
    while !stop.load(Ordering::Relaxed) && quota.is_none_or(|q| result.written < q) {
        let seq = result.written;
        message::encode(
            MessageKey {
                run: plan.run,
                thread,
                seq,
            },
            &mut message,
        );
        let started = Instant::now();
        let location = log
            .write(&message)
            .map_err(|e| Error::log("appending a message", e))?;
        result.append.record(started.elapsed());
        result.written += 1;
        let sync_now = match plan.sync {
            SyncMode::Every => true,
            SyncMode::Batch => result.written.is_multiple_of(batch_len),
            SyncMode::None => false,
        };
        if sync_now {
            let started = Instant::now();
            log.make_stable(location.lsn)
                .map_err(|e| Error::log("making a message durable", e))?;
            result.make_stable.record(started.elapsed());
            acks.ack(thread, seq)?;
        } else if result.written.is_multiple_of(CHECKPOINT_EVERY) {
            acks.checkpoint(thread, location.lsn, seq);
        }
        if result.written.is_multiple_of(64) || sync_now {
            done.store(result.written, Ordering::Relaxed);
        }
    }
    done.store(result.written, Ordering::Relaxed);
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_below_the_stable_lsn_are_acknowledged() {
        let acks = Acks::new(2, false);
        acks.checkpoint(0, Lsn(100), 255);
        acks.checkpoint(0, Lsn(900), 511);
        acks.checkpoint(1, Lsn(500), 255);
        acks.poll(Lsn(600)).unwrap();
        assert_eq!(acks.acked[0].load(Ordering::Relaxed), 256);
        assert_eq!(acks.acked[1].load(Ordering::Relaxed), 256);
        acks.poll(Lsn(901)).unwrap();
        assert_eq!(acks.total(), 512 + 256);
        // Acknowledgements never go back.
        acks.ack(0, 3).unwrap();
        assert_eq!(acks.acked[0].load(Ordering::Relaxed), 512);
    }

    #[test]
    fn a_short_run_writes_verifiable_messages() {
        let target = Target::prepare(None).unwrap();
        let (log, existing) = open_and_scan(&target.dir).unwrap();
        assert_eq!(existing.run, 0);
        let acks = Acks::new(3, false);
        let plan = AppendPlan {
            run: existing.run,
            n_threads: 3,
            message_len_bytes: 40,
            sync: SyncMode::Batch,
            batch_len: 7,
            goal: Goal::Count(100),
        };
        let mut progress = Progress::start("test", plan.goal, false);
        let appended = run_appenders(&log, plan, &acks, &mut progress).unwrap();
        assert_eq!(appended.written, [34, 33, 33]);
        assert_eq!(appended.acked, 28 + 28 + 28);
        log.close().unwrap();
        let expected = appended
            .written
            .iter()
            .enumerate()
            .map(|(t, &n)| {
                (
                    (0, t as u32),
                    Expect {
                        durable: n,
                        exact: Some(n),
                    },
                )
            })
            .collect();
        let (verification, outcome, _) = verify_dir(&target.dir, expected).unwrap();
        assert!(verification.passed, "{:?}", verification.problems);
        assert_eq!(outcome.n_checked, 100);
        // A second run continues with the next run number.
        let (log, existing) = open_and_scan(&target.dir).unwrap();
        assert_eq!(existing.run, 1);
        assert_eq!(existing.streams.len(), 3);
        log.close().unwrap();
        let dir = target.dir.clone();
        drop(target);
        assert!(!dir.exists(), "the temporary directory is removed");
    }
}
