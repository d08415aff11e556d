"""rave-harness's P2 cases (suites/src/catalog.rs), ported to pytest-testinfra
for the benchmark: each test makes the same observations as its Rust case,
with the same waits and deadlines and the same pass/fail conditions. Only
the cases' `run` is ported, not their faults. Order is the catalog's.
"""

import concurrent.futures
import json
import pathlib
import subprocess
import time

import pytest

from rave_guest import (
    GUEST_HTTPS_PORT,
    HOST_NAME,
    SILENT,
    CaseFailure,
    Expired,
    GuestError,
    lines,
    parse_properties,
    probe,
    quote,
    wait_until,
)

case = pytest.mark.case


def expect(ok, expected, seen, evidence=None):
    """failure::expect: "expected ..., saw ..." and the evidence, when not ok."""
    if not ok:
        raise CaseFailure(f"expected {expected}, saw {seen}\n{evidence() if evidence else ''}")


def debug(value):
    """Rust's {:?} of a string (or None)."""
    return "None" if value is None else json.dumps(value)


# === systemd_services ===========================================================

#: How long a unit may take to become active after SSH answers.
UNIT_TIMEOUT = 120.0


#: launcher::STABLE_FOR: a unit must be up this long in one activation.
STABLE_FOR = 10.0
#: systemd_services::WINDOW_SLACK.
WINDOW_SLACK = 30.0
#: machine::UNIT_STATES_MARK.
UNIT_STATES_MARK = "--rave-unit-states--"


def unit_snapshot(guest, unit):
    """Machine::unit_snapshots for one unit: its properties and how long it is up."""
    out = guest.succeed(
        f"systemctl show -p ActiveState -p SubState -p NRestarts -p MainPID -p ActiveEnterTimestampMonotonic "
        f"{quote(unit)}; echo {UNIT_STATES_MARK}; cut -d' ' -f1 /proc/uptime"
    )
    shown, _, uptime = out.partition(UNIT_STATES_MARK)
    props = parse_properties(shown)
    props["up_for"] = float(uptime.strip()) - int(props.get("ActiveEnterTimestampMonotonic", "0")) / 1e6
    return props


def describe(unit, p):
    return (
        f"{unit}: ActiveState={p.get('ActiveState')} SubState={p.get('SubState')} "
        f"NRestarts={p.get('NRestarts')} MainPID={p.get('MainPID')}, up {p['up_for']:.1f} s"
    )


def running_now(guest, unit, p, when=""):
    pid = int(p.get("MainPID", "0")) if p.get("MainPID", "").isdigit() else 0
    alive = pid > 0 and guest.execute(f"test -d /proc/{pid}").rc == 0
    expect(
        p.get("ActiveState") == "active" and p.get("SubState") == "running" and p.get("NRestarts") == "0" and alive,
        f"{unit} active, running, NRestarts=0, main process alive{when}",
        describe(unit, p) + ("" if alive else " (main process not alive)"),
        lambda: guest.unit_diagnostics(unit),
    )


def service_is_healthy(guest, component):
    """Active, running, never restarted, main process alive, over the stability window."""
    unit = guest.manifest.unit(component)
    guest.wait_for_unit(unit, UNIT_TIMEOUT)
    first = unit_snapshot(guest, unit)
    running_now(guest, unit, first)
    if first["up_for"] >= STABLE_FOR:
        return
    keys = ["ActiveEnterTimestampMonotonic", "NRestarts", "MainPID"]

    def same(p):
        return p.get("ActiveState") == "active" and all(p.get(k) == first.get(k) for k in keys)

    def poll():
        now = unit_snapshot(guest, unit)
        return (not same(now) or now["up_for"] >= STABLE_FOR), now

    last = wait_until(poll, STABLE_FOR + WINDOW_SLACK, 1.0)
    expect(
        same(last),
        f"{unit} to stay active and running in one activation for the stability window of {STABLE_FOR:.0f} s",
        f"it restarted or stopped within the window: first {describe(unit, first)}; then {describe(unit, last)}",
        lambda: guest.unit_diagnostics(unit),
    )
    running_now(guest, unit, last, " at the end of the stability window")


