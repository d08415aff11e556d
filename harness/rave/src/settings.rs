//! The run's settings: every environment variable the project reads, read
//! once into one typed value (the core reads none).
//!
//! Every variable is parsed strictly: a value that is not what the variable
//! takes is an error that names the variable, the value and what it accepts.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

use rave_harness::accel::AccelChoice;
use rave_harness::host::{HostError, Tools};
use rave_harness::qemu_command::Accel;
use rave_harness::BootOptions;

use crate::profiles::{Flavor, SafeValues};

/// Guest RAM when `QEMU_RAM_MB` is unset.
pub const DEFAULT_RAM_MB: u32 = 3072;
/// Guest CPUs when `QEMU_CPUS` is unset.
pub const DEFAULT_CPUS: u32 = 2;
/// The most guests `RAVE_GUESTS_AT_ONCE` asks for.
pub const MAX_GUESTS_AT_ONCE: usize = 16;
/// Below this a guest of the contract cannot boot (PostgreSQL and Prometheus alone need it).
pub const MIN_RAM_MB: u32 = 512;

/// A variable of the environment that holds a value it does not take.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{var}={value:?} is not valid: {expected}")]
pub struct SettingsError {
    /// The variable's name.
    pub var: &'static str,
    /// What it held.
    pub value: String,
    /// What it takes, said so a person can fix it.
    pub expected: String,
}

/// The settings of one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Guest RAM in MiB (`QEMU_RAM_MB`).
    pub ram_mb: u32,
    /// Guest CPUs (`QEMU_CPUS`).
    pub cpus: u32,
    /// Accelerator choice (`RAVE_ACCEL`).
    pub accel: AccelChoice,
    /// SAFE mode (`SAFE`, on unless `SAFE=0`).
    pub safe_mode: bool,
    /// Kernel arguments appended to the image's command line
    /// (`RAVE_KERNEL_ARGS`, e.g. `systemd.log_level=debug`), for debugging a
    /// boot or measuring a change to it before it goes into an image.
    pub kernel_args: Option<String>,
    /// The CPU model QEMU emulates under TCG (`RAVE_TCG_CPU`, `max` unless
    /// set; e.g. `Nehalem` for a CPU without AVX), for measuring what a guest
    /// does on a narrower CPU (BENCHMARKS.md, claude-code-router's crash).
    pub tcg_cpu: String,
    /// How many guests run side by side (`RAVE_GUESTS_AT_ONCE`, 1 to
    /// [`MAX_GUESTS_AT_ONCE`]); `None` leaves it to the host's CPUs and memory
    /// ([`rave_harness::host::HostResources::guests_at_once`]). Memory bounds it either way.
    pub guests_at_once: Option<usize>,
    /// The image flavor (`RAVE_FLAVOR`, debian unless nixos).
    pub flavor: Flavor,
    /// Boot every guest cold instead of restoring a saved state (`RAVE_COLD=1`).
    pub cold: bool,
    /// Keep each guest's state directory (`RAVE_KEEP_STATE=1`).
    pub keep_state: bool,
    /// Built images, saved states, downloads (`RAVE_CACHE_DIR`, else
    /// `$XDG_CACHE_HOME/rave-harness`, else `~/.cache/rave-harness`).
    pub cache_dir: PathBuf,
    /// The repository's `images/` (`RAVE_IMAGES_DIR`, else the one beside this crate).
    pub images_dir: PathBuf,
    /// Where the flake's nixos images are (`RAVE_NIXOS_IMAGES`): `p0/`, `p1/`, `p2/`.
    pub nixos_images: Option<PathBuf>,
    /// Where guests' state directories are made (`$TMPDIR/rave-harness`).
    pub state_root: PathBuf,
    /// Where programs are found (`PATH`).
    pub search_path: OsString,
    /// A QEMU to use instead of the one on `PATH` (`RAVE_QEMU`).
    pub qemu: Option<PathBuf>,
    /// A running target to run against instead of booting (`RAVE_ATTACH`, for `cargo test`).
    pub attach: Option<PathBuf>,
    /// Let fault tests break an attached target (`RAVE_ALLOW_FAULTS=1`).
    pub allow_faults: bool,
}

impl Settings {
    /// Reads the settings from the process environment.
    pub fn from_env() -> Result<Self, SettingsError> {
        Self::from_vars(&std::env::vars_os().collect())
    }

