//! Tables for people, JSON for programs, Go templates (`--format '{{.Names}}'`) for both;
//! what a closed stdout does (the process ends as a Unix tool does on SIGPIPE); and
//! Docker's prune confirmation.

use std::io::{BufRead, IsTerminal, Write};
use std::sync::Mutex;

use serde::Serialize;
use serde_json::Value;

use crate::template::{docker_header, Aliases, Template};
use crate::CliError;

/// How a command prints: `table` (the default), `json`, or a Go template (`{{.ID}}`,
/// `table {{.ID}}\t{{.Status}}` for a header row and aligned columns).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
    Template {
        /// `table ...`: a header row from the field names and aligned columns.
        table: bool,
        src: &'static str,
    },
}

/// Parses `--format`: `table`, `json`, or a template checked here, so that a bad one
/// fails before anything is asked of the daemon.
pub fn parse_format(s: &str) -> Result<Format, String> {
    match s {
        "table" => return Ok(Format::Table),
        "json" => return Ok(Format::Json),
        _ => {}
    }
    // As Docker's: a typed `\t` or `\n` (two characters) is a tab or a newline.
    let owned = s.replace("\\t", "\t").replace("\\n", "\n");
    let s = owned.as_str();
    let (table, src) = match s.strip_prefix("table") {
        Some(rest) if rest.starts_with(char::is_whitespace) => (true, rest.trim_start()),
        _ => (false, s),
    };
    Template::parse(src).map_err(|e| e.to_string())?;
    // The process lives for one command: the template lives as long.
    let src: &'static str = Box::leak(src.to_string().into_boxed_str());
    Ok(Format::Template { table, src })
}

/// What a template's `.ID` is called in a table header and which Docker field names
/// differ from Pier's keys, for the command being run (set once by the dispatch).
struct Context {
    id_header: &'static str,
    format: Format,
}

static CONTEXT: Mutex<Context> = Mutex::new(Context {
    id_header: "CONTAINER ID",
    format: Format::Table,
});

/// Docker's field names that are not Pier's key with case and underscores ignored.
pub const ALIASES: Aliases = &[
    ("Names", "name"),
    ("Label", "labels"),
    ("Type", "kind"),
    ("Digest", "manifest_digest"),
    ("Mountpoint", "mount_point"),
];

/// Sets the command's `--format`, for the commands that print a line per object.
pub fn set_format(f: Format) {
    CONTEXT.lock().unwrap_or_else(|e| e.into_inner()).format = f;
}

/// The command's `--format`.
pub fn format() -> Format {
    CONTEXT.lock().unwrap_or_else(|e| e.into_inner()).format
}

/// Prints the result of an action on one object (`start`, `rm`, `wait`, ...): `text` as
/// a line, or with `--format json` the object `json` as one JSON line.
pub fn item(text: &str, json: Value) {
    match format() {
        Format::Json => outln(&json.to_string()),
        _ => outln(text),
    }
}

