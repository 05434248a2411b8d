//! Byte sizes as users write them (`64m`, `1.5g`, `10MiB`, `512`): the one parser behind
//! every size flag and option of both APIs and the CLI (`--memory`, `--shm-size`,
//! `--storage-opt size=`, `--opt size=`, `tmpfs size=`, `--log-opt max-size=`).
//!
//! The syntax is Docker's (`go-units`): a non-negative decimal number, an optional space,
//! and an optional unit `b`, `k`, `m`, `g`, `t` or `p`, case-insensitive, which may be
//! followed by `b` or `ib` (`kb`, `KiB`). Units are binary (`k` = 1024) as Docker's
//! `RAMInBytes` reads them, except where Docker reads them as decimal (`FromHumanSize`:
//! the json-file log driver's `max-size` on the Docker API), which [`ByteSize::parse_decimal`]
//! serves. Fractions are truncated to whole bytes.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why a size was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid size {input:?}: {why}; give a number with an optional unit b, k, m, g, t or p (case-insensitive, optionally followed by b or ib), such as 512, 64m, 1.5g or 10MiB")]
pub struct SizeError {
    /// The text as given.
    pub input: String,
    /// What was wrong with it.
    pub why: &'static str,
}

/// A number of bytes, parsed from Docker's size syntax (binary units by default).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct ByteSize(u64);

impl ByteSize {
    pub const fn new(bytes: u64) -> Self {
        ByteSize(bytes)
    }

    pub const fn bytes(self) -> u64 {
        self.0
    }

    /// Parses with binary units (`k` = 1024), as Docker's `RAMInBytes`.
    pub fn parse_binary(s: &str) -> Result<Self, SizeError> {
        parse(s, 1024)
    }

    /// Parses with decimal units (`k` = 1000), as Docker's `FromHumanSize`.
    pub fn parse_decimal(s: &str) -> Result<Self, SizeError> {
        parse(s, 1000)
    }
}

fn parse(input: &str, base: u64) -> Result<ByteSize, SizeError> {
    let bad = |why| SizeError {
        input: input.to_string(),
        why,
    };
    let s = input.trim();
    if s.starts_with('-') {
        return Err(bad("a size cannot be negative"));
    }
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    if num.is_empty() {
        return Err(bad("it does not start with a number"));
    }
    let n: f64 = num.parse().map_err(|_| bad("the number is malformed"))?;
    let unit = unit.strip_prefix(' ').unwrap_or(unit).to_ascii_lowercase();
    let power = match unit.as_bytes() {
        [] | [b'b'] => 0,
        [u, rest @ ..] if rest.is_empty() || rest == b"b" || rest == b"ib" => match u {
            b'k' => 1,
            b'm' => 2,
            b'g' => 3,
            b't' => 4,
            b'p' => 5,
            _ => return Err(bad("the unit is unknown")),
        },
        _ => return Err(bad("the unit is unknown")),
    };
    let bytes = n * (base.pow(power) as f64);
    // 2^64 as a float: anything at or past it does not fit.
    if bytes >= 18_446_744_073_709_551_616.0 {
        return Err(bad("it is too large"));
    }
    Ok(ByteSize(bytes as u64))
}

impl FromStr for ByteSize {
    type Err = SizeError;
    fn from_str(s: &str) -> Result<Self, SizeError> {
        ByteSize::parse_binary(s)
    }
}

impl TryFrom<String> for ByteSize {
    type Error = SizeError;
    fn try_from(s: String) -> Result<Self, SizeError> {
        s.parse()
    }
}

/// Written as a plain number of bytes, which parses back to the same size.
impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl From<ByteSize> for String {
    fn from(b: ByteSize) -> String {
        b.to_string()
    }
}

impl From<ByteSize> for u64 {
    fn from(b: ByteSize) -> u64 {
        b.0
    }
}

