//! [`EngineError`]: what can go wrong in the engine, typed by whose move it is next.
//!
//! The engine never speaks HTTP. Each API server maps an `EngineError` to its wire
//! protocol once ([`EngineError::kind`] gives the class every protocol maps from:
//! 400, 404, 409, 413, 503, 507 or 500). Messages say what was wrong and what to do.

use std::io;
use std::path::PathBuf;

use pier_api::ErrorKind;
use pier_image::ImageError;

/// An error from the engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The request was malformed or named something invalid.
    #[error("{0}")]
    Invalid(String),
    /// The named object does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with the object's current state (or another request).
    #[error("{0}")]
    Conflict(String),
    /// The request, or the record it would make, is larger than its limit.
    #[error("{0}")]
    TooLarge(String),
    /// The engine cannot serve this now; retrying may succeed.
    #[error("{0}")]
    Busy(String),
    /// The host has run out of space.
    #[error("{0}")]
    NoSpace(String),
    /// A host operation failed (a bug in Pier or a broken host, not the caller's fault).
    #[error("{operation} {}: {source}", path.display())]
    Host {
        operation: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A bug in Pier.
    #[error("{0}")]
    Internal(String),
    /// A container that could not start, with the exit code Docker reports for it.
    #[error("{error}")]
    Exited {
        error: Box<EngineError>,
        exit_code: i32,
    },
}

/// The engine's result type.
pub type EngineResult<T> = Result<T, EngineError>;

/// [`EngineError::Conflict`] with message `m`.
pub fn conflict(m: impl Into<String>) -> EngineError {
    EngineError::Conflict(m.into())
}

/// [`EngineError::Invalid`] with message `m`.
pub fn invalid(m: impl Into<String>) -> EngineError {
    EngineError::Invalid(m.into())
}

/// [`EngineError::Internal`] with message `m`.
pub fn internal(m: impl Into<String>) -> EngineError {
    EngineError::Internal(m.into())
}

impl EngineError {
    /// An error of the class `kind`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        let m = message.into();
        match kind {
            ErrorKind::InvalidInput => EngineError::Invalid(m),
            ErrorKind::NotFound => EngineError::NotFound(m),
            ErrorKind::Conflict => EngineError::Conflict(m),
            ErrorKind::TooLarge => EngineError::TooLarge(m),
            ErrorKind::Unavailable => EngineError::Busy(m),
            ErrorKind::InsufficientStorage => EngineError::NoSpace(m),
            ErrorKind::Internal => EngineError::Internal(m),
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        EngineError::Invalid(message.into())
    }

    /// A failed host operation on `path`; a full disk is [`EngineError::NoSpace`].
    pub fn host(operation: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        let path = path.into();
        if matches!(source.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT)) {
            return EngineError::NoSpace(format!(
                "{operation} {}: {source}; free space on the host and retry",
                path.display()
            ));
        }
        EngineError::Host {
            operation,
            path,
            source,
        }
    }

    /// Adds the exit code Docker would report for a container that could not start.
    pub fn with_exit_code(self, exit_code: i32) -> Self {
        EngineError::Exited {
            error: Box::new(self),
            exit_code,
        }
    }

    /// The class of this error, which each wire protocol maps to its status code.
    pub fn kind(&self) -> ErrorKind {
        match self {
            EngineError::Invalid(_) => ErrorKind::InvalidInput,
            EngineError::NotFound(_) => ErrorKind::NotFound,
            EngineError::Conflict(_) => ErrorKind::Conflict,
            EngineError::TooLarge(_) => ErrorKind::TooLarge,
            EngineError::Busy(_) => ErrorKind::Unavailable,
            EngineError::NoSpace(_) => ErrorKind::InsufficientStorage,
            EngineError::Host { .. } | EngineError::Internal(_) => ErrorKind::Internal,
            EngineError::Exited { error, .. } => error.kind(),
        }
    }

    /// The exit code of a container that could not start, if that is what this is.
    pub fn exit_code(&self) -> Option<i32> {
        match self {
            EngineError::Exited { exit_code, .. } => Some(*exit_code),
            _ => None,
        }
    }

    /// The message a client sees (with the sources of a host failure).
    pub fn message(&self) -> String {
        pier_api::error::chain(self)
    }
}

impl From<ImageError> for EngineError {
    fn from(e: ImageError) -> Self {
        EngineError::new(e.kind(), e.chain())
    }
}

impl From<pier_store::StoreError> for EngineError {
    fn from(e: pier_store::StoreError) -> Self {
        ImageError::from(e).into()
    }
}

impl From<tokio::task::JoinError> for EngineError {
    fn from(e: tokio::task::JoinError) -> Self {
        EngineError::Internal(format!("an engine task failed: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_through_new() {
        for kind in [
            ErrorKind::InvalidInput,
            ErrorKind::NotFound,
            ErrorKind::Conflict,
            ErrorKind::TooLarge,
            ErrorKind::Unavailable,
            ErrorKind::InsufficientStorage,
            ErrorKind::Internal,
        ] {
            let e = EngineError::new(kind, "m");
            assert_eq!(e.kind(), kind);
            assert_eq!(e.message(), "m");
            assert_eq!(e.exit_code(), None);
        }
    }

    #[test]
    fn exit_code_keeps_the_class() {
        let e = EngineError::Conflict("gone".into()).with_exit_code(127);
        assert_eq!(e.kind(), ErrorKind::Conflict);
        assert_eq!(e.exit_code(), Some(127));
        assert_eq!(e.message(), "gone");
    }

    #[test]
    fn full_disk_is_no_space_and_other_host_errors_are_internal() {
        let e = EngineError::host("write", "/x", io::Error::from_raw_os_error(libc::ENOSPC));
        assert_eq!(e.kind(), ErrorKind::InsufficientStorage);
        let e = EngineError::host("write", "/x", io::Error::from_raw_os_error(libc::EIO));
        assert_eq!(e.kind(), ErrorKind::Internal);
        assert!(e.message().starts_with("write /x: "), "{}", e.message());
    }
}
