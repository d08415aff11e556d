//! systemd-services: each unit of the contract is active, running, never
//! restarted, its main process alive, stable over the window, as the user
//! the contract names.

use std::time::Duration;

use rave::{Profile, STABLE_FOR};
use rave_harness::machine::UnitSnapshot;
use rave_harness::outcome::{expect, CheckError, CheckResult};
use rave_harness::retry::Poll;
use rave_harness::{quote, Machine, MachineError};

use crate::case::{Case, Fault, ALL_PROFILES};
use crate::checks::{bytes, override_unit, rave_image, stop_unit, unit_of, UNIT_TIMEOUT};

/// How long a read of a unit's state is tried again when the read itself
/// fails (systemctl failing while D-Bus restarts): a failed probe is no verdict.
pub const PROBE_RETRY: Duration = Duration::from_secs(30);

/// How much longer than the window the second look may take (the guest busy).
const WINDOW_SLACK: Duration = Duration::from_secs(30);

/// The suite's cases, each with its fault.
pub fn cases() -> Vec<Case> {
    vec![
        Case {
            suite: "systemd_services",
            name: "nginx",
            profiles: ALL_PROFILES,
            components: &["nginx"],
            check: nginx,
            fault: Fault {
                description: "nginx.service stopped",
                inject: |m| stop_unit(m, "nginx"),
                must_say: &["nginx.service", "systemctl status", "journal of nginx.service"],
            },
            waits_long: false,
            extra_faults: &[],
        },
        Case {
            suite: "systemd_services",
            name: "grafana",
            profiles: ALL_PROFILES,
            components: &["grafana"],
            check: grafana,
            fault: Fault {
                description: "the grafana unit stopped",
                inject: |m| stop_unit(m, "grafana"),
                must_say: &["grafana", "systemctl status"],
            },
            waits_long: false,
            extra_faults: &[],
        },
        Case {
            suite: "systemd_services",
            name: "postgresql",
            profiles: ALL_PROFILES,
            components: &["postgresql"],
            check: postgresql,
            fault: Fault {
                description: "the PostgreSQL cluster unit stopped",
                inject: |m| stop_unit(m, "postgresql"),
                must_say: &["postgresql", "systemctl status", "journal of postgresql"],
            },
            waits_long: false,
            extra_faults: &[],
        },
        Case {
            suite: "systemd_services",
            name: "vibe_kanban",
            profiles: ALL_PROFILES,
            components: &["vibe-kanban"],
            check: vibe_kanban,
            fault: Fault {
                description: "vibe-kanban.service made to run as root",
                inject: |m| override_unit(m, "vibe-kanban", "[Service]\nUser=root\n"),
                must_say: &["to run as agent", "\"root\"", "systemctl status vibe-kanban.service"],
            },
            waits_long: false,
            extra_faults: &[],
        },
        Case {
            suite: "systemd_services",
            name: "claude_code_router",
            profiles: ALL_PROFILES,
            components: &["claude-code-router"],
            check: claude_code_router,
            fault: Fault {
                description: "claude-code-router.service in a crash loop (its process exits 5 s after every start, Restart=always)",
                inject: |m| {
                    override_unit(
                        m,
                        "claude-code-router",
                        "[Service]\nExecStart=\nExecStart=/bin/sh -c 'sleep 5; exit 1'\nRestart=always\nRestartSec=1\n",
                    )
                },
                must_say: &[
                    "claude-code-router.service",
                    "stability window",
                    "journal of claude-code-router.service",
                ],
            },
            waits_long: false,
            extra_faults: &[],
        },
        Case {
            suite: "systemd_services",
            name: "webhook_dispatcher",
            profiles: ALL_PROFILES,
            components: &["webhook-dispatcher"],
            check: webhook_dispatcher,
            fault: Fault {
                description: "webhook-dispatcher.service with its MemoryMax removed",
                inject: |m| override_unit(m, "webhook-dispatcher", "[Service]\nMemoryMax=infinity\n"),
                must_say: &["MemoryMax=128M", "MemoryMax=infinity"],
            },
            waits_long: false,
            extra_faults: &[],
        },
        Case {
            suite: "systemd_services",
            name: "prometheus",
            profiles: &[Profile::P2],
            components: &["prometheus"],
            check: prometheus,
            fault: Fault {
                description: "prometheus.service stopped",
                inject: |m| stop_unit(m, "prometheus"),
                must_say: &["prometheus.service", "journal of prometheus.service"],
            },
            waits_long: false,
            extra_faults: &[],
        },
    ]
}