/// A size for people to read, in binary units with at most one decimal: `512 B`,
/// `2 GiB`, `12.2 GiB` (how messages state sizes and quotas).
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    let text = format!("{v:.1}");
    let text = text.strip_suffix(".0").unwrap_or(&text);
    format!("{text} {}", UNITS[unit])
}

crate::string_schema!(
    ByteSize,
    "A size in bytes, with an optional binary unit: 512, 64m, 1.5g, 10MiB."
);

#[cfg(test)]
mod tests {
    use super::*;

    fn bin(s: &str) -> u64 {
        ByteSize::parse_binary(s).unwrap().bytes()
    }

    #[test]
    fn human_sizes_in_binary_units() {
        assert_eq!(human(512), "512 B");
        assert_eq!(human(2 << 30), "2 GiB");
        assert_eq!(human(13_100_000_000), "12.2 GiB");
        assert_eq!(human(14 << 30), "14 GiB");
        assert_eq!(human(100 << 20), "100 MiB");
        assert_eq!(human(1536), "1.5 KiB");
    }

    #[test]
    fn binary_units_as_docker_ram_in_bytes() {
        assert_eq!(bin("512"), 512);
        assert_eq!(bin("10m"), 10 << 20);
        assert_eq!(bin("10M"), 10 << 20);
        assert_eq!(bin("1.5G"), 3 << 29);
        assert_eq!(bin("1.5k"), 1536);
        assert_eq!(bin("64kb"), 64 << 10);
        assert_eq!(bin("64KiB"), 64 << 10);
        assert_eq!(bin("2t"), 2 << 40);
        assert_eq!(bin("1p"), 1 << 50);
        assert_eq!(bin("100b"), 100);
        assert_eq!(bin("32 MB"), 32 << 20);
        assert_eq!(bin(" 8m "), 8 << 20);
        assert_eq!(bin("0"), 0);
        assert_eq!(bin("0.5"), 0);
        assert_eq!("64m".parse::<ByteSize>().unwrap(), ByteSize::new(64 << 20));
    }

    #[test]
    fn decimal_units_as_docker_from_human_size() {
        let dec = |s| ByteSize::parse_decimal(s).unwrap().bytes();
        assert_eq!(dec("10m"), 10_000_000);
        assert_eq!(dec("2k"), 2_000);
        assert_eq!(dec("1.5kB"), 1_500);
        assert_eq!(dec("100"), 100);
        assert!(ByteSize::parse_decimal("x").is_err());
    }

    #[test]
    fn bad_sizes_say_what_was_wrong() {
        for (bad, why) in [
            ("ten", "does not start with a number"),
            ("", "does not start with a number"),
            ("m", "does not start with a number"),
            ("-1m", "cannot be negative"),
            ("-1", "cannot be negative"),
            ("1.2.3k", "number is malformed"),
            ("10x", "unit is unknown"),
            ("10bb", "unit is unknown"),
            ("10kbb", "unit is unknown"),
            ("10kib2", "unit is unknown"),
            ("10 m b", "unit is unknown"),
            ("99999999999p", "too large"),
        ] {
            let e = ByteSize::parse_binary(bad).unwrap_err();
            let text = e.to_string();
            assert!(
                text.starts_with(&format!("invalid size {bad:?}: ")),
                "{text}"
            );
            assert!(text.contains(why), "{bad}: {text}");
            assert!(text.contains("such as 512, 64m, 1.5g or 10MiB"), "{text}");
        }
    }

    #[test]
    fn serde_reads_units_and_writes_bytes() {
        let s: ByteSize = serde_json::from_str("\"64m\"").unwrap();
        assert_eq!(s.bytes(), 64 << 20);
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(json, "\"67108864\"");
        assert_eq!(serde_json::from_str::<ByteSize>(&json).unwrap(), s);
        let e = serde_json::from_str::<ByteSize>("\"lots\"").unwrap_err();
        assert!(e.to_string().contains("invalid size \"lots\""), "{e}");
    }
}
