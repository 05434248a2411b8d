//! Network values as users write them: IPv4 and IPv6 networks in CIDR form, IPv4 addresses and
//! MAC addresses. Each parses once, at the edge (the CLI, a request body), refuses bad
//! input with a message that shows a good value, and travels as a plain string.
//!
//! A CIDR with host bits set (`10.1.2.3/16`) is taken as the network holding that address
//! (`10.1.0.0/16`), as the engine has always taken it.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::ops::Deref;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// An IPv4 network in CIDR form, its address masked to the prefix (`10.1.0.0/24`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Ipv4Net {
    addr: Ipv4Addr,
    prefix: u8,
}

impl Ipv4Net {
    /// The network holding `addr`, its host bits cleared; `None` past /32.
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

impl TryFrom<String> for Ipv4Net {
    type Error = BadCidr;
    fn try_from(s: String) -> Result<Self, BadCidr> {
        s.parse()
    }
}

impl From<Ipv4Net> for String {
    fn from(n: Ipv4Net) -> String {
        n.to_string()
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Why an IPv4 address was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an IPv4 address (such as 10.0.0.5)")]
pub struct BadIpv4(pub String);

/// An IPv4 address given as a string (`--ip`, `--gateway`, a body's `ip`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Ipv4Address(Ipv4Addr);

impl Ipv4Address {
    pub fn addr(self) -> Ipv4Addr {
        self.0
    }
}

impl Deref for Ipv4Address {
    type Target = Ipv4Addr;
    fn deref(&self) -> &Ipv4Addr {
        &self.0
    }
}

impl From<Ipv4Addr> for Ipv4Address {
    fn from(a: Ipv4Addr) -> Self {
        Ipv4Address(a)
    }
}

impl From<Ipv4Address> for Ipv4Addr {
    fn from(a: Ipv4Address) -> Self {
        a.0
    }
}

impl FromStr for Ipv4Address {
    type Err = BadIpv4;
    fn from_str(s: &str) -> Result<Self, BadIpv4> {
        s.parse()
            .map(Ipv4Address)
            .map_err(|_| BadIpv4(s.to_string()))
    }
}

impl TryFrom<String> for Ipv4Address {
    type Error = BadIpv4;
    fn try_from(s: String) -> Result<Self, BadIpv4> {
        s.parse()
    }
}

impl From<Ipv4Address> for String {
    fn from(a: Ipv4Address) -> String {
        a.to_string()
    }
}

impl fmt::Display for Ipv4Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl PartialEq<Ipv4Addr> for Ipv4Address {
    fn eq(&self, other: &Ipv4Addr) -> bool {
        self.0 == *other
    }
}

/// Why a MAC address was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a unicast MAC address such as 02:42:ac:11:00:02")]
pub struct BadMac(pub String);

/// A unicast Ethernet address (`02:42:ac:11:00:02`): six pairs of hex digits split by
/// ':', the multicast bit clear (no interface may use a multicast address). Written in
/// lowercase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MacAddress([u8; 6]);

impl MacAddress {
    /// `None` for a multicast address.
    pub fn new(octets: [u8; 6]) -> Option<Self> {
        (octets[0] & 1 == 0).then_some(MacAddress(octets))
    }

    /// The address Docker derives from an IPv4 address (02:42 and the address), unique
    /// wherever the address is.
    pub fn for_ipv4(ip: Ipv4Addr) -> Self {
        let o = ip.octets();
        MacAddress([0x02, 0x42, o[0], o[1], o[2], o[3]])
    }

    pub fn octets(self) -> [u8; 6] {
        self.0
    }
}

impl FromStr for MacAddress {
    type Err = BadMac;
    fn from_str(s: &str) -> Result<Self, BadMac> {
        let bad = || BadMac(s.to_string());
        let parts: Vec<&str> = s.split(':').collect();
        if parts.len() != 6 {
            return Err(bad());
        }
        let mut mac = [0u8; 6];
        for (i, p) in parts.iter().enumerate() {
            if p.len() != 2 || !p.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad());
            }
            mac[i] = u8::from_str_radix(p, 16).map_err(|_| bad())?;
        }
        MacAddress::new(mac).ok_or_else(bad)
    }
}

impl TryFrom<String> for MacAddress {
    type Error = BadMac;
    fn try_from(s: String) -> Result<Self, BadMac> {
        s.parse()
    }
}

impl From<MacAddress> for String {
    fn from(m: MacAddress) -> String {
        m.to_string()
    }
}

impl fmt::Display for MacAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

crate::string_schema!(
    Ipv4Net,
    "An IPv4 network in CIDR form, such as 10.10.0.0/24."
);
crate::string_schema!(Ipv4Address, "An IPv4 address, such as 10.0.0.5.");
crate::string_schema!(
    MacAddress,
    "A unicast MAC address, such as 02:42:ac:11:00:02."
);

/// An IPv6 network in CIDR form, its address masked to the prefix (`fd00:1::/64`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Ipv6Net {
    addr: Ipv6Addr,
    prefix: u8,
}

