//! A guest and the verbs a check uses on it, named after the NixOS test
//! driver: `succeed`, `fail`, `execute`, `wait_until_succeeds`,
//! `wait_for_unit`, `wait_for_open_port`, `wait_for_closed_port`.
//!
//! Every wait has a deadline, looks at QEMU on every poll (a guest that died
//! is reported at once, with its console), and on timeout says what it waited
//! for, how long, what it last saw, and the tail of the serial console. Each
//! wait is a step of the trial that runs it (see [`crate::steps`]).
//!
//! The verbs live in one file per concern: running commands, waits, what
//! the harness knows of systemd, reaching the guest from outside (HTTPS,
//! forwards, SSH logins), and saving a guest for later restores.
//!
//! ```no_run
//! use std::time::Duration;
//! use rave_harness::{BootOptions, Image, Machine, Tools};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let image = Image::load("/var/cache/images/web".as_ref())?;
//! let tools = Tools::find(&std::env::var_os("PATH").unwrap_or_default(), None)?;
//! let machine = Machine::boot(&image, &BootOptions::new("web-1", tools, "/tmp/web-states"))?;
//! machine.wait_for_unit("nginx.service", Duration::from_secs(60))?;
//! machine.wait_for_open_port(443, Duration::from_secs(30))?;
//! let kernel = machine.succeed("uname -r")?;
//! machine.fail("test -e /etc/ssh/ssh_host_rsa_key")?;
//! println!("up, kernel {kernel}");
//! machine.shutdown(Duration::from_secs(30));
//! # Ok(())
//! # }
//! ```

mod commands;
mod net;
mod snapshot;
mod systemd;
mod waits;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub use net::{BurstAnswer, BurstRequest};
pub use systemd::{parse_properties, UnitSnapshot};

use crate::boot_plan::{self, BootOptions, RunFiles};
use crate::command_gate::CommandGate;
use crate::console;
use crate::error::MachineError;
use crate::facts::{BootStage, GuestReport};
use crate::host::HostResources;
use crate::https::HttpsClient;
use crate::image::Image;
use crate::ports::free_loopback_port;
use crate::qemu_process::QemuProcess;
use crate::qmp::Qmp;
use crate::resources::{QemuUsage, UsageSampler};
use crate::saved_state::SavedState;
use crate::ssh::SshSession;
use crate::ssh_pool::ConnectionPool;
use crate::target::TargetDescription;
use crate::test_access::TestAccess;

/// Lines of the serial console carried by an error.
pub const SERIAL_TAIL_LINES: usize = 30;
/// Journal lines of a unit carried by a unit's diagnostics.
pub const JOURNAL_LINES: usize = 50;
/// The longest a command waits at the [`CommandGate`]: past the longest
/// command a check runs (the secrets search, 240 s).
pub const GATE_TIMEOUT: Duration = Duration::from_secs(300);

/// A guest the checks run against: one booted by QEMU from an image on a
/// throwaway overlay, or a running target the harness attached to (see
/// [`Machine::attach`]). Only booting, the serial console and QEMU-side facts
/// differ; a verb that needs one of those says so on an attached target.
pub struct Machine {
    name: String,
    image: Image,
    /// One connection per check running at once (see [`crate::ssh_pool`]).
    ssh: ConnectionPool<SshSession>,
    /// Holds other checks' commands back during an exclusive section.
    gate: CommandGate,
    access: TestAccess,
    ssh_user: String,
    ssh_addr: SocketAddr,
    https_addr: Option<SocketAddr>,
    ca_cert: Option<PathBuf>,
    command_timeout: Duration,
    /// Made on the first HTTPS request and kept: one CA read, one TLS config, reused connections.
    https_client: std::sync::OnceLock<HttpsClient>,
    /// Boot stages reached so far.
    boot_stages: Mutex<Vec<BootStage>>,
    /// The guest's uptime when the first command after its first login ran.
    first_command_uptime: Mutex<Option<f64>>,
    backend: Backend,
}

