//! `--format` templates: a small engine for the part of Go's text/template that Docker's
//! `--format` users write (`{{.Names}}`, `{{json .}}`, `{{range .X}}..{{end}}`, `{{if}}`,
//! `{{join .X ","}}`, `{{index .M "k"}}`, `{{lower}}`, `{{upper}}`, ...), evaluated over
//! serde_json values. Field names are Docker's: `.ID` finds `id`, `.CreatedAt` finds
//! `created_at` (a key matches when it equals the name with case and underscores ignored),
//! and a caller may add aliases (`Names` for `name`). Errors use Go's wording:
//! `template: :1: function "x" not defined`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::Value;

/// A bad template or a failed evaluation, worded as Go's text/template words it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError(pub String);

impl std::fmt::Display for TemplateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TemplateError {}

fn err<T>(msg: impl std::fmt::Display) -> Result<T, TemplateError> {
    Err(TemplateError(format!("template: :1: {msg}")))
}

#[derive(Debug, Clone, PartialEq)]
enum Arg {
    Dot,
    Field(Box<Arg>, Vec<String>),
    Str(String),
    Num(f64),
    Bool(bool),
    Nil,
    Func(String),
    Pipe(Pipeline),
}

/// Commands separated by `|`: the value of each goes as the last argument of the next.
#[derive(Debug, Clone, PartialEq)]
struct Pipeline(Vec<Vec<Arg>>);

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Text(String),
    Action(Pipeline),
    If(Pipeline, Vec<Node>, Vec<Node>),
    Range(Pipeline, Vec<Node>, Vec<Node>),
    With(Pipeline, Vec<Node>, Vec<Node>),
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    nodes: Vec<Node>,
}

const FUNCS: &[&str] = &[
    "json", "join", "lower", "upper", "title", "index", "len", "split", "truncate", "pad",
    "println", "print", "printf", "eq", "ne", "lt", "le", "gt", "ge", "not", "and", "or",
];

/// Field names Docker uses that are not Pier's key with case and underscores ignored.
pub type Aliases = &'static [(&'static str, &'static str)];

impl Template {
    pub fn parse(src: &str) -> Result<Template, TemplateError> {
        let mut items = lex(src)?;
        items.reverse();
        let (nodes, end) = parse_list(&mut items)?;
        if let Some(e) = end {
            return err(format!("unexpected {{{{{e}}}}}"));
        }
        Ok(Template { nodes })
    }

    /// Renders the template with `.` as `dot`.
    pub fn render(&self, dot: &Value, aliases: Aliases) -> Result<String, TemplateError> {
        let mut out = String::new();
        let cx = Cx { aliases };
        cx.exec(&self.nodes, dot, &mut out)?;
        Ok(out)
    }

    /// The field names of a `table` template's actions, for its header row: `{{.ID}}`
    /// gives `ID`, `{{json .Labels}}` gives `Labels`.
    pub fn header_fields(&self) -> Vec<Option<String>> {
        self.nodes
            .iter()
            .filter_map(|n| match n {
                Node::Action(Pipeline(cmds)) => {
                    Some(cmds.iter().rev().flatten().find_map(|a| match a {
                        Arg::Field(_, path) => path.last().cloned(),
                        _ => None,
                    }))
                }
                _ => None,
            })
            .collect()
    }

    /// Renders the header row: each action replaced by the header its field has.
    pub fn render_header(&self, header: impl Fn(&str) -> String) -> String {
        let mut out = String::new();
        let mut fields = self.header_fields().into_iter();
        for n in &self.nodes {
            match n {
                Node::Text(t) => out.push_str(t),
                Node::Action(_) => {
                    if let Some(Some(f)) = fields.next() {
                        out.push_str(&header(&f));
                    }
                }
                _ => {}
            }
        }
        out
    }
}

#[derive(Debug)]
enum Item {
    Text(String),
    Action(String),
}

