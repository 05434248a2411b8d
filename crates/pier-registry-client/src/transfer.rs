//! The engine's `pull` and `push` against any OCI registry (Pier's own included).
//!
//! Pull: manifest (an index picks this host's platform), config, then every layer the
//! blob store lacks, downloaded side by side and verified against its digest as it is
//! written; then, under the image store's `adding` guard, each layer is unpacked and the
//! image committed in one batch, so a failed pull leaves nothing visible. Mirrors are
//! tried in order before the image's own registry (an offline site names its mirror).
//!
//! Push: each blob the registry lacks (`HEAD` first) is uploaded in one streamed `PUT`,
//! then the manifest exactly as stored, so the digest is the same on both sides.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::{Method, StatusCode};
use pier_api::registry::TransferProgress;
use pier_api::types::LayerInfo;
use pier_api::{Digest, ImageRef, ProjectName};
use pier_image::store::NewImage;
use pier_image::ImageStore;
use tokio_util::io::ReaderStream;

use crate::error::{RemoteError, Result};
use crate::manifest::{self, Descriptor, ALL_TYPES};
use crate::remote::{empty, error_of, full, ClientConfig, Credentials, Payload, Remote};

/// Reports progress; called from several tasks.
pub type Progress = Arc<dyn Fn(TransferProgress) + Send + Sync>;

fn report(p: &Progress, blob: &Digest, status: &str, current: u64, total: u64) {
    p(TransferProgress {
        blob: Some(blob.clone()),
        status: status.into(),
        current,
        total,
        message: None,
    });
}

/// The host serving a reference's registry (`docker.io` is served elsewhere).
pub fn registry_host(r: &ImageRef) -> String {
    match r.registry() {
        "docker.io" => "registry-1.docker.io".into(),
        h => h.into(),
    }
}

/// Fetches manifest `reference` (a tag or a digest) of `repo`, at most [`crate::MAX_MANIFEST`]
/// bytes, verified against the digest when `reference` is one. Returns its bytes, media
/// type and digest.
pub async fn get_manifest(
    remote: &Remote,
    repo: &str,
    reference: &str,
) -> Result<(Vec<u8>, String, Digest)> {
    let resp = remote
        .send(
            Method::GET,
            &format!("/v2/{repo}/manifests/{reference}"),
            &[("accept", ALL_TYPES.join(", "))],
            empty(),
        )
        .await?;
    if resp.status() != StatusCode::OK {
        return Err(error_of(
            &format!("manifest {repo}:{reference} from {}", remote.host),
            resp,
        )
        .await);
    }
    let ct = resp
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.split(';').next().unwrap_or("").trim().to_string());
    // Read at most the limit (and one byte more, to tell): a hostile registry cannot
    // make the daemon hold more than a manifest's worth.
    let body = http_body_util::BodyExt::collect(http_body_util::Limited::new(
        resp.into_body(),
        crate::MAX_MANIFEST as usize + 1,
    ))
    .await
    .map_err(|e| {
        if e.is::<http_body_util::LengthLimitError>() {
            RemoteError::ManifestTooLarge {
                size: crate::MAX_MANIFEST + 1,
                limit: crate::MAX_MANIFEST,
            }
        } else {
            RemoteError::Upstream(e.to_string())
        }
    })?
    .to_bytes();
    if body.len() as u64 > crate::MAX_MANIFEST {
        return Err(RemoteError::ManifestTooLarge {
            size: body.len() as u64,
            limit: crate::MAX_MANIFEST,
        });
    }
    let digest = pier_image::blobs::digest_of(&body[..])
        .map_err(RemoteError::io("hash"))?
        .0;
    if let Ok(d) = reference.parse::<Digest>() {
        if d != digest {
            return Err(RemoteError::DigestMismatch {
                expected: d.to_string(),
                actual: digest,
            });
        }
    }
    let parsed = manifest::parse(&body, ct.as_deref())?;
    Ok((body.to_vec(), parsed.media_type, digest))
}

