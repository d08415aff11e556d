//! What the harness knows of systemd: waiting for units, reading their
//! properties, how long they have been up, their diagnostics. Every read goes
//! through one `systemctl show` parser ([`show_blocks`]); a read that failed
//! says nothing of the units, so a wait keeps looking.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{last_line, Machine, JOURNAL_LINES};
use crate::error::MachineError;
use crate::facts::UnitMemory;
use crate::quote;
use crate::retry::Poll;
use crate::ssh::CommandOutput;

/// Separates the parts of one probe's output.
const MARK: &str = "--rave-unit-states--";

/// One look at a unit (see [`Machine::unit_snapshots`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitSnapshot {
    /// The unit.
    pub unit: String,
    /// `ActiveState`, e.g. `active`.
    pub active_state: String,
    /// `SubState`, e.g. `running`.
    pub sub_state: String,
    /// `NRestarts`: automatic restarts since the unit was last started by hand.
    pub n_restarts: u32,
    /// `MainPID` (0: none).
    pub main_pid: u32,
    /// When the current activation began (`ActiveEnterTimestampMonotonic`),
    /// on the guest's monotonic clock.
    pub active_since: Duration,
    /// The guest's monotonic clock at the look (`/proc/uptime`; the guests
    /// never suspend, so it runs with the monotonic clock).
    pub seen_at: Duration,
}

impl UnitSnapshot {
    /// How long the current activation has lasted at the look.
    pub fn up_for(&self) -> Duration {
        self.seen_at.saturating_sub(self.active_since)
    }

    /// `nginx.service: ActiveState=active SubState=running NRestarts=0 MainPID=412, up 12.3 s`.
    pub fn describe(&self) -> String {
        format!(
            "{}: ActiveState={} SubState={} NRestarts={} MainPID={}, up {:.1} s",
            self.unit,
            self.active_state,
            self.sub_state,
            self.n_restarts,
            self.main_pid,
            self.up_for().as_secs_f64()
        )
    }
}

impl Machine {
    /// Waits until `unit` is active. Fails at once, with the unit's status and
    /// journal, when it is failed, stopped with no job queued, or not found;
    /// a probe that itself failed is no verdict, and the wait goes on.
    pub fn wait_for_unit(&self, unit: &str, timeout: Duration) -> Result<(), MachineError> {
        self.wait_for_units(&[unit], timeout)
    }

    /// Waits until every one of `units` is active, reading all of them with
    /// one command per poll. Fails at once, as [`Machine::wait_for_unit`] does,
    /// on the first unit that is failed, stopped with no job queued, or not found.
    pub fn wait_for_units(&self, units: &[&str], timeout: Duration) -> Result<(), MachineError> {
        self.wait_for_unit_states(units, false, timeout)
    }

    /// [`Machine::wait_for_units`], and with `until_idle` also until systemd
    /// has no job left: both read by the same command on each poll.
    fn wait_for_unit_states(&self, units: &[&str], until_idle: bool, timeout: Duration) -> Result<(), MachineError> {
        let quoted: Vec<String> = units.iter().map(|u| quote(u)).collect();
        // Jobs first, states second: a job that finishes between the two reads
        // leaves its unit active, so "no job, and inactive" cannot be a race.
        // A failed read of the jobs leaves the mark out: no verdict, not "no jobs".
        let probe = format!(
            "systemctl list-jobs --no-legend --plain && echo {MARK} && systemctl show -p LoadState -p ActiveState -p SubState {}",
            quoted.join(" ")
        );
        let what = match units {
            [unit] => format!("unit {unit} to be active"),
            _ => format!("units {} to be active", units.join(", ")),
        };
        let what = if until_idle {
            format!("{what} and systemd to have no job left")
        } else {
            what
        };
        self.wait_until(&what, timeout, Duration::from_millis(250), || {
            let out = match self.execute(&probe) {
                Ok(out) if out.status == 0 => out,
                Ok(out) => return Poll::Pending(probe_failed(&out)),
                Err(e @ MachineError::QemuExited { .. }) => return Poll::Abort(e),
                Err(e) => return Poll::Pending(e.to_string()),
            };
            let (states, jobs) = match unit_states(&out.stdout, units) {
                Ok(read) => read,
                Err(why) => return Poll::Pending(format!("the units probe was incomplete: {why}")),
            };
            let mut waiting = Vec::new();
            for state in &states {
                match state.verdict() {
                    UnitVerdict::Active => {}
                    UnitVerdict::Pending => waiting.push(format!("{}: {}", state.unit, state.describe())),
                    UnitVerdict::Stuck(why) => {
                        return Poll::Abort(MachineError::UnitNotActive {
                            name: self.name.clone(),
                            unit: state.unit.clone(),
                            state: why,
                            diagnostics: self.unit_diagnostics(&state.unit),
                        })
                    }
                }
            }
            if !waiting.is_empty() {
                Poll::Pending(waiting.join("; "))
            } else if until_idle && !jobs.is_empty() {
                Poll::Pending(format!("every unit active; jobs left: {}", jobs.join("; ")))
            } else {
                Poll::Ready(())
            }
        })
    }

