//! The command line: flags, their defaults and limits, and the checks across flags.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::message::HEADER_LEN_BYTES;

/// The largest message the program writes: larger ones go to the log's blob files, one file
/// each, which is a different workload from the one this program measures.
pub const MAX_MESSAGE_LEN_BYTES: u32 = 1 << 20;

/// Runs the page cache (or the plain log) under load, reports throughput, latency and recovery
/// figures, then reopens the directory and verifies every page or message against what the run
/// acknowledged.
///
/// With no arguments: the `pages` workload for 10 s on a temporary directory, removed at the
/// end.
#[derive(Parser, Debug, Clone, PartialEq)]
#[command(name = "stress", version)]
pub struct Cli {
    /// What to run: `pages` (threads doing get, link, replace, allocate and free on a page
    /// cache), `log` (threads appending to a plain log) or `recover` (write N messages, close,
    /// time the reopen).
    #[arg(value_enum, default_value_t = Workload::Pages)]
    pub workload: Workload,

    /// Keep the data in this directory (created if missing; an existing stress log there is
    /// extended and verified too). Default: a fresh temporary directory, removed at the end.
    #[arg(long, value_name = "PATH")]
    pub dir: Option<PathBuf>,

    /// How long the `log` workload appends, or the `pages` workload runs its mix (after
    /// loading the pages).
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_secs)]
    pub duration_secs: f64,

    /// `pages`: run this many operations of the mix in all (over every thread) instead of
    /// --duration-secs.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub ops: Option<u64>,

    /// `pages`: how many page keys. Each is loaded (allocated) first, then the mix works on
    /// them; thread t writes the keys with key % threads == t, every thread reads any key.
    #[arg(long, value_name = "N", default_value_t = 100_000,
          value_parser = clap::value_parser!(u64).range(1..=MAX_PAGES))]
    pub pages: u64,

    /// `pages`: bytes of each fragment written, header included (the 36-byte header names the
    /// page key and op seq and carries the page's running checksum).
    #[arg(long, value_name = "BYTES", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(HEADER_LEN_BYTES_PAGE as i64..=MAX_MESSAGE_LEN_BYTES as i64))]
    pub fragment_len_bytes: u32,

    /// `pages`: the operation mix, as weights (omitted kinds get 0).
    #[arg(long, value_name = "MIX", default_value = "get=50,link=30,replace=10,allocate=5,free=5",
          value_parser = parse_mix)]
    pub mix: Mix,

    /// `pages`: the page cache's budget for resident fragments (suffixes KiB, MiB, GiB).
    /// Smaller than the data by default, so pages are evicted and read back.
    #[arg(long, value_name = "BYTES", default_value = "8MiB", value_parser = parse_bytes)]
    pub cache_budget_bytes: u64,

    /// `pages`: the log's segment length (a power of two; suffixes KiB, MiB). Fixed when the
    /// directory is created.
    #[arg(long, value_name = "BYTES", default_value = "1MiB", value_parser = parse_bytes)]
    pub segment_len_bytes: u64,

    /// `pages`: each thread makes its writes durable (make_stable) every N operations.
    #[arg(long, value_name = "N", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub flush_every_ops: u64,

    /// Threads appending at once.
    #[arg(long, value_name = "N", default_value_t = 4,
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub threads: u32,

    /// `log`, `recover`: bytes per message, header included (the 28-byte header names the run, thread, sequence
    /// number and checksum).
    #[arg(long, value_name = "BYTES", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(HEADER_LEN_BYTES as i64..=MAX_MESSAGE_LEN_BYTES as i64))]
    pub message_len_bytes: u32,

    /// `log`, `recover`: when appends are made durable: `none` (only the log's background flusher and the final
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

    /// Instead of one timed run: run the workload (`pages` or `log`) in a child process N
    /// times, kill it with SIGKILL at a random moment, reopen, and verify everything it
    /// acknowledged durable.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub crash_loop: Option<u32>,

    /// With --crash-loop: the child is killed at a random moment up to this long after it
    /// starts (at least a tenth of it). Default: 3000 for `pages` (the child opens and reads
    /// every page first), 1000 for `log`.
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(10..=3_600_000))]
    pub kill_within_ms: Option<u64>,

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
    /// Threads doing a mix of get, link, replace, allocate and free on a page cache.
    Pages,
    /// Threads appending self-describing messages to a plain log for --duration-secs.
    Log,
    /// Write --updates messages, close, reopen and time the open (the recovery scan).
    Recover,
}

