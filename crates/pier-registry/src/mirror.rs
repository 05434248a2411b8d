//! Pull-through mirroring: with an upstream configured (`pier daemon
//! --registry-upstream HOST`), a manifest or blob the registry lacks is fetched from the
//! upstream, stored and linked like a push (every blob verified, the manifest last), and
//! served; afterwards it is served from the cache, also when the upstream is gone, which
//! is what an offline site needs. Tags are not revalidated against the upstream once
//! cached (re-push or delete the tag to refresh it).

use std::path::PathBuf;
use std::sync::Arc;

use pier_api::Digest;
use pier_registry_client::manifest;
use pier_registry_client::remote::empty;
use pier_registry_client::transfer::{download, get_manifest, Progress};
use pier_registry_client::{ClientConfig, Remote};

use crate::error::{RegistryError, Result};
use crate::names::Reference;
use crate::Registry;

/// The registry this one mirrors.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub host: String,
    pub client: ClientConfig,
}

fn quiet() -> Progress {
    Arc::new(|_| {})
}

/// Whether the upstream's `repo` holds blob `d`. A blob the shared store already has
/// (another repository's, or a local image's) is linked into `repo` only when it is:
/// a mirror must not hand out what the asker may not pull.
async fn upstream_has(remote: &Remote, repo: &str, d: &Digest) -> Result<bool> {
    let resp = remote
        .send(
            hyper::Method::HEAD,
            &format!("/v2/{repo}/blobs/{d}"),
            &[],
            empty(),
        )
        .await?;
    Ok(resp.status().is_success())
}

impl Registry {
    async fn upstream_remote(&self, repo: &str) -> Result<Option<Remote>> {
        let Some(u) = &self.upstream else {
            return Ok(None);
        };
        let remote = Remote::new(&u.host, &u.client, None)?;
        remote
            .authenticate(&format!("repository:{repo}:pull"))
            .await?;
        Ok(Some(remote))
    }

    /// Fetches a blob `repo` lacks from the upstream, when one is configured.
    pub async fn mirror_blob(&self, repo: &str, d: &Digest) -> Result<Option<(PathBuf, u64)>> {
        let Some(remote) = self.upstream_remote(repo).await? else {
            return Ok(None);
        };
        let desc = manifest::Descriptor {
            media_type: String::new(),
            digest: d.clone(),
            size: 0,
            platform: None,
            artifact_type: None,
            annotations: Default::default(),
        };
        if !upstream_has(&remote, repo, d).await? {
            return Ok(None);
        }
        download(&remote, &self.images, repo, &desc, &quiet()).await?;
        if !self.link_existing(repo, d)? {
            return Ok(None);
        }
        Ok(Some(self.blob_file(repo, d)?))
    }

    /// Fetches a manifest (and everything it references) `repo` lacks from the upstream.
    /// Returns false when no upstream is configured.
    pub async fn mirror_manifest(&self, repo: &str, reference: &Reference) -> Result<bool> {
        let Some(remote) = self.upstream_remote(repo).await? else {
            return Ok(false);
        };
        let (bytes, media_type, digest) =
            get_manifest(&remote, repo, &reference.to_string()).await?;
        let parsed = manifest::parse(&bytes, Some(&media_type))?;
        for child in &parsed.children {
            let r = Reference::Digest(child.digest.clone());
            if self.resolve(repo, &r).is_err() {
                Box::pin(self.mirror_manifest(repo, &r)).await?;
            }
        }
        for b in &parsed.blobs {
            if !upstream_has(&remote, repo, &b.digest).await? {
                return Err(RegistryError::Upstream(format!(
                    "the upstream's {repo} does not hold blob {} its manifest names",
                    b.digest
                )));
            }
            download(&remote, &self.images, repo, b, &quiet()).await?;
            if !self.link_existing(repo, &b.digest)? {
                return Err(RegistryError::Upstream(format!(
                    "blob {} vanished",
                    b.digest
                )));
            }
        }
        let local_ref = match reference {
            Reference::Tag(_) => reference.clone(),
            Reference::Digest(_) => Reference::Digest(digest),
        };
        self.put_manifest(repo, &local_ref, &bytes, Some(&media_type), "mirror")?;
        Ok(true)
    }
}