    /// Waits until every unit of the image's components is active and
    /// systemd has no job left (the boot stage `contract`).
    pub fn wait_for_components(&self, timeout: Duration) -> Result<(), MachineError> {
        let units = self.image.manifest.units();
        self.wait_for_unit_states(&units, true, timeout)?;
        self.reach_stage("contract");
        Ok(())
    }

    /// `properties` of `unit`, as `systemctl show -p …` says them (all of
    /// them must be there).
    ///
    /// ```no_run
    /// # fn demo(machine: &rave_harness::Machine) -> Result<(), rave_harness::MachineError> {
    /// let props = machine.unit_properties("nginx.service", &["MemoryMax", "User"])?;
    /// println!("nginx may use {} bytes", props["MemoryMax"]);
    /// # Ok(())
    /// # }
    /// ```
    pub fn unit_properties(&self, unit: &str, properties: &[&str]) -> Result<BTreeMap<String, String>, MachineError> {
        let flags: Vec<String> = properties.iter().map(|p| format!("-p {}", quote(p))).collect();
        let out = self.succeed(&format!("systemctl show {} {}", flags.join(" "), quote(unit)))?;
        show_blocks(&out, &[unit], properties)
            .map(|mut blocks| blocks.remove(0))
            .map_err(|why| self.unreadable(&[unit], why))
    }

    /// One look at each of `units` with one command: its state, restarts,
    /// main process, and when its current activation began, on the guest's
    /// monotonic clock together with that clock's time of the look.
    pub fn unit_snapshots(&self, units: &[&str]) -> Result<Vec<UnitSnapshot>, MachineError> {
        let quoted: Vec<String> = units.iter().map(|u| quote(u)).collect();
        let command = format!(
            "systemctl show -p ActiveState -p SubState -p NRestarts -p MainPID -p ActiveEnterTimestampMonotonic {}; echo {MARK}; cut -d' ' -f1 /proc/uptime",
            quoted.join(" ")
        );
        let out = self.succeed(&command)?;
        unit_snapshots(&out, units).map_err(|why| self.unreadable(units, why))
    }

    /// Waits until each of `units` has been active for at least `window` in
    /// one activation (by `ActiveEnterTimestampMonotonic`), or one of them
    /// has restarted (`NRestarts` > 0: the caller judges that).
    pub fn wait_for_units_up_for(
        &self,
        units: &[&str],
        window: Duration,
        timeout: Duration,
    ) -> Result<(), MachineError> {
        let what = format!("units {} to be up for {window:?}", units.join(", "));
        self.wait_until(&what, timeout, Duration::from_millis(500), || {
            let snapshots = match self.unit_snapshots(units) {
                Ok(snapshots) => snapshots,
                Err(e @ MachineError::QemuExited { .. }) => return Poll::Abort(e),
                Err(e) => return Poll::Pending(e.to_string()),
            };
            if snapshots.iter().any(|s| s.n_restarts > 0) {
                return Poll::Ready(());
            }
            let young: Vec<String> = snapshots
                .iter()
                .filter(|s| s.active_state != "active" || s.up_for() < window)
                .map(UnitSnapshot::describe)
                .collect();
            if young.is_empty() {
                Poll::Ready(())
            } else {
                Poll::Pending(young.join("; "))
            }
        })
    }

