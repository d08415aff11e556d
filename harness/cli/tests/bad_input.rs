//! Bad input ends in one clear line on stderr and a non-zero exit, never a
//! panic or a hang: settings out of range or not numbers, a bad SAFE or
//! accelerator, a missing, truncated or unknown-field manifest, a corrupt
//! disk, an unwritable cache, QEMU missing, more CPUs than the host has, and
//! KVM demanded where it does not work.
//!
//! Most run the real binary against a fake nixos image directory (no guest
//! boots); the KVM one boots the P0 kernel for the probe. A broken image
//! (its disk truncated) makes each of its trials a harness error, in the
//! summary and in JUnit, not N failed cases.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const MANIFEST: &str = r#"{"schema":2,"profile":"p0","flavor":"nixos","kernel":"bzImage","initrd":"initrd","disk":"nixos.qcow2","kernel_cmdline":"console=ttyS0","ssh_user":"agent","components":{"nginx":{"unit":"nginx.service"}},"properties":{"safe_mode":true}}"#;

/// A fake nixos image tree: `DIR/p0/` with the manifest and the files it names.
fn fake_images(manifest: &str) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let p0 = root.path().join("p0");
    std::fs::create_dir(&p0).unwrap();
    std::fs::write(p0.join("manifest.json"), manifest).unwrap();
    for file in ["bzImage", "initrd", "nixos.qcow2"] {
        std::fs::write(p0.join(file), b"not a real file").unwrap();
    }
    root
}

