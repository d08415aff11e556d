//! Saving a booted guest for later restores, and resuming a restored one,
//! over typed QMP (see [`crate::qmp`]).

use std::path::Path;
use std::time::Duration;

use super::{lock, Machine};
use crate::error::MachineError;
use crate::qmp::{Migration, RunState};
use crate::retry::Poll;
use crate::saved_state::{DISK_FILE, VMSTATE_FILE};

impl Machine {
    /// Saves this guest into `dir` (see [`crate::saved_state`]): stops it,
    /// migrates its memory and devices to a file, waits up to `timeout` for
    /// that, then ends QEMU and keeps its disk overlay and keys. The guest is
    /// gone afterwards. A booted guest only.
    pub fn save_state(&self, dir: &Path, timeout: Duration) -> Result<(), MachineError> {
        let booted = self.booted_for("saving its state")?;
        self.ssh.clear();
        let vmstate = dir.join(VMSTATE_FILE);
        let qmp = lock(&booted.qemu).qmp().clone();
        qmp.stop()?;
        qmp.migrate_to_file(&vmstate)?;
        self.wait_until(
            &format!("the migration of {} to {}", self.name, vmstate.display()),
            timeout,
            Duration::from_millis(200),
            || match qmp.migration() {
                Ok(Migration::Completed) => Poll::Ready(()),
                Ok(Migration::Failed(why)) => Poll::Abort(MachineError::Setup {
                    what: format!("saving {}", self.name),
                    message: why,
                }),
                Ok(Migration::Running(stage)) => Poll::Pending(stage),
                Err(e) => Poll::Abort(e.into()),
            },
        )?;
        lock(&booted.qemu).kill();
        let copy = |from: &Path, to: &Path| {
            std::fs::copy(from, to).map(|_| ()).map_err(|e| MachineError::Setup {
                what: format!("copying {} to {}", from.display(), to.display()),
                message: e.to_string(),
            })
        };
        copy(&booted.state_dir.join("overlay.qcow2"), &dir.join(DISK_FILE))?;
        self.access.copy_to(dir)?;
        Ok(())
    }

    /// A restored guest was saved stopped, so it stays paused once its state
    /// is loaded: waits for the load, then lets it run.
    pub(super) fn resume_after_load(&self, timeout: Duration) -> Result<(), MachineError> {
        let Some(booted) = self.booted() else { return Ok(()) };
        let qmp = lock(&booted.qemu).qmp().clone();
        self.wait_until(
            "the saved state to load",
            timeout,
            Duration::from_millis(50),
            || match qmp.run_state() {
                Ok(RunState::Paused) | Ok(RunState::Running) => Poll::Ready(()),
                Ok(RunState::Incoming) => Poll::Pending("loading".into()),
                Ok(RunState::Other(state)) => Poll::Pending(state),
                // The QMP socket appears a moment after QEMU starts.
                Err(e) => Poll::Pending(e.to_string()),
            },
        )?;
        qmp.cont()?;
        self.reach_stage("restored");
        Ok(())
    }
}
