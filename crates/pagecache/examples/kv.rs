//! A small key-value store on the page cache, written as documentation for users.
//!
//! Run it with `cargo run -p pagecache --example kv -- [DIR]` (a fresh temp directory when no
//! directory is given). It inserts keys, reads them, closes, reopens, and checks them again.
//!
//! The layout is a one-level B-link tree:
//!
//! * Leaf pages hold a sorted map of a key range. Each leaf knows its exclusive upper bound
//!   (`high_key`) and its right sibling, so a key is always found by walking right from any
//!   leaf to its left, whatever the directory says.
//! * One directory page, found through the named root `"kv-root"`, maps the first key of each
//!   leaf to its page id. It only speeds lookups up; the sibling links are the truth.
//! * Writes are small deltas (`Insert`, `Remove`, `AddChild`) linked onto a page's chain; the
//!   materializer's `merge` applies them to the base, and the cache consolidates long chains.
//! * A leaf past [`MAX_KEYS_PER_LEAF`] keys splits: allocate the right half, replace the leaf
//!   with the left half (one CAS: this is the moment the split happens), then tell the
//!   directory. A crash after the replace only leaves the directory behind, which lookups
//!   tolerate; a crash between the allocation and the replace leaks one unreachable page
//!   (a real tree would collect it).

use std::collections::BTreeMap;
use std::ops::Bound::{Included, Unbounded};
use std::path::Path;
use std::sync::Arc;

use iobuf::storage::Storage;
use pagecache::{Config, DecodeError, Materializer, PageCache, PageId, Version};

/// A leaf splits once it holds more keys than this.
pub const MAX_KEYS_PER_LEAF: usize = 64;

/// The named root that points at the directory page.
pub const ROOT_NAME: &str = "kv-root";

/// Keys `>= high_key` live further right, starting at `right`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Leaf {
    /// The key-value pairs of this leaf's range.
    pub entries: BTreeMap<Vec<u8>, Vec<u8>>,
    /// The first key that does not belong here (`None`: the rightmost leaf).
    pub high_key: Option<Vec<u8>>,
    /// The right sibling, which holds `high_key`.
    pub right: Option<PageId>,
}

/// A fragment of a page: a base (`Leaf`, `Directory`) or a delta applied on top of one.
#[derive(Clone, Debug, PartialEq)]
pub enum Fragment {
    /// A leaf's whole content.
    Leaf(Leaf),
    /// Sets a key in a leaf.
    Insert(Vec<u8>, Vec<u8>),
    /// Removes a key from a leaf.
    Remove(Vec<u8>),
    /// The directory's whole content: first key of each leaf to its page.
    Directory(BTreeMap<Vec<u8>, PageId>),
    /// Adds a leaf to the directory.
    AddChild(Vec<u8>, PageId),
}

/// Tells the page cache how to store and merge [`Fragment`]s.
pub struct KvMaterializer;

impl Materializer for KvMaterializer {
    type Fragment = Fragment;

    fn encode(&self, fragment: &Fragment, out: &mut Vec<u8>) {
        // The format: one tag byte, then length-prefixed (u32 LE) byte strings and u64 LE ids.
        let put = |out: &mut Vec<u8>, bytes: &[u8]| {
            out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
            out.extend_from_slice(bytes);
        };
        match fragment {
            Fragment::Leaf(leaf) => {
                out.push(0);
                put(out, leaf.high_key.as_deref().unwrap_or(&[]));
                out.push(leaf.high_key.is_some() as u8);
                out.extend_from_slice(&leaf.right.map_or(u64::MAX, |pid| pid.0).to_le_bytes());
                out.extend_from_slice(&(leaf.entries.len() as u32).to_le_bytes());
                for (key, value) in &leaf.entries {
                    put(out, key);
                    put(out, value);
                }
            }
            Fragment::Insert(key, value) => {
                out.push(1);
                put(out, key);
                put(out, value);
            }
            Fragment::Remove(key) => {
                out.push(2);
                put(out, key);
            }
            Fragment::Directory(children) => {
                out.push(3);
                out.extend_from_slice(&(children.len() as u32).to_le_bytes());
                for (key, pid) in children {
                    put(out, key);
                    out.extend_from_slice(&pid.0.to_le_bytes());
                }
            }
            Fragment::AddChild(key, pid) => {
                out.push(4);
                put(out, key);
                out.extend_from_slice(&pid.0.to_le_bytes());
            }
        }
    }

