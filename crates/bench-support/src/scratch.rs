//! A directory a benchmark may fill and that is gone when the run ends.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A new directory for one run of a program, removed with everything in it when dropped, so a
/// failed step leaves no gigabytes behind.
#[derive(Debug)]
pub struct ScratchDir {
    path: PathBuf,
    /// The program's name: the directory's prefix and the prefix of the message on stderr if
    /// removing it fails.
    program: String,
}

impl ScratchDir {
    /// Creates `{program}-{pid}-{nanos}-{n}` inside `parent` (`n` counts the directories
    /// this process created, so two created in the same nanosecond differ), creating `parent`
    /// first if it is missing. The directory itself must be new (`create_dir`, not
    /// `create_dir_all`), so what is removed on drop is never data someone else owns. An
    /// error names the path.
    pub fn create(parent: &Path, program: &str) -> io::Result<ScratchDir> {
        static N_CREATED: AtomicU64 = AtomicU64::new(0);
        let n = N_CREATED.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = parent.join(format!("{program}-{}-{nanos}-{n}", std::process::id()));
        fs::create_dir_all(parent).map_err(|e| with_path("creating", parent, e))?;
        fs::create_dir(&path).map_err(|e| with_path("creating", &path, e))?;
        Ok(ScratchDir {
            path,
            program: program.to_owned(),
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `name` inside the directory. Nothing is created: the path is fresh unless the caller
    /// used the same `name` before.
    pub fn sub(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if let Err(error) = fs::remove_dir_all(&self.path) {
            eprintln!(
                "{}: could not remove {}: {error}",
                self.program,
                self.path.display()
            );
        }
    }
}

/// `error` with what was being done to `path` in front, keeping its kind.
pub(crate) fn with_path(what: &str, path: &Path, error: io::Error) -> io::Error {
    io::Error::new(error.kind(), format!("{what} {}: {error}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_directory_is_new_and_gone_after_drop() {
        let parent =
            std::env::temp_dir().join(format!("bench-support-test-{}", std::process::id()));
        let scratch = ScratchDir::create(&parent, "scratch-test").unwrap();
        let path = scratch.path().to_path_buf();
        assert!(path.is_dir());
        assert!(
            path.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("scratch-test-")
        );
        fs::write(scratch.sub("a"), b"x").unwrap();
        assert_eq!(scratch.sub("a"), path.join("a"));
        drop(scratch);
        assert!(!path.exists());
        fs::remove_dir(&parent).unwrap();
    }
}
