//! Every case of the spec, in the spec's order: the suites' lists put
//! together. A case, with its fault, is written in its suite's file.

use crate::case::Case;
use crate::{http_health, p2_observability, security, systemd_services};

/// Every case, in the spec's order.
pub fn all() -> Vec<Case> {
    [
        systemd_services::cases(),
        http_health::cases(),
        security::cases(),
        p2_observability::cases(),
    ]
    .concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_every_case_has_a_fault_that_names_a_cause() {
        let all = all();
        let mut ids: Vec<String> = all.iter().map(|c| c.id()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), all.len(), "a case name is used twice");
        for case in &all {
            assert!(!case.profiles.is_empty(), "{} applies nowhere", case.id());
            for (name, fault) in case.faults() {
                assert!(
                    !fault.must_say.is_empty(),
                    "{}'s fault {name} checks no message",
                    case.id()
                );
            }
        }
    }
}
