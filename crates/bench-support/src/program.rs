//! The frame every benchmark program shares: how `main` ends, and the line that says how the
//! run was set up.

use std::process::ExitCode;
use std::thread;

use crate::BenchResult;
use crate::scratch::ScratchDir;

/// A benchmark's `main` after parsing its arguments: `parsed` is the arguments or what was
/// wrong with them (empty for `--help`). A bad command line prints the message and `usage` on
/// stderr and exits with 2; otherwise `run` runs, and an error it returns is printed as
/// `{program}: failed: {error}` with exit code 1.
pub fn main_with<A>(
    program: &str,
    usage: &str,
    parsed: Result<A, String>,
    run: impl FnOnce(&A) -> BenchResult<()>,
) -> ExitCode {
    let args = match parsed {
        Ok(args) => args,
        Err(message) => {
            if !message.is_empty() {
                eprintln!("{program}: {message}");
            }
            eprintln!("{usage}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{program}: failed: {error}");
            ExitCode::FAILURE
        }
    }
}

/// `mode: --quick; scratch dir /tmp/x (removed at the end); 2 CPUs visible; build: release`,
/// the line a benchmark prints before measuring. The build is this crate's, compiled with the
/// same profile as the program (`DEBUG` warns that the numbers mean nothing).
pub fn setup_line(quick: bool, scratch: &ScratchDir) -> String {
    format!(
        "mode: {}; scratch dir {} (removed at the end); {} CPUs visible; build: {}",
        if quick { "--quick" } else { "default" },
        scratch.path().display(),
        thread::available_parallelism().map_or(0, |n| n.get()),
        if cfg!(debug_assertions) {
            "DEBUG (numbers meaningless, use --release)"
        } else {
            "release"
        },
    )
}
