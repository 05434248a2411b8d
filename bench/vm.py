#!/usr/bin/env python3
"""Pier's VM figures, next to their floor, in one run:

    sudo python3 bench/vm.py [--pier PATH] [--runs N] [--accel tcg|kvm|auto]

- `pier run --rm --vm IMAGE /bin/true`, start to exit (the CLI's wall time);
- the floor: bare QEMU booting the same kernel with the same machine, accelerator and
  kernel command line, and an initramfs whose /init powers off at once;
- memory per idle VM: the proportional set size (PSS) of every process of one VM
  (`pier __vm`, QEMU, virtiofsd) running `sleep 600`, after it settled.

The two timings take turns run by run, so that load on the machine falls on both. The
assets are what `scripts/vm-assets.sh` installs. Results go to bench/results/vm.json and
vm.md.
"""
import argparse
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUSYBOX = "/bin/busybox"


def run(argv, env=None, out=False):
    p = subprocess.run(argv, env=env, capture_output=True)
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({p.returncode}): {p.stderr.decode(errors='replace').strip()}")
    return p.stdout.decode() if out else None


def newc(entries):
    """A newc cpio archive of (name, mode, data) entries (data None for a directory)."""
    out = bytearray()
    ino = 1
    for name, mode, data in entries + [("TRAILER!!!", 0, b"")]:
        data = data or b""
        nm = name.encode() + b"\0"
        hdr = "070701" + "".join(f"{v:08x}" for v in [ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(nm), 0])
        out += hdr.encode() + nm
        out += b"\0" * ((4 - len(out) % 4) % 4)
        out += data
        out += b"\0" * ((4 - len(out) % 4) % 4)
        ino += 1
    return bytes(out)


def floor_initramfs(path):
    """busybox, and an /init that powers the machine off at once."""
    with open(BUSYBOX, "rb") as f:
        bb = f.read()
    init = b"#!/bin/busybox sh\n/bin/busybox poweroff -f\n"
    entries = [("bin", 0o040755, None), ("bin/busybox", 0o100755, bb), ("init", 0o100755, init)]
    with open(path, "wb") as f:
        f.write(newc(entries))


def qemu_floor_argv(kernel, initrd, accel):
    append = "console=ttyS0 quiet panic=-1 pci=off"
    if accel == "tcg":
        append += " tsc_early_khz=2000000 lpj=4000000"
    return ["qemu-system-x86_64", "-M", "microvm", "-accel", accel if accel == "kvm" else "tcg,tb-size=64",
            "-m", "256", "-smp", "1", "-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
            "-serial", "null", "-kernel", kernel, "-initrd", initrd, "-append", append]


def timed(argv, env=None):
    t = time.perf_counter()
    run(argv, env)
    return (time.perf_counter() - t) * 1000


def pss_kib(pid):
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def vm_processes(cdir):
    """Processes working in the VM's directory: pier __vm, QEMU, virtiofsd."""
    pids = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{p}/cwd").startswith(cdir):
                pids.append(int(p))
        except OSError:
            pass
    return pids


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pier", default=os.path.join(ROOT, "target/release/pier"))
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--accel", default="tcg", choices=["tcg", "kvm", "auto"])
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run the benchmarks as root")
    if os.environ.get("PIER_BENCH_NETNS") != "1":
        # A network namespace of its own, as bench.py: the daemon's bridge and firewall
        # table go with it, leaving nothing on the host.
        os.execvpe("unshare", ["unshare", "--net", "--", sys.executable, os.path.abspath(__file__), *sys.argv[1:]],
                   dict(os.environ, PIER_BENCH_NETNS="1"))
    run(["ip", "link", "set", "lo", "up"])
    assets = os.environ.get("PIER_VM_DIR", "/usr/local/lib/pier/vm")
    kernel = os.path.join(assets, "vmlinuz")
    if not os.path.exists(kernel):
        sys.exit(f"{kernel} is missing: run scripts/vm-assets.sh")
    began = time.perf_counter()
    work = tempfile.mkdtemp(prefix="pier-vmbench-")
    sock = os.path.join(work, "pier.sock")
    env = dict(os.environ, PIER_HOST=sock)
    daemon = subprocess.Popen([args.pier, "daemon", "--root", os.path.join(work, "root"), "--socket", sock,
                               "--docker-socket", "", "--vm-accel", args.accel],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            if subprocess.run([args.pier, "info"], env=env, capture_output=True).returncode == 0:
                break
            time.sleep(0.05)
        run([args.pier, "image", "from-host", "bench:1", BUSYBOX], env)
        accel = json.loads(run([args.pier, "--format", "json", "info"], env, out=True))["vm"]["accel"]
        initrd = os.path.join(work, "floor.cpio")
        floor_initramfs(initrd)
        pier_argv = [args.pier, "run", "--rm", "--vm", "--network", "none", "bench:1", "/bin/true"]
        floor_argv = qemu_floor_argv(kernel, initrd, accel)
        # One of each first: the initramfs is built, the page cache warm.
        run(pier_argv, env)
        run(floor_argv)
        pier_ms, floor_ms = [], []
        for i in range(args.runs):
            print(f"   run {i + 1}/{args.runs}", flush=True)
            pier_ms.append(timed(pier_argv, env))
            floor_ms.append(timed(floor_argv))
        cid = run([args.pier, "run", "-d", "--vm", "--network", "none", "bench:1", "sleep", "600"], env, out=True).strip()
        time.sleep(5)
        cdir = os.path.join(work, "root", "containers", cid)
        pids = vm_processes(cdir)
        idle_kib = sum(pss_kib(p) for p in pids)
        run([args.pier, "rm", "-f", cid], env)
    finally:
        daemon.terminate()
        daemon.wait()
        subprocess.run(["umount", "-R", "-l", work], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    med = lambda v: round(statistics.median(v), 1)
    result = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "accel": accel,
        "runs": args.runs,
        "pier_run_vm_true_ms": {"median": med(pier_ms), "min": round(min(pier_ms), 1), "all": [round(x, 1) for x in pier_ms]},
        "bare_qemu_floor_ms": {"median": med(floor_ms), "min": round(min(floor_ms), 1), "all": [round(x, 1) for x in floor_ms]},
        "ratio": round(statistics.median(pier_ms) / statistics.median(floor_ms), 2),
        "idle_vm_pss_mib": round(idle_kib / 1024, 1),
        "idle_vm_processes": len(pids),
        "total_s": round(time.perf_counter() - began, 1),
    }
    md = "\n".join([
        f"# VM figures ({result['date']}, accelerator {accel}, {args.runs} runs each, taking turns)",
        "",
        "| figure | pier | bare QEMU (floor) | ratio |",
        "|---|---|---|---|",
        f"| `run --rm --vm IMAGE /bin/true`, start to exit, median | {result['pier_run_vm_true_ms']['median']} ms "
        f"| {result['bare_qemu_floor_ms']['median']} ms | {result['ratio']}x |",
        f"| memory of one idle VM (PSS of pier __vm, QEMU, virtiofsd; `--memory` 256 MiB) | {result['idle_vm_pss_mib']} MiB | | |",
        "",
    ])
    os.makedirs(os.path.join(ROOT, "bench/results"), exist_ok=True)
    with open(os.path.join(ROOT, "bench/results/vm.json"), "w") as f:
        json.dump(result, f, indent=2)
    with open(os.path.join(ROOT, "bench/results/vm.md"), "w") as f:
        f.write(md)
    print(md)


if __name__ == "__main__":
    main()
