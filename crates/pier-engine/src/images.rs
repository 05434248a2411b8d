//! The image operations every API calls, in the request's context: list, inspect,
//! history, tag, remove, prune, load, import, from-host, pull and push. Each acts in
//! `ctx`'s project over [`pier_image`]'s store (and the registry client for pull and
//! push), and each lifecycle action logs one line naming the project and the caller.
//! Errors stay the image store's and the registry client's own, which each API already
//! maps (listing filters are in [`crate::images_query`]).

use std::io::Read;

use pier_api::types::{
    HistoryEntry, ImageInspect, ImageSummary, LoadReport, LoadedImage, PruneReport, RemoveReport,
};
use pier_api::{Digest, ImageRef};
use pier_image::ImageError;
use pier_registry_client::{transfer, Credentials, RemoteError};

use crate::error::EngineResult;
use crate::{Engine, RequestContext};

impl Engine {
    /// The project's images, newest first; build intermediates only with `all`.
    pub fn images(&self, ctx: &RequestContext, all: bool) -> Result<Vec<ImageSummary>, ImageError> {
        self.images.list_all(ctx.project(), all)
    }

    /// One image by name, ID or ID prefix.
    pub fn inspect_image(
        &self,
        ctx: &RequestContext,
        reference: &str,
    ) -> Result<ImageInspect, ImageError> {
        self.images.inspect(ctx.project(), reference)
    }

    /// The steps that made an image, newest first.
    pub fn image_history(
        &self,
        ctx: &RequestContext,
        reference: &str,
    ) -> Result<Vec<HistoryEntry>, ImageError> {
        self.images.history(ctx.project(), reference)
    }

    /// Gives an image another name.
    pub fn tag_image(
        &self,
        ctx: &RequestContext,
        source: &str,
        target: &ImageRef,
    ) -> Result<(), ImageError> {
        self.images.tag(ctx.project(), source, target)?;
        tracing::info!(project = %ctx.project, caller = %ctx.caller, image = source, tag = %target, "image tagged");
        Ok(())
    }

    /// Removes a tag, or an image with its tags.
    pub fn remove_image(
        &self,
        ctx: &RequestContext,
        reference: &str,
        force: bool,
    ) -> Result<RemoveReport, ImageError> {
        let r = self.images.remove(ctx.project(), reference, force)?;
        tracing::info!(project = %ctx.project, caller = %ctx.caller, image = reference, force, untagged = ?r.untagged, deleted = r.deleted.len(), "image removed");
        Ok(r)
    }

    /// Removes unused images (dangling ones, or all unused with `all`).
    pub fn prune_images(&self, ctx: &RequestContext, all: bool) -> EngineResult<PruneReport> {
        self.prune_images_where(ctx, all, &Default::default())
    }

    /// `docker image prune --filter`: `until` (made before: a time or a duration ago),
    /// `label` and `label!` (`key` or `key=value`) pick the images among the prunable.
    pub fn prune_images_where(
        &self,
        ctx: &RequestContext,
        all: bool,
        f: &crate::filters::Filters,
    ) -> EngineResult<PruneReport> {
        use crate::filters;
        filters::check(f, &["dangling", "until", "label", "label!"])?;
        let until = match f.get("until").and_then(|v| v.first()) {
            None => None,
            Some(u) => Some(filters::parse_time(u).ok_or_else(|| {
                crate::error::invalid(format!(
                    "invalid until {u:?}: give Unix seconds, an RFC 3339 time or a duration such as 24h"
                ))
            })?),
        };
        let by_labels = f.contains_key("label") || f.contains_key("label!");
        let select = |rec: &pier_image::store::ImageRecord| {
            if let Some(u) = until {
                let created = rec
                    .created
                    .as_deref()
                    .and_then(pier_api::time::parse_rfc3339);
                if created.is_none_or(|c| c as f64 >= u) {
                    return false;
                }
            }
            if !by_labels {
                return true;
            }
            let labels: std::collections::BTreeMap<String, String> = self
                .images
                .config(rec)
                .ok()
                .and_then(|c| serde_json::from_value(c["config"]["Labels"].clone()).ok())
                .unwrap_or_default();
            filters::labels(f, &labels)
                && f.get("label!")
                    .is_none_or(|n| n.iter().all(|v| !filters::label_matches(&labels, v)))
        };
        let r = self.images.prune_selected(ctx.project(), all, &select)?;
        tracing::info!(project = %ctx.project, caller = %ctx.caller, all, deleted = r.deleted.len(), reclaimed = r.reclaimed_bytes, "images pruned");
        Ok(r)
    }

