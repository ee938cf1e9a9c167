//! Benchmark of the page cache against ceilings measured in the same run and against the
//! figures of the original `pagecache` 0.17.
//!
//! Run with
//! `cargo run --release -p pagecache --example bench_pages -- [--dir PATH] [--quick]
//! [--original PATH]`.
//!
//! The machines this project runs on are shared and noisy, so each figure is printed next to
//! a ceiling measured a few seconds earlier on the same directory, or next to the original's
//! figure (measured on a machine of the same kind, not in this run), with its target. With
//! `--original PATH`, B is also compared with the original measured in this run: PATH is the
//! program built from `baselines/pagecache-0.17` (the original `pagecache` 0.17 under B's
//! workload), and B then runs in three rounds per thread count, each running the original
//! and ours back to back for as long; the figures are the rounds' medians.
//!
//! * C1: 4 KiB `write_all_at` + `sync_data` (fdatasync) on a preallocated 1 MiB region.
//! * C3: one thread incrementing one `AtomicU64` with `compare_exchange`.
//! * B1/B2: 100 000 pages of 100-byte fragments; 50 % `link` (a read for the version, then
//!   the `link`) and 50 % reads on random pages, 1 and 2 threads; a cache budget that holds
//!   everything and the default background flush. Reads are `get_pinned`, in place under a
//!   pin, as a tree traversal reads (the original's `get` also returned references), and
//!   look at the value's first byte. Compared with the original's 447 k ops/s
//!   (1 thread) and 829 k ops/s (2 threads), and with `--original`, with the original run
//!   under the same workload in the same rounds, back to back with ours.
//! * P: `get` of paged-out pages: 100 000 pages written with a tiny cache budget, closed, the
//!   OS page cache dropped, reopened, then random gets. Compared with random 4 KiB `pread`s
//!   on the same data file, in rounds that time both back to back: cold rounds (the OS page
//!   cache dropped before each side), then warm ones (the whole file cached); the ratio
//!   shown is the median of the rounds' ratios.
//! * R: reopen time after 1 000 000 small updates (100-byte `link`s) on 100 000 pages, with
//!   the default snapshot settings, warm and with the OS page cache dropped. Compared with the
//!   original's 2.25 s.
//! * S: data file length over live bytes after those updates (the original: 6.45), shown
//!   for information: the space target (1.5) is S2's, a steady state of uniform overwrites.
//! * S2: the space target's own workload, uniform overwrites (`replace`) of 1 000 000 pages
//!   of 100 bytes, file over live sampled through the steady state (target 1.5).
//!
//! Every page's value is the XOR of its fragments, so the merged value depends on every
//! fragment of the chain and R checks each page's value against a model after reopening.
//!
//! The ceilings' loops, the scratch directory and the result table are `bench-support`'s,
//! shared with `bench_log` and the `stress` program's `--ceilings`.
//!
//! Everything is created under a fresh directory (inside `--dir PATH` when given, else inside
//! `std::env::temp_dir()`) that is removed at the end, also when a step fails.

use std::fs::{self, File};
use std::hint::black_box;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use bench_support::{
    BenchResult, DropCaches, Measured, Row, ScratchDir, Target, ceiling_cas, ceiling_sync_writes,
    drop_os_page_cache, fmt_rate, print_table, setup_line,
};
use pagecache::{Config, DecodeError, Materializer, Metrics, PageCache, PageId};

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;

/// Figures of the original `pagecache` 0.17 (from the issue; not measured in this run).
const ORIGINAL_MIXED_1T_PER_S: f64 = 447e3;
const ORIGINAL_MIXED_2T_PER_S: f64 = 829e3;
const ORIGINAL_REOPEN_SECS: f64 = 2.25;
const ORIGINAL_SPACE_AMPLIFICATION: f64 = 6.45;

/// Targets from the issue.
const TARGET_MIXED_VS_ORIGINAL: f64 = 4.0;
const TARGET_PAGE_IN_VS_PREAD: f64 = 0.9;
const TARGET_REOPEN_VS_ORIGINAL: f64 = 0.1;
const TARGET_SPACE_AMPLIFICATION: f64 = 1.5;

const N_PAGES: u64 = 100_000;
const FRAGMENT_LEN_BYTES: usize = 100;
/// Big enough for every fragment of B1/B2 (100 000 pages, chains of at most 7 fragments).
const LARGE_CACHE_BUDGET_BYTES: u64 = 1 << 30;
/// About 6 % of P's pages: nearly every get pages in.
const TINY_CACHE_BUDGET_BYTES: u64 = MIB;

/// How long and how large each step is; `--quick` shrinks everything.
struct Plan {
    quick: bool,
    c1_duration: Duration,
    c3_duration: Duration,
    mixed_duration: Duration,
    n_paged_out_gets: u64,
    n_updates: u64,
}