    fn decode(&self, bytes: &[u8]) -> Result<Fragment, DecodeError> {
        // The bytes come from disk: every read is checked, nothing panics.
        let mut input = Reader(bytes);
        let fragment = match input.take(1)?[0] {
            0 => {
                let high_key = input.bytes()?;
                let has_high_key = input.take(1)?[0] == 1;
                let right = input.u64()?;
                let mut entries = BTreeMap::new();
                for _ in 0..input.u32()? {
                    entries.insert(input.bytes()?, input.bytes()?);
                }
                Fragment::Leaf(Leaf {
                    entries,
                    high_key: has_high_key.then_some(high_key),
                    right: (right != u64::MAX).then_some(PageId(right)),
                })
            }
            1 => Fragment::Insert(input.bytes()?, input.bytes()?),
            2 => Fragment::Remove(input.bytes()?),
            3 => {
                let mut children = BTreeMap::new();
                for _ in 0..input.u32()? {
                    children.insert(input.bytes()?, PageId(input.u64()?));
                }
                Fragment::Directory(children)
            }
            4 => Fragment::AddChild(input.bytes()?, PageId(input.u64()?)),
            tag => return Err(DecodeError::new(format!("unknown fragment tag {tag}"))),
        };
        if !input.0.is_empty() {
            return Err(DecodeError::new("trailing bytes after a fragment"));
        }
        Ok(fragment)
    }

    fn merge(&self, chain: &[&Fragment]) -> Fragment {
        // The base comes first, then each delta in the order it was linked.
        let mut value = chain[0].clone();
        for delta in &chain[1..] {
            match (&mut value, delta) {
                (Fragment::Leaf(leaf), Fragment::Insert(key, v)) => {
                    leaf.entries.insert(key.clone(), v.clone());
                }
                (Fragment::Leaf(leaf), Fragment::Remove(key)) => {
                    leaf.entries.remove(key);
                }
                (Fragment::Directory(children), Fragment::AddChild(key, pid)) => {
                    children.insert(key.clone(), *pid);
                }
                // The store only links leaf deltas to leaves and directory deltas to the
                // directory; anything else is a bug in this file.
                (base, delta) => debug_assert!(false, "{delta:?} linked onto {base:?}"),
            }
        }
        value
    }

    fn size_in_bytes(&self, fragment: &Fragment) -> usize {
        // An estimate is enough: it only steers the cache budget.
        let pair = |key: &[u8], value_len: usize| key.len() + value_len + 48;
        match fragment {
            Fragment::Leaf(leaf) => leaf.entries.iter().map(|(k, v)| pair(k, v.len())).sum(),
            Fragment::Insert(key, value) => pair(key, value.len()),
            Fragment::Remove(key) => pair(key, 0),
            Fragment::Directory(children) => children.keys().map(|k| pair(k, 8)).sum(),
            Fragment::AddChild(key, _) => pair(key, 8),
        }
    }
}

/// Reads a fragment's fields back, refusing short or malformed input.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> Result<&'a [u8], DecodeError> {
        if self.0.len() < len {
            return Err(DecodeError::new("fragment cut short"));
        }
        let (head, rest) = self.0.split_at(len);
        self.0 = rest;
        Ok(head)
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn bytes(&mut self) -> Result<Vec<u8>, DecodeError> {
        let len = self.u32()? as usize;
        Ok(self.take(len)?.to_vec())
    }
}

/// What can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum KvError {
    /// The page cache failed (IO, corruption, a locked directory...).
    #[error(transparent)]
    Cache(#[from] pagecache::Error),
    /// A page did not hold what the store's structure says it must.
    #[error("page {pid:?}: {reason}")]
    Damaged {
        /// The page.
        pid: PageId,
        /// What was wrong.
        reason: &'static str,
    },
}

/// A key and its value.
pub type Pair = (Vec<u8>, Vec<u8>);

/// A sorted key-value store: leaves of key ranges, found through a directory page.
pub struct KvStore {
    cache: PageCache<KvMaterializer>,
    directory: PageId,
}

