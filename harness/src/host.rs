//! Can this host run the guest asked for? QEMU present, memory and CPUs
//! enough. Nothing here reads the environment: the programs' search path
//! and QEMU's own path come from the caller.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

/// What QEMU itself needs beyond the guest's RAM (translation cache, devices).
pub const QEMU_OVERHEAD_MB: u64 = 512;

/// Guest CPUs run per host CPU when nothing else is asked: guests mostly wait
/// (for scrapes, for a stability window), so two guest CPUs share a host
/// CPU. Measured (README, "Guests at once"): all 61 rave trials under TCG on a
/// 2-CPU host took 1175 s one guest at a time, 649 s two at once, their
/// QEMUs busy 0.56 and 0.98 host CPUs on average, nothing red.
pub const GUEST_CPUS_PER_HOST_CPU: usize = 2;

/// A host that cannot run the guest, said in one line with the fix.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HostError {
    /// A program the harness needs is not installed.
    #[error("{program} not found on PATH: install {package} (scripts/setup does)")]
    MissingProgram {
        /// The program.
        program: String,
        /// The Debian package that has it.
        package: String,
    },
    /// Not enough free memory for the guest.
    #[error("QEMU_RAM_MB={ram_mb} needs {needed_mb} MiB free (guest plus QEMU), but this host has {available_mb} MiB available: lower QEMU_RAM_MB or free memory")]
    Memory {
        /// The guest RAM asked for.
        ram_mb: u32,
        /// What that needs in all.
        needed_mb: u64,
        /// What the host has.
        available_mb: u64,
    },
    /// More guest CPUs than the host has.
    #[error("QEMU_CPUS={cpus} is more than this host's {host_cpus} CPUs: lower QEMU_CPUS")]
    Cpus {
        /// The CPUs asked for.
        cpus: u32,
        /// What the host has.
        host_cpus: usize,
    },
}

/// The host's free memory and CPU count, as sysinfo reads them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostResources {
    /// Available memory in MiB.
    pub available_mb: u64,
    /// Logical CPUs.
    pub cpus: usize,
}

impl HostResources {
    /// Reads this host's resources.
    pub fn read() -> Self {
        // sysinfo refuses only on an OS it does not support; then nothing is checked.
        let Ok(mut sys) = sysinfo::System::new() else {
            return HostResources {
                available_mb: u64::MAX,
                cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            };
        };
        sys.refresh_memory();
        sys.refresh_cpu_list(sysinfo::CpuRefreshKind::nothing());
        HostResources {
            available_mb: sys.available_memory() / (1024 * 1024),
            cpus: sys.cpus().len().max(1),
        }
    }

    /// How many guests of `ram_mb` MiB and `cpus` CPUs run at once: `asked`
    /// if given, else [`GUEST_CPUS_PER_HOST_CPU`] guest CPUs per host CPU;
    /// never more than the host's available memory holds (guest RAM plus
    /// [`QEMU_OVERHEAD_MB`] each), and at least one.
    pub fn guests_at_once(&self, ram_mb: u32, cpus: u32, asked: Option<usize>) -> usize {
        let by_cpus = self.cpus * GUEST_CPUS_PER_HOST_CPU / (cpus.max(1) as usize);
        let by_memory = self.available_mb / (u64::from(ram_mb) + QEMU_OVERHEAD_MB);
        asked
            .unwrap_or(by_cpus)
            .min(by_memory.min(usize::MAX as u64) as usize)
            .max(1)
    }

    /// Checks that a guest of `ram_mb` MiB and `cpus` CPUs fits.
    pub fn check(&self, ram_mb: u32, cpus: u32) -> Result<(), HostError> {
        let needed_mb = u64::from(ram_mb) + QEMU_OVERHEAD_MB;
        if self.available_mb < needed_mb {
            return Err(HostError::Memory {
                ram_mb,
                needed_mb,
                available_mb: self.available_mb,
            });
        }
        if cpus as usize > self.cpus {
            return Err(HostError::Cpus {
                cpus,
                host_cpus: self.cpus,
            });
        }
        Ok(())
    }
}

