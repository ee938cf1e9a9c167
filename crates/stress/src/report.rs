//! The end-of-run report: the same figures as text for people and as one JSON object.

use std::fmt::Write as _;

use recovery::RecoveryReport;
use serde_json::{Value, json};

use crate::ceilings::Ceilings;
use crate::stats::{OpStats, fmt_mb, fmt_nanos, fmt_rate};

/// A workload figure set against one of the ceilings.
#[derive(Clone, Debug, PartialEq)]
pub struct Ratio {
    /// What was measured (`durable appends/s`).
    pub figure: String,
    /// Its value.
    pub value: f64,
    /// Which ceiling (`C1 4 KiB write + fdatasync`).
    pub ceiling: &'static str,
    /// The ceiling's value.
    pub ceiling_value: f64,
    /// How the values print (`rate` or `bytes`).
    pub unit: Unit,
}

/// How a figure prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// Operations per second.
    Rate,
    /// Bytes per second.
    BytesPerSecond,
}

impl Unit {
    fn show(self, value: f64) -> String {
        match self {
            Unit::Rate => fmt_rate(value),
            Unit::BytesPerSecond => format!("{}/s", fmt_mb(value as u64)),
        }
    }
}

/// The verification pass: reopen, read everything back, compare.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Verification {
    /// Whether every check passed.
    pub passed: bool,
    /// What was read back: `messages` (the default, when empty) or `pages`.
    pub unit: &'static str,
    /// Messages (or pages) read back and checked.
    pub messages_checked: u64,
    /// Messages (or page states) that had to be present (acknowledged durable, or flushed at
    /// the end).
    pub durable_expected: u64,
    /// What the reopen found and did.
    pub recovery: RecoveryReport,
    /// The page cache's own open report (snapshot, replay), for `pages`.
    pub page_cache_open: Option<PageCacheOpen>,
    /// The first problems, each naming a message or a stream.
    pub problems: Vec<String>,
    /// The problems on one line, for the error message.
    pub problems_line: String,
}

/// What opening the page cache did beyond recovering the log.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PageCacheOpen {
    /// The snapshot loaded (file name), if any.
    pub snapshot: Option<String>,
    /// Log records replayed after it.
    pub records_replayed: u64,
    /// Records skipped because the snapshot held them.
    pub records_skipped: u64,
    /// Live pages after opening.
    pub n_pages: u64,
    /// Time the whole open took, seconds.
    pub elapsed_secs: f64,
}

impl PageCacheOpen {
    /// From the page cache's report.
    pub fn new(report: &pagecache::OpenReport) -> PageCacheOpen {
        PageCacheOpen {
            snapshot: report.snapshot.as_ref().map(|s| s.file_name.clone()),
            records_replayed: report.records_replayed,
            records_skipped: report.records_skipped,
            n_pages: report.n_pages,
            elapsed_secs: report.elapsed.as_secs_f64(),
        }
    }

    fn text(&self) -> String {
        format!(
            "{}, replayed {} records (skipped {}), {} pages, opened in {}",
            match &self.snapshot {
                Some(name) => format!("snapshot {name}"),
                None => "no snapshot".to_owned(),
            },
            self.records_replayed,
            self.records_skipped,
            self.n_pages,
            fmt_nanos((self.elapsed_secs * 1e9) as u64)
        )
    }

    fn json(&self) -> Value {
        json!({
            "snapshot": self.snapshot,
            "records_replayed": self.records_replayed,
            "records_skipped": self.records_skipped,
            "n_pages": self.n_pages,
            "elapsed_secs": self.elapsed_secs,
        })
    }
}

