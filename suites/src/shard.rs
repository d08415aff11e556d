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
use std::path::Path;

use rave_harness::runner::{Trial, TrialKind};
use serde_json::Value;

use crate::plan::CASES_AT_ONCE;

/// The committed table, recorded from a full run on these machines.
pub const COMMITTED: &str = include_str!("../durations.json");

/// What a trial missing from an empty table is taken to cost, in seconds.
const UNKNOWN_SECONDS: f64 = 60.0;

/// Seconds per trial name, as measured by a run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Durations {
    seconds: BTreeMap<String, f64>,
}

impl Durations {
    /// The committed table (`suites/durations.json`).
    pub fn committed() -> Self {
        Self::parse(COMMITTED).unwrap_or_default()
    }

    /// A table as `rave-harness durations` writes it:
    /// `{"source": "...", "seconds": {"p0::systemd_services::nginx": 4.2, ...}}`.
    ///
    /// Errors: not JSON, or no `seconds` object of numbers.
    pub fn parse(text: &str) -> Result<Self, String> {
        let value: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        let table = value
            .get("seconds")
            .and_then(Value::as_object)
            .ok_or("no \"seconds\" object (a table written by `rave-harness durations`)")?;
        let mut seconds = BTreeMap::new();
        for (name, value) in table {
            let s = value
                .as_f64()
                .filter(|s| s.is_finite() && *s >= 0.0)
                .ok_or_else(|| format!("{name}: {value} is not a number of seconds"))?;
            seconds.insert(name.clone(), s);
        }
        Ok(Durations { seconds })
    }

    /// The table in `path`. Errors name the file and what is wrong with it.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The trials' durations in the `case_finished` events of JSON lines
    /// (`rave-harness run --json`); trials that did not run (ignored) are
    /// left out, a trial seen twice keeps its last figure.
    ///
    /// Errors: a line that is not JSON, or a duration that is not a number
    /// of seconds (with its line's number); a durations table instead of events.
    pub fn from_events(lines: &str) -> Result<Self, String> {
        let mut seconds = BTreeMap::new();
        for (n, line) in lines.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let event: Value = match serde_json::from_str(line) {
                Ok(event) => event,
                Err(e) if n == 0 && Self::parse(lines).is_ok() => {
                    return Err(format!(
                        "a durations table, not a run's events (give a table with --merge): {e}"
                    ))
                }
                Err(e) => return Err(format!("line {}: not JSON: {e}", n + 1)),
            };
            if event.get("event").and_then(Value::as_str) != Some("case_finished") {
                continue;
            }
            let ran = event
                .pointer("/outcome/result")
                .and_then(Value::as_str)
                .is_some_and(|o| o != "ignored");
            if let (true, Some(name), Some(s)) = (
                ran,
                event.get("case").and_then(Value::as_str),
                event.get("duration").and_then(Value::as_f64),
            ) {
                if !s.is_finite() || s < 0.0 {
                    return Err(format!(
                        "line {}: {name}'s duration {s} is not a number of seconds",
                        n + 1
                    ));
                }
                seconds.insert(name.to_string(), s);
            }
        }
        Ok(Durations { seconds })
    }

    /// Adds `other`'s figures, which win over this table's.
    pub fn merge(&mut self, other: Durations) {
        self.seconds.extend(other.seconds);
    }

    /// The table as JSON, saying where its figures come from.
    pub fn to_json(&self, source: &str) -> String {
        let rounded: BTreeMap<&String, f64> = self
            .seconds
            .iter()
            .map(|(k, v)| (k, (v * 10.0).round() / 10.0))
            .collect();
        let value = serde_json::json!({ "source": source, "seconds": rounded });
        serde_json::to_string_pretty(&value).unwrap_or_default() + "\n"
    }

    /// How many of `trials` the table has a figure for.
    pub fn known(&self, trials: &[Trial]) -> usize {
        trials.iter().filter(|t| self.seconds.contains_key(&t.name)).count()
    }

    /// How many trials the table holds.
    pub fn len(&self) -> usize {
        self.seconds.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.seconds.is_empty()
    }

    /// The seconds `name` is taken to cost: its figure, else the median.
    pub fn seconds(&self, name: &str) -> f64 {
        self.seconds.get(name).copied().unwrap_or_else(|| self.median())
    }

    /// The table's median figure ([`UNKNOWN_SECONDS`] in an empty table).
    fn median(&self) -> f64 {
        let mut all: Vec<f64> = self.seconds.values().copied().collect();
        if all.is_empty() {
            return UNKNOWN_SECONDS;
        }
        all.sort_by(f64::total_cmp);
        all[all.len() / 2]
    }
}

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
    let median = durations.median();
    for (i, trial) in trials.iter().enumerate() {
        let cost = if trial.ignored.is_some() {
            0.0
        } else {
            durations.seconds.get(&trial.name).copied().unwrap_or(median)
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
        Durations {
            seconds: pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        }
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

    #[test]
    fn the_table_round_trips_and_reads_events() {
        let events = concat!(
            r#"{"event":"run_started","trials":2}"#,
            "\n",
            r#"{"event":"case_finished","case":"p0::s::a","outcome":{"result":"passed"},"duration":12.34}"#,
            "\n",
            r#"{"event":"case_finished","case":"p2::s::g","outcome":{"result":"ignored","reason":"r"},"duration":0.0}"#,
            "\n"
        );
        let d = Durations::from_events(events).unwrap();
        assert_eq!(d.seconds, table(&[("p0::s::a", 12.34)]).seconds);
        let back = Durations::parse(&d.to_json("a test")).unwrap();
        assert_eq!(back.seconds("p0::s::a"), 12.3);
        assert_eq!(back.seconds("unknown"), 12.3, "the median stands in");
        assert!(Durations::parse("{}").unwrap_err().contains("seconds"));
        assert!(Durations::from_events("nope").unwrap_err().starts_with("line 1"));
        let negative = r#"{"event":"case_finished","case":"p0::s::a","outcome":{"result":"passed"},"duration":-5}"#;
        assert!(Durations::from_events(negative)
            .unwrap_err()
            .contains("not a number of seconds"));
        assert!(Durations::from_events(&d.to_json("x")).unwrap_err().contains("--merge"));
        assert!(
            !Durations::committed().is_empty(),
            "suites/durations.json is empty or unreadable"
        );
    }
}