fn mask6(prefix: u8) -> u128 {
    if prefix == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(prefix))
    }
}

impl Ipv6Net {
    /// The network holding `addr`, its host bits cleared; `None` past /128.
    pub fn new(addr: Ipv6Addr, prefix: u8) -> Option<Self> {
        (prefix <= 128).then(|| Ipv6Net {
            addr: Ipv6Addr::from(u128::from(addr) & mask6(prefix)),
            prefix,
        })
    }

    pub fn network(&self) -> Ipv6Addr {
        self.addr
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// The network's last address.
    pub fn last(&self) -> Ipv6Addr {
        Ipv6Addr::from(u128::from(self.addr) | !mask6(self.prefix))
    }

    pub fn contains(&self, ip: Ipv6Addr) -> bool {
        u128::from(ip) & mask6(self.prefix) == u128::from(self.addr)
    }

    /// Whether `other` is inside this network.
    pub fn covers(&self, other: &Ipv6Net) -> bool {
        other.prefix >= self.prefix && self.contains(other.addr)
    }

    pub fn overlaps(&self, other: &Ipv6Net) -> bool {
        self.covers(other) || other.covers(self)
    }

    /// The `n`th address of the network (0 is the network address itself).
    pub fn nth(&self, n: u128) -> Option<Ipv6Addr> {
        let host_bits = 128 - u32::from(self.prefix);
        let fits = host_bits >= 128 || n < (1u128 << host_bits);
        fits.then(|| Ipv6Addr::from(u128::from(self.addr) + n))
    }
}

/// Why an IPv6 CIDR was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an IPv6 network in CIDR form such as fd00:1::/64")]
pub struct BadCidr6(pub String);

impl FromStr for Ipv6Net {
    type Err = BadCidr6;
    fn from_str(s: &str) -> Result<Self, BadCidr6> {
        let bad = || BadCidr6(s.to_string());
        let (a, p) = s.split_once('/').ok_or_else(bad)?;
        let addr: Ipv6Addr = a.parse().map_err(|_| bad())?;
        let prefix: u8 = p.parse().map_err(|_| bad())?;
        Ipv6Net::new(addr, prefix).ok_or_else(bad)
    }
}

impl TryFrom<String> for Ipv6Net {
    type Error = BadCidr6;
    fn try_from(s: String) -> Result<Self, BadCidr6> {
        s.parse()
    }
}

impl From<Ipv6Net> for String {
    fn from(n: Ipv6Net) -> String {
        n.to_string()
    }
}

impl fmt::Display for Ipv6Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_networks_parse_mask_and_compare() {
        let n: Ipv6Net = "2001:389::5/64".parse().unwrap();
        assert_eq!(n.to_string(), "2001:389::/64");
        assert!(n.contains("2001:389::f00d".parse().unwrap()));
        assert!(!n.contains("2001:38a::1".parse().unwrap()));
        let r: Ipv6Net = "2001:389::/96".parse().unwrap();
        assert!(n.covers(&r) && !r.covers(&n) && r.overlaps(&n));
        assert_eq!(n.nth(1).unwrap().to_string(), "2001:389::1");
        assert_eq!(r.last().to_string(), "2001:389::ffff:ffff");
        assert!("10.0.0.0/8".parse::<Ipv6Net>().is_err());
        assert!("::/129".parse::<Ipv6Net>().is_err());
    }

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn cidrs_parse_and_mask_host_bits() {
        assert_eq!(net("10.1.2.3/16").to_string(), "10.1.0.0/16");
        assert_eq!(
            net("10.1.2.3/16").broadcast(),
            Ipv4Addr::new(10, 1, 255, 255)
        );
        assert_eq!(net("0.0.0.0/0").to_string(), "0.0.0.0/0");
        assert_eq!(
            net("10.0.0.0/30").first_host(),
            Some(Ipv4Addr::new(10, 0, 0, 1))
        );
        assert_eq!(net("10.0.0.0/31").first_host(), None);
        for bad in [
            "10.0.0.0",
            "10.0.0.0/33",
            "10.0.0/8",
            "x/8",
            "10.0.0.0/-1",
            "10.0.0.0/",
            " 10.0.0.0/8",
        ] {
            let e = bad.parse::<Ipv4Net>().unwrap_err();
            assert_eq!(
                e.to_string(),
                format!("{bad:?} is not an IPv4 network in CIDR form such as 10.10.0.0/24")
            );
        }
    }

