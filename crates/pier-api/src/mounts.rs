//! Mount flags as users write them, parsed once into [`MountSpec`]s: `-v SRC:DST[:OPTS]`
//! ([`VolumeFlag`], also Docker's `HostConfig.Binds`),
//! `--mount type=...,source=...,target=...,readonly` ([`MountFlag`]) and
//! `--tmpfs DST[:OPTS]` ([`TmpfsFlag`], also Docker's `HostConfig.Tmpfs`). Each keeps the text
//! as given beside the spec it means, and travels as that text.
//!
//! Relative host paths are left as given: only the client knows what they are relative
//! to, and it makes them absolute before sending.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::size::ByteSize;
use crate::volumes::{MountKind, MountSpec};

/// Why a mount flag was refused; the message names the flag and a good form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct MountFlagError(String);

/// A checked `-v` flag: `NAME:/path[:opts]` (a named volume, made on first use),
/// `/host/path:/path[:opts]` (a bind mount; a missing host directory is made, as Docker's
/// `-v` does) or `/path` (an anonymous volume). Options: `ro`/`readonly`, `rw`, a
/// propagation mode, `nocopy`, and the SELinux and macOS ones Docker accepts, which mean
/// nothing here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct VolumeFlag {
    text: String,
    spec: MountSpec,
}

impl VolumeFlag {
    pub fn spec(&self) -> &MountSpec {
        &self.spec
    }
    pub fn into_spec(self) -> MountSpec {
        self.spec
    }
}

impl FromStr for VolumeFlag {
    type Err = MountFlagError;
    fn from_str(v: &str) -> Result<Self, MountFlagError> {
        let parts: Vec<&str> = v.split(':').collect();
        let (source, target, opts) = match parts.as_slice() {
            [t] => (None, *t, ""),
            [s, t] => (Some(*s), *t, ""),
            [s, t, o] => (Some(*s), *t, *o),
            _ => {
                return Err(MountFlagError(format!(
                    "invalid volume specification {v:?}: use NAME:/path[:ro], /host/path:/path[:ro] or /path"
                )))
            }
        };
        let mut m = MountSpec {
            target: target.to_string(),
            ..Default::default()
        };
        match source {
            Some(s) if s.starts_with('/') => {
                m.kind = MountKind::Bind;
                m.source = Some(s.to_string());
                m.options.insert("create_host_path".into(), "true".into());
            }
            Some(s) if s.contains('/') || s.starts_with(['.', '~']) => {
                return Err(MountFlagError(format!(
                    "invalid volume specification {v:?}: a bind mount needs an absolute host path, and {s:?} is relative (write \"$PWD/{}:{target}\" for one under the working directory); a bare name such as data:{target} is a named volume",
                    s.trim_start_matches("./")
                )))
            }
            Some(s) => {
                m.kind = MountKind::Volume;
                m.source = Some(s.to_string());
            }
            None => m.kind = MountKind::Volume,
        }
        for o in opts.split(',').filter(|o| !o.is_empty()) {
            match o {
                "ro" | "readonly" => m.read_only = true,
                "rw" | "z" | "Z" | "consistent" | "cached" | "delegated" => {}
                "private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave" => {
                    m.options.insert("propagation".into(), o.into());
                }
                "nocopy" => {
                    m.options.insert("nocopy".into(), "true".into());
                }
                _ => {
                    return Err(MountFlagError(format!(
                        "invalid mode {o:?} in volume specification {v:?}: use ro, rw, nocopy or a propagation mode (rprivate, private, rshared, shared, rslave, slave)"
                    )))
                }
            }
        }
        Ok(VolumeFlag {
            text: v.to_string(),
            spec: m,
        })
    }
}

/// A checked `--mount` flag: comma-separated `key=value` pairs, `type` (`bind`, `volume`
/// (the default) or `tmpfs`), `source`/`src`, `target`/`destination`/`dst` (required),
/// `readonly`/`ro` (alone or `=true`/`=1`), `bind-propagation`, `volume-nocopy`,
/// `tmpfs-size` and `tmpfs-mode`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MountFlag {
    text: String,
    spec: MountSpec,
}

