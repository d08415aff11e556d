//! `rave-harness doctor`: the host's fitness, one verdict per line.

use std::path::PathBuf;

use rave::doctor::DoctorFacts;
use rave::image_store::{ImageSpec, ImageStore};
use rave::{Flavor, Profile, Settings};

/// Prints the report; exit 1 when a line is FAIL.
pub fn doctor(cache_dir: Option<PathBuf>) -> anyhow::Result<i32> {
    let settings = Settings::from_env();
    let search_path = match &settings {
        Ok(settings) => settings.search_path.clone(),
        Err(_) => Settings::search_path_of_env(),
    };
    let cache_dir = cache_dir
        .or_else(|| settings.as_ref().ok().map(|s| s.cache_dir.clone()))
        .unwrap_or_else(|| PathBuf::from("/var/cache/rave-harness"));
    // A cached image's kernel is what the harness would boot: probe KVM with it.
    let kernel = settings.as_ref().ok().and_then(|settings| {
        let mut store = ImageStore::new(settings);
        store.cache_dir = cache_dir.clone();
        Profile::ALL.into_iter().find_map(|profile| {
            let spec = ImageSpec {
                flavor: Flavor::Debian,
                profile,
                safe_mode: true,
            };
            store.find(spec).ok().flatten().map(|image| image.kernel())
        })
    });
    let (text, ok) = DoctorFacts::gather(settings.map_err(|e| e.to_string()), search_path, cache_dir, kernel).report();
    print!("{text}");
    Ok(if ok { 0 } else { 1 })
}
