//! [`FsStorage`]: the [`Storage`] traits on a real directory, through `std::fs`.
//!
//! Positional IO uses `std::os::unix::fs::FileExt` (`pread`/`pwrite`), so many threads share
//! one `File` without a seek position to fight over. Unix only.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{LockGuard, OpenMode, Storage, StorageFile, check_name};

/// The name of the file whose advisory lock guards the directory against a second opener.
const LOCK_FILE_NAME: &str = "LOCK";

/// A real directory on the file system.
#[derive(Clone, Debug)]
pub struct FsStorage {
    dir_path: PathBuf,
}

impl FsStorage {
    /// Uses the directory at `path`, creating it (and any missing parents) if needed. Each
    /// directory it creates is made durable by an fsync of its parent, so a crash right after
    /// cannot lose the directory that later files live in.
    pub fn open_dir(path: impl AsRef<Path>) -> io::Result<FsStorage> {
        let dir_path = path.as_ref().to_path_buf();
        create_dir_durably(&dir_path)?;
        Ok(FsStorage { dir_path })
    }

    /// The directory this storage works in.
    pub fn path(&self) -> &Path {
        &self.dir_path
    }

    /// The full path of `name` inside the directory, after checking the name is flat.
    fn file_path(&self, name: &str) -> io::Result<PathBuf> {
        check_name(name)?;
        Ok(self.dir_path.join(name))
    }
}

/// Creates `path` and its missing ancestors, then fsyncs the parent of each one created, from
/// the top down, so every new directory entry is durable.
fn create_dir_durably(path: &Path) -> io::Result<()> {
    match fs::metadata(path) {
        Ok(meta) if meta.is_dir() => return Ok(()),
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                format!("{} exists and is not a directory", path.display()),
            ));
        }
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(err) => return Err(err),
    }
    let mut created = Vec::new();
    let mut ancestor = Some(path);
    while let Some(dir) = ancestor {
        if dir.as_os_str().is_empty() || dir.try_exists()? {
            break;
        }
        created.push(dir);
        ancestor = dir.parent();
    }
    fs::create_dir_all(path)?;
    for dir in created.iter().rev() {
        let parent = match dir.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            // A relative single-component path lives in the working directory.
            _ => Path::new("."),
        };
        fsync_dir(parent)?;
    }
    Ok(())
}

/// fsync of a directory: makes its entries (creations, removals, renames) durable.
fn fsync_dir(path: &Path) -> io::Result<()> {
    File::open(path)?.sync_all()
}

impl Storage for FsStorage {
    fn open(&self, name: &str, mode: OpenMode) -> io::Result<Arc<dyn StorageFile>> {
        let path = self.file_path(name)?;
        let mut options = OpenOptions::new();
        options.read(true).write(true);
        match mode {
            OpenMode::CreateOrOpen => options.create(true),
            OpenMode::MustExist => &mut options,
            OpenMode::CreateNew => options.create_new(true),
        };
        let file = options.open(&path)?;
        Ok(Arc::new(FsFile { file }))
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        fs::remove_file(self.file_path(name)?)
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let from_path = self.file_path(from)?;
        let to_path = self.file_path(to)?;
        fs::rename(from_path, to_path)
    }

    /// Every entry except subdirectories (which cannot be files of ours); names that are not
    /// UTF-8 are skipped for the same reason.
    fn list(&self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(&self.dir_path)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                continue;
            }
            if let Ok(name) = entry.file_name().into_string() {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    fn exists(&self, name: &str) -> io::Result<bool> {
        self.file_path(name)?.try_exists()
    }

    fn sync_dir(&self) -> io::Result<()> {
        fsync_dir(&self.dir_path)
    }

    /// Locks the file `LOCK` (created if missing) with `flock`. The lock belongs to the open
    /// file, so a second `FsStorage` on the same path is refused even within one process.
    fn try_lock(&self) -> io::Result<Option<Box<dyn LockGuard>>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(self.dir_path.join(LOCK_FILE_NAME))?;
        match file.try_lock() {
            Ok(()) => Ok(Some(Box::new(FsLockGuard { _file: file }))),
            Err(fs::TryLockError::WouldBlock) => Ok(None),
            Err(fs::TryLockError::Error(err)) => Err(err),
        }
    }
}