fn lex(src: &str) -> Result<Vec<Item>, TemplateError> {
    let mut items = Vec::new();
    let mut rest = src;
    while let Some(start) = rest.find("{{") {
        let mut text = &rest[..start];
        let after = &rest[start + 2..];
        let (after, trim_left) = match after.strip_prefix("- ") {
            Some(a) => (a, true),
            None => (after, false),
        };
        if trim_left {
            text = text.trim_end();
        }
        if !text.is_empty() {
            items.push(Item::Text(text.to_string()));
        }
        let end = find_close(after)
            .ok_or_else(|| TemplateError("template: :1: unclosed action".into()))?;
        let mut inner = &after[..end];
        rest = &after[end + 2..];
        if let Some(i) = inner.strip_suffix(" -") {
            inner = i;
            rest = rest.trim_start();
        }
        items.push(Item::Action(inner.trim().to_string()));
    }
    if !rest.is_empty() {
        items.push(Item::Text(rest.to_string()));
    }
    Ok(items)
}

/// The `}}` that closes an action, skipping quoted strings.
fn find_close(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut quote: Option<u8> = None;
    while i < b.len() {
        match quote {
            Some(q) => {
                if b[i] == b'\\' && q == b'"' {
                    i += 1;
                } else if b[i] == q {
                    quote = None;
                }
            }
            None => {
                if b[i] == b'"' || b[i] == b'`' {
                    quote = Some(b[i]);
                } else if b[i] == b'}' && b.get(i + 1) == Some(&b'}') {
                    return Some(i);
                }
            }
        }
        i += 1;
    }
    None
}

/// Parses nodes up to an `{{end}}` or `{{else ...}}`, which it returns.
fn parse_list(items: &mut Vec<Item>) -> Result<(Vec<Node>, Option<String>), TemplateError> {
    let mut nodes = Vec::new();
    while let Some(item) = items.pop() {
        match item {
            Item::Text(t) => nodes.push(Node::Text(t)),
            Item::Action(a) => {
                let (word, rest) = match a.split_once(char::is_whitespace) {
                    Some((w, r)) => (w, r.trim()),
                    None => (a.as_str(), ""),
                };
                match word {
                    "end" => return Ok((nodes, Some("end".into()))),
                    "else" => return Ok((nodes, Some(a.clone()))),
                    "if" | "range" | "with" => nodes.push(parse_block(word, rest, items)?),
                    _ if a.starts_with("/*") => {}
                    _ => nodes.push(Node::Action(parse_pipeline(&a)?)),
                }
            }
        }
    }
    Ok((nodes, None))
}

fn parse_block(word: &str, rest: &str, items: &mut Vec<Item>) -> Result<Node, TemplateError> {
    if rest.is_empty() {
        return err(format!("missing value for {word}"));
    }
    let pipe = parse_pipeline(rest)?;
    let (body, end) = parse_list(items)?;
    let otherwise = match end.as_deref() {
        None => return err(format!("unexpected EOF in {word}")),
        Some("end") => Vec::new(),
        Some(e) => {
            let cond = e["else".len()..].trim();
            if let Some(c) = cond.strip_prefix("if ") {
                // `{{else if X}}` is an `{{if}}` inside the else, sharing its `{{end}}`.
                vec![parse_block("if", c.trim(), items)?]
            } else if !cond.is_empty() {
                return err(format!("unexpected {cond:?} in else"));
            } else {
                let (o, end) = parse_list(items)?;
                if end.as_deref() != Some("end") {
                    return err(format!("expected end; found {end:?} in {word}"));
                }
                o
            }
        }
    };
    Ok(match word {
        "if" => Node::If(pipe, body, otherwise),
        "range" => Node::Range(pipe, body, otherwise),
        _ => Node::With(pipe, body, otherwise),
    })
}

fn parse_pipeline(src: &str) -> Result<Pipeline, TemplateError> {
    let toks = tokenize(src)?;
    let mut pos = 0;
    let p = pipeline_of(&toks, &mut pos)?;
    if pos < toks.len() {
        return err(format!("unexpected {:?} in command", toks[pos]));
    }
    Ok(p)
}

