//! The management view of the registry (what Docker's registry leaves to scripts):
//! repositories and tags with digest, size, created time, platform and labels; search by
//! name and label; the history of a tag; and server-side config edits, which write a new
//! config and manifest over the same layers, so no layer moves.

use std::collections::{BTreeMap, BTreeSet};

use pier_api::registry::{
    RegistryEditReport, RegistryEditRequest, RegistryImageStep, RegistryIndexEntry, RegistryLayer,
    RegistryTag, RegistryTagInspect, RepositorySummary, TagHistoryEntry,
};
use pier_api::Digest;
use pier_store::{Batch, StoreExt, Table};

use crate::error::{RegistryError, Result};
use crate::names::{check_repository, check_tag, Reference};
use crate::repo::{record_history, tag_key, ManifestRecord, TagRecord};
use crate::Registry;

/// What an image config tells about an image.
struct ConfigFacts {
    created: Option<String>,
    platform: Option<String>,
    labels: BTreeMap<String, String>,
}

/// `PORT[/PROTO]` as an image config's `ExposedPorts` key (`PORT/tcp` when no protocol
/// is given).
fn exposed_port(p: &str) -> Result<String> {
    let (port, proto) = p.split_once('/').unwrap_or((p, "tcp"));
    let proto = proto.to_ascii_lowercase();
    match port.parse::<u16>() {
        Ok(n) if n > 0 && matches!(proto.as_str(), "tcp" | "udp" | "sctp") => {
            Ok(format!("{n}/{proto}"))
        }
        _ => Err(RegistryError::Unsupported(format!(
            "exposed port {p:?} is not PORT or PORT/PROTO (a port 1-65535; tcp, udp or sctp)"
        ))),
    }
}

/// Splits `repo:tag`.
pub fn split_reference(s: &str) -> Result<(String, String)> {
    let (repo, tag) = match s.rsplit_once(':') {
        Some((r, t)) if !t.contains('/') => (r, t),
        _ => (s, "latest"),
    };
    check_repository(repo)?;
    check_tag(tag)?;
    Ok((repo.to_string(), tag.to_string()))
}

impl Registry {
    fn config_facts(&self, m: &ManifestRecord) -> ConfigFacts {
        let cfg = m
            .blobs
            .first()
            .and_then(|c| {
                self.images
                    .blobs()
                    .read_all(&c.digest, crate::MAX_MANIFEST)
                    .ok()
            })
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .unwrap_or_default();
        let s = |k: &str| cfg.get(k).and_then(|v| v.as_str()).map(str::to_string);
        let platform = match (s("os"), s("architecture")) {
            (Some(os), Some(arch)) => Some(match s("variant") {
                Some(v) => format!("{os}/{arch}/{v}"),
                None => format!("{os}/{arch}"),
            }),
            _ => None,
        };
        let labels = cfg
            .pointer("/config/Labels")
            .and_then(|l| l.as_object())
            .map(|o| {
                o.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect()
            })
            .unwrap_or_default();
        ConfigFacts {
            created: s("created"),
            platform,
            labels,
        }
    }

    /// One tag in detail.
    fn tag_detail(
        &self,
        repo: &str,
        tag: &str,
        digest: &Digest,
        updated: &str,
    ) -> Result<RegistryTag> {
        let m =
            self.manifest_record(repo, digest)?
                .ok_or_else(|| RegistryError::ManifestUnknown {
                    repository: repo.into(),
                    reference: tag.into(),
                })?;
        let mut size = m.size;
        let mut platforms = Vec::new();
        let mut labels = BTreeMap::new();
        let mut created = None;
        if m.children.is_empty() {
            size += m.blobs.iter().map(|b| b.size).sum::<u64>();
            let f = self.config_facts(&m);
            platforms.extend(f.platform);
            labels = f.labels;
            created = f.created;
        } else {
            for c in &m.children {
                size += c.size;
                if let Some(cm) = self.manifest_record(repo, &c.digest)? {
                    size += cm.blobs.iter().map(|b| b.size).sum::<u64>();
                    let f = self.config_facts(&cm);
                    let p = c.platform.as_ref().map(|p| p.show()).or(f.platform);
                    platforms.extend(p);
                    if labels.is_empty() {
                        labels = f.labels;
                    }
                    created = created.max(f.created);
                }
            }
        }
        Ok(RegistryTag {
            repository: repo.into(),
            tag: tag.into(),
            digest: digest.clone(),
            media_type: m.media_type,
            size,
            created,
            updated: updated.into(),
            platforms,
            labels,
        })
    }

