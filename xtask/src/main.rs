//! Project automation: `cargo xtask ci` and its steps.
//!
//! `cargo xtask ci` is the one command a developer or CI runs: it performs every step of
//! [`STEPS`] in order (fmt, clippy, test, stress, doc, tidy), prints a banner and the elapsed time for
//! each, stops at the first failure and says which step failed (non-zero exit). Every step is
//! also its own subcommand (`cargo xtask tidy`). A step is one entry in [`STEPS`]: adding a check
//! (like the short runs of the stress program) means adding one entry there.
//!
//! `--full` (or `XTASK_FULL=1`) is the long mode: the test step gets `PROPTEST_CASES=10000` and
//! `PAGELOG_LONG=1`, which the crates read to run more cases. The default mode sets nothing;
//! each crate has its own bounded defaults. `cargo xtask test --release` runs the tests with
//! the release profile instead of the `test` profile (opt-level 1).
//!
//! xtask has no dependencies (it reads `cargo metadata` JSON with its own small reader), so it
//! builds offline on a fresh clone with only the Rust toolchain (rustfmt and clippy) installed.

mod json;
mod tidy;

use std::env;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

/// One check: a subcommand of its own and a stage of `cargo xtask ci`.
struct Step {
    /// Subcommand name, also printed in banners.
    name: &'static str,
    /// One line for `--help`.
    about: &'static str,
    /// Runs the check; `Err` says why it failed.
    run: fn(&Context) -> Result<(), String>,
}

/// The steps of `cargo xtask ci`, in the order they run.
const STEPS: &[Step] = &[
    Step {
        name: "fmt",
        about: "cargo fmt --all --check",
        run: fmt,
    },
    Step {
        name: "clippy",
        about: "cargo clippy --workspace --all-targets -- -D warnings",
        run: clippy,
    },
    Step {
        name: "test",
        about: "cargo test --workspace [--release]; --full sets PROPTEST_CASES=10000 PAGELOG_LONG=1",
        run: test,
    },
    Step {
        name: "stress",
        about: "short runs of the stress program (release): a 2 s pages run, a 3-kill pages crash \
                loop, a 1 s log run",
        run: stress,
    },
    Step {
        name: "doc",
        about: "RUSTDOCFLAGS='-D warnings' cargo doc --workspace --no-deps",
        run: doc,
    },
    Step {
        name: "tidy",
        about: "module docs, SAFETY comments, banned macros, dependency direction",
        run: run_tidy,
    },
];

/// What the steps need to know.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Context {
    /// The repository root (where the workspace `Cargo.toml` is).
    root: PathBuf,
    /// Long mode: more property cases and longer runs in the test step.
    full: bool,
    /// Run the test step with `--release`.
    release: bool,
}

/// A parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Invocation {
    /// Print the usage text.
    Help,
    /// Run every step.
    Ci { full: bool, release: bool },
    /// Run one step, by its index in [`STEPS`].
    One {
        step_idx: usize,
        full: bool,
        release: bool,
    },
}

/// The environment variable that turns on the long mode, like `--full`.
const FULL_ENV: &str = "XTASK_FULL";

/// Environment the long mode gives the test step.
const LONG_MODE_ENV: &[(&str, &str)] = &[("PROPTEST_CASES", "10000"), ("PAGELOG_LONG", "1")];

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let full_from_env = env::var(FULL_ENV).ok().is_some_and(|v| is_truthy(&v));
    let invocation = match parse_args(&args, full_from_env) {
        Ok(invocation) => invocation,
        Err(message) => {
            eprintln!("xtask: {message}\n\n{}", usage());
            return ExitCode::from(2);
        }
    };
    let root = project_root();
    match invocation {
        Invocation::Help => {
            println!("{}", usage());
            ExitCode::SUCCESS
        }
        Invocation::Ci { full, release } => run_ci(&Context {
            root,
            full,
            release,
        }),
        Invocation::One {
            step_idx,
            full,
            release,
        } => {
            let step = &STEPS[step_idx];
            match run_step(
                step,
                &Context {
                    root,
                    full,
                    release,
                },
                None,
            ) {
                Ok(_) => ExitCode::SUCCESS,
                Err(_) => ExitCode::FAILURE,
            }
        }
    }
}

