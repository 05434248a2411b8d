//! Root tier: the dashboard's create form, instance filters, instance details and hosts
//! page in a real browser (`common::browser`): create and start a busybox container from
//! the form (after the form refused a malformed line), land on its details and see it
//! running with its facts, graphs and log line; narrow the list by state, kind and text
//! (kept across a reload); see the host's CPU and memory graphs drawn. Outside the
//! browser, `pier inspect` and `pier exec` show the form's environment and memory limit
//! were applied. Screenshots are kept in `target/dashboard-screenshots/dashboard-create/`.

mod common;

use common::*;

const ADDR: &str = "127.0.0.1:9454";

/// The browser's steps; args: the new container's name, an exited one's, a created one's,
/// a created VM's.
const STEPS: &str = r##"
from selenium.webdriver.support.ui import Select
made, done, idle, vm = args
visible = lambda id: drv.find_element(By.ID, id).is_displayed()
row = lambda n: drv.find_element(By.ID, "row-" + n)

drv.find_element(By.ID, "nav-instances").click()
wait.until(lambda d: all(d.find_elements(By.ID, "row-" + n) for n in [done, idle, vm]))
wait.until(lambda d: drv.find_element(By.ID, "instance-count").text == "3 instances")
opts = lambda id: [o.text for o in drv.find_elements(By.CSS_SELECTOR, "#%s option" % id)]
wait.until(lambda d: opts("filter-state") == ["all (3)", "running (0)", "exited (1)", "created (2)", "paused (0)"])
wait.until(lambda d: opts("filter-kind") == ["all (3)", "container (2)", "VM (1)"])
shot("1-instances")

# The form, by keyboard: Enter opens it, Escape closes it and focus goes back.
drv.find_element(By.ID, "create-open").send_keys(Keys.ENTER)
wait.until(lambda d: visible("create-dialog"))
wait.until(lambda d: drv.switch_to.active_element.get_attribute("id") == "create-image-select")
drv.switch_to.active_element.send_keys(Keys.ESCAPE)
wait.until(lambda d: not visible("create-dialog"))
wait.until(lambda d: drv.switch_to.active_element.get_attribute("id") == "create-open")
# Every control has a label.
drv.find_element(By.ID, "create-open").click()
wait.until(lambda d: visible("create-dialog"))
for c in drv.find_elements(By.CSS_SELECTOR, "#create-form input, #create-form select, #create-form textarea"):
    assert drv.find_elements(By.CSS_SELECTOR, "label[for='%s']" % c.get_attribute("id")), c.get_attribute("id")
# The image select lists the images here; picking one fills the reference.
wait.until(lambda d: any(o.text.startswith("bb") for o in Select(d.find_element(By.ID, "create-image-select")).options))
pick = Select(drv.find_element(By.ID, "create-image-select"))
pick.select_by_visible_text([o.text for o in pick.options if o.text.startswith("bb")][0])
assert drv.find_element(By.ID, "create-image").get_attribute("value").startswith("bb")
drv.find_element(By.ID, "create-name").send_keys(made)
drv.find_element(By.ID, "create-command").send_keys("sh -c 'echo made-from-the-page; sleep 600'")
drv.find_element(By.ID, "create-env").send_keys("GREETING=hello from the form\nNOT-A-PAIR")
drv.find_element(By.ID, "create-memory").send_keys("64m")
assert drv.find_element(By.ID, "create-start").is_selected()
drv.find_element(By.ID, "create-submit").click()
# A malformed line: the form says which, next to it, and creates nothing.
wait.until(lambda d: "NOT-A-PAIR" in d.find_element(By.ID, "create-errors").text)
wait.until(lambda d: drv.find_element(By.ID, "create-env").get_attribute("aria-invalid") == "true")
wait.until(lambda d: drv.switch_to.active_element.get_attribute("id") == "create-env")
assert visible("create-dialog")
shot("2-form-error")
env = drv.find_element(By.ID, "create-env")
env.clear()
env.send_keys("GREETING=hello from the form")
drv.find_element(By.ID, "create-submit").click()

# Its details: running, its facts, its log line, its graphs.
wait.until(lambda d: d.current_url.endswith("#/instances/" + made))
wait.until(lambda d: visible("instance-detail") and d.find_element(By.ID, "h-instance").text == made)
facts = lambda: drv.find_element(By.ID, "instance-facts").text
wait.until(lambda d: "running" in facts())
wait.until(lambda d: "made-from-the-page" in d.find_element(By.ID, "logs").text)
f = facts()
for want in ["memory 64.0 MiB", "sh -c 'echo made-from-the-page; sleep 600'", "restarts\n0", "networks\nbridge 172.", "created\n", "started\n"]:
    assert want in f, (want, f)
wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#instance-cpu-graph svg polyline")
           and d.find_elements(By.CSS_SELECTOR, "#instance-memory-graph svg polyline"))
shot("3-details")

# The filters: by state, kind and text, kept in the address across a reload.
drv.find_element(By.LINK_TEXT, "← All instances").click()
wait.until(lambda d: d.find_elements(By.ID, "row-" + made) and row(made).get_attribute("data-state") == "running")
Select(drv.find_element(By.ID, "filter-state")).select_by_value("exited")
wait.until(lambda d: not row(made).is_displayed())
wait.until(lambda d: row(done).is_displayed() and not row(idle).is_displayed() and not row(vm).is_displayed())
wait.until(lambda d: "1 of 4" in drv.find_element(By.ID, "instance-count").text)
wait.until(lambda d: "state=exited" in drv.current_url)
shot("4-filter-exited")
Select(drv.find_element(By.ID, "filter-state")).select_by_value("")
Select(drv.find_element(By.ID, "filter-kind")).select_by_value("vm")
wait.until(lambda d: not row(done).is_displayed())
wait.until(lambda d: row(vm).is_displayed() and not row(made).is_displayed() and not row(idle).is_displayed())
Select(drv.find_element(By.ID, "filter-kind")).select_by_value("container")
wait.until(lambda d: row(done).is_displayed())
wait.until(lambda d: not row(vm).is_displayed())
drv.find_element(By.ID, "filter-text").send_keys(made[:-1])
wait.until(lambda d: not row(done).is_displayed())
wait.until(lambda d: row(made).is_displayed() and not row(idle).is_displayed())
drv.refresh()
wait.until(lambda d: d.find_elements(By.ID, "row-" + made) and d.find_elements(By.ID, "row-" + done))
wait.until(lambda d: not row(done).is_displayed())
wait.until(lambda d: row(made).is_displayed())
wait.until(lambda d: drv.find_element(By.ID, "filter-text").get_attribute("value") == made[:-1])
wait.until(lambda d: Select(drv.find_element(By.ID, "filter-kind")).first_selected_option.get_attribute("value") == "container")
wait.until(lambda d: "1 of 4" in drv.find_element(By.ID, "instance-count").text)
shot("5-filter-text-after-reload")

# The hosts page: facts and graphs drawn from the history.
drv.find_element(By.ID, "nav-hosts").click()
wait.until(lambda d: "CPUs" in d.find_element(By.ID, "host-this-facts").text)
wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#host-this-cpu svg polyline")
           and d.find_elements(By.CSS_SELECTOR, "#host-this-memory svg polyline"))
cpu = drv.find_element(By.CSS_SELECTOR, "#host-this-cpu svg").get_attribute("aria-label")
assert "% of" in cpu, cpu
assert drv.find_element(By.CSS_SELECTOR, "#host-this-memory svg").get_attribute("aria-label").startswith("Memory in use")
shot("6-hosts")
"##;

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn create_filter_and_see_hosts_in_a_browser() {
    require_root_and_tools(&[]);
    let d = with_busybox(&["--dashboard", ADDR, "--metrics-history-period", "1"]);
    let (made, done, idle, vm) = ("dc-made", "dc-done", "dc-idle", "dc-vm");
    d.ok(&["run", "--name", done, "bb", "true"]);
    d.ok(&["create", "--name", idle, "bb", "sleep", "600"]);
    d.ok(&["create", "--vm", "--name", vm, "bb", "true"]);

    let browser = common::browser::Browser::new("dashboard-create");
    browser.run(&d, STEPS, &[made, done, idle, vm]);
    browser.assert_screenshots(&[
        "1-instances",
        "2-form-error",
        "3-details",
        "4-filter-exited",
        "5-filter-text-after-reload",
        "6-hosts",
    ]);

    // What the form asked for is what the engine made.
    let c = &d.json(&["inspect", made])[0];
    assert_eq!(c["state"]["status"], "running", "{c}");
    assert_eq!(c["config"]["memory"], 64 << 20, "{c}");
    assert_eq!(
        c["config"]["cmd"],
        serde_json::json!(["sh", "-c", "echo made-from-the-page; sleep 600"]),
        "{c}"
    );
    assert!(
        c["config"]["env"]
            .as_array()
            .unwrap()
            .contains(&"GREETING=hello from the form".into()),
        "{c}"
    );
    assert_eq!(
        d.ok(&["exec", made, "sh", "-c", "echo $GREETING"]).trim(),
        "hello from the form"
    );
    // The form made nothing of its refused attempt.
    let names: Vec<String> = d
        .json(&["ps", "-a"])
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names.len(), 4, "{names:?}");
    d.ok(&["rm", "-f", made, done, idle, vm]);
}

