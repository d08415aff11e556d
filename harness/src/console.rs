//! The guest's serial console log, read for diagnostics.

use std::path::Path;

/// The last `lines` lines of the console log, terminal escapes removed.
pub fn tail(path: &Path, lines: usize) -> String {
    let Ok(bytes) = std::fs::read(path) else {
        return format!("(no serial log at {})", path.display());
    };
    let text = strip_escapes(&String::from_utf8_lossy(&bytes));
    let all: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    if all.is_empty() {
        return "(the serial console is empty)".into();
    }
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Removes ANSI escape sequences (systemd colours its status lines).
fn strip_escapes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        if c != '\r' {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_lines_without_colours() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("serial.log");
        std::fs::write(&log, "one\r\n\u{1b}[0;32m  OK  \u{1b}[0m] Started nginx\r\n\nthree\n").unwrap();
        assert_eq!(tail(&log, 2), "  OK  ] Started nginx\nthree");
        assert!(tail(&dir.path().join("none"), 5).starts_with("(no serial log"));
    }
}
