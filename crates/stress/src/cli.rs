//! The command line: flags, their defaults and limits, and the checks across flags.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::message::HEADER_LEN_BYTES;

/// The largest message the program writes: larger ones go to the log's blob files, one file
/// each, which is a different workload from the one this program measures.
pub const MAX_MESSAGE_LEN_BYTES: u32 = 1 << 20;

/// Runs the log under load, reports throughput, latency and recovery figures, then reopens
/// the directory and verifies every message against what the run acknowledged.
///
/// With no arguments: the `log` workload for 10 s on a temporary directory, removed at the end.
#[derive(Parser, Debug, Clone, PartialEq)]
#[command(name = "stress", version)]
pub struct Cli {
    /// What to run: `log` (threads appending to a plain log) or `recover` (write N messages,
    /// close, time the reopen).
    #[arg(value_enum, default_value_t = Workload::Log)]
    pub workload: Workload,

    /// Keep the data in this directory (created if missing; an existing stress log there is
    /// extended and verified too). Default: a fresh temporary directory, removed at the end.
    #[arg(long, value_name = "PATH")]
    pub dir: Option<PathBuf>,

    /// How long the `log` workload appends.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_secs)]
    pub duration_secs: f64,

    /// Threads appending at once.
    #[arg(long, value_name = "N", default_value_t = 4,
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub threads: u32,

    /// Bytes per message, header included (the 28-byte header names the run, thread, sequence
    /// number and checksum).
    #[arg(long, value_name = "BYTES", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(HEADER_LEN_BYTES as i64..=MAX_MESSAGE_LEN_BYTES as i64))]
    pub message_len_bytes: u32,

    /// When appends are made durable: `none` (only the log's background flusher and the final
    /// flush), `every` (make_stable after each message), `batch` (after every --batch-len
    /// messages of a thread). Default: batch for `log`, none for `recover`.
    #[arg(long, value_enum, value_name = "MODE")]
    pub sync: Option<SyncMode>,

    /// Messages per make_stable call with `--sync batch`.
    #[arg(long, value_name = "N", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub batch_len: u32,

    /// Messages the `recover` workload writes before it closes and reopens the log.
    #[arg(long, value_name = "N", default_value_t = 5_000_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub updates: u64,

    /// Print the figures as one JSON object on stdout (progress and notes go to stderr).
    #[arg(long)]
    pub json: bool,

    /// First measure the target directory's ceilings (4 KiB write + fdatasync, sequential
    /// write, uncontended CAS; about 1 s each), then print each result as a ratio to its
    /// ceiling.
    #[arg(long)]
    pub ceilings: bool,

    /// Instead of one timed run: run the workload in a child process N times, kill it with
    /// SIGKILL at a random moment, reopen, and verify everything it acknowledged durable.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub crash_loop: Option<u32>,

    /// With --crash-loop: the child is killed at a random moment up to this long after it
    /// starts (at least a tenth of it).
    #[arg(long, value_name = "MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(10..=3_600_000))]
    pub kill_within_ms: u64,

    /// Seed of the crash loop's kill moments (default: from the clock).
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,

    /// Internal: run as the crash loop's child, writing this run number, acknowledging on
    /// stdout.
    #[arg(long, hide = true, value_name = "RUN")]
    pub crash_child_run: Option<u32>,
}

/// A workload.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// Threads appending self-describing messages to a plain log for --duration-secs.
    Log,
    /// Write --updates messages, close, reopen and time the open (the recovery scan).
    Recover,
}

impl Workload {
    /// The name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Log => "log",
            Workload::Recover => "recover",
        }
    }
}

/// When the workload makes its appends durable.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    /// Never asks: the background flusher and the final flush make things durable.
    None,
    /// `make_stable` after every message.
    Every,
    /// `make_stable` after every `--batch-len` messages of a thread.
    Batch,
}

impl SyncMode {
    /// The name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            SyncMode::None => "none",
            SyncMode::Every => "every",
            SyncMode::Batch => "batch",
        }
    }
}

impl Cli {
    /// The sync mode in force: the flag, or the workload's default.
    pub fn sync_mode(&self) -> SyncMode {
        self.sync.unwrap_or(match self.workload {
            Workload::Log => SyncMode::Batch,
            Workload::Recover => SyncMode::None,
        })
    }

    /// The `log` workload's run time.
    pub fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.duration_secs)
    }

    /// Checks across flags that clap cannot express.
    pub fn validate(&self) -> Result<(), String> {
        if self.crash_loop.is_some() {
            if self.workload != Workload::Log {
                return Err(format!(
                    "--crash-loop runs the log workload; it does not apply to `{}`",
                    self.workload.name()
                ));
            }
            if self.ceilings {
                return Err(
                    "--ceilings compares a timed run with the disk; it does not combine with \
                     --crash-loop"
                        .to_owned(),
                );
            }
        }
        if self.crash_child_run.is_some() && self.crash_loop.is_some() {
            return Err("a crash-loop child cannot run a crash loop itself".to_owned());
        }
        Ok(())
    }
}

