//! Image archives in and out: the `docker save` format (`manifest.json`) and OCI archives
//! (a tar of an OCI image layout), as Docker, Podman and skopeo write and read them.
//!
//! Loading never unpacks the outer archive onto the disk as a tree. Each regular file is
//! hashed while it is copied to a scratch file, and symlinks are kept as a map resolved in
//! memory with `..` clamped at the root, so no entry of the outer archive can reach outside
//! the scratch directory whatever its name or target. Layers then go through
//! [`pier_archive::unpack`], and records are committed only when every image is complete.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use pier_api::types::{ArchiveFormat, LoadReport};
use pier_api::{Digest, ImageRef, ProjectName};
use pier_archive::unpack::{clean_path, UnpackError};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use crate::compression::decompressed;
use crate::error::{io_err, ImageError};
use crate::store::{ImageRecord, ImageStore, NewImage, MAX_METADATA_BLOB};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

const MAX_OUTER_ENTRIES: u64 = 100_000;

fn bad(msg: impl Into<String>) -> ImageError {
    ImageError::Archive(msg.into())
}

/// A regular file of the outer archive, copied to scratch space.
#[derive(Debug, Clone)]
struct StagedFile {
    path: PathBuf,
    digest: Digest,
    size: u64,
}

/// The outer archive, staged.
struct Staged {
    files: HashMap<PathBuf, StagedFile>,
    symlinks: HashMap<PathBuf, Vec<u8>>,
}

impl Staged {
    fn read(archive: impl Read, scratch: &Path) -> Result<Self, ImageError> {
        let mut files = HashMap::new();
        let mut symlinks = HashMap::new();
        let mut hardlinks = Vec::new();
        let mut tar = tar::Archive::new(archive);
        let corrupt = |e: io::Error| bad(format!("the tar stream is corrupt or truncated ({e})"));
        for (n, entry) in tar.entries().map_err(corrupt)?.enumerate() {
            if n as u64 >= MAX_OUTER_ENTRIES {
                return Err(bad(format!("it has more than {MAX_OUTER_ENTRIES} entries")));
            }
            let mut entry = entry.map_err(corrupt)?;
            let raw = entry.path_bytes().into_owned();
            let rel = clean_path(&raw).map_err(|e| bad(e.to_string()))?;
            match entry.header().entry_type() {
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    let path = scratch.join(format!("f{n}"));
                    let mut out = File::create(&path).map_err(io_err("create", &path))?;
                    let mut hasher = Sha256::new();
                    let mut buf = vec![0u8; 256 * 1024];
                    let mut size = 0u64;
                    loop {
                        let k = entry.read(&mut buf).map_err(corrupt)?;
                        if k == 0 {
                            break;
                        }
                        hasher.update(&buf[..k]);
                        out.write_all(&buf[..k]).map_err(io_err("write", &path))?;
                        size += k as u64;
                    }
                    if size != entry.size() {
                        return Err(bad(format!("entry {:?} is truncated", String::from_utf8_lossy(&raw))));
                    }
                    let digest = Digest::from_sha256_bytes(&hasher.finalize());
                    files.insert(rel, StagedFile { path, digest, size });
                }
                tar::EntryType::Symlink => {
                    let target = entry.link_name_bytes().map(|t| t.into_owned()).unwrap_or_default();
                    symlinks.insert(rel, target);
                }
                tar::EntryType::Link => {
                    let target = entry.link_name_bytes().map(|t| t.into_owned()).unwrap_or_default();
                    let target = clean_path(&target).map_err(|e| bad(e.to_string()))?;
                    hardlinks.push((rel, target));
                }
                tar::EntryType::Directory | tar::EntryType::XGlobalHeader | tar::EntryType::XHeader => {}
                other => {
                    return Err(bad(format!(
                        "entry {:?} has type {other:?}; an image archive holds only files, directories and links",
                        String::from_utf8_lossy(&raw)
                    )))
                }
            }
        }
        for (name, target) in hardlinks {
            let file = files.get(&target).cloned().ok_or_else(|| {
                bad(format!(
                    "hard link {} points to {}, which the archive does not have",
                    name.display(),
                    target.display()
                ))
            })?;
            files.insert(name, file);
        }
        Ok(Staged { files, symlinks })
    }

    /// Finds a file by its name in the archive, following the archive's own symlinks
    /// inside the archive only.
    fn get(&self, name: &str) -> Option<&StagedFile> {
        let mut path = clean_path(name.as_bytes()).ok()?;
        for _ in 0..32 {
            if let Some(f) = self.files.get(&path) {
                return Some(f);
            }
            let target = self.symlinks.get(&path)?;
            let base = if target.first() == Some(&b'/') {
                PathBuf::new()
            } else {
                path.parent()?.to_path_buf()
            };
            path = resolve_clamped(&base, target);
        }
        None
    }

    /// Like [`Staged::get`], but a name that is absolute or climbs out is an error, not a
    /// miss.
    fn named(&self, name: &str) -> Result<Option<&StagedFile>, ImageError> {
        clean_path(name.as_bytes())
            .map_err(|e| bad(format!("it refers to a file by an unsafe name: {e}")))?;
        Ok(self.get(name))
    }

    fn read_small(&self, name: &str) -> Result<Vec<u8>, ImageError> {
        let f = self
            .named(name)?
            .ok_or_else(|| bad(format!("it has no {name}")))?;
        if f.size > MAX_METADATA_BLOB {
            return Err(bad(format!(
                "{name} is {} bytes, more than the {MAX_METADATA_BLOB} allowed",
                f.size
            )));
        }
        std::fs::read(&f.path).map_err(io_err("read", &f.path))
    }

    /// A blob of an OCI layout, checked against its descriptor.
    fn blob(&self, digest: &Digest, size: Option<u64>) -> Result<&StagedFile, ImageError> {
        let name = format!("blobs/sha256/{}", digest.hex());
        let f = self
            .get(&name)
            .ok_or_else(|| bad(format!("it has no blob {digest}")))?;
        if f.digest != *digest {
            return Err(ImageError::DigestMismatch {
                what: name,
                expected: digest.clone(),
                actual: f.digest.clone(),
            });
        }
        if let Some(s) = size {
            if s != f.size {
                return Err(bad(format!(
                    "blob {digest} is {} bytes but its descriptor says {s}",
                    f.size
                )));
            }
        }
        Ok(f)
    }
}

