//! Network operations the APIs share beyond the network service's own: which networks
//! containers use, filtered listings (Docker's `name`, `id`, `label`, `driver`, `type`,
//! `scope`, `dangling`) and prune decisions. They call the public methods of
//! [`Networks`](crate::networks::Networks) and [`Instances`](crate::instances::Instances).

use std::collections::{BTreeMap, HashSet};

use pier_api::networks::NetworkInspect;

use crate::filters::{self, Filters};
use crate::networks::DEFAULT_NETWORK;
use crate::{Engine, EngineResult, RequestContext};

/// The filter keys of a network listing.
pub const NETWORK_FILTERS: &[&str] =
    &["name", "id", "label", "driver", "type", "scope", "dangling"];

/// A network as a listing filters it: a record, or one of Docker's predefined modes.
#[derive(Debug, Clone, Copy)]
pub struct NetworkFacts<'a> {
    pub name: &'a str,
    pub id: &'a str,
    pub driver: &'a str,
    pub labels: &'a BTreeMap<String, String>,
    /// The default bridge and the predefined modes are built in.
    pub builtin: bool,
    /// Whether a container is on it.
    pub used: bool,
}

/// Whether a network passes a listing's filters.
pub fn network_matches(f: &Filters, n: NetworkFacts<'_>) -> bool {
    let any = |key: &str, test: &dyn Fn(&str) -> bool| filters::any(f, key, test);
    any("name", &|x| n.name.contains(x))
        && any("id", &|x| n.id.starts_with(x))
        && filters::labels(f, n.labels)
        && any("driver", &|x| n.driver == x)
        && any("type", &|x| {
            (x == "builtin") == n.builtin && (x == "builtin" || x == "custom")
        })
        && any("scope", &|x| x == "local")
        && any("dangling", &|x| {
            let dangling = !n.builtin && !n.used;
            (x == "true" || x == "1") == dangling
        })
}

/// Whether a prune removes the network: not the default, unused, with the labels asked
/// for, and created before `until` (Unix seconds) when given.
pub fn network_prunable(f: &Filters, n: &NetworkInspect, used: bool, until: Option<f64>) -> bool {
    n.name != DEFAULT_NETWORK
        && !used
        && filters::labels(f, &n.labels)
        && until.is_none_or(|u| (pier_api::docker::unix(Some(&n.created)) as f64) < u)
}

impl Engine {
    /// The IDs of the networks some container of the project is on.
    pub fn networks_in_use(&self, ctx: &RequestContext) -> EngineResult<HashSet<String>> {
        Ok(self
            .instances
            .all(ctx.project())?
            .iter()
            .flat_map(|c| c.networks.values().map(|e| e.network_id.clone()))
            .collect())
    }

    /// Removes the networks a prune takes ([`network_prunable`]); returns them. One that
    /// cannot be removed is left.
    pub async fn prune_networks(
        &self,
        ctx: &RequestContext,
        f: &Filters,
        until: Option<f64>,
    ) -> EngineResult<Vec<NetworkInspect>> {
        let used = self.networks_in_use(ctx)?;
        let mut deleted = Vec::new();
        for n in self.networks.list(ctx)? {
            if !network_prunable(f, &n, used.contains(&n.id), until) {
                continue;
            }
            if self.networks.remove(ctx, &n.id).await.is_ok() {
                deleted.push(n);
            }
        }
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_pass_docker_filters() {
        let labels = BTreeMap::from([("k".to_string(), "v".to_string())]);
        let n = NetworkFacts {
            name: "app_front",
            id: "abc123",
            driver: "bridge",
            labels: &labels,
            builtin: false,
            used: false,
        };
        let ok = |s: &str, n: NetworkFacts<'_>| network_matches(&filters::parse(s).unwrap(), n);
        assert!(ok("{}", n));
        assert!(ok(
            r#"{"name":["front"],"id":["abc"],"label":["k=v"],"driver":["bridge"]}"#,
            n
        ));
        assert!(ok(r#"{"type":["custom"],"dangling":["true"]}"#, n));
        assert!(!ok(r#"{"type":["builtin"]}"#, n));
        assert!(!ok(r#"{"type":["other"]}"#, n));
        assert!(!ok(
            r#"{"dangling":["true"]}"#,
            NetworkFacts { used: true, ..n }
        ));
        assert!(!ok(
            r#"{"dangling":["true"]}"#,
            NetworkFacts { builtin: true, ..n }
        ));
        assert!(!ok(r#"{"driver":["host"]}"#, n));
    }

    #[test]
    fn prunes_leave_the_default_used_and_newer_networks() {
        let mut n: NetworkInspect = serde_json::from_value(serde_json::json!({
            "id": "i", "name": "front", "project": "default", "driver": "bridge",
            "subnet": "10.0.0.0/24", "gateway": "10.0.0.1", "bridge": "pier1", "mtu": 1500,
            "created": "1970-01-01T00:01:40Z", "ip_range": null, "internal": false,
            "mode": "nat", "options": {}, "labels": {"k": "v"},
        }))
        .unwrap();
        let f = |s: &str| filters::parse(s).unwrap();
        assert!(network_prunable(&f("{}"), &n, false, None));
        assert!(!network_prunable(&f("{}"), &n, true, None), "in use");
        assert!(!network_prunable(
            &f(r#"{"label":["k=w"]}"#),
            &n,
            false,
            None
        ));
        assert!(network_prunable(
            &f(r#"{"label":["k"]}"#),
            &n,
            false,
            Some(101.0)
        ));
        assert!(
            !network_prunable(&f("{}"), &n, false, Some(100.0)),
            "not before until"
        );
        n.name = DEFAULT_NETWORK.into();
        assert!(
            !network_prunable(&f("{}"), &n, false, None),
            "the default stays"
        );
    }
}