    /// Reads the settings from a map of variables (the environment, or a test's).
    pub fn from_vars(vars: &HashMap<OsString, OsString>) -> Result<Self, SettingsError> {
        let raw = |k: &str| vars.get(&OsString::from(k)).filter(|v| !v.is_empty()).cloned();
        let get = |k: &str| {
            raw(k)
                .map(|v| v.to_string_lossy().trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let path = |k: &str| raw(k).map(PathBuf::from);
        let switch = |var: &'static str, on: &str, off: &str| match get(var).as_deref() {
            None | Some("0") => Ok(false),
            Some("1") => Ok(true),
            Some(other) => Err(SettingsError {
                var,
                value: other.to_string(),
                expected: format!("1 ({on}) or 0 ({off}, the default)"),
            }),
        };
        let safe_mode = match get("SAFE").as_deref() {
            None | Some("1") => true,
            Some("0") => false,
            Some(other) => {
                return Err(SettingsError {
                    var: "SAFE",
                    value: other.to_string(),
                    expected: "1 (SAFE mode, the default) or 0".into(),
                })
            }
        };
        let bounds = SafeValues::of(safe_mode);
        let ram_mb = parse_bounded(
            "QEMU_RAM_MB",
            get("QEMU_RAM_MB"),
            DEFAULT_RAM_MB,
            MIN_RAM_MB,
            bounds.ram_mb,
            safe_mode,
        )?;
        let cpus = parse_bounded("QEMU_CPUS", get("QEMU_CPUS"), DEFAULT_CPUS, 1, bounds.cpus, safe_mode)?;
        let accel = match get("RAVE_ACCEL").as_deref() {
            None | Some("auto") => AccelChoice::Auto,
            Some("kvm") => AccelChoice::Kvm,
            Some("tcg") => AccelChoice::Tcg,
            Some(other) => {
                return Err(SettingsError {
                    var: "RAVE_ACCEL",
                    value: other.to_string(),
                    expected: "auto, kvm or tcg".into(),
                })
            }
        };
        let kernel_args = get("RAVE_KERNEL_ARGS");
        if let Some(args) = &kernel_args {
            if !args.chars().all(|c| c.is_ascii_graphic() || c == ' ') {
                return Err(SettingsError {
                    var: "RAVE_KERNEL_ARGS",
                    value: args.clone(),
                    expected:
                        "kernel arguments in printable ASCII separated by spaces (e.g. `systemd.log_level=debug`)"
                            .into(),
                });
            }
        }
        let tcg_cpu = get("RAVE_TCG_CPU").unwrap_or_else(|| BootOptions::DEFAULT_TCG_CPU.into());
        if !tcg_cpu
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.+=,".contains(c))
        {
            return Err(SettingsError {
                var: "RAVE_TCG_CPU",
                value: tcg_cpu,
                expected: "a QEMU CPU model with optional features (e.g. `max`, `Nehalem`, `Haswell-noTSX,-avx2`); `qemu-system-x86_64 -cpu help` lists them".into(),
            });
        }
        let guests_at_once = match get("RAVE_GUESTS_AT_ONCE") {
            None => None,
            Some(text) => match text.parse::<usize>() {
                Ok(n) if (1..=MAX_GUESTS_AT_ONCE).contains(&n) => Some(n),
                _ => {
                    return Err(SettingsError {
                        var: "RAVE_GUESTS_AT_ONCE",
                        value: text,
                        expected: format!(
                            "a whole number from 1 to {MAX_GUESTS_AT_ONCE} (unset: as many as the host's CPUs and memory allow)"
                        ),
                    })
                }
            },
        };
        let flavor = match get("RAVE_FLAVOR").as_deref() {
            None | Some("debian") => Flavor::Debian,
            Some("nixos") => Flavor::Nixos,
            Some(other) => {
                return Err(SettingsError {
                    var: "RAVE_FLAVOR",
                    value: other.to_string(),
                    expected: "debian (the default) or nixos".into(),
                })
            }
        };
        let cold = match get("RAVE_COLD").as_deref() {
            None | Some("0") => false,
            Some("1") => true,
            Some(other) => {
                return Err(SettingsError {
                    var: "RAVE_COLD",
                    value: other.to_string(),
                    expected: "1 (boot every guest cold) or 0 (restore saved states, the default)".into(),
                })
            }
        };
        let cache_dir = path("RAVE_CACHE_DIR")
            .or_else(|| path("XDG_CACHE_HOME").map(|d| d.join("rave-harness")))
            .or_else(|| path("HOME").map(|h| h.join(".cache/rave-harness")))
            .unwrap_or_else(|| PathBuf::from("/var/cache/rave-harness"));
        let images_dir =
            path("RAVE_IMAGES_DIR").unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../images"));
        let state_root = path("TMPDIR")
            .unwrap_or_else(|| PathBuf::from("/tmp"))
            .join("rave-harness");
        Ok(Settings {
            ram_mb,
            cpus,
            accel,
            safe_mode,
            kernel_args,
            tcg_cpu,
            guests_at_once,
            flavor,
            cold,
            keep_state: switch("RAVE_KEEP_STATE", "keep each guest's state directory", "remove it")?,
            cache_dir,
            images_dir,
            nixos_images: path("RAVE_NIXOS_IMAGES"),
            state_root,
            search_path: raw("PATH").unwrap_or_default(),
            qemu: path("RAVE_QEMU"),
            attach: path("RAVE_ATTACH"),
            allow_faults: switch(
                "RAVE_ALLOW_FAULTS",
                "let fault tests break the attached target",
                "do not",
            )?,
        })
    }

    /// `PATH`, for a caller whose settings could not be read (the doctor
    /// still reports on a host whose settings are bad).
    pub fn search_path_of_env() -> OsString {
        std::env::var_os("PATH").unwrap_or_default()
    }

    /// QEMU and qemu-img, as these settings find them.
    pub fn tools(&self) -> Result<Tools, HostError> {
        Tools::find(&self.search_path, self.qemu.as_deref())
    }

    /// The boot options of a guest named `name` on `accel` with these settings.
    pub fn boot_options(&self, name: &str, tools: Tools, accel: Accel) -> BootOptions {
        let mut options = BootOptions::new(name, tools, &self.state_root);
        options.ram_mb = self.ram_mb;
        options.cpus = self.cpus;
        options.accel = accel;
        options.kernel_args = self.kernel_args.clone();
        options.tcg_cpu = self.tcg_cpu.clone();
        options.keep_state = self.keep_state;
        options
    }
}

impl fmt::Display for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "QEMU_RAM_MB={} QEMU_CPUS={} RAVE_ACCEL={} SAFE={}",
            self.ram_mb,
            self.cpus,
            self.accel,
            u8::from(self.safe_mode)
        )
    }
}

