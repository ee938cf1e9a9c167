//! `--crash-loop N`: run the workload (`pages` or `log`) in a child process, kill it with
//! SIGKILL at a random moment, reopen, verify, repeat.
//!
//! The child is this same program, re-executed with a hidden flag (`--crash-child-run RUN`).
//!
//! With `pages`, the child opens the page cache, adopts every page it finds, and runs the
//! workload's threads. After each flush (`make_stable`) a thread prints what it made durable,
//! one line per key it touched since its last flush: `live KEY PID ALLOC_SEQ LAST_SEQ` or
//! `freed KEY SEQ`; before each free it prints `freeing KEY SEQ`. After the kill the parent
//! reopens the directory, reads every page back and requires, per key, the reported state or
//! a later state of the same life, and no page unless allowed (see `page_check.rs`). What that
//! verification found is the starting point of the next kill.
//!
//! A gap of that check: a value depends on its key and sequence number only, and the next
//! child continues a key at the sequence number after what recovery kept. So if a write cut
//! by recovery came back later in the same life, it would equal the next child's write of that
//! number and pass. The `log` loop's exact run lengths check that a cut message stays gone;
//! for pages, the page cache's own crash tests (`crates/pagecache/tests/model.rs`,
//! `crash_sweep.rs`) require the recovered state to be a prefix of the acknowledged history
//! after every crash.
//!
//! With `log`, the child appends messages of run `RUN` and, *after* each durability call returns, prints
//! `ack THREAD SEQ` on stdout, a pipe the parent reads: seqs `0..=SEQ` of that thread are
//! durable. The parent may miss the last acknowledgements (the kill can land between the call
//! and the print), never see one early. After the kill the parent reopens the directory and
//! requires: every acknowledged message present; every message intact, of a started thread,
//! in order per thread, runs in order; and every earlier run exactly as long as the previous
//! verification found it (a later crash must not change what an earlier recovery returned).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::cli::{Cli, Workload};
use crate::error::{Error, one_line};
use crate::page_check::{self, CrashModel};
use crate::progress::{Goal, Progress};
use crate::report::{CrashLoopReport, PageCacheOpen, Verification};
use crate::verify::{Expect, StreamId};
use crate::workload::{self, Acks, AppendPlan, Out, Target, pages};

/// A child that is never killed stops on its own after this long (the parent died, say).
const CHILD_DEADLINE: Duration = Duration::from_secs(600);

/// xorshift64*: the kill moments need no better randomness than this, and a seed makes a
/// failing sequence repeatable.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (any value).
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15 | 1)
    }

    /// The next value.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A value in `low..=high`.
    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.next_u64() % (high - low + 1)
    }
}

/// Parses the child's stdout: `ack THREAD SEQ` lines, newest acknowledgement per thread
/// (as a count: seqs `0..count` are durable). Lines that are not acks are ignored; a thread
/// number out of range is an error (the child and parent disagree).
pub fn parse_acks(text: &str, n_threads: u32) -> Result<Vec<u64>, String> {
    let mut acked = vec![0u64; n_threads as usize];
    // A last line without its newline was cut short by the kill: ignore it.
    for line in text.split_inclusive('\n').filter(|l| l.ends_with('\n')) {
        let mut words = line.split_whitespace();
        if words.next() != Some("ack") {
            continue;
        }
        let (Some(thread), Some(seq), None) = (words.next(), words.next(), words.next()) else {
            return Err(format!("malformed acknowledgement line {line:?}"));
        };
        let (Ok(thread), Ok(seq)) = (thread.parse::<u32>(), seq.parse::<u64>()) else {
            return Err(format!("malformed acknowledgement line {line:?}"));
        };
        let Some(slot) = acked.get_mut(thread as usize) else {
            return Err(format!(
                "acknowledgement for thread {thread} of {n_threads}"
            ));
        };
        *slot = (*slot).max(seq + 1);
    }
    Ok(acked)
}

