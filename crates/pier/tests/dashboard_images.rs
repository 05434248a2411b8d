//! Root tier: the dashboard's images and registry pages in a real browser
//! (`common::browser`). An image pushed to the daemon's own registry is listed on the
//! images page with its layers and tagged from there; on the registry page its tag's
//! config is edited in place (an env var and a label), and the page shows the new digest
//! and a second entry in the tag's history. Outside the browser, the tag's config has the
//! change, its layers are the same blobs and the registry received no byte; the pulled
//! image sees the variable. A second visit sees what the CLI changes appear without a
//! reload, rolls the tag back to its first version, runs a garbage collection and deletes
//! the tag. Screenshots are kept in
//! `target/dashboard-screenshots/`.

mod common;

use common::*;

const ADDR: &str = "127.0.0.1:9452";
const REGISTRY: &str = "127.0.0.1:5000";

/// The first visit; args: the image's local tag. Prints one JSON line: the tag's digest
/// before and after the edit and the layer digests the page showed before and after.
const EDIT_STEPS: &str = r##"
local_tag = args[0]
drv.execute_script("window.confirm = () => true")

# The images page lists the image; the filter narrows the list.
drv.find_element(By.ID, "nav-images").click()
row_with = lambda text: [r for r in drv.find_elements(By.CSS_SELECTOR, "#images-table tbody tr") if text in r.text]
wait.until(lambda d: row_with("bb:latest"))
assert row_with(local_tag), drv.find_element(By.ID, "images-table").text
box = drv.find_element(By.ID, "images-filter")
box.send_keys("no-such-image")
wait.until(lambda d: "No image matches" in d.find_element(By.ID, "images-table").text)
box.clear()
box.send_keys("dash/bb")
wait.until(lambda d: len(drv.find_elements(By.CSS_SELECTOR, "#images-table tbody tr")) == 1 and row_with(local_tag))
shot("1-images")

# Its details: the steps that made its layers, with a layer and its size, and its config.
click(lambda: row_with(local_tag)[0].find_element(By.TAG_NAME, "a"))
layer_rows = lambda: drv.find_elements(By.CSS_SELECTOR, "#image-layers tbody tr")
wait.until(lambda d: layer_rows() and d.find_element(By.ID, "image-detail").is_displayed())
assert any("MiB" in r.text or "KiB" in r.text for r in layer_rows()), [r.text for r in layer_rows()]
assert any(r.find_elements(By.TAG_NAME, "code") for r in layer_rows()), "no layer digest shown"
assert "PATH=" in drv.find_element(By.ID, "image-config").text or "entrypoint" in drv.find_element(By.ID, "image-config").text
# A tag added from the page.
drv.find_element(By.ID, "image-tag-target").send_keys("dash-extra:1")
drv.find_element(By.CSS_SELECTOR, "#image-tag-form button[type=submit]").click()
wait.until(lambda d: "dash-extra:1" in d.find_element(By.ID, "image-tags").text)
shot("2-image-details")
click(lambda: drv.find_element(By.CSS_SELECTOR, '#image-tags button[aria-label="Remove tag dash-extra:1"]'))
wait.until(lambda d: "dash-extra:1" not in d.find_element(By.ID, "image-tags").text)

# The registry lists the repository; its tag opens.
drv.find_element(By.ID, "nav-registry").click()
repo_row = lambda: drv.find_elements(By.CSS_SELECTOR, '#registry-repo-table tr[data-repo="dash/bb"]')
wait.until(lambda d: repo_row())
assert "1" in repo_row()[0].text
shot("3-registry")
click(lambda: repo_row()[0].find_element(By.TAG_NAME, "a"))
tag_row = lambda: drv.find_elements(By.CSS_SELECTOR, '#registry-tag-table tr[data-tag="1"]')
wait.until(lambda d: tag_row())
click(lambda: tag_row()[0].find_element(By.LINK_TEXT, "1"))
facts = lambda: drv.find_element(By.ID, "registry-tag-facts")
wait.until(lambda d: facts().get_attribute("data-digest"))
before = facts().get_attribute("data-digest")
layers = lambda: [r.get_attribute("data-digest") for r in drv.find_elements(By.CSS_SELECTOR, "#registry-layers tbody tr")]
layers_before = layers()
assert layers_before and all(l.startswith("sha256:") for l in layers_before), layers_before
hist = lambda: drv.find_elements(By.CSS_SELECTOR, "#registry-history tbody tr")
assert len(hist()) == 1, [h.text for h in hist()]
shot("4-tag")

