//! Root tier: volumes, bind and tmpfs mounts, limits the kernel enforces (bytes, inodes,
//! the writable layer), snapshots, export and import, the project quota, and repair after
//! a crash.

mod common;

use common::*;

fn with_busybox() -> Daemon {
    require_root_and_tools(&["ldd", "mkfs.ext4", "dumpe2fs", "losetup"]);
    let d = Daemon::start();
    d.ok(&["image", "from-host", "bb", BUSYBOX]);
    d
}

fn ok_run(d: &Daemon, args: &[&str]) -> String {
    let (code, text) = try_run(d, args);
    assert_eq!(code, 0, "{args:?}: {text}");
    text
}

/// Checksums of every file under /v, as the container sees them.
/// (Directory sizes are left out: they depend on the filesystem's block size.)
const SUMS: &str = "cd /v && find . -type f | sort | xargs sha256sum; find . -mindepth 1 | sort | while read f; do if [ -d \"$f\" ]; then stat -c '%n %a %u %g %Y' \"$f\"; else stat -c '%n %a %u %g %s %Y %N' \"$f\"; fi; done";

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn named_volumes_keep_data_and_refuse_removal_in_use() {
    let mut d = with_busybox();
    ok_run(
        &d,
        &["-v", "keep:/data", "bb", "sh", "-c", "echo kept > /data/f"],
    );
    assert_eq!(
        ok_run(&d, &["-v", "keep:/data:ro", "bb", "cat", "/data/f"]),
        "kept\n"
    );
    let (code, text) = try_run(
        &d,
        &["-v", "keep:/data:ro", "bb", "sh", "-c", "echo x > /data/g"],
    );
    assert_ne!(code, 0, "a read-only mount must refuse writes: {text}");
    // In use: refused, naming the container.
    d.ok(&[
        "run",
        "-d",
        "--name",
        "user",
        "-v",
        "keep:/data",
        "bb",
        "sleep",
        "300",
    ]);
    let err = d.fails(&["volume", "rm", "keep"]);
    assert!(err.contains("user"), "{err}");
    // Survives a daemon restart (and a crash) with its data.
    d.stop();
    d.spawn();
    d.kill9();
    d.spawn();
    assert_eq!(d.ok(&["exec", "user", "cat", "/data/f"]), "kept\n");
    d.ok(&["rm", "-f", "user"]);
    let v = d.json(&["volume", "inspect", "keep"]);
    assert_eq!(v[0]["usage"]["bytes"], 5, "{v}");
    d.ok(&["volume", "rm", "keep"]);
    assert!(!d.ok(&["volume", "ls", "-q"]).contains("keep"));
    // Bind mounts (a missing host directory is made by -v) and tmpfs with a size.
    let host = d.dir.path().join("shared");
    let bind = format!("{}:/mnt", host.display());
    ok_run(
        &d,
        &[
            "-v",
            &bind,
            "bb",
            "sh",
            "-c",
            "echo from-container > /mnt/x",
        ],
    );
    assert_eq!(
        std::fs::read_to_string(host.join("x")).unwrap(),
        "from-container\n"
    );
    // Propagation: rshared shows as a shared mount inside, the default as private.
    let shared = format!("{}:/mnt:rshared", host.display());
    let info = ok_run(
        &d,
        &[
            "-v",
            &shared,
            "bb",
            "grep",
            " /mnt ",
            "/proc/self/mountinfo",
        ],
    );
    assert!(info.contains("shared:"), "{info}");
    let info = ok_run(
        &d,
        &["-v", &bind, "bb", "grep", " /mnt ", "/proc/self/mountinfo"],
    );
    assert!(!info.contains("shared:"), "{info}");
    // Labels, and filtering by them.
    d.ok(&["volume", "create", "--label", "team=infra", "labelled"]);
    assert_eq!(
        d.ok(&["volume", "ls", "-q", "--filter", "label=team=infra"])
            .trim(),
        "labelled"
    );
    d.ok(&["volume", "rm", "labelled"]);
    let out = ok_run(
        &d,
        &[
            "--tmpfs",
            "/scratch:size=2m",
            "bb",
            "sh",
            "-c",
            "df -k /scratch | tail -1; dd if=/dev/zero of=/scratch/f bs=1M count=3 2>&1; true",
        ],
    );
    assert!(out.contains(" 2048 "), "{out}");
    assert!(out.contains("No space left on device"), "{out}");
    let err = d.fails(&[
        "run",
        "--rm",
        "--mount",
        "type=bind,source=/no/such/dir,target=/x",
        "bb",
        "true",
    ]);
    assert!(err.contains("does not exist"), "{err}");
    // Bad options are refused before anything is made.
    let err = d.fails(&["volume", "create", "--opt", "size=ten", "bad1"]);
    assert!(err.contains("invalid size"), "{err}");
    let err = d.fails(&["volume", "create", "--opt", "size=100t", "bad2"]);
    assert!(err.contains("free"), "{err}");
    let err = d.fails(&["volume", "create", "--opt", "colour=blue", "bad3"]);
    assert!(err.contains("unknown volume option"), "{err}");
    assert!(d.ok(&["volume", "ls", "-q"]).trim().is_empty());
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn limits_hold_bytes_inodes_and_the_writable_layer() {
    let d = with_busybox();
    // A 10 MB volume takes 10 MB and refuses the 11th.
    d.ok(&["volume", "create", "--opt", "size=10m", "ten"]);
    let out = ok_run(&d, &["-v", "ten:/v", "bb", "sh", "-c", "dd if=/dev/zero of=/v/a bs=1M count=10 2>&1 && echo WROTE10; dd if=/dev/zero of=/v/b bs=1M count=1 2>&1; true"]);
    assert!(out.contains("WROTE10"), "{out}");
    assert!(out.contains("No space left on device"), "{out}");
    // An inode-limited volume refuses the file past its limit.
    d.ok(&["volume", "create", "--opt", "inodes=100", "few"]);
    let limit = d.json(&["volume", "inspect", "few"])[0]["inode_limit"]
        .as_u64()
        .unwrap();
    assert!((100..164).contains(&limit), "{limit}");
    let out = ok_run(&d, &["-v", "few:/v", "bb", "sh", "-c", "i=0; while touch /v/f$i 2>/dev/null; do i=$((i+1)); done; echo $i; touch /v/one-more; true"]);
    let mut lines = out.lines();
    assert_eq!(
        lines.next().unwrap().parse::<u64>().unwrap(),
        limit,
        "{out}"
    );
    assert!(out.contains("No space left on device"), "{out}");
    // The writable layer of a container with --storage-opt size.
    let out = ok_run(&d, &["--storage-opt", "size=8m", "bb", "sh", "-c", "dd if=/dev/zero of=/ok bs=1M count=4 2>&1 && echo WROTE4; dd if=/dev/zero of=/big bs=1M count=9 2>&1; true"]);
    assert!(out.contains("WROTE4"), "{out}");
    assert!(out.contains("No space left on device"), "{out}");
    let err = d.fails(&["run", "--rm", "--storage-opt", "size=1k", "bb", "true"]);
    assert!(err.contains("at least"), "{err}");
    // The project quota counts size limits.
    d.ok(&["quota", "--volume-bytes", "30m"]);
    let err = d.fails(&["volume", "create", "--opt", "size=25m", "over"]);
    assert!(err.contains("quota"), "{err}");
    let err = d.fails(&["volume", "create", "unsized"]);
    assert!(err.contains("size"), "{err}");
    d.ok(&["volume", "create", "--opt", "size=15m", "fits"]);
    d.ok(&["quota", "--volume-bytes", "none"]);
    d.ok(&["volume", "create", "unsized"]);
    // A quota on how many volumes, set apart from the bytes one and shown beside it.
    d.ok(&["quota", "--volume-bytes", "1g"]);
    let shown = d.ok(&["quota", "--volumes", "5"]);
    let count: u64 = shown
        .lines()
        .find_map(|l| l.strip_prefix("volumes: "))
        .and_then(|l| l.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no volume count in {shown:?}"));
    assert!(shown.contains("of 1 GiB"), "bytes quota kept: {shown}");
    assert!(shown.contains(&format!("volumes: {count} of 5")), "{shown}");
    let mut made = Vec::new();
    for i in count..5 {
        let name = format!("counted{i}");
        d.ok(&["volume", "create", "--opt", "size=1m", &name]);
        made.push(name);
    }
    let err = d.fails(&["volume", "create", "--opt", "size=1m", "one-too-many"]);
    assert!(err.contains("quota of 5 volumes"), "{err}");
    d.ok(&["volume", "rm", &made[0]]);
    d.ok(&["volume", "create", "--opt", "size=1m", "one-too-many"]);
    d.ok(&["quota", "--volumes", "none", "--volume-bytes", "none"]);
    // Each quota change is an event of the project, with the quotas it left.
    let quotas: Vec<(String, String)> = past_events(&d, "10m", &["type=project"])
        .into_iter()
        .map(|v| {
            assert_eq!(
                (v["action"].as_str(), v["id"].as_str()),
                (Some("quota"), Some("default")),
                "{v}"
            );
            let a = &v["attributes"];
            (
                a["volume_bytes"].as_str().unwrap().to_string(),
                a["volume_count"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want: Vec<(String, String)> = [
        ("31457280", "none"),
        ("none", "none"),
        ("1073741824", "none"),
        ("1073741824", "5"),
        ("none", "none"),
    ]
    .iter()
    .map(|(b, c)| (b.to_string(), c.to_string()))
    .collect();
    assert_eq!(quotas, want);
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn snapshots_exports_and_imports_are_byte_identical() {
    let d = with_busybox();
    let fill = "mkdir -p /v/dir/deep && head -c 300000 /dev/urandom > /v/dir/r && echo hi > /v/dir/deep/h && ln -s dir/r /v/link && chmod 640 /v/dir/r && chown 7:9 /v/dir/deep/h";
    for (vol, opts) in [("plain", vec![]), ("sized", vec!["--opt", "size=20m"])] {
        let mut create = vec!["volume", "create"];
        create.extend(opts.iter());
        create.push(vol);
        d.ok(&create);
        let m = format!("{vol}:/v");
        ok_run(&d, &["-v", &m, "bb", "sh", "-c", fill]);
        let before = ok_run(&d, &["-v", &m, "bb", "sh", "-c", SUMS]);
        // A snapshot taken while a container writes to the volume.
        d.ok(&[
            "run",
            "-d",
            "--name",
            "writer",
            "-v",
            &m,
            "bb",
            "sh",
            "-c",
            "while true; do echo x >> /v/noise; done",
        ]);
        d.ok(&["volume", "snapshot", vol, "s1"]);
        d.ok(&["rm", "-f", "writer"]);
        ok_run(
            &d,
            &[
                "-v",
                &m,
                "bb",
                "sh",
                "-c",
                "rm -rf /v/dir /v/noise; echo changed > /v/new",
            ],
        );
        d.ok(&["volume", "restore", vol, "s1"]);
        ok_run(&d, &["-v", &m, "bb", "rm", "-f", "/v/noise"]);
        assert_eq!(
            ok_run(&d, &["-v", &m, "bb", "sh", "-c", SUMS]),
            before,
            "{vol} restored"
        );
        let snaps = d.ok(&["volume", "snapshots", vol]);
        let rows: Vec<&str> = snaps.lines().skip(1).collect();
        assert_eq!(rows.len(), 1, "{snaps}");
        assert_eq!(rows[0].split_whitespace().next(), Some("s1"), "{snaps}");
        d.ok(&["volume", "snapshot-rm", vol, "s1"]);
        // Each step is an event of the volume, naming the snapshot.
        let filter = format!("volume={vol}");
        let evs = d.ok(&[
            "--format", "json", "events", "--since", "10m", "--until", "0s", "--filter", &filter,
        ]);
        let steps: Vec<String> = evs
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|e| e["attributes"]["snapshot"] == "s1")
            .map(|e| e["action"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(steps, ["snapshot", "restore", "snapshot_destroy"], "{evs}");
        // Export, then import as a new volume.
        let file = d.dir.path().join(format!("{vol}.tar"));
        let sum = d.ok(&["volume", "export", "-o", file.to_str().unwrap(), vol]);
        assert!(sum.starts_with("sha256:"), "{sum}");
        let copy = format!("{vol}-copy");
        d.ok(&["volume", "import", "--name", &copy, file.to_str().unwrap()]);
        let m2 = format!("{copy}:/v");
        assert_eq!(
            ok_run(&d, &["-v", &m2, "bb", "sh", "-c", SUMS]),
            before,
            "{vol} imported"
        );
        // A corrupt archive leaves no volume behind.
        let mut bytes = std::fs::read(&file).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        let bad = d.dir.path().join(format!("{vol}-bad.tar"));
        std::fs::write(&bad, &bytes).unwrap();
        std::fs::copy(
            file.with_extension("tar.sha256"),
            bad.with_extension("tar.sha256"),
        )
        .unwrap();
        let err = d.fails(&[
            "volume",
            "import",
            "--name",
            "broken",
            bad.to_str().unwrap(),
        ]);
        assert!(err.contains("checksum") || err.contains("archive"), "{err}");
        assert!(!d.ok(&["volume", "ls", "-q"]).contains("broken"));
    }
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn anonymous_volumes_copy_up_and_go_with_rm_v() {
    let d = with_busybox();
    // An image with a VOLUME holding content.
    let mut files = vec![("data/seed".to_string(), b"seeded\n".to_vec())];
    files.push(("data/sub/more".to_string(), b"more\n".to_vec()));
    let layer2 = tar_of(&files);
    let archive = docker_archive_with(
        "withvol:1",
        &[busybox_rootfs_tar(), layer2],
        None,
        serde_json::json!({"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"], "Volumes": {"/data": {}}}),
    );
    let file = write_file(&d, "withvol.tar", &archive);
    d.ok(&["image", "load", "-i", &file]);
    d.ok(&[
        "run",
        "--name",
        "a1",
        "withvol:1",
        "sh",
        "-c",
        "cat /data/seed /data/sub/more; echo new > /data/new",
    ]);
    let logs = d.ok(&["logs", "a1"]);
    assert_eq!(logs, "seeded\nmore\n");
    let mounts = d.json(&["inspect", "a1"])[0]["mounts"].clone();
    let anon = mounts[0]["source"].as_str().unwrap().to_string();
    assert_eq!(mounts[0]["target"], "/data");
    assert!(d.ok(&["volume", "ls", "-q"]).contains(&anon));
    // A named volume given for the same path is used instead, also copied up.
    let out = ok_run(&d, &["-v", "given:/data", "withvol:1", "cat", "/data/seed"]);
    assert_eq!(out, "seeded\n");
    // rm without -v keeps the anonymous volume; with -v it goes.
    d.ok(&["run", "--name", "a2", "withvol:1", "true"]);
    let anon2 = d.json(&["inspect", "a2"])[0]["mounts"][0]["source"]
        .as_str()
        .unwrap()
        .to_string();
    d.ok(&["rm", "a2"]);
    assert!(d.ok(&["volume", "ls", "-q"]).contains(&anon2));
    d.ok(&["rm", "-v", "a1"]);
    let left = d.ok(&["volume", "ls", "-q"]);
    assert!(!left.contains(&anon), "{left}");
    // --rm removes its anonymous volumes.
    let before = d.ok(&["volume", "ls", "-q"]).lines().count();
    ok_run(&d, &["withvol:1", "true"]);
    assert_eq!(d.ok(&["volume", "ls", "-q"]).lines().count(), before);
    // prune: anonymous only, then all.
    let pruned = d.ok(&["volume", "prune", "-f"]);
    assert!(
        pruned.contains(&anon2) && !pruned.contains("given"),
        "{pruned}"
    );
    d.ok(&["volume", "prune", "--all", "-f"]);
    assert!(d.ok(&["volume", "ls", "-q"]).trim().is_empty());
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn a_crash_leaves_nothing_mounted_that_no_volume_owns() {
    let mut d = with_busybox();
    d.ok(&["volume", "create", "--opt", "size=5m", "real"]);
    d.kill9();
    // A crash in the middle of a create: the filesystem is made and mounted, the
    // record never written.
    let ghost = d.root.join("volumes/default/ghost");
    std::fs::create_dir_all(ghost.join("_data")).unwrap();
    let img = ghost.join("disk.img");
    let st = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "truncate -s 4M {0} && mkfs.ext4 -q -F {0} && mount -o loop {0} {1}",
            img.display(),
            ghost.join("_data").display()
        ))
        .status()
        .unwrap();
    assert!(st.success());
    // And the real volume's filesystem is unmounted, as after a reboot.
    let real = d.root.join("volumes/default/real/_data");
    assert!(std::process::Command::new("umount")
        .arg(&real)
        .status()
        .unwrap()
        .success());
    d.spawn();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&ghost.display().to_string()),
        "ghost still mounted"
    );
    assert!(!ghost.exists());
    assert!(
        mounts.contains(&real.display().to_string()),
        "the real volume is mounted again"
    );
    ok_run(&d, &["-v", "real:/v", "bb", "touch", "/v/ok"]);
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn block_volumes_attach_as_devices_and_filesystems() {
    let d = with_busybox();
    require_root_and_tools(&["qemu-img", "qemu-storage-daemon"]);
    // A raw image as a block device, written by one container and read by the next.
    d.ok(&[
        "volume", "create", "--driver", "block", "--opt", "size=16m", "rawdev",
    ]);
    let dev = "type=volume,source=rawdev,target=/dev/vdb";
    let out = ok_run(&d, &["--mount", dev, "bb", "sh", "-c", "echo pier-block | dd of=/dev/vdb conv=fsync 2>/dev/null; blockdev --getsize64 /dev/vdb"]);
    assert_eq!(out.trim(), "16777216");
    assert_eq!(
        ok_run(&d, &["--mount", dev, "bb", "head", "-c", "10", "/dev/vdb"]),
        "pier-block"
    );
    // qcow2 with a filesystem, mounted as a directory; its data stays.
    d.ok(&[
        "volume",
        "create",
        "--driver",
        "block",
        "--opt",
        "size=32m",
        "--opt",
        "format=qcow2",
        "--opt",
        "fs=ext4",
        "qfs",
    ]);
    ok_run(
        &d,
        &[
            "-v",
            "qfs:/data",
            "bb",
            "sh",
            "-c",
            "echo in-qcow2 > /data/f",
        ],
    );
    assert_eq!(
        ok_run(&d, &["-v", "qfs:/data", "bb", "cat", "/data/f"]),
        "in-qcow2\n"
    );
    let disk = d.root.join("volumes/default/qfs/disk.qcow2");
    let info = std::process::Command::new("qemu-img")
        .args(["info", "--output=json"])
        .arg(&disk)
        .output()
        .unwrap();
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(info["format"], "qcow2");
    assert_eq!(info["virtual-size"], 32 << 20);
    // The same qcow2 as a device: the ext4 superblock magic is at 1080.
    let out = ok_run(
        &d,
        &[
            "--mount",
            "type=volume,source=qfs,target=/dev/vdc",
            "bb",
            "sh",
            "-c",
            "dd if=/dev/vdc bs=1 skip=1080 count=2 2>/dev/null | od -An -tx1",
        ],
    );
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        ["53", "ef"],
        "{out}"
    );
    // Snapshot and restore of a block volume.
    d.ok(&["volume", "snapshot", "qfs", "before"]);
    ok_run(
        &d,
        &[
            "-v",
            "qfs:/data",
            "bb",
            "sh",
            "-c",
            "echo changed > /data/f",
        ],
    );
    d.ok(&["volume", "restore", "qfs", "before"]);
    assert_eq!(
        ok_run(&d, &["-v", "qfs:/data", "bb", "cat", "/data/f"]),
        "in-qcow2\n"
    );
    // No filesystem: only as a device.
    d.ok(&[
        "volume", "create", "--driver", "block", "--opt", "size=8m", "nofs",
    ]);
    let err = d.fails(&["run", "--rm", "-v", "nofs:/data", "bb", "true"]);
    assert!(err.contains("no filesystem"), "{err}");
    let err = d.fails(&["volume", "create", "--driver", "block", "nosize"]);
    assert!(err.contains("size"), "{err}");
    // Nothing stays attached once no container runs: no loop device, no export.
    let root = d.root.display().to_string();
    let loops = String::from_utf8(
        std::process::Command::new("losetup")
            .arg("-a")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert!(!loops.contains(&root), "{loops}");
    let ps = String::from_utf8(
        std::process::Command::new("ps")
            .args(["-eo", "args"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert!(
        !ps.lines()
            .any(|l| l.contains("qemu-storage-daemon") && l.contains(&root)),
        "{ps}"
    );
}