fn settings(cli: &Cli, n_kills: u32, seed: u64) -> Vec<(&'static str, serde_json::Value)> {
    if cli.workload == Workload::Pages {
        let mut settings = vec![
            ("crash_loop", json!(n_kills)),
            ("kill_within_ms", json!(cli.kill_within_ms())),
            ("seed", json!(seed)),
        ];
        settings.extend(
            pages::settings(cli)
                .into_iter()
                .filter(|(name, _)| *name != "duration_secs" && *name != "ops"),
        );
        return settings;
    }
    vec![
        ("crash_loop", json!(n_kills)),
        ("kill_within_ms", json!(cli.kill_within_ms())),
        ("seed", json!(seed)),
        ("threads", json!(cli.threads)),
        ("message_len_bytes", json!(cli.message_len_bytes)),
        ("sync", json!(cli.sync_mode().name())),
        ("batch_len", json!(cli.batch_len)),
    ]
}

/// Runs the crash loop on `target`.
pub fn run_loop(
    cli: &Cli,
    target: &Target,
    n_kills: u32,
    out: Out,
) -> Result<CrashLoopReport, Error> {
    let seed = pages::seed(cli);
    if cli.workload == Workload::Pages {
        return run_pages_loop(cli, target, n_kills, seed, out);
    }
    let mut rng = Rng::new(seed);
    let (log, existing) = workload::open_and_scan(&target.dir)?;
    log.close()
        .map_err(|e| Error::log("closing the log after the first scan", e))?;
    let mut known: BTreeMap<StreamId, Expect> = existing.expectations();
    let mut report = CrashLoopReport {
        workload: "log",
        settings: settings(cli, n_kills, seed),
        dir: target.dir.display().to_string(),
        dir_kept: target.kept(),
        ..CrashLoopReport::default()
    };
    out.say(&format!(
        "stress crash loop: {n_kills} kill(s) of a child appending with {} thread(s), sync {}, \
         each within {} ms of its start (seed {seed}), in {}",
        cli.threads,
        cli.sync_mode().name(),
        cli.kill_within_ms(),
        target.dir.display()
    ));
    let exe = std::env::current_exe()
        .map_err(|e| Error::io("finding this program's executable to re-run it", e))?;
    for kill_idx in 0..n_kills {
        let run = existing.run + kill_idx;
        let child = Command::new(&exe)
            .arg("log")
            .arg("--dir")
            .arg(&target.dir)
            .args(["--threads", &cli.threads.to_string()])
            .args(["--message-len-bytes", &cli.message_len_bytes.to_string()])
            .args(["--sync", cli.sync_mode().name()])
            .args(["--batch-len", &cli.batch_len.to_string()])
            .args(["--duration-secs", &CHILD_DEADLINE.as_secs().to_string()])
            .args(["--crash-child-run", &run.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Error::io(format!("starting the child {}", exe.display()), e))?;
        let kill_within_ms = cli.kill_within_ms();
        let kill_after = Duration::from_millis(rng.between(kill_within_ms / 10, kill_within_ms));
        let (killed, stdout) =
            run_until_killed(child, kill_after, &mut report, &format!("run {run}"))?;
        let acked = parse_acks(&stdout, cli.threads).map_err(Error::CrashLoop)?;
        let n_acked: u64 = acked.iter().sum();
        report.acked_durable += n_acked;
        let mut expected = known.clone();
        for (thread, &durable) in acked.iter().enumerate() {
            expected.insert(
                (run, thread as u32),
                Expect {
                    durable,
                    exact: None,
                },
            );
        }
        let (verification, outcome, _) = workload::verify_dir(&target.dir, expected.clone())?;
        let lost: u64 = expected
            .iter()
            .map(|(stream, expect)| {
                expect
                    .durable
                    .saturating_sub(*outcome.found.get(stream).unwrap_or(&0))
            })
            .sum();
        report.lost += lost;
        report.messages_verified += outcome.n_checked;
        report.messages_in_log = outcome.n_checked;
        let this_run: u64 = (0..cli.threads)
            .map(|t| *outcome.found.get(&(run, t)).unwrap_or(&0))
            .sum();
        let line = format!(
            "kill {}/{n_kills}: run {run} {} after {} ms; it acknowledged {n_acked} durable, the \
             log holds {this_run} of its messages; reopen: {}; {}",
            kill_idx + 1,
            if killed { "killed" } else { "ended on its own" },
            kill_after.as_millis(),
            torn_text(&verification.recovery),
            if verification.passed {
                "verified"
            } else {
                "VERIFICATION FAILED"
            }
        );
        out.say(&line);
        report.kill_lines.push(line);
        let passed = verification.passed;
        report.last = verification;
        if !passed {
            break;
        }
        // What this recovery returned is now fixed: later crashes must not change it.
        for thread in 0..cli.threads {
            let len = *outcome.found.get(&(run, thread)).unwrap_or(&0);
            known.insert(
                (run, thread),
                Expect {
                    durable: len,
                    exact: Some(len),
                },
            );
        }
    }
    Ok(report)
}

/// The pages crash loop; see the module doc.
fn run_pages_loop(
    cli: &Cli,
    target: &Target,
    n_kills: u32,
    seed: u64,
    out: Out,
) -> Result<CrashLoopReport, Error> {
    let mut rng = Rng::new(seed);
    let config = pages::page_config(cli)?;
    let (cache, _) = pages::open_cache(&target.dir, config.clone())?;
    let start = pages::scan_existing(&cache, &target.dir, cli.pages);
    // Every life a later child begins starts above this seq.
    let below = start.as_ref().ok().map(|_| pages::seq_base(&cache));
    let closed = cache.close();
    let start = start?;
    let mut below = below.unwrap_or(Ok(0))?;
    closed.map_err(|e| Error::cache("closing the page cache after the first scan", e))?;
    let mut model = CrashModel::from_scan(&start, cli.pages, below);
    let mut report = CrashLoopReport {
        workload: "pages",
        settings: settings(cli, n_kills, seed),
        dir: target.dir.display().to_string(),
        dir_kept: target.kept(),
        messages_in_log: start.n_checked,
        ..CrashLoopReport::default()
    };
    let kill_within_ms = cli.kill_within_ms();
    out.say(&format!(
        "stress crash loop: {n_kills} kill(s) of a child running pages with {} thread(s) on {} \
         pages ({} live now), make_stable every {} ops per thread, each kill within {} ms of \
         its start (seed {seed}), in {}",
        cli.threads,
        cli.pages,
        start.found.len(),
        cli.flush_every_ops,
        kill_within_ms,
        target.dir.display()
    ));
    let exe = std::env::current_exe()
        .map_err(|e| Error::io("finding this program's executable to re-run it", e))?;
    for kill_idx in 0..n_kills {
        let child = Command::new(&exe)
            .arg("pages")
            .arg("--dir")
            .arg(&target.dir)
            .args(["--threads", &cli.threads.to_string()])
            .args(["--pages", &cli.pages.to_string()])
            .args(["--fragment-len-bytes", &cli.fragment_len_bytes.to_string()])
            .args(["--mix", &cli.mix.to_string()])
            .args(["--cache-budget-bytes", &cli.cache_budget_bytes.to_string()])
            .args(["--segment-len-bytes", &cli.segment_len_bytes.to_string()])
            .args(["--flush-every-ops", &cli.flush_every_ops.to_string()])
            .args(["--duration-secs", &CHILD_DEADLINE.as_secs().to_string()])
            .args(["--seed", &rng.next_u64().to_string()])
            .args(["--crash-child-run", &kill_idx.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Error::io(format!("starting the child {}", exe.display()), e))?;
        let kill_after = Duration::from_millis(rng.between(kill_within_ms / 10, kill_within_ms));
        let which = format!("kill {}", kill_idx + 1);
        let (killed, stdout) = run_until_killed(child, kill_after, &mut report, &which)?;
        let n_reports = model.apply_text(&stdout).map_err(Error::CrashLoop)?;
        report.acked_durable += n_reports;

        let (cache, reopened) = pages::open_cache(&target.dir, config.clone())?;
        let scan = page_check::scan(&cache, cli.pages);
        let next_below = scan.as_ref().ok().map(|_| pages::seq_base(&cache));
        let closed = cache.close();
        let scan = scan?;
        closed.map_err(|e| Error::cache("closing the verified page cache", e))?;
        let check = model.check(&scan);
        report.lost += check.lost;
        report.messages_verified += scan.n_checked;
        report.messages_in_log = scan.n_checked;
        let passed = check.problems.count == 0;
        let line = format!(
            "kill {}/{n_kills}: child {} after {} ms; it acknowledged {n_reports} page states \
             durable; reopen: {}, {} records replayed; {} live pages; {}",
            kill_idx + 1,
            if killed { "killed" } else { "ended on its own" },
            kill_after.as_millis(),
            torn_text(&reopened.log),
            reopened.records_replayed,
            scan.n_checked,
            if passed {
                "verified"
            } else {
                "VERIFICATION FAILED"
            }
        );
        out.say(&line);
        report.kill_lines.push(line);
        report.last = Verification {
            passed,
            unit: "pages",
            messages_checked: scan.n_checked,
            durable_expected: n_reports,
            recovery: reopened.log.clone(),
            page_cache_open: Some(PageCacheOpen::new(&reopened)),
            problems: check.problems.kept.clone(),
            problems_line: check.problems.line(),
        };
        if !passed {
            break;
        }
        // What this recovery returned is where the next child starts.
        below = next_below.unwrap_or(Ok(below))?;
        model = CrashModel::from_scan(&scan, cli.pages, below);
    }
    Ok(report)
}

/// One line on what the reopen cut.
fn torn_text(report: &recovery::RecoveryReport) -> String {
    match report.cut_at {
        Some(cut) => format!(
            "torn tail cut at {cut}, {} bytes erased, {} later segments discarded",
            report.bytes_erased, report.segments_discarded
        ),
        None => "no torn tail".to_owned(),
    }
}

/// Reads a child's pipe to the end on a thread (so the child never blocks on a full pipe).
fn read_all(pipe: Option<impl Read + Send + 'static>) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut text = String::new();
        if let Some(pipe) = pipe {
            let mut reader = BufReader::new(pipe);
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                text.push_str(&line);
                line.clear();
            }
        }
        text
    })
}

