//! `pier system df|prune|info`, `pier version`, `pier events` with `--since`, `--until`
//! and `--filter`, and `pier search`: the daemon's view of itself, laid out as Docker's
//! commands print it.

use std::io::Write;

use clap::{Args, Subcommand};
use pier_api::cluster::ClusterStatus;
use pier_api::containers::Event;
use pier_api::registry::RegistryTag;
use pier_api::system::{SystemDf, SystemPruneReport, VersionInfo};
use pier_api::time::{human_ago, now_unix, parse_rfc3339};
use pier_api::types::SystemInfo;
use pier_client::{encode_segment, Client};

use crate::output::{human_size, human_size_binary, print, table, Format};
use crate::{fail, CliError};

#[derive(Debug, Subcommand)]
pub enum SystemCommand {
    /// Show disk usage by images, containers, volumes and the build cache.
    Df {
        /// Each image, container and volume.
        #[arg(short, long)]
        verbose: bool,
    },
    /// Remove stopped containers, unused networks, dangling images and the build cache.
    Prune {
        /// Every image no container uses, not only dangling ones.
        #[arg(short, long)]
        all: bool,
        /// Anonymous volumes no container uses too.
        #[arg(long)]
        volumes: bool,
        /// Do not ask for confirmation.
        #[arg(short, long)]
        force: bool,
    },
    /// Show what the daemon is and holds (same as `pier info`).
    Info,
}

#[derive(Debug, Subcommand)]
pub enum DashboardCommand {
    /// Print a one-time login link to the dashboard (it works once, for 5 minutes).
    Url,
}

/// Prints a new one-time dashboard link (root only: it comes over the daemon's socket);
/// with `--format json`, its lifetime too.
pub async fn dashboard_url(client: &Client, fmt: Format) -> Result<(), CliError> {
    let link: pier_api::system::DashboardLink = client
        .post("/v1/dashboard/links", &serde_json::json!({}))
        .await?;
    print(fmt, &link, || link.url.clone())
}

#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Show the events from this time: Unix seconds, RFC 3339, or a duration before
    /// now (`10m`, `1h30m`). The daemon keeps its last 4096 events.
    #[arg(long)]
    pub since: Option<String>,
    /// Stop at this time (same forms as --since).
    #[arg(long)]
    pub until: Option<String>,
    /// `type=container|image|network|volume|registry`, `event=start`, `container=NAME`, `image=`,
    /// `network=`, `volume=`, `label=KEY[=VALUE]`; repeatable (same keys OR, others AND).
    #[arg(long, short = 'f')]
    pub filter: Vec<String>,
}

#[derive(Debug, Args)]
pub struct SearchArgs {
    /// A substring of the repository name.
    pub term: String,
    /// Show at most this many results.
    #[arg(long, default_value_t = 25)]
    pub limit: usize,
    /// Do not truncate descriptions.
    #[arg(long)]
    pub no_trunc: bool,
}

pub async fn run(client: &Client, fmt: Format, cmd: SystemCommand) -> Result<(), CliError> {
    match cmd {
        SystemCommand::Df { verbose } => df(client, fmt, verbose).await,
        SystemCommand::Prune {
            all,
            volumes,
            force,
        } => prune(client, fmt, all, volumes, force).await,
        SystemCommand::Info => info(client, fmt).await,
    }
}