impl KvStore {
    /// Opens (or creates) a store in a directory of the file system.
    pub fn open_dir(path: impl AsRef<Path>, config: Config) -> Result<KvStore, KvError> {
        let (cache, _report) = PageCache::open_dir(path, config, KvMaterializer)?;
        KvStore::with_cache(cache)
    }

    /// Opens (or creates) a store in any storage (the simulated disk, in tests).
    pub fn open(storage: Arc<dyn Storage>, config: Config) -> Result<KvStore, KvError> {
        let (cache, _report) = PageCache::open(storage, config, KvMaterializer)?;
        KvStore::with_cache(cache)
    }

    fn with_cache(cache: PageCache<KvMaterializer>) -> Result<KvStore, KvError> {
        if let Some(directory) = cache.root(ROOT_NAME) {
            return Ok(KvStore { cache, directory });
        }
        // A new store: one empty leaf covering every key, and a directory pointing at it.
        let (leaf, _) = cache.allocate(Fragment::Leaf(Leaf::default()))?;
        let children = BTreeMap::from([(Vec::new(), leaf)]);
        let (directory, _) = cache.allocate(Fragment::Directory(children))?;
        if let Err(current) = cache.set_root(ROOT_NAME, None, Some(directory))? {
            return Err(KvError::Damaged {
                pid: current.unwrap_or(directory),
                reason: "the root appeared while the store was being created",
            });
        }
        Ok(KvStore { cache, directory })
    }