/// Everything a timed run reports.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunReport {
    /// The workload's name.
    pub workload: &'static str,
    /// The settings in force, in print order.
    pub settings: Vec<(&'static str, Value)>,
    /// The data directory.
    pub dir: String,
    /// Whether the directory is kept (`--dir`) or removed at the end.
    pub dir_kept: bool,
    /// What the first open found (an empty or an existing log).
    pub opened: RecoveryReport,
    /// What the first open of the page cache did, for `pages`.
    pub opened_page_cache: Option<PageCacheOpen>,
    /// Wall time of the measured part (for `pages`, the load and the mix: the payload, syncs
    /// and sync time below are counted over both).
    pub elapsed_secs: f64,
    /// Figures per operation kind.
    pub ops: Vec<OpStats>,
    /// Bytes the log wrote to its data file during the run.
    pub bytes_written: u64,
    /// Message bytes this run appended.
    pub payload_bytes: u64,
    /// Size of the files in the directory at the end.
    pub file_bytes: u64,
    /// Message bytes the log holds at the end (every run's): the live data.
    pub live_bytes: u64,
    /// Page cache hits over lookups (`None`: the workload has no cache).
    pub cache_hit_ratio: Option<f64>,
    /// `fdatasync` calls on the data file.
    pub n_syncs: u64,
    /// Time spent inside them, summed.
    pub sync_secs: f64,
    /// Other named figures of the workload (`open_secs`, `scan_bytes_per_second`).
    pub figures: Vec<(&'static str, f64)>,
    /// The ceilings and ratios, with `--ceilings`.
    pub ceilings: Option<(Ceilings, Vec<Ratio>)>,
    /// The verification pass.
    pub verification: Verification,
}

/// The `settings` and `directory` lines every report opens with.
fn write_settings_and_dir(
    out: &mut String,
    settings: &[(&'static str, Value)],
    dir: &str,
    dir_kept: bool,
) {
    let settings: Vec<String> = settings
        .iter()
        .map(|(name, value)| format!("{name} {}", plain(value)))
        .collect();
    let _ = writeln!(out, "settings               {}", settings.join(", "));
    let kept = if dir_kept {
        "kept"
    } else {
        "temporary, removed at the end"
    };
    let _ = writeln!(out, "directory              {dir} ({kept})");
}

impl RunReport {
    /// The report as text.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "== {} report ==", self.workload);
        write_settings_and_dir(&mut out, &self.settings, &self.dir, self.dir_kept);
        let _ = writeln!(out, "at start               {}", self.opened);
        if let Some(open) = &self.opened_page_cache {
            let _ = writeln!(out, "page cache at start    {}", open.text());
        }
        let _ = writeln!(out, "elapsed                {:.2} s", self.elapsed_secs);
        let _ = writeln!(
            out,
            "{:<22} {:>10} {:>11} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "operation", "count", "rate", "p50", "p90", "p99", "p99.9", "max"
        );
        for op in &self.ops {
            let _ = writeln!(
                out,
                "{:<22} {:>10} {:>11} {:>9} {:>9} {:>9} {:>9} {:>9}",
                op.name,
                op.count,
                fmt_rate(op.per_second),
                fmt_nanos(op.p50_nanos),
                fmt_nanos(op.p90_nanos),
                fmt_nanos(op.p99_nanos),
                fmt_nanos(op.p999_nanos),
                fmt_nanos(op.max_nanos),
            );
        }
        let _ = writeln!(
            out,
            "payload                {} {} ({}/s)",
            fmt_mb(self.payload_bytes),
            if self.opened_page_cache.is_some() {
                "of fragments written"
            } else {
                "appended"
            },
            fmt_mb((self.payload_bytes as f64 / self.elapsed_secs.max(1e-9)) as u64)
        );
        let _ = writeln!(
            out,
            "bytes written          {} to the data file (frames, headers, padding)",
            fmt_mb(self.bytes_written)
        );
        let _ = writeln!(
            out,
            "file size / live       {} ({} of files for {} of live {})",
            ratio_text(self.file_over_live()),
            fmt_mb(self.file_bytes),
            fmt_mb(self.live_bytes),
            if self.opened_page_cache.is_some() {
                "pages"
            } else {
                "messages"
            }
        );
        let _ = writeln!(
            out,
            "cache hit ratio        {}",
            match self.cache_hit_ratio {
                Some(ratio) => format!("{:.1}%", ratio * 100.0),
                None => format!("n/a (the {} workload has no page cache)", self.workload),
            }
        );
        let _ = writeln!(
            out,
            "time in sync           {:.2} s in {} fdatasyncs ({} per sync on average; the disk \
             was syncing {:.0}% of the run)",
            self.sync_secs,
            self.n_syncs,
            fmt_nanos((self.sync_secs * 1e9 / self.n_syncs.max(1) as f64) as u64),
            self.sync_secs * 100.0 / self.elapsed_secs.max(1e-9)
        );
        for (name, value) in &self.figures {
            let _ = writeln!(
                out,
                "{:<22} {}",
                name.replace('_', " "),
                figure_text(name, *value)
            );
        }
        if let Some((ceilings, ratios)) = &self.ceilings {
            out.push_str(&ceilings_text(ceilings, ratios));
        }
        out.push_str(&verification_text(&self.verification));
        out
    }

    /// File bytes over live message bytes (`None` when nothing is live).
    pub fn file_over_live(&self) -> Option<f64> {
        (self.live_bytes > 0).then(|| self.file_bytes as f64 / self.live_bytes as f64)
    }

    /// The report as one JSON object.
    pub fn to_json(&self) -> Value {
        let settings: serde_json::Map<String, Value> = self
            .settings
            .iter()
            .map(|(name, value)| ((*name).to_owned(), value.clone()))
            .collect();
        let ops: serde_json::Map<String, Value> = self
            .ops
            .iter()
            .map(|op| {
                (
                    op.name.to_owned(),
                    json!({
                        "count": op.count,
                        "per_second": op.per_second,
                        "latency_nanos": {
                            "p50": op.p50_nanos,
                            "p90": op.p90_nanos,
                            "p99": op.p99_nanos,
                            "p99.9": op.p999_nanos,
                            "max": op.max_nanos,
                        },
                    }),
                )
            })
            .collect();
        let figures: serde_json::Map<String, Value> = self
            .figures
            .iter()
            .map(|(name, value)| ((*name).to_owned(), json!(value)))
            .collect();
        json!({
            "workload": self.workload,
            "settings": settings,
            "dir": self.dir,
            "dir_kept": self.dir_kept,
            "at_start": recovery_json(&self.opened),
            "page_cache_at_start": self.opened_page_cache.as_ref().map(PageCacheOpen::json),
            "elapsed_secs": self.elapsed_secs,
            "ops": ops,
            "payload_bytes": self.payload_bytes,
            "bytes_written": self.bytes_written,
            "file_bytes": self.file_bytes,
            "live_bytes": self.live_bytes,
            "file_over_live": self.file_over_live(),
            "cache_hit_ratio": self.cache_hit_ratio,
            "sync": {
                "count": self.n_syncs,
                "total_secs": self.sync_secs,
                "share_of_run": self.sync_secs / self.elapsed_secs.max(1e-9),
            },
            "figures": figures,
            "ceilings": self.ceilings.as_ref().map(|(c, r)| ceilings_json(c, r)),
            "verification": verification_json(&self.verification),
        })
    }
}

/// The crash loop's summary.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CrashLoopReport {
    /// The workload the children ran (`pages` or `log`).
    pub workload: &'static str,
    /// The settings in force.
    pub settings: Vec<(&'static str, Value)>,
    /// The data directory.
    pub dir: String,
    /// Whether the directory is kept.
    pub dir_kept: bool,
    /// Children killed with SIGKILL.
    pub kills: u32,
    /// Children that ended on their own before the kill (rare: a very late kill moment).
    pub exited_before_kill: u32,
    /// Messages the children acknowledged durable, over all runs.
    pub acked_durable: u64,
    /// Messages read back and checked, over all verifications.
    pub messages_verified: u64,
    /// Messages in the log after the last verification.
    pub messages_in_log: u64,
    /// Acknowledged messages missing (a loss; must be 0).
    pub lost: u64,
    /// The last verification (its recovery report and problems).
    pub last: Verification,
    /// One line per kill.
    pub kill_lines: Vec<String>,
}

impl CrashLoopReport {
    /// Whether every verification passed.
    pub fn passed(&self) -> bool {
        self.last.passed && self.lost == 0
    }

    /// The summary as text (the per-kill lines were printed as they happened).
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "== crash loop report ==");
        write_settings_and_dir(&mut out, &self.settings, &self.dir, self.dir_kept);
        let _ = writeln!(
            out,
            "kills                  {} with SIGKILL ({} children ended before their kill)",
            self.kills, self.exited_before_kill
        );
        if self.workload == "pages" {
            let _ = writeln!(
                out,
                "acked durable          {} page states (each must survive, or a later state \
                 of the same page)",
                self.acked_durable
            );
            let _ = writeln!(
                out,
                "verified               {} page reads over all reopens; {} live pages now",
                self.messages_verified, self.messages_in_log
            );
        } else {
            let _ = writeln!(
                out,
                "acked durable          {} messages (each must survive)",
                self.acked_durable
            );
            let _ = writeln!(
                out,
                "verified               {} message reads over all reopens; {} messages in the \
                 log now",
                self.messages_verified, self.messages_in_log
            );
        }
        let _ = writeln!(out, "lost                   {}", self.lost);
        out.push_str(&verification_text(&self.last));
        out
    }

    /// The summary as one JSON object.
    pub fn to_json(&self) -> Value {
        let settings: serde_json::Map<String, Value> = self
            .settings
            .iter()
            .map(|(name, value)| ((*name).to_owned(), value.clone()))
            .collect();
        json!({
            "workload": if self.workload.is_empty() { "log" } else { self.workload },
            "settings": settings,
            "dir": self.dir,
            "dir_kept": self.dir_kept,
            "crash_loop": {
                "kills": self.kills,
                "exited_before_kill": self.exited_before_kill,
                "acked_durable": self.acked_durable,
                "messages_verified": self.messages_verified,
                "messages_in_log": self.messages_in_log,
                "lost": self.lost,
                "kill_lines": self.kill_lines,
            },
            "verification": verification_json(&self.last),
        })
    }
}