pub async fn info(client: &Client, fmt: Format) -> Result<(), CliError> {
    let i: SystemInfo = client.get("/v1/info").await?;
    // Only the root-only socket serves the pool's status; elsewhere the line is left out.
    let pool: Option<ClusterStatus> = client.get("/v1/cluster").await.ok();
    // As JSON: the daemon's answer with the pool's status beside it (null where unserved).
    #[derive(serde::Serialize)]
    struct WithPool<'a> {
        #[serde(flatten)]
        info: &'a SystemInfo,
        pool: Option<&'a ClusterStatus>,
    }
    let shown = WithPool {
        info: &i,
        pool: pool.as_ref(),
    };
    print(fmt, &shown, || {
        let gib = |b: u64| human_size_binary(b);
        [
            "Server:".to_string(),
            format!(" Project: {}", i.project),
            match &pool {
                Some(ClusterStatus {
                    cluster_id: Some(id),
                    host: Some(host),
                    connected,
                    cut_off,
                    ..
                }) => format!(
                    " Pool: {id}, as host {host}{}",
                    match cut_off {
                        Some(why) => format!(
                            " (CUT OFF: this host cannot reach a majority of the pool's store: {why}; it places nothing until it is back, and its instances keep running)"
                        ),
                        None if !*connected => " (its store not reached yet)".to_string(),
                        None => String::new(),
                    }
                ),
                _ => " Pool: none".to_string(),
            },
            format!(" Containers: {}", i.containers),
            format!("  Running: {}", i.containers_running),
            format!("  Paused: {}", i.containers_paused),
            format!("  Stopped: {}", i.containers_stopped),
            format!(" Images: {}", i.images),
            format!(" Server Version: {}", i.version),
            format!(" API Version: {}", i.api_version),
            format!(" Storage Driver: {}", i.storage_driver),
            format!("  Root Dir: {}", i.root),
            format!(
                "  Free Space: {} of {}",
                gib(i.root_free_bytes),
                gib(i.root_total_bytes)
            ),
            format!("  Store Schema: {}", i.store_schema),
            format!(" Cgroup Driver: {}", i.cgroup_driver),
            format!(" Cgroup Version: {}", i.cgroup_version),
            format!(" Runtimes: {}", i.runtimes.join(" ")),
            format!(
                " Default Runtime: {}",
                i.runtimes.first().map_or("pier", String::as_str)
            ),
            match &i.vm {
                Some(vm) => format!(
                    " VMs: {} ({}), kernel {}{}",
                    vm.hypervisor,
                    match vm.accel.as_str() {
                        "kvm" => "KVM",
                        _ => "TCG emulation",
                    },
                    vm.kernel,
                    vm.problem
                        .as_deref()
                        .map(|p| format!("; not available: {p}"))
                        .unwrap_or_default()
                ),
                None => " VMs: not available".to_string(),
            },
            format!(" Kernel Version: {}", i.kernel),
            format!(" Operating System: {}", i.os),
            " OSType: linux".to_string(),
            format!(" Architecture: {}", i.arch),
            format!(" CPUs: {}", i.cpus),
            format!(" Total Memory: {}", gib(i.memory)),
            format!(" Name: {}", i.hostname),
        ]
        .join("\n")
    })
}

/// `pier version`: the client's part always; the server's, or an error (exit 1) when
/// the daemon cannot be reached, as `docker version` does.
pub async fn version(client: &Client, fmt: Format) -> Result<(), CliError> {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        a => a,
    };
    let commit = option_env!("PIER_GIT_COMMIT").unwrap_or("unknown");
    let server = client.get::<VersionInfo>("/v1/version").await;
    let client_json = serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "api_version": pier_api::API_VERSION,
        "git_commit": commit,
        "os": std::env::consts::OS,
        "arch": arch,
        "host": client.socket().display().to_string(),
    });
    let client_text = [
        "Client:".to_string(),
        format!(" Version:           {}", env!("CARGO_PKG_VERSION")),
        format!(" API version:       {}", pier_api::API_VERSION),
        format!(" Git commit:        {commit}"),
        format!(" OS/Arch:           {}/{arch}", std::env::consts::OS),
        format!(" Host:              {}", client.socket().display()),
    ]
    .join("\n");
    match server {
        Ok(s) => {
            let v = serde_json::json!({"client": client_json, "server": &s});
            print(fmt, &v, || {
                [
                    client_text.clone(),
                    String::new(),
                    "Server: Pier Engine".to_string(),
                    " Engine:".to_string(),
                    format!("  Version:          {}", s.version),
                    format!("  API version:      {}", s.api_version),
                    format!(
                        "  Docker API:       {} (minimum version {})",
                        s.docker_api_version, s.docker_min_api_version
                    ),
                    format!(
                        "  Git commit:       {}",
                        s.git_commit.as_deref().unwrap_or("unknown")
                    ),
                    format!("  OS/Arch:          {}/{}", s.os, s.arch),
                    format!("  Kernel Version:   {}", s.kernel),
                ]
                .join("\n")
            })
        }
        Err(e) => {
            print(fmt, &serde_json::json!({"client": client_json}), || {
                client_text
            })?;
            let _ = std::io::stdout().flush();
            Err(e.into())
        }
    }
}

fn percent(part: u64, whole: u64) -> String {
    format!("{}%", (part * 100).checked_div(whole).unwrap_or(0))
}

fn ago(ts: &str, now: i64) -> String {
    parse_rfc3339(ts).map_or("N/A".into(), |t| human_ago(t, now))
}

fn short(id: &str) -> String {
    id.trim_start_matches("sha256:").chars().take(12).collect()
}

