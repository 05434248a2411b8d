//! Pull-through mirroring of an upstream registry (not implemented yet: a blob the
//! registry lacks is unknown).

use std::path::PathBuf;

use pier_api::Digest;

use crate::error::Result;
use crate::Registry;

impl Registry {
    /// Fetches a blob `repo` lacks from an upstream registry; none is configured yet.
    pub async fn mirror_blob(&self, _repo: &str, _d: &Digest) -> Result<Option<(PathBuf, u64)>> {
        Ok(None)
    }
}
