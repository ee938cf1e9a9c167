//! Benchmark of the log against ceilings measured in the same run.
//!
//! Run with
//! `cargo run --release -p recovery --example bench_log -- [--dir PATH] [--quick]`.
//!
//! The machines this project runs on are shared and noisy, so absolute numbers mean little:
//! every figure is printed with its ratio against a ceiling (plain `std::fs` or a bare CAS
//! loop) or a baseline (another workload) measured a few seconds earlier in the same run, and
//! with the target from `design/targets.md`.
//!
//! Ceilings, measured first, with `std` only, on the benchmark directory:
//!
//! * C1: 4 KiB `write_all_at` + `sync_data` (fdatasync) on a preallocated 1 MiB region;
//!   measured again right before W4, and the higher of the two rates is the ceiling.
//! * C2: 1 MiB `write_all` chunks to a new file (1 GiB, 256 MiB with `--quick`), then one
//!   `sync_data`, timed together.
//! * C3: one thread incrementing one `AtomicU64` with `compare_exchange`.
//!
//! The ceilings' loops, the scratch directory and the result table are `bench-support`'s,
//! shared with `bench_pages` and the `stress` program's `--ceilings`.
//!
//! Workloads, each on a fresh log directory (default `LogConfig`, no background flusher):
//!
//! * W1/W2: unsynced 100-byte appends with 1 and 2 threads.
//! * W3: unsynced 1000-byte appends with 1 thread, the final `flush()` inside the timing.
//! * W4/W5: durable appends (`write` then `make_stable`) with 1 and 16 threads.
//! * W6: recovery scan of a log of 1 GiB (256 MiB with `--quick`) after a clean close and,
//!   when the process may, after dropping the OS page cache.
//!
//! Everything is created under a fresh directory (inside `--dir PATH` when given, else inside
//! `std::env::temp_dir()`) that is removed at the end, also when a step fails. Each workload's
//! own directory is removed as soon as it has been measured, so the disk never holds more than
//! one workload's data.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use bench_support::{
    BenchResult, DropCaches, Measured, Row, ScratchDir, Target, ceiling_cas,
    ceiling_sequential_write, ceiling_sync_writes, drop_os_page_cache, fmt_rate, print_table,
    setup_line,
};
use iobuf::{LatencyHistogram, Log, LogConfig, LogMetrics};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// Bytes per "MB" in every printed bandwidth (decimal, like `dd` and the targets file).
const BYTES_PER_MB: f64 = 1e6;

/// Reference figures of the original `pagecache` 0.17 (design/targets.md, measured on a
/// machine of the same kind, not in this run).
const PAGECACHE_017_APPEND_1T_PER_S: f64 = 4.1e6;
const PAGECACHE_017_APPEND_2T_PER_S: f64 = 4.6e6;
const PAGECACHE_017_APPEND_1000B_MB_PER_S: f64 = 686.0;
const PAGECACHE_017_DURABLE_1T_PER_S: f64 = 5.9e3;

/// Targets from design/targets.md.
const TARGET_W1_VS_C3: f64 = 0.1;
const TARGET_W1_VS_PAGECACHE: f64 = 3.0;
const TARGET_W2_VS_W1: f64 = 1.6;
const TARGET_W3_VS_C2: f64 = 0.8;
const TARGET_W4_VS_C1: f64 = 0.9;
const TARGET_W5_VS_W4: f64 = 8.0;
const TARGET_W6_SCAN_MB_PER_S: f64 = 1000.0;

const SMALL_MESSAGE_LEN_BYTES: usize = 100;
const LARGE_MESSAGE_LEN_BYTES: usize = 1000;
const W5_THREADS: usize = 16;

/// How long and how large each step is; `--quick` shrinks everything.
struct Plan {
    quick: bool,
    c1_duration: Duration,
    c2_total_bytes: u64,
    c3_duration: Duration,
    workload_duration: Duration,
    w6_log_bytes: u64,
}

