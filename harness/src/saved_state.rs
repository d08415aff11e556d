//! A saved guest: its memory and devices (a QEMU migration to a file), its
//! disk overlay of that moment (kept read-only as the backing of each later
//! overlay) and the test access keys it holds. [`crate::Machine::save_state`]
//! writes one, [`crate::Machine::restore`] boots from one; where they are
//! kept, and when one is made again, is the caller's.

use std::path::PathBuf;

use crate::test_access::{KeyError, TestAccess};

/// The saved memory and devices.
pub const VMSTATE_FILE: &str = "vmstate";
/// The disk overlay of the moment of the save (backed by the image's disk).
pub const DISK_FILE: &str = "disk.qcow2";

/// A saved guest, ready to restore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedState {
    /// Its directory.
    pub dir: PathBuf,
}

impl SavedState {
    /// The saved memory and devices.
    pub fn vmstate(&self) -> PathBuf {
        self.dir.join(VMSTATE_FILE)
    }

    /// The saved disk; only ever a backing file.
    pub fn disk(&self) -> PathBuf {
        self.dir.join(DISK_FILE)
    }

    /// The keys the saved guest holds.
    pub fn access(&self) -> Result<TestAccess, KeyError> {
        TestAccess::load(&self.dir)
    }
}
