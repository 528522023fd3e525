//! The real server for the benchmarks that talk HTTP to it (`status`, `claims`): started on port
//! 0 with a temporary data directory, killed when dropped.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Server {
    child: Child,
    /// `http://ADDR/api/v1`.
    pub base: String,
    dir: Option<tempfile::TempDir>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn start(args: &[&str]) -> Server {
    start_in(tempfile::tempdir().unwrap(), args)
}

/// Starts on `dir`, which may hold an earlier server's data.
#[allow(dead_code)]
pub fn start_in(dir: tempfile::TempDir, args: &[&str]) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_flightdeck"))
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .args(args)
        .env("FLIGHTDECK_LOG", "error")
        .stdout(Stdio::piped())
        .spawn()
        .expect("start flightdeck");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap()
        .to_string();
    Server {
        child,
        base: format!("http://{addr}/api/v1"),
        dir: Some(dir),
    }
}

#[allow(dead_code)]
impl Server {
    /// The data directory.
    #[allow(dead_code)]
    pub fn dir(&self) -> &std::path::Path {
        self.dir.as_ref().unwrap().path()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `host:port`.
    pub fn addr(&self) -> String {
        self.base
            .trim_start_matches("http://")
            .trim_end_matches("/api/v1")
            .to_string()
    }

    /// A clean stop (SIGTERM, then waiting for the exit); the data directory stays.
    pub fn stop(mut self) -> tempfile::TempDir {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        self.dir.take().unwrap()
    }

    /// SIGKILL: no shutdown at all; the data directory stays.
    pub fn kill(mut self) -> tempfile::TempDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.dir.take().unwrap()
    }
}

/// A client that answers every status (the benchmarks check them).
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(60)))
        .http_status_as_error(false)
        .build()
        .into()
}