/// Who a service's main process must run as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunsAs {
    /// This user.
    User(&'static str),
    /// Any user but root.
    NonRoot,
}

/// `systemd_services::nginx`: nginx.service healthy.
pub fn nginx(machine: &Machine) -> CheckResult {
    service_is_healthy(machine, "nginx")
}

/// `systemd_services::grafana`: healthy, as its own non-root user.
pub fn grafana(machine: &Machine) -> CheckResult {
    service_is_healthy(machine, "grafana")?;
    service_runs_as(machine, "grafana", RunsAs::NonRoot)
}

/// `systemd_services::vibe_kanban`: healthy, as `agent`.
pub fn vibe_kanban(machine: &Machine) -> CheckResult {
    service_is_healthy(machine, "vibe-kanban")?;
    service_runs_as(machine, "vibe-kanban", RunsAs::User("agent"))
}

/// `systemd_services::claude_code_router`: healthy, as `agent`.
pub fn claude_code_router(machine: &Machine) -> CheckResult {
    service_is_healthy(machine, "claude-code-router")?;
    service_runs_as(machine, "claude-code-router", RunsAs::User("agent"))
}

/// `systemd_services::webhook_dispatcher`: healthy, as a non-root user, with
/// the MemoryMax the image promises.
pub fn webhook_dispatcher(machine: &Machine) -> CheckResult {
    service_is_healthy(machine, "webhook-dispatcher")?;
    service_runs_as(machine, "webhook-dispatcher", RunsAs::NonRoot)?;
    memory_max_is(machine, "webhook-dispatcher")
}

/// `systemd_services::prometheus`: healthy (P2).
pub fn prometheus(machine: &Machine) -> CheckResult {
    service_is_healthy(machine, "prometheus")
}

/// `systemd_services::postgresql`: the cluster unit healthy, and the server
/// accepts a connection on its local socket.
pub fn postgresql(machine: &Machine) -> CheckResult {
    service_is_healthy(machine, "postgresql")?;
    let unit = unit_of(machine, "postgresql")?;
    let out = machine.execute("sudo -u postgres psql -XAtc 'select 1'")?;
    expect(
        out.status == 0 && out.stdout.trim() == "1",
        "`select 1` over the local socket to return 1",
        format!(
            "exit {} stdout {:?} stderr {:?}",
            out.status,
            out.stdout.trim(),
            out.stderr.trim()
        ),
        || machine.unit_diagnostics(unit),
    )
}

/// The main process of `component`'s unit runs as the user `rule` asks for
/// (read from the process itself, not from the unit file).
pub fn service_runs_as(machine: &Machine, component: &str, rule: RunsAs) -> CheckResult {
    let unit = unit_of(machine, component)?;
    // Every one of its UIDs (real, effective, saved, file system), by name:
    // a process whose real or saved UID is root can become root again. One
    // getent for the four, in order, repeats included (a UID it cannot name
    // fails the command); each program started costs the guest under TCG.
    let users = machine.wait_until_succeeds(
        &format!(
            "pid=$(systemctl show -p MainPID --value {}); test \"$pid\" -gt 0; uids=$(awk '/^Uid:/ {{ print $2, $3, $4, $5 }}' \"/proc/$pid/status\"); test -n \"$uids\"; getent passwd $uids | cut -d: -f1",
            quote(unit)
        ),
        PROBE_RETRY,
    )?;
    let users: Vec<&str> = users.split_whitespace().collect();
    let (ok, expected) = match rule {
        RunsAs::User(name) => (
            users.len() == 4 && users.iter().all(|u| *u == name),
            format!("{unit}'s main process to run as {name} (real, effective, saved and file system UIDs)"),
        ),
        RunsAs::NonRoot => (
            users.len() == 4 && !users.contains(&"root"),
            format!("{unit}'s main process to run as a non-root user (real, effective, saved and file system UIDs)"),
        ),
    };
    expect(ok, &expected, format!("its UIDs are {users:?}"), || {
        machine.unit_diagnostics(unit)
    })
}

