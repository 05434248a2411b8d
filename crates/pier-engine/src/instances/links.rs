//! Docker's create options that read other containers or the host's cgroup layout:
//! legacy links (`--link NAME:ALIAS`), `--volumes-from`, and the default of
//! `--cgroupns`.
//!
//! A link on a user network becomes a link of the container's endpoint there: its DNS
//! server answers the alias with the linked container's address, for this container only
//! (`networks::names`). A link on the default bridge is Docker's legacy kind: the linked
//! container must exist at create and run at start, and each start writes its address
//! into /etc/hosts (as ALIAS, its hostname and its name) and its environment and ports
//! into the container's as `ALIAS_NAME`, `ALIAS_ENV_*` and `ALIAS_PORT_*`.

use std::collections::BTreeSet;

use pier_api::containers::{ContainerCreate, ContainerInspect, ContainerStatus};
use pier_api::volumes::{MountKind, MountSpec};
use pier_api::ProjectName;

use super::service::Instances;
use crate::error::{conflict, internal, invalid, EngineResult};
use crate::networks::DEFAULT_NETWORK;

/// `NAME:ALIAS` as its two parts.
fn split_link(l: &str) -> (&str, &str) {
    l.split_once(':').unwrap_or((l, l))
}

/// The prefix of a link's variables: the alias in capitals, `-` as `_`.
fn env_prefix(alias: &str) -> String {
    alias.to_ascii_uppercase().replace(['-', '.'], "_")
}

impl Instances {
    /// Fills what Docker fills at create and checks what reads other containers: the
    /// cgroup namespace mode (Docker's default: `host` on cgroup v1, `private` on v2) and
    /// links (a user network's go to its endpoint; the default bridge's must name
    /// existing containers).
    pub(super) fn docker_options(
        &self,
        project: &ProjectName,
        req: &mut ContainerCreate,
    ) -> EngineResult<()> {
        let vm = req.runtime.as_deref() == Some(super::vm::RUNTIME);
        if req.cgroupns_mode.is_none() && !vm {
            let v2 = std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
            req.cgroupns_mode = Some(if v2 { "private" } else { "host" }.into());
        }
        if req.links.is_empty() {
            return Ok(());
        }
        let mode = req
            .network
            .clone()
            .unwrap_or_else(|| DEFAULT_NETWORK.into());
        if matches!(mode.as_str(), "host" | "none") || mode.starts_with("container:") {
            return Err(invalid(format!(
                "conflicting options: --link cannot be used with --network {mode}: a link needs a network of the container's own"
            )));
        }
        if vm {
            return Err(invalid(
                "--link is not available for VMs: put the VM and the container on a user network, where they find each other by name",
            ));
        }
        if mode == DEFAULT_NETWORK {
            for l in &req.links {
                let (name, _) = split_link(l);
                self.lookup(project, name).map_err(|_| {
                    invalid(format!(
                        "could not get container for {name}: --link {l} names a container that does not exist; create it first"
                    ))
                })?;
            }
        } else {
            for l in &req.links {
                if !req.endpoint.links.contains(l) {
                    req.endpoint.links.push(l.clone());
                }
            }
        }
        Ok(())
    }

    /// Adds the volumes and bind mounts of `--volumes-from` containers to `mounts`
    /// (the container's own mounts win on the same target); `:ro` or `:rw` after the
    /// name sets their mode, else each keeps its own.
    pub(super) fn volumes_from(
        &self,
        project: &ProjectName,
        req: &ContainerCreate,
        mounts: &mut Vec<MountSpec>,
    ) -> EngineResult<()> {
        for from in &req.volumes_from {
            let (name, mode) = match from.rsplit_once(':') {
                Some((n, m)) => (n, Some(m)),
                None => (from.as_str(), None),
            };
            let read_only = match mode {
                None => None,
                Some("ro") => Some(true),
                Some("rw") => Some(false),
                Some(m) => {
                    return Err(invalid(format!(
                        "invalid --volumes-from {from}: mode {m:?} is not ro or rw"
                    )))
                }
            };
            // Invalid rather than missing: a 404 makes the docker CLI pull the image.
            let other = self.lookup(project, name).map_err(|_| {
                invalid(format!(
                    "No such container: {name} (--volumes-from {from}): create it first"
                ))
            })?;
            for m in &other.mounts {
                if !matches!(m.kind, MountKind::Volume | MountKind::Bind) {
                    continue;
                }
                if mounts.iter().any(|o| o.target == m.target) {
                    continue;
                }
                let mut m = m.clone();
                if let Some(ro) = read_only {
                    m.read_only = ro;
                }
                mounts.push(m);
            }
        }
        // Parents before children, as the planned mounts are.
        mounts.sort_by_key(|m| m.target.trim_end_matches('/').matches('/').count());
        Ok(())
    }

