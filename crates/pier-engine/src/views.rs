//! What the APIs show of a container beyond its record: its image's runtime config, the
//! health check that applies, the host directories of its volumes, its host paths and
//! sizes. The engine gathers these facts; each API shapes them (Docker's in
//! [`pier_api::docker::container`]).

use std::collections::{BTreeMap, HashMap};

use pier_api::containers::ContainerInspect;
use pier_api::docker::container::{ContainerFacts, HostPaths};
use pier_api::volumes::MountKind;
use serde_json::{json, Value};

use crate::Engine;

/// Image configs read while shaping several containers, by image ID.
#[derive(Default)]
pub struct ImageConfigs(HashMap<String, Value>);

impl ImageConfigs {
    /// The runtime config (`config` of the OCI image config) of a container's image;
    /// `{}` when the image is gone or unreadable.
    pub fn of(&mut self, engine: &Engine, c: &ContainerInspect) -> Value {
        self.0
            .entry(c.image_id.to_string())
            .or_insert_with(|| {
                engine
                    .images
                    .resolve(&c.project, c.image_id.as_str())
                    .and_then(|i| engine.images.config(&i))
                    .ok()
                    .and_then(|v| v.get("config").cloned())
                    .unwrap_or_else(|| json!({}))
            })
            .clone()
    }
}

impl Engine {
    /// The facts of a container its shapes need, its image's config read through `images`.
    pub fn container_facts(
        &self,
        c: &ContainerInspect,
        images: &mut ImageConfigs,
    ) -> ContainerFacts {
        let image_config = images.of(self, c);
        let healthcheck = crate::health::effective(c, &image_config);
        let volume_dirs: BTreeMap<String, std::path::PathBuf> = c
            .mounts
            .iter()
            .filter(|m| m.kind == MountKind::Volume)
            .map(|m| {
                let name = m.source.clone().unwrap_or_default();
                let dir = self.volumes.mountpoint(&c.project, &name);
                (name, dir)
            })
            .collect();
        ContainerFacts {
            image_config,
            healthcheck,
            volume_dirs,
        }
    }

    /// A container's host paths: its files, its overlay's directories and its network
    /// namespace.
    pub fn host_paths(&self, c: &ContainerInspect) -> HostPaths {
        let p = self.instances.paths(c);
        let lower_dirs = self
            .images
            .resolve(&c.project, c.image_id.as_str())
            .map(|i| {
                i.layers
                    .iter()
                    .rev()
                    .map(|l| self.images.layer_dir(&l.diff_id))
                    .collect()
            })
            .unwrap_or_default();
        HostPaths {
            resolv_conf: p.resolv_conf,
            hostname: p.hostname,
            hosts: p.hosts,
            upper: p.upper,
            work: p.work,
            merged: p.merged,
            lower_dirs,
            sandbox_key: Some(self.networks.netns_path(&c.id)),
        }
    }

    /// The bytes a container wrote (its upper layer), and those with its image's.
    pub fn container_sizes(&self, c: &ContainerInspect) -> (u64, u64) {
        let rw = self.instances.size_rw(c);
        let base = self
            .images
            .resolve(&c.project, c.image_id.as_str())
            .map_or(0, |i| i.size());
        (rw, rw + base)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_wire_default_network_is_the_engines() {
        assert_eq!(
            pier_api::docker::DEFAULT_NETWORK,
            crate::networks::DEFAULT_NETWORK
        );
    }
}
