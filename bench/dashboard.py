#!/usr/bin/env python3
"""The web dashboard's first paint with many instances, in a real browser:

    sudo python3 bench/dashboard.py [--pier PATH] [--instances 1000] [--running 20] [--runs 10]

A Pier daemon of its own (its own state directory, socket and network namespace) gets
`--instances` containers (`--running` of them running `sleep 600`, the rest created),
then Debian's headless Chromium, driven by Selenium, logs in with a `pier dashboard url`
link and loads the instances page (`/#/instances`) and the overview `--runs` times each,
each a fresh load of the document. Per load it reads the browser's own timings:

- first contentful paint (`first-contentful-paint`),
- DOMContentLoaded,
- instances shown: the dashboard's `pier:instances-shown` mark, set once the list of every
  instance was fetched and drawn (the table's rows, the overview's counts);

and checks that the page shows every instance. It prints the medians, and writes
bench/results/dashboard.json and dashboard.md. No other engine has a dashboard to compare
with; the goal (issue 18) is a first paint under 200 ms with 1,000 instances.
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

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import ensure_packages, machine, parallel, rootfs_tar, run, stop  # noqa: E402

PACKAGES = ["busybox-static", "chromium", "chromium-driver", "python3-selenium"]
ADDR = "127.0.0.1:9440"
PYTHON = "/usr/bin/python3"  # Debian's, where python3-selenium is

# Runs in Debian's Python: argv = link, origin, runs, instances. Prints one JSON document.
BROWSER = r"""
import json, sys
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

link, origin, runs, instances, profile = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
opts = webdriver.ChromeOptions()
opts.binary_location = "/usr/bin/chromium"
for a in ["--headless=new", "--no-sandbox", "--ignore-certificate-errors", "--disable-dev-shm-usage",
          "--window-size=1280,900", "--user-data-dir=" + profile]:
    opts.add_argument(a)
drv = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
TIMES = ("const n = performance.getEntriesByType('navigation')[0];"
         "const p = performance.getEntriesByName('first-contentful-paint')[0];"
         "const m = performance.getEntriesByName('pier:instances-shown')[0];"
         "return [p ? p.startTime : null, n.domContentLoadedEventEnd - n.startTime, m ? m.startTime : null];")
out = {}
try:
    wait = WebDriverWait(drv, 60)
    drv.get(link)  # the session cookie
    wait.until(lambda d: d.find_elements(By.ID, "h-overview"))
    checks = {
        "instances": lambda d: d.execute_script(
            "return document.querySelectorAll('#instances tbody tr').length") == instances,
        "overview": lambda d: d.execute_script(
            "return [...document.querySelectorAll('#states dd')].reduce((a, x) => a + Number(x.textContent), 0)") == instances,
    }
    for page, shown in checks.items():
        rows = []
        for i in range(runs + 1):
            drv.get(f"{origin}/?load={page}{i}#/{page}")
            wait.until(shown)
            wait.until(lambda d: d.execute_script(TIMES)[0] is not None and d.execute_script(TIMES)[2] is not None)
            if i:  # the first load warms the browser's caches
                rows.append(drv.execute_script(TIMES))
        out[page] = rows
    print(json.dumps(out))
finally:
    drv.quit()
