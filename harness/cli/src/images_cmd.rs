//! `rave-harness images build|list|path`.

use anyhow::Context;
use clap::Subcommand;
use rave::Profile;

use crate::progress::Progress;
use crate::{FlavorArg, ProfileArg};

/// What to do with images.
#[derive(Subcommand)]
pub enum ImagesCmd {
    /// Build the image of a profile (or all) when the cache lacks it.
    Build {
        /// p0, p1, p2 or all.
        #[arg(long, value_enum, default_value = "all")]
        profile: ProfileArg,
        /// The image flavor (default: RAVE_FLAVOR, else debian).
        #[arg(long, value_enum)]
        flavor: Option<FlavorArg>,
    },
    /// Each profile's image: where it is, or why there is none.
    List {
        /// The image flavor (default: RAVE_FLAVOR, else debian).
        #[arg(long, value_enum)]
        flavor: Option<FlavorArg>,
    },
    /// Print the directory of a profile's image (build it first).
    Path {
        /// The profile: p0, p1 or p2.
        #[arg(long)]
        profile: Profile,
        /// The image flavor (default: RAVE_FLAVOR, else debian).
        #[arg(long, value_enum)]
        flavor: Option<FlavorArg>,
    },
}

/// Runs an `images` subcommand.
pub fn images(command: ImagesCmd) -> anyhow::Result<i32> {
    match command {
        ImagesCmd::Build { profile, flavor } => {
            let launcher = crate::launcher(flavor.map(Into::into), false)?;
            let progress = Progress::new();
            let mut specs = Vec::new();
            for profile in profile.profiles() {
                let spec = launcher.spec(profile);
                match launcher.store.buildable(spec) {
                    Ok(()) => specs.push(spec),
                    Err(reason) => progress.line(format!("{profile}: skipped: {reason}")),
                }
            }
            progress.set("looking in the cache");
            let built = launcher.store.ensure_all(&specs, &|_, step| {
                progress.set(step.to_string());
                progress.line(step);
            });
            // Every build's outcome is said; the first failure is the exit's.
            let mut first_error = None;
            for (spec, image) in specs.iter().zip(built) {
                match image {
                    Ok(image) => progress.line(format!("{}: {}", spec.profile, image.dir.display())),
                    Err(e) => {
                        let e = anyhow::Error::new(e).context(format!("building {}", spec.name()));
                        if first_error.is_some() {
                            progress.line(format!("{e:#}"));
                        }
                        first_error.get_or_insert(e);
                    }
                }
            }
            progress.finish();
            match first_error {
                Some(e) => Err(e),
                None => Ok(0),
            }
        }
        ImagesCmd::List { flavor } => {
            let launcher = crate::launcher(flavor.map(Into::into), false)?;
            for profile in Profile::ALL {
                let spec = launcher.spec(profile);
                let state = match launcher.store.find(spec) {
                    Ok(Some(image)) => image.dir.display().to_string(),
                    Ok(None) => match launcher.store.buildable(spec) {
                        Ok(()) => "not built yet (rave-harness images build)".into(),
                        Err(reason) => format!("not buildable here: {reason}"),
                    },
                    Err(e) => format!("unusable: {e}"),
                };
                println!("{:<18} {state}", spec.name());
            }
            Ok(0)
        }
        ImagesCmd::Path { profile, flavor } => {
            let launcher = crate::launcher(flavor.map(Into::into), false)?;
            let image = launcher.store.find(launcher.spec(profile))?.with_context(|| {
                format!("no {profile} image in the cache: run rave-harness images build --profile {profile}")
            })?;
            println!("{}", image.dir.display());
            Ok(0)
        }
    }
}
