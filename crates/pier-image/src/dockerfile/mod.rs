//! Dockerfiles: the parser (this module), variable substitution ([`words`]) and the build
//! context ([`context`]); path patterns and `.dockerignore` are [`pier_archive::ignore`].
//!
//! The parser follows Docker's classic builder: parser directives at the very top
//! (`# escape=`` ` ``, `# syntax=...`), comment lines (also inside continuations), lines
//! continued with the escape character, one instruction per logical line, `--flag=value`
//! options after the keyword, and JSON (`["a", "b"]`) or shell forms. Variables are not
//! substituted here: that needs the build's state, so instructions keep the raw text and the
//! builder expands it with [`words`] in the instructions Docker expands (`ADD`, `COPY`,
//! `ENV`, `EXPOSE`, `FROM`, `LABEL`, `STOPSIGNAL`, `USER`, `VOLUME`, `WORKDIR`, `ARG`).

pub mod context;
pub mod words;

use std::time::Duration;

/// A parse error, with the line it was found on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Dockerfile parse error line {line}: {message}")]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

/// A parsed Dockerfile.
#[derive(Debug, Clone, PartialEq)]
pub struct Dockerfile {
    /// The escape character: `\` or `` ` ``.
    pub escape: char,
    /// The `# syntax=` directive, if any (recorded; Pier's builder is always the classic one).
    pub syntax: Option<String>,
    pub instructions: Vec<Instruction>,
    /// Things Docker warns about (empty continuation lines).
    pub warnings: Vec<String>,
}

/// One instruction.
#[derive(Debug, Clone, PartialEq)]
pub struct Instruction {
    /// The line it starts on (1-based).
    pub line: usize,
    /// The logical line as written, continuations joined (`Step N/M : <original>`).
    pub original: String,
    pub command: Command,
}

/// A command line of `RUN`, `CMD`, `ENTRYPOINT`, `HEALTHCHECK`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CmdLine {
    /// JSON form: run as is.
    Exec(Vec<String>),
    /// Shell form: run through the image's `SHELL` (`/bin/sh -c` by default).
    Shell(String),
}

/// `COPY` and `ADD`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyArgs {
    /// Sources as written (substituted later).
    pub sources: Vec<String>,
    pub dest: String,
    /// `--from=STAGE|IMAGE` (COPY only).
    pub from: Option<String>,
    /// `--chown=USER[:GROUP]`.
    pub chown: Option<String>,
    /// `--chmod=OCTAL`.
    pub chmod: Option<String>,
}

/// `HEALTHCHECK CMD ...`, stored in the image config as Docker does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthArgs {
    pub test: CmdLine,
    pub interval: Option<Duration>,
    pub timeout: Option<Duration>,
    pub start_period: Option<Duration>,
    pub start_interval: Option<Duration>,
    pub retries: Option<u32>,
}

/// What an instruction does; strings are raw (not yet substituted).
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    From {
        image: String,
        alias: Option<String>,
        platform: Option<String>,
    },
    Run(CmdLine),
    Cmd(CmdLine),
    Entrypoint(CmdLine),
    Copy(CopyArgs),
    Add(CopyArgs),
    /// `KEY=VALUE` pairs, quotes still in.
    Env(Vec<(String, String)>),
    Arg(Vec<(String, Option<String>)>),
    Label(Vec<(String, String)>),
    Workdir(String),
    User(String),
    Expose(Vec<String>),
    Volume(Vec<String>),
    /// `None` is `HEALTHCHECK NONE`.
    Healthcheck(Option<HealthArgs>),
    Shell(Vec<String>),
    StopSignal(String),
    /// The trigger as written after `ONBUILD`, and its parse.
    OnBuild {
        trigger: String,
        parsed: Box<Instruction>,
    },
    Maintainer(String),
}

