//! Filtered container listings for the APIs: which containers a listing shows under
//! Docker's filters (status, names, labels, ancestors, networks, health, ports, volumes,
//! before/since). The matching rules listings share are in [`filters`](crate::filters);
//! volumes' in [`volumes_query`](crate::volumes_query).

use pier_api::containers::{ContainerInspect, ContainerStatus};
use pier_api::docker::container::{self as shape, ContainerFacts};
use pier_api::docker::normalize_ref;
use pier_api::volumes::MountKind;
use pier_api::ErrorKind;

use crate::context::RequestContext;
use crate::filters::{self, Filters};
use crate::views::ImageConfigs;
use crate::{Engine, EngineError, EngineResult};

/// The filter keys of a container listing.
pub const CONTAINER_FILTERS: &[&str] = &[
    "status", "name", "id", "label", "ancestor", "network", "exited", "before", "since", "health",
    "volume", "publish", "expose", "is-task",
];

/// A container listing: stopped ones too or not, at most `limit`, and the filters.
#[derive(Debug, Default)]
pub struct ContainerQuery {
    pub all: bool,
    pub limit: Option<i64>,
    pub filters: Filters,
}

/// Does this container use the volume (by name) or have a mount at this path?
pub fn uses_volume(c: &ContainerInspect, volume: &str) -> bool {
    c.mounts.iter().any(|m| {
        (m.kind == MountKind::Volume && m.source.as_deref() == Some(volume)) || m.target == volume
    })
}

/// Does a port filter value (`80` or `80/udp`) name one of these ports?
fn port_matches<'a>(v: &str, mut ports: impl Iterator<Item = (u16, &'a str)>) -> bool {
    let (port, proto) = v.split_once('/').unwrap_or((v, "tcp"));
    ports.any(|(p, pr)| p.to_string() == port && pr == proto)
}

/// Whether a container passes the filters that need no other record.
pub fn container_matches(
    f: &Filters,
    c: &ContainerInspect,
    facts: &ContainerFacts,
    ancestors: &[String],
) -> bool {
    let health = shape::health(c, facts);
    let any = |key: &str, test: &dyn Fn(&str) -> bool| filters::any(f, key, test);
    any("status", &|v| c.state.status.as_str() == v)
        && any("name", &|v| filters::name_matches(&c.name, v))
        && any("id", &|v| c.id.starts_with(v))
        && filters::labels(f, &c.config.labels)
        && any("ancestor", &|v| {
            c.image == v
                || normalize_ref(&c.image) == normalize_ref(v)
                || ancestors.contains(&c.image_id.to_string())
        })
        && any("network", &|v| {
            c.networks
                .iter()
                .any(|(n, ep)| n == v || ep.network_id.starts_with(v))
                || shape::network_mode(c) == v
        })
        && any("exited", &|v| {
            c.state.status == ContainerStatus::Exited
                && c.state.exit_code.map(|e| e.to_string()).as_deref() == Some(v)
        })
        && any("health", &|v| match &health {
            Some(h) => h.status.as_str() == v,
            None => v == "none",
        })
        && any("publish", &|v| {
            port_matches(v, c.ports.iter().map(|p| (p.host_port, p.proto.as_str())))
        })
        && any("expose", &|v| {
            port_matches(
                v,
                c.ports.iter().map(|p| (p.container_port, p.proto.as_str())),
            )
        })
        && any("volume", &|v| uses_volume(c, v))
        && any("is-task", &|v| v == "false")
}

/// Whether a container goes in a prune: stopped (created or exited), with the labels
/// asked for, and created before `until` (Unix seconds) when given.
pub fn prunable(f: &Filters, c: &ContainerInspect, until: Option<f64>) -> bool {
    matches!(
        c.state.status,
        ContainerStatus::Created | ContainerStatus::Exited
    ) && filters::labels(f, &c.config.labels)
        && until.is_none_or(|u| (pier_api::docker::unix(Some(&c.created)) as f64) < u)
}

impl Engine {
    /// Removes the containers a prune takes ([`prunable`]); returns their IDs and the
    /// bytes their writable layers held. One that cannot be removed is left.
    pub async fn prune_containers(
        &self,
        ctx: &RequestContext,
        f: &Filters,
        until: Option<f64>,
    ) -> EngineResult<(Vec<String>, u64)> {
        let mut deleted = Vec::new();
        let mut reclaimed = 0u64;
        for c in self.instances.inspect_all(ctx)? {
            if !prunable(f, &c, until) {
                continue;
            }
            reclaimed += self.instances.size_rw(&c);
            if self
                .instances
                .remove(ctx, &c.id, false, false)
                .await
                .is_ok()
            {
                deleted.push(c.id.clone());
            }
        }
        Ok((deleted, reclaimed))
    }

