//! How much of a document berth reads, and how much it says about one.
//!
//! A desired state arrives from a broker or a directory that anybody with
//! write access fills, so refusing one must cost no more than reading it:
//! nesting is bounded before serde_json sees the text, the component count
//! before any component is checked, and the problem list keeps the first
//! [`MAX_LISTED`] lines in full and counts the rest, so a document with ten
//! thousand mistakes costs ten thousand increments, not ten thousand lines
//! in every feedback message and log.

use serde::{Deserialize, Serialize};

/// `limits.max_components` unless configured: two orders of magnitude
/// above the largest real device (tens of containers), far below what
/// makes a validation slow (10,000 components validate in under 0.1 s).
pub const DEFAULT_MAX_COMPONENTS: usize = 10_000;

/// `limits.max_depth` unless configured: eight times the deepest a valid
/// document nests ([`DOCUMENT_DEPTH`]), half of what serde_json allows.
pub const DEFAULT_MAX_DEPTH: usize = 64;

/// The deepest a valid document nests: the envelope, `payload`, `domains`,
/// a domain, `components`, a component, `config`, one `{key, value}` entry.
/// A `max_depth` below it would refuse every real document.
pub const DOCUMENT_DEPTH: usize = 8;

/// The deepest serde_json reads: its recursion limit of 128 refuses the
/// 128th level. A `max_depth` above this would never be the limit that
/// answers.
pub const JSON_DEPTH: usize = 127;

/// How many problems (and, separately, warnings) are listed in full; the
/// rest are counted in one last line, "and N more problems".
pub const MAX_LISTED: usize = 100;

/// The bounds a document is read within; part of [`super::Options`], and the
/// agent's `[limits]` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// The most components the served domain may list.
    pub max_components: usize,
    /// The deepest arrays and objects may nest, counting the document itself
    /// as level 1. Unknown fields are refused, but only after serde_json has
    /// read them, so this bounds what any text can make it do.
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_components: DEFAULT_MAX_COMPONENTS,
            max_depth: DEFAULT_MAX_DEPTH,
        }
    }
}

/// The byte offset of the first bracket that nests deeper than `max`.
///
/// One pass over the text, skipping strings, so brackets inside values do
/// not count. Text that is not JSON is scanned the same way; serde_json then
/// says what is wrong with it.
pub(crate) fn too_deep(text: &[u8], max: usize) -> Option<usize> {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for (i, &b) in text.iter().enumerate() {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return Some(i);
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    None
}

/// Line and column (both from 1, the column in bytes as serde_json counts
/// it) of a byte offset, for messages that point into the text.
pub(crate) fn position(text: &[u8], offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let column = match before.iter().rposition(|&b| b == b'\n') {
        Some(nl) => offset - nl,
        None => offset + 1,
    };
    (line, column)
}

/// A problem list that keeps the first [`MAX_LISTED`] items and counts all.
#[derive(Debug, Clone)]
pub(crate) struct Bounded<T> {
    listed: Vec<T>,
    count: usize,
}

impl<T> Default for Bounded<T> {
    fn default() -> Self {
        Self {
            listed: Vec::new(),
            count: 0,
        }
    }
}

impl<T> Bounded<T> {
    /// Records one item; past the bound it is only counted.
    pub(crate) fn push(&mut self, item: T) {
        self.count += 1;
        if self.listed.len() < MAX_LISTED {
            self.listed.push(item);
        }
    }

    /// Records `n` items of which only those in `items` are known in full
    /// (a list that was already cut), keeping the count exact.
    pub(crate) fn extend_counted(&mut self, items: impl IntoIterator<Item = T>, n: usize) {
        let mut seen = 0;
        for item in items {
            seen += 1;
            self.push(item);
        }
        self.count += n.saturating_sub(seen);
    }

    /// How many were recorded, listed or not.
    pub(crate) fn count(&self) -> usize {
        self.count
    }

    /// Whether nothing was recorded.
    pub(crate) fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The listed items, then `more(n)` for the `n` that were only counted.
    pub(crate) fn into_lines(self, more: impl FnOnce(usize) -> T) -> Vec<T> {
        let mut lines = self.listed;
        let omitted = self.count - lines.len();
        if omitted > 0 {
            lines.push(more(omitted));
        }
        lines
    }
}

/// "and N more problems" (or warnings): the last line of a cut list.
pub(crate) fn more(n: usize, what: &str) -> String {
    format!("and {n} more {what}{}", if n == 1 { "" } else { "s" })
}

/// At most this many characters of a value that a message repeats (the
/// first of two clashing values, another component's name): each message
/// quotes its own value in full, but one long value quoted by a thousand
/// messages would make the list quadratic in the document.
pub(crate) const EXCERPT_CHARS: usize = 80;

/// `text`, cut to [`EXCERPT_CHARS`] characters with "…" when longer. Looks
/// at no more than that many characters, whatever the length.
pub(crate) fn excerpt(text: &str) -> std::borrow::Cow<'_, str> {
    match text.char_indices().nth(EXCERPT_CHARS) {
        None => text.into(),
        Some((end, _)) => format!("{}…", &text[..end]).into(),
    }
}

