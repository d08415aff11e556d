//! `rave-harness list`: the cases per profile and their fault tests.

use std::io::Write;
use std::path::Path;

use rave::Profile;
use rave_suites::{plan, shard};

/// Prints one trial name per line, as `run --filter` matches them; with
/// `shard` (I of N), only that shard's, then each shard's estimated seconds
/// on stderr.
pub fn list(profiles: &[Profile], shard: Option<(usize, usize)>, durations: Option<&Path>) -> anyhow::Result<i32> {
    let mut trials = plan::trials(profiles, true);
    if let Some((index, count)) = shard {
        let durations = crate::run_cmd::durations(durations)?;
        let estimates = shard::estimates(&trials, count, &durations);
        trials = shard::shard(trials, index, count, &durations);
        let said: Vec<String> = estimates
            .iter()
            .enumerate()
            .map(|(i, s)| format!("{}/{count} {s:.0} s", i + 1))
            .collect();
        eprintln!("estimated seconds per shard (one guest at a time): {}", said.join(", "));
    }
    // Into a pipe that closes early (`| head`): the reader has what it wanted.
    let mut out = std::io::stdout().lock();
    for trial in trials {
        match writeln!(out, "{}", trial.name) {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(0),
            other => other?,
        }
    }
    Ok(0)
}
