//! What `run`, `create`, `attach` and `build` do around the request itself, as Docker's
//! CLI does: pulling a missing image (`--pull`), the health check, `--platform`,
//! `--cidfile` and `--volumes-from` flags, proxying the client's signals to the container
//! (`--sig-proxy`) and the detach keys (`--detach-keys`) of an attached terminal.

use std::time::Duration;

use clap::ValueEnum;
use pier_api::containers::{ContainerInspect, Healthcheck};
use pier_api::detach::DetachKeys;
use pier_api::volumes::{MountKind, MountSpec};
use pier_api::ErrorKind;
use pier_client::{encode_segment, Client};

use crate::CliError;

/// When `run`, `create` and `build` pull their images.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum PullPolicy {
    /// Pull when the image is not here.
    #[default]
    Missing,
    /// Pull every time.
    Always,
    /// Never pull: a missing image is an error.
    Never,
}

/// An error of the flags before the container exists: 125, as Docker's.
pub(crate) fn refused(message: impl Into<String>) -> CliError {
    CliError {
        code: 125,
        message: message.into(),
    }
}

/// The image reference as Docker's messages write it (`busybox:latest`).
fn familiar(reference: &str) -> String {
    reference
        .parse::<pier_api::ImageRef>()
        .map(|r| r.to_string())
        .unwrap_or_else(|_| reference.to_string())
}

/// Whether `reference` names an image by its ID (`sha256:...` or 12 to 64 hex digits),
/// which no registry can give.
fn is_image_id(reference: &str) -> bool {
    let hex = reference.strip_prefix("sha256:").unwrap_or(reference);
    (reference.starts_with("sha256:") || hex.len() >= 12)
        && hex.len() <= 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

/// Makes sure `reference` is here as `policy` says: pulls it (progress on stderr) when
/// it is missing or always, refuses a missing one with `never`. A failed pull of a
/// missing image is told on stderr, and the caller's request fails on its own.
pub async fn ensure_image(
    client: &Client,
    reference: &str,
    policy: PullPolicy,
) -> Result<(), CliError> {
    let present = match client.inspect_image(reference).await {
        Ok(_) => true,
        Err(e) if e.kind() == ErrorKind::NotFound => false,
        Err(e) => return Err(refused(e.to_string())),
    };
    let name = familiar(reference);
    match policy {
        PullPolicy::Missing | PullPolicy::Never if present => return Ok(()),
        PullPolicy::Never => {
            return Err(refused(format!(
                "No such image: {name} (--pull never does not pull it: `pier pull {name}` first, or leave out --pull never)"
            )))
        }
        PullPolicy::Missing if is_image_id(reference) => {
            return Err(refused(format!(
                "No such image: {reference}: an image ID names an image that is here; `pier images` lists them"
            )))
        }
        PullPolicy::Missing => eprintln!("Unable to find image '{name}' locally"),
        PullPolicy::Always => {}
    }
    match crate::registry::pull_for_run(client, &name).await {
        Ok(()) => Ok(()),
        Err(e) if policy == PullPolicy::Always => Err(refused(e.message)),
        // Missing: what could not be pulled is said, and the request goes on to fail
        // with its own words (no such image, a build's missing base).
        Err(e) => {
            eprintln!("cannot pull {name}: {}", e.message);
            Ok(())
        }
    }
}

/// Go's duration syntax, as Docker's flags take it: `30s`, `1m30s`, `500ms`, `1.5h`, `0`.
pub(crate) fn parse_duration(flag: &str, s: &str) -> Result<Duration, CliError> {
    let bad = || {
        refused(format!(
            "invalid {flag} {s:?}: use a duration such as 30s, 1m30s or 500ms"
        ))
    };
    pier_api::time::parse_go_duration(s).ok_or_else(bad)
}

/// The `--health-*` and `--no-healthcheck` flags.
#[derive(Debug, Default)]
pub struct HealthFlags {
    pub cmd: Option<String>,
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub start_period: Option<String>,
    pub retries: Option<u32>,
    pub none: bool,
}

impl HealthFlags {
    /// The health check they ask for; `None` keeps the image's.
    pub fn to_healthcheck(&self) -> Result<Option<Healthcheck>, CliError> {
        let tuned = self.cmd.is_some()
            || self.interval.is_some()
            || self.timeout.is_some()
            || self.start_period.is_some()
            || self.retries.is_some();
        if self.none {
            if tuned {
                return Err(refused(
                    "--no-healthcheck conflicts with --health-* options: give one or the other",
                ));
            }
            return Ok(Some(Healthcheck {
                test: vec!["NONE".into()],
                ..Default::default()
            }));
        }
        if !tuned {
            return Ok(None);
        }
        let ns = |flag: &str, v: &Option<String>| -> Result<u64, CliError> {
            match v {
                None => Ok(0),
                Some(s) => {
                    let d = parse_duration(flag, s)?;
                    u64::try_from(d.as_nanos())
                        .map_err(|_| refused(format!("{flag} {s:?} is too long")))
                }
            }
        };
        Ok(Some(Healthcheck {
            test: match &self.cmd {
                Some(c) if !c.is_empty() => vec!["CMD-SHELL".into(), c.clone()],
                _ => Vec::new(),
            },
            interval_ns: ns("--health-interval", &self.interval)?,
            timeout_ns: ns("--health-timeout", &self.timeout)?,
            start_period_ns: ns("--health-start-period", &self.start_period)?,
            retries: self.retries.unwrap_or(0),
        }))
    }
}

/// The platform of this host as OCI writes it (`linux/amd64`).
pub fn host_platform() -> String {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        "riscv64" => "riscv64",
        "s390x" => "s390x",
        "arm" => "arm",
        other => other,
    };
    format!("linux/{arch}")
}

