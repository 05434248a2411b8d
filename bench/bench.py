#!/usr/bin/env python3
"""Pier's benchmarks, side by side with runc, Podman and Docker, measured in one run.

Usage (as root, from the repository; build Pier first with `cargo build --release -p pier`):

    python3 bench/bench.py [--only start,parallel,...] [--pier PATH] [--runs N] ...

It installs the peers from Debian's packages if they are missing, gives every engine the same
busybox image, runs each engine on private roots (its own state directories, socket and
daemons, stopped at the end), measures the figures below and prints one table per figure.
Results go to bench/results/latest.json and bench/results/latest.md. bench/README.md says
what each figure measures and how.

Figures: start, start-net, parallel, overhead, daemon, list, load, registry.

Where a figure has several runs, the engines take turns (engine A, B, C, D, then A again...),
so that the noise of a shared machine falls on all of them alike.

The whole run happens in a network namespace of its own (the script re-executes itself under
`unshare --net`): the bridges, veths and iptables rules that Docker and Podman set up for
their default networks live and die there and never touch the host's.
"""

import argparse
import concurrent.futures
import copy
import datetime
import hashlib
import io
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUSYBOX = "/bin/busybox"
PACKAGES = ["busybox-static", "runc", "podman", "docker.io", "docker-registry", "skopeo"]
FIGURES = ["start", "start-net", "parallel", "overhead", "daemon", "list", "load", "registry"]
MB = 1000 * 1000


class Failed(Exception):
    pass


def run(argv, env=None, out=False):
    """Runs argv and waits for it; returns its stdout if `out`. Raises Failed with its stderr
    if it exits non-zero. Stderr goes to a file, not a pipe: a detached container that
    inherits it must not keep us waiting."""
    with tempfile.TemporaryFile() as err:
        p = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, stderr=err,
                           stdout=subprocess.PIPE if out else subprocess.DEVNULL)
        if p.returncode != 0:
            err.seek(0)
            msg = err.read().decode(errors="replace").strip().replace("\n", " ")
            raise Failed(f"`{' '.join(argv)}` exited {p.returncode}: {msg[-300:]}")
    return p.stdout.decode() if out else None


def parallel(fn, items, width):
    """fn over items, `width` at a time; returns the Failed errors (empty if all succeeded)."""
    def attempt(item):
        try:
            fn(item)
        except Failed as e:
            return str(e)
    with concurrent.futures.ThreadPoolExecutor(width) as pool:
        return [e for e in pool.map(attempt, items) if e]


def ensure_packages(packages=PACKAGES):
    """Installs those of Debian's `packages` that are missing."""
    def installed(p):
        q = subprocess.run(["dpkg-query", "-W", "-f=${Status}", p], capture_output=True, text=True)
        return "install ok installed" in q.stdout
    need = [p for p in packages if not installed(p)]
    if need:
        print("== installing", " ".join(need), flush=True)
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-q"], check=True, stdout=subprocess.DEVNULL, env=env)
        subprocess.run(["apt-get", "install", "-y", "-q", *need], check=True, stdout=subprocess.DEVNULL, env=env)


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
    run(["tar", "-C", d, "-cf", path, "."])
    shutil.rmtree(d)


class RandomBytes:
    """A file-like object of `size` incompressible bytes, for tarfile."""

    def __init__(self, size):
        self.left = size

    def read(self, n=-1):
        n = self.left if n < 0 else min(n, self.left)
        self.left -= n
        return os.urandom(n)