impl Command {
    /// The keyword, upper case.
    pub fn keyword(&self) -> &'static str {
        match self {
            Command::From { .. } => "FROM",
            Command::Run(_) => "RUN",
            Command::Cmd(_) => "CMD",
            Command::Entrypoint(_) => "ENTRYPOINT",
            Command::Copy(_) => "COPY",
            Command::Add(_) => "ADD",
            Command::Env(_) => "ENV",
            Command::Arg(_) => "ARG",
            Command::Label(_) => "LABEL",
            Command::Workdir(_) => "WORKDIR",
            Command::User(_) => "USER",
            Command::Expose(_) => "EXPOSE",
            Command::Volume(_) => "VOLUME",
            Command::Healthcheck(_) => "HEALTHCHECK",
            Command::Shell(_) => "SHELL",
            Command::StopSignal(_) => "STOPSIGNAL",
            Command::OnBuild { .. } => "ONBUILD",
            Command::Maintainer(_) => "MAINTAINER",
        }
    }
}

/// Parses a whole Dockerfile.
pub fn parse(text: &str) -> Result<Dockerfile, ParseError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let lines: Vec<&str> = text
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .collect();
    let mut escape = '\\';
    let mut syntax = None;
    let mut i = 0;
    // Parser directives: only before anything else, each at most once.
    let mut seen = Vec::new();
    while i < lines.len() {
        let Some((name, value)) = directive(lines[i]) else {
            break;
        };
        let err = |message: String| ParseError {
            line: i + 1,
            message,
        };
        if seen.contains(&name) {
            return Err(err(format!("only one {name} parser directive can be used")));
        }
        match name.as_str() {
            "escape" => {
                escape = match value.as_str() {
                    "\\" => '\\',
                    "`" => '`',
                    v => return Err(err(format!("invalid escape token {v:?}: use \\ or `"))),
                }
            }
            "syntax" => syntax = Some(value),
            "check" => {}
            // An unknown directive is a comment, and ends the directives.
            _ => break,
        }
        seen.push(name);
        i += 1;
    }

    let mut instructions = Vec::new();
    let mut warnings = Vec::new();
    while i < lines.len() {
        let first = lines[i].trim_start();
        i += 1;
        if first.trim().is_empty() || first.starts_with('#') {
            continue;
        }
        let start = i;
        let (mut logical, mut more) = continued(first, escape);
        let mut empty_continuation = false;
        while more && i < lines.len() {
            let l = lines[i];
            i += 1;
            if l.trim_start().starts_with('#') {
                continue;
            }
            if l.trim().is_empty() {
                empty_continuation = true;
                continue;
            }
            let (part, m) = continued(l, escape);
            logical.push_str(&part);
            more = m;
        }
        if empty_continuation {
            warnings.push(format!(
                "empty continuation line found in the instruction on line {start}: empty continuation lines will become errors in a future release"
            ));
        }
        if logical.trim().is_empty() {
            continue;
        }
        instructions.push(parse_instruction(logical.trim(), start, escape)?);
    }
    Ok(Dockerfile {
        escape,
        syntax,
        instructions,
        warnings,
    })
}

/// `# name = value`, when the line is a directive.
fn directive(line: &str) -> Option<(String, String)> {
    let rest = line.trim_start().strip_prefix('#')?;
    let (name, value) = rest.split_once('=')?;
    let name = name.trim();
    let value = value.trim();
    let valid = name.chars().next()?.is_ascii_alphabetic()
        && name.chars().all(|c| c.is_ascii_alphanumeric())
        && !value.is_empty();
    valid.then(|| (name.to_ascii_lowercase(), value.to_string()))
}

/// Strips a trailing escape character (and blanks after it): (text, continues?).
fn continued(line: &str, escape: char) -> (String, bool) {
    let t = line.trim_end_matches([' ', '\t']);
    match t.strip_suffix(escape) {
        Some(rest) => (rest.to_string(), true),
        None => (line.to_string(), false),
    }
}

