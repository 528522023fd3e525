//! Hostile and broken HTTP clients: slow headers, idle keep-alive, slow bodies, huge heads, too
//! many connections, a writer queue over its bound, and a shutdown with a request in flight.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::{Server, wait_for};

const PATIENCE: Duration = Duration::from_secs(60);

/// Reads until the server closes the connection; returns what it sent.
fn read_to_close(stream: &mut TcpStream) -> String {
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return String::from_utf8_lossy(&out).into_owned(),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return String::from_utf8_lossy(&out).into_owned();
            }
            Err(e) => panic!("the server kept the connection open: {e}"),
        }
    }
}

#[test]
fn slow_headers_are_cut_off() {
    let s = Server::start_with(&["--header-read-timeout-ms", "300"]);
    let mut stream = TcpStream::connect(&s.addr).unwrap();
    let started = Instant::now();
    stream
        .write_all(b"GET /livez HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .unwrap();
    read_to_close(&mut stream);
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "closed only after the timeout"
    );
    assert_eq!(s.get("/livez").status, 200, "others are served");
}

#[test]
fn idle_keep_alive_connections_are_closed() {
    let s = Server::start_with(&["--idle-timeout-ms", "300"]);
    let mut stream = TcpStream::connect(&s.addr).unwrap();
    stream
        .write_all(b"GET /livez HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = stream.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let started = Instant::now();
    read_to_close(&mut stream);
    assert!(started.elapsed() >= Duration::from_millis(250));
}

#[test]
fn a_slow_body_gets_408() {
    let s = Server::start_with(&["--body-read-timeout-ms", "300"]);
    let mut stream = TcpStream::connect(&s.addr).unwrap();
    stream
        .write_all(b"POST /api/v1/projects HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"name\"")
        .unwrap();
    let text = read_to_close(&mut stream);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("body_timeout"), "{text}");
    assert_eq!(
        s.get("/api/v1/projects").expect(200)["items"]
            .as_array()
            .unwrap()
            .len(),
        0,
        "nothing stored"
    );
}

#[test]
fn an_oversized_head_is_refused() {
    let s = Server::start_with(&["--max-header-bytes", "8192"]);
    let mut stream = TcpStream::connect(&s.addr).unwrap();
    let big = format!(
        "GET /livez HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    let _ = stream.write_all(big.as_bytes());
    let text = read_to_close(&mut stream);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 431"),
        "{text}"
    );
    assert_eq!(s.get("/livez").status, 200);
}

#[test]
fn connections_beyond_the_limit_are_refused_cleanly() {
    let s = Server::start_with(&["--max-connections", "2"]);
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(&s.addr).unwrap();
        stream
            .write_all(b"GET /livez HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .unwrap();
        let mut buf = [0u8; 1024];
        assert!(stream.read(&mut buf).unwrap() > 0);
        held.push(stream);
    }
    let mut third = TcpStream::connect(&s.addr).unwrap();
    let text = read_to_close(&mut third);
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    assert!(
        text.contains("too_many_connections")
            && text.to_ascii_lowercase().contains("retry-after: 1"),
        "{text}"
    );
    drop(held);
}