    /// The units among `units` that systemd has restarted since they were
    /// last started by hand, with their restart counts (`NRestarts`), read
    /// with one command.
    pub fn restarted_units(&self, units: &[&str]) -> Result<Vec<(String, u32)>, MachineError> {
        let quoted: Vec<String> = units.iter().map(|u| quote(u)).collect();
        let out = self.succeed(&format!("systemctl show -p NRestarts {}", quoted.join(" ")))?;
        let blocks = show_blocks(&out, units, &["NRestarts"]).map_err(|why| self.unreadable(units, why))?;
        let mut restarted = Vec::new();
        for (unit, props) in units.iter().zip(blocks) {
            let n: u32 = props["NRestarts"]
                .parse()
                .map_err(|_| self.unreadable(&[unit], format!("NRestarts={} is not a number", props["NRestarts"])))?;
            if n > 0 {
                restarted.push((unit.to_string(), n));
            }
        }
        Ok(restarted)
    }

    /// Each of `units`' MemoryCurrent and MemoryMax, as systemd reports them.
    pub fn units_memory(&self, units: &[&str]) -> Result<Vec<UnitMemory>, MachineError> {
        if units.is_empty() {
            return Ok(Vec::new());
        }
        let quoted: Vec<String> = units.iter().map(|u| quote(u)).collect();
        let keys = ["MemoryCurrent", "MemoryMax"];
        let out = self.succeed(&format!(
            "systemctl show -p MemoryCurrent -p MemoryMax {}",
            quoted.join(" ")
        ))?;
        let blocks = show_blocks(&out, units, &keys).map_err(|why| self.unreadable(units, why))?;
        Ok(units
            .iter()
            .zip(blocks)
            .map(|(unit, props)| unit_memory(unit, &props))
            .collect())
    }

    /// `systemctl status` of `unit` and the last lines of its journal, for a failure message.
    pub fn unit_diagnostics(&self, unit: &str) -> String {
        let quoted = quote(unit);
        let command = format!(
            "sudo systemctl status --no-pager --full --lines=0 {quoted} 2>&1 || printf '(systemctl status exited %d)\\n' \"$?\"; echo '--- journal of {unit} (last {JOURNAL_LINES} lines) ---'; sudo journalctl --no-pager -o short-precise -n {JOURNAL_LINES} -u {quoted} 2>&1"
        );
        match self.execute(&command) {
            Ok(out) if out.status == 0 => format!("--- systemctl status {unit} ---\n{}", out.stdout.trim_end()),
            Ok(out) => format!(
                "--- systemctl status {unit} ---\n{}\n(collecting the diagnostics of {unit} failed: {})",
                out.stdout.trim_end(),
                probe_failed(&out)
            ),
            Err(e) => format!("(could not collect the diagnostics of {unit}: {e})"),
        }
    }

    fn unreadable(&self, units: &[&str], why: String) -> MachineError {
        MachineError::Setup {
            what: format!("guest {}: reading the state of {}", self.name, units.join(", ")),
            message: why,
        }
    }
}

/// `KEY=value` lines into a map (values trimmed).
pub fn parse_properties(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// `systemctl show` of `units`: one block of properties per unit, separated
/// by a blank line, in the asked order (whatever name a unit calls itself),
/// each holding every one of `keys`. Anything else is an error: the read was
/// cut or failed, and says nothing of the units.
fn show_blocks(text: &str, units: &[&str], keys: &[&str]) -> Result<Vec<BTreeMap<String, String>>, String> {
    let blocks: Vec<BTreeMap<String, String>> = text
        .trim_matches('\n')
        .split("\n\n")
        .map(parse_properties)
        .filter(|b| !b.is_empty())
        .collect();
    if blocks.len() != units.len() {
        return Err(format!(
            "{} property blocks for {} units: {text:?}",
            blocks.len(),
            units.len()
        ));
    }
    for (unit, block) in units.iter().zip(&blocks) {
        if let Some(key) = keys.iter().find(|k| !block.contains_key(**k)) {
            return Err(format!("no {key} for {unit} in {block:?}"));
        }
    }
    Ok(blocks)
}

/// What a probe that exited non-zero said, for a wait's "last seen".
pub(super) fn probe_failed(out: &CommandOutput) -> String {
    format!(
        "the probe failed (exit {}): {}",
        out.status,
        last_line(&out.stderr, last_line(&out.stdout, "no output").as_str())
    )
}

/// A unit's MemoryCurrent and MemoryMax: `[not set]` and `infinity` are `None`.
fn unit_memory(unit: &str, props: &BTreeMap<String, String>) -> UnitMemory {
    let bytes = |key: &str| {
        props
            .get(key)
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|v| *v != u64::MAX)
    };
    UnitMemory {
        unit: unit.into(),
        current_bytes: bytes("MemoryCurrent"),
        max_bytes: bytes("MemoryMax"),
    }
}

