//! A YAML document as a tree whose every node and key remembers its line and column.
//!
//! serde stops at the first error and forgets positions once a value is built. Validation needs
//! both: every problem at once, each pointing at its line. So the file is parsed once into this
//! tree, checked, and only then handed to serde.

use std::collections::BTreeMap;
use std::fmt;

use yaml_rust2::parser::{Event, Parser, Tag};
use yaml_rust2::scanner::{Marker, TScalarStyle};

use super::diagnostic::{Diagnostic, DocPath};

/// A 1-based line and column in the source file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Span {
    /// Line, from 1.
    pub line: usize,
    /// Column, from 1, in characters.
    pub column: usize,
    /// Width of the underlined text, in characters (at least 1).
    pub width: usize,
}

impl Span {
    fn at(marker: Marker, width: usize) -> Self {
        Self {
            line: marker.line(),
            column: marker.col() + 1,
            width: width.max(1),
        }
    }
}

/// A value with its position.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// The value.
    pub value: Value,
    /// Where it starts.
    pub span: Span,
}

/// A YAML value after YAML 1.2 core-schema resolution of plain scalars.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// `null`, `~` or nothing.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// Any other scalar, or a quoted one.
    Str(String),
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in file order.
    Map(Vec<(Key, Node)>),
}

/// A mapping key: always a scalar here.
#[derive(Clone, Debug, PartialEq)]
pub struct Key {
    /// The key's text.
    pub name: String,
    /// Where it is.
    pub span: Span,
}

impl Value {
    /// Returns a short description for messages: `an integer`, `a string "x"`.
    #[must_use]
    pub fn describe(&self) -> String {
        match self {
            Self::Null => "null".to_owned(),
            Self::Bool(b) => format!("the boolean `{b}`"),
            Self::Int(i) => format!("the integer `{i}`"),
            Self::Float(f) => format!("the number `{f}`"),
            Self::Str(s) => format!("the string `{s}`"),
            Self::Seq(_) => "a list".to_owned(),
            Self::Map(_) => "a mapping".to_owned(),
        }
    }

    /// Returns the JSON type name this value matches (`integer` also matches `number`).
    #[must_use]
    pub fn json_type(&self) -> &'static str {
        match self {
            Self::Null => "null",
            Self::Bool(_) => "boolean",
            Self::Int(_) => "integer",
            Self::Float(_) => "number",
            Self::Str(_) => "string",
            Self::Seq(_) => "array",
            Self::Map(_) => "object",
        }
    }
}

impl Node {
    /// Returns the node at `path`, if it exists.
    #[must_use]
    pub fn find(&self, path: &DocPath) -> Option<&Node> {
        let mut node = self;
        for seg in path.segments() {
            node = match (&node.value, seg) {
                (Value::Map(entries), super::diagnostic::PathSeg::Key(k)) => {
                    &entries.iter().find(|(key, _)| &key.name == k)?.1
                }
                (Value::Seq(items), super::diagnostic::PathSeg::Index(i)) => items.get(*i)?,
                _ => return None,
            };
        }
        Some(node)
    }

    /// Returns the span of the value at `path`, or of its closest existing parent.
    #[must_use]
    pub fn span_of(&self, path: &DocPath) -> Span {
        let mut p = path.clone();
        loop {
            if let Some(n) = self.find(&p) {
                return n.span;
            }
            if !p.pop() {
                return self.span;
            }
        }
    }

    /// Converts to JSON for serde, once the tree has been checked.
    #[must_use]
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.value {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
            Value::Str(s) => J::String(s.clone()),
            Value::Seq(items) => J::Array(items.iter().map(Node::to_json).collect()),
            Value::Map(entries) => J::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.name.clone(), v.to_json()))
                    .collect(),
            ),
        }
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// Bounds on what a file may make the parser do, so that no input — an alias bomb, a deep
/// nesting, a flood of keys — costs more than a fixed amount of time and memory. Each is
/// rejected with the position where it was crossed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of input.
    pub max_bytes: usize,
    /// Nesting of lists and mappings.
    pub max_depth: usize,
    /// Values in the tree, counting every copy an alias makes.
    pub max_nodes: usize,
}

impl Limits {
    /// A desired-state file: a few KiB in practice.
    pub const DESIRED: Self = Self {
        max_bytes: 1 << 20,
        max_depth: 32,
        max_nodes: 100_000,
    };
    /// A saved observation (`observe -o yaml`): 100,000 listeners are some 30 MiB.
    pub const SNAPSHOT: Self = Self {
        max_bytes: 256 << 20,
        max_depth: 32,
        max_nodes: 20_000_000,
    };
}

