//! IPv4 subnets and address allocation (IPAM): parsing and validating CIDRs, overlap
//! checks against other networks and the host's routes, and picking the next free
//! address of a range. The leases themselves live in the daemon's store.

use std::collections::HashSet;
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An IPv4 network in CIDR form, its address masked to the prefix (`10.1.0.0/24`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4Net {
    addr: Ipv4Addr,
    prefix: u8,
}

impl Ipv4Net {
    /// The network holding `addr`, its host bits cleared.
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Option<Self> {
        (prefix <= 32).then(|| Ipv4Net {
            addr: Ipv4Addr::from(u32::from(addr) & mask(prefix)),
            prefix,
        })
    }

    pub fn network(&self) -> Ipv4Addr {
        self.addr
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | !mask(self.prefix))
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.prefix) == u32::from(self.addr)
    }

    /// Whether `other` is inside this network.
    pub fn covers(&self, other: &Ipv4Net) -> bool {
        other.prefix >= self.prefix && self.contains(other.addr)
    }

    pub fn overlaps(&self, other: &Ipv4Net) -> bool {
        self.covers(other) || other.covers(self)
    }

    /// The `n`th address of the network (0 is the network address itself).
    pub fn nth(&self, n: u32) -> Option<Ipv4Addr> {
        let size = 1u64 << (32 - self.prefix);
        (u64::from(n) < size).then(|| Ipv4Addr::from(u32::from(self.addr) + n))
    }

    /// The first usable host address, customarily the gateway.
    pub fn first_host(&self) -> Option<Ipv4Addr> {
        if self.prefix >= 31 {
            return None;
        }
        self.nth(1)
    }
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    }
}

/// Why a CIDR was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an IPv4 network in CIDR form such as 10.10.0.0/24")]
pub struct BadCidr(pub String);

impl FromStr for Ipv4Net {
    type Err = BadCidr;
    fn from_str(s: &str) -> Result<Self, BadCidr> {
        let bad = || BadCidr(s.to_string());
        let (a, p) = s.split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = a.parse().map_err(|_| bad())?;
        let prefix: u8 = p.parse().map_err(|_| bad())?;
        Ipv4Net::new(addr, prefix).ok_or_else(bad)
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Serialize for Ipv4Net {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Ipv4Net {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

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

/// A MAC address derived from an IPv4 address as Docker does (02:42 and the address),
/// so that it is unique wherever the address is.
pub fn mac_for(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x02, 0x42, o[0], o[1], o[2], o[3]]
}

pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Parses `aa:bb:cc:dd:ee:ff`; refuses multicast addresses, which no interface may use.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6 {
        return None;
    }
    let mut mac = [0u8; 6];
    for (i, p) in parts.iter().enumerate() {
        if p.len() != 2 {
            return None;
        }
        mac[i] = u8::from_str_radix(p, 16).ok()?;
    }
    (mac[0] & 1 == 0).then_some(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn parses_and_masks() {
        assert_eq!(net("10.1.2.3/16").to_string(), "10.1.0.0/16");
        assert_eq!(
            net("10.1.2.3/16").broadcast(),
            Ipv4Addr::new(10, 1, 255, 255)
        );
        for bad in ["10.0.0.0", "10.0.0.0/33", "10.0.0/8", "x/8", "10.0.0.0/-1"] {
            assert!(bad.parse::<Ipv4Net>().is_err(), "{bad}");
        }
        assert_eq!(net("0.0.0.0/0").to_string(), "0.0.0.0/0");
    }

    #[test]
    fn overlaps() {
        assert!(net("10.0.0.0/8").overlaps(&net("10.5.0.0/16")));
        assert!(net("10.5.0.0/16").overlaps(&net("10.0.0.0/8")));
        assert!(!net("10.5.0.0/16").overlaps(&net("10.6.0.0/16")));
        assert!(net("10.5.0.0/24").covers(&net("10.5.0.128/25")));
        assert!(!net("10.5.0.128/25").covers(&net("10.5.0.0/24")));
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
    fn routes_from_proc() {
        let text =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                    eth0\t00000000\t0102A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                    eth0\t0002A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        let r = parse_routes(text);
        assert_eq!(r, vec![("eth0".to_string(), net("192.168.2.0/24"))]);
    }

    #[test]
    fn macs() {
        let m = mac_for(Ipv4Addr::new(172, 17, 0, 2));
        assert_eq!(format_mac(&m), "02:42:ac:11:00:02");
        assert_eq!(parse_mac("02:42:ac:11:00:02"), Some(m));
        assert_eq!(parse_mac("01:00:5e:00:00:01"), None); // multicast
        assert_eq!(parse_mac("02:42:ac:11:00"), None);
        assert_eq!(parse_mac("02:42:ac:11:00:zz"), None);
    }
}
