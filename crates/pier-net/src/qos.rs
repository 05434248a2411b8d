//! Per-container rate limits with tc: a token bucket (`tbf`) on each end of the
//! container's veth pair. The host end's qdisc shapes what the container receives;
//! the container end's (set from inside its namespace, where the container, lacking
//! CAP_NET_ADMIN, cannot remove it) shapes what it sends.
//!
//! tc is the real tool for queueing disciplines, so it is run rather than rebuilt.

use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use crate::error::io;
use crate::{Error, Result, ToolFailure};

/// Parses a rate as tc writes them: `10mbit`, `500kbit`, `1gbit`, `2mbps` (bytes),
/// or plain bits per second. Returns bits per second.
pub fn parse_rate(s: &str) -> Option<u64> {
    let s = s.trim().to_ascii_lowercase();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult: f64 = match unit {
        "" | "bit" => 1.0,
        "kbit" | "k" => 1e3,
        "mbit" | "m" => 1e6,
        "gbit" | "g" => 1e9,
        "bps" => 8.0,
        "kbps" => 8e3,
        "mbps" => 8e6,
        "gbps" => 8e9,
        _ => return None,
    };
    let bits = (n * mult) as u64;
    (bits >= 8000).then_some(bits)
}

/// tbf arguments for `bits` per second: a burst of 50 ms of traffic (at least 16 KiB,
/// enough for TSO segments) and at most 100 ms of queue.
fn tbf_args(bits: u64) -> Vec<String> {
    let burst = (bits / 8 / 20).max(16 * 1024);
    vec![
        "root".into(),
        "tbf".into(),
        "rate".into(),
        format!("{bits}bit"),
        "burst".into(),
        burst.to_string(),
        "latency".into(),
        "100ms".into(),
    ]
}

/// Runs `tc ARGS` (which `op` on `dev`), in the network namespace `netns` if given.
fn tc(op: &'static str, dev: &str, args: &[String], netns: Option<&Path>) -> Result<()> {
    let mut cmd = Command::new("tc");
    cmd.args(args);
    if let Some(ns) = netns {
        let f = std::fs::File::open(ns).map_err(io("open", ns))?;
        // SAFETY: the closure only calls setns(2), which is async-signal-safe, on a file
        // descriptor the parent keeps open until the child has exec'd.
        unsafe {
            cmd.pre_exec(move || {
                rustix::thread::move_into_link_name_space(
                    f.as_fd(),
                    Some(rustix::thread::LinkNameSpaceType::Network),
                )
                .map_err(std::io::Error::from)
            });
        }
    }
    let out = cmd.output().map_err(|source| Error::Spawn {
        tool: "tc",
        package: "iproute2",
        source,
    })?;
    if !out.status.success() {
        return Err(Error::Tc {
            op,
            dev: dev.to_string(),
            source: ToolFailure {
                status: out.status,
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            },
        });
    }
    Ok(())
}

/// Limits what the container receives (`ingress`) and sends (`egress`), in bits per
/// second, on the veth whose host end is `host_if` and container end `ifname` in
/// `netns`.
pub fn limit(
    host_if: &str,
    netns: &Path,
    ifname: &str,
    ingress: Option<u64>,
    egress: Option<u64>,
) -> Result<()> {
    if let Some(bits) = ingress {
        let mut a: Vec<String> = vec![
            "qdisc".into(),
            "replace".into(),
            "dev".into(),
            host_if.into(),
        ];
        a.extend(tbf_args(bits));
        tc("limit what the container receives", host_if, &a, None)?;
    }
    if let Some(bits) = egress {
        let mut a: Vec<String> = vec![
            "qdisc".into(),
            "replace".into(),
            "dev".into(),
            ifname.into(),
        ];
        a.extend(tbf_args(bits));
        tc("limit what the container sends", ifname, &a, Some(netns))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates() {
        assert_eq!(parse_rate("10mbit"), Some(10_000_000));
        assert_eq!(parse_rate("10Mbit"), Some(10_000_000));
        assert_eq!(parse_rate("1.5gbit"), Some(1_500_000_000));
        assert_eq!(parse_rate("500kbit"), Some(500_000));
        assert_eq!(parse_rate("2mbps"), Some(16_000_000));
        assert_eq!(parse_rate("64000"), Some(64_000));
        assert_eq!(parse_rate("10"), None); // below 1 kB/s: a typo, not a limit
        assert_eq!(parse_rate("fast"), None);
        assert_eq!(parse_rate("10mbitx"), None);
    }
}
