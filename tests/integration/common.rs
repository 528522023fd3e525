//! Starts the real `flightdeck` binary on port 0 with a temporary data directory and talks to it
//! over real sockets with an independent HTTP client (ureq).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_flightdeck");

/// A response, whatever its status.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: ureq::http::HeaderMap,
    pub body: String,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts the status and, for errors, the JSON error shape and code.
    #[track_caller]
    pub fn expect(&self, status: u16) -> Value {
        assert_eq!(self.status, status, "body: {}", self.body);
        self.json()
    }

    #[track_caller]
    pub fn expect_error(&self, status: u16, code: &str) -> String {
        assert_eq!(self.status, status, "body: {}", self.body);
        let v = self.json();
        assert_eq!(v["error"]["code"], code, "body: {}", self.body);
        let message = v["error"]["message"].as_str().expect("message").to_string();
        assert!(!message.is_empty());
        message
    }
}

pub struct Server {
    child: Option<Child>,
    pub addr: String,
    pub dir: Arc<tempfile::TempDir>,
    agent: ureq::Agent,
}

impl Server {
    pub fn start() -> Server {
        Server::start_in(Arc::new(tempfile::tempdir().unwrap()), &[])
    }

    pub fn start_with(args: &[&str]) -> Server {
        Server::start_in(Arc::new(tempfile::tempdir().unwrap()), args)
    }

    /// Starts on `dir` (which may hold an earlier server's data) and waits for the bound address.
    pub fn start_in(dir: Arc<tempfile::TempDir>, args: &[&str]) -> Server {
        let data_dir = dir.path().to_path_buf();
        Server::start_at(dir, &data_dir, args)
    }

