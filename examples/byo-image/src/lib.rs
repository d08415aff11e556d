//! Bring your own image: how a crate of one's own uses rave-harness, knowing
//! nothing of rave. It takes an image directory (here one of the project's,
//! as any NixOS or Debian image built for the harness would do), writes a
//! manifest of its own for it (its own label, `web`; its own component
//! names; no rave profile, no rave properties), and runs two checks of its
//! own on it through the same runner, events and JUnit the rave suites use.
//!
//! `cargo test -p byo-image` runs it against `$BYO_BASE_IMAGE`, an image
//! directory with a kernel, an initrd, a qcow2 disk, a CA and the key its
//! secrets need at boot (scripts/test hands over the project's P0 image:
//! `rave-harness images path --profile p0`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rave_harness::outcome::expect;
use rave_harness::retry::Poll;
use rave_harness::runner::{Guest, Guests, Trial, TrialKind, Unavailable};
use rave_harness::{BootOptions, CheckError, Image, Machine, Tools};

/// The label of this crate's image: its trials' group.
pub const LABEL: &str = "web";

/// Writes, in `dir`, an image of this crate's own on the files of `base`
/// (links to its kernel, initrd, disk, CA and fw_cfg files) with a manifest
/// that says only what this crate knows: label `web`, components `proxy`
/// (nginx) and `db` (PostgreSQL).
pub fn own_image(base: &Path, dir: &Path) -> std::io::Result<Image> {
    let base_manifest: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(base.join("manifest.json"))?)?;
    let link = |name: &str| -> std::io::Result<()> {
        let target = base.join(name);
        if target.exists() {
            std::os::unix::fs::symlink(target, dir.join(name))?;
        }
        Ok(())
    };
    for field in ["kernel", "initrd", "disk", "ca_cert"] {
        if let Some(name) = base_manifest[field].as_str() {
            link(name)?;
        }
    }
    let fw_cfg = base_manifest["fw_cfg"].clone();
    if let Some(files) = fw_cfg.as_object() {
        for file in files.values().filter_map(|f| f.as_str()) {
            link(file)?;
        }
    }
    let manifest = serde_json::json!({
        "schema": 2,
        "profile": LABEL,
        "kernel": base_manifest["kernel"],
        "initrd": base_manifest["initrd"],
        "disk": base_manifest["disk"],
        "kernel_cmdline": base_manifest["kernel_cmdline"],
        "ssh_user": base_manifest["ssh_user"],
        "ca_cert": base_manifest["ca_cert"],
        "https": base_manifest["https"],
        "fw_cfg": fw_cfg,
        "components": {
            "proxy": { "unit": "nginx.service" },
            "db": { "unit": base_manifest["components"]["postgresql"]["unit"] },
        },
    });
    std::fs::write(dir.join("manifest.json"), serde_json::to_string_pretty(&manifest)?)?;
    Image::load(dir).map_err(std::io::Error::other)
}

/// This crate's two checks, as trials of group `web`.
pub fn trials() -> Vec<Trial> {
    vec![
        Trial::new(
            TrialKind::Case,
            LABEL,
            "web",
            "proxy_serves_tls",
            Arc::new(proxy_serves_tls),
        )
        .needing(&["proxy"]),
        Trial::new(TrialKind::Case, LABEL, "web", "db_answers", Arc::new(db_answers)).needing(&["db"]),
    ]
}

/// The proxy's unit is active and its HTTPS answers, verified against the
/// image's CA, without a server error. On a cold boot the proxy can be up
/// before what it proxies to (a 502 for a while): the check waits for that
/// to settle, and past its deadline says the last answer it saw.
fn proxy_serves_tls(machine: &Machine) -> Result<(), CheckError> {
    let unit = machine.image().manifest.unit("proxy").map_err(CheckError::harness)?;
    machine.wait_for_unit(unit, Duration::from_secs(120))?;
    let status = machine.wait_until(
        "an HTTPS answer from the proxy to GET / without a server error",
        Duration::from_secs(120),
        Duration::from_secs(1),
        || match machine.https_get("/") {
            Ok(answer) if answer.status < 500 => Poll::Ready(answer.status),
            Ok(answer) => Poll::Pending(format!("answered {}", answer.status)),
            Err(e) => Poll::Pending(e.to_string()),
        },
    )?;
    expect(
        status < 500,
        "the proxy to answer GET / without a server error",
        status,
        String::new,
    )
}

/// The database's unit is active and its server answers a query.
fn db_answers(machine: &Machine) -> Result<(), CheckError> {
    let unit = machine.image().manifest.unit("db").map_err(CheckError::harness)?;
    machine.wait_for_unit(unit, Duration::from_secs(120))?;
    let one = machine.wait_until_succeeds("sudo -u postgres psql -XAtc 'select 1'", Duration::from_secs(60))?;
    expect(one.trim() == "1", "`select 1` to return 1", one.trim(), String::new)
}

/// This crate's source of guests: its one image, booted cold.
pub struct OwnGuests {
    /// The image.
    pub image: Image,
    /// QEMU and qemu-img.
    pub tools: Tools,
    /// Where the guests' state directories go.
    pub state_root: PathBuf,
}

impl Guests for OwnGuests {
    fn image(&self, group: &str) -> Result<Image, Unavailable> {
        if group == LABEL {
            Ok(self.image.clone())
        } else {
            Err(Unavailable::Ignored(format!("this crate has no image for {group}")))
        }
    }

    fn guest(&self, _group: &str, name: &str) -> Result<Guest, CheckError> {
        let options = BootOptions::new(name, self.tools.clone(), &self.state_root);
        Machine::boot(&self.image, &options)
            .map(|machine| Guest::Owned(Box::new(machine)))
            .map_err(CheckError::from)
    }
}
