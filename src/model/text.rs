//! Text that came from someone else (another user's command line, the lock holder's note, a
//! CLI's output) is shown with its control characters escaped, so it can neither move the cursor,
//! clear the screen, set the window title nor forge a line of the engine's own output.

use std::borrow::Cow;
use std::fmt::Write as _;

/// `text` with every control character but newline and tab written as `\u{..}` (C0, DEL, C1 and
/// the Unicode bidirectional overrides that reorder what a terminal shows).
#[must_use]
pub fn escape_controls(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if needs_escape(c) {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

fn needs_escape(c: char) -> bool {
    (c.is_control() && c != '\n' && c != '\t')
        || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::escape_controls;

    #[test]
    fn escape_sequences_become_visible_text() {
        assert_eq!(
            escape_controls("openclaw\x1b[2J\x1b]0;pwned\x07 --port 1\r"),
            "openclaw\\u{1b}[2J\\u{1b}]0;pwned\\u{7} --port 1\\u{d}"
        );
        assert_eq!(escape_controls("a\tb\nc"), "a\tb\nc");
        assert_eq!(escape_controls("\u{9b}31m\u{202e}"), "\\u{9b}31m\\u{202e}");
    }
}
