//! The network reconciler: at daemon start it makes the host match the store. Every
//! recorded network gets its bridge, sysctls and DNS server; what no running container
//! owns goes (leases, host-port reservations, veths, bridges of removed networks,
//! namespace files); reservations of running containers that an older Pier did not
//! index are added; then the firewall is rebuilt whole. Idempotent.
//!
//! While the daemon runs, [`NetworkReconciler`] puts back what drifted (a bridge or a
//! DNS server gone, the firewall table flushed by hand) after every change of the
//! networks' records and periodically; it takes nothing away (that is for the start,
//! when no container is being set up).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use pier_api::containers::{ContainerInspect, ContainerStatus};
use pier_api::networks::{NetworkCreate, NetworkInspect, PortBinding};
use pier_api::ProjectName;
use pier_net::names::HostNames;
use pier_store::{Batch, StoreExt, Table};

use super::alloc::{port_key, PortHolder, PORT_PREFIX};
use super::{net_err, ports_key, Networks, DEFAULT_NETWORK};
use crate::error::EngineResult;
use crate::reconcile::{BoxFuture, Reconciler};
use crate::DEFAULT_ROOT;

/// Realises every recorded network while the daemon runs; see the module doc.
pub struct NetworkReconciler {
    pub networks: Arc<Networks>,
    /// How long it waits without a change before another pass.
    pub period: Duration,
}

impl Reconciler for NetworkReconciler {
    fn name(&self) -> &'static str {
        "networks"
    }
    fn watches(&self) -> Vec<(Table, String)> {
        vec![(Table::Networks, String::new())]
    }
    fn period(&self) -> Duration {
        self.period
    }
    fn reconcile(&self) -> BoxFuture<'_, EngineResult<()>> {
        Box::pin(async move { self.networks.realize_all().await.map(drop) })
    }
    /// `Engine::start` has just reconciled every project's networks.
    fn pass_at_start(&self) -> bool {
        false
    }
}

/// The address a running container's published ports go to: its first network's.
fn first_ip(c: &ContainerInspect) -> Option<Ipv4Addr> {
    let (name, _) = Networks::ordered(c).into_iter().next()?;
    Some(c.networks.get(&name)?.ip_address?.addr())
}

/// Its IPv6 address there, on a dual-stack network.
fn first_ip6(c: &ContainerInspect) -> Option<std::net::Ipv6Addr> {
    let (name, _) = Networks::ordered(c).into_iter().next()?;
    c.networks.get(&name)?.ip6_address
}

impl Networks {
    /// At daemon start, after containers are restored: makes the default network if
    /// missing, every network's bridge and DNS server, and removes what no running
    /// container owns (leases, port reservations, veths, namespace files); then
    /// rebuilds the firewall.
    pub async fn reconcile(&self, project: &ProjectName) -> EngineResult<()> {
        if !self.all(project)?.iter().any(|n| n.name == DEFAULT_NETWORK) {
            let req = NetworkCreate {
                name: DEFAULT_NETWORK.into(),
                ..Default::default()
            };
            self.create_inner(project, req, true).await?;
        }
        let nets = self.db.list_json::<NetworkInspect>(Table::Networks, "")?;
        let default_daemon = HostNames::for_root(Path::new(DEFAULT_ROOT), true);
        for (_, n) in &nets {
            if self.names != default_daemon && default_daemon.owns_bridge(&n.bridge) {
                tracing::warn!(network = %n.name, bridge = %n.bridge, "this network's bridge has a name of the default daemon's (made by an earlier Pier): a default daemon beside this one would share it; recreate the network");
            }
            if let Err(e) = self.realize(n).await {
                tracing::warn!(network = %n.name, error = %e.message(), "cannot set a network up");
            }
        }
        let running: HashMap<String, ContainerInspect> = self
            .containers()?
            .into_iter()
            .filter(|c| {
                matches!(
                    c.state.status,
                    ContainerStatus::Running | ContainerStatus::Paused
                )
            })
            .map(|c| (c.id.clone(), c))
            .collect();
        let kept_ifs = self.reconcile_store(&running)?;
        self.remove_strays(&nets, &kept_ifs, &running).await?;
        for c in running.values() {
            self.index_names(c, &c.networks);
        }
        self.firewall()
    }

