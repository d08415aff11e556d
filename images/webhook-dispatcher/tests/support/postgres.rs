//! A throwaway PostgreSQL cluster from Debian's packages, in a temporary
//! directory, on a private unix socket: real, never a mock.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running cluster; stopped and removed on drop.
pub struct TempPostgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    server: Option<Child>,
}

const PORT: u16 = 5432;

impl TempPostgres {
    /// initdb and start a cluster.
    pub fn start() -> Self {
        let bin = server_bin_dir();
        let dir = tempfile::Builder::new()
            .prefix("dispatcher-pg-")
            .tempdir()
            .expect("temp dir");
        std::fs::create_dir(dir.path().join("sock")).unwrap();
        if is_root() {
            // initdb and postgres refuse to run as root: hand the directory to `postgres`.
            run(Command::new("chown").args(["-R", "postgres:postgres"]).arg(dir.path()));
        }
        let data = dir.path().join("data");
        run(as_postgres(&bin.join("initdb")).arg("-D").arg(&data).args([
            "--auth=trust",
            "-U",
            "postgres",
            "--no-sync",
            "-E",
            "UTF8",
        ]));
        let mut pg = TempPostgres { dir, bin, server: None };
        pg.start_server();
        pg
    }

    /// The connection string of the `postgres` database.
    pub fn connection(&self) -> String {
        format!(
            "host={} port={PORT} user=postgres dbname=postgres",
            self.socket_dir().display()
        )
    }

    /// Stops the server (fast shutdown); the data stays.
    pub fn stop(&mut self) {
        if let Some(mut server) = self.server.take() {
            let _ = nix_kill(server.id(), "INT");
            let _ = server.wait();
        }
    }

    /// Starts the server again on the same data.
    pub fn start_server(&mut self) {
        let server = as_postgres(&self.bin.join("postgres"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .arg("-k")
            .arg(self.socket_dir())
            .args([
                "-p",
                &PORT.to_string(),
                "-c",
                "listen_addresses=",
                "-c",
                "fsync=off",
                "-c",
                "max_connections=100",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("postgres starts");
        self.server = Some(server);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = Command::new(self.bin.join("pg_isready"))
                .arg("-h")
                .arg(self.socket_dir())
                .args(["-p", &PORT.to_string(), "-q"])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ready {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "PostgreSQL did not accept connections within 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn socket_dir(&self) -> PathBuf {
        self.dir.path().join("sock")
    }
}

impl Drop for TempPostgres {
    fn drop(&mut self) {
        self.stop();
    }
}

fn server_bin_dir() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.path().join("bin"))
                .filter(|b| b.join("initdb").is_file())
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
        .pop()
        .expect("no PostgreSQL server in /usr/lib/postgresql/*/bin: install postgresql (scripts/setup does)")
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

fn as_postgres(program: &Path) -> Command {
    if is_root() {
        // setpriv execs in place, so the child's pid is the server's own.
        let mut c = Command::new("setpriv");
        c.args(["--reuid=postgres", "--regid=postgres", "--init-groups", "--"])
            .arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn run(command: &mut Command) {
    let out = command.output().expect("command starts");
    assert!(
        out.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn nix_kill(pid: u32, signal: &str) -> std::io::Result<()> {
    Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .map(|_| ())
}
