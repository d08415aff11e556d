//! `rave-harness doctor`: can this host run the harness? One verdict per line
//! (QEMU, KVM, memory and CPUs against the run's settings, the cache's disk,
//! the tools the image build needs), each with what to do when it is not ok.
//!
//! [`DoctorFacts::gather`] looks at the host; [`DoctorFacts::verdicts`] is pure,
//! so the report of a described host is snapshot-tested.

use std::fmt;
use std::path::PathBuf;
use std::process::Command;

use std::ffi::OsString;

use rave_harness::accel::AccelChoice;
use rave_harness::host::{find_program, HostResources, Tools, QEMU_OVERHEAD_MB};

use crate::settings::Settings;

/// Free space the image cache wants: a base layer, three images, their saved
/// states, and three builds' scratch at once (the images build together; each
/// holds a rootfs, a raw disk and a qcow2, about 5 GiB; measured 2026-12-02:
/// an image 1.7 GiB, the base layer 1.3 GiB, the saved states 1.6 GiB).
pub const CACHE_FREE_WANTED_BYTES: u64 = 24 * 1024 * 1024 * 1024;

/// The programs the Debian image build runs, with the package that has each.
pub const BUILD_TOOLS: &[(&str, &str)] = &[
    ("mmdebstrap", "mmdebstrap"),
    ("mkfs.ext4", "e2fsprogs"),
    ("qemu-img", "qemu-utils"),
    ("age", "age"),
    ("age-keygen", "age"),
    ("openssl", "openssl"),
    ("npm", "npm"),
    ("cargo", "rustup or cargo"),
    ("unzip", "unzip"),
    ("flock", "util-linux"),
    ("xz", "xz-utils"),
];

/// What KVM did when probed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvmFact {
    /// A probe guest ran under KVM.
    Works,
    /// The probe failed, and why.
    Unusable(String),
    /// No probe was possible, and why (e.g. no kernel to boot).
    NotProbed(String),
}

/// Everything the doctor looked at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DoctorFacts {
    /// QEMU's path and first version line, or why it is missing.
    pub qemu: Result<(PathBuf, String), String>,
    /// KVM's verdict.
    pub kvm: KvmFact,
    /// The run's settings, or the bad value.
    pub config: Result<Settings, String>,
    /// Available memory and CPUs.
    pub host: HostResources,
    /// The image cache directory.
    pub cache_dir: PathBuf,
    /// Free bytes on the cache's filesystem, or why unknown.
    pub cache_free_bytes: Result<u64, String>,
    /// Whether a file can be made in the cache directory, or why not.
    pub cache_writable: Result<(), String>,
    /// Each build tool and whether it was found.
    pub tools: Vec<(String, String, bool)>,
}

/// How a line of the report judges its subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Fine.
    Ok,
    /// Works, but slower or with less margin.
    Warn,
    /// The harness cannot run until it is fixed.
    Fail,
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The judgement.
    pub level: Level,
    /// What was looked at.
    pub subject: String,
    /// What was found and, unless ok, what to do.
    pub detail: String,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tag = match self.level {
            Level::Ok => "ok  ",
            Level::Warn => "warn",
            Level::Fail => "FAIL",
        };
        write!(f, "{tag}  {:<10} {}", self.subject, self.detail)
    }
}

