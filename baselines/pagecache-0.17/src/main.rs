//! The original `pagecache` 0.17 under the workload of `bench_pages`' B1/B2, so that B can be
//! compared with the original measured in the same run, on the same machine: in the same
//! rounds as ours, back to back.
//!
//! The machines this project runs on are shared and noisy: the same binary runs 20 to 40 %
//! slower from one hour to the next. The original's figures in `targets.md` were measured once,
//! elsewhere in time; a ratio against them mixes our speed with the machine's mood. A ratio
//! against this program, run next to ours, does not.
//!
//! The workload is B's, operation for operation:
//!
//! * 100 000 pages, each allocated with a 100-byte fragment; a page's value is the XOR of its
//!   fragments (the same `Materializer` as `bench_pages`' `Xor`);
//! * each thread draws a random number per operation: its low bit picks a get or a link, the
//!   rest picks the page;
//! * a get reads the merged value in place and looks at its first byte;
//! * a link reads the page (for its `PagePtr`, the original's version), then links a new
//!   100-byte fragment, and retries on a stale pointer;
//! * operations run in batches of 64 between checks of the stop flag, for `--millis`.
//!
//! The original runs with its default configuration (1 GiB cache, 8 MiB IO buffers, a flush
//! every 500 ms, snapshots every million operations), on a directory inside `--dir`. Each
//! operation pins the epoch with `Tx::new(0)`, the cheapest way the original offers (`begin`
//! would also draw a transaction id from its persisted counter), so the baseline is not slowed
//! by anything the workload does not need.
//!
//! Prints one line, `ops N elapsed_ns E`, for the caller to parse.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use pagecache::{Config, ConfigBuilder, Materializer, PageCache, PageGet, PageId, Tx};

const N_PAGES: u64 = 100_000;
/// The most threads `--threads` takes (a thread the OS refuses would panic the spawn).
const MAX_THREADS: u64 = 1024;
const FRAGMENT_LEN_BYTES: usize = 100;

/// A page's value is the XOR of its fragments.
struct Xor;

impl Materializer for Xor {
    type PageFrag = Vec<u8>;

    fn merge<'a, I>(fragments: I, _config: &Config) -> Vec<u8>
    where
        I: IntoIterator<Item = &'a Vec<u8>>,
    {
        let mut fragments = fragments.into_iter();
        let mut value = fragments.next().cloned().unwrap_or_default();
        for fragment in fragments {
            for (byte, other) in value.iter_mut().zip(fragment) {
                *byte ^= other;
            }
        }
        value
    }

    fn size_in_bytes(fragment: &Vec<u8>) -> u64 {
        (fragment.len() + std::mem::size_of::<Vec<u8>>()) as u64
    }
}

/// xorshift64*, one per thread: a copy of `bench_pages`' generator, seeds included, so both
/// programs run the same sequence of operations (this one is outside the workspace and
/// cannot share the code).
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

type Original = PageCache<Xor, Vec<u8>>;
type BoxError = Box<dyn std::error::Error>;

struct Args {
    n_threads: u64,
    duration: Duration,
    dir: PathBuf,
}

const USAGE: &str = "usage: baseline-pagecache-017 --threads N --millis MS --dir PATH\n\
    \x20 runs B's 50 % link / 50 % get on the original pagecache 0.17 for MS milliseconds\n\
    \x20 in a new directory inside PATH (removed at the end); prints `ops N elapsed_ns E`";

