//! Snapshots of a volume (crash-consistent copies kept beside it), restore, and export
//! and import as a tar.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use pier_api::volumes::{SnapshotInfo, VolumeCreate, VolumeInspect};
use pier_api::{ErrorKind, ProjectName};

use super::{st, Volumes};
use crate::error::{conflict, internal, invalid};
use crate::error::{EngineError, EngineResult};
use crate::names::valid_name;
use crate::RequestContext;

fn no_snapshot(name: &str, snap: &str) -> EngineError {
    EngineError::new(
        ErrorKind::NotFound,
        format!("volume {name} has no snapshot {snap} (see `pier volume snapshots {name}`)"),
    )
}

impl Volumes {
    fn snapshots_dir(&self, project: &ProjectName, name: &str) -> PathBuf {
        self.vdir(project, name).join("snapshots")
    }

    pub fn snapshots(&self, ctx: &RequestContext, name: &str) -> Vec<String> {
        let project = ctx.project();
        let mut v: Vec<String> = fs::read_dir(self.snapshots_dir(project, name))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| !n.starts_with('.'))
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    /// The snapshots with when each was taken and what it takes on the host's disk.
    pub fn snapshot_infos(&self, ctx: &RequestContext, name: &str) -> Vec<SnapshotInfo> {
        let dir = self.snapshots_dir(ctx.project(), name);
        self.snapshots(ctx, name)
            .into_iter()
            .map(|snap| {
                let path = dir.join(&snap);
                // Its directory's last entry is made when the copy starts.
                let created = fs::metadata(&path)
                    .and_then(|m| m.modified())
                    .map(|t| {
                        let secs = t
                            .duration_since(std::time::UNIX_EPOCH)
                            .map_or(0, |d| d.as_secs() as i64);
                        pier_api::time::format_rfc3339(secs)
                    })
                    .unwrap_or_default();
                let size = fs::read_dir(&path)
                    .map(|d| {
                        d.flatten()
                            .map(|e| match e.file_type() {
                                Ok(t) if t.is_dir() => self.backend.dir_usage(&e.path()).bytes,
                                _ => self.backend.file_usage(&e.path()),
                            })
                            .sum()
                    })
                    .unwrap_or(0);
                SnapshotInfo {
                    name: snap,
                    created,
                    size,
                }
            })
            .collect()
    }

    /// A crash-consistent copy of the volume. Image volumes are frozen (the kernel
    /// flushes and blocks writers) while their image is copied; directory volumes are
    /// copied while `quiesce` holds their users paused.
    pub fn snapshot(
        &self,
        project: &ProjectName,
        name: &str,
        snap: &str,
        quiesce: &dyn Fn(bool),
    ) -> EngineResult<()> {
        let v = self.get(project, name)?;
        if !valid_name(snap) {
            return Err(invalid(format!("invalid snapshot name {snap:?}: use letters, digits, '_', '.' and '-', starting with a letter or digit")));
        }
        let dir = self.snapshots_dir(project, name);
        let dest = dir.join(snap);
        if dest.exists() {
            return Err(conflict(format!(
                "volume {name} already has a snapshot {snap}: remove it first or pick another name"
            )));
        }
        // Made under a temporary name and renamed: a crash leaves no half snapshot.
        let tmp = dir.join(format!(".tmp-{snap}"));
        let _ = self.backend.remove(&tmp);
        self.backend.create_dir(&tmp).map_err(st)?;
        let r = self
            .copy_content(&v, &tmp, quiesce)
            .and_then(|()| self.backend.rename(&tmp, &dest).map_err(st));
        if let Err(e) = r {
            let _ = self.backend.remove(&tmp);
            return Err(e);
        }
        Ok(())
    }

    /// Copies the volume's content (its image, or its files) into `tmp`.
    fn copy_content(
        &self,
        v: &VolumeInspect,
        tmp: &Path,
        quiesce: &dyn Fn(bool),
    ) -> EngineResult<()> {
        let data = self.mountpoint(&v.project, &v.name);
        if let Some(disk) = self.disk(v) {
            // Users paused, and the filesystem (if mounted) frozen, while the image is
            // copied.
            quiesce(true);
            let frozen = if self.mounts.is_mounted(&data) {
                self.backend.freeze(&data).ok()
            } else {
                None
            };
            let file = disk.image.file_name().expect("a file").to_owned();
            let r = self
                .backend
                .copy_image(&disk.image, &tmp.join(file))
                .map_err(st);
            drop(frozen);
            quiesce(false);
            r
        } else if v.size_limit.is_some() || v.inode_limit.is_some() {
            let frozen = self.backend.freeze(&data).map_err(st)?;
            let img = self.vdir(&v.project, &v.name).join("disk.img");
            let r = self.backend.copy_image(&img, &tmp.join("disk.img"));
            drop(frozen);
            r.map_err(st)
        } else {
            self.backend.create_dir(&tmp.join("data")).map_err(st)?;
            quiesce(true);
            let r = self.backend.copy_tree(&data, &tmp.join("data")).map_err(st);
            quiesce(false);
            r
        }
    }