# Edit the config: a variable and a label; save; the page shows the new digest.
env = drv.find_element(By.ID, "edit-env")
env.send_keys(Keys.END)
env.send_keys("\nEDITED=yes")
drv.find_element(By.ID, "edit-labels").send_keys("dashboard.edited=true")
drv.find_element(By.ID, "edit-save").click()
wait.until(lambda d: facts().get_attribute("data-digest") != before)
after = facts().get_attribute("data-digest")
assert drv.find_element(By.ID, "registry-edit-digest").text == after
assert after in facts().text
wait.until(lambda d: len(hist()) == 2)
assert hist()[0].get_attribute("data-action") == "edit", hist()[0].text
assert hist()[0].get_attribute("data-digest") == after
assert hist()[1].get_attribute("data-digest") == before
assert "EDITED=yes" in drv.find_element(By.ID, "edit-env").get_attribute("value")
assert "pier registry edit" in drv.find_element(By.ID, "registry-steps").text
drv.execute_script("window.scrollTo(0, 0)")
shot("5-edited")
print(json.dumps({"before": before, "after": after, "layers_before": layers_before, "layers_after": layers()}))
"##;

/// The second visit; args: the digest to roll back to, the `pier` binary, the daemon's
/// socket and the image's local tag. Deletes the image an instance uses, sees changes made by the CLI appear without a reload, rolls the tag back, runs
/// a garbage collection, deletes the tag and sees it gone.
const DELETE_STEPS: &str = r##"
import subprocess
first, pier, socket, local_tag = args[0], args[1], args[2], args[3]
cli = lambda *a: subprocess.run([pier, *a], env={"PIER_HOST": socket}, check=True, capture_output=True)
drv.execute_script("window.confirm = () => true")

# The pulled, edited image: the instance using it is listed; deleting it (forced, as it is
# used) removes its tag and keeps the image for the instance.
drv.execute_script("location.hash = '#/images/" + local_tag + "'")
wait.until(lambda d: "dash-user" in d.find_element(By.ID, "image-users").text)
assert "EDITED=yes" in drv.find_element(By.ID, "image-config").text
drv.find_element(By.ID, "image-delete").click()
wait.until(lambda d: d.current_url.endswith("#/images"))
wait.until(lambda d: "untagged 1" in d.find_element(By.ID, "images-status").text)
wait.until(lambda d: local_tag not in d.find_element(By.ID, "images-table").text)
shot("6-image-deleted")

# Live: what the CLI does shows on the open pages without a reload.
drv.execute_script("window.pierMarker = 7; location.hash = '#/images'")
wait.until(lambda d: "bb:latest" in d.find_element(By.ID, "images-table").text)
cli("image", "tag", "bb", "dash-live:2")
wait.until(lambda d: "dash-live:2" in d.find_element(By.ID, "images-table").text)
drv.execute_script("location.hash = '#/registry/dash/bb'")
wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, '#registry-tag-table tr[data-tag="1"]'))
cli("registry", "edit", "dash/bb:1", "--env", "LIVE=1", "--tag", "live")
wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, '#registry-tag-table tr[data-tag="live"]'))
assert drv.execute_script("return window.pierMarker") == 7, "the page reloaded"
drv.execute_script("location.hash = '#/registry/dash/bb:1'")
facts = lambda: drv.find_element(By.ID, "registry-tag-facts")
hist = lambda: drv.find_elements(By.CSS_SELECTOR, "#registry-history tbody tr")
wait.until(lambda d: len(hist()) == 2)
edited = facts().get_attribute("data-digest")
assert edited != first
# Roll back to the pushed version.
click(lambda: [r for r in hist() if r.get_attribute("data-digest") == first][0].find_element(By.TAG_NAME, "button"))
wait.until(lambda d: facts().get_attribute("data-digest") == first)
wait.until(lambda d: len(hist()) == 3 and hist()[0].get_attribute("data-action") == "retag")
assert "EDITED=yes" not in drv.find_element(By.ID, "edit-env").get_attribute("value")
shot("7-rolled-back")

# Garbage collection from the repositories page.
drv.execute_script("location.hash = '#/registry'")
grace = drv.find_element(By.ID, "registry-gc-grace")
wait.until(lambda d: grace.is_displayed())
grace.clear()
grace.send_keys("0")
drv.find_element(By.CSS_SELECTOR, "#registry-gc-form button[type=submit]").click()
wait.until(lambda d: "Unlinked" in d.find_element(By.ID, "registry-gc-result").text)
shot("8-gc")