    /// Makes every recorded network's bridge, sysctls and DNS server, and rebuilds the
    /// firewall unless what it would apply is already in place (the rules last applied,
    /// by a create, remove or attach, are those the store asks for, the table is there,
    /// and no bridge was missing); returns how many networks it saw. Alone against
    /// creates and removes (see `host_pass`). A network that cannot be set up does not
    /// stop the others; the first such error is returned after the pass.
    pub async fn realize_all(&self) -> EngineResult<usize> {
        let _pass = self.host_pass.write().await;
        let nets = self.db.list_json::<NetworkInspect>(Table::Networks, "")?;
        let before = self.bridge_indexes();
        let mut first = None;
        for (_, n) in &nets {
            if let Err(e) = self.realize(n).await {
                tracing::warn!(network = %n.name, error = %e.message(), "cannot set a network up");
                first.get_or_insert(e);
            }
        }
        // A bridge made again (deleted by hand) has a new index.
        let after = self.bridge_indexes();
        let bridge_made = nets
            .iter()
            .any(|(_, n)| before.get(&n.bridge) != after.get(&n.bridge));
        if !self.rebuild_firewall(bridge_made)? {
            tracing::trace!("the firewall is as the networks ask: left as it is");
        }
        first.map_or(Ok(nets.len()), Err)
    }

    /// Removes the leases and port reservations of containers that are not running,
    /// and indexes the ports of running ones that have none; the host ends of the
    /// veths that stay.
    fn reconcile_store(
        &self,
        running: &HashMap<String, ContainerInspect>,
    ) -> EngineResult<HashSet<String>> {
        let mut b = Batch::new();
        let mut kept_ifs = HashSet::new();
        for (k, l) in self.leases()? {
            if running.contains_key(&l.container) {
                kept_ifs.insert(l.host_ifname.clone());
            } else {
                b.delete(Table::Leases, k);
            }
        }
        for (k, _) in self.db.list(Table::Meta, "ports/")? {
            if !running.contains_key(&k["ports/".len()..]) {
                b.delete(Table::Meta, k);
            }
        }
        // Port reservations as they should be: those of running containers, from
        // their records (or the durable copy a crash kept).
        let mut want: BTreeMap<String, Vec<PortHolder>> = BTreeMap::new();
        for c in running.values() {
            let ports = match self
                .db
                .get_json::<Vec<PortBinding>>(Table::Meta, &ports_key(&c.id))?
            {
                Some(p) if c.ports.is_empty() => p,
                _ => c.ports.clone(),
            };
            for p in ports {
                let proto = if p.proto == "udp" {
                    pier_net::nft::Proto::Udp
                } else {
                    pier_net::nft::Proto::Tcp
                };
                want.entry(port_key(proto, p.host_port))
                    .or_default()
                    .push(PortHolder {
                        container: c.id.clone(),
                        name: c.name.clone(),
                        host_ip: p.host_ip.parse().ok(),
                        container_ip: first_ip(c),
                        container_ip6: first_ip6(c),
                        container_port: p.container_port,
                    });
            }
        }
        for holders in want.values_mut() {
            holders.sort_by(|a, b| {
                (&a.container, a.container_port).cmp(&(&b.container, b.container_port))
            });
        }
        let have: BTreeMap<String, Vec<PortHolder>> = self
            .db
            .list_json::<Vec<PortHolder>>(Table::Meta, PORT_PREFIX)?
            .into_iter()
            .collect();
        for k in have.keys() {
            if !want.contains_key(k) {
                b.delete(Table::Meta, k.clone());
            }
        }
        for (k, holders) in &want {
            if have.get(k) != Some(holders) {
                b.put_json(Table::Meta, k.clone(), holders);
            }
        }
        // Unconditional: this runs at daemon start, before any request is served.
        if !b.is_empty() {
            b.commit(self.db.as_ref())?;
        }
        Ok(kept_ifs)
    }

    /// Veths, bridges and VXLAN links of ours that nothing owns, and namespace files of
    /// containers that are not running.
    async fn remove_strays(
        &self,
        nets: &[(String, NetworkInspect)],
        kept_ifs: &HashSet<String>,
        running: &HashMap<String, ContainerInspect>,
    ) -> EngineResult<()> {
        let bridges: HashSet<&str> = nets.iter().map(|(_, n)| n.bridge.as_str()).collect();
        let vxlans: HashSet<String> = nets.iter().map(|(_, n)| self.names.vxlan(&n.id)).collect();
        for l in self.host.links().await.map_err(net_err)? {
            if self.names.owns_vxlan(&l.name) && !vxlans.contains(&l.name) {
                tracing::info!(link = %l.name, "removing the VXLAN link of a network that is gone");
                let _ = self.host.delete_link(&l.name).await;
            }
            if self.names.owns_veth(&l.name) && !kept_ifs.contains(&l.name) {
                tracing::info!(link = %l.name, "removing a veth no container owns");
                let _ = self.host.delete_link(&l.name).await;
            }
            if self.names.owns_bridge(&l.name) && !bridges.contains(l.name.as_str()) {
                tracing::info!(link = %l.name, "removing the bridge of a network that is gone");
                let _ = self.host.delete_link(&l.name).await;
            }
        }
        for path in self.host.netns_files(&self.netns_dir) {
            let id = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if !running.contains_key(&id) {
                self.host.remove_netns(&path).await;
            }
        }
        Ok(())
    }
}
