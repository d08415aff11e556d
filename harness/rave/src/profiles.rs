//! The rave contract as data: the three profiles, the two flavors, the SAFE
//! table (one file, `images/safe-mode.json`, that the debian recipe, the
//! NixOS modules and the cases all read), the stability window, and the facts
//! a rave image keeps in its manifest's `properties`.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::OnceLock;
use std::time::Duration;

use rave_harness::Image;
use serde::{Deserialize, Serialize};

/// The systemd cases' stability window: a unit passes only once it has been
/// active, in one activation, for this long (a unit in a crash loop, even
/// one sampled during a short life, is red). A guest is saved for warm starts
/// only once every unit of its contract has been up this long, so the cases
/// on a restored guest do not wait for it.
pub const STABLE_FOR: Duration = Duration::from_secs(10);

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

    /// `p0`, `p1` or `p2`: the label of its images and its trials' group.
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

/// The values of one SAFE mode (shared/spec/images.md).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SafeValues {
    /// Prometheus' retention, e.g. `3d`.
    pub retention: String,
    /// Prometheus' global scrape interval, e.g. `30s`.
    pub scrape_interval: String,
    /// Prometheus' MemoryMax, e.g. `256M`.
    pub prometheus_memory_max: String,
    /// Grafana's MemoryMax, e.g. `128M`.
    pub grafana_memory_max: String,
    /// The most guest RAM a run may ask for, in MiB.
    pub ram_mb: u32,
    /// The most guest CPUs a run may ask for.
    pub cpus: u32,
}

/// The table as `images/safe-mode.json` says it.
#[derive(Debug, Deserialize)]
struct SafeTable {
    #[allow(dead_code)]
    comment: String,
    safe: SafeValues,
    full: SafeValues,
}

/// The one SAFE table, next to the image recipes.
pub const SAFE_TABLE_JSON: &str = include_str!("../../../images/safe-mode.json");

impl SafeValues {
    /// The values when SAFE mode is `on` (the default), or with `SAFE=0`.
    pub fn of(on: bool) -> &'static SafeValues {
        static TABLE: OnceLock<SafeTable> = OnceLock::new();
        let table = TABLE.get_or_init(|| {
            serde_json::from_str(SAFE_TABLE_JSON)
                .expect("images/safe-mode.json is the SAFE table (a unit test reads it)")
        });
        if on {
            &table.safe
        } else {
            &table.full
        }
    }
}

/// What a rave image's manifest says beyond the core's fields (its `properties`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RaveProperties {
    /// Whether SAFE mode was on at build time.
    pub safe_mode: bool,
    /// The MemoryMax each component's unit must have, by component.
    #[serde(default)]
    pub limits: BTreeMap<String, String>,
}

/// What a rave image is: its profile, flavor and properties.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaveImage {
    /// The profile it was built for.
    pub profile: Profile,
    /// How it was built.
    pub flavor: Flavor,
    /// Its properties.
    pub properties: RaveProperties,
}

impl RaveImage {
    /// Reads `image`'s manifest as a rave image's; an error says what is
    /// wrong (an image not built the rave way).
    pub fn of(image: &Image) -> Result<RaveImage, String> {
        let m = &image.manifest;
        let profile = m.profile.parse()?;
        let flavor = match m.flavor.as_deref() {
            Some("debian") => Flavor::Debian,
            Some("nixos") => Flavor::Nixos,
            other => return Err(format!("flavor {other:?} is not a rave flavor (debian or nixos)")),
        };
        let properties = serde_json::from_value(serde_json::Value::Object(m.properties.clone()))
            .map_err(|e| format!("its properties are not a rave image's: {e}"))?;
        Ok(RaveImage {
            profile,
            flavor,
            properties,
        })
    }

    /// The SAFE values it was built with.
    pub fn safe_values(&self) -> &'static SafeValues {
        SafeValues::of(self.properties.safe_mode)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_safe_table_is_the_contracts() {
        let safe = SafeValues::of(true);
        assert_eq!(
            (
                safe.retention.as_str(),
                safe.scrape_interval.as_str(),
                safe.prometheus_memory_max.as_str(),
                safe.grafana_memory_max.as_str(),
                safe.ram_mb,
                safe.cpus
            ),
            ("3d", "30s", "256M", "128M", 3072, 2)
        );
        let full = SafeValues::of(false);
        assert_eq!(
            (
                full.retention.as_str(),
                full.scrape_interval.as_str(),
                full.ram_mb,
                full.cpus
            ),
            ("7d", "15s", 4096, 4)
        );
    }

    #[test]
    fn a_rave_image_needs_a_profile_a_flavor_and_safe_mode() {
        let image = |profile: &str, properties: serde_json::Value| Image {
            dir: "/i".into(),
            manifest: serde_json::from_value(serde_json::json!({
                "schema": 2, "profile": profile, "flavor": "debian", "kernel": "k", "initrd": "i",
                "disk": "d", "kernel_cmdline": "", "ssh_user": "agent", "properties": properties
            }))
            .unwrap(),
        };
        let good = RaveImage::of(&image(
            "p2",
            serde_json::json!({"safe_mode": true, "limits": {"prometheus": "256M"}}),
        ))
        .unwrap();
        assert_eq!((good.profile, good.flavor), (Profile::P2, Flavor::Debian));
        assert_eq!(good.safe_values().retention, "3d");
        assert!(RaveImage::of(&image("web", serde_json::json!({"safe_mode": true})))
            .unwrap_err()
            .contains("unknown profile"));
        assert!(RaveImage::of(&image("p0", serde_json::json!({})))
            .unwrap_err()
            .contains("safe_mode"));
    }
}
