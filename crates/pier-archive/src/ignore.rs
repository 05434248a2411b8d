//! Path patterns: the globs of `COPY` sources and the rules of `.dockerignore`.
//!
//! A pattern matches a whole slash-separated path relative to the context root. `*`
//! matches any run of characters but `/`, `?` one character but `/`, `[a-z]` and `[^a-z]`
//! (or `[!a-z]`) a class, `\` makes the next character literal. In `.dockerignore` (not in
//! `COPY` sources) `**` matches any number of directories: `**/x`, `a/**/x`, `a/**`.
//!
//! `.dockerignore`: one pattern a line, trimmed; a `#` in the first column makes a comment
//! line (a UTF-8 BOM before it is dropped); a leading `!` makes an exception; a leading `/`
//! is ignored, and paths are cleaned (`./a//b` is `a/b`). A path
//! is excluded when the last pattern matching it or one of its parent directories is not
//! an exception.

/// Why a pattern is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid pattern {pattern:?}: {reason}")]
pub struct PatternError {
    pub pattern: String,
    pub reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Lit(char),
    /// `?`
    One,
    /// `*`
    Star,
    /// `**/` or a `**` inside a pattern: zero or more whole directories.
    Dirs,
    /// `**` at the end: anything.
    Rest,
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

/// A compiled glob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    toks: Vec<Tok>,
    text: String,
}

/// Does `s` hold glob characters (`*`, `?`, `[`), so that it must be matched rather than
/// looked up?
pub fn has_wildcards(s: &str) -> bool {
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                chars.next();
            }
            '*' | '?' | '[' => return true,
            _ => {}
        }
    }
    false
}

impl Glob {
    /// Compiles `pattern`; `doublestar` gives `**` its `.dockerignore` meaning (otherwise
    /// it is two `*`).
    pub fn new(pattern: &str, doublestar: bool) -> Result<Glob, PatternError> {
        let err = |reason| PatternError {
            pattern: pattern.to_string(),
            reason,
        };
        let chars: Vec<char> = pattern.chars().collect();
        let mut toks = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            i += 1;
            match c {
                '*' if doublestar && chars.get(i) == Some(&'*') => {
                    i += 1;
                    if chars.get(i) == Some(&'/') {
                        i += 1;
                    }
                    toks.push(if i >= chars.len() {
                        Tok::Rest
                    } else {
                        Tok::Dirs
                    });
                }
                '*' => toks.push(Tok::Star),
                '?' => toks.push(Tok::One),
                '\\' => match chars.get(i) {
                    Some(&n) => {
                        toks.push(Tok::Lit(n));
                        i += 1;
                    }
                    None => return Err(err("it ends with an escaping '\\'")),
                },
                '[' => {
                    let mut negated = false;
                    if matches!(chars.get(i), Some('^') | Some('!')) {
                        negated = true;
                        i += 1;
                    }
                    let mut ranges = Vec::new();
                    let mut first = true;
                    loop {
                        let Some(&c) = chars.get(i) else {
                            return Err(err("a '[' is not closed"));
                        };
                        i += 1;
                        if c == ']' && !first {
                            break;
                        }
                        first = false;
                        let lo = if c == '\\' {
                            let Some(&n) = chars.get(i) else {
                                return Err(err("a '[' is not closed"));
                            };
                            i += 1;
                            n
                        } else {
                            c
                        };
                        let hi = if chars.get(i) == Some(&'-') && chars.get(i + 1) != Some(&']') {
                            let Some(&h) = chars.get(i + 1) else {
                                return Err(err("a '[' is not closed"));
                            };
                            i += 2;
                            if h == '\\' {
                                let Some(&n) = chars.get(i) else {
                                    return Err(err("a '[' is not closed"));
                                };
                                i += 1;
                                n
                            } else {
                                h
                            }
                        } else {
                            lo
                        };
                        if hi < lo {
                            return Err(err("a character range is backwards"));
                        }
                        ranges.push((lo, hi));
                    }
                    toks.push(Tok::Class { negated, ranges });
                }
                c => toks.push(Tok::Lit(c)),
            }
        }
        Ok(Glob {
            toks,
            text: pattern.to_string(),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Does the glob match the whole of `path`?
    pub fn matches(&self, path: &str) -> bool {
        let s: Vec<char> = path.chars().collect();
        match_at(&self.toks, &s)
    }
}

fn match_at(toks: &[Tok], s: &[char]) -> bool {
    let Some((t, rest)) = toks.split_first() else {
        return s.is_empty();
    };
    match t {
        Tok::Lit(c) => s.first() == Some(c) && match_at(rest, &s[1..]),
        Tok::One => s.first().is_some_and(|c| *c != '/') && match_at(rest, &s[1..]),
        Tok::Class { negated, ranges } => match s.first() {
            Some(&c) if c != '/' => {
                let inside = ranges.iter().any(|(lo, hi)| *lo <= c && c <= *hi);
                inside != *negated && match_at(rest, &s[1..])
            }
            _ => false,
        },
        Tok::Star => {
            let mut i = 0;
            loop {
                if match_at(rest, &s[i..]) {
                    return true;
                }
                if i >= s.len() || s[i] == '/' {
                    return false;
                }
                i += 1;
            }
        }
        Tok::Dirs => {
            if match_at(rest, s) {
                return true;
            }
            (0..s.len()).any(|i| s[i] == '/' && match_at(rest, &s[i + 1..]))
        }
        Tok::Rest => true,
    }
}

/// Cleans a slash-separated path lexically: no empty or `.` parts, `..` resolved where
/// it can be. The empty path is `.`.
pub fn clean(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for p in path.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|l| *l != "..") {
                    parts.pop();
                } else if !path.starts_with('/') {
                    parts.push("..");
                }
            }
            p => parts.push(p),
        }
    }
    let joined = parts.join("/");
    match (path.starts_with('/'), joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".into(),
        (false, false) => joined,
    }
}

