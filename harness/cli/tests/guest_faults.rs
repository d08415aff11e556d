//! Faults of the guest and of QEMU end quickly, with what a person needs:
//! a kernel panic within seconds with the serial tail (not after the boot
//! deadline), a guest that never boots at its deadline with the serial tail,
//! QEMU killed in the middle of a command fails that command and every later
//! one at once, and sshd stopped in the guest is a clear SSH error.
//!
//! Real guests: the P0 image (built when the cache lacks it), booted cold with
//! a broken kernel command line, or restored from its saved state.

use std::time::{Duration, Instant};

use rave::{Launcher, Profile, Settings};
use rave_harness::retry::{retry, Deadline, Poll};
use rave_harness::{BootOptions, Image, Machine, MachineError};

fn launcher() -> Launcher {
    Launcher::new(Settings::from_env().expect("the environment's settings are valid"))
}

/// The P0 image with `extra` appended to its kernel command line.
fn broken_image(launcher: &Launcher, extra: &str) -> Image {
    let mut image = launcher.image(Profile::P0).expect("the P0 image");
    image.manifest.kernel_cmdline = format!("{} {extra}", image.manifest.kernel_cmdline);
    image
}

fn options(launcher: &Launcher, name: &str, boot_timeout: Duration) -> BootOptions {
    let tools = launcher.tools().expect("QEMU is installed");
    let mut options = launcher
        .settings
        .boot_options(name, tools, rave_harness::qemu_command::Accel::Tcg);
    options.boot_timeout = boot_timeout;
    options
}

#[test]
fn a_kernel_panic_is_reported_at_once_with_the_console() {
    let launcher = launcher();
    // PID 1 exits at once: "Kernel panic - not syncing: Attempted to kill init!"
    let image = broken_image(&launcher, "init=/bin/false");
    let started = Instant::now();
    let err = Machine::boot(&image, &options(&launcher, "rave-panic", Duration::from_secs(300))).unwrap_err();
    let took = started.elapsed();
    let text = err.to_string();
    assert!(matches!(err, MachineError::QemuExited { .. }), "{text}");
    assert!(text.contains("Kernel panic"), "the serial tail lacks the panic: {text}");
    assert!(
        took < Duration::from_secs(90),
        "a panic took {took:?} to report (deadline 300 s)"
    );
}

#[test]
fn a_guest_that_never_boots_fails_at_its_deadline_with_the_console() {
    let launcher = launcher();
    // The initramfs waits for a root device that never comes (loglevel=7
    // undoes the image's `quiet`, so the console says so).
    let image = broken_image(&launcher, "root=/dev/vdz rootdelay=600 loglevel=7");
    let deadline = Duration::from_secs(40);
    let started = Instant::now();
    let err = Machine::boot(&image, &options(&launcher, "rave-noroot", deadline)).unwrap_err();
    let took = started.elapsed();
    let text = err.to_string();
    assert!(matches!(err, MachineError::Timeout { .. }), "{text}");
    assert!(text.contains("SSH key login"), "{text}");
    assert!(
        !text.contains("(the serial console is empty)"),
        "no serial tail: {text}"
    );
    assert!(
        took < deadline + Duration::from_secs(30),
        "took {took:?} for a {deadline:?} deadline"
    );
}

#[test]
fn qemu_killed_mid_command_fails_it_and_every_later_one_at_once() {
    let launcher = launcher();
    let machine = launcher.boot(Profile::P0, "rave-crash").expect("a P0 guest");
    let started = Instant::now();
    let serial = machine.serial_log().unwrap();
    let err = std::thread::scope(|scope| {
        let running = scope.spawn(|| {
            machine.execute_within(
                "sudo sh -c 'echo rave-mid-command >/dev/ttyS0'; sleep 120",
                Duration::from_secs(150),
            )
        });
        // Mid-command: once the guest says on its console that the command runs.
        retry(
            Deadline::new(Duration::from_secs(60), Duration::from_millis(50)),
            || match std::fs::read_to_string(&serial) {
                Ok(text) if text.contains("rave-mid-command") => Poll::<(), ()>::Ready(()),
                _ => Poll::Pending("the command has not started".into()),
            },
        )
        .expect("the command starts");
        machine.crash().unwrap();
        running.join().unwrap().unwrap_err()
    });
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the command outlived QEMU: {:?}",
        started.elapsed()
    );
    assert!(matches!(err, MachineError::QemuExited { .. }), "{err}");
    let later = Instant::now();
    let again = machine.succeed("true").unwrap_err();
    assert!(matches!(again, MachineError::QemuExited { .. }), "{again}");
    assert!(later.elapsed() < Duration::from_secs(1), "{:?}", later.elapsed());
}

#[test]
fn sshd_stopped_in_the_guest_is_a_clear_ssh_error() {
    let launcher = launcher();
    let machine = launcher.boot(Profile::P0, "rave-nosshd").expect("a P0 guest");
    machine.succeed("sudo systemctl stop ssh.service").unwrap();
    let started = Instant::now();
    let err = machine.ssh_key_login("agent").unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, MachineError::Ssh { .. }), "{text}");
    assert!(
        text.contains(&machine.ssh_addr().to_string()),
        "the error does not say where: {text}"
    );
    assert!(started.elapsed() < Duration::from_secs(70), "{:?}", started.elapsed());
}
