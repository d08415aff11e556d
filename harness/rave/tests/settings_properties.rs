//! Properties of the settings' parser (the environment): whatever a
//! variable holds, it answers `Ok` or an error that names the variable; it
//! never panics, and the guest's size is accepted exactly within the SAFE bounds.

use std::collections::HashMap;
use std::ffi::OsString;

use proptest::prelude::*;
use rave::Settings;

fn vars(pairs: &[(&str, String)]) -> HashMap<OsString, OsString> {
    pairs
        .iter()
        .map(|(k, v)| (OsString::from(k), OsString::from(v)))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Any value of any setting: Ok, or an error naming that variable.
    #[test]
    fn settings_never_panic_and_name_the_variable(
        var in prop::sample::select(vec![
            "QEMU_RAM_MB", "QEMU_CPUS", "SAFE", "RAVE_ACCEL", "RAVE_FLAVOR", "RAVE_COLD",
            "RAVE_KEEP_STATE", "RAVE_ALLOW_FAULTS", "RAVE_KERNEL_ARGS", "RAVE_TCG_CPU",
            "RAVE_GUESTS_AT_ONCE",
        ]),
        value in ".{0,12}",
    ) {
        match Settings::from_vars(&vars(&[(var, value.clone())])) {
            Ok(_) => {}
            Err(e) => {
                prop_assert_eq!(e.var, var);
                prop_assert!(e.to_string().starts_with(var), "{}", e);
            }
        }
    }

    /// RAM: every whole number is accepted exactly when it is within the SAFE bounds.
    #[test]
    fn ram_is_accepted_exactly_within_bounds(ram in 0u64..10_000, safe in any::<bool>()) {
        let settings = Settings::from_vars(&vars(&[
            ("QEMU_RAM_MB", ram.to_string()),
            ("SAFE", if safe { "1" } else { "0" }.to_string()),
        ]));
        let max = if safe { 3072 } else { 4096 };
        prop_assert_eq!(settings.is_ok(), (512..=max).contains(&ram));
    }
}
