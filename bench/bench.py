#!/usr/bin/env python3
"""Pier's benchmarks, side by side with runc, Podman and Docker, measured in one run.

Usage (as root, from the repository): python3 bench/bench.py [--only start] [--runs N]

Each figure is measured for every engine with the runs interleaved (engine A, B, C, D,
then A again...), so that the noise of a shared machine falls on all of them alike.
Results go to bench/results/latest.json and bench/results/latest.md.

Figures so far: `start` (run --rm IMAGE /bin/true, networking off: median and p90).
The other figures of issue 8 are still to come.
"""

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUSYBOX = "/bin/busybox"


def sh(*args, **kw):
    return subprocess.run(args, check=True, **kw)


def ensure_packages():
    need = [p for p in ["busybox-static", "runc", "podman", "docker.io", "hyperfine"]
            if subprocess.run(["dpkg-query", "-W", "-f=${Status}", p], capture_output=True, text=True).stdout.find("install ok installed") < 0]
    if need:
        print("== installing", " ".join(need), flush=True)
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        sh("apt-get", "update", "-q", stdout=subprocess.DEVNULL, env=env)
        sh("apt-get", "install", "-y", "-q", *need, stdout=subprocess.DEVNULL, env=env)


def rootfs_tar(path):
    """A busybox rootfs: the same bytes for every engine."""
    d = tempfile.mkdtemp()
    for sub in ["bin", "etc", "tmp", "proc", "sys", "dev", "root"]:
        os.makedirs(os.path.join(d, sub))
    shutil.copy(BUSYBOX, os.path.join(d, "bin/busybox"))
    for applet in ["sh", "true", "sleep", "echo"]:
        os.symlink("busybox", os.path.join(d, "bin", applet))
    with open(os.path.join(d, "etc/passwd"), "w") as f:
        f.write("root:x:0:0:root:/root:/bin/sh\n")
    sh("tar", "-C", d, "-cf", path, ".")
    return d


class Engine:
    name = ""

    def setup(self, work, tar): ...

    def start_cmd(self): ...

    def teardown(self): ...


class Pier(Engine):
    name = "pier"

    def setup(self, work, tar):
        print("== building pier (release)", flush=True)
        sh("cargo", "build", "--release", "--locked", "-p", "pier", cwd=ROOT, stdout=subprocess.DEVNULL)
        self.bin = os.path.join(ROOT, "target/release/pier")
        self.sock = os.path.join(work, "pier.sock")
        self.proc = subprocess.Popen([self.bin, "daemon", "--root", os.path.join(work, "pier-root"), "--socket", self.sock],
                                     stderr=subprocess.DEVNULL)
        self.env = dict(os.environ, PIER_HOST=self.sock)
        for _ in range(100):
            if subprocess.run([self.bin, "info"], env=self.env, capture_output=True).returncode == 0:
                break
            time.sleep(0.05)
        sh(self.bin, "image", "import", tar, "bench:1", env=self.env, stdout=subprocess.DEVNULL)

    def start_cmd(self):
        return [self.bin, "run", "--rm", "bench:1", "/bin/true"], self.env

    def teardown(self):
        self.proc.terminate()
        self.proc.wait()


class Runc(Engine):
    name = "runc"

    def setup(self, work, tar):
        self.bundle = os.path.join(work, "runc-bundle")
        os.makedirs(os.path.join(self.bundle, "rootfs"))
        sh("tar", "-C", os.path.join(self.bundle, "rootfs"), "-xf", tar)
        sh("runc", "spec", "--bundle", self.bundle)
        spec_path = os.path.join(self.bundle, "config.json")
        spec = json.load(open(spec_path))
        spec["process"]["terminal"] = False
        spec["process"]["args"] = ["/bin/true"]
        json.dump(spec, open(spec_path, "w"))
        self.state = os.path.join(work, "runc-state")
        self.n = 0

    def start_cmd(self):
        self.n += 1
        return ["runc", "--root", self.state, "run", "--bundle", self.bundle, f"bench-{os.getpid()}-{self.n}"], None


