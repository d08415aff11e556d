//! From settings to a booted rave guest: the profile's image (built when
//! missing), the accelerator (probed once), then a restore of the image's
//! saved state (made by a cold boot first when there is none) or a cold
//! boot. The launcher is also the runner's source of guests
//! ([`rave_harness::runner::Guests`]): a trial's group is its profile.

use std::sync::OnceLock;
use std::time::Duration;

use rave_harness::accel::{self, AccelDecision, KvmUnusable};
use rave_harness::host::{HostError, Tools};
use rave_harness::qemu_command::Accel;
use rave_harness::runner::{Guest, Guests, Unavailable};
use rave_harness::saved_state::SavedState;
use rave_harness::{BootOptions, CheckError, Image, Machine, MachineError};

use crate::image_store::{ImageError, ImageSpec, ImageStore};
use crate::profiles::{Profile, STABLE_FOR};
use crate::settings::Settings;
use crate::warm_store::{state_key, WarmStore};

/// Why a guest could not be had.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// The image could not be found or built.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// KVM was demanded and does not work.
    #[error("RAVE_ACCEL=kvm: {0}")]
    Kvm(#[from] KvmUnusable),
    /// A program is missing.
    #[error(transparent)]
    Host(#[from] HostError),
    /// The guest did not boot.
    #[error(transparent)]
    Machine(#[from] MachineError),
}

/// How long a cold boot may take until every unit of the contract is up, before a save.
pub const CONTRACT_UP_TIMEOUT: Duration = Duration::from_secs(300);
/// Boots tried when another process takes a forwarded port first.
pub const PORT_ATTEMPTS: u32 = 3;
/// How long a guest to be saved may take to become quiet once its contract is up.
pub const QUIET_TIMEOUT: Duration = Duration::from_secs(120);
/// Cold boots tried for a saved state in which no unit of the contract restarted
/// (claude-code-router's Node crashed at start in none to about half of the cold boots
/// under TCG, by machine, QEMU and CPU model, BENCHMARKS.md: 6 all crashing is about 1.6%
/// at one in two).
pub const SAVE_ATTEMPTS: u32 = 6;
/// How long saving a guest's state may take.
pub const SAVE_TIMEOUT: Duration = Duration::from_secs(120);

/// Boots rave guests with one run's settings.
#[derive(Debug)]
pub struct Launcher {
    /// The run's settings.
    pub settings: Settings,
    /// Where images are built and kept.
    pub store: ImageStore,
    accel: OnceLock<AccelDecision>,
    tools: OnceLock<Tools>,
    /// QEMU's version line, read once per run (it keys the saved states).
    qemu_version: OnceLock<String>,
}

impl Launcher {
    /// A launcher for `settings`. State left by a harness that was killed
    /// (SIGKILL) is swept first.
    pub fn new(settings: Settings) -> Self {
        rave_harness::reaper::sweep_stale(&settings.state_root);
        Launcher {
            store: ImageStore::new(&settings),
            settings,
            accel: OnceLock::new(),
            tools: OnceLock::new(),
            qemu_version: OnceLock::new(),
        }
    }

    /// The image spec of `profile` for this run.
    pub fn spec(&self, profile: Profile) -> ImageSpec {
        ImageSpec {
            flavor: self.settings.flavor,
            profile,
            safe_mode: self.settings.safe_mode,
        }
    }

    /// The image of `profile`, built when the cache lacks it.
    pub fn image(&self, profile: Profile) -> Result<Image, LaunchError> {
        Ok(self.store.ensure(self.spec(profile))?)
    }

    /// QEMU and qemu-img, found once.
    pub fn tools(&self) -> Result<Tools, LaunchError> {
        if let Some(tools) = self.tools.get() {
            return Ok(tools.clone());
        }
        let found = self.settings.tools()?;
        Ok(self.tools.get_or_init(|| found).clone())
    }

    /// A guest of `profile` named `name`, up to SSH: restored from the image's
    /// saved state (made by a cold boot first when there is none), or booted
    /// cold when the settings say so.
    pub fn boot(&self, profile: Profile, name: &str) -> Result<Machine, LaunchError> {
        let image = self.image(profile)?;
        let options = self.options(&image, name)?;
        let saved = if self.settings.cold {
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

    /// The boot options of a guest of `image` named `name` with this run's settings.
    pub fn options(&self, image: &Image, name: &str) -> Result<BootOptions, LaunchError> {
        let tools = self.tools()?;
        let accel = self.accel(image, &tools)?;
        Ok(self.settings.boot_options(name, tools, accel))
    }

    /// The saved state of `image` booted with `options`, made now when missing.
    pub fn saved_state(&self, image: &Image, options: &BootOptions) -> Result<SavedState, LaunchError> {
        let version = match self.qemu_version.get() {
            Some(version) => version.clone(),
            None => {
                let read = qemu_version(&options.tools)?;
                self.qemu_version.get_or_init(|| read).clone()
            }
        };
        let key = state_key(image, &rave_harness::boot_plan::shape(image, options), &version);
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
                machine.wait_for_components(CONTRACT_UP_TIMEOUT)?;
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
    fn accel(&self, image: &Image, tools: &Tools) -> Result<Accel, LaunchError> {
        if let Some(decision) = self.accel.get() {
            return Ok(decision.accel);
        }
        std::fs::create_dir_all(&self.store.cache_dir).map_err(|source| ImageError::Cache {
            path: self.store.cache_dir.clone(),
            source,
        })?;
        let decision = accel::decide(self.settings.accel, &tools.qemu, &image.kernel(), &self.store.cache_dir)?;
        let decision = self.accel.get_or_init(|| {
            if let Some(warning) = &decision.warning {
                eprintln!("{warning}");
            }
            decision
        });
        Ok(decision.accel)
    }
}

impl Guests for Launcher {
    /// The image of the profile `group` names: ignored when the flavor cannot
    /// build it, a harness error when its build fails.
    fn image(&self, group: &str) -> Result<Image, Unavailable> {
        let profile: Profile = group.parse().map_err(Unavailable::Error)?;
        self.store.buildable(self.spec(profile)).map_err(Unavailable::Ignored)?;
        Launcher::image(self, profile).map_err(|e| Unavailable::Error(e.to_string()))
    }

    fn guest(&self, group: &str, name: &str) -> Result<Guest, CheckError> {
        let profile: Profile = group.parse().map_err(CheckError::harness)?;
        self.boot(profile, name)
            .map(|machine| Guest::Owned(Box::new(machine)))
            .map_err(|e| CheckError::harness(format!("booting {name}: {e}")))
    }
}

/// QEMU's version line: a saved state is only restored by the QEMU that saved it.
fn qemu_version(tools: &Tools) -> Result<String, MachineError> {
    let out = std::process::Command::new(&tools.qemu)
        .arg("--version")
        .output()
        .map_err(|e| MachineError::Setup {
            what: format!("running {} --version", tools.qemu.display()),
            message: e.to_string(),
        })?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or("")
        .to_string())
}
