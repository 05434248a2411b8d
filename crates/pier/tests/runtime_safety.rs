//! Root tier: what a container can reach of the runtime's own processes, and what a
//! daemon killed in the middle of starts leaves behind.

mod common;

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn with_busybox() -> Daemon {
    require_root_and_tools(&["ldd", "sha256sum"]);
    let d = Daemon::start();
    d.ok(&["image", "from-host", "bb", BUSYBOX]);
    d
}

fn sha256_file(path: &str) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// The CVE-2019-5736 pattern. A container makes a command of its own a
/// `#!/proc/self/exe` script, so that `pier exec` running it makes the kernel load the
/// exec helper's own executable as the command, inside the container; this one waits on
/// its standard input (`pier pull --password-stdin`), held open by the test. Another
/// process of the container then tries every way to the file behind it. It must find a
/// sealed in-memory copy, never the host's `pier`, and no way to write it. The same for a
/// container's pid 1 under `--init` (a fork of the monitor, for the container's life).
#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn exec_and_init_run_a_sealed_copy_a_container_cannot_write() {
    require_root_and_tools(&["docker"]);
    let d = with_busybox();
    let host_before = sha256_file(PIER);
    // The loader and libraries `pier` needs, so that it can run in the container.
    d.ok(&[
        "run",
        "-d",
        "--name",
        "victim",
        "-v",
        "/usr/lib:/lib:ro",
        "-v",
        "/usr/lib64:/lib64:ro",
        "bb",
        "sleep",
        "1000",
    ]);
    d.ok(&[
        "exec",
        "victim",
        "sh",
        "-c",
        "printf '#!/proc/self/exe pull\\n' > /trojan && chmod 755 /trojan",
    ]);
    // The victim's `exec`, its stdin kept open so that the command keeps running.
    let mut victim: Child = d
        .cmd()
        .args([
            "exec",
            "-i",
            "victim",
            "/trojan",
            "-u",
            "x",
            "--password-stdin",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let attack = r#"
        found=
        for i in $(seq 1 200); do
            for p in /proc/[0-9]*; do
                case "$(tr '\0' ' ' < $p/cmdline 2>/dev/null)" in
                    "/proc/self/exe pull /trojan"*) found=$p ;;
                esac
            done
            [ -n "$found" ] && break
            sleep 0.05
        done
        [ -n "$found" ] || { echo "NOT FOUND"; exit 1; }
        echo "exe=$(readlink $found/exe)"
        (exec 5>>$found/exe) 2>/dev/null && echo "OPENED-FOR-WRITE exe"
        (exec 5<>$found/exe) 2>/dev/null && echo "OPENED-FOR-WRITE exe rw"
        if exec 3<$found/exe; then
            echo "fd=$(readlink /proc/self/fd/3)"
            (exec 4>>/proc/self/fd/3) 2>/dev/null && { echo "OPENED-FOR-WRITE fd"; echo x >&4; }
            (exec 4<>/proc/self/fd/3) 2>/dev/null && echo "OPENED-FOR-WRITE fd rw"
        fi
        for m in $found/map_files/*; do
            (exec 6>>$m) 2>/dev/null && echo "OPENED-FOR-WRITE $m"
        done
        true
    "#;
    let out = d.pier(&["exec", "victim", "sh", "-c", attack]);
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    drop(victim.stdin.take()); // the command reads end of file and exits
    let _ = victim.wait();
    assert!(
        out.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let exe = report
        .lines()
        .find_map(|l| l.strip_prefix("exe="))
        .unwrap_or_default();
    assert!(
        exe.starts_with("/memfd:pier"),
        "the container reached the exec helper's executable as {exe:?}, not a sealed copy:\n{report}"
    );
    assert!(
        !report.contains("OPENED-FOR-WRITE"),
        "the container opened the executable for writing:\n{report}"
    );
    if let Some(fd) = report.lines().find_map(|l| l.strip_prefix("fd=")) {
        assert!(fd.starts_with("/memfd:pier"), "{report}");
    }

    // Pid 1 under --init: a fork of the monitor for as long as the container runs.
    d.ok(&[
        "run", "-d", "--init", "--name", "tini", "bb", "sleep", "1000",
    ]);
    let out = d.pier(&[
        "exec",
        "tini",
        "sh",
        "-c",
        "echo exe=$(readlink /proc/1/exe); \
         (exec 5>>/proc/1/exe) 2>/dev/null && echo OPENED-FOR-WRITE; \
         exec 3</proc/1/exe && echo fd=$(readlink /proc/self/fd/3); true",
    ]);
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    let exe = report
        .lines()
        .find_map(|l| l.strip_prefix("exe="))
        .unwrap_or_default();
    // Unreadable (the init is not dumpable) or the sealed copy; never the host's binary.
    assert!(
        exe.is_empty() || exe.starts_with("/memfd:pier"),
        "the container reached its init's executable as {exe:?}:\n{report}"
    );
    assert!(!report.contains("OPENED-FOR-WRITE"), "{report}");
    if let Some(fd) = report.lines().find_map(|l| l.strip_prefix("fd=")) {
        assert!(fd.starts_with("/memfd:pier"), "{report}");
    }

    // exec still works, through both APIs.
    assert_eq!(d.ok(&["exec", "victim", "echo", "hi"]), "hi\n");
    let out = d.docker(
        "/usr/local/bin/docker",
        &["exec", "victim", "echo", "docker-hi"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "docker-hi\n");
    assert_eq!(sha256_file(PIER), host_before, "the host's pier changed");
}

/// What the host shows of the processes now: pid, its cgroup lines, its command line's
/// arguments and its working directory.
struct Proc {
    pid: i32,
    cgroup: String,
    args: Vec<String>,
    cwd: Option<PathBuf>,
}

fn processes() -> Vec<Proc> {
    let mut out = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        let Ok(cgroup) = fs::read_to_string(e.path().join("cgroup")) else {
            continue;
        };
        let args = fs::read(e.path().join("cmdline"))
            .unwrap_or_default()
            .split(|&b| b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        out.push(Proc {
            pid,
            cgroup,
            args,
            cwd: fs::read_link(e.path().join("cwd")).ok(),
        });
    }
    out
}

/// Directories named `id` in the cgroup hierarchies (any parent, any layout).
fn cgroup_dirs(id: &str) -> Vec<PathBuf> {
    fn walk(dir: &Path, id: &str, depth: usize, out: &mut Vec<PathBuf>) {
        let Ok(rd) = fs::read_dir(dir) else { return };
        for e in rd.flatten() {
            if !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            if e.file_name() == id {
                out.push(e.path());
            } else if depth > 0 {
                walk(&e.path(), id, depth - 1, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(Path::new("/sys/fs/cgroup"), id, 3, &mut out);
    out
}

/// What is wrong with container `id` now (empty: nothing). A running container is
/// tracked: its recorded pid lives in its cgroup, under exactly one monitor, the one
/// recorded. Any other is gone for good: no process in its cgroup, no cgroup, no monitor,
/// no mount, no veth.
fn problems(
    d: &Daemon,
    id: &str,
    state: Option<&serde_json::Value>,
    procs: &[Proc],
) -> Vec<String> {
    let mut p = Vec::new();
    let dir = d.root.join("containers").join(id);
    let monitors: Vec<i32> = procs
        .iter()
        .filter(|x| x.args.get(1).map(String::as_str) == Some("__monitor"))
        .filter(|x| x.cwd.as_deref() == Some(dir.as_path()))
        .map(|x| x.pid)
        .collect();
    let in_cgroup: Vec<i32> = procs
        .iter()
        .filter(|x| x.cgroup.contains(&format!("/{id}\n")))
        .map(|x| x.pid)
        .collect();
    let status = state.and_then(|s| s["status"].as_str()).unwrap_or("none");
    if status == "running" {
        let s = state.unwrap();
        let pid = s["pid"].as_i64().unwrap_or(0) as i32;
        if !in_cgroup.contains(&pid) {
            p.push(format!(
                "running, but its pid {pid} is not in its cgroup ({in_cgroup:?})"
            ));
        }
        let mpid = s["monitor_pid"].as_i64().unwrap_or(0) as i32;
        if monitors != vec![mpid] {
            p.push(format!(
                "running with monitors {monitors:?}, recorded {mpid}"
            ));
        }
        return p;
    }
    if !in_cgroup.is_empty() {
        p.push(format!(
            "{status}, but processes {in_cgroup:?} run in its cgroup"
        ));
    }
    if !monitors.is_empty() {
        p.push(format!("{status}, but monitors {monitors:?} run"));
    }
    let cgroups = cgroup_dirs(id);
    if !cgroups.is_empty() {
        p.push(format!("{status}, but its cgroups are left: {cgroups:?}"));
    }
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    if mounts.contains(&format!("containers/{id}/")) {
        p.push(format!("{status}, but its rootfs is mounted"));
    }
    let veths: Vec<String> = d
        .links()
        .into_iter()
        .filter(|l| d.owns_veth(l) && l.starts_with(&format!("pv{}{}", d.host_tag(), &id[..4])))
        .collect();
    if !veths.is_empty() {
        p.push(format!("{status}, but its veths are left: {veths:?}"));
    }
    p
}

/// Waits until every container in `ids` is either running and tracked or gone with
/// nothing left (the kernel removes a dead namespace's veths in the background).
fn check_all(d: &Daemon, ids: &HashSet<String>, when: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let listed: Vec<String> = d
            .ok(&["ps", "-aq", "--no-trunc"])
            .lines()
            .map(str::to_string)
            .collect();
        let mut states: HashMap<String, serde_json::Value> = HashMap::new();
        if !listed.is_empty() {
            let mut args = vec!["inspect"];
            args.extend(listed.iter().map(String::as_str));
            for c in d.json(&args).as_array().unwrap() {
                states.insert(c["id"].as_str().unwrap().to_string(), c["state"].clone());
            }
        }
        let procs = processes();
        let mut all = Vec::new();
        for id in ids.iter().chain(listed.iter()).collect::<HashSet<_>>() {
            for p in problems(d, id, states.get(id), &procs) {
                all.push(format!("{}: {p}", &id[..12]));
            }
        }
        // No directory the daemon has no record of.
        for e in fs::read_dir(d.root.join("containers")).unwrap().flatten() {
            let id = e.file_name().to_string_lossy().into_owned();
            if !states.contains_key(&id) {
                all.push(format!(
                    "{}: a directory without a record",
                    &id[..12.min(id.len())]
                ));
            }
        }
        if all.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{when}:\n{}\ndaemon log (tail):\n{}",
            all.join("\n"),
            d.log()
                .lines()
                .rev()
                .take(40)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `kill -9` of the daemon at a different moment of 20 parallel `run -d -p` each round:
/// after the restart, every container is running and tracked, or gone with nothing left;
/// `rm -f` then leaves nothing of any, and a start never joins leftovers.
#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn a_daemon_killed_during_starts_leaves_nothing_untracked() {
    let mut d = with_busybox();
    let t0 = Instant::now();
    let (rounds, width) = (20u64, 20);
    let launch = |d: &Daemon, round: &str| -> Vec<Child> {
        (0..width)
            .map(|i| {
                d.cmd()
                    .args(["run", "-d", "-p", "80", "--name"])
                    .arg(format!("{round}c{i}"))
                    .args(["bb", "sleep", "1000"])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect()
    };
    // How long the 20 runs take here, undisturbed: the kills are spread over that.
    let t = Instant::now();
    for mut c in launch(&d, "calibration") {
        assert!(c.wait().unwrap().success());
    }
    let span = t.elapsed().as_millis() as u64;
    let ids = d.ok(&["ps", "-aq", "--no-trunc"]);
    let mut args = vec!["rm", "-f"];
    args.extend(ids.lines());
    d.ok(&args);
    for r in 0..rounds {
        // From the first create to past the last start, over the rounds in a shuffled
        // order.
        let delay = Duration::from_millis((r * 7 % rounds) * span * 6 / 5 / rounds + r % 3 * 5);
        let clients = launch(&d, &format!("r{r}"));
        std::thread::sleep(delay);
        d.kill9();
        // Every directory made so far, recorded or not.
        let ids: HashSet<String> = fs::read_dir(d.root.join("containers"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        for mut c in clients {
            let deadline = Instant::now() + Duration::from_secs(20);
            while c.try_wait().unwrap().is_none() {
                assert!(Instant::now() < deadline, "a client hangs on a dead daemon");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        d.spawn();
        check_all(
            &d,
            &ids,
            &format!("round {r}, killed after {delay:?}, after the restart"),
        );
        let listed: Vec<String> = d
            .ok(&["ps", "-aq", "--no-trunc"])
            .lines()
            .map(str::to_string)
            .collect();
        let running = listed
            .iter()
            .filter(|id| d.json(&["inspect", id])[0]["state"]["status"] == "running")
            .count();
        eprintln!(
            "round {r}: killed after {delay:?}: {} directories, {} records, {running} running",
            ids.len(),
            listed.len()
        );
        // Started again, a container runs alone in its cgroup.
        if let Some(stopped) = listed
            .iter()
            .find(|id| d.json(&["inspect", id])[0]["state"]["status"].as_str() != Some("running"))
        {
            d.ok(&["start", stopped]);
            let s = d.json(&["inspect", stopped])[0]["state"].clone();
            assert_eq!(s["status"], "running", "{s}");
            check_all(&d, &ids, &format!("round {r}, after a start"));
        }
        if !listed.is_empty() {
            let mut args = vec!["rm", "-f"];
            args.extend(listed.iter().map(String::as_str));
            d.ok(&args);
        }
        let all: HashSet<String> = ids.union(&listed.into_iter().collect()).cloned().collect();
        check_all(&d, &all, &format!("round {r}, after rm -f"));
        assert!(d.ok(&["ps", "-aq"]).is_empty());
    }
    eprintln!("{rounds} rounds in {:?}", t0.elapsed());
    // Dropping the daemon checks that nothing of it is left (mounts, veths, cgroups).
}

/// A daemon killed while its monitor zygote forks a monitor leaves that monitor unnamed
/// for a moment (a copy of the zygote), and it starts its container all the same: the
/// next daemon waits for what the zygote left to go or show itself before it looks at
/// its containers, else it would not see the monitor and would start the container a
/// second time beside it. Stand-ins for both: a zygote that goes when its socket closes,
/// two seconds on, and a monitor never named, which the daemon kills after its wait.
#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn a_daemon_starts_after_what_a_killed_ones_zygote_left() {
    use std::os::unix::process::CommandExt;
    let mut d = with_busybox();
    d.kill9();
    let containers = d.root.join("containers");
    let unnamed = containers.join(format!("{:064x}", std::process::id()));
    fs::create_dir(&unnamed).unwrap();
    let stand_in = |cwd: &Path| {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let child = Command::new(PIER)
            .arg0("pier")
            .arg("__monitor-zygote")
            .current_dir(cwd)
            .stdin(std::os::fd::OwnedFd::from(theirs))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        (child, ours)
    };
    let (mut zygote, zygote_sock) = stand_in(&containers);
    let (mut monitor, _monitor_sock) = stand_in(&unnamed);
    let release = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(2));
        drop(zygote_sock);
    });
    let t = Instant::now();
    d.spawn();
    let took = t.elapsed();
    release.join().unwrap();
    let gone = zygote.try_wait().unwrap();
    assert!(
        gone.is_some_and(|s| s.success()),
        "the daemon answered after {took:?}, while the zygote it must wait for ran ({gone:?})"
    );
    let killed = monitor.try_wait().unwrap();
    assert_eq!(
        killed.and_then(|s| std::os::unix::process::ExitStatusExt::signal(&s)),
        Some(9),
        "the daemon answered after {took:?}, beside an unnamed monitor ({killed:?})"
    );
    assert!(
        d.log()
            .contains("waited for the monitor zygote the last daemon left"),
        "{}",
        d.log()
    );
    // The directory the daemon has no record of went with its sweep; starts work.
    assert!(!unnamed.exists());
    assert_eq!(d.ok(&["run", "--rm", "bb", "echo", "ok"]), "ok\n");
}

/// A process left in a container's cgroup (as a monitor that died used to leave one):
/// `start` refuses to put a second init beside it, and `rm -f` kills it with the rest.
#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn a_start_never_joins_a_process_left_in_the_cgroup() {
    let d = with_busybox();
    let id = d
        .ok(&["run", "-d", "--network", "none", "bb", "sleep", "1000"])
        .trim()
        .to_string();
    let pid = d.json(&["inspect", &id])[0]["state"]["pid"]
        .as_i64()
        .unwrap();
    // Its cgroup in the pids hierarchy (v1) or the unified one (v2).
    let lines = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let cgroup = lines
        .lines()
        .find_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, ctl, path) = (f.next()?, f.next()?, f.next()?);
            (ctl == "pids").then(|| PathBuf::from("/sys/fs/cgroup/pids").join(&path[1..]))
        })
        .or_else(|| {
            lines
                .lines()
                .find_map(|l| l.strip_prefix("0::/"))
                .map(|p| Path::new("/sys/fs/cgroup").join(p))
        })
        .unwrap();
    assert!(cgroup.ends_with(&id), "{}", cgroup.display());
    d.ok(&["stop", "-t", "1", &id]);
    assert!(!cgroup.exists(), "the cgroup goes with the container");
    // A stray process where the container's next init would go.
    fs::create_dir(&cgroup).unwrap();
    let mut stray = Command::new("sleep").arg("1000").spawn().unwrap();
    fs::write(cgroup.join("cgroup.procs"), stray.id().to_string()).unwrap();
    let err = d.fails(&["start", &id]);
    assert!(err.contains("still holds processes"), "{err}");
    let procs = fs::read_to_string(cgroup.join("cgroup.procs")).unwrap();
    assert_eq!(procs.trim(), stray.id().to_string(), "nothing joined it");
    d.ok(&["rm", "-f", &id]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = stray.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "rm -f left the process in the cgroup"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );
    assert!(cgroup_dirs(&id).is_empty(), "{:?}", cgroup_dirs(&id));
}
