//! What several cases check or do the same way, once: a component's unit,
//! waiting for backends, webhooks posted as GitLab posts them, HTTP answers
//! judged, Prometheus asked, and the faults' common moves (stopping a unit,
//! overriding it, editing nginx's site).

use std::collections::BTreeSet;
use std::time::Duration;

use rave::RaveImage;
use rave_harness::https::HttpResponse;
use rave_harness::outcome::{expect, CheckError, CheckResult};
use rave_harness::retry::Poll;
use rave_harness::{quote, Machine, MachineError};
use serde_json::Value;

/// How long a unit may take to become active after SSH answers.
pub const UNIT_TIMEOUT: Duration = Duration::from_secs(120);

/// Long enough for two scrapes at SAFE mode's 30 s interval.
pub const SCRAPE_WAIT: Duration = Duration::from_secs(75);

/// The headers every answer through nginx must carry, with the value each must have (if fixed).
pub const SECURITY_HEADERS: &[(&str, Option<&str>)] = &[
    ("strict-transport-security", None),
    ("x-content-type-options", Some("nosniff")),
    ("x-frame-options", None),
    ("referrer-policy", None),
];

/// The unit of `component` in the guest's image, or why the image lacks it.
pub fn unit_of<'m>(machine: &'m Machine, component: &str) -> Result<&'m str, CheckError> {
    machine.image().manifest.unit(component).map_err(CheckError::harness)
}

/// What the guest's image is, as a rave image.
pub fn rave_image(machine: &Machine) -> Result<RaveImage, CheckError> {
    RaveImage::of(machine.image()).map_err(CheckError::harness)
}

/// The guest's HTTPS port (nginx, `rave.local`), as its image names it.
pub fn https_port(machine: &Machine) -> Result<u16, CheckError> {
    machine
        .image()
        .manifest
        .https
        .as_ref()
        .map(|https| https.port)
        .ok_or_else(|| CheckError::harness("the image serves no HTTPS (its manifest has no `https`)"))
}

