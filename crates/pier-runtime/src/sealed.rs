//! A sealed in-memory copy of the running `pier` binary: what every helper that a
//! container can reach runs from (the CVE-2019-5736 pattern, closed as runc closes it).
//!
//! The exec helper (`pier __exec`) joins a container's namespaces and forks the command
//! there; the monitor zygote's children clone each container's init, which runs `pier`
//! until it execs the entrypoint (and for good as pid 1 under `--init`). Run from the
//! host's binary, each of them hands a process in the container the host's `pier`:
//! through `/proc/PID/exe`, or by becoming it (a command of the container's made a
//! `#!/proc/self/exe` script, run by `pier exec`). With a descriptor of it, the container
//! can write it as soon as nothing runs it, and the host runs it as root next time.
//!
//! Run from this copy instead, all a container reaches is a memfd, sealed against any
//! write, growth or shrink and against unsealing (`F_SEAL_WRITE | F_SEAL_GROW |
//! F_SEAL_SHRINK | F_SEAL_SEAL`); the host's file stays out of sight. The daemon makes it
//! once and keeps it open for its lifetime; helpers are started through its
//! `/proc/self/fd/N` path, which names the daemon's descriptor in the spawned child until
//! its exec (the descriptor is close-on-exec, so no helper inherits it).

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use rustix::fs::{MemfdFlags, SealFlags};

/// The sealed copy and the path that executes it.
#[derive(Debug)]
pub struct SealedExe {
    fd: OwnedFd,
    path: PathBuf,
}

impl SealedExe {
    /// Copies the binary this process runs into a sealed memfd.
    pub fn of_current_exe() -> io::Result<SealedExe> {
        Self::copy_of(Path::new("/proc/self/exe"))
    }

    /// Copies the executable at `source` into a sealed memfd.
    pub fn copy_of(source: &Path) -> io::Result<SealedExe> {
        let flags = MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING;
        // Say outright that it is executable: a host with vm.memfd_noexec = 1 makes
        // memfds non-executable unless asked. Kernels before 6.3 know no MFD_EXEC.
        let fd = match rustix::fs::memfd_create("pier", flags | MemfdFlags::EXEC) {
            Err(rustix::io::Errno::INVAL) => rustix::fs::memfd_create("pier", flags)?,
            r => r?,
        };
        let mut src = File::open(source)?;
        let (len, header) = match loaded_part(&src)? {
            Some((len, header)) => (len, Some(header)),
            None => (src.metadata()?.len(), None),
        };
        let mut dst = File::from(fd);
        let copied = io::copy(&mut io::Read::take(&mut src, len), &mut dst)?;
        if copied != len {
            return Err(io::Error::other(format!(
                "copied {copied} of the {len} bytes of {}",
                source.display()
            )));
        }
        if let Some(header) = header {
            // The section headers were not copied: say there are none.
            rustix::io::pwrite(&dst, &header, 0)?;
        }
        rustix::fs::fchmod(&dst, rustix::fs::Mode::from_raw_mode(0o555))?;
        rustix::fs::fcntl_add_seals(
            &dst,
            SealFlags::SEAL | SealFlags::SHRINK | SealFlags::GROW | SealFlags::WRITE,
        )?;
        let fd = OwnedFd::from(dst);
        let path = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
        Ok(SealedExe { fd, path })
    }

    /// The path to execute, valid in this process and in children it spawns, until
    /// their exec.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The seals on the copy (for checks).
    pub fn seals(&self) -> io::Result<SealFlags> {
        Ok(rustix::fs::fcntl_get_seals(&self.fd)?)
    }
}

