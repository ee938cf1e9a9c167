//! Runs the `stress` binary as a user would: a short JSON run, a short crash loop, and the
//! one-line errors for a bad flag, a locked directory and a directory that cannot be created.

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

#[test]
fn a_short_crash_loop_loses_nothing() {
    let dir = TestDir::new("crash");
    let dir_arg = dir.0.to_str().unwrap();
    let output = stress(&[
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
    let output = stress(&["--sync", "sometimes"]);
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