# Delete the tag from its page: back on the repository, it is gone.
drv.execute_script("location.hash = '#/registry/dash/bb:1'")
wait.until(lambda d: facts().get_attribute("data-digest") == first)
drv.find_element(By.ID, "registry-tag-delete").click()
wait.until(lambda d: d.current_url.endswith("#/registry/dash/bb"))
wait.until(lambda d: not d.find_elements(By.CSS_SELECTOR, '#registry-tag-table tr[data-tag="1"]'))
assert drv.find_elements(By.CSS_SELECTOR, '#registry-tag-table tr[data-tag="live"]')
assert not drv.find_elements(By.CSS_SELECTOR, '#registry-tag-table tr[data-tag="1"]')
assert "Deleted the tag dash/bb:1" in drv.find_element(By.ID, "registry-status").text
shot("9-deleted")
print(json.dumps({"gc": drv.find_element(By.ID, "registry-gc-result").text}))
"##;

fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

#[test]
#[ignore = "root tier: needs root; scripts/test.sh runs it (--run-ignored all)"]
fn images_and_registry_pages_edit_a_tag_config_without_a_push() {
    let d = with_busybox(&["--dashboard", ADDR, "--registry-addr", REGISTRY]);
    let name = format!("{REGISTRY}/dash/bb:1");
    d.ok(&["image", "tag", "bb", &name]);
    d.ok(&["push", "-q", &name]);
    let pushed = d.json(&["registry", "inspect", "dash/bb:1"]);
    let blobs: Vec<String> = pushed["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect();
    assert!(!blobs.is_empty(), "{pushed}");
    let received = d.json(&["registry", "stats"])["blob_bytes_received"].clone();

    let browser = common::browser::Browser::new("dashboard_images");
    let (_, out) = browser.run(&d, EDIT_STEPS, &[&name]);
    browser.assert_screenshots(&[
        "1-images",
        "2-image-details",
        "3-registry",
        "4-tag",
        "5-edited",
    ]);
    let seen: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(seen["before"], pushed["digest"], "{seen}");
    assert_eq!(strings(&seen["layers_before"]), blobs);
    assert_eq!(strings(&seen["layers_after"]), blobs);

    // Outside the browser: the tag is the page's new digest, its config has the change,
    // its layers are the same blobs, and no blob byte reached the registry.
    let edited = d.json(&["registry", "inspect", "dash/bb:1"]);
    assert_eq!(edited["digest"], seen["after"]);
    assert_ne!(edited["digest"], pushed["digest"]);
    assert_ne!(edited["config_digest"], pushed["config_digest"]);
    let env = strings(&edited["config"]["Env"]);
    assert!(env.contains(&"EDITED=yes".to_string()), "{env:?}");
    for e in strings(&pushed["config"]["Env"]) {
        assert!(env.contains(&e), "{e} was lost: {env:?}");
    }
    assert_eq!(edited["config"]["Labels"]["dashboard.edited"], "true");
    assert_eq!(edited["layers"], pushed["layers"]);
    assert_eq!(
        d.json(&["registry", "stats"])["blob_bytes_received"],
        received,
        "the edit uploaded a blob"
    );
    let h = d.json(&["registry", "history", "dash/bb:1"]);
    let actions: Vec<&str> = h
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["push", "edit"], "{h}");
    // The tag added on the images page was removed there too; the edit as a pulled
    // image sees it.
    let err = d.fails(&["image", "inspect", "dash-extra:1"]);
    assert!(err.contains("no such image"), "{err}");
    d.ok(&["pull", "-q", &name]);
    let out = d.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        &name,
        "sh",
        "-c",
        "echo $EDITED",
    ]);
    assert_eq!(out.trim(), "yes");

    d.ok(&["create", "--name", "dash-user", &name, "true"]);
    let edited_id = d.json(&["image", "inspect", &name])[0]["id"].clone();

    let first = pushed["digest"].as_str().unwrap();
    let browser = common::browser::Browser::new("dashboard_images_delete");
    let socket = d.socket.display().to_string();
    let (_, out) = browser.run(&d, DELETE_STEPS, &[first, PIER, &socket, &name]);
    browser.assert_screenshots(&["6-image-deleted", "7-rolled-back", "8-gc", "9-deleted"]);
    eprintln!("dashboard images: {out}");
    let h = d.json(&["registry", "history", "dash/bb:1"]);
    let actions: Vec<&str> = h
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["push", "edit", "retag", "delete"], "{h}");
    assert_eq!(h[2]["digest"], pushed["digest"]);
    let tags = d.json(&["registry", "tags", "dash/bb"]);
    let tags: Vec<&str> = tags
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["tag"].as_str().unwrap())
        .collect();
    assert_eq!(tags, ["live"], "only the tag the CLI made is left");
    // The image deleted on the page lost its tag and stays for its instance.
    let err = d.fails(&["image", "inspect", &name]);
    assert!(err.contains("no such image"), "{err}");
    d.ok(&["image", "inspect", edited_id.as_str().unwrap()]);
    d.ok(&["rm", "dash-user"]);
}