    /// Puts a snapshot's content back; the caller has checked no running container uses
    /// the volume.
    pub fn restore(&self, project: &ProjectName, name: &str, snap: &str) -> EngineResult<()> {
        let v = self.get(project, name)?;
        let src = self.snapshots_dir(project, name).join(snap);
        if !src.is_dir() || snap.starts_with('.') {
            return Err(no_snapshot(name, snap));
        }
        let data = self.mountpoint(project, name);
        let vdir = self.vdir(project, name);
        if let Some(disk) = self.disk(&v) {
            self.release_disk(&v, &disk).map_err(st)?;
            let file = disk.image.file_name().expect("a file").to_owned();
            let tmp = vdir.join("disk.restoring");
            self.backend.copy_image(&src.join(file), &tmp).map_err(st)?;
            self.backend.rename(&tmp, &disk.image).map_err(st)?;
        } else if v.size_limit.is_some() || v.inode_limit.is_some() {
            let img = vdir.join("disk.img");
            let tmp = vdir.join("disk.img.restoring");
            self.backend
                .copy_image(&src.join("disk.img"), &tmp)
                .map_err(st)?;
            if let Err(e) = self.mounts.unmount(&data) {
                let _ = self.backend.remove(&tmp);
                return Err(st(e));
            }
            self.backend.rename(&tmp, &img).map_err(st)?;
            self.mounts.mount_image(&img, &data).map_err(st)?;
        } else {
            self.backend.clear_tree(&data).map_err(st)?;
            self.backend
                .copy_tree(&src.join("data"), &data)
                .map_err(st)?;
        }
        Ok(())
    }

    pub fn remove_snapshot(
        &self,
        ctx: &RequestContext,
        name: &str,
        snap: &str,
    ) -> EngineResult<()> {
        let project = ctx.project();
        self.get(project, name)?;
        let p = self.snapshots_dir(project, name).join(snap);
        if !p.is_dir() || snap.starts_with('.') {
            return Err(no_snapshot(name, snap));
        }
        self.backend.remove(&p).map_err(st)?;
        tracing::info!(project = %ctx.project, caller = %ctx.caller, volume = name, snapshot = snap, "volume snapshot removed");
        Ok(())
    }

    /// Writes the volume's content as a tar (image volumes frozen meanwhile).
    pub fn export(&self, ctx: &RequestContext, name: &str, out: impl Write) -> EngineResult<()> {
        let project = ctx.project();
        let v = self.get(project, name)?;
        if v.driver == "block" {
            return Err(invalid(format!(
                "volume {name} is a block volume: export works on file volumes; copy its image with qemu-img, or snapshot it"
            )));
        }
        let data = self.mountpoint(project, name);
        let _frozen = if v.size_limit.is_some() || v.inode_limit.is_some() {
            Some(self.backend.freeze(&data).map_err(st)?)
        } else {
            None
        };
        let mut out = out;
        // The limits travel in the archive, so that an import makes the same volume.
        // As asked at create (what was made from them is within ext4's rounding).
        let size = v
            .options
            .get("size")
            .and_then(|s| s.parse::<pier_api::ByteSize>().ok())
            .map(|b| b.bytes())
            .or(v.size_limit);
        let inodes = v
            .options
            .get("inodes")
            .and_then(|s| s.parse::<u64>().ok())
            .or(v.inode_limit);
        let mut limits = Vec::new();
        if let Some(s) = size {
            limits.push((SIZE_KEY, s));
        }
        if let Some(i) = inodes {
            limits.push((INODES_KEY, i));
        }
        // Read through descriptors: a container using the volume cannot swap in a
        // symlink that leads the export onto the host.
        write_limits(&mut out, &limits)
            .and_then(|()| crate::container_fs::export_dir(&data, &mut out))
            .map_err(|e| internal(format!("cannot export volume {name}: {e}")))
    }

    /// Makes a volume from a tar (as `export` writes). `expect` is the archive's
    /// sha256 (hex) when the client knows it: a mismatch, or any bad entry, leaves no
    /// volume behind.
    pub fn import(
        &self,
        ctx: &RequestContext,
        req: VolumeCreate,
        body: impl Read,
        expect: Option<&str>,
    ) -> EngineResult<VolumeInspect> {
        let project = ctx.project();
        // The limits the export recorded, unless the request gives its own.
        let mut body = body;
        let (head, recorded) =
            read_limits(&mut body).map_err(|e| invalid(format!("reading the archive: {e}")))?;
        let mut req = req;
        let own = req.options.contains_key("size") || req.options.contains_key("inodes");
        if !own {
            for (k, n) in recorded {
                let opt = if k == SIZE_KEY { "size" } else { "inodes" };
                req.options.insert(opt.into(), n.to_string());
            }
        }
        let v = self.create(ctx, req, false)?;
        let data = self.mountpoint(&v.project, &v.name);
        let mut hashing = HashingReader {
            inner: std::io::Cursor::new(head).chain(body),
            hash: <sha2::Sha256 as sha2::Digest>::new(),
        };
        let mut limits = pier_archive::unpack::Limits::default();
        if let Some(s) = v.size_limit {
            limits.max_total_size = s;
        }
        let r = pier_archive::unpack::unpack_layer(&mut hashing, &data, &limits)
            .map_err(|e| invalid(format!("the archive cannot be imported: {e}")))
            .and_then(|_| {
                // The rest of the stream (tar padding) counts for the checksum too.
                std::io::copy(&mut hashing, &mut std::io::sink())
                    .map_err(|e| invalid(format!("reading the archive: {e}")))?;
                let got = pier_api::hex(&sha2::Digest::finalize(hashing.hash.clone()));
                match expect {
                    Some(want) if want.trim_start_matches("sha256:") != got => Err(invalid(format!(
                        "the archive's checksum is sha256:{got}, not {want}: it is corrupt or not the one exported"
                    ))),
                    _ => Ok(()),
                }
            });
        if let Err(e) = r {
            let _ = self.remove(project, &v.name);
            return Err(e);
        }
        Ok(v)
    }
}