/// Parses one YAML document within [`Limits::DESIRED`].
pub fn parse(text: &str) -> Result<(Node, Vec<Diagnostic>), Box<Diagnostic>> {
    parse_with(text, Limits::DESIRED)
}

/// Parses one YAML document. A syntax error or a crossed limit ends parsing and is the only
/// diagnostic; duplicate and non-scalar keys and tags are reported and parsing goes on.
pub fn parse_with(text: &str, limits: Limits) -> Result<(Node, Vec<Diagnostic>), Box<Diagnostic>> {
    let fatal = |span: Span, message: String, hint: &str| {
        Box::new(
            Diagnostic::error(DocPath::root(), message)
                .with_span(span)
                .with_hint(hint),
        )
    };
    if text.len() > limits.max_bytes {
        return Err(fatal(
            Span {
                line: 1,
                column: 1,
                width: 1,
            },
            format!(
                "the file is {} bytes; the limit is {}",
                text.len(),
                limits.max_bytes
            ),
            "this is not a file the engine writes or reads; check its path",
        ));
    }
    // A UTF-8 byte-order mark at the start is allowed (editors on Windows write one).
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if let Some((span, c)) = forbidden_char(text) {
        let what = match c {
            '\0' => "a NUL byte".to_owned(),
            '\u{feff}' => "a byte-order mark inside the file".to_owned(),
            c => format!("the control character U+{:04X}", c as u32),
        };
        return Err(fatal(
            span,
            format!("{what} is not allowed in YAML"),
            "remove it: YAML text holds no control characters but tab and line breaks (a NUL would silently end the file for some readers)",
        ));
    }
    let mut builder = Builder {
        limits,
        ..Builder::default()
    };
    let mut parser = Parser::new_from_str(text);
    let mut documents = 0;
    loop {
        let (event, marker) = parser.next_token().map_err(|e| {
            let mut span = Span::at(*e.marker(), 1);
            // The scanner's column already counts from 0 on the reported line.
            span.column = span.column.max(1);
            Box::new(
                Diagnostic::error(DocPath::root(), format!("invalid YAML: {}", e.info()))
                    .with_span(span)
                    .with_hint("check the indentation and quoting around this position"),
            )
        })?;
        match event {
            Event::StreamEnd => break,
            Event::DocumentStart => {
                documents += 1;
                if documents > 1 {
                    return Err(Box::new(
                        Diagnostic::error(
                            DocPath::root(),
                            "the file holds more than one YAML document",
                        )
                        .with_span(Span::at(marker, 3))
                        .with_hint("keep one `apiVersion`/`kind` document per file"),
                    ));
                }
            }
            other => builder.event(other, marker),
        }
        if let Some(d) = builder.fatal.take() {
            return Err(Box::new(d));
        }
    }
    let root = builder.root.unwrap_or(Node {
        value: Value::Null,
        span: Span {
            line: 1,
            column: 1,
            width: 1,
        },
    });
    Ok((root, builder.diagnostics))
}

/// The first character YAML text may not hold, with its position: NUL and other C0/C1 control
/// characters but tab, LF and CR; DEL; a byte-order mark after the start.
fn forbidden_char(text: &str) -> Option<(Span, char)> {
    let (mut line, mut column) = (1, 1);
    for c in text.chars() {
        if (c.is_control() && !matches!(c, '\t' | '\n' | '\r')) || c == '\u{feff}' {
            return Some((
                Span {
                    line,
                    column,
                    width: 1,
                },
                c,
            ));
        }
        if c == '\n' {
            line += 1;
            column = 1;
        } else {
            column += 1;
        }
    }
    None
}

#[derive(Default)]
struct Builder {
    limits: Limits,
    stack: Vec<Open>,
    /// Anchored values with the number of nodes each holds (an alias copies them all).
    anchors: BTreeMap<usize, (Node, usize)>,
    root: Option<Node>,
    diagnostics: Vec<Diagnostic>,
    /// Nodes made so far, alias copies included.
    nodes: usize,
    /// A crossed limit: parsing stops here.
    fatal: Option<Diagnostic>,
}

impl Default for Limits {
    fn default() -> Self {
        Self::DESIRED
    }
}

enum Open {
    Seq {
        node_span: Span,
        anchor: usize,
        items: Vec<Node>,
        /// Nodes inside, for an anchor on it.
        weight: usize,
    },
    Map {
        node_span: Span,
        anchor: usize,
        entries: Vec<(Key, Node)>,
        /// Line of each key's first use: duplicate detection in constant time per key.
        seen: std::collections::HashMap<String, usize>,
        pending_key: Option<Key>,
        path: DocPath,
        weight: usize,
    },
}

