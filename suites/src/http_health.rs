//! http-health: through nginx on 3002 with TLS verified against the image CA,
//! each route answers as its service, and every answer carries the security headers.

use rave_harness::https::HttpResponse;
use rave_harness::machine::quote;
use rave_harness::{Machine, MachineError};

use crate::failure::{expect, CaseFailure, CaseResult};
use crate::systemd_services::UNIT_TIMEOUT;

/// The headers every answer through nginx must carry, with the value each must have (if fixed).
pub const SECURITY_HEADERS: &[(&str, Option<&str>)] = &[
    ("strict-transport-security", None),
    ("x-content-type-options", Some("nosniff")),
    ("x-frame-options", None),
    ("referrer-policy", None),
];

/// `http_health::vibe_kanban_response`: `/` is the vibe-kanban app, not an nginx page.
pub fn vibe_kanban_response(machine: &Machine) -> CaseResult {
    backends_ready(machine, &[("vibe-kanban", 3000)])?;
    let answer = machine.https_get("/")?;
    status_is(&answer, "GET /", 200)?;
    security_headers(&answer, "GET /")?;
    expect(
        answer.body.contains("<title>vibe-kanban</title>") && !answer.body.contains("Welcome to nginx"),
        "GET / to be the vibe-kanban app (<title>vibe-kanban</title>)",
        "another page",
        || answer.describe(),
    )
}

/// `http_health::grafana_response`: `/grafana/api/health` says the database is ok.
pub fn grafana_response(machine: &Machine) -> CaseResult {
    backends_ready(machine, &[("grafana", 3030)])?;
    let answer = machine.https_get("/grafana/api/health")?;
    status_is(&answer, "GET /grafana/api/health", 200)?;
    security_headers(&answer, "GET /grafana/api/health")?;
    expect(
        answer.body.replace(' ', "").contains("\"database\":\"ok\""),
        "JSON with database == \"ok\"",
        "another body",
        || answer.describe(),
    )
}

/// `http_health::ccr_response`: `/ccr-ui/` is claude-code-router's UI.
pub fn ccr_response(machine: &Machine) -> CaseResult {
    backends_ready(machine, &[("claude-code-router", 3456)])?;
    let answer = machine.https_get("/ccr-ui/")?;
    status_is(&answer, "GET /ccr-ui/", 200)?;
    security_headers(&answer, "GET /ccr-ui/")?;
    expect(
        answer.body.contains("<title>CCR UI</title>"),
        "GET /ccr-ui/ to be claude-code-router's UI (<title>CCR UI</title>)",
        "another page",
        || answer.describe(),
    )
}

/// `http_health::webhook_security`: no token and a wrong token get 401; the
/// right token (the guest's decrypted secret) with a valid event gets 2xx and
/// the event is stored once, also when delivered again; GET gets 405.
pub fn webhook_security(machine: &Machine) -> CaseResult {
    backends_ready(machine, &[("webhook-dispatcher", 3001)])?;
    let secret = webhook_secret(machine)?;
    let key = fresh_delivery_key("rave-case");
    let event = |token: Option<&str>| post_push(machine, token, &key);
    let no_token = event(None)?;
    status_is(&no_token, "POST /webhook without a token", 401)?;
    security_headers(&no_token, "POST /webhook")?;
    status_is(&event(Some("not-the-secret"))?, "POST /webhook with a wrong token", 401)?;
    expect(
        stored(machine, &key)? == 0,
        "nothing stored for refused deliveries",
        "a stored row",
        String::new,
    )?;
    let first = event(Some(&secret))?;
    expect(
        (200..300).contains(&first.status),
        "POST /webhook with the secret to be accepted (2xx)",
        first.status,
        || first.describe(),
    )?;
    let again = event(Some(&secret))?;
    expect(
        (200..300).contains(&again.status),
        "the same delivery again to be acknowledged (2xx)",
        again.status,
        || again.describe(),
    )?;
    let rows = stored(machine, &key)?;
    expect(
        rows == 1,
        &format!("delivery {key} stored exactly once"),
        format!("{rows} rows"),
        String::new,
    )?;
    let get = machine.https_get("/webhook")?;
    status_is(&get, "GET /webhook", 405)?;
    security_headers(&get, "GET /webhook")
}