/// `XTASK_FULL` counts as set unless it is empty, `0` or `false`.
fn is_truthy(value: &str) -> bool {
    !matches!(value.trim(), "" | "0" | "false")
}

fn parse_args(args: &[String], full_from_env: bool) -> Result<Invocation, String> {
    let Some((command, flags)) = args.split_first() else {
        return Err("no command given".to_owned());
    };
    let mut full = full_from_env;
    let mut release = false;
    for flag in flags {
        match flag.as_str() {
            "--full" => full = true,
            "--release" => release = true,
            "-h" | "--help" => return Ok(Invocation::Help),
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    let takes_flags = command == "ci" || command == "test";
    if !takes_flags && flags.iter().any(|f| f == "--full" || f == "--release") {
        return Err(format!(
            "`{command}` takes no --full or --release (only `ci` and `test` do)"
        ));
    }
    match command.as_str() {
        "help" | "-h" | "--help" => Ok(Invocation::Help),
        "ci" => Ok(Invocation::Ci { full, release }),
        name => match STEPS.iter().position(|step| step.name == name) {
            Some(step_idx) => Ok(Invocation::One {
                step_idx,
                full,
                release,
            }),
            None => Err(format!("unknown command `{name}`")),
        },
    }
}

fn usage() -> String {
    let mut text = String::from(
        "usage: cargo xtask <command> [--full] [--release]\n\n\
         commands:\n  ci       run every step below in order, stopping at the first failure\n",
    );
    for step in STEPS {
        text.push_str(&format!("  {:<8} {}\n", step.name, step.about));
    }
    text.push_str(&format!(
        "\noptions (ci and test only):\n  \
         --full     long mode for the test step (same as {FULL_ENV}=1)\n  \
         --release  run the tests in the release profile\n"
    ));
    text
}

/// The repository root: xtask lives one level below it.
fn project_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().unwrap_or(manifest_dir).to_path_buf()
}

fn run_ci(ctx: &Context) -> ExitCode {
    let started = Instant::now();
    if ctx.full {
        println!("xtask ci: long mode ({})", long_mode_env_text());
    }
    let mut timings = Vec::new();
    for (idx, step) in STEPS.iter().enumerate() {
        match run_step(step, ctx, Some((idx, STEPS.len()))) {
            Ok(elapsed_secs) => timings.push((step.name, elapsed_secs)),
            Err(reason) => {
                println!();
                println!(
                    "==> ci FAILED at step {}/{} `{}`: {reason}",
                    idx + 1,
                    STEPS.len(),
                    step.name
                );
                println!("    rerun it alone with `cargo xtask {}`", step.name);
                return ExitCode::FAILURE;
            }
        }
    }
    println!();
    println!(
        "==> ci passed: {} steps in {:.1} s",
        STEPS.len(),
        started.elapsed().as_secs_f64()
    );
    for (name, elapsed_secs) in timings {
        println!("    {name:<8} {elapsed_secs:>7.1} s");
    }
    ExitCode::SUCCESS
}

/// Runs one step between banners; returns its elapsed seconds.
fn run_step(step: &Step, ctx: &Context, position: Option<(usize, usize)>) -> Result<f64, String> {
    let label = match position {
        Some((idx, n_steps)) => format!("[{}/{n_steps}] {}", idx + 1, step.name),
        None => step.name.to_owned(),
    };
    println!();
    println!("==> {label}");
    let started = Instant::now();
    let result = (step.run)(ctx);
    let elapsed_secs = started.elapsed().as_secs_f64();
    match &result {
        Ok(()) => println!("<== {label}: ok in {elapsed_secs:.1} s"),
        Err(reason) => println!("<== {label}: FAILED after {elapsed_secs:.1} s: {reason}"),
    }
    result.map(|()| elapsed_secs)
}

fn long_mode_env_text() -> String {
    let pairs: Vec<String> = LONG_MODE_ENV
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    pairs.join(" ")
}

/// Runs `cargo <args>` at the repository root with extra environment, printing it first.
fn cargo(ctx: &Context, args: &[&str], envs: &[(&str, String)]) -> Result<(), String> {
    let shown = command_line(args, envs);
    println!("$ {shown}");
    // `cargo run` sets CARGO to the cargo that built us, so the same toolchain is used.
    let cargo = env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let status = Command::new(cargo)
        .args(args)
        .envs(envs.iter().map(|(k, v)| (k, v)))
        .current_dir(&ctx.root)
        .status()
        .map_err(|e| format!("could not start `{shown}`: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{shown}` exited with {status}"))
    }
}