/// What is behind a [`Machine`].
enum Backend {
    /// A QEMU guest this harness started.
    Booted(Booted),
    /// A running target described by a [`TargetDescription`]; never powered down by the harness.
    Attached {
        /// Guest port → port on the target's host that reaches it, for probes.
        forwards: BTreeMap<u16, u16>,
        /// A local QEMU guest's QMP socket, to add forwards through.
        qmp: Option<Qmp>,
        /// Host ports of the forwards added through it: removed again when
        /// the harness lets go of the target, which is left as it was found.
        added: Mutex<Vec<u16>>,
    },
}

/// The QEMU side of a booted guest.
struct Booted {
    // Declared before `state`: QEMU is killed before its directory goes.
    qemu: Mutex<QemuProcess>,
    /// Held while the guest lives: a sweep leaves the directory alone.
    _owner: crate::reaper::OwnerLock,
    state_dir: PathBuf,
    /// Removes the directory when dropped (taken at power-off); `None` when kept.
    state: Mutex<Option<tempfile::TempDir>>,
    /// When QEMU was started.
    started: Instant,
    /// QEMU's memory and CPU, sampled while it runs.
    usage: UsageSampler,
}

impl std::fmt::Debug for Machine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Machine")
            .field("name", &self.name)
            .field("ssh_addr", &self.ssh_addr)
            .field("attached", &self.is_attached())
            .finish_non_exhaustive()
    }
}

impl Machine {
    /// Starts the guest and waits until the image's SSH user can log in.
    pub fn boot(image: &Image, options: &BootOptions) -> Result<Machine, MachineError> {
        let machine = Machine::start(image, options)?;
        machine.wait_for_ssh(options.boot_timeout)?;
        Ok(machine)
    }

    /// Starts QEMU on a fresh overlay of the image's disk; does not wait.
    pub fn start(image: &Image, options: &BootOptions) -> Result<Machine, MachineError> {
        Machine::start_from(image, options, None)
    }

    /// Restores a saved guest (see [`crate::saved_state`]) on a fresh overlay
    /// of its saved disk, waits for SSH, and sets the guest's clock, which
    /// stood still from the save until now (with `sudo date`).
    pub fn restore(image: &Image, options: &BootOptions, saved: &SavedState) -> Result<Machine, MachineError> {
        let machine = Machine::start_from(image, options, Some(saved))?;
        machine.resume_after_load(options.boot_timeout)?;
        machine.wait_for_ssh(options.boot_timeout)?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        machine.succeed(&format!(
            "sudo date -u -s @{}.{:09} >/dev/null",
            now.as_secs(),
            now.subsec_nanos()
        ))?;
        machine.reach_stage("clock");
        Ok(machine)
    }

