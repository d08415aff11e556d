//! Warm starts. A cold boot under TCG takes 20-35 s to SSH and longer until
//! every unit is up; a guest restored from saved state answers in a few
//! seconds with every unit already running.
//!
//! The first boot of an image (cold) waits until every unit of its contract
//! has been up for the stability window and the guest is quiet, then saves
//! it (see [`rave_harness::saved_state`]). The states live in the image cache,
//! keyed by the way states are made, the image, the shape of the QEMU command
//! line ([`rave_harness::boot_plan::shape`]) and QEMU's version, so a change to
//! any of them makes a new one and the old one is pruned.

use std::fs::File;
use std::path::{Path, PathBuf};

use rave_harness::saved_state::SavedState;
use rave_harness::{Image, MachineError};
use sha2::{Digest, Sha256};

/// Written last: a directory without it is not a saved state.
pub const COMPLETE_FILE: &str = "complete";

/// The key of a saved state: how states are made, the image, the command line's shape, QEMU's version.
pub fn state_key(image: &Image, shape: &[String], qemu_version: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(STATE_RECIPE.to_le_bytes());
    hasher.update(image.dir.display().to_string());
    for arg in shape {
        hasher.update((arg.len() as u64).to_le_bytes());
        hasher.update(arg);
    }
    hasher.update(qemu_version);
    hasher.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// Bumped when the way a state is made changes, so older states are made
/// again: 2 = saved only once the guest is quiet
/// ([`rave_harness::Machine::wait_until_quiet`]); 3 = and only from a boot in
/// which no unit of the contract restarted; 4 = and only once every unit of
/// the contract has been up for the stability window
/// ([`crate::profiles::STABLE_FOR`]).
pub const STATE_RECIPE: u32 = 4;

/// Where saved states live: `<cache>/warm/<image>-<key>/`.
#[derive(Debug, Clone)]
pub struct WarmStore {
    /// `<cache>/warm`.
    pub root: PathBuf,
}

impl WarmStore {
    /// The store under `cache_dir`.
    pub fn new(cache_dir: &Path) -> Self {
        WarmStore {
            root: cache_dir.join("warm"),
        }
    }

    /// The saved state of `image` with `key`, made by `save` (into an empty
    /// directory) when there is none. Two runs at once save it once: the
    /// second waits on a lock and then finds the first one's.
    pub fn ensure(
        &self,
        image: &Image,
        key: &str,
        save: impl FnOnce(&Path) -> Result<(), MachineError>,
    ) -> Result<SavedState, MachineError> {
        let image_name = image
            .dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "image".into());
        let dir = self.root.join(format!("{image_name}-{key}"));
        let found = |dir: &Path| dir.join(COMPLETE_FILE).is_file();
        if found(&dir) {
            return Ok(SavedState { dir });
        }
        let io = |what: String| {
            move |e: std::io::Error| MachineError::Setup {
                what,
                message: e.to_string(),
            }
        };
        std::fs::create_dir_all(&self.root).map_err(io(format!("creating {}", self.root.display())))?;
        let lock_path = self.root.join(format!(".{image_name}.lock"));
        let lock_file = File::create(&lock_path).map_err(io(format!("creating {}", lock_path.display())))?;
        let _lock = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, errno)| io(format!("locking {}", lock_path.display()))(errno.into()))?;
        if found(&dir) {
            return Ok(SavedState { dir });
        }
        // Holding the lock, nothing else saves this state: what is here is a dead save's.
        let saving = self.root.join(format!(".saving-{image_name}-{key}"));
        if saving.exists() {
            std::fs::remove_dir_all(&saving).map_err(io(format!("removing {}", saving.display())))?;
        }
        std::fs::create_dir_all(&saving).map_err(io(format!("creating {}", saving.display())))?;
        if let Err(e) = save(&saving) {
            let _ = std::fs::remove_dir_all(&saving);
            return Err(e);
        }
        std::fs::write(saving.join(COMPLETE_FILE), b"").map_err(io("marking the saved state complete".into()))?;
        std::fs::rename(&saving, &dir).map_err(io(format!("renaming {} into place", saving.display())))?;
        self.prune(&image_name, &dir);
        Ok(SavedState { dir })
    }

    /// Removes the other saved states of the same image name (older recipes
    /// name other images, older command lines other keys). Only a cache.
    fn prune(&self, image_name: &str, current: &Path) {
        let spec = image_name.rsplit_once('-').map_or(image_name, |(spec, _)| spec);
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if path != current && path.is_dir() && name.starts_with(&format!("{spec}-")) {
                let _ = std::fs::remove_dir_all(&path);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rave_harness::Manifest;

    fn image(dir: &str) -> Image {
        let manifest: Manifest = serde_json::from_value(serde_json::json!({
            "schema": 2, "profile": "p0", "flavor": "debian",
            "kernel": "vmlinuz", "initrd": "initrd.img", "disk": "disk.qcow2",
            "kernel_cmdline": "root=/dev/vda", "ssh_user": "agent"
        }))
        .unwrap();
        Image {
            dir: dir.into(),
            manifest,
        }
    }

    #[test]
    fn the_key_follows_image_shape_and_qemu() {
        let shape = vec!["-m".to_string(), "3072".to_string()];
        let a = image("/cache/images/debian-p0-safe-aaaa");
        let base = state_key(&a, &shape, "QEMU 7.2");
        assert_eq!(base, state_key(&a, &shape, "QEMU 7.2"));
        assert_ne!(
            base,
            state_key(&image("/cache/images/debian-p0-safe-bbbb"), &shape, "QEMU 7.2")
        );
        assert_ne!(base, state_key(&a, &["-m".into(), "4096".into()], "QEMU 7.2"));
        assert_ne!(base, state_key(&a, &shape, "QEMU 8.2"));
    }

    #[test]
    fn a_failed_save_leaves_nothing_and_a_good_one_is_found_then_pruned_when_replaced() {
        let cache = tempfile::tempdir().unwrap();
        let store = WarmStore::new(cache.path());
        let img = image("/cache/images/debian-p0-safe-aaaa");
        let failed = store.ensure(&img, "k1", |_| {
            Err(MachineError::Setup {
                what: "saving".into(),
                message: "boom".into(),
            })
        });
        assert!(failed.is_err());
        assert_eq!(
            std::fs::read_dir(&store.root)
                .unwrap()
                .filter(|e| e.as_ref().unwrap().path().is_dir())
                .count(),
            0
        );
        let first = store.ensure(&img, "k1", |dir| {
            std::fs::write(dir.join(rave_harness::saved_state::VMSTATE_FILE), b"state").unwrap();
            Ok(())
        });
        let first = first.unwrap();
        assert!(first.vmstate().is_file());
        let again = store.ensure(&img, "k1", |_| panic!("must not save again")).unwrap();
        assert_eq!(again, first);
        let newer = image("/cache/images/debian-p0-safe-bbbb");
        let second = store.ensure(&newer, "k2", |_| Ok(())).unwrap();
        assert!(second.dir.is_dir());
        assert!(!first.dir.exists(), "the older image's state is pruned");
    }
}
