//! Docker's stats shape (`docker stats`) of Pier's readings.

use serde_json::{json, Value};

use super::ZERO_TIME;
use crate::containers::ContainerStats;

fn cpu_json(s: Option<&ContainerStats>) -> Value {
    match s {
        None => {
            json!({"cpu_usage": {"total_usage": 0, "usage_in_kernelmode": 0, "usage_in_usermode": 0}, "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0}})
        }
        Some(s) => json!({
            "cpu_usage": {"total_usage": s.cpu_usage_ns, "usage_in_kernelmode": 0, "usage_in_usermode": 0},
            "system_cpu_usage": s.system_cpu_ns,
            "online_cpus": s.online_cpus,
            "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0},
        }),
    }
}

/// The interface counters of a reading, as Docker's `networks`.
fn networks(now: &ContainerStats) -> Value {
    now.networks
        .iter()
        .map(|(name, c)| {
            let v = json!({
                "rx_bytes": c.rx_bytes, "rx_packets": c.rx_packets, "rx_errors": c.rx_errors, "rx_dropped": c.rx_dropped,
                "tx_bytes": c.tx_bytes, "tx_packets": c.tx_packets, "tx_errors": c.tx_errors, "tx_dropped": c.tx_dropped,
            });
            (name.clone(), v)
        })
        .collect::<serde_json::Map<String, Value>>()
        .into()
}

/// A reading (and the one before, for CPU rates) in Docker's stats shape; `host_memory`
/// stands for an unlimited container's limit (or one over it), as on Docker.
pub fn stats_json(
    id: &str,
    name: &str,
    now: &ContainerStats,
    pre: Option<&ContainerStats>,
    host_memory: u64,
) -> Value {
    let host = host_memory;
    let limit = now.memory_limit.filter(|l| *l < host).unwrap_or(host);
    json!({
        "read": now.read,
        "preread": pre.map_or(ZERO_TIME.to_string(), |p| p.read.clone()),
        "pids_stats": {"current": now.pids_current, "limit": now.pids_limit},
        "blkio_stats": {
            "io_service_bytes_recursive": [
                {"major": 0, "minor": 0, "op": "read", "value": now.io_read_bytes},
                {"major": 0, "minor": 0, "op": "write", "value": now.io_write_bytes},
            ],
            "io_serviced_recursive": null, "io_queue_recursive": null,
            "io_service_time_recursive": null, "io_wait_time_recursive": null,
            "io_merged_recursive": null, "io_time_recursive": null, "sectors_recursive": null,
        },
        "num_procs": 0,
        "storage_stats": {},
        "cpu_stats": cpu_json(Some(now)),
        "precpu_stats": cpu_json(pre),
        "memory_stats": {"usage": now.memory_usage, "stats": {}, "limit": limit},
        "name": format!("/{name}"),
        "id": id,
        "networks": networks(now),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_over_the_host_show_as_the_hosts_memory() {
        let mut s: ContainerStats = serde_json::from_value(json!({
            "id": "i", "name": "n", "read": "t", "cpu_usage_ns": 5, "system_cpu_ns": 9, "online_cpus": 2,
            "memory_usage": 1, "memory_limit": 100, "pids_current": 1, "pids_limit": null,
            "io_read_bytes": 0, "io_write_bytes": 0, "networks": {},
        }))
        .unwrap();
        let v = stats_json("i", "n", &s, None, 1000);
        assert_eq!(v["memory_stats"]["limit"], 100);
        assert_eq!(v["name"], "/n");
        assert_eq!(v["preread"], ZERO_TIME);
        assert_eq!(v["precpu_stats"]["cpu_usage"]["total_usage"], 0);
        s.memory_limit = None;
        assert_eq!(
            stats_json("i", "n", &s, Some(&s), 1000)["memory_stats"]["limit"],
            1000
        );
    }
}
