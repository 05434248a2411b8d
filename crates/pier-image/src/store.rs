//! Images, tags and layers: records in the state store, files under the image root.
//!
//! Crash safety rests on one ordering: files first (blobs synced and renamed into place,
//! layers unpacked into a scratch directory and renamed), records last, in one atomic
//! store commit. A crash before the commit leaves only unreferenced files, which
//! [`ImageStore::open`] removes; a crash after it leaves a complete image. Nothing
//! half-made is ever visible.
//!
//! Concurrency: operations that add content hold `gc` for reading; removal and garbage
//! collection hold it for writing, so a collection never deletes what a load in flight has
//! written but not yet committed.
//!
//! The registry (`pier-registry`) keeps its blobs in this same blob store: a blob linked to
//! a registry repository (`Table::RegistryBlobs`) is a root for garbage collection here,
//! exactly like a blob an image names, so a layer the engine and the registry both hold is
//! stored once and neither side's collection takes it from the other.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use pier_api::types::{
    HistoryEntry, ImageInspect, ImageSummary, LayerInfo, LoadedImage, PruneReport, RemoveReport,
};
use pier_api::{Digest, ImageRef, ProjectName};
use pier_archive::unpack::{self, Limits};
use pier_store::{Batch, Store, StoreExt, Table};
use serde::{Deserialize, Serialize};

use crate::blobs::{BlobStore, HashingReader};
use crate::compression::{self, Compression};
use crate::error::{io_err, ImageError};

/// The largest manifest or config Pier reads.
pub const MAX_METADATA_BLOB: u64 = 4 << 20;

/// An image as recorded in the store, under `project/<id hex>`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageRecord {
    /// The config digest, which is the image ID.
    pub id: Digest,
    pub project: ProjectName,
    pub manifest_digest: Digest,
    pub manifest_media_type: String,
    pub layers: Vec<LayerInfo>,
    pub created: Option<String>,
    /// When this store first got the image.
    pub added: String,
    /// For an image a Dockerfile build step made: what it was made from and how.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<BuildLink>,
    /// `repository@manifest-digest` of each registry repository the image was pulled
    /// from or pushed to (Docker's `RepoDigests`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repo_digests: Vec<String>,
}

/// How a build step made an image: the build cache looks images up by it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildLink {
    /// The image the step ran on (none for a step on `FROM scratch`).
    pub parent: Option<Digest>,
    /// The step's cache key: a digest of the instruction after substitution, and of the
    /// files it copied or the build arguments it ran with.
    pub cache_key: String,
}

impl ImageRecord {
    pub fn size(&self) -> u64 {
        self.layers.iter().map(|l| l.size).sum()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct TagRecord {
    image: Digest,
}

/// An unpacked layer, under its diff ID's hex.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct LayerRecord {
    diff_id: Digest,
    size: u64,
}

/// What an archive loader or builder hands to [`ImageStore::commit_image`]. The manifest,
/// config and layer blobs must already be in the blob store, and the layers unpacked.
#[derive(Debug, Clone)]
pub struct NewImage {
    pub manifest_digest: Digest,
    pub manifest_media_type: String,
    pub config_digest: Digest,
    pub layers: Vec<LayerInfo>,
    pub created: Option<String>,
    pub tags: Vec<ImageRef>,
    /// Set for the images of build steps.
    pub build: Option<BuildLink>,
}

/// Keeps an image from being removed by `prune` (and by `rm` without force) while a
/// build uses it; released on drop. A transient pin, in memory: it ends with the process.
/// What outlives the process (a container's image) is pinned durably instead, in the
/// store (see [`ImageStore::pin_for`]).
#[derive(Debug)]
pub struct ImagePin {
    pins: Arc<Mutex<HashMap<Digest, usize>>>,
    id: Digest,
}

impl ImagePin {
    pub fn id(&self) -> &Digest {
        &self.id
    }
}

impl Drop for ImagePin {
    fn drop(&mut self) {
        let mut pins = self.pins.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = pins.get_mut(&self.id) {
            *n -= 1;
            if *n == 0 {
                pins.remove(&self.id);
            }
        }
    }
}

/// The image store of one host.
pub struct ImageStore {
    layout: PathBuf,
    layers_dir: PathBuf,
    tmp: PathBuf,
    blobs: BlobStore,
    db: Arc<dyn Store>,
    gc: RwLock<()>,
    limits: Limits,
    /// Images builds in progress hold (see [`ImagePin`]).
    pins: Arc<Mutex<HashMap<Digest, usize>>>,
}

impl std::fmt::Debug for ImageStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageStore")
            .field("layout", &self.layout)
            .finish()
    }
}

fn image_key(project: &ProjectName, id: &Digest) -> String {
    format!("{project}/{}", id.hex())
}

fn tag_key(project: &ProjectName, r: &ImageRef) -> Option<String> {
    r.tagged_key().map(|k| format!("{project}/{k}"))
}

/// The holder name of a durable pin a container holds (see [`ImageStore::pin_for`]).
pub fn container_holder(container_id: &str) -> String {
    format!("{CONTAINER_HOLDER}{container_id}")
}

const CONTAINER_HOLDER: &str = "container/";

/// A durable pin: `holder` (e.g. `container/<id>`) uses `image` in `project`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct DurablePin {
    pub project: ProjectName,
    pub image: Digest,
    pub holder: String,
}

/// The value of a durable pin: the image again, so that a key need not be parsed back.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PinRecord {
    image: Digest,
}

/// `project/<image hex>/holder` in `Table::ImageUsers`.
fn pin_key(project: &ProjectName, id: &Digest, holder: &str) -> String {
    format!("{project}/{}/{holder}", id.hex())
}

/// How a holder is named in messages: a container by its ID, anything else as it is.
fn shown_holder(holder: &str) -> String {
    holder
        .strip_prefix(CONTAINER_HOLDER)
        .unwrap_or(holder)
        .to_string()
}

