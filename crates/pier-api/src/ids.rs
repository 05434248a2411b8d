//! Resource IDs as the engine makes them: 64 lowercase hex digits (32 random bytes), as
//! Docker's. Containers, networks and anonymous volumes get one; `pier ps` and the
//! Docker API show the first 12 digits. A user may name a resource by a prefix of its ID,
//! so lookups take strings; these types are for what the engine generated and stores.

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why an ID was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} ID {id:?}: expected 64 lowercase hex digits, as `pier inspect` shows them")]
pub struct BadId {
    /// `container`, `network`, ...
    pub kind: &'static str,
    pub id: String,
}

fn is_id(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Bytes as lowercase hex digits (IDs, digests, names derived from hashes).
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// `n` random bytes from the kernel, as hex digits: new IDs. Panics if the kernel has no
/// randomness to give (an ID of zeros would collide with the next).
pub fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    getrandom::fill(&mut b).expect("the kernel's random source (getrandom) failed");
    hex(&b)
}

macro_rules! hex_id {
    ($(#[$doc:meta])* $ty:ident, $kind:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $ty(String);

        impl $ty {
            /// The ID of 32 random bytes.
            pub fn from_bytes(bytes: &[u8; 32]) -> Self {
                $ty($crate::ids::hex(bytes))
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
            /// The first 12 digits, as listings show it.
            pub fn short(&self) -> &str {
                &self.0[..12]
            }
        }

        impl TryFrom<String> for $ty {
            type Error = BadId;
            fn try_from(s: String) -> Result<Self, BadId> {
                if is_id(&s) {
                    Ok($ty(s))
                } else {
                    Err(BadId { kind: $kind, id: s })
                }
            }
        }

        impl FromStr for $ty {
            type Err = BadId;
            fn from_str(s: &str) -> Result<Self, BadId> {
                $ty::try_from(s.to_string())
            }
        }

        impl From<$ty> for String {
            fn from(id: $ty) -> String {
                id.0
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl Deref for $ty {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl Borrow<str> for $ty {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq<str> for $ty {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $ty {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl PartialEq<String> for $ty {
            fn eq(&self, other: &String) -> bool {
                &self.0 == other
            }
        }

        impl PartialEq<$ty> for String {
            fn eq(&self, other: &$ty) -> bool {
                *self == other.0
            }
        }

        impl PartialEq<$ty> for str {
            fn eq(&self, other: &$ty) -> bool {
                self == other.0
            }
        }

        crate::string_schema!($ty, concat!("A ", $kind, " ID: 64 lowercase hex digits."));
    };
}

hex_id!(
    /// A container's ID.
    ContainerId,
    "container"
);
hex_id!(
    /// A network's ID.
    NetworkId,
    "network"
);

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "4f9c2b7a1e0d3c5b6a7980f1e2d3c4b5a69788f0e1d2c3b4a5968778f0e1d2c3";

    #[test]
    fn ids_are_64_lowercase_hex_digits() {
        let id: ContainerId = HEX.parse().unwrap();
        assert_eq!(id.short(), "4f9c2b7a1e0d");
        assert_eq!(id, HEX);
        assert_eq!(HEX.to_string(), id);
        assert_eq!(&id[..4], "4f9c");
        let bytes = [0xab; 32];
        assert_eq!(ContainerId::from_bytes(&bytes).as_str(), "ab".repeat(32));
        for bad in [
            "",
            &HEX[..12],
            &HEX[..63],
            &format!("{HEX}0"),
            &HEX.to_uppercase(),
            &format!("{}g", &HEX[..63]),
            "web",
        ] {
            let e = bad.parse::<ContainerId>().unwrap_err();
            assert_eq!(
                e.to_string(),
                format!("invalid container ID {bad:?}: expected 64 lowercase hex digits, as `pier inspect` shows them")
            );
        }
        let e = "x".parse::<NetworkId>().unwrap_err();
        assert!(e.to_string().starts_with("invalid network ID \"x\""), "{e}");
    }

    #[test]
    fn ids_travel_as_strings() {
        let id: NetworkId = HEX.parse().unwrap();
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{HEX}\""));
        assert_eq!(serde_json::from_str::<NetworkId>(&json).unwrap(), id);
        assert!(serde_json::from_str::<NetworkId>("\"abc\"").is_err());
    }

    #[test]
    fn hex_and_random_ids() {
        assert_eq!(hex(&[0, 0xab, 0x10]), "00ab10");
        let (a, b) = (random_hex(16), random_hex(16));
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()), "{a}");
        assert_ne!(a, b);
    }
}