/// Reports an action that failed on one object while the others go on: `Error: ...`,
/// or with `--format json` `{"error": ..., "object": ...}`, on stderr.
pub fn item_error(object: &str, e: &dyn std::fmt::Display) {
    let line = match format() {
        Format::Json => serde_json::json!({"error": e.to_string(), "object": object}).to_string(),
        _ => format!("Error: {e}"),
    };
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Sets the header `{{.ID}}` gets in a `table` template (`CONTAINER ID` for `ps`).
pub fn set_id_header(h: &'static str) {
    CONTEXT.lock().unwrap_or_else(|e| e.into_inner()).id_header = h;
}

/// A row as Docker's formatters see it: `Labels` as `k=v,k2=v2` (Docker's list
/// commands print a string; `.Label "k"` and `index .Label "k"` reach the map), and an
/// image's `Repository` and `Tag` from its first `repo:tag`.
fn docker_row(v: &Value) -> Value {
    let Value::Object(o) = v else {
        return v.clone();
    };
    let mut o = o.clone();
    // `.ID` as Docker's lists show it: without `sha256:`, 12 characters unless --no-trunc.
    if let Some(Value::String(id)) = o.get("id") {
        let id = id.strip_prefix("sha256:").unwrap_or(id);
        let no_trunc = std::env::args().any(|a| a == "--no-trunc");
        let short: String = if no_trunc {
            id.to_string()
        } else {
            id.chars().take(12).collect()
        };
        o.insert("ID".into(), Value::String(short));
    }
    if let Some(Value::Object(labels)) = o.get("labels").cloned() {
        let s: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}={}", crate::template::to_text(v)))
            .collect();
        o.insert("Labels".into(), Value::String(s.join(",")));
    }
    // Docker's human columns: `CreatedSince`/`RunningFor` ("5 minutes ago"), `Size`, and
    // the memory, I/O and pid columns of `stats`.
    if let Some(t) = o
        .get("created")
        .and_then(Value::as_str)
        .and_then(pier_api::time::parse_rfc3339)
    {
        let ago = pier_api::time::human_ago(t, pier_api::time::now_unix());
        o.entry("CreatedSince")
            .or_insert(Value::String(ago.clone()));
        o.entry("RunningFor").or_insert(Value::String(ago));
    }
    if let Some(n) = o.get("size").and_then(Value::as_u64) {
        o.insert("Size".into(), Value::String(human_size(n)));
    }
    if let Some(used) = o.get("memory_usage").and_then(Value::as_u64) {
        let limit = o.get("memory_limit").and_then(Value::as_u64);
        let l = limit.map_or("unlimited".to_string(), human_size_binary);
        o.insert(
            "MemUsage".into(),
            Value::String(format!("{} / {l}", human_size_binary(used))),
        );
        o.insert(
            "MemPerc".into(),
            Value::String(limit.map_or("--".into(), |l| {
                format!("{:.2}%", used as f64 / l as f64 * 100.0)
            })),
        );
        let io = |k: &str| o.get(k).and_then(Value::as_u64).unwrap_or(0);
        let block = format!(
            "{} / {}",
            human_size(io("io_read_bytes")),
            human_size(io("io_write_bytes"))
        );
        o.insert("BlockIO".into(), Value::String(block));
        if let Some(p) = o.get("pids_current").cloned() {
            o.insert("PIDs".into(), p);
        }
    }
    // `ps`'s ports as Docker prints them: `0.0.0.0:8080->80/tcp, ...`.
    if let Some(Value::Array(ports)) = o.get("ports") {
        let shown: Vec<String> = ports
            .iter()
            .filter_map(|p| {
                let host_port = p.get("host_port")?;
                let ip = p
                    .get("host_ip")
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty());
                Some(format!(
                    "{}:{host_port}->{}/{}",
                    ip.unwrap_or("0.0.0.0"),
                    p.get("container_port").unwrap_or(&Value::Null),
                    p.get("proto").and_then(Value::as_str).unwrap_or("tcp")
                ))
            })
            .collect();
        o.insert("Ports".into(), Value::String(shown.join(", ")));
    }
    if let Some(Value::Array(tags)) = o.get("repo_tags") {
        let first = tags
            .first()
            .and_then(Value::as_str)
            .unwrap_or("<none>:<none>");
        let (repo, tag) = first.rsplit_once(':').unwrap_or((first, "<none>"));
        let (repo, tag) = (repo.to_string(), tag.to_string());
        o.entry("Repository").or_insert(Value::String(repo));
        o.entry("Tag").or_insert(Value::String(tag));
    }
    Value::Object(o)
}

/// Renders `value` with a template: each element of a list on its own line (Docker's
/// list commands), a single object once; `table` adds a header and aligns columns.
pub fn render_template(table: bool, src: &str, value: &Value) -> Result<String, CliError> {
    let t = Template::parse(src).map_err(|e| crate::fail(e.to_string()))?;
    let items: Vec<Value> = match value {
        Value::Array(a) => a.iter().map(docker_row).collect(),
        v => vec![docker_row(v)],
    };
    let mut lines = Vec::new();
    for item in &items {
        lines.push(
            t.render(item, ALIASES)
                .map_err(|e| crate::fail(e.to_string()))?,
        );
    }
    if !table {
        return Ok(lines.join("\n"));
    }
    let id = CONTEXT.lock().unwrap_or_else(|e| e.into_inner()).id_header;
    let header = t.render_header(|f| docker_header(f, id));
    let rows: Vec<Vec<String>> = lines
        .iter()
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect();
    let headers: Vec<&str> = header.split('\t').collect();
    Ok(self::table_loose(&headers, &rows))
}

/// Prints `value` as JSON, through a template, or the text `table` makes.
pub fn print<T: Serialize>(
    fmt: Format,
    value: &T,
    table: impl FnOnce() -> String,
) -> Result<(), CliError> {
    match fmt {
        Format::Json => outln(&serde_json::to_string_pretty(value).expect("serializable")),
        Format::Table => {
            let t = table();
            if !t.is_empty() {
                outln(&t);
            }
        }
        Format::Template { table, src } => {
            let v = serde_json::to_value(value).expect("serializable");
            let t = render_template(table, src, &v)?;
            if !(t.is_empty() && v.as_array().is_some_and(|a| a.is_empty()) && !table) {
                outln(&t);
            }
        }
    }
    Ok(())
}

/// Writes a line to stdout; a closed stdout ends the process as SIGPIPE ends a Unix tool.
pub fn outln(s: &str) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{s}").and_then(|_| out.flush()) {
        stdout_failed(&e);
    }
}

/// Writes bytes to stdout as they are (a stream's payload, a script).
pub fn out_bytes(b: &[u8]) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(b).and_then(|_| out.flush()) {
        stdout_failed(&e);
    }
}