#[derive(Debug, Clone)]
struct Rule {
    exception: bool,
    glob: Glob,
}

/// The rules of a `.dockerignore` file.
#[derive(Debug, Clone, Default)]
pub struct IgnoreRules {
    rules: Vec<Rule>,
}

impl IgnoreRules {
    pub fn parse(text: &str) -> Result<IgnoreRules, PatternError> {
        let mut rules = Vec::new();
        // As Docker reads it: a UTF-8 BOM is dropped, a `#` in the first column makes a
        // comment (after spaces it is a pattern), then the line is trimmed.
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        for line in text.lines() {
            if line.starts_with('#') {
                continue;
            }
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let (exception, pattern) = match line.strip_prefix('!') {
                Some(p) => (true, p.trim()),
                None => (false, line),
            };
            if pattern.is_empty() {
                return Err(PatternError {
                    pattern: line.to_string(),
                    reason: "an exception needs a pattern after '!'",
                });
            }
            let cleaned = clean(pattern);
            let cleaned = cleaned.strip_prefix('/').unwrap_or(&cleaned);
            let cleaned = if cleaned.is_empty() { "." } else { cleaned };
            rules.push(Rule {
                exception,
                glob: Glob::new(cleaned, true)?,
            });
        }
        Ok(IgnoreRules { rules })
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Whether some rule is an exception (`!pattern`): then an excluded directory may
    /// still hold included files, and must be looked into.
    pub fn has_exceptions(&self) -> bool {
        self.rules.iter().any(|r| r.exception)
    }

    /// Is `path` (relative, slash-separated) excluded from the context?
    pub fn is_excluded(&self, path: &str) -> bool {
        let path = clean(path);
        let parents: Vec<&str> = path.split('/').collect();
        let mut excluded = false;
        for r in &self.rules {
            let mut hit = r.glob.matches(&path);
            if !hit && parents.len() > 1 {
                hit = (1..parents.len()).any(|i| r.glob.matches(&parents[..i].join("/")));
            }
            if hit {
                excluded = !r.exception;
            }
        }
        excluded
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, s: &str) -> bool {
        Glob::new(p, true).unwrap().matches(s)
    }

    #[test]
    fn globs() {
        assert!(m("*.txt", "a.txt"));
        assert!(!m("*.txt", "d/a.txt"));
        assert!(m("d/*.txt", "d/a.txt"));
        assert!(m("?.txt", "a.txt"));
        assert!(!m("?.txt", "ab.txt"));
        assert!(m("[ab].c", "b.c"));
        assert!(!m("[^ab].c", "b.c"));
        assert!(m("[!ab].c", "x.c"));
        assert!(m("[a-c]x", "bx"));
        assert!(m("a\\*b", "a*b"));
        assert!(!m("a\\*b", "axb"));
        assert!(m("**/*.go", "a.go"));
        assert!(m("**/*.go", "x/y/a.go"));
        assert!(m("a/**/b", "a/b"));
        assert!(m("a/**/b", "a/x/y/b"));
        assert!(!m("a/**/b", "a/xb"));
        assert!(m("a/**", "a/x/y"));
        assert!(m("**", "anything/at/all"));
        assert!(!m("*", "a/b"));
        // Without doublestar, ** is two stars.
        assert!(!Glob::new("**/x", false).unwrap().matches("a/b/x"));
        assert!(Glob::new("**/x", false).unwrap().matches("a/x"));
        assert!(Glob::new("[a", true).is_err());
        assert!(Glob::new("x\\", true).is_err());
        assert!(has_wildcards("a/*.txt"));
        assert!(!has_wildcards("a/b\\*"));
    }

    #[test]
    fn cleaning() {
        assert_eq!(clean("./a//b/"), "a/b");
        assert_eq!(clean("a/../b"), "b");
        assert_eq!(clean("../x"), "../x");
        assert_eq!(clean("/../x"), "/x");
        assert_eq!(clean(""), ".");
        assert_eq!(clean("a/.."), ".");
    }

    #[test]
    fn dockerignore_rules() {
        let r = IgnoreRules::parse(
            "# comment\n\n*.log\n!keep.log\nbuild/\n/secret\n**/*.tmp\ndocs\n!docs/README.md\n",
        )
        .unwrap();
        assert!(r.is_excluded("x.log"));
        assert!(!r.is_excluded("keep.log"));
        assert!(!r.is_excluded("sub/x.log"), "* does not cross /");
        assert!(r.is_excluded("build"));
        assert!(r.is_excluded("build/out/bin"), "a parent matches");
        assert!(r.is_excluded("secret"));
        assert!(r.is_excluded("a/b/c.tmp"));
        assert!(r.is_excluded("c.tmp"));
        assert!(r.is_excluded("docs/guide.md"));
        assert!(!r.is_excluded("docs/README.md"));
        assert!(!r.is_excluded("src/main.rs"));
        assert!(r.has_exceptions());
        // The last matching rule wins.
        let r = IgnoreRules::parse("!a\na").unwrap();
        assert!(r.is_excluded("a"));
        assert!(IgnoreRules::parse("!").is_err());
        // As Docker: only a `#` in the first column comments; blank lines and a BOM go.
        let r = IgnoreRules::parse("\u{feff}#c\n  #x  \n\t\n   \n ! #x/keep\n").unwrap();
        assert!(r.is_excluded("#x"));
        assert!(!r.is_excluded("#c"));
        assert!(!r.is_excluded("#x/keep"));
        assert!(!IgnoreRules::parse("").unwrap().has_exceptions());
    }
}