/// Joins a symlink target onto `base`, clamping `..` at the root.
fn resolve_clamped(base: &Path, target: &[u8]) -> PathBuf {
    let mut parts: Vec<&[u8]> = base
        .as_os_str()
        .as_encoded_bytes()
        .split(|&b| b == b'/')
        .filter(|p| !p.is_empty())
        .collect();
    for p in target.split(|&b| b == b'/') {
        match p {
            b"" | b"." => {}
            b".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    let joined: Vec<u8> = parts.join(&b'/');
    PathBuf::from(String::from_utf8_lossy(&joined).into_owned())
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifestEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    #[serde(default)]
    media_type: Option<String>,
    digest: Digest,
    size: u64,
    #[serde(default)]
    annotations: Option<HashMap<String, String>>,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(Deserialize)]
struct Platform {
    architecture: String,
    os: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Index {
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Manifest {
    #[serde(default)]
    media_type: Option<String>,
    config: Descriptor,
    layers: Vec<Descriptor>,
}

/// One image found in an archive, ready to check and store.
struct Found {
    manifest: Option<(Vec<u8>, String)>,
    config: Vec<u8>,
    layers: Vec<StagedFile>,
    tags: Vec<ImageRef>,
}

/// Loads every image of a `docker save` or OCI archive.
pub fn load(
    store: &ImageStore,
    project: &ProjectName,
    archive: impl Read,
) -> Result<LoadReport, ImageError> {
    store.undo_on_error(|| load_inner(store, project, archive))
}

fn load_inner(
    store: &ImageStore,
    project: &ProjectName,
    archive: impl Read,
) -> Result<LoadReport, ImageError> {
    let _g = store.adding();
    let scratch = store.scratch()?;
    let staged = Staged::read(archive, scratch.path())?;
    let found = if staged.get("manifest.json").is_some() {
        docker_images(&staged)?
    } else if staged.get("index.json").is_some() {
        oci_images(&staged)?
    } else {
        return Err(bad(
            "it has neither manifest.json (a `docker save` archive) nor index.json (an OCI archive)",
        ));
    };
    if found.is_empty() {
        return Err(bad("it holds no image"));
    }
    let mut prepared = Vec::new();
    for f in found {
        prepared.push(store_image(store, f)?);
    }
    let mut report = LoadReport::default();
    for new in prepared {
        report.images.push(store.commit_image(project, new)?);
    }
    Ok(report)
}

fn parse_tag(t: &str) -> Result<ImageRef, ImageError> {
    t.parse::<ImageRef>().map_err(|e| {
        bad(format!(
            "its tag list names {t:?}, which is not a valid reference: {}",
            e.reason
        ))
    })
}

fn docker_images(staged: &Staged) -> Result<Vec<Found>, ImageError> {
    let bytes = staged.read_small("manifest.json")?;
    let entries: Vec<DockerManifestEntry> = serde_json::from_slice(&bytes)
        .map_err(|e| bad(format!("manifest.json is not valid: {e}")))?;
    entries
        .into_iter()
        .map(|e| {
            let tags = e
                .repo_tags
                .unwrap_or_default()
                .iter()
                .map(|t| parse_tag(t))
                .collect::<Result<_, _>>()?;
            let config = staged.read_small(&e.config)?;
            let layers = e
                .layers
                .iter()
                .map(|l| {
                    staged.named(l)?.cloned().ok_or_else(|| {
                        bad(format!(
                            "manifest.json names layer {l}, which the archive does not have"
                        ))
                    })
                })
                .collect::<Result<_, _>>()?;
            Ok(Found {
                manifest: None,
                config,
                layers,
                tags,
            })
        })
        .collect()
}

fn oci_images(staged: &Staged) -> Result<Vec<Found>, ImageError> {
    if let Some(layout) = staged.get("oci-layout") {
        let v: serde_json::Value = serde_json::from_slice(
            &std::fs::read(&layout.path).map_err(io_err("read", &layout.path))?,
        )
        .map_err(|e| bad(format!("oci-layout is not valid JSON: {e}")))?;
        if v.get("imageLayoutVersion")
            .and_then(|v| v.as_str())
            .is_none()
        {
            return Err(bad("oci-layout has no imageLayoutVersion"));
        }
    }
    let index: Index = serde_json::from_slice(&staged.read_small("index.json")?)
        .map_err(|e| bad(format!("index.json is not a valid OCI index: {e}")))?;
    let mut out = Vec::new();
    for desc in index.manifests {
        let tags = oci_names(desc.annotations.as_ref())?;
        let (manifest_bytes, media_type) = pick_manifest(staged, &desc, 0)?;
        let manifest: Manifest = serde_json::from_slice(&manifest_bytes).map_err(|e| {
            bad(format!(
                "manifest {} is not a valid image manifest: {e}",
                desc.digest
            ))
        })?;
        let config_file = staged.blob(&manifest.config.digest, Some(manifest.config.size))?;
        if config_file.size > MAX_METADATA_BLOB {
            return Err(bad(format!(
                "config {} is too large",
                manifest.config.digest
            )));
        }
        let config = std::fs::read(&config_file.path).map_err(io_err("read", &config_file.path))?;
        let layers = manifest
            .layers
            .iter()
            .map(|l| staged.blob(&l.digest, Some(l.size)).cloned())
            .collect::<Result<_, _>>()?;
        let media_type = manifest.media_type.unwrap_or(media_type);
        out.push(Found {
            manifest: Some((manifest_bytes, media_type)),
            config,
            layers,
            tags,
        });
    }
    Ok(out)
}

/// The names an OCI index entry carries: containerd's full name, or a ref.name that is a
/// full reference. A bare tag in ref.name names no repository, so it gives no name.
fn oci_names(annotations: Option<&HashMap<String, String>>) -> Result<Vec<ImageRef>, ImageError> {
    let Some(a) = annotations else {
        return Ok(vec![]);
    };
    if let Some(n) = a.get("io.containerd.image.name") {
        return Ok(vec![parse_tag(n)?]);
    }
    match a.get("org.opencontainers.image.ref.name") {
        Some(n) if n.contains(':') || n.contains('/') => Ok(vec![parse_tag(n)?]),
        _ => Ok(vec![]),
    }
}

/// Reads the manifest a descriptor names, descending into an index for linux/amd64.
fn pick_manifest(
    staged: &Staged,
    desc: &Descriptor,
    depth: u32,
) -> Result<(Vec<u8>, String), ImageError> {
    if depth > 2 {
        return Err(bad("indexes are nested too deeply"));
    }
    let file = staged.blob(&desc.digest, Some(desc.size))?;
    if file.size > MAX_METADATA_BLOB {
        return Err(bad(format!("manifest {} is too large", desc.digest)));
    }
    let bytes = std::fs::read(&file.path).map_err(io_err("read", &file.path))?;
    let media_type = desc
        .media_type
        .clone()
        .unwrap_or_else(|| OCI_MANIFEST.to_string());
    if media_type != OCI_INDEX && media_type != DOCKER_LIST {
        return Ok((bytes, media_type));
    }
    let index: Index = serde_json::from_slice(&bytes)
        .map_err(|e| bad(format!("index {} is not valid: {e}", desc.digest)))?;
    let chosen = index
        .manifests
        .iter()
        .find(|m| {
            m.platform
                .as_ref()
                .is_some_and(|p| p.os == "linux" && p.architecture == "amd64")
        })
        .or_else(|| (index.manifests.len() == 1).then(|| &index.manifests[0]))
        .ok_or_else(|| bad(format!("index {} has no linux/amd64 image", desc.digest)))?;
    pick_manifest(staged, chosen, depth + 1)
}

/// Verifies and stores one image's blobs and layers; returns what to commit.
fn store_image(store: &ImageStore, f: Found) -> Result<NewImage, ImageError> {
    let config: serde_json::Value = serde_json::from_slice(&f.config)
        .map_err(|e| bad(format!("the image config is not valid JSON: {e}")))?;
    oci_spec::image::ImageConfiguration::from_reader(&f.config[..]).map_err(|e| {
        bad(format!(
            "the image config is not a valid OCI image config: {e}"
        ))
    })?;
    let diff_ids: Vec<Digest> = config
        .pointer("/rootfs/diff_ids")
        .and_then(|v| v.as_array())
        .ok_or_else(|| bad("the image config has no rootfs.diff_ids"))?
        .iter()
        .map(|v| {
            v.as_str()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| bad(format!("diff ID {v} is not a sha256 digest")))
        })
        .collect::<Result<_, _>>()?;
    if diff_ids.len() != f.layers.len() {
        return Err(bad(format!(
            "the config lists {} layers but the manifest {}",
            diff_ids.len(),
            f.layers.len()
        )));
    }
    let mut layers = Vec::new();
    for (file, diff_id) in f.layers.iter().zip(&diff_ids) {
        let source = (!store.blobs().contains(&file.digest))
            .then_some(file.path.as_path())
            .filter(|p| p.exists());
        layers.push(store.add_layer(&file.digest, source, Some(diff_id))?);
    }
    let config_digest = store.blobs().put_bytes(&f.config)?;
    let (manifest_bytes, media_type) = match f.manifest {
        Some(m) => m,
        None => (
            oci_manifest(&config_digest, f.config.len() as u64, &layers),
            OCI_MANIFEST.to_string(),
        ),
    };
    let manifest_digest = store.blobs().put_bytes(&manifest_bytes)?;
    Ok(NewImage {
        manifest_digest,
        manifest_media_type: media_type,
        config_digest,
        layers,
        created: config
            .get("created")
            .and_then(|c| c.as_str())
            .map(str::to_string),
        tags: f.tags,
        build: None,
    })
}

/// An OCI manifest for a config and its layers as stored.
pub fn oci_manifest(
    config: &Digest,
    config_size: u64,
    layers: &[pier_api::types::LayerInfo],
) -> Vec<u8> {
    let m = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": { "mediaType": OCI_CONFIG, "digest": config, "size": config_size },
        "layers": layers.iter().map(|l| serde_json::json!({
            "mediaType": l.media_type, "digest": l.blob_digest, "size": l.blob_size,
        })).collect::<Vec<_>>(),
    });
    serde_json::to_vec(&m).expect("json")
}

// ---- saving ------------------------------------------------------------------------------

/// Writes the named images as one archive to `out`.
pub fn save(
    store: &ImageStore,
    images: &[(ImageRecord, Vec<ImageRef>)],
    format: ArchiveFormat,
    out: impl Write,
) -> Result<(), ImageError> {
    let _g = store.adding();
    let mut tar = tar::Builder::new(out);
    match format {
        ArchiveFormat::DockerArchive => save_docker(store, images, &mut tar),
        ArchiveFormat::OciArchive => save_oci(store, images, &mut tar),
    }?;
    tar.into_inner()
        .map_err(|e| io_err("write", Path::new("the archive"))(e))?
        .flush()
        .ok();
    Ok(())
}

fn append(
    tar: &mut tar::Builder<impl Write>,
    name: &str,
    size: u64,
    data: impl Read,
) -> Result<(), ImageError> {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o644);
    h.set_size(size);
    h.set_mtime(0);
    tar.append_data(&mut h, name, data).map_err(|e| {
        match e
            .get_ref()
            .and_then(|i| i.downcast_ref::<crate::blobs::Mismatch>())
        {
            Some(m) => ImageError::DigestMismatch {
                what: format!("stored {name}"),
                expected: m.expected.clone(),
                actual: m.actual.clone(),
            },
            None => io_err("write", Path::new(name))(e),
        }
    })
}