    /// The value of `key`, if any.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, KvError> {
        let (_, _, leaf) = self.find_leaf(key)?;
        Ok(leaf.entries.get(key).cloned())
    }

    /// Sets `key` to `value`.
    pub fn insert(&self, key: &[u8], value: &[u8]) -> Result<(), KvError> {
        loop {
            let (pid, version, mut leaf) = self.find_leaf(key)?;
            let delta = Fragment::Insert(key.to_vec(), value.to_vec());
            // A stale version means another writer changed the leaf first: look again.
            let Ok(written) = self.cache.link(pid, version, delta)? else {
                continue;
            };
            leaf.entries.insert(key.to_vec(), value.to_vec());
            if leaf.entries.len() > MAX_KEYS_PER_LEAF {
                self.split(pid, written.version, leaf)?;
            }
            return Ok(());
        }
    }

    /// Removes `key`; returns whether it was there.
    pub fn remove(&self, key: &[u8]) -> Result<bool, KvError> {
        loop {
            let (pid, version, leaf) = self.find_leaf(key)?;
            if !leaf.entries.contains_key(key) {
                return Ok(false);
            }
            if self
                .cache
                .link(pid, version, Fragment::Remove(key.to_vec()))?
                .is_ok()
            {
                return Ok(true);
            }
        }
    }

    /// Every pair in key order, read leaf by leaf along the sibling links.
    pub fn scan(&self) -> Result<Vec<Pair>, KvError> {
        let mut pairs = Vec::new();
        let mut next = Some(self.find_leaf(&[])?.0);
        while let Some(pid) = next {
            let (_, leaf) = self.read_leaf(pid)?;
            pairs.extend(leaf.entries);
            next = leaf.right;
        }
        Ok(pairs)
    }

    /// The page cache underneath, for its metrics and statistics.
    pub fn cache(&self) -> &PageCache<KvMaterializer> {
        &self.cache
    }

    /// Makes every write so far durable.
    pub fn flush(&self) -> Result<(), KvError> {
        self.cache.flush()?;
        Ok(())
    }

    /// Flushes and closes the store.
    pub fn close(self) -> Result<(), KvError> {
        Ok(self.cache.close()?)
    }

    /// The leaf holding `key`'s range, its version and its content.
    fn find_leaf(&self, key: &[u8]) -> Result<(PageId, Version, Leaf), KvError> {
        let page = self.cache.get(self.directory)?;
        let Some(Fragment::Directory(children)) = page.map(|page| page.value) else {
            return Err(self.damaged(self.directory, "the root is not a directory"));
        };
        // The last leaf starting at or before `key` (the first leaf starts at the empty key).
        let mut pid = match children
            .range::<[u8], _>((Unbounded, Included(key)))
            .next_back()
        {
            Some((_, pid)) => *pid,
            None => return Err(self.damaged(self.directory, "the directory is empty")),
        };
        loop {
            let (version, leaf) = self.read_leaf(pid)?;
            match (&leaf.high_key, leaf.right) {
                // The directory has not heard of a split yet: the key is further right.
                (Some(high_key), Some(right)) if key >= high_key.as_slice() => pid = right,
                (Some(_), None) => return Err(self.damaged(pid, "a bounded leaf has no sibling")),
                _ => return Ok((pid, version, leaf)),
            }
        }
    }

    fn read_leaf(&self, pid: PageId) -> Result<(Version, Leaf), KvError> {
        match self.cache.get(pid)? {
            Some(page) => match page.value {
                Fragment::Leaf(leaf) => Ok((page.version, leaf)),
                _ => Err(self.damaged(pid, "expected a leaf")),
            },
            None => Err(self.damaged(pid, "a leaf the store points at is free")),
        }
    }

    /// Moves the upper half of `leaf` (the content of `pid` at `version`) to a new page.
    fn split(&self, pid: PageId, version: Version, leaf: Leaf) -> Result<(), KvError> {
        let mut lower = leaf.entries;
        let split_key = lower
            .keys()
            .nth(lower.len() / 2)
            .expect("a full leaf")
            .clone();
        let upper = lower.split_off(&split_key);
        let right = Leaf {
            entries: upper,
            high_key: leaf.high_key,
            right: leaf.right,
        };
        let (right_pid, allocated) = self.cache.allocate(Fragment::Leaf(right))?;
        let left = Leaf {
            entries: lower,
            high_key: Some(split_key.clone()),
            right: Some(right_pid),
        };
        if self
            .cache
            .replace(pid, version, Fragment::Leaf(left))?
            .is_err()
        {
            // Someone wrote to the leaf meanwhile; give the page back and let a later insert
            // split it.
            let _ = self.cache.free(right_pid, allocated.version)?;
            return Ok(());
        }
        // The split is done; the directory learns of it so lookups go straight there.
        loop {
            let page = self.cache.get(self.directory)?;
            let Some(page) = page else {
                return Err(self.damaged(self.directory, "the directory is free"));
            };
            let delta = Fragment::AddChild(split_key.clone(), right_pid);
            if self
                .cache
                .link(self.directory, page.version, delta)?
                .is_ok()
            {
                return Ok(());
            }
        }
    }

    fn damaged(&self, pid: PageId, reason: &'static str) -> KvError {
        KvError::Damaged { pid, reason }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A directory given on the command line is kept; a temp directory is removed at the end.
    let (dir, is_temp) = match std::env::args().nth(1) {
        Some(dir) => (std::path::PathBuf::from(dir), false),
        None => {
            let name = format!("kv-example-{}", std::process::id());
            (std::env::temp_dir().join(name), true)
        }
    };
    let n_keys = 1_000u32;
    // 7919 is prime, so this visits every key once, in a scattered order.
    let key = |i: u32| format!("key-{:05}", (i * 7919) % n_keys).into_bytes();
    let value = |i: u32| format!("value of key-{:05}", (i * 7919) % n_keys).into_bytes();

    let store = KvStore::open_dir(&dir, Config::builder().build()?)?;
    for i in 0..n_keys {
        store.insert(&key(i), &value(i))?;
    }
    assert_eq!(store.get(&key(7))?, Some(value(7)));
    assert!(store.remove(&key(0))?);
    println!(
        "inserted {n_keys} keys and removed one in {}",
        dir.display()
    );
    store.close()?;

    let store = KvStore::open_dir(&dir, Config::builder().build()?)?;
    for i in 1..n_keys {
        assert_eq!(store.get(&key(i))?, Some(value(i)));
    }
    assert_eq!(store.get(&key(0))?, None);
    let pairs = store.scan()?;
    let first = String::from_utf8_lossy(&pairs[0].0).into_owned();
    let last = String::from_utf8_lossy(&pairs[pairs.len() - 1].0).into_owned();
    println!(
        "reopened: {} keys read back as written, {first} to {last}",
        pairs.len()
    );
    store.close()?;
    if is_temp {
        std::fs::remove_dir_all(&dir)?;
    }
    Ok(())
}
