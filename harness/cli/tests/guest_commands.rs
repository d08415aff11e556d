//! A guest command's verdict stays true when the guest, sshd or a service
//! misbehaves (each test failed before the harness's fix for it):
//!
//! - a command a signal ended, or whose channel closed without an exit
//!   status (sshd's `ChannelTimeout`), is not exit 0, and `fail` does not pass on it;
//! - a failure inside a pipeline is the command's failure (`set -euo pipefail`);
//! - a command's deadline bounds the whole command: output that trickles in,
//!   or a background child holding stdout, ends at the deadline, the command
//!   is ended in the guest, and the error says what, how long and the output
//!   so far; a large stderr does not stall the command;
//! - output that is not UTF-8 is kept, and decoded lossily;
//! - a units probe that fails (D-Bus stopped) is pending, not a verdict;
//! - a host that offers other host keys (ECDSA, RSA, a certificate for its
//!   ed25519 key) besides the pinned ed25519 one is reached with the pinned
//!   one, and a wrong key is refused.
//!
//! Real guests: P0, restored from its saved state (built when missing).

use std::time::{Duration, Instant};

use rave::{Launcher, Profile, Settings};
use rave_harness::retry::{retry, Deadline, Poll};
use rave_harness::ssh::{SshError, SshSession};
use rave_harness::Machine;
use rave_harness::MachineError;

fn guest(name: &str) -> Machine {
    let launcher = Launcher::new(Settings::from_env().expect("the environment's settings are valid"));
    launcher.boot(Profile::P0, name).expect("a P0 guest")
}

/// The SSH error inside a machine error, or a panic that shows what came instead.
fn ssh_error(result: Result<impl std::fmt::Debug, MachineError>) -> SshError {
    match result {
        Err(MachineError::Ssh { source, .. }) => *source,
        other => panic!("expected an SSH error, got {other:?}"),
    }
}

#[test]
fn a_signal_or_a_missing_exit_status_is_never_success() {
    let machine = guest("rave-no-status");
    match ssh_error(machine.execute("kill -9 $$")) {
        SshError::Signaled { signal, .. } => assert_eq!(signal, "KILL"),
        other => panic!("kill -9 $$ read as {other}"),
    }
    let err = machine.fail("kill -9 $$").unwrap_err();
    assert!(err.to_string().contains("signal KILL"), "{err}");
    // A command using low descriptors of its own still has its status read.
    assert_eq!(machine.execute("exec 9>/dev/null; false").unwrap().status, 1);

    // sshd cuts a channel that is silent for 3 s, with no exit-status and no exit-signal.
    machine
        .succeed("printf 'ChannelTimeout session:*=3s\\n' | sudo tee /etc/ssh/sshd_config.d/00-channel-timeout.conf >/dev/null && sudo systemctl reload ssh")
        .unwrap();
    let access = machine.access();
    let cut = retry(
        Deadline::new(Duration::from_secs(60), Duration::from_millis(500)),
        || {
            let session = match SshSession::connect(
                machine.ssh_addr(),
                "agent",
                &access.client_key,
                &access.host_key_blob,
                Duration::from_secs(30),
            ) {
                Ok(session) => session,
                Err(e) => return Poll::<SshError, ()>::Pending(e.to_string()),
            };
            match session.exec_with_timeout("echo started; sleep 10; echo finished", Duration::from_secs(30)) {
                // The reload may not have reached this connection yet.
                Ok(out) if out.status == 0 && out.stdout.contains("finished") => {
                    Poll::Pending("the channel was not cut".into())
                }
                Ok(out) => panic!("a cut channel read as exit {}: {out:?}", out.status),
                Err(e) => Poll::Ready(e),
            }
        },
    )
    .expect("sshd cuts the silent channel");
    match &cut {
        SshError::NoExitStatus { output, .. } => {
            assert_eq!(output.stdout, b"started\n", "{cut}");
            assert!(cut.to_string().contains("not a success"), "{cut}");
        }
        other => panic!("a channel cut by ChannelTimeout read as {other}"),
    }
}

