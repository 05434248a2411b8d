//! Docker's query strings: keys may repeat (`names=a&names=b`), booleans are `1`, `true`
//! or `True`, and `filters` is JSON, either `{"key": ["v"]}` or the older
//! `{"key": {"v": true}}`.

use std::collections::BTreeMap;
use std::str::FromStr;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

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

/// Filters by key, each with the values asked for.
pub type Filters = BTreeMap<String, Vec<String>>;

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
            Some(f) => parse_filters(f),
        }
    }
}

/// Parses `{"key": ["v", ...]}` or `{"key": {"v": true}}`.
pub fn parse_filters(s: &str) -> Result<Filters, DockerError> {
    let v: serde_json::Value = serde_json::from_str(s)
        .map_err(|e| DockerError::bad_request(format!("invalid filters {s:?}: {e}")))?;
    let obj = v
        .as_object()
        .ok_or_else(|| DockerError::bad_request(format!("invalid filters {s:?}: not an object")))?;
    let mut out = Filters::new();
    for (k, vals) in obj {
        let list: Vec<String> = match vals {
            serde_json::Value::Array(a) => a
                .iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect(),
            serde_json::Value::Object(m) => m
                .iter()
                .filter(|(_, on)| on.as_bool().unwrap_or(true))
                .map(|(k, _)| k.clone())
                .collect(),
            serde_json::Value::String(s) => vec![s.clone()],
            _ => {
                return Err(DockerError::bad_request(format!(
                    "invalid filters {s:?}: the values of {k:?} are not a list"
                )))
            }
        };
        out.entry(k.clone()).or_default().extend(list);
    }
    Ok(out)
}

/// Checks that only known filter keys are used, as Docker does.
pub fn check_filters(f: &Filters, known: &[&str]) -> Result<(), DockerError> {
    for k in f.keys() {
        if !known.contains(&k.as_str()) {
            return Err(DockerError::bad_request(format!(
                "invalid filter '{k}': pier supports {}",
                known.join(", ")
            )));
        }
    }
    Ok(())
}

/// Does `label` filter value `want` (`key` or `key=value`) match these labels?
pub fn label_matches(labels: &BTreeMap<String, String>, want: &str) -> bool {
    match want.split_once('=') {
        Some((k, v)) => labels.get(k).is_some_and(|x| x == v),
        None => labels.contains_key(want),
    }
}

/// A name filter: Docker takes a regular expression; Pier takes its common forms, a plain
/// substring with optional `^` and `$` anchors, against the name with its leading `/`.
pub fn name_matches(name: &str, pattern: &str) -> bool {
    let full = format!("/{name}");
    let (anchored_start, p) = match pattern.strip_prefix('^') {
        Some(p) => (true, p),
        None => (false, pattern),
    };
    let (anchored_end, p) = match p.strip_suffix('$') {
        Some(p) => (true, p),
        None => (false, p),
    };
    let p = p.strip_prefix('/').unwrap_or(p);
    let candidates = [&full[1..], full.as_str()];
    candidates
        .iter()
        .any(|n| match (anchored_start, anchored_end) {
            (true, true) => *n == p || (p.is_empty() && n.is_empty()),
            (true, false) => n.starts_with(p),
            (false, true) => n.ends_with(p),
            (false, false) => n.contains(p),
        })
}

/// Unix seconds (with an optional fraction) or RFC 3339, as `since` and `until` come.
pub fn parse_time(s: &str) -> Option<f64> {
    if let Ok(v) = s.parse::<f64>() {
        return Some(v);
    }
    pier_api::time::parse_rfc3339(s).map(|v| v as f64)
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

        let f = parse_filters(r#"{"label":{"a=b":true},"status":["running","exited"]}"#).unwrap();
        assert_eq!(f["label"], vec!["a=b"]);
        assert_eq!(f["status"], vec!["running", "exited"]);
        assert!(parse_filters("[1]").is_err());
        assert!(check_filters(&f, &["label"]).is_err());

        assert!(name_matches("web", "web"));
        assert!(name_matches("app_web_1", "web"));
        assert!(name_matches("web", "^web$"));
        assert!(name_matches("web", "^/web$"));
        assert!(!name_matches("web2", "^web$"));
        let labels = BTreeMap::from([("a".to_string(), "b".to_string())]);
        assert!(label_matches(&labels, "a") && label_matches(&labels, "a=b"));
        assert!(!label_matches(&labels, "a=c"));

        assert_eq!(parse_time("1700000000.5"), Some(1_700_000_000.5));
    }
}
