//! The image manifest: what an image is and holds, read from beside its disk,
//! so the harness never guesses.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The manifest's file name in an image directory.
pub const MANIFEST_FILE: &str = "manifest.json";
/// The manifest schema this harness reads.
pub const SCHEMA: u32 = 1;

/// One of the three system profiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// The development base.
    P0,
    /// P0 plus security hardening.
    P1,
    /// P1 plus observability.
    P2,
}

impl Profile {
    /// All profiles, in order.
    pub const ALL: [Profile; 3] = [Profile::P0, Profile::P1, Profile::P2];

    /// `p0`, `p1` or `p2`.
    pub fn as_str(self) -> &'static str {
        match self {
            Profile::P0 => "p0",
            Profile::P1 => "p1",
            Profile::P2 => "p2",
        }
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Profile {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "p0" | "P0" => Ok(Profile::P0),
            "p1" | "P1" => Ok(Profile::P1),
            "p2" | "P2" => Ok(Profile::P2),
            other => Err(format!("unknown profile {other:?}: use p0, p1 or p2")),
        }
    }
}

/// How an image was built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Flavor {
    /// From Debian's packages with mmdebstrap.
    Debian,
    /// From the NixOS modules by the flake.
    Nixos,
}

impl fmt::Display for Flavor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Flavor::Debian => "debian",
            Flavor::Nixos => "nixos",
        })
    }
}

/// A component of the contract that the image holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Component {
    /// The systemd unit that runs it, as this flavor names it.
    pub unit: String,
}

/// An image's manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The manifest schema (must be [`SCHEMA`]).
    pub schema: u32,
    /// The profile built.
    pub profile: Profile,
    /// The flavor built.
    pub flavor: Flavor,
    /// Whether SAFE mode was on at build time.
    pub safe_mode: bool,
    /// The kernel, relative to the image directory.
    pub kernel: PathBuf,
    /// The initrd, relative to the image directory.
    pub initrd: PathBuf,
    /// The base disk (qcow2), relative to the image directory. Never written.
    pub disk: PathBuf,
    /// The kernel command line.
    pub kernel_cmdline: String,
    /// The user the harness logs in as.
    pub ssh_user: String,
    /// The CA certificate that signs the HTTPS certificate, when the profile has one.
    pub ca_cert: Option<PathBuf>,
    /// The age identity that decrypts the image's secrets, handed to the guest at boot
    /// (fw_cfg `opt/rave/age-identity`); never on the guest's disk.
    #[serde(default)]
    pub age_identity: Option<PathBuf>,
    /// When the image's files were all made (Unix seconds, before its
    /// filesystem was): a file whose inode changed later was written by a
    /// running guest. Unknown when absent.
    #[serde(default)]
    pub built_at: Option<u64>,
    /// The MemoryMax each component's unit must have, by component.
    #[serde(default)]
    pub limits: BTreeMap<String, String>,
    /// Components present, by contract name.
    pub components: BTreeMap<String, Component>,
    /// Components of the contract this image lacks, with the reason.
    #[serde(default)]
    pub absent: BTreeMap<String, String>,
}

/// A manifest that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The file could not be read.
    #[error("cannot read image manifest {path}: {source} (build the image: rave-harness images build; a nixos one: nix build .#PROFILE-test)")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a valid manifest.
    #[error("image manifest {path} is invalid: {message} (rebuild the image: rave-harness images build; a nixos one: nix build .#PROFILE-test)")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// A manifest together with the directory its paths are relative to.
#[derive(Debug, Clone)]
pub struct Image {
    /// The image directory.
    pub dir: PathBuf,
    /// Its manifest.
    pub manifest: Manifest,
}

