//! The trials' measured durations: seconds per trial name, recorded from a
//! run's events (`rave-harness durations`) into `suites/durations.json`.
//! `--shard` balances by them (the `shard` module) and a run starts its
//! guests' lanes longest first by them (`plan::trials`).

use std::collections::BTreeMap;
use std::path::Path;

use rave_harness::runner::Trial;
use serde_json::Value;

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
    /// A table of `pairs` (trial name, seconds).
    pub fn from_pairs(pairs: impl IntoIterator<Item = (String, f64)>) -> Self {
        Durations {
            seconds: pairs.into_iter().collect(),
        }
    }

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

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(
            d.seconds,
            Durations::from_pairs([("p0::s::a".to_string(), 12.34)]).seconds
        );
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
