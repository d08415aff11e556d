//! Text for JUnit XML, made valid and kept faithful.
//!
//! quick-junit (0.8) strips ANSI sequences and the C0 controls XML 1.0
//! forbids, but keeps U+FFFE and U+FFFF (which XML also forbids: xmllint,
//! Jenkins and GitLab then refuse the whole report), and its ANSI stripper
//! drops every tab and carriage return (so `nft list ruleset` comes out
//! flush-left). Text goes through [`prepare`] before quick-junit sees it and
//! the rendered document through [`finish`]:
//!
//! - ANSI sequences are removed here, bounded: CSI (`ESC [` … final byte),
//!   OSC (`ESC ]` … BEL or `ESC \`), DCS/SOS/PM/APC (`ESC P|X|^|_` … `ESC \`),
//!   two-byte escapes; a sequence ends at the latest at a line break or after
//!   [`MAX_SEQUENCE`] characters, so an unterminated one (an xterm title, a
//!   cut hyperlink) cannot swallow the rest of the evidence, as it does in
//!   quick-junit's stripper; a stray ESC becomes U+FFFD, so quick-junit
//!   never sees one;
//! - every other character XML 1.0 forbids (C0 controls but tab, line feed
//!   and carriage return, U+FFFE, U+FFFF) becomes U+FFFD;
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

/// The most characters an escape sequence may span before it is taken as
/// text that merely contains an ESC.
pub const MAX_SEQUENCE: usize = 256;

/// `text` made valid for XML 1.0 and at most about `max` bytes long, ready
/// for quick-junit; the document it ends up in must go through [`finish`].
pub fn prepare(text: &str, max: usize) -> String {
    let plain = strip_escapes(text);
    let cut = cut_middle(&plain, max);
    cut.chars()
        .map(|c| match c {
            '\t' => TAB,
            '\r' => CR,
            TAB | CR | '\u{FFFE}' | '\u{FFFF}' => '\u{FFFD}',
            '\n' => c,
            c if (c as u32) < 0x20 => '\u{FFFD}',
            c => c,
        })
        .collect()
}

/// `text` without its ANSI escape sequences (see the module's docs); an ESC
/// that starts no sequence becomes U+FFFD.
fn strip_escapes(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        if chars[i] != '\x1b' {
            out.push(chars[i]);
            i += 1;
            continue;
        }
        match sequence_end(&chars[i..]) {
            Some(len) => i += len,
            None => {
                out.push('\u{FFFD}');
                i += 1;
            }
        }
    }
    out
}

/// The length of the escape sequence at the start of `s` (which starts with
/// ESC), or `None` when it is not one within bounds.
fn sequence_end(s: &[char]) -> Option<usize> {
    let bounded = |end: Option<usize>| end.filter(|e| *e <= MAX_SEQUENCE);
    match s.get(1)? {
        // CSI: parameters and intermediates, then a final byte @..~.
        '[' => bounded(
            s.iter()
                .enumerate()
                .skip(2)
                .take_while(|(_, c)| **c != '\n')
                .find(|(_, c)| ('@'..='~').contains(*c))
                .map(|(i, _)| i + 1),
        ),
        // OSC, DCS, SOS, PM, APC: up to BEL (OSC) or ST (ESC \\).
        ']' | 'P' | 'X' | '^' | '_' => bounded((2..s.len()).take_while(|i| s[*i] != '\n').find_map(|i| match s[i] {
            '\x07' if s[1] == ']' => Some(i + 1),
            '\x1b' if s.get(i + 1) == Some(&'\\') => Some(i + 2),
            _ => None,
        })),
        // Two-character escapes (ESC 7, ESC =, ESC (B's first part …).
        c if (' '..='~').contains(c) => Some(2),
        _ => None,
    }
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
    fn escape_sequences_go_and_unterminated_ones_swallow_nothing() {
        let colours = "\u{1b}[1;31mred\u{1b}[0m and \u{1b}]0;agent@guest\u{7}title";
        assert_eq!(finish(&prepare(colours, MAX_SYSTEM_OUT)), "red and title");
        // An OSC 8 hyperlink cut in the middle, then the error at the end.
        let cut_link = "before \u{1b}]8;;http://x/\nexpected nginx active, saw failed";
        assert_eq!(
            finish(&prepare(cut_link, MAX_SYSTEM_OUT)),
            "before \u{FFFD}]8;;http://x/\nexpected nginx active, saw failed"
        );
        let endless = format!("a\u{1b}[{}b", "1;".repeat(200));
        assert!(finish(&prepare(&endless, MAX_SYSTEM_OUT)).ends_with('b'));
        assert!(!prepare("lone \u{1b}", MAX_SYSTEM_OUT).contains('\u{1b}'));
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
