//! Root tier: the image store through the real daemon and CLI, and against the real
//! clients (Podman, skopeo) that must read and write the same archives.

mod common;

use std::process::Command;

use common::*;
use pier_archive::testing::craft;
use tar::EntryType;

fn ids(d: &Daemon) -> Vec<String> {
    let v = d.json(&["images"]);
    let mut ids: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn from_host_import_and_image_commands() {
    require_root_and_tools(&["ldd"]);
    let d = Daemon::start();

    // from-host: a runnable busybox image with applets.
    let out = d.ok(&["image", "from-host", "base:1", BUSYBOX]);
    assert_eq!(out.trim(), "Loaded image: base:1");
    let base = d.json(&["image", "inspect", "base:1"]);
    let base = &base[0];
    assert_eq!(base["config"]["Cmd"][0], "/bin/sh");
    assert_eq!(base["os"], "linux");
    assert_eq!(base["repo_tags"][0], "base:1");
    let diff = base["layers"][0]["diff_id"]
        .as_str()
        .unwrap()
        .strip_prefix("sha256:")
        .unwrap()
        .to_string();
    let layer = d.root.join("images/layers").join(&diff);
    assert!(
        layer.join("bin/sh").symlink_metadata().is_ok(),
        "busybox applets in the image"
    );
    assert!(layer.join("etc/passwd").exists());

    // import: a flat rootfs, gzip-compressed.
    let rootfs = busybox_rootfs_tar();
    let gz = {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut e, &rootfs).unwrap();
        e.finish().unwrap()
    };
    let path = write_file(&d, "rootfs.tar.gz", &gz);
    assert_eq!(
        d.ok(&[
            "image",
            "import",
            &path,
            "registry.example.com:5000/team/bb:v2"
        ])
        .trim(),
        "Loaded image: registry.example.com:5000/team/bb:v2"
    );
    let bb = &d.json(&["image", "inspect", "registry.example.com:5000/team/bb:v2"])[0];
    assert_eq!(
        bb["layers"][0]["diff_id"],
        format!("sha256:{}", sha256_hex(&rootfs)),
        "diff ID is the uncompressed tar's digest"
    );
    assert_eq!(
        bb["layers"][0]["media_type"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    let bb_id = bb["id"].as_str().unwrap().to_string();

    // The table.
    let table = d.ok(&["images"]);
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("REPOSITORY"), "{table}");
    assert!(
        table.contains("registry.example.com:5000/team/bb   v2"),
        "{table}"
    );
    assert!(table.contains(&bb_id[7..19]), "{table}");

    // history
    let h = d.json(&["image", "history", "base:1"]);
    assert_eq!(
        h[0]["created_by"],
        format!("pier image from-host {BUSYBOX}")
    );
    assert!(h[0]["size"].as_u64().unwrap() > 1_000_000);

    // tag, then rm by tag only untags while another tag remains.
    d.ok(&[
        "image",
        "tag",
        "registry.example.com:5000/team/bb:v2",
        "bb:latest",
    ]);
    assert_eq!(d.json(&["image", "inspect", "bb"])[0]["id"], bb_id);
    let out = d.ok(&["image", "rm", "bb"]);
    assert_eq!(out.trim(), "Untagged: bb:latest");
    assert!(ids(&d).contains(&bb_id));

    // By ID with several tags: refused without -f.
    d.ok(&["image", "tag", &bb_id, "bb:x"]);
    let err = d.fails(&["image", "rm", &bb_id[7..19]]);
    assert!(
        err.contains("several tags") && err.contains("--force"),
        "{err}"
    );
    let out = d.ok(&["rmi", "-f", &bb_id[7..19]]);
    assert!(
        out.contains("Untagged: bb:x") && out.contains(&format!("Deleted: {bb_id}")),
        "{out}"
    );
    assert!(!ids(&d).contains(&bb_id));

    let base_id = d.json(&["image", "inspect", "base:1"])[0]["id"]
        .as_str()
        .unwrap()
        .to_string();

    // prune: an untagged image goes; a tagged one stays unless -a.
    d.ok(&["image", "import", &path]);
    assert_eq!(ids(&d).len(), 2);
    let pruned = d.json(&["image", "prune", "-f"]);
    assert_eq!(pruned["deleted"].as_array().unwrap().len(), 1);
    assert!(pruned["reclaimed_bytes"].as_u64().unwrap() > 0);
    assert_eq!(ids(&d), vec![base_id.clone()]);
    d.json(&["image", "prune", "-a", "-f"]);
    assert!(ids(&d).is_empty());
    assert!(
        d.image_files()
            .iter()
            .all(|(p, _)| p.ends_with('/') || p == "oci/oci-layout"),
        "files left after prune -a: {:?}",
        d.image_files()
    );
}

/// An image a container uses stays until the container goes, also across a restart
/// (the container's pin is durable, written with its record), and not a moment longer.
#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn an_image_in_use_stays_until_its_container_is_removed() {
    require_root_and_tools(&[]);
    let mut d = Daemon::start();
    let path = write_file(&d, "rootfs.tar", &busybox_rootfs_tar());
    d.ok(&["image", "import", &path, "used:1"]);
    let image = d.json(&["image", "inspect", "used:1"])[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    d.ok(&["create", "--name", "user", "used:1", "true"]);
    let cid = d.json(&["inspect", "user"])[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let refused = |d: &Daemon| {
        let err = d.fails(&["image", "rm", "used:1"]);
        assert!(
            err.contains(&format!(
                "image {} is used by container(s) {cid}",
                &image[7..19]
            )) && err.contains("--force"),
            "{err}"
        );
        assert!(d.json(&["image", "prune", "-a", "-f"])["deleted"]
            .as_array()
            .unwrap()
            .is_empty());
        assert_eq!(ids(d), vec![image.clone()]);
        assert_eq!(d.json(&["images"])[0]["containers"], 1);
    };
    refused(&d);
    d.stop();
    d.spawn();
    refused(&d);

    d.ok(&["rm", "user"]);
    assert_eq!(d.json(&["images"])[0]["containers"], 0);
    let out = d.ok(&["image", "rm", "used:1"]);
    assert!(
        out.contains("Untagged: used:1") && out.contains(&format!("Deleted: {image}")),
        "{out}"
    );
    assert!(ids(&d).is_empty());
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn clear_errors_for_bad_input() {
    require_root_and_tools(&[]);
    let d = Daemon::start();
    let err = d.fails(&["image", "inspect", "nosuch:1"]);
    assert!(err.contains("no such image: nosuch:1"), "{err}");
    let err = d.fails(&["image", "tag", "nosuch", "Bad Name"]);
    assert!(err.contains("invalid image reference"), "{err}");
    let err = d.fails(&["image", "inspect", "UPPER/case"]);
    assert!(err.contains("lowercase"), "{err}");
    let junk = write_file(&d, "junk.tar", &[0x42u8; 4096]);
    let err = d.fails(&["image", "load", "-i", &junk]);
    assert!(err.contains("not a valid image archive"), "{err}");
    let err = d.fails(&["image", "from-host", "x", "/no/such/binary"]);
    assert!(err.contains("/no/such/binary"), "{err}");
    let err = Command::new(PIER)
        .args(["--host", "/nonexistent/pier.sock", "images"])
        .output()
        .unwrap();
    let msg = String::from_utf8_lossy(&err.stderr);
    assert!(
        msg.contains("cannot reach the Pier daemon") && msg.contains("pier daemon"),
        "{msg}"
    );

    // A second daemon on the same state directory is refused at once.
    let out = Command::new(PIER)
        .args(["daemon", "--root"])
        .arg(&d.root)
        .arg("--socket")
        .arg(d.dir.path().join("other.sock"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("another pier daemon"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn hostile_archives_are_refused_and_change_nothing() {
    require_root_and_tools(&[]);
    let d = Daemon::start();
    let good = busybox_rootfs_tar();
    d.ok(&[
        "image",
        "import",
        &write_file(&d, "good.tar", &good),
        "good:1",
    ]);
    let before = d.image_files();
    let images_before = ids(&d);

    let layers: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "dotdot",
            craft(&[("../../etc/evil", EntryType::Regular, b"x")]),
            "climbs out of the root",
        ),
        (
            "absolute",
            craft(&[("/etc/evil", EntryType::Regular, b"x")]),
            "absolute path",
        ),
        (
            "symlink-escape",
            craft(&[("esc", EntryType::Symlink, b"../../../../etc")]),
            "outside the root",
        ),
        (
            "through-symlink",
            craft(&[
                ("etc", EntryType::Symlink, b"/etc"),
                ("etc/cron.d/evil", EntryType::Regular, b"x"),
            ]),
            "through the symlink",
        ),
        (
            "hardlink-escape",
            craft(&[("hl", EntryType::Link, b"../../../etc/shadow")]),
            "outside the root",
        ),
        (
            "hardlink-absolute",
            craft(&[("hl", EntryType::Link, b"/etc/shadow")]),
            "outside the root",
        ),
        (
            "device",
            craft(&[("dev/kmem", EntryType::Char, b"")]),
            "device node",
        ),
        (
            "block-device",
            craft(&[("dev/sda", EntryType::Block, b"")]),
            "device node",
        ),
        ("huge", huge_entry(), "claims 1125899906842624 bytes"),
        (
            "truncated",
            craft(&[("big", EntryType::Regular, &[1u8; 4096])])[..2048].to_vec(),
            "corrupt or truncated",
        ),
    ];
    for (name, tar, expect) in &layers {
        // As a rootfs import...
        let err = d.fails(&[
            "image",
            "import",
            &write_file(&d, &format!("{name}.tar"), tar),
            &format!("evil:{name}"),
        ]);
        assert!(err.contains(expect), "{name}: {err}");
        // ...and as a layer inside a docker archive, after a good layer.
        let archive = docker_archive(&format!("evil2:{name}"), &[good.clone(), tar.clone()], None);
        let err = d.fails(&[
            "image",
            "load",
            "-i",
            &write_file(&d, &format!("{name}-archive.tar"), &archive),
        ]);
        assert!(err.contains(expect), "{name} in an archive: {err}");
        assert_eq!(d.image_files(), before, "{name} changed the store");
        assert_eq!(ids(&d), images_before, "{name} added an image");
        assert!(d.tmp_is_empty(), "{name} left scratch files");
    }

    // Archives whose outer structure lies.
    let wrong_diff = docker_archive(
        "lie:1",
        std::slice::from_ref(&good),
        Some(vec![format!("sha256:{}", "0".repeat(64))]),
    );
    let missing_layer = {
        let a = docker_archive("lie:2", std::slice::from_ref(&good), None);
        let mut ar = tar::Archive::new(&a[..]);
        let files: Vec<(String, Vec<u8>)> = ar
            .entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let mut v = Vec::new();
                std::io::Read::read_to_end(&mut e, &mut v).unwrap();
                (e.path().unwrap().to_string_lossy().into_owned(), v)
            })
            .filter(|(n, _)| !n.ends_with("layer.tar"))
            .collect();
        tar_of(&files)
    };
    let escaping_names = tar_of(&[(
        "manifest.json".into(),
        br#"[{"Config":"../../../etc/passwd","RepoTags":["x:1"],"Layers":[]}]"#.to_vec(),
    )]);
    for (name, archive, expect) in [
        ("wrong-diff-id", wrong_diff, "should have digest"),
        ("missing-layer", missing_layer, "does not have"),
        ("escaping-config-path", escaping_names, "climbs out"),
    ] {
        let err = d.fails(&[
            "image",
            "load",
            "-i",
            &write_file(&d, &format!("{name}.tar"), &archive),
        ]);
        assert!(err.contains(expect), "{name}: {err}");
        assert_eq!(d.image_files(), before, "{name} changed the store");
        assert!(d.tmp_is_empty());
    }
    assert_eq!(ids(&d), images_before);
}

fn huge_entry() -> Vec<u8> {
    let mut h = tar::Header::new_gnu();
    h.set_path("huge").unwrap();
    h.set_size(1 << 50);
    h.set_entry_type(EntryType::Regular);
    h.set_cksum();
    let mut t = h.as_bytes().to_vec();
    t.resize(t.len() + 4096, 0);
    t
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn podman_and_skopeo_round_trip() {
    require_root_and_tools(&["podman", "skopeo", "runc"]);
    let d = Daemon::start();
    let dir = d.dir.path();
    let pr = dir.join("podman");
    let podman = |args: &[&str]| {
        let out = Command::new("podman")
            .arg("--root")
            .arg(pr.join("root"))
            .arg("--runroot")
            .arg(pr.join("run"))
            .args([
                "--storage-driver",
                "vfs",
                "--runtime",
                "runc",
                "--cgroup-manager",
                "cgroupfs",
                "--events-backend",
                "file",
            ])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "podman {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };

    // Podman makes a busybox image and saves it in both formats; Pier loads both.
    let rootfs = write_file(&d, "rootfs.tar", &busybox_rootfs_tar());
    podman(&[
        "import",
        "--change",
        "CMD [\"/bin/sh\"]",
        &rootfs,
        "localhost/pbb:1",
    ]);
    let podman_archive = dir.join("podman.tar").to_string_lossy().into_owned();
    podman(&[
        "save",
        "--format",
        "docker-archive",
        "-o",
        &podman_archive,
        "localhost/pbb:1",
    ]);
    assert_eq!(
        d.ok(&["image", "load", "-i", &podman_archive]).trim(),
        "Loaded image: localhost/pbb:1"
    );
    let podman_oci = dir.join("podman-oci.tar").to_string_lossy().into_owned();
    podman(&[
        "save",
        "--format",
        "oci-archive",
        "-o",
        &podman_oci,
        "localhost/pbb:1",
    ]);
    d.ok(&["image", "load", "-i", &podman_oci]);
    let img = &d.json(&["image", "inspect", "localhost/pbb:1"])[0];
    assert_eq!(img["config"]["Cmd"][0], "/bin/sh");
    let podman_id = podman(&[
        "images",
        "--no-trunc",
        "--format",
        "{{.ID}}",
        "localhost/pbb:1",
    ]);
    let podman_id = podman_id.trim().trim_start_matches("sha256:");
    assert_eq!(
        img["id"].as_str().unwrap(),
        format!("sha256:{podman_id}"),
        "loading keeps the image ID"
    );

    // Pier saves; Podman and skopeo read what Pier wrote, in both formats.
    let pier_archive = dir.join("pier.tar").to_string_lossy().into_owned();
    d.ok(&["image", "save", "-o", &pier_archive, "localhost/pbb:1"]);
    d.ok(&["image", "tag", "localhost/pbb:1", "localhost/pbb:again"]);
    podman(&["rmi", "-a", "-f"]);
    let loaded = podman(&["load", "-i", &pier_archive]);
    assert!(loaded.contains("localhost/pbb:1"), "{loaded}");
    let listed = podman(&[
        "images",
        "--no-trunc",
        "--format",
        "{{.ID}} {{.Repository}}:{{.Tag}}",
    ]);
    assert!(
        listed.contains(&format!("{podman_id} localhost/pbb:1")),
        "{listed}"
    );

    let sk_dir = dir.join("sk-oci");
    let st = Command::new("skopeo")
        .args([
            "copy",
            "-q",
            &format!("docker-archive:{pier_archive}"),
            &format!("oci:{}:copied", sk_dir.display()),
        ])
        .status()
        .unwrap();
    assert!(st.success(), "skopeo reads Pier's docker archive");
    let pier_oci = dir.join("pier-oci.tar").to_string_lossy().into_owned();
    d.ok(&[
        "image",
        "save",
        "--type",
        "oci-archive",
        "-o",
        &pier_oci,
        "localhost/pbb:1",
    ]);
    let inspect = Command::new("skopeo")
        .args(["inspect", "--raw", &format!("oci-archive:{pier_oci}")])
        .output()
        .unwrap();
    assert!(
        inspect.status.success(),
        "skopeo reads Pier's OCI archive: {}",
        String::from_utf8_lossy(&inspect.stderr)
    );
    let manifest: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(manifest["config"]["digest"], img["id"]);

    // skopeo's own OCI output loads back into Pier.
    let sk_tar = dir.join("sk.tar").to_string_lossy().into_owned();
    let st = Command::new("skopeo")
        .args([
            "copy",
            "-q",
            &format!("oci-archive:{pier_oci}"),
            &format!("oci-archive:{sk_tar}:docker.io/library/fromskopeo:1"),
        ])
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(
        d.ok(&["image", "load", "-i", &sk_tar]).trim(),
        "Loaded image: fromskopeo:1"
    );

    // The image store itself is an OCI layout skopeo can read.
    let layout = format!(
        "oci:{}:docker.io/library/fromskopeo:1",
        d.root.join("images/oci").display()
    );
    let st = Command::new("skopeo")
        .args(["inspect", "--raw", &layout])
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "skopeo reads the store's layout: {}",
        String::from_utf8_lossy(&st.stderr)
    );

    // Round trip through Pier's own save and load into a second daemon.
    let d2 = Daemon::start();
    d2.ok(&["image", "load", "-i", &pier_archive]);
    assert_eq!(
        d2.json(&["image", "inspect", "localhost/pbb:1"])[0]["id"],
        img["id"]
    );
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn restart_keeps_images_and_a_killed_load_leaves_nothing() {
    require_root_and_tools(&[]);
    let mut d = Daemon::start();
    d.ok(&[
        "image",
        "import",
        &write_file(&d, "rootfs.tar", &busybox_rootfs_tar()),
        "keep:1",
    ]);
    d.ok(&["image", "from-host", "keep:2", BUSYBOX]);
    let before = ids(&d);
    let files = d.image_files();
    d.stop();
    d.spawn();
    assert_eq!(ids(&d), before);
    assert!(d.ok(&["image", "inspect", "keep:1"]).contains("keep:1"));

    // A large load, killed with SIGKILL in the middle.
    let mut big = Vec::with_capacity(96 << 20);
    let mut x: u64 = 0x9E3779B97F4A7C15;
    while big.len() < (96 << 20) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        big.extend_from_slice(&x.to_le_bytes());
    }
    let layer = tar_of(&[("blob".into(), big)]);
    let archive = write_file(&d, "big.tar", &docker_archive("big:1", &[layer], None));
    let mut load = d
        .cmd()
        .args(["image", "load", "-i", &archive])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let tmp = d.root.join("images/tmp");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let staged: u64 = walkdir_size(&tmp);
        if staged > (8 << 20) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the load never started staging"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    d.kill9();
    let _ = load.wait();
    d.spawn();
    assert_eq!(ids(&d), before, "no partial image is visible");
    assert_eq!(
        d.image_files(),
        files,
        "the restart removed what the killed load wrote"
    );
    assert!(d.tmp_is_empty());
    d.ok(&["image", "load", "-i", &archive]);
    assert_eq!(ids(&d).len(), before.len() + 1);
}

fn walkdir_size(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let m = e.metadata().unwrap();
            total += if m.is_dir() {
                walkdir_size(&e.path())
            } else {
                m.len()
            };
        }
    }
    total
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn a_full_disk_is_reported_and_leaves_nothing() {
    require_root_and_tools(&[]);
    // A daemon whose state lives on a 24 MB tmpfs.
    let mut d = Daemon::start();
    d.stop();
    std::fs::remove_dir_all(&d.root).unwrap();
    std::fs::create_dir(&d.root).unwrap();
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=24m", "pier-test-full"])
        .arg(&d.root)
        .status()
        .unwrap();
    assert!(st.success(), "mount a tmpfs");
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _guard = Unmount(d.root.clone());
    d.spawn();
    let before = d.image_files();
    let big = vec![7u8; 16 << 20];
    let layer = tar_of(&[("a".into(), big.clone()), ("b".into(), big)]);
    let err = d.fails(&[
        "image",
        "import",
        &write_file(&d, "big.tar", &layer),
        "big:1",
    ]);
    assert!(
        err.contains("full") || err.contains("free on the disk"),
        "{err}"
    );
    assert_eq!(d.image_files(), before);
    assert!(d.tmp_is_empty());
    d.stop();
}

/// A private dockerd for one test: its own data root, exec root and socket, no networking.
struct Dockerd {
    dir: tempfile::TempDir,
    child: std::process::Child,
}

impl Dockerd {
    fn start() -> Dockerd {
        let dir = tempfile::Builder::new()
            .prefix("pier-dockerd-")
            .tempdir()
            .unwrap();
        let p = dir.path();
        let log = std::fs::File::create(p.join("log")).unwrap();
        let child = Command::new("dockerd")
            .arg("--data-root")
            .arg(p.join("data"))
            .arg("--exec-root")
            .arg(p.join("exec"))
            .arg("--pidfile")
            .arg(p.join("pid"))
            .arg("-H")
            .arg(format!("unix://{}", p.join("sock").display()))
            .args([
                "--iptables=false",
                "--ip6tables=false",
                "--bridge=none",
                "--storage-driver=vfs",
            ])
            .args([
                "--containerd-namespace",
                "pier-test",
                "--containerd-plugins-namespace",
                "pier-test-p",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let d = Dockerd { dir, child };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !d.docker(&["version"]).status.success() {
            assert!(
                std::time::Instant::now() < deadline,
                "dockerd did not start: {}",
                std::fs::read_to_string(d.dir.path().join("log")).unwrap_or_default()
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        d
    }

    fn docker(&self, args: &[&str]) -> std::process::Output {
        Command::new("docker")
            .env(
                "DOCKER_HOST",
                format!("unix://{}", self.dir.path().join("sock").display()),
            )
            .args(args)
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(
            out.status.success(),
            "docker {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).unwrap();
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        let _ = self.child.wait();
    }
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn docker_load_and_save_round_trip() {
    require_root_and_tools(&["dockerd", "docker"]);
    let d = Daemon::start();
    let dockerd = Dockerd::start();
    let dir = d.dir.path();

    // Docker makes an image from a busybox rootfs and saves it; Pier loads it.
    let rootfs = write_file(&d, "rootfs.tar", &busybox_rootfs_tar());
    let id = dockerd.ok(&["import", "--change", "CMD [\"/bin/sh\"]", &rootfs, "dbb:1"]);
    let docker_archive = dir.join("docker.tar").to_string_lossy().into_owned();
    dockerd.ok(&["save", "-o", &docker_archive, "dbb:1"]);
    assert_eq!(
        d.ok(&["image", "load", "-i", &docker_archive]).trim(),
        "Loaded image: dbb:1"
    );
    let img = &d.json(&["image", "inspect", "dbb:1"])[0];
    assert_eq!(
        img["id"].as_str().unwrap(),
        id.trim(),
        "the image ID survives the load"
    );

    // Pier saves it back (and an image of its own); docker load reads both.
    d.ok(&["image", "from-host", "pierbb:2", BUSYBOX]);
    let pier_archive = dir.join("pier.tar").to_string_lossy().into_owned();
    d.ok(&["image", "save", "-o", &pier_archive, "dbb:1", "pierbb:2"]);
    dockerd.ok(&["rmi", "dbb:1"]);
    let out = dockerd.ok(&["load", "-i", &pier_archive]);
    assert!(
        out.contains("Loaded image: dbb:1") && out.contains("Loaded image: pierbb:2"),
        "{out}"
    );
    let listed = dockerd.ok(&[
        "images",
        "--no-trunc",
        "--format",
        "{{.ID}} {{.Repository}}:{{.Tag}}",
    ]);
    assert!(listed.contains(&format!("{} dbb:1", id.trim())), "{listed}");
    let pier_id = d.json(&["image", "inspect", "pierbb:2"])[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(listed.contains(&format!("{pier_id} pierbb:2")), "{listed}");
}