impl Plan {
    fn new(quick: bool) -> Plan {
        if quick {
            Plan {
                quick,
                c1_duration: Duration::from_secs(1),
                c2_total_bytes: 256 * MIB,
                c3_duration: Duration::from_millis(500),
                workload_duration: Duration::from_millis(1500),
                w6_log_bytes: 256 * MIB,
            }
        } else {
            Plan {
                quick,
                c1_duration: Duration::from_secs(2),
                c2_total_bytes: GIB,
                c3_duration: Duration::from_secs(1),
                workload_duration: Duration::from_secs(3),
                w6_log_bytes: GIB,
            }
        }
    }
}

struct Args {
    dir: Option<PathBuf>,
    quick: bool,
}

const USAGE: &str = "usage: bench_log [--dir PATH] [--quick]\n\
    \x20 --dir PATH  create the benchmark's scratch directory inside PATH (default: the temp dir)\n\
    \x20 --quick     smaller files and shorter loops (a smoke run)";

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        dir: None,
        quick: false,
    };
    let mut argv = std::env::args().skip(1);
    while let Some(arg) = argv.next() {
        match arg.as_str() {
            "--quick" => args.quick = true,
            "--dir" => {
                let path = argv.next().ok_or("--dir needs a path")?;
                args.dir = Some(PathBuf::from(path));
            }
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    bench_support::main_with("bench_log", USAGE, parse_args(), run)
}

fn fmt_mb_per_s(mb_per_second: f64) -> String {
    format!("{mb_per_second:.0} MB/s")
}

fn fmt_opt_duration(duration: Option<Duration>) -> String {
    match duration {
        Some(d) => format!("{d:.1?}"),
        None => "n/a".to_string(),
    }
}

fn run(args: &Args) -> BenchResult<()> {
    let plan = Plan::new(args.quick);
    let argv: Vec<String> = std::env::args().collect();
    let passed_args = argv.get(1..).unwrap_or(&[]).join(" ");
    println!(
        "command: cargo run --release -p recovery --example bench_log --{}{}",
        if passed_args.is_empty() { "" } else { " " },
        passed_args
    );
    println!("argv:    {}", argv.join(" "));
    let parent = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let scratch = ScratchDir::create(&parent, "bench_log")?;
    println!("{}", setup_line(plan.quick, &scratch));
    println!();

    let mut rows = Vec::new();

    // Ceilings.
    let c1 = ceiling_sync_writes(&scratch.sub("c1.data"), plan.c1_duration)?;
    println!(
        "C1  4 KiB write_all_at + sync_data: {} ops in {:.2?} = {}",
        c1.n_ops,
        c1.elapsed,
        fmt_rate(c1.per_second())
    );
    // Replaced by the higher of the two C1 measurements once the second one is taken.
    let c1_row_idx = rows.len();
    rows.push(Row::ceiling(
        "C1 4 KiB pwrite + fdatasync",
        fmt_rate(c1.per_second()),
    ));

    let c2 = ceiling_sequential_write(&scratch.sub("c2.data"), plan.c2_total_bytes, None)?;
    let c2_mb_per_s = c2.bytes_per_second() / BYTES_PER_MB;
    println!(
        "C2  sequential 1 MiB writes + one sync_data: {} MiB in {:.2?} = {}",
        c2.total_bytes / MIB,
        c2.elapsed,
        fmt_mb_per_s(c2_mb_per_s)
    );
    rows.push(Row::ceiling(
        "C2 sequential write + sync",
        fmt_mb_per_s(c2_mb_per_s),
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

    // W1 and W2: unsynced small appends.
    let message = [0xA5u8; SMALL_MESSAGE_LEN_BYTES];
    let (w1, w1_metrics) = timed_log_workload(
        &scratch.sub("w1"),
        1,
        plan.workload_duration,
        |log, stop| append_until(log, stop, &message),
    )?;
    println!(
        "W1  100 B appends, 1 thread: {} in {:.2?} = {}; {}",
        w1.n_ops,
        w1.elapsed,
        fmt_rate(w1.per_second()),
        w1_metrics
    );
    rows.push(Row::compared(
        "W1 append 100 B, 1 thread",
        fmt_rate(w1.per_second()),
        format!("C3 {}", fmt_rate(c3.per_second())),
        w1.per_second() / c3.per_second(),
        Some(Target::AtLeast(TARGET_W1_VS_C3)),
    ));
    rows.push(Row::compared(
        "W1 vs pagecache 0.17 (reference)",
        fmt_rate(w1.per_second()),
        format!("ref {}", fmt_rate(PAGECACHE_017_APPEND_1T_PER_S)),
        w1.per_second() / PAGECACHE_017_APPEND_1T_PER_S,
        Some(Target::AtLeast(TARGET_W1_VS_PAGECACHE)),
    ));

    let (w2, w2_metrics) = timed_log_workload(
        &scratch.sub("w2"),
        2,
        plan.workload_duration,
        |log, stop| append_until(log, stop, &message),
    )?;
    println!(
        "W2  100 B appends, 2 threads: {} in {:.2?} = {}; {}",
        w2.n_ops,
        w2.elapsed,
        fmt_rate(w2.per_second()),
        w2_metrics
    );
    rows.push(Row::compared(
        "W2 append 100 B, 2 threads",
        fmt_rate(w2.per_second()),
        format!("W1 {}", fmt_rate(w1.per_second())),
        w2.per_second() / w1.per_second(),
        Some(Target::AtLeast(TARGET_W2_VS_W1)),
    ));

    // W3: large unsynced appends, the final flush inside the timing.
    let w3 = large_appends(&scratch.sub("w3"), plan.workload_duration)?;
    let w3_mb_per_s = w3.per_second() * LARGE_MESSAGE_LEN_BYTES as f64 / BYTES_PER_MB;
    println!(
        "W3  1000 B appends + flush, 1 thread: {} in {:.2?} = {} ({} of payload)",
        w3.n_ops,
        w3.elapsed,
        fmt_rate(w3.per_second()),
        fmt_mb_per_s(w3_mb_per_s)
    );
    rows.push(Row::compared(
        "W3 append 1000 B + flush, 1 thr",
        fmt_mb_per_s(w3_mb_per_s),
        format!("C2 {}", fmt_mb_per_s(c2_mb_per_s)),
        w3_mb_per_s / c2_mb_per_s,
        Some(Target::AtLeast(TARGET_W3_VS_C2)),
    ));
    println!();

    // W4 and W5: durable appends. The sync rate is the noisiest ceiling on a shared disk, so
    // C1 is measured again right before W4 and the higher figure is the ceiling: a neighbour's
    // burst during one of the two measurements can only make the ratio stricter, never looser.
    let c1_again = ceiling_sync_writes(&scratch.sub("c1.data"), plan.c1_duration)?;
    let c1_rate = c1.per_second().max(c1_again.per_second());
    println!(
        "C1' 4 KiB write_all_at + sync_data, again before W4: {} ops in {:.2?} = {}; ceiling \
         used: the higher, {}",
        c1_again.n_ops,
        c1_again.elapsed,
        fmt_rate(c1_again.per_second()),
        fmt_rate(c1_rate)
    );
    rows[c1_row_idx] = Row::ceiling("C1 4 KiB pwrite + fdatasync (max of 2)", fmt_rate(c1_rate));
    let (w4, w4_metrics) = timed_log_workload(
        &scratch.sub("w4"),
        1,
        plan.workload_duration,
        |log, stop| durable_append_until(log, stop, &message),
    )?;
    println!(
        "W4  durable 100 B appends, 1 thread: {} in {:.2?} = {}",
        w4.n_ops,
        w4.elapsed,
        fmt_rate(w4.per_second())
    );
    println!("    {}", w4_metrics.durable_summary(w4.n_ops));
    rows.push(Row::compared(
        "W4 durable append, 1 thread",
        fmt_rate(w4.per_second()),
        format!("C1 {}", fmt_rate(c1_rate)),
        w4.per_second() / c1_rate,
        Some(Target::AtLeast(TARGET_W4_VS_C1)),
    ));

    let (w5, w5_metrics) = timed_log_workload(
        &scratch.sub("w5"),
        W5_THREADS,
        plan.workload_duration,
        |log, stop| durable_append_until(log, stop, &message),
    )?;
    println!(
        "W5  durable 100 B appends, {W5_THREADS} threads: {} in {:.2?} = {}",
        w5.n_ops,
        w5.elapsed,
        fmt_rate(w5.per_second())
    );
    println!("    {}", w5_metrics.durable_summary(w5.n_ops));
    rows.push(Row::compared(
        "W5 durable append, 16 threads",
        fmt_rate(w5.per_second()),
        format!("W4 {}", fmt_rate(w4.per_second())),
        w5.per_second() / w4.per_second(),
        Some(Target::AtLeast(TARGET_W5_VS_W4)),
    ));
    println!();

    // W6: recovery scan.
    let w6 = recovery_scan(&scratch.sub("w6"), plan.w6_log_bytes)?;
    let w6_mb_per_s = w6.bytes_scanned as f64 / w6.open_elapsed.as_secs_f64() / BYTES_PER_MB;
    let cache_note = if w6.drop_failure.is_none() {
        "cold"
    } else {
        "warm"
    };
    rows.push(Row::compared(
        format!("W6 recovery scan ({cache_note} cache)"),
        fmt_mb_per_s(w6_mb_per_s),
        format!("goal {}", fmt_mb_per_s(TARGET_W6_SCAN_MB_PER_S)),
        w6_mb_per_s / TARGET_W6_SCAN_MB_PER_S,
        Some(Target::AtLeast(1.0)),
    ));
    rows.push(Row::compared(
        "W6 recovery scan vs C2",
        fmt_mb_per_s(w6_mb_per_s),
        format!("C2 {}", fmt_mb_per_s(c2_mb_per_s)),
        w6_mb_per_s / c2_mb_per_s,
        None,
    ));
    println!();

    print_table(&rows);
    println!();
    println!(
        "ratio = value / baseline measured in this run (W1 vs pagecache and W6 vs its goal use \
         fixed figures); target and PASS/FAIL from design/targets.md; info = no target."
    );
    println!(
        "pagecache 0.17 reference figures (design/targets.md, same kind of machine, not this \
         run): append 100 B 1 thread {}, 2 threads {}; append 1000 B {}; durable 1 thread {}.",
        fmt_rate(PAGECACHE_017_APPEND_1T_PER_S),
        fmt_rate(PAGECACHE_017_APPEND_2T_PER_S),
        fmt_mb_per_s(PAGECACHE_017_APPEND_1000B_MB_PER_S),
        fmt_rate(PAGECACHE_017_DURABLE_1T_PER_S),
    );
    println!(
        "W1 within 10x of the CAS ceiling: {}.",
        if w1.per_second() * 10.0 >= c3.per_second() {
            "yes"
        } else {
            "no"
        }
    );
    if let Some(why) = &w6.drop_failure {
        println!(
            "W6 ran on a warm OS page cache (dropping it failed: {why}), so it measures the \
             scan's CPU cost, not the device."
        );
    }
    Ok(())
}

/// The default configuration with the background flusher off: only the workload syncs.
fn bench_config() -> LogConfig {
    LogConfig {
        flush_every: None,
        ..LogConfig::default()
    }
}

/// Opens a fresh log in `dir` (which must not exist yet).
fn create_log(dir: &Path) -> BenchResult<Log> {
    if dir.exists() {
        return Err(format!("{} already exists", dir.display()).into());
    }
    let (log, report) = recovery::open_log_dir(dir, bench_config())?;
    if !report.created {
        return Err(format!("{} already held a log", dir.display()).into());
    }
    Ok(log)
}

/// The log counters a workload report prints, read right after the timed part.
struct MetricsSnapshot {
    n_reservations: u64,
    n_buffer_writes: u64,
    written_bytes: u64,
    n_syncs: u64,
    n_reserve_waits: u64,
    sync_p50: Option<Duration>,
    sync_p99: Option<Duration>,
    sync_max: Duration,
    sync_mean: Option<Duration>,
    write_p50: Option<Duration>,
    write_p99: Option<Duration>,
}

impl MetricsSnapshot {
    fn read(metrics: &LogMetrics) -> MetricsSnapshot {
        MetricsSnapshot {
            n_reservations: LogMetrics::get(&metrics.n_reservations),
            n_buffer_writes: LogMetrics::get(&metrics.n_buffer_writes),
            written_bytes: LogMetrics::get(&metrics.written_bytes),
            n_syncs: LogMetrics::get(&metrics.n_syncs),
            n_reserve_waits: LogMetrics::get(&metrics.n_reserve_waits),
            sync_p50: metrics.sync_latency.quantile_upper_bound(0.5),
            sync_p99: metrics.sync_latency.quantile_upper_bound(0.99),
            sync_max: metrics.sync_latency.max(),
            sync_mean: mean(&metrics.sync_latency),
            write_p50: metrics.write_latency.quantile_upper_bound(0.5),
            write_p99: metrics.write_latency.quantile_upper_bound(0.99),
        }
    }

    /// What group commit did: syncs per durable append and the sync latency.
    fn durable_summary(&self, n_appends: u64) -> String {
        format!(
            "n_syncs {} for {} durable appends ({:.3} syncs per append, {:.1} appends per sync); \
             n_buffer_writes {}; sync latency p50 <= {}, p99 <= {}, max {:.1?}, mean {}; \
             buffer write latency p50 <= {}, p99 <= {}",
            self.n_syncs,
            n_appends,
            self.n_syncs as f64 / n_appends.max(1) as f64,
            n_appends as f64 / self.n_syncs.max(1) as f64,
            self.n_buffer_writes,
            fmt_opt_duration(self.sync_p50),
            fmt_opt_duration(self.sync_p99),
            self.sync_max,
            fmt_opt_duration(self.sync_mean),
            fmt_opt_duration(self.write_p50),
            fmt_opt_duration(self.write_p99),
        )
    }
}

/// The mean of a histogram's recorded durations (`None` when empty).
fn mean(histogram: &LatencyHistogram) -> Option<Duration> {
    let count = u32::try_from(histogram.count()).ok().filter(|&n| n > 0)?;
    Some(histogram.total() / count)
}

impl std::fmt::Display for MetricsSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} reservations, {} buffer writes ({} MiB), {} syncs, {} reserve waits",
            self.n_reservations,
            self.n_buffer_writes,
            self.written_bytes / MIB,
            self.n_syncs,
            self.n_reserve_waits
        )
    }
}

