//! Spans reach an OTLP/HTTP collector when an endpoint is configured.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use support::postgres::TempPostgres;
use support::SECRET;

/// A one-purpose collector: reads HTTP requests, answers 200, hands over (path, content-type, body).
fn collector() -> (u16, mpsc::Receiver<(String, String, Vec<u8>)>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            let mut reader = BufReader::new(stream);
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).is_err() {
                continue;
            }
            let (mut length, mut content_type) = (0usize, String::new());
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                let lower = line.to_ascii_lowercase();
                if let Some(v) = lower.strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
                if let Some(v) = lower.strip_prefix("content-type:") {
                    content_type = v.trim().to_string();
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let _ = reader
                .get_mut()
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            let path = request_line.split_whitespace().nth(1).unwrap_or("").to_string();
            let _ = tx.send((path, content_type, body));
        }
    });
    (port, rx)
}

#[test]
fn spans_are_exported_when_an_endpoint_is_set() {
    let pg = TempPostgres::start();
    let (collector_port, received) = collector();
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, SECRET).unwrap();
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_webhook-dispatcher"))
        .args(["--listen", &format!("127.0.0.1:{port}"), "--database", &pg.connection()])
        .arg("--secret-file")
        .arg(&secret)
        .args([
            "--otlp-endpoint",
            &format!("http://127.0.0.1:{collector_port}/v1/traces"),
        ])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let client = reqwest::blocking::Client::new();
    let url = format!("http://127.0.0.1:{port}/webhook");
    let mut answered = None;
    for _ in 0..100 {
        let sent = client
            .post(&url)
            .header("X-Gitlab-Token", SECRET)
            .header("X-Gitlab-Event", "Push Hook")
            .header("X-Gitlab-Event-UUID", "traced-1")
            .body(r#"{"object_kind":"push"}"#)
            .send();
        if let Ok(response) = sent {
            answered = Some(response);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let response = answered.expect("the dispatcher answered within 10 s");
    assert_eq!(response.status(), 202);
    let trace_id = response.headers()["x-trace-id"].to_str().unwrap().to_string();
    // SIGTERM flushes the batch of spans not yet exported.
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let (path, content_type, body) = received
        .recv_timeout(Duration::from_secs(20))
        .expect("spans reached the collector");
    let _ = child.wait();
    assert_eq!(path, "/v1/traces");
    assert_eq!(content_type, "application/x-protobuf");
    let raw_trace_id: Vec<u8> = (0..32)
        .step_by(2)
        .map(|i| u8::from_str_radix(&trace_id[i..i + 2], 16).unwrap())
        .collect();
    assert!(
        body.windows(16).any(|w| w == raw_trace_id),
        "the exported spans carry the request's trace id {trace_id}"
    );
    assert!(
        body.windows(18).any(|w| w == b"webhook-dispatcher"),
        "the service name is exported"
    );
}