fn append_blob(
    store: &ImageStore,
    tar: &mut tar::Builder<impl Write>,
    name: &str,
    digest: &Digest,
) -> Result<(), ImageError> {
    let size = store
        .blobs()
        .size(digest)
        .ok_or_else(|| ImageError::MissingBlob {
            digest: digest.clone(),
        })?;
    append(tar, name, size, store.blobs().open(digest)?)
}

fn save_docker(
    store: &ImageStore,
    images: &[(ImageRecord, Vec<ImageRef>)],
    tar: &mut tar::Builder<impl Write>,
) -> Result<(), ImageError> {
    let mut manifest = Vec::new();
    let mut written = std::collections::HashSet::new();
    for (rec, tags) in images {
        let config_name = format!("{}.json", rec.id.hex());
        if written.insert(config_name.clone()) {
            append_blob(store, tar, &config_name, &rec.id)?;
        }
        let mut layer_names = Vec::new();
        for l in &rec.layers {
            // docker load wants each layer uncompressed, hashing to its diff ID.
            let name = format!("{}/layer.tar", l.diff_id.hex());
            if written.insert(name.clone()) {
                let blob = store.blobs().open(&l.blob_digest)?;
                let plain = decompressed(blob)
                    .map_err(io_err("read", &store.blobs().path(&l.blob_digest)))?;
                let verified = crate::blobs::VerifyingReader::new(plain, l.diff_id.clone());
                append(tar, &name, l.size, verified)?;
            }
            layer_names.push(name);
        }
        manifest.push(serde_json::json!({
            "Config": config_name,
            "RepoTags": tags.iter().map(|t| t.familiar()).collect::<Vec<_>>(),
            "Layers": layer_names,
        }));
    }
    let bytes = serde_json::to_vec(&manifest).expect("json");
    append(tar, "manifest.json", bytes.len() as u64, &bytes[..])
}

