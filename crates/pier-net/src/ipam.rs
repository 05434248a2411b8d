//! IPv4 and IPv6 address allocation (IPAM): overlap checks against the host's routes and picking
//! the next free address of a range. The CIDR type itself is `pier_api::net::Ipv4Net`
//! (re-exported here); the leases live in the daemon's store.

use std::collections::HashSet;
use std::net::{Ipv4Addr, Ipv6Addr};

pub use pier_api::net::{BadCidr, Ipv4Net, Ipv6Net};

/// The IPv4 routes of the current network namespace (from /proc/net/route), the
/// default route left out: a new network must not overlap any of them.
pub fn host_routes() -> Vec<(String, Ipv4Net)> {
    let text = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    parse_routes(&text)
}

fn parse_routes(text: &str) -> Vec<(String, Ipv4Net)> {
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 8 {
            continue;
        }
        let hex = |s: &str| u32::from_str_radix(s, 16).ok().map(u32::from_be);
        let (Some(dest), Some(m)) = (hex(f[1]), hex(f[7])) else {
            continue;
        };
        let prefix = m.count_ones() as u8;
        if prefix == 0 {
            continue;
        }
        if let Some(n) = Ipv4Net::new(Ipv4Addr::from(dest), prefix) {
            out.push((f[0].to_string(), n));
        }
    }
    out
}

/// Picks a free address in `range` (inside `subnet`), never the network, broadcast or
/// `used` addresses, starting after `after` so that a just-released address is not
/// handed out again at once.
pub fn allocate(
    subnet: &Ipv4Net,
    range: &Ipv4Net,
    used: &HashSet<Ipv4Addr>,
    after: Option<Ipv4Addr>,
) -> Option<Ipv4Addr> {
    let lo = u32::from(range.network()).max(u32::from(subnet.network()) + 1);
    let hi = u32::from(range.broadcast()).min(u32::from(subnet.broadcast()).saturating_sub(1));
    if lo > hi {
        return None;
    }
    let size = hi - lo + 1;
    let start = match after.map(u32::from) {
        Some(a) if a >= lo && a < hi => a + 1 - lo,
        _ => 0,
    };
    (0..size)
        .map(|i| Ipv4Addr::from(lo + (start + i) % size))
        .find(|ip| !used.contains(ip))
}

/// Picks a free IPv6 address in `range` (inside `subnet`), never the subnet's own
/// address or `used` ones, starting after `after`; as [`allocate`], bounded to the
/// first 2^20 candidates of a range (a /64 is never walked whole).
pub fn allocate6(
    subnet: &Ipv6Net,
    range: &Ipv6Net,
    used: &HashSet<Ipv6Addr>,
    after: Option<Ipv6Addr>,
) -> Option<Ipv6Addr> {
    let lo = u128::from(range.network()).max(u128::from(subnet.network()) + 1);
    let hi = u128::from(range.last()).min(u128::from(subnet.last()));
    if lo > hi {
        return None;
    }
    let size = (hi - lo).saturating_add(1);
    let start = match after.map(u128::from) {
        Some(a) if a >= lo && a < hi => a + 1 - lo,
        _ => 0,
    };
    (0..size.min(1 << 20))
        .map(|i| Ipv6Addr::from(lo + (start + i) % size))
        .find(|ip| !used.contains(ip))
}

/// A MAC address derived from an IPv4 address as Docker does (02:42 and the address),
/// so that it is unique wherever the address is.
pub fn mac_for(ip: Ipv4Addr) -> [u8; 6] {
    pier_api::MacAddress::for_ipv4(ip).octets()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn allocates_in_order_skipping_used_and_wrapping() {
        let s = net("10.0.0.0/29"); // .1 .. .6 usable
        let mut used: HashSet<Ipv4Addr> = [Ipv4Addr::new(10, 0, 0, 1)].into();
        let a = allocate(&s, &s, &used, None).unwrap();
        assert_eq!(a, Ipv4Addr::new(10, 0, 0, 2));
        used.insert(a);
        let b = allocate(&s, &s, &used, Some(a)).unwrap();
        assert_eq!(b, Ipv4Addr::new(10, 0, 0, 3));
        // After the last one, wrap around to the lowest free.
        let c = allocate(&s, &s, &used, Some(Ipv4Addr::new(10, 0, 0, 6))).unwrap();
        assert_eq!(c, Ipv4Addr::new(10, 0, 0, 3));
        for i in 3..=6 {
            used.insert(Ipv4Addr::new(10, 0, 0, i));
        }
        assert_eq!(allocate(&s, &s, &used, None), None);
        // A range narrows the choice.
        let used = HashSet::new();
        let r = net("10.0.0.4/30");
        assert_eq!(
            allocate(&s, &r, &used, None),
            Some(Ipv4Addr::new(10, 0, 0, 4))
        );
    }

    #[test]
    fn allocates_ipv6_in_its_range_skipping_used() {
        let s: Ipv6Net = "2001:389::/64".parse().unwrap();
        let r: Ipv6Net = "2001:389::/96".parse().unwrap();
        let gw: Ipv6Addr = "2001:389::1".parse().unwrap();
        let mut used: HashSet<Ipv6Addr> = [gw].into();
        let a = allocate6(&s, &r, &used, None).unwrap();
        assert_eq!(a.to_string(), "2001:389::2");
        used.insert(a);
        let b = allocate6(&s, &r, &used, Some(a)).unwrap();
        assert_eq!(b.to_string(), "2001:389::3");
        let tiny: Ipv6Net = "2001:389::/127".parse().unwrap();
        assert_eq!(allocate6(&tiny, &tiny, &used, None), None);
    }

    #[test]
    fn routes_from_proc() {
        let text =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                    eth0\t00000000\t0102A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                    eth0\t0002A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        let r = parse_routes(text);
        assert_eq!(r, vec![("eth0".to_string(), net("192.168.2.0/24"))]);
    }
}