/// Lets `child` run for `kill_after`, then kills it ([`kill_at`]); counts in `report` whether
/// the kill ended it, and returns that and what it printed on stdout. A child that ended on
/// its own must have succeeded (`which` names it in the error).
fn run_until_killed(
    mut child: Child,
    kill_after: Duration,
    report: &mut CrashLoopReport,
    which: &str,
) -> Result<(bool, String), Error> {
    let stdout_reader = read_all(child.stdout.take());
    let stderr_reader = read_all(child.stderr.take());
    kill_at(&mut child, kill_after)?;
    let stdout = stdout_reader.join().unwrap_or_default();
    let stderr = stderr_reader.join().unwrap_or_default();
    let status = child
        .wait()
        .map_err(|e| Error::io("waiting for the child", e))?;
    if was_killed(status) {
        report.kills += 1;
        return Ok((true, stdout));
    }
    report.exited_before_kill += 1;
    if !status.success() {
        return Err(Error::CrashLoop(format!(
            "the child of {which} failed on its own ({status}): {}",
            stderr.trim().replace('\n', " ")
        )));
    }
    Ok((false, stdout))
}

/// Waits `after` (or until the child ends on its own), then kills the child with SIGKILL
/// (`Child::kill` on Unix) if it still runs. Whether the kill is what ended it, the caller
/// learns from the exit status ([`was_killed`]).
fn kill_at(child: &mut Child, after: Duration) -> Result<(), Error> {
    let started = Instant::now();
    while started.elapsed() < after {
        if child
            .try_wait()
            .map_err(|e| Error::io("checking on the child", e))?
            .is_some()
        {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(2));
    }
    match child.kill() {
        Ok(()) => Ok(()),
        // It ended between the last check and the kill (older toolchains report that so).
        Err(error) if error.kind() == std::io::ErrorKind::InvalidInput => Ok(()),
        Err(error) => Err(Error::io("killing the child", error)),
    }
}

