//! `pier login` and `pier logout`, and the credentials file they keep: Docker's
//! `config.json` format (`{"auths": {"HOST": {"auth": base64("user:password")}}}`) at
//! `$PIER_CONFIG/config.json`, else `~/.pier/config.json`. The directory is made 0700 and
//! the file 0600, written whole to a temporary file and renamed over the old one, so a
//! reader never sees half of it. Keys other than `auths[HOST]` are kept as they are, so
//! `PIER_CONFIG=~/.docker` shares Docker's file (Pier does not read it uninvited:
//! Docker may keep its secrets in credential helpers Pier does not run, and another
//! tool's secrets should not be used without the user saying so).
//!
//! `pull` and `push` use the stored credentials of the reference's registry when no
//! `--username` is given ([`stored_auth`]).

use std::fs;
use std::io::{BufRead, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use clap::Args;
use pier_api::registry::RegistryAuth;
use pier_api::system::{LoginReport, LoginRequest};
use pier_client::Client;
use serde_json::{json, Value};

use crate::{fail, CliError};

#[derive(Debug, Args)]
pub struct LoginArgs {
    /// The registry (`host[:port]`); Docker Hub when absent.
    pub server: Option<String>,
    #[arg(short, long)]
    pub username: Option<String>,
    /// The password (visible to other users in the process list: prefer --password-stdin).
    #[arg(short, long, conflicts_with = "password_stdin")]
    pub password: Option<String>,
    /// Read the password from standard input.
    #[arg(long)]
    pub password_stdin: bool,
}

#[derive(Debug, Args)]
pub struct LogoutArgs {
    /// The registry (`host[:port]`); Docker Hub when absent.
    pub server: Option<String>,
}

/// The directory of the credentials file.
pub fn config_dir() -> Result<PathBuf, CliError> {
    if let Some(d) = std::env::var_os("PIER_CONFIG").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(d));
    }
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(h) => Ok(Path::new(&h).join(".pier")),
        None => Err(fail(
            "cannot find the credentials file: set HOME or PIER_CONFIG (its directory)",
        )),
    }
}

/// The key a registry's credentials are stored under: its host as `pull` reaches it
/// (Docker Hub's names all become `registry-1.docker.io`, as the daemon's login does).
pub fn registry_key(server: &str) -> String {
    let s = server
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    match s.split('/').next().unwrap_or("") {
        "" | "index.docker.io" | "docker.io" | "registry-1.docker.io" => {
            "registry-1.docker.io".into()
        }
        h => h.into(),
    }
}