fn parse_bounded(
    var: &'static str,
    value: Option<String>,
    default: u32,
    min: u32,
    max: u32,
    safe_mode: bool,
) -> Result<u32, SettingsError> {
    let Some(value) = value else {
        return Ok(default);
    };
    let bound = if safe_mode {
        let full = SafeValues::of(false);
        format!(" in SAFE mode (SAFE=0 allows {} MiB / {} CPUs)", full.ram_mb, full.cpus)
    } else {
        String::new()
    };
    let err = |expected: String| SettingsError {
        var,
        value: value.clone(),
        expected,
    };
    let n: u32 = value
        .parse()
        .map_err(|_| err(format!("a whole number from {min} to {max}{bound}")))?;
    if n < min || n > max {
        return Err(err(format!("a whole number from {min} to {max}{bound}")));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        Settings::from_vars(
            &pairs
                .iter()
                .map(|(k, v)| (OsString::from(k), OsString::from(v)))
                .collect(),
        )
    }

    #[test]
    fn defaults_are_the_contract() {
        let s = settings(&[("HOME", "/home/u")]).unwrap();
        assert_eq!(
            (s.ram_mb, s.cpus, s.accel, s.safe_mode, s.flavor, s.cold, s.keep_state),
            (3072, 2, AccelChoice::Auto, true, Flavor::Debian, false, false)
        );
        assert_eq!(s.cache_dir, PathBuf::from("/home/u/.cache/rave-harness"));
        assert_eq!(s.state_root, PathBuf::from("/tmp/rave-harness"));
    }

    #[test]
    fn safe_off_allows_bigger_guests() {
        let s = settings(&[("SAFE", "0"), ("QEMU_RAM_MB", "4096"), ("QEMU_CPUS", "4")]).unwrap();
        assert_eq!((s.ram_mb, s.cpus, s.safe_mode), (4096, 4, false));
    }

    #[test]
    fn bad_values_name_the_variable_and_the_fix() {
        let e = settings(&[("QEMU_RAM_MB", "lots")]).unwrap_err();
        assert_eq!(e.to_string(), "QEMU_RAM_MB=\"lots\" is not valid: a whole number from 512 to 3072 in SAFE mode (SAFE=0 allows 4096 MiB / 4 CPUs)");
        for (var, value) in [
            ("QEMU_CPUS", "0"),
            ("QEMU_RAM_MB", "8192"),
            ("SAFE", "yes"),
            ("RAVE_ACCEL", "hvf"),
            ("RAVE_KERNEL_ARGS", "a\nb"),
            ("RAVE_TCG_CPU", "max -smp 8"),
            ("RAVE_GUESTS_AT_ONCE", "0"),
            ("RAVE_GUESTS_AT_ONCE", "17"),
            ("RAVE_GUESTS_AT_ONCE", "two"),
            ("RAVE_FLAVOR", "arch"),
            ("RAVE_COLD", "yes"),
            ("RAVE_KEEP_STATE", "please"),
            ("RAVE_ALLOW_FAULTS", "true"),
        ] {
            assert_eq!(settings(&[(var, value)]).unwrap_err().var, var, "{var}={value}");
        }
    }

    #[test]
    fn kernel_args_are_kept_as_given() {
        let s = settings(&[("RAVE_KERNEL_ARGS", " mitigations=off  audit=0 ")]).unwrap();
        assert_eq!(s.kernel_args.as_deref(), Some("mitigations=off  audit=0"));
        assert_eq!(settings(&[]).unwrap().kernel_args, None);
    }

    #[test]
    fn guests_at_once_is_left_to_the_host_unless_given() {
        assert_eq!(settings(&[]).unwrap().guests_at_once, None);
        assert_eq!(
            settings(&[("RAVE_GUESTS_AT_ONCE", "3")]).unwrap().guests_at_once,
            Some(3)
        );
    }

    #[test]
    fn the_tcg_cpu_is_max_unless_named() {
        assert_eq!(settings(&[]).unwrap().tcg_cpu, "max");
        let s = settings(&[("RAVE_TCG_CPU", "Haswell-noTSX,-avx2")]).unwrap();
        assert_eq!(s.tcg_cpu, "Haswell-noTSX,-avx2");
    }
}