pub async fn df(client: &Client, fmt: Format, verbose: bool) -> Result<(), CliError> {
    let df: SystemDf = client.get("/v1/system/df").await?;
    print(fmt, &df, || {
        let now = now_unix();
        // As Docker counts them: layers images share are on disk once, and what an image
        // in use holds alone is not reclaimable.
        let images_size = df.layers_size;
        let images_active = df.images.iter().filter(|i| i.containers > 0).count();
        let images_used: u64 = df
            .images
            .iter()
            .filter(|i| i.containers > 0)
            .map(|i| i.size.saturating_sub(i.shared_size))
            .sum();
        let images_free = images_size.saturating_sub(images_used);
        let c_size: u64 = df.containers.iter().map(|c| c.size_rw).sum();
        let c_active = df
            .containers
            .iter()
            .filter(|c| matches!(c.state.as_str(), "running" | "paused" | "restarting"))
            .count();
        let c_free: u64 = df
            .containers
            .iter()
            .filter(|c| !matches!(c.state.as_str(), "running" | "paused" | "restarting"))
            .map(|c| c.size_rw)
            .sum();
        let v_size: u64 = df.volumes.iter().map(|v| v.size).sum();
        let v_active = df.volumes.iter().filter(|v| v.links > 0).count();
        let v_free: u64 = df
            .volumes
            .iter()
            .filter(|v| v.links == 0)
            .map(|v| v.size)
            .sum();
        let bc = &df.build_cache;
        let row = |kind: &str, total: usize, active: usize, size: u64, free: u64| {
            vec![
                kind.to_string(),
                total.to_string(),
                active.to_string(),
                human_size(size),
                format!("{} ({})", human_size(free), percent(free, size)),
            ]
        };
        let summary = table(
            &["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"],
            &[
                row(
                    "Images",
                    df.images.len(),
                    images_active,
                    images_size,
                    images_free,
                ),
                row("Containers", df.containers.len(), c_active, c_size, c_free),
                row("Local Volumes", df.volumes.len(), v_active, v_size, v_free),
                vec![
                    "Build Cache".into(),
                    bc.count.to_string(),
                    "0".into(),
                    human_size(bc.size),
                    human_size(bc.size),
                ],
            ],
        );
        if !verbose {
            return summary;
        }
        let images: Vec<Vec<String>> = df
            .images
            .iter()
            .flat_map(|i| {
                let tags = if i.repo_tags.is_empty() {
                    vec!["<none>:<none>".to_string()]
                } else {
                    i.repo_tags.clone()
                };
                tags.into_iter().map(move |t| {
                    let (repo, tag) = match t.rsplit_once(':') {
                        Some((r, t)) if !t.contains('/') => (r.to_string(), t.to_string()),
                        _ => (t.clone(), "<none>".into()),
                    };
                    vec![
                        repo,
                        tag,
                        short(&i.id),
                        i.created.as_deref().map_or("N/A".into(), |c| ago(c, now)),
                        human_size(i.size),
                        i.containers.to_string(),
                    ]
                })
            })
            .collect();
        let containers: Vec<Vec<String>> = df
            .containers
            .iter()
            .map(|c| {
                let mut cmd = format!("\"{}\"", c.command);
                if cmd.chars().count() > 22 {
                    cmd = cmd.chars().take(19).collect::<String>() + "…\"";
                }
                vec![
                    short(&c.id),
                    c.image.clone(),
                    cmd,
                    c.volumes.to_string(),
                    human_size(c.size_rw),
                    ago(&c.created, now),
                    c.state.clone(),
                    c.name.clone(),
                ]
            })
            .collect();
        let volumes: Vec<Vec<String>> = df
            .volumes
            .iter()
            .map(|v| vec![v.name.clone(), v.links.to_string(), human_size(v.size)])
            .collect();
        [
            "Images space usage:".to_string(),
            String::new(),
            table(
                &[
                    "REPOSITORY",
                    "TAG",
                    "IMAGE ID",
                    "CREATED",
                    "SIZE",
                    "CONTAINERS",
                ],
                &images,
            ),
            String::new(),
            "Containers space usage:".to_string(),
            String::new(),
            table(
                &[
                    "CONTAINER ID",
                    "IMAGE",
                    "COMMAND",
                    "LOCAL VOLUMES",
                    "SIZE",
                    "CREATED",
                    "STATUS",
                    "NAMES",
                ],
                &containers,
            ),
            String::new(),
            "Local Volumes space usage:".to_string(),
            String::new(),
            table(&["VOLUME NAME", "LINKS", "SIZE"], &volumes),
            String::new(),
            format!(
                "Build cache usage: {} ({} intermediate images)",
                human_size(bc.size),
                bc.count
            ),
        ]
        .join("\n")
    })
}

