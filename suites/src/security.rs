//! security: checked from outside the guest where the spec says so, as an
//! attacker would: SSH logins, TLS handshakes by version, forwarded probes.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use rave_harness::machine::parse_properties;
use rave_harness::outcome::{expect, CheckError, CheckResult};
use rave_harness::ports::{accepted_from, probe, probe_held, HeldProbe, ProbeResult, USER_NET_HOST};
use rave_harness::{quote, Machine, MachineError};

use crate::case::{Case, Fault, HARDENED};
use crate::checks::{
    backends_ready, edit_nginx_site, fresh_delivery_key, https_port, post_push, status_is, webhook_secret,
};

/// The suite's cases, each with its fault.
pub fn cases() -> Vec<Case> {
    vec![
        Case {
            suite: "security",
            name: "tls_config",
            profiles: HARDENED,
            components: &["nginx", "secrets"],
            check: tls_config,
            fault: Fault {
                description: "nginx allowed TLS 1.0 and 1.1",
                inject: |m| {
                    edit_nginx_site(
                        m,
                        "s/ssl_protocols TLSv1.2 TLSv1.3;/ssl_protocols TLSv1 TLSv1.1 TLSv1.2 TLSv1.3; ssl_ciphers DEFAULT@SECLEVEL=0;/",
                    )
                },
                must_say: &["handshake to be refused"],
            },
            waits_long: false,
            extra_faults: &[],
        },
        Case {
            suite: "security",
            name: "ssh_config",
            profiles: HARDENED,
            components: &["sshd"],
            check: ssh_config,
            fault: Fault {
                description: "sshd allowed password login",
                inject: |m| {
                    m.succeed("printf 'PasswordAuthentication yes\\n' | sudo tee /etc/ssh/sshd_config.d/00-fault.conf >/dev/null && sudo systemctl reload ssh")?;
                    // The reload re-executes sshd: hand the guest over once it answers again.
                    m.wait_for_ssh(Duration::from_secs(60))
                },
                must_say: &["password"],
            },
            waits_long: false,
            extra_faults: &[],
        },
        Case {
            suite: "security",
            name: "firewall_config",
            profiles: HARDENED,
            components: &["firewall"],
            check: firewall_config,
            fault: Fault {
                description: "a listener on 0.0.0.0:8099 that waits for the client to speak first, and an accept rule for its port",
                inject: |m| {
                    m.succeed(
                        "sudo systemd-run --unit=rave-fault-listener --collect -p Type=simple systemd-socket-activate -l 0.0.0.0:8099 --accept --inetd /bin/cat \
                         && sudo nft insert rule inet filter input tcp dport 8099 accept",
                    )?;
                    m.wait_until_succeeds(
                        "ss -Htln 'sport = :8099' | grep -F 0.0.0.0:8099 >/dev/null",
                        Duration::from_secs(30),
                    )
                    .map(|_| ())
                },
                must_say: &["guest port 8099", "Accepted"],
            },
            waits_long: false,
            extra_faults: &[],
        },
        Case {
            suite: "security",
            name: "secrets_management",
            profiles: HARDENED,
            components: &["secrets", "webhook-dispatcher"],
            check: secrets_management,
            fault: Fault {
                description: "the webhook secret copied in plaintext to /usr/local/lib/rave-leak/caf\\xe9 (its times kept, its name not UTF-8)",
                inject: |m| {
                    m.succeed("sudo install -d /usr/local/lib/rave-leak && sudo cp -p /run/secrets/webhook-gitlab-secret \"/usr/local/lib/rave-leak/caf$(printf '\\351')\"")
                        .map(|_| ())
                },
                must_say: &["plaintext nowhere but /run/secrets", "/usr/local/lib/rave-leak/caf\u{fffd}"],
            },
            waits_long: false,
            extra_faults: &[],
        },
    ]
}

