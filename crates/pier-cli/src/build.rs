//! `pier build`: a Dockerfile build. The context directory is tarred here, without what
//! its `.dockerignore` excludes (the Dockerfile and `.dockerignore` always go); the daemon
//! applies `.dockerignore` again, for API clients that send everything.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Args;
use pier_api::build::BuildLine;
use pier_archive::ignore::IgnoreRules;
use pier_client::{encode_segment, Client};

use crate::output::human_size;
use crate::{fail, CliError};

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Name and optionally a tag (`name:tag`); repeat for more.
    #[arg(short = 't', long = "tag")]
    tags: Vec<String>,
    /// The Dockerfile (default: CONTEXT/Dockerfile; `-` reads standard input).
    #[arg(short = 'f', long = "file")]
    file: Option<String>,
    /// A build argument `KEY=VALUE` (`KEY` alone takes it from the environment).
    #[arg(long = "build-arg")]
    build_args: Vec<String>,
    /// A label `KEY=VALUE` for the image; repeat for more.
    #[arg(long = "label")]
    labels: Vec<String>,
    /// Build up to this stage only.
    #[arg(long)]
    target: Option<String>,
    /// Use no cached step.
    #[arg(long)]
    no_cache: bool,
    /// The network of RUN steps: `default`, `none`, `host`, or a network's name.
    #[arg(long)]
    network: Option<String>,
    /// Print only the image ID.
    #[arg(short, long)]
    quiet: bool,
    /// Pull the FROM images: missing (the default), always (`--pull` alone), never.
    #[arg(long, value_enum, default_value = "missing", num_args = 0..=1, default_missing_value = "always")]
    pull: crate::run_opts::PullPolicy,
    /// The build context: a directory.
    context: PathBuf,
}

/// Adds `dir`'s entries under `rel` to the tar, skipping what the rules exclude except
/// the names in `keep`, and the names in `skip`.
fn add_tree(
    tar: &mut tar::Builder<fs::File>,
    dir: &Path,
    rel: &str,
    rules: &IgnoreRules,
    keep: &[String],
    skip: &[String],
) -> Result<(), CliError> {
    let cannot =
        |p: &str, e: std::io::Error| fail(format!("cannot add {p} to the build context: {e}"));
    let mut entries: Vec<_> = fs::read_dir(dir)
        .map_err(|e| cannot(rel, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| cannot(rel, e))?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name().to_string_lossy().into_owned();
        let path = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        let m = e
            .path()
            .symlink_metadata()
            .map_err(|err| cannot(&path, err))?;
        let excluded = (rules.is_excluded(&path) && !keep.contains(&path)) || skip.contains(&path);
        let ft = m.file_type();
        if ft.is_dir() {
            if excluded && !rules.has_exceptions() {
                continue;
            }
            if !excluded {
                tar.append_path_with_name(e.path(), &path)
                    .map_err(|err| cannot(&path, err))?;
            }
            add_tree(tar, &e.path(), &path, rules, keep, skip)?;
        } else if !excluded && (ft.is_file() || ft.is_symlink()) {
            tar.append_path_with_name(e.path(), &path)
                .map_err(|err| cannot(&path, err))?;
        }
    }
    Ok(())
}

