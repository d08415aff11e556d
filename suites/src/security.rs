//! security: checked from outside the guest where the spec says so, as an
//! attacker would: SSH logins, TLS handshakes by version, forwarded probes.

use std::process::Command;
use std::time::Duration;

use rave_harness::machine::parse_properties;
use rave_harness::ports::{probe, ProbeResult};
use rave_harness::Machine;

use crate::failure::{expect, CaseFailure, CaseResult};
use crate::http_health::{backends_ready, fresh_delivery_key, post_push, status_is, webhook_secret};

/// nginx's HTTPS port in the guest.
pub const GUEST_HTTPS_PORT: u16 = rave_harness::machine::GUEST_HTTPS_PORT;

/// Guest ports that must not answer from outside (services bound to loopback, or none).
pub const CLOSED_PORTS: &[u16] = &[3000, 3001, 3030, 3456, 5432, 9090, 9091, 9100];
/// The port of the canary listener the firewall case starts in the guest.
pub const CANARY_PORT: u16 = 8765;
/// How long a probe waits for an answer before calling the port silent.
pub const PROBE_WAIT: Duration = Duration::from_secs(2);
/// Where a running guest writes, searched for a leaked secret.
pub const SECRET_SEARCH_DIRS: &[&str] = &["/etc", "/var", "/home", "/root", "/tmp", "/srv", "/opt"];

/// `security::ssh_config`: password and keyboard-interactive refused, root
/// refused even with the valid key, `agent` gets in with its key, and the
/// effective configuration says so.
pub fn ssh_config(machine: &Machine) -> CaseResult {
    let probe = machine.ssh_auth_probe("agent", "password")?;
    expect(
        !probe.password_accepted
            && !probe
                .methods
                .iter()
                .any(|m| m == "password" || m == "keyboard-interactive"),
        "sshd to offer agent neither password nor keyboard-interactive login",
        format!(
            "methods {:?}, password accepted: {}",
            probe.methods, probe.password_accepted
        ),
        String::new,
    )?;
    let root = machine.ssh_key_login("root");
    expect(
        root.is_err(),
        "a key login as root to be refused",
        "root logged in with agent's key",
        String::new,
    )?;
    machine.ssh_key_login("agent")?;
    let effective = machine.succeed("sudo sshd -T")?;
    for (key, value) in [
        ("passwordauthentication", "no"),
        ("permitrootlogin", "no"),
        ("kbdinteractiveauthentication", "no"),
    ] {
        let line = effective
            .lines()
            .find(|l| l.split_whitespace().next() == Some(key))
            .unwrap_or("(absent)");
        expect(
            line.split_whitespace().nth(1) == Some(value),
            &format!("sshd -T: {key} {value}"),
            line,
            String::new,
        )?;
    }
    Ok(())
}

/// `security::firewall_config`: from outside only 22 and 3002 answer; the
/// closed ports get no answer; a canary on 0.0.0.0 answers inside but is
/// dropped outside (silence, not a reset); the input policy is drop.
pub fn firewall_config(machine: &Machine) -> CaseResult {
    backends_ready(machine, &[("vibe-kanban", 3000)])?;
    let ssh = probe(machine.ssh_addr(), PROBE_WAIT).map_err(io)?;
    expect(
        ssh.answered() && matches!(&ssh, ProbeResult::Answered(b) if b.starts_with("SSH-")),
        "port 22 to answer with an SSH banner",
        format!("{ssh:?}"),
        String::new,
    )?;
    status_is(&machine.https_get("/")?, "GET / on 3002", 200)?;
    // All at once: a dropped port costs the whole PROBE_WAIT, so one after
    // another would cost it eight times.
    let addrs = CLOSED_PORTS
        .iter()
        .map(|port| machine.forward(*port).map(|addr| (*port, addr)))
        .collect::<Result<Vec<_>, _>>()?;
    let seen: Vec<_> = std::thread::scope(|scope| {
        let probes: Vec<_> = addrs
            .iter()
            .map(|(port, addr)| (*port, scope.spawn(move || probe(*addr, PROBE_WAIT))))
            .collect();
        probes
            .into_iter()
            .map(|(port, handle)| {
                (
                    port,
                    handle
                        .join()
                        .unwrap_or_else(|_| Err(std::io::Error::other("probe panicked"))),
                )
            })
            .collect()
    });
    for (port, result) in seen {
        let seen = result.map_err(io)?;
        expect(
            !seen.answered(),
            &format!("guest port {port} to give no answer from outside"),
            format!("{seen:?}"),
            String::new,
        )?;
    }
    // The canary lives only for this case: the guest is left as it was
    // found (an attached target too), whatever the checks say.
    let listening = machine
        .execute(&format!("ss -Htln 'sport = :{CANARY_PORT}' | grep -q 0.0.0.0"))?
        .status
        == 0;
    if !listening {
        machine.succeed(&format!(
            "sudo systemd-run --unit=rave-canary --collect -p Type=simple systemd-socket-activate -l 0.0.0.0:{CANARY_PORT} --accept --inetd /bin/echo canary"
        ))?;
    }
    let checked = canary_dropped(machine);
    if !listening {
        machine.succeed("sudo systemctl stop rave-canary.service")?;
    }
    checked
}

