//! List filters in the form Docker's API sends them (`filters={"label":["a=b"]}`): the
//! parsing of that JSON, the check of known keys, and the matching rules every listing
//! shares (labels, names, times). The per-resource predicates are in
//! [`listing`](crate::listing); the events' in [`events`](crate::events).

use std::collections::BTreeMap;

use crate::{EngineError, EngineResult};

/// Filters by key, each with the values asked for.
pub type Filters = BTreeMap<String, Vec<String>>;

/// Parses `{"key": ["v", ...]}` or the older `{"key": {"v": true}}`.
pub fn parse(s: &str) -> EngineResult<Filters> {
    let v: serde_json::Value = serde_json::from_str(s)
        .map_err(|e| EngineError::invalid(format!("invalid filters {s:?}: {e}")))?;
    let obj = v
        .as_object()
        .ok_or_else(|| EngineError::invalid(format!("invalid filters {s:?}: not an object")))?;
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
                return Err(EngineError::invalid(format!(
                    "invalid filters {s:?}: the values of {k:?} are not a list"
                )))
            }
        };
        out.entry(k.clone()).or_default().extend(list);
    }
    Ok(out)
}

/// Checks that only known filter keys are used, as Docker does.
pub fn check(f: &Filters, known: &[&str]) -> EngineResult<()> {
    for k in f.keys() {
        if !known.contains(&k.as_str()) {
            return Err(EngineError::invalid(format!(
                "invalid filter '{k}': pier supports {}",
                known.join(", ")
            )));
        }
    }
    Ok(())
}

/// Whether filter `key` passes: not given, given empty, or one of its values passes.
pub fn any(f: &Filters, key: &str, test: &dyn Fn(&str) -> bool) -> bool {
    f.get(key)
        .is_none_or(|vals| vals.is_empty() || vals.iter().any(|v| test(v)))
}

/// Whether every `label` filter value matches these labels.
pub fn labels(f: &Filters, labels: &BTreeMap<String, String>) -> bool {
    f.get("label")
        .is_none_or(|vals| vals.iter().all(|v| label_matches(labels, v)))
}

/// The first value of a boolean filter (`dangling=true`, `all=1`) as a boolean; `None`
/// when not given.
pub fn flag(f: &Filters, key: &str) -> Option<bool> {
    f.get(key)
        .and_then(|v| v.first())
        .map(|v| v == "true" || v == "1")
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

/// Unix seconds (with an optional fraction), RFC 3339, or a Go duration before now
/// (`24h`, `90m`), as `since` and `until` come.
pub fn parse_time(s: &str) -> Option<f64> {
    if let Ok(v) = s.parse::<f64>() {
        return Some(v);
    }
    if let Some(d) = pier_api::time::parse_go_duration(s) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        return Some(now.saturating_sub(d).as_secs_f64());
    }
    pier_api::time::parse_rfc3339(s).map(|v| v as f64)
}

/// [`parse_time`] in Unix nanoseconds, exactly: `1700000000.123456789` (as Docker's CLI
/// sends times) is not rounded through a float.
pub fn parse_time_nanos(s: &str) -> Option<i64> {
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|c| c.is_ascii_digit());
    if digits(secs) && (frac.is_empty() || digits(frac)) {
        let secs: i64 = secs.parse().ok()?;
        let frac = &frac[..frac.len().min(9)];
        let nanos: i64 = format!("{frac:0<9}").parse().ok()?;
        return secs.checked_mul(1_000_000_000)?.checked_add(nanos);
    }
    pier_api::time::parse_rfc3339_nanos(s).or_else(|| parse_time(s).map(|t| (t * 1e9) as i64))
}

/// A `since`/`until` time in nanoseconds; an unreadable one is refused, naming `key`.
pub fn time_nanos(key: &str, v: Option<&str>) -> EngineResult<Option<i64>> {
    match v {
        None => Ok(None),
        Some(v) => parse_time(v)
            .map(|t| Some((t * 1e9) as i64))
            .ok_or_else(|| {
                EngineError::invalid(format!(
                    "invalid {key} {v:?}: give Unix seconds or an RFC 3339 time"
                ))
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse_in_both_forms_and_unknown_keys_are_refused() {
        let f = parse(r#"{"label":{"a=b":true,"c":false},"status":["running","exited"]}"#).unwrap();
        assert_eq!(f["label"], vec!["a=b"]);
        assert_eq!(f["status"], vec!["running", "exited"]);
        assert!(parse("[1]").is_err());
        assert!(parse(r#"{"a": 1}"#).is_err());
        let e = check(&f, &["label"]).unwrap_err();
        assert!(e.message().contains("invalid filter 'status'"), "{e}");
        assert!(check(&f, &["label", "status"]).is_ok());
    }

    #[test]
    fn names_labels_and_flags_match_as_docker_reads_them() {
        assert!(name_matches("web", "web"));
        assert!(name_matches("app_web_1", "web"));
        assert!(name_matches("web", "^web$"));
        assert!(name_matches("web", "^/web$"));
        assert!(!name_matches("web2", "^web$"));
        let l = BTreeMap::from([("a".to_string(), "b".to_string())]);
        assert!(label_matches(&l, "a") && label_matches(&l, "a=b"));
        assert!(!label_matches(&l, "a=c"));
        let f = parse(r#"{"label":["a","a=b"],"dangling":["1"],"name":[]}"#).unwrap();
        assert!(labels(&f, &l));
        assert!(!labels(&f, &BTreeMap::new()));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let day_ago = parse_time("24h").unwrap();
        assert!((now - 86400.0 - day_ago).abs() < 5.0, "{day_ago}");
        assert_eq!(parse_time("1700000000.5"), Some(1700000000.5));
        assert_eq!(
            parse_time_nanos("1700000000.123456789"),
            Some(1_700_000_000_123_456_789)
        );
        assert_eq!(
            parse_time_nanos("1700000000"),
            Some(1_700_000_000_000_000_000)
        );
        assert_eq!(
            parse_time_nanos("2023-11-14T22:13:20.000000001Z"),
            Some(1_700_000_000_000_000_001)
        );
        assert_eq!(parse_time_nanos("soon"), None);
        assert_eq!(flag(&f, "dangling"), Some(true));
        assert_eq!(flag(&f, "all"), None);
        assert!(
            any(&f, "name", &|_| false),
            "an empty filter passes everything"
        );
        assert!(any(&f, "missing", &|_| false));
        assert!(!any(&f, "dangling", &|v| v == "0"));
    }

    #[test]
    fn times_read_as_seconds_or_rfc3339() {
        assert_eq!(parse_time("1700000000.5"), Some(1_700_000_000.5));
        assert_eq!(parse_time("1970-01-01T00:01:00Z"), Some(60.0));
        assert_eq!(time_nanos("since", Some("2")).unwrap(), Some(2_000_000_000));
        assert_eq!(time_nanos("since", None).unwrap(), None);
        assert!(time_nanos("until", Some("soon"))
            .unwrap_err()
            .message()
            .contains("invalid until"));
    }
}