/// What a registry says of `reference` without pulling it (Docker's
/// `GET /distribution/{name}/json`): its manifest's descriptor, and the platforms it
/// serves (an index's children, or a manifest's config's `os`/`architecture`).
pub async fn inspect_remote(
    reference: &ImageRef,
    config: &ClientConfig,
    creds: Option<Credentials>,
) -> Result<(Descriptor, Vec<manifest::Platform>)> {
    let repo = reference.repository().to_string();
    let rf = match (reference.digest(), reference.tag()) {
        (Some(d), _) => d.to_string(),
        (None, Some(t)) => t.to_string(),
        (None, None) => "latest".into(),
    };
    let (remote, (bytes, media_type, digest)) =
        find_manifest(reference, &repo, &rf, config, creds).await?;
    let parsed = manifest::parse(&bytes, Some(&media_type))?;
    let platforms = if parsed.is_index() {
        parsed
            .children
            .iter()
            .filter_map(|c| c.platform.clone())
            .collect()
    } else {
        let config_desc = parsed
            .config
            .ok_or_else(|| RemoteError::ManifestInvalid("no config".into()))?;
        let blob = get_small_blob(&remote, &repo, &config_desc).await?;
        let c: serde_json::Value = serde_json::from_slice(&blob)
            .map_err(|e| RemoteError::ManifestInvalid(format!("the image config: {e}")))?;
        let field = |k: &str| c[k].as_str().unwrap_or("").to_string();
        vec![manifest::Platform {
            architecture: field("architecture"),
            os: field("os"),
            variant: c["variant"].as_str().map(String::from),
        }]
    };
    let descriptor = Descriptor {
        media_type,
        digest,
        size: bytes.len() as u64,
        platform: None,
        artifact_type: None,
        annotations: Default::default(),
    };
    Ok((descriptor, platforms))
}

/// A blob of at most [`crate::MAX_MANIFEST`] bytes (an image config) read into memory,
/// verified against its descriptor.
async fn get_small_blob(remote: &Remote, repo: &str, d: &Descriptor) -> Result<Vec<u8>> {
    if d.size > crate::MAX_MANIFEST {
        return Err(RemoteError::ManifestTooLarge {
            size: d.size,
            limit: crate::MAX_MANIFEST,
        });
    }
    let resp = remote
        .send(
            Method::GET,
            &format!("/v2/{repo}/blobs/{}", d.digest),
            &[],
            empty(),
        )
        .await?;
    if resp.status() != StatusCode::OK {
        return Err(error_of(&format!("blob {} of {repo}", d.digest), resp).await);
    }
    let body = BodyExt::collect(http_body_util::Limited::new(
        resp.into_body(),
        crate::MAX_MANIFEST as usize + 1,
    ))
    .await
    .map_err(|e| RemoteError::Upstream(e.to_string()))?
    .to_bytes();
    let digest = pier_image::blobs::digest_of(&body[..])
        .map_err(RemoteError::io("hash"))?
        .0;
    if digest != d.digest {
        return Err(RemoteError::DigestMismatch {
            expected: d.digest.to_string(),
            actual: digest,
        });
    }
    Ok(body.to_vec())
}

/// Streams a blob into the blob store, verified.
pub async fn download(
    remote: &Remote,
    images: &Arc<ImageStore>,
    repo: &str,
    d: &Descriptor,
    p: &Progress,
) -> Result<()> {
    if images.blobs().contains(&d.digest) {
        report(p, &d.digest, "exists", d.size, d.size);
        return Ok(());
    }
    let resp = remote
        .send(
            Method::GET,
            &format!("/v2/{repo}/blobs/{}", d.digest),
            &[],
            empty(),
        )
        .await?;
    if resp.status() != StatusCode::OK {
        return Err(error_of(&format!("blob {} from {}", d.digest, remote.host), resp).await);
    }
    let mut w = images.blobs().writer()?;
    let mut body = resp.into_body().into_data_stream();
    let mut done = 0u64;
    let mut last = 0u64;
    report(p, &d.digest, "downloading", 0, d.size);
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| RemoteError::Upstream(format!("blob {}: {e}", d.digest)))?;
        std::io::Write::write_all(&mut w, &chunk).map_err(RemoteError::io("write a blob"))?;
        done += chunk.len() as u64;
        if done - last >= 256 * 1024 {
            last = done;
            report(p, &d.digest, "downloading", done, d.size);
        }
    }
    let expected = d.digest.clone();
    tokio::task::spawn_blocking(move || w.commit(Some(&expected)))
        .await
        .map_err(|e| RemoteError::Upstream(e.to_string()))??;
    report(p, &d.digest, "done", done, d.size);
    Ok(())
}

/// The manifest of `reference` (`rf` in `repo`) from the first of the mirrors, then
/// the origin, that serves it, with the remote that did.
async fn find_manifest(
    reference: &ImageRef,
    repo: &str,
    rf: &str,
    config: &ClientConfig,
    creds: Option<Credentials>,
) -> Result<(Remote, (Vec<u8>, String, Digest))> {
    let mut hosts: Vec<String> = config.mirrors.clone();
    hosts.push(registry_host(reference));
    let mut errors: Vec<(String, RemoteError)> = Vec::new();
    let mut found = None;
    for host in &hosts {
        let origin = *host == registry_host(reference);
        let remote = match Remote::new(host, config, if origin { creds.clone() } else { None }) {
            Ok(r) => r,
            Err(e) => {
                errors.push((host.clone(), e));
                continue;
            }
        };
        let attempt = async {
            remote
                .authenticate(&format!("repository:{repo}:pull"))
                .await?;
            get_manifest(&remote, repo, rf).await
        }
        .await;
        match attempt {
            Ok(m) => {
                found = Some((remote, m));
                break;
            }
            Err(e) => {
                tracing::debug!(host, error = %e, "pull source failed; trying the next");
                errors.push((host.clone(), e));
            }
        }
    }
    let Some(found) = found else {
        // One source: its own error. Several: what each said.
        if errors.len() == 1 {
            return Err(errors.remove(0).1);
        }
        let said: Vec<String> = errors
            .iter()
            .map(|(h, e)| format!("{h}: {}", e.chain()))
            .collect();
        return Err(RemoteError::Upstream(format!(
            "no source could serve {reference}; {}",
            said.join("; ")
        )));
    };
    Ok(found)
}