/// Whether the child ended by the SIGKILL of [`kill_at`], rather than on its own.
///
/// Fix: this used to be whether `Child::kill` succeeded, but it also succeeds on a child that
/// exited (and was not yet waited for) in the moment before the kill, so such a child was
/// counted as killed and its exit status, even a failure, never checked.
fn was_killed(status: ExitStatus) -> bool {
    /// SIGKILL's number on every Unix this runs on.
    const SIGKILL: i32 = 9;
    status.signal() == Some(SIGKILL)
}

/// The child's side: run the workload on `--dir` until killed, reporting on stdout.
pub fn child_main(cli: &Cli, run: u32) -> ExitCode {
    let result = match cli.workload {
        Workload::Pages => pages_child(cli),
        _ => child(cli, run),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", one_line(&error));
            ExitCode::FAILURE
        }
    }
}

fn pages_child(cli: &Cli) -> Result<(), Error> {
    let dir = cli
        .dir
        .as_deref()
        .ok_or_else(|| Error::Usage("a crash-loop child needs --dir".to_owned()))?;
    let (cache, _) = pages::open_cache(dir, pages::page_config(cli)?)?;
    let result = (|| {
        let start = pages::scan_existing(&cache, dir, cli.pages)?;
        let plan = pages::PagesPlan {
            n_threads: cli.threads,
            n_keys: cli.pages,
            fragment_len_bytes: cli.fragment_len_bytes as usize,
            mix: cli.mix,
            flush_every_ops: cli.flush_every_ops,
            goal: Goal::Time(cli.duration()),
            seq_base: pages::seq_base(&cache)?,
            seed: pages::seed(cli),
        };
        let reporter = pages::Reporter::Stdout;
        pages::run_workers(&cache, plan, &start.found, &reporter, false)?;
        cache
            .flush()
            .map_err(|e| Error::cache("flushing at the end of the child's run", e))?;
        Ok(())
    })();
    let closed = cache.close();
    result?;
    closed.map_err(|e| Error::cache("closing the page cache", e))
}