/// What of an ELF64 executable the kernel loads: the length of the file up to the end of
/// its last segment, and its header with the section header table's fields zeroed.
/// `None` when `file` is not a little-endian ELF64 file (it is then copied whole).
///
/// Debug information and symbol tables sit after the segments, in sections nothing runs
/// (in a release build of `pier`, 120 MB of line tables besides 26 MB of code and data):
/// the copy, which costs its size in memory for the daemon's lifetime, leaves them out.
fn loaded_part(file: &File) -> io::Result<Option<(u64, [u8; 64])>> {
    let mut header = [0u8; 64];
    if rustix::io::pread(file, &mut header, 0)? < 64
        || header[..4] != *b"\x7fELF"
        || header[4] != 2 // ELFCLASS64
        || header[5] != 1
    // ELFDATA2LSB
    {
        return Ok(None);
    }
    let u16_at = |b: &[u8], o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
    let u64_at = |b: &[u8], o: usize| u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"));
    let (phoff, phentsize, phnum) = (
        u64_at(&header, 0x20),
        usize::from(u16_at(&header, 0x36)),
        usize::from(u16_at(&header, 0x38)),
    );
    if phentsize < 56 || phnum == 0 {
        return Ok(None);
    }
    let mut table = vec![0u8; phentsize * phnum];
    if rustix::io::pread(file, &mut table, phoff)? < table.len() {
        return Ok(None);
    }
    // Every segment's bytes, whatever its type, and the program header table itself.
    let end = table
        .chunks(phentsize)
        .map(|ph| u64_at(ph, 0x08) + u64_at(ph, 0x20)) // p_offset + p_filesz
        .chain([phoff + table.len() as u64])
        .max()
        .expect("at least one");
    // e_shoff, e_shnum, e_shstrndx.
    header[0x28..0x30].fill(0);
    header[0x3c..0x40].fill(0);
    Ok(Some((end, header)))
}

/// This process's sealed copy of its binary, made on first use (or by
/// [`prepare_in_background`]) and kept for the process's lifetime.
pub fn current() -> io::Result<&'static SealedExe> {
    static SEALED: OnceLock<Result<SealedExe, String>> = OnceLock::new();
    SEALED
        .get_or_init(|| SealedExe::of_current_exe().map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| {
            io::Error::other(format!(
                "cannot make the sealed in-memory copy of pier that helpers run from: {e} \
                 (memfd_create and file sealing are needed, Linux 3.17 or later)"
            ))
        })
}

/// Starts making [`current`] in a thread, so that the copy (the size of the binary) is
/// ready by the first container start without delaying the caller.
pub fn prepare_in_background() {
    let _ = std::thread::Builder::new()
        .name("pier-sealed-exe".into())
        .spawn(|| {
            let _ = current();
        });
}

/// Names this (single-threaded) process `pier` for `ps` and `top`: run through
/// `/proc/self/fd/N`, the kernel would call it `N`.
pub fn name_process() {
    let _ = rustix::thread::set_name(c"pier");
}

/// Makes this process non-dumpable: its `/proc/PID` files (`exe`, `fd`, `mem`, `environ`)
/// become root's of the initial user namespace, out of reach of a process without
/// CAP_SYS_PTRACE there, such as any container's. The next exec makes a fresh process
/// dumpable again as usual.
pub fn make_non_dumpable() {
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    #[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
    fn the_copy_is_whole_executable_and_cannot_be_written() {
        let src = Path::new("/bin/true");
        let sealed = SealedExe::copy_of(src).unwrap();
        let seals = sealed.seals().unwrap();
        for s in [
            SealFlags::SEAL,
            SealFlags::SHRINK,
            SealFlags::GROW,
            SealFlags::WRITE,
        ] {
            assert!(seals.contains(s), "{s:?} missing from {seals:?}");
        }
        let copy = std::fs::read(sealed.path()).unwrap();
        let original = std::fs::read(src).unwrap();
        // The loaded part, without the section headers and what only they point to.
        assert!(copy.len() <= original.len() && copy.len() > 64);
        assert_eq!(copy[64..], original[64..copy.len()]);
        assert_eq!(copy[..0x28], original[..0x28]);
        assert_eq!(&copy[0x28..0x30], &[0; 8], "no section header table");
        // Opened again for writing through its path, it still refuses every write.
        let mut w = File::options().write(true).open(sealed.path()).unwrap();
        let e = w.write_all(b"x").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EPERM), "{e}");
        assert!(w.set_len(0).is_err(), "shrinking is sealed");
        assert!(
            w.set_len(copy.len() as u64 + 1).is_err(),
            "growing is sealed"
        );
        drop(w); // a file open for writing cannot be executed (ETXTBSY)
        let st = std::process::Command::new(sealed.path()).status().unwrap();
        assert!(st.success(), "the copy runs");
        // So does a copy of pier's own test binary, which has debug sections to leave out.
        let me = SealedExe::of_current_exe().unwrap();
        let full = std::fs::metadata("/proc/self/exe").unwrap().len();
        let part = std::fs::metadata(me.path()).unwrap().len();
        assert!(part < full, "debug sections are left out: {part} of {full}");
        let out = std::process::Command::new(me.path())
            .arg("--list")
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let link = std::fs::read_link(sealed.path()).unwrap();
        assert!(
            link.to_string_lossy().starts_with("/memfd:pier"),
            "{}",
            link.display()
        );
    }
}
