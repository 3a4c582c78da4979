//! The benchmark's error: what went wrong, in words a person running it can act on.

use std::fmt;

/// Why `psg-bench` stopped.
#[derive(Debug)]
pub enum BenchError {
    /// The command line is wrong (exit status 2).
    Usage(String),
    /// No usable CUDA GPU (libcuda, a device or libnvrtc is missing).
    NoGpu(String),
    /// A runtime call failed (out of memory, a driver error, a kernel that failed).
    Runtime {
        /// What the benchmark was doing.
        context: String,
        /// The runtime's error.
        source: psg_runtime::Error,
    },
    /// A file could not be written.
    Io {
        /// The path.
        path: String,
        /// The system's error.
        source: std::io::Error,
    },
    /// A check of the benchmark's own kernels failed (wrong copy, constant data).
    Check(String),
}

impl BenchError {
    /// Wraps a runtime error with what the benchmark was doing.
    pub fn runtime(context: impl Into<String>, source: psg_runtime::Error) -> Self {
        BenchError::Runtime {
            context: context.into(),
            source,
        }
    }
}

impl fmt::Display for BenchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BenchError::Usage(m) => write!(f, "{m} (see psg-bench --help)"),
            BenchError::NoGpu(m) => write!(
                f,
                "psg-bench cannot run: it needs a usable CUDA GPU: {m}\n(nothing was measured; \
                 `psg-bench --list-ops` works without a GPU)"
            ),
            BenchError::Runtime { context, source } => write!(f, "{context}: {source}"),
            BenchError::Io { path, source } => write!(f, "cannot write {path}: {source}"),
            BenchError::Check(m) => write!(f, "self-check failed: {m}"),
        }
    }
}

impl std::error::Error for BenchError {}

/// The benchmark's result type.
pub type BenchResult<T> = Result<T, BenchError>;

/// Adds context to a runtime result.
pub trait Context<T> {
    /// Turns a runtime error into a [`BenchError::Runtime`] saying what was being done.
    fn context(self, what: impl FnOnce() -> String) -> BenchResult<T>;
}

impl<T> Context<T> for psg_runtime::Result<T> {
    fn context(self, what: impl FnOnce() -> String) -> BenchResult<T> {
        self.map_err(|e| BenchError::runtime(what(), e))
    }
}
