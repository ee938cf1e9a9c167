//! `stress`: runs the page cache (or the plain log) under load, prints throughput, latency,
//! cache and recovery figures, and then verifies that everything the run acknowledged came
//! back intact.
//!
//! ```text
//! cargo run --release -p stress                      # pages workload, 10 s, temporary directory
//! cargo run --release -p stress -- pages --pages 1000000 --cache-budget-bytes 64MiB --threads 8
//! cargo run --release -p stress -- log --dir /mnt/nvme/stress --sync every --threads 8
//! cargo run --release -p stress -- recover --updates 5000000
//! cargo run --release -p stress -- --ceilings        # figures as ratios to the disk's ceilings
//! cargo run --release -p stress -- --json            # one JSON object on stdout
//! cargo run --release -p stress -- --crash-loop 20   # SIGKILL a writer 20 times, verify each
//! ```
//!
//! Workloads: `pages` (the default: threads doing a mix of get, link, replace, allocate and
//! free on a page cache, each thread making its writes durable every `--flush-every-ops`
//! operations), `log` (threads append self-describing messages for `--duration-secs`, made
//! durable per `--sync none|every|batch`) and `recover` (write `--updates` messages, close,
//! time the reopen).
//!
//! Every page value names its page key and last op seq and carries a checksum over its ops
//! (see `page.rs`); every log message names its run, thread and sequence number and carries a
//! checksum (see `message.rs`). So the verification pass reads the data back and checks it on
//! its own, then against what the run acknowledged: each page's exact final state, or each
//! stream of messages complete and in order. Any mismatch is a non-zero exit with a message
//! naming the page or message. Errors (a bad flag, a directory that cannot be created or is
//! locked, a full disk) are one line on stderr and a non-zero exit, never a panic.
//!
//! The program keeps no state of its own: a temporary directory is removed at the end, and a
//! `--dir` holds only the page cache or log (a later run there continues and verifies it).
#![forbid(unsafe_code)]

mod ceilings;
mod cli;
mod crash;
mod error;
mod message;
mod page;
mod page_check;
mod progress;
mod report;
mod run;
mod stats;
mod verify;
mod workload;

use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = match cli::parse(std::env::args_os()) {
        Ok(cli) => cli,
        Err(cli::ParseExit::Info(text)) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        Err(cli::ParseExit::Bad(line)) => {
            eprintln!("error: {line}");
            return ExitCode::from(2);
        }
    };
    if let Some(run) = cli.crash_child_run {
        return crash::child_main(&cli, run);
    }
    match run::run(&cli) {
        Ok(finished) => {
            if cli.json {
                println!("{}", finished.to_json());
            } else {
                print!("{}", finished.to_text());
            }
            match finished.failure() {
                None => ExitCode::SUCCESS,
                Some(error) => {
                    eprintln!("error: {}", error::one_line(&error));
                    ExitCode::FAILURE
                }
            }
        }
        Err(error) => {
            eprintln!("error: {}", error::one_line(&error));
            ExitCode::FAILURE
        }
    }
}
