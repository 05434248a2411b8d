//! Published-port specs as `-p` takes them: `[hostip:][hostport[-end]:]containerport[-end][/proto]`,
//! parsed once at the edge into [`PortSpec`], which keeps the text as given (it is what
//! `inspect` shows and what travels in a create request) beside what it means.
//!
//! A spec stands for one or more [`PortRequest`]s: `8000-8001:80-81` maps port to port,
//! `8000-8010:80` takes the first free host port of the range, and a spec without a host
//! port takes any free one. An IPv6 host address is written in brackets: `[::1]:8080:80`.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A transport protocol of a published port.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    #[default]
    Tcp,
    Udp,
}

impl Proto {
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a port spec was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid port mapping {spec:?}: {why}; use [hostip:][hostport:]containerport[/tcp|udp], e.g. 8080:80")]
pub struct PortSpecError {
    /// The spec as given.
    pub spec: String,
    /// What was wrong with it.
    pub why: String,
}

/// One port to publish, as a spec asks for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortRequest {
    pub proto: Proto,
    /// `None`: every host address.
    pub host_ip: Option<IpAddr>,
    /// Host ports to choose from; `(0, 0)` for any free port.
    pub host_range: (u16, u16),
    pub container_port: u16,
}

/// A checked `-p` spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PortSpec {
    text: String,
    proto: Proto,
    host_ip: Option<IpAddr>,
    /// `None` when no host port was given.
    host: Option<(u16, u16)>,
    container: (u16, u16),
}

impl PortSpec {
    /// The spec as given.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn proto(&self) -> Proto {
        self.proto
    }

    pub fn host_ip(&self) -> Option<IpAddr> {
        self.host_ip
    }

    /// The host port range, when one was given.
    pub fn host_ports(&self) -> Option<(u16, u16)> {
        self.host
    }

    pub fn container_ports(&self) -> (u16, u16) {
        self.container
    }

    /// The ports the spec asks for, one per container port.
    pub fn requests(&self) -> Vec<PortRequest> {
        let (c1, c2) = self.container;
        let req = |host_range, container_port| PortRequest {
            proto: self.proto,
            host_ip: self.host_ip,
            host_range,
            container_port,
        };
        match self.host {
            // A container range maps port to port onto a host range of its length
            // (checked when parsed).
            Some((h1, _)) if c1 != c2 => (0..=(c2 - c1))
                .map(|i| req((h1 + i, h1 + i), c1 + i))
                .collect(),
            // One container port takes the host port, or the first free one of a host
            // range; without a host port every container port takes any free one.
            host => (c1..=c2).map(|c| req(host.unwrap_or((0, 0)), c)).collect(),
        }
    }
}

impl FromStr for PortSpec {
    type Err = PortSpecError;
    fn from_str(spec: &str) -> Result<Self, PortSpecError> {
        let bad = |why: String| PortSpecError {
            spec: spec.to_string(),
            why,
        };
        let (rest, proto) = match spec.rsplit_once('/') {
            Some((r, "tcp")) => (r, Proto::Tcp),
            Some((r, "udp")) => (r, Proto::Udp),
            Some((_, p)) => return Err(bad(format!("unknown protocol {p:?}"))),
            None => (spec, Proto::Tcp),
        };
        // `[v6]:host:container`: the brackets keep the address's colons apart.
        let (ip6, rest) = match rest.strip_prefix('[') {
            Some(r) => {
                let (addr, after) = r
                    .split_once(']')
                    .ok_or_else(|| bad("an IPv6 address opened with '[' needs its ']'".into()))?;
                let after = after
                    .strip_prefix(':')
                    .ok_or_else(|| bad("give the ports after the address: [::1]:8080:80".into()))?;
                (Some(addr), after)
            }
            None => (None, rest),
        };
        let parts: Vec<&str> = rest.split(':').collect();
        let (ip, host, cont) = match (ip6, parts.as_slice()) {
            (None, [c]) => (None, None, *c),
            (None, [h, c]) => (None, Some(*h), *c),
            (None, [i, h, c]) => (Some(*i), Some(*h).filter(|h| !h.is_empty()), *c),
            (Some(i), [h, c]) => (Some(i), Some(*h).filter(|h| !h.is_empty()), *c),
            (Some(_), [_]) => {
                return Err(bad(
                    "give the host port after the address, or leave it empty: [::1]::80".into(),
                ))
            }
            _ => return Err(bad("too many ':'".into())),
        };
        let host_ip = match ip {
            None | Some("") | Some("0.0.0.0") | Some("::") => None,
            Some(i) if ip6.is_some() => Some(IpAddr::V6(
                i.parse::<Ipv6Addr>()
                    .map_err(|_| bad(format!("{i:?} is not an IPv6 address")))?,
            )),
            Some(i) => Some(IpAddr::V4(i.parse::<Ipv4Addr>().map_err(|_| {
                bad(format!(
                    "{i:?} is not an IPv4 address (write an IPv6 one in brackets: [::1])"
                ))
            })?)),
        };
        let range = |s: &str| -> Result<(u16, u16), PortSpecError> {
            let (a, b) = s.split_once('-').unwrap_or((s, s));
            let p = |x: &str| {
                x.parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| bad(format!("{x:?} is not a port (1-65535)")))
            };
            let (a, b) = (p(a)?, p(b)?);
            if a > b {
                return Err(bad("a range must go from low to high".into()));
            }
            Ok((a, b))
        };
        let container = range(cont)?;
        let host = host.map(range).transpose()?;
        if let Some((h1, h2)) = host {
            let (c1, c2) = container;
            if c1 != c2 && h2 - h1 != c2 - c1 {
                return Err(bad("the host and container ranges differ in length".into()));
            }
        }
        Ok(PortSpec {
            text: spec.to_string(),
            proto,
            host_ip,
            host,
            container,
        })
    }
}

