//! http-health: through nginx on 3002 with TLS verified against the image CA,
//! each route answers as its service, and every answer carries the security headers.

use rave_harness::outcome::{expect, CheckResult};
use rave_harness::Machine;

use crate::case::{Case, Fault, ALL_PROFILES};
use crate::checks::{
    backends_ready, edit_nginx_site, fresh_delivery_key, post_push, security_headers, status_is, stop_unit, stored,
    webhook_secret,
};

/// The suite's cases, each with its fault.
pub fn cases() -> Vec<Case> {
    vec![
        Case {
            suite: "http_health",
            name: "vibe_kanban_response",
            profiles: ALL_PROFILES,
            components: &["nginx", "vibe-kanban"],
            check: vibe_kanban_response,
            fault: Fault {
                description: "nginx's / serving a page of its own instead of vibe-kanban",
                inject: |m| {
                    edit_nginx_site(m, "s#proxy_pass http://127.0.0.1:3000;#default_type text/html; return 200 '<title>Welcome to nginx!</title>';#")
                },
                must_say: &["to be the vibe-kanban app", "Welcome to nginx"],
            },
            waits_long: false,
            extra_faults: &[],
        },
        Case {
            suite: "http_health",
            name: "grafana_response",
            profiles: ALL_PROFILES,
            components: &["nginx", "grafana"],
            check: grafana_response,
            fault: Fault {
                description: "the grafana unit stopped behind nginx",
                inject: |m| stop_unit(m, "grafana"),
                must_say: &["502"],
            },
            waits_long: false,
            extra_faults: &[],
        },
        Case {
            suite: "http_health",
            name: "ccr_response",
            profiles: ALL_PROFILES,
            components: &["nginx", "claude-code-router"],
            check: ccr_response,
            fault: Fault {
                description: "nginx's /ccr-ui/ proxied to a path claude-code-router does not serve",
                inject: |m| {
                    edit_nginx_site(
                        m,
                        "s#proxy_pass http://127.0.0.1:3456/ui/;#proxy_pass http://127.0.0.1:3456/nope/;#",
                    )
                },
                must_say: &["GET /ccr-ui/ to answer 200", "saw 404"],
            },
            waits_long: false,
            extra_faults: &[],
        },
        Case {
            suite: "http_health",
            name: "webhook_security",
            profiles: ALL_PROFILES,
            components: &["nginx", "webhook-dispatcher"],
            check: webhook_security,
            fault: Fault {
                description: "nginx's X-Frame-Options header removed",
                inject: |m| edit_nginx_site(m, "/X-Frame-Options/d"),
                must_say: &["header x-frame-options", "None"],
            },
            waits_long: false,
            extra_faults: &[],
        },
    ]
}

/// `http_health::vibe_kanban_response`: `/` is the vibe-kanban app, not an nginx page.
pub fn vibe_kanban_response(machine: &Machine) -> CheckResult {
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
pub fn grafana_response(machine: &Machine) -> CheckResult {
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
pub fn ccr_response(machine: &Machine) -> CheckResult {
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
pub fn webhook_security(machine: &Machine) -> CheckResult {
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
