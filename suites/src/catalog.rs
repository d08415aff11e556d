//! Every case: its name, the profiles it applies to, the components it
//! needs, how it runs, and the fault that must turn it red.

use rave_harness::machine::quote;
use std::time::Duration;

use rave_harness::manifest::{Manifest, Profile};
use rave_harness::{Machine, MachineError};

use crate::failure::CaseResult;
use crate::{http_health, p2_observability, security, systemd_services};

/// A fault injected in a booted guest that must make a case fail.
#[derive(Debug, Clone, Copy)]
pub struct Fault {
    /// What it breaks, said for the trial's log.
    pub description: &'static str,
    /// Breaks it.
    pub inject: fn(&Machine) -> Result<(), MachineError>,
    /// Texts the case's failure must carry: the diagnostics a person needs.
    pub must_say: &'static [&'static str],
}

/// One case of the spec.
#[derive(Debug, Clone, Copy)]
pub struct Case {
    /// The suite, e.g. `systemd_services`.
    pub suite: &'static str,
    /// The case, e.g. `nginx`.
    pub name: &'static str,
    /// The profiles it applies to.
    pub profiles: &'static [Profile],
    /// The components of the contract it needs in the image.
    pub components: &'static [&'static str],
    /// Runs it against a guest.
    pub run: fn(&Machine) -> CaseResult,
    /// Its fault.
    pub fault: Fault,
}

impl Case {
    /// `SUITE::CASE`, as the spec names it.
    pub fn id(&self) -> String {
        format!("{}::{}", self.suite, self.name)
    }

    /// `Ok` when the case applies to this image; `Err` says why it is ignored.
    pub fn applies_to(&self, manifest: &Manifest) -> Result<(), String> {
        if !self.profiles.contains(&manifest.profile) {
            return Err(format!("{} does not apply to {}", self.id(), manifest.profile));
        }
        self.components.iter().try_for_each(|c| manifest.unit(c).map(|_| ()))
    }
}

const ALL_PROFILES: &[Profile] = &[Profile::P0, Profile::P1, Profile::P2];
const HARDENED: &[Profile] = &[Profile::P1, Profile::P2];
const OBSERVED: &[Profile] = &[Profile::P2];

