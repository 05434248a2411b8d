//! The VM's network, as the host gives it in [`GuestNic`]s: each NIC is found by its
//! MAC, gets its MTU, IPv4 address and prefix and is brought up; `lo` comes up; the
//! first gateway becomes the default route. There is no `ip` binary in the guest, so
//! this is done with the classic socket ioctls.

use std::fs;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use pier_guest::GuestNic;

use crate::sys::{self, Context, Result};

/// The netmask of a prefix length (`24` → `255.255.255.0`).
pub fn netmask(prefix: u8) -> Ipv4Addr {
    let bits = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix.min(32)))
    };
    Ipv4Addr::from(bits)
}

/// A MAC address in one spelling (lower case), so `02:42:AC:...` finds `02:42:ac:...`.
pub fn normal_mac(mac: &str) -> String {
    mac.trim().to_ascii_lowercase()
}

/// The interface whose address is `mac`, in a `/sys/class/net` directory.
pub fn find_interface(class_dir: &Path, mac: &str) -> Option<String> {
    let want = normal_mac(mac);
    fs::read_dir(class_dir)
        .ok()?
        .flatten()
        .find(|e| {
            fs::read_to_string(e.path().join("address")).is_ok_and(|a| normal_mac(&a) == want)
        })
        .and_then(|e| e.file_name().to_str().map(str::to_string))
}

/// `struct rtentry` of <net/route.h> (64-bit layout; glibc's libc crate lacks it).
#[repr(C)]
struct RtEntry {
    rt_pad1: libc::c_ulong,
    rt_dst: libc::sockaddr,
    rt_gateway: libc::sockaddr,
    rt_genmask: libc::sockaddr,
    rt_flags: libc::c_ushort,
    rt_pad2: libc::c_short,
    rt_pad3: libc::c_ulong,
    rt_pad4: *mut libc::c_void,
    rt_metric: libc::c_short,
    rt_dev: *mut libc::c_char,
    rt_mtu: libc::c_ulong,
    rt_window: libc::c_ulong,
    rt_irtt: libc::c_ushort,
}

