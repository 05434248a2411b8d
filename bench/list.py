#!/usr/bin/env python3
"""The API's container listing on a pool member with many instances on other hosts:

    sudo python3 bench/list.py [--pier PATH] [--records PATH] [--instances 100000] [--runs 10]

A Pier daemon of its own (its own state directory, socket and network namespace) is made a
pool of one host (`pier cluster init`, which runs etcd). It gets `--local` containers of
its own (a third running), then the `pool-records` example writes `--instances` instance
records of `--hosts` simulated other hosts into the pool's etcd with the member's
certificate (crates/pier-cluster/examples/pool-records.rs says what they are). A member's
listing is pool-wide: it merges its own rows with those records. Each figure is timed
before the records are written (this host's rows alone) and after, `--runs` times, the
figures taking turns, after one warm-up round:

- the native API over its socket: `GET /v1/containers?all=true`, the same with a label
  filter that matches a few (`filter=label=shard=s42`), and without `all` (running only);
- Docker's API over its socket: `GET /containers/json?all=1`, with a label filter, with a
  name filter matching one record, and without `all`;
- `pier ps -a` end to end (the CLI's request, decoding and table), its output to a pipe.

The HTTP figures are curl's total time (connect to last byte) and its byte count. Every
answer is checked while timed: the number of rows (100,000 plus the local ones for `all`,
the running ones without it, the expected few for the filters). It also records the
daemon's memory (VmRSS and its peak, VmHWM) after each phase, the time of a bare read of
every record as the daemon makes it (range and decode, measured by the example), and the
load average. Results go to bench/results/list.json and list.md.

Build first: `cargo build --release -p pier && cargo build --release -p pier-cluster
--example pool-records`.
"""
import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import Failed, ensure_packages, machine, percentile, rootfs_tar, run, stop  # noqa: E402

PACKAGES = ["busybox-static", "etcd-server", "curl"]
SHARD = "s42"  # the label value of the filtered figures
NAME_INDEX = 42  # the record the Docker name filter matches


def figures(args):
    """(name, api, path or argv, expected rows: fn(expect) -> int)."""
    docker_label = urllib.parse.quote(json.dumps({"label": [f"shard={SHARD}"]}))
    name = f"^sim-h{NAME_INDEX % args.hosts:03d}-{NAME_INDEX:06d}$"
    docker_name = urllib.parse.quote(json.dumps({"name": [name]}))
    return [
        ("native all", "native", "/v1/containers?all=true", lambda e: e["all"]),
        ("native label filter", "native", f"/v1/containers?all=true&filter=label%3Dshard%3D{SHARD}",
         lambda e: e["shard"]),
        ("native running", "native", "/v1/containers", lambda e: e["running"]),
        ("docker all", "docker", "/containers/json?all=1", lambda e: e["all"]),
        ("docker label filter", "docker", f"/containers/json?all=1&filters={docker_label}", lambda e: e["shard"]),
        ("docker name filter", "docker", f"/containers/json?all=1&filters={docker_name}", lambda e: e["name"]),
        ("docker running", "docker", "/containers/json", lambda e: e["running"]),
        ("pier ps -a", "cli", ["ps", "-a"], lambda e: e["all"]),
    ]


def curl(sock, path, out):
    """GETs path on the socket into file `out`; (seconds, bytes)."""
    w = run(["curl", "-sS", "--unix-socket", sock, "-o", out, "-w", "%{http_code} %{time_total} %{size_download}",
             "http://pier" + path], out=True).split()
    if w[0] != "200":
        with open(out, errors="replace") as f:
            raise Failed(f"GET {path}: HTTP {w[0]}: {f.read(300)}")
    return float(w[1]), int(w[2])


