//! `--change` on `commit` and `import`: Dockerfile instructions that edit an image's
//! config without a build (`docker commit --change 'CMD ["sh"]'`).
//!
//! The instructions Docker takes there are the ones that only touch the config: `CMD`,
//! `ENTRYPOINT`, `ENV`, `EXPOSE`, `HEALTHCHECK`, `LABEL`, `ONBUILD`, `STOPSIGNAL`,
//! `USER`, `VOLUME` and `WORKDIR`. Words are substituted from the config's own `Env`, as
//! Docker does. Each change is parsed and checked before anything is stored, so a bad one
//! fails the request with nothing made.

use pier_image::dockerfile::{self, words, CmdLine, Command};
use serde_json::{json, Value};

use super::steps::{add_keys, exposed_ports, healthcheck_json, set_env, shell_of};
use super::{env_of, BuildError};
use crate::error::{invalid, EngineResult};

/// Applies `changes` in order to `config` (a whole image config: its runtime part is
/// `config["config"]`).
pub fn apply(config: &mut Value, changes: &[String]) -> EngineResult<()> {
    let mut next = config.clone();
    for (n, change) in changes.iter().enumerate() {
        let change = change.trim();
        if change.is_empty() {
            continue;
        }
        apply_one(&mut next, change).map_err(|e| {
            invalid(format!(
                "change {} ({change:?}): {e}; give Dockerfile instructions of the kinds CMD, ENTRYPOINT, ENV, EXPOSE, HEALTHCHECK, LABEL, ONBUILD, STOPSIGNAL, USER, VOLUME or WORKDIR",
                n + 1
            ))
        })?;
    }
    *config = next;
    Ok(())
}

