//! Root tier: the dashboard's networks and volumes pages in a real browser
//! (`common::browser`), and the native API they stand on.
//!
//! In the browser: with a volume-bytes quota set for the project, create a limited volume
//! from the volumes page and see the quota bar move by its size, change the quota from the
//! page, snapshot the volume and see the snapshot listed; create a network from the networks page, start a container on it
//! (CLI) while the page is open, and see the topology picture link the container to the
//! network with its address, as the text alternative does; reach the network's details
//! from the picture by keyboard, disconnect and connect it there. Refused creates show the
//! API's message. Screenshots are
//! kept in `target/dashboard-screenshots/dashboard-infra/`.
//!
//! Through the API: `GET /v1/networks?containers=true` fills in each network's running
//! containers as inspect does, `GET /v1/volumes?usage=true` each volume's usage and
//! users, and `GET /v1/info` names the request's project.

mod common;

use std::process::Command;

use common::*;

const ADDR: &str = "127.0.0.1:9453";
const MIB: u64 = 1024 * 1024;

/// The browser's steps; args: the pier binary, the daemon's socket, the container's name.
const STEPS: &str = r##"
import subprocess
pier, socket, cname = args
def cli(*a):
    out = subprocess.run([pier, *a], env={"PIER_HOST": socket, "PATH": "/usr/bin:/bin"},
                         capture_output=True, text=True)
    assert out.returncode == 0, (a, out.stdout, out.stderr)
    return out.stdout
byid = lambda i: drv.find_element(By.ID, i)
def text_has(i, s):
    return lambda d: s in d.find_element(By.ID, i).text
MIB = 1024 * 1024
# wait.until, saying what was awaited and what the page shows when it times out.
def until(f, what):
    try:
        return wait.until(f)
    except Exception:
        shot("failed")
        raise AssertionError(what + "; the page shows:\n" + drv.find_element(By.TAG_NAME, "main").text[:3000])
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.support.ui import Select, WebDriverWait
wait = WebDriverWait(drv, 20, ignored_exceptions=[StaleElementReferenceException])
# f() with elements it finds afresh, again while a live refresh replaces them under it.
def fresh(f, what):
    out = []
    def attempt(d):
        try:
            out.append(f())
            return True
        except StaleElementReferenceException:
            return False
    until(attempt, what)
    return out[-1]
txt = lambda i: fresh(lambda: byid(i).text, "the text of #" + i)

# ---- volumes: the quota bar moves by the new volume's size -----------------------------
until(lambda d: d.find_element(By.ID, "nav-volumes"), "the page's navigation")
byid("nav-volumes").click()
qm = lambda: byid("quota-bytes-meter")
until(lambda d: qm().get_attribute("data-limit") == str(256 * MIB), "the quota bar showing the 256 MiB quota")
assert txt("volumes-project") == "default", txt("volumes-project")
before_used = int(qm().get_attribute("data-used"))
before_value = float(drv.execute_script("return arguments[0].value", qm()))
assert before_value == before_used, (before_value, before_used)
drv.execute_script("window.pierMarker = 42")
shot("1-volumes-quota")

# Over the quota: refused, and the page says why.
byid("vol-name").send_keys("dash-too-big")
byid("vol-size").send_keys("1g")
byid("volume-create").find_element(By.CSS_SELECTOR, "button[type=submit]").click()
until(text_has("vol-create-status", "quota"), "the refusal of a volume over the quota")
assert not drv.find_elements(By.ID, "vol-row-dash-too-big")

byid("vol-name").clear()
byid("vol-size").clear()
byid("vol-name").send_keys("dash-vol")
byid("vol-size").send_keys("16m")
byid("volume-create").find_element(By.CSS_SELECTOR, "button[type=submit]").click()
until(lambda d: d.find_elements(By.ID, "vol-row-dash-vol"), "the new volume's row")
# The volume charges the quota its size limit: what its filesystem got for 16m.
limit = json.loads(cli("--format", "json", "volume", "inspect", "dash-vol"))[0]["size_limit"]
assert 16 * MIB <= limit < 17 * MIB, limit
until(lambda d: int(qm().get_attribute("data-used")) == before_used + limit, "the quota bar moving by the volume's size")
after_value = float(drv.execute_script("return arguments[0].value", qm()))
assert after_value - before_value == limit, (before_value, after_value, limit)
assert "of 256.0 MiB" in txt("quota-bytes-text"), txt("quota-bytes-text")
# The volume's own bar: used of its limit.
vmax, vused = fresh(lambda: [byid("vol-row-dash-vol").find_element(By.TAG_NAME, "meter").get_attribute(a)
                             for a in ("max", "data-used")], "the volume's bar")
