//! Loop devices through `/dev/loop-control` and `LOOP_CONFIGURE`, with autoclear: the
//! device is released by the kernel when its last user (the mount) goes away.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use crate::error::{io, sys};
use crate::{Error, Result};

const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LO_FLAGS_AUTOCLEAR: u32 = 4;
const LO_NAME_SIZE: usize = 64;

#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; LO_NAME_SIZE],
    lo_crypt_name: [u8; LO_NAME_SIZE],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

/// A configured loop device. With `autoclear`, it goes when its last user (a mount) does,
/// and the returned `File` keeps it alive until the caller has mounted it; without, it
/// stays until [`detach`].
pub fn attach(image: &Path, autoclear: bool) -> Result<(PathBuf, File)> {
    let backing = OpenOptions::new()
        .read(true)
        .write(true)
        .open(image)
        .map_err(io("open", image))?;
    let control = Path::new("/dev/loop-control");
    let ctl = File::open(control).map_err(io("open", control))?;
    // A free device can be taken by someone else between GET_FREE and CONFIGURE
    // (EBUSY): try again.
    for _ in 0..16 {
        // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a device number.
        let n = unsafe { libc::ioctl(ctl.as_raw_fd(), LOOP_CTL_GET_FREE) };
        if n < 0 {
            return Err(io("find a free loop device with", control)(
                std::io::Error::last_os_error(),
            ));
        }
        let path = PathBuf::from(format!("/dev/loop{n}"));
        let dev = match OpenOptions::new().read(true).write(true).open(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                make_node(&path, n as u32)?;
                OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&path)
                    .map_err(io("open", &path))?
            }
            Err(e) => return Err(io("open", &path)(e)),
        };
        // SAFETY: an all-zero LoopConfig is valid; the fields we need are set below.
        let mut cfg: LoopConfig = unsafe { std::mem::zeroed() };
        cfg.fd = backing.as_raw_fd() as u32;
        cfg.info.lo_flags = if autoclear { LO_FLAGS_AUTOCLEAR } else { 0 };
        let name = image.as_os_str().as_encoded_bytes();
        let len = name.len().min(LO_NAME_SIZE - 1);
        cfg.info.lo_file_name[..len].copy_from_slice(&name[..len]);
        // SAFETY: LOOP_CONFIGURE reads a LoopConfig from the pointer, which is valid.
        let r = unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_CONFIGURE, &cfg as *const LoopConfig) };
        if r == 0 {
            return Ok((path, dev));
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EBUSY) {
            return Err(io("set up", &path)(e));
        }
    }
    Err(Error::LoopDevicesBusy)
}

/// Creates `/dev/loopN` when the host's /dev lacks it (containers, minimal hosts).
fn make_node(path: &Path, n: u32) -> Result<()> {
    let dev = rustix::fs::makedev(7, n);
    rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        rustix::fs::FileType::BlockDevice,
        rustix::fs::Mode::from_raw_mode(0o660),
        dev,
    )
    .map_err(sys("create", path))
}

const LOOP_CLR_FD: libc::c_ulong = 0x4C01;

/// Detaches a loop device set up without autoclear.
pub fn detach(dev: &Path) -> Result<()> {
    let f = OpenOptions::new()
        .read(true)
        .open(dev)
        .map_err(io("open", dev))?;
    // SAFETY: LOOP_CLR_FD takes no argument.
    if unsafe { libc::ioctl(f.as_raw_fd(), LOOP_CLR_FD, 0) } < 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ENXIO) {
            return Err(io("detach", dev)(e));
        }
    }
    Ok(())
}

/// Loop devices whose backing file is `file`.
pub fn backed_by(file: &Path) -> Vec<PathBuf> {
    let want = file.to_string_lossy().into_owned();
    let Ok(rd) = std::fs::read_dir("/sys/block") else {
        return Vec::new();
    };
    rd.flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("loop"))
        .filter(|e| {
            std::fs::read_to_string(e.path().join("loop/backing_file"))
                .is_ok_and(|b| b.trim_end() == want)
        })
        .map(|e| Path::new("/dev").join(e.file_name()))
        .collect()
}

/// The minor number of a loop device node.
pub fn minor(dev: &Path) -> Result<u32> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(dev).map_err(io("stat", dev))?;
    Ok(rustix::fs::minor(m.rdev()))
}
