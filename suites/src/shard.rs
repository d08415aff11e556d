//! Shards balanced by the trials' measured durations: `--shard I/N` on N
//! machines (GitLab `parallel:`, a GitHub matrix) should each take about the
//! same wall time, so trials are dealt by what they cost, not by count.
//!
//! What costs what: a group's cases share one guest and run
//! [`crate::plan::CASES_AT_ONCE`] at once, so the group's cases are one unit,
//! kept on one shard (a second shard would boot the guest again), costing
//! the sum of their durations over that; the first of them wait out the
//! guest's boot, so the boot is in that sum. A fault test boots a guest of its
//! own and is a unit costing its duration. Units are dealt largest first,
//! each to the shard with the least so far (ties to the lower shard). The
//! deal depends only on the trial list and the table, so every machine of a
//! pipeline computes the same shards.
//!
//! The durations are a [`Durations`] table: `suites/durations.json`
//! (committed, recorded from a run's events by `rave-harness durations`), or
//! one a run's `--durations FILE` names. A trial the table lacks costs the
//! table's median (60 s in an empty table).

use std::collections::BTreeMap;

use rave_harness::runner::{Trial, TrialKind};

pub use crate::durations::Durations;
use crate::plan::CASES_AT_ONCE;

/// A unit dealt to one shard: the trials (indices) and what they cost.
struct Unit {
    trials: Vec<usize>,
    cost: f64,
}

/// Shard `index` of `count` (1-based, as `--shard 2/3` says), balanced by
/// `durations`; the trials keep their order. Every trial is in exactly one
/// shard; a shard may be empty when there are fewer units than shards.
pub fn shard(trials: Vec<Trial>, index: usize, count: usize, durations: &Durations) -> Vec<Trial> {
    let (assignment, _) = deal(&trials, count.max(1), durations);
    trials
        .into_iter()
        .zip(assignment)
        .filter(|(_, shard)| *shard + 1 == index)
        .map(|(t, _)| t)
        .collect()
}

/// The estimated seconds of each of `count` shards, in order: what
/// `--shard` balances, printed by `rave-harness list --shard I/N`.
pub fn estimates(trials: &[Trial], count: usize, durations: &Durations) -> Vec<f64> {
    deal(trials, count.max(1), durations).1
}

/// The shard (0-based) of each trial, and each shard's estimated seconds.
fn deal(trials: &[Trial], count: usize, durations: &Durations) -> (Vec<usize>, Vec<f64>) {
    let mut units = units(trials, durations);
    // Largest first; equal costs in the order of their first trial.
    units.sort_by(|a, b| b.cost.total_cmp(&a.cost).then(a.trials[0].cmp(&b.trials[0])));
    let mut loads = vec![0.0_f64; count];
    let mut assignment = vec![0; trials.len()];
    for unit in units {
        let shard = (0..count)
            .min_by(|&a, &b| loads[a].total_cmp(&loads[b]).then(a.cmp(&b)))
            .unwrap_or(0);
        loads[shard] += unit.cost;
        for t in unit.trials {
            assignment[t] = shard;
        }
    }
    (assignment, loads)
}

/// A group's (not ignored) cases as one unit, each fault test (and each
/// ignored trial, costing nothing) as one.
fn units(trials: &[Trial], durations: &Durations) -> Vec<Unit> {
    let mut units: Vec<Unit> = Vec::new();
    let mut by_group: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, trial) in trials.iter().enumerate() {
        let cost = if trial.ignored.is_some() {
            0.0
        } else {
            durations.seconds(&trial.name)
        };
        if trial.kind == TrialKind::Case && trial.ignored.is_none() {
            let unit = *by_group.entry(&trial.group).or_insert_with(|| {
                units.push(Unit {
                    trials: Vec::new(),
                    cost: 0.0,
                });
                units.len() - 1
            });
            units[unit].trials.push(i);
            units[unit].cost += cost / CASES_AT_ONCE as f64;
        } else {
            units.push(Unit { trials: vec![i], cost });
        }
    }
    units
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::trials;
    use rave::Profile;

    fn table(pairs: &[(&str, f64)]) -> Durations {
        Durations::from_pairs(pairs.iter().map(|(k, v)| (k.to_string(), *v)))
    }

    #[test]
    fn shards_cover_every_trial_once_in_order() {
        let all = trials(&Profile::ALL, true);
        let names: Vec<String> = all.iter().map(|t| t.name.clone()).collect();
        let durations = Durations::committed();
        for count in 1..=5 {
            let mut seen: Vec<String> = Vec::new();
            for i in 1..=count {
                seen.extend(shard(all.clone(), i, count, &durations).iter().map(|t| t.name.clone()));
            }
            seen.sort();
            let mut expected = names.clone();
            expected.sort();
            assert_eq!(seen, expected, "{count} shards");
        }
        let one = shard(all.clone(), 1, 1, &durations);
        assert_eq!(
            one.iter().map(|t| &t.name).collect::<Vec<_>>(),
            names.iter().collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_groups_cases_stay_on_one_shard() {
        let all = trials(&Profile::ALL, true);
        for i in 1..=3 {
            let part = shard(all.clone(), i, 3, &Durations::committed());
            for group in ["p0", "p1", "p2"] {
                let here = part
                    .iter()
                    .filter(|t| t.kind == TrialKind::Case && t.group == group)
                    .count();
                let total = all
                    .iter()
                    .filter(|t| t.kind == TrialKind::Case && t.group == group)
                    .count();
                assert!(here == 0 || here == total, "shard {i}: {here} of {total} {group} cases");
            }
        }
    }

    #[test]
    fn balanced_by_cost_not_by_count() {
        let all = trials(&[Profile::P0], true);
        let faults: Vec<&Trial> = all.iter().filter(|t| t.kind == TrialKind::Fault).collect();
        // One fault test as slow as all the others together: it is a shard of its own.
        let slow = faults[0].name.clone();
        let rest: f64 = 10.0 * (faults.len() - 1) as f64;
        let mut pairs: Vec<(&str, f64)> = faults[1..].iter().map(|t| (t.name.as_str(), 10.0)).collect();
        pairs.push((&slow, rest + 400.0));
        let durations = table(&pairs);
        let first = shard(all.clone(), 1, 2, &durations);
        assert_eq!(first.iter().map(|t| &t.name).collect::<Vec<_>>(), vec![&slow]);
        let loads = estimates(&all, 2, &durations);
        assert!((loads[0] - (rest + 400.0)).abs() < 1e-9, "{loads:?}");
    }
}