assert float(vmax) == limit, vmax
assert int(vused) > 0, vused
shot("2-volume-created")

# Edit the quota from the page: the bars follow.
byid("quota-bytes").clear()
byid("quota-bytes").send_keys("512m")
byid("quota-count").clear()
byid("quota-count").send_keys("3")
byid("quota-form").find_element(By.CSS_SELECTOR, "button[type=submit]").click()
until(lambda d: qm().get_attribute("data-limit") == str(512 * MIB), "the quota bar at the new 512 MiB quota")
until(lambda d: byid("quota-count-meter").get_attribute("data-limit") == "3", "the volume count bar at its new quota")
assert byid("quota-count-meter").is_displayed()
assert "1 volume of 3 volumes" in txt("quota-count-text"), txt("quota-count-text")
assert int(qm().get_attribute("data-used")) == before_used + limit

# ---- snapshots --------------------------------------------------------------------------
fresh(lambda: byid("vol-row-dash-vol").find_element(By.LINK_TEXT, "dash-vol").click(), "a click on the volume")
until(text_has("h-volume", "dash-vol"), "the volume's details")
byid("snap-name").send_keys("snap-one")
byid("snapshot-create").find_element(By.CSS_SELECTOR, "button[type=submit]").click()
until(lambda d: d.find_elements(By.ID, "snap-row-snap-one"), "the snapshot's row")
assert "snap-one" in txt("snapshots")
shot("3-snapshot")

# ---- networks: create, then a container on it shows in the picture -------------------
byid("nav-networks").click()
until(lambda d: d.find_elements(By.ID, "net-row-bridge"), "the networks list")
byid("net-name").send_keys("dash-bad")
byid("net-subnet").send_keys("10.88.0.0/33")
byid("network-create").find_element(By.CSS_SELECTOR, "button[type=submit]").click()
until(text_has("net-create-status", "Cannot create dash-bad"), "the refusal of a bad subnet")
byid("net-name").clear()
byid("net-subnet").clear()
byid("net-name").send_keys("dash-net")
byid("net-subnet").send_keys("10.88.7.0/24")
byid("network-create").find_element(By.CSS_SELECTOR, "button[type=submit]").click()
until(lambda d: d.find_elements(By.ID, "net-row-dash-net"), "the new network's row")
assert "10.88.7.0/24" in txt("net-row-dash-net")
until(lambda d: d.find_elements(By.ID, "topo-network-dash-net"), "the new network in the topology")
shot("4-network-created")

cli("run", "-d", "--name", cname, "--network", "dash-net", "bb", "sleep", "600")
ip = json.loads(cli("--format", "json", "inspect", cname))[0]["networks"]["dash-net"]["ip_address"]
assert ip.startswith("10.88.7."), ip
link_id = "topo-link-dash-net-" + cname
until(lambda d: d.find_elements(By.ID, link_id), "the container's link in the topology")
# Read at once (a live refresh redraws the picture).
data_ip, label, href, tab = drv.execute_script(
    "const l = document.getElementById(arguments[0]), n = document.getElementById(arguments[1]);"
    "return [l.dataset.ip, l.querySelector('text').textContent, n.getAttribute('href'), n.tabIndex]",
    link_id, "topo-instance-" + cname)
assert data_ip == ip, data_ip
assert ip in label, label
assert href == "#/instances/" + cname, href
assert tab == 0, "not in the tab order"
# The count in the list and the text alternative say the same.
until(lambda d: d.find_element(By.CSS_SELECTOR, "#net-row-dash-net td[data-count]").text == "1", "the network's instance count")
alt = txt("topology-list")
assert "dash-net" in alt and cname + " — " + ip in alt, alt
assert drv.execute_script("return window.pierMarker") == 42, "the page reloaded"
shot("5-topology")

