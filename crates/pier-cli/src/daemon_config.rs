//! The daemon's configuration file (`/etc/pier/daemon.toml`, or `pier daemon --config FILE`).
//!
//! Every `pier daemon` flag can be set in it, under the flag's long name
//! (`registry-addr = "127.0.0.1:5000"`, `insecure-registry = ["a:5000", "b"]`,
//! `cgroup-favordynmods = false`, `header-timeout = 30`). A flag given on the command line
//! (or through its environment variable) wins over the file. The file is checked against
//! the clap definition of [`DaemonArgs`] itself, so a new flag is settable in the file
//! without more code, and every value goes through the flag's own parser.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::builder::ValueParser;
use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, Args, FromArgMatches};

use crate::DaemonArgs;

/// Where the daemon looks for its configuration when `--config` is not given.
pub const DEFAULT_PATH: &str = "/etc/pier/daemon.toml";

/// Why the configuration could not be used; the message names the file, and the key or
/// the line and column.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the daemon configuration {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}, line {line}, column {column}: {message}")]
    Syntax {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{path}: unknown key `{key}`{hint}; the valid keys are: {valid}")]
    UnknownKey {
        path: PathBuf,
        key: String,
        /// ` (did you mean `KEY`?)` when a valid key is written with `_` for `-`.
        hint: String,
        valid: String,
    },
    #[error("{path}: `{key}` must be {expected}, not {found}")]
    WrongType {
        path: PathBuf,
        key: String,
        expected: &'static str,
        found: String,
    },
    #[error("{path}: `{key}`: {message}")]
    BadValue {
        path: PathBuf,
        key: String,
        message: String,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// The TOML type a flag's value takes in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    String,
    Bool,
    Integer,
    Strings,
}

impl Kind {
    fn describe(self) -> &'static str {
        match self {
            Kind::String => "a string",
            Kind::Bool => "a boolean (true or false)",
            Kind::Integer => "an integer",
            Kind::Strings => "an array of strings",
        }
    }
}

/// The daemon's flags as clap knows them, without `--help` and `--config`.
fn daemon_command() -> clap::Command {
    DaemonArgs::augment_args(clap::Command::new("pier daemon").no_binary_name(true))
}

/// The settable keys: each flag's long name, its clap id and the kind of value it takes.
fn keys() -> Vec<(String, String, Kind)> {
    daemon_command()
        .get_arguments()
        .filter_map(|a| {
            let long = a.get_long()?;
            if long == "config" || long == "help" || matches!(a.get_action(), ArgAction::Help) {
                return None;
            }
            let parser = a.get_value_parser().type_id();
            let kind = if matches!(a.get_action(), ArgAction::Append) {
                Kind::Strings
            } else if parser == ValueParser::bool().type_id() {
                Kind::Bool
            } else if parser == ValueParser::new(clap::value_parser!(u64)).type_id()
                || parser == ValueParser::new(clap::value_parser!(u32)).type_id()
            {
                Kind::Integer
            } else {
                Kind::String
            };
            Some((long.to_string(), a.get_id().to_string(), kind))
        })
        .collect()
}

/// One file value as the flag's command-line words (`--key=value`, repeated for arrays),
/// or why the value has the wrong type.
fn words(
    path: &Path,
    key: &str,
    kind: Kind,
    value: &toml::Value,
) -> Result<Vec<OsString>, ConfigError> {
    let wrong = || ConfigError::WrongType {
        path: path.to_path_buf(),
        key: key.to_string(),
        expected: kind.describe(),
        found: match value {
            toml::Value::Array(_) if kind == Kind::Strings => {
                "an array holding other than strings".into()
            }
            v => format!("{} {}", article(v.type_str()), v.type_str()),
        },
    };
    let one = |v: String| OsString::from(format!("--{key}={v}"));
    Ok(match (kind, value) {
        (Kind::String, toml::Value::String(s)) => vec![one(s.clone())],
        (Kind::Bool, toml::Value::Boolean(b)) => vec![one(b.to_string())],
        (Kind::Integer, toml::Value::Integer(i)) => vec![one(i.to_string())],
        (Kind::Strings, toml::Value::Array(items)) => items
            .iter()
            .map(|i| i.as_str().map(|s| one(s.to_string())).ok_or_else(wrong))
            .collect::<Result<_, _>>()?,
        _ => return Err(wrong()),
    })
}