def measure(args, env, socks, expect, work):
    """Every figure `args.runs` times (after a warm-up round), in turns. Returns
    {figure: {"ms": [...], "bytes": n, "rows": n}}; exits on a wrong count."""
    out = os.path.join(work, "answer")
    figs = figures(args)
    res = {f[0]: {"ms": [], "bytes": None, "rows": None} for f in figs}
    for round_ in range(args.runs + 1):
        for name, api, what, want in figs:
            if api == "cli":
                t = time.perf_counter()
                with open(out, "wb") as f:
                    p = subprocess.run([args.pier, *what], env=env, stdout=f, stderr=subprocess.PIPE)
                secs = time.perf_counter() - t
                if p.returncode != 0:
                    sys.exit(f"pier {' '.join(what)} failed: {p.stderr.decode(errors='replace')[-300:]}")
                size = os.path.getsize(out)
                with open(out, "rb") as f:
                    rows = sum(1 for _ in f) - 1  # the header
            else:
                secs, size = curl(socks[api], what, out)
                with open(out, "rb") as f:
                    rows = len(json.load(f))
            if rows != want(expect):
                sys.exit(f"{name}: {rows} rows, expected {want(expect)}")
            if round_:
                res[name]["ms"].append(secs * 1000)
            res[name]["bytes"], res[name]["rows"] = size, rows
    for r in res.values():
        r["median_ms"] = round(statistics.median(r["ms"]), 1)
        r["p95_ms"] = round(percentile(r["ms"], 0.95), 1)
        r["ms"] = [round(x, 1) for x in r["ms"]]
    return res


