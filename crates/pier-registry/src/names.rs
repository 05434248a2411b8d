//! Repository names and tags as the distribution spec defines them, checked at the edge.

use crate::error::{RegistryError, Result};

const MAX_NAME: usize = 255;

/// A repository path component: `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn component_ok(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-')) {
            return false;
        }
    }
    true
}

/// Checks a repository name (`team/app`).
pub fn check_repository(name: &str) -> Result<()> {
    let bad = |reason| RegistryError::NameInvalid {
        name: name.to_string(),
        reason,
    };
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(bad("a name is 1-255 characters"));
    }
    if !name.split('/').all(component_ok) {
        return Err(bad(
            "each '/'-separated part is lowercase letters and digits, joined by '.', '_', '__' or '-'",
        ));
    }
    Ok(())
}

/// Checks a tag: `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
pub fn check_tag(tag: &str) -> Result<()> {
    let b = tag.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(RegistryError::TagInvalid(tag.to_string()))
    }
}

/// A manifest reference: a digest or a tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    Tag(String),
    Digest(pier_api::Digest),
}

impl Reference {
    pub fn parse(s: &str) -> Result<Reference> {
        if s.contains(':') {
            s.parse()
                .map(Reference::Digest)
                .map_err(|_| RegistryError::DigestInvalid(s.to_string()))
        } else {
            check_tag(s)?;
            Ok(Reference::Tag(s.to_string()))
        }
    }
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reference::Tag(t) => f.write_str(t),
            Reference::Digest(d) => f.write_str(d.as_str()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_tags() {
        for ok in ["a", "team/app", "a.b_c__d---e/f0", "localhost/x"] {
            check_repository(ok).unwrap();
        }
        for bad in [
            "",
            "A",
            "a//b",
            "-a",
            "a-",
            "a/",
            "a..b",
            "a@b",
            &"a".repeat(256),
        ] {
            assert!(check_repository(bad).is_err(), "{bad}");
        }
        for ok in ["latest", "_x", "1.0-rc_1", &"t".repeat(128)] {
            check_tag(ok).unwrap();
        }
        for bad in ["", ".x", "-x", "a:b", &"t".repeat(129)] {
            assert!(check_tag(bad).is_err(), "{bad}");
        }
        assert!(matches!(
            Reference::parse("sha256:zz"),
            Err(RegistryError::DigestInvalid(_))
        ));
    }
}
