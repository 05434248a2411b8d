//! `pier image ...`: list, inspect, history, tag, rm, prune, load, save, import, from-host.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use pier_api::time::{human_ago, now_unix, parse_rfc3339};
use pier_api::types::{ArchiveFormat, ImageSummary, LoadReport};
use pier_api::ImageRef;
use pier_client::Client;
use tokio::io::AsyncRead;

use crate::output::{human_size, print, table, Format};
use crate::{fail, CliError, SaveFormat};

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// List images.
    #[command(alias = "list")]
    Ls(ListArgs),
    /// Show images in detail.
    Inspect {
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Show the steps that made an image.
    History { image: String },
    /// Give an image another name.
    Tag { source: String, target: String },
    /// Remove images.
    #[command(alias = "remove")]
    Rm(RemoveArgs),
    /// Remove unused images.
    Prune {
        /// Remove every image no container uses, not only untagged ones.
        #[arg(short, long)]
        all: bool,
        /// Do not ask for confirmation.
        #[arg(short, long)]
        force: bool,
    },
    /// Load images from a `docker save` or OCI archive.
    Load {
        /// Read from this file instead of standard input.
        #[arg(short, long)]
        input: Option<PathBuf>,
    },
    /// Save images to an archive.
    Save {
        /// Write to this file instead of standard output.
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Archive layout.
        #[arg(long = "type", value_enum, default_value = "docker-archive")]
        kind: SaveFormat,
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Make a one-layer image from a rootfs tar ('-' reads standard input).
    Import {
        file: String,
        name: Option<String>,
        /// A Dockerfile instruction for the image's config (CMD, ENTRYPOINT, ENV, EXPOSE,
        /// HEALTHCHECK, LABEL, ONBUILD, STOPSIGNAL, USER, VOLUME, WORKDIR); repeatable.
        #[arg(short, long = "change")]
        change: Vec<String>,
    },
    /// Make a small image from host binaries and the shared libraries they need.
    FromHost {
        name: String,
        #[arg(required = true)]
        binaries: Vec<String>,
    },
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Also show the intermediate images of builds.
    #[arg(short, long)]
    all: bool,
    /// Only show image IDs.
    #[arg(short, long)]
    quiet: bool,
    /// Show manifest digests.
    #[arg(long)]
    digests: bool,
    /// Show full image IDs.
    #[arg(long)]
    no_trunc: bool,
}

#[derive(Debug, Args)]
pub struct RemoveArgs {
    /// Remove even when several tags or containers use the image.
    #[arg(short, long)]
    force: bool,
    #[arg(required = true)]
    images: Vec<String>,
}

pub async fn run(client: &Client, fmt: Format, cmd: ImageCommand) -> Result<(), CliError> {
    match cmd {
        ImageCommand::Ls(args) => list(client, fmt, args).await,
        ImageCommand::Inspect { images } => {
            let mut out = Vec::new();
            for i in &images {
                out.push(client.inspect_image(i).await?);
            }
            // Like `docker inspect`: JSON is the table.
            print(Format::Json, &out, String::new)
        }
        ImageCommand::History { image } => {
            let h = client.image_history(&image).await?;
            let now = now_unix();
            print(fmt, &h, || {
                let rows: Vec<Vec<String>> = h
                    .iter()
                    .map(|e| {
                        vec![
                            e.layer
                                .as_ref()
                                .map_or("<missing>".into(), |d| d.short().to_string()),
                            created(e.created.as_deref(), now),
                            truncate(&e.created_by, 45),
                            human_size(e.size),
                            e.comment.clone(),
                        ]
                    })
                    .collect();
                table(
                    &["LAYER", "CREATED", "CREATED BY", "SIZE", "COMMENT"],
                    &rows,
                )
            })
        }
        ImageCommand::Tag { source, target } => {
            let target: ImageRef = target
                .parse()
                .map_err(|e: pier_api::reference::RefError| fail(e.to_string()))?;
            client.tag_image(&source, target).await?;
            Ok(())
        }
        ImageCommand::Rm(args) => remove(client, fmt, args).await,
        ImageCommand::Prune { all, force } => {
            let warning = if all {
                "This will remove all images without at least one container associated to them."
            } else {
                "This will remove all dangling images."
            };
            if !crate::output::confirm(force, warning) {
                return Ok(());
            }
            let r = client.prune_images(all).await?;
            print(fmt, &r, || {
                let mut lines: Vec<String> =
                    r.deleted.iter().map(|d| format!("deleted: {d}")).collect();
                lines.push(format!(
                    "Total reclaimed space: {}",
                    human_size(r.reclaimed_bytes)
                ));
                lines.join("\n")
            })
        }
        ImageCommand::Load { input } => {
            let report = client
                .load_images(
                    open_input(input.map(|p| p.to_string_lossy().into_owned()), "Loading").await?,
                )
                .await?;
            print_loaded(fmt, &report)
        }
        ImageCommand::Save {
            output,
            kind,
            images,
        } => {
            let format = match kind {
                SaveFormat::DockerArchive => ArchiveFormat::DockerArchive,
                SaveFormat::OciArchive => ArchiveFormat::OciArchive,
            };
            match output {
                Some(path) => {
                    // Write next to the target and rename, so a failed save leaves no
                    // half-written archive under the name asked for.
                    let dir = path
                        .parent()
                        .filter(|p| !p.as_os_str().is_empty())
                        .unwrap_or(std::path::Path::new("."));
                    let tmp = dir.join(format!(
                        ".{}.partial",
                        path.file_name()
                            .map(|f| f.to_string_lossy())
                            .unwrap_or_default()
                    ));
                    let mut file = tokio::fs::File::create(&tmp)
                        .await
                        .map_err(|e| fail(format!("cannot create {}: {e}", tmp.display())))?;
                    let mut out = crate::progress::Counted::new(
                        &mut file,
                        crate::progress::bar("Saving", None),
                    );
                    let result = client.save_images(&images, format, &mut out).await;
                    out.bar().finish_and_clear();
                    drop(out);
                    drop(file);
                    match result {
                        Ok(_) => tokio::fs::rename(&tmp, &path)
                            .await
                            .map_err(|e| fail(format!("cannot write {}: {e}", path.display()))),
                        Err(e) => {
                            let _ = tokio::fs::remove_file(&tmp).await;
                            Err(e.into())
                        }
                    }
                }
                None => {
                    if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
                        return Err(fail("refusing to write an archive to a terminal; use -o FILE or redirect the output"));
                    }
                    let mut out = crate::progress::Counted::new(
                        crate::output::Stdout::new(),
                        crate::progress::bar("Saving", None),
                    );
                    let r = client.save_images(&images, format, &mut out).await;
                    out.bar().finish_and_clear();
                    r?;
                    Ok(())
                }
            }
        }
        ImageCommand::Import { file, name, change } => {
            let name = name
                .map(|n| n.parse::<ImageRef>())
                .transpose()
                .map_err(|e| fail(e.to_string()))?;
            let input = if file == "-" { None } else { Some(file) };
            let report = client
                .import_image(
                    open_input(input, "Importing").await?,
                    name.as_ref(),
                    &change,
                )
                .await?;
            print_loaded(fmt, &report)
        }
        ImageCommand::FromHost { name, binaries } => {
            let name: ImageRef = name
                .parse()
                .map_err(|e: pier_api::reference::RefError| fail(e.to_string()))?;
            let binaries = binaries
                .into_iter()
                .map(|b| {
                    std::path::absolute(&b)
                        .map(|p| p.to_string_lossy().into_owned())
                        .map_err(|e| fail(format!("cannot resolve {b}: {e}")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let report = client.image_from_host(name, binaries).await?;
            print_loaded(fmt, &report)
        }
    }
}

type Input = crate::progress::Counted<Box<dyn AsyncRead + Send + Sync + Unpin>>;

/// Opens a file, or standard input when `path` is `None`, with a progress bar called
/// `label` (drawn only on a terminal).
async fn open_input(path: Option<String>, label: &str) -> Result<Input, CliError> {
    use crate::progress::{bar, Counted};
    match path {
        Some(p) => {
            let f = tokio::fs::File::open(&p)
                .await
                .map_err(|e| fail(format!("cannot open {p}: {e}")))?;
            let len = f.metadata().await.ok().map(|m| m.len());
            Ok(Counted::new(Box::new(f), bar(label, len)))
        }
        None => {
            if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
                return Err(fail(
                    "no archive given: pass -i FILE or pipe one into standard input",
                ));
            }
            Ok(Counted::new(Box::new(tokio::io::stdin()), bar(label, None)))
        }
    }
}

fn print_loaded(fmt: Format, report: &LoadReport) -> Result<(), CliError> {
    print(fmt, report, || {
        let mut lines = Vec::new();
        for img in &report.images {
            if img.repo_tags.is_empty() {
                lines.push(format!("Loaded image ID: {}", img.id));
            }
            for t in &img.repo_tags {
                lines.push(format!("Loaded image: {t}"));
            }
        }
        lines.join("\n")
    })
}

pub async fn list(client: &Client, fmt: Format, args: ListArgs) -> Result<(), CliError> {
    let images = client.images_all(args.all).await?;
    if args.quiet {
        for i in &images {
            println!(
                "{}",
                if args.no_trunc {
                    i.id.to_string()
                } else {
                    i.id.short().to_string()
                }
            );
        }
        return Ok(());
    }
    let now = now_unix();
    print(fmt, &images, || {
        let mut rows = Vec::new();
        for i in &images {
            for (repo, tag) in repo_tag_pairs(i) {
                let mut row = vec![repo, tag];
                if args.digests {
                    row.push(i.manifest_digest.to_string());
                }
                row.push(if args.no_trunc {
                    i.id.to_string()
                } else {
                    i.id.short().to_string()
                });
                row.push(created(i.created.as_deref(), now));
                row.push(human_size(i.size));
                rows.push(row);
            }
        }
        let mut headers = vec!["REPOSITORY", "TAG"];
        if args.digests {
            headers.push("DIGEST");
        }
        headers.extend(["IMAGE ID", "CREATED", "SIZE"]);
        table(&headers, &rows)
    })
}

pub async fn remove(client: &Client, fmt: Format, args: RemoveArgs) -> Result<(), CliError> {
    let mut failures = 0;
    let mut reports = Vec::new();
    for image in &args.images {
        match client.remove_image(image, args.force).await {
            Ok(r) => {
                if fmt == Format::Table {
                    for t in &r.untagged {
                        println!("Untagged: {t}");
                    }
                    for d in &r.deleted {
                        println!("Deleted: {d}");
                    }
                }
                reports.push(r);
            }
            Err(e) => {
                eprintln!("Error: {e}");
                failures += 1;
            }
        }
    }
    if fmt == Format::Json {
        print(fmt, &reports, String::new)?;
    }
    if failures > 0 {
        return Err(fail(format!(
            "{failures} of {} images could not be removed",
            args.images.len()
        )));
    }
    Ok(())
}

fn repo_tag_pairs(i: &ImageSummary) -> Vec<(String, String)> {
    if i.repo_tags.is_empty() {
        return vec![("<none>".into(), "<none>".into())];
    }
    i.repo_tags
        .iter()
        .map(
            |t| match t.rsplit_once(':').filter(|(_, tag)| !tag.contains('/')) {
                Some((r, tag)) => (r.to_string(), tag.to_string()),
                None => (t.clone(), "<none>".into()),
            },
        )
        .collect()
}

fn created(ts: Option<&str>, now: i64) -> String {
    ts.and_then(parse_rfc3339)
        .map_or("N/A".into(), |t| human_ago(t, now))
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        s.chars().take(n - 1).collect::<String>() + "…"
    }
}
