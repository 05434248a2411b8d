//! Finding what a VM is made of on the host: the guest's files ([`Assets`]: the kernel,
//! its modules and the agent, under `${PIER_VM_DIR:-/usr/local/lib/pier/vm}`, installed
//! by `scripts/vm-assets.sh`) and the host's programs ([`Tools`]: QEMU and virtiofsd,
//! from Debian's `qemu-system-x86`). Each missing file is an error naming it and saying
//! how to get it.

use std::path::{Path, PathBuf};

/// Where the guest's files are, unless `PIER_VM_DIR` says otherwise.
pub const DEFAULT_DIR: &str = "/usr/local/lib/pier/vm";
/// The environment variable naming another directory.
pub const DIR_ENV: &str = "PIER_VM_DIR";

const INSTALL_ASSETS: &str =
    "run scripts/vm-assets.sh to install the VM's kernel, modules and agent";
const INSTALL_QEMU: &str = "apt-get install qemu-system-x86";

/// A file a VM needs that is not there.
#[derive(Debug, thiserror::Error)]
#[error("{what} is missing: {path} does not exist ({fix})")]
pub struct Missing {
    pub what: &'static str,
    pub path: PathBuf,
    pub fix: &'static str,
}

/// The guest's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assets {
    pub dir: PathBuf,
    /// `vmlinuz`: the kernel (a bzImage).
    pub kernel: PathBuf,
    /// `modules/`: the kernel's modules the guest loads (`*.ko`, flat).
    pub modules: PathBuf,
    /// `modules/modules.order`: the order to load them in.
    pub modules_order: PathBuf,
    /// `pier-guest`: the agent (a static binary), the VM's /init.
    pub guest: PathBuf,
}

impl Assets {
    /// `$PIER_VM_DIR`, or [`DEFAULT_DIR`].
    pub fn default_dir() -> PathBuf {
        std::env::var_os(DIR_ENV)
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DIR))
    }

    /// The assets in `dir`, each checked to be there.
    pub fn find(dir: &Path) -> Result<Assets, Missing> {
        let a = Assets {
            dir: dir.to_owned(),
            kernel: dir.join("vmlinuz"),
            modules: dir.join("modules"),
            modules_order: dir.join("modules").join("modules.order"),
            guest: dir.join("pier-guest"),
        };
        for (what, path) in [
            ("the VM kernel", &a.kernel),
            ("the VM kernel's modules", &a.modules),
            ("the VM kernel's module order", &a.modules_order),
            ("the VM guest agent", &a.guest),
        ] {
            if !path.exists() {
                return Err(Missing {
                    what,
                    path: path.clone(),
                    fix: INSTALL_ASSETS,
                });
            }
        }
        Ok(a)
    }
}

/// The host's programs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tools {
    pub qemu: PathBuf,
    pub virtiofsd: PathBuf,
}

const QEMU_PLACES: &[&str] = &[
    "/usr/bin/qemu-system-x86_64",
    "/usr/local/bin/qemu-system-x86_64",
];
/// Debian's C virtiofsd (QEMU 7.2's), then the Rust one's usual homes.
const VIRTIOFSD_PLACES: &[&str] = &[
    "/usr/lib/qemu/virtiofsd",
    "/usr/libexec/virtiofsd",
    "/usr/local/bin/virtiofsd",
    "/usr/bin/virtiofsd",
];

fn first_existing(places: &[&str]) -> Option<PathBuf> {
    places.iter().map(PathBuf::from).find(|p| p.exists())
}

impl Tools {
    /// QEMU and virtiofsd where Debian (or a local install) puts them.
    pub fn find() -> Result<Tools, Missing> {
        let qemu = first_existing(QEMU_PLACES).ok_or_else(|| Missing {
            what: "QEMU",
            path: PathBuf::from(QEMU_PLACES[0]),
            fix: INSTALL_QEMU,
        })?;
        let virtiofsd = first_existing(VIRTIOFSD_PLACES).ok_or_else(|| Missing {
            what: "virtiofsd",
            path: PathBuf::from(VIRTIOFSD_PLACES[0]),
            fix: INSTALL_QEMU,
        })?;
        Ok(Tools { qemu, virtiofsd })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_missing_asset_is_named_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let e = Assets::find(d).unwrap_err();
        assert_eq!(e.path, d.join("vmlinuz"));
        assert!(e.to_string().contains("scripts/vm-assets.sh"), "{e}");
        std::fs::write(d.join("vmlinuz"), b"k").unwrap();
        std::fs::create_dir(d.join("modules")).unwrap();
        let e = Assets::find(d).unwrap_err();
        assert_eq!(e.path, d.join("modules/modules.order"));
        std::fs::write(d.join("modules/modules.order"), b"").unwrap();
        let e = Assets::find(d).unwrap_err();
        assert_eq!(e.path, d.join("pier-guest"));
        assert!(e.to_string().contains("guest agent"), "{e}");
        std::fs::write(d.join("pier-guest"), b"").unwrap();
        let a = Assets::find(d).unwrap();
        assert_eq!(a.kernel, d.join("vmlinuz"));
    }

    #[test]
    fn a_missing_program_says_what_to_install() {
        assert_eq!(first_existing(&["/nonexistent/qemu"]), None);
        let e = Missing {
            what: "QEMU",
            path: PathBuf::from(QEMU_PLACES[0]),
            fix: INSTALL_QEMU,
        };
        assert_eq!(
            e.to_string(),
            "QEMU is missing: /usr/bin/qemu-system-x86_64 does not exist (apt-get install qemu-system-x86)"
        );
    }
}
