//! `rave-harness durations`: the table `--shard` balances by, from runs' events.

use std::path::PathBuf;

use anyhow::{bail, Context};
use rave_suites::shard::Durations;

/// Prints the durations table (JSON) of the trials that ran in `events`
/// (files of `run --json`), a later file's figure winning over an earlier's;
/// with `merge`, over that table's figures (trials the events lack keep theirs).
pub fn durations(events: &[PathBuf], merge: Option<PathBuf>) -> anyhow::Result<i32> {
    let mut table = match &merge {
        Some(path) => Durations::load(path).map_err(|e| anyhow::anyhow!("--merge {e}"))?,
        None => Durations::default(),
    };
    let mut sources = Vec::new();
    for path in events {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let found = Durations::from_events(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        if found.is_empty() {
            bail!(
                "{}: no trial ran in these events (write them with `rave-harness run --json FILE`)",
                path.display()
            );
        }
        sources.push(
            path.file_name()
                .map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into()),
        );
        table.merge(found);
    }
    let source = format!(
        "rave-harness durations, from the case_finished events of {}: seconds per trial, a fault test's boot included",
        sources.join(", ")
    );
    print!("{}", table.to_json(&source));
    Ok(0)
}