/// Reads [`Machine::unit_snapshots`]' output: `systemctl show` blocks, one per
/// asked unit in the asked order, the mark, then the guest's uptime.
fn unit_snapshots(output: &str, units: &[&str]) -> Result<Vec<UnitSnapshot>, String> {
    let (shown, uptime) = output
        .split_once(MARK)
        .ok_or_else(|| format!("no {MARK} mark in {output:?}"))?;
    let seen_at: f64 = uptime
        .trim()
        .parse()
        .map_err(|_| format!("the guest's uptime {:?} is not a number", uptime.trim()))?;
    let seen_at = Duration::try_from_secs_f64(seen_at).map_err(|e| e.to_string())?;
    let keys = [
        "ActiveState",
        "SubState",
        "NRestarts",
        "MainPID",
        "ActiveEnterTimestampMonotonic",
    ];
    let blocks = show_blocks(shown, units, &keys)?;
    units
        .iter()
        .zip(&blocks)
        .map(|(unit, props)| {
            let number = |k: &str| -> Result<u64, String> {
                props[k]
                    .parse()
                    .map_err(|_| format!("{k}={} of {unit} is not a number", props[k]))
            };
            Ok(UnitSnapshot {
                unit: unit.to_string(),
                active_state: props["ActiveState"].clone(),
                sub_state: props["SubState"].clone(),
                n_restarts: number("NRestarts")? as u32,
                main_pid: number("MainPID")? as u32,
                active_since: Duration::from_micros(number("ActiveEnterTimestampMonotonic")?),
                seen_at,
            })
        })
        .collect()
}

/// One unit as the units probe saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct UnitState {
    unit: String,
    load: String,
    active: String,
    sub: String,
    job_queued: bool,
}

/// What a wait makes of a [`UnitState`].
#[derive(Debug, PartialEq, Eq)]
enum UnitVerdict {
    Active,
    Pending,
    Stuck(String),
}

impl UnitState {
    fn describe(&self) -> String {
        format!("ActiveState={} SubState={}", self.active, self.sub)
    }

    fn verdict(&self) -> UnitVerdict {
        match (self.load.as_str(), self.active.as_str(), self.job_queued) {
            (_, "active", _) => UnitVerdict::Active,
            (load, _, _) if load != "loaded" => UnitVerdict::Stuck(format!("LoadState={load}")),
            (_, "failed", _) => UnitVerdict::Stuck(self.describe()),
            (_, "inactive", false) => {
                UnitVerdict::Stuck(format!("{}, and no job is queued to start it", self.describe()))
            }
            _ => UnitVerdict::Pending,
        }
    }
}