fn pipeline_of(toks: &[String], pos: &mut usize) -> Result<Pipeline, TemplateError> {
    let mut cmds = vec![Vec::new()];
    while *pos < toks.len() {
        let t = &toks[*pos];
        *pos += 1;
        match t.as_str() {
            ")" => {
                *pos -= 1;
                break;
            }
            "|" => cmds.push(Vec::new()),
            "(" => {
                let inner = pipeline_of(toks, pos)?;
                if toks.get(*pos).map(String::as_str) != Some(")") {
                    return err("unclosed left paren");
                }
                *pos += 1;
                let arg = match toks.get(*pos) {
                    Some(f) if f.starts_with('.') && f.len() > 1 => {
                        *pos += 1;
                        Arg::Field(Box::new(Arg::Pipe(inner)), split_fields(f))
                    }
                    _ => Arg::Pipe(inner),
                };
                cmds.last_mut().expect("one").push(arg);
            }
            _ => cmds.last_mut().expect("one").push(operand(t)?),
        }
    }
    if cmds.iter().any(Vec::is_empty) {
        return err("missing value for command");
    }
    Ok(Pipeline(cmds))
}

fn split_fields(t: &str) -> Vec<String> {
    t.split('.')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

fn operand(t: &str) -> Result<Arg, TemplateError> {
    Ok(match t {
        "." => Arg::Dot,
        "true" => Arg::Bool(true),
        "false" => Arg::Bool(false),
        "nil" => Arg::Nil,
        _ if t.starts_with('.') => Arg::Field(Box::new(Arg::Dot), split_fields(t)),
        _ if t.starts_with('"') => Arg::Str(unquote(t)?),
        _ if t.starts_with('`') => Arg::Str(t.trim_matches('`').to_string()),
        _ if t.starts_with('$') => return err(format!("undefined variable {t:?}")),
        _ if t.starts_with(|c: char| c.is_ascii_digit() || c == '-') => Arg::Num(
            t.parse()
                .or_else(|_| err(format!("bad number syntax: {t:?}")))?,
        ),
        _ if FUNCS.contains(&t) => Arg::Func(t.to_string()),
        _ => return err(format!("function {t:?} not defined")),
    })
}

fn unquote(t: &str) -> Result<String, TemplateError> {
    let inner = &t[1..t.len() - 1];
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some('\\') => out.push('\\'),
                Some('"') => out.push('"'),
                other => return err(format!("invalid syntax: escape {other:?}")),
            }
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

fn tokenize(src: &str) -> Result<Vec<String>, TemplateError> {
    let mut toks = Vec::new();
    let b: Vec<char> = src.chars().collect();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '|' || c == '(' || c == ')' {
            toks.push(c.to_string());
            i += 1;
        } else if c == '"' || c == '`' {
            let start = i;
            i += 1;
            while i < b.len() && b[i] != c {
                if c == '"' && b[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            if i >= b.len() {
                return err("unterminated quoted string");
            }
            i += 1;
            toks.push(b[start..i].iter().collect());
        } else {
            let start = i;
            while i < b.len() && !b[i].is_whitespace() && !"|()\"".contains(b[i]) {
                i += 1;
            }
            toks.push(b[start..i].iter().collect());
        }
    }
    Ok(toks)
}

struct Cx {
    aliases: Aliases,
}

/// Go's truth: false, 0, nil, empty string, list or map are false.
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// A value as Go's text/template prints it.
pub fn to_text(v: &Value) -> String {
    match v {
        Value::Null => "<no value>".into(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Array(a) => format!("[{}]", a.iter().map(to_text).collect::<Vec<_>>().join(" ")),
        Value::Object(o) => format!(
            "map[{}]",
            o.iter()
                .map(|(k, v)| format!("{k}:{}", to_text(v)))
                .collect::<Vec<_>>()
                .join(" ")
        ),
    }
}

fn norm(s: &str) -> String {
    s.chars()
        .filter(|c| *c != '_' && *c != '-')
        .flat_map(char::to_lowercase)
        .collect()
}

impl Cx {
    fn exec(&self, nodes: &[Node], dot: &Value, out: &mut String) -> Result<(), TemplateError> {
        for n in nodes {
            match n {
                Node::Text(t) => out.push_str(t),
                Node::Action(p) => out.push_str(&to_text(&self.pipe(p, dot)?)),
                Node::If(p, body, other) => {
                    let b = if truthy(&self.pipe(p, dot)?) {
                        body
                    } else {
                        other
                    };
                    self.exec(b, dot, out)?;
                }
                Node::With(p, body, other) => {
                    let v = self.pipe(p, dot)?;
                    if truthy(&v) {
                        self.exec(body, &v, out)?;
                    } else {
                        self.exec(other, dot, out)?;
                    }
                }
                Node::Range(p, body, other) => {
                    let items: Vec<Value> = match self.pipe(p, dot)? {
                        Value::Array(a) => a,
                        Value::Object(o) => o.into_iter().map(|(_, v)| v).collect(),
                        Value::Null => Vec::new(),
                        Value::Number(n) => (0..n.as_u64().unwrap_or(0)).map(Value::from).collect(),
                        v => return err(format!("range can't iterate over {}", to_text(&v))),
                    };
                    if items.is_empty() {
                        self.exec(other, dot, out)?;
                    }
                    for item in &items {
                        self.exec(body, item, out)?;
                    }
                }
            }
        }
        Ok(())
    }

    fn pipe(&self, p: &Pipeline, dot: &Value) -> Result<Value, TemplateError> {
        let mut last: Option<Value> = None;
        for cmd in &p.0 {
            last = Some(self.command(cmd, dot, last.take())?);
        }
        Ok(last.unwrap_or(Value::Null))
    }

    fn command(
        &self,
        cmd: &[Arg],
        dot: &Value,
        piped: Option<Value>,
    ) -> Result<Value, TemplateError> {
        let mut args = Vec::new();
        for a in &cmd[1..] {
            args.push(self.arg(a, dot)?);
        }
        args.extend(piped);
        match &cmd[0] {
            Arg::Func(f) => call(f, args),
            // `.Label "k"`: a field followed by arguments indexes the map it names, as
            // Docker's `Label` method does.
            first => {
                let mut v = self.arg(first, dot)?;
                for a in &args {
                    v = index(&v, a)?;
                }
                Ok(v)
            }
        }
    }

    fn arg(&self, a: &Arg, dot: &Value) -> Result<Value, TemplateError> {
        Ok(match a {
            Arg::Dot => dot.clone(),
            Arg::Str(s) => Value::String(s.clone()),
            Arg::Num(n) => serde_json::Number::from_f64(*n)
                .map(|n| {
                    if n.as_f64().is_some_and(|f| f.fract() == 0.0) {
                        Value::from(n.as_f64().unwrap_or(0.0) as i64)
                    } else {
                        Value::Number(n)
                    }
                })
                .unwrap_or(Value::Null),
            Arg::Bool(b) => Value::Bool(*b),
            Arg::Nil => Value::Null,
            Arg::Func(f) => call(f, Vec::new())?,
            Arg::Pipe(p) => self.pipe(p, dot)?,
            Arg::Field(base, path) => {
                let mut v = self.arg(base, dot)?;
                for name in path {
                    v = self.field(&v, name)?;
                }
                v
            }
        })
    }

    fn field(&self, v: &Value, name: &str) -> Result<Value, TemplateError> {
        match v {
            Value::Object(o) => {
                if let Some(x) = o.get(name) {
                    return Ok(x.clone());
                }
                let wanted = self
                    .aliases
                    .iter()
                    .find(|(docker, _)| *docker == name)
                    .map_or(name, |(_, pier)| pier);
                if let Some(x) = o.get(wanted) {
                    return Ok(x.clone());
                }
                let n = norm(wanted);
                Ok(o.iter()
                    .find(|(k, _)| norm(k) == n)
                    .map(|(_, x)| x.clone())
                    .unwrap_or(Value::Null))
            }
            Value::Null => Ok(Value::Null),
            _ => err(format!(
                "executing \"\" at <.{name}>: can't evaluate field {name} in type {}",
                type_name(v)
            )),
        }
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "<nil>",
        Value::Bool(_) => "bool",
        Value::Number(_) => "float64",
        Value::String(_) => "string",
        Value::Array(_) => "[]interface {}",
        Value::Object(_) => "map[string]interface {}",
    }
}

fn index(v: &Value, key: &Value) -> Result<Value, TemplateError> {
    Ok(match (v, key) {
        (Value::Object(o), Value::String(k)) => o.get(k).cloned().unwrap_or(Value::Null),
        (Value::Array(a), Value::Number(n)) => {
            let i = n.as_u64().unwrap_or(u64::MAX) as usize;
            match a.get(i) {
                Some(x) => x.clone(),
                None => return err(format!("error calling index: index out of range: {n}")),
            }
        }
        (Value::Null, _) => Value::Null,
        _ => {
            return err(format!(
                "error calling index: cannot index {} with {}",
                type_name(v),
                type_name(key)
            ))
        }
    })
}

fn want(f: &str, args: &[Value], n: usize) -> Result<(), TemplateError> {
    if args.len() != n {
        return err(format!(
            "wrong number of args for {f}: want {n} got {}",
            args.len()
        ));
    }
    Ok(())
}

fn cmp(a: &Value, b: &Value) -> Option<std::cmp::Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64()?.partial_cmp(&y.as_f64()?),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

fn call(f: &str, a: Vec<Value>) -> Result<Value, TemplateError> {
    let text = |i: usize| a.get(i).map(to_text).unwrap_or_default();
    Ok(match f {
        "json" => {
            want(f, &a, 1)?;
            Value::String(serde_json::to_string(&a[0]).expect("json"))
        }
        "join" => {
            want(f, &a, 2)?;
            match &a[0] {
                Value::Array(items) => {
                    Value::String(items.iter().map(to_text).collect::<Vec<_>>().join(&text(1)))
                }
                Value::Null => Value::String(String::new()),
                v => return err(format!("error calling join: cannot join {}", type_name(v))),
            }
        }
        "lower" | "upper" | "title" => {
            want(f, &a, 1)?;
            let s = text(0);
            Value::String(match f {
                "lower" => s.to_lowercase(),
                "upper" => s.to_uppercase(),
                _ => {
                    let mut c = s.chars();
                    c.next()
                        .map(|h| h.to_uppercase().chain(c).collect())
                        .unwrap_or_default()
                }
            })
        }
        "split" => {
            want(f, &a, 2)?;
            Value::Array(text(0).split(&text(1)).map(Value::from).collect())
        }
        "truncate" => {
            want(f, &a, 2)?;
            let n = a[1].as_u64().unwrap_or(0) as usize;
            Value::String(text(0).chars().take(n).collect())
        }
        "pad" => {
            want(f, &a, 3)?;
            let l = a[1].as_u64().unwrap_or(0) as usize;
            let r = a[2].as_u64().unwrap_or(0) as usize;
            Value::String(format!("{}{}{}", " ".repeat(l), text(0), " ".repeat(r)))
        }
        "index" => {
            if a.is_empty() {
                return err("wrong number of args for index: want at least 1 got 0");
            }
            let mut v = a[0].clone();
            for k in &a[1..] {
                v = index(&v, k)?;
            }
            v
        }
        "len" => {
            want(f, &a, 1)?;
            Value::from(match &a[0] {
                Value::Array(x) => x.len(),
                Value::Object(x) => x.len(),
                Value::String(x) => x.len(),
                v => return err(format!("error calling len: len of type {}", type_name(v))),
            })
        }
        "print" | "println" => {
            let mut s = a.iter().map(to_text).collect::<Vec<_>>().join(" ");
            if f == "println" {
                s.push('\n');
            }
            Value::String(s)
        }
        "printf" => {
            if a.is_empty() {
                return err("wrong number of args for printf: want at least 1 got 0");
            }
            Value::String(printf(&text(0), &a[1..]))
        }
        "eq" | "ne" => {
            if a.len() < 2 {
                return err(format!(
                    "wrong number of args for {f}: want 2 got {}",
                    a.len()
                ));
            }
            let eq = a[1..]
                .iter()
                .any(|x| x == &a[0] || cmp(x, &a[0]) == Some(std::cmp::Ordering::Equal));
            Value::Bool(if f == "eq" { eq } else { !eq })
        }
        "lt" | "le" | "gt" | "ge" => {
            want(f, &a, 2)?;
            let o = cmp(&a[0], &a[1]).ok_or_else(|| {
                TemplateError(format!(
                    "template: :1: error calling {f}: incompatible types for comparison"
                ))
            })?;
            use std::cmp::Ordering::*;
            Value::Bool(match f {
                "lt" => o == Less,
                "le" => o != Greater,
                "gt" => o == Greater,
                _ => o != Less,
            })
        }
        "not" => {
            want(f, &a, 1)?;
            Value::Bool(!truthy(&a[0]))
        }
        "and" => a
            .iter()
            .find(|v| !truthy(v))
            .or(a.last())
            .cloned()
            .unwrap_or(Value::Null),
        "or" => a
            .iter()
            .find(|v| truthy(v))
            .or(a.last())
            .cloned()
            .unwrap_or(Value::Null),
        _ => return err(format!("function {f:?} not defined")),
    })
}

/// `%s`, `%d`, `%v`, `%q` and `%%`: what `--format` users put in printf.
fn printf(fmt: &str, args: &[Value]) -> String {
    let mut out = String::new();
    let mut args = args.iter();
    let mut chars = fmt.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        // Width, e.g. %-10s.
        let mut spec = String::new();
        while let Some(&d) = chars.peek() {
            if d == '-' || d.is_ascii_digit() {
                spec.push(d);
                chars.next();
            } else {
                break;
            }
        }
        match chars.next() {
            Some('%') => out.push('%'),
            Some(v @ ('s' | 'd' | 'v' | 'q')) => {
                let a = args
                    .next()
                    .map(to_text)
                    .unwrap_or_else(|| "%!v(MISSING)".into());
                let a = if v == 'q' { format!("{a:?}") } else { a };
                let width: usize = spec.trim_start_matches('-').parse().unwrap_or(0);
                if spec.starts_with('-') {
                    let _ = write!(out, "{a:<width$}");
                } else {
                    let _ = write!(out, "{a:>width$}");
                }
            }
            Some(o) => {
                out.push('%');
                out.push_str(&spec);
                out.push(o);
            }
            None => out.push('%'),
        }
    }
    out
}

/// Docker's table headers for the field names it knows: `ID` is `CONTAINER ID` in `ps`
/// (the caller says which object an ID names), `CreatedAt` is `CREATED AT`.
pub fn docker_header(field: &str, id_header: &str) -> String {
    let known: BTreeMap<&str, &str> = [
        ("ID", id_header),
        ("CreatedAt", "CREATED AT"),
        ("CreatedSince", "CREATED"),
        ("RunningFor", "CREATED"),
        ("MountPoint", "MOUNTPOINT"),
        ("BlockIO", "BLOCK I/O"),
        ("NetIO", "NET I/O"),
        ("MemUsage", "MEM USAGE / LIMIT"),
        ("MemPerc", "MEM %"),
        ("CPUPerc", "CPU %"),
        ("PIDs", "PIDS"),
        ("LocalVolumes", "LOCAL VOLUMES"),
        ("CreatedBy", "CREATED BY"),
    ]
    .into_iter()
    .collect();
    if let Some(h) = known.get(field) {
        return h.to_string();
    }
    // CamelCase words apart, upper-cased: `Repository` -> REPOSITORY.
    let mut out = String::new();
    let chars: Vec<char> = field.chars().collect();
    for (i, c) in chars.iter().enumerate() {
        let next_lower = chars.get(i + 1).is_some_and(|n| n.is_lowercase());
        if i > 0 && c.is_uppercase() && (chars[i - 1].is_lowercase() || next_lower) {
            out.push(' ');
        }
        out.extend(c.to_uppercase());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn r(t: &str, v: &Value) -> String {
        Template::parse(t)
            .and_then(|t| t.render(v, &[("Names", "name")]))
            .unwrap_or_else(|e| format!("ERR {e}"))
    }

    #[test]
    fn fields_by_docker_names() {
        let v = json!({"id": "abc", "name": "web", "created_at": "x", "state": {"status": "running", "running": true}});
        assert_eq!(r("{{.ID}} {{.Names}}", &v), "abc web");
        assert_eq!(r("{{.CreatedAt}}", &v), "x");
        assert_eq!(
            r("{{.State.Status}} {{.State.Running}}", &v),
            "running true"
        );
        assert_eq!(r("{{.Missing}}", &v), "<no value>");
        assert_eq!(
            r("{{.State.Status.X}}", &v),
            "ERR template: :1: executing \"\" at <.X>: can't evaluate field X in type string"
        );
    }

    #[test]
    fn functions() {
        let v = json!({"labels": {"a": "1", "b": "2"}, "list": ["x", "y"], "s": "Hi"});
        assert_eq!(r("{{json .Labels}}", &v), r#"{"a":"1","b":"2"}"#);
        assert_eq!(r(r#"{{index .Labels "b"}}"#, &v), "2");
        assert_eq!(r(r#"{{.Labels "a"}}"#, &v), "1");
        assert_eq!(r(r#"{{join .List ","}}"#, &v), "x,y");
        assert_eq!(r("{{lower .S}}{{upper .S}}{{.S | lower}}", &v), "hiHIhi");
        assert_eq!(r("{{len .List}}", &v), "2");
        assert_eq!(r(r#"{{printf "%-4s|" .S}}"#, &v), "Hi  |");
        assert_eq!(r("{{index .List 1}}", &v), "y");
        assert_eq!(r("{{json .}}", &json!([1, "a"])), r#"[1,"a"]"#);
    }

    #[test]
    fn control_flow() {
        let v = json!({"list": ["x", "y"], "on": true, "off": false, "n": 3});
        assert_eq!(r("{{range .List}}[{{.}}]{{end}}", &v), "[x][y]");
        assert_eq!(r("{{range .None}}x{{else}}empty{{end}}", &v), "empty");
        assert_eq!(r("{{if .On}}yes{{else}}no{{end}}", &v), "yes");
        assert_eq!(r("{{if .Off}}a{{else if .On}}b{{else}}c{{end}}", &v), "b");
        assert_eq!(r("{{if eq .N 3}}three{{end}}", &v), "three");
        assert_eq!(r("{{if and .On (not .Off)}}ok{{end}}", &v), "ok");
        assert_eq!(r("{{with .List}}{{index . 0}}{{end}}", &v), "x");
        assert_eq!(r("a {{- \" b \" -}} c", &v), "a b c");
    }

    #[test]
    fn errors_in_go_words() {
        let v = json!({});
        assert_eq!(
            r("{{nosuch .}}", &v),
            "ERR template: :1: function \"nosuch\" not defined"
        );
        assert_eq!(
            r("{{if .X}}a", &v),
            "ERR template: :1: unexpected EOF in if"
        );
        assert_eq!(r("{{.X", &v), "ERR template: :1: unclosed action");
        assert_eq!(r("{{end}}", &v), "ERR template: :1: unexpected {{end}}");
        assert_eq!(
            r("{{json}}", &v),
            "ERR template: :1: wrong number of args for json: want 1 got 0"
        );
    }

    #[test]
    fn headers() {
        let t = Template::parse("{{.ID}}\t{{.Names}}\t{{json .Labels}}\t{{.CreatedAt}}").unwrap();
        assert_eq!(
            t.render_header(|f| docker_header(f, "CONTAINER ID")),
            "CONTAINER ID\tNAMES\tLABELS\tCREATED AT"
        );
        assert_eq!(docker_header("MountPoint", "X"), "MOUNTPOINT");
        assert_eq!(docker_header("IPAddress", "X"), "IP ADDRESS");
    }
}
