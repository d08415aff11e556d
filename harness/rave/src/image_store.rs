//! The image cache: images keyed by a hash of their recipe, built when
//! missing, under a lock, into a temporary directory renamed into place only
//! when the build succeeded. A directory in the cache is a finished image.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use rave_harness::host::is_executable;
use rave_harness::image::{Image, ManifestError, MANIFEST_FILE};

use crate::lock_closure::lock_closure;
use crate::profiles::{Flavor, Profile, SafeValues};
use crate::settings::Settings;

/// The profiles the debian recipe builds.
pub const DEBIAN_PROFILES: &[Profile] = &[Profile::P0, Profile::P1, Profile::P2];

/// What besides the flavor's own recipe directory decides a debian image,
/// relative to the repository: the shared observability files and the
/// dispatcher built from the workspace.
const DEBIAN_INPUTS: &[&str] = &[
    "observability",
    "safe-mode.json",
    "webhook-dispatcher/src",
    "webhook-dispatcher/Cargo.toml",
    "webhook-dispatcher/webhook-dispatcher.service",
    "../Cargo.lock",
];

/// Bumped when the way recipes turn into images changes outside the recipe files.
const STORE_VERSION: &str = "rave-image-store-3";

/// The workspace package the images carry.
const DISPATCHER_PACKAGE: &str = "webhook-dispatcher";

/// Errors of finding or building an image.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The cache directory cannot be used.
    #[error("image cache {path}: {source} (set RAVE_CACHE_DIR to a writable directory)")]
    Cache {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The recipe files cannot be read.
    #[error("image recipe {path}: {source}")]
    Recipe {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The build command failed.
    #[error(
        "building the {flavor} {profile} image failed ({status}); its output is above, the partial build was removed"
    )]
    Build {
        /// The flavor.
        flavor: Flavor,
        /// The profile.
        profile: Profile,
        /// How the build ended.
        status: String,
    },
    /// This flavor is not built by the harness.
    #[error("{0}")]
    NotBuildable(String),
    /// The built image's manifest is unusable.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
}

/// Where images live and where their recipes are.
#[derive(Debug, Clone)]
pub struct ImageStore {
    /// The cache root (`RAVE_CACHE_DIR`, else `$XDG_CACHE_HOME/rave-harness`, else `~/.cache/rave-harness`).
    pub cache_dir: PathBuf,
    /// The repository's `images/` directory (`RAVE_IMAGES_DIR`, else the one beside this crate).
    pub recipes_dir: PathBuf,
    /// Where the flake's nixos images are (`RAVE_NIXOS_IMAGES`): `p0/`, `p1/`,
    /// `p2/`, each an image directory with its manifest.
    pub nixos_images: Option<PathBuf>,
}

/// What one image is: flavor, profile and SAFE mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ImageSpec {
    /// The flavor.
    pub flavor: Flavor,
    /// The profile.
    pub profile: Profile,
    /// SAFE mode at build time.
    pub safe_mode: bool,
}

impl ImageSpec {
    /// A short name, e.g. `debian-p0-safe`.
    pub fn name(&self) -> String {
        format!(
            "{}-{}-{}",
            self.flavor,
            self.profile,
            if self.safe_mode { "safe" } else { "full" }
        )
    }
}

impl ImageStore {
    /// The store `settings` describe.
    pub fn new(settings: &Settings) -> Self {
        ImageStore {
            cache_dir: settings.cache_dir.clone(),
            recipes_dir: settings.images_dir.clone(),
            nixos_images: settings.nixos_images.clone(),
        }
    }

    /// The hash of everything that decides the image: the recipe files, the
    /// files it takes from the rest of the repository, the spec.
    pub fn recipe_hash(&self, spec: ImageSpec) -> Result<String, ImageError> {
        let recipe = self.recipe_dir(spec.flavor);
        let mut files = Vec::new();
        collect_files(&recipe, &mut files)?;
        if spec.flavor == Flavor::Debian {
            for input in DEBIAN_INPUTS {
                let path = self.recipes_dir.join(input);
                // Absent in a test's miniature repository; a real checkout has them all.
                if path.is_dir() {
                    collect_files(&path, &mut files)?;
                } else if path.is_file() {
                    files.push(path);
                }
            }
        }
        files.sort();
        let mut hasher = Sha256::new();
        hasher.update(STORE_VERSION);
        hasher.update(spec.name());
        for file in files {
            let mut content = std::fs::read(&file).map_err(|source| ImageError::Recipe {
                path: file.clone(),
                source,
            })?;
            // Of the workspace's lock file only what the dispatcher is built
            // from decides the image: a new test dependency rebuilds nothing.
            if file.file_name().is_some_and(|n| n == "Cargo.lock") {
                content = lock_closure(&String::from_utf8_lossy(&content), DISPATCHER_PACKAGE).into_bytes();
            }
            let relative = file.strip_prefix(&self.recipes_dir).unwrap_or(&file);
            hasher.update(relative.to_string_lossy().as_bytes());
            hasher.update((content.len() as u64).to_le_bytes());
            hasher.update(&content);
            hasher.update([is_executable(&file) as u8]);
        }
        Ok(hasher.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect())
    }

