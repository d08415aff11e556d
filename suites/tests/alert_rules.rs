//! The shared alert rules: `promtool check rules` and `promtool test rules`
//! pass, and a wrong threshold in any rule makes the rule tests fail.

use std::path::{Path, PathBuf};
use std::process::Command;

fn observability() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../images/observability")
}

fn promtool(args: &[&str], dir: &Path) -> std::process::Output {
    Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("promtool runs (Debian package prometheus; scripts/setup installs it)")
}

#[test]
fn the_rules_are_valid_and_their_tests_pass() {
    let dir = observability();
    let check = promtool(&["check", "rules", "alert-rules.yml"], &dir);
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stdout));
    let test = promtool(&["test", "rules", "alert-rules.test.yml"], &dir);
    assert!(
        test.status.success(),
        "{}{}",
        String::from_utf8_lossy(&test.stdout),
        String::from_utf8_lossy(&test.stderr)
    );
}

#[test]
fn a_wrong_threshold_in_any_rule_fails_the_rule_tests() {
    let rules = std::fs::read_to_string(observability().join("alert-rules.yml")).unwrap();
    let tests = std::fs::read_to_string(observability().join("alert-rules.test.yml")).unwrap();
    let mutations = [
        (
            "HighMemoryUsage",
            "* 100 > 85\n        for: 5m",
            "* 100 > 95\n        for: 5m",
        ),
        ("HighCPUUsage", "* 100) > 80", "* 100) > 95"),
        (
            "HighDiskUsage",
            "* 100 > 85\n        labels",
            "* 100 > 95\n        labels",
        ),
        ("ServiceDown", "up == 0\n        for: 2m", "up == 0\n        for: 10m"),
        ("WebhookErrorRate", "[5m]) > 10", "[5m]) > 100"),
    ];
    for (alert, from, to) in mutations {
        assert_eq!(
            rules.matches(from).count(),
            1,
            "the {alert} threshold {from:?} is in the rules once"
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("alert-rules.yml"), rules.replace(from, to)).unwrap();
        std::fs::write(dir.path().join("alert-rules.test.yml"), &tests).unwrap();
        let test = promtool(&["test", "rules", "alert-rules.test.yml"], dir.path());
        assert!(
            !test.status.success(),
            "promtool test rules passed with {alert} changed from {from:?} to {to:?}"
        );
    }
}
