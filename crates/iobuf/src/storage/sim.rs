//! [`SimStorage`]: a deterministic in-memory disk for crash and fault tests.
//!
//! The model, kept deliberately small:
//!
//! - Each file has **durable** content (what survives any crash) and **current** content (what
//!   reads see), plus the list of writes and `set_len` calls made since its last `sync_data`.
//!   `sync_data` replays that list onto the durable content and clears it.
//! - The directory has a **durable** name -> file-id map and a **current** one, plus the list of
//!   creations, removals and renames since the last `sync_dir`. `sync_dir` makes the current
//!   map durable. A file id stays alive while a map, a pending creation or an open handle
//!   refers to it, so a removed file keeps working through its open handles (POSIX `unlink`).
//! - A crash builds a new disk from the old one and kills the old one. Un-synced directory
//!   changes are undone except for a random prefix of them (a journaling file system commits
//!   metadata in order, and may have committed some of it before the power went). For every
//!   file that is in the surviving directory, each pending write is, by a PRNG seeded by the
//!   caller, applied in full, dropped, or torn: only some of the 512-byte sectors it touches
//!   (aligned to absolute file offsets) are applied, and a torn write that extended the file
//!   may leave the new length behind with zeros in the sectors that did not make it (as a file
//!   system that journals the size before the data does). Survivors apply in their original
//!   order. `set_len` calls survive or not as a whole.
//! - Every call through the [`Storage`] and [`StorageFile`] traits is numbered from 0 per disk,
//!   so a test can run a workload once, read [`SimStorage::n_calls`], and rerun it failing each
//!   call in turn. A failed call changes nothing.
//!
//! One `Mutex` guards the whole disk: it is a test device, and a single lock keeps every call
//! atomic and the call numbering deterministic for a single-threaded workload.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::{LockGuard, OpenMode, Storage, StorageFile, check_name};

/// Tearing happens at this granularity: a write lands or not sector by sector.
const SECTOR_LEN_BYTES: usize = 512;

/// A simulated file may not grow past this, so a bad offset is an error rather than an attempt
/// to allocate the whole address space.
const MAX_FILE_LEN_BYTES: u64 = 1 << 32;

/// `EIO`: the errno for an IO error.
const EIO: i32 = 5;
/// `EFBIG`: the errno for a file grown past the limit.
const EFBIG: i32 = 27;
/// `ENOSPC`: the errno for a full device.
const ENOSPC: i32 = 28;

/// The message of every error returned through a handle from before a crash.
const DEAD_MESSAGE: &str = "simulated process is dead after a crash";

/// Which error an injected fault returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FaultKind {
    /// `EIO` (raw OS error 5): the device failed.
    Eio,
    /// `ENOSPC` (raw OS error 28): the device is full.
    Enospc,
}

impl FaultKind {
    /// The errno this fault returns, as in `io::Error::raw_os_error`.
    pub fn raw_os_error(self) -> i32 {
        match self {
            FaultKind::Eio => EIO,
            FaultKind::Enospc => ENOSPC,
        }
    }
}

/// A simulated disk holding one flat directory. `Clone` gives another handle to the same disk.
///
/// Inspection helpers ([`read_file`](Self::read_file), [`file_names`](Self::file_names),
/// [`n_calls`](Self::n_calls)) are not counted as calls and work on a dead handle too (they see
/// the disk as it was at the crash).
#[derive(Clone)]
pub struct SimStorage {
    disk: Arc<Mutex<Disk>>,
}

impl fmt::Debug for SimStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimStorage").finish_non_exhaustive()
    }
}

impl Default for SimStorage {
    fn default() -> Self {
        SimStorage::new()
    }
}

impl SimStorage {
    /// The unit of tearing: a torn write lands or not per 512-byte sector, aligned to absolute
    /// file offsets. A test that wants a frame never torn inside keeps it within one sector.
    pub const SECTOR_LEN_BYTES: u64 = SECTOR_LEN_BYTES as u64;

    /// An empty disk: no files, no faults, unlocked, call counter at 0.
    pub fn new() -> SimStorage {
        SimStorage::from_disk(Disk::empty())
    }

    fn from_disk(disk: Disk) -> SimStorage {
        SimStorage {
            disk: Arc::new(Mutex::new(disk)),
        }
    }