impl Image {
    /// Reads and checks the manifest in `dir`: schema, and every file it names exists.
    pub fn load(dir: &Path) -> Result<Self, ManifestError> {
        let path = dir.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&path).map_err(|source| ManifestError::Read {
            path: path.clone(),
            source,
        })?;
        let manifest = Manifest::parse(&text).map_err(|message| ManifestError::Invalid {
            path: path.clone(),
            message,
        })?;
        let image = Image {
            dir: dir.to_path_buf(),
            manifest,
        };
        for file in [image.kernel(), image.initrd(), image.disk()]
            .into_iter()
            .chain(image.ca_cert())
        {
            if !file.is_file() {
                return Err(ManifestError::Invalid {
                    path,
                    message: format!("{} does not exist", file.display()),
                });
            }
        }
        Ok(image)
    }

    /// Reads the manifest at `path` for a running target: its components,
    /// limits and profile matter, the boot files it names need not be here.
    pub fn load_manifest(path: &Path) -> Result<Self, ManifestError> {
        let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Read {
            path: path.into(),
            source,
        })?;
        let manifest = Manifest::parse(&text).map_err(|message| ManifestError::Invalid {
            path: path.into(),
            message,
        })?;
        Ok(Image {
            dir: path.parent().map(Path::to_path_buf).unwrap_or_default(),
            manifest,
        })
    }

    /// The kernel's path.
    pub fn kernel(&self) -> PathBuf {
        self.dir.join(&self.manifest.kernel)
    }
    /// The initrd's path.
    pub fn initrd(&self) -> PathBuf {
        self.dir.join(&self.manifest.initrd)
    }
    /// The base disk's path.
    pub fn disk(&self) -> PathBuf {
        self.dir.join(&self.manifest.disk)
    }
    /// The CA certificate's path, when there is one.
    pub fn ca_cert(&self) -> Option<PathBuf> {
        self.manifest.ca_cert.as_ref().map(|c| self.dir.join(c))
    }
    /// The age identity's path, when the image has encrypted secrets.
    pub fn age_identity(&self) -> Option<PathBuf> {
        self.manifest.age_identity.as_ref().map(|c| self.dir.join(c))
    }
}

impl Manifest {
    /// Parses and checks a manifest's text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let manifest: Manifest = serde_json::from_str(text).map_err(|e| e.to_string())?;
        if manifest.schema != SCHEMA {
            return Err(format!(
                "schema {} is not the {SCHEMA} this harness reads",
                manifest.schema
            ));
        }
        for (name, component) in &manifest.components {
            if component.unit.trim().is_empty() {
                return Err(format!("component {name} names no unit"));
            }
            if manifest.absent.contains_key(name) {
                return Err(format!("component {name} is listed both present and absent"));
            }
        }
        Ok(manifest)
    }

    /// The units of every component present, in component order.
    pub fn units(&self) -> Vec<&str> {
        self.components.values().map(|c| c.unit.as_str()).collect()
    }

    /// The unit of `component`, or why the image lacks it.
    pub fn unit(&self, component: &str) -> Result<&str, String> {
        if let Some(c) = self.components.get(component) {
            return Ok(&c.unit);
        }
        Err(match self.absent.get(component) {
            Some(reason) => format!(
                "{component} is absent from the {} {} image: {reason}",
                self.flavor, self.profile
            ),
            None => format!("{component} is not part of the {} {} image", self.flavor, self.profile),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{
      "schema": 1, "profile": "p0", "flavor": "debian", "safe_mode": true,
      "kernel": "vmlinuz", "initrd": "initrd.img", "disk": "disk.qcow2",
      "kernel_cmdline": "root=/dev/vda", "ssh_user": "agent", "ca_cert": null,
      "components": { "nginx": { "unit": "nginx.service" } },
      "absent": { "grafana": "Debian does not package Grafana" }
    }"#;

    #[test]
    fn a_good_manifest_parses() {
        let m = Manifest::parse(GOOD).unwrap();
        assert_eq!(m.unit("nginx").unwrap(), "nginx.service");
        assert_eq!(
            m.unit("grafana").unwrap_err(),
            "grafana is absent from the debian p0 image: Debian does not package Grafana"
        );
    }

    #[test]
    fn unknown_fields_truncation_and_schema_are_refused() {
        assert!(
            Manifest::parse(&GOOD.replace("\"schema\"", "\"colour\": 1, \"schema\""))
                .unwrap_err()
                .contains("unknown field")
        );
        assert!(Manifest::parse(&GOOD[..GOOD.len() / 2]).is_err());
        assert!(Manifest::parse(&GOOD.replace("\"schema\": 1", "\"schema\": 2"))
            .unwrap_err()
            .contains("schema 2"));
    }

    #[test]
    fn a_missing_disk_is_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(MANIFEST_FILE), GOOD).unwrap();
        let err = Image::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("vmlinuz does not exist"), "{err}");
    }
}