impl Builder {
    fn current_path(&self) -> DocPath {
        let mut path = DocPath::root();
        for open in &self.stack {
            match open {
                Open::Seq { items, .. } => path.push_index(items.len()),
                Open::Map {
                    pending_key: Some(k),
                    ..
                } => path.push_key(&k.name),
                Open::Map { .. } => {}
            }
        }
        path
    }

    /// Counts `n` more nodes against the budget; crossing it is fatal at `marker`.
    fn spend(&mut self, n: usize, marker: Marker, what: &str) -> bool {
        self.nodes = self.nodes.saturating_add(n);
        if self.nodes > self.limits.max_nodes && self.fatal.is_none() {
            self.fatal = Some(
                Diagnostic::error(
                    self.current_path(),
                    format!(
                        "{what} takes the file past {} values, the most it may hold",
                        self.limits.max_nodes
                    ),
                )
                .with_span(Span::at(marker, 1))
                .with_hint(
                    "an alias copies everything its anchor holds; do not nest aliases of aliases",
                ),
            );
        }
        self.fatal.is_none()
    }

    fn tag(&mut self, tag: Option<&Tag>, marker: Marker) {
        if let Some(t) = tag {
            // The parser resolves `!!` to the YAML tag prefix; show it as it was written.
            let handle = if t.handle == "tag:yaml.org,2002:" {
                "!!"
            } else {
                t.handle.as_str()
            };
            self.diagnostics.push(
                Diagnostic::error(
                    self.current_path(),
                    format!("YAML tags (`{handle}{}`) are not supported", t.suffix),
                )
                .with_span(Span::at(marker, handle.len() + t.suffix.len()))
                .with_hint("remove the tag; quote a value to make it a string"),
            );
        }
    }

    fn open(&mut self, marker: Marker) -> bool {
        if self.stack.len() >= self.limits.max_depth {
            self.fatal = Some(
                Diagnostic::error(
                    self.current_path(),
                    format!(
                        "lists and mappings nest deeper than {} levels here",
                        self.limits.max_depth
                    ),
                )
                .with_span(Span::at(marker, 1))
                .with_hint("no part of this format nests that deep; check the indentation"),
            );
            return false;
        }
        self.reject_collection_key(marker);
        self.spend(1, marker, "this value")
    }

    fn event(&mut self, event: Event, marker: Marker) {
        match event {
            Event::Scalar(text, style, anchor, tag) => {
                self.tag(tag.as_ref(), marker);
                if !self.spend(1, marker, "this value") {
                    return;
                }
                let width = text.chars().count() + usize::from(style != TScalarStyle::Plain) * 2;
                let span = Span::at(marker, width);
                // A scalar in key position becomes the pending key, not a value.
                if let Some(Open::Map { pending_key, .. }) = self.stack.last_mut()
                    && pending_key.is_none()
                {
                    *pending_key = Some(Key { name: text, span });
                    return;
                }
                let value = resolve_scalar(text, style);
                self.complete(Node { value, span }, anchor, 1);
            }
            Event::SequenceStart(anchor, tag) => {
                self.tag(tag.as_ref(), marker);
                if self.open(marker) {
                    self.stack.push(Open::Seq {
                        node_span: Span::at(marker, 1),
                        anchor,
                        items: Vec::new(),
                        weight: 1,
                    });
                }
            }
            Event::MappingStart(anchor, tag) => {
                self.tag(tag.as_ref(), marker);
                if self.open(marker) {
                    let path = self.current_path();
                    self.stack.push(Open::Map {
                        node_span: Span::at(marker, 1),
                        anchor,
                        entries: Vec::new(),
                        seen: std::collections::HashMap::new(),
                        pending_key: None,
                        path,
                        weight: 1,
                    });
                }
            }
            Event::SequenceEnd => {
                if let Some(Open::Seq {
                    node_span,
                    anchor,
                    items,
                    weight,
                }) = self.stack.pop()
                {
                    let node = Node {
                        value: Value::Seq(items),
                        span: node_span,
                    };
                    self.complete(node, anchor, weight);
                }
            }
            Event::MappingEnd => {
                if let Some(Open::Map {
                    node_span,
                    anchor,
                    entries,
                    weight,
                    ..
                }) = self.stack.pop()
                {
                    let node = Node {
                        value: Value::Map(entries),
                        span: node_span,
                    };
                    self.complete(node, anchor, weight);
                }
            }
            Event::Alias(id) => self.alias(id, marker),
            Event::Nothing
            | Event::StreamStart
            | Event::StreamEnd
            | Event::DocumentStart
            | Event::DocumentEnd => {}
        }
    }

