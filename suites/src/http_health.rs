//! http-health: through nginx on 3002 with TLS verified against the image CA,
//! each route answers as its service, and every answer carries the security headers.

use std::time::Duration;

use rave_harness::machine::BurstRequest;
use rave_harness::outcome::{expect, CheckError, CheckResult};
use rave_harness::Machine;

use crate::case::{Case, Fault, ALL_PROFILES};
use crate::checks::{
    backends_ready, edit_nginx_site, fresh_delivery_key, post_push, push_headers, security_headers, status_is,
    stop_unit, stored, stored_with_prefix, webhook_secret, PUSH_BODY,
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
            extra_faults: &[(
                "no_rate_limit",
                Fault {
                    description: "nginx's request rate limit on /webhook removed",
                    inject: |m| edit_nginx_site(m, "/limit_req zone=webhook/d"),
                    must_say: &["answered 429", "all of them accepted"],
                },
            )],
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
/// the event is stored once, also when delivered again; GET gets 405; and
/// the request rate limit holds (see [`webhook_rate_limit`]).
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
    security_headers(&get, "GET /webhook")?;
    webhook_rate_limit(machine, &secret)
}

/// A request rate limit: so many a second, and a burst past that answered at once.
#[derive(Debug, Clone, Copy)]
pub struct RateLimit {
    /// Requests a second, over time.
    pub per_second: u32,
    /// Requests past that rate answered at once before 429.
    pub burst: u32,
}

impl RateLimit {
    /// The most requests nginx's leaky bucket (with `nodelay`) can accept
    /// from an empty bucket within `elapsed`: the burst and the request that
    /// fills it at once, then `per_second` more a second, and one more for
    /// rounding at the ends.
    pub fn most_accepted(self, elapsed: Duration) -> usize {
        (self.burst + 2) as usize + (f64::from(self.per_second) * elapsed.as_secs_f64()).ceil() as usize
    }

    /// How long a full bucket takes to drain.
    pub fn drain_time(self) -> Duration {
        Duration::from_secs_f64(f64::from(self.burst + 1) / f64::from(self.per_second))
    }
}

/// `/webhook`'s limit per client address, as `limit_req` sets it in
/// images/debian/files/p0/rave.local.conf and nixos/p0.nix (a unit test
/// holds the three to the same numbers).
pub const WEBHOOK_RATE_LIMIT: RateLimit = RateLimit {
    per_second: 5,
    burst: 20,
};

/// Deliveries sent at once to pass the limit, and on how many connections.
const BURST_SIZE: usize = 100;
const BURST_CONNECTIONS: usize = 12;

/// What a burst's answers say of a rate limit.
#[derive(Debug, PartialEq)]
pub enum BurstVerdict {
    /// 429s came, and never more accepted than the limit allows.
    Held,
    /// More were accepted by some moment than the limit allows by then: the
    /// count, the moment and what it allows.
    Exceeded(usize, Duration, usize),
    /// No 429, but no moment saw more accepted than the limit allows: the
    /// burst was too slow to tell.
    TooSlow,
}

/// Judges a burst by when each accepted answer came (`accepted`, after the
/// first request was sent) and whether any 429 came. An answer read by a
/// moment was seen by nginx by then, so `k` accepted answers by `t` beyond
/// [`RateLimit::most_accepted`]`(t)` prove the limit did not hold, however
/// slowly the burst went.
pub fn judge_burst(limit: RateLimit, accepted: &[Duration], any_429: bool) -> BurstVerdict {
    let mut times = accepted.to_vec();
    times.sort();
    for (i, at) in times.iter().enumerate() {
        let allowed = limit.most_accepted(*at);
        if i + 1 > allowed {
            return BurstVerdict::Exceeded(i + 1, *at, allowed);
        }
    }
    if any_429 {
        BurstVerdict::Held
    } else {
        BurstVerdict::TooSlow
    }
}