def service_runs_as(guest, component, user=None):
    """The main process runs as `user` (None: as anyone but root), read from the process."""
    unit = guest.manifest.unit(component)
    seen = guest.succeed(
        f"pid=$(systemctl show -p MainPID --value {quote(unit)}); test \"$pid\" -gt 0; stat -c %U \"/proc/$pid\""
    ).strip()
    if user is not None:
        ok, expected = seen == user, f"{unit}'s main process to run as {user}"
    else:
        ok, expected = seen != "root" and seen != "", f"{unit}'s main process to run as a non-root user"
    expect(ok, expected, f"it runs as {debug(seen)}", lambda: guest.unit_diagnostics(unit))


def size_bytes(size):
    """systemd_services::bytes: `128M` -> 134217728 (K, M, G are powers of 1024)."""
    digits = len(size) - len(size.lstrip("0123456789"))
    number, suffix = size[:digits], size[digits:]
    factor = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(suffix)
    if not number or factor is None or int(number) * factor >= 1 << 64:
        return None
    return int(number) * factor


def memory_max_is(guest, component):
    """The unit's MemoryMax is the manifest's `limits` value."""
    unit = guest.manifest.unit(component)
    limit = guest.manifest.limits.get(component)
    if limit is None:
        raise CaseFailure(f"the image manifest names no MemoryMax for {component} (limits)")
    expected = size_bytes(limit)
    if expected is None:
        raise CaseFailure(f"manifest limit {debug(limit)} of {component} is not a size")
    seen = guest.succeed(f"systemctl show -p MemoryMax --value {quote(unit)}").strip()
    expect(
        seen == str(expected),
        f"{unit} MemoryMax={limit} ({expected} bytes)",
        f"MemoryMax={seen}",
        lambda: guest.unit_diagnostics(unit),
    )


@case("nginx")
def test_systemd_services__nginx(guest):
    service_is_healthy(guest, "nginx")


@case("grafana")
def test_systemd_services__grafana(guest):
    service_is_healthy(guest, "grafana")
    service_runs_as(guest, "grafana")


@case("postgresql")
def test_systemd_services__postgresql(guest):
    service_is_healthy(guest, "postgresql")
    out = guest.execute("sudo -u postgres psql -XAtc 'select 1'")
    expect(
        out.rc == 0 and out.stdout.strip() == "1",
        "`select 1` over the local socket to return 1",
        f"exit {out.rc} stdout {debug(out.stdout.strip())} stderr {debug(out.stderr.strip())}",
        lambda: guest.unit_diagnostics(
            guest.manifest.unit("postgresql") if guest.manifest.has("postgresql") else "postgresql.service"
        ),
    )


@case("vibe-kanban")
def test_systemd_services__vibe_kanban(guest):
    service_is_healthy(guest, "vibe-kanban")
    service_runs_as(guest, "vibe-kanban", "agent")


@case("claude-code-router")
def test_systemd_services__claude_code_router(guest):
    service_is_healthy(guest, "claude-code-router")
    service_runs_as(guest, "claude-code-router", "agent")


@case("webhook-dispatcher")
def test_systemd_services__webhook_dispatcher(guest):
    service_is_healthy(guest, "webhook-dispatcher")
    service_runs_as(guest, "webhook-dispatcher")
    memory_max_is(guest, "webhook-dispatcher")


@case("prometheus")
def test_systemd_services__prometheus(guest):
    service_is_healthy(guest, "prometheus")


# === http_health ================================================================

#: Headers every answer through nginx must carry, with the value each must have (if fixed).
SECURITY_HEADERS = [
    ("strict-transport-security", None),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", None),
    ("referrer-policy", None),
]


def backends_ready(guest, backends):
    """nginx and each backend's unit active and its port listening (each wait bounded)."""
    guest.wait_for_unit(guest.manifest.unit("nginx"), UNIT_TIMEOUT)
    guest.wait_for_open_port(GUEST_HTTPS_PORT, UNIT_TIMEOUT)
    for component, port in backends:
        guest.wait_for_unit(guest.manifest.unit(component), UNIT_TIMEOUT)
        guest.wait_for_open_port(port, UNIT_TIMEOUT)


def fresh_delivery_key(prefix):
    """A delivery key no earlier request used."""
    return f"{prefix}-{time.time_ns()}"


def post_push(guest, token, key):
    """POSTs a push event to /webhook as GitLab sends it."""
    headers = [
        ("content-type", "application/json"),
        ("x-gitlab-event", "Push Hook"),
        ("x-gitlab-event-uuid", key),
    ]
    if token is not None:
        headers.append(("x-gitlab-token", token))
    return guest.https("POST", "/webhook", headers, '{"object_kind":"push","ref":"refs/heads/main"}')