    /// Starts with its data in `data_dir`, a path inside `dir` (which the server may create).
    pub fn start_at(
        dir: Arc<tempfile::TempDir>,
        data_dir: &std::path::Path,
        args: &[&str],
    ) -> Server {
        let mut child = Command::new(BIN)
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(args)
            .env("FLIGHTDECK_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start flightdeck");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            for _ in lines {}
        });
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the server printed its address within 60 s");
        let addr = line
            .strip_prefix("listening on ")
            .expect("listening line")
            .to_string();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        Server {
            child: Some(child),
            addr,
            dir,
            agent,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    fn finish(&self, result: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Resp {
        let mut response = result.expect("HTTP exchange");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.body_mut().read_to_string().unwrap_or_default();
        Resp {
            status,
            headers,
            body,
        }
    }

    pub fn get(&self, path: &str) -> Resp {
        self.finish(self.agent.get(self.url(path)).call())
    }

    pub fn delete(&self, path: &str) -> Resp {
        self.finish(self.agent.delete(self.url(path)).call())
    }

    /// `POST /api/v1/admin/backup`, body-less (sent as JSON, as a server without keys asks).
    pub fn backup(&self) -> Resp {
        self.send(
            "POST",
            "/api/v1/admin/backup",
            Some("application/json"),
            Vec::new(),
        )
    }

    pub fn post(&self, path: &str, body: Value) -> Resp {
        self.send(
            "POST",
            path,
            Some("application/json"),
            body.to_string().into_bytes(),
        )
    }

    /// A request with an API key (`Authorization: Bearer`), and a JSON body if given.
    pub fn call_as(
        &self,
        key: Option<&str>,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Resp {
        let mut request = ureq::http::Request::builder()
            .method(method)
            .uri(self.url(path));
        if let Some(k) = key {
            request = request.header("authorization", format!("Bearer {k}"));
        }
        let bytes = match body {
            Some(b) => {
                request = request.header("content-type", "application/json");
                b.to_string().into_bytes()
            }
            None => Vec::new(),
        };
        self.send_request(request.body(bytes).unwrap())
    }

    pub fn put(&self, path: &str, body: Value) -> Resp {
        self.send(
            "PUT",
            path,
            Some("application/json"),
            body.to_string().into_bytes(),
        )
    }

    pub fn patch(&self, path: &str, body: Value) -> Resp {
        self.send(
            "PATCH",
            path,
            Some("application/json"),
            body.to_string().into_bytes(),
        )
    }

    /// A request built by the caller.
    pub fn send_request(&self, request: ureq::http::Request<Vec<u8>>) -> Resp {
        self.finish(self.agent.run(request))
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Any method, content type and body.
    pub fn send(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Resp {
        let url = self.url(path);
        let mut request = ureq::http::Request::builder().method(method).uri(url);
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        let request = request.body(body).unwrap();
        self.finish(self.agent.run(request))
    }

    /// Sends raw bytes on a fresh connection and returns the raw response text.
    pub fn raw(&self, request: &[u8]) -> String {
        let mut stream = TcpStream::connect(&self.addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        stream.write_all(request).unwrap();
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    out.extend_from_slice(&buf[..n]);
                    if response_complete(&out) {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    /// SIGTERM, then waits for a clean exit.
    pub fn stop(self) -> Arc<tempfile::TempDir> {
        let pid = self.pid().to_string();
        let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(status.success());
        self.stop_after_signal()
    }

    /// Waits for a clean exit after a signal the test sent itself.
    pub fn stop_after_signal(mut self) -> Arc<tempfile::TempDir> {
        let mut child = self.child.take().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(status.success(), "flightdeck exited with {status}");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "flightdeck did not stop within 60 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        self.dir.clone()
    }

    /// Creates a project and returns its id.
    pub fn project(&self, name: &str) -> String {
        let v = self
            .post("/api/v1/projects", serde_json::json!({ "name": name }))
            .expect(201);
        v["id"].as_str().unwrap().to_string()
    }

    pub fn task(&self, project: &str, agent: &str) -> String {
        let v = self
            .post(
                &format!("/api/v1/projects/{project}/tasks"),
                serde_json::json!({ "agent_type": agent, "instructions": "do the work" }),
            )
            .expect(201);
        v["task_id"].as_str().unwrap().to_string()
    }

    pub fn artifact(&self, project: &str, kind: &str, source: &str, content: Value) -> String {
        let v = self
            .post(
                "/api/v1/context/artifacts",
                serde_json::json!({
                    "project_id": project, "source_agent": source, "artifact_type": kind, "content": content
                }),
            )
            .expect(201);
        v["context_id"].as_str().unwrap().to_string()
    }

    pub fn set_status(&self, task: &str, status: &str) -> Resp {
        self.post(
            &format!("/api/v1/tasks/{task}/status"),
            serde_json::json!({ "status": status }),
        )
    }

    /// Every event of the log (or of one project), following cursors.
    pub fn all_events(&self, project: Option<&str>) -> Vec<Value> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut path = "/api/v1/events?limit=50".to_string();
            if let Some(p) = project {
                path.push_str(&format!("&project_id={p}"));
            }
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let page = self.get(&path).expect(200);
            out.extend(page["items"].as_array().unwrap().iter().cloned());
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => return out,
            }
        }
    }
}

impl Server {
    /// Waits for the process to exit by itself (within 60 s) and answers whether it succeeded.
    pub fn exits_by_itself(mut self) -> (bool, Arc<tempfile::TempDir>) {
        let mut child = self.child.take().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return (status.success(), self.dir.clone());
            }
            assert!(
                Instant::now() < deadline,
                "flightdeck did not exit within 60 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL (no shutdown of any kind), then waits for the process to be gone.
    pub fn kill(mut self) -> Arc<tempfile::TempDir> {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL the server");
            child.wait().expect("reap the server");
        }
        self.dir.clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn response_complete(bytes: &[u8]) -> bool {
    let text = String::from_utf8_lossy(bytes);
    let Some(head_end) = text.find("\r\n\r\n") else {
        return false;
    };
    let head = text[..head_end].to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    bytes.len() >= head_end + 4 + length
}

/// Runs `flightdeck check` on a data directory.
pub fn check(dir: &Path) -> (bool, String) {
    let out = Command::new(BIN)
        .args(["check", "--data-dir"])
        .arg(dir)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A temporary path that is a regular file, for "unusable data directory" tests.
pub fn a_file() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    (dir, file)
}

/// Polls `probe` until it returns Some, or fails after 60 s: waiting on a condition, not a guess.
pub fn wait_for<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A size-limited tmpfs on a temporary directory, unmounted when dropped. `None` where mounting
/// is not permitted (not root); CI runs as root, so there it must work.
pub struct Tmpfs {
    pub root: tempfile::TempDir,
}

impl Tmpfs {
    pub fn mount(size: &str) -> Option<Tmpfs> {
        let root = tempfile::tempdir().unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(root.path())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(
            mounted || std::env::var_os("CI").is_none(),
            "CI runs as root and must be able to mount a tmpfs"
        );
        if !mounted {
            eprintln!("skipped: mounting a tmpfs needs root");
            return None;
        }
        Some(Tmpfs { root })
    }

    pub fn path(&self) -> &Path {
        self.root.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.root.path())
            .status();
    }
}

/// Asserts that the events' seqs run 1, 2, 3, … with no gap and no duplicate; returns them.
#[track_caller]
pub fn assert_gap_free(events: &[Value]) -> Vec<u64> {
    let seqs: Vec<u64> = events
        .iter()
        .map(|e| e["seq"].as_u64().expect("a seq"))
        .collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "the seqs have a gap or a duplicate"
    );
    seqs
}

/// The state of an alert rule (`GET /api/v1/monitoring/alerts`).
pub fn alert_state(s: &Server, rule: &str) -> String {
    s.get("/api/v1/monitoring/alerts").expect(200)["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == rule)
        .unwrap()["state"]
        .as_str()
        .unwrap()
        .to_string()
}