#[test]
fn a_failure_inside_a_pipeline_is_the_commands_failure() {
    let machine = guest("rave-pipefail");
    assert_ne!(machine.execute("false | true").unwrap().status, 0);
    assert_ne!(machine.execute("false; true").unwrap().status, 0);
    assert_ne!(machine.execute("echo \"$rave_never_set\"").unwrap().status, 0);
    assert_eq!(machine.succeed("echo ok | tr a-z A-Z").unwrap(), "OK\n");
    machine.fail("false | true").expect("fail passes on a failed pipeline");
}

#[test]
fn a_deadline_bounds_the_whole_command_and_ends_it_in_the_guest() {
    let machine = guest("rave-deadline");
    let deadline = Duration::from_secs(6);
    let slack = Duration::from_secs(8);

    // Output that trickles in: libssh2's own timeout restarts at every read.
    let started = Instant::now();
    let err = machine
        .execute_within("for i in $(seq 40); do echo $i; sleep 2; done # rave-trickle", deadline)
        .unwrap_err();
    let took = started.elapsed();
    assert!(took < deadline + slack, "a {deadline:?} deadline took {took:?}");
    let text = err.to_string();
    assert!(matches!(err, MachineError::Timeout { .. }), "{text}");
    for said in [
        "rave-trickle",
        "6.0s",
        "SIGKILL sent in the guest",
        "output so far",
        "1\\n2\\n",
    ] {
        assert!(text.contains(said), "the error lacks {said:?}: {text}");
    }
    assert_eq!(
        machine.execute("pgrep -f 'rave-[t]rickle'").unwrap().status,
        1,
        "the command still runs in the guest"
    );

    // A background child that keeps stdout open.
    let started = Instant::now();
    let err = machine
        .execute_within("sleep 301 & echo started", deadline)
        .unwrap_err();
    let took = started.elapsed();
    assert!(took < deadline + slack, "a {deadline:?} deadline took {took:?}");
    assert!(matches!(err, MachineError::Timeout { .. }), "{err}");
    assert!(err.to_string().contains("started"), "{err}");
    assert_eq!(
        machine.execute("pgrep -x -f 'sleep 30[1]'").unwrap().status,
        1,
        "the background child still runs in the guest"
    );

    // A command run by sudo (root, in a session of its own) is ended too.
    let err = machine.execute_within("sudo sleep 302", deadline).unwrap_err();
    assert!(matches!(err, MachineError::Timeout { .. }), "{err}");
    assert_eq!(
        machine.execute("pgrep -x -f 'sleep 30[2]'").unwrap().status,
        1,
        "the command sudo ran still runs in the guest"
    );

    // A command that reads stdin gets EOF at once.
    let started = Instant::now();
    assert_eq!(machine.succeed("cat").unwrap(), "");
    assert!(
        started.elapsed() < deadline,
        "cat waited {:?} for stdin",
        started.elapsed()
    );

    // A large stderr is read together with stdout: no stall.
    let out = machine
        .execute("head -c 3000000 /dev/zero | tr '\\0' x >&2; echo done")
        .unwrap();
    assert_eq!((out.status, out.stdout.as_str()), (0, "done\n"));
    assert_eq!(out.stderr_bytes.len(), 3_000_000);
}

#[test]
fn output_that_is_not_utf8_is_still_output() {
    let machine = guest("rave-latin1");
    let out = machine
        .execute("printf 'caf\\351\\n'; printf 'x\\377' >&2; exit 3")
        .unwrap();
    assert_eq!(out.status, 3);
    assert_eq!(out.stdout_bytes, b"caf\xe9\n");
    assert_eq!(out.stdout, "caf\u{fffd}\n");
    assert_eq!(out.stderr_bytes, b"x\xff");
}