impl ImageStore {
    /// Opens the store under `root`, removing whatever a crash left half-made.
    pub fn open(root: &Path, db: Arc<dyn Store>) -> Result<Self, ImageError> {
        let layout = root.join("oci");
        let layers_dir = root.join("layers");
        let tmp = root.join("tmp");
        if tmp.exists() {
            remove_tree(&tmp)?;
        }
        for d in [&layout, &layers_dir, &tmp] {
            fs::create_dir_all(d).map_err(io_err("create", d))?;
        }
        let oci_layout = layout.join("oci-layout");
        if !oci_layout.exists() {
            write_atomic(&oci_layout, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        }
        let blobs = BlobStore::new(&layout, &tmp)?;
        let store = ImageStore {
            layout,
            layers_dir,
            tmp,
            blobs,
            db,
            gc: RwLock::new(()),
            limits: Limits::default(),
            pins: Arc::default(),
        };
        let reclaimed = store.collect_garbage()?;
        if reclaimed > 0 {
            tracing::info!(
                reclaimed,
                "removed image files no image referenced (left by an interrupted operation)"
            );
        }
        store.write_index()?;
        Ok(store)
    }

    pub fn blobs(&self) -> &BlobStore {
        &self.blobs
    }

    /// A fresh scratch directory, removed when dropped.
    pub fn scratch(&self) -> Result<tempfile::TempDir, ImageError> {
        tempfile::Builder::new()
            .prefix("op-")
            .tempdir_in(&self.tmp)
            .map_err(io_err("create a directory in", &self.tmp))
    }

    /// The directory holding a layer's unpacked content (an overlayfs lower dir).
    pub fn layer_dir(&self, diff_id: &Digest) -> PathBuf {
        self.layers_dir.join(diff_id.hex())
    }

    /// Holds off garbage collection while content is added.
    pub fn adding(&self) -> std::sync::RwLockReadGuard<'_, ()> {
        self.gc.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Excludes every operation that adds content, for a collection that first changes
    /// the records (the registry's) and then sweeps with [`ImageStore::sweep`].
    pub fn exclusive(&self) -> std::sync::RwLockWriteGuard<'_, ()> {
        self.gc.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Removes blobs and layers nothing references, under a guard from
    /// [`ImageStore::exclusive`]. Returns bytes freed.
    pub fn sweep(&self, _guard: &std::sync::RwLockWriteGuard<'_, ()>) -> Result<u64, ImageError> {
        self.collect_garbage_locked()
    }

    /// The scratch directory (same filesystem as the blobs; emptied at start).
    pub fn tmp_dir(&self) -> &Path {
        &self.tmp
    }

    /// The state store this image store keeps its records in.
    pub fn db(&self) -> &Arc<dyn Store> {
        &self.db
    }

    /// Runs `op`, which adds content; if it fails, removes whatever files it left that no
    /// committed image references, so a failed operation leaves the store as it was.
    pub fn undo_on_error<T>(
        &self,
        op: impl FnOnce() -> Result<T, ImageError>,
    ) -> Result<T, ImageError> {
        let r = op();
        if r.is_err() {
            if let Err(e) = self.collect_garbage() {
                tracing::warn!(error = %e.chain(), "cleaning up after a failed image operation");
            }
        }
        r
    }

    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    // ---- reading ----------------------------------------------------------------------

    fn images(&self, project: &ProjectName) -> Result<Vec<ImageRecord>, ImageError> {
        Ok(self
            .db
            .list_json::<ImageRecord>(Table::Images, &format!("{project}/"))?
            .into_iter()
            .map(|(_, r)| r)
            .collect())
    }

    /// Tags of every image in `project`, by image ID.
    fn tags_by_image(
        &self,
        project: &ProjectName,
    ) -> Result<HashMap<Digest, Vec<ImageRef>>, ImageError> {
        let prefix = format!("{project}/");
        let mut out: HashMap<Digest, Vec<ImageRef>> = HashMap::new();
        for (key, rec) in self.db.list_json::<TagRecord>(Table::Tags, &prefix)? {
            if let Ok(r) = key[prefix.len()..].parse::<ImageRef>() {
                out.entry(rec.image).or_default().push(r);
            }
        }
        Ok(out)
    }

    /// The holders of durable pins on image `id` in `project` (see
    /// [`ImageStore::pin_for`]), in key order.
    pub fn holders(&self, project: &ProjectName, id: &Digest) -> Result<Vec<String>, ImageError> {
        let prefix = format!("{project}/{}/", id.hex());
        Ok(self
            .db
            .list(Table::ImageUsers, &prefix)?
            .into_iter()
            .map(|(k, _)| k[prefix.len()..].to_string())
            .collect())
    }

    /// The users of image `id` that keep it from going, as messages name them: its
    /// durable holders (a container by its ID), and a build in progress.
    fn users(&self, project: &ProjectName, id: &Digest) -> Result<Vec<String>, ImageError> {
        let mut users: Vec<String> = self
            .holders(project, id)?
            .iter()
            .map(|h| shown_holder(h))
            .collect();
        if self.is_pinned(id) {
            users.push("(a build in progress)".into());
        }
        Ok(users)
    }

    /// Every durable pin of every project.
    pub fn durable_pins(&self) -> Result<Vec<DurablePin>, ImageError> {
        let mut out = Vec::new();
        for (key, rec) in self.db.list_json::<PinRecord>(Table::ImageUsers, "")? {
            let mut parts = key.splitn(3, '/');
            let (Some(project), Some(_), Some(holder)) = (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let Ok(project) = ProjectName::try_from(project.to_string()) else {
                continue;
            };
            out.push(DurablePin {
                project,
                image: rec.image,
                holder: holder.to_string(),
            });
        }
        Ok(out)
    }

    /// Adds to `batch` a durable pin of image `id` for `holder` (for a container,
    /// [`container_holder`]): while any pin holds it, the image is not pruned, and `rm`
    /// refuses it without force (with force, it loses its tags and stays). The holder's
    /// owner writes the pin in the transaction that records the holder, and deletes it
    /// ([`ImageStore::unpin_for`]) in the one that deletes it, so that neither is ever
    /// found without the other. Pinning twice is pinning once.
    pub fn pin_for(&self, batch: &mut Batch, project: &ProjectName, id: &Digest, holder: &str) {
        batch.put_json(
            Table::ImageUsers,
            pin_key(project, id, holder),
            &PinRecord { image: id.clone() },
        );
    }

    /// Adds to `batch` the removal of `holder`'s durable pin on image `id`, if any.
    pub fn unpin_for(&self, batch: &mut Batch, project: &ProjectName, id: &Digest, holder: &str) {
        batch.delete(Table::ImageUsers, pin_key(project, id, holder));
    }

    /// Finds an image by reference (`name[:tag]`, `name@digest`), by ID, or by a unique ID
    /// prefix, as Docker does.
    pub fn resolve(
        &self,
        project: &ProjectName,
        reference: &str,
    ) -> Result<ImageRecord, ImageError> {
        Ok(self.resolve_tagged(project, reference)?.0)
    }

    /// Like [`ImageStore::resolve`], and also returns the tag when the image was found by
    /// one.
    pub fn resolve_tagged(
        &self,
        project: &ProjectName,
        reference: &str,
    ) -> Result<(ImageRecord, Option<ImageRef>), ImageError> {
        let not_found = || ImageError::NotFound {
            reference: reference.to_string(),
        };
        let parsed = reference.parse::<ImageRef>();
        if let Ok(r) = &parsed {
            if let Some(key) = tag_key(project, r) {
                if let Some(tag) = self.db.get_json::<TagRecord>(Table::Tags, &key)? {
                    let rec = self.get(project, &tag.image)?.ok_or_else(not_found)?;
                    return Ok((rec, Some(r.clone())));
                }
            }
            if let Some(d) = r.digest() {
                if let Some(img) = self
                    .images(project)?
                    .into_iter()
                    .find(|i| &i.manifest_digest == d)
                {
                    return Ok((img, None));
                }
            }
        }
        let hex = reference.strip_prefix("sha256:").unwrap_or(reference);
        let is_id = !hex.is_empty()
            && hex.len() <= 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if is_id {
            let matches: Vec<_> = self
                .images(project)?
                .into_iter()
                .filter(|i| i.id.hex().starts_with(hex))
                .collect();
            match matches.len() {
                1 => return Ok((matches.into_iter().next().expect("one match"), None)),
                0 => {}
                _ => {
                    return Err(ImageError::Archive(format!(
                        "image ID prefix {reference:?} matches several images; give more digits"
                    )))
                }
            }
        }
        match parsed {
            Err(e) if !is_id => Err(e.into()),
            _ => Err(not_found()),
        }
    }

    fn get(&self, project: &ProjectName, id: &Digest) -> Result<Option<ImageRecord>, ImageError> {
        Ok(self.db.get_json(Table::Images, &image_key(project, id))?)
    }

    fn summary(
        &self,
        rec: &ImageRecord,
        tags: Option<&Vec<ImageRef>>,
    ) -> Result<ImageSummary, ImageError> {
        let mut repo_tags: Vec<String> = tags
            .map(|t| t.iter().map(|r| r.familiar()).collect())
            .unwrap_or_default();
        repo_tags.sort();
        Ok(ImageSummary {
            id: rec.id.clone(),
            project: rec.project.clone(),
            repo_tags,
            manifest_digest: rec.manifest_digest.clone(),
            repo_digests: rec.repo_digests.clone(),
            created: rec.created.clone(),
            size: rec.size(),
            containers: self
                .holders(&rec.project, &rec.id)?
                .iter()
                .filter(|h| h.starts_with(CONTAINER_HOLDER))
                .count() as u64,
        })
    }

    /// `pier images`: newest first, without the intermediate images of builds.
    pub fn list(&self, project: &ProjectName) -> Result<Vec<ImageSummary>, ImageError> {
        self.list_all(project, false)
    }

    /// `pier images [-a]`: with `all`, also the intermediate images of builds (untagged
    /// images another image was built on), which `docker images` hides too.
    pub fn list_all(
        &self,
        project: &ProjectName,
        all: bool,
    ) -> Result<Vec<ImageSummary>, ImageError> {
        let tags = self.tags_by_image(project)?;
        let images = self.images(project)?;
        let parents: BTreeSet<Digest> = images
            .iter()
            .filter_map(|r| r.build.as_ref()?.parent.clone())
            .collect();
        let mut out = images
            .iter()
            .filter(|r| {
                all || tags.get(&r.id).is_some_and(|t| !t.is_empty()) || !parents.contains(&r.id)
            })
            .map(|r| self.summary(r, tags.get(&r.id)))
            .collect::<Result<Vec<_>, _>>()?;
        out.sort_by(|a, b| b.created.cmp(&a.created).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    /// The image config (as stored) of an image.
    pub fn config(&self, rec: &ImageRecord) -> Result<serde_json::Value, ImageError> {
        let bytes = self.blobs.read_all(&rec.id, MAX_METADATA_BLOB)?;
        serde_json::from_slice(&bytes)
            .map_err(|e| ImageError::Archive(format!("stored config {} is not JSON: {e}", rec.id)))
    }

    pub fn inspect(
        &self,
        project: &ProjectName,
        reference: &str,
    ) -> Result<ImageInspect, ImageError> {
        let rec = self.resolve(project, reference)?;
        let tags = self.tags_by_image(project)?;
        let config = self.config(&rec)?;
        let field = |k: &str| {
            config
                .get(k)
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_string()
        };
        Ok(ImageInspect {
            summary: self.summary(&rec, tags.get(&rec.id))?,
            architecture: field("architecture"),
            os: field("os"),
            config: config
                .get("config")
                .cloned()
                .unwrap_or(serde_json::Value::Null),
            history: history_of(&config, &rec.layers),
            parent: rec.build.as_ref().and_then(|b| b.parent.clone()),
            layers: rec.layers,
        })
    }

    pub fn history(
        &self,
        project: &ProjectName,
        reference: &str,
    ) -> Result<Vec<HistoryEntry>, ImageError> {
        let rec = self.resolve(project, reference)?;
        let mut h = history_of(&self.config(&rec)?, &rec.layers);
        h.reverse(); // newest first, as `docker history` shows it
        Ok(h)
    }

    // ---- builds ------------------------------------------------------------------------

    /// Pins image `id` until the returned guard drops (see [`ImagePin`]).
    pub fn pin(&self, id: &Digest) -> ImagePin {
        *self
            .pins
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(id.clone())
            .or_default() += 1;
        ImagePin {
            pins: self.pins.clone(),
            id: id.clone(),
        }
    }

    fn is_pinned(&self, id: &Digest) -> bool {
        self.pins
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(id)
    }

    /// Like [`ImageStore::resolve`], and pins the image before a removal can take it.
    pub fn resolve_pinned(
        &self,
        project: &ProjectName,
        reference: &str,
    ) -> Result<(ImageRecord, ImagePin), ImageError> {
        let _g = self.adding();
        let rec = self.resolve(project, reference)?;
        let pin = self.pin(&rec.id);
        Ok((rec, pin))
    }

    /// The image a build step with `cache_key` made on `parent` before, if it is still
    /// here (the newest, if several), pinned.
    pub fn find_cached(
        &self,
        project: &ProjectName,
        parent: Option<&Digest>,
        cache_key: &str,
    ) -> Result<Option<(ImageRecord, ImagePin)>, ImageError> {
        let _g = self.adding();
        let found = self
            .images(project)?
            .into_iter()
            .filter(|r| {
                r.build
                    .as_ref()
                    .is_some_and(|b| b.cache_key == cache_key && b.parent.as_ref() == parent)
            })
            .max_by(|a, b| a.added.cmp(&b.added));
        Ok(found.map(|r| {
            let pin = self.pin(&r.id);
            (r, pin)
        }))
    }

    // ---- adding ------------------------------------------------------------------------

    /// Makes sure the layer in blob `blob` (moved in from `source` if given) is unpacked,
    /// and returns its description. `expected_diff_id`, when known, must match.
    pub fn add_layer(
        &self,
        blob: &Digest,
        source: Option<&Path>,
        expected_diff_id: Option<&Digest>,
    ) -> Result<LayerInfo, ImageError> {
        // The blob moves into the store only once its layer has unpacked, so a refused
        // layer leaves the store as it was.
        let stored = self.blobs.path(blob);
        let blob_path = source.map(Path::to_path_buf).unwrap_or(stored);
        let blob_size = fs::metadata(&blob_path)
            .map_err(|_| ImageError::MissingBlob {
                digest: blob.clone(),
            })?
            .len();
        let adopt = || match source {
            Some(src) => self.blobs.adopt(src, blob),
            None => Ok(()),
        };
        let mut head = [0u8; 4];
        let n = File::open(&blob_path)
            .and_then(|mut f| f.read(&mut head))
            .map_err(io_err("read", &blob_path))?;
        let compression = Compression::sniff(&head[..n]);

        if let Some(diff_id) = expected_diff_id {
            if let Some(rec) = self
                .db
                .get_json::<LayerRecord>(Table::Layers, diff_id.hex())?
            {
                if self.layer_dir(diff_id).is_dir() {
                    adopt()?;
                    return Ok(LayerInfo {
                        diff_id: diff_id.clone(),
                        blob_digest: blob.clone(),
                        media_type: compression.oci_media_type().into(),
                        blob_size,
                        size: rec.size,
                    });
                }
            }
        }

        let scratch = self.scratch()?;
        let dest = scratch.path().join("diff");
        fs::create_dir(&dest).map_err(io_err("create", &dest))?;
        let file = File::open(&blob_path).map_err(io_err("open", &blob_path))?;
        let reader = compression::decompressed(file).map_err(io_err("read", &blob_path))?;
        let mut hashing = HashingReader::new(reader);
        let layer_name = expected_diff_id.unwrap_or(blob).to_string();
        unpack::unpack_layer(&mut hashing, &dest, &self.limits).map_err(|source| {
            ImageError::Unpack {
                layer: layer_name.clone(),
                source,
            }
        })?;
        let (diff_id, size) = hashing.finish().map_err(|e| ImageError::Unpack {
            layer: layer_name.clone(),
            source: unpack::UnpackError::Corrupt(e),
        })?;
        if let Some(exp) = expected_diff_id {
            if *exp != diff_id {
                return Err(ImageError::DigestMismatch {
                    what: format!("layer {blob} (uncompressed)"),
                    expected: exp.clone(),
                    actual: diff_id,
                });
            }
        }
        let final_dir = self.layer_dir(&diff_id);
        if !final_dir.exists() {
            match fs::rename(&dest, &final_dir) {
                Ok(()) => {}
                Err(_) if final_dir.exists() => {} // another load unpacked it meanwhile
                Err(e) => return Err(io_err("move a layer to", &final_dir)(e)),
            }
        }
        adopt()?;
        Ok(LayerInfo {
            diff_id,
            blob_digest: blob.clone(),
            media_type: compression.oci_media_type().into(),
            blob_size,
            size,
        })
    }

    /// Records an image and points its tags at it, atomically.
    pub fn commit_image(
        &self,
        project: &ProjectName,
        new: NewImage,
    ) -> Result<LoadedImage, ImageError> {
        for d in [&new.manifest_digest, &new.config_digest]
            .into_iter()
            .chain(new.layers.iter().map(|l| &l.blob_digest))
        {
            if !self.blobs.contains(d) {
                return Err(ImageError::MissingBlob { digest: d.clone() });
            }
        }
        // Unpacked files reach the disk before the record that makes them visible.
        if let Ok(f) = File::open(&self.layers_dir) {
            let _ = rustix::fs::syncfs(&f);
        }
        let existing = self.get(project, &new.config_digest)?;
        let repo_digests = existing
            .as_ref()
            .map(|e| e.repo_digests.clone())
            .unwrap_or_default();
        let rec = ImageRecord {
            repo_digests,
            id: new.config_digest.clone(),
            project: project.clone(),
            manifest_digest: new.manifest_digest,
            manifest_media_type: new.manifest_media_type,
            layers: new.layers,
            created: new.created,
            build: new.build,
            added: existing
                .map(|e| e.added)
                .unwrap_or_else(pier_api::time::now_rfc3339),
        };
        let mut batch = Batch::new();
        batch.put_json(Table::Images, image_key(project, &rec.id), &rec);
        for l in &rec.layers {
            batch.put_json(
                Table::Layers,
                l.diff_id.hex(),
                &LayerRecord {
                    diff_id: l.diff_id.clone(),
                    size: l.size,
                },
            );
        }
        let mut repo_tags = Vec::new();
        for t in &new.tags {
            if let Some(key) = tag_key(project, t) {
                batch.put_json(
                    Table::Tags,
                    key,
                    &TagRecord {
                        image: rec.id.clone(),
                    },
                );
                repo_tags.push(t.familiar());
            }
        }
        batch.commit(self.db.as_ref())?;
        self.write_index()?;
        Ok(LoadedImage {
            id: rec.id,
            repo_tags,
        })
    }

    /// Records that image `id` is in a registry as `repo_digest` (`name@sha256:...`, the
    /// name in familiar form): after a pull from it or a push to it.
    pub fn add_repo_digest(
        &self,
        project: &ProjectName,
        id: &Digest,
        repo_digest: String,
    ) -> Result<(), ImageError> {
        let _g = self.adding();
        let Some(mut rec) = self.get(project, id)? else {
            return Ok(());
        };
        if rec.repo_digests.contains(&repo_digest) {
            return Ok(());
        }
        // One digest per repository, as Docker keeps: a newer push replaces the older.
        let repo = repo_digest
            .split('@')
            .next()
            .unwrap_or_default()
            .to_string();
        rec.repo_digests
            .retain(|d| d.split('@').next() != Some(repo.as_str()));
        rec.repo_digests.push(repo_digest);
        rec.repo_digests.sort();
        let mut b = Batch::new();
        b.put_json(Table::Images, image_key(project, &rec.id), &rec);
        b.commit(self.db.as_ref())?;
        Ok(())
    }

    /// `pier image tag SOURCE TARGET`.
    pub fn tag(
        &self,
        project: &ProjectName,
        source: &str,
        target: &ImageRef,
    ) -> Result<(), ImageError> {
        let _g = self.adding();
        let rec = self.resolve(project, source)?;
        let Some(key) = tag_key(project, target) else {
            return Err(ImageError::Archive(format!(
                "{target} has no tag to set; give TARGET as name:tag"
            )));
        };
        let mut b = Batch::new();
        b.put_json(Table::Tags, key, &TagRecord { image: rec.id });
        b.commit(self.db.as_ref())?;
        self.write_index()
    }

    // ---- removing ----------------------------------------------------------------------

    /// `pier image rm`: removes a tag, and the image once no tag is left, as Docker does.
    /// By ID, an image with several tags or used by containers needs `force`; with
    /// `force`, an image containers use loses its tags but stays until they are gone.
    pub fn remove(
        &self,
        project: &ProjectName,
        reference: &str,
        force: bool,
    ) -> Result<RemoveReport, ImageError> {
        let _g = self.gc.write().unwrap_or_else(|e| e.into_inner());
        let rec = self.resolve(project, reference)?;
        let tags = self
            .tags_by_image(project)?
            .remove(&rec.id)
            .unwrap_or_default();
        let users = self.users(project, &rec.id)?;
        let by_tag = reference
            .parse::<ImageRef>()
            .ok()
            .filter(|r| r.tag().is_some() && tags.iter().any(|t| t.tagged_key() == r.tagged_key()));

        let mut report = RemoveReport::default();
        let mut batch = Batch::new();
        let remaining: Vec<&ImageRef> = match &by_tag {
            Some(r) if tags.len() > 1 => {
                batch.delete(Table::Tags, tag_key(project, r).expect("tagged"));
                report.untagged.push(r.familiar());
                batch.commit(self.db.as_ref())?;
                self.write_index()?;
                return Ok(report);
            }
            _ => tags.iter().collect(),
        };
        if !users.is_empty() && !force {
            return Err(ImageError::InUse {
                id: rec.id.short().to_string(),
                containers: users.join(", "),
            });
        }
        if by_tag.is_none() && remaining.len() > 1 && !force {
            let names: Vec<String> = remaining.iter().map(|t| t.familiar()).collect();
            return Err(ImageError::SeveralTags {
                id: rec.id.short().to_string(),
                tags: names.join(", "),
            });
        }
        for t in remaining {
            batch.delete(Table::Tags, tag_key(project, t).expect("tagged"));
            report.untagged.push(t.familiar());
        }
        if users.is_empty() {
            batch.delete(Table::Images, image_key(project, &rec.id));
            report.deleted.push(rec.id.clone());
            // The untagged images a build made on the way go with it, as in Docker,
            // unless something else still needs them.
            let all = self.images(project)?;
            let tags = self.tags_by_image(project)?;
            let mut next = rec.build.as_ref().and_then(|b| b.parent.clone());
            while let Some(id) = next.take() {
                let Some(p) = all.iter().find(|r| r.id == id) else {
                    break;
                };
                let children = all
                    .iter()
                    .filter(|r| !report.deleted.contains(&r.id))
                    .filter(|r| r.build.as_ref().and_then(|b| b.parent.as_ref()) == Some(&id))
                    .count();
                let needed = children > 0
                    || tags.get(&id).is_some_and(|t| !t.is_empty())
                    || !self.users(project, &id)?.is_empty();
                if needed {
                    break;
                }
                batch.delete(Table::Images, image_key(project, &id));
                report.deleted.push(id.clone());
                next = p.build.as_ref().and_then(|b| b.parent.clone());
            }
        }
        batch.commit(self.db.as_ref())?;
        self.collect_garbage_locked()?;
        self.write_index()?;
        Ok(report)
    }

    /// `pier image prune`: removes untagged images no container uses (with `all`, every
    /// image no container uses), then the files nothing references.
    pub fn prune(&self, project: &ProjectName, all: bool) -> Result<PruneReport, ImageError> {
        self.prune_where(project, all, false, &|_| true)
    }

    /// [`prune`](Self::prune) of only the images `select` picks (Docker's `label` and
    /// `until` filters); the others are kept, and so are the images they were built on.
    pub fn prune_selected(
        &self,
        project: &ProjectName,
        all: bool,
        select: &dyn Fn(&ImageRecord) -> bool,
    ) -> Result<PruneReport, ImageError> {
        self.prune_where(project, all, false, select)
    }

    /// The build cache's part of a prune (`docker builder prune`): untagged images that
    /// build steps made and nothing keeps.
    pub fn prune_build_cache(&self, project: &ProjectName) -> Result<PruneReport, ImageError> {
        self.prune_where(project, false, true, &|_| true)
    }

    fn prune_where(
        &self,
        project: &ProjectName,
        all: bool,
        only_build_steps: bool,
        select: &dyn Fn(&ImageRecord) -> bool,
    ) -> Result<PruneReport, ImageError> {
        let _g = self.gc.write().unwrap_or_else(|e| e.into_inner());
        let tags = self.tags_by_image(project)?;
        let mut batch = Batch::new();
        let mut report = PruneReport::default();
        let images = self.images(project)?;
        // Kept: tagged images (unless `all`), images pinned (by containers, durably, or
        // by builds in progress), and the images builds made them from.
        let mut keep = BTreeSet::new();
        for rec in &images {
            let tagged = tags.get(&rec.id).is_some_and(|t| !t.is_empty());
            if (tagged && !all) || !self.users(project, &rec.id)?.is_empty() || !select(rec) {
                let mut cur = Some(rec);
                while let Some(r) = cur {
                    if !keep.insert(r.id.clone()) {
                        break;
                    }
                    let parent = r.build.as_ref().and_then(|b| b.parent.as_ref());
                    cur = parent.and_then(|p| images.iter().find(|i| &i.id == p));
                }
            }
        }
        for rec in images {
            // A committed image links to its parent without a cache key: not a build step.
            let build_step = rec.build.as_ref().is_some_and(|b| !b.cache_key.is_empty());
            if keep.contains(&rec.id) || (only_build_steps && !build_step) {
                continue;
            }
            for t in tags.get(&rec.id).into_iter().flatten() {
                batch.delete(Table::Tags, tag_key(project, t).expect("tagged"));
                report.untagged.push(t.familiar());
            }
            batch.delete(Table::Images, image_key(project, &rec.id));
            report.deleted.push(rec.id);
        }
        batch.commit(self.db.as_ref())?;
        report.reclaimed_bytes = self.collect_garbage_locked()?;
        self.write_index()?;
        Ok(report)
    }

    /// Removes blobs and unpacked layers no image references. Returns bytes freed.
    pub fn collect_garbage(&self) -> Result<u64, ImageError> {
        let _g = self.gc.write().unwrap_or_else(|e| e.into_inner());
        self.collect_garbage_locked()
    }

    fn collect_garbage_locked(&self) -> Result<u64, ImageError> {
        let mut blobs = BTreeSet::new();
        let mut layers = BTreeSet::new();
        // Blobs linked to a registry repository are roots too (keys `repository@digest`).
        for (key, _) in self.db.list(Table::RegistryBlobs, "")? {
            if let Some(d) = key.rsplit_once('@').and_then(|(_, d)| d.parse().ok()) {
                blobs.insert(d);
            }
        }
        for (_, rec) in self.db.list_json::<ImageRecord>(Table::Images, "")? {
            blobs.insert(rec.manifest_digest.clone());
            blobs.insert(rec.id.clone());
            for l in rec.layers {
                blobs.insert(l.blob_digest);
                layers.insert(l.diff_id.hex().to_string());
            }
        }
        let mut freed = 0;
        for d in self.blobs.list()? {
            if !blobs.contains(&d) {
                freed += self.blobs.remove(&d)?;
            }
        }
        let mut batch = Batch::new();
        for (key, rec) in self.db.list_json::<LayerRecord>(Table::Layers, "")? {
            if !layers.contains(&key) {
                freed += rec.size;
                batch.delete(Table::Layers, key);
            }
        }
        batch.commit(self.db.as_ref())?;
        for entry in fs::read_dir(&self.layers_dir).map_err(io_err("list", &self.layers_dir))? {
            let entry = entry.map_err(io_err("list", &self.layers_dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !layers.contains(&name) {
                remove_tree(&entry.path())?;
            }
        }
        Ok(freed)
    }

    /// Rewrites `oci/index.json` so the directory is a valid OCI layout listing every
    /// tagged image (readable by `skopeo copy oci:DIR:NAME ...`).
    fn write_index(&self) -> Result<(), ImageError> {
        let mut manifests = Vec::new();
        let mut tagged = BTreeSet::new();
        let mut all: BTreeMap<String, ImageRecord> = BTreeMap::new();
        for (key, rec) in self.db.list_json::<ImageRecord>(Table::Images, "")? {
            all.insert(key, rec);
        }
        let by_project_id: HashMap<(String, Digest), &ImageRecord> = all
            .values()
            .map(|r| ((r.project.to_string(), r.id.clone()), r))
            .collect();
        for (key, tag) in self.db.list_json::<TagRecord>(Table::Tags, "")? {
            let (project, name) = key.split_once('/').unwrap_or(("", &key));
            let Some(rec) = by_project_id.get(&(project.to_string(), tag.image.clone())) else {
                continue;
            };
            tagged.insert((project.to_string(), rec.id.clone()));
            manifests.push(self.index_entry(rec, Some(name))?);
        }
        for rec in all.values() {
            if !tagged.contains(&(rec.project.to_string(), rec.id.clone())) {
                manifests.push(self.index_entry(rec, None)?);
            }
        }
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": manifests,
        });
        write_atomic(
            &self.layout.join("index.json"),
            &serde_json::to_vec_pretty(&index).expect("json"),
        )
    }

    fn index_entry(
        &self,
        rec: &ImageRecord,
        name: Option<&str>,
    ) -> Result<serde_json::Value, ImageError> {
        let size = self.blobs.size(&rec.manifest_digest).unwrap_or(0);
        let mut v = serde_json::json!({
            "mediaType": rec.manifest_media_type,
            "digest": rec.manifest_digest,
            "size": size,
        });
        if let Some(n) = name {
            v["annotations"] = serde_json::json!({ "org.opencontainers.image.ref.name": n });
        }
        Ok(v)
    }
}

/// Builds history entries from an image config, pairing non-empty steps with layers.
fn history_of(config: &serde_json::Value, layers: &[LayerInfo]) -> Vec<HistoryEntry> {
    let mut layers_iter = layers.iter();
    let mut out = Vec::new();
    let str_of =
        |h: &serde_json::Value, k: &str| h.get(k).and_then(|v| v.as_str()).map(str::to_string);
    for h in config
        .get("history")
        .and_then(|h| h.as_array())
        .into_iter()
        .flatten()
    {
        let empty = h
            .get("empty_layer")
            .and_then(|v| v.as_bool())
            .unwrap_or(false);
        let layer = if empty { None } else { layers_iter.next() };
        out.push(HistoryEntry {
            layer: layer.map(|l| l.diff_id.clone()),
            created: str_of(h, "created"),
            created_by: str_of(h, "created_by").unwrap_or_default(),
            size: layer.map_or(0, |l| l.size),
            comment: str_of(h, "comment").unwrap_or_default(),
            empty_layer: empty,
        });
    }
    // Layers the history does not mention still show up.
    for l in layers_iter {
        out.push(HistoryEntry {
            layer: Some(l.diff_id.clone()),
            created: None,
            created_by: String::new(),
            size: l.size,
            comment: String::new(),
            empty_layer: false,
        });
    }
    out
}

/// Writes a file by rename, so readers see the old or the new content, never a part.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ImageError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io_err("create a file in", dir))?;
    io::Write::write_all(&mut tmp, bytes).map_err(io_err("write", path))?;
    tmp.as_file().sync_all().map_err(io_err("sync", path))?;
    tmp.persist(path)
        .map_err(|e| io_err("replace", path)(e.error))?;
    Ok(())
}

/// Removes a directory tree whose modes may forbid it (layers carry any mode).
pub fn remove_tree(path: &Path) -> Result<(), ImageError> {
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(_) => {
            make_writable(path);
            fs::remove_dir_all(path).map_err(io_err("remove", path))
        }
    }
}

fn make_writable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(m) = fs::symlink_metadata(path) {
        if m.is_dir() {
            let _ = fs::set_permissions(path, fs::Permissions::from_mode(0o700));
            if let Ok(rd) = fs::read_dir(path) {
                for e in rd.flatten() {
                    make_writable(&e.path());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pier_store::MemStore;

    fn store_with_image() -> (tempfile::TempDir, Arc<MemStore>, ImageStore, LoadedImage) {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(MemStore::default());
        let images = ImageStore::open(dir.path(), db.clone()).unwrap();
        let tar = pier_archive::testing::craft(&[("bin/x", tar::EntryType::Regular, b"#!")]);
        let name: ImageRef = "app:1".parse().unwrap();
        let loaded =
            crate::build::import(&images, &ProjectName::default(), &tar[..], Some(name)).unwrap();
        (dir, db, images, loaded)
    }

    fn pin(images: &ImageStore, db: &MemStore, id: &Digest, holder: &str, on: bool) {
        let p = ProjectName::default();
        let mut b = Batch::new();
        if on {
            images.pin_for(&mut b, &p, id, holder);
        } else {
            images.unpin_for(&mut b, &p, id, holder);
        }
        b.commit(db).unwrap();
    }

    #[test]
    fn an_image_a_container_pins_is_kept() {
        let (_dir, db, images, loaded) = store_with_image();
        let p = ProjectName::default();
        let holder = container_holder("c0ffee");
        pin(&images, &db, &loaded.id, &holder, true);
        pin(&images, &db, &loaded.id, &holder, true); // twice is once
        assert_eq!(
            images.holders(&p, &loaded.id).unwrap(),
            vec![holder.clone()]
        );
        assert_eq!(images.list(&p).unwrap()[0].containers, 1);
        // Pins are per project.
        let other = ProjectName::try_from("other".to_string()).unwrap();
        assert!(images.holders(&other, &loaded.id).unwrap().is_empty());

        let err = images.remove(&p, "app:1", false).unwrap_err();
        assert!(matches!(err, ImageError::InUse { .. }), "{err}");
        assert_eq!(
            err.to_string(),
            format!(
                "image {} is used by container(s) c0ffee; remove them first or use --force",
                loaded.id.short()
            )
        );
        assert!(images.prune(&p, true).unwrap().deleted.is_empty());

        // Forced: the tag goes, the image stays while the container needs it.
        let r = images.remove(&p, "app:1", true).unwrap();
        assert_eq!(r.untagged, vec!["app:1".to_string()]);
        assert!(r.deleted.is_empty());
        let rec = images.resolve(&p, loaded.id.as_str()).unwrap();
        assert!(images
            .layer_dir(&rec.layers[0].diff_id)
            .join("bin/x")
            .exists());

        // Once the pin is gone, prune removes it.
        pin(&images, &db, &loaded.id, &holder, false);
        assert!(images.holders(&p, &loaded.id).unwrap().is_empty());
        assert_eq!(images.list_all(&p, true).unwrap()[0].containers, 0);
        assert_eq!(images.prune(&p, false).unwrap().deleted, vec![loaded.id]);
        assert!(!images.layer_dir(&rec.layers[0].diff_id).exists());
    }

    #[test]
    fn an_unpinned_image_is_removed_and_every_holder_counts() {
        let (_dir, db, images, loaded) = store_with_image();
        let p = ProjectName::default();
        // Another kind of holder keeps it too, named as it is; it is no container.
        pin(&images, &db, &loaded.id, "vm/v1", true);
        pin(&images, &db, &loaded.id, &container_holder("c1"), true);
        assert_eq!(images.list(&p).unwrap()[0].containers, 1);
        let err = images.remove(&p, "app:1", false).unwrap_err().to_string();
        assert!(err.contains("c1, vm/v1"), "{err}");
        pin(&images, &db, &loaded.id, &container_holder("c1"), false);
        assert!(images.remove(&p, "app:1", false).is_err());
        assert!(images.prune(&p, true).unwrap().deleted.is_empty());
        let pins = images.durable_pins().unwrap();
        assert_eq!(
            pins,
            vec![DurablePin {
                project: p.clone(),
                image: loaded.id.clone(),
                holder: "vm/v1".into()
            }]
        );
        pin(&images, &db, &loaded.id, "vm/v1", false);
        let r = images.remove(&p, "app:1", false).unwrap();
        assert_eq!(r.deleted, vec![loaded.id]);
        assert!(images.durable_pins().unwrap().is_empty());
    }

    #[test]
    fn resolves_names_ids_and_prefixes() {
        let (_dir, _db, images, loaded) = store_with_image();
        let p = ProjectName::default();
        for r in [
            "app:1",
            "docker.io/library/app:1",
            loaded.id.as_str(),
            loaded.id.hex(),
            &loaded.id.hex()[..12],
        ] {
            assert_eq!(images.resolve(&p, r).unwrap().id, loaded.id, "{r}");
        }
        let manifest = images.resolve(&p, "app:1").unwrap().manifest_digest;
        assert_eq!(
            images.resolve(&p, &format!("app@{manifest}")).unwrap().id,
            loaded.id
        );
        assert!(matches!(
            images.resolve(&p, "app:2"),
            Err(ImageError::NotFound { .. })
        ));
        assert!(matches!(
            images.resolve(&p, "Bad:Ref"),
            Err(ImageError::InvalidReference(_))
        ));
        // Another project sees nothing.
        let other = ProjectName::try_from("other".to_string()).unwrap();
        assert!(images.list(&other).unwrap().is_empty());
        assert!(images.resolve(&other, "app:1").is_err());
    }

    #[test]
    fn build_steps_cache_hide_and_go_with_their_image() {
        use crate::build::{commit_step, StepImage};
        let (_dir, _db, images, _) = store_with_image();
        let p = ProjectName::default();
        let base = images.resolve(&p, "app:1").unwrap();
        let step = |parent: &ImageRecord, key: &str| {
            commit_step(
                &images,
                &p,
                StepImage {
                    config: images.config(parent).unwrap(),
                    base_layers: &parent.layers,
                    layer_tar: None,
                    reuse_layer: None,
                    created_by: format!("#(nop) {key}"),
                    link: BuildLink {
                        parent: Some(parent.id.clone()),
                        cache_key: key.into(),
                    },
                },
            )
            .unwrap()
        };
        let (s1, pin1) = step(&base, "k1");
        let (s2, pin2) = step(&s1, "k2");
        let (s3, pin3) = step(&base, "k3");
        assert_eq!(
            s1.layers.len(),
            base.layers.len(),
            "a config-only step adds no layer"
        );
        let h = images.history(&p, s2.id.as_str()).unwrap();
        assert!(h[0].empty_layer && h[0].created_by == "#(nop) k2");
        let hit = images.find_cached(&p, Some(&base.id), "k1").unwrap();
        assert_eq!(hit.map(|(r, _)| r.id), Some(s1.id.clone()));
        assert!(images
            .find_cached(&p, Some(&s1.id), "k1")
            .unwrap()
            .is_none());
        assert!(images.find_cached(&p, None, "k1").unwrap().is_none());

        // While pinned, nothing goes.
        assert!(images.prune(&p, false).unwrap().deleted.is_empty());
        assert!(matches!(
            images.remove(&p, s3.id.as_str(), false),
            Err(ImageError::InUse { .. })
        ));
        drop((pin1, pin2, pin3));

        // The intermediate image is hidden from the list, and kept by prune for its child.
        images
            .tag(&p, s2.id.as_str(), &"out:1".parse().unwrap())
            .unwrap();
        let ids = |all| -> Vec<Digest> {
            images
                .list_all(&p, all)
                .unwrap()
                .into_iter()
                .map(|i| i.id)
                .collect()
        };
        assert!(ids(false).contains(&s2.id) && !ids(false).contains(&s1.id));
        assert!(ids(true).contains(&s1.id));
        // s3 is left over, as by a failed build: prune takes it alone.
        assert_eq!(images.prune(&p, false).unwrap().deleted, vec![s3.id]);

        // Removing the built image takes its untagged steps, not the tagged base.
        let r = images.remove(&p, "out:1", false).unwrap();
        assert_eq!(r.deleted, vec![s2.id, s1.id]);
        assert!(images.resolve(&p, "app:1").is_ok());
    }
}
