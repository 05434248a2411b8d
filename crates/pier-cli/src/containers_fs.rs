//! `pier diff`, `export`, `commit` and `cp`.

use std::path::{Path, PathBuf};

use pier_api::types::LoadedImage;
use pier_client::{encode_segment, Client};

use crate::output::{print, Format};
use crate::{fail, CliError};

pub async fn diff(client: &Client, fmt: Format, name: &str) -> Result<(), CliError> {
    let changes: Vec<serde_json::Value> = client
        .get(&format!("/v1/containers/{}/changes", encode_segment(name)))
        .await?;
    print(fmt, &changes, || {
        changes
            .iter()
            .map(|c| {
                format!(
                    "{} {}",
                    ["C", "A", "D"]
                        .get(c["kind"].as_u64().unwrap_or(0) as usize)
                        .unwrap_or(&"?"),
                    c["path"].as_str().unwrap_or("")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    })
}

/// Writes a streamed tar to `output` (by rename, so a failure leaves no partial file) or
/// to standard output.
async fn save_stream(client: &Client, path: &str, output: Option<PathBuf>) -> Result<(), CliError> {
    match output {
        Some(out) => {
            let dir = out
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            let tmp = tempfile::NamedTempFile::new_in(dir)
                .map_err(|e| fail(format!("cannot write in {}: {e}", dir.display())))?;
            let f = tokio::fs::File::from_std(tmp.reopen().map_err(|e| fail(e.to_string()))?);
            let mut f = crate::progress::Counted::new(f, crate::progress::bar("Exporting", None));
            let r = client.get_stream(path, &mut f).await;
            f.bar().finish_and_clear();
            r?;
            tmp.persist(&out)
                .map_err(|e| fail(format!("cannot write {}: {e}", out.display())))?;
            Ok(())
        }
        None => {
            if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
                return Err(fail(
                    "refusing to write a tar to a terminal; use -o FILE or redirect the output",
                ));
            }
            let mut out = crate::progress::Counted::new(
                crate::output::Stdout::new(),
                crate::progress::bar("Exporting", None),
            );
            let r = client.get_stream(path, &mut out).await;
            out.bar().finish_and_clear();
            r?;
            Ok(())
        }
    }
}

pub async fn export(client: &Client, name: &str, output: Option<PathBuf>) -> Result<(), CliError> {
    save_stream(
        client,
        &format!("/v1/containers/{}/export", encode_segment(name)),
        output,
    )
    .await
}

pub async fn commit(
    client: &Client,
    fmt: Format,
    name: &str,
    reference: Option<String>,
    message: String,
    author: String,
    changes: Vec<String>,
) -> Result<(), CliError> {
    let body = serde_json::json!({ "reference": reference, "message": message, "author": author, "changes": changes });
    let img: LoadedImage = client
        .post(
            &format!("/v1/containers/{}/commit", encode_segment(name)),
            &body,
        )
        .await?;
    print(fmt, &img, || img.id.to_string())
}

/// `CONTAINER:PATH` (a container name never holds '/'; a host path with ':' must start
/// with '/' or '.').
fn split_container_path(s: &str) -> Option<(&str, &str)> {
    if s.starts_with('/') || s.starts_with('.') {
        return None;
    }
    s.split_once(':')
        .filter(|(c, _)| !c.is_empty() && !c.contains('/'))
}

pub async fn cp(client: &Client, src: &str, dst: &str) -> Result<(), CliError> {
    match (split_container_path(src), split_container_path(dst)) {
        (Some((c, path)), None) => copy_out(client, c, path, dst).await,
        (None, Some((c, path))) => copy_in(client, src, c, path).await,
        (Some(_), Some(_)) => Err(fail(
            "copying between two containers is not supported; copy through the host",
        )),
        (None, None) => Err(fail("one of SRC and DST must be CONTAINER:PATH")),
    }
}

async fn copy_out(client: &Client, container: &str, path: &str, dst: &str) -> Result<(), CliError> {
    let url = format!(
        "/v1/containers/{}/archive?path={}",
        encode_segment(container),
        encode_segment(path)
    );
    if dst == "-" {
        return save_stream(client, &url, None).await;
    }
    let dst = PathBuf::from(dst);
    let (dir, rename_to) = if dst.is_dir() {
        (dst.clone(), None)
    } else {
        let parent = dst
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        if !parent.is_dir() {
            return Err(fail(format!(
                "the directory {} does not exist",
                parent.display()
            )));
        }
        (parent, dst.file_name().map(PathBuf::from))
    };
    // Stage next to the destination, unpacking with the same checks as image layers:
    // whatever the container holds, nothing lands outside the destination.
    let staging = tempfile::Builder::new()
        .prefix(".pier-cp-")
        .tempdir_in(&dir)
        .map_err(|e| fail(format!("cannot write in {}: {e}", dir.display())))?;
    let tarfile = staging.path().join(".archive.tar");
    let mut f = tokio::fs::File::create(&tarfile)
        .await
        .map_err(|e| fail(e.to_string()))?;
    client.get_stream(&url, &mut f).await?;
    drop(f);
    let root = staging.path().join("root");
    std::fs::create_dir(&root).map_err(|e| fail(e.to_string()))?;
    let file = std::fs::File::open(&tarfile).map_err(|e| fail(e.to_string()))?;
    pier_archive::unpack::unpack_layer(file, &root, &Default::default())
        .map_err(|e| fail(format!("cannot unpack the copy: {e}")))?;
    for entry in std::fs::read_dir(&root)
        .map_err(|e| fail(e.to_string()))?
        .flatten()
    {
        let target = match &rename_to {
            Some(n) => dir.join(n),
            None => dir.join(entry.file_name()),
        };
        if target.is_dir() && !target.is_symlink() && entry.path().is_dir() {
            std::fs::remove_dir_all(&target)
                .map_err(|e| fail(format!("cannot replace {}: {e}", target.display())))?;
        }
        std::fs::rename(entry.path(), &target)
            .map_err(|e| fail(format!("cannot write {}: {e}", target.display())))?;
    }
    Ok(())
}

async fn copy_in(client: &Client, src: &str, container: &str, path: &str) -> Result<(), CliError> {
    let url = format!(
        "/v1/containers/{}/archive?path={}",
        encode_segment(container),
        encode_segment(path)
    );
    if src == "-" {
        client.put_stream(&url, tokio::io::stdin()).await?;
        return Ok(());
    }
    let srcp = PathBuf::from(src);
    let meta =
        std::fs::symlink_metadata(&srcp).map_err(|e| fail(format!("cannot read {src}: {e}")))?;
    let name = srcp
        .file_name()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    let tmp = tempfile::tempfile().map_err(|e| fail(e.to_string()))?;
    let mut tar = tar::Builder::new(tmp);
    tar.follow_symlinks(false);
    if meta.is_dir() {
        tar.append_dir_all(&name, &srcp)
            .map_err(|e| fail(format!("cannot archive {src}: {e}")))?;
    } else {
        tar.append_path_with_name(&srcp, &name)
            .map_err(|e| fail(format!("cannot archive {src}: {e}")))?;
    }
    let mut file = tar.into_inner().map_err(|e| fail(e.to_string()))?;
    std::io::Seek::rewind(&mut file).map_err(|e| fail(e.to_string()))?;
    client
        .put_stream(&url, tokio::fs::File::from_std(file))
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_paths() {
        assert_eq!(
            split_container_path("web:/etc/hosts"),
            Some(("web", "/etc/hosts"))
        );
        assert_eq!(split_container_path("/tmp/a:b"), None);
        assert_eq!(split_container_path("./a:b"), None);
        assert_eq!(split_container_path("dir/file"), None);
    }
}
