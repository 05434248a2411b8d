//! Garbage collection of registry blobs, safe while pushes run.
//!
//! Mark and sweep run under the image store's exclusive guard. Every operation that adds
//! a blob link or a manifest holds the same guard shared and checks what it references
//! inside it (see [`crate::repo`]), so a collection sees a push's manifest whole or not
//! at all:
//!
//! 1. Mark: for each repository, the digests its manifests reference (the manifest
//!    itself, config, layers, child manifests).
//! 2. Unlink: a blob link no manifest of its repository references is removed, unless
//!    it is younger than the grace period. That is the lease that protects pushes in
//!    flight: a client uploads blobs first and the manifest last, so a blob uploaded a
//!    moment ago is about to be referenced.
//! 3. Sweep: [`pier_image::ImageStore::sweep`] removes blob files that neither an engine
//!    image nor any remaining link names.
//!
//! A manifest pushed after the collection has checked, under the guard, that each blob it
//! names is still linked; if a (stale) blob was collected, the push fails with
//! MANIFEST_BLOB_UNKNOWN and the client uploads it again. So no manifest ever references
//! a missing blob. Idle upload sessions older than the grace period are dropped too.

use std::collections::BTreeSet;
use std::time::Duration;

use pier_api::registry::RegistryGcReport;
use pier_store::{Batch, StoreExt, Table};

use crate::error::Result;
use crate::repo::{link_key, BlobLink};
use crate::Registry;

impl Registry {
    pub fn collect_garbage(&self, grace: Duration) -> Result<RegistryGcReport> {
        self.uploads().purge(grace.max(Duration::from_secs(60)));
        let cutoff = pier_api::time::now_unix() - grace.as_secs() as i64;
        let guard = self.images.exclusive();
        let mut marked = BTreeSet::new();
        for repo in self.repositories()? {
            for (d, m) in self.manifests(&repo)? {
                marked.insert(link_key(&repo, &d));
                for b in m.blobs.iter().chain(&m.children) {
                    marked.insert(link_key(&repo, &b.digest));
                }
            }
        }
        let mut batch = Batch::new();
        let mut unlinked = 0;
        for (key, link) in self.db().list_json::<BlobLink>(Table::RegistryBlobs, "")? {
            if !marked.contains(&key) && link.added <= cutoff {
                batch.delete(Table::RegistryBlobs, key);
                unlinked += 1;
            }
        }
        batch.commit(self.db())?;
        let reclaimed_bytes = self.images.sweep(&guard)?;
        Ok(RegistryGcReport {
            unlinked,
            reclaimed_bytes,
        })
    }
}