def webhook_secret(guest):
    """The webhook secret as the dispatcher reads it (decrypted at boot)."""
    return guest.succeed("sudo cat /run/secrets/webhook-gitlab-secret").rstrip("\n")


def stored(guest, key):
    """Rows the dispatcher stored for delivery `key`."""
    sql = "SELECT count(*) FROM webhook_events WHERE delivery_key = '{}'".format(key.replace("'", "''"))
    out = guest.succeed(f"sudo -u postgres psql -d webhook -XAtc {quote(sql)}")
    try:
        return int(out.strip())
    except ValueError:
        raise CaseFailure(f"could not count stored events: {debug(out)}") from None


def status_is(answer, what, status):
    expect(answer.status == status, f"{what} to answer {status}", answer.status, answer.describe)


def security_headers(answer, what):
    for name, value in SECURITY_HEADERS:
        seen = answer.header(name)
        if seen is None:
            ok = False
        elif value is not None:
            ok = seen.lower() == value.lower()
        else:
            ok = seen != ""
        expect(ok, f"{what}: header {name}" + (f": {value}" if value else ""), debug(seen), answer.describe)


@case("nginx", "vibe-kanban")
def test_http_health__vibe_kanban_response(guest):
    backends_ready(guest, [("vibe-kanban", 3000)])
    answer = guest.https_get("/")
    status_is(answer, "GET /", 200)
    security_headers(answer, "GET /")
    expect(
        "<title>vibe-kanban</title>" in answer.body and "Welcome to nginx" not in answer.body,
        "GET / to be the vibe-kanban app (<title>vibe-kanban</title>)",
        "another page",
        answer.describe,
    )


@case("nginx", "grafana")
def test_http_health__grafana_response(guest):
    backends_ready(guest, [("grafana", 3030)])
    answer = guest.https_get("/grafana/api/health")
    status_is(answer, "GET /grafana/api/health", 200)
    security_headers(answer, "GET /grafana/api/health")
    expect(
        '"database":"ok"' in answer.body.replace(" ", ""),
        'JSON with database == "ok"',
        "another body",
        answer.describe,
    )


@case("nginx", "claude-code-router")
def test_http_health__ccr_response(guest):
    backends_ready(guest, [("claude-code-router", 3456)])
    answer = guest.https_get("/ccr-ui/")
    status_is(answer, "GET /ccr-ui/", 200)
    security_headers(answer, "GET /ccr-ui/")
    expect(
        "<title>CCR UI</title>" in answer.body,
        "GET /ccr-ui/ to be claude-code-router's UI (<title>CCR UI</title>)",
        "another page",
        answer.describe,
    )


@case("nginx", "webhook-dispatcher")
def test_http_health__webhook_security(guest):
    backends_ready(guest, [("webhook-dispatcher", 3001)])
    secret = webhook_secret(guest)
    key = fresh_delivery_key("rave-case")
    no_token = post_push(guest, None, key)
    status_is(no_token, "POST /webhook without a token", 401)
    security_headers(no_token, "POST /webhook")
    status_is(post_push(guest, "not-the-secret", key), "POST /webhook with a wrong token", 401)
    expect(stored(guest, key) == 0, "nothing stored for refused deliveries", "a stored row")
    first = post_push(guest, secret, key)
    expect(
        200 <= first.status < 300, "POST /webhook with the secret to be accepted (2xx)", first.status, first.describe
    )
    again = post_push(guest, secret, key)
    expect(
        200 <= again.status < 300, "the same delivery again to be acknowledged (2xx)", again.status, again.describe
    )
    rows = stored(guest, key)
    expect(rows == 1, f"delivery {key} stored exactly once", f"{rows} rows")
    get = guest.https_get("/webhook")
    status_is(get, "GET /webhook", 405)
    security_headers(get, "GET /webhook")


# === security ===================================================================

#: Guest ports that must not answer from outside.
CLOSED_PORTS = [3000, 3001, 3030, 3456, 5432, 9090, 9091, 9100]
#: The port of the canary listener the firewall case starts in the guest.
CANARY_PORT = 8765
#: How long a probe waits for an answer before calling the port silent.
PROBE_WAIT = 2.0
#: The only guest ports that may answer from outside.
OPEN_PORTS = [22, GUEST_HTTPS_PORT]