/// Tars the context into a temporary file; returns it and the Dockerfile's name in it.
/// The context as a tar, the Dockerfile's name in it, and the Dockerfile's text.
fn write_context(
    ctx: &Path,
    dockerfile: Option<String>,
) -> Result<(tempfile::NamedTempFile, String, Vec<u8>), CliError> {
    let (name, outside) = match dockerfile.as_deref() {
        None => ("Dockerfile".to_string(), None),
        Some("-") => {
            let mut text = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut text)?;
            (format!(".dockerfile.{}", std::process::id()), Some(text))
        }
        Some(f) => {
            let abs = fs::canonicalize(f)
                .map_err(|e| fail(format!("cannot read the Dockerfile {f}: {e}")))?;
            let root = fs::canonicalize(ctx)?;
            match abs.strip_prefix(&root) {
                Ok(rel) => (rel.to_string_lossy().into_owned(), None),
                Err(_) => {
                    let text = fs::read(&abs)
                        .map_err(|e| fail(format!("cannot read the Dockerfile {f}: {e}")))?;
                    (format!(".dockerfile.{}", std::process::id()), Some(text))
                }
            }
        }
    };
    let had_ignore = ctx.join(".dockerignore").exists();
    let ignore_text = fs::read_to_string(ctx.join(".dockerignore")).unwrap_or_default();
    let rules =
        IgnoreRules::parse(&ignore_text).map_err(|e| fail(format!(".dockerignore: {e}")))?;
    let file = tempfile::NamedTempFile::new()?;
    let mut tar = tar::Builder::new(file.reopen()?);
    tar.follow_symlinks(false);
    let keep = vec![name.clone(), ".dockerignore".to_string()];
    let mut skip = Vec::new();
    if outside.is_some() {
        // Written below, with the added Dockerfile excluded so `COPY .` does not take it.
        skip.push(".dockerignore".to_string());
    }
    add_tree(&mut tar, ctx, "", &rules, &keep, &skip)?;
    let text = match &outside {
        Some(t) => t.clone(),
        None => fs::read(ctx.join(&name)).unwrap_or_default(),
    };
    if let Some(text) = outside {
        let mut add = |path: &str, data: &[u8]| -> std::io::Result<()> {
            let mut h = tar::Header::new_gnu();
            h.set_mode(0o644);
            h.set_size(data.len() as u64);
            h.set_mtime(0);
            tar.append_data(&mut h, path, data)
        };
        add(&name, &text)?;
        // Without a .dockerignore of the user's, the one made here leaves itself out too.
        let own = if had_ignore { "" } else { ".dockerignore\n" };
        add(
            ".dockerignore",
            format!("{ignore_text}\n{name}\n{own}").as_bytes(),
        )?;
    }
    tar.into_inner()?.flush()?;
    Ok((file, name, text))
}

/// `--build-arg`s as a map (`KEY` alone from the environment).
fn build_arg_values(flags: &[String]) -> std::collections::BTreeMap<String, String> {
    flags
        .iter()
        .filter_map(|b| match b.split_once('=') {
            Some((k, v)) => Some((k.to_string(), v.to_string())),
            None => std::env::var(b).ok().map(|v| (b.clone(), v)),
        })
        .collect()
}

/// The images a Dockerfile's FROM lines name, `ARG`s before the first FROM (and the
/// build args) substituted; stages, `scratch` and what stays unresolved are left out.
fn base_images(text: &str, build_args: &std::collections::BTreeMap<String, String>) -> Vec<String> {
    let mut args = std::collections::BTreeMap::new();
    let mut stages: Vec<String> = Vec::new();
    let mut images: Vec<String> = Vec::new();
    let mut seen_from = false;
    let joined = text.replace("\\\r\n", " ").replace("\\\n", " ");
    for line in joined.lines().map(str::trim) {
        let mut words = line.split_whitespace();
        let Some(keyword) = words.next() else {
            continue;
        };
        if keyword.eq_ignore_ascii_case("ARG") && !seen_from {
            for w in words {
                let (k, v) = w.split_once('=').unwrap_or((w, ""));
                let v = build_args
                    .get(k)
                    .cloned()
                    .unwrap_or_else(|| v.trim_matches('"').to_string());
                args.insert(k.to_string(), v);
            }
            continue;
        }
        if !keyword.eq_ignore_ascii_case("FROM") {
            continue;
        }
        seen_from = true;
        let rest: Vec<&str> = words.filter(|w| !w.starts_with("--")).collect();
        let Some(image) = rest.first() else {
            continue;
        };
        let mut image = image.to_string();
        for (k, v) in &args {
            image = image
                .replace(&format!("${{{k}}}"), v)
                .replace(&format!("${k}"), v);
        }
        let skip = image.contains('$')
            || image.eq_ignore_ascii_case("scratch")
            || stages.contains(&image.to_ascii_lowercase())
            || images.contains(&image);
        if let [_, as_kw, stage] = rest[..] {
            if as_kw.eq_ignore_ascii_case("AS") {
                stages.push(stage.to_ascii_lowercase());
            }
        }
        if !skip {
            images.push(image);
        }
    }
    images
}