def memory(pid):
    """The daemon's VmRSS and VmHWM, MiB."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                out[k] = round(int(v.split()[0]) / 1024, 1)
    return out


def main():
    ap = argparse.ArgumentParser(description="The pool-wide container listing with many instances.")
    ap.add_argument("--pier", default=os.path.join(ROOT, "target/release/pier"), help="the pier binary")
    ap.add_argument("--records", default=os.path.join(ROOT, "target/release/examples/pool-records"),
                    help="the pool-records example's binary")
    ap.add_argument("--instances", type=int, default=100_000, help="records of other hosts' instances")
    ap.add_argument("--hosts", type=int, default=100, help="simulated hosts they are spread over")
    ap.add_argument("--local", type=int, default=6, help="this host's own containers (a third running)")
    ap.add_argument("--runs", type=int, default=10, help="timed runs of each figure")
    ap.add_argument("--out", default="list", help="results as bench/results/OUT.json and OUT.md")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run the benchmark as root")
    for b in ("pier", "records"):
        setattr(args, b, os.path.abspath(getattr(args, b)))
        if not os.access(getattr(args, b), os.X_OK):
            sys.exit(f"no binary at {getattr(args, b)}: build it (cargo build --release -p pier; cargo build "
                     "--release -p pier-cluster --example pool-records) or pass --pier / --records")
    if os.environ.get("PIER_BENCH_NETNS") != "1":
        ensure_packages(PACKAGES)  # needs the host's network, so before we leave it
        os.execvpe("unshare", ["unshare", "--net", "--", sys.executable, os.path.abspath(__file__), *sys.argv[1:]],
                   dict(os.environ, PIER_BENCH_NETNS="1"))
    run(["ip", "link", "set", "lo", "up"])

    work = tempfile.mkdtemp(prefix="pier-bench-list-")
    root = os.path.join(work, "root")
    sock = os.path.join(work, "pier.sock")
    socks = {"native": sock, "docker": os.path.join(work, "docker.sock")}
    env = dict(os.environ, PIER_HOST=sock)
    load = {"before": os.getloadavg()}
    daemon = subprocess.Popen([args.pier, "daemon", "--root", root, "--socket", sock],
                              stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "daemon.log"), "w"))
    local = [f"list-local-{i}" for i in range(args.local)]
    try:
        for _ in range(200):
            if subprocess.run([args.pier, "info"], env=env, capture_output=True).returncode == 0:
                break
            time.sleep(0.05)
        run([args.pier, "cluster", "init", "--advertise", "127.0.0.1", "--name", "bench"], env)
        tar = os.path.join(work, "rootfs.tar")
        rootfs_tar(tar)
        run([args.pier, "image", "import", tar, "bench:1"], env)
        running = 0
        for i, name in enumerate(local):
            labels = ["--label", f"shard={SHARD}"] if i == 0 else []
            if i % 3 == 0:
                run([args.pier, "run", "-d", "--network", "none", "--name", name, *labels, "bench:1", "sleep", "600"],
                    env)
                running += 1
            else:
                run([args.pier, "create", "--network", "none", "--name", name, *labels, "bench:1", "true"], env)
        n_local = len(local)
        expect = {"all": n_local, "running": running, "shard": 1 if local else 0, "name": 0}
        print(f"== {n_local} local containers ({running} running), no other host's records", flush=True)
        before = measure(args, env, socks, expect, work)
        mem_before = memory(daemon.pid)

        print(f"== writing {args.instances} records of {args.hosts} simulated hosts", flush=True)
        filled = json.loads(run([args.records, "--root", root, "--instances", str(args.instances),
                                 "--hosts", str(args.hosts), "--time-list", "5"], out=True))
        print(f"   took {filled['seconds']:.1f} s ({filled['record_bytes'] / 1e6:.1f} MB of records); "
              f"a bare read of them all: {statistics.median(filled['list_ms']):.0f} ms", flush=True)
        shard_rows = sum(1 for i in range(args.instances) if i % filled["shards"] == int(SHARD[1:]))
        expect = {"all": n_local + args.instances, "running": running + filled["states"].get("running", 0),
                  "shard": expect["shard"] + shard_rows, "name": 1 if args.instances > NAME_INDEX else 0}
        print(f"== {expect['all']} instances, {expect['running']} running", flush=True)
        after = measure(args, env, socks, expect, work)
        mem_after = memory(daemon.pid)
        version = run([args.pier, "--version"], out=True).strip()
    finally:
        subprocess.run([args.pier, "rm", "-f", *local], env=env, capture_output=True)
        stop(daemon)
        subprocess.run(["rm", "-rf", work])
    load["after"] = os.getloadavg()

    result = {"when": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "machine": machine(), "pier": version, "load_average": load, "instances": args.instances,
              "hosts": args.hosts, "local": n_local, "runs": args.runs, "records": filled,
              "daemon_memory_mib": {"before": mem_before, "after": mem_after},
              "figures": {"before": before, "after": after}}
    md = [f"Listings of a pool member with {n_local} local containers, before and after {args.instances:,} "
          f"records of {args.hosts} other hosts' instances; {args.runs} runs each, {result['when']}, {version}, "
          f"load average {load['before'][0]:.1f} before, {load['after'][0]:.1f} after. A bare read of every "
          f"record (range + decode): {statistics.median(filled['list_ms']):.0f} ms. Daemon VmHWM "
          f"{mem_after.get('VmHWM')} MiB.", "",
          f"| figure | rows | bytes | median ms | p95 ms | rows with {args.instances:,} | bytes | median ms | p95 ms |",
          "|---|---|---|---|---|---|---|---|---|"]
    for name in before:
        b, a = before[name], after[name]
        md.append(f"| {name} | {b['rows']} | {b['bytes']:,} | {b['median_ms']} | {b['p95_ms']} | {a['rows']:,} | "
                  f"{a['bytes']:,} | {a['median_ms']} | {a['p95_ms']} |")
    text = "\n".join(md) + "\n"
    print(text)
    os.makedirs(os.path.join(ROOT, "bench/results"), exist_ok=True)
    with open(os.path.join(ROOT, f"bench/results/{args.out}.json"), "w") as f:
        json.dump(result, f, indent=2)
    with open(os.path.join(ROOT, f"bench/results/{args.out}.md"), "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