/// Checks a write to stdout made elsewhere (tokio's stdout): a closed pipe ends quietly.
pub fn check_stdout(r: std::io::Result<()>) {
    if let Err(e) = r {
        stdout_failed(&e);
    }
}

/// tokio's stdout for streams (`export`, `save` to stdout): a closed pipe ends the
/// process quietly instead of failing as an error of the daemon's stream.
pub struct Stdout(tokio::io::Stdout);

impl Stdout {
    pub fn new() -> Self {
        Stdout(tokio::io::stdout())
    }
}

impl Default for Stdout {
    fn default() -> Self {
        Self::new()
    }
}

fn checked<T>(p: std::task::Poll<std::io::Result<T>>) -> std::task::Poll<std::io::Result<T>> {
    if let std::task::Poll::Ready(Err(e)) = &p {
        if is_broken_pipe(e) {
            die_of_sigpipe();
        }
    }
    p
}

impl tokio::io::AsyncWrite for Stdout {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        checked(std::pin::Pin::new(&mut self.0).poll_write(cx, buf))
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        checked(std::pin::Pin::new(&mut self.0).poll_flush(cx))
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        checked(std::pin::Pin::new(&mut self.0).poll_shutdown(cx))
    }
}

/// Whether an error is the reader of stdout having gone (`pier ps | head`).
pub fn is_broken_pipe(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::BrokenPipe
}

/// A write to stdout failed: a closed pipe ends the process quietly, as SIGPIPE ends
/// `cat` or `ls` (the shell sees 141, a pipeline its last command's status); any other
/// failure is reported and exits 1.
pub fn stdout_failed(e: &std::io::Error) -> ! {
    if is_broken_pipe(e) {
        die_of_sigpipe()
    }
    let _ = writeln!(std::io::stderr(), "Error: writing to stdout: {e}");
    std::process::exit(1)
}

/// Ends the process by SIGPIPE with its default action, which is how coreutils (and
/// Docker's Go CLI) end when their reader goes; Rust ignores SIGPIPE so that a write to
/// the daemon's socket returns an error instead, hence the reset right before.
pub fn die_of_sigpipe() -> ! {
    // SAFETY: restoring the default disposition of one signal and raising it; no handler
    // runs, and the process ends at the raise.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        libc::raise(libc::SIGPIPE);
    }
    std::process::exit(128 + libc::SIGPIPE)
}

/// Docker's prune question: prints `WARNING! {warning}` and `Are you sure you want to
/// continue? [y/N] `, and reads one line of stdin (a terminal or not, as Docker does);
/// only `y` or `yes` goes on, and an empty or closed stdin is no. `force` skips it.
pub fn confirm(force: bool, warning: &str) -> bool {
    if force {
        return true;
    }
    let mut out = std::io::stdout();
    let _ = write!(
        out,
        "WARNING! {warning}\nAre you sure you want to continue? [y/N] "
    );
    let _ = out.flush();
    let mut line = String::new();
    let stdin = std::io::stdin();
    let got = stdin.lock().read_line(&mut line).unwrap_or(0);
    if got == 0 && !stdin.is_terminal() {
        // Nothing came: end the prompt's line as a terminal would.
        outln("");
    }
    matches!(line.trim().to_lowercase().as_str(), "y" | "yes")
}

/// Left-aligned columns separated by three spaces, like Docker's tables.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}   ", w = widths[i]));
            }
        }
        s.trim_end().to_string()
    };
    let mut out = vec![line(headers.to_vec())];
    out.extend(
        rows.iter()
            .map(|r| line(r.iter().map(String::as_str).collect())),
    );
    out.join("\n")
}

/// Like [`table`], but rows may have fewer or more cells than the header (a template's).
fn table_loose(headers: &[&str], rows: &[Vec<String>]) -> String {
    let n = rows
        .iter()
        .map(Vec::len)
        .chain([headers.len()])
        .max()
        .unwrap_or(0);
    let pad = |r: Vec<String>| {
        let mut r = r;
        r.resize(n, String::new());
        r
    };
    let headers: Vec<String> = pad(headers.iter().map(|s| s.to_string()).collect());
    let rows: Vec<Vec<String>> = rows.iter().cloned().map(pad).collect();
    let h: Vec<&str> = headers.iter().map(String::as_str).collect();
    table(&h, &rows)
}

/// 1.23MB, as Docker shows sizes (decimal units).
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1000.0 && i + 1 < UNITS.len() {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 {
        format!("{bytes}B")
    } else {
        format!("{:.3}", v)
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
            + UNITS[i]
    }
}

/// 1.5MiB, as Docker shows memory (binary units).
pub fn human_size_binary(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{bytes}B")
    } else {
        format!("{v:.2}{}", UNITS[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(1_500_000), "1.5MB");
        assert_eq!(human_size(2_000_000_000), "2GB");
    }

    #[test]
    fn aligns_columns() {
        let t = table(&["A", "BB"], &[vec!["long".into(), "x".into()]]);
        assert_eq!(t, "A      BB\nlong   x");
    }
}