/// Parses one logical line (continuations joined, trimmed).
pub fn parse_instruction(line: &str, at: usize, escape: char) -> Result<Instruction, ParseError> {
    let (word, rest) = match line.split_once(|c: char| c.is_whitespace()) {
        Some((w, r)) => (w, r.trim()),
        None => (line, ""),
    };
    let (flags, rest) = split_flags(rest);
    let l = Line {
        keyword: word.to_ascii_uppercase(),
        rest,
        flags,
        at,
        escape,
    };
    l.check_flags()?;
    let command = match l.keyword.as_str() {
        "FROM" => l.from()?,
        "RUN" => Command::Run(l.command_line()?),
        "CMD" => Command::Cmd(l.command_line()?),
        "ENTRYPOINT" => Command::Entrypoint(l.command_line()?),
        "COPY" => Command::Copy(l.copy_args()?),
        "ADD" => Command::Add(l.copy_args()?),
        "ENV" => Command::Env(name_values(&l.keyword, rest, escape).map_err(|m| l.err(m))?),
        "LABEL" => Command::Label(name_values(&l.keyword, rest, escape).map_err(|m| l.err(m))?),
        "ARG" => l.arg()?,
        "WORKDIR" => Command::Workdir(l.one_argument()?),
        "USER" => Command::User(l.one_argument()?),
        "EXPOSE" => {
            l.need_args("at least one argument")?;
            Command::Expose(words::split_raw(rest, escape))
        }
        "VOLUME" => {
            l.need_args("at least one argument")?;
            let v = json_or_words(rest, escape);
            if v.iter().any(|p| p.trim().is_empty()) {
                return Err(l.err("VOLUME specified can not be an empty string".into()));
            }
            Command::Volume(v)
        }
        "SHELL" => match json_array(rest) {
            Some(v) if !v.is_empty() => Command::Shell(v),
            _ => return Err(l.err(
                "SHELL requires the arguments to be in JSON form, e.g. SHELL [\"/bin/sh\", \"-c\"]"
                    .into(),
            )),
        },
        "STOPSIGNAL" => Command::StopSignal(l.one_argument()?),
        "MAINTAINER" => Command::Maintainer(l.one_argument()?),
        "HEALTHCHECK" => l.healthcheck()?,
        "ONBUILD" => l.onbuild()?,
        _ => return Err(l.err(format!("unknown instruction: {}", l.keyword))),
    };
    Ok(Instruction {
        line: at,
        original: line.to_string(),
        command,
    })
}

/// One instruction's line, split into its keyword, flags and arguments.
struct Line<'a> {
    keyword: String,
    rest: &'a str,
    flags: Vec<(String, String)>,
    at: usize,
    escape: char,
}