impl MountFlag {
    pub fn spec(&self) -> &MountSpec {
        &self.spec
    }
    pub fn into_spec(self) -> MountSpec {
        self.spec
    }
}

impl FromStr for MountFlag {
    type Err = MountFlagError;
    fn from_str(v: &str) -> Result<Self, MountFlagError> {
        let mut m = MountSpec::default();
        let mut kind = None;
        for kv in v.split(',') {
            let (k, val) = kv.split_once('=').unwrap_or((kv, ""));
            match k {
                "type" => {
                    kind = Some(match val {
                        "bind" => MountKind::Bind,
                        "volume" => MountKind::Volume,
                        "tmpfs" => MountKind::Tmpfs,
                        _ => {
                            return Err(MountFlagError(format!(
                                "--mount type {val:?}: use bind, volume or tmpfs"
                            )))
                        }
                    })
                }
                "source" | "src" => m.source = Some(val.to_string()),
                "target" | "destination" | "dst" => m.target = val.to_string(),
                "readonly" | "ro" => m.read_only = val.is_empty() || val == "true" || val == "1",
                "bind-propagation" => {
                    m.options.insert("propagation".into(), val.into());
                }
                "volume-nocopy" => {
                    m.options.insert("nocopy".into(), "true".into());
                }
                "tmpfs-size" => {
                    m.options.insert("size".into(), val.into());
                }
                "tmpfs-mode" => {
                    m.options.insert("mode".into(), val.into());
                }
                _ => {
                    return Err(MountFlagError(format!(
                        "unknown --mount key {k:?} in {v:?}: use type, source, target, readonly, bind-propagation, volume-nocopy, tmpfs-size or tmpfs-mode"
                    )))
                }
            }
        }
        m.kind = kind.unwrap_or(MountKind::Volume);
        if m.target.is_empty() {
            return Err(MountFlagError(format!("--mount {v:?} needs target=/path")));
        }
        Ok(MountFlag {
            text: v.to_string(),
            spec: m,
        })
    }
}

/// A checked `--tmpfs DST[:OPTS]` flag (Docker's `HostConfig.Tmpfs` carries the same as
/// `DST` -> `OPTS`). Options: `size=` (a [`ByteSize`]), `mode=` (octal), `ro`, and the
/// mount flags tmpfs mounts get anyway (`rw`, `nosuid`, `nodev`, `noexec`, `exec`,
/// `suid`, `dev`); `uid`, `gid`, `nr_inodes` and `nr_blocks` are refused as not
/// supported yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TmpfsFlag {
    text: String,
    spec: MountSpec,
}

impl TmpfsFlag {
    /// Parses a target and its options, as Docker's `HostConfig.Tmpfs` gives them.
    pub fn from_parts(target: &str, opts: &str) -> Result<Self, MountFlagError> {
        let mut m = MountSpec {
            kind: MountKind::Tmpfs,
            target: target.to_string(),
            ..Default::default()
        };
        for o in opts.split(',').filter(|o| !o.is_empty()) {
            match o.split_once('=') {
                Some(("size", s)) => {
                    s.parse::<ByteSize>()
                        .map_err(|e| MountFlagError(format!("tmpfs size: {e}")))?;
                    m.options.insert("size".into(), s.into());
                }
                Some(("mode", s)) => {
                    u32::from_str_radix(s, 8).map_err(|_| {
                        MountFlagError(format!("tmpfs mode {s:?} must be octal, e.g. 1777"))
                    })?;
                    m.options.insert("mode".into(), s.into());
                }
                Some((k @ ("uid" | "gid" | "nr_inodes" | "nr_blocks"), v)) => {
                    v.parse::<u64>().map_err(|_| {
                        MountFlagError(format!("tmpfs option {o:?}: {k} takes a number"))
                    })?;
                    m.options.insert(k.into(), v.into());
                }
                _ if o == "ro" => m.read_only = true,
                _ if matches!(
                    o,
                    "rw" | "nosuid" | "nodev" | "noexec" | "exec" | "suid" | "dev"
                ) => {}
                _ => {
                    return Err(MountFlagError(format!(
                        "invalid tmpfs option {o:?} for {target}: use size=, mode=, uid=, gid=, nr_inodes=, nr_blocks=, ro, rw, nosuid, nodev, noexec, exec, suid or dev"
                    )))
                }
            }
        }
        let text = if opts.is_empty() {
            target.to_string()
        } else {
            format!("{target}:{opts}")
        };
        Ok(TmpfsFlag { text, spec: m })
    }