#[test]
fn a_failed_units_probe_is_pending_not_a_verdict() {
    let machine = guest("rave-no-dbus");
    // As agent, systemctl needs the system bus; stopped, every probe fails.
    machine.succeed("sudo systemctl stop dbus.socket dbus.service").unwrap();
    let err = machine
        .wait_for_unit("nginx.service", Duration::from_secs(5))
        .unwrap_err();
    match &err {
        MachineError::Timeout { last_seen, .. } => {
            assert!(last_seen.contains("the probe failed"), "{err}")
        }
        other => panic!("a failed probe became a verdict: {other}"),
    }
    // The bus comes back while the wait goes on: the unit is active. A
    // timer's AccuracySec is 1 min by default: systemd may then fire it at
    // any point of that minute (a point fixed per boot, so the same on every
    // restore of one saved state), and nothing here wakes PID 1 earlier
    // while the bus is down.
    machine
        .succeed(
            "sudo systemd-run --on-active=3 --timer-property=AccuracySec=100ms --collect \
             systemctl start dbus.socket dbus.service",
        )
        .unwrap();
    machine
        .wait_for_unit("nginx.service", Duration::from_secs(60))
        .expect("nginx is active once the probe works again");
}

#[test]
fn other_host_keys_beside_the_pinned_one_are_not_asked_for() {
    let machine = guest("rave-host-keys");
    // An ECDSA and an RSA host key, and a certificate for the ed25519 one
    // (libssh2 asks for ed25519 certificates first, some builds for ECDSA
    // before ed25519).
    machine
        .succeed(
            "cd /etc/ssh \
             && sudo ssh-keygen -q -t ecdsa -N '' -f ssh_host_ecdsa_key \
             && sudo ssh-keygen -q -t rsa -b 2048 -N '' -f ssh_host_rsa_key \
             && sudo ssh-keygen -q -t ed25519 -N '' -f /root/host-ca \
             && sudo ssh-keygen -q -s /root/host-ca -I rave -h -n rave ssh_host_ed25519_key.pub \
             && printf 'HostKey /etc/ssh/ssh_host_ecdsa_key\\nHostKey /etc/ssh/ssh_host_rsa_key\\nHostCertificate /etc/ssh/ssh_host_ed25519_key-cert.pub\\n' | sudo tee sshd_config.d/05-more-host-keys.conf >/dev/null \
             && sudo systemctl reload ssh",
        )
        .unwrap();
    // Once sshd offers them...
    for algorithm in [
        "ssh-ed25519-cert-v01@openssh.com",
        "ecdsa-sha2-nistp256",
        "rsa-sha2-512",
    ] {
        retry(
            Deadline::new(Duration::from_secs(60), Duration::from_millis(500)),
            || {
                let offered = std::net::TcpStream::connect(machine.ssh_addr())
                    .map_err(|e| e.to_string())
                    .and_then(|tcp| {
                        let mut session = ssh2::Session::new().map_err(|e| e.to_string())?;
                        session.set_timeout(20_000);
                        session
                            .method_pref(ssh2::MethodType::HostKey, algorithm)
                            .map_err(|e| e.to_string())?;
                        session.set_tcp_stream(tcp);
                        session.handshake().map_err(|e| e.to_string())
                    });
                match offered {
                    Ok(()) => Poll::<(), ()>::Ready(()),
                    Err(e) => Poll::Pending(e),
                }
            },
        )
        .unwrap_or_else(|e| panic!("sshd offers {algorithm} after its reload: {e:?}"));
    }
    // ...the harness still logs in with the pinned ed25519 key,
    machine
        .ssh_key_login("agent")
        .expect("the pinned ed25519 key is asked for");
    // and a key it was not given is refused.
    let stranger = ssh_key::PrivateKey::random(&mut rand_core::OsRng, ssh_key::Algorithm::Ed25519).unwrap();
    let err = SshSession::connect(
        machine.ssh_addr(),
        "agent",
        &machine.access().client_key,
        &stranger.public_key().to_bytes().unwrap(),
        Duration::from_secs(30),
    )
    .unwrap_err();
    assert!(matches!(err, SshError::HostKeyMismatch { .. }), "{err}");
}
