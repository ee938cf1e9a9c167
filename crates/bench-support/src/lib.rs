//! Scaffolding shared by this project's benchmark programs: the log benchmark
//! (`crates/recovery/examples/bench_log.rs`), the page-cache benchmark
//! (`crates/pagecache/examples/bench_pages.rs`) and the `stress` program's `--ceilings`.
//!
//! It holds what those programs measured the same way in three copies:
//!
//! - [`ScratchDir`]: a new directory for one run, removed with its contents when dropped.
//! - The ceilings, what the disk and the CPU do at best with plain `std` calls, which every
//!   figure is divided by: [`ceiling_sync_writes`] (C1, 4 KiB positional write + `fdatasync`),
//!   [`ceiling_sequential_write`] (C2, 1 MiB chunks then one `fdatasync`) and [`ceiling_cas`]
//!   (C3, one thread's uncontended compare-and-swap).
//! - [`Measured`] and [`Written`]: operations or bytes and the wall time they took.
//! - [`Row`], [`Target`] and [`print_table`]: the result table, one figure a line with its
//!   baseline, ratio, target and PASS/FAIL; [`fmt_rate`] for rates in it.
//! - [`drop_os_page_cache`], so a step can read from the device rather than from memory.
//! - [`BoxError`] and [`BenchResult`], the error type of a benchmark's steps; [`main_with`],
//!   how its `main` ends, and [`setup_line`], how it says what it runs on.
//!
//! # Invariants
//!
//! - **Never someone else's data.** Every file or directory this crate creates is new
//!   (`create_new`, `create_dir`): a name that already exists is an error, never overwritten.
//!   A ceiling removes its file before it returns `Ok`; a [`ScratchDir`] removes its whole
//!   tree when dropped, also when a step failed.
//! - **A ceiling measures one thing.** Each loop does only the call it names; setup
//!   (preallocating C1's region, filling a chunk) is outside the timing, and what is timed is
//!   said in each function's doc. Durations and sizes are the caller's, so a quick run and a
//!   full run measure the same thing for shorter.
//! - **The table's verdict is mechanical.** A row passes when its ratio meets its [`Target`];
//!   a row without a target is `info` (a ratio shown for context) or `-` (a ceiling).
//!
//! # What it does not do
//!
//! It is scaffolding for this project's benchmark programs, not part of the storage engine:
//! no engine crate depends on it except as a dev-dependency (for its examples), which
//! `cargo xtask tidy` checks; only tools such as `stress` use it as a normal dependency. It
//! uses `std` only and no crate of this workspace, so a ceiling never runs engine code. It
//! does not parse command lines, choose durations, or know the design's targets: each
//! program keeps its own figures, targets and report text.
#![forbid(unsafe_code)]

mod ceilings;
mod os_cache;
mod program;
mod scratch;
mod table;
mod timing;

pub use ceilings::{ceiling_cas, ceiling_sequential_write, ceiling_sync_writes};
pub use os_cache::{DropCaches, drop_os_page_cache};
pub use program::{main_with, setup_line};
pub use scratch::ScratchDir;
pub use table::{Row, Target, fmt_rate, print_table};
pub use timing::{Measured, Written};

/// Any error a benchmark step ends with: an IO error, an engine error, or a message.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What a benchmark step returns: its result, or the [`BoxError`] that ended the run.
pub type BenchResult<T> = Result<T, BoxError>;
