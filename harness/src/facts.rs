//! Plain facts about a guest, for reports: its boot stages, what its units
//! use against their limits, what QEMU cost the host.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A stage of a guest's boot and when it was reached, from QEMU's start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootStage {
    /// e.g. `console` (first serial output), `restored` (saved state loaded),
    /// `ssh` (first key login), `clock` (a restored guest's clock set),
    /// `contract` (every unit of the image active).
    pub stage: String,
    /// Since QEMU started.
    #[serde(serialize_with = "seconds", deserialize_with = "from_seconds")]
    pub at: Duration,
}

/// A unit's memory against its limit, as systemd reports them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnitMemory {
    /// The unit.
    pub unit: String,
    /// `MemoryCurrent` in bytes, when accounted.
    pub current_bytes: Option<u64>,
    /// `MemoryMax` in bytes, when set.
    pub max_bytes: Option<u64>,
}

/// What one guest cost the host and its units used, taken before it went down.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GuestReport {
    /// The guest's name, e.g. `rave-p2`.
    pub name: String,
    /// Its image's label (e.g. a profile).
    pub profile: String,
    /// Whether it was an attached target (no boot, no QEMU figures).
    pub attached: bool,
    /// Its boot stages.
    pub boot: Vec<BootStage>,
    /// QEMU's peak resident memory in bytes.
    pub qemu_peak_rss_bytes: u64,
    /// QEMU's CPU time (user and system).
    #[serde(serialize_with = "seconds")]
    pub qemu_cpu_time: Duration,
    /// Each component unit's memory against its MemoryMax.
    pub units: Vec<UnitMemory>,
}

/// Serializes a duration as seconds with millisecond precision.
pub fn seconds<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64((d.as_secs_f64() * 1000.0).round() / 1000.0)
}

fn from_seconds<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let secs = <f64 as serde::Deserialize>::deserialize(d)?;
    Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom)
}
