//! Image references as Docker spells them: `[registry[:port]/]path[:tag][@digest]`.
//!
//! A reference is normalized when parsed (`busybox` becomes
//! `docker.io/library/busybox:latest`, as Docker does) and shown in its familiar form
//! (`busybox:latest`). The grammar follows the distribution project's reference rules.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::names::Digest;

pub const DEFAULT_REGISTRY: &str = "docker.io";
pub const DEFAULT_TAG: &str = "latest";
const MAX_NAME_LEN: usize = 255;
const MAX_TAG_LEN: usize = 128;

/// Why a reference was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid image reference {input:?}: {reason}")]
pub struct RefError {
    pub input: String,
    pub reason: &'static str,
}

/// A parsed, normalized image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ImageRef {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl ImageRef {
    pub fn registry(&self) -> &str {
        &self.registry
    }
    pub fn repository(&self) -> &str {
        &self.repository
    }
    /// The tag; `latest` is filled in when neither tag nor digest was given.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }
    /// `registry/repository`, e.g. `docker.io/library/busybox`.
    pub fn full_name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }
    /// The same name with another tag and no digest.
    pub fn with_tag(&self, tag: &str) -> Result<ImageRef, RefError> {
        validate_tag(tag, tag)?;
        Ok(ImageRef {
            tag: Some(tag.to_string()),
            digest: None,
            ..self.clone()
        })
    }
    /// `name:tag` in full form, the key under which a tag is stored; `None` for a
    /// digest-only reference.
    pub fn tagged_key(&self) -> Option<String> {
        self.tag
            .as_ref()
            .map(|t| format!("{}:{}", self.full_name(), t))
    }
    /// The repository as users know it: `busybox`, `myorg/app`, `localhost:5000/app`.
    pub fn familiar_name(&self) -> String {
        if self.registry == DEFAULT_REGISTRY {
            match self.repository.strip_prefix("library/") {
                Some(short) if !short.contains('/') => short.to_string(),
                _ => self.repository.clone(),
            }
        } else {
            self.full_name()
        }
    }
    /// `familiar_name:tag` (and `@digest` when present).
    pub fn familiar(&self) -> String {
        let mut s = self.familiar_name();
        if let Some(t) = &self.tag {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(d.as_str());
        }
        s
    }
}

fn err(input: &str, reason: &'static str) -> RefError {
    RefError {
        input: input.to_string(),
        reason,
    }
}

/// One path component: `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !is_alnum(b[0]) || !is_alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum(b[i]) {
            i += 1;
            continue;
        }
        // a separator run
        let start = i;
        while i < b.len() && !is_alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

fn valid_domain(d: &str) -> bool {
    let (host, port) = match d.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (d, None),
    };
    if let Some(p) = port {
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
    }
    !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

fn validate_tag(input: &str, tag: &str) -> Result<(), RefError> {
    let b = tag.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= MAX_TAG_LEN
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || c == b'_' || c == b'.' || c == b'-');
    if ok {
        Ok(())
    } else {
        Err(err(
            input,
            "a tag is 1-128 letters, digits, '_', '.' or '-', not starting with '.' or '-'",
        ))
    }
}

impl FromStr for ImageRef {
    type Err = RefError;

    fn from_str(input: &str) -> Result<Self, RefError> {
        if input.is_empty() {
            return Err(err(input, "it is empty"));
        }
        let (rest, digest) = match input.split_once('@') {
            Some((r, d)) => (
                r,
                Some(d.parse::<Digest>().map_err(|_| {
                    err(
                        input,
                        "the part after '@' must be sha256: and 64 lowercase hex digits",
                    )
                })?),
            ),
            None => (input, None),
        };
        // A tag follows the last ':' that comes after the last '/'.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(t) = tag {
            validate_tag(input, t)?;
        }
        if name.is_empty() {
            return Err(err(input, "the repository name is missing"));
        }
        let (registry, path) = match name.split_once('/') {
            Some((first, path))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                if !valid_domain(first) {
                    return Err(err(input, "the registry host is not a valid host[:port]"));
                }
                (first.to_string(), path.to_string())
            }
            _ => (DEFAULT_REGISTRY.to_string(), name.to_string()),
        };
        if path.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(err(input, "repository names must be lowercase"));
        }
        if !path.split('/').all(valid_component) {
            return Err(err(
                input,
                "each path component must be lowercase letters and digits, separated by '.', '_', '__' or '-'",
            ));
        }
        let repository = if registry == DEFAULT_REGISTRY && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        if registry.len() + 1 + repository.len() > MAX_NAME_LEN {
            return Err(err(input, "the name is longer than 255 characters"));
        }
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_string()),
            (None, None) => Some(DEFAULT_TAG.to_string()),
            (None, Some(_)) => None,
        };
        Ok(ImageRef {
            registry,
            repository,
            tag,
            digest,
        })
    }
}

impl TryFrom<String> for ImageRef {
    type Error = RefError;
    fn try_from(s: String) -> Result<Self, RefError> {
        s.parse()
    }
}

impl From<ImageRef> for String {
    fn from(r: ImageRef) -> String {
        r.familiar()
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.familiar())
    }
}

crate::string_schema!(
    ImageRef,
    "An image reference: [registry[:port]/]name[:tag][@digest]."
);

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> ImageRef {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn normalizes_like_docker() {
        let r = p("busybox");
        assert_eq!(r.full_name(), "docker.io/library/busybox");
        assert_eq!(r.tag(), Some("latest"));
        assert_eq!(r.familiar(), "busybox:latest");
        assert_eq!(r.tagged_key().unwrap(), "docker.io/library/busybox:latest");

        let r = p("myorg/app:1.2");
        assert_eq!(r.full_name(), "docker.io/myorg/app");
        assert_eq!(r.familiar(), "myorg/app:1.2");

        let r = p("localhost:5000/a/b-c:v1");
        assert_eq!(r.registry(), "localhost:5000");
        assert_eq!(r.repository(), "a/b-c");
        assert_eq!(r.familiar(), "localhost:5000/a/b-c:v1");

        let r = p("docker.io/library/busybox:1");
        assert_eq!(r.familiar(), "busybox:1");

        let hex = "a".repeat(64);
        let r = p(&format!("quay.io/x/y@sha256:{hex}"));
        assert_eq!(r.tag(), None);
        assert_eq!(r.digest().unwrap().hex(), hex);
        assert_eq!(r.tagged_key(), None);
        assert_eq!(p(&r.familiar()), r);
    }

    #[test]
    fn refuses_bad_references() {
        for bad in [
            "",
            "Busybox",
            "busybox:",
            "busybox:-x",
            "a//b",
            "-a",
            "a--/b",
            "a@sha256:12",
            "registry.example.com:port/a",
            ":tag",
            "a b",
        ] {
            assert!(
                bad.parse::<ImageRef>().is_err(),
                "{bad:?} should be refused"
            );
        }
        let long = format!("a/{}", "b".repeat(300));
        assert!(long.parse::<ImageRef>().is_err());
        let e = "UPPER".parse::<ImageRef>().unwrap_err();
        assert!(e.to_string().contains("lowercase"), "{e}");
    }

    #[test]
    fn components() {
        assert!(valid_component("a__b"));
        assert!(valid_component("a---b"));
        assert!(valid_component("a.b_c"));
        assert!(!valid_component("a..b"));
        assert!(!valid_component("a___b"));
        assert!(!valid_component("_a"));
    }
}
