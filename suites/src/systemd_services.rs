//! systemd-services: each unit of the contract is active, running, never
//! restarted, its main process alive, as the user the contract names.

use std::time::Duration;

use rave_harness::launcher::STABLE_FOR;
use rave_harness::machine::{quote, UnitSnapshot};
use rave_harness::retry::Poll;
use rave_harness::{Machine, MachineError};

use crate::failure::{expect, CaseFailure, CaseResult};

/// How long a unit may take to become active after SSH answers.
pub const UNIT_TIMEOUT: Duration = Duration::from_secs(120);

/// How long a read of a unit's state is tried again when the read itself
/// fails (systemctl failing while D-Bus restarts): a failed probe is no verdict.
pub const PROBE_RETRY: Duration = Duration::from_secs(30);

/// Who a service's main process must run as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunsAs {
    /// This user.
    User(&'static str),
    /// Any user but root.
    NonRoot,
}

/// `systemd_services::nginx`: nginx.service healthy.
pub fn nginx(machine: &Machine) -> CaseResult {
    service_is_healthy(machine, "nginx")
}

/// `systemd_services::grafana`: healthy, as its own non-root user.
pub fn grafana(machine: &Machine) -> CaseResult {
    service_is_healthy(machine, "grafana")?;
    service_runs_as(machine, "grafana", RunsAs::NonRoot)
}

/// `systemd_services::vibe_kanban`: healthy, as `agent`.
pub fn vibe_kanban(machine: &Machine) -> CaseResult {
    service_is_healthy(machine, "vibe-kanban")?;
    service_runs_as(machine, "vibe-kanban", RunsAs::User("agent"))
}

/// `systemd_services::claude_code_router`: healthy, as `agent`.
pub fn claude_code_router(machine: &Machine) -> CaseResult {
    service_is_healthy(machine, "claude-code-router")?;
    service_runs_as(machine, "claude-code-router", RunsAs::User("agent"))
}

/// `systemd_services::webhook_dispatcher`: healthy, as a non-root user, with
/// the MemoryMax the image promises.
pub fn webhook_dispatcher(machine: &Machine) -> CaseResult {
    service_is_healthy(machine, "webhook-dispatcher")?;
    service_runs_as(machine, "webhook-dispatcher", RunsAs::NonRoot)?;
    memory_max_is(machine, "webhook-dispatcher")
}

/// `systemd_services::prometheus`: healthy (P2).
pub fn prometheus(machine: &Machine) -> CaseResult {
    service_is_healthy(machine, "prometheus")
}

/// `systemd_services::postgresql`: the cluster unit healthy, and the server
/// accepts a connection on its local socket.
pub fn postgresql(machine: &Machine) -> CaseResult {
    service_is_healthy(machine, "postgresql")?;
    let query = "sudo -u postgres psql -XAtc 'select 1'";
    let out = machine.execute(query)?;
    expect(
        out.status == 0 && out.stdout.trim() == "1",
        "`select 1` over the local socket to return 1",
        format!(
            "exit {} stdout {:?} stderr {:?}",
            out.status,
            out.stdout.trim(),
            out.stderr.trim()
        ),
        || {
            machine.unit_diagnostics(
                machine
                    .image()
                    .manifest
                    .unit("postgresql")
                    .unwrap_or("postgresql.service"),
            )
        },
    )
}

/// The main process of `component`'s unit runs as the user `rule` asks for
/// (read from the process itself, not from the unit file).
pub fn service_runs_as(machine: &Machine, component: &str, rule: RunsAs) -> CaseResult {
    let unit = machine.image().manifest.unit(component).map_err(CaseFailure::new)?;
    let user = machine
        .wait_until_succeeds(
            &format!(
                "pid=$(systemctl show -p MainPID --value {}); test \"$pid\" -gt 0; stat -c %U \"/proc/$pid\"",
                quote(unit)
            ),
            PROBE_RETRY,
        )?
        .trim()
        .to_string();
    let (ok, expected) = match rule {
        RunsAs::User(name) => (user == name, format!("{unit}'s main process to run as {name}")),
        RunsAs::NonRoot => (
            user != "root" && !user.is_empty(),
            format!("{unit}'s main process to run as a non-root user"),
        ),
    };
    expect(ok, &expected, format!("it runs as {user:?}"), || {
        machine.unit_diagnostics(unit)
    })
}

/// The unit of `component` has the MemoryMax the manifest's `limits` names.
pub fn memory_max_is(machine: &Machine, component: &str) -> CaseResult {
    let unit = machine.image().manifest.unit(component).map_err(CaseFailure::new)?;
    let limit = machine.image().manifest.limits.get(component).ok_or_else(|| {
        CaseFailure::new(format!(
            "the image manifest names no MemoryMax for {component} (limits)"
        ))
    })?;
    let expected = bytes(limit)
        .ok_or_else(|| CaseFailure::new(format!("manifest limit {limit:?} of {component} is not a size")))?;
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

/// `128M` → 134217728 (systemd's K, M, G are powers of 1024).
pub fn bytes(size: &str) -> Option<u64> {
    let (digits, unit) = size.split_at(size.find(|c: char| !c.is_ascii_digit()).unwrap_or(size.len()));
    let n: u64 = digits.parse().ok()?;
    let factor = match unit {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(factor)
}

/// The unit of `component` is active and running, has not restarted, and
/// its main process is alive, over the stability window
/// ([`STABLE_FOR`]): a unit whose current activation is younger than the
/// window is looked at again once it would be that old, and must still be
/// the same activation (a unit in a crash loop, even one sampled during a
/// short life, is red). Fails at once, with the unit's status and journal,
/// when the unit is failed or stopped.
pub fn service_is_healthy(machine: &Machine, component: &str) -> CaseResult {
    let unit = machine.image().manifest.unit(component).map_err(CaseFailure::new)?;
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

/// How much longer than the window the second look may take (the guest busy).
const WINDOW_SLACK: Duration = Duration::from_secs(30);

/// One look at `unit`, tried again while the look itself fails.
fn snapshot(machine: &Machine, unit: &str) -> Result<UnitSnapshot, CaseFailure> {
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
fn running_now(machine: &Machine, seen: &UnitSnapshot, when: &str) -> CaseResult {
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
