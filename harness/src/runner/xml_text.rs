//! Text for JUnit XML, made valid and kept faithful.
//!
//! quick-junit (0.8) strips ANSI sequences and the C0 controls XML 1.0
//! forbids, but keeps U+FFFE and U+FFFF (which XML also forbids: xmllint,
//! Jenkins and GitLab then refuse the whole report), and its ANSI stripper
//! drops every tab and carriage return (so `nft list ruleset` comes out
//! flush-left). Text goes through [`prepare`] before quick-junit sees it and
//! the rendered document through [`finish`]:
//!
//! - every character XML 1.0 forbids (C0 controls but tab, line feed, carriage
//!   return and ESC, U+FFFE, U+FFFF) becomes U+FFFD;
//! - ANSI sequences (ESC …) are still stripped by quick-junit;
//! - tabs and carriage returns are kept, written as `&#9;` and `&#13;` (so a
//!   parser reads them back as they were, in text and in attributes alike);
//! - text longer than its limit is cut in the middle, with a marker that says
//!   how many bytes were left out.

/// The most of one trial's `system-out` kept, in bytes (256 KiB: its head
/// and, mostly, its tail, where the error is).
pub const MAX_SYSTEM_OUT: usize = 256 * 1024;

/// The most of a failure's `message` attribute kept, in bytes.
pub const MAX_MESSAGE: usize = 2 * 1024;

// Private-use characters that carry a tab and a carriage return past
// quick-junit's ANSI stripper; an input's own are replaced first.
const TAB: char = '\u{E009}';
const CR: char = '\u{E00D}';

/// `text` made valid for XML 1.0 and at most about `max` bytes long, ready
/// for quick-junit; the document it ends up in must go through [`finish`].
pub fn prepare(text: &str, max: usize) -> String {
    let cut = cut_middle(text, max);
    cut.chars()
        .map(|c| match c {
            '\t' => TAB,
            '\r' => CR,
            TAB | CR | '\u{FFFE}' | '\u{FFFF}' => '\u{FFFD}',
            '\n' | '\x1b' => c,
            c if (c as u32) < 0x20 => '\u{FFFD}',
            c => c,
        })
        .collect()
}

/// The rendered document with the tabs and carriage returns [`prepare`] carried put back.
pub fn finish(xml: &str) -> String {
    let mut out = String::with_capacity(xml.len());
    for c in xml.chars() {
        match c {
            TAB => out.push_str("&#9;"),
            CR => out.push_str("&#13;"),
            c => out.push(c),
        }
    }
    out
}

/// `text` itself when it is at most `max` bytes; else its first quarter and
/// its last three quarters (on character boundaries) around a marker.
fn cut_middle(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if text.len() <= max {
        return text.into();
    }
    let head_end = floor_boundary(text, max / 4);
    let tail_start = ceil_boundary(text, text.len() - (max - max / 4));
    format!(
        "{}\n[… {} bytes cut by rave-harness …]\n{}",
        &text[..head_end],
        tail_start - head_end,
        &text[tail_start..]
    )
    .into()
}

fn floor_boundary(text: &str, mut at: usize) -> usize {
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

fn ceil_boundary(text: &str, mut at: usize) -> usize {
    while !text.is_char_boundary(at) {
        at += 1;
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forbidden_characters_are_replaced_and_tabs_kept() {
        let text = "a\tb\r\nc\u{FFFE}d\u{FFFF}e\u{1}f\u{E009}g";
        let prepared = prepare(text, MAX_SYSTEM_OUT);
        assert_eq!(finish(&prepared), "a&#9;b&#13;\nc\u{FFFD}d\u{FFFD}e\u{FFFD}f\u{FFFD}g");
    }

    #[test]
    fn long_text_is_cut_in_the_middle_with_a_marker() {
        let text = format!("{}{}", "h".repeat(1000), "é".repeat(1000));
        let cut = prepare(&text, 400);
        assert!(cut.starts_with(&"h".repeat(100)), "{cut}");
        assert!(cut.ends_with('é'));
        assert!(cut.contains("bytes cut by rave-harness"), "{cut}");
        assert!(cut.len() < 500, "{}", cut.len());
        assert_eq!(prepare("short", 400), "short");
    }
}
