//! The VM's initramfs: a newc cpio archive ([`CpioWriter`], uncompressed: under TCG the
//! kernel would spend longer inflating it than reading it) holding the guest agent as
//! `/init`, the kernel's modules under `/lib/modules` with their `modules.order`, the
//! directories the agent mounts on and `/dev/console` (the kernel opens it for init's
//! stdio before devtmpfs exists).
//!
//! [`build`] writes it to a temporary name and renames it into place, so a crash leaves
//! no half archive, and records what it was made from beside it (`OUT.inputs`): it is
//! rebuilt only when an input (the agent, a module, the order) changed.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::assets::Assets;

/// Why the initramfs could not be built.
#[derive(Debug, thiserror::Error)]
pub enum InitramfsError {
    #[error("cannot read {path} for the VM's initramfs")]
    Input {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write the VM's initramfs {path}")]
    Output {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Writes a newc ("070701") cpio archive.
#[derive(Debug)]
pub struct CpioWriter<W: Write> {
    out: W,
    ino: u32,
    written: u64,
}

impl<W: Write> CpioWriter<W> {
    pub fn new(out: W) -> CpioWriter<W> {
        CpioWriter {
            out,
            ino: 1,
            written: 0,
        }
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn pad(&mut self) -> io::Result<()> {
        let n = (4 - (self.written % 4) as usize) % 4;
        self.put(&[0u8; 3][..n])
    }

    fn header(&mut self, name: &str, mode: u32, size: u64, rdev: (u32, u32)) -> io::Result<()> {
        let size = u32::try_from(size)
            .map_err(|_| io::Error::other(format!("{name} is too large for a cpio archive")))?;
        let nlink = if mode & 0o170000 == 0o040000 { 2 } else { 1 };
        let ino = self.ino;
        self.ino += 1;
        let fields = [
            ino,
            mode,
            0,
            0,
            nlink,
            0,
            size,
            0,
            0,
            rdev.0,
            rdev.1,
            name.len() as u32 + 1,
            0,
        ];
        let mut h = String::from("070701");
        for f in fields {
            h.push_str(&format!("{f:08x}"));
        }
        self.put(h.as_bytes())?;
        self.put(name.as_bytes())?;
        self.put(&[0])?;
        self.pad()
    }

    /// A directory (`mode`: its permission bits).
    pub fn dir(&mut self, name: &str, mode: u32) -> io::Result<()> {
        self.header(name, 0o040000 | (mode & 0o7777), 0, (0, 0))
    }

    /// A regular file of `size` bytes read from `data`.
    pub fn file(
        &mut self,
        name: &str,
        mode: u32,
        size: u64,
        data: &mut impl Read,
    ) -> io::Result<()> {
        self.header(name, 0o100000 | (mode & 0o7777), size, (0, 0))?;
        let copied = io::copy(&mut data.take(size), &mut self.out)?;
        if copied != size {
            return Err(io::Error::other(format!(
                "{name} changed size while being archived"
            )));
        }
        self.written += copied;
        self.pad()
    }

    /// A character device.
    pub fn char_dev(&mut self, name: &str, mode: u32, major: u32, minor: u32) -> io::Result<()> {
        self.header(name, 0o020000 | (mode & 0o7777), 0, (major, minor))
    }

    /// Ends the archive and returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.header("TRAILER!!!", 0, 0, (0, 0))?;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// Where modules go in the initramfs (what the agent loads from).
pub const MODULES_DIR: &str = "lib/modules";

/// The directories the agent needs before anything is mounted.
const DIRS: &[&str] = &[
    "dev",
    "proc",
    "sys",
    "run",
    "tmp",
    "newroot",
    "lib",
    MODULES_DIR,
];

/// What an initramfs is made from: the agent, then each module, then the order.
fn inputs(assets: &Assets) -> Result<Vec<(String, PathBuf)>, InitramfsError> {
    let mut v = vec![("init".to_owned(), assets.guest.clone())];
    let read = std::fs::read_dir(&assets.modules).map_err(|source| InitramfsError::Input {
        path: assets.modules.clone(),
        source,
    })?;
    let mut mods: Vec<(String, PathBuf)> = read
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.ends_with(".ko")
                .then(|| (format!("{MODULES_DIR}/{name}"), e.path()))
        })
        .collect();
    mods.sort();
    v.extend(mods);
    v.push((
        format!("{MODULES_DIR}/modules.order"),
        assets.modules_order.clone(),
    ));
    Ok(v)
}

/// A line per input (its name, size and modification time): what `OUT.inputs` holds.
fn fingerprint(inputs: &[(String, PathBuf)]) -> Result<String, InitramfsError> {
    let mut s = String::from("pier-initramfs 1\n");
    for (name, path) in inputs {
        let m = std::fs::metadata(path).map_err(|source| InitramfsError::Input {
            path: path.clone(),
            source,
        })?;
        s.push_str(&format!(
            "{name} {} {} {}.{}\n",
            path.display(),
            m.len(),
            m.mtime(),
            m.mtime_nsec()
        ));
    }
    Ok(s)
}

fn inputs_file(out: &Path) -> PathBuf {
    let mut name = out.as_os_str().to_owned();
    name.push(".inputs");
    PathBuf::from(name)
}

/// Makes the initramfs at `out` from `assets`, unless the one there was made from the
/// same inputs. Returns whether it (re)built it.
pub fn build(assets: &Assets, out: &Path) -> Result<bool, InitramfsError> {
    let inputs = inputs(assets)?;
    let print = fingerprint(&inputs)?;
    let stamp = inputs_file(out);
    if out.exists() && std::fs::read_to_string(&stamp).ok().as_deref() == Some(print.as_str()) {
        return Ok(false);
    }
    let werr = |source| InitramfsError::Output {
        path: out.to_owned(),
        source,
    };
    let tmp = out.with_file_name(format!(
        ".{}.tmp{}",
        out.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("initramfs"),
        std::process::id()
    ));
    let result = write_archive(&inputs, &tmp);
    let result = match result {
        Ok(()) => std::fs::rename(&tmp, out).map_err(werr),
        Err(e) => Err(e),
    };
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result?;
    crate::sys::write_atomic(&stamp, print.as_bytes(), 0o644).map_err(werr)?;
    Ok(true)
}

fn write_archive(inputs: &[(String, PathBuf)], tmp: &Path) -> Result<(), InitramfsError> {
    let werr = |source| InitramfsError::Output {
        path: tmp.to_owned(),
        source,
    };
    let f = File::create(tmp).map_err(werr)?;
    let mut w = CpioWriter::new(BufWriter::new(f));
    for d in DIRS {
        w.dir(d, 0o755).map_err(werr)?;
    }
    w.char_dev("dev/console", 0o600, 5, 1).map_err(werr)?;
    for (name, path) in inputs {
        let ierr = |source| InitramfsError::Input {
            path: path.clone(),
            source,
        };
        let mut f = File::open(path).map_err(ierr)?;
        let size = f.metadata().map_err(ierr)?.len();
        let mode = if name == "init" { 0o755 } else { 0o644 };
        w.file(name, mode, size, &mut f).map_err(werr)?;
    }
    let buf = w.finish().map_err(werr)?;
    let f = buf.into_inner().map_err(|e| werr(e.into_error()))?;
    f.sync_all().map_err(werr)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn busybox_list(archive: &Path) -> String {
        let out = std::process::Command::new("busybox")
            .args(["cpio", "-tv"])
            .stdin(File::open(archive).unwrap())
            .output()
            .expect("busybox (Debian's busybox-static) lists cpio archives: install it");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    #[test]
    fn busybox_lists_what_the_writer_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.cpio");
        let mut w = CpioWriter::new(File::create(&path).unwrap());
        w.dir("d", 0o755).unwrap();
        w.file("d/f", 0o640, 5, &mut &b"hello"[..]).unwrap();
        w.file("odd-sized-name", 0o755, 2, &mut &b"xy"[..]).unwrap();
        w.char_dev("console", 0o600, 5, 1).unwrap();
        w.finish().unwrap();
        let list = busybox_list(&path);
        let lines: Vec<&str> = list.lines().collect();
        assert_eq!(lines.len(), 4, "{list}");
        assert!(
            lines[0].starts_with("drwxr-xr-x") && lines[0].ends_with(" d"),
            "{list}"
        );
        assert!(
            lines[1].starts_with("-rw-r-----")
                && lines[1].contains(" 5 ")
                && lines[1].ends_with(" d/f"),
            "{list}"
        );
        assert!(
            lines[2].starts_with("-rwxr-xr-x") && lines[2].ends_with(" odd-sized-name"),
            "{list}"
        );
        assert!(
            lines[3].starts_with("crw-------") && lines[3].ends_with(" console"),
            "{list}"
        );
        // And the data comes back whole.
        let x = tempfile::tempdir().unwrap();
        let st = std::process::Command::new("busybox")
            .args(["cpio", "-i", "-d"])
            .current_dir(x.path())
            .stdin(File::open(&path).unwrap())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        let _ = st; // mknod may be refused without root; the files are what matter
        assert_eq!(std::fs::read(x.path().join("d/f")).unwrap(), b"hello");
        assert_eq!(
            std::fs::read(x.path().join("odd-sized-name")).unwrap(),
            b"xy"
        );
    }

    fn fake_assets(dir: &Path) -> Assets {
        let mods = dir.join("modules");
        std::fs::create_dir_all(&mods).unwrap();
        std::fs::write(mods.join("b.ko"), b"B").unwrap();
        std::fs::write(mods.join("a.ko"), b"A").unwrap();
        std::fs::write(mods.join("README"), b"not a module").unwrap();
        std::fs::write(mods.join("modules.order"), b"b.ko\na.ko\n").unwrap();
        std::fs::write(dir.join("pier-guest"), b"#!agent").unwrap();
        std::fs::write(dir.join("vmlinuz"), b"kernel").unwrap();
        Assets {
            dir: dir.to_owned(),
            kernel: dir.join("vmlinuz"),
            modules: mods.clone(),
            modules_order: mods.join("modules.order"),
            guest: dir.join("pier-guest"),
        }
    }

    #[test]
    fn build_lays_out_the_agent_and_modules_and_rebuilds_only_on_change() {
        let dir = tempfile::tempdir().unwrap();
        let assets = fake_assets(dir.path());
        let out = dir.path().join("initramfs");
        assert!(build(&assets, &out).unwrap());
        let list = busybox_list(&out);
        let names: Vec<&str> = list
            .lines()
            .map(|l| l.rsplit(' ').next().unwrap())
            .collect();
        for want in [
            "dev",
            "proc",
            "sys",
            "newroot",
            "dev/console",
            "init",
            "lib/modules/a.ko",
            "lib/modules/b.ko",
            "lib/modules/modules.order",
        ] {
            assert!(names.contains(&want), "{want} missing from\n{list}");
        }
        assert!(!names.iter().any(|n| n.ends_with("README")), "{list}");
        assert!(
            list.lines()
                .any(|l| l.starts_with("-rwxr-xr-x") && l.ends_with(" init")),
            "{list}"
        );
        // Nothing changed: kept as is.
        assert!(!build(&assets, &out).unwrap());
        // A module changed: rebuilt.
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(assets.modules.join("a.ko"), b"AA").unwrap();
        assert!(build(&assets, &out).unwrap());
        assert!(!build(&assets, &out).unwrap());
        // The archive gone: rebuilt; and no temporary file is left behind.
        std::fs::remove_file(&out).unwrap();
        assert!(build(&assets, &out).unwrap());
        let left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.contains(".tmp"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
        // A missing agent is named.
        std::fs::remove_file(&assets.guest).unwrap();
        let e = build(&assets, &out).unwrap_err();
        assert!(
            matches!(&e, InitramfsError::Input { path, .. } if path == &assets.guest),
            "{e}"
        );
    }
}
