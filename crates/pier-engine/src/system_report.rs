//! The whole engine at a glance, for `pier system info|df|prune`: counts of a project's
//! instances and images with the host's facts ([`crate::system`]), disk usage by kind, and
//! one prune of everything unused, each read from (or done by) the services themselves.

use std::collections::{BTreeMap, BTreeSet};

use pier_api::containers::ContainerStatus;
use pier_api::system::{DfBuildCache, DfContainer, DfImage, DfVolume, SystemDf, SystemPruneReport};
use pier_api::types::{ImageSummary, SystemInfo};
use pier_api::volumes::MountKind;

use crate::context::RequestContext;
use crate::system::{HostInfo, ProcessFacts};
use crate::{Engine, EngineResult};

impl Engine {
    /// What this daemon is and holds: counts of `ctx`'s project, the host's CPUs,
    /// memory, cgroups, runtimes and the state directory's free space.
    pub fn system_info(&self, ctx: &RequestContext) -> EngineResult<SystemInfo> {
        let images = self.images(ctx, false)?.len() as u64;
        let containers = self.instances.inspect_all(ctx)?;
        let count = |s: &[ContainerStatus]| {
            containers
                .iter()
                .filter(|c| s.contains(&c.state.status))
                .count() as u64
        };
        let running = count(&[ContainerStatus::Running, ContainerStatus::Restarting]);
        let paused = count(&[ContainerStatus::Paused]);
        let host = HostInfo::read();
        let facts = ProcessFacts::read();
        let mut runtimes = vec!["pier".to_string()];
        if facts.runc {
            runtimes.push("runc".into());
        }
        let vm = self.instances.vm_facts();
        if vm.is_some() {
            runtimes.push(crate::instances::vm::RUNTIME.into());
        }
        let (free, total) = match rustix::fs::statvfs(&self.root) {
            Ok(s) => (s.f_bavail * s.f_frsize, s.f_blocks * s.f_frsize),
            Err(_) => (0, 0),
        };
        Ok(SystemInfo {
            version: env!("CARGO_PKG_VERSION").to_string(),
            api_version: pier_api::API_VERSION.to_string(),
            root: self.root.display().to_string(),
            store_schema: self.store_schema,
            storage_driver: "overlay".into(),
            images,
            kernel: host.kernel,
            containers: containers.len() as u64,
            containers_running: running,
            containers_paused: paused,
            containers_stopped: containers.len() as u64 - running - paused,
            os: host.os,
            arch: pier_image::build::host_arch().into(),
            hostname: host.hostname,
            cpus: host.cpus,
            memory: host.memory,
            cgroup_version: facts.cgroup_version,
            cgroup_driver: "cgroupfs".into(),
            runtimes,
            vm,
            root_free_bytes: free,
            root_total_bytes: total,
            project: ctx.project.clone(),
        })
    }

    /// Disk usage of `ctx`'s project: images, instances' writable layers, volumes and
    /// the build cache (the intermediate images of builds).
    pub fn disk_usage(&self, ctx: &RequestContext) -> EngineResult<SystemDf> {
        let images = self.images(ctx, false)?;
        let kept: BTreeSet<String> = images.iter().map(|i| i.id.to_string()).collect();
        let cache: Vec<_> = self
            .images(ctx, true)?
            .into_iter()
            .filter(|i| !kept.contains(&i.id.to_string()))
            .collect();
        let containers = self.instances.inspect_all(ctx)?;
        let (layers_size, shared) = self.layer_sharing(ctx, &images);
        Ok(SystemDf {
            layers_size,
            images: images
                .into_iter()
                .zip(shared)
                .map(|(i, shared_size)| DfImage {
                    id: i.id.to_string(),
                    repo_tags: i.repo_tags,
                    created: i.created,
                    size: i.size,
                    shared_size,
                    containers: i.containers,
                })
                .collect(),
            containers: containers
                .iter()
                .map(|c| DfContainer {
                    id: c.id.clone(),
                    name: c.name.clone(),
                    image: c.image.clone(),
                    command: c.command.join(" "),
                    created: c.created.clone(),
                    state: c.state.status.as_str().to_string(),
                    size_rw: self.instances.size_rw(c),
                    volumes: c
                        .mounts
                        .iter()
                        .filter(|m| m.kind == MountKind::Volume)
                        .count() as u64,
                })
                .collect(),
            volumes: self
                .volumes_with_usage(ctx)
                .into_iter()
                .map(|v| DfVolume {
                    links: v.used_by.len() as u64,
                    size: v.usage.map_or(0, |u| u.bytes),
                    name: v.name,
                })
                .collect(),
            build_cache: DfBuildCache {
                count: cache.len() as u64,
                size: cache.iter().map(|i| i.size).sum(),
            },
        })
    }

    /// How `images` share layers: the bytes of their distinct layers (a layer two images
    /// share is on disk once) and, for each image, the bytes of its layers another of them
    /// has too.
    fn layer_sharing(&self, ctx: &RequestContext, images: &[ImageSummary]) -> (u64, Vec<u64>) {
        let layer_lists: Vec<BTreeMap<String, u64>> = images
            .iter()
            .map(|i| {
                self.images
                    .resolve(&ctx.project, i.id.as_str())
                    .map(|r| {
                        r.layers
                            .iter()
                            .map(|l| (l.diff_id.to_string(), l.size))
                            .collect()
                    })
                    .unwrap_or_default()
            })
            .collect();
        let mut users: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
        for (id, size) in layer_lists.iter().flatten() {
            users.entry(id.as_str()).or_insert((0, *size)).0 += 1;
        }
        let total = users.values().map(|(_, size)| size).sum();
        let shared = layer_lists
            .iter()
            .map(|list| {
                list.iter()
                    .filter(|(id, _)| users.get(id.as_str()).is_some_and(|(n, _)| *n > 1))
                    .map(|(_, size)| size)
                    .sum()
            })
            .collect();
        (total, shared)
    }

    /// Removes the stopped instances, then the networks no instance uses, the dangling
    /// images (every unused one with `all`), the build cache and, with `volumes`, the
    /// anonymous volumes no instance uses.
    pub async fn prune_system(
        &self,
        ctx: &RequestContext,
        all: bool,
        volumes: bool,
    ) -> EngineResult<SystemPruneReport> {
        // Instances first: what they held (networks, volumes, images) is unused after.
        let containers = self.instances.prune(ctx).await?;
        let networks = self.networks.prune(ctx).await?;
        let (volumes, volume_bytes) = if volumes {
            self.prune_volumes_measured(ctx, false, &Default::default())?
        } else {
            (Vec::new(), 0)
        };
        let images = self.prune_images(ctx, all)?;
        let build_cache = self.prune_build_cache(ctx)?;
        Ok(SystemPruneReport {
            reclaimed_bytes: volume_bytes + images.reclaimed_bytes + build_cache.reclaimed_bytes,
            containers,
            networks,
            volumes,
            images,
            build_cache,
        })
    }
}
