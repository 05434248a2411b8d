//! The image store's errors, each saying what was wrong and what to do.

use std::io;
use std::path::Path;

use pier_api::{Digest, ErrorKind};
use pier_archive::is_disk_full;
use pier_archive::unpack::UnpackError;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("no such image: {reference}; `pier images` lists the images there are")]
    NotFound { reference: String },
    #[error(transparent)]
    InvalidReference(#[from] pier_api::reference::RefError),
    #[error("image {id} is used by container(s) {containers}; remove them first or use --force")]
    InUse { id: String, containers: String },
    #[error("image {id} has several tags ({tags}); remove a tag by name, or use --force to remove the image")]
    SeveralTags { id: String, tags: String },
    #[error("the archive is not a valid image archive: {0}")]
    Archive(String),
    #[error("layer {layer} cannot be unpacked")]
    Unpack {
        layer: String,
        #[source]
        source: UnpackError,
    },
    #[error(
        "{what} should have digest {expected} but has {actual}; the data is corrupt or was changed"
    )]
    DigestMismatch {
        what: String,
        expected: Digest,
        actual: Digest,
    },
    #[error("blob {digest} is missing from the image store; remove the image and load it again")]
    MissingBlob { digest: Digest },
    #[error("the disk holding {path} is full; free space (`pier image prune`) and try again")]
    DiskFull { path: String },
    #[error("cannot build an image from host file {path}: {reason}")]
    FromHost { path: String, reason: String },
    #[error("cannot {op} {path}")]
    Io {
        op: &'static str,
        path: String,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Store(#[from] pier_store::StoreError),
}

impl ImageError {
    /// How the API reports this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ImageError::NotFound { .. } => ErrorKind::NotFound,
            ImageError::InvalidReference(_)
            | ImageError::Archive(_)
            | ImageError::DigestMismatch { .. }
            | ImageError::FromHost { .. } => ErrorKind::InvalidInput,
            ImageError::Unpack { source, .. } => match source {
                UnpackError::DiskFull { .. } => ErrorKind::InsufficientStorage,
                UnpackError::Io { .. } => ErrorKind::Internal,
                _ => ErrorKind::InvalidInput,
            },
            ImageError::InUse { .. } | ImageError::SeveralTags { .. } => ErrorKind::Conflict,
            ImageError::DiskFull { .. } => ErrorKind::InsufficientStorage,
            ImageError::MissingBlob { .. } | ImageError::Io { .. } | ImageError::Store(_) => {
                ErrorKind::Internal
            }
        }
    }

    /// The full message with its chain of causes, for users.
    pub fn chain(&self) -> String {
        pier_api::error::chain(self)
    }
}

/// Maps an I/O error on `path` while doing `op`; a full disk gets its own variant.
pub fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> ImageError + 'a {
    move |source| {
        if is_disk_full(&source) {
            ImageError::DiskFull {
                path: path.display().to_string(),
            }
        } else {
            ImageError::Io {
                op,
                path: path.display().to_string(),
                source,
            }
        }
    }
}