/// Waits (bounded) until nginx and each backend's unit is active and its
/// port listens: a service is "up" for a user only once it answers.
pub fn backends_ready(machine: &Machine, backends: &[(&str, u16)]) -> CaseResult {
    let manifest = &machine.image().manifest;
    machine.wait_for_unit(manifest.unit("nginx").map_err(CaseFailure::new)?, UNIT_TIMEOUT)?;
    machine.wait_for_open_port(crate::security::GUEST_HTTPS_PORT, UNIT_TIMEOUT)?;
    for (component, port) in backends {
        machine.wait_for_unit(manifest.unit(component).map_err(CaseFailure::new)?, UNIT_TIMEOUT)?;
        machine.wait_for_open_port(*port, UNIT_TIMEOUT)?;
    }
    Ok(())
}

/// A delivery key no earlier request used (a fault test runs its case twice on one guest).
pub fn fresh_delivery_key(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!("{prefix}-{nanos}")
}

/// POSTs a push event to `/webhook` as GitLab sends it, with `token` as
/// X-Gitlab-Token (none: no header) and `key` as X-Gitlab-Event-UUID.
pub fn post_push(machine: &Machine, token: Option<&str>, key: &str) -> Result<HttpResponse, MachineError> {
    let mut headers = vec![
        ("content-type", "application/json"),
        ("x-gitlab-event", "Push Hook"),
        ("x-gitlab-event-uuid", key),
    ];
    if let Some(token) = token {
        headers.push(("x-gitlab-token", token));
    }
    machine.https(
        "POST",
        "/webhook",
        &headers,
        Some(r#"{"object_kind":"push","ref":"refs/heads/main"}"#),
    )
}

/// The webhook secret as the dispatcher reads it (decrypted at boot).
pub fn webhook_secret(machine: &Machine) -> Result<String, CaseFailure> {
    Ok(machine
        .succeed("sudo cat /run/secrets/webhook-gitlab-secret")?
        .trim_end_matches('\n')
        .to_string())
}

/// Rows the dispatcher stored for delivery `key`.
pub fn stored(machine: &Machine, key: &str) -> Result<i64, CaseFailure> {
    let sql = format!(
        "SELECT count(*) FROM webhook_events WHERE delivery_key = '{}'",
        key.replace('\'', "''")
    );
    let out = machine.succeed(&format!("sudo -u postgres psql -d webhook -XAtc {}", quote(&sql)))?;
    out.trim()
        .parse()
        .map_err(|_| CaseFailure::new(format!("could not count stored events: {out:?}")))
}

/// Fails unless `answer` has `status`.
pub fn status_is(answer: &HttpResponse, what: &str, status: u16) -> CaseResult {
    expect(
        answer.status == status,
        &format!("{what} to answer {status}"),
        answer.status,
        || answer.describe(),
    )
}

/// Fails unless `answer` carries every security header.
pub fn security_headers(answer: &HttpResponse, what: &str) -> CaseResult {
    for (name, value) in SECURITY_HEADERS {
        let seen = answer.header(name);
        let ok = match (seen, value) {
            (Some(seen), Some(value)) => seen.eq_ignore_ascii_case(value),
            (Some(seen), None) => !seen.is_empty(),
            (None, _) => false,
        };
        expect(
            ok,
            &format!(
                "{what}: header {name}{}",
                value.map(|v| format!(": {v}")).unwrap_or_default()
            ),
            format!("{seen:?}"),
            || answer.describe(),
        )?;
    }
    Ok(())
}