/// Docker's warning before `system prune`, naming what the flags add (for
/// [`crate::output::confirm`], which adds "WARNING!" and the question).
pub fn prune_warning(all: bool, volumes: bool) -> String {
    let mut s = String::from("This will remove:\n  - all stopped containers\n");
    s.push_str("  - all networks not used by at least one container\n");
    if volumes {
        s.push_str("  - all anonymous volumes not used by at least one container\n");
    }
    if all {
        s.push_str("  - all images without at least one container associated to them\n");
    } else {
        s.push_str("  - all dangling images\n");
    }
    s.push_str(if all {
        "  - all build cache\n"
    } else {
        "  - unused build cache\n"
    });
    s
}

pub async fn prune(
    client: &Client,
    fmt: Format,
    all: bool,
    volumes: bool,
    force: bool,
) -> Result<(), CliError> {
    if !crate::output::confirm(force, &prune_warning(all, volumes)) {
        return Ok(());
    }
    let r: SystemPruneReport = client
        .post(
            &format!("/v1/system/prune?all={all}&volumes={volumes}"),
            &(),
        )
        .await?;
    print(fmt, &r, || {
        let mut out = Vec::new();
        let mut section = |title: &str, items: Vec<String>| {
            if !items.is_empty() {
                out.push(format!("{title}:"));
                out.extend(items);
                out.push(String::new());
            }
        };
        section("Deleted Containers", r.containers.clone());
        section("Deleted Networks", r.networks.clone());
        section("Deleted Volumes", r.volumes.clone());
        section(
            "Deleted Images",
            r.images
                .deleted
                .iter()
                .map(|d| format!("deleted: {d}"))
                .collect(),
        );
        section(
            "Deleted build cache objects",
            r.build_cache
                .deleted
                .iter()
                .map(|d| d.to_string())
                .collect(),
        );
        out.push(format!(
            "Total reclaimed space: {}",
            human_size(r.reclaimed_bytes)
        ));
        out.join("\n")
    })
}

/// A `--since`/`--until` value as the daemon takes it: Unix seconds and RFC 3339 pass
/// through; a Go-style duration (`10m`, `1h30m`, `45s`) is that long before now.
/// `v` as the API takes it; a duration is taken back from `now` (nanoseconds since the
/// epoch) and sent with its nanoseconds, as Docker's CLI does, so that `--until 0s` takes
/// in the events of this very second.
pub fn event_time(v: &str, now: i128) -> Result<String, CliError> {
    if v.parse::<f64>().is_ok() || parse_rfc3339(v).is_some() {
        return Ok(v.to_string());
    }
    let mut secs = 0f64;
    let mut num = String::new();
    let bad = || {
        fail(format!(
            "invalid time {v:?}: give Unix seconds, an RFC 3339 time or a duration such as 10m or 1h30m"
        ))
    };
    for ch in v.chars() {
        if ch.is_ascii_digit() || ch == '.' {
            num.push(ch);
            continue;
        }
        let n: f64 = num.parse().map_err(|_| bad())?;
        num.clear();
        secs += n * match ch {
            's' => 1.0,
            'm' => 60.0,
            'h' => 3600.0,
            _ => return Err(bad()),
        };
    }
    if !num.is_empty() || v.is_empty() {
        return Err(bad());
    }
    let t = now - (secs * 1e9) as i128;
    Ok(format!(
        "{}.{:09}",
        t.div_euclid(1_000_000_000),
        t.rem_euclid(1_000_000_000)
    ))
}

/// `KEY=VALUE` filters as Docker's JSON (`{"KEY": ["VALUE", ...]}`).
fn filters_json(filters: &[String]) -> Result<String, CliError> {
    let mut m: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for f in filters {
        let (k, v) = f.split_once('=').ok_or_else(|| {
            fail(format!(
                "invalid filter {f:?}: give KEY=VALUE, e.g. type=container or event=start"
            ))
        })?;
        m.entry(k.to_string()).or_default().push(v.to_string());
    }
    Ok(serde_json::to_string(&m).expect("json"))
}

