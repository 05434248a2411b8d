//! Root tier: the web dashboard in a real browser (`common::browser`): log in through a
//! link from `pier dashboard url`, see the overview, start a container from the instances
//! page and watch its state change without a reload, read a line the container printed in
//! its live logs, and be refused when reusing the link. Each step's screenshot is kept in
//! `target/dashboard-screenshots/` (the test prints where).

mod common;

use common::*;

const ADDR: &str = "127.0.0.1:9443";

/// The browser's steps; args: the container's name. Prints one JSON line of timings.
const STEPS: &str = r##"
name = args[0]
t0 = time.monotonic()
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
"##;

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn log_in_start_an_instance_and_read_its_logs_in_a_browser() {
    require_root_and_tools(&["curl"]);
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

    let browser = common::browser::Browser::new("dashboard");
    let (link, stdout) = browser.run(&d, STEPS, &[name]);
    eprintln!("dashboard timings: {stdout}");
    browser.assert_screenshots(&[
        "1-overview",
        "2-instances",
        "3-started",
        "4-logs",
        "5-link-reused",
    ]);
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
