//! Every case: its name, the profiles it applies to, the components it
//! needs, how it runs, and the fault that must turn it red.

use rave_harness::machine::quote;
use rave_harness::manifest::{Manifest, Profile};
use rave_harness::{Machine, MachineError};

use crate::failure::CaseResult;
use crate::systemd_services;

/// A fault injected in a booted guest that must make a case fail.
#[derive(Debug, Clone, Copy)]
pub struct Fault {
    /// What it breaks, said for the trial's log.
    pub description: &'static str,
    /// Breaks it.
    pub inject: fn(&Machine) -> Result<(), MachineError>,
    /// Texts the case's failure must carry: the diagnostics a person needs.
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
    pub run: fn(&Machine) -> CaseResult,
    /// Its fault.
    pub fault: Fault,
}

impl Case {
    /// `SUITE::CASE`, as the spec names it.
    pub fn id(&self) -> String {
        format!("{}::{}", self.suite, self.name)
    }

    /// `Ok` when the case applies to this image; `Err` says why it is ignored.
    pub fn applies_to(&self, manifest: &Manifest) -> Result<(), String> {
        if !self.profiles.contains(&manifest.profile) {
            return Err(format!("{} does not apply to {}", self.id(), manifest.profile));
        }
        self.components.iter().try_for_each(|c| manifest.unit(c).map(|_| ()))
    }
}

const ALL_PROFILES: &[Profile] = &[Profile::P0, Profile::P1, Profile::P2];

/// The cases implemented so far, in the spec's order.
pub fn all() -> Vec<Case> {
    vec![
        Case {
            suite: "systemd_services",
            name: "nginx",
            profiles: ALL_PROFILES,
            components: &["nginx"],
            run: systemd_services::nginx,
            fault: Fault {
                description: "nginx.service stopped",
                inject: |m| stop_unit(m, "nginx"),
                must_say: &["nginx.service", "systemctl status", "journal of nginx.service"],
            },
        },
        Case {
            suite: "systemd_services",
            name: "postgresql",
            profiles: ALL_PROFILES,
            components: &["postgresql"],
            run: systemd_services::postgresql,
            fault: Fault {
                description: "the PostgreSQL cluster unit stopped",
                inject: |m| stop_unit(m, "postgresql"),
                must_say: &["postgresql", "systemctl status", "journal of postgresql"],
            },
        },
    ]
}

/// Stops the unit of `component` in the guest.
pub fn stop_unit(machine: &Machine, component: &str) -> Result<(), MachineError> {
    let unit = machine
        .image()
        .manifest
        .unit(component)
        .unwrap_or(component)
        .to_string();
    machine
        .succeed(&format!("sudo systemctl stop {}", quote(&unit)))
        .map(|_| ())
}

/// Proves that `case` can fail: green on the untouched guest, red after the
/// fault, with the diagnostics the fault names in its message.
pub fn prove_fault(case: &Case, machine: &Machine) -> Result<(), String> {
    (case.run)(machine).map_err(|e| {
        format!(
            "{} was not green before the fault, so the fault proves nothing:\n{e}",
            case.id()
        )
    })?;
    (case.fault.inject)(machine)
        .map_err(|e| format!("could not inject the fault ({}): {e}", case.fault.description))?;
    match (case.run)(machine) {
        Ok(()) => Err(format!(
            "{} stayed green with the fault \"{}\" injected: the case cannot fail",
            case.id(),
            case.fault.description
        )),
        Err(failure) => {
            let missing: Vec<_> = case
                .fault
                .must_say
                .iter()
                .filter(|s| !failure.message().contains(**s))
                .collect();
            if missing.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "{} failed, but its message lacks {missing:?}:\n{failure}",
                    case.id()
                ))
            }
        }
    }
}
