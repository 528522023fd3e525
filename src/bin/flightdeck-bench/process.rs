//! Process control: the server the bench starts (or the one `--url` names), its figures, stopping it.

use crate::BenchArgs;
use crate::http::Client;
use crate::report::QueueWait;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncBufReadExt;

/// The server the run loads: its address, and the process when the driver started it.
pub(super) struct Target {
    pub(super) addr: SocketAddr,
    pub(super) process: Option<OwnServer>,
    /// The reviewer's key, when it is not the workers' (`--reviewer-api-key`): a server refuses a
    /// key's approval of a task the same key claimed.
    pub(super) reviewer_token: Option<String>,
}

pub(super) struct OwnServer {
    pub(super) child: tokio::process::Child,
    pub(super) dir: tempfile::TempDir,
    pub(super) exe: PathBuf,
}

impl Target {
    /// What the report calls the server: ours (with its version) or the `--url` given.
    pub(super) fn name(&self, args: &BenchArgs) -> String {
        match &self.process {
            Some(_) => format!(
                "flightdeck {} started by the driver",
                env!("CARGO_PKG_VERSION")
            ),
            None => args.url.clone().unwrap_or_default(),
        }
    }
}

pub(super) fn server_args(dir: &Path) -> Vec<String> {
    [
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--max-connections",
        "25000",
        "--max-ws-connections",
        "20000",
        "--data-dir",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([dir.display().to_string()])
    .collect()
}

/// Starts `exe` with `args` and reads its `listening on ADDR` line.
pub(super) async fn spawn_listening(
    exe: &Path,
    args: &[String],
) -> Result<(tokio::process::Child, SocketAddr), String> {
    let mut child = tokio::process::Command::new(exe)
        .args(args)
        .env("FLIGHTDECK_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
    let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("piped")).lines();
    let line = lines
        .next_line()
        .await
        .map_err(|e| e.to_string())?
        .unwrap_or_default();
    let addr = line
        .strip_prefix("listening on ")
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| format!("{} said {line:?}", exe.display()))?;
    Ok((child, addr))
}

pub(super) async fn stop_child(child: &mut tokio::process::Child) {
    if let Some(pid) = child.id() {
        let _ = tokio::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await;
    }
    if tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
}

/// The server's queue wait over its last 5 minutes (pending → claimed, measured by the server):
/// claims counted, and their p99 in ms.
pub(super) async fn queue_wait(client: &mut Client) -> Option<QueueWait> {
    let answer = client.get("/api/v1/monitoring/performance").await.ok()?;
    let v = answer.json()?;
    Some(QueueWait {
        claims: v["queue_wait"]["claims"].as_u64()?,
        p99_ms: v["queue_wait"]["p99_seconds"].as_f64()? * 1e3,
    })
}

/// Peak resident memory (VmHWM) and CPU seconds of a local process, from /proc.
pub(crate) fn process_figures(pid: u32) -> (Option<u64>, Option<f64>) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kib| kib * 1024);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    let cpu = stat.rsplit_once(')').and_then(|(_, rest)| {
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
        Some(ticks / 100.0)
    });
    (hwm, cpu)
}

/// Resident memory and CPU seconds of a remote server, from its `/metrics`.
pub(super) async fn remote_figures(client: &mut Client) -> (Option<u64>, Option<f64>) {
    let Ok(answer) = client.get("/metrics").await else {
        return (None, None);
    };
    let text = String::from_utf8_lossy(&answer.body);
    let value = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
    };
    (
        value("flightdeck_process_resident_memory_bytes").map(|b| b as u64),
        value("flightdeck_process_cpu_seconds_total"),
    )
}

pub(super) fn parse_url(url: &str) -> Result<SocketAddr, String> {
    let rest = url.strip_prefix("http://").unwrap_or(url);
    let host = rest.split('/').next().unwrap_or_default();
    std::net::ToSocketAddrs::to_socket_addrs(host)
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| format!("`{url}` is not http://HOST:PORT"))
}
