//! Form decoding of query strings (`application/x-www-form-urlencoded`): `+` is a space
//! and `%XX` a byte. The native API refuses a bad escape; Docker's API and the registry
//! keep it as written, as Go's servers do for lenient parsing.

/// A query component that does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormError {
    #[error("invalid query: bad escape in {0:?}")]
    BadEscape(String),
    #[error("invalid query: {0:?} is not UTF-8 once decoded")]
    NotUtf8(String),
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The bytes `s` decodes to; with `strict`, None at the first bad escape, else a bad
/// escape stays as written.
fn bytes(s: &str, strict: bool) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => match (
                b.get(i + 1).and_then(|&c| hex(c)),
                b.get(i + 2).and_then(|&c| hex(c)),
            ) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 2;
                }
                _ if strict => return None,
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    Some(out)
}

/// Decodes a query component, refusing bad escapes and text that is not UTF-8.
pub fn decode(s: &str) -> Result<String, FormError> {
    let out = bytes(s, true).ok_or_else(|| FormError::BadEscape(s.to_string()))?;
    String::from_utf8(out).map_err(|_| FormError::NotUtf8(s.to_string()))
}

/// Decodes a query component, keeping bad escapes as written and replacing what is not
/// UTF-8.
pub fn decode_lossy(s: &str) -> String {
    let out = bytes(s, false).unwrap_or_default();
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plus_is_a_space_and_escapes_are_bytes() {
        assert_eq!(decode("a+b%2Fc%3d").unwrap(), "a b/c=");
        assert_eq!(decode("%C3%A9").unwrap(), "é");
        assert_eq!(decode_lossy("a+b%2Fc"), "a b/c");
    }

    #[test]
    fn bad_escapes_are_refused_or_kept() {
        for bad in ["100%", "%zz", "%4", "a%"] {
            assert_eq!(decode(bad), Err(FormError::BadEscape(bad.into())), "{bad}");
            assert_eq!(decode_lossy(bad), bad, "{bad}");
        }
        assert_eq!(decode("%FF"), Err(FormError::NotUtf8("%FF".into())));
        assert_eq!(decode_lossy("%FF"), "\u{FFFD}");
    }
}