fn plain(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

fn ratio_text(ratio: Option<f64>) -> String {
    ratio.map_or_else(|| "n/a".to_owned(), |r| format!("{r:.2}"))
}

fn figure_text(name: &str, value: f64) -> String {
    if name.ends_with("_secs") {
        fmt_nanos((value * 1e9) as u64)
    } else if name.ends_with("bytes_per_second") {
        format!("{}/s", fmt_mb(value as u64))
    } else if name.ends_with("per_second") {
        fmt_rate(value)
    } else {
        format!("{value}")
    }
}

fn ceilings_text(ceilings: &Ceilings, ratios: &[Ratio]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "== ceilings, measured on the target directory ==");
    let _ = writeln!(
        out,
        "C1 4 KiB write + fdatasync  {}",
        fmt_rate(ceilings.sync_writes_per_second)
    );
    let _ = writeln!(
        out,
        "C2 sequential write + sync  {}/s",
        fmt_mb(ceilings.sequential_bytes_per_second as u64)
    );
    let _ = writeln!(
        out,
        "C3 uncontended CAS          {}",
        fmt_rate(ceilings.cas_per_second)
    );
    let _ = writeln!(
        out,
        "{:<34} {:>12}  {:<28} {:>12} {:>7}",
        "figure", "value", "ceiling", "", "ratio"
    );
    for ratio in ratios {
        let _ = writeln!(
            out,
            "{:<34} {:>12}  {:<28} {:>12} {:>7.3}",
            ratio.figure,
            ratio.unit.show(ratio.value),
            ratio.ceiling,
            ratio.unit.show(ratio.ceiling_value),
            ratio.value / ratio.ceiling_value.max(1e-9)
        );
    }
    out
}