class Podman(Engine):
    name = "podman"

    def setup(self, work, tar):
        self.base = ["podman", "--root", os.path.join(work, "podman-root"), "--runroot", os.path.join(work, "podman-run"),
                     "--runtime", "runc", "--cgroup-manager", "cgroupfs", "--events-backend", "file"]
        conf = os.path.join(work, "containers.conf")
        with open(conf, "w") as f:
            f.write('[containers]\ndefault_ulimits = ["nofile=4096:4096","nproc=4096:4096"]\n')
        self.env = dict(os.environ, CONTAINERS_CONF=conf)
        sh(*self.base, "import", tar, "localhost/bench:1", env=self.env, stdout=subprocess.DEVNULL)

    def start_cmd(self):
        return self.base + ["run", "--rm", "--network", "none", "localhost/bench:1", "/bin/true"], self.env


class Docker(Engine):
    name = "docker"

    def setup(self, work, tar):
        d = os.path.join(work, "docker")
        os.makedirs(d)
        self.sock = os.path.join(d, "sock")
        self.proc = subprocess.Popen(["dockerd", "--data-root", os.path.join(d, "data"), "--exec-root", os.path.join(d, "exec"),
                                      "--pidfile", os.path.join(d, "pid"), "-H", f"unix://{self.sock}", "--iptables=false",
                                      "--ip6tables=false", "--bridge=none", "--containerd-namespace", "pier-bench",
                                      "--containerd-plugins-namespace", "pier-bench-p"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.env = dict(os.environ, DOCKER_HOST=f"unix://{self.sock}")
        for _ in range(300):
            if subprocess.run(["docker", "version"], env=self.env, capture_output=True).returncode == 0:
                break
            time.sleep(0.1)
        sh("docker", "import", tar, "bench:1", env=self.env, stdout=subprocess.DEVNULL)

    def start_cmd(self):
        return ["docker", "run", "--rm", "--network", "none", "bench:1", "/bin/true"], self.env

    def teardown(self):
        self.proc.terminate()
        self.proc.wait()


def percentile(xs, p):
    xs = sorted(xs)
    k = (len(xs) - 1) * p
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def bench_start(engines, runs):
    times = {e.name: [] for e in engines}
    for e in engines:  # warm-up
        for _ in range(3):
            cmd, env = e.start_cmd()
            sh(*cmd, env=env, stdout=subprocess.DEVNULL)
    for i in range(runs):
        for e in engines:
            cmd, env = e.start_cmd()
            t = time.perf_counter()
            sh(*cmd, env=env, stdout=subprocess.DEVNULL)
            times[e.name].append((time.perf_counter() - t) * 1000)
    return {n: {"median_ms": round(statistics.median(v), 2), "p90_ms": round(percentile(v, 0.9), 2), "runs": len(v)} for n, v in times.items()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default="start", choices=["start"])
    ap.add_argument("--runs", type=int, default=50)
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run the benchmarks as root")
    ensure_packages()
    work = tempfile.mkdtemp(prefix="pier-bench-")
    tar = os.path.join(work, "rootfs.tar")
    rootfs_tar(tar)
    engines = [Pier(), Runc(), Podman(), Docker()]
    ready = []
    try:
        for e in engines:
            print(f"== setting up {e.name}", flush=True)
            e.setup(work, tar)
            ready.append(e)
        print(f"== start: run --rm /bin/true, networking off, {args.runs} runs each, interleaved", flush=True)
        start = bench_start(ready, args.runs)
    finally:
        for e in ready:
            e.teardown()
        shutil.rmtree(work, ignore_errors=True)
    pier = start["pier"]["median_ms"]
    result = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.node()} {platform.release()} {os.cpu_count()} CPUs",
        "figures": {"start": start},
    }
    lines = [f"Start to exit, `run --rm IMAGE /bin/true`, networking off ({result['date']}, {result['machine']})", "",
             "| engine | median ms | p90 ms | Pier is faster by |", "|---|---|---|---|"]
    for n, v in start.items():
        ratio = "" if n == "pier" else "%.1fx" % (v["median_ms"] / pier)
        lines.append(f"| {n} | {v['median_ms']} | {v['p90_ms']} | {ratio} |")
    md = "\n".join(lines) + "\n"
    os.makedirs(os.path.join(ROOT, "bench/results"), exist_ok=True)
    json.dump(result, open(os.path.join(ROOT, "bench/results/latest.json"), "w"), indent=2)
    open(os.path.join(ROOT, "bench/results/latest.md"), "w").write(md)
    print(md)


if __name__ == "__main__":
    main()