/// Waits (bounded) until nginx and each backend's unit is active and its
/// port listens: a service is "up" for a user only once it answers.
pub fn backends_ready(machine: &Machine, backends: &[(&str, u16)]) -> CheckResult {
    machine.wait_for_unit(unit_of(machine, "nginx")?, UNIT_TIMEOUT)?;
    machine.wait_for_open_port(https_port(machine)?, UNIT_TIMEOUT)?;
    for (component, port) in backends {
        machine.wait_for_unit(unit_of(machine, component)?, UNIT_TIMEOUT)?;
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

/// The body of the push events the checks send.
pub const PUSH_BODY: &str = r#"{"object_kind":"push","ref":"refs/heads/main"}"#;

/// The headers GitLab sends with a push event, with `token` as
/// X-Gitlab-Token (none: no header) and `key` as X-Gitlab-Event-UUID.
pub fn push_headers<'a>(token: Option<&'a str>, key: &'a str) -> Vec<(&'a str, &'a str)> {
    let mut headers = vec![
        ("content-type", "application/json"),
        ("x-gitlab-event", "Push Hook"),
        ("x-gitlab-event-uuid", key),
    ];
    if let Some(token) = token {
        headers.push(("x-gitlab-token", token));
    }
    headers
}

/// POSTs a push event to `/webhook` as GitLab sends it (see [`push_headers`]).
pub fn post_push(machine: &Machine, token: Option<&str>, key: &str) -> Result<HttpResponse, MachineError> {
    machine.https("POST", "/webhook", &push_headers(token, key), Some(PUSH_BODY))
}

/// The webhook secret as the dispatcher reads it (decrypted at boot); an
/// empty one is an error (every token would match it, or none).
pub fn webhook_secret(machine: &Machine) -> Result<String, CheckError> {
    let secret = machine
        .succeed("sudo cat /run/secrets/webhook-gitlab-secret")?
        .trim_end_matches('\n')
        .to_string();
    if secret.trim().is_empty() {
        return Err(CheckError::failed(
            "expected a webhook secret in /run/secrets/webhook-gitlab-secret, saw an empty file",
        ));
    }
    Ok(secret)
}

/// Rows the dispatcher stored for delivery `key`.
pub fn stored(machine: &Machine, key: &str) -> Result<i64, CheckError> {
    let sql = format!(
        "SELECT count(*) FROM webhook_events WHERE delivery_key = '{}'",
        key.replace('\'', "''")
    );
    let out = machine.succeed(&format!("sudo -u postgres psql -d webhook -XAtc {}", quote(&sql)))?;
    out.trim()
        .parse()
        .map_err(|_| CheckError::failed(format!("could not count stored events: {out:?}")))
}

/// The deliveries the dispatcher stored whose key starts with `prefix`
/// (keys made by [`fresh_delivery_key`] hold no `%` or `_`).
pub fn stored_with_prefix(machine: &Machine, prefix: &str) -> Result<BTreeSet<String>, CheckError> {
    let sql = format!(
        "SELECT delivery_key FROM webhook_events WHERE delivery_key LIKE '{}%'",
        prefix.replace('\'', "''")
    );
    let out = machine.succeed(&format!("sudo -u postgres psql -d webhook -XAtc {}", quote(&sql)))?;
    Ok(out.lines().map(str::to_string).collect())
}

/// Fails unless `answer` has `status`.
pub fn status_is(answer: &HttpResponse, what: &str, status: u16) -> CheckResult {
    expect(
        answer.status == status,
        &format!("{what} to answer {status}"),
        answer.status,
        || answer.describe(),
    )
}

/// Fails unless `answer` carries every security header.
pub fn security_headers(answer: &HttpResponse, what: &str) -> CheckResult {
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

/// The `data` of a Prometheus API answer, fetched inside the guest.
pub fn prometheus_api(machine: &Machine, path: &str) -> Result<Value, CheckError> {
    Ok(prometheus_apis(machine, &[path])?.remove(0))
}

/// What separates two answers of [`prometheus_apis`] (never in Prometheus' JSON).
const ANSWER_END: &str = "\n<rave-answer-end>\n";

/// The `data` of several Prometheus API answers, in the order of `paths`,
/// fetched one after another by one guest command, so a wait's look starts
/// one remote shell instead of one per path (BENCHMARKS.md, "Where the
/// guest's CPU goes"). A failed fetch fails the command; the error names its path.
pub fn prometheus_apis(machine: &Machine, paths: &[&str]) -> Result<Vec<Value>, CheckError> {
    let text = machine.succeed(&fetch_command(paths)).map_err(|e| {
        // The answers ended before it tell which fetch failed (the error's
        // command is cut short, and curl's message names no path).
        let failed = match &e {
            MachineError::CommandFailed { stdout, .. } => paths.get(stdout.matches(ANSWER_END).count()).copied(),
            _ => None,
        };
        let e = CheckError::from(e);
        match failed {
            Some(path) => CheckError {
                message: format!("reading Prometheus {path}: {}", e.message),
                ..e
            },
            None => e,
        }
    })?;
    read_answers(paths, &text)
}

/// [`prometheus_apis`]'s command: each path's curl, then the end mark.
fn fetch_command(paths: &[&str]) -> String {
    let fetches: Vec<String> = paths
        .iter()
        .map(|path| {
            format!(
                "curl -fsS {}; printf {}",
                quote(&format!("http://127.0.0.1:9090{path}")),
                quote(&ANSWER_END.replace('\n', "\\n"))
            )
        })
        .collect();
    fetches.join("; ")
}

/// Each answer's `data`, from what [`prometheus_apis`]'s command printed.
fn read_answers(paths: &[&str], text: &str) -> Result<Vec<Value>, CheckError> {
    let answers: Vec<&str> = text.split_terminator(ANSWER_END).collect();
    if answers.len() != paths.len() || !text.ends_with(ANSWER_END) {
        return Err(CheckError::harness(format!(
            "expected {} Prometheus answers, each ended by {ANSWER_END:?}, got: {text}",
            paths.len()
        )));
    }
    paths
        .iter()
        .zip(answers)
        .map(|(path, text)| {
            let value: Value = serde_json::from_str(text)
                .map_err(|e| CheckError::failed(format!("Prometheus {path} is not JSON ({e}): {text}")))?;
            Ok(value["data"].clone())
        })
        .collect()
}

/// Waits (bounded) until Prometheus's value of `query` compares to `value`
/// as `op` (a PromQL comparison such as `==` or `>=`) in a scrape it holds.
pub fn prometheus_sees(machine: &Machine, query: &str, op: &str, value: f64) -> CheckResult {
    let condition = format!("{query} {op} {}", format_value(value));
    // A comparison without `bool` keeps only the series that meet it: a non-empty result.
    let command = format!(
        "curl -fsS -G --data-urlencode {} http://127.0.0.1:9090/api/v1/query",
        quote(&format!("query={condition}")),
    );
    machine
        .wait_until(
            &format!("Prometheus to hold {condition}"),
            SCRAPE_WAIT,
            // Scrapes come every 15 or 30 s: a look a second is soon enough,
            // and each look costs the guest a command (was every 0.5 s).
            Duration::from_secs(1),
            || match machine.execute(&command) {
                Ok(out) if out.status == 0 => match serde_json::from_str::<Value>(&out.stdout) {
                    Ok(answer) if answer["data"]["result"].as_array().is_some_and(|r| !r.is_empty()) => Poll::Ready(()),
                    Ok(answer) => Poll::Pending(format!("no series meets it: {}", answer["data"])),
                    Err(e) => Poll::Pending(format!("Prometheus' answer is not JSON ({e}): {}", out.stdout)),
                },
                Ok(out) => Poll::Pending(format!("exit {}: {}", out.status, out.stderr.trim())),
                Err(e @ MachineError::QemuExited { .. }) => Poll::Abort(e),
                Err(e) => Poll::Pending(e.to_string()),
            },
        )
        .map(|_| ())
        .map_err(|e| {
            CheckError::failed(format!(
                "expected Prometheus to scrape {condition} within {SCRAPE_WAIT:?}, it did not:\n{e}"
            ))
        })
}

/// Prometheus's text form of a sample value (integers without a fraction).
fn format_value(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{}", v as i64)
    } else {
        v.to_string()
    }
}

/// Applies the sed `script` to nginx's rave.local site and restarts nginx (a fault).
pub fn edit_nginx_site(machine: &Machine, script: &str) -> Result<(), MachineError> {
    edit_nginx_conf(machine, "rave.local.conf", script)
}

/// Applies the sed `script` to nginx's site `file` (in sites-enabled) and
/// restarts nginx (a fault); a script that changes nothing is an error.
pub fn edit_nginx_conf(machine: &Machine, file: &str, script: &str) -> Result<(), MachineError> {
    let path = quote(&format!("/etc/nginx/sites-enabled/{file}"));
    machine
        .succeed(&format!(
            "before=$(sudo sha256sum {path}) && sudo sed -i {script} {path} && test \"$(sudo sha256sum {path})\" != \"$before\" && sudo nginx -t -q && sudo systemctl restart nginx",
            script = quote(script)
        ))
        .map(|_| ())
}

/// Adds a drop-in with `body` to the unit of `component` and restarts it (a fault).
pub fn override_unit(machine: &Machine, component: &str, body: &str) -> Result<(), MachineError> {
    let unit = machine
        .image()
        .manifest
        .unit(component)
        .unwrap_or(component)
        .to_string();
    let dir = format!("/etc/systemd/system/{unit}.d");
    machine
        .succeed(&format!(
            "sudo mkdir -p {dir} && printf %b {body} | sudo tee {dir}/99-fault.conf >/dev/null && sudo systemctl daemon-reload && sudo systemctl restart {unit}",
            dir = quote(&dir),
            body = quote(body),
            unit = quote(&unit),
        ))
        .map(|_| ())
}

/// Stops the unit of `component` in the guest (a fault).
pub fn stop_unit(machine: &Machine, component: &str) -> Result<(), MachineError> {
    let unit = machine
        .image()
        .manifest
        .unit(component)
        .unwrap_or(component)
        .to_string();
    machine
        .succeed(&format!("sudo systemctl stop {}", quote(&unit)))
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fetch_command_ends_each_answer_with_the_mark() {
        assert_eq!(
            fetch_command(&["/a?q=x", "/b"]),
            r#"curl -fsS 'http://127.0.0.1:9090/a?q=x'; printf "\\n<rave-answer-end>\\n"; curl -fsS http://127.0.0.1:9090/b; printf "\\n<rave-answer-end>\\n""#
        );
        // In double quotes, bash hands printf `\n`, which it prints as a newline;
        // printf's format: no conversion in the mark.
        assert!(!ANSWER_END.contains('%'));
    }

    #[test]
    fn answers_are_read_in_order_and_a_missing_one_is_no_answer() {
        let paths = ["/a", "/b"];
        let both = "{\"data\":1}\n<rave-answer-end>\n{\"data\":[2]}\n<rave-answer-end>\n";
        let read = read_answers(&paths, both).unwrap();
        assert_eq!(read, vec![Value::from(1), Value::from(vec![2])]);
        // The command printed one answer and its end only: no guess at the second.
        assert!(read_answers(&paths, "{\"data\":1}\n<rave-answer-end>\n").is_err());
        // An answer cut short (no end after it) is no answer either.
        assert!(read_answers(&paths[..1], "{\"data\":1}").is_err());
        assert!(read_answers(&paths[..1], "not json\n<rave-answer-end>\n").is_err());
    }

    #[test]
    fn sizes_are_systemds() {
        assert_eq!(bytes("128M"), Some(128 << 20));
        assert_eq!(bytes("1G"), Some(1 << 30));
        assert_eq!(bytes("512"), Some(512));
        assert_eq!(bytes("12X"), None);
        assert_eq!(format_value(3.0), "3");
        assert_eq!(format_value(0.5), "0.5");
    }
}