fn article(word: &str) -> &'static str {
    if word.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

/// The first line of a clap error, without its `error: ` prefix.
fn clap_message(e: &clap::Error) -> String {
    let text = e.to_string();
    let line = text.lines().next().unwrap_or_default();
    line.strip_prefix("error: ").unwrap_or(line).to_string()
}

/// Checks a configuration file's text and turns it into command-line words, leaving out
/// the keys for which `given(id)` says the command line already has a value.
pub fn file_words(
    path: &Path,
    text: &str,
    given: impl Fn(&str) -> bool,
) -> Result<Vec<OsString>, ConfigError> {
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        let (line, column) = e
            .span()
            .map(|s| line_column(text, s.start))
            .unwrap_or((1, 1));
        ConfigError::Syntax {
            path: path.to_path_buf(),
            line,
            column,
            message: e.message().trim_end().to_string(),
        }
    })?;
    let keys = keys();
    let mut out = Vec::new();
    for (key, value) in &table {
        let Some((_, id, kind)) = keys.iter().find(|(long, _, _)| long == key) else {
            let dashed = key.replace('_', "-");
            return Err(ConfigError::UnknownKey {
                path: path.to_path_buf(),
                key: key.clone(),
                hint: match keys.iter().any(|(long, _, _)| *long == dashed) {
                    true => format!(" (did you mean `{dashed}`?)"),
                    false => String::new(),
                },
                valid: keys
                    .iter()
                    .map(|k| k.0.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        };
        let w = words(path, key, *kind, value)?;
        // Each value through its flag's own parser, so the message names the key.
        if let Err(e) = daemon_command().try_get_matches_from(w.clone()) {
            if e.kind() != clap::error::ErrorKind::MissingRequiredArgument {
                return Err(ConfigError::BadValue {
                    path: path.to_path_buf(),
                    key: key.clone(),
                    message: clap_message(&e),
                });
            }
        }
        if !given(id) {
            out.extend(w);
        }
    }
    Ok(out)
}

/// 1-based line and column of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// The daemon's arguments with its configuration file applied: `args` and `matches` are
/// the parsed command line (the `daemon` subcommand's matches). The file is `--config`'s,
/// else [`DEFAULT_PATH`] when it exists.
pub fn apply(args: &DaemonArgs, matches: &ArgMatches) -> Result<DaemonArgs, ConfigError> {
    let (path, required) = match &args.config {
        Some(p) => (p.clone(), true),
        None => (PathBuf::from(DEFAULT_PATH), false),
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => {
            return reparse(&path, Vec::new(), matches);
        }
        Err(source) => return Err(ConfigError::Read { path, source }),
    };
    let given = |id: &str| {
        matches!(
            matches.value_source(id),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        )
    };
    let words = file_words(&path, &text, given)?;
    reparse(&path, words, matches)
}

/// Parses the file's words plus the command line's own values into one [`DaemonArgs`].
fn reparse(
    path: &Path,
    mut words: Vec<OsString>,
    matches: &ArgMatches,
) -> Result<DaemonArgs, ConfigError> {
    for a in daemon_command().get_arguments() {
        let (Some(long), id) = (a.get_long(), a.get_id().as_str()) else {
            continue;
        };
        if matches.value_source(id) != Some(ValueSource::CommandLine) {
            continue;
        }
        if let Ok(Some(raw)) = matches.try_get_raw(id) {
            for v in raw {
                let mut w = OsString::from(format!("--{long}="));
                w.push(v);
                words.push(w);
            }
        }
    }
    let invalid = |e: clap::Error| ConfigError::Invalid {
        path: path.to_path_buf(),
        message: clap_message(&e),
    };
    let m = daemon_command()
        .try_get_matches_from(words)
        .map_err(invalid)?;
    DaemonArgs::from_arg_matches(&m).map_err(invalid)
}

/// The crates under Pier's own that a bare level (`--log-level debug`) leaves at `info`:
/// the HTTP/2 and gRPC plumbing of the etcd client and the TLS stack, which at `debug` log
/// every frame. Naming one (`h2=debug`) still turns it up.
const QUIET_DEPENDENCIES: [&str; 7] = [
    "h2",
    "tower",
    "hyper",
    "hyper_util",
    "tonic",
    "rustls",
    "etcd_client",
];

/// The log filter the daemon runs with for `given` (`--log-level`, `PIER_LOG`): `given`,
/// plus `CRATE=info` for each of [`QUIET_DEPENDENCIES`] it does not name.
pub fn log_filter(given: &str) -> String {
    let named = |krate: &str| {
        given.split(',').any(|d| {
            let target = d.split(['=', '[']).next().unwrap_or("").trim();
            target == krate || target.starts_with(&format!("{krate}::"))
        })
    };
    let mut filter = given.to_string();
    for krate in QUIET_DEPENDENCIES {
        if !named(krate) {
            filter.push_str(&format!(",{krate}=info"));
        }
    }
    filter
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words_of(text: &str) -> Result<Vec<String>, String> {
        file_words(Path::new("/etc/pier/daemon.toml"), text, |_| false)
            .map(|w| w.into_iter().map(|s| s.into_string().unwrap()).collect())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn every_kind_of_value_becomes_flags() {
        let w = words_of(
            "registry-addr = \"127.0.0.1:5000\"\nlog-level = \"debug\"\ncgroup-favordynmods = false\n\
             header-timeout = 7\ninsecure-registry = [\"a:5000\", \"b\"]\n",
        )
        .unwrap();
        assert_eq!(
            w,
            [
                "--cgroup-favordynmods=false",
                "--header-timeout=7",
                "--insecure-registry=a:5000",
                "--insecure-registry=b",
                "--log-level=debug",
                "--registry-addr=127.0.0.1:5000",
            ]
        );
    }

    #[test]
    fn every_daemon_flag_is_a_key() {
        let keys: Vec<String> = keys().into_iter().map(|k| k.0).collect();
        for flag in [
            "root",
            "socket",
            "docker-socket",
            "log-level",
            "cgroup-favordynmods",
            "registry-addr",
            "insecure-registry",
            "registry-mirror",
            "registry-ca",
            "registry-upstream",
            "registry-auth",
            "registry-tls-cert",
            "registry-tls-key",
            "header-timeout",
        ] {
            assert!(
                keys.iter().any(|k| k == flag),
                "{flag} missing from {keys:?}"
            );
        }
        assert!(!keys.iter().any(|k| k == "config" || k == "help"));
    }

    #[test]
    fn unknown_key_is_named_with_the_valid_ones() {
        let e = words_of("registry_addr = \"x\"\n").unwrap_err();
        assert!(
            e.starts_with("/etc/pier/daemon.toml: unknown key `registry_addr` (did you mean `registry-addr`?); the valid keys are: root, socket, docker-socket, log-level,"),
            "{e}"
        );
        let e = words_of("[registry]\naddr = \"x\"\n").unwrap_err();
        assert!(
            e.starts_with(
                "/etc/pier/daemon.toml: unknown key `registry`; the valid keys are: root,"
            ),
            "{e}"
        );
    }

    #[test]
    fn wrong_type_names_key_and_expected_type() {
        assert_eq!(
            words_of("header-timeout = \"30\"\n").unwrap_err(),
            "/etc/pier/daemon.toml: `header-timeout` must be an integer, not a string"
        );
        assert_eq!(
            words_of("cgroup-favordynmods = 1\n").unwrap_err(),
            "/etc/pier/daemon.toml: `cgroup-favordynmods` must be a boolean (true or false), not an integer"
        );
        assert_eq!(
            words_of("insecure-registry = \"a\"\n").unwrap_err(),
            "/etc/pier/daemon.toml: `insecure-registry` must be an array of strings, not a string"
        );
        assert_eq!(
            words_of("insecure-registry = [1]\n").unwrap_err(),
            "/etc/pier/daemon.toml: `insecure-registry` must be an array of strings, not an array holding other than strings"
        );
    }

    #[test]
    fn bad_value_goes_through_the_flags_parser() {
        let e = words_of("registry-addr = \"nowhere\"\n").unwrap_err();
        assert!(
            e.starts_with("/etc/pier/daemon.toml: `registry-addr`: invalid value 'nowhere' for '--registry-addr"),
            "{e}"
        );
        let e = words_of("header-timeout = 0\n").unwrap_err();
        assert!(e.contains("`header-timeout`: invalid value '0'"), "{e}");
    }

    #[test]
    fn syntax_error_gives_line_and_column() {
        let e = words_of("log-level = \"info\"\nregistry-addr = 127.0.0.1:5000\n").unwrap_err();
        assert_eq!(
            e,
            "/etc/pier/daemon.toml, line 2, column 22: invalid float, expected nothing"
        );
        let e = words_of("log-level = \"info\"\n\n  [oops\n").unwrap_err();
        assert!(
            e.starts_with("/etc/pier/daemon.toml, line 3, column "),
            "{e}"
        );
    }

    #[test]
    fn keys_given_on_the_command_line_are_left_out() {
        let w = file_words(
            Path::new("f"),
            "log-level = \"debug\"\nroot = \"/srv\"\n",
            |id| id == "log_level",
        )
        .unwrap();
        assert_eq!(w, [OsString::from("--root=/srv")]);
    }

    #[test]
    fn command_line_wins_over_the_file() {
        let m = daemon_command()
            .try_get_matches_from(["--root=/cli", "--insecure-registry=c"])
            .unwrap();
        let args = DaemonArgs::from_arg_matches(&m).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("daemon.toml");
        std::fs::write(
            &file,
            "root = \"/file\"\nregistry-upstream = \"up:5000\"\ninsecure-registry = [\"f\"]\n",
        )
        .unwrap();
        let args = DaemonArgs {
            config: Some(file),
            ..args
        };
        let merged = apply(&args, &m).unwrap();
        assert_eq!(merged.root, PathBuf::from("/cli"));
        assert_eq!(merged.insecure_registries, ["c"]);
        assert_eq!(merged.registry_upstream.as_deref(), Some("up:5000"));
    }

    #[test]
    fn a_missing_explicit_file_is_an_error() {
        let m = daemon_command()
            .try_get_matches_from(["--config=/nonexistent/daemon.toml"])
            .unwrap();
        let args = DaemonArgs::from_arg_matches(&m).unwrap();
        let e = apply(&args, &m).unwrap_err().to_string();
        assert!(
            e.starts_with("cannot read the daemon configuration /nonexistent/daemon.toml: "),
            "{e}"
        );
    }

    #[test]
    fn a_bare_level_leaves_the_plumbing_at_info_unless_it_is_named() {
        let f = log_filter("debug");
        assert!(f.starts_with("debug,"), "{f}");
        for krate in QUIET_DEPENDENCIES {
            assert!(f.contains(&format!(",{krate}=info")), "{f}");
        }
        let f = log_filter("info,h2=debug,hyper_util::client=trace");
        assert!(!f.contains("h2=info"), "{f}");
        assert!(!f.contains("hyper_util=info"), "{f}");
        assert!(f.contains(",tower=info"), "{f}");
        tracing_subscriber::EnvFilter::try_new(&f).expect("a valid filter");
    }
}