/// How a cargo command is shown in the log: `A=1 B=2 cargo test --workspace`.
fn command_line(args: &[&str], envs: &[(&str, String)]) -> String {
    let mut parts: Vec<String> = envs
        .iter()
        .map(|(k, v)| {
            if v.contains(' ') {
                format!("{k}='{v}'")
            } else {
                format!("{k}={v}")
            }
        })
        .collect();
    parts.push("cargo".to_owned());
    parts.extend(args.iter().map(|a| (*a).to_owned()));
    parts.join(" ")
}

fn fmt(ctx: &Context) -> Result<(), String> {
    cargo(ctx, &["fmt", "--all", "--check"], &[])
        .map_err(|e| format!("{e} (run `cargo fmt --all` to fix)"))
}

fn clippy(ctx: &Context) -> Result<(), String> {
    cargo(
        ctx,
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
        &[],
    )
}

/// Arguments and environment of the test step.
fn test_command(full: bool, release: bool) -> (Vec<&'static str>, Vec<(&'static str, String)>) {
    let mut args = vec!["test", "--workspace"];
    if release {
        args.push("--release");
    }
    let envs = if full {
        LONG_MODE_ENV
            .iter()
            .map(|(k, v)| (*k, (*v).to_owned()))
            .collect()
    } else {
        Vec::new()
    };
    (args, envs)
}

fn test(ctx: &Context) -> Result<(), String> {
    let (args, envs) = test_command(ctx.full, ctx.release);
    cargo(ctx, &args, &envs)
}

/// The stress program's runs in the `stress` step: each must exit 0 (verification passed).
/// Short on purpose (a few seconds each after the release build), so the program cannot rot.
const STRESS_RUNS: &[&[&str]] = &[
    &[
        "run",
        "--release",
        "-p",
        "stress",
        "--",
        "pages",
        "--duration-secs",
        "2",
    ],
    &[
        "run",
        "--release",
        "-p",
        "stress",
        "--",
        "pages",
        "--crash-loop",
        "3",
        "--kill-within-ms",
        "2000",
    ],
    &[
        "run",
        "--release",
        "-p",
        "stress",
        "--",
        "log",
        "--duration-secs",
        "1",
    ],
];

fn stress(ctx: &Context) -> Result<(), String> {
    for args in STRESS_RUNS {
        cargo(ctx, args, &[])?;
    }
    Ok(())
}

/// `-D warnings` added to whatever RUSTDOCFLAGS the caller already has.
fn rustdocflags(existing: Option<&str>) -> String {
    match existing.map(str::trim) {
        Some(flags) if !flags.is_empty() => format!("{flags} -D warnings"),
        _ => "-D warnings".to_owned(),
    }
}

fn doc(ctx: &Context) -> Result<(), String> {
    let flags = rustdocflags(env::var("RUSTDOCFLAGS").ok().as_deref());
    cargo(
        ctx,
        &["doc", "--workspace", "--no-deps"],
        &[("RUSTDOCFLAGS", flags)],
    )
}

