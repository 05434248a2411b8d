//! Variable substitution and word splitting in Dockerfile arguments, with the rules of
//! Docker's builder (not a full shell):
//!
//! - `'...'` is literal; `"..."` expands variables, and the escape character in it only
//!   escapes `"`, `$` and itself; outside quotes the escape character makes the next
//!   character literal. Quotes are removed.
//! - `$NAME`, `${NAME}`; `${NAME:-word}` (`word` when unset or empty), `${NAME-word}` (when
//!   unset), `${NAME:+word}` (`word` when set and not empty), `${NAME+word}` (when set),
//!   `${NAME:?message}` and `${NAME?message}` (an error when unset). `word` is expanded
//!   in turn. A `$` not followed by a name is kept.
//! - [`expand`] keeps whitespace (one word: `ENV`, `WORKDIR`, ...); [`expand_words`]
//!   splits on whitespace outside quotes, and an expanded value is never split.

/// Looks a variable up: `None` when it is not set.
pub type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Why a word could not be expanded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WordError {
    #[error("unexpected end of statement while looking for matching {0}")]
    Unterminated(&'static str),
    #[error("{name}: {message}")]
    Required { name: String, message: String },
    #[error(
        "bad substitution in {0:?}: use ${{NAME}}, ${{NAME:-default}} or ${{NAME:+alternative}}"
    )]
    BadSubstitution(String),
}

/// Expands one word, keeping whitespace (Docker's `ProcessWord`).
pub fn expand(word: &str, escape: char, env: Lookup<'_>) -> Result<String, WordError> {
    let mut l = Lexer::new(word, escape, env, false);
    let (mut words, _) = l.run(None)?;
    Ok(words.pop().map(|w| w.text).unwrap_or_default())
}

/// Expands and splits on whitespace outside quotes (Docker's `ProcessWords`).
pub fn expand_words(text: &str, escape: char, env: Lookup<'_>) -> Result<Vec<String>, WordError> {
    let mut l = Lexer::new(text, escape, env, true);
    Ok(l.run(None)?.0.into_iter().map(|w| w.text).collect())
}

/// Splits on whitespace outside quotes without expanding or removing anything: quotes and
/// escapes stay for a later [`expand`] (Docker's parser does this for `ENV`, `LABEL`, `ARG`).
pub fn split_raw(text: &str, escape: char) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match quote {
            Some(q) => {
                cur.push(c);
                if c == escape && q == '"' {
                    if let Some(n) = chars.next() {
                        cur.push(n);
                    }
                } else if c == q {
                    quote = None;
                }
            }
            None if c.is_whitespace() => {
                if !cur.is_empty() {
                    words.push(std::mem::take(&mut cur));
                }
            }
            None => {
                cur.push(c);
                if c == escape {
                    if let Some(n) = chars.next() {
                        cur.push(n);
                    }
                } else if c == '"' || c == '\'' {
                    quote = Some(c);
                }
            }
        }
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    words
}

struct Word {
    text: String,
}

struct Lexer<'a> {
    chars: Vec<char>,
    pos: usize,
    escape: char,
    env: Lookup<'a>,
    split: bool,
    source: &'a str,
}

fn is_name_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

