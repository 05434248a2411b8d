//! `pier volume ...` and `pier quota`.

use std::path::PathBuf;

use clap::Subcommand;
use pier_api::volumes::{VolumeCreate, VolumeInspect};
use pier_client::{encode_segment, Client};

use crate::containers::key_values;
use crate::output::{print, table, Format};
use crate::{fail, CliError};

#[derive(Debug, Subcommand)]
pub enum VolumeCommand {
    /// Create a volume.
    Create {
        /// Driver: local (the default).
        #[arg(short, long)]
        driver: Option<String>,
        /// Option: size=10m, inodes=N (limits the kernel enforces).
        #[arg(short, long = "opt")]
        opt: Vec<String>,
        /// Label (KEY=VALUE).
        #[arg(long)]
        label: Vec<String>,
        /// Generated when absent.
        name: Option<String>,
    },
    /// List volumes.
    #[command(alias = "list")]
    Ls {
        #[arg(short, long)]
        quiet: bool,
        /// name=PART or label=K[=V].
        #[arg(short, long)]
        filter: Vec<String>,
    },
    /// Show volumes in detail, with usage and users.
    Inspect {
        #[arg(required = true)]
        volumes: Vec<String>,
    },
    /// Remove volumes no container uses.
    #[command(alias = "remove")]
    Rm {
        /// Accepted for Docker habits: a volume in use is never removed.
        #[arg(short, long)]
        force: bool,
        #[arg(required = true)]
        volumes: Vec<String>,
    },
    /// Remove unused anonymous volumes (with --all, unused named ones too).
    Prune {
        #[arg(short, long)]
        all: bool,
        /// Do not ask for confirmation.
        #[arg(short, long)]
        force: bool,
    },
    /// Take a crash-consistent snapshot of a volume.
    Snapshot { volume: String, snapshot: String },
    /// List a volume's snapshots.
    Snapshots { volume: String },
    /// Put a snapshot's content back (no running container may use the volume).
    Restore { volume: String, snapshot: String },
    /// Delete a snapshot.
    SnapshotRm { volume: String, snapshot: String },
    /// Write a volume's content to a tar; its sha256 goes to FILE.sha256.
    Export {
        #[arg(short, long)]
        output: PathBuf,
        volume: String,
    },
    /// Make a volume from a tar written by export, checked against FILE.sha256 (or
    /// --sha256) when there is one.
    Import {
        /// Name of the new volume.
        #[arg(long)]
        name: Option<String>,
        /// Option of the new volume: size=..., inodes=...
        #[arg(short, long = "opt")]
        opt: Vec<String>,
        /// Expected sha256 of the archive.
        #[arg(long)]
        sha256: Option<String>,
        file: PathBuf,
    },
}

fn human(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n}B")
    } else {
        format!("{v:.3}{}", UNITS[u])
    }
}

fn sha256_file(path: &std::path::Path) -> Result<String, CliError> {
    use sha2::Digest;
    let mut f = std::fs::File::open(path)
        .map_err(|e| fail(format!("cannot read {}: {e}", path.display())))?;
    let mut h = sha2::Sha256::new();
    std::io::copy(&mut f, &mut h)
        .map_err(|e| fail(format!("cannot read {}: {e}", path.display())))?;
    Ok(pier_api::hex(&h.finalize()))
}

fn sidecar(path: &std::path::Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".sha256");
    PathBuf::from(s)
}

/// The API path of the volume named `n`.
fn vpath(n: &str) -> String {
    format!("/v1/volumes/{}", encode_segment(n))
}

