//! An image and its manifest: what it is and holds, read from beside its
//! disk, so the harness never guesses. Nothing here is particular to one
//! product: the profile is a free label, the components are whatever the
//! image says it runs, and a product keeps facts of its own under
//! `properties`.
//!
//! ```json
//! { "schema": 2, "profile": "web", "kernel": "vmlinuz", "initrd": "initrd.img",
//!   "disk": "disk.qcow2", "kernel_cmdline": "root=/dev/vda console=ttyS0",
//!   "ssh_user": "agent", "ca_cert": "ca.pem",
//!   "https": { "host": "web.local", "port": 443 },
//!   "components": { "nginx": { "unit": "nginx.service" } } }
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The manifest's file name in an image directory.
pub const MANIFEST_FILE: &str = "manifest.json";
/// The manifest schema this harness reads.
pub const SCHEMA: u32 = 2;

/// A component the image runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Component {
    /// The systemd unit that runs it, as this image names it.
    pub unit: String,
}

/// Where the guest serves HTTPS, and the name its certificate is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpsEndpoint {
    /// The host name the certificate names (sent as SNI and Host).
    pub host: String,
    /// The guest's TCP port.
    pub port: u16,
}

/// An image's manifest (schema 2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The manifest schema (must be [`SCHEMA`]).
    pub schema: u32,
    /// A label for the image (a profile such as `p0`, or any name): trials
    /// of one label share a guest.
    pub profile: String,
    /// How the image was built (e.g. `debian`, `nixos`), for messages.
    #[serde(default)]
    pub flavor: Option<String>,
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
    /// The CA certificate that signs the HTTPS certificate, when there is one.
    #[serde(default)]
    pub ca_cert: Option<PathBuf>,
    /// Where the guest serves HTTPS, when it does.
    #[serde(default)]
    pub https: Option<HttpsEndpoint>,
    /// Files handed to the guest at boot through QEMU fw_cfg: name (`opt/…`)
    /// → file relative to the image directory (e.g. the key that decrypts
    /// the image's secrets, never on its disk).
    #[serde(default)]
    pub fw_cfg: BTreeMap<String, PathBuf>,
    /// When the image's files were all made (Unix seconds, before its
    /// filesystem was): a file whose inode changed later was written by a
    /// running guest. Unknown when absent.
    #[serde(default)]
    pub built_at: Option<u64>,
    /// Components present, by name.
    #[serde(default)]
    pub components: BTreeMap<String, Component>,
    /// Components this image lacks, with the reason (checks that need them are ignored).
    #[serde(default)]
    pub absent: BTreeMap<String, String>,
    /// The product's own facts about the image, which the core does not read.
    #[serde(default)]
    pub properties: serde_json::Map<String, serde_json::Value>,
}

/// A manifest that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The file could not be read.
    #[error("cannot read image manifest {path}: {source} (build the image first)")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a valid manifest.
    #[error("image manifest {path} is invalid: {message} (rebuild the image)")]
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
        let image = Image::load_manifest(&path)?;
        let image = Image {
            dir: dir.to_path_buf(),
            ..image
        };
        for file in [image.kernel(), image.initrd(), image.disk()]
            .into_iter()
            .chain(image.ca_cert())
            .chain(image.fw_cfg_files().into_iter().map(|(_, file)| file))
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

    /// Reads the manifest at `path` for a running target: its components and
    /// label matter, the boot files it names need not be here.
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
    /// The fw_cfg files the manifest names: (name, path).
    pub fn fw_cfg_files(&self) -> Vec<(String, PathBuf)> {
        self.manifest
            .fw_cfg
            .iter()
            .map(|(name, file)| (name.clone(), self.dir.join(file)))
            .collect()
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
        if manifest.profile.trim().is_empty() {
            return Err("profile is empty: give the image a label".into());
        }
        for (name, component) in &manifest.components {
            if component.unit.trim().is_empty() {
                return Err(format!("component {name} names no unit"));
            }
            if manifest.absent.contains_key(name) {
                return Err(format!("component {name} is listed both present and absent"));
            }
        }
        for name in manifest.fw_cfg.keys() {
            if !name.starts_with("opt/") {
                return Err(format!("fw_cfg name {name:?} must start with opt/ (QEMU's rule)"));
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
        let image = match &self.flavor {
            Some(flavor) => format!("the {flavor} {} image", self.profile),
            None => format!("the {} image", self.profile),
        };
        Err(match self.absent.get(component) {
            Some(reason) => format!("{component} is absent from {image}: {reason}"),
            None => format!("{component} is not part of {image}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{
      "schema": 2, "profile": "p0", "flavor": "debian",
      "kernel": "vmlinuz", "initrd": "initrd.img", "disk": "disk.qcow2",
      "kernel_cmdline": "root=/dev/vda", "ssh_user": "agent", "ca_cert": null,
      "components": { "nginx": { "unit": "nginx.service" } },
      "absent": { "grafana": "Debian does not package Grafana" },
      "properties": { "safe_mode": true }
    }"#;

    #[test]
    fn a_good_manifest_parses() {
        let m = Manifest::parse(GOOD).unwrap();
        assert_eq!(m.unit("nginx").unwrap(), "nginx.service");
        assert_eq!(
            m.unit("grafana").unwrap_err(),
            "grafana is absent from the debian p0 image: Debian does not package Grafana"
        );
        assert_eq!(m.properties["safe_mode"], serde_json::json!(true));
    }

    #[test]
    fn a_label_and_the_boot_files_are_all_a_manifest_needs() {
        let m = Manifest::parse(
            r#"{"schema": 2, "profile": "my-web", "kernel": "k", "initrd": "i", "disk": "d",
                "kernel_cmdline": "", "ssh_user": "u"}"#,
        )
        .unwrap();
        assert!(m.components.is_empty() && m.https.is_none() && m.fw_cfg.is_empty());
        assert_eq!(m.unit("nginx").unwrap_err(), "nginx is not part of the my-web image");
    }

    #[test]
    fn unknown_fields_truncation_and_schema_are_refused() {
        assert!(
            Manifest::parse(&GOOD.replace("\"schema\"", "\"colour\": 1, \"schema\""))
                .unwrap_err()
                .contains("unknown field")
        );
        assert!(Manifest::parse(&GOOD[..GOOD.len() / 2]).is_err());
        assert!(Manifest::parse(&GOOD.replace("\"schema\": 2", "\"schema\": 1"))
            .unwrap_err()
            .contains("schema 1"));
        assert!(Manifest::parse(&GOOD.replace("\"p0\"", "\" \"")).is_err());
    }

    #[test]
    fn a_missing_disk_is_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(MANIFEST_FILE), GOOD).unwrap();
        let err = Image::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("vmlinuz does not exist"), "{err}");
    }
}
