//! Names and IDs the engine gives and accepts: random 64-digit hex IDs and the rule for
//! object names (containers, networks, volumes, snapshots, aliases).

/// A new random ID: 64 lowercase hex digits.
pub fn random_id() -> String {
    pier_api::random_hex(32)
}

/// Whether `n` is a valid object name: 1 to 128 letters, digits, `_`, `.` or `-`,
/// starting with a letter or digit.
pub fn valid_name(n: &str) -> bool {
    let b = n.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_ids() {
        assert!(valid_name("web-1.a_b"));
        for bad in ["", "-x", ".x", "a b", "a/b", &"a".repeat(129)] {
            assert!(!valid_name(bad), "{bad:?}");
        }
        let id = random_id();
        assert_eq!(id.len(), 64);
        assert!(id
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_ne!(id, random_id());
    }
}
