//! Root tier, attack test (issue 13, hole 1): `pier cp` and `docker cp` against a container
//! that keeps swapping directories for symlinks to host directories, and against a stopped
//! one with such symlinks in place. No host byte may be read into an archive, none written
//! on the host, and no scratch directory left anywhere.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use common::*;

/// What the race copies out of and into: /r and /w swap between a directory and a
/// symlink to the host, /q and /v flip between such a symlink and nothing.
const READS: [&str; 7] = [
    "racer:/r/marker",
    "racer:/q/marker",
    "racer:/r",
    "racer:/q/sub/marker",
    "racer:/r/sub/marker",
    "racer:/q",
    "racer:/r/sub2",
];
const WRITES: [&str; 6] = [
    "racer:/w/",
    "racer:/v/",
    "racer:/w/sub/",
    "racer:/v/sub/",
    "racer:/w/sub2/",
    "racer:/w/named",
];

/// The docker CLI v28.
const DOCKER: &str = "/usr/local/bin/docker";

fn with_busybox() -> Daemon {
    require_root_and_tools(&["ldd"]);
    assert!(
        Path::new(DOCKER).exists(),
        "{DOCKER} (the docker CLI) is missing: install the docker CLI there"
    );
    let d = Daemon::start();
    d.ok(&["image", "from-host", "bb", BUSYBOX]);
    d
}

/// Every file below `dir` (not following symlinks) with its content or link target.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<(String, Vec<u8>)>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let p = e.path();
            let rel = p.strip_prefix(base).unwrap().display().to_string();
            let m = std::fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                out.push((format!("{rel}/"), Vec::new()));
                walk(base, &p, out);
            } else if m.file_type().is_symlink() {
                let t = std::fs::read_link(&p).unwrap();
                out.push((rel, t.display().to_string().into_bytes()));
            } else {
                out.push((rel, std::fs::read(&p).unwrap()));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out
}

/// Names starting with `.pier-cp-` below `dir`, not following symlinks.
fn scratch_left(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().starts_with(".pier-cp-") {
                found.push(e.path());
            }
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                todo.push(e.path());
            }
        }
    }
    found
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The host side of the attack: a directory with a secret the container points its
/// symlinks at for reads, and one it points them at for writes, which must stay as it is.
struct Host {
    secret: PathBuf,
    victim: PathBuf,
    marker: Vec<u8>,
    payload: PathBuf,
}

impl Host {
    fn new(d: &Daemon) -> Host {
        let base = d.dir.path();
        let (secret, victim) = (base.join("secret"), base.join("victim"));
        std::fs::create_dir_all(secret.join("sub")).unwrap();
        std::fs::create_dir_all(&victim).unwrap();
        let marker = format!("HOST-SECRET-{}-never-in-a-copy", std::process::id()).into_bytes();
        std::fs::write(secret.join("marker"), &marker).unwrap();
        std::fs::write(secret.join("sub/marker"), &marker).unwrap();
        std::fs::write(victim.join("keep"), "keep").unwrap();
        let payload = base.join("payload");
        std::fs::write(&payload, "payload from the host\n").unwrap();
        Host {
            secret,
            victim,
            marker,
            payload,
        }
    }

    /// Asserts that a copy's output holds no host byte.
    fn clean(&self, what: &str, out: &Output) {
        assert!(
            !contains(&out.stdout, &self.marker) && !contains(&out.stderr, &self.marker),
            "{what} read a host file: its output holds the host's marker"
        );
    }
}

