//! The storage layer: every byte the log reads or writes goes through these traits.
//!
//! A [`Storage`] is one flat directory of files (the log's directory); a [`StorageFile`] is one
//! open file with positional IO only. Two implementations:
//!
//! - [`FsStorage`]: the real thing, on `std::fs::File` (`pread`/`pwrite`, `fdatasync`, a
//!   directory fsync, an advisory lock on a file named `LOCK`). Unix only.
//! - [`SimStorage`]: a deterministic in-memory disk for crash and fault tests. It keeps, per
//!   file, what is durable apart from what reads see, and per directory, which entries are
//!   durable; [`SimStorage::crash`] turns that into the state a power loss could leave behind
//!   (writes lost or torn at 512-byte sectors, un-synced directory changes undone but for a
//!   random prefix of them), and
//!   [`SimStorage::fail_call`] makes one chosen call fail with `EIO` or `ENOSPC`.
//!
//! Durability contract the log codes against (both implementations honour it, the simulation
//! enforces it adversarially):
//!
//! - A write is durable only after a later [`StorageFile::sync_data`] of that file returned `Ok`.
//! - A creation, removal or rename is durable only after a later [`Storage::sync_dir`] returned
//!   `Ok`. A file whose content was synced but whose directory entry was not can vanish.
//! - Un-synced writes may survive a crash in full, not at all, or torn (some 512-byte sectors
//!   new, the others old), independently of each other and in any combination.
//!
//! Names are flat: a name that is empty, `.`, `..`, or contains `/` or `\0` is rejected with
//! [`std::io::ErrorKind::InvalidInput`].
//!
//! Errors are plain [`std::io::Error`]s: the log maps them into its own typed error, and the raw
//! OS error code (`EIO`, `ENOSPC`) survives for it to tell a full disk from a broken one.

mod fs;
mod sim;

pub use fs::FsStorage;
pub use sim::{FaultKind, SimStorage};

use std::io;
use std::sync::Arc;

/// How to open a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenMode {
    /// Opens the file, creating it empty if it does not exist.
    CreateOrOpen,
    /// Opens an existing file; `ErrorKind::NotFound` if there is none.
    MustExist,
    /// Creates a new empty file; `ErrorKind::AlreadyExists` if the name is taken.
    CreateNew,
}

/// A directory of files (the log's directory). Object-safe; used as `Arc<dyn Storage>`.
pub trait Storage: Send + Sync + std::fmt::Debug {
    /// Opens the file `name` for reading and writing.
    fn open(&self, name: &str, mode: OpenMode) -> io::Result<Arc<dyn StorageFile>>;
    /// Removes the file `name`; `ErrorKind::NotFound` if there is none. Handles already open on
    /// it stay usable (as with POSIX `unlink`).
    fn remove(&self, name: &str) -> io::Result<()>;
    /// Renames `from` to `to`, atomically replacing `to` if it exists.
    fn rename(&self, from: &str, to: &str) -> io::Result<()>;
    /// The names of the files in the directory, sorted.
    fn list(&self) -> io::Result<Vec<String>>;
    /// Whether a file `name` exists.
    fn exists(&self, name: &str) -> io::Result<bool>;
    /// Makes creations, removals and renames in this directory durable (fsync of the directory).
    fn sync_dir(&self) -> io::Result<()>;
    /// Takes the directory's exclusive lock; `Ok(None)` when another opener holds it. The lock is
    /// held until the guard is dropped.
    fn try_lock(&self) -> io::Result<Option<Box<dyn LockGuard>>>;
}

/// Proof that the directory's exclusive lock is held; dropping it releases the lock.
pub trait LockGuard: Send + Sync + std::fmt::Debug {}

/// One open file. Positional IO only; object-safe; `Send + Sync` so many threads share it.
pub trait StorageFile: Send + Sync + std::fmt::Debug {
    /// Fills `buf` from `offset`; `ErrorKind::UnexpectedEof` if the file is shorter.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Writes all of `buf` at `offset`, extending the file if needed (a gap reads as zeros).
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// fdatasync: every write to this file before the call is durable when it returns Ok.
    fn sync_data(&self) -> io::Result<()>;
    /// The current length of the file in bytes.
    fn len(&self) -> io::Result<u64>;
    /// Whether the file is empty (provided: `len() == 0`).
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
    /// Truncates or zero-extends the file to `len_bytes`. Durable only after `sync_data`.
    fn set_len(&self, len_bytes: u64) -> io::Result<()>;
}

/// Checks that `name` is a plain file name inside the directory: not empty, not `.` or `..`,
/// no `/` and no NUL. Both implementations call it first so they reject the same names.
fn check_name(name: &str) -> io::Result<()> {
    let is_bad =
        name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0');
    if is_bad {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid file name {name:?}: names are flat, non-empty, not . or .."),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_name_rejects_paths_and_specials() {
        for bad in ["", ".", "..", "a/b", "/abs", "nul\0x", "dir/"] {
            let err = check_name(bad).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{bad:?}");
        }
        for good in ["log", "snap.000001.tmp", "...", ".hidden", "LOCK", "a b"] {
            check_name(good).unwrap();
        }
    }

    #[test]
    fn traits_are_object_safe_and_shareable() {
        fn assert_send_sync<T: Send + Sync + ?Sized>() {}
        assert_send_sync::<dyn Storage>();
        assert_send_sync::<dyn StorageFile>();
        assert_send_sync::<dyn LockGuard>();
        let storage: Arc<dyn Storage> = Arc::new(SimStorage::new());
        let _file: Arc<dyn StorageFile> = storage.open("x", OpenMode::CreateNew).unwrap();
    }
}