    fn start_from(image: &Image, options: &BootOptions, saved: Option<&SavedState>) -> Result<Machine, MachineError> {
        HostResources::read().check(options.ram_mb, options.cpus)?;
        let setup = |what: &str| {
            let what = what.to_string();
            move |e: std::io::Error| MachineError::Setup {
                what,
                message: e.to_string(),
            }
        };
        std::fs::create_dir_all(&options.state_root).map_err(setup("creating the state root"))?;
        let temp = tempfile::Builder::new()
            .prefix(&format!("{}-", options.name))
            .tempdir_in(&options.state_root)
            .map_err(setup("creating the guest's state directory"))?;
        let state_dir = temp.path().to_path_buf();
        let owner = crate::reaper::own(&state_dir).map_err(setup("locking the guest's state directory"))?;
        // A restored guest already holds the keys it was saved with.
        let access = match saved {
            Some(saved) => saved.access()?,
            None => TestAccess::generate(&state_dir)?,
        };
        let overlay = state_dir.join("overlay.qcow2");
        let base = saved.map_or_else(|| image.disk(), SavedState::disk);
        create_overlay(&options.tools.qemu_img, &base, &overlay)?;
        let ssh_port = free_loopback_port().map_err(setup("finding a free port"))?;
        let https_port = match &image.manifest.https {
            Some(_) => Some(free_loopback_port().map_err(setup("finding a free port"))?),
            None => None,
        };
        let run = RunFiles {
            state_dir: state_dir.clone(),
            overlay,
            access: access.fw_cfg(),
            ssh_port,
            https_port,
            incoming: saved.map(SavedState::vmstate),
        };
        let command = boot_plan::command(image, options, &run);
        std::fs::write(state_dir.join("qemu.argv"), command.argv().join("\n")).map_err(setup("writing qemu.argv"))?;
        let process = QemuProcess::spawn(&command.argv(), &state_dir.join("qemu.log"), &command.qmp_socket)?;
        let started = Instant::now();
        let usage = UsageSampler::start(process.pid());
        crate::reaper::register(process.pid(), &state_dir);
        // A kept directory outlives the run; otherwise it goes with the machine.
        let state_guard = if options.keep_state {
            std::fs::write(state_dir.join(crate::reaper::KEEP_MARK), b"").map_err(setup("marking the state kept"))?;
            let _ = temp.keep();
            None
        } else {
            Some(temp)
        };
        Ok(Machine {
            name: options.name.clone(),
            image: image.clone(),
            ssh: ConnectionPool::new(crate::ssh_pool::MAX_CONNECTIONS),
            gate: CommandGate::default(),
            access,
            ssh_user: image.manifest.ssh_user.clone(),
            ssh_addr: SocketAddr::from((Ipv4Addr::LOCALHOST, ssh_port)),
            https_addr: https_port.map(|port| SocketAddr::from((Ipv4Addr::LOCALHOST, port))),
            ca_cert: image.ca_cert(),
            command_timeout: options.command_timeout,
            https_client: std::sync::OnceLock::new(),
            boot_stages: Mutex::new(Vec::new()),
            first_command_uptime: Mutex::new(None),
            backend: Backend::Booted(Booted {
                qemu: Mutex::new(process),
                _owner: owner,
                state_dir,
                state: Mutex::new(state_guard),
                started,
                usage,
            }),
        })
    }

    /// A running target, reached as `description` says: its SSH host key is
    /// pinned and its HTTPS verified against its CA, as for a booted guest.
    /// Waits up to `timeout` for an SSH login. The harness never powers it down.
    pub fn attach(description: &TargetDescription, timeout: Duration) -> Result<Machine, MachineError> {
        let setup = |what: &str, message: String| MachineError::Setup {
            what: format!("attaching to {}: {what}", description.name),
            message,
        };
        let image = Image::load_manifest(&description.manifest).map_err(|e| setup("its manifest", e.to_string()))?;
        if image.manifest.profile != description.profile {
            return Err(setup(
                "its profile",
                format!(
                    "the description says {} but the manifest says {}",
                    description.profile, image.manifest.profile
                ),
            ));
        }
        let resolve = |host: &str, port: u16| {
            use std::net::ToSocketAddrs;
            (host, port)
                .to_socket_addrs()
                .map_err(|e| setup(&format!("resolving {host}:{port}"), e.to_string()))?
                .next()
                .ok_or_else(|| setup(&format!("resolving {host}:{port}"), "no address".into()))
        };
        let https_addr = match (&description.https_host, description.https_port) {
            (Some(host), Some(port)) => Some(resolve(host, port)?),
            _ => None,
        };
        let access = TestAccess::described(&description.ssh_key, &description.ssh_host_key)?;
        let machine = Machine {
            name: description.name.clone(),
            ssh: ConnectionPool::new(crate::ssh_pool::MAX_CONNECTIONS),
            gate: CommandGate::default(),
            access,
            ssh_user: description.ssh_user.clone(),
            ssh_addr: resolve(&description.ssh_host, description.ssh_port)?,
            https_addr,
            ca_cert: description.ca_cert.clone(),
            command_timeout: BootOptions::DEFAULT_COMMAND_TIMEOUT,
            https_client: std::sync::OnceLock::new(),
            boot_stages: Mutex::new(Vec::new()),
            first_command_uptime: Mutex::new(None),
            backend: Backend::Attached {
                forwards: description.forwards.clone(),
                qmp: description.qmp_socket.clone().map(Qmp::new),
                added: Mutex::new(Vec::new()),
            },
            image,
        };
        machine.wait_for_ssh(timeout)?;
        Ok(machine)
    }