pub async fn run(client: &Client, fmt: Format, cmd: VolumeCommand) -> Result<(), CliError> {
    match cmd {
        VolumeCommand::Create {
            driver,
            opt,
            label,
            name,
        } => {
            let req = VolumeCreate {
                name,
                driver,
                options: key_values(&opt, "--opt")?,
                labels: key_values(&label, "--label")?,
            };
            let v: VolumeInspect = client.post("/v1/volumes", &req).await?;
            print(fmt, &v, || v.name.clone())
        }
        VolumeCommand::Ls { quiet, filter } => ls(client, fmt, quiet, filter).await,
        VolumeCommand::Inspect { volumes } => {
            let mut out = Vec::new();
            for v in volumes {
                let x: VolumeInspect = client.get(&vpath(&v)).await?;
                out.push(x);
            }
            println!(
                "{}",
                serde_json::to_string_pretty(&out).expect("serializable")
            );
            Ok(())
        }
        VolumeCommand::Rm { force: _, volumes } => {
            for v in volumes {
                client.delete_empty(&vpath(&v)).await?;
                crate::output::item(&v, serde_json::json!({ "volume": v }));
            }
            Ok(())
        }
        VolumeCommand::Prune { all, force } => {
            let warning = if all {
                "This will remove all local volumes not used by at least one container."
            } else {
                "This will remove anonymous local volumes not used by at least one container."
            };
            if !crate::output::confirm(force, warning) {
                return Ok(());
            }
            let removed: Vec<String> = client
                .post(&format!("/v1/volumes/prune?all={all}"), &())
                .await?;
            print(fmt, &removed, || removed.join("\n"))
        }
        VolumeCommand::Snapshot { volume, snapshot } => {
            client
                .post_no_content(
                    &format!("{}/snapshots", vpath(&volume)),
                    &serde_json::json!({ "name": snapshot }),
                )
                .await?;
            crate::output::item(
                &snapshot,
                serde_json::json!({ "volume": volume, "snapshot": snapshot }),
            );
            Ok(())
        }
        VolumeCommand::Snapshots { volume } => {
            let list: Vec<pier_api::volumes::SnapshotInfo> =
                client.get(&format!("{}/snapshots", vpath(&volume))).await?;
            print(fmt, &list, || {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|s| {
                        vec![
                            s.name.clone(),
                            s.created.clone(),
                            pier_api::size::human(s.size),
                        ]
                    })
                    .collect();
                table(&["NAME", "CREATED", "SIZE"], &rows)
            })
        }
        VolumeCommand::Restore { volume, snapshot } => {
            client
                .post_empty(&format!(
                    "{}/snapshots/{}/restore",
                    vpath(&volume),
                    encode_segment(&snapshot)
                ))
                .await?;
            Ok(())
        }
        VolumeCommand::SnapshotRm { volume, snapshot } => {
            client
                .delete_empty(&format!(
                    "{}/snapshots/{}",
                    vpath(&volume),
                    encode_segment(&snapshot)
                ))
                .await?;
            Ok(())
        }
        VolumeCommand::Export { output, volume } => export(client, output, volume).await,
        VolumeCommand::Import {
            name,
            opt,
            sha256,
            file,
        } => import(client, fmt, name, opt, sha256, file).await,
    }
}

/// `pier volume ls`: the project's volumes, as a table, names or JSON.
async fn ls(
    client: &Client,
    fmt: Format,
    quiet: bool,
    filter: Vec<String>,
) -> Result<(), CliError> {
    let path = if filter.is_empty() {
        "/v1/volumes".to_string()
    } else {
        format!("/v1/volumes?filter={}", encode_segment(&filter.join(",")))
    };
    let list: Vec<VolumeInspect> = client.get(&path).await?;
    if quiet {
        for v in &list {
            crate::output::outln(&v.name);
        }
        return Ok(());
    }
    print(fmt, &list, || {
        let rows: Vec<Vec<String>> = list
            .iter()
            .map(|v| {
                vec![
                    v.driver.clone(),
                    v.name.clone(),
                    v.size_limit.map(human).unwrap_or_else(|| "-".into()),
                    v.inode_limit
                        .map(|i| i.to_string())
                        .unwrap_or_else(|| "-".into()),
                ]
            })
            .collect();
        table(
            &["DRIVER", "VOLUME NAME", "SIZE LIMIT", "INODE LIMIT"],
            &rows,
        )
    })
}

