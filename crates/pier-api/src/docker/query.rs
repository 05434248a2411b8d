//! Docker's query strings: keys may repeat (`names=a&names=b`), booleans are `1`, `true`
//! or `True` (anything but empty, `0`, `no`, `false`, `none`), numbers are refused in
//! Docker's words.

use std::str::FromStr;

use super::{Refused, Result};
use crate::form::decode_lossy;

/// The decoded query of a request.
#[derive(Debug, Default, Clone)]
pub struct Query(Vec<(String, String)>);

impl Query {
    pub fn parse(query: &str) -> Query {
        Query(
            query
                .split('&')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or((p, ""));
                    (decode_lossy(k), decode_lossy(v))
                })
                .collect(),
        )
    }

    /// The last value given for `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The value of `key`, absent when empty.
    pub fn nonempty(&self, key: &str) -> Option<&str> {
        self.get(key).filter(|v| !v.is_empty())
    }

    /// Every value given for `key`.
    pub fn all(&self, key: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// Docker's reading of a boolean: anything but empty, `0`, `no`, `false` or `none`.
    pub fn bool(&self, key: &str) -> bool {
        self.get(key).is_some_and(|v| {
            !matches!(
                v.to_ascii_lowercase().as_str(),
                "" | "0" | "no" | "false" | "none"
            )
        })
    }

    /// A number, absent when not given or empty.
    pub fn num<T: FromStr>(&self, key: &str) -> Result<Option<T>> {
        match self.nonempty(key) {
            None => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|_| {
                Refused::bad_request(format!("invalid value for {key}: {v:?} is not a number"))
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_decode_repeat_and_read_as_dockers() {
        let p = Query::parse("names=a%2Fb%3A1&names=c&all=1&t=5&x=+y&force=False");
        assert_eq!(p.all("names"), vec!["a/b:1", "c"]);
        assert!(p.bool("all"));
        assert!(!p.bool("force"));
        assert!(!p.bool("missing"));
        assert_eq!(p.num::<u64>("t").unwrap(), Some(5));
        assert_eq!(p.get("x"), Some(" y"));
        assert!(Query::parse("t=abc").num::<u64>("t").is_err());
        assert_eq!(decode_lossy("100%"), "100%");
    }
}
