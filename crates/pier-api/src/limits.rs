//! The resource limits a container may ask for, and how large its record may be: one
//! check for both APIs. The native API's create body is checked as it comes; the Docker
//! API maps Docker's `HostConfig` onto the same request without dropping a value, so a
//! limit that cannot be applied is refused here rather than silently left out.
//!
//! Values mean what Docker makes them mean: a memory limit below 6 MB (negative included)
//! is refused, a pids limit of 0 or -1 is no limit, a swap of -1 is unlimited swap, CPU
//! shares are a weight from 2 to 262144 (0: the default), and a `/dev/shm` size of 0 is
//! the default of 64 MiB.

use crate::containers::ContainerCreate;

/// The smallest memory limit a container can start with (Docker's).
pub const MIN_MEMORY: i64 = 6 << 20;
/// The largest CPU weight the kernel takes (cgroup v1 `cpu.shares`).
pub const MAX_CPU_SHARES: i64 = 262_144;
/// The size of a container's `/dev/shm` when none is asked for (Docker's).
pub const DEFAULT_SHM_SIZE: i64 = 64 << 20;
/// The most a container's create request may hold once stored (environment, labels,
/// command, mounts, ...): records are read whole by `ps` and every lookup.
pub const MAX_RECORD: usize = 1 << 20;

/// Checks the resource limits of a create request on a host with `host_cpus` CPUs; the
/// message says which limit is wrong and what to give instead.
pub fn check_resources(req: &ContainerCreate, host_cpus: usize) -> Result<(), String> {
    if let Some(m) = req.memory {
        if m < MIN_MEMORY {
            return Err(format!(
                "memory limit {m} bytes is too small: the minimum is 6MB ({MIN_MEMORY} bytes)"
            ));
        }
    }
    if let Some(s) = req.memory_swap {
        if s < -1 {
            return Err(format!(
                "invalid memory-swap limit {s}: give memory plus swap in bytes (at least --memory), or -1 for unlimited swap"
            ));
        }
        match req.memory {
            Some(m) if s != -1 && s < m => {
                return Err("--memory-swap must be at least --memory (it counts memory plus swap), or -1 for unlimited swap".into());
            }
            None => return Err("--memory-swap needs --memory as well".into()),
            _ => {}
        }
    }
    if let Some(c) = req.cpus {
        if !c.is_finite() || c < 0.01 || c > host_cpus as f64 {
            return Err(format!(
                "--cpus {c} is out of range: give 0.01 to {host_cpus}, as there are only {host_cpus} CPUs available"
            ));
        }
    }
    if let Some(s) = req.cpu_shares {
        if !(0..=MAX_CPU_SHARES).contains(&s) {
            return Err(format!(
                "invalid CPU shares {s}: give a relative weight from 2 to {MAX_CPU_SHARES} (1024 is the default), or 0 for the default"
            ));
        }
    }
    if let Some(p) = req.pids_limit {
        if p < -1 {
            return Err(format!(
                "invalid pids limit {p}: give a positive number of processes, or 0 or -1 for no limit"
            ));
        }
    }
    if let Some(w) = req.blkio_weight {
        if w != 0 && !(10..=1000).contains(&w) {
            return Err(format!(
                "--blkio-weight {w} is out of range: Range of blkio weight is from 10 to 1000"
            ));
        }
    }
    if let Some(s) = req.shm_size {
        if s < 0 {
            return Err(format!(
                "invalid --shm-size {s}: SHM size can not be less than 0 (0 gives the default of 64MB)"
            ));
        }
    }
    Ok(())
}

/// The size of `/dev/shm` a request gets, in bytes.
pub fn shm_size(req: &ContainerCreate) -> u64 {
    match req.shm_size {
        Some(s) if s > 0 => s as u64,
        _ => DEFAULT_SHM_SIZE as u64,
    }
}

/// Checks that a create request fits in a container's record ([`MAX_RECORD`]).
pub fn check_record_size(req: &ContainerCreate) -> Result<(), String> {
    let size = serde_json::to_vec(req)
        .map(|v| v.len())
        .unwrap_or(usize::MAX);
    if size > MAX_RECORD {
        return Err(format!(
            "the container's configuration takes {size} bytes, over the limit of {} MiB a container may hold (environment, labels, command, mounts...): pass large data in a file or a volume instead",
            MAX_RECORD >> 20
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(f: impl FnOnce(&mut ContainerCreate)) -> ContainerCreate {
        let mut r = ContainerCreate {
            image: "bb".into(),
            ..Default::default()
        };
        f(&mut r);
        r
    }

    #[test]
    fn bad_limits_are_refused_and_unlimited_values_pass() {
        let refused = [
            req(|r| r.memory = Some(-5)),
            req(|r| r.memory = Some(1 << 20)),
            req(|r| {
                r.memory = Some(64 << 20);
                r.memory_swap = Some(-2)
            }),
            req(|r| r.memory_swap = Some(1 << 30)),
            req(|r| r.cpus = Some(-1e-9)),
            req(|r| r.cpus = Some(f64::NAN)),
            req(|r| r.cpus = Some(3.0)),
            req(|r| r.cpu_shares = Some(-1)),
            req(|r| r.cpu_shares = Some(MAX_CPU_SHARES + 1)),
            req(|r| r.pids_limit = Some(-7)),
            req(|r| r.blkio_weight = Some(5)),
            req(|r| r.shm_size = Some(-1)),
        ];
        for r in refused {
            assert!(check_resources(&r, 2).is_err(), "{r:?}");
        }
        let accepted = [
            req(|_| {}),
            req(|r| r.memory = Some(MIN_MEMORY)),
            req(|r| {
                r.memory = Some(64 << 20);
                r.memory_swap = Some(-1)
            }),
            req(|r| r.cpus = Some(0.5)),
            req(|r| r.cpu_shares = Some(0)),
            req(|r| r.cpu_shares = Some(512)),
            req(|r| r.pids_limit = Some(-1)),
            req(|r| r.pids_limit = Some(0)),
            req(|r| r.pids_limit = Some(100)),
            req(|r| r.shm_size = Some(0)),
        ];
        for r in accepted {
            assert_eq!(check_resources(&r, 2), Ok(()), "{r:?}");
        }
        let err = check_resources(&req(|r| r.memory = Some(-5)), 2).unwrap_err();
        assert!(err.contains("minimum is 6MB"), "{err}");
    }

    #[test]
    fn shm_size_defaults_to_64_mib() {
        assert_eq!(shm_size(&req(|_| {})), 64 << 20);
        assert_eq!(shm_size(&req(|r| r.shm_size = Some(0))), 64 << 20);
        assert_eq!(shm_size(&req(|r| r.shm_size = Some(1 << 20))), 1 << 20);
    }

    #[test]
    fn a_record_over_a_mib_is_refused() {
        assert_eq!(check_record_size(&req(|_| {})), Ok(()));
        let big = req(|r| r.env = vec![format!("A={}", "x".repeat(MAX_RECORD))]);
        let err = check_record_size(&big).unwrap_err();
        assert!(err.contains("1 MiB"), "{err}");
    }
}
