//! What a member keeps on its own disk, in `ROOT/cluster/` (mode 0700, every file 0600):
//! `member.json` ([`LocalMember`]: its name, addresses, the pool's etcd endpoints),
//! `ca.pem` (the pool's CA certificate), `member.pem` and `member-key.pem` (its own
//! certificate and key), and on the host that made the pool `ca-key.pem`, with which it
//! signs the certificates of joining hosts. The etcd member it may run keeps its data in
//! `ROOT/etcd/` (beside, since etcd makes it before the membership is kept).
//!
//! A member's directory is written whole or not at all: into `cluster.new/` first, then
//! renamed, so that a failed init or join leaves nothing half made. Its presence is what
//! makes a daemon a member at its next start.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// What a member knows of itself and its pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalMember {
    pub cluster_id: String,
    /// Its host ID in the pool.
    pub name: String,
    /// The IP it advertises.
    pub address: String,
    /// Its cluster listener's port (on `address`).
    pub cluster_port: u16,
    /// The client URLs of the pool's etcd.
    pub etcd_endpoints: Vec<String>,
    /// The prefix of the pool's keys in etcd.
    pub etcd_prefix: String,
    /// Whether this daemon runs (and supervises) an etcd member of the pool.
    pub runs_etcd: bool,
    /// For an etcd member that joined a running cluster: the cluster it joined
    /// (`NAME=PEER_URL,...`), which its etcd starts with until it has data of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd_initial_cluster: Option<String>,
}

/// The PEM files of a member.
#[derive(Clone)]
pub struct Credentials {
    pub ca_pem: String,
    /// Only on the host that made the pool.
    pub ca_key_pem: Option<String>,
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials { .. }")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("cannot {op} {path}")]
    Io {
        op: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is corrupt; remove ROOT/cluster to leave the pool here, and join again")]
    Corrupt {
        path: String,
        #[source]
        source: serde_json::Error,
    },
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> LocalError + 'a {
    move |source| LocalError::Io {
        op,
        path: path.display().to_string(),
        source,
    }
}

/// The member directory of the daemon on `root`.
pub fn dir(root: &Path) -> PathBuf {
    root.join("cluster")
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), LocalError> {
    let mut f = fs::File::options()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io("create", path))?;
    f.write_all(bytes).map_err(io("write", path))?;
    f.sync_all().map_err(io("sync", path))
}

/// Writes the member directory whole: into `cluster.new/`, then renamed into place. An
/// existing directory is an error (the daemon checks membership before).
pub fn save(root: &Path, member: &LocalMember, creds: &Credentials) -> Result<(), LocalError> {
    let tmp = root.join("cluster.new");
    let _ = fs::remove_dir_all(&tmp);
    let result = (|| {
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&tmp)
            .map_err(io("create", &tmp))?;
        let json = serde_json::to_vec_pretty(member).expect("member JSON");
        write_private(&tmp.join("member.json"), &json)?;
        write_private(&tmp.join("ca.pem"), creds.ca_pem.as_bytes())?;
        if let Some(k) = &creds.ca_key_pem {
            write_private(&tmp.join("ca-key.pem"), k.as_bytes())?;
        }
        write_private(&tmp.join("member.pem"), creds.cert_pem.as_bytes())?;
        write_private(&tmp.join("member-key.pem"), creds.key_pem.as_bytes())?;
        let final_dir = dir(root);
        fs::rename(&tmp, &final_dir).map_err(io("rename into", &final_dir))
    })();
    if result.is_err() {
        let _ = fs::remove_dir_all(&tmp);
    }
    result
}

/// Rewrites `member.json` of the member kept on `root` (e.g. with the pool's etcd
/// endpoints as they are now): written beside, then renamed over it.
pub fn update(root: &Path, member: &LocalMember) -> Result<(), LocalError> {
    let d = dir(root);
    let tmp = d.join(".member.json.new");
    let _ = fs::remove_file(&tmp);
    let json = serde_json::to_vec_pretty(member).expect("member JSON");
    write_private(&tmp, &json)?;
    let path = d.join("member.json");
    fs::rename(&tmp, &path).map_err(io("rename into", &path))
}

/// The member kept on `root`, if the daemon is one.
pub fn load(root: &Path) -> Result<Option<(LocalMember, Credentials)>, LocalError> {
    let d = dir(root);
    // A save cut short by a crash is no membership.
    let _ = fs::remove_dir_all(root.join("cluster.new"));
    let path = d.join("member.json");
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io("read", &path)(e)),
    };
    let member: LocalMember =
        serde_json::from_slice(&bytes).map_err(|source| LocalError::Corrupt {
            path: path.display().to_string(),
            source,
        })?;
    let read = |name: &str| {
        let p = d.join(name);
        fs::read_to_string(&p).map_err(io("read", &p))
    };
    let ca_key_pem = match read("ca-key.pem") {
        Ok(k) => Some(k),
        Err(LocalError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    let creds = Credentials {
        ca_pem: read("ca.pem")?,
        ca_key_pem,
        cert_pem: read("member.pem")?,
        key_pem: read("member-key.pem")?,
    };
    Ok(Some((member, creds)))
}

/// The data directory of the etcd member this daemon runs.
pub fn etcd_dir(root: &Path) -> PathBuf {
    root.join("etcd")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn saved_whole_private_and_loaded_back() {
        let root = tempfile::tempdir().unwrap();
        assert!(load(root.path()).unwrap().is_none());
        let m = LocalMember {
            cluster_id: "c1".into(),
            name: "h1".into(),
            address: "10.0.0.1".into(),
            cluster_port: 7443,
            etcd_endpoints: vec!["http://10.0.0.1:2379".into()],
            etcd_prefix: "pier/".into(),
            runs_etcd: true,
            etcd_initial_cluster: None,
        };
        let c = Credentials {
            ca_pem: "ca".into(),
            ca_key_pem: Some("cakey".into()),
            cert_pem: "cert".into(),
            key_pem: "key".into(),
        };
        save(root.path(), &m, &c).unwrap();
        let d = dir(root.path());
        assert_eq!(
            fs::metadata(&d).unwrap().permissions().mode() & 0o777,
            0o700
        );
        for f in fs::read_dir(&d).unwrap() {
            let mode = f.unwrap().metadata().unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        let (m2, c2) = load(root.path()).unwrap().unwrap();
        assert_eq!(m2, m);
        assert_eq!(c2.ca_key_pem.as_deref(), Some("cakey"));
        assert_eq!(c2.key_pem, "key");
        // Saving over an existing membership fails and leaves it as it was.
        assert!(save(root.path(), &m, &c).is_err());
        assert!(!root.path().join("cluster.new").exists());
        assert_eq!(load(root.path()).unwrap().unwrap().0, m);
        // Updated in place: the new endpoints kept, the credentials untouched.
        let mut m3 = m.clone();
        m3.etcd_endpoints.push("http://10.0.0.2:2379".into());
        m3.etcd_initial_cluster = Some("h1=https://10.0.0.1:2380".into());
        update(root.path(), &m3).unwrap();
        let (m4, c4) = load(root.path()).unwrap().unwrap();
        assert_eq!(m4, m3);
        assert_eq!(c4.cert_pem, "cert");
        let mode = fs::metadata(d.join("member.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