/// `--platform`: only the host's (`linux`, `linux/amd64`, `amd64` here) is accepted;
/// Pier runs no other architecture's binaries.
pub fn check_platform(p: &str) -> Result<(), CliError> {
    let host = host_platform();
    let arch = host.trim_start_matches("linux/");
    let p = p.trim().to_ascii_lowercase();
    let same = p == host
        || p == "linux"
        || p == arch
        || (arch == "amd64" && matches!(p.as_str(), "linux/x86_64" | "x86_64"))
        || (arch == "arm64" && matches!(p.as_str(), "linux/arm64/v8" | "linux/aarch64"));
    if same {
        Ok(())
    } else {
        Err(refused(format!(
            "--platform {p} is not supported: this host runs {host} and pier runs no emulation; use an image built for {host} (or leave out --platform)"
        )))
    }
}

/// `--cidfile`: made empty before the container is created (so that an existing one
/// refuses the run before anything happens), the ID written once it exists.
pub struct CidFile(std::path::PathBuf);

impl CidFile {
    pub fn create(path: &str) -> Result<CidFile, CliError> {
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
        {
            Ok(_) => Ok(CidFile(path.into())),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(refused(format!(
                "container ID file found, make sure the other container isn't running or delete {path}"
            ))),
            Err(e) => Err(refused(format!(
                "failed to create the container ID file {path}: {e}"
            ))),
        }
    }

    pub fn write(&self, id: &str) -> Result<(), CliError> {
        std::fs::write(&self.0, id).map_err(|e| {
            refused(format!(
                "failed to write the container ID to {}: {e}",
                self.0.display()
            ))
        })
    }

