//! Root tier: the web dashboard in a real browser. Debian's headless Chromium, driven by
//! Selenium (python3-selenium and chromium-driver, from Debian too), runs in the daemon's
//! network namespace, logs in through a link from `pier dashboard url`, sees the
//! overview, starts a container from the instances page and watches its state change
//! without a reload, reads a line the container printed in its live logs, and is refused
//! when it reuses the link. Each step's screenshot is kept in
//! `target/dashboard-screenshots/` (the test prints where).

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;

use common::*;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// Debian's Python, where python3-selenium is (not a python3 earlier on PATH).
const PYTHON: &str = "/usr/bin/python3";
const ADDR: &str = "127.0.0.1:9443";

/// The browser's steps; argv: the link, the container's name, the screenshot directory,
/// the browser's profile directory. Prints one JSON line of timings at the end.
const SCRIPT: &str = r##"
import json, sys, time
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

link, name, shots, profile, chromium, driver = sys.argv[1:]
opts = webdriver.ChromeOptions()
opts.binary_location = chromium
for a in ["--headless=new", "--no-sandbox", "--ignore-certificate-errors",
          "--disable-dev-shm-usage", "--window-size=1280,900", "--user-data-dir=" + profile]:
    opts.add_argument(a)
drv = webdriver.Chrome(service=Service(driver), options=opts)
try:
    wait = WebDriverWait(drv, 20)
    shot = lambda n: drv.save_screenshot(f"{shots}/{n}.png")
    t0 = time.monotonic()
    drv.get(link)
    wait.until(lambda d: "CPUs" in d.find_element(By.ID, "host").text)
    overview_ms = (time.monotonic() - t0) * 1000
    # The memory graph draws itself once the history has two samples (one a second here).
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#memory-graph svg polyline"))
    nav = drv.execute_script(
        "const n = performance.getEntriesByType('navigation')[0];"
        "const p = performance.getEntriesByName('first-contentful-paint')[0];"
        "return [n.domContentLoadedEventEnd - n.startTime, p ? p.startTime : -1];")
    assert drv.current_url.endswith("/"), drv.current_url
    assert drv.find_element(By.ID, "h-overview").is_displayed()
    shot("1-overview")

    drv.find_element(By.ID, "nav-instances").click()
    row = lambda: drv.find_element(By.ID, "row-" + name)
    wait.until(lambda d: row().get_attribute("data-state") == "created")
    # Survives only if the page is never reloaded.
    drv.execute_script("window.pierMarker = 42")
    shot("2-instances")
    row().find_element(By.CSS_SELECTOR, "button[data-action=start]").click()
    wait.until(lambda d: row().get_attribute("data-state") == "running")
    assert drv.execute_script("return window.pierMarker") == 42, "the page reloaded"
    shot("3-started")

    row().find_element(By.LINK_TEXT, name).click()
    wait.until(lambda d: "hello-from-the-dashboard-test" in d.find_element(By.ID, "logs").text)
    assert drv.execute_script("return window.pierMarker") == 42, "the page reloaded"
    shot("4-logs")

    drv.get(link)
    body = drv.find_element(By.TAG_NAME, "body").text
    assert "pier dashboard url" in body, body
    shot("5-link-reused")
    print(json.dumps({"overview_ms": overview_ms, "dom_content_loaded_ms": nav[0],
                      "first_contentful_paint_ms": nav[1]}))
finally:
    drv.quit()
"##;

fn screenshots_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    target.join("dashboard-screenshots")
}

/// Processes whose command line mentions `needle`.
fn processes_with(needle: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(needle))
        .collect()
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn log_in_start_an_instance_and_read_its_logs_in_a_browser() {
    require_root_and_tools(&["curl"]);
    for tool in [PYTHON, CHROMIUM, CHROMEDRIVER] {
        assert!(
            Path::new(tool).exists(),
            "{tool} is missing: scripts/test.sh installs chromium, chromium-driver and python3-selenium"
        );
    }
    let d = with_busybox(&["--dashboard", ADDR, "--metrics-history-period", "1"]);
    let name = "dash-web";
    d.ok(&[
        "create",
        "--name",
        name,
        "bb",
        "sh",
        "-c",
        "echo hello-from-the-dashboard-test; sleep 600",
    ]);

    // Without a session: a 401, for the API and for the pages.
    let status = |url: &str| {
        let out = d
            .in_netns("curl")
            .args(["-sk", "-o", "/dev/null", "-w", "%{http_code}", url])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    assert_eq!(status(&format!("https://{ADDR}/v1/info")), "401");
    assert_eq!(status(&format!("https://{ADDR}/")), "401");

    let j = d.json(&["dashboard", "url"]);
    assert_eq!(j["expires_in_seconds"], 300, "{j}");
    let link = d.ok(&["dashboard", "url"]).trim().to_string();
    assert!(
        link.starts_with(&format!("https://{ADDR}/login?token=")),
        "{link}"
    );
    assert_ne!(j["url"], link.as_str(), "every link is new");

    let shots = screenshots_dir();
    let _ = std::fs::remove_dir_all(&shots);
    std::fs::create_dir_all(&shots).unwrap();
    let profile = std::env::temp_dir().join(format!("pier-dashboard-test-{}", std::process::id()));
    let out = d
        .in_netns(PYTHON)
        .args(["-c", SCRIPT, &link, name])
        .arg(&shots)
        .arg(&profile)
        .args([CHROMIUM, CHROMEDRIVER])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let (code, stdout, stderr) = outcome(&out);
    eprintln!("dashboard screenshots: {}", shots.display());
    eprintln!("dashboard timings: {stdout}");
    // The browser and its driver are gone, whatever happened.
    let left = processes_with(&profile.display().to_string());
    let _ = std::fs::remove_dir_all(&profile);
    assert!(left.is_empty(), "browser processes left behind: {left:?}");
    assert_eq!(code, 0, "the browser's steps failed:\n{stdout}\n{stderr}");
    for step in [
        "1-overview",
        "2-instances",
        "3-started",
        "4-logs",
        "5-link-reused",
    ] {
        assert!(shots.join(format!("{step}.png")).exists(), "{step}.png");
    }
    let t: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let loaded = t["dom_content_loaded_ms"].as_f64().unwrap();
    assert!(loaded < 1000.0, "the overview took {loaded} ms to load");

    // The browser really started it, and the reused link gave no session.
    assert_eq!(d.json(&["inspect", name])[0]["state"]["status"], "running");
    assert_eq!(status(&link), "401");
    d.ok(&["rm", "-f", name]);
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn a_link_without_a_dashboard_says_how_to_serve_one() {
    require_root_and_tools(&[]);
    let d = Daemon::start();
    let err = d.fails(&["dashboard", "url"]);
    assert!(err.contains("--dashboard ADDR"), "{err}");
}