/// Pulls `reference` into the engine's image store. Returns the image ID and the
/// manifest digest.
pub async fn pull(
    images: Arc<ImageStore>,
    project: ProjectName,
    reference: &ImageRef,
    config: &ClientConfig,
    creds: Option<Credentials>,
    p: Progress,
) -> Result<(Digest, Digest)> {
    let repo = reference.repository().to_string();
    let rf = match (reference.digest(), reference.tag()) {
        (Some(d), _) => d.to_string(),
        (None, Some(t)) => t.to_string(),
        (None, None) => "latest".into(),
    };
    let (remote, (mut bytes, mut media_type, mut digest)) =
        find_manifest(reference, &repo, &rf, config, creds).await?;
    let mut parsed = manifest::parse(&bytes, Some(&media_type))?;
    if parsed.is_index() {
        let arch = pier_image::build::host_arch();
        let child = parsed
            .children
            .iter()
            .find(|c| {
                c.platform
                    .as_ref()
                    .is_some_and(|p| p.os == "linux" && p.architecture == arch)
            })
            .or_else(|| (parsed.children.len() == 1).then(|| &parsed.children[0]))
            .ok_or_else(|| {
                RemoteError::ManifestInvalid(format!("{reference} has no linux/{arch} image"))
            })?
            .clone();
        (bytes, media_type, digest) = get_manifest(&remote, &repo, child.digest.as_str()).await?;
        parsed = manifest::parse(&bytes, Some(&media_type))?;
        if parsed.is_index() {
            return Err(RemoteError::ManifestInvalid(
                "an index inside an index".into(),
            ));
        }
    }
    let config_desc = parsed
        .config
        .clone()
        .ok_or_else(|| RemoteError::ManifestInvalid("no config".into()))?;
    download(&remote, &images, &repo, &config_desc, &p).await?;
    let layers: Vec<Descriptor> = parsed.blobs[1..].to_vec();
    for l in &layers {
        report(&p, &l.digest, "waiting", 0, l.size);
    }
    futures_util::future::try_join_all(
        layers
            .iter()
            .map(|l| download(&remote, &images, &repo, l, &p)),
    )
    .await?;

    let tag = reference.tag().map(|_| reference.clone());
    let id = tokio::task::spawn_blocking(move || -> Result<Digest> {
        let r = images.undo_on_error(|| {
            let _g = images.adding();
            let cfg_bytes = images
                .blobs()
                .read_all(&config_desc.digest, pier_image::store::MAX_METADATA_BLOB)?;
            let cfg: serde_json::Value = serde_json::from_slice(&cfg_bytes).map_err(|e| {
                pier_image::ImageError::Archive(format!("the image config is not JSON: {e}"))
            })?;
            let diff_ids: Vec<Digest> = cfg
                .pointer("/rootfs/diff_ids")
                .and_then(|v| v.as_array())
                .map(|a| a.iter().filter_map(|v| v.as_str()?.parse().ok()).collect())
                .unwrap_or_default();
            if diff_ids.len() != layers.len() {
                return Err(pier_image::ImageError::Archive(format!(
                    "the config lists {} layers but the manifest {}",
                    diff_ids.len(),
                    layers.len()
                )));
            }
            let mut infos: Vec<LayerInfo> = Vec::new();
            for (l, diff) in layers.iter().zip(&diff_ids) {
                let mut info = images.add_layer(&l.digest, None, Some(diff))?;
                info.media_type = l.media_type.clone();
                infos.push(info);
            }
            let md = images.blobs().put_bytes(&bytes)?;
            images.commit_image(
                &project,
                NewImage {
                    manifest_digest: md,
                    manifest_media_type: media_type,
                    config_digest: config_desc.digest.clone(),
                    layers: infos,
                    created: cfg
                        .get("created")
                        .and_then(|c| c.as_str())
                        .map(str::to_string),
                    tags: tag.into_iter().collect(),
                    build: None,
                },
            )
        });
        Ok(r?.id)
    })
    .await
    .map_err(|e| RemoteError::Upstream(e.to_string()))??;
    Ok((id, digest))
}

