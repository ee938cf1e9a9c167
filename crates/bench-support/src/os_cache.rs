//! Making a step read from the device: dropping the OS page cache.

use std::fs::OpenOptions;
use std::io::Write;
use std::process::Command;

/// The kernel's knob; writable by root only.
const DROP_CACHES_PATH: &str = "/proc/sys/vm/drop_caches";

/// What [`drop_os_page_cache`] asks the kernel to drop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropCaches {
    /// The page cache only (`1`): file data is read from the device again.
    PageCache,
    /// The page cache, dentries and inodes (`3`): file metadata is read from the device too.
    PageCacheDentriesAndInodes,
}

impl DropCaches {
    /// What is written to `/proc/sys/vm/drop_caches`.
    fn value(self) -> &'static [u8] {
        match self {
            DropCaches::PageCache => b"1",
            DropCaches::PageCacheDentriesAndInodes => b"3",
        }
    }
}

/// Runs `sync`, then writes `what` to `/proc/sys/vm/drop_caches` (Linux, root only).
///
/// `Ok` only when both succeeded: `drop_caches` drops clean pages only, so after a failed
/// `sync` dirty pages may have stayed cached. Otherwise `Err` says why, on one line, for the
/// report (without root: "writing /proc/sys/vm/drop_caches: Permission denied (os error
/// 13)"). Never panics and prints nothing.
pub fn drop_os_page_cache(what: DropCaches) -> Result<(), String> {
    let synced = match Command::new("sync").status() {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => Err(format!("`sync` exited with {status}")),
        Err(error) => Err(format!("could not run `sync`: {error}")),
    };
    let dropped = OpenOptions::new()
        .write(true)
        .open(DROP_CACHES_PATH)
        .and_then(|mut file| file.write_all(what.value()));
    match (synced, dropped) {
        (Ok(()), Ok(())) => Ok(()),
        (Err(sync), Ok(())) => Err(format!("{sync}, so dirty pages may have stayed cached")),
        (Ok(()), Err(error)) => Err(format!("writing {DROP_CACHES_PATH}: {error}")),
        (Err(sync), Err(error)) => Err(format!("writing {DROP_CACHES_PATH}: {error}; {sync} too")),
    }
}