/// `text` with control characters written as escapes (`\u{1b}`): messages
/// quote document values and end up on terminals, in logs and in feedback,
/// where a raw escape sequence or NUL would do more than print.
pub(crate) fn printable(text: String) -> String {
    if !text.chars().any(char::is_control) {
        return text;
    }
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brackets_inside_strings_do_not_nest() {
        let text = br#"{"a":"[[[[{{{{\"[[[[","b":[1]}"#;
        assert_eq!(too_deep(text, 2), None);
        assert_eq!(too_deep(text, 1), Some(text.len() - 4));
    }

    #[test]
    fn the_first_bracket_past_the_limit_is_found() {
        assert_eq!(too_deep(b"[[[]]]", 3), None);
        assert_eq!(too_deep(b"[[[]]]", 2), Some(2));
        assert_eq!(too_deep(b"[][][]", 1), None);
    }

    #[test]
    fn unbalanced_closers_do_not_underflow() {
        assert_eq!(too_deep(b"]]]]}}[[", 2), None);
    }

    #[test]
    fn positions_count_lines_and_byte_columns_from_one() {
        let text = b"ab\ncd\nef";
        assert_eq!(position(text, 0), (1, 1));
        assert_eq!(position(text, 4), (2, 2));
        assert_eq!(position(text, 6), (3, 1));
    }

    #[test]
    fn a_bounded_list_keeps_the_first_and_counts_the_rest() {
        let mut b = Bounded::default();
        for i in 0..MAX_LISTED + 5 {
            b.push(i.to_string());
        }
        assert_eq!(b.count(), MAX_LISTED + 5);
        let lines = b.into_lines(|n| more(n, "problem"));
        assert_eq!(lines.len(), MAX_LISTED + 1);
        assert_eq!(lines[0], "0");
        assert_eq!(lines[MAX_LISTED], "and 5 more problems");
    }

    #[test]
    fn a_list_within_the_bound_has_no_last_line() {
        let mut b = Bounded::default();
        b.push("one".to_string());
        assert_eq!(b.into_lines(|n| more(n, "problem")), ["one"]);
    }

    #[test]
    fn a_cut_list_extended_keeps_its_exact_count() {
        let mut b: Bounded<u32> = Bounded::default();
        b.extend_counted([1, 2], 7);
        assert_eq!(b.count(), 7);
        assert_eq!(b.into_lines(|n| n as u32), [1, 2, 5]);
    }

    #[test]
    fn control_characters_are_escaped_and_other_text_kept() {
        assert_eq!(printable("a\u{1b}[31mb\0é".into()), "a\\u{1b}[31mb\\u{0}é");
        assert_eq!(printable("plain é".into()), "plain é");
    }

    #[test]
    fn one_more_is_singular() {
        assert_eq!(more(1, "problem"), "and 1 more problem");
    }

    #[test]
    fn excerpts_cut_long_text_at_a_character_boundary() {
        let long = "é".repeat(EXCERPT_CHARS + 1);
        let cut = excerpt(&long);
        assert_eq!(cut.chars().count(), EXCERPT_CHARS + 1);
        assert!(cut.ends_with('…'));
        assert_eq!(excerpt("short"), "short");
    }
}