/// Part of `http_health::webhook_security`: a burst of valid deliveries past
/// [`WEBHOOK_RATE_LIMIT`] gets 429s, no more are accepted by any moment than
/// the limit allows, exactly the accepted ones are stored, and once the
/// bucket has drained a delivery is accepted again.
///
/// The burst, the drain and the delivery after it hold the guest alone
/// (every client address from outside is one, QEMU's user network's, so
/// another case's delivery must not meet the drained bucket); what was
/// stored is read after the section.
fn webhook_rate_limit(machine: &Machine, secret: &str) -> CheckResult {
    let limit = WEBHOOK_RATE_LIMIT;
    let said = format!("{}/s, burst {}", limit.per_second, limit.burst);
    let prefix = fresh_delivery_key("rave-burst");
    let keys: Vec<String> = (0..BURST_SIZE).map(|i| format!("{prefix}-{i:03}")).collect();
    let after_key = format!("{prefix}-after");
    let requests: Vec<_> = keys
        .iter()
        .map(|key| BurstRequest {
            headers: push_headers(Some(secret), key),
            body: Some(PUSH_BODY.to_string()),
        })
        .collect();
    let (answers, after) = machine.exclusively(|| -> Result<_, CheckError> {
        let answers = machine.https_burst("POST", "/webhook", &requests, BURST_CONNECTIONS)?;
        let sent = std::time::Instant::now();
        // The bucket drains at the rate: empty again burst / rate after the last answer.
        std::thread::sleep(limit.drain_time());
        let after = post_push(machine, Some(secret), &after_key);
        Ok((answers, after.map(|a| (a, sent.elapsed()))))
    })??;
    let took = answers.iter().map(|a| a.after).max().unwrap_or_default();
    let (mut accepted, mut accepted_at, mut limited) = (Vec::new(), Vec::new(), Vec::new());
    for (key, sent) in keys.iter().zip(answers) {
        let answer = sent.answer?;
        match answer.status {
            200..=299 => {
                accepted.push(key.clone());
                accepted_at.push(sent.after);
            }
            429 => limited.push(key.clone()),
            _ => {
                return expect(
                    false,
                    &format!(
                        "each delivery of a burst past /webhook's limit ({said}) answered 2xx or 429 (another status: nginx or the dispatcher failed under the burst)"
                    ),
                    answer.status,
                    || answer.describe(),
                )
            }
        }
    }
    let seen = format!(
        "{} of {BURST_SIZE} accepted, {} answered 429, in {took:.1?}",
        accepted.len(),
        limited.len()
    );
    match judge_burst(limit, &accepted_at, !limited.is_empty()) {
        BurstVerdict::Held => {}
        BurstVerdict::Exceeded(count, at, allowed) => {
            let all = if limited.is_empty() { "all of them accepted: " } else { "" };
            return Err(CheckError::failed(format!(
                "expected deliveries past /webhook's limit ({said}) answered 429, at most {allowed} accepted by {at:.1?}; saw {count} accepted by then ({all}{seen})"
            )));
        }
        BurstVerdict::TooSlow => {
            return Err(CheckError::harness(format!(
                "a burst of {BURST_SIZE} deliveries to /webhook went too slowly to pass its limit ({said}) whatever the guest does: {seen}"
            )))
        }
    }
    let (after, waited) = after?;
    expect(
        (200..300).contains(&after.status),
        &format!("a delivery {waited:.1?} after the burst accepted again (2xx)"),
        after.status,
        || after.describe(),
    )?;
    let kept = stored_with_prefix(machine, &prefix)?;
    let lost: Vec<&String> = accepted.iter().filter(|k| !kept.contains(*k)).collect();
    let past_limit: Vec<&String> = limited.iter().filter(|k| kept.contains(*k)).collect();
    expect(
        lost.is_empty() && past_limit.is_empty() && kept.contains(&after_key),
        "every accepted delivery of the burst and the one after it stored, and none answered 429",
        format!(
            "{} accepted but not stored, {} answered 429 but stored, the one after {}",
            lost.len(),
            past_limit.len(),
            if kept.contains(&after_key) {
                "stored"
            } else {
                "not stored"
            }
        ),
        || format!("not stored: {lost:?}\nstored past the limit: {past_limit:?}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: &[f64]) -> Vec<Duration> {
        s.iter().map(|s| Duration::from_secs_f64(*s)).collect()
    }

    #[test]
    fn a_burst_is_judged_by_what_was_accepted_by_each_moment() {
        let limit = RateLimit {
            per_second: 5,
            burst: 20,
        };
        // 21 at once, then 429s: held.
        assert_eq!(judge_burst(limit, &secs(&[0.1; 21]), true), BurstVerdict::Held);
        // 30 accepted within 0.2 s: more than 22 + 1 allow, 429s or not.
        assert_eq!(
            judge_burst(limit, &secs(&[0.2; 30]), true),
            BurstVerdict::Exceeded(24, Duration::from_secs_f64(0.2), 23)
        );
        // A burst at twice the rate, without a limit, is caught however long it takes.
        let slow: Vec<f64> = (0..100).map(|i| 0.05 + f64::from(i) * 0.1).collect();
        assert!(matches!(
            judge_burst(limit, &secs(&slow), false),
            BurstVerdict::Exceeded(..)
        ));
        // Slower than the rate itself and no 429: nothing can be told.
        let crawl: Vec<f64> = (0..100).map(|i| f64::from(i) * 0.25).collect();
        assert_eq!(judge_burst(limit, &secs(&crawl), false), BurstVerdict::TooSlow);
    }

    fn file(path: &str) -> String {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
        std::fs::read_to_string(format!("{root}/{path}")).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn both_flavors_set_the_rate_limit_the_check_proves() {
        let RateLimit { per_second, burst } = WEBHOOK_RATE_LIMIT;
        let zone = format!("limit_req_zone $binary_remote_addr zone=webhook:1m rate={per_second}r/s;");
        let location = format!("limit_req zone=webhook burst={burst} nodelay;");
        for path in ["images/debian/files/p0/rave.local.conf", "nixos/p0.nix"] {
            let text = file(path);
            for line in [&zone, &location, &"limit_req_status 429;".to_string()] {
                assert!(text.contains(line.as_str()), "{path} lacks `{line}`");
            }
        }
    }
}