impl Line<'_> {
    fn err(&self, message: String) -> ParseError {
        ParseError {
            line: self.at,
            message,
        }
    }

    /// The value of flag `name` (the last one given).
    fn flag(&self, name: &str) -> Option<String> {
        self.flags
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    }

    fn need_args(&self, what: &str) -> Result<(), ParseError> {
        if self.rest.is_empty() {
            Err(self.err(format!("{} requires {what}", self.keyword)))
        } else {
            Ok(())
        }
    }

    fn one_argument(&self) -> Result<String, ParseError> {
        self.need_args("exactly one argument")?;
        Ok(self.rest.to_string())
    }

    fn command_line(&self) -> Result<CmdLine, ParseError> {
        self.need_args("at least one argument")?;
        Ok(cmd_line(self.rest))
    }

    /// Refuses flags the instruction does not take, naming BuildKit's as such.
    fn check_flags(&self) -> Result<(), ParseError> {
        let keyword = self.keyword.as_str();
        let allowed: &[&str] = match keyword {
            "FROM" => &["platform"],
            "COPY" => &["from", "chown", "chmod"],
            "ADD" => &["chown", "chmod"],
            "HEALTHCHECK" => &[
                "interval",
                "timeout",
                "start-period",
                "start-interval",
                "retries",
            ],
            _ => &[],
        };
        for (name, _) in &self.flags {
            if !allowed.contains(&name.as_str()) {
                let buildkit = matches!(
                    (keyword, name.as_str()),
                    ("RUN", "mount" | "network" | "security")
                        | ("COPY" | "ADD", "link" | "parents" | "exclude")
                        | ("ADD", "checksum" | "keep-git-dir")
                );
                return Err(self.err(if buildkit {
                    format!("{keyword} --{name} is a BuildKit feature; Pier's builder is Docker's classic builder and does not support it")
                } else {
                    format!("unknown flag for {keyword}: --{name}")
                }));
            }
        }
        Ok(())
    }

    fn from(&self) -> Result<Command, ParseError> {
        let w = words::split_raw(self.rest, self.escape);
        let (image, alias) = match w.as_slice() {
            [image] => (image.clone(), None),
            [image, as_kw, name] if as_kw.eq_ignore_ascii_case("as") => {
                let name = name.to_ascii_lowercase();
                let ok = name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
                    && name
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c));
                if !ok {
                    return Err(self.err(format!("invalid name for build stage: {name:?}, name can't start with a number or contain symbols")));
                }
                (image.clone(), Some(name))
            }
            _ => {
                return Err(self.err(
                    "FROM requires either one argument, or three: FROM <image> AS <name>".into(),
                ))
            }
        };
        Ok(Command::From {
            image,
            alias,
            platform: self.flag("platform"),
        })
    }

    fn copy_args(&self) -> Result<CopyArgs, ParseError> {
        let mut list = json_or_words(self.rest, self.escape);
        if list.len() < 2 {
            return Err(self.err(format!(
                "{} requires at least two arguments: a source and a destination",
                self.keyword
            )));
        }
        let dest = list.pop().expect("two or more");
        Ok(CopyArgs {
            sources: list,
            dest,
            from: self.flag("from"),
            chown: self.flag("chown"),
            chmod: self.flag("chmod"),
        })
    }

    fn arg(&self) -> Result<Command, ParseError> {
        let w = words::split_raw(self.rest, self.escape);
        if w.is_empty() {
            return Err(self.err("ARG requires at least one argument".into()));
        }
        let mut out = Vec::new();
        for a in w {
            match a.split_once('=') {
                Some((k, v)) => out.push((k.to_string(), Some(v.to_string()))),
                None => out.push((a, None)),
            }
        }
        if out.iter().any(|(k, _)| k.is_empty()) {
            return Err(self.err("ARG names cannot be empty".into()));
        }
        Ok(Command::Arg(out))
    }

    /// The duration of flag `name`: absent or zero is None.
    fn duration(&self, name: &str) -> Result<Option<Duration>, ParseError> {
        let Some(v) = self.flag(name) else {
            return Ok(None);
        };
        let d = parse_duration(&v).ok_or_else(|| {
            self.err(format!(
                "--{name}={v:?} is not a duration; use e.g. 30s, 1m30s, 500ms"
            ))
        })?;
        if !d.is_zero() && d < Duration::from_millis(1) {
            return Err(self.err(format!("--{name} cannot be less than 1ms")));
        }
        Ok(Some(d).filter(|d| !d.is_zero()))
    }

    fn healthcheck(&self) -> Result<Command, ParseError> {
        self.need_args("an argument: NONE, or CMD and a command")?;
        let (kind, cmd) = match self.rest.split_once(|c: char| c.is_whitespace()) {
            Some((k, c)) => (k, c.trim()),
            None => (self.rest, ""),
        };
        if kind.eq_ignore_ascii_case("NONE") {
            if !cmd.is_empty() || !self.flags.is_empty() {
                return Err(self.err("HEALTHCHECK NONE takes no arguments".into()));
            }
            return Ok(Command::Healthcheck(None));
        }
        if !kind.eq_ignore_ascii_case("CMD") {
            return Err(self.err(format!(
                "unknown type {kind:?} in HEALTHCHECK (try CMD, or NONE)"
            )));
        }
        if cmd.is_empty() {
            return Err(self.err("HEALTHCHECK CMD requires a command".into()));
        }
        let retries = match self.flag("retries") {
            None => None,
            Some(v) => Some(
                v.parse::<u32>()
                    .map_err(|_| self.err(format!("--retries={v:?}: give a number, 0 or more")))?,
            )
            .filter(|r| *r > 0),
        };
        Ok(Command::Healthcheck(Some(HealthArgs {
            test: cmd_line(cmd),
            interval: self.duration("interval")?,
            timeout: self.duration("timeout")?,
            start_period: self.duration("start-period")?,
            start_interval: self.duration("start-interval")?,
            retries,
        })))
    }

    fn onbuild(&self) -> Result<Command, ParseError> {
        self.need_args("a trigger instruction")?;
        let parsed = parse_instruction(self.rest, self.at, self.escape)?;
        match parsed.command {
            Command::OnBuild { .. } => {
                return Err(self.err("chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed".into()))
            }
            Command::From { .. } | Command::Maintainer(_) => {
                return Err(self.err(format!(
                    "{} isn't allowed as an ONBUILD trigger",
                    parsed.command.keyword()
                )))
            }
            _ => {}
        }
        Ok(Command::OnBuild {
            trigger: self.rest.to_string(),
            parsed: Box::new(parsed),
        })
    }
}

