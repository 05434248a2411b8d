//! The host as the engine reports it (`pier info`, Docker's `/info` and `/system/df`,
//! stats): its operating system, kernel, memory and CPUs; disk usage of directories; the
//! interface counters of a network namespace. One implementation for every API.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use pier_api::containers::InterfaceCounters;

/// What the host is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostInfo {
    /// `PRETTY_NAME` of `/etc/os-release`, or "Linux".
    pub os: String,
    /// The kernel's release.
    pub kernel: String,
    pub hostname: String,
    /// Bytes of memory.
    pub memory: u64,
    pub cpus: u32,
}

impl HostInfo {
    /// Reads the host's facts (cheap: a few small files).
    pub fn read() -> HostInfo {
        let uname = rustix::system::uname();
        HostInfo {
            os: os_name(&fs::read_to_string("/etc/os-release").unwrap_or_default()),
            kernel: uname.release().to_string_lossy().into_owned(),
            hostname: uname.nodename().to_string_lossy().into_owned(),
            memory: mem_total(&fs::read_to_string("/proc/meminfo").unwrap_or_default()),
            cpus: std::thread::available_parallelism()
                .map(|n| n.get() as u32)
                .unwrap_or(1),
        }
    }
}

fn os_name(os_release: &str) -> String {
    os_release
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_else(|| "Linux".into())
}

fn mem_total(meminfo: &str) -> u64 {
    meminfo_bytes(meminfo, "MemTotal")
}

/// A field of /proc/meminfo (`MemTotal`, `MemAvailable`), in bytes; 0 when absent.
pub(crate) fn meminfo_bytes(meminfo: &str, field: &str) -> u64 {
    meminfo
        .lines()
        .find_map(|l| {
            l.strip_prefix(field)?
                .strip_prefix(':')?
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map_or(0, |kb| kb * 1024)
}

/// Bytes of the regular files under `dir` (0 when it cannot be read).
pub fn du(dir: &Path) -> u64 {
    let Ok(rd) = fs::read_dir(dir) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => du(&e.path()),
            Ok(m) if m.is_file() => m.len(),
            _ => 0,
        })
        .sum()
}

/// The counters of the interfaces (but loopback) of the network namespace process `pid`
/// is in.
pub fn interface_counters(pid: i32) -> BTreeMap<String, InterfaceCounters> {
    parse_net_dev(&fs::read_to_string(format!("/proc/{pid}/net/dev")).unwrap_or_default())
}

/// The counters of the interfaces (but loopback) of the daemon's own network namespace:
/// the host's, for a daemon started as usual.
pub fn own_interface_counters() -> BTreeMap<String, InterfaceCounters> {
    parse_net_dev(&fs::read_to_string("/proc/self/net/dev").unwrap_or_default())
}

/// Clock ticks per second of `/proc/stat`'s CPU times (`USER_HZ`): fixed at 100 by the
/// kernel's ABI on x86_64 and aarch64, whatever its internal tick rate.
const USER_HZ: f64 = 100.0;

/// Seconds the host's CPUs have spent busy since boot, all CPUs together: every state of
/// `/proc/stat`'s `cpu` line but idle and iowait (guest time is already in user time).
pub fn host_cpu_busy_seconds() -> f64 {
    cpu_busy_seconds(&fs::read_to_string("/proc/stat").unwrap_or_default())
}

fn cpu_busy_seconds(stat: &str) -> f64 {
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return 0.0;
    };
    // user nice system idle iowait irq softirq steal guest guest_nice
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    let busy: u64 = [0, 1, 2, 5, 6, 7].iter().filter_map(|&i| v.get(i)).sum();
    busy as f64 / USER_HZ
}

