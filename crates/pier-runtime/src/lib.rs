//! Pier's container runtime: it runs an OCI bundle.
//!
//! - [`attach`]: the frame protocol of attached clients (stdin, output, resize).
//! - [`spec`]: the OCI spec of a container, with Docker's defaults.
//! - [`cgroups`]: cgroup v1 and v2: create, limit, freeze, OOM, remove; refuses hosts
//!   where containers could not be confined.
//! - [`devices`]: device rules, for the v1 controller or a v2 BPF device program.
//! - [`rootfs`]: paths resolved inside a container's root; `--user` lookup.
//! - [`in_root`]: a container's files through descriptors only (`openat2` inside its
//!   root, nothing followed below): what `cp`, `export`, `commit` and copy-up use.
//! - [`seccomp`]: Docker's default profile, resolved per container, compiled to BPF.
//! - [`init`]: the container's setup in the cloned child, up to exec.
//! - [`userns`]: `--uidmap`: the user namespace and the ID-mapped rootfs.
//! - [`exec`]: `pier exec`: another process in a running container.
//! - [`monitor`]: the per-container process that holds stdio and the exit status and
//!   outlives the daemon.
//! - [`zygote`]: the process that forks monitors for the daemon, cheaper than spawning.
//! - [`sealed`]: the sealed in-memory copy of `pier` that helpers run from.
//! - [`reap`]: killing what a container left in its cgroup.
//! - [`logs`]: the log file format, rotation, and reading.
//! - [`state`]: the files monitor and daemon share.
//! - [`error`]: why a start failed ([`StartError`]), and the monitor's answer to it.
//!
//! Namespace work never happens in the daemon: the daemon asks its zygote, a fresh
//! single-threaded `pier __monitor-zygote`, to fork a monitor, which clones the container.

pub mod attach;
pub mod cgroups;
pub mod devices;
pub mod error;
pub mod exec;
pub mod foreign_mounts;
pub mod in_root;
pub mod init;
pub mod logs;
pub mod monitor;
pub mod reap;
pub mod rootfs;
pub mod sealed;
pub mod seccomp;
pub mod spec;
pub mod state;
pub mod userns;
pub mod vm_start;
pub mod zygote;

pub use error::{Answer, ErrorKind, StartError, Step};