fn ceilings_json(ceilings: &Ceilings, ratios: &[Ratio]) -> Value {
    let ratios: Vec<Value> = ratios
        .iter()
        .map(|r| {
            json!({
                "figure": r.figure,
                "value": r.value,
                "ceiling": r.ceiling,
                "ceiling_value": r.ceiling_value,
                "ratio": r.value / r.ceiling_value.max(1e-9),
            })
        })
        .collect();
    json!({
        "sync_writes_per_second": ceilings.sync_writes_per_second,
        "sequential_bytes_per_second": ceilings.sequential_bytes_per_second,
        "cas_per_second": ceilings.cas_per_second,
        "ratios": ratios,
    })
}

fn verification_text(verification: &Verification) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "== verification ==");
    let _ = writeln!(out, "reopened               {}", verification.recovery);
    if let Some(open) = &verification.page_cache_open {
        let _ = writeln!(out, "page cache             {}", open.text());
    }
    if verification.unit == "pages" {
        let _ = writeln!(
            out,
            "checked                {} live pages read back, {} page states compared with what \
             the run acknowledged: decode, checksum of each page's ops, body, key, pid, op seq",
            verification.messages_checked, verification.durable_expected
        );
    } else {
        let _ = writeln!(
            out,
            "checked                {} messages read back ({} had to be present): checksum, \
             body, stream, order per thread",
            verification.messages_checked, verification.durable_expected
        );
    }
    for problem in &verification.problems {
        let _ = writeln!(out, "problem                {problem}");
    }
    let _ = writeln!(
        out,
        "{}",
        if verification.passed {
            "VERIFICATION PASSED"
        } else {
            "VERIFICATION FAILED"
        }
    );
    out
}

