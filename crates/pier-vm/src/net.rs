//! A VM's NICs on the host: in the instance's network namespace (where the engine made
//! `eth0`, `eth1`, ... as for a container), a tap per NIC (`tapN`, opened here and handed
//! to QEMU as a descriptor, so it vanishes with QEMU), joined to `ethN` by tc: an ingress
//! qdisc on each and a u32 filter that redirects every frame to the other (`mirred egress
//! redirect`; `matchall` is not in every kernel, `u32 match u8 0 0` matches all the same).
//! The tap gets `ethN`'s MTU; the guest's NIC gets `ethN`'s MAC (from the RunConfig).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Command;

/// Why a NIC could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("cannot make the tap {tap}")]
    Tap {
        tap: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot configure {dev}")]
    Link {
        dev: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot run tc (install iproute2)")]
    NoTc(#[source] io::Error),
    #[error("tc {args} failed: {stderr}")]
    Tc { args: String, stderr: String },
}

/// A tap this process holds open.
#[derive(Debug)]
pub struct Tap {
    pub name: String,
    pub fd: OwnedFd,
}

/// `_IOW('T', 202, int)`.
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;

fn ifreq(name: &str) -> io::Result<libc::ifreq> {
    let c = CString::new(name).map_err(io::Error::other)?;
    let bytes = c.as_bytes_with_nul();
    if bytes.len() > libc::IFNAMSIZ {
        return Err(io::Error::other(format!(
            "the interface name {name} is too long"
        )));
    }
    // SAFETY: ifreq is plain data; all zeroes is a valid value.
    let mut r: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in r.ifr_name.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    Ok(r)
}

/// Opens a new tap `name` (`IFF_TAP | IFF_NO_PI`, not persistent: it goes when the last
/// descriptor closes).
pub fn open_tap(name: &str) -> io::Result<OwnedFd> {
    // SAFETY: open with a constant path; the result is checked.
    let fd = unsafe { libc::open(c"/dev/net/tun".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is ours alone.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut r = ifreq(name)?;
    r.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short;
    // SAFETY: TUNSETIFF reads and writes the ifreq we pass.
    if unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETIFF as _, &mut r) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

fn ctl_socket() -> io::Result<OwnedFd> {
    // SAFETY: socket with constant arguments; the result is checked.
    let s = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if s < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `s` was just made and is ours alone.
    Ok(unsafe { OwnedFd::from_raw_fd(s) })
}

fn ioctl_ifreq(sock: &OwnedFd, req: libc::c_ulong, r: &mut libc::ifreq) -> io::Result<()> {
    // SAFETY: an interface ioctl that reads and writes the ifreq we pass.
    if unsafe { libc::ioctl(sock.as_raw_fd(), req as _, r as *mut libc::ifreq) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `dev`'s MTU.
pub fn mtu(dev: &str) -> io::Result<u32> {
    let s = ctl_socket()?;
    let mut r = ifreq(dev)?;
    ioctl_ifreq(&s, libc::SIOCGIFMTU, &mut r)?;
    // SAFETY: SIOCGIFMTU filled the mtu member.
    Ok(unsafe { r.ifr_ifru.ifru_mtu } as u32)
}

/// Sets `dev`'s MTU and brings it up.
pub fn set_up(dev: &str, mtu: Option<u32>) -> io::Result<()> {
    let s = ctl_socket()?;
    if let Some(m) = mtu {
        let mut r = ifreq(dev)?;
        r.ifr_ifru.ifru_mtu = m as libc::c_int;
        ioctl_ifreq(&s, libc::SIOCSIFMTU, &mut r)?;
    }
    let mut r = ifreq(dev)?;
    ioctl_ifreq(&s, libc::SIOCGIFFLAGS, &mut r)?;
    // SAFETY: SIOCGIFFLAGS filled the flags member.
    let flags = unsafe { r.ifr_ifru.ifru_flags };
    r.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
    ioctl_ifreq(&s, libc::SIOCSIFFLAGS, &mut r)
}

fn tc(args: &[&str]) -> Result<(), NetError> {
    let out = Command::new("tc")
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(NetError::NoTc)?;
    if !out.status.success() {
        return Err(NetError::Tc {
            args: args.join(" "),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(())
}

/// The tc arguments that send every frame arriving on `from` out of `to`.
pub fn redirect_args<'a>(from: &'a str, to: &'a str) -> [Vec<&'a str>; 2] {
    [
        vec!["qdisc", "add", "dev", from, "ingress"],
        vec![
            "filter", "add", "dev", from, "parent", "ffff:", "protocol", "all", "u32", "match",
            "u8", "0", "0", "action", "mirred", "egress", "redirect", "dev", to,
        ],
    ]
}

fn redirect(from: &str, to: &str) -> Result<(), NetError> {
    // A VM started before in this namespace left its qdisc (and filters to a gone tap).
    let _ = tc(&["qdisc", "del", "dev", from, "ingress"]);
    for args in redirect_args(from, to) {
        tc(&args)?;
    }
    Ok(())
}

/// In the current network namespace: a tap per NIC, up, with its veth's MTU, joined to
/// it both ways.
pub fn setup(count: usize) -> Result<Vec<Tap>, NetError> {
    let mut taps = Vec::new();
    for i in 0..count {
        let eth = format!("eth{i}");
        let name = format!("tap{i}");
        let terr = |source| NetError::Tap {
            tap: name.clone(),
            source,
        };
        let fd = open_tap(&name).map_err(terr)?;
        let m = mtu(&eth).map_err(|source| NetError::Link {
            dev: eth.clone(),
            source,
        })?;
        set_up(&name, Some(m)).map_err(terr)?;
        redirect(&eth, &name)?;
        redirect(&name, &eth)?;
        taps.push(Tap { name, fd });
    }
    Ok(taps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_redirect_matches_every_frame() {
        let [q, f] = redirect_args("eth0", "tap0");
        assert_eq!(q.join(" "), "qdisc add dev eth0 ingress");
        assert_eq!(
            f.join(" "),
            "filter add dev eth0 parent ffff: protocol all u32 match u8 0 0 action mirred egress redirect dev tap0"
        );
        assert!(ifreq("a-name-longer-than-15").is_err());
    }
}