/// The canary answers inside the guest, is dropped outside; the input policy is drop.
fn canary_dropped(machine: &Machine) -> CaseResult {
    machine.wait_until_succeeds(
        &format!("ss -Htln 'sport = :{CANARY_PORT}' | grep -q 0.0.0.0"),
        Duration::from_secs(30),
    )?;
    // The guest's own address, not loopback: what the firewall sees from outside.
    let address = machine.succeed("ip -4 -o addr show scope global | awk '{print $4}' | cut -d/ -f1 | head -n1")?;
    let inside = machine.succeed(&format!(
        "timeout 5 bash -c 'exec 3<>/dev/tcp/{}/{CANARY_PORT}; head -c 6 <&3'",
        address.trim()
    ))?;
    expect(
        inside == "canary",
        "the canary to answer inside the guest",
        format!("{inside:?}"),
        String::new,
    )?;
    let outside = probe(machine.forward(CANARY_PORT)?, PROBE_WAIT).map_err(io)?;
    let ruleset = machine.succeed("sudo nft list ruleset")?;
    expect(
        outside == ProbeResult::Silent,
        &format!("the canary on 0.0.0.0:{CANARY_PORT} to be dropped from outside (no answer, no reset)"),
        format!("{outside:?}"),
        || format!("--- nft list ruleset ---\n{ruleset}"),
    )?;
    let input_policy_drop = ruleset
        .lines()
        .any(|l| l.contains("hook input") && l.contains("policy drop"));
    expect(
        input_policy_drop,
        "the input chain's policy to be drop",
        "no input hook with policy drop",
        || ruleset.clone(),
    )
}

/// `security::tls_config`: the certificate chains to the image CA, names
/// rave.local and is valid now (the HTTPS client verifies all three); TLS 1.2
/// and 1.3 handshake; TLS 1.0 and 1.1 are refused; the key is not readable by others.
pub fn tls_config(machine: &Machine) -> CaseResult {
    backends_ready(machine, &[("vibe-kanban", 3000)])?;
    status_is(&machine.https_get("/")?, "GET / verified against the image CA", 200)?;
    for version in ["-tls1_2", "-tls1_3"] {
        let (ok, said) = openssl_handshake(machine, version)?;
        expect(ok, &format!("a {version} handshake to succeed"), said, String::new)?;
    }
    for version in ["-tls1", "-tls1_1"] {
        let (ok, said) = openssl_handshake(machine, version)?;
        expect(!ok, &format!("a {version} handshake to be refused"), said, String::new)?;
    }
    let props =
        parse_properties(&machine.succeed("sudo stat -L -c 'mode=%a owner=%U' /run/secrets/tls-key | tr ' ' '\\n'")?);
    let mode = props.get("mode").cloned().unwrap_or_default();
    let others_may_read = u32::from_str_radix(&mode, 8).map(|m| m & 0o077 != 0).unwrap_or(true);
    expect(
        !others_may_read,
        "the TLS key readable by its owner only",
        format!("mode {mode} owner {:?}", props.get("owner")),
        String::new,
    )
}

