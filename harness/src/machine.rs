//! A booted guest and the verbs a case uses on it, named after the NixOS test
//! driver: `succeed`, `fail`, `execute`, `wait_for_unit`, `wait_for_open_port`.
//!
//! Every wait has a deadline, looks at QEMU on every poll (a guest that died
//! is reported at once, with its console), and on timeout says what it waited
//! for, how long, what it last saw, and the tail of the serial console.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::command_gate::CommandGate;
use crate::config::RunConfig;
use crate::console;
use crate::host_check::{find_program, find_qemu, HostError, HostResources};
use crate::https::{HttpResponse, HttpsClient};
use crate::manifest::Image;
use crate::ports::free_loopback_port;
use crate::qemu_command::{Accel, FwCfgFile, PortForward, QemuCommand};
use crate::qemu_process::{QemuError, QemuProcess};
use crate::report::{BootStage, GuestReport, UnitMemory};
use crate::resources::{parse_unit_memory, QemuUsage, UsageSampler};
use crate::retry::{retry, Deadline, Poll, RetryError};
use crate::ssh::{AuthProbe, CommandOutput, SshError, SshSession};
use crate::ssh_pool::{ConnectionPool, PoolError};
use crate::target::TargetDescription;
use crate::test_access::{KeyError, TestAccess};
use crate::warm_start::SavedState;

/// Lines of the serial console carried by an error.
pub const SERIAL_TAIL_LINES: usize = 30;
/// Journal lines of a unit carried by a unit's diagnostics.
pub const JOURNAL_LINES: usize = 50;

/// The fw_cfg name under which the guest finds the age identity of its secrets.
pub const FW_CFG_AGE_IDENTITY: &str = "opt/rave/age-identity";

/// The guest's HTTPS port (nginx, `rave.local`).
pub const GUEST_HTTPS_PORT: u16 = 3002;
/// The longest a command waits at the [`CommandGate`]: past the longest
/// command a case runs (the secrets search, 240 s).
pub const GATE_TIMEOUT: Duration = Duration::from_secs(300);

/// The idle share of the guest's CPUs that [`Machine::wait_until_quiet`] waits for.
pub const QUIET_IDLE: f64 = 0.9;

/// How long the first login attempt on a booting guest waits for sshd's
/// banner before it tries a new connection (a banner comes in well under a
/// second once sshd listens, even on a guest still busy booting).
pub const FIRST_BANNER_WAIT: Duration = Duration::from_millis(1500);

/// Login attempts without a banner, before the guest has answered any, after
/// which each attempt waits longer anyway (about 30 s of them).
pub const UNANSWERED_ATTEMPTS: u32 = 20;

/// The bound of one login attempt while waiting for SSH.
pub const LOGIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything that can go wrong booting or using a guest.
#[derive(Debug, thiserror::Error)]
pub enum MachineError {
    /// The host cannot run it.
    #[error(transparent)]
    Host(#[from] HostError),
    /// The run's keys could not be made.
    #[error(transparent)]
    Keys(#[from] KeyError),
    /// QEMU could not be started or controlled.
    #[error(transparent)]
    Qemu(#[from] QemuError),
    /// The state directory or the overlay could not be made.
    #[error("{what}: {message}")]
    Setup {
        /// What was being made.
        what: String,
        /// Why it failed.
        message: String,
    },
    /// QEMU is gone: the guest panicked, powered off, or QEMU was killed.
    #[error("guest {name}: QEMU exited ({status}); QEMU said: {qemu_said}\n--- serial console (last lines) ---\n{serial_tail}")]
    QemuExited {
        /// The guest.
        name: String,
        /// How QEMU ended.
        status: String,
        /// The end of QEMU's own output.
        qemu_said: String,
        /// The end of the console.
        serial_tail: String,
    },
    /// A wait ran out of time.
    #[error("guest {name}: timed out after {waited:.1?} waiting for {what}; last seen: {last_seen}\n--- serial console (last lines) ---\n{serial_tail}")]
    Timeout {
        /// The guest.
        name: String,
        /// What was awaited.
        what: String,
        /// How long.
        waited: Duration,
        /// What the last look found.
        last_seen: String,
        /// The end of the console.
        serial_tail: String,
    },
    /// SSH failed.
    #[error("guest {name}: {source}")]
    Ssh {
        /// The guest.
        name: String,
        /// The SSH step that failed.
        source: Box<SshError>,
    },
    /// An HTTPS exchange failed.
    #[error("guest {name}: {message}")]
    Https {
        /// The guest.
        name: String,
        /// What failed.
        message: String,
    },
    /// `succeed` ran a command that failed.
    #[error(
        "guest {name}: command `{}` exited {status}\nstdout: {stdout}\nstderr: {stderr}",
        crate::guest_command::short_command(command)
    )]
    CommandFailed {
        /// The guest.
        name: String,
        /// The command.
        command: String,
        /// Its status.
        status: i32,
        /// Its output.
        stdout: String,
        /// Its errors.
        stderr: String,
    },
    /// `fail` ran a command that succeeded.
    #[error(
        "guest {name}: command `{}` succeeded but was expected to fail\nstdout: {stdout}",
        crate::guest_command::short_command(command)
    )]
    CommandSucceeded {
        /// The guest.
        name: String,
        /// The command.
        command: String,
        /// Its output.
        stdout: String,
    },
    /// Cases running at once held the guest longer than a command may wait:
    /// every SSH connection busy, or another case's exclusive section.
    #[error("guest {name}: a command could not start: {message}")]
    Busy {
        /// The guest.
        name: String,
        /// What it waited for, and how long.
        message: String,
    },
    /// A verb that needs a guest booted by the harness, used on an attached target.
    #[error("guest {name} is an attached target: {what} needs a guest booted by the harness")]
    NotBooted {
        /// The target.
        name: String,
        /// What was asked.
        what: String,
    },
    /// A unit cannot become active: it failed, stopped with nothing queued, or does not exist.
    #[error("guest {name}: unit {unit} will not become active: {state}\n{diagnostics}")]
    UnitNotActive {
        /// The guest.
        name: String,
        /// The unit.
        unit: String,
        /// Its state, e.g. `ActiveState=failed SubState=failed`.
        state: String,
        /// `systemctl status` and its journal tail.
        diagnostics: String,
    },
}

/// How to boot a guest.
#[derive(Debug, Clone)]
pub struct BootOptions {
    /// A name for logs and `ps`, e.g. `rave-p0`.
    pub name: String,
    /// The guest's size and the run's settings.
    pub config: RunConfig,
    /// The accelerator (see [`crate::accel::decide`]).
    pub accel: Accel,
    /// How long the boot may take until SSH answers.
    pub boot_timeout: Duration,
    /// The bound on each SSH call.
    pub command_timeout: Duration,
    /// Keep the state directory (overlay, logs, keys) after the guest is gone.
    pub keep_state: bool,
}