"""


def main():
    ap = argparse.ArgumentParser(description="The dashboard's first paint with many instances.")
    ap.add_argument("--pier", default=os.path.join(ROOT, "target/release/pier"), help="the pier binary")
    ap.add_argument("--instances", type=int, default=1000)
    ap.add_argument("--running", type=int, default=20, help="how many of the instances run")
    ap.add_argument("--runs", type=int, default=10, help="loads of each page")
    ap.add_argument("--width", type=int, default=8, help="creates at a time")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run the benchmark as root")
    args.pier = os.path.abspath(args.pier)
    if not os.access(args.pier, os.X_OK):
        sys.exit(f"no pier binary at {args.pier}: build it (cargo build --release -p pier) or pass --pier PATH")
    if os.environ.get("PIER_BENCH_NETNS") != "1":
        ensure_packages(PACKAGES)  # needs the host's network, so before we leave it
        os.execvpe("unshare", ["unshare", "--net", "--", sys.executable, os.path.abspath(__file__), *sys.argv[1:]],
                   dict(os.environ, PIER_BENCH_NETNS="1"))
    run(["ip", "link", "set", "lo", "up"])

    work = tempfile.mkdtemp(prefix="pier-bench-dashboard-")
    sock = os.path.join(work, "pier.sock")
    env = dict(os.environ, PIER_HOST=sock)
    daemon = subprocess.Popen([args.pier, "daemon", "--root", os.path.join(work, "root"), "--socket", sock,
                               "--dashboard", ADDR], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            if subprocess.run([args.pier, "info"], env=env, capture_output=True).returncode == 0:
                break
            time.sleep(0.05)
        tar = os.path.join(work, "rootfs.tar")
        rootfs_tar(tar)
        run([args.pier, "image", "import", tar, "bench:1"], env)
        print(f"== creating {args.instances} instances ({args.running} running)", flush=True)
        t = time.perf_counter()

        def make(i):
            name = f"dash-{i:05d}"
            if i < args.running:
                run([args.pier, "run", "-d", "--network", "none", "--name", name, "bench:1", "sleep", "600"], env)
            else:
                run([args.pier, "create", "--network", "none", "--name", name, "bench:1", "true"], env)
        errors = parallel(make, range(args.instances), args.width)
        if errors:
            sys.exit(f"{len(errors)} creates failed, first: {errors[0]}")
        print(f"   took {time.perf_counter() - t:.1f} s", flush=True)
        link = run([args.pier, "dashboard", "url"], env, out=True).strip()
        profile = os.path.join(work, "profile")
        p = subprocess.run([PYTHON, "-c", BROWSER, link, "https://" + ADDR, str(args.runs), str(args.instances),
                            profile], capture_output=True, text=True)
        if p.returncode != 0:
            sys.exit(f"the browser failed:\n{p.stdout}\n{p.stderr}")
        loads = json.loads(p.stdout)
        version = run([args.pier, "--version"], out=True).strip()
    finally:
        subprocess.run([args.pier, "rm", "-f", *[f"dash-{i:05d}" for i in range(args.running)]], env=env,
                       capture_output=True)
        stop(daemon)
        subprocess.run(["rm", "-rf", work])

    figures = {}
    for page, rows in loads.items():
        fcp, dcl, shown = zip(*rows)
        figures[page] = {
            "first_contentful_paint_ms": round(statistics.median(fcp), 1),
            "dom_content_loaded_ms": round(statistics.median(dcl), 1),
            "instances_shown_ms": round(statistics.median(shown), 1),
            "runs": [[round(x, 1) for x in r] for r in rows],
        }
    result = {"when": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "machine": machine(), "pier": version, "instances": args.instances, "running": args.running,
              "loads_per_page": args.runs, "figures": figures}
    md = [f"Dashboard with {args.instances} instances ({args.running} running), {args.runs} loads per page, "
          f"medians (ms), {result['when']}, {version}:", "",
          "| page | first contentful paint | DOMContentLoaded | every instance shown |", "|---|---|---|---|"]
    for page, f in figures.items():
        md.append(f"| `#/{page}` | {f['first_contentful_paint_ms']} | {f['dom_content_loaded_ms']} | "
                  f"{f['instances_shown_ms']} |")
    text = "\n".join(md) + "\n"
    print(text)
    os.makedirs(os.path.join(ROOT, "bench/results"), exist_ok=True)
    with open(os.path.join(ROOT, "bench/results/dashboard.json"), "w") as f:
        json.dump(result, f, indent=2)
    with open(os.path.join(ROOT, "bench/results/dashboard.md"), "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