/// Runs `work` on `n_threads` threads against a fresh log in `dir` for about `duration`,
/// then closes the log (untimed) and removes `dir`. Each worker returns how many operations
/// it completed; it must return soon after `stop` is set.
fn timed_log_workload<F>(
    dir: &Path,
    n_threads: usize,
    duration: Duration,
    work: F,
) -> BenchResult<(Measured, MetricsSnapshot)>
where
    F: Fn(&Log, &AtomicBool) -> BenchResult<u64> + Sync,
{
    let log = create_log(dir)?;
    let barrier = Barrier::new(n_threads + 1);
    let stop = AtomicBool::new(false);
    let measured = thread::scope(|scope| -> BenchResult<Measured> {
        let workers: Vec<_> = (0..n_threads)
            .map(|_| {
                scope.spawn(|| {
                    barrier.wait();
                    work(&log, &stop)
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        thread::sleep(duration);
        stop.store(true, Ordering::Release);
        let mut n_ops = 0;
        let mut first_error = None;
        for worker in workers {
            match worker.join() {
                Ok(Ok(n)) => n_ops += n,
                Ok(Err(error)) => {
                    first_error.get_or_insert(error);
                }
                Err(_) => {
                    first_error.get_or_insert_with(|| "a worker thread panicked".into());
                }
            }
        }
        let elapsed = start.elapsed();
        match first_error {
            Some(error) => Err(error),
            None => Ok(Measured { n_ops, elapsed }),
        }
    })?;
    let metrics = MetricsSnapshot::read(log.metrics());
    log.close()?;
    fs::remove_dir_all(dir)?;
    Ok((measured, metrics))
}

/// Unsynced appends until told to stop.
fn append_until(log: &Log, stop: &AtomicBool, message: &[u8]) -> BenchResult<u64> {
    // Checking the flag every few appends keeps its cache line out of the measured path.
    const APPENDS_PER_CHECK: u64 = 64;
    let mut n_ops = 0;
    while !stop.load(Ordering::Relaxed) {
        for _ in 0..APPENDS_PER_CHECK {
            log.write(message)?;
        }
        n_ops += APPENDS_PER_CHECK;
    }
    Ok(n_ops)
}

/// Durable appends (write, then wait until that message is stable) until told to stop.
fn durable_append_until(log: &Log, stop: &AtomicBool, message: &[u8]) -> BenchResult<u64> {
    let mut n_ops = 0;
    while !stop.load(Ordering::Relaxed) {
        let location = log.write(message)?;
        log.make_stable(location.lsn)?;
        n_ops += 1;
    }
    Ok(n_ops)
}

/// W3: 1000-byte unsynced appends from one thread for about `duration`, then `flush()`, all
/// inside the timing, so the figure is the rate at which bytes become durable.
fn large_appends(dir: &Path, duration: Duration) -> BenchResult<Measured> {
    const APPENDS_PER_CLOCK_CHECK: u64 = 64;
    let message = [0x3Cu8; LARGE_MESSAGE_LEN_BYTES];
    let log = create_log(dir)?;
    let start = Instant::now();
    let mut n_ops = 0u64;
    while start.elapsed() < duration {
        for _ in 0..APPENDS_PER_CLOCK_CHECK {
            log.write(&message)?;
        }
        n_ops += APPENDS_PER_CLOCK_CHECK;
    }
    log.flush()?;
    let elapsed = start.elapsed();
    println!(
        "    W3 metrics: {} (flush included)",
        MetricsSnapshot::read(log.metrics())
    );
    log.close()?;
    fs::remove_dir_all(dir)?;
    Ok(Measured { n_ops, elapsed })
}

/// What W6 measured.
struct ScanResult {
    bytes_scanned: u64,
    open_elapsed: Duration,
    /// Why the OS page cache could not be dropped before the scan, if it could not.
    drop_failure: Option<String>,
}

/// W6: builds a log of at least `log_bytes` of 1000-byte messages, closes it, drops the OS page
/// cache if allowed, and times `recovery::open_log_dir` on it.
fn recovery_scan(dir: &Path, log_bytes: u64) -> BenchResult<ScanResult> {
    let message = [0x69u8; LARGE_MESSAGE_LEN_BYTES];
    let n_messages = log_bytes.div_ceil(LARGE_MESSAGE_LEN_BYTES as u64);
    let log = create_log(dir)?;
    let build_start = Instant::now();
    for _ in 0..n_messages {
        log.write(&message)?;
    }
    log.flush()?;
    let build_elapsed = build_start.elapsed();
    let tip = log.tip();
    log.close()?;
    println!(
        "W6  built a log of {n_messages} x {LARGE_MESSAGE_LEN_BYTES} B (tip {tip}) in {:.2?} \
         ({}), closed it",
        build_elapsed,
        fmt_mb_per_s(
            n_messages as f64 * LARGE_MESSAGE_LEN_BYTES as f64
                / BYTES_PER_MB
                / build_elapsed.as_secs_f64()
        ),
    );

    let drop_failure = drop_os_page_cache(DropCaches::PageCacheDentriesAndInodes).err();
    println!(
        "    dropping the OS page cache: {}",
        match &drop_failure {
            None => "done (sync, then the write of 3 to /proc/sys/vm/drop_caches was accepted): \
                     the scan reads from the device"
                .to_string(),
            Some(why) => format!("not possible ({why}): the scan reads from the page cache"),
        }
    );

    let open_start = Instant::now();
    let (log, report) = recovery::open_log_dir(dir, bench_config())?;
    let open_elapsed = open_start.elapsed();
    println!("    report: {report}");
    println!(
        "    open_log_dir took {:.2?} (report.elapsed {:.2?}): {} bytes scanned ({} MiB) = {}",
        open_elapsed,
        report.elapsed,
        report.bytes_scanned,
        report.bytes_scanned / MIB,
        fmt_mb_per_s(report.bytes_scanned as f64 / BYTES_PER_MB / open_elapsed.as_secs_f64()),
    );
    if report.messages_recovered != n_messages {
        return Err(format!(
            "recovery found {} messages, {n_messages} were written and flushed",
            report.messages_recovered
        )
        .into());
    }
    log.close()?;
    fs::remove_dir_all(dir)?;
    Ok(ScanResult {
        bytes_scanned: report.bytes_scanned,
        open_elapsed,
        drop_failure,
    })
}