    fn lock_disk(&self) -> MutexGuard<'_, Disk> {
        lock(&self.disk)
    }

    /// Simulates power loss and returns a handle to what survives, decided by a PRNG seeded
    /// with `seed` (same state and seed, same outcome). Every handle from before the crash
    /// (this one, its clones, their files and lock guards) is dead from now on: each call
    /// through it returns an error and changes nothing. The new disk has no faults, no lock
    /// and a call counter at 0.
    ///
    /// Crashing a dead handle again is allowed and gives another possible outcome of the same
    /// crash, so one test run can try many seeds on one state.
    pub fn crash(&self, seed: u64) -> SimStorage {
        self.crash_with(&mut Survival::Random(SplitMix64::new(seed)))
    }

    /// A crash in which every pending write and directory change survives, like a process kill
    /// while the operating system keeps running. Old handles die as in [`crash`](Self::crash).
    pub fn crash_keep_all(&self) -> SimStorage {
        self.crash_with(&mut Survival::KeepAll)
    }

    /// A crash in which nothing that was not synced survives: each file keeps exactly what its
    /// last `sync_data` made durable, and the directory what the last `sync_dir` did. Old
    /// handles die as in [`crash`](Self::crash).
    pub fn crash_drop_all(&self) -> SimStorage {
        self.crash_with(&mut Survival::DropAll)
    }

    fn crash_with(&self, survival: &mut Survival) -> SimStorage {
        let mut disk = self.lock_disk();
        disk.is_dead = true;
        SimStorage::from_disk(disk.surviving_disk(survival))
    }

    /// Whether this handle is from before a crash.
    pub fn is_dead(&self) -> bool {
        self.lock_disk().is_dead
    }

    /// Makes the call with index `call_idx` (counted as [`n_calls`](Self::n_calls) counts)
    /// fail with `kind` and have no effect. Several calls may be marked.
    pub fn fail_call(&self, call_idx: u64, kind: FaultKind) {
        self.lock_disk().faults.insert(call_idx, kind);
    }

    /// Makes the call with index `call_idx` and every later one fail with `kind` (a device
    /// that broke for good). Replaces an earlier `fail_all_from`.
    pub fn fail_all_from(&self, call_idx: u64, kind: FaultKind) {
        self.lock_disk().fail_all_from = Some((call_idx, kind));
    }

    /// Removes every injected fault, so later calls succeed again.
    pub fn clear_faults(&self) {
        let mut disk = self.lock_disk();
        disk.faults.clear();
        disk.fail_all_from = None;
    }

    /// How many calls on this disk (on the storage or any of its files, failed ones included)
    /// were made since it was created or crashed into.
    pub fn n_calls(&self) -> u64 {
        self.lock_disk().n_calls
    }

    /// The current content of `name` (what reads see), or `None` if there is no such file.
    pub fn read_file(&self, name: &str) -> Option<Vec<u8>> {
        let disk = self.lock_disk();
        let file_id = disk.dir_current.get(name)?;
        disk.files.get(file_id).map(|file| file.current.clone())
    }

    /// Sets the content of `name` to `bytes`, both current and durable, creating the file if
    /// needed; pending writes to it are forgotten, and the current directory is made durable
    /// (as by `sync_dir`). Not counted as a call and never failed by an injected fault. For
    /// corruption tests between runs: flip a bit, truncate a file, plant a foreign one.
    ///
    /// # Panics
    ///
    /// If `name` is not a valid flat name, or this handle is dead: both are mistakes in the
    /// test itself, not conditions a test inspects.
    pub fn write_file_raw(&self, name: &str, bytes: &[u8]) {
        if let Err(err) = check_name(name) {
            panic!("write_file_raw: {err}");
        }
        let mut disk = self.lock_disk();
        assert!(!disk.is_dead, "write_file_raw: {DEAD_MESSAGE}");
        let file_id = match disk.dir_current.get(name) {
            Some(&file_id) => file_id,
            None => {
                let file_id = disk.new_file_id();
                disk.files.insert(file_id, SimFile::default());
                disk.dir_current.insert(name.to_string(), file_id);
                file_id
            }
        };
        // The whole current directory becomes durable, as by `sync_dir`: making only this
        // entry durable could leave a file under two names after a crash that keeps part of a
        // pending rename. Between runs nothing is pending anyway.
        disk.dir_durable = disk.dir_current.clone();
        disk.dir_pending.clear();
        if let Some(file) = disk.files.get_mut(&file_id) {
            file.current = bytes.to_vec();
            file.durable = bytes.to_vec();
            file.pending.clear();
        }
        disk.collect_garbage();
    }

    /// The names in the current directory, sorted.
    pub fn file_names(&self) -> Vec<String> {
        self.lock_disk().dir_current.keys().cloned().collect()
    }
}

impl Storage for SimStorage {
    fn open(&self, name: &str, mode: OpenMode) -> io::Result<Arc<dyn StorageFile>> {
        let mut disk = self.lock_disk();
        disk.begin_call()?;
        check_name(name)?;
        let file_id = match (disk.dir_current.get(name).copied(), mode) {
            (Some(_), OpenMode::CreateNew) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("simulated file {name:?} already exists"),
                ));
            }
            (Some(file_id), _) => file_id,
            (None, OpenMode::MustExist) => return Err(not_found(name)),
            (None, OpenMode::CreateOrOpen | OpenMode::CreateNew) => {
                let file_id = disk.new_file_id();
                disk.files.insert(file_id, SimFile::default());
                disk.dir_current.insert(name.to_string(), file_id);
                disk.dir_pending.push(DirOp::Create {
                    name: name.to_string(),
                    file_id,
                });
                file_id
            }
        };
        disk.file_mut(file_id)?.n_handles += 1;
        Ok(Arc::new(SimFileHandle {
            disk: Arc::clone(&self.disk),
            file_id,
        }))
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        let mut disk = self.lock_disk();
        disk.begin_call()?;
        check_name(name)?;
        if disk.dir_current.remove(name).is_none() {
            return Err(not_found(name));
        }
        disk.dir_pending.push(DirOp::Remove {
            name: name.to_string(),
        });
        disk.collect_garbage();
        Ok(())
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let mut disk = self.lock_disk();
        disk.begin_call()?;
        check_name(from)?;
        check_name(to)?;
        if !disk.dir_current.contains_key(from) {
            return Err(not_found(from));
        }
        if from == to {
            // POSIX: renaming a file onto itself does nothing.
            return Ok(());
        }
        let op = DirOp::Rename {
            from: from.to_string(),
            to: to.to_string(),
        };
        op.apply(&mut disk.dir_current);
        disk.dir_pending.push(op);
        disk.collect_garbage();
        Ok(())
    }

    fn list(&self) -> io::Result<Vec<String>> {
        let mut disk = self.lock_disk();
        disk.begin_call()?;
        Ok(disk.dir_current.keys().cloned().collect())
    }

    fn exists(&self, name: &str) -> io::Result<bool> {
        let mut disk = self.lock_disk();
        disk.begin_call()?;
        check_name(name)?;
        Ok(disk.dir_current.contains_key(name))
    }

    fn sync_dir(&self) -> io::Result<()> {
        let mut disk = self.lock_disk();
        disk.begin_call()?;
        disk.dir_durable = disk.dir_current.clone();
        disk.dir_pending.clear();
        disk.collect_garbage();
        Ok(())
    }

    fn try_lock(&self) -> io::Result<Option<Box<dyn LockGuard>>> {
        let mut disk = self.lock_disk();
        disk.begin_call()?;
        if disk.is_locked {
            return Ok(None);
        }
        disk.is_locked = true;
        Ok(Some(Box::new(SimLockGuard {
            disk: Arc::clone(&self.disk),
        })))
    }
}