fn parse_args() -> Result<Args, String> {
    let (mut n_threads, mut millis, mut dir) = (None, None, None);
    let mut argv = std::env::args().skip(1);
    while let Some(arg) = argv.next() {
        let mut value = || argv.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--threads" => n_threads = Some(value()?.parse::<u64>().map_err(|e| e.to_string())?),
            "--millis" => millis = Some(value()?.parse::<u64>().map_err(|e| e.to_string())?),
            "--dir" => dir = Some(PathBuf::from(value()?)),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let n_threads = n_threads
        .filter(|n| (1..=MAX_THREADS).contains(n))
        .ok_or(format!("--threads N (1 to {MAX_THREADS}) is required"))?;
    let millis = millis.ok_or("--millis is required")?;
    let dir = dir.ok_or("--dir is required")?;
    Ok(Args {
        n_threads,
        duration: Duration::from_millis(millis),
        dir,
    })
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(why) => {
            eprintln!("{why}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok((n_ops, elapsed)) => {
            println!("ops {n_ops} elapsed_ns {}", elapsed.as_nanos());
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("baseline-pagecache-017: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(u64, Duration), BoxError> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos();
    let path = args
        .dir
        .join(format!("original-{}-{nanos}", std::process::id()));
    // `temporary`: the original removes its files when the page cache is dropped.
    let config = ConfigBuilder::new().path(&path).temporary(true).build();
    let result = measure(&config, args);
    // In case the original left anything (it removes its files on drop).
    let _ = std::fs::remove_dir_all(&path);
    result
}

fn measure(config: &Config, args: &Args) -> Result<(u64, Duration), BoxError> {
    let original: Original = PageCache::start(config.clone()).map_err(|e| format!("{e:?}"))?;
    // The original reserves some page ids for itself: keep the ones it hands out.
    let mut rng = Rng::new(args.n_threads);
    let pids: Vec<PageId> = {
        let tx = Tx::new(0);
        (0..N_PAGES)
            .map(|_| original.allocate(rng.fragment(), &tx).map(|(pid, _)| pid))
            .collect::<Result<_, _>>()
            .map_err(|e| format!("{e:?}"))?
    };
    let barrier = Barrier::new(args.n_threads as usize + 1);
    let stop = AtomicBool::new(false);
    thread::scope(|scope| {
        let workers: Vec<_> = (0..args.n_threads)
            .map(|thread_idx| {
                let (original, pids, barrier, stop) = (&original, &pids, &barrier, &stop);
                scope.spawn(move || -> Result<u64, String> {
                    let mut rng = Rng::new(1000 + thread_idx);
                    let mut n_ops = 0u64;
                    barrier.wait();
                    while !stop.load(Ordering::Relaxed) {
                        for _ in 0..64 {
                            let choice = rng.next();
                            let pid = pids[((choice >> 1) % N_PAGES) as usize];
                            if choice & 1 == 0 {
                                read(original, pid)?;
                            } else {
                                read_and_link(original, pid, rng.fragment())?;
                            }
                        }
                        n_ops += 64;
                    }
                    Ok(n_ops)
                })
            })
            .collect();
        barrier.wait();
        let started = Instant::now();
        thread::sleep(args.duration);
        stop.store(true, Ordering::Release);
        let mut n_ops = 0;
        for worker in workers {
            n_ops += worker.join().map_err(|_| "a worker panicked")??;
        }
        Ok((n_ops, started.elapsed()))
    })
}

fn read(original: &Original, pid: PageId) -> Result<(), String> {
    let tx = Tx::new(0);
    match original.get(pid, &tx).map_err(|e| format!("{e:?}"))? {
        PageGet::Materialized(value, _) => {
            // The byte itself, not a pointer to it: the read pays for the value's bytes.
            std::hint::black_box(value.first().copied());
            Ok(())
        }
        other => Err(format!("page {pid} is not materialized: {other:?}")),
    }
}

fn read_and_link(original: &Original, pid: PageId, mut fragment: Vec<u8>) -> Result<(), String> {
    loop {
        let tx = Tx::new(0);
        let ptr = match original.get(pid, &tx).map_err(|e| format!("{e:?}"))? {
            PageGet::Materialized(_, ptr) => ptr,
            other => return Err(format!("page {pid} is not materialized: {other:?}")),
        };
        match original
            .link(pid, ptr, fragment, &tx)
            .map_err(|e| format!("{e:?}"))?
        {
            Ok(_) => return Ok(()),
            Err(Some((_, back))) => fragment = back,
            Err(None) => return Err(format!("page {pid} disappeared")),
        }
    }
}
