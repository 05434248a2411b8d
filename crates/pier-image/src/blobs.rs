//! Content-addressed blobs in an OCI image layout (`blobs/sha256/<hex>`).
//!
//! Writes go to a temporary file in the same filesystem, are hashed on the way, checked
//! against the digest the caller expects, synced, then renamed into place: a blob path
//! either holds the full verified content or does not exist. Reads hash again and fail at
//! the end when the bytes on disk no longer match their name.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use pier_api::Digest;
use sha2::{Digest as _, Sha256};

use crate::error::{io_err, ImageError};

/// The blob directory of an OCI layout.
#[derive(Debug, Clone)]
pub struct BlobStore {
    dir: PathBuf,
    tmp: PathBuf,
}

impl BlobStore {
    /// `layout` is the OCI layout directory; `tmp` a scratch directory on the same
    /// filesystem.
    pub fn new(layout: &Path, tmp: &Path) -> Result<Self, ImageError> {
        let dir = layout.join("blobs").join("sha256");
        fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
        fs::create_dir_all(tmp).map_err(io_err("create", tmp))?;
        Ok(BlobStore {
            dir,
            tmp: tmp.to_path_buf(),
        })
    }

    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.dir.join(digest.hex())
    }

    pub fn contains(&self, digest: &Digest) -> bool {
        self.path(digest).exists()
    }

    /// Size on disk, if present.
    pub fn size(&self, digest: &Digest) -> Option<u64> {
        fs::metadata(self.path(digest)).ok().map(|m| m.len())
    }

    /// Starts writing a new blob.
    pub fn writer(&self) -> Result<BlobWriter, ImageError> {
        let file = tempfile::NamedTempFile::new_in(&self.tmp)
            .map_err(io_err("create a file in", &self.tmp))?;
        Ok(BlobWriter {
            file,
            hasher: Sha256::new(),
            len: 0,
            dir: self.dir.clone(),
        })
    }

    /// Writes `bytes` as a blob and returns its digest.
    pub fn put_bytes(&self, bytes: &[u8]) -> Result<Digest, ImageError> {
        let mut w = self.writer()?;
        w.write_all(bytes).map_err(io_err("write", &self.tmp))?;
        w.commit(None)
    }

    /// Moves an already-hashed file (same filesystem) into the store under `digest`.
    pub fn adopt(&self, file: &Path, digest: &Digest) -> Result<(), ImageError> {
        let dst = self.path(digest);
        if dst.exists() {
            return Ok(());
        }
        File::open(file)
            .and_then(|f| f.sync_all())
            .map_err(io_err("sync", file))?;
        fs::rename(file, &dst).map_err(io_err("move a blob to", &dst))
    }

    /// Opens a blob for reading; the reader fails at its end if the content does not hash
    /// to `digest`.
    pub fn open(&self, digest: &Digest) -> Result<VerifyingReader<File>, ImageError> {
        let path = self.path(digest);
        let file = File::open(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => ImageError::MissingBlob {
                digest: digest.clone(),
            },
            _ => io_err("open", &path)(e),
        })?;
        Ok(VerifyingReader::new(file, digest.clone()))
    }

    /// Reads a whole (small) blob, verified; refuses blobs over `limit` bytes.
    pub fn read_all(&self, digest: &Digest, limit: u64) -> Result<Vec<u8>, ImageError> {
        let size = self.size(digest).ok_or_else(|| ImageError::MissingBlob {
            digest: digest.clone(),
        })?;
        if size > limit {
            return Err(ImageError::Archive(format!(
                "blob {digest} is {size} bytes, more than the {limit} allowed for a manifest or config"
            )));
        }
        let mut out = Vec::with_capacity(size as usize);
        self.open(digest)?
            .read_to_end(&mut out)
            .map_err(|e| verify_err(e, &self.path(digest)))?;
        Ok(out)
    }

    /// Removes a blob; returns the bytes freed.
    pub fn remove(&self, digest: &Digest) -> Result<u64, ImageError> {
        let path = self.path(digest);
        let size = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        match fs::remove_file(&path) {
            Ok(()) => Ok(size),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(io_err("remove", &path)(e)),
        }
    }

    /// Every digest present.
    pub fn list(&self) -> Result<Vec<Digest>, ImageError> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(io_err("list", &self.dir))? {
            let entry = entry.map_err(io_err("list", &self.dir))?;
            if let Ok(d) = Digest::parse_lenient(&entry.file_name().to_string_lossy()) {
                out.push(d);
            }
        }
        Ok(out)
    }
}