/// An open file of a [`SimStorage`].
struct SimFileHandle {
    disk: Arc<Mutex<Disk>>,
    file_id: FileId,
}

impl fmt::Debug for SimFileHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimFileHandle")
            .field("file_id", &self.file_id)
            .finish_non_exhaustive()
    }
}

impl Drop for SimFileHandle {
    fn drop(&mut self) {
        let mut disk = lock(&self.disk);
        if let Some(file) = disk.files.get_mut(&self.file_id) {
            file.n_handles = file.n_handles.saturating_sub(1);
        }
        disk.collect_garbage();
    }
}

impl StorageFile for SimFileHandle {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let mut disk = lock(&self.disk);
        disk.begin_call()?;
        let file = disk.file_mut(self.file_id)?;
        let range = u64_to_usize(offset)
            .ok()
            .and_then(|start| Some(start..start.checked_add(buf.len())?))
            .filter(|range| range.end <= file.current.len());
        match range.and_then(|range| file.current.get(range)) {
            Some(bytes) => {
                buf.copy_from_slice(bytes);
                Ok(())
            }
            None => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "read of {} bytes at offset {offset} past the end of a {}-byte file",
                    buf.len(),
                    file.current.len()
                ),
            )),
        }
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let mut disk = lock(&self.disk);
        disk.begin_call()?;
        let buf_len_bytes = u64::try_from(buf.len()).map_err(|_| too_big())?;
        let end_bytes = offset.checked_add(buf_len_bytes).ok_or_else(too_big)?;
        if end_bytes > MAX_FILE_LEN_BYTES {
            return Err(too_big());
        }
        let offset_bytes = u64_to_usize(offset)?;
        let file = disk.file_mut(self.file_id)?;
        write_into(&mut file.current, offset_bytes, buf);
        file.pending.push(PendingOp::Write {
            offset_bytes,
            data: buf.to_vec(),
        });
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut disk = lock(&self.disk);
        disk.begin_call()?;
        let file = disk.file_mut(self.file_id)?;
        for op in std::mem::take(&mut file.pending) {
            op.apply_in_full(&mut file.durable);
        }
        debug_assert_eq!(file.durable, file.current, "a synced file is all durable");
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        let mut disk = lock(&self.disk);
        disk.begin_call()?;
        let file = disk.file_mut(self.file_id)?;
        u64::try_from(file.current.len()).map_err(|_| too_big())
    }

    fn set_len(&self, len_bytes: u64) -> io::Result<()> {
        let mut disk = lock(&self.disk);
        disk.begin_call()?;
        if len_bytes > MAX_FILE_LEN_BYTES {
            return Err(too_big());
        }
        let len_bytes = u64_to_usize(len_bytes)?;
        let file = disk.file_mut(self.file_id)?;
        file.current.resize(len_bytes, 0);
        file.pending.push(PendingOp::SetLen { len_bytes });
        Ok(())
    }
}

/// Holds a [`SimStorage`]'s lock flag; clears it on drop.
struct SimLockGuard {
    disk: Arc<Mutex<Disk>>,
}

impl fmt::Debug for SimLockGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimLockGuard").finish_non_exhaustive()
    }
}

impl Drop for SimLockGuard {
    fn drop(&mut self) {
        lock(&self.disk).is_locked = false;
    }
}

impl LockGuard for SimLockGuard {}

/// Identifies a file independently of its names (an inode number).
type FileId = u64;

/// The whole simulated disk behind one mutex.
struct Disk {
    /// Set by a crash: every later call through a handle to this disk fails.
    is_dead: bool,
    /// Calls made so far; the next call gets this index.
    n_calls: u64,
    /// Calls that fail once, by index.
    faults: BTreeMap<u64, FaultKind>,
    /// From this call index on, every call fails.
    fail_all_from: Option<(u64, FaultKind)>,
    /// Every live file. A `BTreeMap` so crash decisions are made in a fixed order.
    files: BTreeMap<FileId, SimFile>,
    /// The id the next created file gets.
    next_file_id: FileId,
    /// The directory as the last `sync_dir` left it.
    dir_durable: BTreeMap<String, FileId>,
    /// The directory as calls see it: `dir_durable` with `dir_pending` applied.
    dir_current: BTreeMap<String, FileId>,
    /// Directory changes since the last `sync_dir`, oldest first.
    dir_pending: Vec<DirOp>,
    /// Whether a lock guard is alive.
    is_locked: bool,
}

impl Disk {
    fn empty() -> Disk {
        Disk {
            is_dead: false,
            n_calls: 0,
            faults: BTreeMap::new(),
            fail_all_from: None,
            files: BTreeMap::new(),
            next_file_id: 0,
            dir_durable: BTreeMap::new(),
            dir_current: BTreeMap::new(),
            dir_pending: Vec::new(),
            is_locked: false,
        }
    }

    /// Numbers the call and fails it if the disk is dead or a fault is set for it. Every trait
    /// method calls this first, before looking at its arguments.
    fn begin_call(&mut self) -> io::Result<()> {
        if self.is_dead {
            return Err(io::Error::other(DEAD_MESSAGE));
        }
        let call_idx = self.n_calls;
        self.n_calls += 1;
        let sticky = self
            .fail_all_from
            .filter(|(from_idx, _)| call_idx >= *from_idx)
            .map(|(_, kind)| kind);
        match self.faults.get(&call_idx).copied().or(sticky) {
            Some(kind) => Err(io::Error::from_raw_os_error(kind.raw_os_error())),
            None => Ok(()),
        }
    }

    fn new_file_id(&mut self) -> FileId {
        let file_id = self.next_file_id;
        self.next_file_id += 1;
        file_id
    }

