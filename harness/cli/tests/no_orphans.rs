//! SIGKILL of the harness while a guest runs leaves no QEMU behind.
//!
//! Boots a real P0 guest with `rave-harness boot --keep` (building the image
//! when the cache lacks it), kills the harness with SIGKILL, and waits for
//! QEMU to be gone: the parent-death signal must take it down.

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
    // A SIGKILLed harness cannot remove its state directory; this test does.
    let _ = std::fs::remove_dir_all(state_dir);
    assert!(
        gone.is_ok(),
        "QEMU (pid {qemu_pid}) outlived the harness killed with SIGKILL"
    );
}
