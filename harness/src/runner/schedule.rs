//! Lanes: which trials run together, and how many at once.
//!
//! A group's case trials form one lane (they share the group's guest and run
//! at once up to `cases_at_once`, those that wait long first); each fault
//! trial is a lane of its own (it boots its own guest). Lanes run side by
//! side up to `guests_at_once`, the longest expected first (a lane of cases
//! is expected to take the sum of its trials' [`Trial::expected`] over the
//! cases it runs at once, and no less than its longest), so the last lane
//! to start is a short one; lanes
//! expected to take the same (or with nothing known) keep the order of
//! their first trial.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use super::trial::{Trial, TrialKind};

/// Trials (indices into `trials`, of those in `runnable`) grouped into
/// lanes, the longest expected first; a lane runs `per_lane` cases at once.
pub(super) fn lanes(trials: &[Trial], runnable: &[usize], per_lane: usize) -> Vec<Vec<usize>> {
    let mut lanes: Vec<Vec<usize>> = Vec::new();
    let mut by_group: BTreeMap<&str, usize> = BTreeMap::new();
    for &index in runnable {
        let trial = &trials[index];
        match trial.kind {
            TrialKind::Case => {
                let lane = *by_group.entry(&trial.group).or_insert_with(|| {
                    lanes.push(Vec::new());
                    lanes.len() - 1
                });
                lanes[lane].push(index);
            }
            TrialKind::Fault => lanes.push(vec![index]),
        }
    }
    for lane in &mut lanes {
        // Stable: the long waits first, each part in the order given.
        lane.sort_by_key(|&index| !trials[index].waits_long);
    }
    // Each lane's expectation read once; stable: equal lanes keep the order of their first trial.
    let mut costed: Vec<(f64, Vec<usize>)> = lanes
        .into_iter()
        .map(|lane| (expected(trials, &lane, per_lane), lane))
        .collect();
    costed.sort_by(|a, b| b.0.total_cmp(&a.0));
    costed.into_iter().map(|(_, lane)| lane).collect()
}

/// The seconds a lane is expected to take: its trials' expectations (none
/// known counts 0) over the trials it runs at once, and no less than its
/// longest trial.
fn expected(trials: &[Trial], lane: &[usize], per_lane: usize) -> f64 {
    let (sum, longest) = lane
        .iter()
        .filter_map(|&index| trials[index].expected)
        .map(|d| d.as_secs_f64())
        .fold((0.0, 0.0_f64), |(sum, longest), s| (sum + s, longest.max(s)));
    longest.max(sum / per_lane.clamp(1, lane.len().max(1)) as f64)
}

/// Runs every lane's trials with `run_one`: lanes side by side up to
/// `lanes_at_once`, a lane's trials at once up to `per_lane`.
pub(super) fn run_lanes(lanes: Vec<Vec<usize>>, per_lane: usize, lanes_at_once: usize, run_one: impl Fn(usize) + Sync) {
    let queue = Mutex::new(lanes.into_iter().collect::<VecDeque<_>>());
    let next_lane = || queue.lock().unwrap_or_else(|p| p.into_inner()).pop_front();
    std::thread::scope(|scope| {
        for _ in 0..lanes_at_once.max(1) {
            scope.spawn(|| {
                while let Some(lane) = next_lane() {
                    let workers = per_lane.max(1).min(lane.len());
                    let trials = Mutex::new(lane.into_iter());
                    let next_trial = || trials.lock().unwrap_or_else(|p| p.into_inner()).next();
                    std::thread::scope(|inner| {
                        for _ in 0..workers {
                            inner.spawn(|| {
                                while let Some(index) = next_trial() {
                                    run_one(index);
                                }
                            });
                        }
                    });
                }
            });
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn trial(kind: TrialKind, group: &str, case: &str, waits_long: bool) -> Trial {
        Trial::new(kind, group, "s", case, Arc::new(|_| Ok(()))).waiting_long(waits_long)
    }

    #[test]
    fn a_groups_cases_share_a_lane_long_waits_first_and_faults_go_alone() {
        let trials = vec![
            trial(TrialKind::Case, "p0", "a", false),
            trial(TrialKind::Case, "p1", "b", false),
            trial(TrialKind::Case, "p0", "c", true),
            trial(TrialKind::Fault, "p0", "a", false),
            trial(TrialKind::Case, "p0", "d", false),
        ];
        let all: Vec<usize> = (0..trials.len()).collect();
        assert_eq!(lanes(&trials, &all, 4), vec![vec![2, 0, 4], vec![1], vec![3]]);
        assert_eq!(lanes(&trials, &[1, 3], 4), vec![vec![1], vec![3]]);
    }

    #[test]
    fn the_longest_expected_lane_starts_first() {
        let secs = |t: Trial, s: u64| t.expected_to_take(std::time::Duration::from_secs(s));
        let trials = vec![
            secs(trial(TrialKind::Case, "p0", "a", false), 40),
            secs(trial(TrialKind::Case, "p0", "b", false), 40),
            secs(trial(TrialKind::Fault, "p0", "a", false), 30),
            secs(trial(TrialKind::Fault, "p0", "b", false), 90),
            trial(TrialKind::Fault, "p0", "c", false),
            secs(trial(TrialKind::Fault, "p0", "d", false), 30),
        ];
        let all: Vec<usize> = (0..trials.len()).collect();
        // The cases' lane runs its two at once: 40 s. Equal lanes keep their
        // order; a lane with nothing known comes last.
        assert_eq!(
            lanes(&trials, &all, 4),
            vec![vec![3], vec![0, 1], vec![2], vec![5], vec![4]]
        );
        // One case at a time: 80 s.
        assert_eq!(lanes(&trials, &all, 1)[0], vec![3]);
        assert_eq!(lanes(&trials, &all, 1)[1], vec![0, 1]);
        // A lane takes no less than its longest trial: 100 s, however many at once.
        let mut long = trials.clone();
        long[1] = secs(trial(TrialKind::Case, "p0", "b", false), 100);
        assert_eq!(lanes(&long, &all, 4)[0], vec![0, 1]);
    }

    #[test]
    fn every_trial_runs_once_however_many_at_once() {
        let seen = Mutex::new(Vec::new());
        run_lanes(vec![vec![0, 1, 2], vec![3], vec![4, 5]], 2, 3, |i| {
            seen.lock().unwrap().push(i)
        });
        let mut seen = seen.into_inner().unwrap();
        seen.sort();
        assert_eq!(seen, [0, 1, 2, 3, 4, 5]);
    }
}
