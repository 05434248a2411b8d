//! Detach keys: the key sequence that leaves an attached terminal session (attach, exec,
//! `run -it`) with the container or command running on. One parser for Docker's syntax
//! (`ctrl-p,ctrl-q`, `ctrl-a,x`, `DEL`), used by both APIs and the CLI, and the scanner
//! that finds the sequence in a session's input.
//!
//! Docker's syntax (moby/term `ToBytes`): keys separated by commas, each a single
//! character, `ctrl-` followed by one of `@ a-z [ \ ] ^ _`, or `DEL`. The default is
//! ctrl-p ctrl-q.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Docker's default detach keys, ctrl-p ctrl-q.
pub const DEFAULT: [u8; 2] = [0x10, 0x11];

/// Why a detach sequence was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid detach keys {input:?}: {key:?} is neither a single character, DEL nor ctrl-<a-z, @, [, \\, ], ^ or _>; write them as ctrl-p,ctrl-q")]
pub struct DetachKeysError {
    /// The sequence as given.
    pub input: String,
    /// The key that was not understood.
    pub key: String,
}

/// A detach sequence: the bytes the keys send, and the text it was written as.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DetachKeys {
    text: String,
    bytes: Vec<u8>,
}

impl DetachKeys {
    /// Parses Docker's syntax. An empty sequence is refused (Docker reads an empty value
    /// as "the default", which callers express with `None`).
    pub fn parse(s: &str) -> Result<Self, DetachKeysError> {
        let bad = |k: &str| DetachKeysError {
            input: s.to_string(),
            key: k.to_string(),
        };
        let bytes = s
            .split(',')
            .map(|k| {
                if let Some(c) = k.strip_prefix("ctrl-") {
                    match c.as_bytes() {
                        [b @ b'a'..=b'z'] => Ok(b - b'a' + 1),
                        [b @ (b'@' | b'[' | b'\\' | b']' | b'^' | b'_')] => Ok(b - b'@'),
                        _ => Err(bad(k)),
                    }
                } else if k == "DEL" {
                    Ok(127)
                } else {
                    match k.as_bytes() {
                        [b] => Ok(*b),
                        _ => Err(bad(k)),
                    }
                }
            })
            .collect::<Result<Vec<u8>, _>>()?;
        Ok(DetachKeys {
            text: s.to_string(),
            bytes,
        })
    }

    /// The bytes the sequence sends.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The sequence as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl Default for DetachKeys {
    fn default() -> Self {
        DetachKeys {
            text: "ctrl-p,ctrl-q".into(),
            bytes: DEFAULT.to_vec(),
        }
    }
}

impl fmt::Display for DetachKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl TryFrom<String> for DetachKeys {
    type Error = DetachKeysError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        DetachKeys::parse(&s)
    }
}

impl From<DetachKeys> for String {
    fn from(k: DetachKeys) -> String {
        k.text
    }
}

crate::string_schema!(
    DetachKeys,
    "Detach keys in Docker's syntax: comma-separated single characters, ctrl-<a-z @ [ \\ ] ^ _> or DEL, such as ctrl-p,ctrl-q"
);

/// Finds a detach sequence in input: what passes on, the bytes that could start the
/// sequence held back until the next byte says whether they do.
#[derive(Debug, Clone)]
pub struct Scanner {
    keys: Vec<u8>,
    matched: usize,
}

impl Scanner {
    /// A scanner for `keys` (none: everything passes).
    pub fn new(keys: &[u8]) -> Self {
        Scanner {
            keys: keys.to_vec(),
            matched: 0,
        }
    }

    /// The bytes of `input` to pass on, and whether the sequence was completed (the
    /// bytes after it are dropped: the session detaches).
    pub fn feed(&mut self, input: &[u8]) -> (Vec<u8>, bool) {
        let mut out = Vec::with_capacity(input.len());
        if self.keys.is_empty() {
            out.extend_from_slice(input);
            return (out, false);
        }
        for &b in input {
            if b == self.keys[self.matched] {
                self.matched += 1;
                if self.matched == self.keys.len() {
                    self.matched = 0;
                    return (out, true);
                }
                continue;
            }
            // Not the sequence after all: what was held goes on, and this byte may start
            // it again.
            out.extend_from_slice(&self.keys[..self.matched]);
            self.matched = 0;
            if b == self.keys[0] {
                if self.keys.len() == 1 {
                    return (out, true);
                }
                self.matched = 1;
            } else {
                out.push(b);
            }
        }
        (out, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_as_docker_writes_them() {
        let k = |s: &str| DetachKeys::parse(s).map(|k| k.bytes().to_vec());
        assert_eq!(k("ctrl-p,ctrl-q").unwrap(), DEFAULT);
        assert_eq!(k("ctrl-a,x").unwrap(), vec![1, b'x']);
        assert_eq!(k("ctrl-@,ctrl-_,ctrl-\\").unwrap(), vec![0, 31, 28]);
        assert_eq!(k("DEL").unwrap(), vec![127]);
        let e = k("ctrl-1").unwrap_err();
        assert_eq!(e.key, "ctrl-1");
        assert!(e.to_string().contains("ctrl-p,ctrl-q"), "{e}");
        assert!(k("ab").is_err());
        assert!(k("").is_err());
        assert!(k("ctrl-P").is_err(), "Docker's names are lower-case");
        let d: DetachKeys = serde_json::from_str("\"ctrl-x\"").unwrap();
        assert_eq!((d.bytes(), d.as_str()), (&[24u8][..], "ctrl-x"));
        assert!(serde_json::from_str::<DetachKeys>("\"ctrl-\"").is_err());
        assert_eq!(DetachKeys::default().bytes(), DEFAULT);
    }

    #[test]
    fn the_scanner_holds_a_partial_sequence_and_detaches_on_the_whole() {
        let mut s = Scanner::new(&DEFAULT);
        assert_eq!(s.feed(b"ls\n"), (b"ls\n".to_vec(), false));
        // ctrl-p alone is held, then passed on with what follows when it is not ctrl-q.
        assert_eq!(s.feed(&[0x10]), (vec![], false));
        assert_eq!(s.feed(b"a"), (vec![0x10, b'a'], false));
        // ctrl-p ctrl-p ctrl-q: the first passes on, the two others detach.
        assert_eq!(s.feed(&[0x10, 0x10, 0x11, b'z']), (vec![0x10], true));
        // Across reads.
        let mut s = Scanner::new(&DEFAULT);
        assert_eq!(s.feed(&[b'x', 0x10]), (vec![b'x'], false));
        assert_eq!(s.feed(&[0x11]), (vec![], true));
        // One key.
        let mut s = Scanner::new(&[0x10]);
        assert_eq!(s.feed(b"ab\x10cd"), (b"ab".to_vec(), true));
        // None: everything passes.
        let mut s = Scanner::new(&[]);
        assert_eq!(s.feed(&[0x10, 0x11]), (vec![0x10, 0x11], false));
    }
}