def secret_search_script(guest):
    """security::SECRET_SEARCH, read from the Rust source (one copy of it)."""
    source = (pathlib.Path(__file__).resolve().parents[2] / "suites/src/security.rs").read_text()
    script = source.split('const SECRET_SEARCH: &str = r#"', 1)[1].split('"#;', 1)[0]
    return script.replace("@SINCE@", str(guest.manifest.data.get("built_at") or 0))


def exposed_ports(ss):
    """security::exposed_ports: ports with a listener off loopback."""
    ports = set()
    for line in lines(ss):
        words = line.split()
        if len(words) < 4 or ":" not in words[3]:
            continue
        host, _, port = words[3].rpartition(":")
        host = host.strip("[]").split("%")[0]
        loopback = host.startswith("127.") or host in ("::1", "localhost") or host.startswith("::ffff:127.")
        if not loopback and port.isdigit():
            ports.add(int(port))
    return ports
#: Owner each secret must have.
SECRET_OWNERS = [("tls-cert", "root"), ("tls-key", "root"), ("webhook-gitlab-secret", "webhook")]


def probe_or_fail(addr):
    try:
        return probe(addr, PROBE_WAIT)
    except OSError as e:
        raise CaseFailure(f"probing a forwarded port: {e}") from None


def openssl_handshake(guest, version):
    """One handshake with the host's OpenSSL at `version`, the client's own
    floor lowered; whether it completed, and what it said."""
    if guest.ca_cert is None:
        raise CaseFailure("the target has no CA certificate")
    ip, port = guest.https_addr[:2]
    connect = f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
    command = ["timeout", "20", "openssl", "s_client", "-connect", connect, "-servername", HOST_NAME]
    command += ["-verify_return_error", "-CAfile", str(guest.ca_cert), version, "-cipher", "DEFAULT@SECLEVEL=0"]
    try:
        out = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True)
    except OSError as e:
        raise CaseFailure(f"openssl s_client could not run: {e}") from None
    text = out.stdout.decode("utf-8", "replace") + out.stderr.decode("utf-8", "replace")
    protocol = next((l for l in lines(text) if l.lstrip().startswith("Protocol")), "no protocol line").strip()
    ok = out.returncode == 0 and "Verify return code: 0 (ok)" in text
    if ok:
        return True, protocol
    said = next((l for l in reversed(lines(text)) if "error" in l or "alert" in l), "handshake failed")
    return False, said.strip()


@case("nginx", "secrets")
def test_security__tls_config(guest):
    backends_ready(guest, [("vibe-kanban", 3000)])
    status_is(guest.https_get("/"), "GET / verified against the image CA", 200)
    for version in ["-tls1_2", "-tls1_3"]:
        ok, said = openssl_handshake(guest, version)
        expect(ok, f"a {version} handshake to succeed", said)
    for version in ["-tls1", "-tls1_1"]:
        ok, said = openssl_handshake(guest, version)
        expect(not ok, f"a {version} handshake to be refused", said)
    props = parse_properties(
        guest.succeed("sudo stat -L -c 'mode=%a owner=%U' /run/secrets/tls-key | tr ' ' '\\n'")
    )
    mode = props.get("mode", "")
    try:
        others_may_read = int(mode, 8) & 0o077 != 0
    except ValueError:
        others_may_read = True
    owner = props.get("owner")
    expect(
        not others_may_read,
        "the TLS key readable by its owner only",
        f"mode {mode} owner {'None' if owner is None else f'Some({debug(owner)})'}",
    )


@case("sshd")
def test_security__ssh_config(guest):
    methods, password_accepted = guest.ssh_auth_probe("agent", "password")
    expect(
        not password_accepted and not any(m in ("password", "keyboard-interactive") for m in methods),
        "sshd to offer agent neither password nor keyboard-interactive login",
        f"methods {json.dumps(methods)}, password accepted: {str(password_accepted).lower()}",
    )
    root = guest.ssh_key_login("root")
    expect(root is not None, "a key login as root to be refused", "root logged in with agent's key")
    agent = guest.ssh_key_login("agent")
    if agent is not None:
        raise GuestError(f"guest {guest.name}: SSH key login as agent: {agent}")
    effective = guest.succeed("sudo sshd -T")
    for key, value in [
        ("passwordauthentication", "no"),
        ("permitrootlogin", "no"),
        ("kbdinteractiveauthentication", "no"),
    ]:
        line = next((l for l in lines(effective) if l.split()[:1] == [key]), "(absent)")
        words = line.split()
        expect(len(words) > 1 and words[1] == value, f"sshd -T: {key} {value}", line)