/// Guest ports that must not answer from outside (services bound to loopback, or none).
pub const CLOSED_PORTS: &[u16] = &[3000, 3001, 3030, 3456, 5432, 8080, 9090, 9091, 9100, 9113, 9187];
/// The port of the canary listener the firewall case starts in the guest.
pub const CANARY_PORT: u16 = 8765;
/// How long a probe waits for an answer before calling the port silent.
pub const PROBE_WAIT: Duration = Duration::from_secs(2);
/// How long the search for the secret's plaintext may take.
pub const SECRET_SEARCH_DEADLINE: Duration = Duration::from_secs(240);

/// The search for the webhook secret's plaintext, as root in the guest, on
/// every mounted filesystem that can hold files' data (all but the
/// kernel's views: proc, sysfs, cgroup, ...) except `/run/secrets`. The root
/// filesystem is searched through a bind mount of it, so files hidden under
/// its mount points (`/run`, `/tmp`) are searched too, and there only the
/// files whose inode changed (ctime, which no one can set back) after
/// `@SINCE@`, the Unix time the image's files were made (0: every file; the
/// image's own content was searched when it was built). Prints a line saying
/// what it searched, then the files holding the secret, NUL-separated.
/// Exits 2, saying why, when the search itself failed (a file vanishing
/// while it runs is no failure).
const SECRET_SEARCH: &str = r#"set -euo pipefail
secret=/run/secrets/webhook-gitlab-secret
test -s "$secret"
since=@SINCE@
if [ "$since" -gt 0 ]; then
  scope="on the root filesystem the files changed since the image was built ($(date -u -d "@$since" +%FT%TZ)), elsewhere every file"
else
  scope="every file (the image does not say when it was built)"
