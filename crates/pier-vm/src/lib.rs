//! The host side of a Pier VM: what runs on the host for one VM instance.
//!
//! The engine prepares an instance directory `DIR` (the overlay rootfs mounted at
//! `DIR/rootfs`, the network namespace), writes [`config::VmConfig`] to `DIR/vm.json`,
//! and its monitor runs `pier __vm DIR` ([`helper::main`]): that process starts
//! virtiofsd and QEMU (microvm), speaks the guest agent's protocol
//! ([`pier_guest`]) over a virtio-serial port, relays the entrypoint's stdio, signals and
//! exit code, and serves `pier __vm-exec DIR REQUEST` ([`exec::main`]) for `pier exec`.
//!
//! | module | owns |
//! |---|---|
//! | [`config`] | `vm.json` and `vm-state.json`, the file names in `DIR` |
//! | [`qemu`] | the typed QEMU command line |
//! | [`qmp`] | the typed QMP client |
//! | [`initramfs`] | the newc cpio writer and the cached initramfs build |
//! | [`assets`] | finding the kernel, modules, agent, QEMU and virtiofsd |
//! | [`accel`] | KVM or TCG |
//! | [`net`] | the taps and their tc redirects to the namespace's veths |
//! | [`helper`] | `pier __vm DIR` |
//! | [`exec`] | `pier __vm-exec DIR REQUEST` |

pub mod accel;
pub mod assets;
pub mod config;
pub mod exec;
pub mod helper;
pub mod initramfs;
pub mod net;
pub mod qemu;
pub mod qmp;
mod sys;

pub use config::{Accel, Disk, Share, VmConfig, VmState};
