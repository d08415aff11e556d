//! A case of the spec: its name, where it applies, what it needs, its check,
//! and the fault that must turn it red (proving it can fail).
//!
//! A case and its fault are written side by side in their suite's file; the
//! catalog is the suites' lists put together. Adding a case is one entry in
//! one file.

use rave::Profile;
use rave_harness::outcome::{CheckError, CheckResult, Red};
use rave_harness::steps::step;
use rave_harness::{Machine, MachineError};

/// A fault injected in a fresh guest that must make a case fail.
#[derive(Debug, Clone, Copy)]
pub struct Fault {
    /// What it breaks, said for the trial's log.
    pub description: &'static str,
    /// Breaks it.
    pub inject: fn(&Machine) -> Result<(), MachineError>,
    /// Texts the case's red must carry: the diagnostics a person needs.
    pub must_say: &'static [&'static str],
}

/// One case of the spec.
#[derive(Debug, Clone, Copy)]
pub struct Case {
    /// The suite, e.g. `systemd_services`.
    pub suite: &'static str,
    /// The case, e.g. `nginx`.
    pub name: &'static str,
    /// The profiles it applies to.
    pub profiles: &'static [Profile],
    /// The components of the contract it needs in the image.
    pub components: &'static [&'static str],
    /// Runs it against a guest.
    pub check: fn(&Machine) -> CheckResult,
    /// Its fault.
    pub fault: Fault,
    /// It waits long (for a Prometheus scrape): it starts before its guest's other cases.
    pub waits_long: bool,
    /// More faults, for parts of the check its first fault does not reach
    /// (it turns the case red before them), each named: its trial is
    /// `fault::PROFILE::SUITE::CASE::NAME`.
    pub extra_faults: &'static [(&'static str, Fault)],
}

/// Every profile.
pub const ALL_PROFILES: &[Profile] = &[Profile::P0, Profile::P1, Profile::P2];
/// The profiles with security hardening.
pub const HARDENED: &[Profile] = &[Profile::P1, Profile::P2];
/// The profile with observability.
pub const OBSERVED: &[Profile] = &[Profile::P2];

impl Case {
    /// `SUITE::CASE`, as the spec names it.
    pub fn id(&self) -> String {
        format!("{}::{}", self.suite, self.name)
    }

    /// Every fault of the case: its own (named by the case) and the extra
    /// ones (`CASE::NAME`), as the names their trials take.
    pub fn faults(&self) -> Vec<(String, Fault)> {
        std::iter::once((self.name.to_string(), self.fault))
            .chain(
                self.extra_faults
                    .iter()
                    .map(|(name, fault)| (format!("{}::{name}", self.name), *fault)),
            )
            .collect()
    }

    /// Proves that the case can fail, on a guest of its own: green as found,
    /// then `fault`, then red, failed or timed out (not a harness error),
    /// with the diagnostics the fault names in its message.
    pub fn prove_fault(&self, fault: &Fault, machine: &Machine) -> CheckResult {
        let id = self.id();
        step(&format!("checking {id} is green before the fault"), || {
            (self.check)(machine)
        })
        .map_err(|e| CheckError {
            red: e.red,
            message: format!("{id} was not green before the fault, so the fault proves nothing:\n{e}"),
        })?;
        step(&format!("injecting the fault: {}", fault.description), || {
            (fault.inject)(machine)
        })
        .map_err(|e| CheckError::harness(format!("could not inject the fault ({}): {e}", fault.description)))?;
        let red = match step(&format!("checking {id} is red with the fault"), || {
            (self.check)(machine)
        }) {
            Ok(()) => {
                return Err(CheckError::failed(format!(
                    "{id} stayed green with the fault \"{}\" injected: the case cannot fail",
                    fault.description
                )))
            }
            Err(red) => red,
        };
        if red.red == Red::HarnessError {
            return Err(CheckError::failed(format!(
                "{id} could not be checked with the fault \"{}\" injected (a harness error), so it did not prove it red:\n{red}",
                fault.description
            )));
        }
        let missing: Vec<_> = fault.must_say.iter().filter(|s| !red.message.contains(**s)).collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(CheckError::failed(format!(
                "{id} was red with the fault, but its message lacks {missing:?}:\n{red}"
            )))
        }
    }
}