/// Runs `n` rounds of `f` (given the round number), counting the successful ones.
fn rounds(n: usize, f: impl Fn(usize) -> bool + Sync) -> usize {
    let ok = AtomicUsize::new(0);
    for i in 0..n {
        if f(i) {
            ok.fetch_add(1, Ordering::Relaxed);
        }
    }
    ok.into_inner()
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn cp_never_follows_a_racing_symlink_onto_the_host() {
    let d = with_busybox();
    let h = Host::new(&d);
    let before = (snapshot(&h.secret), snapshot(&h.victim));
    // /r and /w are directories most of the time and, between, symlinks to the host's
    // secret and victim directories; /q and /v flip between a symlink and nothing. Each
    // swap first heals its directory: a copy into /w/ while /w is briefly gone makes a new
    // /w (a directory, into which the swap would then move /w.tmp, or the payload file
    // itself), as on Docker.
    let script = format!(
        "swap() {{ while true; do heal $1; mv /$1 /$1.tmp; ln -s $2 /$1; ln -s $2/sub /$1.tmp/sub2; rm /$1; mv /$1.tmp /$1; rm -f /$1/sub2; usleep 3000; done; }}; \
         heal() {{ [ -L /$1 ] && rm -f /$1; [ -e /$1 ] && [ ! -d /$1 ] && rm -f /$1; [ -d /$1.tmp ] && [ ! -e /$1 ] && mv /$1.tmp /$1; rm -rf /$1.tmp /$1/$1.tmp; \
         mkdir -p /$1/sub; echo inside > /$1/marker; echo inside > /$1/sub/marker; }}; \
         flip() {{ while true; do ln -s $2 /$1; rm /$1; done; }}; \
         swap r {s} & swap w {v} & flip q {s} & flip v {v} & wait",
        s = h.secret.display(),
        v = h.victim.display()
    );
    d.ok(&["run", "-d", "--name", "racer", "bb", "sh", "-c", &script]);
    // /w is a directory, a symlink or (renamed) /w.tmp at every moment; its marker
    // is in the directory, under one name or the other.
    let made = "test -e /w/marker || test -e /w.tmp/marker";
    wait_until("the racer to make its directories", || {
        d.pier(&["exec", "racer", "sh", "-c", made])
            .status
            .success()
    });

    let t0 = Instant::now();
    let n = 150;
    let payload = h.payload.to_str().unwrap();
    let (pier_reads, pier_writes, docker_reads, docker_writes) = std::thread::scope(|s| {
        let pr = s.spawn(|| {
            rounds(n, |i| {
                let src = READS[i % READS.len()];
                let out = d.pier(&["cp", src, "-"]);
                h.clean(&format!("pier cp {src} -"), &out);
                out.status.success()
            })
        });
        let pw = s.spawn(|| {
            rounds(n, |i| {
                let dst = WRITES[i % WRITES.len()];
                let out = d.pier(&["cp", payload, dst]);
                h.clean(&format!("pier cp payload {dst}"), &out);
                out.status.success()
            })
        });
        let dr = s.spawn(|| {
            rounds(n, |i| {
                let src = READS[i % READS.len()];
                let out = d.docker(DOCKER, &["cp", src, "-"]);
                h.clean(&format!("docker cp {src} -"), &out);
                out.status.success()
            })
        });
        let dw = s.spawn(|| {
            rounds(n, |i| {
                let dst = WRITES[i % WRITES.len()];
                let out = d.docker(DOCKER, &["cp", payload, dst]);
                h.clean(&format!("docker cp payload {dst}"), &out);
                out.status.success()
            })
        });
        (
            pr.join().unwrap(),
            pw.join().unwrap(),
            dr.join().unwrap(),
            dw.join().unwrap(),
        )
    });
    eprintln!(
        "{n} rounds each in {:?}: pier reads {pier_reads}, writes {pier_writes}; docker reads {docker_reads}, writes {docker_writes} succeeded",
        t0.elapsed()
    );
    // Copies each way worked against the real paths: the race was run, not just
    // refused. How many depends on the racer's timing.
    for (what, ok) in [
        ("pier cp out", pier_reads),
        ("pier cp in", pier_writes),
        ("docker cp out", docker_reads),
        ("docker cp in", docker_writes),
    ] {
        assert!(ok >= n / 30, "{what}: only {ok} of {n} copies worked");
    }
    assert_eq!(
        (snapshot(&h.secret), snapshot(&h.victim)),
        before,
        "the host's directories changed under the copies"
    );
    // The racer still races: its swaps heal and remake its directories.
    wait_until("the racer to be still racing", || {
        d.pier(&["exec", "racer", "sh", "-c", made])
            .status
            .success()
    });
    d.ok(&["rm", "-f", "racer"]);
    let left = scratch_left(&d.root);
    assert!(left.is_empty(), "scratch directories left: {left:?}");
    let left = scratch_left(d.dir.path());
    assert!(left.is_empty(), "scratch directories left: {left:?}");
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn cp_of_a_stopped_container_stays_inside_its_root() {
    let d = with_busybox();
    let h = Host::new(&d);
    let before = (snapshot(&h.secret), snapshot(&h.victim));
    let (secret, victim) = (h.secret.display(), h.victim.display());
    d.ok(&[
        "run",
        "--name",
        "still",
        "bb",
        "sh",
        "-c",
        &format!(
            "ln -s {secret} /r; ln -s {victim} /w; mkdir -p /x /tmp {secret} {victim}; echo inside > {secret}/marker; \
             ln -s {secret} /x/link; ln -s / /x/root"
        ),
    ]);
    let payload = h.payload.to_str().unwrap();
    // Reads: the symlinks resolve inside the container (to the container's own copy of
    // the secret's path), or are copied as symlinks.
    let out = d.pier(&["cp", "still:/r/marker", "-"]);
    h.clean("pier cp still:/r/marker", &out);
    assert!(
        contains(&out.stdout, b"inside\n"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for src in [
        "still:/x",
        "still:/x/link",
        "still:/x/link/",
        "still:/x/../../../etc/passwd",
        "still:/x/root/../../etc/passwd",
        "still:/",
    ] {
        let out = d.pier(&["cp", src, "-"]);
        h.clean(&format!("pier cp {src}"), &out);
        let out = d.docker(DOCKER, &["cp", src, "-"]);
        h.clean(&format!("docker cp {src}"), &out);
    }
    let out = d.pier(&["export", "still"]);
    h.clean("pier export", &out);
    // Writes: into the container's own directories, never the host's.
    for dst in [
        "still:/w/",
        "still:/x/link/",
        "still:/x/../../../",
        "still:/x/root/tmp/",
        "still:/w/sub/",
    ] {
        let _ = d.pier(&["cp", payload, dst]);
        let _ = d.docker(DOCKER, &["cp", payload, dst]);
    }
    d.ok(&["cp", payload, "still:/x/root/../../"]);
    d.ok(&["commit", "still", "still:1"]);
    d.ok(&["diff", "still"]);
    let out = d.ok(&[
        "run",
        "--rm",
        "still:1",
        "cat",
        "/payload",
        &format!("{victim}/payload"),
    ]);
    assert_eq!(out, "payload from the host\npayload from the host\n");
    assert_eq!(
        (snapshot(&h.secret), snapshot(&h.victim)),
        before,
        "the host's directories changed under the copies"
    );
    d.ok(&["rm", "-f", "still"]);
    let left = scratch_left(&d.root);
    assert!(left.is_empty(), "scratch directories left: {left:?}");
}

/// Runs `cmd` (its output a tar archive), for at most `limit`; returns the archive's
/// entry names.
fn archive_names_within(mut cmd: std::process::Command, limit: std::time::Duration) -> Vec<String> {
    use std::io::Read;
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        // Bounded: an archive that never ends stops being kept past 256 MiB.
        let _ = out.by_ref().take(256 << 20).read_to_end(&mut buf);
        buf
    });
    let deadline = Instant::now() + limit;
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the copy did not end within {limit:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let buf = reader.join().unwrap();
    let mut a = tar::Archive::new(&buf[..]);
    a.entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect()
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn cp_of_a_running_root_leaves_kernel_views_empty() {
    let d = with_busybox();
    d.ok(&["run", "-d", "--name", "c", "bb", "sleep", "1000"]);
    let mut cmd = d.cmd();
    cmd.args(["cp", "c:/", "-"]);
    let names = archive_names_within(cmd, std::time::Duration::from_secs(60));
    let has = |n: &str| names.iter().any(|x| x.trim_end_matches('/') == n);
    assert!(has("usr/bin/busybox") && has("etc/hosts"), "{names:?}");
    assert!(
        has("proc") && has("sys"),
        "the mount points are there: {names:?}"
    );
    let inside: Vec<_> = names
        .iter()
        .filter(|n| n.starts_with("proc/") && n.len() > 5 || n.starts_with("sys/") && n.len() > 4)
        .collect();
    assert!(
        inside.is_empty(),
        "kernel views copied: {:?}",
        &inside[..inside.len().min(5)]
    );
    // Asked for by name, /proc is an empty directory too (docker cp as well).
    let mut cmd = d.docker_cmd(DOCKER);
    cmd.args(["cp", "c:/proc", "-"]);
    let names = archive_names_within(cmd, std::time::Duration::from_secs(60));
    assert_eq!(names.len(), 1, "{names:?}");
    d.ok(&["rm", "-f", "c"]);
}
