//! KVM or TCG for a VM.
//!
//! [`detect`] with [`AccelPref::Auto`] picks KVM only when `/dev/kvm` opens, answers
//! `KVM_GET_API_VERSION` with 12, and `/proc/cpuinfo` has no `hypervisor` flag, that is,
//! when this host is not itself a VM. Nested KVM is refused on purpose: on the build
//! machines (a VM whose `/dev/kvm` works) a guest under nested KVM printed nothing in
//! 100 s, and `-cpu host` aborted on an MSR the outer hypervisor refuses, while TCG boots
//! in 2-3 s. Forcing [`AccelPref::Kvm`] still uses a nested KVM when it is there.

use std::os::fd::AsRawFd;
use std::path::Path;

use crate::config::Accel;

/// What the user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AccelPref {
    #[default]
    Auto,
    Kvm,
    Tcg,
}

impl std::str::FromStr for AccelPref {
    type Err = String;
    fn from_str(s: &str) -> Result<AccelPref, String> {
        match s {
            "auto" | "" => Ok(AccelPref::Auto),
            "kvm" => Ok(AccelPref::Kvm),
            "tcg" => Ok(AccelPref::Tcg),
            other => Err(format!(
                "unknown accelerator {other:?}: say auto, kvm or tcg"
            )),
        }
    }
}

/// KVM was asked for and cannot be had.
#[derive(Debug, thiserror::Error)]
#[error("KVM is not usable here: {reason} (use --accel tcg, or auto to fall back to emulation)")]
pub struct NoKvm {
    pub reason: String,
}

/// `_IO(KVMIO, 0x00)`.
const KVM_GET_API_VERSION: libc::c_ulong = 0xAE00;
/// The only version there has ever been.
const KVM_API_VERSION: i32 = 12;

/// Why `/dev/kvm` is not usable, if it is not.
fn kvm_problem(dev: &Path) -> Option<String> {
    let f = match std::fs::OpenOptions::new().read(true).write(true).open(dev) {
        Ok(f) => f,
        Err(e) => return Some(format!("cannot open {}: {e}", dev.display())),
    };
    // SAFETY: an ioctl without arguments on a descriptor we own.
    let v = unsafe { libc::ioctl(f.as_raw_fd(), KVM_GET_API_VERSION as _) };
    if v != KVM_API_VERSION {
        return Some(format!(
            "{} answers KVM API version {v}, not {KVM_API_VERSION}",
            dev.display()
        ));
    }
    None
}

/// Whether `cpuinfo` (the text of /proc/cpuinfo) says this host is a VM.
fn is_guest(cpuinfo: &str) -> bool {
    cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "hypervisor"))
}

/// The accelerator for `pref` on this host.
pub fn detect(pref: AccelPref) -> Result<Accel, NoKvm> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    decide(pref, kvm_problem(Path::new("/dev/kvm")), is_guest(&cpuinfo))
}

fn decide(pref: AccelPref, kvm_problem: Option<String>, nested: bool) -> Result<Accel, NoKvm> {
    match (pref, kvm_problem) {
        (AccelPref::Tcg, _) => Ok(Accel::Tcg),
        (AccelPref::Kvm, Some(reason)) => Err(NoKvm { reason }),
        (AccelPref::Kvm, None) => Ok(Accel::Kvm),
        (AccelPref::Auto, None) if !nested => Ok(Accel::Kvm),
        (AccelPref::Auto, _) => Ok(Accel::Tcg),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_takes_kvm_only_on_bare_metal() {
        assert_eq!(decide(AccelPref::Auto, None, false).unwrap(), Accel::Kvm);
        assert_eq!(decide(AccelPref::Auto, None, true).unwrap(), Accel::Tcg);
        assert_eq!(
            decide(AccelPref::Auto, Some("no".into()), false).unwrap(),
            Accel::Tcg
        );
        assert_eq!(decide(AccelPref::Tcg, None, false).unwrap(), Accel::Tcg);
        assert_eq!(decide(AccelPref::Kvm, None, true).unwrap(), Accel::Kvm);
        let e = decide(
            AccelPref::Kvm,
            Some("cannot open /dev/kvm: gone".into()),
            false,
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("/dev/kvm") && e.to_string().contains("tcg"),
            "{e}"
        );
    }

    #[test]
    fn the_hypervisor_flag_marks_a_guest() {
        assert!(is_guest(
            "processor : 0\nflags\t\t: fpu vme hypervisor lahf_lm\n"
        ));
        assert!(!is_guest("flags\t\t: fpu vme lahf_lm\n"));
        assert!(!is_guest("model name : hypervisor-free cpu\nflags : fpu\n"));
        assert!(kvm_problem(Path::new("/nonexistent/kvm")).is_some());
        assert_eq!("tcg".parse::<AccelPref>().unwrap(), AccelPref::Tcg);
        assert!("xen".parse::<AccelPref>().is_err());
    }
}