impl BootOptions {
    /// The bound on each SSH call unless said otherwise.
    pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

    /// Defaults for `name`: 300 s to boot, 60 s per command, state removed.
    pub fn new(name: impl Into<String>, config: RunConfig, accel: Accel) -> Self {
        BootOptions {
            name: name.into(),
            config,
            accel,
            boot_timeout: Duration::from_secs(300),
            command_timeout: Self::DEFAULT_COMMAND_TIMEOUT,
            keep_state: std::env::var_os("RAVE_KEEP_STATE").is_some_and(|v| v == "1"),
        }
    }
}

/// A guest the cases run against: one booted by QEMU from an image on a
/// throwaway overlay, or a running target the harness attached to (see
/// [`Machine::attach`]). Only booting, the serial console and QEMU-side facts
/// differ; a verb that needs one of those says so on an attached target.
pub struct Machine {
    name: String,
    image: Image,
    /// One connection per case running at once (see [`crate::ssh_pool`]).
    ssh: ConnectionPool<SshSession>,
    /// Holds other cases' commands back during an exclusive section.
    gate: CommandGate,
    access: TestAccess,
    ssh_user: String,
    ssh_addr: SocketAddr,
    https_addr: SocketAddr,
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
        qmp_socket: Option<PathBuf>,
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
    /// Starts the guest and waits until `agent` can log in over SSH.
    pub fn boot(image: &Image, options: &BootOptions) -> Result<Machine, MachineError> {
        let machine = Machine::start(image, options)?;
        machine.wait_for_ssh(options.boot_timeout)?;
        Ok(machine)
    }

    /// Starts QEMU on a fresh overlay of the image's disk; does not wait.
    pub fn start(image: &Image, options: &BootOptions) -> Result<Machine, MachineError> {
        Machine::start_from(image, options, None)
    }

    /// Restores a saved guest (see [`crate::warm_start`]) on a fresh overlay
    /// of its saved disk, waits for SSH, and sets the guest's clock, which
    /// stood still from the save until now.
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

    /// A restored guest was saved stopped, so it stays paused once its state
    /// is loaded: waits for the load, then lets it run.
    fn resume_after_load(&self, timeout: Duration) -> Result<(), MachineError> {
        let Some(booted) = self.booted() else { return Ok(()) };
        self.wait(
            "the saved state to load",
            Deadline::new(timeout, Duration::from_millis(50)),
            || match lock(&booted.qemu).monitor("info status") {
                Ok(status) if status.contains("inmigrate") => Poll::Pending(status.trim().to_string()),
                Ok(status) if status.contains("paused") => Poll::Ready(()),
                Ok(status) if status.contains("running") => Poll::Ready(()),
                Ok(status) => Poll::Pending(status.trim().to_string()),
                // The QMP socket appears a moment after QEMU starts.
                Err(e) => Poll::Pending(e.to_string()),
            },
        )?;
        lock(&booted.qemu).monitor("cont")?;
        self.reach_stage("restored");
        Ok(())
    }

    /// The QEMU argv shape of `image` booted with `options`: what a saved
    /// state must have been saved with to be restored (see [`QemuCommand::shape`]).
    pub fn command_shape(image: &Image, options: &BootOptions) -> Result<Vec<String>, MachineError> {
        let placeholder = Path::new("/");
        let access_files = [
            crate::test_access::FW_CFG_AUTHORIZED_KEYS,
            crate::test_access::FW_CFG_HOST_KEY,
        ]
        .into_iter()
        .map(|name| FwCfgFile {
            name: name.into(),
            path: placeholder.into(),
        })
        .collect();
        Ok(command_for(
            image,
            options,
            find_qemu()?,
            placeholder,
            access_files,
            placeholder.into(),
            0,
            0,
            None,
        )
        .shape())
    }

