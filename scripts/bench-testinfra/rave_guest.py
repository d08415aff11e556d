"""The guest verbs of rave-harness (harness/src/machine.rs and friends), over
pytest-testinfra's paramiko backend and Python's stdlib, for the benchmark
port of the P2 cases. Each verb runs the same shell command, with the same
poll interval and deadline, as its Rust namesake on an attached target.
"""

import base64
import functools
import http.client
import json
import socket
import ssl
import time

import paramiko
from testinfra.backend.paramiko import ParamikoBackend

#: The bound on each SSH call and HTTPS request (BootOptions::DEFAULT_COMMAND_TIMEOUT).
COMMAND_TIMEOUT = 60.0
#: The guest's HTTPS port (machine::GUEST_HTTPS_PORT).
GUEST_HTTPS_PORT = 3002
#: The name the guest's certificate is issued to (https::HOST_NAME).
HOST_NAME = "rave.local"
#: Journal lines of a unit carried by its diagnostics (machine::JOURNAL_LINES).
JOURNAL_LINES = 50


class GuestError(Exception):
    """A verb failed (MachineError): the case is red."""


class CaseFailure(AssertionError):
    """A check of a case is red (suites' CaseFailure)."""


class Expired(GuestError):
    """A wait ran out of time (RetryError::Expired)."""

    def __init__(self, waited, last_seen):
        super().__init__(f"gave up after {waited:.1f}s; last seen: {last_seen}")
        self.waited = waited
        self.last_seen = last_seen


# --- Small helpers that must behave as the Rust ones -------------------------

