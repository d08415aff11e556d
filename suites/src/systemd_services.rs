//! systemd-services: each unit of the contract is active, running, never
//! restarted, its main process alive, as the user the contract names.

use std::time::Duration;

use rave_harness::machine::{parse_properties, quote};
use rave_harness::Machine;

use crate::failure::{expect, CaseFailure, CaseResult};

/// How long a unit may take to become active after SSH answers.
pub const UNIT_TIMEOUT: Duration = Duration::from_secs(120);

/// `systemd_services::nginx`: nginx.service healthy.
pub fn nginx(machine: &Machine) -> CaseResult {
    service_is_healthy(machine, "nginx")
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

/// The unit of `component` is active and running, has never restarted, and
/// its main process is alive. Fails at once, with the unit's status and
/// journal, when the unit is failed or stopped.
pub fn service_is_healthy(machine: &Machine, component: &str) -> CaseResult {
    let unit = machine.image().manifest.unit(component).map_err(CaseFailure::new)?;
    machine.wait_for_unit(unit, UNIT_TIMEOUT)?;
    let out = machine.succeed(&format!(
        "systemctl show {} -p ActiveState -p SubState -p NRestarts -p MainPID",
        quote(unit)
    ))?;
    let props = parse_properties(&out);
    let get = |k: &str| props.get(k).cloned().unwrap_or_else(|| "?".into());
    let seen = format!(
        "ActiveState={} SubState={} NRestarts={} MainPID={}",
        get("ActiveState"),
        get("SubState"),
        get("NRestarts"),
        get("MainPID")
    );
    let pid: u32 = get("MainPID").parse().unwrap_or(0);
    let alive = pid > 0 && machine.execute(&format!("test -d /proc/{pid}"))?.status == 0;
    expect(
        get("ActiveState") == "active" && get("SubState") == "running" && get("NRestarts") == "0" && alive,
        &format!("{unit} active, running, NRestarts=0, main process alive"),
        format!("{seen}{}", if alive { "" } else { " (main process not alive)" }),
        || machine.unit_diagnostics(unit),
    )
}