/// Turns a read error from a [`VerifyingReader`] into the matching [`ImageError`].
pub fn verify_err(e: io::Error, path: &Path) -> ImageError {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<Mismatch>())
    {
        Some(m) => ImageError::DigestMismatch {
            what: format!("stored blob {}", path.display()),
            expected: m.expected.clone(),
            actual: m.actual.clone(),
        },
        None => io_err("read", path)(e),
    }
}

/// A blob being written.
pub struct BlobWriter {
    file: tempfile::NamedTempFile,
    hasher: Sha256,
    len: u64,
    dir: PathBuf,
}

impl BlobWriter {
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Finishes the blob. When `expected` is given and the content hashes differently,
    /// nothing is stored and a [`ImageError::DigestMismatch`] is returned.
    pub fn commit(self, expected: Option<&Digest>) -> Result<Digest, ImageError> {
        let digest = Digest::from_sha256_bytes(&self.hasher.finalize());
        if let Some(exp) = expected {
            if *exp != digest {
                return Err(ImageError::DigestMismatch {
                    what: "blob".into(),
                    expected: exp.clone(),
                    actual: digest,
                });
            }
        }
        let dst = self.dir.join(digest.hex());
        if !dst.exists() {
            let tmp_path = self.file.path().to_path_buf();
            self.file
                .as_file()
                .sync_all()
                .map_err(io_err("sync", &tmp_path))?;
            self.file
                .persist(&dst)
                .map_err(|e| io_err("move a blob to", &dst)(e.error))?;
        }
        Ok(digest)
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// The error a [`VerifyingReader`] returns at the end of a blob whose bytes changed.
#[derive(Debug, thiserror::Error)]
#[error("content hashes to {actual}, not {expected}")]
pub struct Mismatch {
    pub expected: Digest,
    pub actual: Digest,
}

/// Hashes everything read through it; at end of input, fails unless the hash matches.
pub struct VerifyingReader<R> {
    inner: R,
    hasher: Sha256,
    expected: Digest,
    done: bool,
}

impl<R: Read> VerifyingReader<R> {
    pub fn new(inner: R, expected: Digest) -> Self {
        VerifyingReader {
            inner,
            hasher: Sha256::new(),
            expected,
            done: false,
        }
    }
}

impl<R: Read> Read for VerifyingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done {
            return Ok(0);
        }
        let n = self.inner.read(buf)?;
        if n == 0 {
            self.done = true;
            let actual = Digest::from_sha256_bytes(&self.hasher.clone().finalize());
            if actual != self.expected {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    Mismatch {
                        expected: self.expected.clone(),
                        actual,
                    },
                ));
            }
            return Ok(0);
        }
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Counts and hashes what passes through a reader (for diff IDs).
pub struct HashingReader<R> {
    pub inner: R,
    hasher: Sha256,
    pub len: u64,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            len: 0,
        }
    }
    /// Reads what is left, then returns the digest and length of everything read.
    pub fn finish(mut self) -> io::Result<(Digest, u64)> {
        io::copy(&mut self, &mut io::sink())?;
        Ok((Digest::from_sha256_bytes(&self.hasher.finalize()), self.len))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
}

/// Hashes a reader to the end.
pub fn digest_of(r: impl Read) -> io::Result<(Digest, u64)> {
    HashingReader::new(r).finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_read_and_detect_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = BlobStore::new(&dir.path().join("layout"), &dir.path().join("tmp")).unwrap();
        let d = blobs.put_bytes(b"hello").unwrap();
        assert_eq!(
            d.hex(),
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert_eq!(blobs.read_all(&d, 100).unwrap(), b"hello");
        assert_eq!(blobs.list().unwrap(), vec![d.clone()]);

        // A wrong expectation stores nothing.
        let mut w = blobs.writer().unwrap();
        w.write_all(b"other").unwrap();
        let err = w.commit(Some(&d)).unwrap_err();
        assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err}");
        assert_eq!(blobs.list().unwrap().len(), 1);
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);

        // Bytes changed on disk are caught when read.
        fs::write(blobs.path(&d), b"jello").unwrap();
        let err = blobs.read_all(&d, 100).unwrap_err();
        assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err}");
        assert!(blobs.read_all(&d, 2).is_err());

        assert_eq!(blobs.remove(&d).unwrap(), 5);
        assert!(matches!(
            blobs.open(&d),
            Err(ImageError::MissingBlob { .. })
        ));
    }
}