fn verification_json(verification: &Verification) -> Value {
    let unit = if verification.unit.is_empty() {
        "messages"
    } else {
        verification.unit
    };
    let mut value = json!({
        "passed": verification.passed,
        "durable_expected": verification.durable_expected,
        "problems": verification.problems,
        "recovery": recovery_json(&verification.recovery),
        "page_cache": verification.page_cache_open.as_ref().map(PageCacheOpen::json),
    });
    value[format!("{unit}_checked")] = json!(verification.messages_checked);
    value
}

/// A recovery report's facts as JSON.
pub fn recovery_json(report: &RecoveryReport) -> Value {
    json!({
        "created": report.created,
        "bytes_scanned": report.bytes_scanned,
        "segments_scanned": report.segments_scanned,
        "messages_recovered": report.messages_recovered,
        "tip": report.tip.0,
        "log_start": report.log_start.0,
        "known_stable": report.known_stable.0,
        "cut_at": report.cut_at.map(|lsn| lsn.0),
        "bytes_erased": report.bytes_erased,
        "segments_discarded": report.segments_discarded,
        "orphan_blobs_deleted": report.orphan_blobs_deleted,
        "elapsed_secs": report.elapsed.as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Latencies;
    use std::time::Duration;

    fn sample() -> RunReport {
        let mut latencies = Latencies::default();
        latencies.record(Duration::from_micros(3));
        RunReport {
            workload: "log",
            settings: vec![("threads", json!(4)), ("sync", json!("batch"))],
            dir: "/tmp/x".to_owned(),
            elapsed_secs: 2.0,
            ops: vec![OpStats::new("append", &latencies, Duration::from_secs(2))],
            payload_bytes: 100,
            file_bytes: 300,
            live_bytes: 100,
            n_syncs: 1,
            sync_secs: 0.5,
            figures: vec![("open_secs", 0.25)],
            verification: Verification {
                passed: true,
                messages_checked: 1,
                durable_expected: 1,
                ..Verification::default()
            },
            ..RunReport::default()
        }
    }

    #[test]
    fn json_has_the_documented_shape() {
        let report = sample();
        let value = report.to_json();
        // One object that parses back.
        let text = serde_json::to_string(&value).unwrap();
        let value: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["workload"], "log");
        assert_eq!(value["settings"]["threads"], 4);
        assert_eq!(value["ops"]["append"]["count"], 1);
        for key in ["p50", "p90", "p99", "p99.9", "max"] {
            assert!(
                value["ops"]["append"]["latency_nanos"][key].is_u64(),
                "{key}"
            );
        }
        assert_eq!(value["file_over_live"], 3.0);
        assert_eq!(value["cache_hit_ratio"], Value::Null);
        assert_eq!(value["sync"]["share_of_run"], 0.25);
        assert_eq!(value["figures"]["open_secs"], 0.25);
        assert_eq!(value["ceilings"], Value::Null);
        assert_eq!(value["verification"]["passed"], true);
        assert!(value["verification"]["recovery"]["bytes_scanned"].is_u64());
        assert_eq!(value["verification"]["recovery"]["cut_at"], Value::Null);

        let with_ceilings = RunReport {
            ceilings: Some((
                Ceilings {
                    sync_writes_per_second: 1000.0,
                    sequential_bytes_per_second: 1e9,
                    cas_per_second: 1e8,
                },
                vec![Ratio {
                    figure: "durable appends/s".to_owned(),
                    value: 500.0,
                    ceiling: "C1",
                    ceiling_value: 1000.0,
                    unit: Unit::Rate,
                }],
            )),
            ..report
        };
        let value = with_ceilings.to_json();
        assert_eq!(value["ceilings"]["ratios"][0]["ratio"], 0.5);
        assert!(with_ceilings.to_text().contains("0.500"));
    }

    #[test]
    fn text_names_every_section() {
        let text = sample().to_text();
        for needle in [
            "== log report ==",
            "append",
            "p99.9",
            "file size / live       3.00",
            "cache hit ratio        n/a",
            "time in sync           0.50 s in 1 fdatasyncs",
            "open secs              250.00 ms",
            "VERIFICATION PASSED",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
    }

    #[test]
    fn crash_loop_json_has_its_counts() {
        let report = CrashLoopReport {
            kills: 3,
            acked_durable: 10,
            last: Verification {
                passed: true,
                ..Verification::default()
            },
            ..CrashLoopReport::default()
        };
        assert!(report.passed());
        let value = report.to_json();
        assert_eq!(value["crash_loop"]["kills"], 3);
        assert_eq!(value["crash_loop"]["lost"], 0);
        assert_eq!(value["verification"]["passed"], true);
    }
}