def image_archive(work, base_tar, size_mb):
    """A `docker save` archive of two layers: the busybox rootfs and one file of size_mb MB
    of random data. Returns the archive's path and the big layer's tar (for `tar -x`)."""
    big = os.path.join(work, "big-layer.tar")
    with tarfile.open(big, "w", format=tarfile.PAX_FORMAT) as t:
        info = tarfile.TarInfo("data.bin")
        info.size, info.mode, info.mtime = size_mb * MB, 0o644, int(time.time())
        t.addfile(info, RandomBytes(info.size))
    layers = [base_tar, big]
    diff_ids = []
    for layer in layers:
        h = hashlib.sha256()
        with open(layer, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        diff_ids.append(h.hexdigest())
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    config = json.dumps({
        "architecture": arch, "os": "linux", "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + d for d in diff_ids]},
        "history": [{"created_by": "pier bench: busybox"}, {"created_by": f"pier bench: {size_mb} MB of random data"}],
    }).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    manifest = json.dumps([{"Config": config_name, "RepoTags": ["bench-big:1"],
                            "Layers": [f"{d}/layer.tar" for d in diff_ids]}]).encode()
    archive = os.path.join(work, "image-archive.tar")
    with tarfile.open(archive, "w") as t:
        for name, data in [("manifest.json", manifest), (config_name, config)]:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            t.addfile(info, io.BytesIO(data))
        for d, layer in zip(diff_ids, layers):
            t.add(layer, f"{d}/layer.tar")
    return archive, big


def processes(match):
    """PIDs of the processes in our network namespace whose argv (a list of bytes) matches.
    The namespace is the run's own, so only our engines' processes are in it: the user's
    Pier daemon, Docker or Podman never are."""
    ours = os.readlink("/proc/self/ns/net")
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
            if os.readlink(f"/proc/{d}/ns/net") == ours and match(argv):
                pids.append(int(d))
        except OSError:
            pass
    return pids


def memory_kib(pids):
    """Sum of VmRSS (/proc/PID/status) and of Pss (/proc/PID/smaps_rollup) over pids, in KiB."""
    def field(path, name):
        try:
            with open(path) as f:
                for line in f:
                    if line.startswith(name):
                        return int(line.split()[1])
        except OSError:
            pass
        return 0
    rss = sum(field(f"/proc/{p}/status", "VmRSS:") for p in pids)
    pss = sum(field(f"/proc/{p}/smaps_rollup", "Pss:") for p in pids)
    return rss, pss


def basename_is(*names):
    return lambda argv: os.path.basename(argv[0]).decode(errors="replace") in names


class Engine:
    """One engine. The defaults speak Docker's command line, which Pier and Podman share:
    self.base is the start of every command (binary and global flags), self.env its
    environment. A method returning None means the figure does not apply (n/a)."""
    name = ""
    base = []
    env = None
    image = "bench:1"
    fleet = 0  # how many `sleep 600` containers we have running (see fleet())
    created_mib = 0  # memory a created (not started) container holds

    def setup(self, work, tar): ...

    def version(self): ...

    def start_argv(self, network):
        """run --rm IMAGE /bin/true, networking off, or on the engine's default network."""
        net = [] if network else ["--network", "none"]
        return self.base + ["run", "--rm", *net, self.image, "/bin/true"]

    def run_detached(self, name):
        """Starts `sleep 600` in the background; returns once it runs."""
        run(self.base + ["run", "-d", "--network", "none", "--name", name, self.image, "sleep", "600"], self.env)

    def create(self, name):
        """Creates a container for `true`, without starting it."""
        run(self.base + ["create", "--network", "none", "--name", name, self.image, "true"], self.env)

    def list_argv(self):
        return self.base + ["ps", "-a"]

    def remove_all(self):
        ids = run(self.base + ["ps", "-aq"], self.env, out=True).split()
        errors = parallel(lambda chunk: run(self.base + ["rm", "-f", *chunk], self.env), chunks(ids, 50), 4)
        if errors:
            raise Failed(errors[0])
        self.fleet = 0

    def load_argv(self, archive):
        return self.base + ["image", "load", "-i", archive]

    def unload(self):
        run(self.base + ["rmi", "bench-big:1"], self.env)

    def monitor_pids(self):
        """PIDs of what the engine runs per container, besides the container's own processes."""
        return []

    def daemon_pids(self):
        return None

    def teardown(self): ...


class Pier(Engine):
    name = "pier"

    def __init__(self, binary):
        self.base = [binary]

    def setup(self, work, tar):
        sock = os.path.join(work, "pier.sock")
        self.proc = subprocess.Popen(self.base + ["daemon", "--root", os.path.join(work, "pier-root"), "--socket", sock],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.env = dict(os.environ, PIER_HOST=sock)
        for _ in range(100):
            if subprocess.run(self.base + ["info"], env=self.env, capture_output=True).returncode == 0:
                break
            time.sleep(0.05)
        run(self.base + ["image", "import", tar, self.image], self.env)

    def version(self):
        return run(self.base + ["--version"], out=True).strip()

    def start_argv(self, network):
        return self.base + ["run", "--rm", "--network", "bridge" if network else "none", self.image, "/bin/true"]

    def monitor_pids(self):
        return processes(lambda argv: argv[0] == b"pier" and argv[1:2] == [b"__monitor"])

    def daemon_pids(self):
        # The daemon and its monitor zygote (one per daemon, forking the monitors).
        return [self.proc.pid] + processes(lambda argv: argv[0] == b"pier" and argv[1:2] == [b"__monitor-zygote"])

    def teardown(self):
        stop(self.proc)


class Runc(Engine):
    """Plain runc: one bundle per container, all on one shared rootfs directory. No image
    store, no network management, no daemon."""
    name = "runc"
    created_mib = 10  # `runc create` leaves a `runc init` process waiting for `runc start`

    def setup(self, work, tar):
        self.work = work
        self.base = ["runc", "--root", os.path.join(work, "runc-state")]
        self.rootfs = os.path.join(work, "runc-rootfs")
        os.makedirs(self.rootfs)
        run(["tar", "-C", self.rootfs, "-xf", tar])
        spec_dir = os.path.join(work, "runc-spec")
        os.makedirs(spec_dir)
        run(["runc", "spec", "--bundle", spec_dir])
        with open(os.path.join(spec_dir, "config.json")) as f:
            self.spec = json.load(f)
        self.spec["root"]["path"] = self.rootfs
        self.spec["process"]["terminal"] = False
        self.true_bundle = self.bundle("true", ["/bin/true"])
        self.n = 0

    def bundle(self, name, args):
        b = os.path.join(self.work, "runc-bundles", name)
        os.makedirs(b, exist_ok=True)
        spec = copy.deepcopy(self.spec)
        spec["process"]["args"] = args
        with open(os.path.join(b, "config.json"), "w") as f:
            json.dump(spec, f)
        return b

    def version(self):
        return run(["runc", "--version"], out=True).splitlines()[0]

    def start_argv(self, network):
        if network:
            return None
        self.n += 1
        return self.base + ["run", "--bundle", self.true_bundle, f"start-{self.n}"]

    def run_detached(self, name):
        run(self.base + ["run", "-d", "--bundle", self.bundle(name, ["sleep", "600"]), name])

    def create(self, name):
        run(self.base + ["create", "--bundle", self.bundle(name, ["true"]), name])

    def list_argv(self):
        return self.base + ["list"]

    def remove_all(self):
        ids = run(self.base + ["list", "-q"], out=True).split()
        errors = parallel(lambda i: run(self.base + ["delete", "-f", i]), ids, 4)
        if errors:
            raise Failed(errors[0])
        for name in os.listdir(os.path.join(self.work, "runc-bundles")):
            if name != "true":
                shutil.rmtree(os.path.join(self.work, "runc-bundles", name))
        self.fleet = 0

    def load_argv(self, archive):
        return None


class Podman(Engine):
    name = "podman"
    image = "localhost/bench:1"

    def setup(self, work, tar):
        self.base = ["podman", "--root", os.path.join(work, "podman-root"), "--runroot", os.path.join(work, "podman-run"),
                     "--runtime", "runc", "--cgroup-manager", "cgroupfs", "--events-backend", "file"]
        conf = os.path.join(work, "containers.conf")
        with open(conf, "w") as f:
            f.write('[containers]\ndefault_ulimits = ["nofile=4096:4096","nproc=4096:4096"]\n')
        self.env = dict(os.environ, CONTAINERS_CONF=conf)
        run(self.base + ["import", tar, self.image], self.env)

    def version(self):
        v = run(["podman", "--version"], out=True).strip()
        return v + ", " + run(["conmon", "--version"], out=True).splitlines()[0]

    def remove_all(self):
        # -t 0: kill at once, as docker and pier do with rm -f (sleep as PID 1 ignores SIGTERM).
        run(self.base + ["rm", "-a", "-f", "-t", "0"], self.env)
        self.fleet = 0

    def monitor_pids(self):
        return processes(basename_is("conmon"))


class Docker(Engine):
    name = "docker"

    def setup(self, work, tar):
        self.base = ["/usr/bin/docker"]  # Debian's, matching its dockerd (/usr/local/bin may have another)
        d = os.path.join(work, "docker")
        os.makedirs(d)
        sock = os.path.join(d, "sock")
        # Default networking (the docker0 bridge, iptables): it lives in our network namespace.
        self.proc = subprocess.Popen(["dockerd", "--data-root", os.path.join(d, "data"), "--exec-root", os.path.join(d, "exec"),
                                      "--pidfile", os.path.join(d, "pid"), "-H", f"unix://{sock}",
                                      "--containerd-namespace", "pier-bench", "--containerd-plugins-namespace", "pier-bench-p"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.env = dict(os.environ, DOCKER_HOST=f"unix://{sock}")
        for _ in range(300):
            if subprocess.run(self.base + ["version"], env=self.env, capture_output=True).returncode == 0:
                break
            time.sleep(0.1)
        run(self.base + ["import", tar, self.image], self.env)

    def version(self):
        v = run(self.base + ["version", "--format", "{{.Server.Version}}"], self.env, out=True).strip()
        return f"docker {v}, " + " ".join(run(["containerd", "--version"], out=True).split()[:3:2])

    def monitor_pids(self):
        return processes(lambda argv: os.path.basename(argv[0]).startswith(b"containerd-shim"))

    def daemon_pids(self):
        return [self.proc.pid] + processes(basename_is("containerd"))

    def teardown(self):
        stop(self.proc)


def chunks(xs, n):
    return [xs[i:i + n] for i in range(0, len(xs), n)]


def stop(proc):
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def percentile(xs, p):
    xs = sorted(xs)
    k = (len(xs) - 1) * p
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def na(reason):
    return {"n/a": reason}


# Runs an engine takes in a row in a start figure (see bench_start).
BLOCK = 5


def timed(argv, env):
    t = time.perf_counter()
    run(argv, env)
    return time.perf_counter() - t


def fleet(e, n, width):
    """Makes sure e runs n idle containers (`run -d IMAGE sleep 600`); the parallel figure
    leaves its last round running, which the overhead and daemon figures then use. Returns
    the wall time of the start, or None if they were already running."""
    if e.fleet == n:
        return None
    e.remove_all()
    t = time.perf_counter()
    errors = parallel(e.run_detached, [f"bench-{i}" for i in range(n)], width)
    wall = time.perf_counter() - t
    if errors:
        e.remove_all()
        raise Failed(f"{len(errors)} of {n} starts failed, first: {errors[0]}")
    e.fleet = n
    return wall


def bench_start(engines, runs, network):
    """`run --rm IMAGE /bin/true`, median and p90 over `runs` interleaved runs (3 warm-up)."""
    result, times = {}, {}
    for e in engines:
        if e.start_argv(network) is None:
            result[e.name] = na("no network management of its own")
            continue
        try:
            for _ in range(3):
                run(e.start_argv(network), e.env)
            times[e.name] = []
        except Failed as x:
            result[e.name] = {"unavailable": str(x)}
    active = [e for e in engines if e.name in times]
    # Turns of BLOCK runs each: what an engine leaves to finish in the background after its
    # command returned (podman's cleanup process, containerd's shim teardown, Pier's
    # directory removal) lands on the next engine's first run only, not on every one.
    # (Pausing instead lets the CPUs go idle, which slows every engine's next start.)
    done = 0
    while done < runs:
        n = min(BLOCK, runs - done)
        for e in active:
            for _ in range(n):
                times[e.name].append(timed(e.start_argv(network), e.env) * 1000)
        done += n
    for n, v in times.items():
        result[n] = {"median_ms": round(statistics.median(v), 2), "p90_ms": round(percentile(v, 0.9), 2), "runs": len(v)}
    return result


def bench_parallel(engines, n, width, rounds):
    """Wall time to start n `sleep 600` containers, `width` at a time, from the first launch
    until the last command returned; median over interleaved rounds. Removing them is untimed."""
    result, walls = {}, {e.name: [] for e in engines}
    for _ in range(rounds):
        for e in engines:
            if e.name in result:
                continue  # failed in an earlier round
            try:
                e.remove_all()
                walls[e.name].append(fleet(e, n, width))
            except Failed as x:
                result[e.name] = {"unavailable": str(x)}
    for name, v in walls.items():
        if name not in result:
            result[name] = {"median_s": round(statistics.median(v), 2), "rounds_s": [round(x, 2) for x in v],
                            "containers": n, "width": width}
    return result


def bench_overhead(engines, n, width):
    """Memory of what each engine runs per container (Pier's monitor, conmon, containerd-shim),
    with n idle containers: summed VmRSS and Pss, divided by n."""
    result = {}
    for e in engines:
        try:
            fleet(e, n, width)
        except Failed as x:
            result[e.name] = {"unavailable": str(x)}
            continue
        time.sleep(2)  # let the last monitors settle
        pids = e.monitor_pids()
        rss, pss = memory_kib(pids)
        result[e.name] = {"rss_kib": round(rss / n), "pss_kib": round(pss / n), "processes": len(pids), "containers": n}
        if not pids:
            result[e.name]["n/a"] = "no process of its own per container"
    return result


def bench_daemon(engines, idle, n, width):
    """RSS and Pss of the engine's daemons (pier daemon; dockerd + containerd), idle (right
    after setup, no container) and with n idle containers."""
    result = {}
    for e in engines:
        if e.daemon_pids() is None:
            result[e.name] = na("no daemon")
            continue
        try:
            fleet(e, n, width)
        except Failed as x:
            result[e.name] = {"unavailable": str(x)}
            continue
        rss, pss = memory_kib(e.daemon_pids())
        result[e.name] = {"idle_rss_mib": round(idle[e.name][0] / 1024, 1), "idle_pss_mib": round(idle[e.name][1] / 1024, 1),
                          "rss_mib": round(rss / 1024, 1), "pss_mib": round(pss / 1024, 1), "containers": n}
    return result


def bench_list(engines, count, runs, width):
    """`ps -a` (runc: `runc list`) with `count` created containers: median over interleaved runs."""
    result, times, setup = {}, {}, {}
    available = int(next(l for l in open("/proc/meminfo") if l.startswith("MemAvailable:")).split()[1]) // 1024
    for e in engines:
        if count * e.created_mib > available / 2:
            result[e.name] = na(f"each created container holds ~{e.created_mib} MiB, {count} would take "
                                f"more than half of the {available} MiB available")
            continue
        try:
            e.remove_all()
            t = time.perf_counter()
            errors = parallel(e.create, [f"list-{i}" for i in range(count)], width)
            setup[e.name] = time.perf_counter() - t
            if errors:
                raise Failed(f"{len(errors)} of {count} creates failed, first: {errors[0]}")
            run(e.list_argv(), e.env)  # warm-up
            times[e.name] = []
        except Failed as x:
            result[e.name] = {"unavailable": str(x)}
    active = [e for e in engines if e.name in times]
    for _ in range(runs):
        for e in active:
            times[e.name].append(timed(e.list_argv(), e.env) * 1000)
    for e in engines:
        try:
            e.remove_all()
        except Failed as x:
            print(f"   {e.name}: removing the created containers failed: {x}", flush=True)
        if e.name in times:
            v = times[e.name]
            result[e.name] = {"median_ms": round(statistics.median(v), 2), "p90_ms": round(percentile(v, 0.9), 2),
                              "runs": len(v), "containers": count, "create_all_s": round(setup[e.name], 1)}
            if e.created_mib:
                result[e.name]["note"] = f"each created container holds a `runc init` process (~{e.created_mib} MiB)"
    return {e.name: result[e.name] for e in engines}


def bench_load(engines, work, base_tar, size_mb, runs):
    """Loading a docker-archive of busybox plus a layer of size_mb MB of random data, and
    `tar -xf` of that layer into a directory on the same disk as the engines' roots."""
    print(f"   building the image archive ({size_mb} MB of random data)", flush=True)
    archive, layer = image_archive(work, base_tar, size_mb)
    layer_mb = os.path.getsize(layer) / MB
    result, times = {}, {}
    for e in engines:
        if e.load_argv(archive) is None:
            result[e.name] = na("no image store")
        else:
            times[e.name] = []
    tar_dir = os.path.join(work, "tar-x")
    times["tar -xf"] = []
    for _ in range(runs):
        for e in engines:
            if e.name not in times:
                continue
            try:
                e.unload()
            except Failed:
                pass  # not loaded yet
            os.sync()
            try:
                times[e.name].append(timed(e.load_argv(archive), e.env))
            except Failed as x:
                result[e.name] = {"unavailable": str(x)}
                del times[e.name]
        shutil.rmtree(tar_dir, ignore_errors=True)
        os.makedirs(tar_dir)
        os.sync()
        times["tar -xf"].append(timed(["tar", "-C", tar_dir, "-xf", layer], None))
    for e in engines:
        try:
            e.unload()
        except Failed:
            pass
    shutil.rmtree(tar_dir, ignore_errors=True)
    for name, v in times.items():
        med = statistics.median(v)
        result[name] = {"median_s": round(med, 2), "layer_mb_s": round(layer_mb / med), "runs_s": [round(x, 2) for x in v],
                        "archive_mb": round(os.path.getsize(archive) / MB), "layer_mb": round(layer_mb)}
    fs = run(["findmnt", "-n", "-o", "FSTYPE", "-T", work], out=True).strip()
    result["tar -xf"]["note"] = f"plain `tar -xf` of the big layer into an empty directory on the same disk as the engines' roots ({fs})"
    os.remove(archive)
    os.remove(layer)
    return {name: result[name] for name in [e.name for e in engines] + ["tar -xf"]}


class PierRegistry:
    """Pier's built-in registry: a daemon of its own serving only as a registry."""
    name = "pier"
    port = 5100

    def __init__(self, binary):
        self.binary = binary

    def start(self, root):
        os.makedirs(root)
        self.proc = subprocess.Popen([self.binary, "daemon", "--root", root, "--socket", os.path.join(root, "pier.sock"),
                                      "--registry-addr", f"127.0.0.1:{self.port}"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self):
        stop(self.proc)


class DistributionRegistry:
    """Debian's docker-registry (distribution 2.8), filesystem storage, plain HTTP."""
    name = "docker-registry"
    port = 5200

    def start(self, root):
        os.makedirs(root)
        cfg = os.path.join(root, "config.yml")
        with open(cfg, "w") as f:
            f.write("version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n"
                    f"    rootdirectory: {root}/data\n  delete:\n    enabled: true\n"
                    f"http:\n  addr: 127.0.0.1:{self.port}\n")
        self.proc = subprocess.Popen(["docker-registry", "serve", cfg], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self):
        stop(self.proc)


def wait_http(url, limit=20):
    import urllib.error
    import urllib.request
    deadline = time.time() + limit
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(0.05)
    raise Failed(f"{url} did not come up")


def bench_registry(pier_binary, work, base_tar, size_mb, runs):
    """Push and pull of an image of busybox plus size_mb MB of random data through each
    registry, with the same client (skopeo) and the same bytes: the layers are gzipped
    once beforehand into an OCI layout, so neither push nor pull spends time compressing.
    Each run starts the registry on empty storage, pushes (timed), then pulls into an empty
    OCI layout (timed)."""
    print(f"   building the image ({size_mb} MB of random data)", flush=True)
    archive, layer = image_archive(work, base_tar, size_mb)
    layout = os.path.join(work, "reg-layout")
    run(["skopeo", "copy", "--quiet", "--dest-compress", f"docker-archive:{archive}", f"oci:{layout}:big"])
    os.remove(archive)
    os.remove(layer)
    image_mb = sum(os.path.getsize(os.path.join(layout, "blobs/sha256", b))
                   for b in os.listdir(os.path.join(layout, "blobs/sha256"))) / MB
    registries = [PierRegistry(pier_binary), DistributionRegistry()]
    times = {r.name: {"push": [], "pull": []} for r in registries}
    result = {}
    for i in range(runs):
        for r in registries:
            if r.name in result:
                continue
            root = os.path.join(work, f"reg-{r.name}-{i}")
            pulled = os.path.join(work, "reg-pulled")
            shutil.rmtree(pulled, ignore_errors=True)
            try:
                r.start(root)
                wait_http(f"http://127.0.0.1:{r.port}/v2/")
                ref = f"docker://127.0.0.1:{r.port}/bench/big:1"
                os.sync()
                times[r.name]["push"].append(timed(["skopeo", "copy", "--quiet", "--dest-tls-verify=false",
                                                    f"oci:{layout}:big", ref], None))
                os.sync()
                times[r.name]["pull"].append(timed(["skopeo", "copy", "--quiet", "--src-tls-verify=false",
                                                    ref, f"oci:{pulled}:big"], None))
            except Failed as x:
                result[r.name] = {"unavailable": str(x)}
            finally:
                try:
                    r.stop()
                except Failed:
                    pass
                shutil.rmtree(root, ignore_errors=True)
                shutil.rmtree(pulled, ignore_errors=True)
    shutil.rmtree(layout, ignore_errors=True)
    for r in registries:
        if r.name in result:
            continue
        push, pull = statistics.median(times[r.name]["push"]), statistics.median(times[r.name]["pull"])
        result[r.name] = {"push_median_s": round(push, 2), "push_mb_s": round(image_mb / push),
                          "pull_median_s": round(pull, 2), "pull_mb_s": round(image_mb / pull),
                          "runs": runs, "image_mb": round(image_mb)}
    p, d = result.get("pier", {}), result.get("docker-registry", {})
    if "pull_median_s" in p and "pull_median_s" in d:
        result["docker-registry"]["note"] = ("pull: Pier is faster by %.1fx (docker-registry's pull time / Pier's)"
                                            % (d["pull_median_s"] / p["pull_median_s"]))
    return result


# How each figure is shown: title, value columns (header, key), the key Pier is compared
# on, and the header of that comparison (other engine's value / Pier's; above 1: Pier wins).
TABLES = {
    "start": ("Start to exit, `run --rm IMAGE /bin/true`, networking off",
              [("median ms", "median_ms"), ("p90 ms", "p90_ms")], "median_ms", "Pier is faster by"),
    "start-net": ("Start to exit, `run --rm IMAGE /bin/true`, each engine's default network "
                  "(pier `--network bridge`, podman's netavark bridge, docker's docker0 bridge)",
                  [("median ms", "median_ms"), ("p90 ms", "p90_ms")], "median_ms", "Pier is faster by"),
    "parallel": ("{containers} containers started in parallel (`run -d --network none IMAGE sleep 600`, {width} at a time): wall time",
                 [("median s", "median_s"), ("rounds s", "rounds_s")], "median_s", "Pier is faster by"),
    "overhead": ("Memory per running container: the engine's own per-container processes (pier monitor, conmon, containerd-shim), "
                 "{containers} idle containers, summed and divided by {containers}",
                 [("RSS KiB", "rss_kib"), ("Pss KiB", "pss_kib"), ("processes", "processes")], "pss_kib", "Pier uses less by (Pss)"),
    "daemon": ("Daemon memory (pier daemon; dockerd + containerd), idle and with {containers} idle containers",
               [("idle RSS MiB", "idle_rss_mib"), ("idle Pss MiB", "idle_pss_mib"), ("RSS MiB", "rss_mib"),
                ("Pss MiB", "pss_mib")], "rss_mib", "Pier uses less by"),
    "list": ("Listing with {containers} created containers, `ps -a` (runc: `runc list`), {runs} runs",
             [("median ms", "median_ms"), ("p90 ms", "p90_ms"), ("creating them took s", "create_all_s")], "median_ms",
             "Pier is faster by"),
    "registry": ("Push and pull of a {image_mb} MB image (busybox + random data, gzipped beforehand) through each registry, "
                 "client skopeo for both, {runs} runs on empty storage; MB/s = {image_mb} MB / median time",
                 [("push median s", "push_median_s"), ("push MB/s", "push_mb_s"), ("pull median s", "pull_median_s"),
                  ("pull MB/s", "pull_mb_s")], "push_median_s", "Pier pushes faster by"),
    "load": ("Loading a {archive_mb} MB image archive (busybox + {layer_mb} MB of random data), `load -i`; "
             "layer MB/s = {layer_mb} MB / median time",
             [("median s", "median_s"), ("runs s", "runs_s"), ("layer MB/s", "layer_mb_s")], "median_s", "Pier is faster by"),
}


def markdown(result):
    m = result["machine"]
    lines = [f"Measured {result['date']} by `bench/bench.py` on {m['cores']} cores ({m['cpu']}), {m['memory_gib']} GiB, "
             f"kernel {m['kernel']}; total {result['total_s']:.0f} s; load average (1, 5, 15 min) before "
             f"{', '.join(map(str, result['load_average']['before']))}, after {', '.join(map(str, result['load_average']['after']))}.", "",
             "Engines: " + "; ".join(f"{n}: {v}" for n, v in result["versions"].items()) + ".", ""]
    for fig, rows in result["figures"].items():
        title, cols, key, ratio_header = TABLES[fig]
        sample = next((v for v in rows.values() if key in v), {})
        try:
            title = title.format(**sample)
        except (KeyError, IndexError):
            pass
        lines += [f"### {fig}: {title}", "", "| engine | " + " | ".join(h for h, _ in cols) + f" | {ratio_header} |",
                  "|---" * (len(cols) + 2) + "|"]
        pier = rows.get("pier", {}).get(key)
        notes = []
        for name, v in rows.items():
            if "n/a" in v:
                notes.append(f"{name}: n/a, {v['n/a']}")
            if "note" in v:
                notes.append(f"{name}: {v['note']}")
            if "unavailable" in v:
                notes.append(f"{name}: unavailable: {v['unavailable']}")
                cells = ["unavailable"] * len(cols)
            elif key not in v:
                cells = ["n/a"] * len(cols)
            else:
                cells = [", ".join(map(str, v[k])) if isinstance(v[k], list) else str(v[k]) for _, k in cols]
            ratio = ""
            if name != "pier" and pier and v.get(key) and "n/a" not in v:
                ratio = "%.1fx" % (v[key] / pier)
            elif name != "pier":
                ratio = "n/a"
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {ratio} |")
        lines += [""] + [f"- {n}" for n in notes] + ([""] if notes else [])
    return "\n".join(lines)


def machine():
    mem = int(next(l for l in open("/proc/meminfo") if l.startswith("MemTotal:")).split()[1])
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.machine())
    return {"host": platform.node(), "cores": os.cpu_count(), "cpu": cpu, "memory_gib": round(mem / 1024 / 1024, 1),
            "kernel": platform.release()}


def unmount_under(path):
    """Unmounts whatever an engine left mounted under path, deepest first."""
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    for p in sorted((p for p in points if p.startswith(path + "/")), key=len, reverse=True):
        subprocess.run(["umount", "-l", p], stderr=subprocess.DEVNULL)


def main():
    ap = argparse.ArgumentParser(description="Pier's benchmarks, side by side with runc, Podman and Docker.")
    ap.add_argument("--only", default=",".join(FIGURES), help="comma-separated figures: " + ",".join(FIGURES))
    ap.add_argument("--pier", default=os.path.join(ROOT, "target/release/pier"), help="the pier binary")
    ap.add_argument("--runs", type=int, default=50, help="runs per engine of the start figures")
    ap.add_argument("--containers", type=int, default=100, help="containers of the parallel, overhead and daemon figures")
    ap.add_argument("--width", type=int, default=10, help="commands at a time when starting or creating many")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of the parallel figure")
    ap.add_argument("--list-containers", type=int, default=1000, help="created containers of the list figure")
    ap.add_argument("--list-runs", type=int, default=10)
    ap.add_argument("--load-mb", type=int, default=200, help="MB of random data in the loaded image")
    ap.add_argument("--load-runs", type=int, default=3)
    ap.add_argument("--registry-mb", type=int, default=200, help="MB of random data in the pushed and pulled image")
    ap.add_argument("--registry-runs", type=int, default=3)
    args = ap.parse_args()
    only = [f.strip() for f in args.only.split(",") if f.strip()]
    if unknown := [f for f in only if f not in FIGURES]:
        sys.exit(f"unknown figure(s) {', '.join(unknown)}: choose among {', '.join(FIGURES)}")
    if os.geteuid() != 0:
        sys.exit("run the benchmarks as root")
    args.pier = os.path.abspath(args.pier)
    if not os.access(args.pier, os.X_OK):
        sys.exit(f"no pier binary at {args.pier}: build it (cargo build --release -p pier) or pass --pier PATH")
    if os.environ.get("PIER_BENCH_NETNS") != "1":
        ensure_packages()  # needs the host's network, so before we leave it
        os.execvpe("unshare", ["unshare", "--net", "--", sys.executable, os.path.abspath(__file__), *sys.argv[1:]],
                   dict(os.environ, PIER_BENCH_NETNS="1"))
    run(["ip", "link", "set", "lo", "up"])
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("terminated"))
    began, load_before = time.perf_counter(), os.getloadavg()

    work = tempfile.mkdtemp(prefix="pier-bench-")
    tar = os.path.join(work, "rootfs.tar")
    rootfs_tar(tar)
    engines = [Pier(args.pier), Runc(), Podman(), Docker()]
    ready, figures = [], {}
    try:
        for e in engines:
            print(f"== setting up {e.name}", flush=True)
            e.setup(work, tar)
            ready.append(e)
        versions = {e.name: e.version() for e in ready}
        time.sleep(1)
        idle = {e.name: memory_kib(e.daemon_pids() or []) for e in ready}
        n = args.containers
        for fig in [f for f in FIGURES if f in only]:
            print(f"== {fig}", flush=True)
            t = time.perf_counter()
            if fig == "start":
                figures[fig] = bench_start(ready, args.runs, network=False)
            elif fig == "start-net":
                figures[fig] = bench_start(ready, args.runs, network=True)
            elif fig == "parallel":
                figures[fig] = bench_parallel(ready, n, args.width, args.rounds)
            elif fig == "overhead":
                figures[fig] = bench_overhead(ready, n, args.width)
            elif fig == "daemon":
                figures[fig] = bench_daemon(ready, idle, n, args.width)
            elif fig == "list":
                figures[fig] = bench_list(ready, args.list_containers, args.list_runs, args.width)
            elif fig == "load":
                figures[fig] = bench_load(ready, work, tar, args.load_mb, args.load_runs)
            elif fig == "registry":
                figures[fig] = bench_registry(args.pier, work, tar, args.registry_mb, args.registry_runs)
            print(f"   {time.perf_counter() - t:.0f} s", flush=True)
    finally:
        for e in reversed(ready):
            try:
                e.remove_all()
            except Failed as x:
                print(f"   {e.name}: cleanup: {x}", flush=True)
            try:
                e.teardown()
            except Failed as x:
                print(f"   {e.name}: teardown: {x}", flush=True)
        unmount_under(work)
        shutil.rmtree(work, ignore_errors=True)
    result = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "versions": versions,
        "settings": {k: v for k, v in vars(args).items()},
        "total_s": round(time.perf_counter() - began, 1),
        "load_average": {"before": [round(x, 2) for x in load_before], "after": [round(x, 2) for x in os.getloadavg()]},
        "figures": figures,
    }
    md = markdown(result)
    os.makedirs(os.path.join(ROOT, "bench/results"), exist_ok=True)
    with open(os.path.join(ROOT, "bench/results/latest.json"), "w") as f:
        json.dump(result, f, indent=2)
    with open(os.path.join(ROOT, "bench/results/latest.md"), "w") as f:
        f.write(md)
    print(md)


if __name__ == "__main__":
    main()
