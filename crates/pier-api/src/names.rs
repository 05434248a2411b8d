//! Validated names: project names and content digests.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why a name or digest was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NameError {
    #[error("invalid project name {0:?}: use 1-63 lowercase letters, digits and '-', starting with a letter")]
    Project(String),
    #[error("invalid digest {0:?}: expected \"sha256:\" followed by 64 lowercase hex digits")]
    Digest(String),
}

/// A project (tenant) name. Every resource belongs to one; `default` for now.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ProjectName(String);

impl ProjectName {
    pub fn default_project() -> Self {
        ProjectName(crate::DEFAULT_PROJECT.to_string())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for ProjectName {
    fn default() -> Self {
        Self::default_project()
    }
}

impl TryFrom<String> for ProjectName {
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, NameError> {
        let ok = (1..=63).contains(&s.len())
            && s.starts_with(|c: char| c.is_ascii_lowercase())
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if ok {
            Ok(ProjectName(s))
        } else {
            Err(NameError::Project(s))
        }
    }
}

impl From<ProjectName> for String {
    fn from(p: ProjectName) -> String {
        p.0
    }
}

impl fmt::Display for ProjectName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A sha256 content digest, `sha256:<64 hex>`. The only algorithm Pier stores.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Digest(String);

impl Digest {
    /// Builds a digest from 32 raw sha256 bytes.
    pub fn from_sha256_bytes(bytes: &[u8]) -> Self {
        Digest(format!("sha256:{}", crate::ids::hex(bytes)))
    }
    /// The 64 hex digits without the algorithm.
    pub fn hex(&self) -> &str {
        &self.0[7..]
    }
    /// The first 12 hex digits, as Docker shows image IDs.
    pub fn short(&self) -> &str {
        &self.0[7..19]
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// Parses either `sha256:<hex>` or a bare 64-digit hex string.
    pub fn parse_lenient(s: &str) -> Result<Self, NameError> {
        if s.len() == 64 && !s.contains(':') {
            Digest::try_from(format!("sha256:{s}"))
        } else {
            Digest::try_from(s.to_string())
        }
    }
}

impl TryFrom<String> for Digest {
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, NameError> {
        match s.strip_prefix("sha256:") {
            Some(hex)
                if hex.len() == 64
                    && hex
                        .bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) =>
            {
                Ok(Digest(s))
            }
            _ => Err(NameError::Digest(s)),
        }
    }
}

impl FromStr for Digest {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        Digest::try_from(s.to_string())
    }
}

impl From<Digest> for String {
    fn from(d: Digest) -> String {
        d.0
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

crate::string_schema!(
    ProjectName,
    "A project name: 1-63 lowercase letters, digits and '-'."
);

crate::string_schema!(
    Digest,
    "A content digest: sha256: and 64 lowercase hex digits."
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_names() {
        assert!(ProjectName::try_from("default".to_string()).is_ok());
        assert!(ProjectName::try_from("team-7".to_string()).is_ok());
        for bad in ["", "Default", "7team", "a_b", &"a".repeat(64)] {
            assert!(ProjectName::try_from(bad.to_string()).is_err(), "{bad}");
        }
    }

    #[test]
    fn digests() {
        let hex = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let d: Digest = format!("sha256:{hex}").parse().unwrap();
        assert_eq!(d.hex(), hex);
        assert_eq!(d.short(), "e3b0c44298fc");
        assert_eq!(Digest::parse_lenient(hex).unwrap(), d);
        for bad in [
            "sha256:abc",
            "md5:00",
            &format!("sha256:{}", hex.to_uppercase()),
            hex,
        ] {
            assert!(bad.parse::<Digest>().is_err(), "{bad}");
        }
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(serde_json::from_str::<Digest>(&json).unwrap(), d);
        assert!(serde_json::from_str::<Digest>("\"sha256:zz\"").is_err());
    }
}