    #[test]
    fn cidrs_overlap_and_cover() {
        assert!(net("10.0.0.0/8").overlaps(&net("10.5.0.0/16")));
        assert!(net("10.5.0.0/16").overlaps(&net("10.0.0.0/8")));
        assert!(!net("10.5.0.0/16").overlaps(&net("10.6.0.0/16")));
        assert!(net("10.5.0.0/24").covers(&net("10.5.0.128/25")));
        assert!(!net("10.5.0.128/25").covers(&net("10.5.0.0/24")));
        assert!(net("10.5.0.0/24").contains(Ipv4Addr::new(10, 5, 0, 77)));
        assert_eq!(net("10.5.0.0/24").nth(256), None);
    }

    #[test]
    fn cidrs_travel_as_strings() {
        let n = net("10.20.0.0/24");
        let json = serde_json::to_string(&n).unwrap();
        assert_eq!(json, "\"10.20.0.0/24\"");
        assert_eq!(serde_json::from_str::<Ipv4Net>(&json).unwrap(), n);
        // A stored value with host bits comes back masked.
        assert_eq!(
            serde_json::from_str::<Ipv4Net>("\"10.20.0.9/24\"").unwrap(),
            n
        );
        let e = serde_json::from_str::<Ipv4Net>("\"10.20.0.0\"").unwrap_err();
        assert!(
            e.to_string().contains("not an IPv4 network in CIDR form"),
            "{e}"
        );
    }

    #[test]
    fn ipv4_addresses() {
        let a: Ipv4Address = "10.31.0.200".parse().unwrap();
        assert_eq!(a, Ipv4Addr::new(10, 31, 0, 200));
        assert!(a.is_private());
        for bad in [
            "10.31.0",
            "10.31.0.256",
            "010.0.0.1",
            "::1",
            "",
            "10.0.0.1/24",
        ] {
            let e = bad.parse::<Ipv4Address>().unwrap_err();
            assert_eq!(
                e.to_string(),
                format!("{bad:?} is not an IPv4 address (such as 10.0.0.5)")
            );
        }
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(json, "\"10.31.0.200\"");
        assert_eq!(serde_json::from_str::<Ipv4Address>(&json).unwrap(), a);
        assert!(serde_json::from_str::<Ipv4Address>("\"gw\"").is_err());
    }

    #[test]
    fn mac_addresses() {
        let m = MacAddress::for_ipv4(Ipv4Addr::new(172, 17, 0, 2));
        assert_eq!(m.to_string(), "02:42:ac:11:00:02");
        assert_eq!("02:42:ac:11:00:02".parse::<MacAddress>(), Ok(m));
        // Read in either case, written in lowercase.
        let upper: MacAddress = "02:42:AC:11:00:02".parse().unwrap();
        assert_eq!(upper, m);
        for bad in [
            "01:00:5e:00:00:01", // multicast
            "02:42:ac:11:00",
            "02:42:ac:11:00:zz",
            "02:42:ac:11:00:2",
            "02:42:ac:11:00:+2",
            "02-42-ac-11-00-02",
            "",
        ] {
            let e = bad.parse::<MacAddress>().unwrap_err();
            assert_eq!(
                e.to_string(),
                format!("{bad:?} is not a unicast MAC address such as 02:42:ac:11:00:02")
            );
        }
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(json, "\"02:42:ac:11:00:02\"");
        assert_eq!(serde_json::from_str::<MacAddress>(&json).unwrap(), m);
        assert!(serde_json::from_str::<MacAddress>("\"01:00:5e:00:00:01\"").is_err());
    }
}