/// Runs the harness with `env` and `args`; returns the exit code and stderr.
fn harness(env: &[(&str, &str)], args: &[&str], images: Option<&Path>) -> (Option<i32>, String) {
    let cache = tempfile::tempdir().unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_rave-harness"));
    command
        .args(args)
        .env("RAVE_CACHE_DIR", cache.path())
        .env("RAVE_ACCEL", "tcg");
    for var in [
        "QEMU_RAM_MB",
        "QEMU_CPUS",
        "SAFE",
        "RAVE_FLAVOR",
        "RAVE_COLD",
        "RAVE_QEMU",
        "RAVE_TCG_CPU",
        "RAVE_GUESTS_AT_ONCE",
        "RAVE_KERNEL_ARGS",
    ] {
        command.env_remove(var);
    }
    if let Some(images) = images {
        command.env("RAVE_NIXOS_IMAGES", images);
    }
    command.envs(env.iter().copied());
    let started = Instant::now();
    let out = command.output().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{args:?} {env:?} took {:?}",
        started.elapsed()
    );
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// One line, naming `needle`, exit 2 (bad input), no panic.
fn assert_one_clear_line(result: (Option<i32>, String), needle: &str) {
    let (code, stderr) = result;
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(code, Some(2), "{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "more than one line: {stderr}");
    assert!(lines[0].contains(needle), "{needle:?} not in {stderr}");
}

const BOOT_NIXOS: &[&str] = &["boot", "--profile", "p0", "--flavor", "nixos"];

#[test]
fn bad_settings() {
    for (var, value) in [
        ("QEMU_RAM_MB", "abc"),
        ("QEMU_RAM_MB", "0"),
        ("QEMU_RAM_MB", "99999"),
        ("QEMU_CPUS", "two"),
        ("QEMU_CPUS", "0"),
        ("QEMU_CPUS", "64"),
        ("SAFE", "2"),
        ("RAVE_ACCEL", "hvf"),
        ("RAVE_FLAVOR", "bsd"),
        ("RAVE_COLD", "yes"),
    ] {
        assert_one_clear_line(harness(&[(var, value)], &["boot", "--profile", "p0"], None), var);
    }
}

#[test]
fn more_cpus_than_the_host_has() {
    let images = fake_images(MANIFEST);
    let host_cpus = std::thread::available_parallelism().unwrap().get();
    if host_cpus >= 4 {
        return; // SAFE=0 allows 4: nothing to exceed on this host
    }
    let result = harness(
        &[("SAFE", "0"), ("QEMU_CPUS", "4"), ("RAVE_COLD", "1")],
        BOOT_NIXOS,
        Some(images.path()),
    );
    assert_one_clear_line(result, "QEMU_CPUS=4");
}

#[test]
fn bad_manifests() {
    let missing = tempfile::tempdir().unwrap();
    std::fs::create_dir(missing.path().join("p0")).unwrap();
    assert_one_clear_line(harness(&[], BOOT_NIXOS, Some(missing.path())), "RAVE_NIXOS_IMAGES");
    let truncated = fake_images(&MANIFEST[..MANIFEST.len() / 2]);
    assert_one_clear_line(harness(&[], BOOT_NIXOS, Some(truncated.path())), "manifest.json");
    let unknown = fake_images(&MANIFEST.replacen('{', "{\"colour\":1,", 1));
    assert_one_clear_line(harness(&[], BOOT_NIXOS, Some(unknown.path())), "unknown field `colour`");
}

#[test]
fn a_corrupt_disk() {
    let images = fake_images(MANIFEST);
    assert_one_clear_line(
        harness(&[("RAVE_COLD", "1")], BOOT_NIXOS, Some(images.path())),
        "nixos.qcow2",
    );
}

#[test]
fn qemu_missing() {
    let images = fake_images(MANIFEST);
    let result = harness(
        &[("RAVE_QEMU", "/nonexistent/qemu-system-x86_64")],
        BOOT_NIXOS,
        Some(images.path()),
    );
    assert_one_clear_line(result, "/nonexistent/qemu-system-x86_64");
}

#[test]
fn an_unwritable_cache() {
    let (code, stderr) = {
        let mut command = Command::new(env!("CARGO_BIN_EXE_rave-harness"));
        command
            .args(["images", "build", "--profile", "p0"])
            .env("RAVE_CACHE_DIR", "/proc/rave-harness-cache");
        let out = command.output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    assert_one_clear_line((code, stderr), "RAVE_CACHE_DIR");
}

/// The cached P0 kernel, when a P0 image has been built.
fn cached_p0_kernel() -> Option<PathBuf> {
    let out = Command::new(env!("CARGO_BIN_EXE_rave-harness"))
        .args(["images", "path", "--profile", "p0"])
        .output()
        .ok()?;
    let dir = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
    let image = rave_harness::Image::load(&dir).ok()?;
    Some(image.kernel()).filter(|k| k.is_file())
}

#[test]
fn kvm_demanded_where_it_does_not_work() {
    let Some(kernel) = cached_p0_kernel() else {
        panic!("no P0 image in the cache: run rave-harness images build --profile p0 first");
    };
    let images = fake_images(MANIFEST);
    std::fs::remove_file(images.path().join("p0/bzImage")).unwrap();
    std::os::unix::fs::symlink(kernel, images.path().join("p0/bzImage")).unwrap();
    let (code, stderr) = harness(&[("RAVE_ACCEL", "kvm")], BOOT_NIXOS, Some(images.path()));
    if !stderr.contains("KVM does not work") {
        eprintln!("KVM works on this host: nothing to refuse ({stderr})");
        return;
    }
    assert_one_clear_line((code, stderr), "RAVE_ACCEL=kvm");
}

#[test]
fn a_full_disk_for_the_state() {
    let Some(kernel) = cached_p0_kernel() else {
        panic!("no P0 image in the cache: run rave-harness images build --profile p0 first");
    };
    let images = fake_images(MANIFEST);
    std::fs::remove_file(images.path().join("p0/bzImage")).unwrap();
    std::os::unix::fs::symlink(kernel, images.path().join("p0/bzImage")).unwrap();
    // A 64 KiB tmpfs, filled: the guest's state directory cannot be written.
    let full = tempfile::tempdir().unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
        .arg(full.path())
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("cannot mount a tmpfs here (not root?): nothing to check");
        return;
    }
    let filler = std::fs::write(full.path().join("filler"), vec![0u8; 1 << 20]);
    assert!(filler.is_err(), "the tmpfs took 1 MiB");
    let result = harness(
        &[("TMPDIR", full.path().to_str().unwrap()), ("RAVE_COLD", "1")],
        BOOT_NIXOS,
        Some(images.path()),
    );
    let _ = Command::new("umount").arg(full.path()).status();
    assert_one_clear_line(result, "No space left on device");
}

#[test]
fn a_broken_image_is_harness_errors_not_failures() {
    let Some(kernel) = cached_p0_kernel() else {
        panic!("no P0 image in the cache: run rave-harness images build --profile p0 first");
    };
    // The real P0 image, its disk truncated to a hundred bytes.
    let real = kernel.parent().unwrap();
    let images = tempfile::tempdir().unwrap();
    let p0 = images.path().join("p0");
    std::fs::create_dir(&p0).unwrap();
    for entry in std::fs::read_dir(real).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap();
        if name == "disk.qcow2" {
            let head = std::fs::read(&path).unwrap();
            std::fs::write(p0.join(name), &head[..100]).unwrap();
        } else {
            std::os::unix::fs::symlink(&path, p0.join(name)).unwrap();
        }
    }
    let junit = images.path().join("junit.xml");
    let mut command = Command::new(env!("CARGO_BIN_EXE_rave-harness"));
    command
        .args(["run", "--flavor", "nixos", "--profile", "p0", "--cold", "--junit"])
        .arg(&junit)
        .env("RAVE_NIXOS_IMAGES", images.path())
        .env("RAVE_ACCEL", "tcg");
    let started = Instant::now();
    let out = command.output().unwrap();
    assert!(started.elapsed() < Duration::from_secs(120), "{:?}", started.elapsed());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let totals = stdout.lines().find(|l| l.contains(" passed, ")).unwrap_or_default();
    assert!(totals.starts_with("0 passed, 0 failed, "), "{stdout}");
    assert!(!totals.contains(" 0 harness errors"), "{stdout}");
    assert!(stdout.contains("ERROR p0::systemd_services::nginx"), "{stdout}");
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(
        xml.contains("<error ") && xml.contains(r#"type="harness error""#),
        "{xml}"
    );
    assert!(!xml.contains("<failure"), "a broken image read as failed cases: {xml}");
}