/// The cases implemented so far, in the spec's order.
pub fn all() -> Vec<Case> {
    vec![
        Case {
            suite: "systemd_services",
            name: "nginx",
            profiles: ALL_PROFILES,
            components: &["nginx"],
            run: systemd_services::nginx,
            fault: Fault {
                description: "nginx.service stopped",
                inject: |m| stop_unit(m, "nginx"),
                must_say: &["nginx.service", "systemctl status", "journal of nginx.service"],
            },
        },
        Case {
            suite: "systemd_services",
            name: "grafana",
            profiles: ALL_PROFILES,
            components: &["grafana"],
            run: systemd_services::grafana,
            fault: Fault {
                description: "the grafana unit stopped",
                inject: |m| stop_unit(m, "grafana"),
                must_say: &["grafana", "systemctl status"],
            },
        },
        Case {
            suite: "systemd_services",
            name: "postgresql",
            profiles: ALL_PROFILES,
            components: &["postgresql"],
            run: systemd_services::postgresql,
            fault: Fault {
                description: "the PostgreSQL cluster unit stopped",
                inject: |m| stop_unit(m, "postgresql"),
                must_say: &["postgresql", "systemctl status", "journal of postgresql"],
            },
        },
        Case {
            suite: "systemd_services",
            name: "vibe_kanban",
            profiles: ALL_PROFILES,
            components: &["vibe-kanban"],
            run: systemd_services::vibe_kanban,
            fault: Fault {
                description: "vibe-kanban.service made to run as root",
                inject: |m| override_unit(m, "vibe-kanban", "[Service]\nUser=root\n"),
                must_say: &["to run as agent", "\"root\"", "systemctl status vibe-kanban.service"],
            },
        },
        Case {
            suite: "systemd_services",
            name: "claude_code_router",
            profiles: ALL_PROFILES,
            components: &["claude-code-router"],
            run: systemd_services::claude_code_router,
            fault: Fault {
                description: "claude-code-router.service in a crash loop (its process exits 5 s after every start, Restart=always)",
                inject: |m| {
                    override_unit(
                        m,
                        "claude-code-router",
                        "[Service]\nExecStart=\nExecStart=/bin/sh -c 'sleep 5; exit 1'\nRestart=always\nRestartSec=1\n",
                    )
                },
                must_say: &[
                    "claude-code-router.service",
                    "stability window",
                    "journal of claude-code-router.service",
                ],
            },
        },
        Case {
            suite: "systemd_services",
            name: "webhook_dispatcher",
            profiles: ALL_PROFILES,
            components: &["webhook-dispatcher"],
            run: systemd_services::webhook_dispatcher,
            fault: Fault {
                description: "webhook-dispatcher.service with its MemoryMax removed",
                inject: |m| override_unit(m, "webhook-dispatcher", "[Service]\nMemoryMax=infinity\n"),
                must_say: &["MemoryMax=128M", "MemoryMax=infinity"],
            },
        },
        Case {
            suite: "systemd_services",
            name: "prometheus",
            profiles: &[Profile::P2],
            components: &["prometheus"],
            run: systemd_services::prometheus,
            fault: Fault {
                description: "prometheus.service stopped",
                inject: |m| stop_unit(m, "prometheus"),
                must_say: &["prometheus.service", "journal of prometheus.service"],
            },
        },
        Case {
            suite: "http_health",
            name: "vibe_kanban_response",
            profiles: ALL_PROFILES,
            components: &["nginx", "vibe-kanban"],
            run: http_health::vibe_kanban_response,
            fault: Fault {
                description: "nginx's / serving a page of its own instead of vibe-kanban",
                inject: |m| {
                    edit_nginx_site(m, "s#proxy_pass http://127.0.0.1:3000;#default_type text/html; return 200 '<title>Welcome to nginx!</title>';#")
                },
                must_say: &["to be the vibe-kanban app", "Welcome to nginx"],
            },
        },
        Case {
            suite: "http_health",
            name: "grafana_response",
            profiles: ALL_PROFILES,
            components: &["nginx", "grafana"],
            run: http_health::grafana_response,
            fault: Fault {
                description: "the grafana unit stopped behind nginx",
                inject: |m| stop_unit(m, "grafana"),
                must_say: &["502"],
            },
        },
        Case {
            suite: "http_health",
            name: "ccr_response",
            profiles: ALL_PROFILES,
            components: &["nginx", "claude-code-router"],
            run: http_health::ccr_response,
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
        },
        Case {
            suite: "http_health",
            name: "webhook_security",
            profiles: ALL_PROFILES,
            components: &["nginx", "webhook-dispatcher"],
            run: http_health::webhook_security,
            fault: Fault {
                description: "nginx's X-Frame-Options header removed",
                inject: |m| edit_nginx_site(m, "/X-Frame-Options/d"),
                must_say: &["header x-frame-options", "None"],
            },
        },
        Case {
            suite: "security",
            name: "tls_config",
            profiles: HARDENED,
            components: &["nginx", "secrets"],
            run: security::tls_config,
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
        },
        Case {
            suite: "security",
            name: "ssh_config",
            profiles: HARDENED,
            components: &["sshd"],
            run: security::ssh_config,
            fault: Fault {
                description: "sshd allowed password login",
                inject: |m| {
                    m.succeed("printf 'PasswordAuthentication yes\\n' | sudo tee /etc/ssh/sshd_config.d/00-fault.conf >/dev/null && sudo systemctl reload ssh")?;
                    // The reload re-executes sshd: hand the guest over once it answers again.
                    m.wait_for_ssh(Duration::from_secs(60))
                },
                must_say: &["password"],
            },
        },
        Case {
            suite: "security",
            name: "firewall_config",
            profiles: HARDENED,
            components: &["firewall"],
            run: security::firewall_config,
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
        },
        Case {
            suite: "security",
            name: "secrets_management",
            profiles: HARDENED,
            components: &["secrets", "webhook-dispatcher"],
            run: security::secrets_management,
            fault: Fault {
                description: "the webhook secret copied in plaintext to /usr/local/lib/rave-leak/caf\\xe9 (its times kept, its name not UTF-8)",
                inject: |m| {
                    m.succeed("sudo install -d /usr/local/lib/rave-leak && sudo cp -p /run/secrets/webhook-gitlab-secret \"/usr/local/lib/rave-leak/caf$(printf '\\351')\"")
                        .map(|_| ())
                },
                must_say: &["plaintext nowhere but /run/secrets", "/usr/local/lib/rave-leak/caf\u{fffd}"],
            },
        },
        Case {
            suite: "p2_observability",
            name: "prometheus_health",
            profiles: OBSERVED,
            components: &["prometheus"],
            run: p2_observability::prometheus_health,
            fault: Fault {
                description: "Prometheus restarted with another retention",
                inject: |m| {
                    m.succeed("sudo sed -i 's/retention.time=[0-9a-z]*/retention.time=15d/' /etc/default/prometheus && sudo systemctl restart prometheus")
                        .map(|_| ())
                },
                must_say: &["retention", "15d"],
            },
        },
        Case {
            suite: "p2_observability",
            name: "prometheus_targets",
            profiles: OBSERVED,
            components: &["prometheus", "pushgateway", "node-exporter", "webhook-dispatcher"],
            run: p2_observability::prometheus_targets,
            fault: Fault {
                description: "the pushgateway target corrupted (scraped at a port nothing serves)",
                inject: |m| {
                    m.succeed("sudo sed -i \"s/127.0.0.1:9091/127.0.0.1:9092/\" /etc/prometheus/prometheus.yml && sudo systemctl reload prometheus")
                        .map(|_| ())
                },
                must_say: &["pushgateway: down", "9092"],
            },
        },
        Case {
            suite: "p2_observability",
            name: "node_exporter",
            profiles: OBSERVED,
            components: &["node-exporter"],
            run: p2_observability::node_exporter,
            fault: Fault {
                description: "the node exporter stopped",
                inject: |m| stop_unit(m, "node-exporter"),
                must_say: &["node_memory_MemTotal_bytes"],
            },
        },
        Case {
            suite: "p2_observability",
            name: "grafana_integration",
            profiles: OBSERVED,
            components: &["grafana", "prometheus"],
            run: p2_observability::grafana_integration,
            fault: Fault {
                description: "a provisioned dashboard removed",
                inject: |m| stop_unit(m, "grafana"),
                must_say: &["Grafana"],
            },
        },
        Case {
            suite: "p2_observability",
            name: "webhook_metrics",
            profiles: OBSERVED,
            components: &["prometheus", "pushgateway", "webhook-dispatcher"],
            run: p2_observability::webhook_metrics,
            fault: Fault {
                description: "the webhook-dispatcher scrape job removed from Prometheus",
                inject: |m| {
                    m.succeed("sudo sed -i '/job_name: webhook-dispatcher/,$d' /etc/prometheus/prometheus.yml && sudo systemctl reload prometheus")
                        .map(|_| ())
                },
                must_say: &["to scrape webhook_requests_total"],
            },
        },
        Case {
            suite: "p2_observability",
            name: "safe_mode_constraints",
            profiles: OBSERVED,
            components: &["prometheus"],
            run: p2_observability::safe_mode_constraints,
            fault: Fault {
                description: "Prometheus's MemoryMax raised to 1G",
                inject: |m| override_unit(m, "prometheus", "[Service]\nMemoryMax=1G\n"),
                must_say: &["MemoryMax=256M", "MemoryMax=1073741824"],
            },
        },
    ]
}

