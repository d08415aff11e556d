//! How to reach a running guest: the JSON object `rave-harness boot` prints
//! and `rave-harness run --attach FILE` reads.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A running target, described well enough to check it with no trust on
/// first use: the SSH host key and the CA come with it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetDescription {
    /// A name for logs.
    pub name: String,
    /// Its image's label (the manifest's `profile`).
    pub profile: String,
    /// How its image was built, for messages.
    #[serde(default)]
    pub flavor: Option<String>,
    /// The SSH host (an address or name).
    pub ssh_host: String,
    /// The SSH port.
    pub ssh_port: u16,
    /// The user to log in as.
    pub ssh_user: String,
    /// The private key (OpenSSH format) to log in with.
    pub ssh_key: PathBuf,
    /// The host's public key (`ssh-ed25519 AAAA…`) to pin.
    pub ssh_host_key: String,
    /// Where its HTTPS port is reached (an address or name), when it serves HTTPS.
    #[serde(default)]
    pub https_host: Option<String>,
    /// The port there.
    #[serde(default)]
    pub https_port: Option<u16>,
    /// The CA that signs the HTTPS certificate.
    pub ca_cert: Option<PathBuf>,
    /// The image manifest (components, limits, SSH user).
    pub manifest: PathBuf,
    /// Where closed-port probes go: guest port → port on `ssh_host` that
    /// reaches it. A port not listed is probed on `ssh_host` itself.
    #[serde(default)]
    pub forwards: BTreeMap<u16, u16>,
    /// QEMU's QMP socket, when the target is a local QEMU guest (`rave-harness
    /// boot`): a probe of a guest port that `forwards` lacks gets a new
    /// forward through it.
    #[serde(default)]
    pub qmp_socket: Option<PathBuf>,
    /// The serial console's log, when the target is a local QEMU guest.
    #[serde(default)]
    pub serial_log: Option<PathBuf>,
    /// The guest's state directory, when booted by `rave-harness boot`.
    #[serde(default)]
    pub state_dir: Option<PathBuf>,
    /// QEMU's process id, when booted by `rave-harness boot`.
    #[serde(default)]
    pub pid: Option<u32>,
    /// The boot stages reached before the description was printed, when booted by `rave-harness boot`.
    #[serde(default)]
    pub boot_stages: Vec<crate::facts::BootStage>,
    /// The guest's uptime (its own monotonic clock, seconds) when the
    /// harness's first command ran on it, when booted by `rave-harness boot`:
    /// against a unit's `ActiveEnterTimestampMonotonic`, a delay on one clock.
    #[serde(default)]
    pub guest_uptime_at_first_command: Option<f64>,
}

/// A target description that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("target description {path}: {message}")]
pub struct TargetError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl TargetDescription {
    /// Reads `path`: one JSON object, as `rave-harness boot` prints it.
    pub fn load(path: &Path) -> Result<Self, TargetError> {
        let error = |message: String| TargetError {
            path: path.into(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?;
        let line = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        serde_json::from_str(line).map_err(|e| {
            error(format!(
                "not a target description ({e}): write the JSON line `rave-harness boot` prints"
            ))
        })
    }
}
