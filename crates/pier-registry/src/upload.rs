//! Blob upload sessions.
//!
//! A session is a file in the image store's scratch space plus a running SHA-256 of what
//! it holds. Each chunk is written and hashed with no await point in between, so a
//! request cut off mid-body leaves the session consistent at a byte boundary: the client
//! asks where it stands (`GET` on the upload) and resumes from there. A chunk that does
//! not start where the session ends is refused with 416. On `PUT ?digest=`, the content
//! must hash to the digest or nothing is stored; only then does the blob move into the
//! blob store and get linked to the repository. Sessions live as long as the daemon;
//! the scratch space is emptied at start, and idle sessions go at garbage collection.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use futures_util::StreamExt;
use pier_api::Digest;
use sha2::{Digest as _, Sha256};

use crate::error::{RegistryError, Result};
use crate::Registry;

/// One upload in progress.
pub struct Upload {
    pub repo: String,
    path: PathBuf,
    file: File,
    hasher: Sha256,
    pub len: u64,
    touched: Instant,
}

pub type Session = Arc<tokio::sync::Mutex<Upload>>;

/// Every upload session of the registry.
pub struct Uploads {
    dir: PathBuf,
    map: Mutex<HashMap<String, Session>>,
}

fn random_id() -> String {
    pier_api::random_hex(16)
}

impl Uploads {
    /// Sessions under `dir`, created with the first one (the image store empties its
    /// scratch space at start, which ends every session of a previous run).
    pub fn new(dir: &Path) -> Result<Self> {
        Ok(Uploads {
            dir: dir.to_path_buf(),
            map: Mutex::new(HashMap::new()),
        })
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts a session for `repo`; returns its ID.
    pub fn start(&self, repo: &str) -> Result<(String, Session)> {
        let id = random_id();
        std::fs::create_dir_all(&self.dir)
            .map_err(RegistryError::io(format!("create {}", self.dir.display())))?;
        let path = self.dir.join(&id);
        let file =
            File::create(&path).map_err(RegistryError::io(format!("create {}", path.display())))?;
        let s = Arc::new(tokio::sync::Mutex::new(Upload {
            repo: repo.to_string(),
            path,
            file,
            hasher: Sha256::new(),
            len: 0,
            touched: Instant::now(),
        }));
        self.map().insert(id.clone(), s.clone());
        Ok((id, s))
    }

    pub fn get(&self, repo: &str, id: &str) -> Result<Session> {
        let s = self.map().get(id).cloned();
        match s {
            Some(s) if s.try_lock().map(|u| u.repo == repo).unwrap_or(true) => Ok(s),
            _ => Err(RegistryError::UploadUnknown { id: id.to_string() }),
        }
    }

    /// Ends a session, removing its file.
    pub fn remove(&self, id: &str) {
        if let Some(s) = self.map().remove(id) {
            if let Ok(u) = s.try_lock() {
                let _ = std::fs::remove_file(&u.path);
            }
        }
    }

    /// Removes sessions idle for longer than `idle`.
    pub fn purge(&self, idle: Duration) -> usize {
        let stale: Vec<String> = self
            .map()
            .iter()
            .filter(|(_, s)| {
                s.try_lock()
                    .map(|u| u.touched.elapsed() > idle)
                    .unwrap_or(false)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in &stale {
            self.remove(id);
        }
        stale.len()
    }
}

impl Upload {
    /// Appends a request body. `start`, from Content-Range, must be where the session ends.
    pub async fn append(&mut self, reg: &Registry, body: Body, start: Option<u64>) -> Result<()> {
        if let Some(s) = start {
            if s != self.len {
                return Err(RegistryError::RangeInvalid {
                    expected: self.len,
                    got: s,
                });
            }
        }
        self.touched = Instant::now();
        let mut stream = body.into_data_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| {
                RegistryError::UploadInvalid(format!(
                    "the request body was cut off after {} bytes ({e}); ask where the upload stands and resume",
                    self.len
                ))
            })?;
            // Written and hashed together: no await between them.
            self.file
                .write_all(&chunk)
                .map_err(RegistryError::io(format!("write {}", self.path.display())))?;
            self.hasher.update(&chunk);
            self.len += chunk.len() as u64;
            reg.bytes_in
                .fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
        self.touched = Instant::now();
        Ok(())
    }

    /// What the content hashes to so far.
    pub fn digest(&self) -> Digest {
        Digest::from_sha256_bytes(&self.hasher.clone().finalize())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Registry {
    pub fn uploads(&self) -> &Uploads {
        &self.uploads
    }

    /// Finishes an upload whose content is complete: checks it against `expected`, then
    /// stores and links it. The session ends either way.
    pub async fn finish_upload(
        self: &Arc<Self>,
        id: &str,
        upload: &mut Upload,
        expected: &Digest,
    ) -> Result<()> {
        let actual = upload.digest();
        if actual != *expected {
            self.uploads.remove_locked(id, upload);
            return Err(RegistryError::DigestMismatch {
                expected: expected.to_string(),
                actual,
            });
        }
        upload
            .file
            .sync_all()
            .map_err(RegistryError::io("sync an upload"))?;
        let (repo, path, len) = (upload.repo.clone(), upload.path.clone(), upload.len);
        let reg = self.clone();
        let d = expected.clone();
        let r = tokio::task::spawn_blocking(move || reg.commit_upload(&repo, &path, &d, len))
            .await
            .map_err(|e| RegistryError::UploadInvalid(format!("the commit task failed: {e}")))?;
        self.uploads.remove_locked(id, upload);
        r
    }
}

impl Uploads {
    /// Ends a session whose lock the caller holds.
    pub fn remove_locked(&self, id: &str, upload: &Upload) {
        self.map().remove(id);
        let _ = std::fs::remove_file(&upload.path);
    }
}