/// One handshake with the host's OpenSSL at `version`, with the client's own
/// floor lowered (OpenSSL 3 refuses 1.0/1.1 client-side by default, which
/// would make "refused" prove nothing). Returns whether it completed.
fn openssl_handshake(machine: &Machine, version: &str) -> Result<(bool, String), CaseFailure> {
    let ca = machine
        .ca_cert()
        .ok_or_else(|| CaseFailure::new("the target has no CA certificate"))?;
    let out = Command::new("timeout")
        .args(["20", "openssl", "s_client", "-connect"])
        .arg(machine.https_addr().to_string())
        .args(["-servername", "rave.local", "-verify_return_error", "-CAfile"])
        .arg(ca)
        .args([version, "-cipher", "DEFAULT@SECLEVEL=0"])
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| CaseFailure::new(format!("openssl s_client could not run: {e}")))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let protocol = text
        .lines()
        .find(|l| l.trim_start().starts_with("Protocol"))
        .unwrap_or("no protocol line")
        .trim()
        .to_string();
    let ok = out.status.success() && text.contains("Verify return code: 0 (ok)");
    let said = if ok {
        protocol
    } else {
        text.lines()
            .rev()
            .find(|l| l.contains("error") || l.contains("alert"))
            .unwrap_or("handshake failed")
            .trim()
            .to_string()
    };
    Ok((ok, said))
}

/// Owner each secret must have (the user that reads it).
pub const SECRET_OWNERS: &[(&str, &str)] = &[
    ("tls-cert", "root"),
    ("tls-key", "root"),
    ("webhook-gitlab-secret", "webhook"),
];

/// `security::secrets_management`: secrets only under /run/secrets (tmpfs),
/// 0400, owned by their reader; the disk holds them only encrypted (the
/// webhook secret's plaintext is nowhere on the root filesystem); the
/// dispatcher really uses the decrypted secret.
pub fn secrets_management(machine: &Machine) -> CaseResult {
    let fstype = machine.succeed("findmnt -n -o FSTYPE --target /run/secrets")?;
    expect(
        fstype.trim() == "tmpfs",
        "/run/secrets on a tmpfs",
        fstype.trim(),
        String::new,
    )?;
    for (name, owner) in SECRET_OWNERS {
        let seen = machine.succeed(&format!("sudo stat -c '%a %U' /run/secrets/{name}"))?;
        expect(
            seen.trim() == format!("400 {owner}"),
            &format!("/run/secrets/{name} mode 400 owned by {owner}"),
            seen.trim(),
            String::new,
        )?;
    }
    backends_ready(machine, &[("webhook-dispatcher", 3001)])?;
    let secret = webhook_secret(machine)?;
    // The pattern comes from the secret's file: on a command line, sudo would
    // log the secret into the journal, on the disk this case searches.
    // Where a running system writes: configuration, state, logs, homes,
    // scratch. The image's read-only content was scanned at build time.
    let found = machine.execute_within(
        &format!(
            "sudo grep -rlF -f /run/secrets/webhook-gitlab-secret --devices=skip {} 2>/dev/null | head -5",
            SECRET_SEARCH_DIRS.join(" ")
        ),
        Duration::from_secs(240),
    )?;
    expect(
        found.stdout.trim().is_empty(),
        &format!(
            "the webhook secret's plaintext nowhere under {}",
            SECRET_SEARCH_DIRS.join(" ")
        ),
        format!("it in {}", found.stdout.trim()),
        String::new,
    )?;
    let encrypted = machine.succeed("sudo head -c 21 /etc/rave/secrets/webhook-gitlab-secret.age")?;
    expect(
        encrypted.starts_with("age-encryption.org/v1"),
        "the secret stored age-encrypted on the disk",
        format!("{encrypted:?}"),
        String::new,
    )?;
    let answer = post_push(machine, Some(&secret), &fresh_delivery_key("rave-secrets"))?;
    expect(
        (200..300).contains(&answer.status),
        "the dispatcher to accept the decrypted secret",
        answer.status,
        || answer.describe(),
    )
}

fn io(e: std::io::Error) -> CaseFailure {
    CaseFailure::new(format!("probing a forwarded port: {e}"))
}