    /// Where the finished image of `spec` lives (whether or not it exists yet).
    pub fn image_dir(&self, spec: ImageSpec) -> Result<PathBuf, ImageError> {
        if spec.flavor == Flavor::Nixos {
            return match &self.nixos_images {
                Some(dir) => Ok(dir.join(spec.profile.as_str())),
                None => Err(ImageError::NotBuildable(nixos_hint(spec.profile))),
            };
        }
        Ok(self
            .images_root()
            .join(format!("{}-{}", spec.name(), self.recipe_hash(spec)?)))
    }

    /// The finished image of `spec`, if it is in the cache.
    pub fn find(&self, spec: ImageSpec) -> Result<Option<Image>, ImageError> {
        finished_image(&self.image_dir(spec)?)
    }

    /// The image of `spec`, built first when the cache lacks it; the build's
    /// step lines go to stderr (stdout is for what a command prints, such as
    /// `boot`'s description). A nixos image must be there already.
    pub fn ensure(&self, spec: ImageSpec) -> Result<Image, ImageError> {
        self.ensure_reporting(spec, &|line| eprintln!("{line}"))
    }

    /// [`ImageStore::ensure`], handing each step line of a build to `on_step`.
    pub fn ensure_reporting(&self, spec: ImageSpec, on_step: &dyn Fn(&str)) -> Result<Image, ImageError> {
        if spec.flavor == Flavor::Nixos {
            self.buildable(spec).map_err(ImageError::NotBuildable)?;
        }
        // The recipe is hashed once: the directory it names is all the rest needs.
        let dir = self.image_dir(spec)?;
        if let Some(image) = finished_image(&dir)? {
            return Ok(image);
        }
        self.buildable(spec).map_err(ImageError::NotBuildable)?;
        let root = self.images_root();
        std::fs::create_dir_all(&root).map_err(|source| ImageError::Cache {
            path: root.clone(),
            source,
        })?;
        let lock_path = root.join(format!(".{}.lock", spec.name()));
        let lock_file = File::create(&lock_path).map_err(|source| ImageError::Cache {
            path: lock_path.clone(),
            source,
        })?;
        let _lock = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusive).map_err(|(_, errno)| {
            ImageError::Cache {
                path: lock_path.clone(),
                source: std::io::Error::from(errno),
            }
        })?;
        // Another run may have finished the same build while this one waited.
        if let Some(image) = finished_image(&dir)? {
            return Ok(image);
        }
        let building = root.join(format!(".building-{}", spec.name()));
        // Holding the lock, nothing else builds this spec: what is there is a dead build's.
        if building.exists() {
            std::fs::remove_dir_all(&building).map_err(|source| ImageError::Cache {
                path: building.clone(),
                source,
            })?;
        }
        let recipe_error = |source| ImageError::Recipe {
            path: self.recipe_dir(spec.flavor),
            source,
        };
        // The SAFE values come from the one table, images/safe-mode.json.
        let safe = SafeValues::of(spec.safe_mode);
        let mut child = Command::new("bash")
            .arg(self.recipe_dir(spec.flavor).join("build.sh"))
            .args(["--profile", spec.profile.as_str(), "--out"])
            .arg(&building)
            .arg("--cache")
            .arg(&self.cache_dir)
            .env("SAFE", if spec.safe_mode { "1" } else { "0" })
            .env("RAVE_RETENTION", &safe.retention)
            .env("RAVE_SCRAPE_INTERVAL", &safe.scrape_interval)
            .env("RAVE_PROMETHEUS_MEMORY_MAX", &safe.prometheus_memory_max)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .map_err(recipe_error)?;
        if let Some(stdout) = child.stdout.take() {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                on_step(&line);
            }
        }
        let status = child.wait().map_err(recipe_error)?;
        if !status.success() {
            let _ = std::fs::remove_dir_all(&building);
            return Err(ImageError::Build {
                flavor: spec.flavor,
                profile: spec.profile,
                status: status.to_string(),
            });
        }
        Image::load(&building)?;
        std::fs::rename(&building, &dir).map_err(|source| ImageError::Cache {
            path: dir.clone(),
            source,
        })?;
        self.prune_older(spec, &dir);
        Ok(Image::load(&dir)?)
    }

    /// [`ImageStore::ensure_reporting`] for several specs at once, one thread
    /// each, results in the order of `specs`; each step line goes to
    /// `on_step` with its spec. What the builds share (the base layer, the
    /// npm downloads, the dispatcher's compile) the recipe makes under a
    /// lock of its own, once; the rest (a profile's layers, its filesystem,
    /// its disk) overlaps. Three debian images on a cached base: 156 s one
    /// after another, 111 s at once (means of two runs on one 2-CPU machine,
    /// `images build` of each profile against `--profile all`; BENCHMARKS.md,
    /// "From a bare machine").
    pub fn ensure_all(
        &self,
        specs: &[ImageSpec],
        on_step: &(dyn Fn(ImageSpec, &str) + Sync),
    ) -> Vec<Result<Image, ImageError>> {
        std::thread::scope(|scope| {
            let builds: Vec<_> = specs
                .iter()
                .map(|&spec| scope.spawn(move || self.ensure_reporting(spec, &|line| on_step(spec, line))))
                .collect();
            builds
                .into_iter()
                .map(|build| build.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
                .collect()
        })
    }

    /// Removes the images of `spec` built from older recipes (they can never
    /// be found again). Only a cache: a failure here costs disk, nothing else.
    fn prune_older(&self, spec: ImageSpec, current: &Path) {
        let prefix = format!("{}-", spec.name());
        let Ok(entries) = std::fs::read_dir(self.images_root()) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if path != current && path.is_dir() && name.starts_with(&prefix) {
                let _ = std::fs::remove_dir_all(&path);
            }
        }
    }

    /// Whether the harness can build `spec`; `Err` says why not.
    pub fn buildable(&self, spec: ImageSpec) -> Result<(), String> {
        match spec.flavor {
            Flavor::Nixos => match &self.nixos_images {
                Some(dir) if dir.join(spec.profile.as_str()).join(MANIFEST_FILE).is_file() => Ok(()),
                _ => Err(nixos_hint(spec.profile)),
            },
            Flavor::Debian if !DEBIAN_PROFILES.contains(&spec.profile) => Err(format!(
                "the debian flavor does not build {} yet (it builds p0)",
                spec.profile
            )),
            Flavor::Debian => Ok(()),
        }
    }

    fn images_root(&self) -> PathBuf {
        self.cache_dir.join("images")
    }

    fn recipe_dir(&self, flavor: Flavor) -> PathBuf {
        self.recipes_dir.join(flavor.to_string())
    }
}

