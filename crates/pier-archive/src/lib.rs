//! Tar trees handled safely, on both sides of the socket: what the daemon unpacks (image
//! layers, build contexts, `ADD` archives, volume imports) and what the CLI unpacks and
//! sends (`pier cp`, `pier build`'s context). Small on purpose: the CLI links it, so it
//! holds no image store, state store or OCI types, and no decompressors (those are
//! `pier_image::compression`'s).
//!
//! - [`unpack`]: safe unpacking of (hostile) tar streams into a directory.
//! - [`ignore`]: path patterns: `COPY` source globs and `.dockerignore` rules.
//! - [`testing`]: hostile archives for tests, which well-behaved tools refuse to write.

pub mod ignore;
pub mod testing;
pub mod unpack;

/// Whether `e` says the disk (or a quota on it) is full.
pub fn is_disk_full(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    )
}