pub async fn events(client: &Client, fmt: Format, a: EventsArgs) -> Result<(), CliError> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128);
    let mut q = Vec::new();
    if let Some(s) = &a.since {
        q.push(format!("since={}", encode_segment(&event_time(s, now)?)));
    }
    if let Some(u) = &a.until {
        q.push(format!("until={}", encode_segment(&event_time(u, now)?)));
    }
    if !a.filter.is_empty() {
        q.push(format!(
            "filters={}",
            encode_segment(&filters_json(&a.filter)?)
        ));
    }
    let path = if q.is_empty() {
        "/v1/events".to_string()
    } else {
        format!("/v1/events?{}", q.join("&"))
    };
    let mut bad = None;
    client
        .get_ndjson::<Event>(&path, |e| {
            let line = match fmt {
                Format::Json => serde_json::to_string(&e).expect("json"),
                Format::Template { src, .. } => {
                    let v = serde_json::to_value(&e).expect("json");
                    match crate::output::render_template(false, src, &v) {
                        Ok(l) => l,
                        Err(err) => {
                            bad = Some(err);
                            return false;
                        }
                    }
                }
                Format::Table => {
                    let attrs: Vec<String> = e
                        .attributes
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect();
                    format!(
                        "{} {} {} {} ({})",
                        e.time,
                        e.kind,
                        e.action,
                        e.id,
                        attrs.join(", ")
                    )
                }
            };
            crate::output::outln(&line);
            true
        })
        .await?;
    bad.map_or(Ok(()), Err)
}

/// `pier search TERM`: the built-in registry's repositories whose name holds TERM.
/// The description is the `org.opencontainers.image.description` label of a tag; a
/// private registry has no stars, official or automated builds.
pub async fn search(client: &Client, fmt: Format, a: SearchArgs) -> Result<(), CliError> {
    if a.limit == 0 || a.limit > 100 {
        return Err(fail("--limit must be between 1 and 100"));
    }
    let tags: Vec<RegistryTag> = client
        .get(&format!(
            "/v1/registry/search?name={}",
            encode_segment(&a.term)
        ))
        .await?;
    let mut repos: std::collections::BTreeMap<String, String> = Default::default();
    for t in &tags {
        let d = repos.entry(t.repository.clone()).or_default();
        if d.is_empty() {
            if let Some(desc) = t.labels.get("org.opencontainers.image.description") {
                *d = desc.clone();
            }
        }
    }
    let rows: Vec<serde_json::Value> = repos
        .into_iter()
        .take(a.limit)
        .map(|(name, description)| {
            serde_json::json!({"name": name, "description": description, "stars": 0,
                "official": false, "automated": false})
        })
        .collect();
    print(fmt, &rows, || {
        let cells: Vec<Vec<String>> = rows
            .iter()
            .map(|r| {
                let mut d = r["description"].as_str().unwrap_or("").to_string();
                if !a.no_trunc && d.chars().count() > 45 {
                    d = d.chars().take(44).collect::<String>() + "…";
                }
                vec![
                    r["name"].as_str().unwrap_or("").to_string(),
                    d,
                    "0".into(),
                    String::new(),
                    String::new(),
                ]
            })
            .collect();
        table(
            &["NAME", "DESCRIPTION", "STARS", "OFFICIAL", "AUTOMATED"],
            &cells,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_times_take_durations_before_now() {
        assert_eq!(event_time("1700000000", 0).unwrap(), "1700000000");
        assert_eq!(
            event_time("10m", 1_000_500_000_000).unwrap(),
            "400.500000000"
        );
        assert_eq!(
            event_time("1h30m", 10_000_000_000_000).unwrap(),
            "4600.000000000"
        );
        assert_eq!(event_time("0s", 7_000_000_123).unwrap(), "7.000000123");
        assert_eq!(
            event_time("2024-01-02T03:04:05Z", 0).unwrap(),
            "2024-01-02T03:04:05Z"
        );
        assert!(event_time("soon", 0).is_err());
        assert!(event_time("10", 0).is_ok());
        assert!(event_time("5x", 0).is_err());
    }

    #[test]
    fn filters_become_docker_json() {
        let f = filters_json(&[
            "type=container".into(),
            "type=image".into(),
            "event=start".into(),
        ])
        .unwrap();
        assert_eq!(f, r#"{"event":["start"],"type":["container","image"]}"#);
        assert!(filters_json(&["nokey".into()]).is_err());
    }

    #[test]
    fn prune_warning_is_dockers() {
        assert_eq!(
            prune_warning(false, false),
            "This will remove:\n  - all stopped containers\n  - all networks not used by at least one container\n  - all dangling images\n  - unused build cache\n"
        );
        assert!(prune_warning(true, true).contains(
            "  - all anonymous volumes not used by at least one container\n  - all images without at least one container associated to them\n"
        ));
    }
}