impl DoctorFacts {
    /// Looks at this host with `settings` (or the error reading them),
    /// programs found on `search_path`. `probe_kernel` is a kernel to boot
    /// for the KVM probe (a cached image's), when there is one.
    pub fn gather(
        config: Result<Settings, String>,
        search_path: OsString,
        cache_dir: PathBuf,
        probe_kernel: Option<PathBuf>,
    ) -> Self {
        let qemu_override = config.as_ref().ok().and_then(|s| s.qemu.clone());
        let qemu = Tools::find(&search_path, qemu_override.as_deref())
            .map(|tools| tools.qemu)
            .map_err(|e| e.to_string())
            .map(|path| {
                let version = Command::new(&path)
                    .arg("--version")
                    .output()
                    .ok()
                    .and_then(|o| String::from_utf8(o.stdout).ok())
                    .and_then(|s| s.lines().next().map(str::to_string))
                    .unwrap_or_else(|| "version unknown".into());
                (path, version)
            });
        let kvm = match (&qemu, &config, probe_kernel) {
            (_, Ok(c), _) if c.accel == AccelChoice::Tcg => KvmFact::NotProbed("RAVE_ACCEL=tcg".into()),
            (Err(_), _, _) => KvmFact::NotProbed("no QEMU to probe with".into()),
            (_, _, None) => KvmFact::NotProbed("no image kernel cached yet to probe with".into()),
            (Ok((qemu, _)), _, Some(kernel)) => match tempfile::tempdir() {
                Ok(scratch) => match rave_harness::accel::probe_kvm(qemu, &kernel, scratch.path()) {
                    Ok(()) => KvmFact::Works,
                    Err(reason) => KvmFact::Unusable(reason),
                },
                Err(e) => KvmFact::NotProbed(format!("no scratch directory: {e}")),
            },
        };
        let cache_free_bytes = free_bytes(&cache_dir);
        let cache_writable = std::fs::create_dir_all(&cache_dir)
            .and_then(|()| tempfile::tempfile_in(&cache_dir).map(|_| ()))
            .map_err(|e| e.to_string());
        let tools = BUILD_TOOLS
            .iter()
            .map(|(program, package)| {
                (
                    program.to_string(),
                    package.to_string(),
                    find_program(program, package, &search_path).is_ok(),
                )
            })
            .collect();
        DoctorFacts {
            qemu,
            kvm,
            config,
            host: HostResources::read(),
            cache_dir,
            cache_free_bytes,
            cache_writable,
            tools,
        }
    }

    /// The report's lines.
    pub fn verdicts(&self) -> Vec<Verdict> {
        let mut out = Vec::new();
        let mut say = |level, subject: &str, detail: String| {
            out.push(Verdict {
                level,
                subject: subject.into(),
                detail,
            })
        };
        match &self.qemu {
            Ok((path, version)) => say(Level::Ok, "qemu", format!("{version} ({})", path.display())),
            Err(e) => say(Level::Fail, "qemu", e.clone()),
        }
        let kvm_demanded = matches!(&self.config, Ok(c) if c.accel == AccelChoice::Kvm);
        match &self.kvm {
            KvmFact::Works => say(Level::Ok, "kvm", "a probe guest ran under KVM".into()),
            KvmFact::Unusable(reason) if kvm_demanded => say(
                Level::Fail,
                "kvm",
                format!("RAVE_ACCEL=kvm but KVM does not work: {reason}; use RAVE_ACCEL=auto or tcg"),
            ),
            KvmFact::Unusable(reason) => say(
                Level::Warn,
                "kvm",
                format!("unusable ({reason}); guests run under TCG, several times slower"),
            ),
            KvmFact::NotProbed(why) => say(Level::Warn, "kvm", format!("not probed: {why}")),
        }
        match &self.config {
            Err(e) => say(Level::Fail, "settings", e.clone()),
            Ok(c) => {
                say(Level::Ok, "settings", c.to_string());
                let needed = u64::from(c.ram_mb) + QEMU_OVERHEAD_MB;
                let available = self.host.available_mb;
                if available < needed {
                    say(
                        Level::Fail,
                        "memory",
                        format!(
                            "{available} MiB available, one guest needs {needed} MiB: lower QEMU_RAM_MB or free memory"
                        ),
                    );
                } else {
                    say(
                        Level::Ok,
                        "memory",
                        format!(
                            "{available} MiB available; one guest needs {needed} MiB, room for {}",
                            available / needed
                        ),
                    );
                }
                if c.cpus as usize > self.host.cpus {
                    say(
                        Level::Fail,
                        "cpus",
                        format!(
                            "QEMU_CPUS={} but the host has {}: lower QEMU_CPUS",
                            c.cpus, self.host.cpus
                        ),
                    );
                } else {
                    say(
                        Level::Ok,
                        "cpus",
                        format!("{} on the host, {} per guest", self.host.cpus, c.cpus),
                    );
                }
            }
        }
        let cache = self.cache_dir.display();
        match (&self.cache_writable, &self.cache_free_bytes) {
            (Err(e), _) => say(
                Level::Fail,
                "cache",
                format!("{cache} is not writable ({e}): set RAVE_CACHE_DIR to a writable directory"),
            ),
            (Ok(()), Err(e)) => say(Level::Warn, "cache", format!("{cache}: free space unknown ({e})")),
            (Ok(()), Ok(free)) if *free < CACHE_FREE_WANTED_BYTES => say(
                Level::Warn,
                "cache",
                format!(
                    "{cache}: {} GiB free, building the images and saving their guests wants {} GiB: free space or set RAVE_CACHE_DIR",
                    free / (1 << 30),
                    CACHE_FREE_WANTED_BYTES / (1 << 30)
                ),
            ),
            (Ok(()), Ok(free)) => say(Level::Ok, "cache", format!("{cache}: {} GiB free", free / (1 << 30))),
        }
        let missing: Vec<String> = self
            .tools
            .iter()
            .filter(|(_, _, found)| !found)
            .map(|(program, package, _)| format!("{program} ({package})"))
            .collect();
        if missing.is_empty() {
            say(
                Level::Ok,
                "build",
                format!("every image build tool is installed ({})", self.tools.len()),
            );
        } else {
            say(
                Level::Fail,
                "build",
                format!("missing: {}: run scripts/setup", missing.join(", ")),
            );
        }
        out
    }