def canary_dropped(guest):
    """The canary answers inside the guest, is dropped outside; the input policy is drop."""
    guest.wait_until_succeeds(f"ss -Htln 'sport = :{CANARY_PORT}' | grep -F 0.0.0.0:{CANARY_PORT} >/dev/null", 30)
    # The guest's own address, not loopback: what the firewall sees from outside.
    address = guest.succeed("ip -4 -o addr show scope global | awk 'NR == 1 { split($4, a, \"/\"); print a[1] }'")
    inside = guest.succeed(
        f"timeout 5 bash -c 'exec 3<>/dev/tcp/{address.strip()}/{CANARY_PORT}; head -c 6 <&3'"
    )
    expect(inside == "canary", "the canary to answer inside the guest", debug(inside))
    outside = probe_or_fail(guest.forward(CANARY_PORT))
    ruleset = guest.succeed("sudo nft list ruleset")
    expect(
        outside == SILENT,
        f"the canary on 0.0.0.0:{CANARY_PORT} to be dropped from outside (no answer, no reset)",
        repr(outside),
        lambda: f"--- nft list ruleset ---\n{ruleset}",
    )
    input_policy_drop = any("hook input" in l and "policy drop" in l for l in lines(ruleset))
    expect(input_policy_drop, "the input chain's policy to be drop", "no input hook with policy drop", lambda: ruleset)


@case("firewall")
def test_security__firewall_config(guest):
    backends_ready(guest, [("vibe-kanban", 3000)])
    ssh = probe_or_fail(guest.ssh_addr)
    expect(
        ssh.answered and ssh.text.startswith("SSH-"), "port 22 to answer with an SSH banner", repr(ssh)
    )
    status_is(guest.https_get("/"), "GET / on 3002", 200)
    # Every port listened on off loopback, and the closed ones: only 22 and 3002 may answer.
    listening = exposed_ports(guest.succeed("ss -Htln"))
    ports = sorted(p for p in listening | set(CLOSED_PORTS) if p not in OPEN_PORTS)
    # All at once: a dropped port costs the whole PROBE_WAIT.
    addrs = [(port, guest.forward(port)) for port in ports]
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(addrs)) as pool:
        futures = [(port, pool.submit(probe, addr, PROBE_WAIT)) for port, addr in addrs]
        results = [(port, future.exception() or future.result()) for port, future in futures]
    for port, result in results:
        if isinstance(result, BaseException):
            raise CaseFailure(f"probing a forwarded port: {result}")
        listener = " (the guest listens on it at a non-loopback address)" if port in listening else ""
        expect(
            not result.answered,
            f"guest port {port}{listener} to give no answer from outside: only 22 and 3002 may",
            repr(result),
        )
    # The canary lives only for this case: the guest is left as it was found.
    listening = f"0.0.0.0:{CANARY_PORT}" in guest.succeed(f"ss -Htln 'sport = :{CANARY_PORT}'")
    if not listening:
        guest.succeed(
            "sudo systemd-run --unit=rave-canary --collect -p Type=simple systemd-socket-activate "
            f"-l 0.0.0.0:{CANARY_PORT} --accept --inetd /bin/echo canary"
        )
    try:
        canary_dropped(guest)
    finally:
        if not listening:
            guest.succeed("sudo systemctl stop rave-canary.service")


@case("secrets", "webhook-dispatcher")
def test_security__secrets_management(guest):
    fstype = guest.succeed("findmnt -n -o FSTYPE --target /run/secrets").strip()
    expect(fstype == "tmpfs", "/run/secrets on a tmpfs", fstype)
    for name, owner in SECRET_OWNERS:
        seen = guest.succeed(f"sudo stat -c '%a %U' /run/secrets/{name}").strip()
        expect(seen == f"400 {owner}", f"/run/secrets/{name} mode 400 owned by {owner}", seen)
    backends_ready(guest, [("webhook-dispatcher", 3001)])
    secret = webhook_secret(guest)
    # The pattern comes from the secret's file (a command line would log it).
    out = guest.execute(f"sudo bash -c {quote(secret_search_script(guest))}")
    if out.rc != 0:
        raise CaseFailure(
            f"the search for the webhook secret's plaintext could not be done (exit {out.rc}): {out.stderr.strip()}"
        )
    searched, _, rest = out.stdout.partition("\n")
    found = [name for name in rest.split("\0") if name]
    expect(not found, "the webhook secret's plaintext nowhere but /run/secrets", f"it in {', '.join(found)}", lambda: searched)
    encrypted = guest.succeed("sudo head -c 21 /etc/rave/secrets/webhook-gitlab-secret.age")
    expect(
        encrypted.startswith("age-encryption.org/v1"), "the secret stored age-encrypted on the disk", debug(encrypted)
    )
    answer = post_push(guest, secret, fresh_delivery_key("rave-secrets"))
    expect(
        200 <= answer.status < 300, "the dispatcher to accept the decrypted secret", answer.status, answer.describe
    )