fn child(cli: &Cli, run: u32) -> Result<(), Error> {
    let dir = cli
        .dir
        .as_deref()
        .ok_or_else(|| Error::Usage("a crash-loop child needs --dir".to_owned()))?;
    let (log, _) = workload::open(Path::new(dir))?;
    let plan = AppendPlan::from_cli(cli, run, Goal::Time(cli.duration()));
    let acks = Acks::new(cli.threads, true);
    let mut progress = Progress::start("child", plan.goal, false);
    if let Err(error) = workload::run_appenders(&log, plan, &acks, &mut progress) {
        return Err(workload::close_after(log, error));
    }
    if let Err(e) = log.flush() {
        let error = Error::log("flushing at the end of the child's run", e);
        return Err(workload::close_after(log, error));
    }
    log.close().map_err(|e| Error::log("closing the log", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_keep_the_newest_per_thread() {
        let text = "ack 0 5\nack 1 2\nack 0 9\nack 0 7\nnoise\n";
        assert_eq!(parse_acks(text, 3), Ok(vec![10, 3, 0]));
        // A line cut short by the kill is not an acknowledgement.
        assert_eq!(parse_acks("ack 0 1\nack 0 12", 1), Ok(vec![2]));
        assert!(parse_acks("ack 0\n", 1).is_err());
        assert!(parse_acks("ack 4 1\n", 2).is_err());
        assert!(parse_acks("ack x 1\n", 2).is_err());
    }

    #[test]
    fn a_child_that_failed_just_before_the_kill_is_not_counted_as_killed() {
        // By the kill it has exited, but nobody waited for it yet: `Child::kill` still
        // succeeds on it, which is what used to count it as killed. Its output reaching
        // its end says it exited (no timer to trust on a loaded machine).
        let mut failed = Command::new("sh")
            .args(["-c", "exit 3"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut output = Vec::new();
        std::io::Read::read_to_end(failed.stdout.as_mut().unwrap(), &mut output).unwrap();
        kill_at(&mut failed, Duration::ZERO).unwrap();
        let status = failed.wait().unwrap();
        assert!(!was_killed(status), "{status}");
        assert_eq!(status.code(), Some(3));

        let mut running = Command::new("sleep").arg("10").spawn().unwrap();
        kill_at(&mut running, Duration::ZERO).unwrap();
        assert!(was_killed(running.wait().unwrap()));
    }

    #[test]
    fn kill_moments_stay_in_the_window() {
        let mut rng = Rng::new(42);
        for _ in 0..1000 {
            let ms = rng.between(100, 1000);
            assert!((100..=1000).contains(&ms));
        }
        let a: Vec<u64> = (0..5).map(|_| Rng::new(7).next_u64()).collect();
        assert!(
            a.windows(2).all(|w| w[0] == w[1]),
            "same seed, same sequence"
        );
    }
}