#[test]
fn a_full_writer_queue_sheds_load_and_loses_nothing_accepted() {
    let s = Server::start_with(&["--writer-queue", "1"]);
    // Even this create may meet a full queue of one (the background loops write too).
    let p = wait_for("the project to be created", || {
        let r = s.post("/api/v1/projects", json!({"name": "p"}));
        (r.status == 201).then(|| r.json()["id"].as_str().unwrap().to_string())
    });
    let accepted = Mutex::new(Vec::new());
    let shed = Mutex::new(0usize);
    let deadline = Instant::now() + PATIENCE;
    std::thread::scope(|scope| {
        for _ in 0..16 {
            scope.spawn(|| {
                for _ in 0..400 {
                    if *shed.lock().unwrap() > 0 && accepted.lock().unwrap().len() > 20
                        || Instant::now() > deadline
                    {
                        return;
                    }
                    let r = s.post(
                        &format!("/api/v1/projects/{p}/tasks"),
                        json!({"agent_type": "coder", "instructions": "x"}),
                    );
                    match r.status {
                        201 => accepted
                            .lock()
                            .unwrap()
                            .push(r.json()["task_id"].as_str().unwrap().to_string()),
                        503 => {
                            assert_eq!(r.header("retry-after"), Some("1"));
                            assert_eq!(r.json()["error"]["code"], "overloaded");
                            *shed.lock().unwrap() += 1;
                        }
                        other => panic!("{other}: {}", r.body),
                    }
                }
            });
        }
    });
    assert!(
        *shed.lock().unwrap() > 0,
        "a queue of one under 16 writers must shed"
    );
    let accepted = accepted.into_inner().unwrap();
    for id in &accepted {
        s.get(&format!("/api/v1/tasks/{id}")).expect(200);
    }
    let total = s.get(&format!("/api/v1/projects/{p}")).expect(200)["total_tasks"]
        .as_u64()
        .unwrap();
    assert_eq!(
        total as usize,
        accepted.len(),
        "nothing accepted is lost, nothing refused is stored"
    );
}