_UNQUOTED = frozenset("+-./:@]_0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_U, _S, _D = 1, 2, 4


def _quoting_strategy(text):
    """shlex 1.3.0's quoting_strategy: the longest prefix one strategy covers."""
    ok, i = _U | _S | _D, 0
    if text[0] == "^":
        ok, i = _S, 1
    while i < len(text):
        c, cur = text[i], ok
        if ord(c) >= 0x80:
            cur &= ~_U
        else:
            if c not in _UNQUOTED:
                cur &= ~_U
            if c in "'^\\":
                cur &= ~_S
            if c in "`$!^":
                cur &= ~_D
        if cur == 0:
            break
        ok, i = cur, i + 1
    return i, (_U if ok & _U else _S if ok & _S else _D)


def quote(word):
    """machine::quote: Rust shlex 1.3.0's try_quote, so every command is
    byte for byte the one the Rust harness sends (Python's shlex.quote
    quotes differently, e.g. leaves `=` and `%` bare)."""
    if word == "":
        return "''"
    if "\0" in word:
        return "'" + word.replace("\0", "") + "'"
    out, rest = [], word
    while rest:
        n, strategy = _quoting_strategy(rest)
        if n == len(rest) and strategy == _U and not out:
            return rest
        chunk, rest = rest[:n], rest[n:]
        if strategy == _U:
            out.append(chunk)
        elif strategy == _S:
            out.append(f"'{chunk}'")
        else:
            out.append('"' + "".join("\\" + c if c in '$`"\\' else c for c in chunk) + '"')
    return "".join(out)


def lines(text):
    """Rust's str::lines: split on \\n, drop one trailing \\r, no empty last line."""
    parts = text.split("\n")
    if parts and parts[-1] == "":
        parts.pop()
    return [p[:-1] if p.endswith("\r") else p for p in parts]


def parse_properties(text):
    """machine::parse_properties: `KEY=value` lines into a dict (last one wins)."""
    props = {}
    for line in lines(text):
        if "=" in line:
            key, value = line.split("=", 1)
            props[key.strip()] = value.strip()
    return props


def wait_until(poll, timeout, interval):
    """retry::retry: calls `poll` until it returns (True, value), raises (an
    abort), or `timeout` seconds pass; sleeps `interval` between looks and
    looks once more at the deadline. (False, seen) means "not yet"."""
    start = time.monotonic()
    end = start + timeout
    while True:
        ready, value = poll()
        if ready:
            return value
        now = time.monotonic()
        if now >= end:
            raise Expired(now - start, value)
        time.sleep(min(interval, end - now))


def qmp_human(path, command_line):
    """One human-monitor command over QEMU's QMP socket (qmp.rs's hostfwd_add)."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(5)
        sock.connect(path)
        reader = sock.makefile("r")
        json.loads(reader.readline())  # the greeting
        for message in (
            {"execute": "qmp_capabilities"},
            {"execute": "human-monitor-command", "arguments": {"command-line": command_line}},
        ):
            sock.sendall((json.dumps(message) + "\n").encode())
            while True:
                answer = json.loads(reader.readline())
                if "return" in answer or "error" in answer:
                    break
            # qmp_capabilities returns {}; the human command its output, "" when it worked.
            said = answer.get("return")
            if "error" in answer or (isinstance(said, str) and said.strip()):
                raise GuestError(f"QMP {command_line}: {answer}")


class Manifest:
    """The image manifest (image::Manifest, schema 2), with a rave image's
    properties (rave::RaveImage), as the description names it."""

    def __init__(self, data):
        self.data = data
        self.profile = data["profile"]
        self.flavor = data.get("flavor")
        properties = data.get("properties") or {}
        self.safe_mode = bool(properties["safe_mode"])
        self.limits = properties.get("limits") or {}
        self.components = data.get("components") or {}
        self.absent = data.get("absent") or {}

    def unit_error(self, component):
        """Why the image has no unit for `component`, or None (Manifest::unit's Err)."""
        if component in self.components:
            return None
        if component in self.absent:
            return (
                f"{component} is absent from the {self.flavor} {self.profile} image: "
                f"{self.absent[component]}"
            )
        return f"{component} is not part of the {self.flavor} {self.profile} image"

    def unit(self, component):
        """The unit of `component` (Manifest::unit); CaseFailure when there is none."""
        error = self.unit_error(component)
        if error:
            raise CaseFailure(error)
        return self.components[component]["unit"]

    def has(self, component):
        return self.unit_error(component) is None


# --- SSH with the host key pinned ---------------------------------------------


class PinnedKeyPolicy(paramiko.MissingHostKeyPolicy):
    """A host key of another type than the pinned one is refused too
    (SshError::HostKeyMismatch); one of the same type is checked by paramiko
    against known_hosts."""

    def __init__(self, pinned_key):
        self.pinned_key = pinned_key

    def missing_host_key(self, client, hostname, key):
        raise paramiko.BadHostKeyException(hostname, key, self.pinned_key)


class PinnedHost:
    """Where and as whom SSH reaches the guest, and the host key it must show."""

    def __init__(self, addr, user, key_file, host_key_line, known_hosts):
        self.addr = addr  # resolved once, as Machine::attach does
        self.user = user
        self.key_file = key_file
        self.key_type, key_b64 = host_key_line.split()[:2]
        self.key_blob = base64.b64decode(key_b64)
        self.key = paramiko.PKey.from_type_string(self.key_type, self.key_blob)
        self.known_hosts = known_hosts
        ip, port = addr[0], addr[1]
        name = ip if port == 22 else f"[{ip}]:{port}"
        with open(known_hosts, "w") as f:
            f.write(f"{name} {self.key_type} {key_b64}\n")

    def hostspec(self):
        ip = f"[{self.addr[0]}]" if ":" in self.addr[0] else self.addr[0]
        return f"{self.user}@{ip}:{self.addr[1]}"

    def client(self, user, timeout):
        """SshSession::connect: a key login as `user` with the run's key only
        (no agent, no ~/.ssh keys), every step bounded by `timeout`."""
        client = paramiko.SSHClient()
        client.load_host_keys(self.known_hosts)
        client.set_missing_host_key_policy(PinnedKeyPolicy(self.key))
        try:
            client.connect(
                hostname=self.addr[0],
                port=self.addr[1],
                username=user,
                key_filename=self.key_file,
                timeout=timeout,
                banner_timeout=timeout,
                auth_timeout=timeout,
                allow_agent=False,
                look_for_keys=False,
            )
        except BaseException:
            client.close()
            raise
        return client


class PinnedParamikoBackend(ParamikoBackend):
    """testinfra's paramiko backend with the guest's host key pinned.

    testinfra 10.2.2's backend sets paramiko.WarningPolicy (any unknown host
    key is accepted with a warning), loads no known_hosts file, and of an
    ssh_config reads only `StrictHostKeyChecking no` (never
    UserKnownHostsFile). So the one thing changed here is how the client is
    made: known_hosts with the pinned key, a policy that refuses any other.
    Running commands (`run`, its one reconnect) is testinfra's own.
    """

    def __init__(self, pinned, timeout):
        self.pinned = pinned
        super().__init__(pinned.hostspec(), ssh_identity_file=pinned.key_file, timeout=timeout)

    @functools.cached_property
    def client(self):
        return self.pinned.client(self.host.user, self.timeout)


# --- HTTPS verified against the image CA ---------------------------------------


class Response:
    """An answer (https::HttpResponse): status, lower-case headers, body text."""

    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def header(self, name):
        name = name.lower()
        return next((v for k, v in self.headers if k == name), None)

    def describe(self):
        head = "\n".join(f"{k}: {v}" for k, v in self.headers)
        return f"HTTP {self.status}\n{head}\n\n{self.body[:400]}"


class _RaveLocal(http.client.HTTPSConnection):
    """`https://rave.local:PORT` (SNI, certificate name and Host header),
    with the TCP connection made to `addr` (reqwest's `resolve`)."""

    def __init__(self, addr, context, timeout):
        super().__init__(HOST_NAME, addr[1], timeout=timeout, context=context)
        self._addr = addr[:2]
        self._create_connection = self._connect_to_addr

    def _connect_to_addr(self, _address, timeout, source_address):
        return socket.create_connection(self._addr, timeout, source_address)


class HttpsClient:
    """https::HttpsClient: trusts only the image CA, TLS 1.2 at least (as
    rustls), no redirects followed, one kept-alive connection reused."""

    def __init__(self, ca_cert, addr, timeout):
        self.ca_cert = ca_cert
        self.addr = addr
        self.timeout = timeout
        self._context = None
        self._conn = None

    def _connect(self):
        if self._context is None:
            if not self.ca_cert:
                raise GuestError(
                    "the image has no CA certificate (manifest ca_cert), so HTTPS cannot be verified"
                )
            try:
                # A CA file given: the system's roots are not loaded.
                context = ssl.create_default_context(cafile=str(self.ca_cert))
            except (OSError, ssl.SSLError) as e:
                raise GuestError(f"CA certificate {self.ca_cert}: {e}") from e
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            self._context = context
        return _RaveLocal(self.addr, self._context, self.timeout)

    def close(self):
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def request(self, method, path, headers=(), body=None):
        data = None if body is None else body.encode()
        where = f"{method} https://{HOST_NAME}{path} ({self.addr[0]}:{self.addr[1]})"
        for attempt in (1, 2):
            reused = self._conn is not None
            if not reused:
                self._conn = self._connect()
            conn = self._conn
            try:
                # As reqwest sends it: Host rave.local:PORT, Accept */*, no Accept-Encoding.
                conn.putrequest(method, path, skip_accept_encoding=True)
                conn.putheader("Accept", "*/*")
                for name, value in headers:
                    conn.putheader(name, value)
                if data is not None:
                    conn.putheader("Content-Length", str(len(data)))
                conn.endheaders(data)
                answer = conn.getresponse()
                raw = answer.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as e:
                self.close()
                if reused and attempt == 1:
                    continue  # the kept connection had been closed by nginx: a fresh one
                raise GuestError(f"{where}: {e}") from e
            except (OSError, http.client.HTTPException) as e:
                self.close()
                raise GuestError(f"{where}: {e}") from e
            if answer.will_close:
                self.close()
            got = [(k.lower(), v) for k, v in answer.getheaders()]
            return Response(answer.status, got, raw.decode("utf-8", "replace"))
        raise AssertionError("unreachable")


# --- Probes of forwarded ports (ports::probe) -------------------------------------


class ProbeResult:
    """Answered(text), Reset or Silent."""

    def __init__(self, kind, text=None):
        self.kind = kind
        self.text = text

    @property
    def answered(self):
        return self.kind == "Answered"

    def __eq__(self, other):
        return isinstance(other, ProbeResult) and (self.kind, self.text) == (other.kind, other.text)

    def __repr__(self):
        return f"Answered({self.text!r})" if self.answered else self.kind


SILENT = ProbeResult("Silent")
RESET = ProbeResult("Reset")


def probe(addr, wait):
    """Connects to `addr` and waits up to `wait` seconds for anything to come
    back. A failed connect raises (an error of the case, as in Rust)."""
    sock = socket.create_connection(addr[:2], timeout=wait)
    with sock:
        try:
            data = sock.recv(64)
        except socket.timeout:
            return SILENT
        except (ConnectionResetError, ConnectionAbortedError):
            return RESET
    return ProbeResult("Answered", data.decode("utf-8", "replace"))


# --- The guest ----------------------------------------------------------------------


class Guest:
    """machine::Machine for an attached target: the verbs a case uses."""

    def __init__(self, name, host, pinned, manifest, https_addr, ca_cert, forwards, qmp_socket=None):
        self.name = name
        self.host = host  # testinfra.host.Host over PinnedParamikoBackend
        self.pinned = pinned
        self.manifest = manifest
        self.ssh_addr = pinned.addr
        self.https_addr = https_addr
        self.ca_cert = ca_cert
        self.forwards = dict(forwards)
        self.qmp_socket = qmp_socket
        self._added = []  # host ports this run forwarded, removed at close
        self._https = HttpsClient(ca_cert, https_addr, COMMAND_TIMEOUT)

    def close(self):
        self._https.close()
        # As Machine::remove_added_forwards: the target is left as it was found.
        for host_port in self._added:
            try:
                qmp_human(self.qmp_socket, f"hostfwd_remove tcp:127.0.0.1:{host_port}")
            except (OSError, GuestError):
                pass  # a QEMU that is gone took its forwards with it
        self._added = []

    # Commands.

    def execute(self, command):
        """Runs `command` as the SSH user: testinfra's CommandResult (rc, stdout, stderr)."""
        return self.host.run(command)

    def succeed(self, command):
        """Runs `command`; its stdout, or GuestError when it exits non-zero."""
        out = self.execute(command)
        if out.rc != 0:
            raise GuestError(
                f"guest {self.name}: command `{command}` exited {out.rc}\n"
                f"stdout: {out.stdout}\nstderr: {out.stderr}"
            )
        return out.stdout

    def exclusively(self, section):
        """Machine::exclusively: no other case's command in between. Cases run
        one after another here, so nothing else can run anyway."""
        return section()

    # Waits (Machine::wait: retry, and on timeout what was awaited).

    def wait(self, what, timeout, interval, poll):
        try:
            return wait_until(poll, timeout, interval)
        except Expired as e:
            raise GuestError(
                f"guest {self.name}: timed out after {e.waited:.1f}s waiting for {what}; "
                f"last seen: {e.last_seen}"
            ) from None

    def _look(self, command):
        """One look of a wait: the command's result, or what an SSH error said
        (an SSH error is "not yet", as in Rust)."""
        try:
            return self.execute(command), None
        except Exception as e:  # noqa: BLE001 - any SSH failure is only "not yet"
            return None, str(e) or type(e).__name__

    def wait_until_succeeds(self, command, timeout):
        """Runs `command` every 0.5 s until it exits 0; its stdout."""

        def poll():
            out, error = self._look(command)
            if error is not None:
                return False, error
            if out.rc == 0:
                return True, out.stdout
            # machine::last_line: stderr's last non-blank line, else all of stdout.
            last = next((l for l in reversed(lines(out.stderr)) if l.strip()), out.stdout)
            return False, f"exit {out.rc}: {last.strip()}"

        return self.wait(f"`{command}` to succeed", timeout, 0.5, poll)

    def wait_for_unit(self, unit, timeout):
        """Waits (0.5 s polls) until `unit` is active; fails at once, with its
        status and journal, when it is failed, stopped with no job queued, or
        not loaded."""
        q = quote(unit)
        # Jobs first, state second: a job that finishes between the two reads
        # leaves the unit active, so "no job, and inactive" cannot be a race.
        probe_command = (
            f"echo Jobs=$(systemctl list-jobs --no-legend {q} | wc -l); "
            f"systemctl show {q} -p LoadState -p ActiveState -p SubState"
        )

        def poll():
            out, error = self._look(probe_command)
            if error is not None:
                return False, error
            props = parse_properties(out.stdout)

            def get(key):
                return props.get(key, "?")

            state = f"ActiveState={get('ActiveState')} SubState={get('SubState')}"
            if get("ActiveState") == "active":
                return True, None
            if get("LoadState") != "loaded":
                stuck = f"LoadState={get('LoadState')}"
            elif get("ActiveState") == "failed":
                stuck = state
            elif get("ActiveState") == "inactive" and get("Jobs") == "0":
                stuck = f"{state}, and no job is queued to start it"
            else:
                return False, state
            raise GuestError(
                f"guest {self.name}: unit {unit} will not become active: {stuck}\n"
                f"{self.unit_diagnostics(unit)}"
            )

        self.wait(f"unit {unit} to be active", timeout, 0.5, poll)

    def wait_for_open_port(self, port, timeout):
        """Waits (0.5 s polls) until something listens on TCP `port` in the guest."""
        command = f"ss -Htln 'sport = :{port}'"

        def poll():
            out, error = self._look(command)
            if error is not None:
                return False, error
            if out.rc == 0 and out.stdout.strip():
                return True, None
            return False, f"nothing listens on {port}"

        self.wait(f"a listener on TCP port {port} in the guest", timeout, 0.5, poll)

    def unit_diagnostics(self, unit):
        """`systemctl status` of `unit` and its journal's last lines, for a failure message."""
        q = quote(unit)
        command = (
            f"sudo systemctl status --no-pager --full --lines=0 {q} 2>&1; "
            f"echo '--- journal of {unit} (last {JOURNAL_LINES} lines) ---'; "
            f"sudo journalctl --no-pager -o short-precise -n {JOURNAL_LINES} -u {q} 2>&1"
        )
        try:
            out = self.execute(command)
        except Exception as e:  # noqa: BLE001 - diagnostics never hide the failure
            return f"(could not collect the diagnostics of {unit}: {e})"
        return f"--- systemctl status {unit} ---\n{out.stdout.rstrip()}"

    # HTTPS and the network from outside.

    def https(self, method, path, headers=(), body=None):
        """`method path` to https://rave.local:3002 through the forwarded port,
        verified against the image's CA only."""
        try:
            return self._https.request(method, path, headers, body)
        except GuestError as e:
            raise GuestError(f"guest {self.name}: {e}") from None

    def https_get(self, path):
        return self.https("GET", path)

    def forward(self, guest_port):
        """Machine::forward on an attached target: the description's forward,
        else a new one through its QMP socket (a local QEMU guest), else that
        port on the target's host."""
        if guest_port in self.forwards:
            return (self.ssh_addr[0], self.forwards[guest_port])
        if self.qmp_socket:
            with socket.socket() as free:
                free.bind(("127.0.0.1", 0))
                host_port = free.getsockname()[1]
            qmp_human(self.qmp_socket, f"hostfwd_add tcp:127.0.0.1:{host_port}-:{guest_port}")
            self.forwards[guest_port] = host_port
            self._added.append(host_port)
            return ("127.0.0.1", host_port)
        return (self.ssh_addr[0], guest_port)

    def ssh_auth_probe(self, user, password):
        """ssh::probe_auth: the methods sshd offers `user` to an
        unauthenticated client (host key pinned), and whether `password` gets in."""
        sock = socket.create_connection(self.ssh_addr[:2], timeout=COMMAND_TIMEOUT)
        transport = paramiko.Transport(sock)
        try:
            options = transport.get_security_options()
            options.key_types = [self.pinned.key_type] + [
                k for k in options.key_types if k != self.pinned.key_type
            ]
            transport.start_client(timeout=COMMAND_TIMEOUT)
            presented = transport.get_remote_server_key()
            if presented.asbytes() != self.pinned.key_blob:
                raise GuestError(
                    f"guest {self.name}: SSH host key of {self.ssh_addr[0]}:{self.ssh_addr[1]} "
                    "is not the pinned one; refusing to log in"
                )
            try:
                transport.auth_none(user)
                methods = []  # "none" let it in: libssh2 then lists nothing
            except paramiko.BadAuthenticationType as e:
                methods = list(e.allowed_types)
            except paramiko.SSHException:
                methods = []
            try:
                # No keyboard-interactive fallback: one plain password attempt, as libssh2 makes.
                transport.auth_password(user, password, fallback=False)
                accepted = transport.is_authenticated()
            except paramiko.SSHException:
                accepted = False
            return methods, accepted
        finally:
            transport.close()

    def ssh_key_login(self, user):
        """Whether a key login as `user` with the run's key works: None, or the error."""
        try:
            client = self.pinned.client(user, COMMAND_TIMEOUT)
        except Exception as e:  # noqa: BLE001 - the error is the answer
            return e
        client.close()
        return None
