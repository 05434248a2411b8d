//! A real browser for the dashboard's tests: Debian's headless Chromium, driven by
//! Selenium (python3-selenium and chromium-driver, from Debian too), in the daemon's
//! network namespace. A test gives the browser's steps as Python; [`Browser::run`] logs
//! in with a fresh link from `pier dashboard url`, runs them, keeps their screenshots in
//! `target/dashboard-screenshots/NAME/`, and checks the browser left no process behind.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use super::{outcome, Daemon};

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// Debian's Python, where python3-selenium is (not a python3 earlier on PATH).
pub const PYTHON: &str = "/usr/bin/python3";

/// What the steps have in scope: `drv` (the WebDriver), `wait` (a 20 s `WebDriverWait`
/// that also retries on stale elements: check what a live page shows with `wait.until`),
/// `click(find)` (clicks what `find()` returns, again if a live refresh replaced it),
/// `By`, `Keys`, `shot(name)` (a screenshot), `link` (the login link), `args` (the test's
/// own arguments), `json`, `time`. The steps run after the login link was opened.
const PRELUDE: &str = r##"
import json, sys, time
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait
from selenium.common.exceptions import StaleElementReferenceException

link, shots, profile, chromium, driver, steps_file = sys.argv[1:7]
args = sys.argv[7:]
opts = webdriver.ChromeOptions()
opts.binary_location = chromium
for a in ["--headless=new", "--no-sandbox", "--ignore-certificate-errors",
          "--disable-dev-shm-usage", "--window-size=1280,900", "--user-data-dir=" + profile]:
    opts.add_argument(a)
opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
drv = webdriver.Chrome(service=Service(driver), options=opts)
try:
    # A live refresh may replace an element between finding it and reading it.
    wait = WebDriverWait(drv, 20, ignored_exceptions=(StaleElementReferenceException,))
    shot = lambda n: drv.save_screenshot(f"{shots}/{n}.png")
    # Clicks what `find` finds, again if a live refresh replaced it in between.
    def click(find):
        def attempt(d):
            try:
                find().click()
                return True
            except (StaleElementReferenceException, IndexError):
                return False
        wait.until(attempt)
    # Chromium drops a load when the namespace's interfaces change under it (a
    # container's veth coming up: ERR_NETWORK_CHANGED): the link is loaded again.
    for _ in range(3):
        drv.get(link)
        if "ERR_NETWORK_CHANGED" not in drv.page_source:
            break
    try:
        exec(open(steps_file).read())
    except BaseException:
        # What the page showed when a step failed: a screenshot, the address, the live
        # status, the visible text, the API calls it made and the console's messages.
        try:
            shot("failed")
            print("== page at failure:", drv.current_url, file=sys.stderr)
            print(drv.execute_script("""
                const live = document.getElementById('live');
                const calls = performance.getEntriesByType('resource')
                  .filter((r) => r.name.includes('/v1/'))
                  .map((r) => Math.round(r.startTime) + '+' + Math.round(r.duration) + 'ms '
                    + (r.responseStatus || '') + ' ' + r.name.replace(location.origin, ''));
                return 'status: ' + (live ? live.textContent : '(none)') + '\\n'
                  + 'api calls:\\n  ' + calls.slice(-40).join('\\n  ') + '\\n'
                  + 'text:\\n' + document.body.innerText.slice(0, 1500);
            """), file=sys.stderr)
            for entry in drv.get_log("browser")[-20:]:
                print("console:", entry.get("level"), entry.get("message"), file=sys.stderr)
        except Exception as e:
            print("(could not describe the page:", e, ")", file=sys.stderr)
        raise
finally:
    drv.quit()
"##;

/// The browser for one test, named `name` (its screenshots' directory).
pub struct Browser {
    name: String,
}

impl Browser {
    /// Fails (never skips) when the browser or its driver is missing.
    pub fn new(name: &str) -> Browser {
        for tool in [PYTHON, CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(tool).exists(),
                "{tool} is missing: scripts/test.sh installs chromium, chromium-driver and python3-selenium"
            );
        }
        Browser { name: name.into() }
    }

    /// Where this test's screenshots go.
    pub fn screenshots(&self) -> PathBuf {
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
        target.join("dashboard-screenshots").join(&self.name)
    }

    /// Runs `steps` against `d`'s dashboard with a fresh login link (returned with the
    /// steps' standard output); panics with the browser's output if they fail.
    pub fn run(&self, d: &Daemon, steps: &str, args: &[&str]) -> (String, String) {
        let link = d.ok(&["dashboard", "url"]).trim().to_string();
        let shots = self.screenshots();
        let _ = std::fs::remove_dir_all(&shots);
        std::fs::create_dir_all(&shots).unwrap();
        let tmp =
            std::env::temp_dir().join(format!("pier-browser-{}-{}", self.name, std::process::id()));
        let profile = tmp.join("profile");
        std::fs::create_dir_all(&profile).unwrap();
        let steps_file = tmp.join("steps.py");
        std::fs::write(&steps_file, steps).unwrap();
        let out = d
            .in_netns(PYTHON)
            .args(["-c", PRELUDE, &link])
            .arg(&shots)
            .arg(&profile)
            .args([CHROMIUM, CHROMEDRIVER])
            .arg(&steps_file)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let (code, stdout, stderr) = outcome(&out);
        eprintln!("{} screenshots: {}", self.name, shots.display());
        // The browser and its driver are gone, whatever happened.
        let left = processes_with(&profile.display().to_string());
        let _ = std::fs::remove_dir_all(&tmp);
        assert!(left.is_empty(), "browser processes left behind: {left:?}");
        if code != 0 {
            let log = d.log();
            let tail: Vec<&str> = log.lines().rev().take(80).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            panic!(
                "the browser's steps failed:\n{stdout}\n{stderr}\nthe daemon's last log lines:\n{}",
                tail.join("\n")
            );
        }
        (link, stdout)
    }

    /// Asserts each of `names` was saved as a screenshot.
    pub fn assert_screenshots(&self, names: &[&str]) {
        for n in names {
            assert!(
                self.screenshots().join(format!("{n}.png")).exists(),
                "{n}.png"
            );
        }
    }
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