/// The instance list says what each instance is: `kind` is `container`, or `vm` for one
/// made with `--vm` (the filters of the dashboard's list use it).
#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn the_instance_list_names_each_instance_s_kind() {
    require_root_and_tools(&[]);
    let d = with_busybox(&[]);
    d.ok(&["create", "--name", "k-ctr", "bb", "true"]);
    d.ok(&["create", "--vm", "--name", "k-vm", "bb", "true"]);
    let list = d.json(&["ps", "-a"]);
    let c = list
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "k-ctr")
        .unwrap();
    assert_eq!(c["kind"], "container", "{list}");
    let vm = list
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "k-vm")
        .unwrap();
    assert_eq!(vm["kind"], "vm", "{list}");
    d.ok(&["rm", "-f", "k-ctr", "k-vm"]);
}

/// The host's busy CPU time and its outward interfaces' traffic are counters in the
/// history's samples (what the hosts page draws) and in `/metrics`; the daemon's own
/// bridges and veths are left out of the traffic, a link of the test's own is counted.
#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn the_host_s_cpu_time_and_traffic_are_in_the_history_and_metrics() {
    require_root_and_tools(&["curl"]);
    let d = with_busybox(&["--metrics-history-period", "1"]);
    let get = |path: &str| -> String {
        let out = std::process::Command::new("curl")
            .args(["-sf", "--unix-socket"])
            .arg(&d.socket)
            .arg(format!("http://pier{path}"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{path}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    // A link of the test's own in the daemon's namespace (gone with it), and traffic on
    // it: ARP requests for an address nobody has go out of one end and into the other.
    let ns = d.netns.clone();
    ip(&[
        "-n", &ns, "link", "add", "dcx0", "type", "veth", "peer", "name", "dcx1",
    ]);
    ip(&["-n", &ns, "addr", "add", "10.77.0.1/24", "dev", "dcx0"]);
    ip(&["-n", &ns, "link", "set", "dcx0", "up"]);
    ip(&["-n", &ns, "link", "set", "dcx1", "up"]);
    let first = |h: &serde_json::Value, key: &str| h["samples"][0][key].as_f64().unwrap();
    let last = |h: &serde_json::Value, key: &str| {
        h["samples"].as_array().unwrap().last().unwrap()[key]
            .as_f64()
            .unwrap()
    };
    let mut h = serde_json::Value::Null;
    wait_until("two samples", || {
        h = serde_json::from_str(&get("/v1/metrics/history")).unwrap();
        h["samples"].as_array().is_some_and(|s| s.len() >= 2)
    });
    let (rx0, tx0) = (
        last(&h, "host_network_receive_bytes"),
        last(&h, "host_network_transmit_bytes"),
    );
    let _ = d
        .in_netns(BUSYBOX)
        .args([
            "ping",
            "-c",
            "3",
            "-i",
            "0.2",
            "-W",
            "1",
            "-I",
            "dcx0",
            "10.77.0.9",
        ])
        .output()
        .unwrap();
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    wait_until("two samples after the traffic", || {
        h = serde_json::from_str(&get(&format!("/v1/metrics/history?since={since}"))).unwrap();
        h["samples"].as_array().is_some_and(|s| s.len() >= 2)
    });
    assert!(last(&h, "host_network_transmit_bytes") > tx0, "{h}");
    assert!(last(&h, "host_network_receive_bytes") > rx0, "{h}");
    let cpu = (first(&h, "host_cpu_seconds"), last(&h, "host_cpu_seconds"));
    assert!(cpu.0 > 0.0 && cpu.1 >= cpu.0, "{cpu:?}: {h}");

    let text = get("/metrics");
    for family in [
        "pier_host_cpu_seconds_total",
        "pier_host_network_receive_bytes_total",
        "pier_host_network_transmit_bytes_total",
    ] {
        assert!(
            text.contains(&format!("# TYPE {family} counter\n")),
            "{family}:\n{text}"
        );
        let value: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{family} ")))
            .unwrap_or_else(|| panic!("no {family} sample"))
            .parse()
            .unwrap();
        assert!(value > 0.0, "{family} {value}");
    }
    ip(&["-n", &ns, "link", "del", "dcx0"]);
}