    fn start_from(image: &Image, options: &BootOptions, saved: Option<&SavedState>) -> Result<Machine, MachineError> {
        let qemu = find_qemu()?;
        let qemu_img = find_program("qemu-img", "qemu-utils")?;
        HostResources::read().check(&options.config)?;
        let setup = |what: &str| {
            let what = what.to_string();
            move |e: std::io::Error| MachineError::Setup {
                what,
                message: e.to_string(),
            }
        };
        let root = crate::reaper::state_root();
        std::fs::create_dir_all(&root).map_err(setup("creating the state root"))?;
        let temp = tempfile::Builder::new()
            .prefix(&format!("{}-", options.name))
            .tempdir_in(&root)
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
        create_overlay(&qemu_img, &base, &overlay)?;
        let ssh_port = free_loopback_port().map_err(setup("finding a free port"))?;
        let https_port = free_loopback_port().map_err(setup("finding a free port"))?;
        let command = command_for(
            image,
            options,
            qemu,
            &state_dir,
            access.fw_cfg(),
            overlay,
            ssh_port,
            https_port,
            saved.map(SavedState::vmstate),
        );
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
            https_addr: SocketAddr::from((Ipv4Addr::LOCALHOST, https_port)),
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
        let access = TestAccess::described(&description.ssh_key, &description.ssh_host_key)?;
        let machine = Machine {
            name: description.name.clone(),
            ssh: ConnectionPool::new(crate::ssh_pool::MAX_CONNECTIONS),
            gate: CommandGate::default(),
            access,
            ssh_user: description.ssh_user.clone(),
            ssh_addr: resolve(&description.ssh_host, description.ssh_port)?,
            https_addr: resolve(&description.https_host, description.https_port)?,
            ca_cert: description.ca_cert.clone(),
            command_timeout: BootOptions::DEFAULT_COMMAND_TIMEOUT,
            https_client: std::sync::OnceLock::new(),
            boot_stages: Mutex::new(Vec::new()),
            first_command_uptime: Mutex::new(None),
            backend: Backend::Attached {
                forwards: description.forwards.clone(),
                qmp_socket: description.qmp_socket.clone(),
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

    /// The guest's own uptime (seconds) when the harness's first command
    /// after its first login ran: with a unit's
    /// `ActiveEnterTimestampMonotonic`, a delay measured on one clock.
    pub fn guest_uptime_at_first_command(&self) -> Option<f64> {
        *lock(&self.first_command_uptime)
    }

    /// The boot stages reached so far: `console` (first serial output) and
    /// `ssh` (first key login), timed from QEMU's start.
    pub fn boot_stages(&self) -> Vec<BootStage> {
        self.boot_stages.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn reach_stage(&self, stage: &str) {
        let Some(booted) = self.booted() else { return };
        let mut stages = self.boot_stages.lock().unwrap_or_else(|p| p.into_inner());
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

    /// `unit`'s MemoryCurrent and MemoryMax, as systemd reports them.
    pub fn unit_memory(&self, unit: &str) -> Result<UnitMemory, MachineError> {
        let out = self.succeed(&format!("systemctl show -p MemoryCurrent -p MemoryMax {}", quote(unit)))?;
        Ok(parse_unit_memory(unit, &out))
    }

    /// The guest's figures for the run's report: boot stages, QEMU's usage,
    /// and every component unit's memory against its limit (a unit that
    /// cannot be read is left out, the guest may be gone).
    pub fn report(&self) -> GuestReport {
        let usage = self.qemu_usage();
        let units = if self.ensure_running().is_ok() {
            self.image
                .manifest
                .units()
                .into_iter()
                .filter_map(|unit| self.unit_memory(unit).ok())
                .collect()
        } else {
            Vec::new()
        };
        GuestReport {
            name: self.name.clone(),
            profile: self.image.manifest.profile,
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

    /// The image it was booted from.
    pub fn image(&self) -> &Image {
        &self.image
    }

    /// The host port forwarded to the guest's sshd (on 127.0.0.1 for a booted guest).
    pub fn ssh_port(&self) -> u16 {
        self.ssh_addr.port()
    }

    /// Where SSH reaches the guest.
    pub fn ssh_addr(&self) -> SocketAddr {
        self.ssh_addr
    }

    /// The host port forwarded to the guest's HTTPS port 3002 (on 127.0.0.1 for a booted guest).
    pub fn https_port(&self) -> u16 {
        self.https_addr.port()
    }

    /// Where `https://rave.local:3002` reaches the guest.
    pub fn https_addr(&self) -> SocketAddr {
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

    /// Sends `method path` to `https://rave.local:3002` through the forwarded
    /// port, verified against the image's CA only.
    pub fn https(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Result<HttpResponse, MachineError> {
        self.ensure_running()?;
        let _pass = self.gate.pass(GATE_TIMEOUT).map_err(|e| self.busy(e))?;
        let https_error = |e: crate::https::HttpsError| MachineError::Https {
            name: self.name.clone(),
            message: e.to_string(),
        };
        let client = match self.https_client.get() {
            Some(client) => client,
            None => {
                let made = HttpsClient::new(self.ca_cert.as_deref(), self.https_addr, self.command_timeout)
                    .map_err(https_error)?;
                self.https_client.get_or_init(|| made)
            }
        };
        client.request(method, path, headers, body).map_err(https_error)
    }

    /// `GET path` over HTTPS (see [`Machine::https`]).
    pub fn https_get(&self, path: &str) -> Result<HttpResponse, MachineError> {
        self.https("GET", path, &[], None)
    }

    /// Where a connection from outside reaches `guest_port`: for a booted
    /// guest a new forward on 127.0.0.1 (QEMU user networking, added over
    /// QMP); for an attached one the description's forward, else a new one
    /// through its QMP socket (a local QEMU guest), else the port on the
    /// target's host itself. A target reached through loopback forwards with
    /// neither is an error: its host's own port would prove nothing.
    pub fn forward(&self, guest_port: u16) -> Result<SocketAddr, MachineError> {
        let monitor = |command_line: &str| match &self.backend {
            Backend::Booted(booted) => lock(&booted.qemu).monitor(command_line),
            Backend::Attached { qmp_socket, .. } => {
                crate::qemu_process::monitor_at(qmp_socket.as_deref().unwrap_or(Path::new("")), command_line)
            }
        };
        if let Backend::Attached {
            forwards, qmp_socket, ..
        } = &self.backend
        {
            if let Some(port) = forwards.get(&guest_port) {
                return Ok(SocketAddr::new(self.ssh_addr.ip(), *port));
            }
            if qmp_socket.is_none() {
                if self.ssh_addr.ip().is_loopback() {
                    return Err(MachineError::Setup {
                        what: format!("reaching guest port {guest_port} of {} from outside", self.name),
                        message: "the target is reached through forwards on this host, and its description has no forward for that port and no qmp_socket to add one: add the port to `forwards`".into(),
                    });
                }
                return Ok(SocketAddr::new(self.ssh_addr.ip(), guest_port));
            }
        }
        let host_port = free_loopback_port().map_err(|e| MachineError::Setup {
            what: "finding a free port".into(),
            message: e.to_string(),
        })?;
        let said = monitor(&format!("hostfwd_add tcp:127.0.0.1:{host_port}-:{guest_port}"))?;
        if !said.trim().is_empty() {
            return Err(MachineError::Setup {
                what: format!("forwarding guest port {guest_port}"),
                message: said.trim().into(),
            });
        }
        if let Backend::Attached { added, .. } = &self.backend {
            lock(added).push(host_port);
        }
        Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, host_port)))
    }

    /// Removes the forwards added to an attached local guest (best effort:
    /// its QEMU may be gone).
    fn remove_added_forwards(&self) {
        if let Backend::Attached {
            qmp_socket: Some(socket),
            added,
            ..
        } = &self.backend
        {
            for port in std::mem::take(&mut *lock(added)) {
                let _ = crate::qemu_process::monitor_at(socket, &format!("hostfwd_remove tcp:127.0.0.1:{port}"));
            }
        }
    }

    /// QEMU's QMP socket (a booted guest's).
    pub fn qmp_socket(&self) -> Option<PathBuf> {
        self.state_dir().map(|d| d.join("qmp.sock"))
    }

    /// What sshd tells an unauthenticated client about `user`, and whether
    /// `password` gets in (see [`crate::ssh::probe_auth`]).
    pub fn ssh_auth_probe(&self, user: &str, password: &str) -> Result<AuthProbe, MachineError> {
        crate::ssh::probe_auth(
            self.ssh_addr(),
            user,
            password,
            &self.access.host_key_blob,
            self.command_timeout,
        )
        .map_err(|e| self.ssh_error(e))
    }

    /// Whether a key login as `user` with the run's client key works.
    pub fn ssh_key_login(&self, user: &str) -> Result<(), MachineError> {
        SshSession::connect(
            self.ssh_addr(),
            user,
            &self.access.client_key,
            &self.access.host_key_blob,
            self.command_timeout,
        )
        .map(|_| ())
        .map_err(|e| self.ssh_error(e))
    }

    /// Waits until a key login as the image's SSH user works.
    pub fn wait_for_ssh(&self, timeout: Duration) -> Result<(), MachineError> {
        let addr = self.ssh_addr();
        let user = self.ssh_user.clone();
        let what = format!("SSH key login as {user} on {addr}");
        // A refused attempt costs nothing (QEMU resets it at once): look often.
        // An attempt without a banner is given up and made again at once (see
        // SshSession::connect_booting): before the guest's network is up, QEMU
        // holds a connection unanswered. Once the guest has answered an attempt
        // (a reset, a close, or a failed handshake), a missing banner means a busy sshd,
        // and each later attempt waits twice as long; so it does, for safety,
        // after many attempts without a banner.
        let mut banner_within = FIRST_BANNER_WAIT;
        let mut guest_answered = false;
        let mut without_banner = 0u32;
        let session = self.wait(&what, Deadline::new(timeout, Duration::from_millis(100)), || {
            if self
                .serial_log()
                .is_some_and(|log| std::fs::metadata(log).is_ok_and(|m| m.len() > 0))
            {
                self.reach_stage("console");
            }
            match SshSession::connect_booting(
                addr,
                &user,
                &self.access.client_key,
                &self.access.host_key_blob,
                banner_within,
                LOGIN_TIMEOUT,
            ) {
                Ok(session) => Poll::Ready(session),
                Err(e @ SshError::HostKeyMismatch { .. }) => Poll::Abort(self.ssh_error(e)),
                Err(e @ SshError::NoBanner { .. }) => {
                    without_banner += 1;
                    if guest_answered || without_banner > UNANSWERED_ATTEMPTS {
                        banner_within = (banner_within * 2).min(LOGIN_TIMEOUT);
                    }
                    Poll::Pending(e.to_string())
                }
                // Refused: QEMU's forward is not listening yet, which says nothing of the guest.
                Err(e @ SshError::Connect { .. }) if e.is_refused() => Poll::Pending(e.to_string()),
                Err(e) => {
                    guest_answered = true;
                    Poll::Pending(e.to_string())
                }
            }
        })?;
        self.reach_stage("ssh");
        // The first command, timed on the guest's own clock (see guest_uptime_at_first_command).
        // A connection that failed its first command is not pooled: the pool opens another.
        if let Ok(out) = session.exec_with_timeout("cat /proc/uptime", self.command_timeout) {
            let mut first = lock(&self.first_command_uptime);
            if first.is_none() {
                *first = out.stdout.split_whitespace().next().and_then(|s| s.parse().ok());
            }
            drop(first);
            self.ssh.add(session);
        }
        Ok(())
    }

    /// Runs `command` in the guest as the SSH user, under bash with `set
    /// -euo pipefail` (see [`crate::guest_command`]): its exit status and
    /// output. The command's deadline (the machine's command timeout) bounds
    /// the whole of it; past it the command is ended in the guest and this
    /// is a [`MachineError::Timeout`] with the output so far. A command that
    /// a signal ended, or whose channel closed without an exit status, is an
    /// error ([`MachineError::Ssh`]), never an exit status.
    pub fn execute(&self, command: &str) -> Result<CommandOutput, MachineError> {
        self.execute_within(command, self.command_timeout)
    }

    /// [`Machine::execute`] for a command that may take up to `timeout`.
    pub fn execute_within(&self, command: &str, timeout: Duration) -> Result<CommandOutput, MachineError> {
        self.ensure_running()?;
        let _pass = self.gate.pass(GATE_TIMEOUT).map_err(|e| self.busy(e))?;
        let session = self
            .ssh
            .take(self.command_timeout, || {
                SshSession::connect(
                    self.ssh_addr(),
                    &self.ssh_user,
                    &self.access.client_key,
                    &self.access.host_key_blob,
                    self.command_timeout,
                )
            })
            .map_err(|e| match e {
                PoolError::Connect(e) => self.ssh_error(e),
                busy @ PoolError::Busy { .. } => self.busy(busy),
            })?;
        match session.exec_with_timeout(command, timeout) {
            Ok(output) => Ok(output),
            Err(e) => {
                session.discard();
                self.ensure_running()?;
                Err(match e {
                    SshError::TimedOut { how, output, .. } => MachineError::Timeout {
                        name: self.name.clone(),
                        what: format!(
                            "command `{}` to finish ({how})",
                            crate::guest_command::short_command(command)
                        ),
                        waited: timeout,
                        last_seen: output.to_string(),
                        serial_tail: self.serial_tail(),
                    },
                    other => self.ssh_error(other),
                })
            }
        }
    }

    /// Runs `section` with no other thread's command or request reaching
    /// the guest (a case that counts requests must not count another
    /// case's); commands already on their way finish first. Sections nest.
    pub fn exclusively<T>(&self, section: impl FnOnce() -> T) -> Result<T, MachineError> {
        self.gate.exclusive(GATE_TIMEOUT, section).map_err(|e| self.busy(e))
    }

    /// Runs `command` and returns its stdout; an error when it exits non-zero.
    pub fn succeed(&self, command: &str) -> Result<String, MachineError> {
        let out = self.execute(command)?;
        if out.status != 0 {
            return Err(MachineError::CommandFailed {
                name: self.name.clone(),
                command: command.into(),
                status: out.status,
                stdout: out.stdout,
                stderr: out.stderr,
            });
        }
        Ok(out.stdout)
    }

    /// Runs `command` and returns its stdout; an error when it exits zero.
    pub fn fail(&self, command: &str) -> Result<String, MachineError> {
        let out = self.execute(command)?;
        if out.status == 0 {
            return Err(MachineError::CommandSucceeded {
                name: self.name.clone(),
                command: command.into(),
                stdout: out.stdout,
            });
        }
        Ok(out.stdout)
    }

    /// Runs `command` until it succeeds; returns its stdout.
    pub fn wait_until_succeeds(&self, command: &str, timeout: Duration) -> Result<String, MachineError> {
        let what = format!("`{command}` to succeed");
        self.wait(
            &what,
            Deadline::new(timeout, Duration::from_millis(500)),
            || match self.execute(command) {
                Ok(out) if out.status == 0 => Poll::Ready(out.stdout),
                Ok(out) => Poll::Pending(format!("exit {}: {}", out.status, last_line(&out.stderr, &out.stdout))),
                Err(e @ MachineError::QemuExited { .. }) => Poll::Abort(e),
                Err(e) => Poll::Pending(e.to_string()),
            },
        )
    }

    /// Waits until the guest's CPUs have been at least [`QUIET_IDLE`] idle over
    /// one second: the services' own start-up work (a Node service loading, a
    /// database recovering) is over, not only their units active. A guest is
    /// saved for warm starts only then, so no restored guest resumes a start-up
    /// halfway (with the clock set forward under it).
    pub fn wait_until_quiet(&self, timeout: Duration) -> Result<(), MachineError> {
        let probe = "head -n1 /proc/stat; sleep 1; head -n1 /proc/stat; ps -eo pcpu=,comm= --sort=-pcpu | awk 'NR <= 3 { printf \"%s %s  \", $1, $2 }'";
        let what = format!("the guest's CPUs to be {:.0}% idle over a second", QUIET_IDLE * 100.0);
        self.wait(&what, Deadline::new(timeout, Duration::from_millis(200)), || {
            let out = match self.execute(probe) {
                Ok(out) if out.status == 0 => out,
                Ok(out) => return Poll::Pending(probe_failed(&out)),
                Err(e @ MachineError::QemuExited { .. }) => return Poll::Abort(e),
                Err(e) => return Poll::Pending(e.to_string()),
            };
            let lines: Vec<&str> = out.stdout.lines().collect();
            match (lines.first().copied(), lines.get(1).copied()) {
                (Some(before), Some(after)) => match idle_fraction(before, after) {
                    Some(idle) if idle >= QUIET_IDLE => Poll::Ready(()),
                    Some(idle) => Poll::Pending(format!(
                        "{:.0}% idle; busiest (%CPU over their lifetime): {}",
                        idle * 100.0,
                        lines.get(2).unwrap_or(&"?").trim()
                    )),
                    None => Poll::Pending(format!("unreadable /proc/stat: {}", out.stdout.trim())),
                },
                _ => Poll::Pending(format!("unreadable /proc/stat: {}", out.stdout.trim())),
            }
        })
    }

    /// The units among `units` that systemd has restarted since boot, with
    /// their restart counts (`NRestarts`), read with one command.
    pub fn restarted_units(&self, units: &[&str]) -> Result<Vec<(String, u32)>, MachineError> {
        let quoted: Vec<String> = units.iter().map(|u| quote(u)).collect();
        let out = self.succeed(&format!("systemctl show -p NRestarts {}", quoted.join(" ")))?;
        let counts: Vec<u32> = out
            .lines()
            .filter_map(|l| l.strip_prefix("NRestarts="))
            .filter_map(|n| n.trim().parse().ok())
            .collect();
        if counts.len() != units.len() {
            return Err(MachineError::Setup {
                what: format!("reading the restart counts of {}", units.join(", ")),
                message: format!(
                    "systemctl show gave {} counts for {} units: {out:?}",
                    counts.len(),
                    units.len()
                ),
            });
        }
        Ok(units
            .iter()
            .zip(counts)
            .filter(|(_, n)| *n > 0)
            .map(|(u, n)| (u.to_string(), n))
            .collect())
    }

    /// Waits until `unit` is active. Fails at once, with the unit's status and
    /// journal, when it is failed, stopped with no job queued, or not found.
    pub fn wait_for_unit(&self, unit: &str, timeout: Duration) -> Result<(), MachineError> {
        self.wait_for_units(&[unit], timeout)
    }

    /// Waits until every one of `units` is active, reading all of them with
    /// one command per poll. Fails at once, as [`Machine::wait_for_unit`] does,
    /// on the first unit that is failed, stopped with no job queued, or not found.
    pub fn wait_for_units(&self, units: &[&str], timeout: Duration) -> Result<(), MachineError> {
        let quoted: Vec<String> = units.iter().map(|u| quote(u)).collect();
        // Jobs first, states second: a job that finishes between the two reads
        // leaves its unit active, so "no job, and inactive" cannot be a race.
        let probe = format!(
            "systemctl list-jobs --no-legend --plain; echo {UNIT_STATES_MARK}; systemctl show -p LoadState -p ActiveState -p SubState {}",
            quoted.join(" ")
        );
        let what = match units {
            [unit] => format!("unit {unit} to be active"),
            _ => format!("units {} to be active", units.join(", ")),
        };
        // A probe that failed (systemctl itself failing while D-Bus restarts,
        // an SSH error) says nothing of the units: pending, not a verdict.
        self.wait(&what, Deadline::new(timeout, Duration::from_millis(250)), || {
            let out = match self.execute(&probe) {
                Ok(out) if out.status == 0 => out,
                Ok(out) => return Poll::Pending(probe_failed(&out)),
                Err(e @ MachineError::QemuExited { .. }) => return Poll::Abort(e),
                Err(e) => return Poll::Pending(e.to_string()),
            };
            let states = match unit_states(&out.stdout, units) {
                Ok(states) => states,
                Err(why) => return Poll::Pending(format!("the units probe was incomplete: {why}")),
            };
            let mut waiting = Vec::new();
            for state in &states {
                match state.verdict() {
                    UnitVerdict::Active => {}
                    UnitVerdict::Pending => waiting.push(format!("{}: {}", state.unit, state.describe())),
                    UnitVerdict::Stuck(why) => {
                        return Poll::Abort(MachineError::UnitNotActive {
                            name: self.name.clone(),
                            unit: state.unit.clone(),
                            state: why,
                            diagnostics: self.unit_diagnostics(&state.unit),
                        })
                    }
                }
            }
            if waiting.is_empty() {
                Poll::Ready(())
            } else {
                Poll::Pending(waiting.join("; "))
            }
        })
    }

    /// Waits until something listens on TCP `port` inside the guest.
    pub fn wait_for_open_port(&self, port: u16, timeout: Duration) -> Result<(), MachineError> {
        let probe = format!("ss -Htln 'sport = :{port}'");
        let what = format!("a listener on TCP port {port} in the guest");
        self.wait(
            &what,
            Deadline::new(timeout, Duration::from_millis(500)),
            || match self.execute(&probe) {
                Ok(out) if out.status == 0 && !out.stdout.trim().is_empty() => Poll::Ready(()),
                Ok(out) if out.status == 0 => Poll::Pending(format!("nothing listens on {port}")),
                Ok(out) => Poll::Pending(probe_failed(&out)),
                Err(e @ MachineError::QemuExited { .. }) => Poll::Abort(e),
                Err(e) => Poll::Pending(e.to_string()),
            },
        )
    }

    /// `systemctl status` of `unit` and the last lines of its journal, for a failure message.
    pub fn unit_diagnostics(&self, unit: &str) -> String {
        let quoted = quote(unit);
        let command = format!(
            "sudo systemctl status --no-pager --full --lines=0 {quoted} 2>&1 || printf '(systemctl status exited %d)\\n' \"$?\"; echo '--- journal of {unit} (last {JOURNAL_LINES} lines) ---'; sudo journalctl --no-pager -o short-precise -n {JOURNAL_LINES} -u {quoted} 2>&1"
        );
        match self.execute(&command) {
            Ok(out) if out.status == 0 => format!("--- systemctl status {unit} ---\n{}", out.stdout.trim_end()),
            Ok(out) => format!(
                "--- systemctl status {unit} ---\n{}\n(collecting the diagnostics of {unit} failed: {})",
                out.stdout.trim_end(),
                probe_failed(&out)
            ),
            Err(e) => format!("(could not collect the diagnostics of {unit}: {e})"),
        }
    }

    /// Powers a booted guest off over QMP, waiting up to `timeout`, then
    /// kills QEMU and removes its state directory (unless kept); returns
    /// whether it went down by itself. An attached target
    /// is only disconnected: the harness never powers it down.
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

    /// Waits until every unit of the image's contract is active and systemd
    /// has no job left (the moment a warm start saves).
    pub fn wait_for_contract(&self, timeout: Duration) -> Result<(), MachineError> {
        let deadline = Instant::now() + timeout;
        let units = self.image.manifest.units();
        self.wait_for_units(&units, deadline.saturating_duration_since(Instant::now()))?;
        self.wait_until_succeeds(
            "jobs=$(systemctl list-jobs --no-legend); test -z \"$jobs\"",
            deadline.saturating_duration_since(Instant::now()),
        )?;
        self.reach_stage("contract");
        Ok(())
    }

    /// Saves this guest into `dir` for warm starts (see [`crate::warm_start`]):
    /// stops it, migrates its memory and devices to a file, then ends QEMU
    /// and keeps its disk overlay and keys. The guest is gone afterwards.
    pub fn save_state(&self, dir: &Path, timeout: Duration) -> Result<(), MachineError> {
        use crate::warm_start::{DISK_FILE, VMSTATE_FILE};
        let booted = self.booted().ok_or_else(|| MachineError::NotBooted {
            name: self.name.clone(),
            what: "saving its state".into(),
        })?;
        self.ssh.clear();
        let vmstate = dir.join(VMSTATE_FILE);
        let said = {
            let qemu = lock(&booted.qemu);
            qemu.monitor("stop")?;
            qemu.monitor(&format!("migrate -d \"exec:cat > {}\"", vmstate.display()))?
        };
        if !said.trim().is_empty() {
            return Err(MachineError::Setup {
                what: format!("saving {} to {}", self.name, vmstate.display()),
                message: said.trim().into(),
            });
        }
        self.wait(
            &format!("the migration of {} to {}", self.name, vmstate.display()),
            Deadline::new(timeout, Duration::from_millis(200)),
            || match lock(&booted.qemu).monitor("info migrate") {
                Ok(info) if info.contains("Migration status: completed") => Poll::Ready(()),
                Ok(info) if info.contains("Migration status: failed") => Poll::Abort(MachineError::Setup {
                    what: format!("saving {}", self.name),
                    message: info.trim().into(),
                }),
                Ok(info) => Poll::Pending(info.lines().next().unwrap_or("").trim().to_string()),
                Err(e) => Poll::Abort(e.into()),
            },
        )?;
        lock(&booted.qemu).kill();
        let copy = |from: &Path, to: &Path| {
            std::fs::copy(from, to).map(|_| ()).map_err(|e| MachineError::Setup {
                what: format!("copying {} to {}", from.display(), to.display()),
                message: e.to_string(),
            })
        };
        copy(&booted.state_dir.join("overlay.qcow2"), &dir.join(DISK_FILE))?;
        self.access.copy_to(dir)?;
        Ok(())
    }

    /// Kills QEMU at once, as a crash would (a booted guest only).
    pub fn crash(&self) -> Result<(), MachineError> {
        let booted = self.booted().ok_or_else(|| MachineError::NotBooted {
            name: self.name.clone(),
            what: "killing QEMU".into(),
        })?;
        lock(&booted.qemu).kill();
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

    /// Looks at `poll` every `interval` until it is ready, aborts, or
    /// `timeout` passes; before every look, checks that QEMU still runs (a
    /// guest that died ends the wait at once, with its console). On timeout:
    /// [`MachineError::Timeout`] with `what`, how long, what the last look
    /// saw, and the serial tail. The wait for a case's own condition.
    pub fn wait_until<T>(
        &self,
        what: &str,
        timeout: Duration,
        interval: Duration,
        poll: impl FnMut() -> Poll<T, MachineError>,
    ) -> Result<T, MachineError> {
        self.wait(what, Deadline::new(timeout, interval), poll)
    }

    /// One look at each of `units` with one command: its state, restarts,
    /// main process, and when its current activation began, on the guest's
    /// monotonic clock together with that clock's time of the look.
    pub fn unit_snapshots(&self, units: &[&str]) -> Result<Vec<UnitSnapshot>, MachineError> {
        let quoted: Vec<String> = units.iter().map(|u| quote(u)).collect();
        let command = format!(
            "systemctl show -p ActiveState -p SubState -p NRestarts -p MainPID -p ActiveEnterTimestampMonotonic {}; echo {UNIT_STATES_MARK}; cut -d' ' -f1 /proc/uptime",
            quoted.join(" ")
        );
        let out = self.succeed(&command)?;
        unit_snapshots(&out, units).map_err(|why| MachineError::Setup {
            what: format!("reading the state of {}", units.join(", ")),
            message: why,
        })
    }

    /// Waits until each of `units` has been active for at least `window` in
    /// one activation (by `ActiveEnterTimestampMonotonic`), or one of them
    /// has restarted (`NRestarts` > 0: the caller judges that).
    pub fn wait_for_units_up_for(
        &self,
        units: &[&str],
        window: Duration,
        timeout: Duration,
    ) -> Result<(), MachineError> {
        let what = format!("units {} to be up for {window:?}", units.join(", "));
        self.wait(&what, Deadline::new(timeout, Duration::from_millis(500)), || {
            let snapshots = match self.unit_snapshots(units) {
                Ok(snapshots) => snapshots,
                Err(e @ MachineError::QemuExited { .. }) => return Poll::Abort(e),
                Err(e) => return Poll::Pending(e.to_string()),
            };
            if snapshots.iter().any(|s| s.n_restarts > 0) {
                return Poll::Ready(());
            }
            let young: Vec<String> = snapshots
                .iter()
                .filter(|s| s.active_state != "active" || s.up_for() < window)
                .map(UnitSnapshot::describe)
                .collect();
            if young.is_empty() {
                Poll::Ready(())
            } else {
                Poll::Pending(young.join("; "))
            }
        })
    }

    /// The one wait: `retry`, plus a look at QEMU before every poll and the
    /// console on timeout.
    fn wait<T>(
        &self,
        what: &str,
        deadline: Deadline,
        mut poll: impl FnMut() -> Poll<T, MachineError>,
    ) -> Result<T, MachineError> {
        let result = retry(deadline, || {
            if let Err(e) = self.ensure_running() {
                return Poll::Abort(e);
            }
            poll()
        });
        result.map_err(|e| match e {
            RetryError::Aborted(e) => e,
            RetryError::Expired { waited, last_seen } => MachineError::Timeout {
                name: self.name.clone(),
                what: what.into(),
                waited,
                last_seen,
                serial_tail: self.serial_tail(),
            },
        })
    }

    fn ssh_error(&self, source: SshError) -> MachineError {
        MachineError::Ssh {
            name: self.name.clone(),
            source: Box::new(source),
        }
    }

    fn busy(&self, why: impl std::fmt::Display) -> MachineError {
        MachineError::Busy {
            name: self.name.clone(),
            message: why.to_string(),
        }
    }
}

/// The QEMU command of `image` with `options`, its per-run files in `state_dir`.
#[allow(clippy::too_many_arguments)]
fn command_for(
    image: &Image,
    options: &BootOptions,
    qemu: PathBuf,
    state_dir: &Path,
    access_files: Vec<FwCfgFile>,
    overlay: PathBuf,
    ssh_port: u16,
    https_port: u16,
    incoming: Option<PathBuf>,
) -> QemuCommand {
    QemuCommand {
        binary: qemu,
        name: options.name.clone(),
        accel: options.accel,
        ram_mb: options.config.ram_mb,
        cpus: options.config.cpus,
        kernel: image.kernel(),
        initrd: image.initrd(),
        append: match &options.config.kernel_args {
            Some(extra) => format!("{} {extra}", image.manifest.kernel_cmdline),
            None => image.manifest.kernel_cmdline.clone(),
        },
        overlay,
        forwards: vec![
            PortForward {
                host_port: ssh_port,
                guest_port: 22,
            },
            PortForward {
                host_port: https_port,
                guest_port: GUEST_HTTPS_PORT,
            },
        ],
        serial_log: state_dir.join("serial.log"),
        qmp_socket: state_dir.join("qmp.sock"),
        fw_cfg: access_files
            .into_iter()
            .chain(image.age_identity().map(|path| FwCfgFile {
                name: FW_CFG_AGE_IDENTITY.into(),
                path,
            }))
            .collect(),
        incoming,
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

/// Quotes one word for the guest's shell.
pub fn quote(word: &str) -> String {
    crate::guest_command::quote(word)
}

/// The idle share of the guest's CPUs between two `cpu` lines of
/// `/proc/stat` (idle and iowait over all time spent).
fn idle_fraction(before: &str, after: &str) -> Option<f64> {
    let fields = |line: &str| -> Option<Vec<u64>> {
        let mut words = line.split_whitespace();
        (words.next()? == "cpu").then_some(())?;
        words.map(|w| w.parse().ok()).collect()
    };
    let (a, b) = (fields(before)?, fields(after)?);
    if a.len() < 5 || a.len() != b.len() {
        return None;
    }
    let delta: Vec<u64> = a.iter().zip(&b).map(|(x, y)| y.saturating_sub(*x)).collect();
    // user nice system idle iowait irq softirq steal [guest guest_nice]: guest time is already in user.
    let total: u64 = delta.iter().take(8).sum();
    (total > 0).then(|| (delta[3] + delta[4]) as f64 / total as f64)
}

/// Separates `systemctl list-jobs` from `systemctl show` in the units probe.
const UNIT_STATES_MARK: &str = "--rave-unit-states--";

/// One unit as the units probe saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct UnitState {
    unit: String,
    load: String,
    active: String,
    sub: String,
    job_queued: bool,
}

/// One look at a unit (see [`Machine::unit_snapshots`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitSnapshot {
    /// The unit.
    pub unit: String,
    /// `ActiveState`, e.g. `active`.
    pub active_state: String,
    /// `SubState`, e.g. `running`.
    pub sub_state: String,
    /// `NRestarts`: automatic restarts since the unit was last started by hand.
    pub n_restarts: u32,
    /// `MainPID` (0: none).
    pub main_pid: u32,
    /// When the current activation began (`ActiveEnterTimestampMonotonic`),
    /// on the guest's monotonic clock.
    pub active_since: Duration,
    /// The guest's monotonic clock at the look (`/proc/uptime`; the guests
    /// never suspend, so it runs with the monotonic clock).
    pub seen_at: Duration,
}

impl UnitSnapshot {
    /// How long the current activation has lasted at the look.
    pub fn up_for(&self) -> Duration {
        self.seen_at.saturating_sub(self.active_since)
    }

    /// `nginx.service: ActiveState=active SubState=running NRestarts=0 MainPID=412, up 12.3 s`.
    pub fn describe(&self) -> String {
        format!(
            "{}: ActiveState={} SubState={} NRestarts={} MainPID={}, up {:.1} s",
            self.unit,
            self.active_state,
            self.sub_state,
            self.n_restarts,
            self.main_pid,
            self.up_for().as_secs_f64()
        )
    }
}

/// Reads [`Machine::unit_snapshots`]' output: `systemctl show` blocks, one per
/// asked unit in the asked order, the mark, then the guest's uptime.
fn unit_snapshots(output: &str, units: &[&str]) -> Result<Vec<UnitSnapshot>, String> {
    let (shown, uptime) = output
        .split_once(UNIT_STATES_MARK)
        .ok_or_else(|| format!("no {UNIT_STATES_MARK} mark in {output:?}"))?;
    let seen_at: f64 = uptime
        .trim()
        .parse()
        .map_err(|_| format!("the guest's uptime {:?} is not a number", uptime.trim()))?;
    let blocks: Vec<BTreeMap<String, String>> = shown
        .trim_matches('\n')
        .split("\n\n")
        .map(parse_properties)
        .filter(|b| !b.is_empty())
        .collect();
    if blocks.len() != units.len() {
        return Err(format!(
            "{} property blocks for {} units: {shown:?}",
            blocks.len(),
            units.len()
        ));
    }
    units
        .iter()
        .zip(&blocks)
        .map(|(unit, props)| {
            let get = |k: &str| props.get(k).ok_or_else(|| format!("no {k} for {unit} in {props:?}"));
            let number = |k: &str| -> Result<u64, String> {
                let v = get(k)?;
                v.parse().map_err(|_| format!("{k}={v} of {unit} is not a number"))
            };
            Ok(UnitSnapshot {
                unit: unit.to_string(),
                active_state: get("ActiveState")?.clone(),
                sub_state: get("SubState")?.clone(),
                n_restarts: number("NRestarts")? as u32,
                main_pid: number("MainPID")? as u32,
                active_since: Duration::from_micros(number("ActiveEnterTimestampMonotonic")?),
                seen_at: Duration::try_from_secs_f64(seen_at).map_err(|e| e.to_string())?,
            })
        })
        .collect()
}

/// What a wait makes of a [`UnitState`].
#[derive(Debug, PartialEq, Eq)]
enum UnitVerdict {
    Active,
    Pending,
    Stuck(String),
}

impl UnitState {
    fn describe(&self) -> String {
        format!("ActiveState={} SubState={}", self.active, self.sub)
    }

    fn verdict(&self) -> UnitVerdict {
        match (self.load.as_str(), self.active.as_str(), self.job_queued) {
            (_, "active", _) => UnitVerdict::Active,
            (load, _, _) if load != "loaded" => UnitVerdict::Stuck(format!("LoadState={load}")),
            (_, "failed", _) => UnitVerdict::Stuck(self.describe()),
            (_, "inactive", false) => {
                UnitVerdict::Stuck(format!("{}, and no job is queued to start it", self.describe()))
            }
            _ => UnitVerdict::Pending,
        }
    }
}

/// Reads the units probe's output (`systemctl list-jobs`, the mark, then
/// `systemctl show` blocks, one per asked unit in the asked order, whatever
/// name the unit calls itself): one state per asked unit. An output that is
/// not a whole probe (no mark, a block missing or cut) is an error: it says
/// nothing of the units, so the wait keeps looking.
fn unit_states(output: &str, units: &[&str]) -> Result<Vec<UnitState>, String> {
    let (jobs, shown) = output
        .split_once(UNIT_STATES_MARK)
        .ok_or_else(|| format!("no {UNIT_STATES_MARK} mark in {output:?}"))?;
    let queued: Vec<&str> = jobs.lines().filter_map(|l| l.split_whitespace().nth(1)).collect();
    let blocks: Vec<BTreeMap<String, String>> = shown
        .trim_matches('\n')
        .split("\n\n")
        .map(parse_properties)
        .filter(|b| !b.is_empty())
        .collect();
    if blocks.len() != units.len() {
        return Err(format!(
            "{} property blocks for {} units: {shown:?}",
            blocks.len(),
            units.len()
        ));
    }
    units
        .iter()
        .zip(&blocks)
        .map(|(unit, props)| {
            let get = |k: &str| {
                props
                    .get(k)
                    .cloned()
                    .ok_or_else(|| format!("no {k} for {unit} in {props:?}"))
            };
            Ok(UnitState {
                unit: unit.to_string(),
                load: get("LoadState")?,
                active: get("ActiveState")?,
                sub: get("SubState")?,
                job_queued: queued.contains(unit),
            })
        })
        .collect()
}

/// What a probe that exited non-zero said, for a wait's "last seen".
fn probe_failed(out: &CommandOutput) -> String {
    format!(
        "the probe failed (exit {}): {}",
        out.status,
        last_line(&out.stderr, last_line(&out.stdout, "no output").as_str())
    )
}

/// `KEY=value` lines into a map.
pub fn parse_properties(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

fn last_line(first: &str, fallback: &str) -> String {
    first
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or(fallback)
        .trim()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROBE: &str = "\
12 postgresql@15-main.service start running
--rave-unit-states--
LoadState=loaded
ActiveState=active
SubState=running

LoadState=loaded
ActiveState=activating
SubState=start

LoadState=loaded
ActiveState=failed
SubState=failed

LoadState=not-found
ActiveState=inactive
SubState=dead

LoadState=loaded
ActiveState=inactive
SubState=dead
";

    /// The units the probe above was asked for, in its order.
    const ASKED: [&str; 5] = [
        "sshd.service",
        "postgresql@15-main.service",
        "nginx.service",
        "gone.service",
        "idle.service",
    ];

    #[test]
    fn the_units_probe_reads_the_blocks_in_the_asked_order() {
        let states = unit_states(PROBE, &ASKED).unwrap();
        assert_eq!(states.iter().map(|s| s.unit.as_str()).collect::<Vec<_>>(), ASKED);
        let queued: Vec<bool> = states.iter().map(|s| s.job_queued).collect();
        assert_eq!(queued, [false, true, false, false, false]);
    }

    #[test]
    fn active_waits_on_a_job_and_stuck_is_failed_missing_or_idle() {
        let verdicts: Vec<UnitVerdict> = unit_states(PROBE, &ASKED)
            .unwrap()
            .iter()
            .map(UnitState::verdict)
            .collect();
        assert_eq!(
            verdicts,
            [
                UnitVerdict::Active,
                UnitVerdict::Pending,
                UnitVerdict::Stuck("ActiveState=failed SubState=failed".into()),
                UnitVerdict::Stuck("LoadState=not-found".into()),
                UnitVerdict::Stuck("ActiveState=inactive SubState=dead, and no job is queued to start it".into()),
            ]
        );
    }

    #[test]
    fn snapshots_say_how_long_each_unit_is_up() {
        let out = "NRestarts=0\nMainPID=412\nActiveState=active\nSubState=running\nActiveEnterTimestampMonotonic=3500000\n\n\
                   NRestarts=2\nMainPID=0\nActiveState=activating\nSubState=auto-restart\nActiveEnterTimestampMonotonic=0\n\
                   --rave-unit-states--\n15.25\n";
        let snaps = unit_snapshots(out, &["a.service", "b.service"]).unwrap();
        assert_eq!(snaps[0].up_for(), Duration::from_millis(11_750));
        assert_eq!(snaps[0].main_pid, 412);
        assert_eq!(snaps[1].n_restarts, 2);
        assert_eq!(
            snaps[0].describe(),
            "a.service: ActiveState=active SubState=running NRestarts=0 MainPID=412, up 11.8 s"
        );
        assert!(unit_snapshots(out, &["a.service"]).is_err(), "a block too many");
        assert!(unit_snapshots("NRestarts=0\n", &["a.service"]).is_err(), "no mark");
        assert!(unit_snapshots(&out.replace("15.25", "x"), &["a.service", "b.service"]).is_err());
    }

    #[test]
    fn idle_is_idle_and_iowait_over_all_time_spent() {
        let before = "cpu  100 0 100 800 0 0 0 0 0 0";
        assert_eq!(idle_fraction(before, "cpu  110 0 110 980 0 0 0 0 0 0"), Some(0.9));
        assert_eq!(idle_fraction(before, "cpu  250 0 150 800 0 0 0 0 0 0"), Some(0.0));
        assert_eq!(idle_fraction(before, before), None);
        assert_eq!(idle_fraction(before, "cpu0 110 0 110 980 0 0 0 0 0 0"), None);
        assert_eq!(idle_fraction("garbage", before), None);
    }

    #[test]
    fn a_failed_or_cut_probe_is_no_verdict() {
        // systemctl failing (D-Bus restarting) prints nothing useful: no verdict.
        assert!(unit_states("", &["x.service"]).is_err());
        assert!(unit_states("Failed to connect to bus: No such file or directory\n", &["x.service"]).is_err());
        // A block short: the probe was cut, not the unit gone.
        let mut asked = ASKED.to_vec();
        asked.push("absent.service");
        let err = unit_states(PROBE, &asked).unwrap_err();
        assert!(err.contains("5 property blocks for 6 units"), "{err}");
        // A block without its LoadState.
        let cut = PROBE.replace("LoadState=not-found\n", "");
        assert!(unit_states(&cut, &ASKED)
            .unwrap_err()
            .contains("no LoadState for gone.service"));
    }

    #[test]
    fn a_unit_systemd_does_not_know_is_stuck() {
        let states = unit_states(PROBE, &ASKED).unwrap();
        assert_eq!(states[3].verdict(), UnitVerdict::Stuck("LoadState=not-found".into()));
    }
}
