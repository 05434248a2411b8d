//! Pier's OCI image store.
//!
//! - [`blobs`]: content-addressed blobs, verified on write and on read.
//! - [`compression`]: how layer blobs are compressed, and reading them plain (the safe
//!   unpacking of what comes out is `pier-archive`'s, shared with the CLI).
//! - [`store`]: images, tags and layers: the records in the state store and the files
//!   under the image root, kept consistent across crashes.
//! - [`archive`]: `docker save` and OCI archives in and out.
//! - [`build`]: images made here: a flat rootfs import, an image from host binaries, and
//!   the images of Dockerfile build steps.
//! - [`dockerfile`]: the Dockerfile language (parser, variable substitution) and the build
//!   context (its `.dockerignore` rules are `pier-archive`'s); the daemon's builder runs
//!   what it parses.
//!
//! On disk, under the image root:
//! ```text
//! oci/            an OCI image layout: oci-layout, index.json, blobs/sha256/<hex>
//! layers/<hex>/   each layer unpacked once, named by its diff ID, shared by every image
//! tmp/            scratch space; emptied at start
//! ```

pub mod archive;
pub mod blobs;
pub mod build;
pub mod compression;
pub mod dockerfile;
pub mod error;
pub mod store;

pub use error::ImageError;
pub use store::ImageStore;
