//! `--cgroup-parent`: the check of the parent a create asks for, and the cgroup path
//! (`cgroupsPath`) of a container, which every part of the engine that finds a
//! container's cgroup takes from here.
//!
//! As Docker's cgroupfs driver does, a container with a parent `P` has its cgroup at
//! `/P/<id>` in every hierarchy, a relative `P` meaning the same as an absolute one (from
//! the hierarchy's root). The runtime makes the missing ancestors and leaves them when
//! the container goes. A container without one is under the engine's own parent
//! (`pier`, or `pier-<tag>`).
//!
//! The parent is a path on the host, so it is checked as hostile input: it must stay in
//! its hierarchy (no `.` or `..`, no empty component), be printable and of a bounded
//! size, and keep out of the cgroups of Pier's daemons (this one's and others'), whose
//! parents those daemons remove.

use pier_api::containers::ContainerInspect;

use crate::error::{invalid, EngineResult};

/// The longest parent taken, in bytes (the container's ID and the hierarchy's mount
/// point come on top, far below `PATH_MAX`).
pub const MAX_LEN: usize = 512;

/// The longest name of one cgroup (`NAME_MAX`).
const MAX_COMPONENT: usize = 255;

/// The cgroup path of container `c`: under its `--cgroup-parent` when it has one, else
/// under `engine_parent`.
pub fn cgroup_path(engine_parent: &str, c: &ContainerInspect) -> String {
    let parent = c
        .config
        .cgroup_parent
        .as_deref()
        .filter(|p| !p.is_empty())
        .unwrap_or(engine_parent);
    pier_runtime::cgroups::path_for(parent, &c.id)
}

/// Whether `name` has the shape of a Pier daemon's containers' parent: `pier`, or
/// `pier-` and a four hex digit host tag (see `pier_net::names::HostNames`).
fn is_piers(name: &str) -> bool {
    name == "pier"
        || name
            .strip_prefix("pier-")
            .is_some_and(|t| t.len() == 4 && t.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Checks a `--cgroup-parent` at create. Empty means none.
pub fn check(parent: &str) -> EngineResult<()> {
    let bad = |why: &str| invalid(format!("invalid --cgroup-parent {parent:?}: {why}"));
    if parent.len() > MAX_LEN {
        return Err(bad(&format!(
            "it is {} bytes long; give a path of at most {MAX_LEN}",
            parent.len()
        )));
    }
    if parent.chars().any(char::is_control) {
        return Err(bad(
            "it holds a control character; use printable names separated by '/'",
        ));
    }
    let inner = parent.trim_matches('/');
    if inner.is_empty() {
        // "" is no parent; "/" is the hierarchies' root, as in Docker.
        return Ok(());
    }
    for name in inner.split('/') {
        match name {
            "" => {
                return Err(bad(
                    "it has an empty component ('//'); separate names with a single '/'",
                ))
            }
            "." | ".." => {
                return Err(bad(
                    "'.' and '..' are not allowed: the parent is a path from the root of each cgroup hierarchy, such as mygroup or /mygroup/sub",
                ))
            }
            n if n.len() > MAX_COMPONENT => {
                return Err(bad(&format!(
                    "a name in it is {} bytes long; each may have at most {MAX_COMPONENT}",
                    n.len()
                )))
            }
            _ => {}
        }
    }
    let first = inner.split('/').next().unwrap_or_default();
    if is_piers(first) {
        return Err(bad(&format!(
            "{first} holds the cgroups of a Pier daemon's containers, which that daemon removes; choose a parent of your own"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_are_checked_as_paths_that_stay_in_their_hierarchy() {
        for ok in [
            "",
            "/",
            "mygroup",
            "/mygroup",
            "mygroup/",
            "a/b/c",
            "/a/b.c/d-e_f",
            "piers",
            "pier-xyzw",
            "pier-12345",
            "a/pier",
            "name with spaces",
            "ünïcode",
        ] {
            assert!(check(ok).is_ok(), "{ok:?} was refused: {:?}", check(ok));
        }
        for (bad, why) in [
            ("../x", "'..' are not allowed"),
            ("a/../../x", "'..' are not allowed"),
            ("/..", "'..' are not allowed"),
            ("..", "'..' are not allowed"),
            ("./a", "'..' are not allowed"),
            ("a/./b", "'..' are not allowed"),
            ("a//b", "empty component"),
            ("a\nb", "control character"),
            ("a\0b", "control character"),
            ("a\tb", "control character"),
            ("pier", "Pier daemon's"),
            ("/pier/x", "Pier daemon's"),
            ("pier-3fa0", "Pier daemon's"),
            ("pier-3FA0/sub", "Pier daemon's"),
        ] {
            let e = check(bad).expect_err(bad).to_string();
            assert!(e.contains(why), "{bad:?}: {e}");
            assert!(e.contains("--cgroup-parent"), "{bad:?}: {e}");
        }
        let long = "a/".repeat(MAX_LEN / 2 + 1);
        assert!(check(&long).unwrap_err().to_string().contains("at most"));
        let wide = "x".repeat(MAX_COMPONENT + 1);
        assert!(check(&wide).unwrap_err().to_string().contains("at most"));
        assert!(check(&"x".repeat(MAX_COMPONENT)).is_ok());
    }

    #[test]
    fn the_path_comes_from_the_record() {
        let mut c = ContainerInspect {
            id: "abc".into(),
            name: "n".into(),
            project: Default::default(),
            image: "i".into(),
            image_id: pier_api::Digest::from_sha256_bytes(&[0; 32]),
            created: String::new(),
            command: Vec::new(),
            config: Default::default(),
            state: Default::default(),
            log_path: String::new(),
            networks: Default::default(),
            ports: Vec::new(),
            mounts: Vec::new(),
            vm: None,
        };
        assert_eq!(cgroup_path("pier-1234", &c), "/pier-1234/abc");
        c.config.cgroup_parent = Some(String::new());
        assert_eq!(cgroup_path("pier", &c), "/pier/abc");
        c.config.cgroup_parent = Some("a/b".into());
        assert_eq!(cgroup_path("pier", &c), "/a/b/abc");
        c.config.cgroup_parent = Some("/a/b/".into());
        assert_eq!(cgroup_path("pier", &c), "/a/b/abc");
        c.config.cgroup_parent = Some("/".into());
        assert_eq!(cgroup_path("pier", &c), "/abc");
    }
}