/// Finds a program on `search_path` (a `PATH` value), or says which package to install.
pub fn find_program(program: &str, package: &str, search_path: &OsStr) -> Result<PathBuf, HostError> {
    std::env::split_paths(search_path)
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
        .ok_or_else(|| HostError::MissingProgram {
            program: program.into(),
            package: package.into(),
        })
}

/// The programs a booted guest needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tools {
    /// The QEMU system emulator.
    pub qemu: PathBuf,
    /// qemu-img, for overlays.
    pub qemu_img: PathBuf,
}

impl Tools {
    /// Finds them on `search_path`; `qemu` (when given, e.g. a build of
    /// one's own) is used instead of the emulator found there.
    pub fn find(search_path: &OsStr, qemu: Option<&Path>) -> Result<Tools, HostError> {
        let qemu = match qemu {
            Some(p) if is_executable(p) => p.to_path_buf(),
            Some(p) => {
                return Err(HostError::MissingProgram {
                    program: p.display().to_string(),
                    package: "qemu-system-x86 (the QEMU named is not an executable file)".into(),
                })
            }
            None => find_program("qemu-system-x86_64", "qemu-system-x86", search_path)?,
        };
        Ok(Tools {
            qemu,
            qemu_img: find_program("qemu-img", "qemu-utils", search_path)?,
        })
    }
}

/// Whether `path` is a file with an execute bit.
pub fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_guest_cpus_per_host_cpu_as_far_as_memory_holds() {
        let host = |available_mb, cpus| HostResources { available_mb, cpus };
        assert_eq!(host(24_000, 2).guests_at_once(3072, 2, None), 2);
        assert_eq!(host(24_000, 1).guests_at_once(3072, 2, None), 1);
        assert_eq!(host(24_000, 2).guests_at_once(1024, 1, None), 4);
        // 8 CPUs would hold 8 guests; 24 GB hold 6 of 3.5 GB.
        assert_eq!(host(24_000, 8).guests_at_once(3072, 2, None), 6);
        assert_eq!(host(7_000, 8).guests_at_once(3072, 2, None), 1);
        assert_eq!(host(1_000, 1).guests_at_once(3072, 2, None), 1);
    }

    #[test]
    fn guests_asked_for_are_bounded_by_memory_alone() {
        let host = |available_mb, cpus| HostResources { available_mb, cpus };
        assert_eq!(host(24_000, 2).guests_at_once(3072, 2, Some(3)), 3);
        assert_eq!(host(8_000, 2).guests_at_once(3072, 2, Some(3)), 2);
        assert_eq!(host(1_000, 2).guests_at_once(3072, 2, Some(3)), 1);
    }

    #[test]
    fn too_little_memory_says_what_and_how() {
        let host = HostResources {
            available_mb: 2048,
            cpus: 2,
        };
        let err = host.check(3072, 2).unwrap_err();
        assert_eq!(err.to_string(), "QEMU_RAM_MB=3072 needs 3584 MiB free (guest plus QEMU), but this host has 2048 MiB available: lower QEMU_RAM_MB or free memory");
        assert!(host.check(1024, 2).is_ok());
    }

    #[test]
    fn more_cpus_than_the_host_is_refused() {
        let host = HostResources {
            available_mb: 24_000,
            cpus: 2,
        };
        assert_eq!(
            host.check(3072, 4).unwrap_err(),
            HostError::Cpus { cpus: 4, host_cpus: 2 }
        );
    }

    #[test]
    fn a_missing_program_names_its_package() {
        let err = find_program(
            "surely-not-a-program-rave",
            "rave-pkg",
            OsStr::new("/nonexistent:/also-not"),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "surely-not-a-program-rave not found on PATH: install rave-pkg (scripts/setup does)"
        );
    }
}
