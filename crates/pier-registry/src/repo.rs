//! Repositories in the state store.
//!
//! ```text
//! registry_blobs        repo@digest            -> BlobLink       a blob this repository holds
//! registry_manifests    repo@digest            -> ManifestRecord (the bytes are a blob)
//! registry_tags         repo:tag               -> TagRecord
//! registry_tag_history  repo:tag@<nanos, 20>   -> HistoryRecord
//! ```
//!
//! A blob is visible in a repository only through its link, and a link is only written
//! after the blob is complete and verified in the blob store. Every change that adds
//! a link or a manifest runs under the image store's `adding` guard and checks what it
//! references inside it, so garbage collection (which holds the guard exclusively) sees
//! either the whole change or none of it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use pier_api::Digest;
use pier_registry_client::manifest::{self, Descriptor};
use pier_store::{Batch, StoreExt, Table};
use serde::{Deserialize, Serialize};

use crate::error::{RegistryError, Result};
use crate::names::Reference;
use crate::Registry;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BlobLink {
    pub size: u64,
    /// Unix seconds when linked; garbage collection spares young links.
    pub added: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ManifestRecord {
    pub media_type: String,
    pub size: u64,
    /// Config and layers.
    pub blobs: Vec<Descriptor>,
    /// Child manifests of an index.
    pub children: Vec<Descriptor>,
    pub subject: Option<Digest>,
    pub artifact_type: Option<String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    pub pushed: String,
}

impl ManifestRecord {
    /// The descriptor the referrers API lists for this manifest.
    pub fn descriptor(&self, digest: &Digest) -> Descriptor {
        Descriptor {
            media_type: self.media_type.clone(),
            digest: digest.clone(),
            size: self.size,
            platform: None,
            artifact_type: self
                .artifact_type
                .clone()
                .or_else(|| self.blobs.first().map(|c| c.media_type.clone())),
            annotations: self.annotations.clone(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TagRecord {
    pub digest: Digest,
    pub updated: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HistoryRecord {
    pub digest: Option<Digest>,
    pub at: String,
    pub action: String,
}

pub fn link_key(repo: &str, d: &Digest) -> String {
    format!("{repo}@{d}")
}

pub fn tag_key(repo: &str, tag: &str) -> String {
    format!("{repo}:{tag}")
}

/// Adds a tag history entry to `batch`.
pub fn record_history(
    batch: &mut Batch,
    repo: &str,
    tag: &str,
    digest: Option<&Digest>,
    action: &str,
) {
    let now = std::time::SystemTime::now();
    let nanos = now
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    batch.put_json(
        Table::RegistryTagHistory,
        format!("{}@{nanos:020}", tag_key(repo, tag)),
        &HistoryRecord {
            digest: digest.cloned(),
            at: pier_api::time::format_rfc3339_nanos(now),
            action: action.to_string(),
        },
    );
}

impl Registry {
    /// The size of a blob `repo` holds, if it holds it.
    pub fn linked(&self, repo: &str, d: &Digest) -> Result<Option<u64>> {
        let link: Option<BlobLink> = self
            .db()
            .get_json(Table::RegistryBlobs, &link_key(repo, d))?;
        Ok(link
            .filter(|_| self.images.blobs().contains(d))
            .map(|l| l.size))
    }

    /// The file of a blob `repo` holds.
    pub fn blob_file(&self, repo: &str, d: &Digest) -> Result<(PathBuf, u64)> {
        match self.linked(repo, d)? {
            Some(size) => Ok((self.images.blobs().path(d), size)),
            None => Err(RegistryError::BlobUnknown {
                repository: repo.to_string(),
                digest: d.to_string(),
            }),
        }
    }

    fn link_batch(batch: &mut Batch, repo: &str, d: &Digest, size: u64) {
        batch.put_json(
            Table::RegistryBlobs,
            link_key(repo, d),
            &BlobLink {
                size,
                added: pier_api::time::now_unix(),
            },
        );
    }

    /// Moves a verified upload (a file in the image store's scratch space) into the blob
    /// store and links it to `repo`.
    pub fn commit_upload(&self, repo: &str, file: &Path, d: &Digest, size: u64) -> Result<()> {
        let _g = self.images.adding();
        self.images.blobs().adopt(file, d)?;
        let _ = std::fs::remove_file(file); // when the blob was there already
        let mut b = Batch::new();
        Self::link_batch(&mut b, repo, d, size);
        b.commit(self.db())?;
        Ok(())
    }

    /// Stores `bytes` as a blob of `repo`.
    pub fn put_blob_bytes(&self, repo: &str, bytes: &[u8]) -> Result<Digest> {
        let _g = self.images.adding();
        let d = self.images.blobs().put_bytes(bytes)?;
        let mut b = Batch::new();
        Self::link_batch(&mut b, repo, &d, bytes.len() as u64);
        b.commit(self.db())?;
        Ok(d)
    }

    /// Links into `repo` a blob already in the blob store (a layer of an engine image,
    /// or one another repository holds). Returns false when the store lacks it.
    pub fn link_existing(&self, repo: &str, d: &Digest) -> Result<bool> {
        let _g = self.images.adding();
        let Some(size) = self.images.blobs().size(d) else {
            return Ok(false);
        };
        let mut b = Batch::new();
        Self::link_batch(&mut b, repo, d, size);
        b.commit(self.db())?;
        Ok(true)
    }

    /// Cross-repository mount: links `d` into `to` when `from` holds it.
    pub fn mount(&self, from: &str, to: &str, d: &Digest) -> Result<bool> {
        if self.linked(from, d)?.is_none() {
            return Ok(false);
        }
        self.link_existing(to, d)
    }

    /// Removes a blob from `repo` (the bytes go at the next garbage collection).
    pub fn unlink_blob(&self, repo: &str, d: &Digest) -> Result<()> {
        if self.linked(repo, d)?.is_none() {
            return Err(RegistryError::BlobUnknown {
                repository: repo.to_string(),
                digest: d.to_string(),
            });
        }
        let mut b = Batch::new();
        b.delete(Table::RegistryBlobs, link_key(repo, d));
        b.commit(self.db())?;
        Ok(())
    }

    /// Stores a pushed manifest and points `reference` (a tag) at it. Every blob and
    /// child manifest it references must be in `repo` already.
    pub fn put_manifest(
        &self,
        repo: &str,
        reference: &Reference,
        bytes: &[u8],
        content_type: Option<&str>,
        action: &str,
    ) -> Result<(Digest, Option<Digest>)> {
        if bytes.len() as u64 > crate::MAX_MANIFEST {
            return Err(RegistryError::ManifestTooLarge {
                size: bytes.len() as u64,
                limit: crate::MAX_MANIFEST,
            });
        }
        let digest = pier_image::blobs::digest_of(bytes)
            .map_err(RegistryError::io("hash a manifest"))?
            .0;
        if let Reference::Digest(d) = reference {
            if *d != digest {
                return Err(RegistryError::DigestMismatch {
                    expected: d.to_string(),
                    actual: digest,
                });
            }
        }
        let parsed = manifest::parse(bytes, content_type)?;
        let _g = self.images.adding();
        for b in &parsed.blobs {
            match self.linked(repo, &b.digest)? {
                Some(size) if size == b.size => {}
                Some(size) => {
                    return Err(RegistryError::ManifestInvalid(format!(
                        "it gives blob {} size {}, but the blob has {size} bytes",
                        b.digest, b.size
                    )))
                }
                None => {
                    return Err(RegistryError::ManifestBlobUnknown {
                        repository: repo.to_string(),
                        digest: b.digest.to_string(),
                    })
                }
            }
        }
        for c in &parsed.children {
            if self.manifest_record(repo, &c.digest)?.is_none() {
                return Err(RegistryError::ManifestBlobUnknown {
                    repository: repo.to_string(),
                    digest: c.digest.to_string(),
                });
            }
        }
        let stored = self.images.blobs().put_bytes(bytes)?;
        debug_assert_eq!(stored, digest);
        let rec = ManifestRecord {
            media_type: parsed.media_type.clone(),
            size: bytes.len() as u64,
            blobs: parsed.blobs,
            children: parsed.children,
            subject: parsed.subject.as_ref().map(|s| s.digest.clone()),
            artifact_type: parsed.artifact_type,
            annotations: parsed.annotations,
            pushed: pier_api::time::now_rfc3339(),
        };
        let mut b = Batch::new();
        Self::link_batch(&mut b, repo, &digest, bytes.len() as u64);
        b.put_json(Table::RegistryManifests, link_key(repo, &digest), &rec);
        if let Reference::Tag(t) = reference {
            let old: Option<TagRecord> =
                self.db().get_json(Table::RegistryTags, &tag_key(repo, t))?;
            b.put_json(
                Table::RegistryTags,
                tag_key(repo, t),
                &TagRecord {
                    digest: digest.clone(),
                    updated: rec.pushed.clone(),
                },
            );
            if old.map(|o| o.digest) != Some(digest.clone()) {
                record_history(&mut b, repo, t, Some(&digest), action);
            }
        }
        b.commit(self.db())?;
        Ok((digest, rec.subject))
    }

    pub fn manifest_record(&self, repo: &str, d: &Digest) -> Result<Option<ManifestRecord>> {
        Ok(self
            .db()
            .get_json(Table::RegistryManifests, &link_key(repo, d))?)
    }

    /// Finds a manifest by tag or digest.
    pub fn resolve(&self, repo: &str, reference: &Reference) -> Result<(Digest, ManifestRecord)> {
        let unknown = || RegistryError::ManifestUnknown {
            repository: repo.to_string(),
            reference: reference.to_string(),
        };
        let digest = match reference {
            Reference::Digest(d) => d.clone(),
            Reference::Tag(t) => {
                self.db()
                    .get_json::<TagRecord>(Table::RegistryTags, &tag_key(repo, t))?
                    .ok_or_else(unknown)?
                    .digest
            }
        };
        let rec = self.manifest_record(repo, &digest)?.ok_or_else(unknown)?;
        Ok((digest, rec))
    }

    /// A stored manifest's bytes.
    pub fn manifest_bytes(&self, d: &Digest) -> Result<Vec<u8>> {
        Ok(self.images.blobs().read_all(d, crate::MAX_MANIFEST)?)
    }

    /// Deletes a tag, or a manifest (by digest) with the tags pointing at it.
    pub fn delete_manifest(&self, repo: &str, reference: &Reference) -> Result<()> {
        let (digest, _) = self.resolve(repo, reference)?;
        let mut b = Batch::new();
        match reference {
            Reference::Tag(t) => {
                b.delete(Table::RegistryTags, tag_key(repo, t));
                record_history(&mut b, repo, t, None, "delete");
            }
            Reference::Digest(_) => {
                for (tag, rec) in self.tags(repo)? {
                    if rec.digest == digest {
                        b.delete(Table::RegistryTags, tag_key(repo, &tag));
                        record_history(&mut b, repo, &tag, None, "delete");
                    }
                }
                b.delete(Table::RegistryManifests, link_key(repo, &digest));
                b.delete(Table::RegistryBlobs, link_key(repo, &digest));
            }
        }
        b.commit(self.db())?;
        Ok(())
    }

    /// Tags of `repo`, sorted.
    pub fn tags(&self, repo: &str) -> Result<Vec<(String, TagRecord)>> {
        let prefix = format!("{repo}:");
        Ok(self
            .db()
            .list_json::<TagRecord>(Table::RegistryTags, &prefix)?
            .into_iter()
            .map(|(k, v)| (k[prefix.len()..].to_string(), v))
            .collect())
    }

    /// Manifests of `repo`.
    pub fn manifests(&self, repo: &str) -> Result<Vec<(Digest, ManifestRecord)>> {
        let prefix = format!("{repo}@");
        Ok(self
            .db()
            .list_json::<ManifestRecord>(Table::RegistryManifests, &prefix)?
            .into_iter()
            .filter_map(|(k, v)| Some((k[prefix.len()..].parse().ok()?, v)))
            .collect())
    }

    /// Every repository that holds a manifest, sorted.
    pub fn repositories(&self) -> Result<Vec<String>> {
        let mut out = BTreeSet::new();
        for (k, _) in self.db().list(Table::RegistryManifests, "")? {
            if let Some((repo, _)) = k.rsplit_once('@') {
                out.insert(repo.to_string());
            }
        }
        Ok(out.into_iter().collect())
    }

    /// Manifests of `repo` whose subject is `subject`.
    pub fn referrers(
        &self,
        repo: &str,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Descriptor>> {
        Ok(self
            .manifests(repo)?
            .into_iter()
            .filter(|(_, m)| m.subject.as_ref() == Some(subject))
            .map(|(d, m)| m.descriptor(&d))
            .filter(|d| artifact_type.is_none() || d.artifact_type.as_deref() == artifact_type)
            .collect())
    }

    /// The history of a tag, oldest first.
    pub fn tag_history(&self, repo: &str, tag: &str) -> Result<Vec<HistoryRecord>> {
        Ok(self
            .db()
            .list_json::<HistoryRecord>(
                Table::RegistryTagHistory,
                &format!("{}@", tag_key(repo, tag)),
            )?
            .into_iter()
            .map(|(_, v)| v)
            .collect())
    }
}