    /// Removes the build cache's images (`docker builder prune`).
    pub fn prune_build_cache(&self, ctx: &RequestContext) -> Result<PruneReport, ImageError> {
        let r = self.images.prune_build_cache(ctx.project())?;
        tracing::info!(project = %ctx.project, caller = %ctx.caller, deleted = r.deleted.len(), reclaimed = r.reclaimed_bytes, "build cache pruned");
        Ok(r)
    }

    /// Loads a `docker save` or OCI archive.
    pub fn load_images(
        &self,
        ctx: &RequestContext,
        archive: impl Read,
    ) -> Result<LoadReport, ImageError> {
        let r = pier_image::archive::load(&self.images, ctx.project(), archive)?;
        let ids: Vec<&str> = r.images.iter().map(|i| i.id.as_str()).collect();
        tracing::info!(project = %ctx.project, caller = %ctx.caller, images = ?ids, "images loaded");
        Ok(r)
    }

    /// Imports a flat rootfs tar as a one-layer image, its config edited by `changes`
    /// (`docker import --change`).
    pub fn import_image(
        &self,
        ctx: &RequestContext,
        rootfs: impl Read,
        name: Option<ImageRef>,
        changes: &[String],
    ) -> EngineResult<LoadedImage> {
        // Checked before the upload is read, so a bad change stores nothing.
        let mut config =
            serde_json::json!({ "config": pier_image::build::import_runtime_config() });
        crate::build::changes::apply(&mut config, changes)?;
        let i = pier_image::build::import_with(
            &self.images,
            ctx.project(),
            rootfs,
            name,
            config["config"].take(),
        )?;
        tracing::info!(project = %ctx.project, caller = %ctx.caller, image = %i.id, "image imported");
        Ok(i)
    }

    /// Builds an image from host binaries and the shared libraries they need.
    pub fn image_from_host(
        &self,
        ctx: &RequestContext,
        name: ImageRef,
        binaries: &[String],
    ) -> Result<LoadedImage, ImageError> {
        let i = pier_image::build::from_host(&self.images, ctx.project(), name, binaries)?;
        tracing::info!(project = %ctx.project, caller = %ctx.caller, image = %i.id, "image made from host binaries");
        Ok(i)
    }

    /// Pulls an image from a registry (mirrors first); its ID and manifest digest.
    pub async fn pull_image(
        &self,
        ctx: &RequestContext,
        reference: &ImageRef,
        creds: Option<Credentials>,
        progress: transfer::Progress,
    ) -> Result<(Digest, Digest), RemoteError> {
        let r = transfer::pull(
            self.images.clone(),
            ctx.project.clone(),
            reference,
            &self.registry_client,
            creds,
            progress,
        )
        .await?;
        let repo_digest = format!("{}@{}", reference.familiar_name(), r.1);
        self.images
            .add_repo_digest(ctx.project(), &r.0, repo_digest)?;
        tracing::info!(project = %ctx.project, caller = %ctx.caller, image = %reference, id = %r.0, "image pulled");
        Ok(r)
    }

    /// What `reference`'s registry (mirrors first) says of it, without pulling: its
    /// manifest's descriptor and platforms (`docker manifest inspect`'s first answer).
    pub async fn inspect_remote(
        &self,
        ctx: &RequestContext,
        reference: &ImageRef,
        creds: Option<Credentials>,
    ) -> Result<
        (
            pier_registry_client::manifest::Descriptor,
            Vec<pier_registry_client::manifest::Platform>,
        ),
        RemoteError,
    > {
        let r = transfer::inspect_remote(reference, &self.registry_client, creds).await?;
        tracing::debug!(project = %ctx.project, caller = %ctx.caller, image = %reference, digest = %r.0.digest, "remote image inspected");
        Ok(r)
    }

    /// Pushes local image `local` to `target`'s registry; the manifest's digest and size.
    pub async fn push_image(
        &self,
        ctx: &RequestContext,
        local: &str,
        target: &ImageRef,
        creds: Option<Credentials>,
        progress: transfer::Progress,
    ) -> Result<(Digest, u64), RemoteError> {
        let (d, size) = transfer::push(
            self.images.clone(),
            ctx.project.clone(),
            local,
            target,
            &self.registry_client,
            creds,
            progress,
        )
        .await?;
        if let Ok(rec) = self.images.resolve(ctx.project(), local) {
            self.images.add_repo_digest(
                ctx.project(),
                &rec.id,
                format!("{}@{d}", target.familiar_name()),
            )?;
        }
        tracing::info!(project = %ctx.project, caller = %ctx.caller, image = local, target = %target, digest = %d, "image pushed");
        Ok((d, size))
    }
}