/// Leading `--name=value` / `--name` words, and the rest.
fn split_flags(mut rest: &str) -> (Vec<(String, String)>, &str) {
    let mut flags = Vec::new();
    while let Some(f) = rest.strip_prefix("--") {
        let (word, after) = match f.split_once(|c: char| c.is_whitespace()) {
            Some((w, a)) => (w, a.trim_start()),
            None => (f, ""),
        };
        if word.is_empty() {
            // A lone `--` ends the flags.
            rest = after;
            break;
        }
        let (name, value) = match word.split_once('=') {
            Some((n, v)) => (n, v),
            None => (word, ""),
        };
        flags.push((name.to_ascii_lowercase(), value.to_string()));
        rest = after;
    }
    (flags, rest)
}

fn json_array(rest: &str) -> Option<Vec<String>> {
    if !rest.starts_with('[') {
        return None;
    }
    serde_json::from_str::<Vec<String>>(rest).ok()
}

/// JSON form when the text is a JSON array of strings, else the shell form.
fn cmd_line(rest: &str) -> CmdLine {
    match json_array(rest) {
        Some(v) => CmdLine::Exec(v),
        None => CmdLine::Shell(rest.to_string()),
    }
}

fn json_or_words(rest: &str, escape: char) -> Vec<String> {
    json_array(rest).unwrap_or_else(|| words::split_raw(rest, escape))
}

/// `ENV`/`LABEL` arguments: `k=v k2="v 2"`, or the old `k value with spaces` form.
fn name_values(keyword: &str, rest: &str, escape: char) -> Result<Vec<(String, String)>, String> {
    let w = words::split_raw(rest, escape);
    let Some(first) = w.first() else {
        return Err(format!("{keyword} requires at least one argument"));
    };
    if !first.contains('=') {
        // The old form: one name, the rest of the line its value.
        return match rest.split_once(|c: char| c.is_whitespace()) {
            Some((k, v)) if !v.trim().is_empty() => Ok(vec![(k.to_string(), v.trim().to_string())]),
            _ => Err(format!(
                "{keyword} {rest} must have two arguments: a name and a value, or name=value"
            )),
        };
    }
    let mut out = Vec::new();
    for word in w {
        let Some((k, v)) = word.split_once('=') else {
            return Err(format!(
                "syntax error - can't find = in {word:?}. Must be of the form: name=value"
            ));
        };
        if k.is_empty() {
            return Err(format!("{keyword} names cannot be empty ({word:?})"));
        }
        out.push((k.to_string(), v.to_string()));
    }
    Ok(out)
}

/// Go's duration syntax, which Docker uses: `1h2m3.5s`, `500ms`, `10us`, `0`.
pub use pier_api::time::parse_go_duration as parse_duration;

#[cfg(test)]
mod tests;
