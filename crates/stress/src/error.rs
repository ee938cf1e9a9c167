//! The program's one error type and how it is shown: one line on stderr, the whole chain.

use std::io;
use std::path::PathBuf;

use iobuf::LogError;
use recovery::RecoveryError;

/// Everything that ends a run early. `main` prints it as one line (see [`one_line`]) and exits
/// non-zero; nothing here ever becomes a panic.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The command line is well-formed but asks for something impossible.
    #[error("{0}")]
    Usage(String),
    /// A file-system call of the program itself (not the log's) failed.
    #[error("{what}")]
    Io {
        /// What the program was doing, with the path.
        what: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Opening (recovering) the log directory failed: locked, corrupt, misconfigured.
    #[error("opening the log in {}", dir.display())]
    Open {
        /// The log directory.
        dir: PathBuf,
        /// Why recovery refused.
        #[source]
        source: RecoveryError,
    },
    /// A log operation failed while the workload ran (a full disk ends up here).
    #[error("{what}")]
    Log {
        /// The operation.
        what: &'static str,
        /// The log's error.
        #[source]
        source: LogError,
    },
    /// Opening the page cache in a directory failed: locked, corrupt, not a page cache, or
    /// created with another segment length.
    #[error("opening the page cache in {}", dir.display())]
    OpenCache {
        /// The directory.
        dir: PathBuf,
        /// Why the page cache refused.
        #[source]
        source: pagecache::Error,
    },
    /// A page cache operation failed while the workload ran.
    #[error("{what}")]
    Cache {
        /// The operation.
        what: &'static str,
        /// The page cache's error.
        #[source]
        source: pagecache::Error,
    },
    /// The log holds bytes that are not what the run acknowledged.
    #[error("VERIFICATION FAILED: {0}")]
    Verification(String),
    /// A thread of the program itself failed (a bug in this program, not in the log).
    #[error("internal error: {0}")]
    Internal(&'static str),
    /// The crash loop could not run its child (not a verification failure).
    #[error("crash loop: {0}")]
    CrashLoop(String),
}

impl Error {
    /// An IO error with what was being done.
    pub fn io(what: impl Into<String>, source: io::Error) -> Error {
        Error::Io {
            what: what.into(),
            source,
        }
    }

    /// A page cache error with the operation that returned it.
    pub fn cache(what: &'static str, source: pagecache::Error) -> Error {
        Error::Cache { what, source }
    }

    /// A log error with the operation that returned it.
    pub fn log(what: &'static str, source: LogError) -> Error {
        Error::Log { what, source }
    }
}

/// The error and its chain of sources on one line, `outer: inner: innermost`. A source whose
/// text the line already holds (errors that print their source themselves) is not repeated.
pub fn one_line(error: &(dyn std::error::Error + 'static)) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = cause.source();
    }
    line.replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chain_is_one_line_without_repeats() {
        let error = Error::Open {
            dir: PathBuf::from("/data/log"),
            source: RecoveryError::Locked,
        };
        assert_eq!(
            one_line(&error),
            "opening the log in /data/log: the log directory is locked by another opener"
        );
        let full = io::Error::from_raw_os_error(28);
        let error = Error::log(
            "appending",
            LogError::Poisoned {
                first_failure: std::sync::Arc::new(LogError::Closed),
            },
        );
        assert!(!one_line(&error).contains('\n'));
        let error = Error::io("creating /x", full);
        let line = one_line(&error);
        assert!(line.starts_with("creating /x: "), "{line}");
        assert!(line.contains("os error 28"), "{line}");
    }
}
