//! A YAML document as a tree whose every node and key remembers its line and column.
//!
//! serde stops at the first error and forgets positions once a value is built. Validation needs
//! both: every problem at once, each pointing at its line. So the file is parsed once into this
//! tree, checked, and only then handed to serde.

use std::collections::BTreeMap;
use std::fmt;

use yaml_rust2::parser::{Event, Parser};
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

/// Parses one YAML document. A syntax error ends parsing and is the only diagnostic; duplicate and
/// non-scalar keys are reported and parsing goes on.
pub fn parse(text: &str) -> Result<(Node, Vec<Diagnostic>), Box<Diagnostic>> {
    let mut builder = Builder::default();
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

#[derive(Default)]
struct Builder {
    stack: Vec<Open>,
    anchors: BTreeMap<usize, Node>,
    root: Option<Node>,
    diagnostics: Vec<Diagnostic>,
}

enum Open {
    Seq {
        node_span: Span,
        anchor: usize,
        items: Vec<Node>,
    },
    Map {
        node_span: Span,
        anchor: usize,
        entries: Vec<(Key, Node)>,
        pending_key: Option<Key>,
        path: DocPath,
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

    fn event(&mut self, event: Event, marker: Marker) {
        match event {
            Event::Scalar(text, style, anchor, _tag) => {
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
                self.complete(Node { value, span }, anchor);
            }
            Event::SequenceStart(anchor, _) => {
                self.reject_collection_key(marker);
                self.stack.push(Open::Seq {
                    node_span: Span::at(marker, 1),
                    anchor,
                    items: Vec::new(),
                });
            }
            Event::MappingStart(anchor, _) => {
                self.reject_collection_key(marker);
                let path = self.current_path();
                self.stack.push(Open::Map {
                    node_span: Span::at(marker, 1),
                    anchor,
                    entries: Vec::new(),
                    pending_key: None,
                    path,
                });
            }
            Event::SequenceEnd => {
                if let Some(Open::Seq {
                    node_span,
                    anchor,
                    items,
                }) = self.stack.pop()
                {
                    self.complete(
                        Node {
                            value: Value::Seq(items),
                            span: node_span,
                        },
                        anchor,
                    );
                }
            }
            Event::MappingEnd => {
                if let Some(Open::Map {
                    node_span,
                    anchor,
                    entries,
                    ..
                }) = self.stack.pop()
                {
                    self.complete(
                        Node {
                            value: Value::Map(entries),
                            span: node_span,
                        },
                        anchor,
                    );
                }
            }
            Event::Alias(id) => {
                let node = self.anchors.get(&id).cloned().unwrap_or(Node {
                    value: Value::Null,
                    span: Span::at(marker, 1),
                });
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
                self.complete(node, 0);
            }
            Event::Nothing
            | Event::StreamStart
            | Event::StreamEnd
            | Event::DocumentStart
            | Event::DocumentEnd => {}
        }
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

    fn complete(&mut self, node: Node, anchor: usize) {
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Open::Seq { items, .. }) => items.push(node),
            Some(Open::Map {
                entries,
                pending_key,
                path,
                ..
            }) => {
                let Some(key) = pending_key.take() else {
                    return;
                };
                if let Some((first, _)) = entries.iter().find(|(k, _)| k.name == key.name) {
                    let mut dup = path.clone();
                    dup.push_key(&key.name);
                    self.diagnostics.push(
                        Diagnostic::error(dup, format!("duplicate key `{}`", key.name))
                            .with_span(key.span)
                            .with_expected(format!(
                                "each key once; it was first set at line {}",
                                first.span.line
                            ))
                            .with_hint("remove one of the two entries"),
                    );
                    return;
                }
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
}
