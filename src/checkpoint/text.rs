//! Showing names that come from files (keys, class names, zip entry names) without letting
//! terminal control sequences through.

use std::borrow::Cow;
use std::fmt::Write;
use std::path::Path;

use crate::error::Error;

/// Whether `c` must not reach a terminal raw: C0 and C1 control characters, DEL, and the
/// invisible formatting characters that reorder or hide text (bidirectional overrides and
/// isolates, zero-width characters, the byte-order mark).
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}'
        )
}

/// `s` made safe to print: control characters (ESC, newlines, ...) and invisible formatting
/// characters are written as Rust-style escapes (`\u{1b}`); everything else, backslashes
/// included, is left as it is. Borrows `s` when nothing needs escaping.
///
/// Every error message of this module that quotes a name read from a file passes it through
/// this function; print names from [`Value`](super::Value)s or inventories through it too.
///
/// ```
/// use boomerang::checkpoint::printable;
/// assert_eq!(printable("model.conv.weight"), "model.conv.weight");
/// assert_eq!(printable("evil\u{1b}[2Jname"), "evil\\u{1b}[2Jname");
/// ```
pub fn printable(s: &str) -> Cow<'_, str> {
    if !s.chars().any(needs_escape) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if needs_escape(c) {
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// A whole message made safe to print, keeping its line breaks (messages such as
/// [`Value::outline`](super::Value::outline) span lines on purpose). The last line of defence
/// for messages built from file contents.
pub(crate) fn printable_message(s: &str) -> Cow<'_, str> {
    if !s.chars().any(|c| c != '\n' && needs_escape(c)) {
        return Cow::Borrowed(s);
    }
    let lines: Vec<Cow<'_, str>> = s.split('\n').map(printable).collect();
    Cow::Owned(lines.join("\n"))
}

/// An [`Error::Checkpoint`] for `path` whose message is made printable.
pub(crate) fn checkpoint_error(path: &Path, message: String) -> Error {
    let message = match printable_message(&message) {
        Cow::Borrowed(_) => message,
        Cow::Owned(m) => m,
    };
    Error::checkpoint(path, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_controls_and_invisible_formatting_only() {
        assert!(matches!(printable("plain.name_0"), Cow::Borrowed(_)));
        assert_eq!(printable("a\u{1b}]0;title\u{7}b"), "a\\u{1b}]0;title\\u{7}b");
        assert_eq!(printable("tab\there\nnl\r"), "tab\\u{9}here\\u{a}nl\\u{d}");
        assert_eq!(printable("c1\u{9b}31m"), "c1\\u{9b}31m");
        assert_eq!(printable("rtl\u{202e}txt"), "rtl\\u{202e}txt");
        assert_eq!(printable("h\u{e9}llo \u{2603} \\x"), "h\u{e9}llo \u{2603} \\x");
        assert_eq!(printable_message("line\none\u{1b}"), "line\none\\u{1b}");
        assert!(matches!(printable_message("two\nlines"), Cow::Borrowed(_)));
    }
}
