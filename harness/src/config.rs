//! The run's settings from the environment: guest size, accelerator, SAFE mode.
//!
//! Every variable is parsed strictly: a value that is not what the variable
//! takes is an error that names the variable, the value and what it accepts.

use std::collections::HashMap;
use std::fmt;

/// Guest RAM when `QEMU_RAM_MB` is unset.
pub const DEFAULT_RAM_MB: u32 = 3072;
/// Guest CPUs when `QEMU_CPUS` is unset.
pub const DEFAULT_CPUS: u32 = 2;
/// Below this a guest of the contract cannot boot (PostgreSQL and Prometheus alone need it).
pub const MIN_RAM_MB: u32 = 512;

/// How the accelerator is chosen (`RAVE_ACCEL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccelChoice {
    /// Use KVM when a probe boot shows it works, else multi-threaded TCG.
    Auto,
    /// KVM or nothing: fail fast when it does not work.
    Kvm,
    /// Software emulation (multi-threaded TCG).
    Tcg,
}

impl fmt::Display for AccelChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AccelChoice::Auto => "auto",
            AccelChoice::Kvm => "kvm",
            AccelChoice::Tcg => "tcg",
        })
    }
}

/// A variable of the environment that holds a value it does not take.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{var}={value:?} is not valid: {expected}")]
pub struct ConfigError {
    /// The variable's name.
    pub var: &'static str,
    /// What it held.
    pub value: String,
    /// What it takes, said so a person can fix it.
    pub expected: String,
}

/// The settings of one run, read once from the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunConfig {
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
}

impl RunConfig {
    /// Reads the settings from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        let vars: HashMap<String, String> = std::env::vars().collect();
        Self::from_vars(&vars)
    }

    /// Reads the settings from a map of variables (the environment, or a test's).
    pub fn from_vars(vars: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let get = |k: &str| vars.get(k).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        let safe_mode = match get("SAFE").as_deref() {
            None | Some("1") => true,
            Some("0") => false,
            Some(other) => {
                return Err(ConfigError {
                    var: "SAFE",
                    value: other.to_string(),
                    expected: "1 (SAFE mode, the default) or 0".into(),
                })
            }
        };
        let (max_ram, max_cpus) = if safe_mode { (3072, 2) } else { (4096, 4) };
        let ram_mb = parse_bounded(
            "QEMU_RAM_MB",
            get("QEMU_RAM_MB"),
            DEFAULT_RAM_MB,
            MIN_RAM_MB,
            max_ram,
            safe_mode,
        )?;
        let cpus = parse_bounded("QEMU_CPUS", get("QEMU_CPUS"), DEFAULT_CPUS, 1, max_cpus, safe_mode)?;
        let accel = match get("RAVE_ACCEL").as_deref() {
            None | Some("auto") => AccelChoice::Auto,
            Some("kvm") => AccelChoice::Kvm,
            Some("tcg") => AccelChoice::Tcg,
            Some(other) => {
                return Err(ConfigError {
                    var: "RAVE_ACCEL",
                    value: other.to_string(),
                    expected: "auto, kvm or tcg".into(),
                })
            }
        };
        let kernel_args = get("RAVE_KERNEL_ARGS");
        if let Some(args) = &kernel_args {
            if !args.chars().all(|c| c.is_ascii_graphic() || c == ' ') {
                return Err(ConfigError {
                    var: "RAVE_KERNEL_ARGS",
                    value: args.clone(),
                    expected:
                        "kernel arguments in printable ASCII separated by spaces (e.g. `systemd.log_level=debug`)"
                            .into(),
                });
            }
        }
        Ok(RunConfig {
            ram_mb,
            cpus,
            accel,
            safe_mode,
            kernel_args,
        })
    }
}

fn parse_bounded(
    var: &'static str,
    value: Option<String>,
    default: u32,
    min: u32,
    max: u32,
    safe_mode: bool,
) -> Result<u32, ConfigError> {
    let Some(value) = value else {
        return Ok(default);
    };
    let bound = if safe_mode {
        " in SAFE mode (SAFE=0 allows 4096 MiB / 4 CPUs)"
    } else {
        ""
    };
    let err = |expected: String| ConfigError {
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

    fn cfg(pairs: &[(&str, &str)]) -> Result<RunConfig, ConfigError> {
        RunConfig::from_vars(&pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    #[test]
    fn defaults_are_the_contract() {
        let c = cfg(&[]).unwrap();
        assert_eq!(
            (c.ram_mb, c.cpus, c.accel, c.safe_mode),
            (3072, 2, AccelChoice::Auto, true)
        );
    }

    #[test]
    fn safe_off_allows_bigger_guests() {
        let c = cfg(&[("SAFE", "0"), ("QEMU_RAM_MB", "4096"), ("QEMU_CPUS", "4")]).unwrap();
        assert_eq!((c.ram_mb, c.cpus, c.safe_mode), (4096, 4, false));
    }

    #[test]
    fn bad_values_name_the_variable_and_the_fix() {
        let e = cfg(&[("QEMU_RAM_MB", "lots")]).unwrap_err();
        assert_eq!(e.to_string(), "QEMU_RAM_MB=\"lots\" is not valid: a whole number from 512 to 3072 in SAFE mode (SAFE=0 allows 4096 MiB / 4 CPUs)");
        assert_eq!(cfg(&[("QEMU_CPUS", "0")]).unwrap_err().var, "QEMU_CPUS");
        assert_eq!(cfg(&[("QEMU_RAM_MB", "8192")]).unwrap_err().var, "QEMU_RAM_MB");
        assert_eq!(cfg(&[("SAFE", "yes")]).unwrap_err().var, "SAFE");
        assert_eq!(cfg(&[("RAVE_ACCEL", "hvf")]).unwrap_err().var, "RAVE_ACCEL");
        assert_eq!(
            cfg(&[("RAVE_KERNEL_ARGS", "a\nb")]).unwrap_err().var,
            "RAVE_KERNEL_ARGS"
        );
    }

    #[test]
    fn kernel_args_are_kept_as_given() {
        let c = cfg(&[("RAVE_KERNEL_ARGS", " mitigations=off  audit=0 ")]).unwrap();
        assert_eq!(c.kernel_args.as_deref(), Some("mitigations=off  audit=0"));
        assert_eq!(cfg(&[]).unwrap().kernel_args, None);
    }
}
