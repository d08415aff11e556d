//! The guest's serial console log, read for diagnostics.

use std::path::Path;

/// What a kernel prints when it dies; its backtrace can push this line out of a tail.
const PANIC_MARK: &str = "Kernel panic";

/// The last `lines` lines of the console log, terminal escapes removed. When
/// the kernel panicked earlier than that, its panic line comes first.
pub fn tail(path: &Path, lines: usize) -> String {
    let Ok(bytes) = std::fs::read(path) else {
        return format!("(no serial log at {})", path.display());
    };
    let text = strip_escapes(&String::from_utf8_lossy(&bytes));
    let all: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    if all.is_empty() {
        return "(the serial console is empty)".into();
    }
    let start = all.len().saturating_sub(lines);
    let tail = all[start..].join("\n");
    match all[..start].iter().rev().find(|l| l.contains(PANIC_MARK)) {
        Some(panic) => format!("{}\n[...]\n{tail}", panic.trim()),
        None => tail,
    }
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

    #[test]
    fn a_panic_line_pushed_out_by_its_backtrace_comes_first() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("serial.log");
        let backtrace: String = (0..40).map(|i| format!("[ 10.1] frame {i}\n")).collect();
        std::fs::write(
            &log,
            format!("boot\n[ 10.0] Kernel panic - not syncing: Attempted to kill init!\n{backtrace}"),
        )
        .unwrap();
        let shown = tail(&log, 5);
        assert!(shown.starts_with("[ 10.0] Kernel panic - not syncing"), "{shown}");
        assert!(shown.ends_with("frame 39"), "{shown}");
    }
}
