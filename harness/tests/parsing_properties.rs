//! Properties of the parsers that take outside input: the environment
//! (`RunConfig`), image manifests and target descriptions. Whatever comes in,
//! they answer `Ok` or an error that names what is wrong; they never panic.

use std::collections::HashMap;

use proptest::prelude::*;
use rave_harness::config::RunConfig;
use rave_harness::manifest::Manifest;

const GOOD_MANIFEST: &str = r#"{"schema":1,"profile":"p2","flavor":"debian","safe_mode":true,"kernel":"vmlinuz","initrd":"initrd.img","disk":"disk.qcow2","kernel_cmdline":"root=/dev/vda rw","ssh_user":"agent","ca_cert":"ca.pem","age_identity":"age-identity.txt","limits":{"webhook-dispatcher":"128M"},"components":{"nginx":{"unit":"nginx.service"}},"absent":{"grafana":"not packaged"}}"#;

fn vars(pairs: &[(&str, String)]) -> HashMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Any value of any setting: Ok, or an error naming that variable.
    #[test]
    fn settings_never_panic_and_name_the_variable(
        var in prop::sample::select(vec!["QEMU_RAM_MB", "QEMU_CPUS", "SAFE", "RAVE_ACCEL"]),
        value in ".{0,12}",
    ) {
        match RunConfig::from_vars(&vars(&[(var, value.clone())])) {
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
        let config = RunConfig::from_vars(&vars(&[
            ("QEMU_RAM_MB", ram.to_string()),
            ("SAFE", if safe { "1" } else { "0" }.to_string()),
        ]));
        let max = if safe { 3072 } else { 4096 };
        prop_assert_eq!(config.is_ok(), (512..=max).contains(&ram));
    }

    /// Any text as a manifest: Ok or Err, no panic.
    #[test]
    fn manifests_never_panic(text in ".{0,300}") {
        let _ = Manifest::parse(&text);
    }

    /// Every strict prefix of a good manifest is refused.
    #[test]
    fn truncated_manifests_are_refused(cut in 0usize..GOOD_MANIFEST.len()) {
        prop_assert!(Manifest::parse(&GOOD_MANIFEST[..cut]).is_err());
    }

    /// An unknown field anywhere at the top level is refused, by name.
    #[test]
    fn unknown_fields_are_refused(name in "[a-z_]{1,12}") {
        prop_assume!(![
            "schema", "profile", "flavor", "safe_mode", "kernel", "initrd", "disk", "kernel_cmdline",
            "ssh_user", "ca_cert", "age_identity", "limits", "components", "absent",
        ].contains(&name.as_str()));
        let text = GOOD_MANIFEST.replacen('{', &format!("{{\"{name}\":1,"), 1);
        let err = Manifest::parse(&text).unwrap_err();
        prop_assert!(err.contains("unknown field"), "{}", err);
    }

    /// Any text as a target description: Ok or Err, no panic.
    #[test]
    fn target_descriptions_never_panic(text in ".{0,300}") {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("guest.json");
        std::fs::write(&path, &text).unwrap();
        let _ = rave_harness::target::TargetDescription::load(&path);
    }
}

#[test]
fn the_good_manifest_parses() {
    assert!(Manifest::parse(GOOD_MANIFEST).is_ok());
}
