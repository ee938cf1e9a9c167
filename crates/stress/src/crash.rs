//! `--crash-loop N`: run the log workload in a child process, kill it with SIGKILL at a random
//! moment, reopen, verify, repeat.
//!
//! The child is this same program, re-executed with a hidden flag (`--crash-child-run RUN`).
//! It appends messages of run `RUN` and, *after* each durability call returns, prints
//! `ack THREAD SEQ` on stdout, a pipe the parent reads: seqs `0..=SEQ` of that thread are
//! durable. The parent may miss the last acknowledgements (the kill can land between the call
//! and the print), never see one early. After the kill the parent reopens the directory and
//! requires: every acknowledged message present; every message intact, of a started thread,
//! in order per thread, runs in order; and every earlier run exactly as long as the previous
//! verification found it (a later crash must not change what an earlier recovery returned).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, ExitCode, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;

use crate::cli::Cli;
use crate::error::{Error, one_line};
use crate::progress::{Goal, Progress};
use crate::report::CrashLoopReport;
use crate::verify::{Expect, StreamId};
use crate::workload::{self, Acks, AppendPlan, Out, Target};

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
    vec![
        ("crash_loop", json!(n_kills)),
        ("kill_within_ms", json!(cli.kill_within_ms)),
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
    let seed = cli.seed.unwrap_or_else(|| {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        nanos ^ u64::from(std::process::id()) << 32
    });
    let mut rng = Rng::new(seed);
    let (log, existing) = workload::open_and_scan(&target.dir)?;
    log.close()
        .map_err(|e| Error::log("closing the log after the first scan", e))?;
    let mut known: BTreeMap<StreamId, Expect> = existing.expectations();
    let mut report = CrashLoopReport {
        settings: settings(cli, n_kills, seed),
        dir: target.dir.display().to_string(),
        dir_kept: target.kept,
        ..CrashLoopReport::default()
    };
    out.say(&format!(
        "stress crash loop: {n_kills} kill(s) of a child appending with {} thread(s), sync {}, \
         each within {} ms of its start (seed {seed}), in {}",
        cli.threads,
        cli.sync_mode().name(),
        cli.kill_within_ms,
        target.dir.display()
    ));
    let exe = std::env::current_exe()
        .map_err(|e| Error::io("finding this program's executable to re-run it", e))?;
    for kill_idx in 0..n_kills {
        let run = existing.run + kill_idx;
        let mut child = Command::new(&exe)
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
        let stdout_reader = read_all(child.stdout.take());
        let stderr_reader = read_all(child.stderr.take());
        let kill_after =
            Duration::from_millis(rng.between(cli.kill_within_ms / 10, cli.kill_within_ms));
        let killed = kill_at(&mut child, kill_after)?;
        let stdout = stdout_reader.join().unwrap_or_default();
        let stderr = stderr_reader.join().unwrap_or_default();
        let status = child
            .wait()
            .map_err(|e| Error::io("waiting for the child", e))?;
        if !killed {
            report.exited_before_kill += 1;
            if !status.success() {
                return Err(Error::CrashLoop(format!(
                    "the child of run {run} failed on its own ({status}): {}",
                    stderr.trim().replace('\n', " ")
                )));
            }
        } else {
            report.kills += 1;
        }
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

/// Waits `after`, then kills the child with SIGKILL (`Child::kill` on Unix). Returns whether it
/// was killed (false: it had already ended).
fn kill_at(child: &mut Child, after: Duration) -> Result<bool, Error> {
    let started = Instant::now();
    while started.elapsed() < after {
        if child
            .try_wait()
            .map_err(|e| Error::io("checking on the child", e))?
            .is_some()
        {
            return Ok(false);
        }
        thread::sleep(Duration::from_millis(2));
    }
    match child.kill() {
        Ok(()) => Ok(true),
        // It ended between the last check and the kill.
        Err(error) if error.kind() == std::io::ErrorKind::InvalidInput => Ok(false),
        Err(error) => Err(Error::io("killing the child", error)),
    }
}

/// The child's side: append run `run` to `--dir` until killed, acknowledging on stdout.
pub fn child_main(cli: &Cli, run: u32) -> ExitCode {
    match child(cli, run) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", one_line(&error));
            ExitCode::FAILURE
        }
    }
}

fn child(cli: &Cli, run: u32) -> Result<(), Error> {
    let dir = cli
        .dir
        .as_deref()
        .ok_or_else(|| Error::Usage("a crash-loop child needs --dir".to_owned()))?;
    let (log, _) = workload::open(Path::new(dir))?;
    let plan = AppendPlan {
        run,
        n_threads: cli.threads,
        message_len_bytes: cli.message_len_bytes,
        sync: cli.sync_mode(),
        batch_len: cli.batch_len,
        goal: Goal::Time(cli.duration()),
    };
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
