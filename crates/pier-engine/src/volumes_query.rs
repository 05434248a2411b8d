//! Volume operations the APIs share beyond the volume service's own: filtered listings
//! (Docker's `name`, `label`, `driver`, `dangling`), make-if-absent, usage with reference
//! counts for disk usage, listings with usage and users, and prune with the bytes it frees. They call the public methods
//! of [`Volumes`](crate::volumes::Volumes) and [`Instances`](crate::instances::Instances).

use std::collections::BTreeMap;

use pier_api::volumes::{MountKind, VolumeCreate, VolumeInspect};
use pier_api::{ErrorKind, ProjectName};

use crate::filters::{self, Filters};
use crate::{Engine, EngineResult, RequestContext};

/// The filter keys of a volume listing.
pub const VOLUME_FILTERS: &[&str] = &["name", "label", "driver", "dangling"];

/// Whether a volume passes the listing filters; `unused` tells whether no container
/// uses it (asked only for `dangling`).
pub fn volume_matches(f: &Filters, v: &VolumeInspect, unused: &dyn Fn() -> bool) -> bool {
    filters::any(f, "name", &|x| v.name.contains(x))
        && filters::any(f, "driver", &|x| x == "local")
        && filters::labels(f, &v.labels)
        && filters::any(f, "dangling", &|x| (x == "true" || x == "1") == unused())
}

impl Engine {
    /// Whether no container uses the volume.
    pub fn volume_unused(&self, project: &ProjectName, name: &str) -> bool {
        self.instances
            .users_of_volume(project, name)
            .is_ok_and(|u| u.is_empty())
    }

    /// How many containers use the volume (0 when unknown).
    pub fn volume_refs(&self, project: &ProjectName, name: &str) -> usize {
        self.instances
            .users_of_volume(project, name)
            .map_or(0, |u| u.len())
    }

    /// The volumes of a listing under Docker's filters.
    pub fn list_volumes(
        &self,
        ctx: &RequestContext,
        f: &Filters,
    ) -> EngineResult<Vec<VolumeInspect>> {
        let project = ctx.project();
        let mut out = self.volumes.list(project)?;
        out.retain(|v| volume_matches(f, v, &|| self.volume_unused(project, &v.name)));
        Ok(out)
    }

    /// Every volume with its usage measured (for disk usage).
    pub fn volumes_with_usage(&self, ctx: &RequestContext) -> Vec<VolumeInspect> {
        let vols = self
            .instances
            .volumes
            .list(ctx.project())
            .unwrap_or_default();
        vols.iter()
            .map(|v| {
                self.instances
                    .volumes
                    .inspect(ctx, &v.name)
                    .unwrap_or_else(|_| v.clone())
            })
            .collect()
    }

    /// Fills in each of the project's volumes' usage ([`Volumes::usage`](crate::volumes::Volumes::usage))
    /// and the containers using it, from one read of the container records.
    pub fn fill_volume_usage(
        &self,
        ctx: &RequestContext,
        volumes: &mut [VolumeInspect],
    ) -> EngineResult<()> {
        let mut users: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        let containers = self.instances.all(ctx.project())?;
        for c in &containers {
            for m in &c.mounts {
                if let (MountKind::Volume, Some(src)) = (m.kind, m.source.as_deref()) {
                    users.entry(src).or_default().push(c.name.clone());
                }
            }
        }
        for v in volumes {
            v.usage = self.volumes.usage(v);
            v.used_by = users.get(v.name.as_str()).cloned().unwrap_or_default();
            v.used_by.sort();
            v.used_by.dedup();
        }
        Ok(())
    }

    /// The volume named, made with these labels when absent; whether it was made. One
    /// made meanwhile by someone else is returned as found.
    pub fn ensure_volume(
        &self,
        ctx: &RequestContext,
        req: VolumeCreate,
    ) -> EngineResult<(VolumeInspect, bool)> {
        let project = ctx.project();
        let volumes = &self.volumes;
        if let Some(n) = &req.name {
            if let Ok(v) = volumes.get(project, n) {
                return Ok((v, false));
            }
        }
        let name = req.name.clone();
        match volumes.create(ctx, req, false) {
            Ok(v) => Ok((v, true)),
            Err(e) if e.kind() == ErrorKind::Conflict && name.is_some() => {
                let v = volumes.get(project, name.as_deref().unwrap_or_default())?;
                Ok((v, false))
            }
            Err(e) => Err(e),
        }
    }

    /// Removes the unused volumes (anonymous ones, or all with `all`); returns their
    /// names and the bytes they held.
    pub fn prune_volumes_measured(
        &self,
        ctx: &RequestContext,
        all: bool,
        filters: &crate::filters::Filters,
    ) -> EngineResult<(Vec<String>, u64)> {
        let project = ctx.project();
        let volumes = &self.volumes;
        let before: BTreeMap<String, u64> = volumes
            .list(project)?
            .iter()
            .map(|v| {
                let bytes = volumes
                    .inspect(ctx, &v.name)
                    .ok()
                    .and_then(|v| v.usage)
                    .map_or(0, |u| u.bytes);
                (v.name.clone(), bytes)
            })
            .collect();
        let removed = self.instances.prune_volumes_where(ctx, all, filters)?;
        let reclaimed = removed.iter().filter_map(|n| before.get(n)).sum::<u64>();
        Ok((removed, reclaimed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volumes_pass_docker_filters() {
        let v: VolumeInspect = serde_json::from_value(serde_json::json!({
            "name": "app_data", "project": "default", "driver": "local", "created": "",
            "mountpoint": "", "labels": {"k": "v"}, "options": {},
            "size_limit": null, "inode_limit": null,
        }))
        .unwrap();
        let ok =
            |s: &str, unused: bool| volume_matches(&filters::parse(s).unwrap(), &v, &|| unused);
        assert!(ok("{}", false));
        assert!(ok(
            r#"{"name":["data"],"label":["k=v"],"driver":["local"]}"#,
            false
        ));
        assert!(!ok(r#"{"driver":["nfs"]}"#, false));
        assert!(!ok(r#"{"label":["k=w"]}"#, false));
        assert!(ok(r#"{"dangling":["true"]}"#, true));
        assert!(!ok(r#"{"dangling":["true"]}"#, false));
        assert!(ok(r#"{"dangling":["false"]}"#, false));
    }
}