fn save_oci(
    store: &ImageStore,
    images: &[(ImageRecord, Vec<ImageRef>)],
    tar: &mut tar::Builder<impl Write>,
) -> Result<(), ImageError> {
    let layout = br#"{"imageLayoutVersion":"1.0.0"}"#;
    append(tar, "oci-layout", layout.len() as u64, &layout[..])?;
    let mut written = std::collections::HashSet::new();
    let mut manifests = Vec::new();
    for (rec, tags) in images {
        let mut digests = vec![rec.manifest_digest.clone(), rec.id.clone()];
        digests.extend(rec.layers.iter().map(|l| l.blob_digest.clone()));
        for d in digests {
            if written.insert(d.clone()) {
                append_blob(store, tar, &format!("blobs/sha256/{}", d.hex()), &d)?;
            }
        }
        let size = store.blobs().size(&rec.manifest_digest).unwrap_or(0);
        let entry = |annotations: Option<serde_json::Value>| {
            let mut v = serde_json::json!({ "mediaType": rec.manifest_media_type, "digest": rec.manifest_digest, "size": size });
            if let Some(a) = annotations {
                v["annotations"] = a;
            }
            v
        };
        if tags.is_empty() {
            manifests.push(entry(None));
        }
        for t in tags {
            // containerd's convention, which Docker follows: the full name, and the tag
            // alone as the OCI ref.name.
            manifests.push(entry(Some(serde_json::json!({
                "io.containerd.image.name": t.tagged_key(),
                "org.opencontainers.image.ref.name": t.tag(),
            }))));
        }
    }
    let index =
        serde_json::json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests });
    let bytes = serde_json::to_vec(&index).expect("json");
    append(tar, "index.json", bytes.len() as u64, &bytes[..])
}

impl From<UnpackError> for ImageError {
    fn from(source: UnpackError) -> Self {
        ImageError::Unpack {
            layer: "archive".into(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clamps_symlinks_at_the_root() {
        assert_eq!(
            resolve_clamped(Path::new("a/b"), b"../../../../etc/passwd"),
            PathBuf::from("etc/passwd")
        );
        assert_eq!(
            resolve_clamped(Path::new("a"), b"./x/../y"),
            PathBuf::from("a/y")
        );
        assert_eq!(
            resolve_clamped(Path::new(""), b"blobs/sha256/x"),
            PathBuf::from("blobs/sha256/x")
        );
    }
}