    /// The legacy links of a container starting on the default bridge: its /etc/hosts
    /// lines, and its environment as the bundle gets it (the links' variables of an
    /// earlier start replaced).
    pub(super) fn legacy_links(
        &self,
        c: &ContainerInspect,
    ) -> EngineResult<Option<(String, Vec<String>)>> {
        let mode = c.config.network.as_deref().unwrap_or(DEFAULT_NETWORK);
        if c.config.links.is_empty() || mode != DEFAULT_NETWORK {
            return Ok(None);
        }
        let mut hosts = String::new();
        let mut env = Vec::new();
        for l in &c.config.links {
            let (name, alias) = split_link(l);
            let t = self.lookup(&c.project, name).map_err(|_| {
                invalid(format!(
                    "could not get container for {name}: the container linked as {alias} was removed; recreate this container without --link {l}"
                ))
            })?;
            let ip = t
                .networks
                .get(DEFAULT_NETWORK)
                .and_then(|e| e.ip_address)
                .filter(|_| {
                    matches!(
                        t.state.status,
                        ContainerStatus::Running | ContainerStatus::Paused
                    )
                })
                .ok_or_else(|| {
                    conflict(format!(
                        "Cannot link to a non running container: /{} AS /{}/{alias}",
                        t.name, c.name
                    ))
                })?;
            let hostname = t
                .config
                .hostname
                .clone()
                .unwrap_or_else(|| t.id[..12].to_string());
            hosts.push_str(&format!("{ip}\t{alias} {hostname} {}\n", t.name));
            env.extend(self.link_env(c, &t, alias, &ip.to_string()));
        }
        Ok(Some((hosts, env)))
    }

    /// Docker's variables of one link.
    fn link_env(
        &self,
        c: &ContainerInspect,
        t: &ContainerInspect,
        alias: &str,
        ip: &str,
    ) -> Vec<String> {
        let p = env_prefix(alias);
        let img = self
            .images
            .resolve(&t.project, t.image_id.as_str())
            .and_then(|i| self.images.config(&i))
            .map(|cfg| cfg["config"].clone())
            .unwrap_or_default();
        let mut ports: BTreeSet<(u16, String)> = BTreeSet::new();
        let mut add_port = |k: &str| {
            let (port, proto) = k.split_once('/').unwrap_or((k, "tcp"));
            if let Ok(n) = port.parse() {
                ports.insert((n, proto.to_string()));
            }
        };
        if let Some(o) = img["ExposedPorts"].as_object() {
            o.keys().for_each(|k| add_port(k));
        }
        t.config.expose.iter().for_each(|k| add_port(k));
        for spec in &t.config.publish {
            for r in spec.requests() {
                let proto = match r.proto {
                    pier_api::ports::Proto::Udp => "udp",
                    _ => "tcp",
                };
                add_port(&format!("{}/{proto}", r.container_port));
            }
        }
        let mut env = vec![format!("{p}_NAME=/{}/{alias}", c.name)];
        if let Some((port, proto)) = ports.iter().next() {
            env.push(format!("{p}_PORT={proto}://{ip}:{port}"));
        }
        for (port, proto) in &ports {
            let k = format!("{p}_PORT_{port}_{}", proto.to_ascii_uppercase());
            env.push(format!("{k}={proto}://{ip}:{port}"));
            env.push(format!("{k}_ADDR={ip}"));
            env.push(format!("{k}_PORT={port}"));
            env.push(format!("{k}_PROTO={proto}"));
        }
        let image_env = img["Env"].as_array().cloned().unwrap_or_default();
        let mut seen = BTreeSet::new();
        let own: Vec<String> = t.config.env.iter().rev().cloned().collect();
        let image_env: Vec<String> = image_env
            .iter()
            .rev()
            .filter_map(|v| v.as_str().map(String::from))
            .collect();
        let mut vars = Vec::new();
        for e in own.iter().chain(&image_env) {
            let (k, v) = e.split_once('=').unwrap_or((e, ""));
            if k == "HOME" || k == "PATH" || !seen.insert(k.to_string()) {
                continue;
            }
            vars.push(format!("{p}_ENV_{k}={v}"));
        }
        vars.reverse();
        env.extend(vars);
        env
    }

    /// Removes the legacy link `alias` of container `name` (Docker's
    /// `DELETE /containers/NAME/ALIAS?link=1`); its next start has no such link.
    pub async fn remove_link(
        &self,
        ctx: &crate::context::RequestContext,
        name: &str,
        alias: &str,
    ) -> EngineResult<()> {
        let c = self.lookup(ctx.project(), name)?;
        let mut found = false;
        self.update_spec(ctx.project(), &c.id, |c| {
            let before = c.config.links.len();
            c.config.links.retain(|l| split_link(l).1 != alias);
            found = c.config.links.len() != before;
            found
        })
        .await?;
        if !found {
            return Err(crate::error::EngineError::new(
                pier_api::ErrorKind::NotFound,
                format!("Could not find link {alias} of container {}", c.name),
            ));
        }
        Ok(())
    }

    /// Writes the links' variables into the bundle's environment, replacing those an
    /// earlier start wrote (listed in `link-env.json`, so that a removed link's go too).
    pub(super) fn write_link_env(&self, c: &ContainerInspect, env: &[String]) -> EngineResult<()> {
        let written = self.cdir(&c.id).join("link-env.json");
        let before: Vec<String> = std::fs::read(&written)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        if before.is_empty() && env.is_empty() {
            return Ok(());
        }
        let path = self.cdir(&c.id).join("config.json");
        let mut spec: serde_json::Value = serde_json::from_slice(
            &std::fs::read(&path).map_err(|e| internal(format!("cannot read config.json: {e}")))?,
        )
        .map_err(|e| internal(format!("config.json: {e}")))?;
        let Some(list) = spec["process"]["env"].as_array_mut() else {
            return Ok(());
        };
        list.retain(|v| !before.iter().any(|b| v.as_str() == Some(b.as_str())));
        list.extend(env.iter().map(|e| serde_json::json!(e)));
        std::fs::write(&path, serde_json::to_vec(&spec).expect("json"))
            .map_err(|e| internal(format!("cannot write config.json: {e}")))?;
        std::fs::write(&written, serde_json::to_vec(env).expect("json"))
            .map_err(|e| internal(format!("cannot write link-env.json: {e}")))
    }
}
