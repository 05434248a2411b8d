//! The durable pins containers hold on their images, as the engine keeps them.
//!
//! The image store never reads the containers table: an image in use is one with a pin
//! (`Table::ImageUsers`, see [`ImageStore::pin_for`]). A container's pin is written in the
//! transaction that writes its first record and deleted in the one that deletes it
//! (`containers.rs`: `save_pinned`, `remove_locked`), so that neither exists without the
//! other. [`reconcile`] makes that true of a store an older Pier wrote (its containers have
//! no pins), and of anything else that broke it, when the engine opens.

use std::collections::BTreeSet;

use pier_api::{Digest, ProjectName};
use pier_image::store::{container_holder, DurablePin};
use pier_image::ImageStore;
use pier_store::{Batch, Store, StoreExt, Table};
use serde::Deserialize;

use crate::error::EngineResult;

/// The fields of a stored container record (a `ContainerInspect`) a pin needs.
#[derive(Deserialize)]
struct Held {
    id: String,
    project: ProjectName,
    image_id: Digest,
}

/// What [`reconcile`] changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// Instances whose image was not pinned (made by an older Pier).
    pub pinned: usize,
    /// Container pins whose container has no record.
    pub unpinned: usize,
}

/// Pins the image of every container that has a record, and drops the container pins of
/// containers that have none, in one transaction (none if nothing is amiss). Idempotent;
/// a crash leaves the store as it was before or after. Runs before any request does.
pub fn reconcile(db: &dyn Store, images: &ImageStore) -> EngineResult<Reconciled> {
    let pins: BTreeSet<DurablePin> = images
        .durable_pins()?
        .into_iter()
        .filter(|p| p.holder.starts_with(&container_holder("")))
        .collect();
    let mut wanted = BTreeSet::new();
    for (_, c) in db.list_json::<Held>(Table::Containers, "")? {
        wanted.insert(DurablePin {
            project: c.project,
            image: c.image_id,
            holder: container_holder(&c.id),
        });
    }
    let mut b = Batch::new();
    let mut done = Reconciled::default();
    for p in wanted.difference(&pins) {
        images.pin_for(&mut b, &p.project, &p.image, &p.holder);
        done.pinned += 1;
    }
    for p in pins.difference(&wanted) {
        images.unpin_for(&mut b, &p.project, &p.image, &p.holder);
        done.unpinned += 1;
    }
    if done != Reconciled::default() {
        b.commit(db)?;
        tracing::info!(
            pinned = done.pinned,
            unpinned = done.unpinned,
            "brought the pins of container images in line with the containers"
        );
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use pier_api::containers::ContainerInspect;
    use pier_api::ImageRef;
    use pier_image::ImageError;
    use pier_store::MemStore;

    use super::*;

    fn record(id: &str, image: &Digest) -> ContainerInspect {
        ContainerInspect {
            id: id.into(),
            name: format!("n-{id}"),
            project: ProjectName::default(),
            image: "app:1".into(),
            image_id: image.clone(),
            created: String::new(),
            command: vec!["true".into()],
            config: Default::default(),
            state: Default::default(),
            log_path: String::new(),
            networks: Default::default(),
            ports: Vec::new(),
            mounts: Vec::new(),
            vm: None,
        }
    }

    #[test]
    fn containers_of_an_older_pier_get_their_pins_once_and_stale_pins_go() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(MemStore::default());
        let images = ImageStore::open(dir.path(), db.clone()).unwrap();
        let p = ProjectName::default();
        let tar = pier_archive::testing::craft(&[("bin/x", tar::EntryType::Regular, b"#!")]);
        let name: ImageRef = "app:1".parse().unwrap();
        let id = pier_image::build::import(&images, &p, &tar[..], Some(name))
            .unwrap()
            .id;
        // A container as an older Pier recorded it (the engine stores a
        // `ContainerInspect`), with no pin; and a pin whose container is gone.
        let mut b = Batch::new();
        b.put_json(Table::Containers, "default/c0ffee", &record("c0ffee", &id));
        images.pin_for(&mut b, &p, &id, &container_holder("gone"));
        images.pin_for(&mut b, &p, &id, "vm/v1");
        b.commit(db.as_ref()).unwrap();

        let done = reconcile(db.as_ref(), &images).unwrap();
        assert_eq!(
            done,
            Reconciled {
                pinned: 1,
                unpinned: 1
            }
        );
        let mut holders = images.holders(&p, &id).unwrap();
        holders.sort();
        assert_eq!(
            holders,
            vec![container_holder("c0ffee"), "vm/v1".to_string()]
        );
        let err = images.remove(&p, "app:1", false).unwrap_err();
        assert!(matches!(err, ImageError::InUse { .. }), "{err}");
        assert!(err.to_string().contains("c0ffee"), "{err}");

        // Again: nothing to do, nothing written.
        let rev = db.revision().unwrap();
        assert_eq!(
            reconcile(db.as_ref(), &images).unwrap(),
            Reconciled::default()
        );
        assert_eq!(db.revision().unwrap(), rev);
    }
}