impl Workload {
    /// The name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Pages => "pages",
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
            Workload::Log | Workload::Pages => SyncMode::Batch,
            Workload::Recover => SyncMode::None,
        })
    }

    /// The crash loop's kill window, in milliseconds.
    pub fn kill_within_ms(&self) -> u64 {
        self.kill_within_ms.unwrap_or(match self.workload {
            Workload::Pages => 3000,
            Workload::Log | Workload::Recover => 1000,
        })
    }

    /// The `log` workload's run time.
    pub fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.duration_secs)
    }

    /// Checks across flags that clap cannot express.
    pub fn validate(&self) -> Result<(), String> {
        if self.workload == Workload::Pages && self.sync.is_some() {
            return Err(
                "--sync applies to `log` and `recover`; `pages` makes its writes durable every \
                 --flush-every-ops operations"
                    .to_owned(),
            );
        }
        if !self.segment_len_bytes.is_power_of_two() {
            return Err(format!(
                "--segment-len-bytes {} is not a power of two",
                self.segment_len_bytes
            ));
        }
        if self.crash_loop.is_some() {
            if self.workload == Workload::Recover {
                return Err(format!(
                    "--crash-loop runs the pages or log workload; it does not apply to `{}`",
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

/// The most page keys a run may ask for.
pub const MAX_PAGES: u64 = 100_000_000;

/// The fragment header's length, as the flag's lower bound.
const HEADER_LEN_BYTES_PAGE: usize = crate::page::HEADER_LEN_BYTES;

/// The `pages` workload's operation mix, as weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mix {
    /// `get` of any key.
    pub get: u32,
    /// `link` of a one-op delta to an own live key.
    pub link: u32,
    /// `replace` of an own live key's value by a new base.
    pub replace: u32,
    /// `allocate` of an own key that has no live page.
    pub allocate: u32,
    /// `free` of an own live key.
    pub free: u32,
}

impl Mix {
    /// The sum of the weights (never 0 after parsing).
    pub fn total(&self) -> u32 {
        self.get + self.link + self.replace + self.allocate + self.free
    }
}

impl std::fmt::Display for Mix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "get={},link={},replace={},allocate={},free={}",
            self.get, self.link, self.replace, self.allocate, self.free
        )
    }
}

/// Parses `get=50,link=30,...`: each kind at most once, weights up to 1000, not all zero.
fn parse_mix(text: &str) -> Result<Mix, String> {
    let mut mix = Mix {
        get: 0,
        link: 0,
        replace: 0,
        allocate: 0,
        free: 0,
    };
    let mut seen = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((name, weight)) = part.split_once('=') else {
            return Err(format!("`{part}` is not KIND=WEIGHT"));
        };
        let name = name.trim();
        let weight: u32 = weight
            .trim()
            .parse()
            .ok()
            .filter(|w| *w <= 1000)
            .ok_or_else(|| format!("`{part}`: the weight must be a whole number 0..=1000"))?;
        let slot = match name {
            "get" => &mut mix.get,
            "link" => &mut mix.link,
            "replace" => &mut mix.replace,
            "allocate" => &mut mix.allocate,
            "free" => &mut mix.free,
            other => {
                return Err(format!(
                    "`{other}` is not an operation (get, link, replace, allocate, free)"
                ));
            }
        };
        if seen.contains(&name) {
            return Err(format!("`{name}` is given twice"));
        }
        seen.push(name);
        *slot = weight;
    }
    if mix.total() == 0 {
        return Err("the mix needs at least one operation with a weight above 0".to_owned());
    }
    Ok(mix)
}