#[test]
fn shutdown_lets_a_request_in_flight_finish_and_exits_zero() {
    let s = Server::start();
    let mut stream = TcpStream::connect(&s.addr).unwrap();
    let body = br#"{"name":"finished during shutdown"}"#;
    let head = format!(
        "POST /api/v1/projects HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    // Wait until the request is being handled (the head reached the server), then SIGTERM.
    let pid = s.pid().to_string();
    crate::common::wait_for("the request to be in flight", || {
        // The scrape itself is one request in flight; the POST waiting for its body is the other.
        let m = s.get("/metrics").body;
        let in_flight = m
            .lines()
            .find_map(|l| l.strip_prefix("flightdeck_http_requests_in_flight "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0);
        (in_flight >= 2.0).then_some(())
    });
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    stream.write_all(body).unwrap();
    let text = read_to_close(&mut stream);
    assert!(text.starts_with("HTTP/1.1 201"), "{text}");
    let dir = s.stop_after_signal();
    let (ok, report) = crate::common::check(dir.path());
    assert!(ok, "{report}");
}

/// The value of an unlabelled counter or gauge in `/metrics`.
fn metric(s: &Server, name: &str) -> f64 {
    s.get("/metrics")
        .body
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn a_client_that_never_reads_its_answer_is_dropped_after_the_write_timeout() {
    // The attack: request large answers and never read them. A graceful close (the idle
    // timeout's) waits for the answer for good, and the answer's memory with it; the write
    // timeout drops the connection once its bytes stop moving.
    let s = Server::start_with(&[
        "--write-timeout-ms",
        "500",
        "--idle-timeout-ms",
        "600000",
        "--max-body-bytes",
        "8388608",
    ]);
    let p = s.project("big");
    let blob = "y".repeat(6 << 20);
    let body = format!(
        r#"{{"project_id":"{p}","source_agent":"coder","artifact_type":"source_code","content":"{blob}"}}"#
    );
    let created = s
        .send(
            "POST",
            "/api/v1/context/artifacts",
            Some("application/json"),
            body.into_bytes(),
        )
        .expect(201);
    let id = created["context_id"].as_str().unwrap().to_string();
    assert_eq!(metric(&s, "flightdeck_http_write_timeouts_total"), 0.0);
    let mut stalled = TcpStream::connect(&s.addr).unwrap();
    stalled
        .write_all(
            format!("GET /api/v1/context/artifacts/{id} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                .as_bytes(),
        )
        .unwrap();
    // Never read: the answer (6 MiB) cannot fit in the two sockets' buffers.
    wait_for("the stalled answer's connection to be dropped", || {
        (metric(&s, "flightdeck_http_write_timeouts_total") >= 1.0).then_some(())
    });
    // What the client finds when it reads at last: the start of the answer, then the end of the
    // connection, not the rest of it.
    let got = read_to_close(&mut stalled);
    assert!(
        got.starts_with("HTTP/1.1 200"),
        "{}",
        &got[..got.len().min(100)]
    );
    assert!(
        got.len() < 6 << 20,
        "the whole answer came: {} bytes",
        got.len()
    );
    // A reader that keeps reading is not cut off, however long the answer takes.
    let whole = s.get(&format!("/api/v1/context/artifacts/{id}"));
    assert_eq!(whole.status, 200);
    assert!(whole.body.len() > 6 << 20);
    assert_eq!(metric(&s, "flightdeck_http_write_timeouts_total"), 1.0);
}

#[test]
fn concurrent_probes_agree_and_no_answer_names_an_absolute_path() {
    // Probes at the same moment (a kubelet, a load balancer and a monitor) each write a file of
    // their own: none removes another's and reports a false 503. No answer shows the data
    // directory's absolute path.
    let s = Server::start();
    let data_dir = s.dir.path().display().to_string();
    let failures = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..16 {
            scope.spawn(|| {
                for _ in 0..25 {
                    let r = s.get("/readyz");
                    if r.status != 200 {
                        failures.lock().unwrap().push(r.body);
                    }
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    assert!(
        failures.is_empty(),
        "{} false 503s: {:?}",
        failures.len(),
        failures.first()
    );
    for path in ["/readyz", "/health/detailed", "/health/z"] {
        let body = s.get(path).body;
        assert!(!body.contains(&data_dir), "{path}: {body}");
    }
    let backup = s.backup().expect(201);
    let path = backup["path"].as_str().unwrap();
    assert!(
        path.starts_with("backups/flightdeck-") && !path.contains(&data_dir),
        "{path}"
    );
    assert!(s.dir.path().join(path).exists());
}

/// A server process of this test's own, ended when the test ends, panics included (it would
/// otherwise hold the test's output open).
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The server under `prlimit --nofile=SOFT:HARD` (util-linux): its process and address.
fn start_limited(nofile: &str, dir: &std::path::Path) -> Option<(Child, String)> {
    use std::io::BufRead;
    let mut child = Command::new("prlimit")
        .arg(format!("--nofile={nofile}"))
        .arg(crate::common::BIN)
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .env("FLIGHTDECK_LOG", "error")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    let stdout = child.stdout.take().unwrap();
    let child = Child(child);
    let mut line = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .unwrap();
    let addr = line.trim().strip_prefix("listening on ")?.to_string();
    Some((child, addr))
}

fn open_files_limit(pid: u32) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let numbers: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    (numbers[0], numbers[1])
}

#[test]
fn the_open_files_limit_is_raised_and_running_out_answers_503() {
    // Each connection holds a descriptor. The server raises its soft limit to the hard one at
    // start; when even that runs out, a new connection is told 503 rather than left to hang in
    // the accept queue.
    let dir = tempfile::tempdir().unwrap();
    let Some((raised, _)) = start_limited("64:256", dir.path()) else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI has prlimit (util-linux)"
        );
        return;
    };
    assert_eq!(open_files_limit(raised.0.id()), (256, 256));
    drop(raised);

    let dir = tempfile::tempdir().unwrap();
    let (_server, addr) = start_limited("48:48", dir.path()).unwrap();
    // Idle connections until the server can take no more (each is accepted and held).
    let mut held = Vec::new();
    let answer = loop {
        assert!(held.len() < 60, "48 descriptors never ran out");
        let mut c = TcpStream::connect(&addr).unwrap();
        c.set_read_timeout(Some(PATIENCE)).unwrap();
        c.write_all(b"GET /livez HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .unwrap();
        let mut buf = [0u8; 512];
        let n = c.read(&mut buf).unwrap_or(0);
        let head = String::from_utf8_lossy(&buf[..n]).into_owned();
        if head.starts_with("HTTP/1.1 200") {
            held.push(c);
            continue;
        }
        // Refused: the rest of the answer, up to the close.
        break head + &read_to_close(&mut c);
    };
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("file descriptors"), "{answer}");
    // Descriptors freed, connections are served again.
    held.clear();
    wait_for("a connection served again", || {
        let mut c = TcpStream::connect(&addr).ok()?;
        c.write_all(b"GET /livez HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .ok()?;
        read_to_close(&mut c)
            .starts_with("HTTP/1.1 200")
            .then_some(())
    });
}
