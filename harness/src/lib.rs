//! rave-harness: boots system images under QEMU, within the RAM and CPUs
//! given, and proves over SSH and HTTPS that each system really works. A
//! green check means its claim held; a red one says which kind of red and
//! why (see [`outcome`]).
//!
//! This crate is the core: it knows nothing of any one product. An image is
//! a directory with a [`Manifest`] (any label, any components); a check is a
//! function of a [`Machine`]; the [`runner`] runs checks on guests from any
//! source and reports them as events, a summary and JUnit. The rave images,
//! their settings and their cases live in the `rave` and `rave-suites`
//! crates, which use this one as anyone else would.
//!
//! The pieces, one idea per module:
//! - [`image`]: what an image is and holds; [`boot_plan`]: how it boots, as
//!   pure data; [`saved_state`]: a guest saved for restores.
//! - [`machine`]: a booted or attached guest and the verbs on it;
//!   [`error`]: what goes wrong, and which kind of red it is.
//! - [`ssh`]: commands in the guest, under bash with `set -euo pipefail`,
//!   each bounded by a deadline that bounds the whole of it ([`quote`]
//!   quotes a word for them); [`https`]: verified HTTPS; [`ports`]: probes
//!   from outside.
//! - [`qemu_command`], [`qemu_process`], [`accel`], [`host`], [`reaper`],
//!   [`resources`]: QEMU, owned so that it never outlives the harness.
//! - [`runner`], [`steps`], [`outcome`], [`facts`]: running checks, and
//!   saying what they found.
//!
//! The environment is never read here: every setting comes from the caller.
#![deny(missing_docs)]

pub mod accel;
pub mod boot_plan;
mod command_gate;
mod console;
pub mod error;
pub mod facts;
mod guest_command;
pub mod host;
pub mod https;
pub mod image;
pub mod machine;
pub mod outcome;
pub mod ports;
pub mod qemu_command;
pub mod qemu_process;
pub mod qmp;
pub mod reaper;
pub mod resources;
pub mod retry;
pub mod runner;
pub mod saved_state;
pub mod ssh;
mod ssh_pool;
pub mod steps;
pub mod target;
pub mod test_access;

pub use boot_plan::BootOptions;
pub use error::MachineError;
pub use guest_command::quote;
pub use host::Tools;
pub use image::{Image, Manifest};
pub use machine::Machine;
pub use outcome::{expect, CheckError, CheckResult, Outcome, Red};
pub use ssh::CommandOutput;
