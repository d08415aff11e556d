//! Reaching the guest from outside: HTTPS as a browser would, forwards for
//! probing its ports, and SSH logins tried as an attacker would.

use std::net::{Ipv4Addr, SocketAddr};

use super::{lock, Backend, Machine, GATE_TIMEOUT};
use crate::error::MachineError;
use crate::https::{HttpResponse, HttpsClient};
use crate::ports::free_loopback_port;
use crate::ssh::{AuthProbe, SshSession};

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
        self.ensure_running()?;
        let (Some(endpoint), Some(addr)) = (&self.image.manifest.https, self.https_addr) else {
            return Err(MachineError::Setup {
                what: format!("sending {method} {path} to {}", self.name),
                message: "its image serves no HTTPS (the manifest has no `https`)".into(),
            });
        };
        let _pass = self.gate.pass(GATE_TIMEOUT).map_err(|e| self.busy(e))?;
        let https_error = |e: crate::https::HttpsError| MachineError::Https {
            name: self.name.clone(),
            message: e.to_string(),
        };
        let client = match self.https_client.get() {
            Some(client) => client,
            None => {
                let made = HttpsClient::new(self.ca_cert.as_deref(), &endpoint.host, addr, self.command_timeout)
                    .map_err(https_error)?;
                self.https_client.get_or_init(|| made)
            }
        };
        client.request(method, path, headers, body).map_err(https_error)
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