/// A blob's file as a streamed body, counting progress; opened anew for each attempt.
fn file_body(path: std::path::PathBuf, d: Digest, total: u64, p: Progress) -> Payload {
    Payload::Stream(Box::new(move || {
        let f = std::fs::File::open(&path)
            .map_err(RemoteError::io(format!("open {}", path.display())))?;
        let (d, p) = (d.clone(), p.clone());
        let mut done = 0u64;
        let mut last = 0u64;
        let stream = ReaderStream::with_capacity(tokio::fs::File::from_std(f), 256 * 1024).map_ok(
            move |c: Bytes| {
                done += c.len() as u64;
                if done - last >= 256 * 1024 || done == total {
                    last = done;
                    report(&p, &d, "uploading", done, total);
                }
                Frame::data(c)
            },
        );
        Ok(BodyExt::boxed(StreamBody::new(stream)))
    }))
}

async fn upload(
    remote: &Remote,
    images: &Arc<ImageStore>,
    repo: &str,
    d: &Digest,
    size: u64,
    p: &Progress,
) -> Result<()> {
    let head = remote
        .send(Method::HEAD, &format!("/v2/{repo}/blobs/{d}"), &[], empty())
        .await?;
    if head.status() == StatusCode::OK {
        report(p, d, "exists", size, size);
        return Ok(());
    }
    let start = remote
        .send(
            Method::POST,
            &format!("/v2/{repo}/blobs/uploads/"),
            &[],
            empty(),
        )
        .await?;
    if start.status() != StatusCode::ACCEPTED {
        return Err(error_of(&format!("starting an upload to {}", remote.host), start).await);
    }
    let loc = start
        .headers()
        .get(hyper::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| RemoteError::Upstream("an upload without Location".into()))?
        .to_string();
    let sep = if loc.contains('?') { '&' } else { '?' };
    let body = file_body(images.blobs().path(d), d.clone(), size, p.clone());
    let resp = remote
        .send(
            Method::PUT,
            &format!("{loc}{sep}digest={d}"),
            &[
                ("content-type", "application/octet-stream".into()),
                ("content-length", size.to_string()),
            ],
            body,
        )
        .await?;
    if resp.status() != StatusCode::CREATED {
        return Err(error_of(&format!("uploading {d} to {}", remote.host), resp).await);
    }
    report(p, d, "done", size, size);
    Ok(())
}

/// Pushes the local image `local` as `target`. Returns the manifest's digest and size.
pub async fn push(
    images: Arc<ImageStore>,
    project: ProjectName,
    local: &str,
    target: &ImageRef,
    config: &ClientConfig,
    creds: Option<Credentials>,
    p: Progress,
) -> Result<(Digest, u64)> {
    let rec = {
        let images = images.clone();
        let (project, local) = (project.clone(), local.to_string());
        tokio::task::spawn_blocking(move || images.resolve(&project, &local))
            .await
            .map_err(|e| RemoteError::Upstream(e.to_string()))??
    };
    let remote = Remote::new(&registry_host(target), config, creds)?;
    let repo = target.repository().to_string();
    remote
        .authenticate(&format!("repository:{repo}:pull,push"))
        .await?;
    let config_size = images.blobs().size(&rec.id).ok_or_else(|| {
        RemoteError::Image(pier_image::ImageError::MissingBlob {
            digest: rec.id.clone(),
        })
    })?;
    // Progress is the layers', as Docker shows it; the config goes up unannounced.
    let quiet: Progress = Arc::new(|_| {});
    let mut blobs = vec![(rec.id.clone(), config_size, &quiet)];
    blobs.extend(
        rec.layers
            .iter()
            .map(|l| (l.blob_digest.clone(), l.blob_size, &p)),
    );
    for (d, s, _) in &blobs[1..] {
        report(&p, d, "waiting", 0, *s);
    }
    futures_util::future::try_join_all(
        blobs
            .iter()
            .map(|(d, s, p)| upload(&remote, &images, &repo, d, *s, p)),
    )
    .await?;
    let bytes = images
        .blobs()
        .read_all(&rec.manifest_digest, crate::MAX_MANIFEST)?;
    let size = bytes.len() as u64;
    let tag = target.tag().unwrap_or("latest");
    let resp = remote
        .send(
            Method::PUT,
            &format!("/v2/{repo}/manifests/{tag}"),
            &[("content-type", rec.manifest_media_type.clone())],
            full(bytes),
        )
        .await?;
    if resp.status() != StatusCode::CREATED {
        return Err(error_of(&format!("pushing the manifest to {}", remote.host), resp).await);
    }
    Ok((rec.manifest_digest, size))
}