/// Parses a byte count: a whole number with an optional KiB, MiB or GiB suffix.
fn parse_bytes(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let (number, unit) = match trimmed.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => trimmed.split_at(at),
        None => (trimmed, ""),
    };
    let multiplier: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" => 1 << 10,
        "MiB" | "M" => 1 << 20,
        "GiB" | "G" => 1 << 30,
        other => return Err(format!("`{other}` is not a unit (use KiB, MiB or GiB)")),
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(multiplier))
        .filter(|n| *n <= 1 << 40)
        .ok_or_else(|| format!("`{text}` is not a byte count (say 8MiB or 8388608)"))
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
    fn no_arguments_is_the_default_pages_run() {
        let cli = parsed(&[]).unwrap();
        assert_eq!(cli.workload, Workload::Pages);
        assert_eq!(cli.dir, None);
        assert_eq!(cli.duration(), Duration::from_secs(10));
        assert_eq!(cli.ops, None);
        assert_eq!(cli.threads, 4);
        assert_eq!(cli.pages, 100_000);
        assert_eq!(cli.fragment_len_bytes, 100);
        assert_eq!(
            cli.mix,
            Mix {
                get: 50,
                link: 30,
                replace: 10,
                allocate: 5,
                free: 5
            }
        );
        assert_eq!(cli.cache_budget_bytes, 8 << 20);
        assert_eq!(cli.segment_len_bytes, 1 << 20);
        assert_eq!(cli.flush_every_ops, 1000);
        assert_eq!(cli.kill_within_ms(), 3000);
        assert!(!cli.json && !cli.ceilings);
        assert_eq!(cli.crash_loop, None);
        let cli = parsed(&["log"]).unwrap();
        assert_eq!(cli.message_len_bytes, 100);
        assert_eq!(cli.sync_mode(), SyncMode::Batch);
        assert_eq!(cli.kill_within_ms(), 1000);
    }

    #[test]
    fn pages_flags_parse() {
        let cli = parsed(&[
            "pages",
            "--pages",
            "10",
            "--ops",
            "500",
            "--mix",
            "link=1, free=2",
            "--cache-budget-bytes",
            "512KiB",
            "--segment-len-bytes",
            "65536",
            "--fragment-len-bytes",
            "36",
        ])
        .unwrap();
        assert_eq!((cli.pages, cli.ops), (10, Some(500)));
        assert_eq!(
            cli.mix.to_string(),
            "get=0,link=1,replace=0,allocate=0,free=2"
        );
        assert_eq!(cli.cache_budget_bytes, 512 << 10);
        assert_eq!(cli.segment_len_bytes, 1 << 16);
        assert_eq!(parse_bytes("2GiB"), Ok(2 << 30));
        for mix in ["", "get=0", "get=1,get=2", "read=5", "get=x", "get"] {
            assert!(parse_mix(mix).is_err(), "{mix:?}");
        }
        for bytes in ["", "1PiB", "-3", "x", "99999999999GiB"] {
            assert!(parse_bytes(bytes).is_err(), "{bytes:?}");
        }
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
            "log",
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
            &["tree"],
            &["--pages", "0"],
            &["--fragment-len-bytes", "35"],
            &["--mix", "get=1,scan=2"],
            &["--cache-budget-bytes", "lots"],
        ] {
            let line = bad(args);
            assert!(!line.contains('\n'), "{args:?}: {line}");
            assert!(line.ends_with("(see --help)"), "{args:?}: {line}");
        }
        assert!(bad(&["log", "--sync", "sometimes"]).contains("sometimes"));
        assert!(bad(&["--sync", "sometimes"]).contains("possible values: none, every, batch"));
    }

    #[test]
    fn contradicting_flags_are_refused() {
        assert!(bad(&["recover", "--crash-loop", "2"]).contains("--crash-loop runs the pages"));
        assert!(bad(&["--sync", "none"]).contains("--sync applies to `log`"));
        assert!(bad(&["--segment-len-bytes", "3000"]).contains("not a power of two"));
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