    /// The report and whether nothing failed.
    pub fn report(&self) -> (String, bool) {
        let verdicts = self.verdicts();
        let ok = verdicts.iter().all(|v| v.level != Level::Fail);
        let mut text: String = verdicts.iter().map(|v| format!("{v}\n")).collect();
        text.push_str(if ok {
            "verdict: this host can run rave-harness\n"
        } else {
            "verdict: fix the FAIL lines above first\n"
        });
        (text, ok)
    }
}

fn free_bytes(dir: &std::path::Path) -> Result<u64, String> {
    // The cache may not exist yet: measure the nearest existing ancestor.
    let existing = dir.ancestors().find(|d| d.exists()).unwrap_or(dir);
    nix::sys::statvfs::statvfs(existing)
        .map(|s| s.blocks_available() * s.fragment_size())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Settings {
        Settings::from_vars(
            &pairs
                .iter()
                .map(|(k, v)| (OsString::from(k), OsString::from(v)))
                .collect(),
        )
        .unwrap()
    }

    fn described_host() -> DoctorFacts {
        DoctorFacts {
            qemu: Ok((
                "/usr/bin/qemu-system-x86_64".into(),
                "QEMU emulator version 7.2.19 (Debian 1:7.2+dfsg-7+deb12u18)".into(),
            )),
            kvm: KvmFact::Unusable("a KVM probe guest hung for 10s".into()),
            config: Ok(settings(&[])),
            host: HostResources {
                available_mb: 22_000,
                cpus: 2,
            },
            cache_dir: "/root/.cache/rave-harness".into(),
            cache_free_bytes: Ok(40 << 30),
            cache_writable: Ok(()),
            tools: BUILD_TOOLS
                .iter()
                .map(|(p, k)| (p.to_string(), k.to_string(), true))
                .collect(),
        }
    }

    #[test]
    fn report_of_a_tcg_only_host() {
        let (text, ok) = described_host().report();
        assert!(ok);
        insta::assert_snapshot!(text);
    }

    #[test]
    fn report_of_a_host_that_cannot_run_it() {
        let mut facts = described_host();
        facts.qemu = Err("qemu-system-x86_64 not found on PATH: install qemu-system-x86 (scripts/setup does)".into());
        facts.kvm = KvmFact::Unusable("/dev/kvm cannot be opened: No such file or directory".into());
        let mut big = settings(&[("SAFE", "0"), ("QEMU_CPUS", "4"), ("RAVE_ACCEL", "kvm")]);
        big.ram_mb = 30_000;
        facts.config = Ok(big);
        facts.cache_writable = Err("Permission denied (os error 13)".into());
        facts.tools[0].2 = false;
        let (text, ok) = facts.report();
        assert!(!ok);
        insta::assert_snapshot!(text);
    }
}
