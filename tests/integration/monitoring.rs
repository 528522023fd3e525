//! Observability, black-box: `/metrics`, request ids and timing headers, every health shape,
//! readiness that fails when the data directory turns read-only or its disk fills (and recovers),
//! and an alert rule driven through pending, firing and resolved with its WebSocket events and
//! webhook notifications.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use crate::common::{Server, Tmpfs, wait_for};

const PATIENCE: Duration = Duration::from_secs(60);

#[test]
fn metrics_are_prometheus_text_with_every_family() {
    let s = Server::start();
    let p = s.project("p");
    s.get(&format!("/api/v1/projects/{p}/status")).expect(200);
    let r = s.get("/metrics");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    for family in [
        "flightdeck_http_request_duration_seconds",
        "flightdeck_http_requests_total",
        "flightdeck_http_requests_in_flight",
        "flightdeck_ws_connections",
        "flightdeck_ws_frames_sent_total",
        "flightdeck_ws_bytes_sent_total",
        "flightdeck_ws_delivery_seconds",
        "flightdeck_ws_slow_consumer_closes_total",
        "flightdeck_ws_replayed_events_total",
        "flightdeck_store_write_batch_size",
        "flightdeck_store_commit_duration_seconds",
        "flightdeck_wal_bytes_total",
        "flightdeck_wal_sync_duration_seconds",
        "flightdeck_wal_uncheckpointed_bytes",
        "flightdeck_checkpoint_duration_seconds",
        "flightdeck_checkpoint_bytes_total",
        "flightdeck_wal_replayed_records",
        "flightdeck_wal_replay_seconds",
        "flightdeck_store_writer_queue_depth",
        "flightdeck_store_read_duration_seconds",
        "flightdeck_store_file_size_bytes",
        "flightdeck_store_used_bytes",
        "flightdeck_store_records",
        "flightdeck_cache_hits_total",
        "flightdeck_cache_misses_total",
        "flightdeck_cache_evictions_total",
        "flightdeck_cache_entries",
        "flightdeck_tasks",
        "flightdeck_projects",
        "flightdeck_hitl_requests_pending",
        "flightdeck_events_retained",
        "flightdeck_events_latest_seq",
        "flightdeck_alerts_firing",
        "flightdeck_alert_transitions_total",
        "flightdeck_process_resident_memory_bytes",
        "flightdeck_process_cpu_seconds_total",
        "flightdeck_process_open_fds",
        "flightdeck_process_threads",
        "flightdeck_build_info",
    ] {
        assert!(
            r.body.contains(&format!("# HELP {family} ")),
            "{family} has no HELP"
        );
        assert!(
            r.body.contains(&format!("# TYPE {family} ")),
            "{family} has no TYPE"
        );
    }
    assert!(
        r.body.contains("flightdeck_projects 1"),
        "the project gauge counts"
    );
    assert!(r.body.contains(
        r#"flightdeck_http_requests_total{method="GET",route="projects.status",status="200"} 1"#
    ));
    assert!(r.body.contains(r#"flightdeck_build_info{version="#));
    // The project's create was one record of the write-ahead log, synced.
    let value = |name: &str| -> f64 {
        r.body
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name}"))
    };
    assert!(value("flightdeck_wal_bytes_total") > 100.0);
    assert!(value("flightdeck_wal_sync_duration_seconds_count") >= 1.0);
    assert_eq!(value("flightdeck_wal_replayed_records"), 0.0);
    // Labels never carry ids or raw paths.
    assert!(!r.body.contains(&p), "a project id leaked into a label");
    // The bucket bounds run from 50 µs to 10 s.
    assert!(r.body.contains(r#"flightdeck_http_request_duration_seconds_bucket{method="GET",route="projects.status",status="200",le="0.00005"}"#));
    assert!(r.body.contains(r#"le="10"}"#));
}

#[test]
fn request_ids_and_server_timing() {
    let s = Server::start();
    let r = s.get("/livez");
    assert_eq!(r.status, 200);
    let generated = r
        .header("x-request-id")
        .expect("a generated id")
        .to_string();
    assert_eq!(generated.len(), 32);
    assert!(
        r.header("server-timing")
            .is_some_and(|v| v.starts_with("app;dur="))
    );
    let mut request = ureq::http::Request::builder()
        .uri(s.url("/api/v1/nothing"))
        .header("x-request-id", "trace-42");
    request = request.method("GET");
    let r = s.send_request(request.body(Vec::new()).unwrap());
    assert_eq!(r.status, 404);
    assert_eq!(
        r.header("x-request-id"),
        Some("trace-42"),
        "echoed on errors too"
    );
}

#[test]
fn every_health_shape() {
    let s = Server::start();
    let v = s.get("/livez").expect(200);
    assert_eq!(v["status"], "alive");
    let v = s.get("/readyz").expect(200);
    assert_eq!(v["status"], "ready");
    let verbose = s.get("/readyz?verbose");
    assert_eq!(verbose.status, 200);
    for check in [
        "store_read",
        "writer_round_trip",
        "writer_alive",
        "disk_space",
        "data_dir_writable",
        "not_shutting_down",
    ] {
        assert!(
            verbose.body.contains(&format!("[+]{check} ok")),
            "{}",
            verbose.body
        );
    }
    let v = s.get("/health").expect(200);
    for field in ["status", "service", "version", "timestamp"] {
        assert!(v[field].is_string(), "{field}");
    }
    let v = s.get("/health/detailed").expect(200);
    assert_eq!(v["status"], "healthy");
    for component in ["store", "writer", "websocket", "cache", "disk", "alerts"] {
        assert_eq!(
            v["components"][component]["status"], "healthy",
            "{component}: {v}"
        );
    }
    assert!(v["components"]["store"]["latency_ms"].is_number());
    assert!(v["components"]["writer"]["latency_ms"].is_number());
    let v = s.get("/health/ready").expect(200);
    assert_eq!(v["status"], "ready");
    assert_eq!(v["services_ready"], true);
    let v = s.get("/health/z").expect(200);
    assert_eq!(v["status"], "healthy");
    assert_eq!(v["health_percentage"], 100.0);
    assert_eq!(v["services_healthy"], "6/6");
    assert_eq!(v["checks"]["writer_round_trip"], "pass");
    for field in ["timestamp", "version"] {
        assert!(v[field].is_string());
    }
    let perf = s.get("/api/v1/monitoring/performance").expect(200);
    let levels = perf["service_levels"].as_array().unwrap();
    assert!(
        levels
            .iter()
            .any(|l| l["name"] == "status_query" && l["target_p99_ms"] == 0.5)
    );
    assert!(
        levels
            .iter()
            .all(|l| l.get("met").is_some() && l["current_p99_ms"].is_number())
    );
    let m = s.get("/api/v1/monitoring/metrics").expect(200);
    assert!(
        m["last_1m"]["classes"]["status_query"]["count"]
            .as_u64()
            .unwrap()
            >= 1,
        "{m}"
    );
    assert!(
        m["last_5m"]["routes"]["health.z"]["p99_ms"].is_number(),
        "{m}"
    );
    assert!(
        m["process"]["resident_memory_bytes"].as_f64().unwrap() > 0.0,
        "{m}"
    );
}

/// Removes the immutable flag again, whatever happens.
struct Immutable(std::path::PathBuf);

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-i").arg(&self.0).status();
    }
}

#[test]
fn readiness_fails_while_the_data_directory_is_read_only_and_recovers() {
    let s = Server::start();
    s.get("/readyz").expect(200);
    let dir = s.dir.path().to_path_buf();
    let status = Command::new("chattr")
        .arg("+i")
        .arg(&dir)
        .status()
        .expect("chattr (e2fsprogs)");
    assert!(
        status.success(),
        "chattr +i failed: the data directory must be on ext2/3/4 and the test run as root"
    );
    let guard = Immutable(dir.clone());
    let body = wait_for("/readyz to fail", || {
        let r = s.get("/readyz?verbose");
        (r.status == 503).then_some(r.body)
    });
    assert!(body.contains("[-]data_dir_writable failed"), "{body}");
    let detailed = s.get("/health/detailed");
    assert_eq!(detailed.status, 503);
    assert_eq!(detailed.json()["components"]["disk"]["status"], "unhealthy");
    assert_eq!(s.get("/health/ready").json()["status"], "not_ready");
    drop(guard);
    wait_for("/readyz to recover", || {
        (s.get("/readyz").status == 200).then_some(())
    });
    assert_eq!(s.get("/health/detailed").status, 200);
}

#[test]
fn readiness_fails_while_the_disk_is_nearly_full_and_recovers() {
    let Some(tmpfs) = Tmpfs::mount("64m") else {
        return;
    };
    let data = tempfile::Builder::new().tempdir_in(tmpfs.path()).unwrap();
    let s = Server::start_in(
        std::sync::Arc::new(data),
        &["--min-free-disk-mb", "16", "--wal-segment-mib", "1"],
    );
    s.get("/readyz").expect(200);
    let filler = tmpfs.path().join("filler");
    {
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 1 << 20];
        for _ in 0..52 {
            f.write_all(&chunk).unwrap();
        }
        f.sync_all().unwrap();
    }
    let body = wait_for("/readyz to fail", || {
        let r = s.get("/readyz?verbose");
        (r.status == 503).then_some(r.body)
    });
    assert!(body.contains("[-]disk_space failed"), "{body}");
    std::fs::remove_file(&filler).unwrap();
    wait_for("/readyz to recover", || {
        (s.get("/readyz").status == 200).then_some(())
    });
    drop(s);
    drop(tmpfs);
}

/// A loopback HTTP receiver that answers 200 and hands over each request body.
fn webhook_receiver() -> (String, mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/api/v2/alerts", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = vec![0u8; length];
            let _ = reader.read_exact(&mut body);
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            if tx
                .send(String::from_utf8_lossy(&body).into_owned())
                .is_err()
            {
                return;
            }
        }
    });
    (url, rx)
}