fi
root_dev=$(stat -c %d /)
work=$(mktemp -d /run/rave-secret-search.XXXXXX)
view="$work/root"
mkdir "$view"
cleanup() {
  umount "$view" && rmdir "$view"
  rm -f "$work/mounts" "$work/files" "$work/errors" "$work/found"
  rmdir "$work"
}
trap cleanup EXIT
mount --bind / "$view"
findmnt -rn -o TARGET,FSTYPE >"$work/mounts"
tops=("$view")
while read -r target fstype; do
  target=$(printf '%b' "$target")
  case "$fstype" in
    proc|sysfs|cgroup|cgroup2|devpts|securityfs|bpf|debugfs|tracefs|configfs|fusectl|binfmt_misc|nsfs|rpc_pipefs|selinuxfs|autofs|mqueue) continue ;;
  esac
  case "$target" in /run/secrets|/run/secrets/*|"$view"|"$view"/*) continue ;; esac
  if [ "$(stat -c %d "$target")" = "$root_dev" ]; then continue; fi
  tops+=("$target")
done <"$work/mounts"
set +e
find_status=0
for top in "${tops[@]}"; do
  if [ "$top" = "$view" ]; then
    find "$top" -xdev -type f -newerct "@$since" -print0
  else
    find "$top" -xdev -type f -print0
  fi
  status=$?
  if [ "$status" != 0 ]; then find_status=$status; fi
done >"$work/files" 2>"$work/errors"
xargs -0 -r grep -lZF -f "$secret" -- <"$work/files" >"$work/found" 2>>"$work/errors"
grep_status=$?
set -e
case "$grep_status" in
  0|123) ;;
  *) echo "the search failed: grep (through xargs) exited $grep_status" >&2; cat "$work/errors" >&2; exit 2 ;;
esac
unexpected=$(awk '!/: No such file or directory$/' "$work/errors")
if [ -n "$unexpected" ]; then printf 'the search failed:\n%s\n' "$unexpected" >&2; exit 2; fi
if [ "$find_status" != 0 ] && [ ! -s "$work/errors" ]; then echo "the search failed: find exited $find_status" >&2; exit 2; fi
printf 'searched %s file(s), %s, on / %s\n' "$(tr -cd '\0' <"$work/files" | wc -c)" "$scope" "${tops[*]:1}"
sed -z "s#^$view##" "$work/found"
"#;

/// `security::ssh_config`: password and keyboard-interactive refused, root
/// refused even with the valid key, `agent` gets in with its key, and the
/// effective configuration says so.
pub fn ssh_config(machine: &Machine) -> CheckResult {
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
    // Only sshd's refusal proves it: a broken connection is no refusal.
    match machine.ssh_key_login("root") {
        Ok(()) => expect(
            false,
            "a key login as root to be refused",
            "root logged in with agent's key",
            String::new,
        )?,
        Err(MachineError::Ssh { source, .. }) if source.is_login_refused() => {}
        Err(e) => return Err(e.into()),
    }
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
pub fn firewall_config(machine: &Machine) -> CheckResult {
    backends_ready(machine, &[("vibe-kanban", 3000)])?;
    let ssh = probe(machine.ssh_addr(), PROBE_WAIT).map_err(io)?;
    expect(
        ssh.answered() && matches!(&ssh, ProbeResult::Answered(b) if b.starts_with("SSH-")),
        "port 22 to answer with an SSH banner",
        format!("{ssh:?}"),
        String::new,
    )?;
    status_is(&machine.https_get("/")?, "GET / on 3002", 200)?;
    // Every port the guest listens on at an address other than loopback,
    // and the contract's closed ports: none but 22 and 3002 may answer.
    let listening = exposed_ports(&machine.succeed("ss -Htln")?);
    let open_ports = [22, https_port(machine)?];
    let ports: std::collections::BTreeSet<u16> = listening
        .iter()
        .chain(CLOSED_PORTS)
        .copied()
        .filter(|p| !open_ports.contains(p))
        .collect();
    // All at once: a dropped port costs the whole PROBE_WAIT, so one after
    // another would cost it for each port.
    let addrs = ports
        .iter()
        .map(|port| machine.forward(*port).map(|addr| (*port, addr)))
        .collect::<Result<Vec<_>, _>>()?;
    let held = probe_from_outside(machine, &addrs)?;
    for (port, seen) in held.iter().map(|(port, held)| (*port, &held.result)) {
        let listener = if listening.contains(&port) {
            " (the guest listens on it at a non-loopback address)"
        } else {
            ""
        };
        expect(
            !seen.answered(),
            &format!("guest port {port}{listener} to give no answer from outside: only 22 and 3002 may"),
            format!("{seen:?}"),
            String::new,
        )?;
    }
    // The canary lives only for this case: the guest is left as it was
    // found (an attached target too), whatever the checks say.
    let canary_up = || -> Result<bool, CheckError> {
        let out = machine.succeed(&format!("ss -Htln 'sport = :{CANARY_PORT}'"))?;
        Ok(out.contains(&format!("0.0.0.0:{CANARY_PORT}")))
    };
    let listening = canary_up()?;
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
fn canary_dropped(machine: &Machine) -> CheckResult {
    machine.wait_until_succeeds(
        &format!("ss -Htln 'sport = :{CANARY_PORT}' | grep -F 0.0.0.0:{CANARY_PORT} >/dev/null"),
        Duration::from_secs(30),
    )?;
    // The guest's own address, not loopback: what the firewall sees from outside.
    let address =
        machine.succeed("ip -4 -o addr show scope global | awk 'NR == 1 { split($4, a, \"/\"); print a[1] }'")?;
    expect(
        !address.trim().is_empty(),
        "the guest to have a global IPv4 address (the canary is reached at it from inside)",
        "none (ip -4 addr show scope global)",
        String::new,
    )?;
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
    let canary = machine.forward(CANARY_PORT)?;
    let outside = probe_from_outside(machine, &[(CANARY_PORT, canary)])?
        .remove(0)
        .1
        .result;
    let ruleset = machine.succeed("sudo nft list ruleset")?;
    expect(
        outside == ProbeResult::Silent,
        &format!("the canary on 0.0.0.0:{CANARY_PORT} to be dropped from outside (no answer, no reset)"),
        format!("{outside:?}"),
        || format!("--- nft list ruleset ---\n{ruleset}"),
    )?;
    let families = crate::nft::input_drop_families(&ruleset);
    expect(
        families.contains("inet") || (families.contains("ip") && families.contains("ip6")),
        "an input chain with policy drop for IPv4 and IPv6 (in an inet table, or in both ip and ip6)",
        format!("input chains with policy drop in {families:?}"),
        || ruleset.clone(),
    )
}

/// `security::tls_config`: the certificate chains to the image CA, names
/// rave.local and is valid now (the HTTPS client verifies all three); TLS 1.2
/// and 1.3 handshake; TLS 1.0 and 1.1 are refused; the key is not readable by others.
pub fn tls_config(machine: &Machine) -> CheckResult {
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
/// would make "refused" prove nothing). Returns whether it completed; a
/// handshake that neither completed nor was refused by the server (a TLS
/// alert, an unsupported version) is an error: a connection that failed
/// proves no refusal.
fn openssl_handshake(machine: &Machine, version: &str) -> Result<(bool, String), CheckError> {
    let ca = machine
        .ca_cert()
        .ok_or_else(|| CheckError::harness("the target has no CA certificate"))?;
    let addr = machine
        .https_addr()
        .ok_or_else(|| CheckError::harness("the target serves no HTTPS"))?;
    let out = Command::new("timeout")
        .args(["20", "openssl", "s_client", "-connect"])
        .arg(addr.to_string())
        .args(["-servername", "rave.local", "-verify_return_error", "-CAfile"])
        .arg(ca)
        .args([version, "-cipher", "DEFAULT@SECLEVEL=0"])
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| CheckError::harness(format!("openssl s_client could not run: {e}")))?;
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
    // Only what the server sent is its refusal: an alert ("... alert protocol
    // version ... SSL alert number 70") or a record of another version. A
    // client that could not even try (its own floor, "no protocols
    // available") proves nothing about the server.
    let refused = ["SSL alert number", "wrong version number"]
        .iter()
        .any(|sign| text.contains(sign));
    if !ok && !refused {
        return Err(CheckError::harness(format!(
            "the {version} handshake with {} neither completed nor was refused by the server (no TLS alert from it); this host's OpenSSL said: {}",
            addr,
            text.trim()
        )));
    }
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
pub fn secrets_management(machine: &Machine) -> CheckResult {
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
    let since = machine.image().manifest.built_at.unwrap_or(0);
    let search = SECRET_SEARCH.replace("@SINCE@", &since.to_string());
    let out = machine.execute_within(&format!("sudo bash -c {}", quote(&search)), SECRET_SEARCH_DEADLINE)?;
    if out.status != 0 {
        return Err(CheckError::harness(format!(
            "the search for the webhook secret's plaintext could not be done (exit {}): {}",
            out.status,
            out.stderr.trim()
        )));
    }
    let (searched, found) = found_files(&out.stdout_bytes);
    expect(
        found.is_empty(),
        "the webhook secret's plaintext nowhere but /run/secrets",
        format!("it in {}", found.join(", ")),
        || searched.clone(),
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

/// Probes each `(guest port, address)` from outside at once (a dropped port
/// costs the whole PROBE_WAIT, so one after another would cost it for each)
/// and holds the connections open while the guest's socket table is read:
/// behind a QEMU forward, which accepts every connection itself, a port
/// where the guest accepted the connection answered even when its listener
/// waits for the client to speak first ([`ProbeResult::Accepted`]).
fn probe_from_outside(machine: &Machine, addrs: &[(u16, SocketAddr)]) -> Result<Vec<(u16, HeldProbe)>, CheckError> {
    let held: Vec<(u16, std::io::Result<HeldProbe>)> = std::thread::scope(|scope| {
        let probes: Vec<_> = addrs
            .iter()
            .map(|(port, addr)| {
                let through_forward = addr.ip().is_loopback();
                (
                    *port,
                    scope.spawn(move || probe_held(*addr, PROBE_WAIT, through_forward)),
                )
            })
            .collect();
        probes
            .into_iter()
            .map(|(port, handle)| {
                let result = handle
                    .join()
                    .unwrap_or_else(|_| Err(std::io::Error::other("probe panicked")));
                (port, result)
            })
            .collect()
    });
    let mut held = held
        .into_iter()
        .map(|(port, result)| result.map(|held| (port, held)).map_err(io))
        .collect::<Result<Vec<_>, _>>()?;
    if addrs.iter().any(|(_, addr)| addr.ip().is_loopback()) {
        let accepted = accepted_from(&machine.succeed("ss -Htan")?, USER_NET_HOST);
        for (port, probe) in &mut held {
            if probe.result == ProbeResult::Silent && accepted.contains(port) {
                probe.result = ProbeResult::Accepted;
            }
        }
    }
    Ok(held)
}

/// The secret search's output: what it searched (its first line), then the
/// files holding the secret, NUL-separated, each name decoded lossily.
fn found_files(stdout: &[u8]) -> (String, Vec<String>) {
    let (first, rest) = match stdout.iter().position(|b| *b == b'\n') {
        Some(i) => (&stdout[..i], &stdout[i + 1..]),
        None => (stdout, &[][..]),
    };
    let files = rest
        .split(|b| *b == 0)
        .filter(|name| !name.is_empty())
        .map(|name| String::from_utf8_lossy(name).into_owned())
        .collect();
    (String::from_utf8_lossy(first).into_owned(), files)
}

/// The ports `ss -Htln` shows a listener on at an address other than
/// loopback (`0.0.0.0`, `*`, `[::]`, or one of the guest's own addresses).
pub fn exposed_ports(ss: &str) -> std::collections::BTreeSet<u16> {
    ss.lines()
        .filter_map(|line| line.split_whitespace().nth(3))
        .filter_map(|local| {
            let (host, port) = local.rsplit_once(':')?;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let host = host.split('%').next().unwrap_or(host);
            let loopback = host.starts_with("127.")
                || host == "::1"
                || host == "::ffff:127.0.0.1"
                || host.starts_with("::ffff:127.")
                || host == "localhost";
            (!loopback).then(|| port.parse().ok()).flatten()
        })
        .collect()
}

fn io(e: std::io::Error) -> CheckError {
    CheckError::harness(format!("probing a forwarded port: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listeners_off_loopback_are_exposed() {
        let ss = "\
LISTEN 0 511 0.0.0.0:3002 0.0.0.0:*
LISTEN 0 128 0.0.0.0:22 0.0.0.0:*
LISTEN 0 511 127.0.0.1:3000 0.0.0.0:*
LISTEN 0 4096 127.0.0.53%lo:53 0.0.0.0:*
LISTEN 0 4096 *:8099 *:*
LISTEN 0 128 [::]:22 [::]:*
LISTEN 0 4096 [::1]:9090 [::]:*
LISTEN 0 4096 [::ffff:127.0.0.1]:9091 *:*
LISTEN 0 4096 10.0.2.15:5000 0.0.0.0:*
";
        let ports: Vec<u16> = exposed_ports(ss).into_iter().collect();
        assert_eq!(ports, [22, 3002, 5000, 8099]);
    }

    #[test]
    fn the_search_output_keeps_names_that_are_not_utf8() {
        let (searched, found) = found_files(b"searched 12 file(s), on /\n/var/tmp/x\0/usr/local/caf\xe9\0");
        assert_eq!(searched, "searched 12 file(s), on /");
        assert_eq!(found, ["/var/tmp/x", "/usr/local/caf\u{fffd}"]);
        assert_eq!(found_files(b"searched 0 file(s)\n").1, Vec::<String>::new());
    }
}