/// An open file of an [`FsStorage`].
#[derive(Debug)]
struct FsFile {
    file: File,
}

impl StorageFile for FsFile {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        FileExt::read_exact_at(&self.file, buf, offset)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        FileExt::write_all_at(&self.file, buf, offset)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn set_len(&self, len_bytes: u64) -> io::Result<()> {
        self.file.set_len(len_bytes)
    }
}

/// Holds the locked `LOCK` file open; closing it on drop releases the lock.
#[derive(Debug)]
struct FsLockGuard {
    _file: File,
}

impl LockGuard for FsLockGuard {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir {
        path: PathBuf,
    }

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            static N_DIRS: AtomicU64 = AtomicU64::new(0);
            let dir_idx = N_DIRS.fetch_add(1, Ordering::Relaxed);
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            let path = std::env::temp_dir().join(format!(
                "iobuf-fs-{tag}-{}-{dir_idx}-{nanos}",
                std::process::id()
            ));
            TempDir { path }
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.path);
        }
    }

    #[test]
    fn round_trip_read_write_len_set_len_sync() {
        let tmp = TempDir::new("rt");
        let storage = FsStorage::open_dir(&tmp.path).unwrap();
        assert_eq!(storage.path(), tmp.path.as_path());
        let file = storage.open("data", OpenMode::CreateNew).unwrap();
        assert_eq!(file.len().unwrap(), 0);

        file.write_all_at(b"hello", 0).unwrap();
        file.write_all_at(b"world", 10).unwrap();
        assert_eq!(file.len().unwrap(), 15);
        let mut buf = [0xAAu8; 15];
        file.read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(&buf, b"hello\0\0\0\0\0world");
        file.sync_data().unwrap();

        let mut past_end = [0u8; 4];
        let err = file.read_exact_at(&mut past_end, 13).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);

        file.set_len(3).unwrap();
        assert_eq!(file.len().unwrap(), 3);
        file.set_len(8).unwrap();
        let mut buf = [0xAAu8; 8];
        file.read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(&buf, b"hel\0\0\0\0\0");

        // A second handle sees the same bytes.
        drop(file);
        let again = storage.open("data", OpenMode::MustExist).unwrap();
        let mut buf = [0u8; 3];
        again.read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(&buf, b"hel");
    }

    #[test]
    fn open_modes() {
        let tmp = TempDir::new("modes");
        let storage = FsStorage::open_dir(&tmp.path).unwrap();
        let err = storage.open("f", OpenMode::MustExist).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        storage.open("f", OpenMode::CreateOrOpen).unwrap();
        let err = storage.open("f", OpenMode::CreateNew).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        storage.open("f", OpenMode::CreateOrOpen).unwrap();
        storage.open("f", OpenMode::MustExist).unwrap();
    }

    #[test]
    fn rename_remove_list_exists_sync_dir() {
        let tmp = TempDir::new("dir");
        let storage = FsStorage::open_dir(&tmp.path).unwrap();
        let a = storage.open("a", OpenMode::CreateNew).unwrap();
        a.write_all_at(b"AAAA", 0).unwrap();
        let b = storage.open("b", OpenMode::CreateNew).unwrap();
        b.write_all_at(b"BB", 0).unwrap();
        storage.sync_dir().unwrap();
        assert_eq!(
            storage.list().unwrap(),
            vec!["a".to_string(), "b".to_string()]
        );

        // rename replaces the target atomically.
        storage.rename("a", "b").unwrap();
        assert!(!storage.exists("a").unwrap());
        assert!(storage.exists("b").unwrap());
        let b2 = storage.open("b", OpenMode::MustExist).unwrap();
        assert_eq!(b2.len().unwrap(), 4);
        storage.sync_dir().unwrap();

        storage.remove("b").unwrap();
        assert!(storage.list().unwrap().is_empty());
        let err = storage.remove("b").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);

        // The lock file shows in the listing: callers filter by prefix.
        let guard = storage.try_lock().unwrap();
        assert!(guard.is_some());
        assert_eq!(storage.list().unwrap(), vec![LOCK_FILE_NAME.to_string()]);
    }

    #[test]
    fn invalid_names_are_rejected() {
        let tmp = TempDir::new("names");
        let storage = FsStorage::open_dir(&tmp.path).unwrap();
        for bad in ["", ".", "..", "x/y", "../escape", "n\0ul"] {
            let kind = |r: io::Result<()>| r.unwrap_err().kind();
            assert_eq!(
                storage
                    .open(bad, OpenMode::CreateOrOpen)
                    .unwrap_err()
                    .kind(),
                io::ErrorKind::InvalidInput
            );
            assert_eq!(kind(storage.remove(bad)), io::ErrorKind::InvalidInput);
            assert_eq!(kind(storage.rename(bad, "ok")), io::ErrorKind::InvalidInput);
            assert_eq!(kind(storage.rename("ok", bad)), io::ErrorKind::InvalidInput);
            assert_eq!(
                storage.exists(bad).unwrap_err().kind(),
                io::ErrorKind::InvalidInput
            );
        }
    }

    #[test]
    fn second_opener_cannot_take_the_lock() {
        let tmp = TempDir::new("lock");
        let first = FsStorage::open_dir(&tmp.path).unwrap();
        let second = FsStorage::open_dir(&tmp.path).unwrap();
        let guard = first.try_lock().unwrap().expect("first lock is free");
        assert!(second.try_lock().unwrap().is_none());
        assert!(first.try_lock().unwrap().is_none());
        drop(guard);
        let guard2 = second.try_lock().unwrap().expect("lock released on drop");
        assert!(first.try_lock().unwrap().is_none());
        drop(guard2);
    }

    #[test]
    fn open_dir_creates_nested_dirs_and_rejects_a_file() {
        let tmp = TempDir::new("nested");
        let nested = tmp.path.join("a").join("b");
        let storage = FsStorage::open_dir(&nested).unwrap();
        assert!(nested.is_dir());
        storage.open("f", OpenMode::CreateNew).unwrap();
        // Opening an existing directory again is fine.
        FsStorage::open_dir(&nested).unwrap();

        let not_a_dir = nested.join("f");
        let err = FsStorage::open_dir(&not_a_dir).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotADirectory);
    }

    #[test]
    fn shared_file_across_threads() {
        let tmp = TempDir::new("threads");
        let storage = FsStorage::open_dir(&tmp.path).unwrap();
        let file = storage.open("data", OpenMode::CreateNew).unwrap();
        let n_threads: u64 = 4;
        let chunk_len_bytes: u64 = 4096;
        std::thread::scope(|scope| {
            for thread_idx in 0..n_threads {
                let file = Arc::clone(&file);
                scope.spawn(move || {
                    let byte = u8::try_from(thread_idx).unwrap() + 1;
                    let chunk = vec![byte; usize::try_from(chunk_len_bytes).unwrap()];
                    file.write_all_at(&chunk, thread_idx * chunk_len_bytes)
                        .unwrap();
                });
            }
        });
        file.sync_data().unwrap();
        for thread_idx in 0..n_threads {
            let mut chunk = vec![0u8; usize::try_from(chunk_len_bytes).unwrap()];
            file.read_exact_at(&mut chunk, thread_idx * chunk_len_bytes)
                .unwrap();
            let byte = u8::try_from(thread_idx).unwrap() + 1;
            assert!(chunk.iter().all(|&b| b == byte));
        }
    }
}
