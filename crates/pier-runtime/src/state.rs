//! Files a container's monitor and the daemon share in the container's directory. They
//! are written by rename, so a reader sees a whole file or none, whoever crashed.
//!
//! ```text
//! config.json    the OCI spec (the bundle)
//! rootfs/        the overlay mount point
//! monitor.json   what the monitor needs besides the spec (MonitorConfig)
//! state.json     written once the container runs: pids (Running)
//! exit.json      written when it has exited: code, time, OOM (Exited)
//! container.log  stdout and stderr, one JSON object per line, rotated
//! record.json    the daemon's record of a `--rm` container, whose stored one a crash
//!                may lose (written by the daemon; see pier-daemon's containers.rs)
//! ```

use std::fs;
use std::io::{self, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

/// What the daemon tells a monitor.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MonitorConfig {
    pub id: String,
    /// Rotate the log past this many bytes.
    pub log_max_bytes: u64,
    /// Keep this many rotated files besides the current one.
    pub log_max_files: u32,
    /// `pier` (Pier's own runtime) or `runc` (Debian's, for comparison).
    #[serde(default = "default_runtime")]
    pub runtime: String,
    /// Give the container a terminal (`-t`).
    #[serde(default)]
    pub tty: bool,
    /// Keep the container's stdin open for attached clients (`-i`).
    #[serde(default)]
    pub stdin: bool,
    /// For a container in a user namespace: the directories of its rootfs, which the
    /// monitor mounts again through ID-mapped mounts (see [`crate::userns`]).
    #[serde(default)]
    pub overlay: Option<OverlayDirs>,
    /// A client will attach right after the start: keep the output for the first one,
    /// up to [`crate::monitor::HOLD_FOR_ATTACH`], even once the container has exited.
    #[serde(default)]
    pub hold_for_attach: bool,
    /// Log driver `none`: the output goes to attached clients only, no log is kept.
    #[serde(default)]
    pub no_log: bool,
}

/// A file in a container's directory saying that a client waits to attach at the next
/// start: that start's monitor holds the output for it (as `hold_for_attach`), and
/// removes the file.
pub const ATTACH_PENDING: &str = "attach-pending";

/// The directories an overlay rootfs is made of.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OverlayDirs {
    /// Image layers, the top one first.
    pub lower: Vec<std::path::PathBuf>,
    pub upper: std::path::PathBuf,
    pub work: std::path::PathBuf,
    /// Mount with `volatile`: no syncs of the writable layer (a container whose files
    /// go with it).
    #[serde(default)]
    pub volatile: bool,
}

fn default_runtime() -> String {
    "pier".into()
}

/// A running container, as its monitor reports it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Running {
    pub pid: i32,
    pub monitor_pid: i32,
    pub started_at: String,
}

/// How a container ended.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Exited {
    pub exit_code: i32,
    pub finished_at: String,
    pub oom_killed: bool,
    /// Set when the container never started: why.
    #[serde(default)]
    pub error: Option<String>,
}

/// Writes `value` to `path` atomically (a temporary file renamed over it), so that a
/// reader sees the old content or the new, never a part. It is not fsynced: these files
/// describe processes that a power loss kills anyway, the daemon's store holds what must
/// outlive one, and a kill -9 of any Pier process leaves the page cache intact. Skipping
/// the sync takes about a millisecond off each container start and exit.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = fs::File::create(&tmp)?;
    f.write_all(&serde_json::to_vec(value).expect("serializable"))?;
    fs::rename(&tmp, path)
}

pub fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Option<T> {
    fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
}
