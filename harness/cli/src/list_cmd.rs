//! `rave-harness list`: the cases per profile and their fault tests.

use rave_harness::manifest::Profile;
use rave_suites::runner;

/// Prints one trial name per line, as `run --filter` matches them.
pub fn list(profiles: &[Profile]) -> anyhow::Result<i32> {
    for trial in runner::trials(profiles, true) {
        println!("{}", trial.name());
    }
    Ok(0)
}
