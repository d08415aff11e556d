//! The example as its user would run it: its own image boots, its two checks
//! pass through rave-harness's runner, and the events and JUnit say so.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use byo_image::{own_image, trials, OwnGuests, LABEL};
use rave_harness::outcome::{CheckError, Outcome};
use rave_harness::runner::events::{Discard, Fanout, JsonLines};
use rave_harness::runner::{self, RunOptions, Trial, TrialKind};
use rave_harness::Tools;

/// One guest at a time: the tests of this file boot one after another.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The example's image, made in `dir`, and guests of it with states in `states`.
fn guests(dir: &std::path::Path, states: &std::path::Path) -> OwnGuests {
    let base = std::env::var_os("BYO_BASE_IMAGE").expect(
        "BYO_BASE_IMAGE names an image directory (scripts/test sets it: rave-harness images path --profile p0)",
    );
    let image = own_image(base.as_ref(), dir).expect("an image of its own on the base image's files");
    assert_eq!(image.manifest.profile, LABEL);
    assert!(image.manifest.properties.is_empty(), "no rave properties");
    OwnGuests {
        image,
        tools: Tools::find(&std::env::var_os("PATH").unwrap_or_default(), None).expect("QEMU is installed"),
        state_root: states.to_path_buf(),
    }
}

/// This file's turn to boot, a folder for the image and the run's files, one
/// for the saved states, and the guests (the folders live as long as they).
fn fixture() -> (
    std::sync::MutexGuard<'static, ()>,
    tempfile::TempDir,
    tempfile::TempDir,
    OwnGuests,
) {
    let one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let states = tempfile::tempdir().unwrap();
    let guests = guests(dir.path(), states.path());
    (one, dir, states, guests)
}

#[test]
fn an_image_of_ones_own_runs_two_checks_of_its_own() {
    let (_one, dir, _states, guests) = fixture();
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

/// `--retries` as a crate of one's own gets it: a check red on its first
/// attempt and green on its rerun (a fresh guest) is flaky, not passed; the
/// red attempt's guest left its journals and serial log, which JUnit links;
/// a check red every time stays red, its reruns said.
#[test]
fn a_check_red_then_green_is_flaky_and_its_red_guest_leaves_its_files() {
    let (_one, dir, _states, guests) = fixture();
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&calls);
    let trials = vec![
        Trial::new(
            TrialKind::Case,
            LABEL,
            "web",
            "red_once",
            Arc::new(move |machine| {
                machine.succeed("true")?;
                match seen.fetch_add(1, Ordering::SeqCst) {
                    0 => Err(CheckError::failed("red on the first attempt, as this test wants")),
                    _ => Ok(()),
                }
            }),
        )
        .needing(&["proxy"]),
        Trial::new(
            TrialKind::Fault,
            LABEL,
            "web",
            "red_always",
            Arc::new(|machine| {
                machine.succeed("true")?;
                Err(CheckError::failed("red every time, as this test wants"))
            }),
        )
        .needing(&["db"]),
    ];
    let attachments = dir.path().join("attachments");
    let options = RunOptions {
        guest_prefix: "byo".into(),
        retries: 1,
        attachments: Some(attachments.clone()),
        ..RunOptions::default()
    };
    let report = runner::run(&trials, &guests, &options, Arc::new(Discard));
    let (once, always) = (&report.records[0], &report.records[1]);
    assert_eq!(calls.load(Ordering::SeqCst), 2, "one rerun, on a fresh guest");
    assert!(once.is_flaky(), "{once:?}");
    assert_eq!(once.reruns.len(), 1);
    assert_eq!((report.passed(), report.flaky(), report.reds()), (0, 1, 1));
    assert!(
        always.outcome.message().is_some_and(|m| m.contains("red every time")),
        "{always:?}"
    );
    assert_eq!(always.reruns.len(), 1, "{always:?}");
    let files = |record: &rave_harness::runner::report::TrialRecord| -> Vec<String> {
        record
            .attachments
            .iter()
            .map(|p| p.strip_prefix(&attachments).unwrap().display().to_string())
            .collect()
    };
    // The journal of the unit the trial needs, and the console when it printed anything
    // (a restored guest's shows only what came after the restore; the steps then say so).
    let kept = files(once);
    assert_eq!(
        kept[0], "web__web__red_once/journal-nginx.service.txt",
        "the first attempt's guest left the journal of the unit its trial needs: {kept:?}"
    );
    let said_serial = kept.contains(&"web__web__red_once/serial.log".to_string())
        || once
            .steps
            .iter()
            .any(|s| s.contains("the serial console printed nothing"));
    assert!(
        said_serial,
        "neither a serial.log nor why not: {kept:?} {:?}",
        once.steps
    );
    assert!(
        files(always)
            .iter()
            .any(|f| f.starts_with("fault__web__web__red_always/rerun-1/journal-")),
        "{:?}",
        files(always)
    );
    for file in once.attachments.iter().chain(&always.attachments) {
        assert!(
            std::fs::metadata(file).unwrap().len() > 0,
            "{} is empty",
            file.display()
        );
    }
    let journal = std::fs::read_to_string(&once.attachments[0]).unwrap();
    assert!(journal.contains("nginx"), "not nginx's journal: {journal:.300}");
    let junit = report.junit();
    assert!(junit.contains("<flakyFailure"), "{junit}");
    assert!(junit.contains("<rerunFailure"), "{junit}");
    assert!(
        junit.contains(&format!("[[ATTACHMENT|{}]]", once.attachments[0].display())),
        "{junit}"
    );
    let path = dir.path().join("junit.xml");
    std::fs::write(&path, &junit).unwrap();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/validate-junit");
    let out = std::process::Command::new(&script).arg(&path).output().unwrap();
    assert!(
        out.status.success(),
        "the JUnit does not validate: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
