//! Problems found in a desired-state file, with where they are and how to fix them.

use std::fmt::{self, Write as _};

use super::yaml::Span;
use crate::model::text::escape_controls;

/// One segment of a document path.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum PathSeg {
    /// A mapping key.
    Key(String),
    /// A list index.
    Index(usize),
}

/// A path into the document, shown as `sandboxes[1].dashboardPort`.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct DocPath(Vec<PathSeg>);

impl DocPath {
    /// The document root.
    #[must_use]
    pub fn root() -> Self {
        Self(Vec::new())
    }

    /// Parses `a.b[2].c`.
    #[must_use]
    pub fn parse(text: &str) -> Self {
        let mut path = Self::root();
        for part in text.split('.').filter(|p| !p.is_empty()) {
            let mut rest = part;
            if let Some(i) = rest.find('[') {
                path.push_key(&rest[..i]);
                rest = &rest[i..];
                while let Some(end) = rest.find(']') {
                    if let Ok(n) = rest[1..end].parse() {
                        path.push_index(n);
                    }
                    rest = &rest[end + 1..];
                }
            } else {
                path.push_key(rest);
            }
        }
        path
    }

    /// Appends a key.
    pub fn push_key(&mut self, key: &str) {
        self.0.push(PathSeg::Key(key.to_owned()));
    }

    /// Appends an index.
    pub fn push_index(&mut self, index: usize) {
        self.0.push(PathSeg::Index(index));
    }

    /// Returns a copy with a key appended.
    #[must_use]
    pub fn key(&self, key: &str) -> Self {
        let mut p = self.clone();
        p.push_key(key);
        p
    }

    /// Returns a copy with an index appended.
    #[must_use]
    pub fn index(&self, index: usize) -> Self {
        let mut p = self.clone();
        p.push_index(index);
        p
    }

    /// Removes the last segment; false at the root.
    pub fn pop(&mut self) -> bool {
        self.0.pop().is_some()
    }

    /// The segments.
    #[must_use]
    pub fn segments(&self) -> &[PathSeg] {
        &self.0
    }
}

impl fmt::Display for DocPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("(document)");
        }
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                PathSeg::Key(k) if i == 0 => f.write_str(k)?,
                PathSeg::Key(k) => write!(f, ".{k}")?,
                PathSeg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// One problem in a desired-state file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// Where in the document.
    pub path: DocPath,
    /// Where in the file, when known.
    pub span: Option<Span>,
    /// What is wrong.
    pub message: String,
    /// What was expected instead.
    pub expected: Option<String>,
    /// How to fix it.
    pub hint: Option<String>,
}

impl Diagnostic {
    /// A new error at `path`.
    #[must_use]
    pub fn error(path: DocPath, message: impl Into<String>) -> Self {
        Self {
            path,
            span: None,
            message: message.into(),
            expected: None,
            hint: None,
        }
    }

    /// Sets the file position.
    #[must_use]
    pub fn with_span(mut self, span: Span) -> Self {
        self.span = Some(span);
        self
    }

    /// Sets what was expected.
    #[must_use]
    pub fn with_expected(mut self, expected: impl Into<String>) -> Self {
        self.expected = Some(expected.into());
        self
    }

    /// Sets the hint.
    #[must_use]
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Renders in the compiler style: headline, `--> file:line:col`, the source line with a caret,
    /// then `expected` and `hint` lines.
    #[must_use]
    pub fn render(&self, file: &str, source: &str, color: bool) -> String {
        let (red, blue, bold, reset) = if color {
            ("\x1b[31;1m", "\x1b[34;1m", "\x1b[1m", "\x1b[0m")
        } else {
            ("", "", "", "")
        };
        let mut out = String::new();
        let line_text = self.span.map_or("", |span| {
            source
                .lines()
                .nth(span.line.saturating_sub(1))
                .unwrap_or("")
        });
        // A diagnostic about a `gateway.env` value never echoes the value: it may be a secret.
        let (line_text, message) = if self.is_secret() {
            mask_value(line_text, &self.message)
        } else {
            (line_text.to_owned(), self.message.clone())
        };
        // Echoed text is the file's: its control characters are shown, not obeyed.
        let line_text = escape_controls(&line_text).into_owned();
        let _ = writeln!(
            out,
            "{red}error{reset}{bold}: {}{reset}",
            escape_controls(&message)
        );
        let Some(span) = self.span else {
            let _ = writeln!(out, "  {blue}-->{reset} {file}");
            self.render_notes(&mut out, blue, reset, "");
            return out;
        };
        let _ = writeln!(
            out,
            "  {blue}-->{reset} {file}:{}:{}",
            span.line, span.column
        );
        let gutter = span.line.to_string().len();
        let pad = " ".repeat(gutter);
        let _ = writeln!(out, "{pad} {blue}|{reset}");
        let _ = writeln!(out, "{blue}{}{reset} {blue}|{reset} {line_text}", span.line);
        let indent: String = line_text
            .chars()
            .take(span.column.saturating_sub(1))
            .map(|c| if c == '\t' { '\t' } else { ' ' })
            .collect();
        let _ = write!(
            out,
            "{pad} {blue}|{reset} {indent}{red}{}{reset}",
            "^".repeat(span.width.max(1))
        );
        match &self.expected {
            Some(e) => {
                let _ = writeln!(out, " {red}expected {e}{reset}");
            }
            None => out.push('\n'),
        }
        self.render_notes(&mut out, blue, reset, &pad);
        out
    }

    /// Whether the diagnostic is about a value under `gateway.env` (secrets live there).
    fn is_secret(&self) -> bool {
        matches!(
            self.path.segments(),
            [PathSeg::Key(g), PathSeg::Key(e), _, ..] if g == "gateway" && e == "env"
        )
    }

    fn render_notes(&self, out: &mut String, blue: &str, reset: &str, pad: &str) {
        if self.span.is_none()
            && let Some(e) = &self.expected
        {
            let _ = writeln!(out, "{pad} {blue}={reset} expected {e}");
        }
        if let Some(h) = &self.hint {
            let _ = writeln!(out, "{pad} {blue}={reset} hint: {h}");
        }
    }
}

/// Returns the candidate closest to `word` by edit distance, if it is plausibly a typo.
#[must_use]
/// `KEY: value` → `KEY: <redacted>`, and the value taken out of `message` too.
fn mask_value(line: &str, message: &str) -> (String, String) {
    let Some(colon) = line.find(':') else {
        return ("<redacted>".to_owned(), message.to_owned());
    };
    let value = line[colon + 1..]
        .trim()
        .trim_matches(|c| c == '"' || c == '\'');
    let message = if value.is_empty() {
        message.to_owned()
    } else {
        message.replace(value, "<redacted>")
    };
    (format!("{} <redacted>", &line[..=colon]), message)
}

pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let lower = word.to_ascii_lowercase();
    candidates
        .into_iter()
        .map(|c| (edit_distance(&lower, &c.to_ascii_lowercase()), c))
        .filter(|(d, c)| *d <= (c.len() / 3).max(1) + 1)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doc_paths_round_trip() {
        let p = DocPath::parse("sandboxes[1].dashboardPort");
        assert_eq!(p.to_string(), "sandboxes[1].dashboardPort");
        assert_eq!(p.segments().len(), 3);
    }

    #[test]
    fn closest_suggests_typos_only() {
        assert_eq!(closest("prot", ["port", "portRange"]), Some("port"));
        assert_eq!(
            closest("dashbordPort", ["name", "dashboardPort"]),
            Some("dashboardPort")
        );
        assert_eq!(closest("zzzzzz", ["port", "name"]), None);
    }
}