/// Reads the units probe's output (`systemctl list-jobs`, the mark, then
/// `systemctl show` blocks): one state per asked unit. An output that is not
/// a whole probe (no mark, a block missing or cut) is an error: it says
/// nothing of the units, so the wait keeps looking.
fn unit_states(output: &str, units: &[&str]) -> Result<(Vec<UnitState>, Vec<String>), String> {
    let (jobs, shown) = output
        .split_once(MARK)
        .ok_or_else(|| format!("no {MARK} mark in {output:?}"))?;
    let jobs: Vec<String> = jobs
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    let queued: Vec<&str> = jobs.iter().filter_map(|l| l.split_whitespace().nth(1)).collect();
    let blocks = show_blocks(shown, units, &["LoadState", "ActiveState", "SubState"])?;
    let states = units
        .iter()
        .zip(blocks)
        .map(|(unit, props)| UnitState {
            unit: unit.to_string(),
            load: props["LoadState"].clone(),
            active: props["ActiveState"].clone(),
            sub: props["SubState"].clone(),
            job_queued: queued.contains(unit),
        })
        .collect();
    Ok((states, jobs))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROBE: &str = "\
12 postgresql@15-main.service start running
--rave-unit-states--
LoadState=loaded
ActiveState=active
SubState=running

LoadState=loaded
ActiveState=activating
SubState=start

LoadState=loaded
ActiveState=failed
SubState=failed

LoadState=not-found
ActiveState=inactive
SubState=dead

LoadState=loaded
ActiveState=inactive
SubState=dead
";

    /// The units the probe above was asked for, in its order.
    const ASKED: [&str; 5] = [
        "sshd.service",
        "postgresql@15-main.service",
        "nginx.service",
        "gone.service",
        "idle.service",
    ];

    #[test]
    fn the_units_probe_reads_the_blocks_in_the_asked_order() {
        let (states, jobs) = unit_states(PROBE, &ASKED).unwrap();
        assert_eq!(states.iter().map(|s| s.unit.as_str()).collect::<Vec<_>>(), ASKED);
        let queued: Vec<bool> = states.iter().map(|s| s.job_queued).collect();
        assert_eq!(queued, [false, true, false, false, false]);
        // The jobs as listed, for a wait until none is left.
        assert_eq!(jobs, ["12 postgresql@15-main.service start running"]);
        let idle = PROBE.replace("12 postgresql@15-main.service start running\n", "");
        assert!(unit_states(&idle, &ASKED).unwrap().1.is_empty());
    }

    #[test]
    fn active_waits_on_a_job_and_stuck_is_failed_missing_or_idle() {
        let verdicts: Vec<UnitVerdict> = unit_states(PROBE, &ASKED)
            .unwrap()
            .0
            .iter()
            .map(UnitState::verdict)
            .collect();
        assert_eq!(
            verdicts,
            [
                UnitVerdict::Active,
                UnitVerdict::Pending,
                UnitVerdict::Stuck("ActiveState=failed SubState=failed".into()),
                UnitVerdict::Stuck("LoadState=not-found".into()),
                UnitVerdict::Stuck("ActiveState=inactive SubState=dead, and no job is queued to start it".into()),
            ]
        );
    }

    #[test]
    fn a_failed_or_cut_probe_is_no_verdict() {
        // systemctl failing (D-Bus restarting) prints nothing useful: no verdict.
        assert!(unit_states("", &["x.service"]).is_err());
        assert!(unit_states("Failed to connect to bus: No such file or directory\n", &["x.service"]).is_err());
        // A block short: the probe was cut, not the unit gone.
        let mut asked = ASKED.to_vec();
        asked.push("absent.service");
        let err = unit_states(PROBE, &asked).unwrap_err();
        assert!(err.contains("5 property blocks for 6 units"), "{err}");
        // A block without its LoadState.
        let cut = PROBE.replace("LoadState=not-found\n", "");
        assert!(unit_states(&cut, &ASKED)
            .unwrap_err()
            .contains("no LoadState for gone.service"));
    }

    #[test]
    fn snapshots_say_how_long_each_unit_is_up() {
        let out = "NRestarts=0\nMainPID=412\nActiveState=active\nSubState=running\nActiveEnterTimestampMonotonic=3500000\n\n\
                   NRestarts=2\nMainPID=0\nActiveState=activating\nSubState=auto-restart\nActiveEnterTimestampMonotonic=0\n\
                   --rave-unit-states--\n15.25\n";
        let snaps = unit_snapshots(out, &["a.service", "b.service"]).unwrap();
        assert_eq!(snaps[0].up_for(), Duration::from_millis(11_750));
        assert_eq!(snaps[0].main_pid, 412);
        assert_eq!(snaps[1].n_restarts, 2);
        assert_eq!(
            snaps[0].describe(),
            "a.service: ActiveState=active SubState=running NRestarts=0 MainPID=412, up 11.8 s"
        );
        assert!(unit_snapshots(out, &["a.service"]).is_err(), "a block too many");
        assert!(unit_snapshots("NRestarts=0\n", &["a.service"]).is_err(), "no mark");
        assert!(unit_snapshots(&out.replace("15.25", "x"), &["a.service", "b.service"]).is_err());
    }

    #[test]
    fn memory_reads_not_set_and_infinity_as_none() {
        let out = "MemoryCurrent=5242880\nMemoryMax=134217728\n\nMemoryCurrent=[not set]\nMemoryMax=infinity\n";
        let blocks = show_blocks(out, &["w.service", "x.service"], &["MemoryCurrent", "MemoryMax"]).unwrap();
        let m = unit_memory("w.service", &blocks[0]);
        assert_eq!((m.current_bytes, m.max_bytes), (Some(5_242_880), Some(134_217_728)));
        let m = unit_memory("x.service", &blocks[1]);
        assert_eq!((m.current_bytes, m.max_bytes), (None, None));
    }
}
