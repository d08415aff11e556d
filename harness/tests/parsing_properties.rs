//! Properties of the core's parsers that take outside input: image
//! manifests and target descriptions. Whatever comes in, they answer `Ok` or
//! an error that names what is wrong; they never panic. (The settings'
//! parser is the product's: `harness/rave/tests/settings_properties.rs`.)

use proptest::prelude::*;
use rave_harness::Manifest;

const GOOD_MANIFEST: &str = r#"{"schema":2,"profile":"p2","flavor":"debian","kernel":"vmlinuz","initrd":"initrd.img","disk":"disk.qcow2","kernel_cmdline":"root=/dev/vda rw","ssh_user":"agent","ca_cert":"ca.pem","https":{"host":"rave.local","port":3002},"fw_cfg":{"opt/rave/age-identity":"age-identity.txt"},"built_at":1796091397,"components":{"nginx":{"unit":"nginx.service"}},"absent":{"grafana":"not packaged"},"properties":{"safe_mode":true,"limits":{"webhook-dispatcher":"128M"}}}"#;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

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
            "schema", "profile", "flavor", "kernel", "initrd", "disk", "kernel_cmdline", "ssh_user",
            "ca_cert", "https", "fw_cfg", "built_at", "components", "absent", "properties",
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
