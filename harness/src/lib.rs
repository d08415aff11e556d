//! rave-harness: boots the rave system images (P0, P1, P2) under QEMU within
//! RAM and CPU limits, and gives cases a [`Machine`] to prove over SSH and
//! HTTPS that each system really works.
//!
//! The pieces, one idea per module: [`config`] reads the environment,
//! [`image_store`] builds and caches images, [`manifest`] says what an image
//! holds, [`accel`] chooses KVM or TCG, [`qemu_command`] renders the argv,
//! [`qemu_process`] owns QEMU, [`ssh`] and [`test_access`] get in, [`retry`]
//! is the one wait, and [`machine`] puts them together. [`report`],
//! [`events`], [`pushgateway`] and [`resources`] say what a run found and cost;
//! [`doctor`] says whether a host can run it at all.
#![deny(missing_docs)]

pub mod accel;
pub mod command_gate;
pub mod config;
pub mod console;
pub mod doctor;
pub mod events;
pub mod guest_command;
pub mod host_check;
pub mod https;
pub mod image_store;
pub mod launcher;
pub mod machine;
pub mod manifest;
pub mod ports;
pub mod pushgateway;
pub mod qemu_command;
pub mod qemu_process;
pub mod reaper;
pub mod report;
pub mod resources;
pub mod retry;
pub mod ssh;
pub mod ssh_pool;
pub mod target;
pub mod test_access;
pub mod warm_start;

pub use config::RunConfig;
pub use launcher::{LaunchError, Launcher};
pub use machine::{BootOptions, Machine, MachineError};
pub use manifest::{Flavor, Image, Manifest, Profile};