/// Applies the sed `script` to nginx's rave.local site and reloads nginx.
pub fn edit_nginx_site(machine: &Machine, script: &str) -> Result<(), MachineError> {
    machine
        .succeed(&format!(
            "sudo sed -i {} /etc/nginx/sites-enabled/rave.local.conf && sudo nginx -t -q && sudo systemctl restart nginx",
            quote(script)
        ))
        .map(|_| ())
}

/// Adds a drop-in with `body` to the unit of `component` and restarts it.
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

/// Stops the unit of `component` in the guest.
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

/// Proves that `case` can fail: green on the untouched guest, red after the
/// fault, with the diagnostics the fault names in its message.
pub fn prove_fault(case: &Case, machine: &Machine) -> Result<(), String> {
    (case.run)(machine).map_err(|e| {
        format!(
            "{} was not green before the fault, so the fault proves nothing:\n{e}",
            case.id()
        )
    })?;
    (case.fault.inject)(machine)
        .map_err(|e| format!("could not inject the fault ({}): {e}", case.fault.description))?;
    match (case.run)(machine) {
        Ok(()) => Err(format!(
            "{} stayed green with the fault \"{}\" injected: the case cannot fail",
            case.id(),
            case.fault.description
        )),
        Err(failure) => {
            let missing: Vec<_> = case
                .fault
                .must_say
                .iter()
                .filter(|s| !failure.message().contains(**s))
                .collect();
            if missing.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "{} failed, but its message lacks {missing:?}:\n{failure}",
                    case.id()
                ))
            }
        }
    }
}
