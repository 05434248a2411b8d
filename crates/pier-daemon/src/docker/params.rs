//! Docker's query strings: keys may repeat (`names=a&names=b`), booleans are `1`, `true`
//! or `True`, and `filters` is JSON, either `{"key": ["v"]}` or the older
//! `{"key": {"v": true}}` (read and matched by [`pier_engine::filters`]).

use std::str::FromStr;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

pub use pier_engine::filters::{self, label_matches, name_matches, parse_time, Filters};

use super::DockerError;

/// The decoded query of a request.
#[derive(Debug, Default, Clone)]
pub struct Params(Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Params::parse(parts.uri.query().unwrap_or("")))
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Form decoding: `+` is a space, `%XX` a byte.
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Params {
    pub fn parse(query: &str) -> Params {
        Params(
            query
                .split('&')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or((p, ""));
                    (percent_decode(k), percent_decode(v))
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
    pub fn num<T: FromStr>(&self, key: &str) -> Result<Option<T>, DockerError> {
        match self.nonempty(key) {
            None => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|_| {
                DockerError::bad_request(format!("invalid value for {key}: {v:?} is not a number"))
            }),
        }
    }

    /// The `filters` parameter.
    pub fn filters(&self) -> Result<Filters, DockerError> {
        match self.nonempty("filters") {
            None => Ok(Filters::new()),
            Some(f) => Ok(filters::parse(f)?),
        }
    }
}

/// Checks that only known filter keys are used, as Docker does.
pub fn check_filters(f: &Filters, known: &[&str]) -> Result<(), DockerError> {
    Ok(filters::check(f, known)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_filters_and_names() {
        let p = Params::parse("names=a%2Fb%3A1&names=c&all=1&t=5&x=+y&force=False");
        assert_eq!(p.all("names"), vec!["a/b:1", "c"]);
        assert!(p.bool("all"));
        assert!(!p.bool("force"));
        assert!(!p.bool("missing"));
        assert_eq!(p.num::<u64>("t").unwrap(), Some(5));
        assert_eq!(p.get("x"), Some(" y"));
        assert!(Params::parse("t=abc").num::<u64>("t").is_err());
        assert_eq!(percent_decode("100%"), "100%");
        let p = Params::parse("filters=%7B%22label%22%3A%5B%22a%22%5D%7D");
        assert_eq!(p.filters().unwrap()["label"], vec!["a"]);
        assert!(Params::parse("filters=x").filters().is_err());
    }
}