impl Plan {
    fn new(quick: bool) -> Plan {
        Plan {
            quick,
            c1_duration: Duration::from_millis(if quick { 500 } else { 2000 }),
            c3_duration: Duration::from_millis(if quick { 300 } else { 1000 }),
            mixed_duration: Duration::from_millis(if quick { 1000 } else { 5000 }),
            n_paged_out_gets: if quick { 20_000 } else { 100_000 },
            n_updates: if quick { 200_000 } else { 1_000_000 },
        }
    }
}

/// Page values are the XOR of their fragments (all `FRAGMENT_LEN_BYTES` long).
struct Xor;

impl Materializer for Xor {
    type Fragment = Vec<u8>;

    fn encode(&self, fragment: &Vec<u8>, out: &mut Vec<u8>) {
        out.extend_from_slice(fragment);
    }

    fn decode(&self, bytes: &[u8]) -> Result<Vec<u8>, DecodeError> {
        if bytes.len() != FRAGMENT_LEN_BYTES {
            return Err(DecodeError::new(format!("{} bytes, not 100", bytes.len())));
        }
        Ok(bytes.to_vec())
    }

    fn merge(&self, chain: &[&Vec<u8>]) -> Vec<u8> {
        let mut value = chain[0].clone();
        for fragment in &chain[1..] {
            xor_into(&mut value, fragment);
        }
        value
    }

    fn size_in_bytes(&self, fragment: &Vec<u8>) -> usize {
        fragment.len() + std::mem::size_of::<Vec<u8>>()
    }
}

fn xor_into(value: &mut [u8], fragment: &[u8]) {
    for (byte, other) in value.iter_mut().zip(fragment) {
        *byte ^= other;
    }
}

/// A small fast PRNG (xorshift64*), one per thread.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A fragment of random bytes, in one allocation of its exact length. (Filled eight bytes
    /// at a time into a `Vec` of capacity 100, it grew on the last word: a `realloc` per
    /// fragment, 6 % of B1's samples spent building the workload's input.)
    fn fragment(&mut self) -> Vec<u8> {
        let mut bytes = vec![0; FRAGMENT_LEN_BYTES];
        for chunk in bytes.chunks_mut(8) {
            chunk.copy_from_slice(&self.next().to_le_bytes()[..chunk.len()]);
        }
        bytes
    }
}

struct Args {
    dir: Option<PathBuf>,
    quick: bool,
    /// The baseline program of `baselines/pagecache-0.17`, to run next to B.
    original: Option<PathBuf>,
    /// Which steps to run (letters of `b`, `p`, `r`); all when `None`.
    only: Option<String>,
}

impl Args {
    fn runs(&self, step: char) -> bool {
        self.only.as_ref().is_none_or(|only| only.contains(step))
    }
}

