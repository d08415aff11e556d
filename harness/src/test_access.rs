//! The keys of one run: a client key for `agent` and a host key for the guest's
//! sshd, both made fresh, written only into the run's state directory, and
//! handed to the guest at boot through fw_cfg. Nothing is committed or baked in.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use ssh_key::{Algorithm, LineEnding, PrivateKey};

use crate::qemu_command::FwCfgFile;

/// The fw_cfg name under which the guest finds `agent`'s authorized keys.
pub const FW_CFG_AUTHORIZED_KEYS: &str = "opt/rave/authorized_keys";
/// The fw_cfg name under which the guest finds its SSH host key.
pub const FW_CFG_HOST_KEY: &str = "opt/rave/ssh_host_ed25519_key";
/// Every fw_cfg name test access hands over (the guest side of the protocol
/// is `nixos/test-access.nix` and `images/debian/files/base/rave-test-access`).
pub const FW_CFG_NAMES: [&str; 2] = [FW_CFG_AUTHORIZED_KEYS, FW_CFG_HOST_KEY];

/// Errors of making or writing the run's keys.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Key generation or encoding failed.
    #[error("could not make an SSH key: {0}")]
    Key(#[from] ssh_key::Error),
    /// A key file could not be written.
    #[error("could not write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A key named by a target description cannot be used.
    #[error("target description: {what}: {message}")]
    Described {
        /// Which key.
        what: String,
        /// Why.
        message: String,
    },
}

/// The run's key material, as files in a state directory.
#[derive(Clone)]
pub struct TestAccess {
    /// The client's private key (OpenSSH format, mode 0600).
    pub client_key: PathBuf,
    /// The client's public key line, as it stands in `authorized_keys`.
    pub client_public: String,
    /// The host key's public half in SSH wire encoding: what the guest must present.
    pub host_key_blob: Vec<u8>,
    /// The host key's public line (`ssh-ed25519 AAAA…`), for a known_hosts file.
    pub host_public: String,
    authorized_keys: PathBuf,
    host_key: PathBuf,
}

impl std::fmt::Debug for TestAccess {
    /// Paths and public halves only; private keys never reach a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestAccess")
            .field("client_key", &self.client_key)
            .field("host_public", &self.host_public)
            .finish_non_exhaustive()
    }
}

impl TestAccess {
    /// Makes a client key and a host key and writes them into `dir`.
    pub fn generate(dir: &Path) -> Result<Self, KeyError> {
        let mut rng = rand_core::OsRng;
        let client = PrivateKey::random(&mut rng, Algorithm::Ed25519)?;
        let host = PrivateKey::random(&mut rng, Algorithm::Ed25519)?;
        let client_public = client.public_key().to_openssh()?;
        let host_public = host.public_key().to_openssh()?;
        let access = TestAccess {
            client_key: dir.join("id_ed25519"),
            client_public: client_public.clone(),
            host_key_blob: host.public_key().to_bytes()?,
            host_public,
            authorized_keys: dir.join("authorized_keys"),
            host_key: dir.join("ssh_host_ed25519_key"),
        };
        write_private(&access.client_key, client.to_openssh(LineEnding::LF)?.as_bytes())?;
        write_private(&access.host_key, host.to_openssh(LineEnding::LF)?.as_bytes())?;
        write_private(&access.authorized_keys, format!("{client_public}\n").as_bytes())?;
        Ok(access)
    }

    /// The access written into `dir` earlier by [`TestAccess::generate`]
    /// (a saved guest state keeps the keys its guest was booted with).
    pub fn load(dir: &Path) -> Result<Self, KeyError> {
        let read = |path: PathBuf| {
            fs::read_to_string(&path).map_err(|source| KeyError::Write {
                path: path.clone(),
                source,
            })
        };
        let host = PrivateKey::from_openssh(read(dir.join("ssh_host_ed25519_key"))?)?;
        let client_public = read(dir.join("authorized_keys"))?.trim().to_string();
        Ok(TestAccess {
            client_key: dir.join("id_ed25519"),
            client_public,
            host_key_blob: host.public_key().to_bytes()?,
            host_public: host.public_key().to_openssh()?,
            authorized_keys: dir.join("authorized_keys"),
            host_key: dir.join("ssh_host_ed25519_key"),
        })
    }

    /// Copies this access's files into `dir` (0600), for a saved guest state.
    pub fn copy_to(&self, dir: &Path) -> Result<TestAccess, KeyError> {
        for (from, name) in [
            (&self.client_key, "id_ed25519"),
            (&self.authorized_keys, "authorized_keys"),
            (&self.host_key, "ssh_host_ed25519_key"),
        ] {
            let content = fs::read(from).map_err(|source| KeyError::Write {
                path: from.clone(),
                source,
            })?;
            write_private(&dir.join(name), &content)?;
        }
        TestAccess::load(dir)
    }

    /// The access a target description gives: its client key file and the
    /// host's public key line to pin (no trust on first use).
    pub fn described(client_key: &Path, host_public: &str) -> Result<Self, KeyError> {
        let host = ssh_key::PublicKey::from_openssh(host_public.trim()).map_err(|e| KeyError::Described {
            what: format!("ssh_host_key {host_public:?}"),
            message: e.to_string(),
        })?;
        let client = PrivateKey::read_openssh_file(client_key).map_err(|e| KeyError::Described {
            what: format!("ssh_key {}", client_key.display()),
            message: e.to_string(),
        })?;
        Ok(TestAccess {
            client_key: client_key.into(),
            client_public: client.public_key().to_openssh()?,
            host_key_blob: host.to_bytes()?,
            host_public: host.to_openssh()?,
            authorized_keys: PathBuf::new(),
            host_key: PathBuf::new(),
        })
    }

    /// The fw_cfg entries that hand this access to the guest.
    pub fn fw_cfg(&self) -> Vec<FwCfgFile> {
        vec![
            FwCfgFile {
                name: FW_CFG_AUTHORIZED_KEYS.into(),
                path: self.authorized_keys.clone(),
            },
            FwCfgFile {
                name: FW_CFG_HOST_KEY.into(),
                path: self.host_key.clone(),
            },
        ]
    }
}

fn write_private(path: &Path, content: &[u8]) -> Result<(), KeyError> {
    let err = |source| KeyError::Write {
        path: path.into(),
        source,
    };
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(err)?;
    file.write_all(content).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn keys_are_fresh_private_and_redacted() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let first = TestAccess::generate(a.path()).unwrap();
        let second = TestAccess::generate(b.path()).unwrap();
        assert_ne!(first.host_key_blob, second.host_key_blob);
        assert!(first.client_public.starts_with("ssh-ed25519 "));
        for f in [&first.client_key, &first.host_key, &first.authorized_keys] {
            assert_eq!(fs::metadata(f).unwrap().permissions().mode() & 0o777, 0o600, "{f:?}");
        }
        let shown = format!("{first:?}");
        assert!(!shown.contains("PRIVATE"), "{shown}");
    }

    #[test]
    fn copied_access_loads_the_same_keys() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let original = TestAccess::generate(a.path()).unwrap();
        let copy = original.copy_to(b.path()).unwrap();
        assert_eq!(copy.host_key_blob, original.host_key_blob);
        assert_eq!(copy.client_public, original.client_public);
        assert_eq!(
            fs::read(&copy.client_key).unwrap(),
            fs::read(&original.client_key).unwrap()
        );
    }
}