    /// The container was not made: the file goes.
    pub fn discard(self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `--volumes-from NAME[:ro|:rw]`: the volumes and bind mounts of those containers, at
/// the same paths (read-only or not as there, unless `ro`/`rw` says), except where
/// `own` already mounts something.
pub async fn volumes_from(
    client: &Client,
    from: &[String],
    own: &[MountSpec],
) -> Result<Vec<MountSpec>, CliError> {
    let mut out: Vec<MountSpec> = Vec::new();
    for f in from {
        let (name, mode) = match f.rsplit_once(':') {
            Some((n, m @ ("ro" | "rw"))) => (n, Some(m == "ro")),
            Some((_, m)) => {
                return Err(refused(format!(
                    "invalid --volumes-from {f:?}: the mode {m:?} is neither ro nor rw"
                )))
            }
            None => (f.as_str(), None),
        };
        let c: ContainerInspect = client
            .get(&format!("/v1/containers/{}", encode_segment(name)))
            .await
            .map_err(|e| refused(format!("--volumes-from {name}: {e}")))?;
        for m in c.mounts {
            if m.kind == MountKind::Tmpfs || own.iter().chain(&out).any(|o| o.target == m.target) {
                continue;
            }
            out.push(MountSpec {
                read_only: mode.unwrap_or(m.read_only),
                ..m
            });
        }
    }
    Ok(out)
}

/// The signals a foreground client passes on to its container (Docker's set: all it can
/// catch but the job-control and terminal ones).
const PROXIED: [(libc_sig::Sig, &str); 9] = [
    (libc_sig::HUP, "SIGHUP"),
    (libc_sig::INT, "SIGINT"),
    (libc_sig::QUIT, "SIGQUIT"),
    (libc_sig::USR1, "SIGUSR1"),
    (libc_sig::USR2, "SIGUSR2"),
    (libc_sig::TERM, "SIGTERM"),
    (libc_sig::ALRM, "SIGALRM"),
    (libc_sig::PWR, "SIGPWR"),
    (libc_sig::VTALRM, "SIGVTALRM"),
];

/// Signal numbers (Linux), without a libc dependency.
mod libc_sig {
    pub type Sig = i32;
    pub const HUP: Sig = 1;
    pub const INT: Sig = 2;
    pub const QUIT: Sig = 3;
    pub const USR1: Sig = 10;
    pub const USR2: Sig = 12;
    pub const ALRM: Sig = 14;
    pub const TERM: Sig = 15;
    pub const VTALRM: Sig = 26;
    pub const PWR: Sig = 30;
}

/// Sends every proxied signal this client receives to container `id` until dropped.
pub struct SignalProxy(Vec<tokio::task::JoinHandle<()>>);

impl SignalProxy {
    pub fn start(client: &Client, id: &str) -> SignalProxy {
        use tokio::signal::unix::{signal, SignalKind};
        let mut tasks = Vec::new();
        for (num, name) in PROXIED {
            let Ok(mut s) = signal(SignalKind::from_raw(num)) else {
                continue;
            };
            let client = client.clone();
            let path = format!("/v1/containers/{}/kill?signal={name}", encode_segment(id));
            tasks.push(tokio::spawn(async move {
                while s.recv().await.is_some() {
                    if let Err(e) = client.post_empty(&path).await {
                        eprintln!("cannot pass {name} on to the container: {e}");
                    }
                }
            }));
        }
        SignalProxy(tasks)
    }
}

impl Drop for SignalProxy {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// `--detach-keys` (Docker's syntax: `ctrl-p,ctrl-q`, `ctrl-a,x`); ctrl-p ctrl-q when not
/// given.
pub fn parse_detach_keys(s: Option<&str>) -> Result<DetachKeys, CliError> {
    match s {
        None => Ok(DetachKeys::default()),
        Some(s) => DetachKeys::parse(s).map_err(|e| {
            refused(format!(
                "invalid --detach-keys {s:?}: {:?} is neither a character, DEL nor ctrl-<a-z, @, [, \\, ], ^ or _>",
                e.key
            ))
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detach_keys_parse_as_docker_writes_them() {
        let k = |s| parse_detach_keys(s).map(|k| k.bytes().to_vec());
        assert_eq!(k(None).unwrap(), pier_api::detach::DEFAULT);
        assert_eq!(k(Some("ctrl-p,ctrl-q")).unwrap(), pier_api::detach::DEFAULT);
        assert_eq!(k(Some("ctrl-a,x")).unwrap(), vec![1, b'x']);
        let e = k(Some("ctrl-1")).unwrap_err();
        assert_eq!(e.code, 125);
        assert!(e.message.contains("\"ctrl-1\""), "{}", e.message);
        assert!(k(Some("ab")).is_err());
    }

    #[test]
    fn durations_read_as_go_writes_them() {
        assert_eq!(
            parse_duration("f", "1m30s").unwrap(),
            Duration::from_secs(90)
        );
        assert_eq!(
            parse_duration("f", "500ms").unwrap(),
            Duration::from_millis(500)
        );
        assert_eq!(parse_duration("f", "0").unwrap(), Duration::ZERO);
        assert!(parse_duration("f", "10").is_err());
        assert!(parse_duration("f", "-1s").is_err());
    }

    #[test]
    fn health_flags_make_docker_s_healthcheck() {
        let h = HealthFlags {
            cmd: Some("true".into()),
            interval: Some("1s".into()),
            retries: Some(2),
            ..Default::default()
        };
        let hc = h.to_healthcheck().unwrap().unwrap();
        assert_eq!(hc.test, vec!["CMD-SHELL", "true"]);
        assert_eq!(hc.interval_ns, 1_000_000_000);
        assert_eq!(hc.retries, 2);
        let none = HealthFlags {
            none: true,
            ..Default::default()
        };
        assert_eq!(none.to_healthcheck().unwrap().unwrap().test, vec!["NONE"]);
        let both = HealthFlags {
            none: true,
            cmd: Some("true".into()),
            ..Default::default()
        };
        assert!(both.to_healthcheck().is_err());
        assert!(HealthFlags::default().to_healthcheck().unwrap().is_none());
    }

    #[test]
    fn only_the_host_platform_passes() {
        let host = host_platform();
        assert!(check_platform(&host).is_ok());
        assert!(check_platform("linux").is_ok());
        let other = if host == "linux/arm64" {
            "linux/amd64"
        } else {
            "linux/arm64"
        };
        let e = check_platform(other).unwrap_err();
        assert_eq!(e.code, 125);
        assert!(e.message.contains(&host), "{}", e.message);
    }

    #[test]
    fn image_ids_are_told_from_names() {
        assert!(is_image_id("sha256:abc"));
        assert!(is_image_id("0123456789abcdef"));
        assert!(!is_image_id("busybox"));
        assert!(!is_image_id("deadbeef"));
    }
}