fn rule_config(threshold: f64) -> String {
    format!(
        "[[alert_rules]]\nname = \"StatusQueryLatencyHigh\"\nsignal = \"status_query_p99\"\nthreshold = {threshold:?}\n\
         window_seconds = 60\nfor_seconds = 1\nkeep_firing_for_seconds = 0\nseverity = \"critical\"\nsummary = \"test rule\"\n"
    )
}

fn rule_state(s: &Server) -> (String, Value) {
    let alerts = s.get("/api/v1/monitoring/alerts").expect(200);
    let rule = alerts["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "StatusQueryLatencyHigh")
        .unwrap()
        .clone();
    (rule["state"].as_str().unwrap().to_string(), alerts)
}

#[test]
fn an_alert_goes_pending_firing_and_resolved_with_events_and_webhooks() {
    let (url, hooks) = webhook_receiver();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("flightdeck.toml");
    std::fs::write(&config, rule_config(0.0)).unwrap();
    let s = Server::start_with(&[
        "--config",
        config.to_str().unwrap(),
        "--alert-eval-interval-secs",
        "1",
        "--alert-webhook-url",
        &url,
        "--alert-resend-interval-secs",
        "2",
    ]);
    assert_eq!(rule_state(&s).0, "inactive");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut socket = rt.block_on(async {
        let (socket, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", s.addr))
            .await
            .unwrap();
        socket
    });
    let p = s.project("p");
    s.get(&format!("/api/v1/projects/{p}/status")).expect(200);

    let alerts = wait_for("the rule to fire", || {
        let (state, alerts) = rule_state(&s);
        (state == "firing").then_some(alerts)
    });
    let path: Vec<(String, String)> = alerts["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .filter(|t| t["rule"] == "StatusQueryLatencyHigh")
        .map(|t| {
            (
                t["from"].as_str().unwrap().into(),
                t["to"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        path,
        vec![
            ("inactive".into(), "pending".into()),
            ("pending".into(), "firing".into())
        ]
    );
    let next_alert_event = |socket: &mut _| -> Value {
        rt.block_on(async {
            let socket: &mut tokio_tungstenite::WebSocketStream<_> = socket;
            loop {
                let message = tokio::time::timeout(PATIENCE, socket.next())
                    .await
                    .expect("an event")
                    .unwrap()
                    .unwrap();
                if let Message::Text(text) = message {
                    let v: Value = serde_json::from_str(&text).unwrap();
                    if v["event_type"]
                        .as_str()
                        .is_some_and(|t| t.starts_with("alert_"))
                    {
                        return v;
                    }
                }
            }
        })
    };
    let fired = next_alert_event(&mut socket);
    assert_eq!(fired["event_type"], "alert_firing");
    assert_eq!(fired["data"]["rule"], "StatusQueryLatencyHigh");
    assert_eq!(fired["data"]["severity"], "critical");
    let hook: Value =
        serde_json::from_str(&hooks.recv_timeout(PATIENCE).expect("a webhook")).unwrap();
    assert_eq!(hook[0]["labels"]["alertname"], "StatusQueryLatencyHigh");
    assert_eq!(hook[0]["labels"]["severity"], "critical");
    assert_eq!(hook[0]["annotations"]["summary"], "test rule");
    // Valid for four resend intervals, so a receiver never resolves it by itself meanwhile.
    let starts = timestamp(&hook[0]["startsAt"]);
    let ends = timestamp(&hook[0]["endsAt"]);
    let ahead = (ends - chrono::Utc::now()).num_milliseconds();
    assert!(
        (5_000..=8_500).contains(&ahead),
        "endsAt {ahead} ms ahead: {hook}"
    );
    // Sent again while it fires, with the same start and a later end.
    let again: Value =
        serde_json::from_str(&hooks.recv_timeout(PATIENCE).expect("a resend")).unwrap();
    assert_eq!(again[0]["labels"]["alertname"], "StatusQueryLatencyHigh");
    assert_eq!(timestamp(&again[0]["startsAt"]), starts);
    assert!(timestamp(&again[0]["endsAt"]) > ends, "{again}");
    assert!(
        hook[0]["generatorURL"]
            .as_str()
            .unwrap()
            .ends_with("/api/v1/monitoring/alerts")
    );
    let metrics = s.get("/metrics").body;
    assert!(metrics.contains(r#"flightdeck_alerts_firing{rule="StatusQueryLatencyHigh"} 1"#));

    // Raise the threshold back and reload the rules.
    std::fs::write(&config, rule_config(1000.0)).unwrap();
    let pid = s.pid().to_string();
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    wait_for("the rule to resolve", || {
        (rule_state(&s).0 == "resolved").then_some(())
    });
    let resolved = next_alert_event(&mut socket);
    assert_eq!(resolved["event_type"], "alert_resolved");
    // Resends may still be queued; the resolve notice ends the alert now, not ahead.
    let resolved_hook = loop {
        let hook: Value =
            serde_json::from_str(&hooks.recv_timeout(PATIENCE).expect("a webhook")).unwrap();
        if timestamp(&hook[0]["endsAt"]) <= chrono::Utc::now() {
            break hook;
        }
    };
    assert_eq!(timestamp(&resolved_hook[0]["startsAt"]), starts);
    // And nothing more is sent for it.
    assert!(hooks.recv_timeout(Duration::from_secs(5)).is_err());
    assert!(
        s.get("/metrics")
            .body
            .contains(r#"flightdeck_alerts_firing{rule="StatusQueryLatencyHigh"} 0"#)
    );
}

fn timestamp(v: &Value) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(v.as_str().expect("a timestamp"))
        .expect("RFC 3339")
        .to_utc()
}

/// Starts the server with stderr captured and `args`; returns it, its address and its log lines.
fn start_logging(
    args: &[&str],
) -> (
    std::process::Child,
    String,
    std::sync::mpsc::Receiver<String>,
    tempfile::TempDir,
) {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(crate::common::BIN)
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .args(args)
        .env("FLIGHTDECK_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap()
        .to_string();
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    (child, addr, rx, dir)
}

/// The first log line containing `needle`, waiting up to a minute.
fn log_line(rx: &std::sync::mpsc::Receiver<String>, needle: &str) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.contains(needle) => return line,
            Ok(_) => {}
            Err(e) => panic!("no log line with {needle:?}: {e}"),
        }
    }
}

#[test]
fn log_lines_of_a_request_carry_its_id_in_text_and_json() {
    for format in ["text", "json"] {
        let (mut child, addr, rx, _dir) =
            start_logging(&["--slow-status-query-ms", "0", "--log-format", format]);
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let response = agent
            .get(format!("http://{addr}/health"))
            .header("x-request-id", "trace-abc-123")
            .call()
            .unwrap();
        assert_eq!(response.headers()["x-request-id"], "trace-abc-123");
        let line = log_line(&rx, "slow request");
        match format {
            "text" => {
                assert!(line.contains("WARN"), "{line}");
                assert!(line.ends_with(" request_id=trace-abc-123"), "{line}");
            }
            _ => {
                let v: serde_json::Value = serde_json::from_str(&line).unwrap();
                assert_eq!(v["request_id"], "trace-abc-123", "{line}");
                assert_eq!(v["fields"]["message"], "slow request", "{line}");
                assert_eq!(v["level"], "WARN", "{line}");
            }
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

#[test]
fn the_history_has_a_point_per_class_every_thirty_seconds_once_one_passed() {
    let s = Server::start();
    let h = s.get("/api/v1/monitoring/history").expect(200);
    assert_eq!(h["step_seconds"], 30);
    assert_eq!(h["window_seconds"], 3600);
    let names: Vec<&str> = h["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "status_query",
            "task_operation",
            "context_retrieval",
            "websocket_delivery"
        ]
    );
    // Traffic, then the first step's point: its status-query count includes these requests.
    for _ in 0..5 {
        s.get("/api/v1/agents/status").expect(200);
    }
    let point = wait_for("the first history point (after 30 s)", || {
        let h = s.get("/api/v1/monitoring/history").expect(200);
        h["series"][0]["points"]
            .as_array()
            .unwrap()
            .first()
            .cloned()
    });
    assert!(point["count"].as_u64().unwrap() >= 5, "{point}");
    let rate = point["rate_per_second"].as_f64().unwrap();
    assert!((rate - point["count"].as_f64().unwrap() / 30.0).abs() < 1e-9);
    assert!(point["p99_ms"].as_f64().unwrap() > 0.0);
    assert!(point["timestamp"].as_str().unwrap().ends_with('Z'));
}
