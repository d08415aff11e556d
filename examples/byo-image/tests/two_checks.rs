//! The example as its user would run it: its own image boots, its two checks
//! pass through rave-harness's runner, and the events and JUnit say so.

use std::sync::Arc;

use byo_image::{own_image, trials, OwnGuests, LABEL};
use rave_harness::outcome::Outcome;
use rave_harness::runner::events::{Fanout, JsonLines};
use rave_harness::runner::{self, RunOptions};
use rave_harness::Tools;

#[test]
fn an_image_of_ones_own_runs_two_checks_of_its_own() {
    let base = std::env::var_os("BYO_BASE_IMAGE").expect(
        "BYO_BASE_IMAGE names an image directory (scripts/test sets it: rave-harness images path --profile p0)",
    );
    let dir = tempfile::tempdir().unwrap();
    let image = own_image(base.as_ref(), dir.path()).expect("an image of its own on the base image's files");
    assert_eq!(image.manifest.profile, LABEL);
    assert!(image.manifest.properties.is_empty(), "no rave properties");
    let states = tempfile::tempdir().unwrap();
    let guests = OwnGuests {
        image,
        tools: Tools::find(&std::env::var_os("PATH").unwrap_or_default(), None).expect("QEMU is installed"),
        state_root: states.path().to_path_buf(),
    };
    let events = dir.path().join("events.jsonl");
    let sinks = Fanout(vec![Arc::new(JsonLines::create(&events).unwrap())]);
    let options = RunOptions {
        guest_prefix: "byo".into(),
        ..RunOptions::default()
    };
    let report = runner::run(&trials(), &guests, &options, Arc::new(sinks));
    for record in &report.records {
        assert_eq!(record.outcome, Outcome::Passed, "{}: {:?}", record.name, record.outcome);
    }
    assert_eq!(report.passed(), 2);
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&events)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let finished: Vec<&str> = lines
        .iter()
        .filter(|e| e["event"] == "case_finished")
        .filter_map(|e| e["case"].as_str())
        .collect();
    assert_eq!(finished.len(), 2, "{finished:?}");
    assert!(lines.iter().any(|e| e["event"] == "step"), "the waits are steps");
    let junit = report.junit();
    assert!(junit.contains(r#"<testsuite name="web" tests="2""#), "{junit}");
    assert!(junit.contains("web::proxy_serves_tls"), "{junit}");
}
