//! `pier pull`, `pier push` (a progress bar per layer) and `pier registry ...` (the
//! built-in registry's management).

use std::collections::HashMap;
use std::io::Read;

use clap::{Args, Subcommand};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use pier_api::registry::{
    PullRequest, PushRequest, RegistryAuth, RegistryEditReport, RegistryEditRequest,
    RegistryGcReport, RegistrySetTagRequest, RegistryStats, RegistryTag, RegistryTagInspect,
    RepositorySummary, TagHistoryEntry, TransferProgress,
};
use pier_client::{encode_segment, read_ndjson, Client};

use crate::output::{human_size, print, table, Format};
use crate::{fail, CliError};

#[derive(Debug, Args)]
pub struct TransferArgs {
    /// `registry/repository[:tag]`.
    pub reference: String,
    /// User name for the registry.
    #[arg(long, short = 'u')]
    pub username: Option<String>,
    /// Read the password from standard input.
    #[arg(long)]
    pub password_stdin: bool,
    /// Print no progress bars.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

#[derive(Debug, Subcommand)]
pub enum RegistryCommand {
    /// List the repositories of the built-in registry.
    #[command(alias = "list")]
    Ls,
    /// List a repository's tags with digest, size, created time, platform and labels.
    Tags { repository: String },
    /// Show which digests a tag pointed to, and when.
    History {
        /// `repository:tag`.
        reference: String,
    },
    /// Show a tag in depth as JSON: its image config, layers and the steps that made them.
    Inspect {
        /// `repository:tag`.
        reference: String,
    },
    /// Point a tag at a manifest the repository holds, e.g. an earlier digest from its
    /// history (a rollback).
    Retag {
        /// `repository:tag`.
        reference: String,
        /// `sha256:...`, a manifest of the repository.
        digest: String,
    },
    /// Remove tags, or manifests by digest with the tags pointing at them.
    Rm {
        /// `repository:tag`, or `repository@sha256:...` for a manifest.
        #[arg(required = true)]
        references: Vec<String>,
    },
    /// Find tags by repository name and by label.
    Search {
        /// A substring of the repository name.
        name: Option<String>,
        /// `key` or `key=value`.
        #[arg(long)]
        label: Option<String>,
    },
    /// Remove blobs no manifest references.
    Gc {
        /// Keep unreferenced blobs uploaded in the last this many seconds (pushes in flight).
        #[arg(long, default_value_t = 3600)]
        grace: u64,
    },
    /// Change an image's config in the registry; no layer moves.
    Edit(Box<EditArgs>),
    /// Blob bytes the registry received and sent since the daemon started.
    Stats,
    /// Print an argon2 hash (PHC string) of the password read from standard input, for
    /// a user's "password" in the `--registry-auth` file. Needs no daemon.
    HashPassword,
}

#[derive(Debug, Args)]
pub struct EditArgs {
    /// `repository:tag`.
    pub reference: String,
    /// Set an environment variable (`KEY=VALUE`); repeatable.
    #[arg(long, short = 'e')]
    pub env: Vec<String>,
    /// Set a label (`KEY=VALUE`); repeatable.
    #[arg(long, short = 'l')]
    pub label: Vec<String>,
    /// A new command, as a JSON array or one shell-split string.
    #[arg(long)]
    pub cmd: Option<String>,
    /// A new entrypoint, as a JSON array or one shell-split string.
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// Tag the result with this tag instead of moving the original tag.
    #[arg(long)]
    pub tag: Option<String>,
    /// Remove an environment variable by name; repeatable.
    #[arg(long, value_name = "NAME")]
    pub unset_env: Vec<String>,
    /// Remove a label by key; repeatable.
    #[arg(long, value_name = "KEY")]
    pub unset_label: Vec<String>,
    /// A new working directory (absolute; "" for none).
    #[arg(long, short = 'w')]
    pub workdir: Option<String>,
    /// A new user (`name`, `uid` or `uid:gid`; "" for the default).
    #[arg(long, short = 'u')]
    pub user: Option<String>,
    /// The ports the image exposes (`PORT[/PROTO]`), replacing its set; repeatable
    /// (`--expose ""` exposes none).
    #[arg(long, value_name = "PORT")]
    pub expose: Vec<String>,
}

fn argv(s: &str) -> Vec<String> {
    serde_json::from_str::<Vec<String>>(s)
        .unwrap_or_else(|_| s.split_whitespace().map(str::to_string).collect())
}

fn split_ref(s: &str) -> (String, String) {
    match s.rsplit_once(':') {
        Some((r, t)) if !t.contains('/') => (r.to_string(), t.to_string()),
        _ => (s.to_string(), "latest".to_string()),
    }
}

fn auth(a: &TransferArgs) -> Result<Option<RegistryAuth>, CliError> {
    let Some(username) = a.username.clone() else {
        // What `pier login` stored for the reference's registry, if anything.
        return Ok(crate::login::stored_auth(&a.reference));
    };
    if !a.password_stdin {
        return Err(fail(
            "give the password on standard input with --password-stdin",
        ));
    }
    let mut password = String::new();
    std::io::stdin().read_to_string(&mut password)?;
    Ok(Some(RegistryAuth {
        username,
        password: password.trim_end_matches(['\n', '\r']).to_string(),
    }))
}

/// Streams a pull or push, drawing a bar per blob; returns the `complete` message.
async fn transfer(
    client: &Client,
    path: &str,
    body: Vec<u8>,
    quiet: bool,
) -> Result<String, CliError> {
    let resp = client.post_raw(path, body).await?;
    let multi = MultiProgress::with_draw_target(if quiet {
        ProgressDrawTarget::hidden()
    } else {
        ProgressDrawTarget::stderr()
    });
    let style =
        ProgressStyle::with_template("{prefix:.bold} {msg:>11} [{bar:30}] {bytes}/{total_bytes}")
            .expect("template")
            .progress_chars("=> ");
    let mut bars: HashMap<String, ProgressBar> = HashMap::new();
    let mut result: Option<Result<String, String>> = None;
    read_ndjson(resp, |p: TransferProgress| {
        match (&p.blob, p.status.as_str()) {
            (Some(d), status) => {
                let bar = bars.entry(d.to_string()).or_insert_with(|| {
                    let b = multi.add(ProgressBar::new(p.total));
                    b.set_style(style.clone());
                    b.set_prefix(d.short().to_string());
                    b
                });
                bar.set_length(p.total);
                bar.set_position(p.current);
                bar.set_message(status.to_string());
                if matches!(status, "done" | "exists") {
                    bar.finish();
                }
            }
            (None, "complete") => result = Some(Ok(p.message.unwrap_or_default())),
            (None, "error") => result = Some(Err(p.message.unwrap_or_default())),
            _ => {}
        }
        true
    })
    .await?;
    match result {
        Some(Ok(m)) => Ok(m),
        Some(Err(m)) => Err(fail(m)),
        None => Err(fail(
            "the daemon ended the transfer without a result; see its log",
        )),
    }
}

pub async fn pull(client: &Client, fmt: Format, a: TransferArgs) -> Result<(), CliError> {
    let req = PullRequest {
        reference: a.reference.clone(),
        auth: auth(&a)?,
    };
    let id = transfer(
        client,
        "/v1/images/pull",
        serde_json::to_vec(&req).expect("json"),
        a.quiet,
    )
    .await?;
    print(
        fmt,
        &serde_json::json!({ "reference": a.reference, "id": id }),
        || format!("Pulled {} ({id})", a.reference),
    )
}

/// The pull `run`, `create` and `build --pull` make of an image they need: progress
/// bars on stderr (stdout is the container's), then Docker's `Status:` line.
pub(crate) async fn pull_for_run(client: &Client, reference: &str) -> Result<(), CliError> {
    let req = PullRequest {
        reference: reference.to_string(),
        auth: None,
    };
    let id = transfer(
        client,
        "/v1/images/pull",
        serde_json::to_vec(&req).expect("json"),
        false,
    )
    .await?;
    eprintln!("Status: Downloaded newer image for {reference} ({id})");
    Ok(())
}

pub async fn push(client: &Client, fmt: Format, a: TransferArgs) -> Result<(), CliError> {
    let req = PushRequest {
        reference: a.reference.clone(),
        auth: auth(&a)?,
    };
    let d = transfer(
        client,
        "/v1/images/push",
        serde_json::to_vec(&req).expect("json"),
        a.quiet,
    )
    .await?;
    print(
        fmt,
        &serde_json::json!({ "reference": a.reference, "digest": d }),
        || format!("Pushed {}: digest {d}", a.reference),
    )
}

fn tag_rows(tags: &[RegistryTag]) -> String {
    let rows: Vec<Vec<String>> = tags
        .iter()
        .map(|t| {
            vec![
                format!("{}:{}", t.repository, t.tag),
                t.digest.short().to_string(),
                human_size(t.size),
                t.created.clone().unwrap_or_default(),
                t.platforms.join(","),
                t.labels
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(","),
            ]
        })
        .collect();
    table(
        &["TAG", "DIGEST", "SIZE", "CREATED", "PLATFORM", "LABELS"],
        &rows,
    )
}

pub async fn run(client: &Client, fmt: Format, cmd: RegistryCommand) -> Result<(), CliError> {
    match cmd {
        RegistryCommand::Ls => {
            let repos: Vec<RepositorySummary> = client.get("/v1/registry/repositories").await?;
            print(fmt, &repos, || {
                let rows: Vec<Vec<String>> = repos
                    .iter()
                    .map(|r| {
                        vec![
                            r.name.clone(),
                            r.tags.to_string(),
                            r.manifests.to_string(),
                            human_size(r.size),
                            r.updated.clone().unwrap_or_default(),
                        ]
                    })
                    .collect();
                table(
                    &["REPOSITORY", "TAGS", "MANIFESTS", "SIZE", "UPDATED"],
                    &rows,
                )
            })
        }
        RegistryCommand::Tags { repository } => {
            let tags: Vec<RegistryTag> = client
                .get(&format!(
                    "/v1/registry/repositories/{}/tags",
                    encode_segment(&repository)
                ))
                .await?;
            print(fmt, &tags, || tag_rows(&tags))
        }
        RegistryCommand::History { reference } => {
            let (repo, tag) = split_ref(&reference);
            let h: Vec<TagHistoryEntry> = client
                .get(&format!(
                    "/v1/registry/repositories/{}/tags/{}/history",
                    encode_segment(&repo),
                    encode_segment(&tag)
                ))
                .await?;
            print(fmt, &h, || {
                let rows: Vec<Vec<String>> = h
                    .iter()
                    .map(|e| {
                        vec![
                            e.at.clone(),
                            e.action.clone(),
                            e.digest
                                .as_ref()
                                .map(|d| d.to_string())
                                .unwrap_or_else(|| "-".into()),
                        ]
                    })
                    .collect();
                table(&["WHEN", "ACTION", "DIGEST"], &rows)
            })
        }
        RegistryCommand::Inspect { reference } => {
            let (repo, tag) = split_ref(&reference);
            let t: RegistryTagInspect = client
                .get(&format!(
                    "/v1/registry/repositories/{}/tags/{}",
                    encode_segment(&repo),
                    encode_segment(&tag)
                ))
                .await?;
            // Like `pier image inspect`: JSON is the table.
            let fmt = if fmt == Format::Table {
                Format::Json
            } else {
                fmt
            };
            print(fmt, &t, String::new)
        }
        RegistryCommand::Retag { reference, digest } => {
            let (repo, tag) = split_ref(&reference);
            let digest = digest.parse().map_err(|e| {
                fail(format!(
                    "{digest:?} is not a digest ({e}); give sha256:... from `pier registry history {reference}`"
                ))
            })?;
            let t: RegistryTag = client
                .put_json(
                    &format!(
                        "/v1/registry/repositories/{}/tags/{}",
                        encode_segment(&repo),
                        encode_segment(&tag)
                    ),
                    &RegistrySetTagRequest { digest },
                )
                .await?;
            print(fmt, &t, || {
                format!("{}:{} is now {}", t.repository, t.tag, t.digest)
            })
        }
        RegistryCommand::Rm { references } => {
            for r in &references {
                if let Some((repo, digest)) = r.split_once('@') {
                    let tags: Vec<String> = client
                        .delete(&format!(
                            "/v1/registry/repositories/{}/manifests/{}",
                            encode_segment(repo),
                            encode_segment(digest)
                        ))
                        .await?;
                    if fmt == Format::Table {
                        for t in tags {
                            println!("Untagged: {repo}:{t}");
                        }
                        println!("Deleted: {repo}@{digest}");
                    }
                    continue;
                }
                let (repo, tag) = split_ref(r);
                client
                    .delete_empty(&format!(
                        "/v1/registry/repositories/{}/tags/{}",
                        encode_segment(&repo),
                        encode_segment(&tag)
                    ))
                    .await?;
                if fmt == Format::Table {
                    println!("Untagged: {repo}:{tag}");
                }
            }
            Ok(())
        }
        RegistryCommand::Search { name, label } => {
            let mut q = Vec::new();
            if let Some(n) = &name {
                q.push(format!("name={}", encode_segment(n)));
            }
            if let Some(l) = &label {
                q.push(format!("label={}", encode_segment(l)));
            }
            let tags: Vec<RegistryTag> = client
                .get(&format!("/v1/registry/search?{}", q.join("&")))
                .await?;
            print(fmt, &tags, || tag_rows(&tags))
        }
        RegistryCommand::Gc { grace } => {
            let r: RegistryGcReport = client
                .post(&format!("/v1/registry/gc?grace_secs={grace}"), &())
                .await?;
            print(fmt, &r, || {
                format!(
                    "Unlinked {} blobs; reclaimed {}",
                    r.unlinked,
                    human_size(r.reclaimed_bytes)
                )
            })
        }
        RegistryCommand::HashPassword => {
            let mut password = String::new();
            std::io::stdin().read_to_string(&mut password)?;
            let password = password.trim_end_matches(['\n', '\r']);
            if password.is_empty() {
                return Err(fail("give the password on standard input"));
            }
            let hash = pier_password::hash(password)
                .map_err(|e| fail(format!("cannot hash the password: {e}")))?;
            println!("{hash}");
            Ok(())
        }
        RegistryCommand::Stats => {
            let s: RegistryStats = client.get("/v1/registry/stats").await?;
            print(fmt, &s, || {
                format!(
                    "Received: {}\nSent:     {}",
                    human_size(s.blob_bytes_received),
                    human_size(s.blob_bytes_sent)
                )
            })
        }
        RegistryCommand::Edit(a) => {
            let a = *a;
            let req = RegistryEditRequest {
                reference: a.reference,
                env: a.env,
                labels: a.label,
                cmd: a.cmd.as_deref().map(argv),
                entrypoint: a.entrypoint.as_deref().map(argv),
                new_tag: a.tag,
                unset_env: a.unset_env,
                unset_labels: a.unset_label,
                working_dir: a.workdir,
                user: a.user,
                exposed_ports: (!a.expose.is_empty())
                    .then(|| a.expose.into_iter().filter(|p| !p.is_empty()).collect()),
            };
            let r: RegistryEditReport = client.post("/v1/registry/edit", &req).await?;
            print(fmt, &r, || {
                format!("{}:{} is now {}", r.repository, r.tag, r.digest)
            })
        }
    }
}
