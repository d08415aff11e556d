"""Fixtures for the pytest-testinfra port of rave-harness's P2 cases.

RAVE_TARGET names a target description: the JSON line `rave-harness boot`
prints, as `rave-harness run --attach FILE` reads it (harness/src/target.rs).
The session attaches once, as Machine::attach does: SSH host key pinned,
HTTPS verified against the description's CA, closed-port probes sent to its
forwards.
"""

import functools
import json
import os
import socket
from pathlib import Path

import paramiko
import pytest
import testinfra.host

from rave_guest import (
    COMMAND_TIMEOUT,
    Expired,
    Guest,
    Manifest,
    PinnedHost,
    PinnedParamikoBackend,
    wait_until,
)

#: How long attaching waits for an SSH login (run_cmd::ATTACH_TIMEOUT).
ATTACH_TIMEOUT = 30.0
#: Each login attempt while attaching, and the pause between two (Machine::wait_for_ssh).
ATTACH_ATTEMPT_TIMEOUT = 10
ATTACH_INTERVAL = 0.1
#: The manifest schema rave-harness reads (manifest::SCHEMA).
SCHEMA = 2
#: The profile whose cases this port holds.
PROFILE = "p2"


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "case(*components): a rave-harness case and the manifest components it needs (Case::applies_to)",
    )


def _resolve(host, port):
    """The first address of host:port, resolved once (Machine::attach)."""
    return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][4][:2]


@functools.cache
def _target():
    """The target description (TargetDescription::load: its first non-blank line)."""
    path = os.environ.get("RAVE_TARGET")
    if not path:
        pytest.exit("RAVE_TARGET must name a target description (the JSON line `rave-harness boot` prints)", 2)
    text = Path(path).read_text()
    line = next((l for l in text.splitlines() if l.strip()), "")
    try:
        return json.loads(line)
    except ValueError as e:
        pytest.exit(f"target description {path}: not a target description ({e})", 2)


@functools.cache
def _manifest():
    """The image manifest the description names (Image::load_manifest + attach's profile check)."""
    target = _target()
    data = json.loads(Path(target["manifest"]).read_text())
    if data.get("schema") != SCHEMA:
        pytest.exit(f"image manifest {target['manifest']}: schema {data.get('schema')} is not {SCHEMA}", 2)
    if data["profile"] != target["profile"]:
        pytest.exit(
            f"attaching to {target['name']}: the description says {target['profile']} "
            f"but the manifest says {data['profile']}",
            2,
        )
    return Manifest(data)


def pytest_runtest_setup(item):
    """Skips a case the attached image does not hold, with Rust's reason
    (runner's Attached::outcome, then Case::applies_to). A hook, not a
    fixture: it runs before the session fixtures, so a run of only skipped
    cases attaches to nothing."""
    mark = item.get_closest_marker("case")
    if mark is None:
        return
    manifest = _manifest()
    if manifest.profile != PROFILE:
        pytest.skip(f"the attached target {_target()['name']} is {manifest.profile}")
    for component in mark.args:
        reason = manifest.unit_error(component)
        if reason:
            pytest.skip(reason)


@pytest.fixture(scope="session")
def target():
    return _target()


@pytest.fixture(scope="session")
def manifest():
    return _manifest()


@pytest.fixture(scope="session")
def ca_cert(target):
    """The CA that signs the guest's HTTPS certificate (None: HTTPS cases fail, as in Rust)."""
    return Path(target["ca_cert"]) if target.get("ca_cert") else None


@pytest.fixture(scope="session")
def forwards(target):
    """Guest port -> port on ssh_host that reaches it, for closed-port probes."""
    return {int(guest): int(host) for guest, host in (target.get("forwards") or {}).items()}


@pytest.fixture(scope="session")
def pinned(target, tmp_path_factory):
    """SSH address, user, key, and a known_hosts file holding only the pinned host key."""
    known_hosts = tmp_path_factory.mktemp("ssh") / "known_hosts"
    return PinnedHost(
        addr=_resolve(target["ssh_host"], target["ssh_port"]),
        user=target["ssh_user"],
        key_file=str(target["ssh_key"]),
        host_key_line=target["ssh_host_key"],
        known_hosts=str(known_hosts),
    )


@pytest.fixture(scope="session")
def host(target, pinned):
    """The testinfra host: one paramiko connection for the session, host key pinned.

    Attaching waits as Machine::attach does: a key login every 0.1 s, 10 s
    each, for up to 30 s; a host key that is not the pinned one ends it at
    once. Then the one command Rust runs on a fresh login (`cat /proc/uptime`,
    its first-command timing), so both sides send the guest the same commands.
    """
    backend = PinnedParamikoBackend(pinned, timeout=ATTACH_ATTEMPT_TIMEOUT)
    testinfra_host = testinfra.host.Host(backend)
    backend.set_host(testinfra_host)

    def login():
        try:
            backend.client  # connects, and keeps the connection
        except paramiko.BadHostKeyException:
            raise
        except Exception as e:  # noqa: BLE001 - not up yet
            return False, str(e) or type(e).__name__
        return True, None

    try:
        wait_until(login, ATTACH_TIMEOUT, ATTACH_INTERVAL)
    except Expired as e:
        pytest.exit(f"attaching to {target['name']}: no SSH login as {pinned.user}: {e}", 1)
    except paramiko.BadHostKeyException as e:
        pytest.exit(f"attaching to {target['name']}: the SSH host key is not the pinned one: {e}", 1)
    # Later (re)connections are bounded by the command timeout, as in Rust.
    backend.timeout = int(COMMAND_TIMEOUT)
    try:
        testinfra_host.run("cat /proc/uptime")
    except Exception:  # noqa: BLE001 - Rust ignores its failure too
        pass
    yield testinfra_host
    backend.client.close()


@pytest.fixture(scope="session")
def guest(target, host, pinned, manifest, ca_cert, forwards):
    """The verbs of rave-harness's Machine over the testinfra host."""
    machine = Guest(
        name=target["name"],
        host=host,
        pinned=pinned,
        manifest=manifest,
        https_addr=_resolve(target["https_host"], target["https_port"]),
        qmp_socket=target.get("qmp_socket"),
        ca_cert=ca_cert,
        forwards=forwards,
    )
    yield machine
    machine.close()