    /// Every tag of `repo` in detail.
    pub fn tag_details(&self, repo: &str) -> Result<Vec<RegistryTag>> {
        check_repository(repo)?;
        let tags = self.tags(repo)?;
        if tags.is_empty() && self.manifests(repo)?.is_empty() {
            return Err(RegistryError::NameUnknown(repo.into()));
        }
        tags.iter()
            .map(|(t, r)| self.tag_detail(repo, t, &r.digest, &r.updated))
            .collect()
    }

    pub fn repository_summaries(&self) -> Result<Vec<RepositorySummary>> {
        let mut out = Vec::new();
        for repo in self.repositories()? {
            let manifests = self.manifests(&repo)?;
            let mut seen = BTreeSet::new();
            let mut size = 0;
            for (d, m) in &manifests {
                if seen.insert(d.clone()) {
                    size += m.size;
                }
                for b in &m.blobs {
                    if seen.insert(b.digest.clone()) {
                        size += b.size;
                    }
                }
            }
            out.push(RepositorySummary {
                tags: self.tags(&repo)?.len() as u64,
                manifests: manifests.len() as u64,
                size,
                updated: manifests.iter().map(|(_, m)| m.pushed.clone()).max(),
                name: repo,
            });
        }
        Ok(out)
    }

    /// Tags whose repository name contains `name` and whose labels have `label` (`key`
    /// or `key=value`).
    pub fn search(&self, name: Option<&str>, label: Option<&str>) -> Result<Vec<RegistryTag>> {
        let mut out = Vec::new();
        for repo in self.repositories()? {
            if name.is_some_and(|n| !repo.contains(n)) {
                continue;
            }
            for t in self.tag_details(&repo)? {
                let keep = match label
                    .map(|l| l.split_once('=').map_or((l, None), |(k, v)| (k, Some(v))))
                {
                    None => true,
                    Some((k, None)) => t.labels.contains_key(k),
                    Some((k, Some(v))) => t.labels.get(k).map(String::as_str) == Some(v),
                };
                if keep {
                    out.push(t);
                }
            }
        }
        Ok(out)
    }

    pub fn history(&self, repo: &str, tag: &str) -> Result<Vec<TagHistoryEntry>> {
        check_repository(repo)?;
        check_tag(tag)?;
        let h = self.tag_history(repo, tag)?;
        if h.is_empty() {
            return Err(RegistryError::ManifestUnknown {
                repository: repo.into(),
                reference: tag.into(),
            });
        }
        Ok(h.into_iter()
            .map(|r| TagHistoryEntry {
                digest: r.digest,
                at: r.at,
                action: r.action,
            })
            .collect())
    }

    /// A tag's record, or MANIFEST_UNKNOWN.
    fn tag_record(&self, repo: &str, tag: &str) -> Result<TagRecord> {
        check_repository(repo)?;
        check_tag(tag)?;
        self.db()
            .get_json::<TagRecord>(Table::RegistryTags, &tag_key(repo, tag))?
            .ok_or_else(|| RegistryError::ManifestUnknown {
                repository: repo.into(),
                reference: tag.into(),
            })
    }