/// What parsing decided when it did not produce a runnable command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseExit {
    /// `--help` or `--version`: print this on stdout and exit 0.
    Info(String),
    /// A bad command line: print `error: {this}` (one line) on stderr and exit 2.
    Bad(String),
}

/// Parses and validates a command line (`args` includes the program name).
pub fn parse<I, T>(args: I) -> Result<Cli, ParseExit>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = Cli::try_parse_from(args).map_err(|error| {
        use clap::error::ErrorKind;
        match error.kind() {
            ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
                ParseExit::Info(error.render().to_string())
            }
            _ => ParseExit::Bad(one_line_clap(&error.render().to_string())),
        }
    })?;
    cli.validate().map_err(ParseExit::Bad)?;
    Ok(cli)
}

/// clap's multi-line error as one line: its message and hints, without the usage block.
fn one_line_clap(rendered: &str) -> String {
    let parts: Vec<&str> = rendered
        .lines()
        .map(str::trim)
        .filter(|line| {
            !line.is_empty()
                && !line.starts_with("Usage:")
                && !line.starts_with("For more information")
        })
        .collect();
    let line = parts.join(" ");
    let line = line.strip_prefix("error: ").unwrap_or(&line);
    format!("{line} (see --help)")
}

/// Parses a positive, finite number of seconds.
fn parse_secs(text: &str) -> Result<f64, String> {
    let secs: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a number of seconds"))?;
    if !secs.is_finite() || secs <= 0.0 || secs > 1e6 {
        return Err(format!(
            "{text} s is not a usable duration (give more than 0 and at most 1000000)"
        ));
    }
    Ok(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(args: &[&str]) -> Result<Cli, ParseExit> {
        parse(std::iter::once("stress").chain(args.iter().copied()))
    }

    fn bad(args: &[&str]) -> String {
        match parsed(args) {
            Err(ParseExit::Bad(line)) => line,
            other => panic!("{args:?} should be refused, got {other:?}"),
        }
    }

    #[test]
    fn no_arguments_is_the_default_log_run() {
        let cli = parsed(&[]).unwrap();
        assert_eq!(cli.workload, Workload::Log);
        assert_eq!(cli.dir, None);
        assert_eq!(cli.duration(), Duration::from_secs(10));
        assert_eq!(cli.threads, 4);
        assert_eq!(cli.message_len_bytes, 100);
        assert_eq!(cli.sync_mode(), SyncMode::Batch);
        assert!(!cli.json && !cli.ceilings);
        assert_eq!(cli.crash_loop, None);
    }

    #[test]
    fn flags_parse() {
        let cli = parsed(&[
            "recover",
            "--dir",
            "/mnt/disk/stress",
            "--updates",
            "5000",
            "--threads",
            "2",
            "--message-len-bytes",
            "28",
            "--json",
            "--ceilings",
        ])
        .unwrap();
        assert_eq!(cli.workload, Workload::Recover);
        assert_eq!(cli.dir, Some(PathBuf::from("/mnt/disk/stress")));
        assert_eq!(cli.updates, 5000);
        assert_eq!(cli.sync_mode(), SyncMode::None);
        assert!(cli.json && cli.ceilings);
        let cli = parsed(&[
            "--sync",
            "every",
            "--duration-secs",
            "0.5",
            "--crash-loop",
            "3",
        ])
        .unwrap();
        assert_eq!(cli.sync_mode(), SyncMode::Every);
        assert_eq!(cli.duration(), Duration::from_millis(500));
        assert_eq!(cli.crash_loop, Some(3));
    }

    #[test]
    fn bad_values_are_one_line_errors() {
        for args in [
            &["--sync", "sometimes"][..],
            &["--threads", "0"],
            &["--threads", "many"],
            &["--message-len-bytes", "27"],
            &["--duration-secs", "-1"],
            &["--duration-secs", "nan"],
            &["--crash-loop", "0"],
            &["--no-such-flag"],
            &["pages"],
        ] {
            let line = bad(args);
            assert!(!line.contains('\n'), "{args:?}: {line}");
            assert!(line.ends_with("(see --help)"), "{args:?}: {line}");
        }
        assert!(bad(&["--sync", "sometimes"]).contains("sometimes"));
        assert!(bad(&["--sync", "sometimes"]).contains("possible values: none, every, batch"));
    }

    #[test]
    fn contradicting_flags_are_refused() {
        assert!(bad(&["recover", "--crash-loop", "2"]).contains("--crash-loop runs the log"));
        assert!(bad(&["--crash-loop", "2", "--ceilings"]).contains("does not combine"));
    }

    #[test]
    fn help_is_information_not_an_error() {
        match parsed(&["--help"]) {
            Err(ParseExit::Info(text)) => {
                assert!(text.contains("--crash-loop"));
                assert!(
                    !text.contains("crash-child-run"),
                    "the child flag is hidden"
                );
            }
            other => panic!("{other:?}"),
        }
    }
}