fn run_tidy(ctx: &Context) -> Result<(), String> {
    let violations = tidy::run(&ctx.root)?;
    for violation in &violations {
        println!("{violation}");
    }
    match violations.len() {
        0 => {
            println!("tidy: no violations");
            Ok(())
        }
        n => Err(format!("{n} tidy violation(s) listed above")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    fn step_idx(name: &str) -> usize {
        STEPS.iter().position(|s| s.name == name).unwrap()
    }

    #[test]
    fn ci_steps_run_in_the_documented_order() {
        let names: Vec<_> = STEPS.iter().map(|s| s.name).collect();
        assert_eq!(names, ["fmt", "clippy", "test", "stress", "doc", "tidy"]);
    }

    #[test]
    fn parses_commands_and_flags() {
        assert_eq!(
            parse_args(&args(&["ci"]), false),
            Ok(Invocation::Ci {
                full: false,
                release: false
            })
        );
        assert_eq!(
            parse_args(&args(&["ci", "--full"]), false),
            Ok(Invocation::Ci {
                full: true,
                release: false
            })
        );
        assert_eq!(
            parse_args(&args(&["ci"]), true),
            Ok(Invocation::Ci {
                full: true,
                release: false
            })
        );
        assert_eq!(
            parse_args(&args(&["test", "--release"]), false),
            Ok(Invocation::One {
                step_idx: step_idx("test"),
                full: false,
                release: true
            })
        );
        assert_eq!(
            parse_args(&args(&["tidy"]), false),
            Ok(Invocation::One {
                step_idx: step_idx("tidy"),
                full: false,
                release: false
            })
        );
        assert_eq!(parse_args(&args(&["--help"]), false), Ok(Invocation::Help));
        assert_eq!(
            parse_args(&args(&["ci", "-h"]), false),
            Ok(Invocation::Help)
        );
    }

    #[test]
    fn rejects_bad_command_lines() {
        assert!(parse_args(&args(&[]), false).is_err());
        assert!(parse_args(&args(&["lint"]), false).is_err());
        assert!(parse_args(&args(&["ci", "--fast"]), false).is_err());
        assert!(parse_args(&args(&["fmt", "--release"]), false).is_err());
        // XTASK_FULL in the environment does not make other commands fail.
        assert!(parse_args(&args(&["fmt"]), true).is_ok());
    }

    #[test]
    fn full_env_values() {
        assert!(is_truthy("1"));
        assert!(is_truthy("yes"));
        assert!(!is_truthy(""));
        assert!(!is_truthy("0"));
        assert!(!is_truthy("false"));
    }

    #[test]
    fn test_step_sets_long_mode_only_when_full() {
        let (default_args, default_env) = test_command(false, false);
        assert_eq!(default_args, ["test", "--workspace"]);
        assert!(default_env.is_empty());
        let (full_args, full_env) = test_command(true, true);
        assert_eq!(full_args, ["test", "--workspace", "--release"]);
        assert_eq!(
            command_line(&full_args, &full_env),
            "PROPTEST_CASES=10000 PAGELOG_LONG=1 cargo test --workspace --release"
        );
    }

    #[test]
    fn doc_flags_deny_warnings() {
        assert_eq!(rustdocflags(None), "-D warnings");
        assert_eq!(rustdocflags(Some(" ")), "-D warnings");
        assert_eq!(
            rustdocflags(Some("--cfg docsrs")),
            "--cfg docsrs -D warnings"
        );
        let shown = command_line(&["doc"], &[("RUSTDOCFLAGS", rustdocflags(None))]);
        assert_eq!(shown, "RUSTDOCFLAGS='-D warnings' cargo doc");
    }

    #[test]
    fn usage_lists_every_step() {
        let text = usage();
        for step in STEPS {
            assert!(text.contains(step.name));
        }
    }

    #[test]
    fn project_root_holds_the_workspace() {
        assert!(project_root().join("Cargo.toml").is_file());
        assert!(project_root().join("xtask").is_dir());
    }
}