    fn file_mut(&mut self, file_id: FileId) -> io::Result<&mut SimFile> {
        // An open handle keeps its file alive, so a miss is a bug in this module.
        self.files.get_mut(&file_id).ok_or_else(|| {
            io::Error::other(format!(
                "simulated file {file_id} vanished under an open handle"
            ))
        })
    }

    /// Forgets files that nothing can reach any more: no name (durable or current), no pending
    /// creation a crash could keep, no open handle.
    fn collect_garbage(&mut self) {
        if self.is_dead {
            return;
        }
        let mut reachable: BTreeSet<FileId> = self.dir_durable.values().copied().collect();
        reachable.extend(self.dir_current.values().copied());
        reachable.extend(self.dir_pending.iter().filter_map(|op| match op {
            DirOp::Create { file_id, .. } => Some(*file_id),
            DirOp::Remove { .. } | DirOp::Rename { .. } => None,
        }));
        self.files
            .retain(|file_id, file| file.n_handles > 0 || reachable.contains(file_id));
    }

    /// The disk a crash leaves behind, as `survival` decides.
    fn surviving_disk(&self, survival: &mut Survival) -> Disk {
        let n_dir_ops_kept = survival.n_dir_ops_kept(self.dir_pending.len());
        let mut dir = self.dir_durable.clone();
        for op in self.dir_pending.iter().take(n_dir_ops_kept) {
            op.apply(&mut dir);
        }
        let surviving_ids: BTreeSet<FileId> = dir.values().copied().collect();
        let mut files = BTreeMap::new();
        for file_id in surviving_ids {
            // Garbage collection keeps every file a durable name or a pending creation refers
            // to, so this always finds one.
            let Some(file) = self.files.get(&file_id) else {
                continue;
            };
            let mut content = file.durable.clone();
            for op in &file.pending {
                op.apply_after_crash(&mut content, survival);
            }
            files.insert(
                file_id,
                SimFile {
                    durable: content.clone(),
                    current: content,
                    pending: Vec::new(),
                    n_handles: 0,
                },
            );
        }
        Disk {
            files,
            next_file_id: self.next_file_id,
            dir_durable: dir.clone(),
            dir_current: dir,
            ..Disk::empty()
        }
    }
}

/// One simulated file.
#[derive(Default)]
struct SimFile {
    /// What a crash keeps for sure.
    durable: Vec<u8>,
    /// What reads see: `durable` with `pending` applied.
    current: Vec<u8>,
    /// Writes and truncations since the last `sync_data`, oldest first.
    pending: Vec<PendingOp>,
    /// Open handles; a removed file stays alive while this is non-zero.
    n_handles: u64,
}

/// A change to a file not yet made durable.
enum PendingOp {
    /// `write_all_at(data, offset_bytes)`.
    Write { offset_bytes: usize, data: Vec<u8> },
    /// `set_len(len_bytes)`.
    SetLen { len_bytes: usize },
}

impl PendingOp {
    fn apply_in_full(&self, content: &mut Vec<u8>) {
        match self {
            PendingOp::Write { offset_bytes, data } => write_into(content, *offset_bytes, data),
            PendingOp::SetLen { len_bytes } => content.resize(*len_bytes, 0),
        }
    }

    fn apply_after_crash(&self, content: &mut Vec<u8>, survival: &mut Survival) {
        match self {
            PendingOp::SetLen { .. } => {
                if survival.set_len_survives() {
                    self.apply_in_full(content);
                }
            }
            PendingOp::Write { offset_bytes, data } => match survival.write_fate() {
                WriteFate::Applied => self.apply_in_full(content),
                WriteFate::Dropped => {}
                WriteFate::Torn => {
                    let end_bytes = offset_bytes + data.len();
                    let mut piece_start = *offset_bytes;
                    while piece_start < end_bytes {
                        let sector_end = (piece_start / SECTOR_LEN_BYTES + 1) * SECTOR_LEN_BYTES;
                        let piece_end = sector_end.min(end_bytes);
                        if survival.sector_survives() {
                            let piece = &data[piece_start - offset_bytes..piece_end - offset_bytes];
                            write_into(content, piece_start, piece);
                        }
                        piece_start = piece_end;
                    }
                    if end_bytes > content.len() && survival.torn_len_survives() {
                        content.resize(end_bytes, 0);
                    }
                }
            },
        }
    }
}

/// A change to the directory not yet made durable.
enum DirOp {
    /// A new file `file_id` named `name`.
    Create { name: String, file_id: FileId },
    /// The name `name` removed.
    Remove { name: String },
    /// `from` renamed to `to`, replacing `to`.
    Rename { from: String, to: String },
}

impl DirOp {
    fn apply(&self, dir: &mut BTreeMap<String, FileId>) {
        match self {
            DirOp::Create { name, file_id } => {
                dir.insert(name.clone(), *file_id);
            }
            DirOp::Remove { name } => {
                dir.remove(name);
            }
            DirOp::Rename { from, to } => {
                if let Some(file_id) = dir.remove(from) {
                    dir.insert(to.clone(), file_id);
                }
            }
        }
    }
}

/// What happens to one pending write in a crash.
enum WriteFate {
    Applied,
    Dropped,
    Torn,
}

/// Decides what survives a crash.
enum Survival {
    KeepAll,
    DropAll,
    Random(SplitMix64),
}

impl Survival {
    fn n_dir_ops_kept(&mut self, n_dir_ops: usize) -> usize {
        match self {
            Survival::KeepAll => n_dir_ops,
            Survival::DropAll => 0,
            Survival::Random(rng) => {
                let n_choices = u64::try_from(n_dir_ops).unwrap_or(u64::MAX - 1) + 1;
                usize::try_from(rng.below(n_choices)).unwrap_or(n_dir_ops)
            }
        }
    }

    fn write_fate(&mut self) -> WriteFate {
        match self {
            Survival::KeepAll => WriteFate::Applied,
            Survival::DropAll => WriteFate::Dropped,
            Survival::Random(rng) => match rng.below(10) {
                0..4 => WriteFate::Applied,
                4..7 => WriteFate::Dropped,
                _ => WriteFate::Torn,
            },
        }
    }