# === p2_observability ===========================================================

#: The scrape jobs the contract configures.
JOBS = ["prometheus", "node", "pushgateway", "webhook-dispatcher"]
#: The alert rules the contract loads.
ALERTS = ["HighMemoryUsage", "HighCPUUsage", "HighDiskUsage", "ServiceDown", "WebhookErrorRate"]
#: Long enough for two scrapes at SAFE mode's 30 s interval.
SCRAPE_WAIT = 75.0


def at(value, *path):
    """serde_json's value[a][b]...: None where a key or index is missing."""
    for key in path:
        if isinstance(key, str) and isinstance(value, dict):
            value = value.get(key)
        elif isinstance(key, int) and isinstance(value, list) and 0 <= key < len(value):
            value = value[key]
        else:
            return None
    return value


def text_of(value, default=None):
    """serde_json's as_str().unwrap_or(default)."""
    return value if isinstance(value, str) else default


def prometheus_api(guest, path):
    """The `data` of a Prometheus API answer, fetched inside the guest."""
    text = guest.succeed(f"curl -fsS {quote('http://127.0.0.1:9090' + path)}")
    try:
        value = json.loads(text)
    except ValueError as e:
        raise CaseFailure(f"Prometheus {path} is not JSON ({e}): {text}") from None
    return at(value, "data")


def format_value(v):
    """Prometheus's text form of a sample value (integers without a fraction)."""
    return str(int(v)) if float(v).is_integer() else repr(v)


def prometheus_sees(guest, query, op, value):
    """Waits (bounded) until Prometheus's value of `query` compares to `value`
    as `op` in a scrape it holds (a non-empty result of the comparison)."""
    condition = f"{query} {op} {format_value(value)}"
    command = f"curl -fsS -G --data-urlencode {quote('query=' + condition)} http://127.0.0.1:9090/api/v1/query"

    def poll():
        out = guest.execute(command)
        if out.rc != 0:
            return False, f"exit {out.rc}: {out.stderr.strip()}"
        try:
            answer = json.loads(out.stdout)
        except ValueError as e:
            return False, f"Prometheus' answer is not JSON ({e}): {out.stdout}"
        result = at(answer, "data", "result")
        return (isinstance(result, list) and len(result) > 0), f"no series meets it: {at(answer, 'data')}"

    try:
        wait_until(poll, SCRAPE_WAIT, 0.5)
    except Expired as e:
        raise CaseFailure(f"expected Prometheus to scrape {condition} within {SCRAPE_WAIT:.0f}s, it did not:\n{e}") from None


def metric(text, name):
    """A sample's value from the Prometheus text format (first parsable `NAME value` line)."""
    for line in lines(text):
        if line.startswith(name + " "):
            try:
                return float(line[len(name) + 1 :].strip())
            except ValueError:
                continue
    raise CaseFailure(f"metric {name} not exposed by the dispatcher")


@case("prometheus")
def test_p2_observability__prometheus_health(guest):
    service_is_healthy(guest, "prometheus")
    # A (re)started Prometheus answers only after it has loaded its data.
    guest.wait_until_succeeds("curl -fsS -o /dev/null http://127.0.0.1:9090/-/ready", SCRAPE_WAIT)
    for path in ["/-/healthy", "/-/ready"]:
        code = guest.succeed(f"curl -s -o /dev/null -w '%{{http_code}}' http://127.0.0.1:9090{path}")
        expect(code == "200", f"Prometheus {path} to answer 200", code)
    safe = guest.manifest.safe_mode
    retention, interval = ("3d", "30s") if safe else ("7d", "15s")
    flags = prometheus_api(guest, "/api/v1/status/flags")
    seen = text_of(at(flags, "storage.tsdb.retention.time"), "(unset)")
    expect(seen == retention, f"retention {retention} (SAFE={str(safe).lower()})", seen)
    config = prometheus_api(guest, "/api/v1/status/config")
    yaml = text_of(at(config, "yaml"), "")
    line = next((l for l in lines(yaml) if l.lstrip().startswith("scrape_interval:")), "(none)").strip()
    expect(line == f"scrape_interval: {interval}", f"global scrape_interval {interval}", line)