fn sockaddr(a: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(a).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr have the same size; this is the C idiom.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

struct Ifreq(libc::ifreq);

impl Ifreq {
    fn new(name: &str) -> Ifreq {
        // SAFETY: ifreq is plain old data; all zeroes is a valid value.
        let mut r: libc::ifreq = unsafe { std::mem::zeroed() };
        for (d, s) in r
            .ifr_name
            .iter_mut()
            .zip(name.bytes().take(libc::IFNAMSIZ - 1))
        {
            *d = s as libc::c_char;
        }
        Ifreq(r)
    }
}

fn ioctl<T>(sock: &OwnedFd, req: libc::c_ulong, arg: &mut T) -> std::io::Result<()> {
    // SAFETY: `arg` is the structure `req` expects, live for the call.
    sys::check(unsafe { libc::ioctl(sock.as_raw_fd(), req, arg as *mut T) }).map(drop)
}

fn up(sock: &OwnedFd, name: &str) -> std::io::Result<()> {
    let mut r = Ifreq::new(name);
    ioctl(sock, libc::SIOCGIFFLAGS, &mut r.0)?;
    // SAFETY: SIOCGIFFLAGS filled the flags member.
    unsafe { r.0.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short };
    ioctl(sock, libc::SIOCSIFFLAGS, &mut r.0)
}

/// Configures the VM's network. Every failure says which NIC and which step.
pub fn configure(nics: &[GuestNic]) -> Result<()> {
    // SAFETY: socket(2) with constant arguments; the descriptor is owned at once.
    let fd = sys::check(unsafe {
        libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0)
    })
    .ctx(|| "opening a socket to configure the network".into())?;
    // SAFETY: a fresh descriptor nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    up(&sock, "lo").ctx(|| "bringing lo up".into())?;
    let mut routed = false;
    for nic in nics {
        let addr: Ipv4Addr = nic.address.parse().map_err(|_| {
            sys::other(
                format!("the NIC {}", nic.mac),
                format!("the address {:?} is not IPv4", nic.address),
            )
        })?;
        let name = wait_for_interface(&nic.mac, Duration::from_secs(3))?;
        let what = |step: &str| format!("{step} of {name} (MAC {})", nic.mac);
        if let Some(mtu) = nic.mtu {
            let mut r = Ifreq::new(&name);
            r.0.ifr_ifru.ifru_mtu = mtu as libc::c_int;
            ioctl(&sock, libc::SIOCSIFMTU, &mut r.0)
                .ctx(|| what(&format!("setting the MTU {mtu}")))?;
        }
        let mut r = Ifreq::new(&name);
        r.0.ifr_ifru.ifru_addr = sockaddr(addr);
        ioctl(&sock, libc::SIOCSIFADDR, &mut r.0)
            .ctx(|| what(&format!("setting the address {addr}")))?;
        let mut r = Ifreq::new(&name);
        r.0.ifr_ifru.ifru_netmask = sockaddr(netmask(nic.prefix));
        ioctl(&sock, libc::SIOCSIFNETMASK, &mut r.0)
            .ctx(|| what(&format!("setting the prefix /{}", nic.prefix)))?;
        up(&sock, &name).ctx(|| what("bringing up"))?;
        if let (Some(gw), false) = (&nic.gateway, routed) {
            let gw: Ipv4Addr = gw.parse().map_err(|_| {
                sys::other(
                    what("the default route"),
                    format!("the gateway {gw:?} is not IPv4"),
                )
            })?;
            let mut rt = RtEntry {
                rt_pad1: 0,
                rt_dst: sockaddr(Ipv4Addr::UNSPECIFIED),
                rt_gateway: sockaddr(gw),
                rt_genmask: sockaddr(Ipv4Addr::UNSPECIFIED),
                rt_flags: libc::RTF_UP | libc::RTF_GATEWAY,
                rt_pad2: 0,
                rt_pad3: 0,
                rt_pad4: std::ptr::null_mut(),
                rt_metric: 0,
                rt_dev: std::ptr::null_mut(),
                rt_mtu: 0,
                rt_window: 0,
                rt_irtt: 0,
            };
            ioctl(&sock, libc::SIOCADDRT, &mut rt)
                .ctx(|| what(&format!("adding the default route via {gw}")))?;
            routed = true;
        }
    }
    Ok(())
}

/// The interface with `mac`, waiting a little for virtio_net to register it.
fn wait_for_interface(mac: &str, timeout: Duration) -> Result<String> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(name) = find_interface(Path::new("/sys/class/net"), mac) {
            return Ok(name);
        }
        if Instant::now() >= deadline {
            return Err(sys::other(
                format!("finding the NIC with MAC {mac}"),
                "no interface in /sys/class/net has it (is virtio_net loaded, and does QEMU \
                 give the device that mac=?)",
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_become_netmasks() {
        assert_eq!(netmask(24), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(netmask(16), Ipv4Addr::new(255, 255, 0, 0));
        assert_eq!(netmask(30), Ipv4Addr::new(255, 255, 255, 252));
        assert_eq!(netmask(32), Ipv4Addr::new(255, 255, 255, 255));
        assert_eq!(netmask(0), Ipv4Addr::new(0, 0, 0, 0));
        assert_eq!(netmask(40), Ipv4Addr::new(255, 255, 255, 255));
    }

    #[test]
    fn the_interface_is_found_by_its_mac_in_any_case() {
        let dir = std::env::temp_dir().join(format!("pier-guest-net-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        for (name, mac) in [
            ("lo", "00:00:00:00:00:00\n"),
            ("eth0", "02:42:ac:11:00:02\n"),
        ] {
            fs::create_dir_all(dir.join(name)).unwrap();
            fs::write(dir.join(name).join("address"), mac).unwrap();
        }
        assert_eq!(
            find_interface(&dir, "02:42:AC:11:00:02").as_deref(),
            Some("eth0")
        );
        assert_eq!(find_interface(&dir, "02:42:ac:11:00:03"), None);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn rtentry_has_the_kernel_layout() {
        // struct rtentry is 120 bytes on x86_64.
        assert_eq!(std::mem::size_of::<RtEntry>(), 120);
    }
}