    /// Whether this is an attached target rather than a guest the harness booted.
    pub fn is_attached(&self) -> bool {
        matches!(self.backend, Backend::Attached { .. })
    }

    fn booted(&self) -> Option<&Booted> {
        match &self.backend {
            Backend::Booted(booted) => Some(booted),
            Backend::Attached { .. } => None,
        }
    }

    /// The booted guest's QEMU side, or the error a verb that needs one gives.
    fn booted_for(&self, what: &str) -> Result<&Booted, MachineError> {
        self.booted().ok_or_else(|| MachineError::NotBooted {
            name: self.name.clone(),
            what: what.into(),
        })
    }

    /// The guest's own uptime (seconds) when the harness's first command
    /// after its first login ran: with a unit's
    /// `ActiveEnterTimestampMonotonic`, a delay measured on one clock.
    pub fn guest_uptime_at_first_command(&self) -> Option<f64> {
        *lock(&self.first_command_uptime)
    }

    /// The boot stages reached so far: `console` (first serial output),
    /// `restored`, `ssh` (first key login), `clock`, `contract`, timed from QEMU's start.
    pub fn boot_stages(&self) -> Vec<BootStage> {
        lock(&self.boot_stages).clone()
    }

    /// Records that the guest reached `stage` now (a booted guest's; once each).
    pub fn reach_stage(&self, stage: &str) {
        let Some(booted) = self.booted() else { return };
        let mut stages = lock(&self.boot_stages);
        if !stages.iter().any(|s| s.stage == stage) {
            stages.push(BootStage {
                stage: stage.into(),
                at: booted.started.elapsed(),
            });
        }
    }

    /// QEMU's peak RSS and CPU time so far (zero for an attached target).
    pub fn qemu_usage(&self) -> QemuUsage {
        self.booted().map(|b| b.usage.usage()).unwrap_or_default()
    }

    /// The guest's figures for a report: boot stages, QEMU's usage, and every
    /// component unit's memory against its limit (a unit that cannot be read
    /// is left out: the guest may be gone).
    pub fn report(&self) -> GuestReport {
        let usage = self.qemu_usage();
        let units = if self.ensure_running().is_ok() {
            self.units_memory(&self.image.manifest.units()).unwrap_or_default()
        } else {
            Vec::new()
        };
        GuestReport {
            name: self.name.clone(),
            profile: self.image.manifest.profile.clone(),
            attached: self.is_attached(),
            boot: self.boot_stages(),
            qemu_peak_rss_bytes: usage.peak_rss_bytes,
            qemu_cpu_time: usage.cpu_time,
            units,
        }
    }

    /// The guest's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The image it was booted from (an attached target's manifest).
    pub fn image(&self) -> &Image {
        &self.image
    }

    /// The host port that reaches the guest's sshd (on 127.0.0.1 for a booted guest).
    pub fn ssh_port(&self) -> u16 {
        self.ssh_addr.port()
    }

    /// Where SSH reaches the guest.
    pub fn ssh_addr(&self) -> SocketAddr {
        self.ssh_addr
    }

    /// Where the guest's HTTPS port is reached, when its image serves HTTPS.
    pub fn https_addr(&self) -> Option<SocketAddr> {
        self.https_addr
    }

    /// The CA that signs the guest's HTTPS certificate.
    pub fn ca_cert(&self) -> Option<&Path> {
        self.ca_cert.as_deref()
    }

    /// The user the harness logs in as.
    pub fn ssh_user(&self) -> &str {
        &self.ssh_user
    }

