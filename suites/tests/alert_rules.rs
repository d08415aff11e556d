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
        (
            "ServiceNearMemoryMax",
            "> 0.9\n        for: 5m",
            "> 0.99\n        for: 5m",
        ),
        (
            "ServiceNearMemoryMax",
            "> 0.9\n        for: 5m",
            "> 0.9\n        for: 3m",
        ),
        (
            "ServiceNearMemoryMax",
            "> 0.9\n        for: 5m",
            "> 0.75\n        for: 5m",
        ),
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

#[test]
fn the_unit_memory_series_are_valid_text_format_for_services_with_a_memory_max_less_inactive_cache() {
    let dir = tempfile::tempdir().unwrap();
    let cgroups = dir.path().join("cgroups");
    for (unit, current, max) in [("limited.service", "1000", "2000"), ("unlimited.service", "5", "max")] {
        std::fs::create_dir_all(cgroups.join(unit)).unwrap();
        std::fs::write(cgroups.join(unit).join("memory.current"), format!("{current}\n")).unwrap();
        std::fs::write(cgroups.join(unit).join("memory.max"), format!("{max}\n")).unwrap();
        std::fs::write(
            cgroups.join(unit).join("memory.stat"),
            "anon 600\nfile 400\nactive_file 150\ninactive_file 250\n",
        )
        .unwrap();
    }
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let run = Command::new("sh")
        .arg(observability().join("unit-memory.sh"))
        .args([out.to_str().unwrap(), "0"])
        .env("RAVE_UNIT_CGROUPS", &cgroups)
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let text = std::fs::read_to_string(out.join("unit-memory.prom")).unwrap();
    assert!(
        text.contains("rave_unit_memory_working_set_bytes{unit=\"limited.service\"} 750\n"),
        "{text}"
    );
    assert!(
        text.contains("rave_unit_memory_max_bytes{unit=\"limited.service\"} 2000\n"),
        "{text}"
    );
    assert!(
        !text.contains("unlimited"),
        "a service without a MemoryMax is left out: {text}"
    );
    let check = Command::new("sh")
        .arg("-c")
        .arg("promtool check metrics < \"$1\"")
        .arg("sh")
        .arg(out.join("unit-memory.prom"))
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
}