fn parse_net_dev(text: &str) -> BTreeMap<String, InterfaceCounters> {
    let mut out = BTreeMap::new();
    for line in text.lines().skip(2) {
        let Some((name, rest)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        if name == "lo" {
            continue;
        }
        let v: Vec<u64> = rest
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        if v.len() < 12 {
            continue;
        }
        out.insert(
            name.to_string(),
            InterfaceCounters {
                rx_bytes: v[0],
                rx_packets: v[1],
                rx_errors: v[2],
                rx_dropped: v[3],
                tx_bytes: v[8],
                tx_packets: v[9],
                tx_errors: v[10],
                tx_dropped: v[11],
            },
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net_dev_counters_skip_loopback_and_short_lines() {
        let text = "Inter-|   Receive                                                |  Transmit\n \
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
lo:     100       1    0    0    0     0          0         0      100       1    0    0    0     0       0          0\n  \
eth0:    5000      40    1    2    0     0          0         0     3000      30    3    4    0     0       0          0\n  \
bad: 1 2 3\n";
        let c = parse_net_dev(text);
        assert_eq!(c.len(), 1);
        let e = &c["eth0"];
        assert_eq!(
            (e.rx_bytes, e.rx_packets, e.rx_errors, e.rx_dropped),
            (5000, 40, 1, 2)
        );
        assert_eq!(
            (e.tx_bytes, e.tx_packets, e.tx_errors, e.tx_dropped),
            (3000, 30, 3, 4)
        );
    }

    #[test]
    fn busy_cpu_time_is_all_but_idle_and_iowait() {
        // user nice system idle iowait irq softirq steal guest guest_nice
        let stat =
            "cpu  100 20 30 5000 70 4 6 10 50 0\ncpu0 50 10 15 2500 35 2 3 5 25 0\nintr 1 2\n";
        // 100 + 20 + 30 + 4 + 6 + 10 ticks at 100 a second; guest is inside user.
        assert_eq!(cpu_busy_seconds(stat), 1.7);
        // Older kernels stop after fewer fields.
        assert_eq!(cpu_busy_seconds("cpu 100 0 100 900\n"), 2.0);
        assert_eq!(
            cpu_busy_seconds("cpu0 1 2 3\n"),
            0.0,
            "only the all-CPU line"
        );
        assert_eq!(cpu_busy_seconds(""), 0.0);
        // This host's counter is there and does not go back.
        let a = host_cpu_busy_seconds();
        assert!(a > 0.0, "{a}");
        assert!(host_cpu_busy_seconds() >= a);
    }

    #[test]
    fn own_counters_are_this_namespace_s_interfaces_without_loopback() {
        let c = own_interface_counters();
        assert!(!c.contains_key("lo"), "{c:?}");
        let listed = fs::read_to_string("/proc/net/dev").unwrap();
        for name in c.keys() {
            assert!(listed.contains(&format!("{name}:")), "{name}");
        }
    }

    #[test]
    fn os_and_memory_are_read_from_their_files() {
        assert_eq!(
            os_name("NAME=\"Debian\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n"),
            "Debian GNU/Linux 12 (bookworm)"
        );
        assert_eq!(os_name(""), "Linux");
        assert_eq!(
            mem_total("MemTotal:       2048 kB\nMemFree: 1 kB\n"),
            2048 * 1024
        );
        assert_eq!(mem_total("nothing"), 0);
    }

    #[test]
    fn du_sums_regular_files_below() {
        let t = tempfile::tempdir().unwrap();
        fs::create_dir_all(t.path().join("a/b")).unwrap();
        fs::write(t.path().join("a/b/f"), [0u8; 300]).unwrap();
        fs::write(t.path().join("g"), [0u8; 20]).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", t.path().join("link")).unwrap();
        assert_eq!(du(t.path()), 320);
        assert_eq!(du(&t.path().join("missing")), 0);
    }
}

/// What the daemon process and its host offer the APIs beyond [`HostInfo`]: the cgroup
/// hierarchy's version, the file descriptors the daemon holds, the runtimes on `PATH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessFacts {
    /// 2 on the unified hierarchy, 1 otherwise.
    pub cgroup_version: u8,
    /// File descriptors this process holds.
    pub open_fds: usize,
    /// This program's path.
    pub exe: String,
    /// Whether `runc` is on `PATH` (the `--runtime runc` option).
    pub runc: bool,
}

impl ProcessFacts {
    /// Reads them (cheap: a directory listing and a few stats).
    pub fn read() -> ProcessFacts {
        ProcessFacts {
            cgroup_version: if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
                2
            } else {
                1
            },
            open_fds: fs::read_dir("/proc/self/fd")
                .map(|d| d.count())
                .unwrap_or(0),
            exe: std::env::current_exe()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            runc: on_path("runc"),
        }
    }
}

/// Whether a program of this name is on `PATH`.
pub fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}

#[cfg(test)]
mod process_tests {
    use super::*;

    #[test]
    fn process_facts_are_read_from_this_process() {
        let f = ProcessFacts::read();
        assert!(f.open_fds >= 3, "stdin, stdout, stderr at least: {f:?}");
        assert!(f.exe.contains("pier_engine"), "{f:?}");
        assert!(matches!(f.cgroup_version, 1 | 2));
        assert!(on_path("sh"));
        assert!(!on_path("surely-no-such-tool-on-path"));
    }
}

/// Whether a host path exists (a bind mount's source, checked at create).
pub fn host_path_exists(path: &str) -> bool {
    Path::new(path).exists()
}