fn read_config(path: &Path) -> Result<Value, CliError> {
    match fs::read(path) {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| {
            fail(format!(
                "{} is not a valid config.json ({e}): fix or remove it",
                path.display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(json!({})),
        Err(e) => Err(fail(format!("cannot read {}: {e}", path.display()))),
    }
}

/// Writes `config` to `dir/config.json`: a 0600 temporary file beside it, renamed over.
fn write_config(dir: &Path, config: &Value) -> Result<(), CliError> {
    let err = |what: &str, e: std::io::Error| fail(format!("cannot {what}: {e}"));
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| err(&format!("create {}", dir.display()), e))?;
    let tmp = dir.join(format!(".config.json.{}", std::process::id()));
    let mut body = serde_json::to_vec_pretty(config).expect("json");
    body.push(b'\n');
    let write = || -> std::io::Result<()> {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        // An existing file of another mode (umask, or an old file) is made 0600 too.
        f.set_permissions(fs::Permissions::from_mode(0o600))?;
        f.write_all(&body)?;
        f.sync_all()?;
        fs::rename(&tmp, dir.join("config.json"))
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        err(&format!("write {}", dir.join("config.json").display()), e)
    })
}

/// The stored credentials for `host`, if any.
fn stored(config: &Value, host: &str) -> Option<RegistryAuth> {
    let auth = config["auths"][host]["auth"].as_str()?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(auth)
        .ok()?;
    let s = String::from_utf8(raw).ok()?;
    let (u, p) = s.split_once(':')?;
    Some(RegistryAuth {
        username: u.to_string(),
        password: p.to_string(),
    })
}

/// The credentials stored for the registry of `reference` (an image reference), if any.
/// An unreadable file is no credentials: pull and push then say what the registry said.
pub fn stored_auth(reference: &str) -> Option<RegistryAuth> {
    let r: pier_api::ImageRef = reference.parse().ok()?;
    let config = read_config(&config_dir().ok()?.join("config.json")).ok()?;
    stored(&config, &registry_key(r.registry()))
}

fn prompt(what: &str) -> Result<String, CliError> {
    eprint!("{what}: ");
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

/// Reads a password from the terminal without echoing it.
fn prompt_password() -> Result<String, CliError> {
    use rustix::termios::{tcgetattr, tcsetattr, LocalModes, OptionalActions};
    let stdin = std::io::stdin();
    let Ok(old) = tcgetattr(&stdin) else {
        return Err(fail(
            "no terminal to ask the password on: give it with --password-stdin",
        ));
    };
    let mut quiet = old.clone();
    quiet.local_modes.remove(LocalModes::ECHO);
    tcsetattr(&stdin, OptionalActions::Now, &quiet).map_err(std::io::Error::from)?;
    let p = prompt("Password");
    let _ = tcsetattr(&stdin, OptionalActions::Now, &old);
    eprintln!();
    p
}

pub async fn login(client: &Client, a: LoginArgs) -> Result<(), CliError> {
    let server = a.server.clone().unwrap_or_default();
    let username = match a.username {
        Some(u) => u,
        None if a.password_stdin => {
            return Err(fail("--password-stdin needs --username"));
        }
        None => prompt("Username")?,
    };
    let password = if a.password_stdin {
        let mut p = String::new();
        std::io::stdin().read_to_string(&mut p)?;
        p.trim_end_matches(['\n', '\r']).to_string()
    } else if let Some(p) = a.password {
        eprintln!("WARNING! Using --password via the CLI is insecure. Use --password-stdin.");
        p
    } else {
        prompt_password()?
    };
    if username.is_empty() || password.is_empty() {
        return Err(fail(
            "a user name and a password are needed: give --username and --password-stdin",
        ));
    }
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
    let report: LoginReport = client
        .post(
            "/v1/system/login",
            &LoginRequest {
                server,
                username,
                password,
            },
        )
        .await?;
    let dir = config_dir()?;
    let mut config = read_config(&dir.join("config.json"))?;
    if !config.is_object() {
        config = json!({});
    }
    if !config["auths"].is_object() {
        config["auths"] = json!({});
    }
    config["auths"][&report.host] = json!({ "auth": auth });
    write_config(&dir, &config)?;
    println!("Login Succeeded");
    Ok(())
}

pub fn logout(a: LogoutArgs) -> Result<(), CliError> {
    let host = registry_key(a.server.as_deref().unwrap_or(""));
    let dir = config_dir()?;
    let mut config = read_config(&dir.join("config.json"))?;
    let removed = config["auths"]
        .as_object_mut()
        .and_then(|m| m.remove(&host))
        .is_some();
    if !removed {
        println!("Not logged in to {host}");
        return Ok(());
    }
    println!("Removing login credentials for {host}");
    write_config(&dir, &config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_keys_name_hub_once_and_keep_ports() {
        assert_eq!(registry_key(""), "registry-1.docker.io");
        assert_eq!(registry_key("docker.io"), "registry-1.docker.io");
        assert_eq!(
            registry_key("https://index.docker.io/v1/"),
            "registry-1.docker.io"
        );
        assert_eq!(registry_key("localhost:5000"), "localhost:5000");
        assert_eq!(
            registry_key("http://reg.example:5000/x"),
            "reg.example:5000"
        );
    }

    #[test]
    fn config_is_written_private_and_read_back() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("cfg");
        let auth = base64::engine::general_purpose::STANDARD.encode("u:p:w");
        let config = json!({"auths": {"h:1": {"auth": auth}}, "other": 1});
        write_config(&dir, &config).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("config.json")), 0o600);
        let back = read_config(&dir.join("config.json")).unwrap();
        assert_eq!(back["other"], 1);
        let a = stored(&back, "h:1").unwrap();
        assert_eq!((a.username.as_str(), a.password.as_str()), ("u", "p:w"));
        assert!(stored(&back, "h:2").is_none());
        assert_eq!(
            fs::read_dir(&dir).unwrap().count(),
            1,
            "no temporary file left"
        );
    }
}
