//! No orphans: however the harness ends, no QEMU and no state directory stay.
//!
//! - SIGKILL of `rave-harness boot --keep`: the parent-death signal takes QEMU
//!   down at once; the state directory, which nothing could remove then, is
//!   swept by the next harness to start.
//! - SIGTERM and SIGINT of `rave-harness run` in the middle of a case: every
//!   guest is killed and its state directory removed before the exit, and
//!   the JUnit report is still written (valid, the case cut short in it).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use rave_harness::retry::{retry, Deadline, Poll};

/// Building the image from nothing and booting under TCG both fit in this.
const BOOT_DEADLINE: Duration = Duration::from_secs(900);

fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

#[test]
fn sigkill_of_the_harness_takes_qemu_down() {
    let mut harness = Command::new(env!("CARGO_BIN_EXE_rave-harness"))
        .args(["boot", "--profile", "p0", "--keep"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("rave-harness starts");
    let stdout = harness.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = match rx.recv_timeout(BOOT_DEADLINE) {
        Ok(line) => line,
        Err(_) => {
            let _ = harness.kill();
            panic!("rave-harness boot printed nothing within {BOOT_DEADLINE:?}");
        }
    };
    let description: serde_json::Value = match serde_json::from_str(&line) {
        Ok(v) => v,
        Err(e) => {
            let status = harness.wait().unwrap();
            panic!("rave-harness boot did not print a guest description ({e}); it ended {status}; it printed {line:?}");
        }
    };
    let qemu_pid = description["pid"].as_u64().expect("the description has the QEMU pid") as u32;
    let cmdline = std::fs::read(format!("/proc/{qemu_pid}/cmdline")).unwrap_or_default();
    assert!(
        String::from_utf8_lossy(&cmdline).contains("qemu-system"),
        "pid {qemu_pid} is not QEMU"
    );
    let state_dir = description["state_dir"].as_str().unwrap().to_string();

    harness.kill().unwrap(); // SIGKILL: no destructor, no handler runs.
    harness.wait().unwrap();

    let gone = retry(
        Deadline::new(Duration::from_secs(10), Duration::from_millis(50)),
        || {
            if alive(qemu_pid) {
                Poll::<(), ()>::Pending(format!("QEMU pid {qemu_pid} still alive"))
            } else {
                Poll::Ready(())
            }
        },
    );
    if gone.is_err() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(qemu_pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    assert!(
        gone.is_ok(),
        "QEMU (pid {qemu_pid}) outlived the harness killed with SIGKILL"
    );
    // A SIGKILLed harness cannot remove its state directory; the next one does.
    assert!(std::path::Path::new(&state_dir).is_dir());
    let next = Command::new(env!("CARGO_BIN_EXE_rave-harness"))
        .args(["images", "list"])
        .output()
        .unwrap();
    assert!(next.status.success(), "{next:?}");
    let swept = !std::path::Path::new(&state_dir).exists();
    let _ = std::fs::remove_dir_all(&state_dir);
    assert!(swept, "the next harness left the dead one's {state_dir}");
}

/// The JUnit file at `path`, which must validate against the XSD (`scripts/validate-junit`).
fn valid_junit(path: &std::path::Path) -> String {
    let xml = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("no JUnit report at {}: {e}", path.display()));
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/validate-junit");
    let out = Command::new(&script).arg(path).output().unwrap();
    assert!(
        out.status.success(),
        "the JUnit report does not validate: {}{}\n{xml}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    xml
}

/// Starts `run` on a case that takes a while, waits for its guest, sends `signal`.
fn signal_mid_case(signal: nix::sys::signal::Signal) {
    let events = tempfile::NamedTempFile::new().unwrap();
    let reports = tempfile::tempdir().unwrap();
    let junit = reports.path().join("junit.xml");
    let mut harness = Command::new(env!("CARGO_BIN_EXE_rave-harness"))
        .args([
            "run",
            "--profile",
            "p0",
            "--filter",
            "p0::http_health::webhook_security",
            "--junit",
        ])
        .arg(&junit)
        .arg("--json")
        .arg(events.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("rave-harness starts");
    let booted = retry(Deadline::new(BOOT_DEADLINE, Duration::from_millis(100)), || {
        let text = std::fs::read_to_string(events.path()).unwrap_or_default();
        match text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|e| e["event"] == "boot_finished")
        {
            Some(event) => Poll::<_, ()>::Ready(event),
            None => Poll::Pending("no boot_finished event yet".into()),
        }
    });
    let event = match booted {
        Ok(event) => event,
        Err(e) => {
            let _ = harness.kill();
            panic!("the run booted no guest: {e:?}");
        }
    };
    let qemu_pid = event["pid"].as_u64().unwrap() as u32;
    let state_dir = event["state_dir"].as_str().unwrap().to_string();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(harness.id() as i32), signal).unwrap();
    let status = harness.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut harness.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(128 + signal as i32), "{stderr}");
    assert!(
        !alive(qemu_pid),
        "QEMU {qemu_pid} outlived the harness stopped by {signal:?}"
    );
    assert!(
        !std::path::Path::new(&state_dir).exists(),
        "{state_dir} outlived the harness stopped by {signal:?}"
    );
    let xml = valid_junit(&junit);
    assert!(xml.contains("webhook_security"), "{xml}");
    assert!(xml.contains(&format!("run cut short by {signal:?}")), "{xml}");
}

#[test]
fn sigterm_mid_case_leaves_no_qemu_and_no_state() {
    signal_mid_case(nix::sys::signal::Signal::SIGTERM);
}

#[test]
fn sigint_mid_case_leaves_no_qemu_and_no_state() {
    signal_mid_case(nix::sys::signal::Signal::SIGINT);
}

/// 6 s: a restore (about 3 s) and then the webhook case (7-11 s alone) cannot
/// both fit, whether the saved state exists or is being made; its fault test,
/// next on its own guest, cannot start.
#[test]
fn a_run_past_its_deadline_stops_every_guest_and_exits_124() {
    let events = tempfile::NamedTempFile::new().unwrap();
    let reports = tempfile::tempdir().unwrap();
    let junit = reports.path().join("junit.xml");
    let started = std::time::Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_rave-harness"))
        .args([
            "run",
            "--profile",
            "p0",
            "--faults",
            "--filter",
            "p0::http_health::webhook_security",
            "--deadline",
            "6",
            "--junit",
        ])
        .arg(&junit)
        .arg("--json")
        .arg(events.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(124), "{stderr}");
    assert!(stderr.contains("deadline of 6 s"), "{stderr}");
    let xml = valid_junit(&junit);
    assert!(
        xml.contains("run cut short at its deadline of 6 s while it ran"),
        "the running trial is not timed out by the cut: {xml}"
    );
    assert!(
        xml.contains("run cut short at its deadline of 6 s: not started"),
        "the trial not started is not said so: {xml}"
    );
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(summary.contains("run cut short at its deadline of 6 s"), "{summary}");
    assert!(started.elapsed() < Duration::from_secs(60), "{:?}", started.elapsed());
    let text = std::fs::read_to_string(events.path()).unwrap();
    for event in text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
    {
        if event["event"] == "boot_finished" {
            assert!(
                !alive(event["pid"].as_u64().unwrap() as u32),
                "QEMU outlived the deadline"
            );
            assert!(!std::path::Path::new(event["state_dir"].as_str().unwrap()).exists());
        }
    }
}

#[test]
fn two_boots_at_once_get_their_own_ports_state_and_overlays() {
    let boot = || {
        Command::new(env!("CARGO_BIN_EXE_rave-harness"))
            .args(["boot", "--profile", "p0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (first, second) = (boot(), boot());
    let described: Vec<serde_json::Value> = [first, second]
        .into_iter()
        .map(|child| {
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            serde_json::from_slice(&out.stdout).unwrap()
        })
        .collect();
    for key in ["ssh_port", "https_port", "state_dir"] {
        assert_ne!(described[0][key], described[1][key], "both boots got the same {key}");
    }
    for d in &described {
        assert!(
            !std::path::Path::new(d["state_dir"].as_str().unwrap()).exists(),
            "state left after power-off"
        );
    }
}

#[test]
fn a_panic_inside_a_case_is_that_cases_harness_error_only_and_leaves_nothing() {
    use std::sync::Arc;

    use rave_harness::outcome::Outcome;
    use rave_harness::runner::events::JsonLines;
    use rave_harness::runner::{self, Trial, TrialKind};
    use rave_suites::plan;

    let nginx = plan::trials(&[rave::Profile::P0], false)
        .into_iter()
        .find(|t| t.name == "p0::systemd_services::nginx")
        .unwrap();
    let panicking = Trial::new(
        TrialKind::Case,
        "p0",
        "systemd_services",
        "panics",
        Arc::new(|_| panic!("a bug inside a case")),
    );
    let trials = [panicking, nginx];
    let settings = rave::Settings::from_env().expect("the environment's settings are valid");
    let mut options = plan::run_options(&settings);
    // One after the other, so the panic is over before the next case starts.
    options.cases_at_once = 1;
    let launcher = rave::Launcher::new(settings);
    let events = tempfile::NamedTempFile::new().unwrap();
    let report = runner::run(
        &trials,
        &launcher,
        &options,
        Arc::new(JsonLines::create(events.path()).unwrap()),
    );
    let (first, second) = (&report.records[0], &report.records[1]);
    assert!(
        matches!(&first.outcome, Outcome::HarnessError { message } if message.contains("panicked: a bug inside a case")),
        "{:?}",
        first.outcome
    );
    assert_eq!(second.outcome, Outcome::Passed, "the next case on the same guest");
    assert_eq!(report.guests.len(), 1);
    let text = std::fs::read_to_string(events.path()).unwrap();
    let boot = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|e| e["event"] == "boot_finished")
        .expect("a boot_finished event");
    assert!(!alive(boot["pid"].as_u64().unwrap() as u32), "QEMU outlived the run");
    let state_dir = boot["state_dir"].as_str().unwrap();
    assert!(!std::path::Path::new(state_dir).exists(), "{state_dir} left");
}
