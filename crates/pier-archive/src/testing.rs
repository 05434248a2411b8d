//! Helpers for tests of Pier and of its users: crafting archives that well-behaved tools
//! refuse to write.

use tar::EntryType;

/// Builds a tar from (path, type, link target or content) triples, writing headers by
/// hand so that hostile names survive (the tar crate refuses to write some of them).
pub fn craft(entries: &[(&str, EntryType, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (path, kind, data) in entries {
        let mut h = tar::Header::new_old();
        {
            let bytes = h.as_mut_bytes();
            bytes[..path.len()].copy_from_slice(path.as_bytes());
        }
        h.set_entry_type(*kind);
        h.set_mode(if *kind == EntryType::Directory {
            0o755
        } else {
            0o644
        });
        h.set_mtime(1_700_000_000);
        if matches!(kind, EntryType::Symlink | EntryType::Link) {
            let bytes = h.as_mut_bytes();
            bytes[157..157 + data.len()].copy_from_slice(data);
            h.set_size(0);
        } else {
            h.set_size(data.len() as u64);
        }
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        if !matches!(kind, EntryType::Symlink | EntryType::Link) {
            out.extend_from_slice(data);
            out.resize(out.len().div_ceil(512) * 512, 0);
        }
    }
    out.resize(out.len() + 1024, 0);
    out
}