/// The unit of `component` has the MemoryMax the manifest's `limits` names.
pub fn memory_max_is(machine: &Machine, component: &str) -> CheckResult {
    let unit = unit_of(machine, component)?;
    let image = rave_image(machine)?;
    let limit = image.properties.limits.get(component).ok_or_else(|| {
        CheckError::harness(format!(
            "the image manifest names no MemoryMax for {component} (properties.limits)"
        ))
    })?;
    let expected = bytes(limit)
        .ok_or_else(|| CheckError::harness(format!("manifest limit {limit:?} of {component} is not a size")))?;
    let seen = machine.wait_until_succeeds(
        &format!("systemctl show -p MemoryMax --value {}", quote(unit)),
        PROBE_RETRY,
    )?;
    expect(
        seen.trim() == expected.to_string(),
        &format!("{unit} MemoryMax={limit} ({expected} bytes)"),
        format!("MemoryMax={}", seen.trim()),
        || machine.unit_diagnostics(unit),
    )
}

/// The unit of `component` is active and running, has not restarted, and
/// its main process is alive, over the stability window ([`STABLE_FOR`]): a
/// unit whose current activation is younger than the window is looked at
/// again once it would be that old, and must still be the same activation (a
/// unit in a crash loop, even one sampled during a short life, is red). Fails
/// at once, with the unit's status and journal, when the unit is failed or stopped.
pub fn service_is_healthy(machine: &Machine, component: &str) -> CheckResult {
    let unit = unit_of(machine, component)?;
    machine.wait_for_unit(unit, UNIT_TIMEOUT)?;
    let first = snapshot(machine, unit)?;
    running_now(machine, &first, "")?;
    if first.up_for() >= STABLE_FOR {
        return Ok(());
    }
    // Younger than the window: look until it would be STABLE_FOR old, or it
    // changes. One activation: the same ActiveEnterTimestampMonotonic and
    // NRestarts (a reload keeps both, and may change the main process).
    let same_activation = |s: &UnitSnapshot| {
        matches!(s.active_state.as_str(), "active" | "reloading")
            && s.active_since == first.active_since
            && s.n_restarts == first.n_restarts
    };
    let last = machine.wait_until(
        &format!("{unit} to stay up for the stability window of {STABLE_FOR:?}"),
        STABLE_FOR + WINDOW_SLACK,
        Duration::from_secs(1),
        || match machine.unit_snapshots(&[unit]) {
            Ok(mut snapshots) => {
                let now = snapshots.remove(0);
                let reloading = now.active_state == "reloading";
                if !same_activation(&now) || (!reloading && now.up_for() >= STABLE_FOR) {
                    Poll::Ready(now)
                } else {
                    Poll::Pending(now.describe())
                }
            }
            Err(e @ MachineError::QemuExited { .. }) => Poll::Abort(e),
            Err(e) => Poll::Pending(e.to_string()),
        },
    )?;
    expect(
        same_activation(&last),
        &format!(
            "{unit} to stay active and running in one activation for the stability window of {} s",
            STABLE_FOR.as_secs()
        ),
        format!(
            "it restarted or stopped within the window: first {}; then {}",
            first.describe(),
            last.describe()
        ),
        || machine.unit_diagnostics(unit),
    )?;
    running_now(machine, &last, " at the end of the stability window")
}

/// One look at `unit`, tried again while the look itself fails.
fn snapshot(machine: &Machine, unit: &str) -> Result<UnitSnapshot, CheckError> {
    Ok(machine.wait_until(
        &format!("a look at {unit}'s state"),
        PROBE_RETRY,
        Duration::from_millis(500),
        || match machine.unit_snapshots(&[unit]) {
            Ok(mut snapshots) => Poll::Ready(snapshots.remove(0)),
            Err(e @ MachineError::QemuExited { .. }) => Poll::Abort(e),
            Err(e) => Poll::Pending(e.to_string()),
        },
    )?)
}

/// Active, running, never restarted, and its main process alive, at `seen`.
fn running_now(machine: &Machine, seen: &UnitSnapshot, when: &str) -> CheckResult {
    let pid = seen.main_pid;
    let alive = pid > 0 && machine.execute(&format!("test -d /proc/{pid}"))?.status == 0;
    expect(
        seen.active_state == "active" && seen.sub_state == "running" && seen.n_restarts == 0 && alive,
        &format!("{} active, running, NRestarts=0, main process alive{when}", seen.unit),
        format!(
            "{}{}",
            seen.describe(),
            if alive { "" } else { " (main process not alive)" }
        ),
        || machine.unit_diagnostics(&seen.unit),
    )
}
