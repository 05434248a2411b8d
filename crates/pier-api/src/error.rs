//! The error shape of the native API and its one mapping to HTTP status codes.
//!
//! Policy (see ARCHITECTURE.md): 400 bad input, 404 missing, 409 a conflict with the
//! current state, 413 a request (or what it would store) over its size limit, 503 try
//! again later, 507 out of capacity (disk), 500 a bug in Pier.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What kind of failure an error is; decides the HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The request was malformed or named something invalid.
    InvalidInput,
    /// The named resource does not exist.
    NotFound,
    /// The request conflicts with the resource's current state.
    Conflict,
    /// The request's body, or the record it would make, is larger than its limit.
    TooLarge,
    /// The engine cannot serve this now; retrying may succeed.
    Unavailable,
    /// Out of capacity: the host has run out of space, or no host of the pool fits a
    /// placement.
    InsufficientStorage,
    /// A bug in Pier.
    Internal,
}

impl ErrorKind {
    /// The HTTP status code this kind maps to.
    pub fn status(self) -> u16 {
        match self {
            ErrorKind::InvalidInput => 400,
            ErrorKind::NotFound => 404,
            ErrorKind::Conflict => 409,
            ErrorKind::TooLarge => 413,
            ErrorKind::Unavailable => 503,
            ErrorKind::InsufficientStorage => 507,
            ErrorKind::Internal => 500,
        }
    }

    /// The kind an HTTP status code stands for, for clients reading an error back.
    pub fn from_status(status: u16) -> Self {
        match status {
            400 => ErrorKind::InvalidInput,
            404 => ErrorKind::NotFound,
            409 => ErrorKind::Conflict,
            413 => ErrorKind::TooLarge,
            503 => ErrorKind::Unavailable,
            507 => ErrorKind::InsufficientStorage,
            _ => ErrorKind::Internal,
        }
    }
}

/// The JSON body of every error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub kind: ErrorKind,
    /// What was wrong and what to do about it.
    pub message: String,
    /// For a container that could not start: the exit code Docker reports (126 cannot
    /// invoke, 127 not found).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
}

/// An error's message followed by those of its sources (`a: b: c`), for users: every
/// crate's `chain()` (and the engine's `message()`) is this.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(e) = src {
        s.push_str(": ");
        s.push_str(&e.to_string());
        src = e.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_round_trips_for_every_kind() {
        for kind in [
            ErrorKind::InvalidInput,
            ErrorKind::NotFound,
            ErrorKind::Conflict,
            ErrorKind::TooLarge,
            ErrorKind::Unavailable,
            ErrorKind::InsufficientStorage,
            ErrorKind::Internal,
        ] {
            assert_eq!(ErrorKind::from_status(kind.status()), kind);
        }
        assert_eq!(ErrorKind::from_status(418), ErrorKind::Internal);
    }

    #[test]
    fn a_chain_names_every_source() {
        let inner = std::io::Error::other("disk on fire");
        let outer = std::io::Error::other(Wrapped(inner));
        assert_eq!(chain(&outer), "cannot write: disk on fire");
        assert_eq!(chain(&std::io::Error::other("alone")), "alone");
    }

    #[derive(Debug)]
    struct Wrapped(std::io::Error);
    impl std::fmt::Display for Wrapped {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("cannot write")
        }
    }
    impl std::error::Error for Wrapped {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }
}