    /// One tag in depth: its summary, its image config's runtime part, its layers (with
    /// the step that made each, from the config's history) and its steps.
    pub fn tag_inspect(&self, repo: &str, tag: &str) -> Result<RegistryTagInspect> {
        let t = self.tag_record(repo, tag)?;
        let summary = self.tag_detail(repo, tag, &t.digest, &t.updated)?;
        let (_, m) = self.resolve(repo, &Reference::Digest(t.digest.clone()))?;
        let manifests = m
            .children
            .iter()
            .map(|c| RegistryIndexEntry {
                digest: c.digest.clone(),
                size: c.size,
                platform: c.platform.as_ref().map(|p| p.show()),
            })
            .collect();
        let (config_digest, cfg) = match m.blobs.first().filter(|_| m.children.is_empty()) {
            Some(c) => {
                let cfg = serde_json::from_slice::<serde_json::Value>(
                    &self
                        .images
                        .blobs()
                        .read_all(&c.digest, crate::MAX_MANIFEST)?,
                )
                .map_err(|e| {
                    RegistryError::ManifestInvalid(format!("config {} is not JSON: {e}", c.digest))
                })?;
                (Some(c.digest.clone()), cfg)
            }
            None => (None, serde_json::Value::Null),
        };
        let history: Vec<RegistryImageStep> = cfg
            .get("history")
            .and_then(|h| h.as_array())
            .map(|h| {
                h.iter()
                    .map(|s| RegistryImageStep {
                        created: s["created"].as_str().map(str::to_string),
                        created_by: s["created_by"].as_str().unwrap_or_default().to_string(),
                        empty_layer: s["empty_layer"].as_bool().unwrap_or(false),
                    })
                    .collect()
            })
            .unwrap_or_default();
        // The steps that made a layer, in the layers' order.
        let mut makers = history.iter().filter(|s| !s.empty_layer);
        let layers = match config_digest {
            Some(_) => m
                .blobs
                .iter()
                .skip(1)
                .map(|b| RegistryLayer {
                    digest: b.digest.clone(),
                    media_type: b.media_type.clone(),
                    size: b.size,
                    created_by: makers.next().map(|s| s.created_by.clone()),
                })
                .collect(),
            None => Vec::new(),
        };
        let config = match cfg.get("config") {
            Some(c) if c.is_object() => c.clone(),
            _ => serde_json::json!({}),
        };
        Ok(RegistryTagInspect {
            tag: summary,
            config_digest,
            config,
            layers,
            history,
            manifests,
        })
    }

    /// Points `tag` at `digest`, a manifest `repo` holds (an earlier version from the
    /// tag's history, say): the history records a `retag`. Nothing changes when the tag
    /// points there already.
    pub fn set_tag(&self, repo: &str, tag: &str, digest: &Digest) -> Result<RegistryTag> {
        check_repository(repo)?;
        check_tag(tag)?;
        self.resolve(repo, &Reference::Digest(digest.clone()))?;
        let old: Option<TagRecord> = self
            .db()
            .get_json(Table::RegistryTags, &tag_key(repo, tag))?;
        let updated = match old {
            Some(o) if o.digest == *digest => o.updated,
            _ => {
                let updated = pier_api::time::now_rfc3339();
                let mut b = Batch::new();
                b.put_json(
                    Table::RegistryTags,
                    tag_key(repo, tag),
                    &TagRecord {
                        digest: digest.clone(),
                        updated: updated.clone(),
                    },
                );
                record_history(&mut b, repo, tag, Some(digest), "retag");
                b.commit(self.db())?;
                updated
            }
        };
        self.tag_detail(repo, tag, digest, &updated)
    }

    pub fn delete_tag(&self, repo: &str, tag: &str) -> Result<()> {
        check_repository(repo)?;
        check_tag(tag)?;
        self.delete_manifest(repo, &Reference::Tag(tag.into()))
    }

