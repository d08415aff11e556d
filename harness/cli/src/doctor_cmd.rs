//! `rave-harness doctor`: the host's fitness, one verdict per line.

use std::path::PathBuf;

use rave_harness::doctor::DoctorFacts;
use rave_harness::image_store::ImageStore;
use rave_harness::manifest::Profile;

/// Prints the report; exit 1 when a line is FAIL.
pub fn doctor(cache_dir: Option<PathBuf>) -> anyhow::Result<i32> {
    let mut store = ImageStore::from_env();
    if let Some(dir) = cache_dir {
        store.cache_dir = dir;
    }
    // A cached image's kernel is what the harness would boot: probe KVM with it.
    let kernel = Profile::ALL.into_iter().find_map(|profile| {
        let spec = rave_harness::image_store::ImageSpec {
            flavor: rave_harness::Flavor::Debian,
            profile,
            safe_mode: true,
        };
        store.find(spec).ok().flatten().map(|image| image.kernel())
    });
    let (text, ok) = DoctorFacts::gather(store.cache_dir.clone(), kernel).report();
    print!("{text}");
    Ok(if ok { 0 } else { 1 })
}