const USAGE: &str = "usage: bench_pages [--dir PATH] [--quick] [--only STEPS] [--original PATH]\n\
    \x20 --dir PATH       create the benchmark's scratch directory inside PATH (default: the temp dir)\n\
    \x20 --quick          fewer operations and shorter loops (a smoke run)\n\
    \x20 --only STEPS     run only these steps, any of b (B1/B2), p (P), r (R and S); e.g. `--only b`\n\
    \x20 --original PATH  also run the original pagecache 0.17 under B's workload, for a ratio\n\
    \x20                  measured in this run (PATH: the program `baselines/pagecache-0.17` builds)";

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        dir: None,
        quick: false,
        original: None,
        only: None,
    };
    let mut argv = std::env::args().skip(1);
    while let Some(arg) = argv.next() {
        match arg.as_str() {
            "--quick" => args.quick = true,
            "--only" => {
                let steps = argv.next().ok_or("--only needs steps, e.g. `b` or `pr`")?;
                if steps.is_empty() || !steps.chars().all(|c| "bpr".contains(c)) {
                    return Err(format!("--only takes letters of `bpr`, not {steps:?}"));
                }
                args.only = Some(steps);
            }
            "--dir" => args.dir = Some(PathBuf::from(argv.next().ok_or("--dir needs a path")?)),
            "--original" => {
                let path = argv
                    .next()
                    .ok_or("--original needs the baseline program's path")?;
                args.original = Some(PathBuf::from(path));
            }
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    bench_support::main_with("bench_pages", USAGE, parse_args(), run)
}

fn run(args: &Args) -> BenchResult<()> {
    let plan = Plan::new(args.quick);
    let argv: Vec<String> = std::env::args().collect();
    println!("argv: {}", argv.join(" "));
    let parent = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let scratch = ScratchDir::create(&parent, "bench_pages")?;
    println!("{}", setup_line(plan.quick, &scratch));
    println!();
    let mut rows = Vec::new();

    // (a) Ceilings.
    let c1 = ceiling_sync_writes(&scratch.sub("c1.data"), plan.c1_duration)?;
    println!(
        "C1  4 KiB write_all_at + sync_data: {} ops in {:.2?} = {}",
        c1.n_ops,
        c1.elapsed,
        fmt_rate(c1.per_second())
    );
    rows.push(Row::ceiling(
        "C1 4 KiB pwrite + fdatasync",
        fmt_rate(c1.per_second()),
    ));
    let c3 = ceiling_cas(plan.c3_duration);
    println!(
        "C3  uncontended CAS increment, 1 thread: {} ops in {:.2?} = {}",
        c3.n_ops,
        c3.elapsed,
        fmt_rate(c3.per_second())
    );
    rows.push(Row::ceiling(
        "C3 uncontended CAS",
        fmt_rate(c3.per_second()),
    ));
    println!();

    if args.runs('b') {
        step_mixed(&plan, &scratch, args.original.as_deref(), &mut rows)?;
    }
    let mut paged_note = None;
    if args.runs('p') {
        paged_note = step_paged_out(&plan, &scratch, &mut rows)?;
    }
    if args.runs('r') {
        step_reopen(&plan, &scratch, &mut rows)?;
    }

    print_table(&rows);
    if let Some(note) = paged_note {
        println!("P ran with the OS page cache NOT dropped ({note}): both sides read from memory.");
    }
    Ok(())
}

/// Rounds of B per thread count with `--original`: each round runs the original and ours back
/// to back (alternating which goes first), and the figures are the medians, so a burst of
/// load from another tenant skews one round, not the ratio.
const MIXED_ROUNDS_WITH_ORIGINAL: usize = 3;

/// (b) B1 and B2: mixed link/get on resident pages; with `original`, in rounds that each also
/// run the original under the same workload.
fn step_mixed(
    plan: &Plan,
    scratch: &ScratchDir,
    original: Option<&Path>,
    rows: &mut Vec<Row>,
) -> BenchResult<()> {
    let n_rounds = if original.is_some() {
        MIXED_ROUNDS_WITH_ORIGINAL
    } else {
        1
    };
    // Per thread count: our median rate, and the original's.
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for (n_threads, published, figure) in [
        (1, ORIGINAL_MIXED_1T_PER_S, "B1 50% link/50% get, 1 thread"),
        (2, ORIGINAL_MIXED_2T_PER_S, "B2 50% link/50% get, 2 threads"),
    ] {
        let (mut our_rates, mut their_rates, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..n_rounds {
            let dir = scratch.sub(&format!("b{n_threads}-{round}"));
            let run_theirs = |program| {
                let measured =
                    original_mixed(program, scratch.path(), n_threads, plan.mixed_duration)?;
                println!(
                    "B{n_threads}  the original pagecache 0.17: {} ops in {:.2?} = {}",
                    measured.n_ops,
                    measured.elapsed,
                    fmt_rate(measured.per_second())
                );
                BenchResult::Ok(measured)
            };
            // Alternate which side goes first, so neither always runs on the other's heels.
            let theirs_first = round % 2 == 0;
            let mut original_run = None;
            if theirs_first {
                original_run = original.map(run_theirs).transpose()?;
            }
            let measured = mixed_workload(&dir, n_threads, plan.mixed_duration)?;
            if !theirs_first {
                original_run = original.map(run_theirs).transpose()?;
            }
            our_rates.push(measured.per_second());
            if let Some(original) = original_run {
                their_rates.push(original.per_second());
                ratios.push(measured.per_second() / original.per_second());
            }
        }
        let rate = median(&mut our_rates);
        rows.push(Row::compared(
            figure,
            fmt_rate(rate),
            format!("0.17 {}", fmt_rate(published)),
            rate / published,
            Some(Target::AtLeast(TARGET_MIXED_VS_ORIGINAL)),
        ));
        if !ratios.is_empty() {
            let their_rate = median(&mut their_rates);
            let ratio = median(&mut ratios);
            println!(
                "B{n_threads}  medians of {n_rounds} rounds: ours {}, the original {}, ratio \
                 {ratio:.2}x",
                fmt_rate(rate),
                fmt_rate(their_rate)
            );
            rows.push(Row::compared(
                format!("B{n_threads} same, against 0.17 in this run"),
                fmt_rate(rate),
                format!("0.17 (run) {}", fmt_rate(their_rate)),
                ratio,
                Some(Target::AtLeast(TARGET_MIXED_VS_ORIGINAL)),
            ));
            theirs.push(their_rate);
        }
        ours.push(rate);
    }
    let scaling = |rates: &[f64]| rates[1] / rates[0];
    match original {
        Some(_) => println!(
            "B2/B1 scaling: {:.2}x with 2 threads (the original: {:.2}x in its figures, {:.2}x \
             in this run)",
            scaling(&ours),
            ORIGINAL_MIXED_2T_PER_S / ORIGINAL_MIXED_1T_PER_S,
            scaling(&theirs)
        ),
        None => println!(
            "B2/B1 scaling: {:.2}x with 2 threads (the original: {:.2}x)",
            scaling(&ours),
            ORIGINAL_MIXED_2T_PER_S / ORIGINAL_MIXED_1T_PER_S
        ),
    }
    println!();

    Ok(())
}

/// Runs `program` (built from `baselines/pagecache-0.17`: the original `pagecache` 0.17 under
/// B's workload) on `n_threads` threads for `duration`, in a directory it makes inside `dir`.
fn original_mixed(
    program: &Path,
    dir: &Path,
    n_threads: u64,
    duration: Duration,
) -> BenchResult<Measured> {
    let output = Command::new(program)
        .arg("--threads")
        .arg(n_threads.to_string())
        .arg("--millis")
        .arg(duration.as_millis().to_string())
        .arg("--dir")
        .arg(dir)
        .output()
        .map_err(|error| format!("running the original ({}): {error}", program.display()))?;
    if !output.status.success() {
        return Err(format!(
            "the original ({}) failed ({}): {}",
            program.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )
        .into());
    }
    let text = String::from_utf8_lossy(&output.stdout);
    parse_original_output(&text).ok_or_else(|| {
        format!(
            "the original ({}) printed {text:?}, not `ops N elapsed_ns E`",
            program.display()
        )
        .into()
    })
}

/// Reads the baseline program's one line, `ops N elapsed_ns E`.
fn parse_original_output(text: &str) -> Option<Measured> {
    let words: Vec<&str> = text.split_whitespace().collect();
    let ["ops", n_ops, "elapsed_ns", elapsed_ns] = words[..] else {
        return None;
    };
    Some(Measured {
        n_ops: n_ops.parse().ok()?,
        elapsed: Duration::from_nanos(elapsed_ns.parse().ok()?),
    })
}

/// (c) P: gets of paged-out pages against random 4 KiB preads. Returns why the OS page cache
/// could not be dropped, if it could not.
fn step_paged_out(
    plan: &Plan,
    scratch: &ScratchDir,
    rows: &mut Vec<Row>,
) -> BenchResult<Option<String>> {
    let paged = paged_out_gets(&scratch.sub("p"), plan.n_paged_out_gets)?;
    for (phase_idx, figure) in [
        "P paged-out gets, cold OS cache",
        "P same, OS cache warmed up",
    ]
    .into_iter()
    .enumerate()
    {
        // The rates are over every round; the ratio is the median of the rounds' ratios.
        let (gets, preads) = (paged.gets[phase_idx], paged.preads[phase_idx]);
        // The target is about the device (a cold OS cache); the warm figure shows what a
        // page-in costs in CPU next to a pread served from memory, and has no target.
        let target = (phase_idx == 0).then_some(Target::AtLeast(TARGET_PAGE_IN_VS_PREAD));
        rows.push(Row::compared(
            figure,
            fmt_rate(gets.per_second()),
            format!("pread {}", fmt_rate(preads.per_second())),
            paged.ratios[phase_idx],
            target,
        ));
    }
    println!();

    Ok((!paged.drop_failures.is_empty()).then(|| paged.drop_failures.join("; ")))
}

/// (d) and (e) R and S: reopen after many updates, space amplification.
fn step_reopen(plan: &Plan, scratch: &ScratchDir, rows: &mut Vec<Row>) -> BenchResult<()> {
    let updated = updates_then_reopen(&scratch.sub("r"), plan.n_updates)?;
    rows.push(Row::compared(
        if plan.quick {
            "R reopen after 200k updates"
        } else {
            "R reopen after 1M updates"
        },
        format!("{:.1?}", updated.reopen_warm),
        format!("0.17 {ORIGINAL_REOPEN_SECS:.2} s"),
        updated.reopen_warm.as_secs_f64() / ORIGINAL_REOPEN_SECS,
        Some(Target::AtMost(TARGET_REOPEN_VS_ORIGINAL)),
    ));
    if let Some(cold) = updated.reopen_cold {
        rows.push(Row::compared(
            "R same, OS page cache dropped",
            format!("{cold:.1?}"),
            format!("0.17 {ORIGINAL_REOPEN_SECS:.2} s"),
            cold.as_secs_f64() / ORIGINAL_REOPEN_SECS,
            Some(Target::AtMost(TARGET_REOPEN_VS_ORIGINAL)),
        ));
    }
    // Informational: the 1.5 target is for S2's workload (uniform overwrites in a steady
    // state), not for the file right after R's updates with their links and snapshots.
    let amplification = updated.file_len_bytes as f64 / updated.live_bytes.max(1) as f64;
    rows.push(Row::compared(
        "S data file / live bytes",
        format!("{amplification:.2}"),
        format!("0.17 {ORIGINAL_SPACE_AMPLIFICATION:.2}"),
        amplification,
        None,
    ));
    let n_pages = if plan.quick { 200_000 } else { 1_000_000 };
    let steady = uniform_overwrites(&scratch.sub("s"), n_pages)?;
    rows.push(Row::compared(
        if plan.quick {
            "S2 same, uniform overwrites, 200k pages"
        } else {
            "S2 same, uniform overwrites, 1M pages"
        },
        format!("{:.2} (max {:.2})", steady.mean_ratio, steady.max_ratio),
        "target".to_string(),
        steady.max_ratio,
        Some(Target::AtMost(TARGET_SPACE_AMPLIFICATION)),
    ));
    println!();

    Ok(())
}

/// File over live bytes sampled through the steady state of [`uniform_overwrites`].
struct SteadySpace {
    mean_ratio: f64,
    max_ratio: f64,
}

/// S2: the space target's own workload. `n_pages` pages of one 100-byte fragment, then
/// `replace`s of random pages (default settings, background flusher on) until the log has
/// written four times the live bytes; file over live is sampled 20 times over the second
/// half, once the log has been rewritten twice. A store much larger than the defaults'
/// fixed part (a few 2 MiB segments and the writes of one flush interval) is needed for the
/// ratio to mean anything: at 100 000 pages (13 MiB live) that part alone is 0.4x live.
fn uniform_overwrites(dir: &Path, n_pages: u64) -> BenchResult<SteadySpace> {
    let cache = create(dir, Config::builder().build()?)?;
    let mut rng = Rng::new(13);
    let mut versions = Vec::with_capacity(n_pages as usize);
    for _ in 0..n_pages {
        let (_, written) = cache.allocate(rng.fragment())?;
        versions.push(written.version);
    }
    let live_at_start = cache.stats().live_bytes;
    let written = || Metrics::get(&cache.log_metrics().written_bytes);
    let written_at_start = written();
    let total_bytes = 4 * live_at_start;
    let sample_every_bytes = total_bytes / 40;
    let mut next_sample_bytes = total_bytes / 2;
    let (mut sum, mut n_samples, mut max_ratio) = (0.0, 0u32, 0f64);
    let started = Instant::now();
    let mut n_writes = 0u64;
    loop {
        let done_bytes = written() - written_at_start;
        if done_bytes >= total_bytes {
            break;
        }
        if done_bytes >= next_sample_bytes {
            let stats = cache.stats();
            let ratio = stats.file_len_bytes as f64 / stats.live_bytes.max(1) as f64;
            sum += ratio;
            n_samples += 1;
            max_ratio = max_ratio.max(ratio);
            next_sample_bytes += sample_every_bytes;
        }
        for _ in 0..1000 {
            let pid = rng.next() % n_pages;
            let replaced = cache
                .replace(PageId(pid), versions[pid as usize], rng.fragment())?
                .map_err(|_| "a single writer's replace was refused")?;
            versions[pid as usize] = replaced.version;
            n_writes += 1;
        }
    }
    let stats = cache.stats();
    let metrics = cache.metrics();
    let mean_ratio = sum / f64::from(n_samples.max(1));
    println!(
        "S2  {n_writes} replaces on {n_pages} pages in {:.2?}; live {:.1} MiB, span {:.1} MiB, \
         file {:.1} MiB at the end; file / live over the second half: mean {mean_ratio:.2}, \
         max {max_ratio:.2} ({n_samples} samples); {} relocations",
        started.elapsed(),
        stats.live_bytes as f64 / MIB as f64,
        stats.log_span_bytes as f64 / MIB as f64,
        stats.file_len_bytes as f64 / MIB as f64,
        Metrics::get(&metrics.n_relocations),
    );
    cache.close()?;
    Ok(SteadySpace {
        mean_ratio,
        max_ratio,
    })
}

/// Opens a new page cache in `dir` (which must not exist yet).
fn create(dir: &Path, config: Config) -> BenchResult<PageCache<Xor>> {
    if dir.exists() {
        return Err(format!("{} already exists", dir.display()).into());
    }
    let (cache, _) = PageCache::open_dir(dir, config, Xor)?;
    Ok(cache)
}

/// Allocates `N_PAGES` pages of one fragment each; returns each page's value.
fn allocate_pages(cache: &PageCache<Xor>, rng: &mut Rng) -> BenchResult<Vec<Vec<u8>>> {
    let mut values = Vec::with_capacity(N_PAGES as usize);
    for expected_pid in 0..N_PAGES {
        let fragment = rng.fragment();
        let (pid, _) = cache.allocate(fragment.clone())?;
        if pid != PageId(expected_pid) {
            return Err(format!("a new cache allocated {pid:?}, expected {expected_pid}").into());
        }
        values.push(fragment);
    }
    Ok(values)
}

/// One `get` as a tree traversal does it: read in place under a pin, and look at the value
/// (its first byte, so the read pays for bringing the value's bytes in, as a search would).
fn read_in_place(cache: &PageCache<Xor>, pid: PageId) -> BenchResult<()> {
    let pinned = cache.pin();
    let page = cache
        .get_pinned(pid, &pinned)?
        .ok_or_else(|| format!("page {pid:?} is missing"))?;
    // `copied`: a reference to the byte would be a pointer, never loaded; the byte itself is.
    black_box(page.value.first().copied());
    Ok(())
}

/// One `link` as an application does it: read the page's version, then link; a stale version
/// (another thread won) is retried. Returns the number of retries.
fn read_and_link(cache: &PageCache<Xor>, pid: PageId, mut fragment: Vec<u8>) -> BenchResult<u64> {
    let mut n_retries = 0;
    loop {
        let pinned = cache.pin();
        let page = cache
            .get_pinned(pid, &pinned)?
            .ok_or_else(|| format!("page {pid:?} is missing"))?;
        match cache.link(pid, page.version, fragment)? {
            Ok(_) => return Ok(n_retries),
            Err(stale) => {
                fragment = stale.fragment;
                n_retries += 1;
            }
        }
    }
}

/// B1/B2: 50 % link, 50 % get on random pages of a cache that holds everything.
fn mixed_workload(dir: &Path, n_threads: u64, duration: Duration) -> BenchResult<Measured> {
    let config = Config::builder()
        .cache_budget_bytes(LARGE_CACHE_BUDGET_BYTES)
        .build()?;
    let cache = create(dir, config)?;
    let started = Instant::now();
    allocate_pages(&cache, &mut Rng::new(n_threads))?;
    let allocate_elapsed = started.elapsed();
    let barrier = Barrier::new(n_threads as usize + 1);
    let stop = AtomicBool::new(false);
    let measured = thread::scope(|scope| -> BenchResult<Measured> {
        let workers: Vec<_> = (0..n_threads)
            .map(|thread_idx| {
                let (cache, barrier, stop) = (&cache, &barrier, &stop);
                scope.spawn(move || -> BenchResult<(u64, u64)> {
                    let mut rng = Rng::new(1000 + thread_idx);
                    let (mut n_ops, mut n_retries) = (0u64, 0u64);
                    barrier.wait();
                    while !stop.load(Ordering::Relaxed) {
                        for _ in 0..64 {
                            let choice = rng.next();
                            let pid = PageId((choice >> 1) % N_PAGES);
                            if choice & 1 == 0 {
                                read_in_place(cache, pid)?;
                            } else {
                                n_retries += read_and_link(cache, pid, rng.fragment())?;
                            }
                        }
                        n_ops += 64;
                    }
                    Ok((n_ops, n_retries))
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        thread::sleep(duration);
        stop.store(true, Ordering::Release);
        let mut n_ops = 0;
        let mut n_retries = 0;
        for worker in workers {
            let (ops, retries) = worker.join().map_err(|_| "a worker panicked")??;
            n_ops += ops;
            n_retries += retries;
        }
        let elapsed = start.elapsed();
        println!(
            "B{n_threads}  {} ops ({n_retries} stale-version retries) in {elapsed:.2?} = {}; \
             allocating {N_PAGES} pages took {allocate_elapsed:.2?}",
            n_ops,
            fmt_rate(n_ops as f64 / elapsed.as_secs_f64())
        );
        Ok(Measured { n_ops, elapsed })
    })?;
    let metrics = cache.metrics();
    let stats = cache.stats();
    println!(
        "    cache hit ratio {:.3}, consolidations {}, relocations {}, segments cleaned {} \
         ({} bases examined), resident {} MiB, live {} MiB, log span {} MiB",
        metrics.cache_hit_ratio(),
        Metrics::get(&metrics.n_consolidations),
        Metrics::get(&metrics.n_relocations),
        Metrics::get(&metrics.n_segments_cleaned),
        Metrics::get(&metrics.n_records_examined),
        stats.resident_bytes / MIB,
        stats.live_bytes / MIB,
        stats.log_span_bytes / MIB,
    );
    cache.close()?;
    fs::remove_dir_all(dir)?;
    Ok(measured)
}

/// Rounds of P's comparisons, cold and warm; each round times gets and preads back to back
/// (alternating which goes first), and P reports the median of the rounds' ratios, so a burst
/// of IO or CPU from another process on a shared machine skews one round, not the figure.
const P_ROUNDS: u64 = 5;
/// Gets (and preads) per cold round, each side starting from a dropped OS page cache: few
/// next to the data file's 4096 blocks, so about four in five are device reads.
const COLD_OPS_PER_ROUND: u64 = 2_000;

/// P's figures, `[cold, warm]`: gets and preads summed over the rounds, and the median of
/// the rounds' ratios (gets per second over preads per second).
struct PagedOut {
    gets: [Measured; 2],
    preads: [Measured; 2],
    ratios: [f64; 2],
    /// Why the OS page cache could not be dropped, each reason once; empty when every drop
    /// succeeded.
    drop_failures: Vec<String>,
}

/// The median of a few ratios.
fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// P: random gets on a reopened cache with a tiny budget against random 4 KiB preads of the
/// same data file, in rounds: cold rounds (each side starts from a dropped OS page cache, so
/// most reads go to the device), then warm rounds (the whole file in the OS page cache, so
/// the page cache's CPU cost per page-in shows against a pread's).
fn paged_out_gets(dir: &Path, n_ops: u64) -> BenchResult<PagedOut> {
    let n_cold_ops = COLD_OPS_PER_ROUND.min(n_ops / (2 * P_ROUNDS)).max(1);
    let n_warm_ops = (n_ops / P_ROUNDS).max(1);
    let config = Config::builder()
        .cache_budget_bytes(TINY_CACHE_BUDGET_BYTES)
        .build()?;
    let cache = create(dir, config.clone())?;
    let started = Instant::now();
    let values = allocate_pages(&cache, &mut Rng::new(7))?;
    println!(
        "P   allocated {N_PAGES} pages with a {} KiB cache budget in {:.2?}",
        TINY_CACHE_BUDGET_BYTES / KIB,
        started.elapsed()
    );
    cache.close()?;
    let mut drop_failures = Vec::new();
    drop_page_cache_noting(&mut drop_failures);
    let started = Instant::now();
    let (cache, report) = PageCache::open_dir(dir, config, Xor)?;
    let data_path = dir.join(iobuf::DATA_FILE_NAME);
    println!(
        "P   reopened {} pages in {:.1?} ({} records replayed); data file {} MiB",
        report.n_pages,
        started.elapsed(),
        report.records_replayed,
        fs::metadata(&data_path)?.len() / MIB
    );
    let file = File::open(&data_path)?;
    // Only blocks the log wrote: the file ends in the unwritten rest of its last segment, a
    // hole on this file system, and a pread there reads no device block (it made the pread
    // side about a fifth faster than the device with a 16 MiB file holding 13 MiB of data).
    // The log writes from the start of the file, so the written blocks come first.
    let metadata = file.metadata()?;
    let n_blocks = metadata.len().min(metadata.blocks() * 512) / (4 * KIB);
    println!(
        "P   preads over the first {n_blocks} 4 KiB blocks (the file's allocated bytes: {} \
         KiB of {} KiB)",
        metadata.blocks() * 512 / KIB,
        metadata.len() / KIB
    );
    let mut block = vec![0u8; 4 * KIB as usize];
    let mut get_rng = Rng::new(8);
    let mut pread_rng = Rng::new(9);
    let mut gets = |n: u64| -> BenchResult<Measured> {
        let start = Instant::now();
        for _ in 0..n {
            let pid = get_rng.next() % N_PAGES;
            let page = cache.get(PageId(pid))?.ok_or("a page is missing")?;
            if page.value != values[pid as usize] {
                return Err(format!("page {pid} read back wrong").into());
            }
        }
        Ok(Measured {
            n_ops: n,
            elapsed: start.elapsed(),
        })
    };
    let mut preads = |n: u64| -> BenchResult<Measured> {
        let start = Instant::now();
        for _ in 0..n {
            let offset = (pread_rng.next() % n_blocks) * 4 * KIB;
            file.read_exact_at(&mut block, offset)?;
            black_box(&block);
        }
        Ok(Measured {
            n_ops: n,
            elapsed: start.elapsed(),
        })
    };
    let mut totals = [[Measured::ZERO; 2]; 2];
    let mut ratios = [Vec::new(), Vec::new()];
    for (phase_idx, phase) in ["cold", "warm"].into_iter().enumerate() {
        let mut line = format!("P   {phase} rounds (gets/s over pread/s):");
        if phase_idx == 1 {
            // Warm: the whole file in the OS page cache, for both sides.
            black_box(fs::read(&data_path)?);
        }
        for round in 0..P_ROUNDS {
            let mut round_figures = [Measured::ZERO; 2];
            // Alternate which side goes first, so neither always runs on the other's heels.
            for side in [round % 2, 1 - round % 2] {
                if phase_idx == 0 {
                    // Opening (or the other side) read the file: start each side cold.
                    drop_page_cache_noting(&mut drop_failures);
                }
                let n = if phase_idx == 0 {
                    n_cold_ops
                } else {
                    n_warm_ops
                };
                round_figures[side as usize] = if side == 0 { gets(n)? } else { preads(n)? };
            }
            let [round_gets, round_preads] = round_figures;
            let ratio = round_gets.per_second() / round_preads.per_second();
            line.push_str(&format!(
                " {}/{} = {ratio:.3};",
                fmt_rate(round_gets.per_second()),
                fmt_rate(round_preads.per_second())
            ));
            ratios[phase_idx].push(ratio);
            totals[0][phase_idx].add(round_gets);
            totals[1][phase_idx].add(round_preads);
        }
        println!("{line}");
    }
    let metrics = cache.metrics();
    println!(
        "P   {} page-ins (p50 <= {:?}, p99 <= {:?}), resident {} KiB",
        Metrics::get(&metrics.n_page_ins),
        metrics.page_in_latency.quantile_upper_bound(0.5),
        metrics.page_in_latency.quantile_upper_bound(0.99),
        cache.stats().resident_bytes / KIB,
    );
    cache.close()?;
    drop(file);
    fs::remove_dir_all(dir)?;
    let [cold_ratios, warm_ratios] = &mut ratios;
    Ok(PagedOut {
        gets: totals[0],
        preads: totals[1],
        ratios: [median(cold_ratios), median(warm_ratios)],
        drop_failures,
    })
}

/// Drops the OS page cache; when it cannot, adds the reason to `failures` unless it is there
/// already (without root, every drop fails the same way).
fn drop_page_cache_noting(failures: &mut Vec<String>) {
    if let Err(why) = drop_os_page_cache(DropCaches::PageCache)
        && !failures.contains(&why)
    {
        failures.push(why);
    }
}

struct Updated {
    reopen_warm: Duration,
    reopen_cold: Option<Duration>,
    file_len_bytes: u64,
    live_bytes: u64,
}

/// R and S: `n_updates` random 100-byte links on `N_PAGES` pages with default settings
/// (snapshots on), then reopening, warm and cold; every page is checked after each reopen.
fn updates_then_reopen(dir: &Path, n_updates: u64) -> BenchResult<Updated> {
    let config = Config::builder().build()?;
    let cache = create(dir, config.clone())?;
    let mut rng = Rng::new(11);
    let mut values = allocate_pages(&cache, &mut rng)?;
    let start = Instant::now();
    for _ in 0..n_updates {
        let pid = rng.next() % N_PAGES;
        let fragment = rng.fragment();
        xor_into(&mut values[pid as usize], &fragment);
        read_and_link(&cache, PageId(pid), fragment)?;
    }
    let elapsed = start.elapsed();
    let stats = cache.stats();
    let metrics = cache.metrics();
    let data_path = dir.join(iobuf::DATA_FILE_NAME);
    let file_len_bytes = fs::metadata(&data_path)?.len();
    println!(
        "R   {n_updates} updates in {elapsed:.2?} = {}; {} snapshots, {} segments cleaned, \
         {} relocations ({} MiB)",
        fmt_rate(n_updates as f64 / elapsed.as_secs_f64()),
        Metrics::get(&metrics.n_snapshots),
        Metrics::get(&metrics.n_segments_cleaned),
        Metrics::get(&metrics.n_relocations),
        Metrics::get(&metrics.relocated_bytes) / MIB,
    );
    println!(
        "S   data file {:.1} MiB (stats: {:.1} MiB), log span {:.1} MiB, live {:.1} MiB \
         (user data {:.1} MiB): file / live = {:.2}",
        file_len_bytes as f64 / MIB as f64,
        stats.file_len_bytes as f64 / MIB as f64,
        stats.log_span_bytes as f64 / MIB as f64,
        stats.live_bytes as f64 / MIB as f64,
        (N_PAGES * FRAGMENT_LEN_BYTES as u64) as f64 / MIB as f64,
        file_len_bytes as f64 / stats.live_bytes.max(1) as f64,
    );
    cache.close()?;

    let reopen = |label: &str| -> BenchResult<Duration> {
        let started = Instant::now();
        let (cache, report) = PageCache::open_dir(dir, config.clone(), Xor)?;
        let elapsed = started.elapsed();
        println!(
            "R   reopen ({label}) took {elapsed:.1?}: {}",
            report.to_string().replace('\n', "; ")
        );
        for (pid, value) in values.iter().enumerate() {
            let page = cache.get(PageId(pid as u64))?.ok_or("a page is missing")?;
            if &page.value != value {
                return Err(format!("page {pid} read back wrong after reopening").into());
            }
        }
        cache.close()?;
        Ok(elapsed)
    };
    let reopen_warm = reopen("warm OS page cache")?;
    let reopen_cold = match drop_os_page_cache(DropCaches::PageCache) {
        Ok(()) => Some(reopen("OS page cache dropped")?),
        Err(why) => {
            println!("R   cold reopen skipped: {why}");
            None
        }
    };
    fs::remove_dir_all(dir)?;
    Ok(Updated {
        reopen_warm,
        reopen_cold,
        file_len_bytes,
        live_bytes: stats.live_bytes,
    })
}
