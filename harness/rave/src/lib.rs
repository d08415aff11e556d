//! The rave product layer, on the generic core ([`rave_harness`]): what the
//! P0, P1 and P2 images are and how they are had.
//!
//! - [`settings`]: every environment variable the project reads, read once
//!   into one typed value.
//! - [`profiles`]: the profiles, the flavors, the SAFE table (one file,
//!   `images/safe-mode.json`, for the recipes and the cases) and the
//!   stability window; what a rave image's manifest says.
//! - [`image_store`]: images built from the recipes (debian) or handed over
//!   by the flake (nixos), cached by a hash of their recipe; several built
//!   at once.
//! - [`lock_closure`]: the part of Cargo.lock that decides the dispatcher
//!   an image carries.
//! - [`warm_store`]: saved guests, so every guest but an image's first is a
//!   restore in seconds.
//! - [`launcher`]: settings to a booted guest; the runner's source of guests.
//! - [`doctor`]: can this host run it at all.
#![deny(missing_docs)]

pub mod doctor;
pub mod image_store;
pub mod launcher;
pub mod lock_closure;
pub mod profiles;
pub mod settings;
pub mod warm_store;

pub use launcher::{LaunchError, Launcher};
pub use profiles::{Flavor, Profile, RaveImage, SafeValues, STABLE_FOR};
pub use settings::{Settings, SettingsError};
