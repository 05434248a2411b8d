//! A container's link-local addresses on a network (Docker's `--link-local-ip`,
//! `IPAMConfig.LinkLocalIPs`): added to its interface there at each plug, beside the
//! address the network gave it.

use std::net::Ipv4Addr;

use pier_api::containers::ContainerInspect;
use pier_api::networks::Endpoint;

use super::{net_err, Networks};
use crate::error::EngineResult;

impl Networks {
    /// Adds the link-local addresses of endpoint `ep` (plugged: it has its interface)
    /// to that interface in `c`'s namespace.
    pub async fn add_link_local(&self, c: &ContainerInspect, ep: &Endpoint) -> EngineResult<()> {
        let Some(ifname) = ep.interface.as_deref() else {
            return Ok(());
        };
        let addrs: Vec<(Ipv4Addr, u8)> = ep
            .options
            .link_local_ips
            .iter()
            .filter_map(|ip| ip.parse().ok())
            .map(|ip| (ip, 16))
            .collect();
        if addrs.is_empty() {
            return Ok(());
        }
        let ns = self.netns_path(&c.id);
        self.host
            .add_addresses(&ns, ifname, addrs)
            .await
            .map_err(net_err)
    }
}
