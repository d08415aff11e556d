//! HTTPS to a guest as a browser would reach it: `https://HOST:PORT` with the
//! host name its image names (the manifest's `https`), resolved to the
//! forwarded host port, the certificate verified against the image's CA and
//! nothing else (no built-in roots, no "accept invalid").

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

/// Errors of an HTTPS exchange.
#[derive(Debug, thiserror::Error)]
pub enum HttpsError {
    /// The image has no CA certificate to verify against.
    #[error("the image has no CA certificate (manifest ca_cert), so HTTPS cannot be verified")]
    NoCa,
    /// The CA certificate could not be read.
    #[error("CA certificate {path}: {message}")]
    Ca {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// The request failed (connection, TLS verification, timeout).
    #[error("{request} ({addr}): {message}")]
    Request {
        /// The request, e.g. `GET https://rave.local/`.
        request: String,
        /// Where `rave.local` was sent.
        addr: SocketAddr,
        /// What went wrong, with its causes.
        message: String,
    },
}

/// An answer, kept whole for the checks and for failure messages.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// The headers, names in lower case.
    pub headers: Vec<(String, String)>,
    /// The body as text.
    pub body: String,
}

impl HttpResponse {
    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(k, _)| *k == name).map(|(_, v)| v.as_str())
    }

    /// Status, headers and the start of the body, for a failure message.
    pub fn describe(&self) -> String {
        let headers: Vec<String> = self.headers.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        let body: String = self.body.chars().take(400).collect();
        format!("HTTP {}\n{}\n\n{}", self.status, headers.join("\n"), body)
    }
}

/// A client for one guest's HTTPS port.
#[derive(Debug, Clone)]
pub struct HttpsClient {
    client: reqwest::blocking::Client,
    host: String,
    addr: SocketAddr,
}

impl HttpsClient {
    /// Trusts only `ca_pem` and sends `host` to `addr` (a forwarded port on
    /// 127.0.0.1, or an attached target's address); every request is bounded by `timeout`.
    pub fn new(ca_pem: Option<&Path>, host: &str, addr: SocketAddr, timeout: Duration) -> Result<Self, HttpsError> {
        let ca_path = ca_pem.ok_or(HttpsError::NoCa)?;
        let fail = |message: String| HttpsError::Ca {
            path: ca_path.display().to_string(),
            message,
        };
        let pem = std::fs::read(ca_path).map_err(|e| fail(e.to_string()))?;
        let ca = reqwest::Certificate::from_pem(&pem).map_err(|e| fail(e.to_string()))?;
        let client = reqwest::blocking::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(ca)
            .resolve(host, addr)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .build()
            .map_err(|e| fail(e.to_string()))?;
        Ok(HttpsClient {
            client,
            host: host.to_string(),
            addr,
        })
    }

    /// Sends `method path` with `headers` and `body`.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Result<HttpResponse, HttpsError> {
        let fail = |message: String| HttpsError::Request {
            request: format!("{method} https://{}{path}", self.host),
            addr: self.addr,
            message,
        };
        let method_value = reqwest::Method::from_bytes(method.as_bytes()).map_err(|e| fail(e.to_string()))?;
        let mut request = self.client.request(
            method_value,
            format!("https://{}:{}{path}", self.host, self.addr.port()),
        );
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        if let Some(body) = body {
            request = request.body(body.to_string());
        }
        let response = request.send().map_err(|e| fail(error_chain(&e)))?;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
            .collect();
        let body = response.text().map_err(|e| fail(error_chain(&e)))?;
        Ok(HttpResponse { status, headers, body })
    }
}

/// An error and its causes on one line (reqwest hides the TLS reason in the chain).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
