//! A volume's driver and `--opt` options, checked before anything is made.

use std::collections::BTreeMap;

use pier_api::ByteSize;
use pier_storage::block::Format;

use crate::error::invalid;
use crate::error::EngineResult;

/// Which kind of volume a driver makes.
pub(crate) fn parse_driver(driver: Option<&str>) -> EngineResult<bool> {
    match driver {
        None | Some("local") => Ok(false),
        Some("block") => Ok(true),
        Some(d) => Err(invalid(format!(
            "volume driver {d:?} is not supported; use local or block"
        ))),
    }
}

/// A volume's options, checked.
pub(crate) struct VolumeOptions {
    pub size: Option<u64>,
    pub inodes: Option<u64>,
    pub format: Format,
    pub ext4_fs: bool,
}

impl VolumeOptions {
    /// Reads `--opt` options for a local (or, with `block`, a block) volume.
    pub fn parse(block: bool, options: &BTreeMap<String, String>) -> EngineResult<Self> {
        let mut o = VolumeOptions {
            size: None,
            inodes: None,
            format: Format::Raw,
            ext4_fs: false,
        };
        for (k, v) in options {
            match k.as_str() {
                "format" if block => {
                    o.format = Format::parse(v)
                        .ok_or_else(|| invalid(format!("--opt format={v}: use raw or qcow2")))?;
                }
                "fs" if block => {
                    o.ext4_fs = match v.as_str() {
                        "ext4" => true,
                        "none" => false,
                        _ => return Err(invalid(format!("--opt fs={v}: use ext4 or none"))),
                    };
                }
                "size" => {
                    let n = v
                        .parse::<ByteSize>()
                        .map_err(|e| invalid(format!("--opt size: {e}")))?
                        .bytes();
                    if n < (1 << 20) {
                        return Err(invalid(format!(
                            "--opt size={v} is too small: give at least 1m"
                        )));
                    }
                    o.size = Some(n);
                }
                "inodes" if block => {
                    return Err(invalid("inodes= is for local volumes; a block volume's filesystem is its own"))
                }
                "inodes" => {
                    let n: u64 = v.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                        invalid(format!("--opt inodes={v}: give a positive number"))
                    })?;
                    o.inodes = Some(n);
                }
                _ if block => {
                    return Err(invalid(format!(
                        "unknown block volume option {k:?}: use size=BYTES, format=raw|qcow2, fs=ext4|none"
                    )))
                }
                _ => {
                    return Err(invalid(format!(
                        "unknown volume option {k:?}: use size=BYTES or inodes=N"
                    )))
                }
            }
        }
        if block && o.size.is_none() {
            return Err(invalid("a block volume needs a size: --opt size=1g"));
        }
        Ok(o)
    }

    /// The size of the filesystem image to make, if any: the size asked, or with inodes
    /// alone a filesystem as large as the free space allows, capped at 1 GiB.
    pub fn image_size(&self) -> Option<u64> {
        match (self.size, self.inodes) {
            (Some(s), _) => Some(s),
            (None, Some(_)) => Some(1 << 30),
            (None, None) => None,
        }
    }
}
