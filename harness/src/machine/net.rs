//! Reaching the guest from outside: HTTPS as a browser would, forwards for
//! probing its ports, and SSH logins tried as an attacker would.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::{lock, Backend, Machine, GATE_TIMEOUT};
use crate::error::MachineError;
use crate::https::{HttpResponse, HttpsClient};
use crate::ports::free_loopback_port;
use crate::ssh::{AuthProbe, SshSession};

/// One request of [`Machine::https_burst`].
#[derive(Debug, Clone)]
pub struct BurstRequest<'a> {
    /// Its headers.
    pub headers: Vec<(&'a str, &'a str)>,
    /// Its body, if any.
    pub body: Option<String>,
}

/// One answer of [`Machine::https_burst`].
#[derive(Debug)]
pub struct BurstAnswer {
    /// When it came, after the burst's first request was sent.
    pub after: Duration,
    /// The answer, or why there was none.
    pub answer: Result<HttpResponse, MachineError>,
}

impl Machine {
    /// Sends `method path` to the guest's HTTPS port, with the host name its
    /// image names, verified against the image's CA only.
    pub fn https(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Result<HttpResponse, MachineError> {
        let what = format!("sending {method} {path} to {}", self.name);
        let client = self.https_client(&what)?;
        let _pass = self.gate.pass(GATE_TIMEOUT).map_err(|e| self.busy(e))?;
        client
            .request(method, path, headers, body)
            .map_err(|e| self.https_error(e))
    }

    /// Sends `requests` (headers and body of each) as `method path`, up to
    /// `at_once` at a time on as many connections, as one command at the
    /// gate (so within an exclusive section they are the section's own);
    /// for a check of how the guest answers a burst, such as a rate limit.
    /// The answers are in the order of `requests`, each with when it came
    /// after the first was sent.
    pub fn https_burst(
        &self,
        method: &str,
        path: &str,
        requests: &[BurstRequest<'_>],
        at_once: usize,
    ) -> Result<Vec<BurstAnswer>, MachineError> {
        let what = format!("sending {} x {method} {path} to {}", requests.len(), self.name);
        let client = self.https_client(&what)?;
        let _pass = self.gate.pass(GATE_TIMEOUT).map_err(|e| self.busy(e))?;
        let start = Instant::now();
        let next = AtomicUsize::new(0);
        let answers: Vec<_> = requests.iter().map(|_| OnceLock::new()).collect();
        std::thread::scope(|s| {
            for _ in 0..at_once.clamp(1, requests.len().max(1)) {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(request) = requests.get(i) else { break };
                    let answer = client
                        .request(method, path, &request.headers, request.body.as_deref())
                        .map_err(|e| self.https_error(e));
                    let _ = answers[i].set(BurstAnswer {
                        after: start.elapsed(),
                        answer,
                    });
                });
            }
        });
        Ok(answers
            .into_iter()
            .map(|a| a.into_inner().expect("every request was sent"))
            .collect())
    }

    /// The guest's HTTPS client, made on first use.
    fn https_client(&self, what: &str) -> Result<&HttpsClient, MachineError> {
        self.ensure_running()?;
        let (Some(endpoint), Some(addr)) = (&self.image.manifest.https, self.https_addr) else {
            return Err(MachineError::Setup {
                what: what.to_string(),
                message: "its image serves no HTTPS (the manifest has no `https`)".into(),
            });
        };
        if let Some(client) = self.https_client.get() {
            return Ok(client);
        }
        let made = HttpsClient::new(self.ca_cert.as_deref(), &endpoint.host, addr, self.command_timeout)
            .map_err(|e| self.https_error(e))?;
        Ok(self.https_client.get_or_init(|| made))
    }

    fn https_error(&self, e: crate::https::HttpsError) -> MachineError {
        MachineError::Https {
            name: self.name.clone(),
            message: e.to_string(),
        }
    }

    /// `GET path` over HTTPS (see [`Machine::https`]).
    pub fn https_get(&self, path: &str) -> Result<HttpResponse, MachineError> {
        self.https("GET", path, &[], None)
    }

    /// Where a connection from outside reaches `guest_port`: for a booted
    /// guest a new forward on 127.0.0.1 (QEMU user networking, added over
    /// QMP); for an attached one the description's forward, else a new one
    /// through its QMP socket (a local QEMU guest), else the port on the
    /// target's host itself. A target reached through loopback forwards with
    /// neither is an error: its host's own port would prove nothing.
    pub fn forward(&self, guest_port: u16) -> Result<SocketAddr, MachineError> {
        let qmp = match &self.backend {
            Backend::Booted(booted) => lock(&booted.qemu).qmp().clone(),
            Backend::Attached { forwards, qmp, .. } => {
                if let Some(port) = forwards.get(&guest_port) {
                    return Ok(SocketAddr::new(self.ssh_addr.ip(), *port));
                }
                match qmp {
                    Some(qmp) => qmp.clone(),
                    None if self.ssh_addr.ip().is_loopback() => {
                        return Err(MachineError::Setup {
                            what: format!("reaching guest port {guest_port} of {} from outside", self.name),
                            message: "the target is reached through forwards on this host, and its description has no forward for that port and no qmp_socket to add one: add the port to `forwards`".into(),
                        })
                    }
                    None => return Ok(SocketAddr::new(self.ssh_addr.ip(), guest_port)),
                }
            }
        };
        let host_port = free_loopback_port().map_err(|e| MachineError::Setup {
            what: "finding a free port".into(),
            message: e.to_string(),
        })?;
        qmp.hostfwd_add(host_port, guest_port)?;
        if let Backend::Attached { added, .. } = &self.backend {
            lock(added).push(host_port);
        }
        Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, host_port)))
    }

    /// Removes the forwards added to an attached local guest (best effort:
    /// its QEMU may be gone).
    pub(super) fn remove_added_forwards(&self) {
        if let Backend::Attached {
            qmp: Some(qmp), added, ..
        } = &self.backend
        {
            for port in std::mem::take(&mut *lock(added)) {
                // Only a clean-up: a QEMU that is gone took its forwards with it.
                let _ = qmp.hostfwd_remove(port);
            }
        }
    }

    /// What sshd tells an unauthenticated client about `user`, and whether
    /// `password` gets in (see [`crate::ssh::probe_auth`]).
    pub fn ssh_auth_probe(&self, user: &str, password: &str) -> Result<AuthProbe, MachineError> {
        crate::ssh::probe_auth(
            self.ssh_addr(),
            user,
            password,
            &self.access.host_key_blob,
            self.command_timeout,
        )
        .map_err(|e| self.ssh_error(e))
    }

    /// Whether a key login as `user` with the run's client key works; an
    /// error says why not ([`crate::ssh::SshError::is_login_refused`] tells
    /// sshd's refusal from a failure to ask).
    pub fn ssh_key_login(&self, user: &str) -> Result<(), MachineError> {
        SshSession::connect(
            self.ssh_addr(),
            user,
            &self.access.client_key,
            &self.access.host_key_blob,
            self.command_timeout,
        )
        .map(|_| ())
        .map_err(|e| self.ssh_error(e))
    }
}