impl TryFrom<String> for PortSpec {
    type Error = PortSpecError;
    fn try_from(s: String) -> Result<Self, PortSpecError> {
        s.parse()
    }
}

impl From<PortSpec> for String {
    fn from(p: PortSpec) -> String {
        p.text
    }
}

/// The spec as given.
impl fmt::Display for PortSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

crate::string_schema!(
    PortSpec,
    "A published port: [hostip:][hostport[-end]:]containerport[-end][/tcp|udp], e.g. 8080:80."
);

#[cfg(test)]
mod tests {
    use super::*;

    fn req(proto: Proto, ip: Option<&str>, h: (u16, u16), c: u16) -> PortRequest {
        PortRequest {
            proto,
            host_ip: ip.map(|i| i.parse().unwrap()),
            host_range: h,
            container_port: c,
        }
    }

    fn reqs(s: &str) -> Vec<PortRequest> {
        s.parse::<PortSpec>().unwrap().requests()
    }

    #[test]
    fn specs_as_docker_takes_them() {
        use Proto::*;
        assert_eq!(reqs("80"), vec![req(Tcp, None, (0, 0), 80)]);
        assert_eq!(reqs("8080:80"), vec![req(Tcp, None, (8080, 8080), 80)]);
        assert_eq!(
            reqs("127.0.0.1:8080:80/udp"),
            vec![req(Udp, Some("127.0.0.1"), (8080, 8080), 80)]
        );
        assert_eq!(
            reqs("127.0.0.1::80"),
            vec![req(Tcp, Some("127.0.0.1"), (0, 0), 80)]
        );
        assert_eq!(
            reqs("0.0.0.0:8080:80"),
            vec![req(Tcp, None, (8080, 8080), 80)]
        );
        assert_eq!(
            reqs("8000-8001:80-81"),
            vec![
                req(Tcp, None, (8000, 8000), 80),
                req(Tcp, None, (8001, 8001), 81)
            ]
        );
        assert_eq!(reqs("8000-8010:80"), vec![req(Tcp, None, (8000, 8010), 80)]);
        assert_eq!(
            reqs("80-81/udp"),
            vec![req(Udp, None, (0, 0), 80), req(Udp, None, (0, 0), 81)]
        );
        let p: PortSpec = "127.0.0.1:8080:80/udp".parse().unwrap();
        assert_eq!(p.proto(), Proto::Udp);
        assert_eq!(p.host_ip(), Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1))));
        assert_eq!(
            reqs("[fd00::1]:8080:80"),
            vec![req(Tcp, Some("fd00::1"), (8080, 8080), 80)]
        );
        assert_eq!(
            reqs("[::1]::80/udp"),
            vec![req(Udp, Some("::1"), (0, 0), 80)]
        );
        assert_eq!(reqs("[::]:8080:80"), vec![req(Tcp, None, (8080, 8080), 80)]);
        assert_eq!(p.host_ports(), Some((8080, 8080)));
        assert_eq!(p.container_ports(), (80, 80));
    }

    #[test]
    fn bad_specs_say_what_was_wrong() {
        for (bad, why) in [
            ("", "\"\" is not a port"),
            ("0:80", "\"0\" is not a port (1-65535)"),
            ("70000:80", "\"70000\" is not a port"),
            ("80/sctp", "unknown protocol \"sctp\""),
            ("a:b", "\"b\" is not a port"),
            ("1:2:3:4", "too many ':'"),
            ("8000-8002:80-81", "differ in length"),
            ("90-80:80", "from low to high"),
            ("[::1:80:80", "needs its ']'"),
            ("[::1]80:80", "give the ports after the address"),
            ("[::1]:80", "give the host port after the address"),
            ("[1.2.3.4]:80:80", "\"1.2.3.4\" is not an IPv6 address"),
            ("::1:80:80", "too many ':'"),
            ("1.2.3:80:80", "\"1.2.3\" is not an IPv4 address"),
        ] {
            let e = bad.parse::<PortSpec>().unwrap_err().to_string();
            assert!(
                e.starts_with(&format!("invalid port mapping {bad:?}: ")),
                "{e}"
            );
            assert!(e.contains(why), "{bad}: {e}");
            assert!(e.ends_with("e.g. 8080:80"), "{e}");
        }
    }

    #[test]
    fn specs_travel_as_given() {
        for s in [
            "80",
            "8080:80",
            "127.0.0.1::80/udp",
            "0.0.0.0:8000-8001:80-81/tcp",
            "[::1]:8080:80",
        ] {
            let p: PortSpec = s.parse().unwrap();
            assert_eq!(p.to_string(), s);
            let json = serde_json::to_string(&p).unwrap();
            assert_eq!(json, format!("{s:?}"));
            assert_eq!(serde_json::from_str::<PortSpec>(&json).unwrap(), p);
        }
        let e = serde_json::from_str::<PortSpec>("\"80/sctp\"").unwrap_err();
        assert!(e.to_string().contains("invalid port mapping"), "{e}");
    }
}