impl<'a> Lexer<'a> {
    fn new(text: &'a str, escape: char, env: Lookup<'a>, split: bool) -> Self {
        Lexer {
            chars: text.chars().collect(),
            pos: 0,
            escape,
            env,
            split,
            source: text,
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        if c.is_some() {
            self.pos += 1;
        }
        c
    }

    /// Reads up to `stop` (consumed) or the end. Splits only at the top level.
    fn run(&mut self, stop: Option<char>) -> Result<(Vec<Word>, bool), WordError> {
        let split = self.split && stop.is_none();
        let mut words = Vec::new();
        let mut cur = String::new();
        let mut has = false;
        let mut found = false;
        while let Some(c) = self.peek() {
            if Some(c) == stop {
                self.pos += 1;
                found = true;
                break;
            }
            self.pos += 1;
            match c {
                '\'' => {
                    cur.push_str(&self.single_quoted()?);
                    has = true;
                }
                '"' => {
                    cur.push_str(&self.double_quoted()?);
                    has = true;
                }
                '$' => {
                    let v = self.dollar()?;
                    has |= !v.is_empty();
                    cur.push_str(&v);
                }
                c if c == self.escape => {
                    // An escape at the very end is dropped.
                    if let Some(n) = self.next() {
                        cur.push(n);
                        has = true;
                    }
                }
                c if split && c.is_whitespace() => {
                    if has {
                        words.push(Word {
                            text: std::mem::take(&mut cur),
                        });
                        has = false;
                    }
                }
                c => {
                    cur.push(c);
                    has = true;
                }
            }
        }
        if has || (!split && words.is_empty()) {
            words.push(Word { text: cur });
        }
        Ok((words, found))
    }

    fn single_quoted(&mut self) -> Result<String, WordError> {
        let mut out = String::new();
        loop {
            match self.next() {
                None => return Err(WordError::Unterminated("single-quote")),
                Some('\'') => return Ok(out),
                Some(c) => out.push(c),
            }
        }
    }

    fn double_quoted(&mut self) -> Result<String, WordError> {
        let mut out = String::new();
        loop {
            match self.next() {
                None => return Err(WordError::Unterminated("double-quote")),
                Some('"') => return Ok(out),
                Some('$') => out.push_str(&self.dollar()?),
                Some(c) if c == self.escape => match self.peek() {
                    Some(n) if n == '"' || n == '$' || n == self.escape => {
                        self.pos += 1;
                        out.push(n);
                    }
                    _ => out.push(c),
                },
                Some(c) => out.push(c),
            }
        }
    }

    /// After a `$`.
    fn dollar(&mut self) -> Result<String, WordError> {
        match self.peek() {
            Some('{') => {
                self.pos += 1;
                self.braced()
            }
            Some(c) if is_name_start(c) => {
                let name = self.name();
                Ok((self.env)(&name).unwrap_or_default())
            }
            Some(c) if c.is_ascii_digit() => {
                self.pos += 1;
                Ok((self.env)(&c.to_string()).unwrap_or_default())
            }
            _ => Ok("$".into()),
        }
    }

    fn name(&mut self) -> String {
        let mut name = String::new();
        while let Some(c) = self.peek().filter(|c| is_name_char(*c)) {
            name.push(c);
            self.pos += 1;
        }
        name
    }

    /// After `${`.
    fn braced(&mut self) -> Result<String, WordError> {
        let name = self.name();
        let bad = || WordError::BadSubstitution(self.source.to_string());
        if name.is_empty() {
            return Err(bad());
        }
        let value = (self.env)(&name);
        let (colon, modifier) = match self.next() {
            Some('}') => return Ok(value.unwrap_or_default()),
            Some(':') => (true, self.next()),
            Some(m) => (false, Some(m)),
            None => return Err(WordError::Unterminated("'}'")),
        };
        let modifier = match modifier {
            Some(m @ ('-' | '+' | '?')) => m,
            Some(_) => return Err(bad()),
            None => return Err(WordError::Unterminated("'}'")),
        };
        let (mut words, found) = self.run(Some('}'))?;
        if !found {
            return Err(WordError::Unterminated("'}'"));
        }
        let word = words.pop().map(|w| w.text).unwrap_or_default();
        // With a colon, an empty value counts as unset.
        let set = match &value {
            Some(v) => !(colon && v.is_empty()),
            None => false,
        };
        Ok(match modifier {
            '-' if set => value.unwrap_or_default(),
            '-' => word,
            '+' if set => word,
            '+' => String::new(),
            _ if set => value.unwrap_or_default(),
            _ => {
                return Err(WordError::Required {
                    name,
                    message: if word.is_empty() {
                        "parameter not set or null".into()
                    } else {
                        word
                    },
                })
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "A" => Some("a".into()),
            "SPACED" => Some("x y".into()),
            "EMPTY" => Some(String::new()),
            "PATHV" => Some("/usr/bin".into()),
            _ => None,
        }
    }

    fn x(s: &str) -> String {
        expand(s, '\\', &env).unwrap()
    }

    #[test]
    fn plain_and_braced_variables() {
        assert_eq!(x("$A"), "a");
        assert_eq!(x("${A}"), "a");
        assert_eq!(x("pre${A}post"), "preapost");
        assert_eq!(x("$A/b"), "a/b");
        assert_eq!(x("$UNSET"), "");
        assert_eq!(x("${UNSET}x"), "x");
        assert_eq!(x("cost $5"), "cost ");
        assert_eq!(x("a $ b"), "a $ b");
        assert_eq!(x("100%$"), "100%$");
        assert_eq!(x("$PATHV:/bin"), "/usr/bin:/bin");
    }

    #[test]
    fn modifiers() {
        assert_eq!(x("${A:-d}"), "a");
        assert_eq!(x("${UNSET:-d}"), "d");
        assert_eq!(x("${EMPTY:-d}"), "d");
        assert_eq!(x("${EMPTY-d}"), "");
        assert_eq!(x("${UNSET-d}"), "d");
        assert_eq!(x("${A:+alt}"), "alt");
        assert_eq!(x("${EMPTY:+alt}"), "");
        assert_eq!(x("${EMPTY+alt}"), "alt");
        assert_eq!(x("${UNSET:+alt}"), "");
        assert_eq!(x("${UNSET:-$A}"), "a");
        assert_eq!(x("${UNSET:-${A:+nested}}"), "nested");
        assert_eq!(x("${UNSET:-two words}"), "two words");
        assert_eq!(x("${UNSET:-\"q}\"}"), "q}");
        assert_eq!(
            expand("${UNSET:?must be set}", '\\', &env),
            Err(WordError::Required {
                name: "UNSET".into(),
                message: "must be set".into()
            })
        );
        assert_eq!(x("${A:?x}"), "a");
        assert!(matches!(
            expand("${A", '\\', &env),
            Err(WordError::Unterminated(_))
        ));
        assert!(matches!(
            expand("${A:-x", '\\', &env),
            Err(WordError::Unterminated(_))
        ));
        assert!(matches!(
            expand("${A%x}", '\\', &env),
            Err(WordError::BadSubstitution(_))
        ));
        assert!(matches!(
            expand("${}", '\\', &env),
            Err(WordError::BadSubstitution(_))
        ));
    }

    #[test]
    fn quotes_and_escapes() {
        assert_eq!(x("'$A'"), "$A");
        assert_eq!(x("\"$A\""), "a");
        assert_eq!(x("\"a b\""), "a b");
        assert_eq!(x("\\$A"), "$A");
        assert_eq!(x("\"\\$A\""), "$A");
        assert_eq!(x("\"\\\"\""), "\"");
        assert_eq!(x("\"\\n\""), "\\n");
        assert_eq!(x("a\\ b"), "a b");
        assert_eq!(x("'it''s'"), "its");
        assert_eq!(x("\"it's\""), "it's");
        assert_eq!(x("trailing\\"), "trailing");
        assert!(matches!(
            expand("'open", '\\', &env),
            Err(WordError::Unterminated("single-quote"))
        ));
        assert!(matches!(
            expand("\"open", '\\', &env),
            Err(WordError::Unterminated("double-quote"))
        ));
        // The backtick as escape character leaves backslashes alone (Windows paths).
        assert_eq!(expand("C:\\dir`$A", '`', &env).unwrap(), "C:\\dir$A");
    }

    #[test]
    fn word_splitting() {
        let w = |s: &str| expand_words(s, '\\', &env).unwrap();
        assert_eq!(w("a  b\tc"), vec!["a", "b", "c"]);
        assert_eq!(w("\"a b\" c"), vec!["a b", "c"]);
        assert_eq!(w("$SPACED z"), vec!["x y", "z"]);
        assert_eq!(w("'' x"), vec!["", "x"]);
        assert_eq!(w("$UNSET x"), vec!["x"]);
        assert_eq!(w("  "), Vec::<String>::new());
        assert_eq!(
            split_raw("a=\"x y\" b='p q' c=d\\ e", '\\'),
            vec!["a=\"x y\"", "b='p q'", "c=d\\ e"]
        );
    }
}