pub async fn build(client: &Client, a: BuildArgs) -> Result<(), CliError> {
    if !a.context.is_dir() {
        return Err(fail(format!(
            "unable to prepare the build context: {} is not a directory",
            a.context.display()
        )));
    }
    let mut query = Vec::new();
    for t in &a.tags {
        t.parse::<pier_api::ImageRef>()
            .map_err(|e| fail(format!("invalid tag {t:?}: {e}")))?;
        query.push(format!("t={}", encode_segment(t)));
    }
    for b in &a.build_args {
        let kv = match b.split_once('=') {
            Some(_) => b.clone(),
            // KEY alone: from the environment, skipped when unset (as Docker does).
            None => match std::env::var(b) {
                Ok(v) => format!("{b}={v}"),
                Err(_) => continue,
            },
        };
        query.push(format!("buildarg={}", encode_segment(&kv)));
    }
    for l in &a.labels {
        query.push(format!("label={}", encode_segment(l)));
    }
    if let Some(t) = &a.target {
        query.push(format!("target={}", encode_segment(t)));
    }
    if a.no_cache {
        query.push("no_cache=true".into());
    }
    if let Some(n) = &a.network {
        query.push(format!("network={}", encode_segment(n)));
    }
    let ctx = a.context.clone();
    let file = a.file.clone();
    let (tmp, name, text) = tokio::task::spawn_blocking(move || write_context(&ctx, file))
        .await
        .map_err(|e| fail(e.to_string()))??;
    if a.pull != crate::run_opts::PullPolicy::Never {
        let args = build_arg_values(&a.build_args);
        for image in base_images(&String::from_utf8_lossy(&text), &args) {
            crate::run_opts::ensure_image(client, &image, a.pull)
                .await
                .map_err(|e| fail(e.message))?;
        }
    }
    if name != "Dockerfile" {
        query.push(format!("dockerfile={}", encode_segment(&name)));
    }
    let size = tmp.as_file().metadata()?.len();
    if !a.quiet {
        println!("Sending build context to Pier daemon  {}", human_size(size));
    }
    let body = crate::progress::Counted::new(
        tokio::fs::File::open(tmp.path()).await?,
        crate::progress::bar("Sending context", Some(size)),
    );
    let mut error: Option<String> = None;
    let mut id = None;
    let quiet = a.quiet;
    client
        .build(&query.join("&"), body, |line: BuildLine| {
            if let Some(s) = line.stream {
                if !quiet {
                    let mut out = std::io::stdout().lock();
                    let _ = out.write_all(s.as_bytes());
                    let _ = out.flush();
                }
            }
            if let Some(aux) = line.aux {
                id = Some(aux.id);
            }
            if let Some(e) = line.error {
                error = Some(e);
                return false;
            }
            true
        })
        .await?;
    drop(tmp);
    if let Some(e) = error {
        return Err(fail(e));
    }
    match id {
        Some(id) => {
            if quiet {
                println!("{id}");
            }
            Ok(())
        }
        None => Err(fail(
            "the build stream ended without an image; see the daemon's log",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_images_are_the_from_lines_but_stages_and_scratch() {
        let text = "ARG BASE=busybox\nARG TAG\nFROM --platform=linux/amd64 ${BASE}:1 AS one\n\
                    RUN true\nFROM one\nFROM scratch\nfrom \\\n  localhost:5000/x:2 as two\n\
                    FROM $TAG\nFROM $UNSET/y\n";
        let mut args = std::collections::BTreeMap::new();
        args.insert("TAG".to_string(), "alpine:3".to_string());
        assert_eq!(
            base_images(text, &args),
            vec!["busybox:1", "localhost:5000/x:2", "alpine:3"]
        );
    }
}
