//! Manifests and indexes as registries and their clients read them: OCI image manifests
//! and indexes, and Docker's schema 2 manifests and manifest lists. Parsing finds what a
//! manifest references (config, layers, child manifests, subject), which is what a pull
//! fetches, a registry checks on push and its garbage collection keeps.

use std::collections::BTreeMap;

use pier_api::Digest;
use serde::{Deserialize, Serialize};

/// A manifest that is not one of the shapes above, and why.
#[derive(Debug, thiserror::Error)]
#[error("the manifest is invalid: {0}")]
pub struct InvalidManifest(pub String);

type Result<T> = std::result::Result<T, InvalidManifest>;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// Every manifest type the registry serves, for `Accept` headers.
pub const ALL_TYPES: [&str; 4] = [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST];

/// A content descriptor.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    pub fn show(&self) -> String {
        match &self.variant {
            Some(v) => format!("{}/{}/{v}", self.os, self.architecture),
            None => format!("{}/{}", self.os, self.architecture),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    schema_version: Option<u32>,
    media_type: Option<String>,
    artifact_type: Option<String>,
    config: Option<Descriptor>,
    layers: Option<Vec<Descriptor>>,
    manifests: Option<Vec<Descriptor>>,
    subject: Option<Descriptor>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

/// What a manifest says, as far as the registry cares.
#[derive(Debug, Clone)]
pub struct Parsed {
    pub media_type: String,
    /// Config and layers (image manifests); empty for indexes.
    pub blobs: Vec<Descriptor>,
    pub config: Option<Descriptor>,
    /// Child manifests (indexes).
    pub children: Vec<Descriptor>,
    pub subject: Option<Descriptor>,
    pub artifact_type: Option<String>,
    pub annotations: BTreeMap<String, String>,
}

impl Parsed {
    pub fn is_index(&self) -> bool {
        self.media_type == OCI_INDEX || self.media_type == DOCKER_LIST
    }
}

fn invalid(m: impl Into<String>) -> InvalidManifest {
    InvalidManifest(m.into())
}

/// Parses a manifest; `content_type` is the Content-Type it came with.
pub fn parse(bytes: &[u8], content_type: Option<&str>) -> Result<Parsed> {
    let raw: Raw = serde_json::from_slice(bytes)
        .map_err(|e| invalid(format!("it is not a JSON manifest of a known shape: {e}")))?;
    if raw.schema_version != Some(2) {
        return Err(invalid(
            "schemaVersion must be 2 (Docker schema 1 manifests are not accepted)",
        ));
    }
    let content_type = content_type
        .map(|c| c.split(';').next().unwrap_or("").trim())
        .filter(|c| !c.is_empty() && *c != "application/json" && *c != "application/octet-stream");
    let media_type = match (&raw.media_type, content_type) {
        (Some(m), Some(c)) if m != c => {
            return Err(invalid(format!(
                "its mediaType {m} differs from the Content-Type {c}"
            )))
        }
        (Some(m), _) => m.clone(),
        (None, Some(c)) => c.to_string(),
        (None, None) if raw.manifests.is_some() => OCI_INDEX.to_string(),
        (None, None) => OCI_MANIFEST.to_string(),
    };
    let mut p = Parsed {
        media_type: media_type.clone(),
        blobs: vec![],
        config: None,
        children: vec![],
        subject: raw.subject,
        artifact_type: raw.artifact_type,
        annotations: raw.annotations,
    };
    match media_type.as_str() {
        OCI_MANIFEST | DOCKER_MANIFEST => {
            let config = raw
                .config
                .ok_or_else(|| invalid("an image manifest needs a config"))?;
            let layers = raw.layers.unwrap_or_default();
            if media_type == DOCKER_MANIFEST && layers.is_empty() {
                return Err(invalid("a Docker image manifest needs layers"));
            }
            p.blobs.push(config.clone());
            p.blobs.extend(layers);
            p.config = Some(config);
        }
        OCI_INDEX | DOCKER_LIST => {
            p.children = raw
                .manifests
                .ok_or_else(|| invalid("an index needs a manifests list"))?;
        }
        other => {
            return Err(invalid(format!(
                "media type {other} is not a manifest type this registry serves ({})",
                ALL_TYPES.join(", ")
            )))
        }
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";

    #[test]
    fn parses_kinds_and_refuses_bad_ones() {
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"{OCI_CONFIG}","digest":"{D}","size":5}},"layers":[{{"mediaType":"x","digest":"{D}","size":5}}]}}"#
        );
        let p = parse(m.as_bytes(), None).unwrap();
        assert_eq!(p.blobs.len(), 2);
        assert!(!p.is_index());
        let i = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{D}","size":5,"platform":{{"os":"linux","architecture":"amd64"}}}}]}}"#
        );
        let p = parse(i.as_bytes(), Some(OCI_INDEX)).unwrap();
        assert!(p.is_index());
        assert_eq!(
            p.children[0].platform.as_ref().unwrap().show(),
            "linux/amd64"
        );
        for bad in [
            "{".to_string(),
            r#"{"schemaVersion":1}"#.to_string(),
            format!(r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}"}}"#),
            format!(
                r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"digest":"sha256:zz","size":1}}}}"#
            ),
        ] {
            assert!(
                matches!(parse(bad.as_bytes(), None), Err(InvalidManifest(_))),
                "{bad}"
            );
        }
        assert!(parse(m.as_bytes(), Some(OCI_INDEX)).is_err());
    }
}