    /// Deletes a manifest by digest with every tag pointing at it (`pier registry rm
    /// REPO@DIGEST`); returns those tags. Its blobs stay until a GC finds them unused.
    pub fn delete_digest(&self, repo: &str, digest: &str) -> Result<Vec<String>> {
        check_repository(repo)?;
        let Reference::Digest(d) = Reference::parse(digest)? else {
            return Err(RegistryError::DigestInvalid(digest.to_string()));
        };
        let tags = self
            .tags(repo)?
            .into_iter()
            .filter(|(_, rec)| rec.digest == d)
            .map(|(t, _)| t)
            .collect();
        self.delete_manifest(repo, &Reference::Digest(d))?;
        Ok(tags)
    }

    /// `pier registry edit`: a new config and manifest over the same layers.
    pub fn edit(&self, req: &RegistryEditRequest) -> Result<RegistryEditReport> {
        let (repo, tag) = split_reference(&req.reference)?;
        let new_tag = req.new_tag.clone().unwrap_or_else(|| tag.clone());
        check_tag(&new_tag)?;
        let (digest, rec) = self.resolve(&repo, &Reference::Tag(tag.clone()))?;
        if !rec.children.is_empty() {
            return Err(RegistryError::Unsupported(format!(
                "{repo}:{tag} is an index; edit one platform's image (tag it first by digest)"
            )));
        }
        let config_desc = rec
            .blobs
            .first()
            .ok_or_else(|| RegistryError::ManifestInvalid("no config".into()))?;
        let mut cfg: serde_json::Value = serde_json::from_slice(
            &self
                .images
                .blobs()
                .read_all(&config_desc.digest, crate::MAX_MANIFEST)?,
        )
        .map_err(|e| RegistryError::ManifestInvalid(format!("the config is not JSON: {e}")))?;
        let pairs = |list: &[String], what: &str| -> Result<Vec<(String, String)>> {
            list.iter()
                .map(|kv| {
                    kv.split_once('=')
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .filter(|(k, _)| !k.is_empty())
                        .ok_or_else(|| {
                            RegistryError::Unsupported(format!("{what} {kv:?} is not KEY=VALUE"))
                        })
                })
                .collect()
        };
        let env = pairs(&req.env, "environment variable")?;
        let labels = pairs(&req.labels, "label")?;
        let ports = req
            .exposed_ports
            .as_ref()
            .map(|p| {
                p.iter()
                    .map(|p| exposed_port(p))
                    .collect::<Result<Vec<_>>>()
            })
            .transpose()?;
        if let Some(w) = req.working_dir.as_deref() {
            if !w.is_empty() && !w.starts_with('/') {
                return Err(RegistryError::Unsupported(format!(
                    "working directory {w:?} is not an absolute path; give one starting with '/' (or an empty one for none)"
                )));
            }
        }
        for (what, v) in [
            ("working directory", req.working_dir.as_deref()),
            ("user", req.user.as_deref()),
        ] {
            if v.is_some_and(|v| v.chars().any(char::is_control)) {
                return Err(RegistryError::Unsupported(format!(
                    "the {what} {v:?} has a control character"
                )));
            }
        }
        if !cfg.get("config").is_some_and(|c| c.is_object()) {
            cfg["config"] = serde_json::json!({});
        }
        let c = &mut cfg["config"];
        if !req.unset_env.is_empty() {
            if let Some(list) = c.get_mut("Env").and_then(|e| e.as_array_mut()) {
                list.retain(|e| {
                    let name = e.as_str().map(|e| e.split_once('=').map_or(e, |(n, _)| n));
                    !name.is_some_and(|n| req.unset_env.iter().any(|k| k == n))
                });
            }
        }
        if !req.unset_labels.is_empty() {
            if let Some(map) = c.get_mut("Labels").and_then(|l| l.as_object_mut()) {
                for k in &req.unset_labels {
                    map.remove(k);
                }
            }
        }
        if !env.is_empty() {
            let mut list: Vec<String> = c
                .get("Env")
                .and_then(|e| e.as_array())
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            for (k, v) in &env {
                list.retain(|e| e.split_once('=').map_or(e.as_str(), |(n, _)| n) != k);
                list.push(format!("{k}={v}"));
            }
            c["Env"] = serde_json::json!(list);
        }
        if !labels.is_empty() {
            if !c.get("Labels").is_some_and(|l| l.is_object()) {
                c["Labels"] = serde_json::json!({});
            }
            for (k, v) in &labels {
                c["Labels"][k] = serde_json::json!(v);
            }
        }
        if let Some(cmd) = &req.cmd {
            c["Cmd"] = serde_json::json!(cmd);
        }
        if let Some(ep) = &req.entrypoint {
            c["Entrypoint"] = serde_json::json!(ep);
        }
        let obj = c.as_object_mut().expect("made an object above");
        for (key, v) in [("WorkingDir", &req.working_dir), ("User", &req.user)] {
            match v.as_deref() {
                Some("") => {
                    obj.remove(key);
                }
                Some(v) => {
                    obj.insert(key.into(), serde_json::json!(v));
                }
                None => {}
            }
        }
        if let Some(ports) = &ports {
            if ports.is_empty() {
                obj.remove("ExposedPorts");
            } else {
                let set: serde_json::Map<String, serde_json::Value> = ports
                    .iter()
                    .map(|p| (p.clone(), serde_json::json!({})))
                    .collect();
                obj.insert("ExposedPorts".into(), set.into());
            }
        }
        let mut what = Vec::new();
        what.extend(req.unset_env.iter().map(|k| format!("unset env {k}")));
        what.extend(req.unset_labels.iter().map(|k| format!("unset label {k}")));
        what.extend(env.iter().map(|(k, _)| format!("env {k}")));
        what.extend(labels.iter().map(|(k, _)| format!("label {k}")));
        if req.cmd.is_some() {
            what.push("cmd".into());
        }
        if req.entrypoint.is_some() {
            what.push("entrypoint".into());
        }
        if req.working_dir.is_some() {
            what.push("workdir".into());
        }
        if req.user.is_some() {
            what.push("user".into());
        }
        if ports.is_some() {
            what.push("exposed ports".into());
        }
        let entry = serde_json::json!({
            "created": pier_api::time::now_rfc3339(),
            "created_by": format!("pier registry edit: {}", what.join(", ")),
            "empty_layer": true,
        });
        match cfg.get_mut("history").and_then(|h| h.as_array_mut()) {
            Some(h) => h.push(entry),
            None => cfg["history"] = serde_json::json!([entry]),
        }
        let cfg_bytes = serde_json::to_vec(&cfg).expect("json");
        let new_config = self.put_blob_bytes(&repo, &cfg_bytes)?;
        let mut m: serde_json::Value = serde_json::from_slice(&self.manifest_bytes(&digest)?)
            .map_err(|e| RegistryError::ManifestInvalid(e.to_string()))?;
        m["config"]["digest"] = serde_json::json!(new_config);
        m["config"]["size"] = serde_json::json!(cfg_bytes.len());
        let m_bytes = serde_json::to_vec(&m).expect("json");
        let (new_digest, _) = self.put_manifest(
            &repo,
            &Reference::Tag(new_tag.clone()),
            &m_bytes,
            Some(&rec.media_type),
            "edit",
        )?;
        Ok(RegistryEditReport {
            repository: repo,
            tag: new_tag,
            digest: new_digest,
            config: new_config,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposed_ports_are_checked_and_given_a_protocol() {
        assert_eq!(exposed_port("80").unwrap(), "80/tcp");
        assert_eq!(exposed_port("53/UDP").unwrap(), "53/udp");
        assert_eq!(exposed_port("9/sctp").unwrap(), "9/sctp");
        for bad in ["0", "65536", "http", "80/icmp", "", "/tcp", "80/"] {
            let e = exposed_port(bad).unwrap_err().to_string();
            assert!(e.contains("PORT/PROTO"), "{bad}: {e}");
        }
    }
}
