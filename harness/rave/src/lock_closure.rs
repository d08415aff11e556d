//! What a build of one workspace package reads from the workspace's
//! Cargo.lock: an image is rebuilt when the dispatcher's dependencies change,
//! not when a test dependency does.

/// The `[[package]]` blocks of a Cargo.lock that `root` depends on, itself
/// included, in the lock's order: what a build of `root` reads from the lock.
pub fn lock_closure(lock: &str, root: &str) -> String {
    struct Block<'a> {
        name: &'a str,
        version: &'a str,
        deps: Vec<(&'a str, Option<&'a str>)>,
        text: String,
    }
    let mut blocks = Vec::new();
    for chunk in lock.split("[[package]]").skip(1) {
        let mut block = Block {
            name: "",
            version: "",
            deps: Vec::new(),
            text: chunk.trim().to_string(),
        };
        let mut in_deps = false;
        for line in chunk.lines().map(str::trim) {
            fn value(line: &str) -> Option<&str> {
                line.split_once('=').map(|(_, v)| v.trim().trim_matches('"'))
            }
            if let Some(v) = line.strip_prefix("name =").and(value(line)) {
                block.name = v;
            } else if let Some(v) = line.strip_prefix("version =").and(value(line)) {
                block.version = v;
            } else if line.starts_with("dependencies = [") {
                in_deps = true;
            } else if in_deps && line.starts_with(']') {
                in_deps = false;
            } else if in_deps {
                let mut words = line.trim_end_matches(',').trim_matches('"').split_whitespace();
                if let Some(name) = words.next() {
                    block.deps.push((name, words.next()));
                }
            }
        }
        blocks.push(block);
    }
    let mut wanted = vec![false; blocks.len()];
    let mut stack: Vec<usize> = blocks.iter().position(|b| b.name == root).into_iter().collect();
    while let Some(i) = stack.pop() {
        if std::mem::replace(&mut wanted[i], true) {
            continue;
        }
        for (name, version) in &blocks[i].deps {
            let found = blocks
                .iter()
                .position(|b| b.name == *name && version.is_none_or(|v| b.version == v));
            stack.extend(found);
        }
    }
    blocks
        .iter()
        .zip(wanted)
        .filter(|(_, w)| *w)
        .map(|(b, _)| format!("[[package]]\n{}\n", b.text))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_dispatchers_part_of_the_lock_counts() {
        let lock = r#"version = 4

[[package]]
name = "webhook-dispatcher"
version = "0.1.0"
dependencies = [
 "serde",
 "tokio 1.2.0",
]

[[package]]
name = "proptest"
version = "1.0.0"

[[package]]
name = "serde"
version = "1.0.0"

[[package]]
name = "tokio"
version = "1.1.0"

[[package]]
name = "tokio"
version = "1.2.0"
dependencies = [
 "mio",
]

[[package]]
name = "mio"
version = "1.0.0"
"#;
        let closure = lock_closure(lock, "webhook-dispatcher");
        for present in ["webhook-dispatcher", "serde", "version = \"1.2.0\"", "mio"] {
            assert!(closure.contains(present), "{present} missing from {closure}");
        }
        assert!(!closure.contains("proptest"), "{closure}");
        assert!(!closure.contains("1.1.0"), "{closure}");
        let with_test_dep = lock.replace(
            "name = \"proptest\"\nversion = \"1.0.0\"",
            "name = \"proptest\"\nversion = \"1.9.0\"",
        );
        assert_eq!(lock_closure(&with_test_dep, "webhook-dispatcher"), closure);
    }
}