# By keyboard: a node of the picture is a link to its page.
drv.execute_script("document.getElementById('topo-network-dash-net').focus()")
assert drv.switch_to.active_element.get_attribute("id") == "topo-network-dash-net"
drv.switch_to.active_element.send_keys(Keys.ENTER)
until(lambda d: d.current_url.endswith("#/networks/dash-net"), "the network's page")
until(lambda d: d.find_elements(By.ID, "ep-row-" + cname), "the container's endpoint row")
assert ip in fresh(lambda: byid("ep-row-" + cname).text, "the endpoint's text")
assert drv.execute_script("return window.pierMarker") == 42, "the page reloaded"
shot("6-network-detail")

# Disconnect it from the page, then connect it again.
fresh(lambda: byid("ep-row-" + cname).find_element(By.CSS_SELECTOR, "button[data-action=disconnect]").click(),
      "a click on disconnect")
until(lambda d: not d.find_elements(By.ID, "ep-row-" + cname), "the endpoint row gone after a disconnect")
assert "dash-net" not in json.loads(cli("--format", "json", "inspect", cname))[0]["networks"]
until(lambda d: d.find_elements(By.CSS_SELECTOR, "#connect-instance option[data-name='%s']" % cname), "the container offered to connect")
byid("connect-ip").send_keys("10.88.7.77")
def connect():
    Select(byid("connect-instance")).select_by_visible_text(cname + " (running)")
    byid("connect-button").click()
fresh(connect, "a connect")
until(lambda d: d.find_elements(By.ID, "ep-row-" + cname), "the endpoint row back after a connect")
ep_text = fresh(lambda: byid("ep-row-" + cname).text, "the endpoint's text")
assert "10.88.7.77/24" in ep_text, ep_text
assert json.loads(cli("--format", "json", "inspect", cname))[0]["networks"]["dash-net"]["ip_address"] == "10.88.7.77"
shot("7-reconnected")
print(json.dumps({"ip": ip}))
"##;

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn see_the_quota_bar_move_a_snapshot_and_the_topology_in_a_browser() {
    require_root_and_tools(&[]);
    let d = with_busybox(&["--dashboard", ADDR]);
    // The quota first, from the CLI: the page shows it and what the project commits.
    d.ok(&["quota", "--volume-bytes", "256m"]);
    let cname = "dash-infra-c";

    let browser = common::browser::Browser::new("dashboard-infra");
    let socket = d.socket.display().to_string();
    let (_, stdout) = browser.run(&d, STEPS, &[PIER, &socket, cname]);
    browser.assert_screenshots(&[
        "1-volumes-quota",
        "2-volume-created",
        "3-snapshot",
        "4-network-created",
        "5-topology",
        "6-network-detail",
        "7-reconnected",
    ]);

    // What the browser did is what the daemon has.
    let v = d.json(&["volume", "inspect", "dash-vol"]);
    let limit = v[0]["size_limit"].as_u64().unwrap();
    assert!((16 * MIB..17 * MIB).contains(&limit), "{v}");
    let snaps = d.ok(&["volume", "snapshots", "dash-vol"]);
    assert!(snaps.contains("snap-one"), "{snaps}");
    let q = api_json(&d, "/v1/projects/default/quota");
    assert_eq!(q["committed_bytes"], limit, "{q}");
    assert_eq!(q["volume_bytes"], 512 * MIB, "{q}");
    assert_eq!(q["volume_count"], 3, "{q}");
    assert!(d
        .fails(&["volume", "inspect", "dash-too-big"])
        .contains("no such volume"));
    let n = d.json(&["network", "inspect", "dash-net"]);
    assert_eq!(n[0]["subnet"], "10.88.7.0/24", "{n}");
    let shown: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert!(
        shown["ip"].as_str().unwrap().starts_with("10.88.7."),
        "{shown}"
    );
    assert_eq!(
        d.json(&["inspect", cname])[0]["networks"]["dash-net"]["ip_address"],
        "10.88.7.77"
    );

    d.ok(&["rm", "-f", cname]);
    d.ok(&["network", "rm", "dash-net"]);
    d.ok(&["volume", "rm", "dash-vol"]);
    d.ok(&["quota", "--volume-bytes", "none", "--volumes", "none"]);
}