fn apply_one(c: &mut Value, change: &str) -> Result<(), BuildError> {
    let i = dockerfile::parse_instruction(change, 1, '\\')?;
    let env = env_of(c);
    let lookup = |name: &str| {
        env.iter().find_map(|e| {
            let (k, v) = e.split_once('=').unwrap_or((e, ""));
            (k == name).then(|| v.to_string())
        })
    };
    let expand =
        |s: &str| words::expand(s, '\\', &lookup).map_err(|e| BuildError::Invalid(e.to_string()));
    let argv = |c: &Value, cmd: &CmdLine| match cmd {
        CmdLine::Exec(v) => v.clone(),
        CmdLine::Shell(s) => {
            let mut v = shell_of(c);
            v.push(s.clone());
            v
        }
    };
    if !c["config"].is_object() {
        c["config"] = json!({});
    }
    match &i.command {
        Command::Cmd(cmd) => c["config"]["Cmd"] = json!(argv(c, cmd)),
        Command::Entrypoint(cmd) => c["config"]["Entrypoint"] = json!(argv(c, cmd)),
        Command::Env(pairs) => {
            let mut kv = Vec::new();
            for (k, v) in pairs {
                kv.push((expand(k)?, expand(v)?));
            }
            for (k, v) in kv {
                if k.is_empty() {
                    return Err(BuildError::Invalid("ENV names cannot be empty".into()));
                }
                set_env(c, &k, &v);
            }
        }
        Command::Label(pairs) => {
            if !c["config"]["Labels"].is_object() {
                c["config"]["Labels"] = json!({});
            }
            for (k, v) in pairs {
                let (k, v) = (expand(k)?, expand(v)?);
                c["config"]["Labels"][k] = json!(v);
            }
        }
        Command::Expose(list) => {
            let mut ports = Vec::new();
            for w in list {
                let w = words::expand_words(w, '\\', &lookup)
                    .map_err(|e| BuildError::Invalid(e.to_string()))?;
                for p in w {
                    ports.extend(exposed_ports(&p)?);
                }
            }
            add_keys(c, "ExposedPorts", &ports);
        }
        Command::Volume(paths) => {
            let vols = paths
                .iter()
                .map(|p| expand(p))
                .collect::<Result<Vec<_>, _>>()?;
            if vols.iter().any(|v| v.trim().is_empty()) {
                return Err(BuildError::Invalid(
                    "VOLUME specified can not be an empty string".into(),
                ));
            }
            add_keys(c, "Volumes", &vols);
        }
        Command::User(u) => c["config"]["User"] = json!(expand(u)?),
        Command::Workdir(p) => {
            let p = expand(p)?;
            // A relative WORKDIR goes on from the current one, as in a build.
            let p = if p.starts_with('/') {
                p
            } else {
                let cur = c["config"]["WorkingDir"].as_str().unwrap_or("/");
                format!("{}/{p}", cur.trim_end_matches('/'))
            };
            c["config"]["WorkingDir"] = json!(p);
        }
        Command::Healthcheck(h) => c["config"]["Healthcheck"] = healthcheck_json(h.as_ref()),
        Command::StopSignal(s) => {
            let s = expand(s)?;
            crate::instances::service::parse_signal(&s)
                .map_err(|e| BuildError::Invalid(format!("STOPSIGNAL: {}", e.message())))?;
            c["config"]["StopSignal"] = json!(s);
        }
        Command::OnBuild { trigger, .. } => {
            let mut list = c["config"]["OnBuild"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            list.push(json!(trigger));
            c["config"]["OnBuild"] = json!(list);
        }
        other => {
            return Err(BuildError::Invalid(format!(
                "{} cannot be applied to an image without a build",
                other.keyword()
            )))
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Value {
        json!({"config": {"Env": ["PATH=/bin", "HOME=/root"], "Cmd": ["sh"]}})
    }

    #[test]
    fn each_kind_edits_the_config_as_docker_does() {
        let mut c = base();
        apply(
            &mut c,
            &[
                "EXPOSE 8000 9000-9001/udp".into(),
                r#"CMD ["bash"]"#.into(),
                "ENTRYPOINT echo hi".into(),
                "ENV A=1 B=$HOME/x".into(),
                r#"LABEL a="b c""#.into(),
                "USER postgres".into(),
                "WORKDIR /srv".into(),
                "WORKDIR app".into(),
                "VOLUME /data".into(),
                "STOPSIGNAL SIGINT".into(),
                "ONBUILD RUN true".into(),
                "HEALTHCHECK NONE".into(),
                "".into(),
            ],
        )
        .unwrap();
        let r = &c["config"];
        assert_eq!(
            r["ExposedPorts"],
            json!({"8000/tcp": {}, "9000/udp": {}, "9001/udp": {}})
        );
        assert_eq!(r["Cmd"], json!(["bash"]));
        assert_eq!(r["Entrypoint"], json!(["/bin/sh", "-c", "echo hi"]));
        assert_eq!(
            r["Env"],
            json!(["PATH=/bin", "HOME=/root", "A=1", "B=/root/x"])
        );
        assert_eq!(r["Labels"], json!({"a": "b c"}));
        assert_eq!(r["User"], json!("postgres"));
        assert_eq!(r["WorkingDir"], json!("/srv/app"));
        assert_eq!(r["Volumes"], json!({"/data": {}}));
        assert_eq!(r["StopSignal"], json!("SIGINT"));
        assert_eq!(r["OnBuild"], json!(["RUN true"]));
        assert_eq!(r["Healthcheck"], json!({"Test": ["NONE"]}));
    }

    #[test]
    fn instructions_needing_a_build_and_nonsense_are_refused() {
        for bad in [
            "RUN true",
            "COPY a b",
            "FROM x",
            "NOPE x",
            "EXPOSE 0",
            "STOPSIGNAL NOPE",
        ] {
            let mut c = base();
            let e = apply(&mut c, &[bad.into()]).unwrap_err();
            assert!(e.message().contains("change 1"), "{bad}: {}", e.message());
            assert_eq!(c, base(), "{bad} changed the config");
        }
    }
}