    pub fn spec(&self) -> &MountSpec {
        &self.spec
    }
    pub fn into_spec(self) -> MountSpec {
        self.spec
    }
}

impl FromStr for TmpfsFlag {
    type Err = MountFlagError;
    fn from_str(v: &str) -> Result<Self, MountFlagError> {
        let (target, opts) = v.split_once(':').unwrap_or((v, ""));
        TmpfsFlag::from_parts(target, opts)
    }
}

macro_rules! text_serde {
    ($ty:ty, $desc:expr) => {
        impl TryFrom<String> for $ty {
            type Error = MountFlagError;
            fn try_from(s: String) -> Result<Self, MountFlagError> {
                s.parse()
            }
        }
        impl From<$ty> for String {
            fn from(f: $ty) -> String {
                f.text
            }
        }
        /// The flag as given.
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.text)
            }
        }
        crate::string_schema!($ty, $desc);
    };
}

text_serde!(
    VolumeFlag,
    "A -v flag: NAME:/path[:opts], /host/path:/path[:opts] or /path."
);
text_serde!(TmpfsFlag, "A --tmpfs flag: /path[:size=64m,mode=1777,ro].");
text_serde!(
    MountFlag,
    "A --mount flag: type=bind|volume|tmpfs,source=...,target=...[,readonly]."
);

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn opts(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn volume_flags() {
        let v: VolumeFlag = "data:/data".parse().unwrap();
        assert_eq!(
            v.spec(),
            &MountSpec {
                kind: MountKind::Volume,
                source: Some("data".into()),
                target: "/data".into(),
                ..Default::default()
            }
        );
        let b: VolumeFlag = "/srv/site:/site:ro,rshared".parse().unwrap();
        assert_eq!(
            b.into_spec(),
            MountSpec {
                kind: MountKind::Bind,
                source: Some("/srv/site".into()),
                target: "/site".into(),
                read_only: true,
                options: opts(&[("create_host_path", "true"), ("propagation", "rshared")]),
            }
        );
        let a: VolumeFlag = "/cache".parse().unwrap();
        assert_eq!(
            (a.spec().kind, a.spec().source.clone()),
            (MountKind::Volume, None)
        );
        let n: VolumeFlag = "v:/v:nocopy,z".parse().unwrap();
        assert_eq!(n.spec().options, opts(&[("nocopy", "true")]));
    }

    #[test]
    fn bad_volume_flags_say_what_was_wrong() {
        let e = "/a:/b:bogus".parse::<VolumeFlag>().unwrap_err().to_string();
        assert!(
            e.starts_with(
                "invalid mode \"bogus\" in volume specification \"/a:/b:bogus\": use ro, rw"
            ),
            "{e}"
        );
        let e = "a:b:c:d".parse::<VolumeFlag>().unwrap_err().to_string();
        assert_eq!(
            e,
            "invalid volume specification \"a:b:c:d\": use NAME:/path[:ro], /host/path:/path[:ro] or /path"
        );
        let e = "./site/html:/x"
            .parse::<VolumeFlag>()
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "invalid volume specification \"./site/html:/x\": a bind mount needs an absolute host path, and \"./site/html\" is relative (write \"$PWD/site/html:/x\" for one under the working directory); a bare name such as data:/x is a named volume"
        );
        assert!("site/html:/x:ro".parse::<VolumeFlag>().is_err());
        assert!("~/x:/x".parse::<VolumeFlag>().is_err());
    }

    #[test]
    fn mount_flags() {
        let m: MountFlag = "type=bind,source=/srv,target=/x,readonly,bind-propagation=rslave"
            .parse()
            .unwrap();
        assert_eq!(
            m.spec(),
            &MountSpec {
                kind: MountKind::Bind,
                source: Some("/srv".into()),
                target: "/x".into(),
                read_only: true,
                options: opts(&[("propagation", "rslave")]),
            }
        );
        let t: MountFlag = "type=tmpfs,dst=/t,tmpfs-size=64m,tmpfs-mode=1770"
            .parse()
            .unwrap();
        assert_eq!(t.spec().kind, MountKind::Tmpfs);
        assert_eq!(t.spec().options, opts(&[("mode", "1770"), ("size", "64m")]));
        let v: MountFlag = "src=db,target=/db,ro=false,volume-nocopy".parse().unwrap();
        assert_eq!(v.spec().kind, MountKind::Volume);
        assert!(!v.spec().read_only);
        assert_eq!(v.spec().source.as_deref(), Some("db"));
    }

    #[test]
    fn bad_mount_flags_say_what_was_wrong() {
        for (bad, msg) in [
            (
                "type=nfs,target=/x",
                "--mount type \"nfs\": use bind, volume or tmpfs",
            ),
            (
                "type=bind,source=/a",
                "--mount \"type=bind,source=/a\" needs target=/path",
            ),
            (
                "target=/x,colour=red",
                "unknown --mount key \"colour\" in \"target=/x,colour=red\": use type, source",
            ),
        ] {
            let e = bad.parse::<MountFlag>().unwrap_err().to_string();
            assert!(e.starts_with(msg), "{bad}: {e}");
        }
    }

    #[test]
    fn tmpfs_flags() {
        let t: TmpfsFlag = "/run:rw,noexec,size=64m,mode=1770,ro".parse().unwrap();
        assert_eq!(
            t.spec(),
            &MountSpec {
                kind: MountKind::Tmpfs,
                target: "/run".into(),
                read_only: true,
                options: opts(&[("mode", "1770"), ("size", "64m")]),
                ..Default::default()
            }
        );
        assert_eq!(t.to_string(), "/run:rw,noexec,size=64m,mode=1770,ro");
        let plain: TmpfsFlag = "/cache".parse().unwrap();
        assert_eq!(plain.spec().options, BTreeMap::new());
        assert_eq!(TmpfsFlag::from_parts("/cache", "").unwrap(), plain);
        for (bad, msg) in [
            ("/t:size=lots", "tmpfs size: invalid size \"lots\""),
            ("/t:mode=999", "tmpfs mode \"999\" must be octal, e.g. 1777"),
            ("/t:uid=x", "tmpfs option \"uid=x\": uid takes a number"),
            (
                "/t:sync",
                "invalid tmpfs option \"sync\" for /t: use size=, mode=, uid=",
            ),
        ] {
            let e = bad.parse::<TmpfsFlag>().unwrap_err().to_string();
            assert!(e.starts_with(msg), "{bad}: {e}");
        }
        let owned: TmpfsFlag = "/o:uid=5,gid=6,nr_inodes=100".parse().unwrap();
        assert_eq!(
            owned.spec().options,
            opts(&[("gid", "6"), ("nr_inodes", "100"), ("uid", "5")])
        );
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(serde_json::from_str::<TmpfsFlag>(&json).unwrap(), t);
    }

    #[test]
    fn flags_travel_as_given() {
        let v: VolumeFlag = "/srv:/srv:ro".parse().unwrap();
        let json = serde_json::to_string(&v).unwrap();
        assert_eq!(json, "\"/srv:/srv:ro\"");
        assert_eq!(serde_json::from_str::<VolumeFlag>(&json).unwrap(), v);
        let m: MountFlag = "type=volume,source=db,target=/db".parse().unwrap();
        assert_eq!(m.to_string(), "type=volume,source=db,target=/db");
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(serde_json::from_str::<MountFlag>(&json).unwrap(), m);
        let e = serde_json::from_str::<VolumeFlag>("\"/a:/b:bogus\"").unwrap_err();
        assert!(e.to_string().contains("invalid mode"), "{e}");
        assert!(serde_json::from_str::<MountFlag>("\"type=bind\"").is_err());
    }
}