/// `GET PATH` on the native API's socket, as JSON (the status must be 200).
fn api_json(d: &Daemon, path: &str) -> serde_json::Value {
    let out = Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}", "--unix-socket"])
        .arg(&d.socket)
        .arg(format!("http://pier{path}"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or((&text, ""));
    assert_eq!(code, "200", "GET {path}: {body}");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn listings_fill_in_network_endpoints_and_volume_usage_when_asked() {
    require_root_and_tools(&["curl"]);
    let d = with_busybox(&[]);
    assert_eq!(api_json(&d, "/v1/info")["project"], "default");
    let info = d.ok(&["info"]);
    assert!(info.lines().any(|l| l == " Project: default"), "{info}");

    // Networks: only with `containers=true` does a listing carry the running containers,
    // and then as inspecting the network shows them.
    d.ok(&["network", "create", "--subnet", "10.89.3.0/24", "infra-net"]);
    d.ok(&[
        "run",
        "-d",
        "--name",
        "infra-web",
        "--network",
        "infra-net",
        "bb",
        "sleep",
        "600",
    ]);
    let find = |list: &serde_json::Value, name: &str| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} not in {list}"))
    };
    let plain = find(&api_json(&d, "/v1/networks"), "infra-net");
    assert_eq!(plain["containers"], serde_json::json!({}), "{plain}");
    let full = find(&api_json(&d, "/v1/networks?containers=true"), "infra-net");
    let inspected = api_json(&d, "/v1/networks/infra-net");
    assert_eq!(full["containers"], inspected["containers"]);
    let eps = full["containers"].as_object().unwrap();
    assert_eq!(eps.len(), 1, "{full}");
    let ep = eps.values().next().unwrap();
    assert_eq!(ep["name"], "infra-web");
    assert_eq!(
        ep["ip_address"],
        d.json(&["inspect", "infra-web"])[0]["networks"]["infra-net"]["ip_address"]
    );
    // The default network is listed too, without this container.
    let bridge = find(&api_json(&d, "/v1/networks?containers=true"), "bridge");
    assert_eq!(bridge["containers"], serde_json::json!({}), "{bridge}");

    // Volumes: a limited one (its own filesystem) and a plain one, each with a user.
    d.ok(&["volume", "create", "--opt", "size=16m", "infra-lim"]);
    d.ok(&["volume", "create", "infra-plain"]);
    d.ok(&[
        "run",
        "--rm",
        "-v",
        "infra-lim:/l",
        "-v",
        "infra-plain:/p",
        "bb",
        "sh",
        "-c",
        "dd if=/dev/zero of=/l/f bs=1M count=3 && dd if=/dev/zero of=/p/f bs=1k count=200 && sync",
    ]);
    d.ok(&[
        "create",
        "--name",
        "infra-user",
        "-v",
        "infra-lim:/l",
        "-v",
        "infra-plain:/p",
        "bb",
        "true",
    ]);
    let plain = find(&api_json(&d, "/v1/volumes"), "infra-lim");
    assert!(plain["usage"].is_null(), "{plain}");
    let list = api_json(&d, "/v1/volumes?usage=true");
    let lim = find(&list, "infra-lim");
    let used = lim["usage"]["bytes"].as_u64().unwrap();
    assert!((3 * MIB..16 * MIB).contains(&used), "{lim}");
    assert_eq!(lim["used_by"], serde_json::json!(["infra-user"]), "{lim}");
    let pl = find(&list, "infra-plain");
    assert_eq!(pl["usage"]["bytes"], 200 * 1024, "{pl}");
    assert_eq!(pl["used_by"], serde_json::json!(["infra-user"]), "{pl}");
    // As inspecting each shows it.
    for v in [&lim, &pl] {
        let name = v["name"].as_str().unwrap();
        let one = api_json(&d, &format!("/v1/volumes/{name}"));
        assert_eq!(one["usage"], v["usage"], "{name}");
        assert_eq!(one["used_by"], v["used_by"], "{name}");
    }
    // A filter still applies.
    let only = api_json(&d, "/v1/volumes?usage=true&filter=name=plain");
    assert_eq!(only.as_array().unwrap().len(), 1, "{only}");

    d.ok(&["rm", "-f", "infra-web", "infra-user"]);
    d.ok(&["network", "rm", "infra-net"]);
    d.ok(&["volume", "rm", "infra-lim", "infra-plain"]);
}