    /// An alias copies its anchor's value, and pays for every node of the copy first: a file of
    /// a few hundred bytes cannot make billions.
    fn alias(&mut self, id: usize, marker: Marker) {
        let weight = self.anchors.get(&id).map_or(1, |(_, w)| *w);
        if !self.spend(weight, marker, "this alias") {
            return;
        }
        let node = self.anchors.get(&id).map_or_else(
            || Node {
                value: Value::Null,
                span: Span::at(marker, 1),
            },
            |(n, _)| n.clone(),
        );
        let node = Node {
            span: Span::at(marker, 1),
            ..node
        };
        if let Some(Open::Map { pending_key, .. }) = self.stack.last_mut()
            && pending_key.is_none()
            && let Value::Str(name) = &node.value
        {
            *pending_key = Some(Key {
                name: name.clone(),
                span: node.span,
            });
            return;
        }
        self.complete(node, 0, weight);
    }

    /// A mapping or list used as a key has no sensible meaning in this file format.
    fn reject_collection_key(&mut self, marker: Marker) {
        if let Some(Open::Map {
            pending_key, path, ..
        }) = self.stack.last_mut()
            && pending_key.is_none()
        {
            self.diagnostics.push(
                Diagnostic::error(path.clone(), "a mapping key must be a plain name")
                    .with_span(Span::at(marker, 1))
                    .with_hint("write keys as `name: value`"),
            );
            *pending_key = Some(Key {
                name: "<complex key>".to_owned(),
                span: Span::at(marker, 1),
            });
        }
    }

    fn complete(&mut self, node: Node, anchor: usize, weight: usize) {
        if anchor != 0 {
            self.anchors.insert(anchor, (node.clone(), weight));
        }
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Open::Seq {
                items, weight: w, ..
            }) => {
                *w = w.saturating_add(weight);
                items.push(node);
            }
            Some(Open::Map {
                entries,
                seen,
                pending_key,
                path,
                weight: w,
                ..
            }) => {
                let Some(key) = pending_key.take() else {
                    return;
                };
                if let Some(first) = seen.get(&key.name) {
                    let mut dup = path.clone();
                    dup.push_key(&key.name);
                    self.diagnostics.push(
                        Diagnostic::error(dup, format!("duplicate key `{}`", key.name))
                            .with_span(key.span)
                            .with_expected(format!(
                                "each key once; it was first set at line {first}"
                            ))
                            .with_hint("remove one of the two entries"),
                    );
                    return;
                }
                *w = w.saturating_add(weight);
                seen.insert(key.name.clone(), key.span.line);
                entries.push((key, node));
            }
        }
    }
}

