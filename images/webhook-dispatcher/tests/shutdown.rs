//! The real binary under SIGTERM: a request in flight is finished, then it exits 0.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use support::postgres::TempPostgres;
use support::SECRET;

#[test]
fn sigterm_finishes_the_request_in_flight() {
    let pg = TempPostgres::start();
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_webhook-dispatcher"))
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--secret-file")
        .arg(&secret)
        .arg("--database")
        .arg(pg.connection())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (lines_tx, lines) = mpsc::channel::<String>();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let wait_for_log = |needle: &str| loop {
        let line = lines
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("no log line with {needle:?} within 20 s"));
        let record: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("log line is not JSON ({e}): {line}"));
        if record["fields"]["message"].as_str().is_some_and(|m| m.contains(needle)) {
            return record;
        }
    };
    wait_for_log("webhook dispatcher ready");

    let body = br#"{"object_kind":"push","ref":"refs/heads/main"}"#;
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        stream,
        "POST /webhook HTTP/1.1\r\nHost: x\r\nX-Gitlab-Token: {SECRET}\r\nX-Gitlab-Event: Push Hook\r\nX-Gitlab-Event-UUID: in-flight\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    stream.write_all(&body[..10]).unwrap();
    stream.flush().unwrap();
    // Half a body is on the wire; now systemd would stop the service.
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    wait_for_log("stop signal");
    stream.write_all(&body[10..]).unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    assert!(
        response.starts_with("HTTP/1.1 202"),
        "the request in flight was not finished: {response:?}"
    );
    let record = wait_for_log("event stored");
    assert_eq!(
        record["span"]["trace_id"].as_str().map(str::len),
        Some(32),
        "JSON log carries the request's trace id: {record}"
    );

    let (done_tx, done) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done_tx.send(child.wait());
    });
    let status = done
        .recv_timeout(Duration::from_secs(20))
        .expect("exits within 20 s of SIGTERM")
        .unwrap();
    assert!(status.success(), "exit status {status}");
}