# A job's health in scrapes newer than a start (TargetHealth): (kind, detail).
UP = ("up", None)


def show_health(health):
    kind, detail = health
    return {
        "up": "up",
        "not_scraped": f"not scraped since the case began (last: {detail})",
        "down": f"down ({detail})",
        "not_configured": "not configured",
    }[kind]


def is_final(health):
    """No later scrape can make the job up: no target, or nothing listening."""
    kind, detail = health
    return kind == "not_configured" or (kind == "down" and "connection refused" in detail)


def target_health(guest, since):
    """Each of JOBS with the health of its targets in scrapes newer than `since` (guest epoch seconds)."""
    targets = prometheus_api(guest, "/api/v1/targets?state=active")
    scraped = prometheus_api(guest, "/api/v1/query?query=timestamp(up)")

    def scraped_at(job, instance):
        for r in text_of_list(at(scraped, "result")):
            if at(r, "metric", "job") == job and at(r, "metric", "instance") == instance:
                try:
                    return float(text_of(at(r, "value", 1)))
                except (TypeError, ValueError):
                    continue
        return None

    every = text_of_list(at(targets, "activeTargets"))
    result = []
    for job in JOBS:
        mine = [t for t in every if at(t, "labels", "job") == job]
        if not mine:
            result.append((job, ("not_configured", None)))
            continue
        health = UP
        for target in mine:
            error = text_of(at(target, "lastError"), "")
            url = text_of(at(target, "scrapeUrl"), "?")
            state = text_of(at(target, "health"), "unknown")
            at_time = scraped_at(at(target, "labels", "job"), at(target, "labels", "instance"))
            fresh = at_time is not None and at_time > since
            if not fresh:
                this = ("not_scraped", f"{state} {url} {error}".strip())
            elif state == "up":
                this = UP
            else:
                this = ("down", f"{url}: {error}")
            # The worst target speaks for the job: down, then not scraped, then up.
            if health[0] == "down":
                pass
            elif this[0] == "down":
                health = this
            elif health[0] == "not_scraped":
                pass
            else:
                health = this
        result.append((job, health))
    return result


def text_of_list(value):
    """serde_json's as_array() flattened: [] unless a list."""
    return value if isinstance(value, list) else []


@case("prometheus", "pushgateway", "node-exporter", "webhook-dispatcher")
def test_p2_observability__prometheus_targets(guest):
    backends_ready(
        guest,
        [("prometheus", 9090), ("node-exporter", 9100), ("pushgateway", 9091), ("webhook-dispatcher", 3001)],
    )
    # Health is as old as the last scrape: judge only scrapes newer than now.
    now = guest.succeed("date +%s.%N").strip()
    try:
        started = float(now)
    except ValueError as e:
        raise CaseFailure(f"the guest's `date +%s.%N` is not a number: {e}") from None
    expected = (
        f"every target of {json.dumps(JOBS)} up in a scrape newer than the case's start "
        f"(waited up to {SCRAPE_WAIT:.0f}s)"
    )

    def poll():
        jobs = target_health(guest, started)
        seen = ", ".join(f"{job}: {show_health(health)}" for job, health in jobs)
        if all(health == UP for _, health in jobs):
            return True, None
        if any(is_final(health) for _, health in jobs):
            raise CaseFailure(f"expected {expected}, saw {seen}\n")
        return False, seen

    try:
        wait_until(poll, SCRAPE_WAIT, 2.0)
    except Expired as e:
        raise CaseFailure(f"expected {expected}, saw {e.last_seen} (after {e.waited:.1f}s)\n") from None


@case("node-exporter")
def test_p2_observability__node_exporter(guest):
    exported = guest.succeed(
        "curl -fsS http://127.0.0.1:9100/metrics | awk '$1 == \"node_memory_MemTotal_bytes\" { print $2 }'"
    )
    try:
        exported = float(exported.strip())
    except ValueError:
        raise CaseFailure(f"node_memory_MemTotal_bytes not exported (saw {debug(exported)})") from None
    try:
        kb = float(guest.succeed("awk '$1 == \"MemTotal:\" { print $2 }' /proc/meminfo").strip())
    except ValueError:
        raise CaseFailure("no MemTotal in /proc/meminfo") from None
    actual = kb * 1024.0
    expect(
        abs((exported - actual) / actual) <= 0.01,
        f"node_memory_MemTotal_bytes within 1% of MemTotal {format_value(actual)}",
        format_value(exported),
    )