/// `pier volume export`: the volume's archive into `output`, with a checksum file
/// beside it.
async fn export(client: &Client, output: PathBuf, volume: String) -> Result<(), CliError> {
    let tmp = output.with_extension("partial");
    let mut file = tokio::fs::File::create(&tmp)
        .await
        .map_err(|e| fail(format!("cannot create {}: {e}", tmp.display())))?;
    let mut counted =
        crate::progress::Counted::new(&mut file, crate::progress::bar("Exporting", None));
    let r = client
        .get_stream(&format!("{}/export", vpath(&volume)), &mut counted)
        .await;
    counted.bar().finish_and_clear();
    drop(counted);
    drop(file);
    if let Err(e) = r {
        let _ = std::fs::remove_file(&tmp);
        return Err(e.into());
    }
    std::fs::rename(&tmp, &output)
        .map_err(|e| fail(format!("cannot write {}: {e}", output.display())))?;
    let sum = sha256_file(&output)?;
    let name = output
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    std::fs::write(sidecar(&output), format!("{sum}  {name}\n"))
        .map_err(|e| fail(format!("cannot write the checksum file: {e}")))?;
    println!("sha256:{sum}");
    Ok(())
}

/// `pier volume import`: a new volume from an exported archive, checked against its
/// checksum when one is given or found beside it.
async fn import(
    client: &Client,
    fmt: Format,
    name: Option<String>,
    opt: Vec<String>,
    sha256: Option<String>,
    file: PathBuf,
) -> Result<(), CliError> {
    let expect = match sha256 {
        Some(s) => Some(s.trim_start_matches("sha256:").to_string()),
        None => std::fs::read_to_string(sidecar(&file))
            .ok()
            .and_then(|t| t.split_whitespace().next().map(String::from)),
    };
    let mut path = String::from("/v1/volumes/import?");
    if let Some(n) = &name {
        path.push_str(&format!("name={}&", encode_segment(n)));
    }
    if !opt.is_empty() {
        path.push_str(&format!("opt={}&", encode_segment(&opt.join(","))));
    }
    if let Some(s) = &expect {
        path.push_str(&format!("sha256={s}&"));
    }
    let f = tokio::fs::File::open(&file)
        .await
        .map_err(|e| fail(format!("cannot open {}: {e}", file.display())))?;
    let len = f.metadata().await.ok().map(|m| m.len());
    let f = crate::progress::Counted::new(f, crate::progress::bar("Importing", len));
    let v: VolumeInspect = client.post_stream(path.trim_end_matches('&'), f).await?;
    print(fmt, &v, || v.name.clone())
}

/// `pier quota [--volume-bytes N|none] [--volumes N|none]`.
pub async fn quota(
    client: &Client,
    fmt: Format,
    bytes: Option<String>,
    count: Option<String>,
) -> Result<(), CliError> {
    let path = "/v1/projects/default/quota";
    let mut set = serde_json::Map::new();
    if let Some(v) = bytes {
        let bytes = if v == "none" {
            None
        } else {
            Some(
                v.parse::<pier_api::ByteSize>()
                    .map_err(|e| fail(e.to_string()))?
                    .bytes(),
            )
        };
        set.insert("volume_bytes".into(), serde_json::json!(bytes));
    }
    if let Some(v) = count {
        let count = if v == "none" {
            None
        } else {
            Some(v.parse::<u64>().map_err(|e| {
                fail(format!(
                    "--volumes {v:?}: give a number of volumes or `none` ({e})"
                ))
            })?)
        };
        set.insert("volume_count".into(), serde_json::json!(count));
    }
    let q: serde_json::Value = if set.is_empty() {
        client.get(path).await?
    } else {
        client
            .put_json(path, &serde_json::Value::Object(set))
            .await?
    };
    let limit = |v: &serde_json::Value| {
        v.as_u64()
            .map(|b| b.to_string())
            .unwrap_or_else(|| "unlimited".into())
    };
    print(fmt, &q, || {
        format!(
            "volume bytes: {} committed of {}\nvolumes: {} of {}",
            pier_api::size::human(q["committed_bytes"].as_u64().unwrap_or(0)),
            q["volume_bytes"]
                .as_u64()
                .map_or("unlimited".into(), pier_api::size::human),
            q["volumes"],
            limit(&q["volume_count"])
        )
    })
}
