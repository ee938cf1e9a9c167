//! Runs the `stress` binary as a user would: short JSON runs of `pages` and `log`, short crash
//! loops of both, and the one-line errors for a bad flag, a locked directory and a directory
//! that cannot be created.

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

/// A fresh directory under cargo's per-test temporary directory, removed on drop.
struct TestDir(PathBuf);

impl TestDir {
    fn new(name: &str) -> TestDir {
        let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("stress-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        TestDir(path)
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn stress(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_stress"))
        .args(args)
        .output()
        .expect("the stress binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts a failed run printed exactly one `error: ...` line on stderr and returns it.
fn one_error_line(output: &Output) -> String {
    assert!(!output.status.success(), "the run should fail");
    let stderr = text(&output.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "exactly one line on stderr, got:\n{stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    lines[0].to_owned()
}

#[test]
fn a_short_json_run_verifies_and_prints_one_object() {
    let output = stress(&["log", "--duration-secs", "1", "--threads", "2", "--json"]);
    let stdout = text(&output.stdout);
    assert!(
        output.status.success(),
        "exit {}: {}",
        output.status,
        text(&output.stderr)
    );
    let report: Value = serde_json::from_str(&stdout).expect("stdout is one JSON object");
    assert_eq!(report["workload"], "log");
    assert_eq!(report["settings"]["threads"], 2);
    assert_eq!(report["dir_kept"], false);
    let appends = report["ops"]["append"]["count"].as_u64().unwrap();
    assert!(appends > 0);
    assert!(report["ops"]["make_stable"]["latency_nanos"]["p99.9"].is_u64());
    assert_eq!(report["verification"]["passed"], true);
    assert_eq!(report["verification"]["messages_checked"], appends);
    assert_eq!(
        report["verification"]["recovery"]["messages_recovered"],
        appends
    );
    let dir = PathBuf::from(report["dir"].as_str().unwrap());
    assert!(!dir.exists(), "the temporary directory is removed");
}

/// The arguments of a small, quick `pages` run.
const SMALL_PAGES: &[&str] = &[
    "pages",
    "--pages",
    "2000",
    "--threads",
    "2",
    "--cache-budget-bytes",
    "64KiB",
    "--segment-len-bytes",
    "256KiB",
    "--flush-every-ops",
    "100",
];

#[test]
fn a_short_pages_run_verifies_and_prints_one_object() {
    let mut args = SMALL_PAGES.to_vec();
    args.extend(["--duration-secs", "1", "--json"]);
    let output = stress(&args);
    assert!(
        output.status.success(),
        "exit {}: {}",
        output.status,
        text(&output.stderr)
    );
    let report: Value =
        serde_json::from_str(&text(&output.stdout)).expect("stdout is one JSON object");
    assert_eq!(report["workload"], "pages");
    assert_eq!(report["settings"]["pages"], 2000);
    assert_eq!(report["ops"]["load (allocate)"]["count"], 2000);
    for op in ["get", "link", "replace", "allocate", "free", "make_stable"] {
        assert!(report["ops"][op]["count"].as_u64().unwrap() > 0, "{op}");
        assert!(report["ops"][op]["latency_nanos"]["p99"].is_u64(), "{op}");
    }
    let hit_ratio = report["cache_hit_ratio"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&hit_ratio), "{hit_ratio}");
    assert!(report["bytes_written"].as_u64().unwrap() > 0);
    assert!(report["file_over_live"].as_f64().unwrap() > 0.0);
    assert!(report["sync"]["count"].as_u64().unwrap() > 0);
    assert_eq!(report["verification"]["passed"], true);
    assert!(report["verification"]["pages_checked"].as_u64().unwrap() > 0);
    assert!(report["verification"]["page_cache"]["n_pages"].is_u64());
    let dir = PathBuf::from(report["dir"].as_str().unwrap());
    assert!(!dir.exists(), "the temporary directory is removed");
}

#[test]
fn a_short_pages_crash_loop_loses_nothing() {
    let dir = TestDir::new("pages-crash");
    let dir_arg = dir.0.to_str().unwrap();
    let mut args = SMALL_PAGES.to_vec();
    args.extend([
        "--crash-loop",
        "3",
        "--kill-within-ms",
        "600",
        "--dir",
        dir_arg,
        "--json",
    ]);
    let output = stress(&args);
    assert!(
        output.status.success(),
        "exit {}: {}",
        output.status,
        text(&output.stderr)
    );
    let report: Value = serde_json::from_str(&text(&output.stdout)).expect("one JSON object");
    assert_eq!(report["workload"], "pages");
    assert_eq!(report["crash_loop"]["kills"], 3);
    assert_eq!(report["crash_loop"]["lost"], 0);
    assert_eq!(report["verification"]["passed"], true);
    // The kept directory is continued by a plain run, which adopts and verifies its pages.
    let mut args = SMALL_PAGES.to_vec();
    args.extend(["--ops", "2000", "--dir", dir_arg, "--json"]);
    let output = stress(&args);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let report: Value = serde_json::from_str(&text(&output.stdout)).unwrap();
    assert_eq!(report["verification"]["passed"], true);
    // A directory written with another --pages is refused by name, not misread.
    let output = stress(&[
        "pages",
        "--pages",
        "10",
        "--segment-len-bytes",
        "256KiB",
        "--dir",
        dir_arg,
    ]);
    let line = one_error_line(&output);
    assert!(line.contains("beyond --pages 10"), "{line}");
}

#[test]
fn a_locked_page_cache_is_one_line() {
    let dir = TestDir::new("pages-locked");
    let mut args = SMALL_PAGES.to_vec();
    args.extend(["--ops", "100", "--dir", dir.0.to_str().unwrap()]);
    let (log, _) = recovery::open_log_dir(&dir.0, iobuf::LogConfig::default()).unwrap();
    let line = one_error_line(&stress(&args));
    assert!(line.contains("locked"), "{line}");
    log.close().unwrap();
}

#[test]
fn a_short_crash_loop_loses_nothing() {
    let dir = TestDir::new("crash");
    let dir_arg = dir.0.to_str().unwrap();
    let output = stress(&[
        "log",
        "--crash-loop",
        "2",
        "--kill-within-ms",
        "400",
        "--threads",
        "2",
        "--dir",
        dir_arg,
        "--json",
    ]);
    assert!(
        output.status.success(),
        "exit {}: {}",
        output.status,
        text(&output.stderr)
    );
    let report: Value = serde_json::from_str(&text(&output.stdout)).expect("one JSON object");
    assert_eq!(report["crash_loop"]["kills"], 2);
    assert_eq!(report["crash_loop"]["lost"], 0);
    assert_eq!(report["verification"]["passed"], true);
    assert_eq!(report["dir_kept"], true);
    // The kept directory holds a log a later run continues (runs 2 and on) and verifies.
    let output = stress(&[
        "log",
        "--duration-secs",
        "0.3",
        "--threads",
        "1",
        "--dir",
        dir_arg,
        "--json",
    ]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let report: Value = serde_json::from_str(&text(&output.stdout)).unwrap();
    assert_eq!(report["settings"]["run"], 2);
    assert_eq!(report["verification"]["passed"], true);
}

#[test]
fn a_bad_flag_is_one_line() {
    let output = stress(&["log", "--sync", "sometimes"]);
    assert_eq!(output.status.code(), Some(2));
    let line = one_error_line(&output);
    assert!(line.contains("sometimes"), "{line}");
    let output = stress(&["--threads", "0"]);
    one_error_line(&output);
}

#[test]
fn a_locked_directory_is_one_line() {
    let dir = TestDir::new("locked");
    let (log, _) = recovery::open_log_dir(&dir.0, iobuf::LogConfig::default()).unwrap();
    let output = stress(&[
        "log",
        "--duration-secs",
        "0.2",
        "--dir",
        dir.0.to_str().unwrap(),
    ]);
    let line = one_error_line(&output);
    assert!(line.contains("locked"), "{line}");
    log.close().unwrap();
}

#[test]
fn a_directory_that_cannot_be_created_is_one_line() {
    let dir = TestDir::new("file");
    std::fs::create_dir_all(&dir.0).unwrap();
    let file = dir.0.join("a-file");
    std::fs::write(&file, b"not a directory").unwrap();
    let inside_file = file.join("log");
    let output = stress(&["log", "--dir", inside_file.to_str().unwrap()]);
    let line = one_error_line(&output);
    assert!(line.contains("creating directory"), "{line}");
}

#[test]
fn damage_inside_the_durable_log_is_a_named_failure() {
    let dir = TestDir::new("damaged");
    let dir_arg = dir.0.to_str().unwrap();
    let output = stress(&[
        "log",
        "--duration-secs",
        "0.3",
        "--threads",
        "1",
        "--dir",
        dir_arg,
    ]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    // Flip one byte well inside the first segment: a message the run made durable.
    let data_path = dir.0.join(iobuf::DATA_FILE_NAME);
    let mut bytes = std::fs::read(&data_path).unwrap();
    assert!(bytes.len() > 10_000, "the run wrote something");
    bytes[5_000] ^= 0x40;
    std::fs::write(&data_path, &bytes).unwrap();
    let output = stress(&["log", "--duration-secs", "0.2", "--dir", dir_arg]);
    let line = one_error_line(&output);
    assert!(line.contains("corruption in segment"), "{line}");
}