struct HashingReader<R> {
    inner: R,
    hash: sha2::Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        sha2::Digest::update(&mut self.hash, &buf[..n]);
        Ok(n)
    }
}

/// The pax global header keywords an export records its volume's limits under.
const SIZE_KEY: &str = "PIER.volume.size";
const INODES_KEY: &str = "PIER.volume.inodes";

/// Writes a pax global header (which unpackers skip) holding the volume's limits.
fn write_limits(out: &mut impl Write, limits: &[(&str, u64)]) -> std::io::Result<()> {
    if limits.is_empty() {
        return Ok(());
    }
    let mut data = Vec::new();
    for (k, v) in limits {
        // A pax record: "LEN KEY=VALUE\n", LEN counting itself.
        let rest = format!(" {k}={v}\n");
        let mut len = rest.len() + 1;
        while (len.to_string().len() + rest.len()) != len {
            len += 1;
        }
        data.extend_from_slice(format!("{len}{rest}").as_bytes());
    }
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::XGlobalHeader);
    h.set_path("pax_global_header")?;
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    out.write_all(h.as_bytes())?;
    out.write_all(&data)?;
    out.write_all(&vec![0; (512 - data.len() % 512) % 512])
}

/// Reads the limits an export recorded from the start of `body`: the bytes consumed (to
/// put back in front of the stream) and the limits found.
/// Limits found in an archive: each keyword with its value.
type Limits = Vec<(&'static str, u64)>;

fn read_limits(body: &mut impl Read) -> std::io::Result<(Vec<u8>, Limits)> {
    let mut head = vec![0; 512];
    let n = read_full(body, &mut head)?;
    head.truncate(n);
    let mut found = Vec::new();
    if n < 512 || head[156] != b'g' {
        return Ok((head, found));
    }
    let mut h = tar::Header::new_old();
    h.as_mut_bytes().copy_from_slice(&head);
    let size = h.size()?.min(64 << 10) as usize;
    let padded = size.div_ceil(512) * 512;
    let mut data = vec![0; padded];
    let got = read_full(body, &mut data)?;
    head.extend_from_slice(&data[..got]);
    let text = String::from_utf8_lossy(&data[..size.min(got)]).into_owned();
    for record in text.lines() {
        let Some((_, kv)) = record.split_once(' ') else {
            continue;
        };
        let Some((k, v)) = kv.split_once('=') else {
            continue;
        };
        for key in [SIZE_KEY, INODES_KEY] {
            if k == key {
                if let Ok(n) = v.parse() {
                    found.push((key, n));
                }
            }
        }
    }
    Ok((head, found))
}

/// Reads until `buf` is full or the stream ends; how many bytes were read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_round_trip_through_a_pax_global_header() {
        let mut out = Vec::new();
        write_limits(&mut out, &[(SIZE_KEY, 104_857_600), (INODES_KEY, 1000)]).unwrap();
        assert_eq!(out.len() % 512, 0);
        // A tar reader sees it as a global header and the entries after it.
        let mut tar = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(2);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, "f", &b"hi"[..]).unwrap();
        out.extend(tar.into_inner().unwrap());
        let mut r = std::io::Cursor::new(out.clone());
        let (head, found) = read_limits(&mut r).unwrap();
        assert_eq!(found, [(SIZE_KEY, 104_857_600), (INODES_KEY, 1000)]);
        let mut all = head;
        r.read_to_end(&mut all).unwrap();
        assert_eq!(all, out, "every byte given back");
        let mut a = tar::Archive::new(&all[..]);
        let kinds: Vec<_> = a
            .entries()
            .unwrap()
            .map(|e| e.unwrap().header().entry_type())
            .collect();
        assert_eq!(
            kinds,
            [tar::EntryType::XGlobalHeader, tar::EntryType::Regular]
        );
        // A plain tar has none.
        let (head, found) = read_limits(&mut &all[out.len() - 1024..]).unwrap();
        assert!(found.is_empty());
        assert!(head.len() <= 512);
    }
}