    /// The containers of a listing, newest first, with their facts.
    pub fn list_containers(
        &self,
        ctx: &RequestContext,
        q: &ContainerQuery,
    ) -> EngineResult<Vec<(ContainerInspect, ContainerFacts)>> {
        let mut cs = self.instances.inspect_all(ctx)?;
        cs.sort_by(|a, b| b.created.cmp(&a.created).then(b.id.cmp(&a.id)));
        let created_of = |key: &str| -> EngineResult<Option<String>> {
            let Some(r) = q.filters.get(key).and_then(|v| v.first()) else {
                return Ok(None);
            };
            match self.instances.get(ctx, r) {
                Ok(c) => Ok(Some(c.created)),
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    Err(EngineError::NotFound(format!("No such container: {r}")))
                }
                Err(e) => Err(e),
            }
        };
        let (before, since) = (created_of("before")?, created_of("since")?);
        let ancestors: Vec<String> = q
            .filters
            .get("ancestor")
            .map(|v| {
                v.iter()
                    .filter_map(|r| self.images.resolve(ctx.project(), r).ok())
                    .map(|i| i.id.to_string())
                    .collect()
            })
            .unwrap_or_default();
        let mut images = ImageConfigs::default();
        let mut out = Vec::new();
        for c in cs {
            let running = matches!(
                c.state.status,
                ContainerStatus::Running | ContainerStatus::Paused | ContainerStatus::Restarting
            );
            if (!q.all && !running)
                || before.as_ref().is_some_and(|b| c.created >= *b)
                || since.as_ref().is_some_and(|s| c.created <= *s)
            {
                continue;
            }
            let facts = self.container_facts(&c, &mut images);
            if !container_matches(&q.filters, &c, &facts, &ancestors) {
                continue;
            }
            out.push((c, facts));
            if q.limit.is_some_and(|l| l > 0 && out.len() as i64 >= l) {
                break;
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pier_api::volumes::MountSpec;

    fn container() -> ContainerInspect {
        let mut c = ContainerInspect {
            id: "abcdef0123456789".into(),
            name: "app_web_1".into(),
            project: pier_api::ProjectName::default(),
            image: "bb".into(),
            image_id: format!("sha256:{}", "0".repeat(64)).parse().unwrap(),
            created: String::new(),
            command: vec!["true".into()],
            config: Default::default(),
            state: Default::default(),
            log_path: String::new(),
            networks: Default::default(),
            ports: Vec::new(),
            mounts: Vec::new(),
            vm: None,
        };
        c.config.labels.insert("tier".into(), "web".into());
        c.mounts.push(MountSpec {
            kind: MountKind::Volume,
            source: Some("data".into()),
            target: "/data".into(),
            ..Default::default()
        });
        c
    }

    #[test]
    fn containers_pass_docker_filters() {
        let c = container();
        let facts = ContainerFacts::default();
        let ok = |s: &str| container_matches(&filters::parse(s).unwrap(), &c, &facts, &[]);
        assert!(ok("{}"));
        assert!(ok(r#"{"name":["web"],"label":["tier=web"],"id":["abc"]}"#));
        assert!(!ok(r#"{"label":["tier=db"]}"#));
        assert!(ok(r#"{"ancestor":["bb"]}"#));
        let ancestors = ["sha256:1".to_string()];
        let mut c2 = c.clone();
        c2.image_id = format!("sha256:{}", "1".repeat(64)).parse().unwrap();
        let f = filters::parse(r#"{"ancestor":["other"]}"#).unwrap();
        assert!(!container_matches(&f, &c2, &facts, &ancestors));
        let ancestors = [c2.image_id.to_string()];
        assert!(
            container_matches(&f, &c2, &facts, &ancestors),
            "by the resolved image"
        );
        assert!(!ok(r#"{"ancestor":["alpine"]}"#));
        assert!(ok(r#"{"volume":["data"]}"#) && ok(r#"{"volume":["/data"]}"#));
        assert!(!ok(r#"{"volume":["other"]}"#));
        assert!(ok(r#"{"health":["none"]}"#), "no check: health none");
        assert!(ok(r#"{"status":["created"]}"#));
        assert!(!ok(r#"{"status":["running"]}"#));
        assert!(!ok(r#"{"is-task":["true"]}"#));
        assert!(ok(r#"{"network":["bridge"]}"#), "the default network mode");
    }

    #[test]
    fn prunes_take_stopped_containers_with_the_labels_before_until() {
        let mut c = container();
        c.created = "1970-01-01T00:01:40Z".into();
        let f = |s: &str| filters::parse(s).unwrap();
        assert!(prunable(&f("{}"), &c, None), "a created container goes");
        assert!(prunable(&f(r#"{"label":["tier=web"]}"#), &c, Some(101.0)));
        assert!(!prunable(&f(r#"{"label":["tier=db"]}"#), &c, None));
        assert!(!prunable(&f("{}"), &c, Some(100.0)), "until is exclusive");
        c.state.status = ContainerStatus::Running;
        assert!(!prunable(&f("{}"), &c, None), "a running container stays");
    }
}