    fn set_len_survives(&mut self) -> bool {
        self.coin()
    }

    fn sector_survives(&mut self) -> bool {
        self.coin()
    }

    fn torn_len_survives(&mut self) -> bool {
        self.coin()
    }

    fn coin(&mut self) -> bool {
        match self {
            Survival::KeepAll => true,
            Survival::DropAll => false,
            Survival::Random(rng) => rng.below(2) == 1,
        }
    }
}

/// splitmix64 (Steele, Lea, Flood 2014): tiny, fast, and good enough to pick crash outcomes.
struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    fn new(seed: u64) -> SplitMix64 {
        SplitMix64 { state: seed }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`); the modulo bias is irrelevant for the small `n` used here.
    fn below(&mut self, n: u64) -> u64 {
        debug_assert!(n > 0);
        self.next_u64() % n.max(1)
    }
}

/// Writes `data` at `offset_bytes`, zero-filling any gap past the end.
fn write_into(content: &mut Vec<u8>, offset_bytes: usize, data: &[u8]) {
    let end_bytes = offset_bytes + data.len();
    if content.len() < end_bytes {
        content.resize(end_bytes, 0);
    }
    content[offset_bytes..end_bytes].copy_from_slice(data);
}

fn lock(disk: &Mutex<Disk>) -> MutexGuard<'_, Disk> {
    // A test that panicked while holding the lock left the disk consistent: every call
    // validates before it mutates. Keep serving the other handles.
    disk.lock().unwrap_or_else(PoisonError::into_inner)
}

fn u64_to_usize(value: u64) -> io::Result<usize> {
    usize::try_from(value).map_err(|_| too_big())
}

fn too_big() -> io::Error {
    io::Error::from_raw_os_error(EFBIG)
}

fn not_found(name: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("no simulated file named {name:?}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECTOR: usize = SECTOR_LEN_BYTES;

    fn create(storage: &SimStorage, name: &str) -> Arc<dyn StorageFile> {
        storage.open(name, OpenMode::CreateNew).unwrap()
    }

    fn read_all(file: &dyn StorageFile) -> Vec<u8> {
        let len_bytes = usize::try_from(file.len().unwrap()).unwrap();
        let mut buf = vec![0u8; len_bytes];
        file.read_exact_at(&mut buf, 0).unwrap();
        buf
    }

    fn cases(default: u32) -> u32 {
        std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    }

    #[test]
    fn reads_see_writes_and_gaps_are_zero() {
        let storage = SimStorage::new();
        let file = create(&storage, "f");
        file.write_all_at(b"abc", 0).unwrap();
        file.write_all_at(b"xyz", 5).unwrap();
        assert_eq!(file.len().unwrap(), 8);
        assert_eq!(read_all(&*file), b"abc\0\0xyz");
        let mut buf = [0u8; 4];
        let err = file.read_exact_at(&mut buf, 5).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        let err = file.read_exact_at(&mut buf, u64::MAX).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        file.set_len(2).unwrap();
        assert_eq!(read_all(&*file), b"ab");
        file.set_len(4).unwrap();
        assert_eq!(read_all(&*file), b"ab\0\0");
        let err = file.write_all_at(b"x", MAX_FILE_LEN_BYTES).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(EFBIG));
        let err = file.write_all_at(b"x", u64::MAX).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(EFBIG));
        assert_eq!(storage.read_file("f").unwrap(), b"ab\0\0");
    }

    #[test]
    fn open_modes_and_invalid_names() {
        let storage = SimStorage::new();
        let err = storage.open("f", OpenMode::MustExist).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        storage.open("f", OpenMode::CreateOrOpen).unwrap();
        let err = storage.open("f", OpenMode::CreateNew).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        storage.open("f", OpenMode::MustExist).unwrap();
        for bad in ["", ".", "..", "a/b", "z\0"] {
            let kind = storage
                .open(bad, OpenMode::CreateOrOpen)
                .unwrap_err()
                .kind();
            assert_eq!(kind, io::ErrorKind::InvalidInput);
            assert_eq!(
                storage.remove(bad).unwrap_err().kind(),
                io::ErrorKind::InvalidInput
            );
            assert_eq!(
                storage.rename("f", bad).unwrap_err().kind(),
                io::ErrorKind::InvalidInput
            );
            assert_eq!(
                storage.exists(bad).unwrap_err().kind(),
                io::ErrorKind::InvalidInput
            );
        }
        assert_eq!(storage.list().unwrap(), vec!["f".to_string()]);
    }

    #[test]
    fn synced_data_survives_every_crash() {
        let base = SimStorage::new();
        let file = create(&base, "log");
        let synced: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
        file.write_all_at(&synced, 0).unwrap();
        file.sync_data().unwrap();
        base.sync_dir().unwrap();
        // Un-synced noise after the synced part, some overlapping nothing synced.
        file.write_all_at(&[0xEE; 1000], 3000).unwrap();
        for seed in 0..u64::from(cases(500)) {
            let after = base.crash(seed);
            let content = after.read_file("log").expect("synced file survives");
            assert_eq!(&content[..3000], &synced[..], "seed {seed}");
        }
    }

    #[test]
    fn unsynced_data_survives_keep_all_and_never_drop_all() {
        let base = SimStorage::new();
        let file = create(&base, "log");
        file.write_all_at(b"durable", 0).unwrap();
        file.sync_data().unwrap();
        base.sync_dir().unwrap();
        file.write_all_at(b"DURA", 0).unwrap();
        file.write_all_at(b"+tail", 7).unwrap();
        file.set_len(10).unwrap();

        let kept = base.crash_keep_all();
        assert_eq!(kept.read_file("log").unwrap(), b"DURAble+ta");
        let dropped = base.crash_drop_all();
        assert_eq!(dropped.read_file("log").unwrap(), b"durable");
        // The recovered disk starts clean: all of it is durable now.
        let again = dropped.crash_drop_all();
        assert_eq!(again.read_file("log").unwrap(), b"durable");
    }

    /// One synced file of old bytes, then one pending write spanning several sectors, not
    /// aligned: over many seeds, every outcome must occur, and every piece of the write that
    /// falls in one sector is all new or all old.
    #[test]
    fn random_crashes_apply_drop_and_tear_at_sector_granularity() {
        let old = vec![0x11u8; 6 * SECTOR];
        let write_offset = SECTOR / 2;
        let write_len = 4 * SECTOR;
        let new = vec![0x22u8; write_len];

        let base = SimStorage::new();
        let file = create(&base, "f");
        file.write_all_at(&old, 0).unwrap();
        file.sync_data().unwrap();
        base.sync_dir().unwrap();
        file.write_all_at(&new, write_offset as u64).unwrap();

        let (mut n_applied, mut n_dropped, mut n_torn) = (0, 0, 0);
        for seed in 0..200 {
            let content = base.crash(seed).read_file("f").unwrap();
            assert_eq!(content.len(), old.len());
            // Bytes outside the write keep the old content.
            assert!(content[..write_offset].iter().all(|&b| b == 0x11));
            assert!(
                content[write_offset + write_len..]
                    .iter()
                    .all(|&b| b == 0x11)
            );
            let written = &content[write_offset..write_offset + write_len];
            if written.iter().all(|&b| b == 0x22) {
                n_applied += 1;
            } else if written.iter().all(|&b| b == 0x11) {
                n_dropped += 1;
            } else {
                n_torn += 1;
            }
            // Sector by sector (absolute alignment): all new or all old.
            for sector in content.chunks(SECTOR) {
                let first = sector[0];
                let is_whole = sector[..SECTOR / 2].iter().all(|&b| b == first)
                    && sector[SECTOR / 2..]
                        .iter()
                        .all(|&b| b == sector[SECTOR / 2]);
                assert!(is_whole, "seed {seed}: a half-sector piece was split");
            }
        }
        assert!(n_applied > 20, "applied {n_applied}");
        assert!(n_dropped > 20, "dropped {n_dropped}");
        assert!(n_torn > 20, "torn {n_torn}");
    }

    /// A torn write that extends the file: the surviving length is the old one, or the end of
    /// a surviving sector, or the full end with zeros in the sectors that did not land.
    #[test]
    fn torn_extending_write_leaves_whole_sectors_or_zeros() {
        let base = SimStorage::new();
        let file = create(&base, "f");
        file.write_all_at(&[0x11; SECTOR], 0).unwrap();
        file.sync_data().unwrap();
        base.sync_dir().unwrap();
        file.write_all_at(&[0x22; 3 * SECTOR], SECTOR as u64)
            .unwrap();

        let mut lens = BTreeSet::new();
        let mut saw_zero_sector = false;
        for seed in 0..200 {
            let content = base.crash(seed).read_file("f").unwrap();
            assert_eq!(content.len() % SECTOR, 0, "seed {seed}");
            assert!(content[..SECTOR].iter().all(|&b| b == 0x11));
            for sector in content[SECTOR..].chunks(SECTOR) {
                let is_new = sector.iter().all(|&b| b == 0x22);
                let is_zero = sector.iter().all(|&b| b == 0);
                assert!(is_new || is_zero, "seed {seed}");
                saw_zero_sector |= is_zero;
            }
            lens.insert(content.len());
        }
        assert_eq!(
            lens.len(),
            4,
            "every length from 1 to 4 sectors occurs: {lens:?}"
        );
        assert!(saw_zero_sector);
    }

    #[test]
    fn crash_outcome_is_deterministic_per_seed() {
        let base = SimStorage::new();
        let file = create(&base, "f");
        for write_idx in 0..20u64 {
            let byte = u8::try_from(write_idx).unwrap();
            file.write_all_at(&[byte; 700], write_idx * 300).unwrap();
        }
        let mut distinct = BTreeSet::new();
        for seed in 0..50 {
            let first = base.crash(seed);
            let second = base.crash(seed);
            assert_eq!(first.read_file("f"), second.read_file("f"));
            assert_eq!(first.file_names(), second.file_names());
            distinct.insert(first.read_file("f"));
        }
        assert!(distinct.len() > 10, "seeds give different outcomes");
    }

    #[test]
    fn survived_writes_apply_in_order() {
        let base = SimStorage::new();
        let file = create(&base, "f");
        base.sync_dir().unwrap();
        file.write_all_at(&[1; SECTOR], 0).unwrap();
        file.write_all_at(&[2; SECTOR], 0).unwrap();
        let kept = base.crash_keep_all();
        assert_eq!(kept.read_file("f").unwrap(), vec![2; SECTOR]);
        for seed in 0..100 {
            let content = base.crash(seed).read_file("f").unwrap();
            // Never "1 over 2": the later write wins when both survive. (Zeros: a torn write
            // whose length landed but whose only sector did not.)
            assert!(
                content.is_empty()
                    || content == [0; SECTOR]
                    || content == [1; SECTOR]
                    || content == [2; SECTOR],
                "seed {seed}"
            );
        }
    }

    #[test]
    fn unsynced_creation_vanishes_and_synced_one_stays() {
        let base = SimStorage::new();
        let file = create(&base, "new");
        file.write_all_at(b"data", 0).unwrap();
        file.sync_data().unwrap();
        // Content synced, directory entry not: the file can vanish.
        let dropped = base.crash_drop_all();
        assert_eq!(dropped.file_names(), Vec::<String>::new());
        let kept = base.crash_keep_all();
        assert_eq!(kept.read_file("new").unwrap(), b"data");

        let base = SimStorage::new();
        create(&base, "new").write_all_at(b"data", 0).unwrap();
        base.sync_dir().unwrap();
        // Entry synced, content not: the file survives empty.
        let dropped = base.crash_drop_all();
        assert_eq!(dropped.read_file("new").unwrap(), b"");
    }

    #[test]
    fn unsynced_rename_and_remove_are_reverted() {
        let base = SimStorage::new();
        for (name, bytes) in [("a", b"AAA"), ("b", b"BBB"), ("c", b"CCC")] {
            let file = create(&base, name);
            file.write_all_at(bytes, 0).unwrap();
            file.sync_data().unwrap();
        }
        base.sync_dir().unwrap();
        base.rename("a", "b").unwrap();
        base.remove("c").unwrap();
        assert_eq!(base.file_names(), vec!["b".to_string()]);
        assert_eq!(base.read_file("b").unwrap(), b"AAA");

        let dropped = base.crash_drop_all();
        assert_eq!(dropped.file_names(), vec!["a", "b", "c"]);
        assert_eq!(dropped.read_file("a").unwrap(), b"AAA");
        assert_eq!(dropped.read_file("b").unwrap(), b"BBB");
        assert_eq!(dropped.read_file("c").unwrap(), b"CCC");

        let kept = base.crash_keep_all();
        assert_eq!(kept.file_names(), vec!["b".to_string()]);
        assert_eq!(kept.read_file("b").unwrap(), b"AAA");
    }

    /// A random crash keeps a prefix of the pending directory changes: never a later change
    /// without the earlier ones.
    #[test]
    fn random_crash_keeps_a_prefix_of_directory_changes() {
        let base = SimStorage::new();
        base.sync_dir().unwrap();
        create(&base, "tmp");
        base.rename("tmp", "snap").unwrap();
        create(&base, "other");
        let expected: [&[&str]; 4] = [&[], &["tmp"], &["snap"], &["other", "snap"]];
        let mut seen = BTreeSet::new();
        for seed in 0..100 {
            let names = base.crash(seed).file_names();
            let idx = expected
                .iter()
                .position(|e| *e == names.as_slice())
                .unwrap_or_else(|| panic!("seed {seed}: not a prefix: {names:?}"));
            seen.insert(idx);
        }
        assert_eq!(seen.len(), 4);
    }

    #[test]
    fn removed_file_stays_usable_through_its_handle() {
        let storage = SimStorage::new();
        let file = create(&storage, "f");
        storage.sync_dir().unwrap();
        storage.remove("f").unwrap();
        assert!(!storage.exists("f").unwrap());
        file.write_all_at(b"still here", 0).unwrap();
        assert_eq!(read_all(&*file), b"still here");
        drop(file);
        storage.sync_dir().unwrap();
        assert!(
            storage.lock_disk().files.is_empty(),
            "unreachable file collected"
        );
    }

    #[test]
    fn dead_handles_fail_and_change_nothing() {
        let old = SimStorage::new();
        let file = create(&old, "f");
        file.write_all_at(b"before", 0).unwrap();
        file.sync_data().unwrap();
        old.sync_dir().unwrap();
        let old_clone = old.clone();
        let guard = old.try_lock().unwrap().unwrap();

        let new = old.crash(7);
        assert!(old.is_dead() && old_clone.is_dead() && !new.is_dead());
        let is_dead_err = |err: io::Error| {
            assert_eq!(err.kind(), io::ErrorKind::Other);
            assert_eq!(err.to_string(), DEAD_MESSAGE);
        };
        is_dead_err(file.write_all_at(b"after", 0).unwrap_err());
        is_dead_err(file.sync_data().unwrap_err());
        is_dead_err(file.set_len(0).unwrap_err());
        is_dead_err(file.len().unwrap_err());
        is_dead_err(file.read_exact_at(&mut [0u8; 1], 0).unwrap_err());
        is_dead_err(old_clone.open("g", OpenMode::CreateNew).unwrap_err());
        is_dead_err(old_clone.remove("f").unwrap_err());
        is_dead_err(old_clone.rename("f", "h").unwrap_err());
        is_dead_err(old_clone.list().unwrap_err());
        is_dead_err(old_clone.exists("f").unwrap_err());
        is_dead_err(old_clone.sync_dir().unwrap_err());
        is_dead_err(old_clone.try_lock().unwrap_err());

        // The crash cleared the lock; the old guard's drop touches only the dead disk.
        let new_guard = new.try_lock().unwrap().expect("crash clears the lock");
        drop(guard);
        assert!(new.try_lock().unwrap().is_none());
        drop(new_guard);

        assert_eq!(new.file_names(), vec!["f".to_string()]);
        assert_eq!(new.read_file("f").unwrap(), b"before");
        assert_eq!(new.n_calls(), 2, "only the new handle's calls count");
    }

    /// Run once and count the calls; then fail each call in turn and check exactly that call
    /// fails, with the right errno and no effect.
    #[test]
    fn fail_call_hits_exactly_the_indexed_call() {
        type Step = fn(&SimStorage, &mut Option<Arc<dyn StorageFile>>) -> io::Result<()>;
        let steps: [Step; 9] = [
            |s, f| {
                *f = Some(s.open("f", OpenMode::CreateNew)?);
                Ok(())
            },
            |_, f| f.as_ref().unwrap().write_all_at(b"hello", 0),
            |_, f| f.as_ref().unwrap().sync_data(),
            |s, _| s.sync_dir(),
            |_, f| f.as_ref().unwrap().set_len(2),
            |_, f| f.as_ref().unwrap().len().map(drop),
            |s, _| s.rename("f", "g"),
            |s, _| s.list().map(drop),
            |s, _| s.exists("g").map(drop),
        ];
        let clean = SimStorage::new();
        let mut file = None;
        for step in &steps {
            step(&clean, &mut file).unwrap();
        }
        let n_calls = clean.n_calls();
        assert_eq!(n_calls, steps.len() as u64);

        for fail_idx in 0..n_calls {
            for kind in [FaultKind::Eio, FaultKind::Enospc] {
                let storage = SimStorage::new();
                storage.fail_call(fail_idx, kind);
                let mut file = None;
                for (step_idx, step) in steps.iter().enumerate() {
                    let result = step(&storage, &mut file);
                    if step_idx as u64 == fail_idx {
                        let err = result.unwrap_err();
                        assert_eq!(err.raw_os_error(), Some(kind.raw_os_error()));
                        if step_idx == 0 {
                            // The failed open created nothing; nothing later can run.
                            assert!(storage.file_names().is_empty());
                            break;
                        }
                    } else {
                        result.unwrap();
                    }
                }
                assert_eq!(storage.n_calls(), if fail_idx == 0 { 1 } else { n_calls });
            }
        }
    }

    #[test]
    fn failed_calls_have_no_effect() {
        let storage = SimStorage::new();
        let file = create(&storage, "f");
        file.write_all_at(b"old", 0).unwrap();
        storage.sync_dir().unwrap();
        let next = storage.n_calls();
        storage.fail_call(next, FaultKind::Eio);
        storage.fail_call(next + 1, FaultKind::Enospc);
        storage.fail_call(next + 2, FaultKind::Eio);
        storage.fail_call(next + 3, FaultKind::Eio);
        assert!(file.write_all_at(b"new", 0).is_err());
        assert!(file.sync_data().is_err());
        assert!(storage.remove("f").is_err());
        assert!(file.set_len(0).is_err());
        assert_eq!(storage.read_file("f").unwrap(), b"old");
        // The failed sync made nothing durable.
        assert_eq!(storage.crash_drop_all().read_file("f").unwrap(), b"");
    }

    #[test]
    fn fail_all_from_is_sticky_until_cleared() {
        let storage = SimStorage::new();
        let file = create(&storage, "f");
        storage.fail_all_from(2, FaultKind::Enospc);
        file.write_all_at(b"ok", 0).unwrap();
        for _ in 0..5 {
            let err = file.write_all_at(b"no", 2).unwrap_err();
            assert_eq!(err.raw_os_error(), Some(ENOSPC));
            assert_eq!(err.kind(), io::ErrorKind::StorageFull);
        }
        assert_eq!(storage.read_file("f").unwrap(), b"ok");
        storage.clear_faults();
        file.write_all_at(b"ok", 2).unwrap();
        assert_eq!(storage.n_calls(), 8);
        // A crash forgets faults too.
        storage.fail_all_from(0, FaultKind::Eio);
        let after = storage.crash_keep_all();
        assert!(after.list().is_ok());
    }

    #[test]
    fn try_lock_is_exclusive_per_disk() {
        let storage = SimStorage::new();
        let other_handle = storage.clone();
        let guard = storage.try_lock().unwrap().expect("free");
        assert!(other_handle.try_lock().unwrap().is_none());
        assert!(storage.try_lock().unwrap().is_none());
        // Another disk has its own lock.
        assert!(SimStorage::new().try_lock().unwrap().is_some());
        drop(guard);
        assert!(other_handle.try_lock().unwrap().is_some());
    }

    #[test]
    fn write_file_raw_is_current_and_durable() {
        let storage = SimStorage::new();
        let file = create(&storage, "log");
        file.write_all_at(b"pending", 0).unwrap();
        storage.write_file_raw("log", b"raw");
        storage.write_file_raw("planted", b"foreign");
        assert_eq!(read_all(&*file), b"raw");
        assert_eq!(storage.file_names(), vec!["log", "planted"]);
        let after = storage.crash_drop_all();
        assert_eq!(after.read_file("log").unwrap(), b"raw");
        assert_eq!(after.read_file("planted").unwrap(), b"foreign");
        assert_eq!(after.n_calls(), 0);
        // Flip one bit between runs.
        let mut bytes = after.read_file("log").unwrap();
        bytes[1] ^= 0x01;
        after.write_file_raw("log", &bytes);
        assert_eq!(after.crash(3).read_file("log").unwrap(), b"r`w");
        assert_eq!(after.read_file("missing"), None);
    }

    #[test]
    fn write_file_raw_over_a_pending_rename_keeps_one_durable_name() {
        let storage = SimStorage::new();
        create(&storage, "a");
        storage.sync_dir().unwrap();
        storage.rename("a", "b").unwrap();
        storage.write_file_raw("b", b"x");
        let after = storage.crash_drop_all();
        assert_eq!(after.file_names(), vec!["b".to_string()]);
        assert_eq!(after.read_file("b").unwrap(), b"x");
    }

    #[test]
    fn threads_share_one_file() {
        let storage = SimStorage::new();
        let file = create(&storage, "f");
        std::thread::scope(|scope| {
            for thread_idx in 0..4u8 {
                let file = Arc::clone(&file);
                scope.spawn(move || {
                    for write_idx in 0..100u64 {
                        let offset = (write_idx * 4 + u64::from(thread_idx)) * 16;
                        file.write_all_at(&[thread_idx; 16], offset).unwrap();
                    }
                });
            }
        });
        file.sync_data().unwrap();
        let content = read_all(&*file);
        assert_eq!(content.len(), 400 * 16);
        for (chunk_idx, chunk) in content.chunks(16).enumerate() {
            assert!(chunk.iter().all(|&b| usize::from(b) == chunk_idx % 4));
        }
        // open, the writes, sync_data, then len and read in read_all.
        assert_eq!(storage.n_calls(), 1 + 400 + 1 + 2);
    }

    /// Thousands of crash cycles on a small log must be cheap: crashes copy only what survives.
    #[test]
    fn many_crash_cycles_are_fast() {
        let mut storage = SimStorage::new();
        let started = std::time::Instant::now();
        for cycle in 0..u64::from(cases(2000)) {
            let file = storage.open("log", OpenMode::CreateOrOpen).unwrap();
            let len_bytes = file.len().unwrap();
            file.write_all_at(&[cycle as u8; 100], len_bytes % 65_536)
                .unwrap();
            if cycle % 3 == 0 {
                file.sync_data().unwrap();
                storage.sync_dir().unwrap();
            }
            storage = storage.crash(cycle);
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(20));
    }
}
