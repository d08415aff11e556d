//! From the environment to a booted guest: settings, image (built when
//! missing), accelerator (probed once), then [`Machine::boot`].

use std::sync::OnceLock;

use crate::accel::{self, AccelDecision, KvmUnusable};
use crate::config::{ConfigError, RunConfig};
use crate::host_check::find_qemu;
use crate::image_store::{ImageError, ImageSpec, ImageStore};
use crate::machine::{BootOptions, Machine, MachineError};
use crate::manifest::{Flavor, Image, Profile};

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
    accel: OnceLock<AccelDecision>,
}

impl Launcher {
    /// A launcher for the environment's settings (`QEMU_RAM_MB`, `QEMU_CPUS`,
    /// `RAVE_ACCEL`, `SAFE`, `RAVE_FLAVOR`, `RAVE_CACHE_DIR`).
    pub fn from_env() -> Result<Self, LaunchError> {
        let flavor = match std::env::var("RAVE_FLAVOR").ok().as_deref().map(str::trim) {
            None | Some("") | Some("debian") => Flavor::Debian,
            Some("nixos") => Flavor::Nixos,
            Some(other) => return Err(LaunchError::Flavor(other.into())),
        };
        Ok(Launcher {
            config: RunConfig::from_env()?,
            store: ImageStore::from_env(),
            flavor,
            accel: OnceLock::new(),
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

    /// Boots a guest of `profile` named `name` and waits for SSH.
    pub fn boot(&self, profile: Profile, name: &str) -> Result<Machine, LaunchError> {
        let image = self.image(profile)?;
        let accel = self.accel(&image)?;
        Ok(Machine::boot(
            &image,
            &BootOptions::new(name, self.config.clone(), accel),
        )?)
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
