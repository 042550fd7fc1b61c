//! Text from other parties, made safe to print: the one place that decides how chat
//! messages, usernames, filenames, error texts and registry answers reach a terminal.
//!
//! Nothing another party sent may act on the terminal. Control characters (Unicode
//! category Cc: C0, DEL, C1) could clear the screen, set the window title, write the
//! clipboard (OSC 52) or move the cursor; format characters (Cf, e.g. the bidi
//! override U+202E) and the line/paragraph separators could reorder or split what is
//! shown. Every one of them is shown as an escape instead: `\e` for ESC, `\n`, `\r`,
//! `\t`, `\xHH` for the other codes below U+0100, `\u{XXXX}` above. Everything else,
//! backslashes included, is shown as it is (a literal `\e` typed by a peer looks like
//! an escaped ESC, which is harmless).
//!
//! This module never prints; callers print what it returns.

use std::borrow::Cow;
use std::fmt::Write;

/// Prefix of each continuation line of a multi-line chat message, so that no line of a
/// message can pass for a line of the program's own (`--- bob ended the chat ---`).
pub const CONTINUATION: &str = "  | ";

/// `text` with every character that could act on a terminal shown as an escape.
pub fn visible(text: &str) -> Cow<'_, str> {
    if !text.chars().any(hidden) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        push_visible(&mut out, c);
    }
    Cow::Owned(out)
}

/// A chat message as lines to print: the first after `prefix` (`"bob: "`), each
/// further one after [`CONTINUATION`]; one trailing line break (what an original
/// client sends after each line) is dropped; everything else is made [`visible`].
pub fn message(prefix: &str, text: &str) -> String {
    let text = text
        .strip_suffix("\r\n")
        .or_else(|| text.strip_suffix('\n'))
        .unwrap_or(text);
    let mut out = String::with_capacity(prefix.len() + text.len() + 8);
    out.push_str(prefix);
    for (i, line) in text.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
            out.push_str(CONTINUATION);
        }
        out.push_str(&visible(line));
    }
    out
}

/// Whether `c` must not reach a terminal as it is.
pub fn hidden(c: char) -> bool {
    c.is_control() || is_format(c) || c == '\u{2028}' || c == '\u{2029}'
}

fn push_visible(out: &mut String, c: char) {
    match c {
        '\x1b' => out.push_str("\\e"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        c if !hidden(c) => out.push(c),
        c if (c as u32) < 0x100 => {
            let _ = write!(out, "\\x{:02x}", c as u32);
        }
        c => {
            let _ = write!(out, "\\u{{{:04x}}}", c as u32);
        }
    }
}

/// Unicode general category Cf (format characters), as of Unicode 15.1. The standard
/// library has no table for it; this list is short and stable.
fn is_format(c: char) -> bool {
    matches!(
        c as u32,
        0x00AD
            | 0x0600..=0x0605
            | 0x061C
            | 0x06DD
            | 0x070F
            | 0x0890..=0x0891
            | 0x08E2
            | 0x180E
            | 0x200B..=0x200F
            | 0x202A..=0x202E
            | 0x2060..=0x2064
            | 0x2066..=0x206F
            | 0xFEFF
            | 0xFFF9..=0xFFFB
            | 0x110BD
            | 0x110CD
            | 0x13430..=0x1343F
            | 0x1BCA0..=0x1BCA3
            | 0x1D173..=0x1D17A
            | 0xE0001
            | 0xE0020..=0xE007F
    )
}

/// `text` as a JSON string literal (quotes included): `"` and `\` escaped, and every
/// character [`visible`] would escape written as `\uXXXX` (surrogate pairs above
/// U+FFFF), so a log line is one line, valid JSON, and safe to `cat`.
pub fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if hidden(c) => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_unchanged_and_borrowed() {
        for s in ["hello", "", "naïve café ☕ 日本語", "C:\\path", "a,b:c"] {
            assert!(matches!(visible(s), Cow::Borrowed(t) if t == s), "{s:?}");
        }
    }

    #[test]
    fn terminal_controls_are_shown_as_escapes() {
        // Screen clear, window title, OSC 52 clipboard write, bell, CSI as one C1 code.
        assert_eq!(visible("\x1b[2J\x1b[H"), "\\e[2J\\e[H");
        assert_eq!(visible("\x1b]0;pwned\x07"), "\\e]0;pwned\\x07");
        assert_eq!(
            visible("\x1b]52;c;ZXZpbA==\x1b\\"),
            "\\e]52;c;ZXZpbA==\\e\\"
        );
        assert_eq!(visible("\u{9b}31m"), "\\x9b31m");
        assert_eq!(visible("a\rb\tc\nd\0e\x7f"), "a\\rb\\tc\\nd\\x00e\\x7f");
    }

    #[test]
    fn bidi_and_other_format_characters_are_shown_as_escapes() {
        assert_eq!(visible("evil\u{202e}txt.exe"), "evil\\u{202e}txt.exe");
        assert_eq!(
            visible("a\u{200b}b\u{2066}c\u{feff}"),
            "a\\u{200b}b\\u{2066}c\\u{feff}"
        );
        assert_eq!(visible("x\u{2028}y\u{2029}"), "x\\u{2028}y\\u{2029}");
        assert_eq!(visible("tag\u{e0041}"), "tag\\u{e0041}");
        assert_eq!(visible("soft\u{ad}hyphen"), "soft\\xadhyphen");
        // Neighbours of the ranges are ordinary text.
        assert_eq!(visible("\u{2010}\u{2030}\u{ff}"), "\u{2010}\u{2030}\u{ff}");
    }

    #[test]
    fn no_output_character_is_hidden() {
        let nasty: String = (0u32..0x300)
            .chain(0x2000..0x2070)
            .chain(0xE0000..0xE0080)
            .filter_map(char::from_u32)
            .collect();
        assert!(!visible(&nasty).chars().any(hidden));
        assert!(!message("x: ", &nasty)
            .split('\n')
            .any(|l| l.chars().any(hidden)));
    }

    #[test]
    fn message_lines_cannot_pass_for_status_lines() {
        assert_eq!(message("bob: ", "hi"), "bob: hi");
        assert_eq!(message("bob: ", "hi\n"), "bob: hi");
        assert_eq!(message("bob: ", "hi\r\n"), "bob: hi");
        assert_eq!(
            message("bob: ", "ok\n--- bob ended the chat ---\n\nend"),
            "bob: ok\n  | --- bob ended the chat ---\n  | \n  | end"
        );
        assert_eq!(message("bob: ", "a\r--- fake"), "bob: a\\r--- fake");
        for line in message("bob: ", "x\n\x1b[1A\x1b[2K--- fake ---")
            .lines()
            .skip(1)
        {
            assert!(line.starts_with(CONTINUATION), "{line:?}");
        }
    }

    #[test]
    fn json_strings_escape_quotes_backslashes_and_controls() {
        assert_eq!(json_string("plain"), "\"plain\"");
        assert_eq!(json_string("a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert_eq!(
            json_string("\x1b[2J\n\t\r\x00"),
            "\"\\u001b[2J\\n\\t\\r\\u0000\""
        );
        assert_eq!(json_string("\u{202e}\u{9b}"), "\"\\u202e\\u009b\"");
        assert_eq!(json_string("\u{e0041}"), "\"\\udb40\\udc41\"");
        assert_eq!(json_string("café ☕"), "\"café ☕\"");
    }
}
