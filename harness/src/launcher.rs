//! From the environment to a booted guest: settings, image (built when
//! missing), accelerator (probed once), then [`Machine::boot`].

use std::sync::OnceLock;
use std::time::Duration;

use crate::accel::{self, AccelDecision, KvmUnusable};
use crate::config::{ConfigError, RunConfig};
use crate::host_check::find_qemu;
use crate::image_store::{ImageError, ImageSpec, ImageStore};
use crate::machine::{BootOptions, Machine, MachineError};
use crate::manifest::{Flavor, Image, Profile};
use crate::warm_start::{state_key, SavedState, WarmStore};

/// Why a guest could not be had.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// A bad environment value.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The image could not be found or built.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// KVM was demanded and does not work.
    #[error(transparent)]
    Kvm(#[from] KvmUnusable),
    /// The guest did not boot.
    #[error(transparent)]
    Machine(#[from] MachineError),
    /// `RAVE_FLAVOR` holds something else than debian or nixos.
    #[error("RAVE_FLAVOR={0:?} is not valid: debian (the default) or nixos")]
    Flavor(String),
    /// `RAVE_COLD` holds something else than 0 or 1.
    #[error("RAVE_COLD={0:?} is not valid: 1 (boot every guest cold) or 0 (restore saved states, the default)")]
    Cold(String),
}

/// QEMU's version line: a saved state is only restored by the QEMU that saved it.
fn qemu_version() -> Result<String, MachineError> {
    let qemu = find_qemu()?;
    let out = std::process::Command::new(&qemu)
        .arg("--version")
        .output()
        .map_err(|e| MachineError::Setup {
            what: format!("running {} --version", qemu.display()),
            message: e.to_string(),
        })?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or("")
        .to_string())
}

/// Boots guests of one flavor with one run's settings.
#[derive(Debug)]
pub struct Launcher {
    /// The run's settings.
    pub config: RunConfig,
    /// Where images are built and kept.
    pub store: ImageStore,
    /// The flavor of every image this launcher boots.
    pub flavor: Flavor,
    /// Boot every guest cold instead of restoring a saved state (`RAVE_COLD=1`, `--cold`).
    pub cold: bool,
    accel: OnceLock<AccelDecision>,
    /// QEMU's version line, read once per run (it keys the saved states).
    qemu_version: OnceLock<String>,
}

/// How long a cold boot may take until every unit of the contract is up, before a save.
pub const CONTRACT_UP_TIMEOUT: Duration = Duration::from_secs(300);
/// Boots tried when another process takes a forwarded port first.
pub const PORT_ATTEMPTS: u32 = 3;
/// How long a guest to be saved may take to become quiet once its contract is up.
pub const QUIET_TIMEOUT: Duration = Duration::from_secs(120);
/// Cold boots tried for a saved state in which no unit of the contract restarted.
pub const SAVE_ATTEMPTS: u32 = 3;
/// The systemd cases' stability window: a unit passes only once it has been
/// active, in one activation, for this long (a unit in a crash loop, even
/// one sampled during a short life, is red). A guest is saved for warm starts
/// only once every unit of its contract has been up this long, so the cases
/// on a restored guest do not wait for it.
pub const STABLE_FOR: Duration = Duration::from_secs(10);
/// How long saving a guest's state may take.
pub const SAVE_TIMEOUT: Duration = Duration::from_secs(120);

impl Launcher {
    /// A launcher for the environment's settings (`QEMU_RAM_MB`, `QEMU_CPUS`,
    /// `RAVE_ACCEL`, `SAFE`, `RAVE_FLAVOR`, `RAVE_CACHE_DIR`, `RAVE_COLD`).
    pub fn from_env() -> Result<Self, LaunchError> {
        let flavor = match std::env::var("RAVE_FLAVOR").ok().as_deref().map(str::trim) {
            None | Some("") | Some("debian") => Flavor::Debian,
            Some("nixos") => Flavor::Nixos,
            Some(other) => return Err(LaunchError::Flavor(other.into())),
        };
        // State left by a harness that was killed (SIGKILL) goes first.
        crate::reaper::sweep_stale();
        let cold = match std::env::var("RAVE_COLD").ok().as_deref().map(str::trim) {
            None | Some("") | Some("0") => false,
            Some("1") => true,
            Some(other) => return Err(LaunchError::Cold(other.into())),
        };
        Ok(Launcher {
            config: RunConfig::from_env()?,
            store: ImageStore::from_env(),
            flavor,
            cold,
            accel: OnceLock::new(),
            qemu_version: OnceLock::new(),
        })
    }

