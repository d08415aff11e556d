//! `rave-harness list`: the cases per profile and their fault tests.

use rave::Profile;
use rave_suites::plan;

/// Prints one trial name per line, as `run --filter` matches them.
pub fn list(profiles: &[Profile]) -> anyhow::Result<i32> {
    for trial in plan::trials(profiles, true) {
        println!("{}", trial.name);
    }
    Ok(0)
}
