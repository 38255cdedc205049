//! Making strings from the network safe to print on a terminal.
//!
//! A subject, body, attachment name or relay reason is attacker-chosen: raw,
//! it could carry ANSI/OSC escape sequences (rewrite the screen, set the
//! window title, plant a hyperlink, on some terminals echo keystrokes back)
//! or bidirectional overrides that show one text and mean another
//! ("Trojan Source"). Everything printed for a person goes through
//! [`escape_line`] (one-line fields) or [`escape_text`] (bodies, which keep
//! their line breaks and tabs). Escaped characters are shown as `\u{XX}` so
//! nothing is silently dropped and an auditor sees what was sent.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Whether `c` must not reach a terminal raw: C0 and C1 controls, DEL, and
/// the Unicode bidirectional formatting characters.
pub fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{061C}' | '\u{200E}' | '\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2066}'..='\u{2069}')
}

fn escape(s: &str, keep: impl Fn(char) -> bool) -> Cow<'_, str> {
    if !s.chars().any(|c| is_unsafe(c) && !keep(c)) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if is_unsafe(c) && !keep(c) {
            // invariant: writing to a String cannot fail.
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// `s` with every unsafe character escaped, line breaks and tabs included:
/// for fields printed on one line (subject, names, reasons, errors).
pub fn escape_line(s: &str) -> Cow<'_, str> {
    escape(s, |_| false)
}

/// `s` with every unsafe character escaped except `\n` and `\t`: for a
/// message body. A `\r` is escaped (it would let a line overwrite itself).
pub fn escape_text(s: &str) -> Cow<'_, str> {
    escape(s, |c| c == '\n' || c == '\t')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_ansi_osc_and_bidi() {
        let evil = "ok\u{1b}[2J\u{1b}]0;pwned\u{7}\u{9b}31m\u{202e}txt.exe\r";
        let e = escape_line(evil);
        assert!(!e.chars().any(is_unsafe), "{e}");
        assert_eq!(
            e,
            "ok\\u{1b}[2J\\u{1b}]0;pwned\\u{7}\\u{9b}31m\\u{202e}txt.exe\\u{d}"
        );
    }

    #[test]
    fn body_keeps_newlines_and_tabs_only() {
        assert_eq!(escape_text("a\n\tb\r\u{1b}"), "a\n\tb\\u{d}\\u{1b}");
        assert_eq!(escape_line("a\nb"), "a\\u{a}b");
    }

    #[test]
    fn plain_text_is_borrowed_unchanged() {
        let s = "Запит: підтримка SOC — 24/7 ✓";
        assert!(matches!(escape_line(s), Cow::Borrowed(_)));
        assert!(matches!(escape_text(s), Cow::Borrowed(_)));
    }

    proptest::proptest! {
        #[test]
        fn nothing_unsafe_survives(s in "\\PC*|[\\x00-\\x20\\x7f-\\u{a0}\\u{2066}-\\u{2069}]*") {
            proptest::prop_assert!(!escape_line(&s).chars().any(is_unsafe));
            proptest::prop_assert!(!escape_text(&s).chars().any(|c| is_unsafe(c) && c != '\n' && c != '\t'));
        }
    }
}