/// Resolves a scalar with the YAML 1.2 core schema; quoted and block scalars stay strings.
fn resolve_scalar(text: String, style: TScalarStyle) -> Value {
    if style != TScalarStyle::Plain {
        return Value::Str(text);
    }
    match text.as_str() {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" => return Value::Float(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => return Value::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Value::Float(f64::NAN),
        _ => {}
    }
    let digits = text.strip_prefix(['-', '+']).unwrap_or(&text);
    if !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && let Ok(i) = text.parse::<i64>()
    {
        return Value::Int(i);
    }
    if let Some(hex) = text.strip_prefix("0x")
        && let Ok(i) = i64::from_str_radix(hex, 16)
    {
        return Value::Int(i);
    }
    if let Some(oct) = text.strip_prefix("0o")
        && let Ok(i) = i64::from_str_radix(oct, 8)
    {
        return Value::Int(i);
    }
    let looks_float = digits
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_digit() || b == b'.')
        && digits
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'-' | b'+'));
    if looks_float && let Ok(f) = text.parse::<f64>() {
        return Value::Float(f);
    }
    Value::Str(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based() {
        let (root, diags) = parse("a: 1\nb:\n  c: \"x\"\n").unwrap();
        assert!(diags.is_empty());
        let c = root.find(&DocPath::parse("b.c")).unwrap();
        assert_eq!((c.span.line, c.span.column), (3, 6));
        assert_eq!(c.value, Value::Str("x".into()));
    }

    #[test]
    fn scalars_resolve_with_the_core_schema() {
        let (root, _) = parse("[1, '1', true, ~, 1.5, 0x10, hello, 18789-18799]").unwrap();
        let Value::Seq(items) = root.value else {
            panic!("not a list")
        };
        let got: Vec<_> = items.into_iter().map(|n| n.value).collect();
        assert_eq!(
            got,
            vec![
                Value::Int(1),
                Value::Str("1".into()),
                Value::Bool(true),
                Value::Null,
                Value::Float(1.5),
                Value::Int(16),
                Value::Str("hello".into()),
                Value::Str("18789-18799".into()),
            ]
        );
    }

    #[test]
    fn duplicate_keys_are_reported_at_the_duplicate() {
        let (_, diags) = parse("a: 1\nb: 2\na: 3\n").unwrap();
        assert_eq!(diags.len(), 1);
        assert_eq!(diags[0].span.unwrap().line, 3);
    }

    #[test]
    fn syntax_errors_carry_a_position() {
        let err = parse("a: 1\n b: 2\n").unwrap_err();
        assert!(err.message.contains("invalid YAML"), "{}", err.message);
        assert_eq!(err.span.unwrap().line, 2);
    }

    #[test]
    fn aliases_copy_the_anchored_value() {
        let (root, _) = parse("x: &p 8080\ny: *p\n").unwrap();
        assert_eq!(
            root.find(&DocPath::parse("y")).unwrap().value,
            Value::Int(8080)
        );
    }

    fn fatal(text: &str) -> Diagnostic {
        *parse(text).unwrap_err()
    }

    /// The classic "billion laughs": nine levels of ten aliases each, 10^9 values from a few
    /// hundred bytes. Refused at the alias that crosses the budget, having made at most it.
    #[test]
    fn an_alias_bomb_is_refused_at_the_alias_that_crosses_the_budget() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let refs = vec![format!("*a{}", i - 1); 10].join(", ");
            text.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
        }
        assert!(text.len() < 1000);
        let d = fatal(&text);
        assert!(d.message.contains("past 100000 values"), "{}", d.message);
        assert!(d.span.unwrap().line >= 5, "{:?}", d.span);
    }

    #[test]
    fn deep_nesting_is_refused_without_recursion() {
        // 300,000 nested compact sequences: `- - - - … x`.
        let text = format!("{}x\n", "- ".repeat(300_000));
        let d = fatal(&text);
        assert!(d.message.contains("deeper than 32 levels"), "{}", d.message);
        assert_eq!(d.span.unwrap().line, 1);
        let flow = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        // yaml-rust2's scanner bounds flow nesting itself, before our depth limit is reached.
        let d = fatal(&flow);
        assert!(
            d.message.contains("recursion limit exceeded"),
            "{}",
            d.message
        );
        assert_eq!(d.span.unwrap().line, 1);
    }

    #[test]
    fn many_keys_are_linear_and_duplicates_still_found() {
        let mut text = String::new();
        for i in 0..40_000 {
            text.push_str(&format!("k{i}: {i}\n"));
        }
        text.push_str("k7: again\n");
        let (_, diags) = parse(&text).unwrap();
        assert_eq!(diags.len(), 1);
        assert_eq!(diags[0].span.unwrap().line, 40_001);
    }

    #[test]
    fn nul_control_characters_and_inner_boms_are_located_errors() {
        let d = fatal("cleanup:\n  termGrace: 1s\0\n  staleListeners: false\n");
        assert!(d.message.contains("a NUL byte"), "{}", d.message);
        assert_eq!(d.span.unwrap().to_string(), "2:16");
        let d = fatal("a: b\x1b[2J\n");
        assert!(d.message.contains("U+001B"), "{}", d.message);
        assert_eq!(d.span.unwrap().to_string(), "1:5");
        assert!(
            fatal("a: 1\n\u{feff}b: 2\n")
                .message
                .contains("byte-order mark")
        );
    }

    #[test]
    fn a_leading_bom_is_accepted() {
        let (root, diags) = parse("\u{feff}a: 1\n").unwrap();
        assert!(diags.is_empty());
        assert_eq!(
            root.find(&DocPath::parse("a")).unwrap().value,
            Value::Int(1)
        );
    }

    #[test]
    fn tags_are_reported_not_ignored() {
        let (_, diags) = parse("a: !!str 1\nb: !custom [x]\n").unwrap();
        assert_eq!(diags.len(), 2, "{diags:?}");
        assert!(diags[0].message.contains("`!!str`"), "{}", diags[0].message);
        assert_eq!(diags[1].span.unwrap().line, 2);
    }

    #[test]
    fn oversized_input_is_refused_before_parsing() {
        let text = "#".repeat((1 << 20) + 1);
        assert!(fatal(&text).message.contains("the limit is 1048576"));
    }
}