/// How to get a nixos image to the harness.
fn nixos_hint(profile: Profile) -> String {
    format!(
        "nixos images are built by the flake, not by the harness: nix build .#{profile}-test, then set RAVE_NIXOS_IMAGES to a directory holding it as {profile}/ (the flake's checks do this)"
    )
}

/// The image in `dir`, if a finished one is there.
fn finished_image(dir: &Path) -> Result<Option<Image>, ImageError> {
    if dir.is_dir() {
        return Ok(Some(Image::load(dir)?));
    }
    Ok(None)
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), ImageError> {
    let entries = std::fs::read_dir(dir).map_err(|source| ImageError::Recipe {
        path: dir.into(),
        source,
    })?;
    for entry in entries {
        let path = entry
            .map_err(|source| ImageError::Recipe {
                path: dir.into(),
                source,
            })?
            .path();
        if path.is_dir() {
            collect_files(&path, out)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store_with_recipe() -> (tempfile::TempDir, ImageStore) {
        let tmp = tempfile::tempdir().unwrap();
        let recipe = tmp.path().join("images/debian/files");
        std::fs::create_dir_all(&recipe).unwrap();
        std::fs::write(tmp.path().join("images/debian/build.sh"), "echo build").unwrap();
        std::fs::write(recipe.join("a.conf"), "a").unwrap();
        let store = ImageStore {
            cache_dir: tmp.path().join("cache"),
            recipes_dir: tmp.path().join("images"),
            nixos_images: None,
        };
        (tmp, store)
    }

    const P0: ImageSpec = ImageSpec {
        flavor: Flavor::Debian,
        profile: Profile::P0,
        safe_mode: true,
    };

    #[test]
    fn the_hash_follows_recipe_content_and_spec() {
        let (tmp, store) = store_with_recipe();
        let first = store.recipe_hash(P0).unwrap();
        assert_eq!(first, store.recipe_hash(P0).unwrap());
        assert_ne!(first, store.recipe_hash(ImageSpec { safe_mode: false, ..P0 }).unwrap());
        assert_ne!(
            first,
            store
                .recipe_hash(ImageSpec {
                    profile: Profile::P1,
                    ..P0
                })
                .unwrap()
        );
        std::fs::write(tmp.path().join("images/debian/files/a.conf"), "b").unwrap();
        assert_ne!(first, store.recipe_hash(P0).unwrap());
    }

    #[test]
    fn a_new_build_prunes_the_images_of_older_recipes() {
        let (tmp, store) = store_with_recipe();
        let manifest = r#"{"schema":2,"profile":"p0","flavor":"debian","kernel":"k","initrd":"i","disk":"d","kernel_cmdline":"","ssh_user":"agent","properties":{"safe_mode":true}}"#;
        let script = format!("mkdir -p \"$4\" && cd \"$4\" && touch k i d && printf '%s' '{manifest}' > manifest.json");
        std::fs::write(tmp.path().join("images/debian/build.sh"), &script).unwrap();
        let old = store.ensure(P0).unwrap().dir;
        let other_spec = store
            .ensure(ImageSpec {
                profile: Profile::P1,
                ..P0
            })
            .unwrap()
            .dir;
        std::fs::write(tmp.path().join("images/debian/build.sh"), format!("{script} # changed")).unwrap();
        let new = store.ensure(P0).unwrap().dir;
        assert_ne!(old, new);
        assert!(!old.exists(), "the image of the older recipe is gone");
        assert!(new.exists() && other_spec.exists(), "other specs are kept");
    }

    #[test]
    fn images_build_at_once_each_with_its_own_outcome() {
        let (tmp, store) = store_with_recipe();
        // p0 and p2 each wait (10 s at most) for the other to have started:
        // built one after the other, p0 would give up; p1 fails.
        let script = r#"profile=$2 out=$4 meet=$6/meet
mkdir -p "$meet" && touch "$meet/$profile"
echo "[build $profile] started"
[ "$profile" = p1 ] && exit 3
other=p2; [ "$profile" = p2 ] && other=p0
for _ in $(seq 100); do [ -e "$meet/$other" ] && break; sleep 0.1; done
[ -e "$meet/$other" ] || exit 4
mkdir -p "$out" && cd "$out" && touch k i d
printf '{"schema":2,"profile":"%s","flavor":"debian","kernel":"k","initrd":"i","disk":"d","kernel_cmdline":"","ssh_user":"agent","properties":{"safe_mode":true}}' "$profile" > manifest.json"#;
        std::fs::write(tmp.path().join("images/debian/build.sh"), script).unwrap();
        let specs = [
            P0,
            ImageSpec {
                profile: Profile::P1,
                ..P0
            },
            ImageSpec {
                profile: Profile::P2,
                ..P0
            },
        ];
        let lines = std::sync::Mutex::new(Vec::new());
        let built = store.ensure_all(&specs, &|spec, line| {
            lines.lock().unwrap().push((spec.profile, line.to_string()))
        });
        assert_eq!(built.len(), 3);
        assert_eq!(built[0].as_ref().unwrap().manifest.profile, "p0");
        assert!(
            matches!(
                built[1],
                Err(ImageError::Build {
                    profile: Profile::P1,
                    ..
                })
            ),
            "{:?}",
            built[1].as_ref().err()
        );
        assert_eq!(built[2].as_ref().unwrap().manifest.profile, "p2");
        let mut lines = lines.into_inner().unwrap();
        lines.sort();
        let expected: Vec<_> = [Profile::P0, Profile::P1, Profile::P2]
            .into_iter()
            .map(|p| (p, format!("[build {p}] started")))
            .collect();
        assert_eq!(lines, expected, "each step line with the spec it came from");
    }

    #[test]
    fn a_failed_build_leaves_nothing_that_looks_finished() {
        let (tmp, store) = store_with_recipe();
        std::fs::write(
            tmp.path().join("images/debian/build.sh"),
            "mkdir -p \"$4\"; touch \"$4/half\"; exit 3",
        )
        .unwrap();
        let err = store.ensure(P0).unwrap_err();
        assert!(matches!(err, ImageError::Build { .. }), "{err}");
        assert!(store.find(P0).unwrap().is_none());
        let left: Vec<_> = std::fs::read_dir(store.cache_dir.join("images"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.ends_with(".lock"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }
}