@case("grafana", "prometheus")
def test_p2_observability__grafana_integration(guest):
    health = guest.succeed("curl -fsS http://127.0.0.1:3030/api/health")
    expect('"ok"' in health, "Grafana healthy", health)
    search = guest.succeed("curl -fsS 'http://127.0.0.1:3030/api/search?type=dash-db'")
    for title in ["Project Health", "Agent Performance", "System Health"]:
        expect(title in search, f"dashboard {title} provisioned", search)
    query = guest.succeed(
        "curl -fsS 'http://127.0.0.1:3030/api/datasources/proxy/uid/prometheus/api/v1/query?query=up'"
    )
    expect('"__name__":"up"' in query, "the up series through Grafana's Prometheus datasource", query)


@case("prometheus", "pushgateway", "webhook-dispatcher")
def test_p2_observability__webhook_metrics(guest):
    def read():
        text = guest.succeed("curl -fsS http://127.0.0.1:3001/metrics")
        return metric(text, "webhook_requests_total"), metric(text, "webhook_errors_total")

    backends_ready(guest, [("webhook-dispatcher", 3001), ("pushgateway", 9091), ("prometheus", 9090)])
    secret = webhook_secret(guest)
    key = fresh_delivery_key("rave-metrics")

    # The counters are the guest's: no other case's request may land in between.
    def counted():
        requests_before, errors_before = read()
        accepted = post_push(guest, secret, key)
        expect(200 <= accepted.status < 300, "the valid webhook accepted", accepted.status, accepted.describe)
        rejected = post_push(guest, "wrong-token", key)
        expect(rejected.status == 401, "the webhook with a wrong token rejected (401)", rejected.status, rejected.describe)
        requests_after, errors_after = read()
        rise = requests_after - requests_before
        expect(rise == 2.0, "webhook_requests_total to rise by 2", format_value(rise))
        rise = errors_after - errors_before
        expect(rise == 1.0, "webhook_errors_total to rise by 1", format_value(rise))
        return requests_after, errors_after

    requests_after, errors_after = guest.exclusively(counted)
    # Pushed before any wait, so one scrape can carry all three figures.
    pushed = 4242
    guest.succeed(
        f"printf 'rave_case_pushed {pushed}\\n' | curl -fsS --data-binary @- http://127.0.0.1:9091/metrics/job/rave-case"
    )
    # A counter scraped at or above its value after our requests proves a scrape that counted them.
    prometheus_sees(guest, "webhook_requests_total", ">=", requests_after)
    prometheus_sees(guest, "webhook_errors_total", ">=", errors_after)
    prometheus_sees(guest, 'rave_case_pushed{job="rave-case"}', "==", float(pushed))


@case("prometheus")
def test_p2_observability__safe_mode_constraints(guest):
    manifest = guest.manifest
    prometheus_max, grafana_max = ("256M", "128M") if manifest.safe_mode else ("512M", "256M")
    limits = [("prometheus", prometheus_max)]
    if manifest.has("grafana"):
        limits.append(("grafana", grafana_max))
    for component, limit in limits:
        unit = manifest.unit(component)
        props = parse_properties(guest.succeed(f"systemctl show -p MemoryMax -p MemoryCurrent {quote(unit)}"))
        seen_max = props.get("MemoryMax", "")
        current = props.get("MemoryCurrent", "")
        current = int(current) if current.isdigit() else None
        expected = size_bytes(limit) or 0
        safe = str(manifest.safe_mode).lower()
        expect(seen_max == str(expected), f"{unit} MemoryMax={limit} (SAFE={safe})", f"MemoryMax={seen_max}")
        expect(
            current is not None and current < expected,
            f"{unit} MemoryCurrent under {limit}",
            "None" if current is None else f"Some({current})",
        )
    rules = prometheus_api(guest, "/api/v1/rules")
    loaded = [
        rule["name"]
        for group in text_of_list(at(rules, "groups"))
        for rule in text_of_list(at(group, "rules"))
        if isinstance(at(rule, "name"), str)
    ]
    missing = [a for a in ALERTS if a not in loaded]
    expect(
        not missing,
        f"alert rules {json.dumps(ALERTS)} loaded",
        f"missing {json.dumps(missing)}, loaded {json.dumps(loaded)}",
    )
