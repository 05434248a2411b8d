//! Instances: what runs. Each kind of instance (a container today, a VM next) is a
//! [`driver::Driver`] implementation; the engine owns the record, the state machine and
//! the restart policy, and asks the driver to realise them.
//!
//! - [`driver`]: the seam (the trait and its typed inputs and outputs).
//! - [`container`]: the container driver (bundle, overlay, cgroup, zygote and monitor).
//! - [`cgroup_parent`]: `--cgroup-parent`, and where each container's cgroup is.
//! - [`vm`]: the VM driver (QEMU microVMs from the same images; the host side of a
//!   VM is a container's, what runs is `pier __vm`).
//! - [`fake`]: a recording driver with failure injection, for the engine test tier.
//! - `links`: legacy links, `--volumes-from` and the `--cgroupns` default.
//! - [`record`]: how an instance is stored: its spec (asked) and status (is).
//! - [`actor`]: the one task per instance that serves its requests, one at a time.
//! - [`Undo`]: the undo list of a multi-step operation ([`crate::steps::Undo`]).

pub mod actor;
pub mod cgroup_parent;
pub mod container;
pub mod driver;
pub mod fake;
pub mod host_access;
mod links;
pub mod record;
pub mod service;
pub mod vm;

pub use service::{
    ContainerPaths, InstanceReconciler, Instances, Peers, INSTANCE_RECONCILE_PERIOD,
};

pub use crate::steps::Undo;
