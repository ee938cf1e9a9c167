//! The page cache: a lock-free map from page ids to chains of fragments, persisted through the
//! log, merged by the caller's [`Materializer`], cached within a byte budget, cleaned so the
//! file stays small, and reopened quickly from snapshots. This is what a Bw-tree, a B-link tree
//! or a key-value store builds on.
//!
//! ```
//! use std::sync::Arc;
//! use iobuf::storage::SimStorage;
//! use pagecache::{Config, DecodeError, Materializer, PageCache};
//!
//! /// A page is a list of numbers; a delta appends one.
//! struct Numbers;
//!
//! impl Materializer for Numbers {
//!     type Fragment = Vec<u64>;
//!     fn encode(&self, fragment: &Vec<u64>, out: &mut Vec<u8>) {
//!         for n in fragment {
//!             out.extend_from_slice(&n.to_le_bytes());
//!         }
//!     }
//!     fn decode(&self, bytes: &[u8]) -> Result<Vec<u64>, DecodeError> {
//!         if bytes.len() % 8 != 0 {
//!             return Err(DecodeError::new("not a whole number of u64s"));
//!         }
//!         Ok(bytes.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap())).collect())
//!     }
//!     fn merge(&self, chain: &[&Vec<u64>]) -> Vec<u64> {
//!         chain.iter().flat_map(|fragment| fragment.iter().copied()).collect()
//!     }
//!     fn size_in_bytes(&self, fragment: &Vec<u64>) -> usize {
//!         8 * fragment.len()
//!     }
//! }
//!
//! let storage = Arc::new(SimStorage::new()); // or PageCache::open_dir("/var/lib/mydb", ...)
//! let config = Config::builder().cache_budget_bytes(64 << 20).build()?;
//! let (cache, _report) = PageCache::open(storage.clone(), config.clone(), Numbers)?;
//!
//! let (pid, allocated) = cache.allocate(vec![1, 2])?;
//! let written = cache.link(pid, allocated.version, vec![3])?.expect("nobody else writes");
//! // A write against an old version changes nothing and gives the fragment back.
//! let stale = cache.link(pid, allocated.version, vec![4])?.unwrap_err();
//! assert_eq!(stale.fragment, vec![4]);
//! assert_eq!(stale.current, Some(written.version));
//! cache.set_root("numbers", None, Some(pid))?.expect("no root yet");
//! cache.make_stable(written.lsn)?; // durable: one group-committed sync
//! cache.close()?;
//!
//! let (cache, report) = PageCache::open(storage, config, Numbers)?;
//! let pid = cache.root("numbers").expect("roots survive restarts");
//! assert_eq!(cache.get(pid)?.expect("live").value, vec![1, 2, 3]);
//! println!("{report}");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # How it works
//!
//! * **Page table.** A three-level radix tree of page ids (`table.rs`), nodes allocated on
//!   first use, so memory follows the ids in use (the original allocated 2 MiB per level up
//!   front). Each slot points at the page's entry (`entry.rs`): the log locations of its
//!   chain and what of it is in memory, usually the merged value. Every change builds a new
//!   entry and installs it with one CAS; replaced entries are reclaimed with
//!   `crossbeam-epoch`. A page's entries are built in one of two home cells at an address
//!   computed from its id (`home.rs`), so a read starts loading the entry together with the
//!   slot instead of after it (a read of a resident page waits for two loads from memory,
//!   not three); when both cells are still in use, the entry goes on the heap, and those
//!   allocations are reused for new entries.
//! * **Writes.** `link`, `replace` and `free` load the entry, check the caller's version,
//!   reserve the record in the log, CAS, then complete the record (or abort it when the CAS
//!   lost). The reservation comes after the load and the CAS needs an unchanged entry, so per
//!   page the order of successful writes is their LSN order and replay rebuilds each chain
//!   exactly. A stale version writes nothing and hands the fragment back in [`Stale`]. Every
//!   write returns its LSN for [`PageCache::make_stable`]. A chain reaching
//!   `consolidate_after_fragments` is merged by the writer, never by a reader.
//! * **What stays in memory.** A resident page keeps its merged value, not its fragments: a
//!   `link` over it writes the delta to the log and merges the delta onto the value in
//!   memory (the merge the next read would do anyway), so a read of a resident page clones
//!   one value whatever the chain's length, and consolidation and cleaning find the value
//!   ready. A `link` over an evicted page keeps just its delta, until a read pages in the
//!   rest.
//! * **Reads.** [`PageCache::get_pinned`] borrows a resident page's merged value for as long
//!   as a [`Pinned`] epoch lives (a tree traversal pins once and reads every page on its way
//!   in place); [`PageCache::get`] clones it. A page not resident has its missing fragments
//!   read back with positional reads (`Log::read_with`) and merged, and the merged value is
//!   kept if the page did not change meanwhile. A read never writes to the log and never
//!   waits for a write: only values already durable are evicted.
//! * **Cache.** Resident values are charged (`Materializer::size_in_bytes`) against
//!   `cache_budget_bytes`. A CLOCK hand walks a ring of the resident pages when the budget is
//!   exceeded; a hit only sets a bit in the entry (no lock, no list). Resident bytes stay
//!   within the budget plus the values of pages written since the last sync (a page written to
//!   keeps its whole merged value until the write is durable, not just the delta) plus what
//!   concurrent readers page in at once. Outside the budget:
//!   - every live page costs an 8-byte table slot, and its entry (192 bytes with a `Vec`
//!     value, its chain of up to 7 locations of 16 bytes included) when it is on the heap,
//!     not in a home cell;
//!   - every range of 2048 page ids with a write, page-in, eviction or relocation since open
//!     costs a block of home cells, two entries and two state bytes per id (772 KiB with `Vec`
//!     values, [`Stats::home_cell_bytes`]; none with [`ConfigBuilder::home_cells`] off).
//!     Blocks are freed when the cache is dropped; a block whose retired cells still wait
//!     for the epoch is freed by a later sweep, when the next cache of the process opens or
//!     drops;
//!   - each thread that uses the cache keeps up to 256 emptied heap entries for reuse (the
//!     entries it frees as it collects the epoch's garbage), passing its surplus to a pool
//!     shared by all threads and caches of the process that holds up to 8192 (about 1.5 MiB
//!     with `Vec` values; it lives as long as the process);
//!   - the cleaner's index of base records holds 8 bytes per base written since open and not
//!     yet cleaned, for at most 2^20 bases (8 MiB; the lists' spare capacity and the cleaner's
//!     copy of the segment it works through come on top).
//! * **Cleaning.** The cleaner examines the base records of the oldest segment and rewrites (as
//!   one merged base at the tip) every page that still uses the segment; once every base of the
//!   segment was examined and every page moved it is released, and the log reuses it when the
//!   release is durable. Cleaning runs while the log spans more than `space_amplification_target`
//!   times the live bytes. A background thread (`background_cleaning`, on by default) keeps the
//!   span half a segment below that, so a write normally does no cleaning; past the target each
//!   write examines a bounded number of base records itself, as when the thread is off. Writes
//!   and the thread take batches of pages from the cleaner's list and relocate them in parallel
//!   (its lock guards only the list); the further the span runs past the target, the more a write
//!   examines (twice as much per quarter segment), and below a whole segment past it a write that
//!   finds the list busy goes on, beyond it every write takes its share (waiting up to 20 ms, if
//!   need be, for the pages lent to another thread to come back; a batch that does not is taken as
//!   stalled and not waited for again), so writers cannot outrun the cleaning, with or without the
//!   thread. Only base records send the cleaner to
//!   the page table: a page that uses the oldest segment has its chain's base there (chains start
//!   with a base, and older segments were cleaned before). Writes note the page of every base
//!   record they reserve in the segment it lands in (`bases.rs`), so the cleaner reads back only
//!   segments written before open or left out of the index at its cap. The cleaner prefetches the
//!   table slots and entries of the bases it is about to examine. A released segment is reused once
//!   a later segment header recording the release is durable (the log asks its flusher for a sync
//!   as soon as such a header starts), so the file is that span plus a fixed part: the segment
//!   being written, the one being cleaned and what was written since the last sync. With the
//!   default target (1.3) and 2 MiB segments, uniform overwrites of 1 M pages keep the file at
//!   1.36x the live data (`bench_pages`, S2), and `tests/space.rs` at 1.43x with tiny segments. On
//!   a small store the fixed part dominates (13 MiB live: a 22 MiB file). Under links, live bytes
//!   swing: they grow as chains lengthen and fall when the cleaner merges the chains it relocates,
//!   so the file (sized for the peak) can be 2 to 4 times the live bytes at a trough. Blob files
//!   are outside this figure. Large values are rewritten like any record (a new blob file); the old
//!   blob file is deleted when its pointer's segment is released, so none leaks.
//! * **Snapshots.** Every `snapshot_every_bytes` of log, a background thread walks the table
//!   and writes the locations of every page through `recovery::SnapshotStore` (atomic rename,
//!   checksum, directory sync, previous one kept until the new one is durable). Opening loads
//!   the newest valid one and replays only the log after it. Snapshots only shorten replay:
//!   the cleaner never releases a segment holding a live page, so the log alone always holds
//!   every page (`docs/format.md` explains the replay rules).
//! * **Roots and ids.** Named roots and the id generator's durable high-water mark live in one
//!   small metadata record, rewritten whole on change (under a lock page operations never
//!   take) and moved by the cleaner like a page.
//!
//! # Invariants
//!
//! * A page's version changes on every write to it and never on eviction, page-in or
//!   relocation, so only real conflicts fail a CAS.
//! * A freed id is reused only once its free record is durable; a stale `free` changes nothing
//!   (the original put the id on the free list anyway).
//! * The cleaner releases a segment only after every page that used it has a newer base above
//!   it; the log applies the release only once that base is durable.
//! * Resident bytes are counted per fragment and updated by the CAS that changes them.
//!
//! # What this crate does not do
//!
//! * No transactions across pages: each write is atomic on its page alone. Build multi-page
//!   atomicity above (a Bw-tree's structure modifications are designed for this).
//! * Versions are not persisted: after a restart, read a page to get its version.
//! * Cleaning picks segments in log order, not by lowest live bytes, so the log stays one
//!   contiguous run and recovery a prefix scan; the price is some write amplification under
//!   skewed workloads.
//! * Snapshots are full: each lists every page's locations (about 25 bytes per fragment).
#![deny(unsafe_code)]

mod bases;
mod cache;
mod cleaner_thread;
mod config;
mod entry;
mod error;
mod home;
mod location;
mod materializer;
mod metrics;
mod open;
mod persisted;
mod record;
mod snapshot;
mod table;

pub use cache::{MAX_ROOT_NAME_LEN_BYTES, Page, PageCache, PageRef, Pinned, Stale, Stats, Written};
pub use config::{Config, ConfigBuilder, ConfigError};
pub use entry::Version;
pub use error::{Error, Result};
pub use iobuf::{Lsn, PageId};
pub use location::MAX_RECORD_LEN_BYTES;
pub use materializer::{DecodeError, Materializer};
pub use metrics::{Counter, LatencyHistogram, Metrics};
pub use open::OpenReport;
pub use persisted::{CONFIG_FILE_NAME, FORMAT_VERSION};