    /// The image spec of `profile` for this run.
    pub fn spec(&self, profile: Profile) -> ImageSpec {
        ImageSpec {
            flavor: self.flavor,
            profile,
            safe_mode: self.config.safe_mode,
        }
    }

    /// The image of `profile`, built when the cache lacks it.
    pub fn image(&self, profile: Profile) -> Result<Image, LaunchError> {
        Ok(self.store.ensure(self.spec(profile))?)
    }

    /// A guest of `profile` named `name`, up to SSH: restored from the image's
    /// saved state (made by a cold boot first when there is none), or booted
    /// cold when the launcher is `cold`.
    pub fn boot(&self, profile: Profile, name: &str) -> Result<Machine, LaunchError> {
        let image = self.image(profile)?;
        let accel = self.accel(&image)?;
        let options = BootOptions::new(name, self.config.clone(), accel);
        let saved = if self.cold {
            None
        } else {
            Some(self.saved_state(&image, &options)?)
        };
        // A free port is found by binding and releasing it; another process can
        // take it before QEMU binds it. QEMU then exits at once: try new ports.
        let mut attempts = 0;
        loop {
            attempts += 1;
            let result = match &saved {
                Some(saved) => Machine::restore(&image, &options, saved),
                None => Machine::boot(&image, &options),
            };
            match result {
                Err(MachineError::QemuExited { ref qemu_said, .. })
                    if qemu_said.contains("host forwarding rule") && attempts < PORT_ATTEMPTS => {}
                other => return Ok(other?),
            }
        }
    }

    /// The saved state of `image` booted with `options`, made now when missing.
    pub fn saved_state(&self, image: &Image, options: &BootOptions) -> Result<SavedState, LaunchError> {
        let shape = Machine::command_shape(image, options)?;
        let version = match self.qemu_version.get() {
            Some(version) => version.clone(),
            None => {
                let read = qemu_version()?;
                self.qemu_version.get_or_init(|| read).clone()
            }
        };
        let key = state_key(image, &shape, &version);
        let store = WarmStore::new(&self.store.cache_dir);
        Ok(store.ensure(image, &key, |dir| {
            let mut cold = options.clone();
            cold.name = format!("rave-save-{}", image.manifest.profile);
            let units = image.manifest.units();
            // Every restored guest is a copy of this one: it must be a boot in
            // which no unit of the contract crashed. A crash is said, and the
            // boot made again; a unit that crashes in every boot fails the save.
            let mut attempt = 1;
            loop {
                let machine = Machine::boot(image, &cold)?;
                machine.wait_for_contract(CONTRACT_UP_TIMEOUT)?;
                machine.wait_until_quiet(QUIET_TIMEOUT)?;
                machine.wait_for_units_up_for(&units, STABLE_FOR, QUIET_TIMEOUT)?;
                let restarted = machine.restarted_units(&units)?;
                if restarted.is_empty() {
                    return machine.save_state(dir, SAVE_TIMEOUT);
                }
                let said = restarted
                    .iter()
                    .map(|(unit, n)| format!("{unit} restarted {n} time(s)"))
                    .collect::<Vec<_>>()
                    .join(", ");
                let journal = restarted
                    .iter()
                    .map(|(unit, _)| machine.unit_diagnostics(unit))
                    .collect::<Vec<_>>()
                    .join("\n");
                machine.shutdown(SAVE_TIMEOUT);
                if attempt == SAVE_ATTEMPTS {
                    return Err(MachineError::Setup {
                        what: format!("saving {} for warm starts", image.manifest.profile),
                        message: format!(
                            "in each of {SAVE_ATTEMPTS} cold boots a unit of the contract crashed; the last: {said}\n{journal}"
                        ),
                    });
                }
                eprintln!(
                    "warning: {} not saved for warm starts: during its cold boot {said}; booting again ({}/{SAVE_ATTEMPTS}).\n{journal}",
                    image.manifest.profile,
                    attempt + 1
                );
                attempt += 1;
            }
        })?)
    }

    /// The accelerator, decided on the first boot and kept for the run.
    fn accel(&self, image: &Image) -> Result<crate::qemu_command::Accel, LaunchError> {
        if let Some(decision) = self.accel.get() {
            return Ok(decision.accel);
        }
        let qemu = find_qemu().map_err(MachineError::from)?;
        std::fs::create_dir_all(&self.store.cache_dir).map_err(|source| ImageError::Cache {
            path: self.store.cache_dir.clone(),
            source,
        })?;
        let decision = accel::decide(self.config.accel, &qemu, &image.kernel(), &self.store.cache_dir)?;
        let decision = self.accel.get_or_init(|| {
            if let Some(warning) = &decision.warning {
                eprintln!("{warning}");
            }
            decision
        });
        Ok(decision.accel)
    }
}