    /// The run's keys for this guest.
    pub fn access(&self) -> &TestAccess {
        &self.access
    }

    /// The directory holding the overlay, logs, sockets and keys (a booted guest's).
    pub fn state_dir(&self) -> Option<&Path> {
        self.booted().map(|b| b.state_dir.as_path())
    }

    /// The serial console's log file (a booted guest's).
    pub fn serial_log(&self) -> Option<PathBuf> {
        self.state_dir().map(|d| d.join("serial.log"))
    }

    /// QEMU's QMP socket (a booted guest's).
    pub fn qmp_socket(&self) -> Option<PathBuf> {
        self.booted().map(|b| lock(&b.qemu).qmp().socket().to_path_buf())
    }

    /// QEMU's process id (a booted guest's).
    pub fn pid(&self) -> Option<u32> {
        self.booted().map(|b| lock(&b.qemu).pid())
    }

    /// The last lines of the serial console, or why there is none.
    pub fn serial_tail(&self) -> String {
        match self.serial_log() {
            Some(log) => console::tail(&log, SERIAL_TAIL_LINES),
            None => "(no serial console: an attached target)".into(),
        }
    }

    /// Powers a booted guest off over QMP, waiting up to `timeout`, then
    /// kills QEMU and removes its state directory (unless kept); returns
    /// whether it went down by itself. An attached target is only
    /// disconnected (and the forwards the harness added to it removed).
    pub fn shutdown(&self, timeout: Duration) -> bool {
        self.ssh.clear();
        self.remove_added_forwards();
        match self.booted() {
            Some(booted) => {
                let clean = lock(&booted.qemu).shutdown(timeout);
                // QEMU is gone: its overlay, logs and keys go now, not when the last handle drops.
                drop(lock(&booted.state).take());
                clean
            }
            None => true,
        }
    }

    /// Kills QEMU at once, as a crash would (a booted guest only).
    pub fn crash(&self) -> Result<(), MachineError> {
        lock(&self.booted_for("killing QEMU")?.qemu).kill();
        Ok(())
    }

    /// An error when QEMU has exited, with its console (always fine for an attached target).
    pub fn ensure_running(&self) -> Result<(), MachineError> {
        let Some(booted) = self.booted() else { return Ok(()) };
        let status = lock(&booted.qemu).exit_status();
        match status {
            None => Ok(()),
            Some(status) => Err(MachineError::QemuExited {
                name: self.name.clone(),
                status: status.to_string(),
                qemu_said: last_line(
                    &std::fs::read_to_string(booted.state_dir.join("qemu.log")).unwrap_or_default(),
                    "nothing",
                ),
                serial_tail: self.serial_tail(),
            }),
        }
    }

    fn busy(&self, why: impl std::fmt::Display) -> MachineError {
        MachineError::Busy {
            name: self.name.clone(),
            message: why.to_string(),
        }
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        self.remove_added_forwards();
        if let Some(booted) = self.booted() {
            let mut qemu = lock(&booted.qemu);
            qemu.kill();
            crate::reaper::unregister(qemu.pid());
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Creates a qcow2 overlay backed by `base`; the base is only ever read.
fn create_overlay(qemu_img: &Path, base: &Path, overlay: &Path) -> Result<(), MachineError> {
    let out = Command::new(qemu_img)
        .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
        .arg(base)
        .arg(overlay)
        .output()
        .map_err(|e| MachineError::Setup {
            what: format!("running {}", qemu_img.display()),
            message: e.to_string(),
        })?;
    if !out.status.success() {
        let said: Vec<&str> = std::str::from_utf8(&out.stderr)
            .unwrap_or("")
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        return Err(MachineError::Setup {
            what: format!("creating an overlay of {}", base.display()),
            message: format!("{} (is the image complete? rebuild it)", said.join("; ")),
        });
    }
    Ok(())
}

/// The last non-blank line of `first`, else `fallback`.
fn last_line(first: &str, fallback: &str) -> String {
    first
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or(fallback)
        .trim()
        .to_string()
}
