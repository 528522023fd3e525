//! WebSocket delivery benchmark: latency from the commit timestamp in each frame to its receipt by
//! a Rust client in another process, and the share of events delivered, for flightdeck and, in the
//! same run, a bare fastwebsockets fan-out server (one `write_frame` per event per connection, no
//! replay, no bound: the baseline the issue measured). Also resident memory per idle connection.
//!
//! `cargo bench --bench ws` runs every case; `FLIGHTDECK_BENCH_CASES=100,1000x100` picks some
//! (`CONNSxRATE`, rate in events/s, default 100), `FLIGHTDECK_BENCH_SECONDS` sets each case's
//! publishing time (default 5).

use std::convert::Infallible;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use flightdeck::events::peek::{frame_seq, frame_timestamp};
use futures_util::StreamExt;
use http_body_util::{Empty, Full};
use parking_lot::Mutex;
use tokio_tungstenite::tungstenite::Message;

const ROLE: &str = "FLIGHTDECK_BENCH_ROLE";

fn main() {
    if std::env::var(ROLE).as_deref() == Ok("baseline") {
        return baseline_server();
    }
    let seconds: u64 = std::env::var("FLIGHTDECK_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let cases: Vec<(usize, u64)> = std::env::var("FLIGHTDECK_BENCH_CASES")
        .unwrap_or_else(|_| "100,1000x100,10000x10,10000x100".into())
        .split(',')
        .map(|c| match c.split_once('x') {
            Some((n, r)) => (n.parse().unwrap(), r.parse().unwrap()),
            None => (c.parse().unwrap(), 100),
        })
        .collect();
    println!("# WebSocket delivery: {seconds} s of publishing per case; latency in ms");
    println!("| server | connections | events/s | p50 | p99 | max | delivered | resumed |");
    println!("|---|---|---|---|---|---|---|---|");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    for (conns, rate) in cases {
        let base = runtime.block_on(run_case(Target::Baseline, conns, rate, seconds));
        let ours = runtime.block_on(run_case(Target::Flightdeck, conns, rate, seconds));
        for (name, r) in [("bare fastwebsockets", &base), ("flightdeck", &ours)] {
            println!(
                "| {name} | {conns} | {rate} | {:.2} | {:.2} | {:.2} | {:.2} % | {} |",
                r.p50,
                r.p99,
                r.max,
                r.delivered * 100.0,
                r.resumed
            );
        }
        println!(
            "| ratio flightdeck/bare p99 | {conns} | {rate} | | {:.2}x | | | |",
            ours.p99 / base.p99.max(1e-9)
        );
    }
    let per_conn = runtime.block_on(idle_memory(10_000));
    println!(
        "\nresident memory per idle connection (10,000 connections): {:.1} KiB",
        per_conn / 1024.0
    );
}

#[derive(Copy, Clone, PartialEq)]
enum Target {
    Flightdeck,
    Baseline,
}

struct Process {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(target: Target) -> Process {
    let dir = tempfile::tempdir().unwrap();
    let mut command = match target {
        Target::Flightdeck => {
            let mut c = Command::new(env!("CARGO_BIN_EXE_flightdeck"));
            c.args([
                "--listen",
                "127.0.0.1:0",
                "--durability",
                "none",
                "--max-ws-connections",
                "20000",
                "--data-dir",
            ])
            .arg(dir.path())
            .env("FLIGHTDECK_LOG", "warn");
            c
        }
        Target::Baseline => {
            let mut c = Command::new(std::env::current_exe().unwrap());
            c.env(ROLE, "baseline");
            c
        }
    };
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .expect("address line")
        .to_string();
    Process {
        child,
        addr,
        _dir: dir,
    }
}

struct Outcome {
    p50: f64,
    p99: f64,
    max: f64,
    delivered: f64,
    resumed: u64,
}

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

async fn run_case(target: Target, conns: usize, rate: u64, seconds: u64) -> Outcome {
    let server = start(target);
    let addr = server.addr.clone();
    let project = match target {
        Target::Flightdeck => {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build()
                .into();
            let body = agent
                .post(format!("http://{addr}/api/v1/projects"))
                .send_json(serde_json::json!({"name": "bench"}))
                .unwrap()
                .body_mut()
                .read_json::<serde_json::Value>()
                .unwrap();
            body["id"].as_str().unwrap().to_string()
        }
        Target::Baseline => String::new(),
    };
    // One buffer per client: uncontended, and read after the clients are stopped.
    let mut buffers: Vec<Arc<Mutex<Vec<u32>>>> = Vec::with_capacity(conns);
    let received = Arc::new(AtomicU64::new(0));
    let resumed = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::with_capacity(conns);
    let ready = Arc::new(tokio::sync::Semaphore::new(0));
    for chunk in (0..conns).collect::<Vec<_>>().chunks(250) {
        let mut connecting = Vec::new();
        for _ in chunk {
            let latencies = Arc::new(Mutex::new(Vec::with_capacity((rate * seconds) as usize)));
            buffers.push(latencies.clone());
            let (addr, received, resumed, ready) = (
                addr.clone(),
                received.clone(),
                resumed.clone(),
                ready.clone(),
            );
            connecting.push(tokio::spawn(client(
                target, addr, latencies, received, resumed, ready,
            )));
        }
        clients.extend(connecting);
        // Let each chunk finish its handshakes before the next, as a real fleet of clients would.
        ready
            .acquire_many(chunk.len() as u32)
            .await
            .unwrap()
            .forget();
    }
    // Publish at a steady rate from a blocking thread.
    let published = {
        let addr = addr.clone();
        tokio::task::spawn_blocking(move || {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build()
                .into();
            let total = rate * seconds;
            let started = Instant::now();
            let mut last = 0;
            for i in 0..total {
                let due = started + Duration::from_micros(i * 1_000_000 / rate);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                let mut response = match target {
                    Target::Flightdeck => agent
                        .post(format!("http://{addr}/api/v1/projects/{project}/tasks"))
                        .send_json(
                            serde_json::json!({"agent_type": "coder", "instructions": "bench"}),
                        )
                        .unwrap(),
                    Target::Baseline => agent
                        .post(format!("http://{addr}/publish"))
                        .send_empty()
                        .unwrap(),
                };
                let _ = response.body_mut().read_to_string();
                last = i + 1;
            }
            last
        })
        .await
        .unwrap()
    };
    let expected = published * conns as u64;
    let deadline = Instant::now() + Duration::from_secs(30);
    while received.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for c in &clients {
        c.abort();
    }
    drop(server);
    let mut all: Vec<u32> = buffers
        .iter()
        .flat_map(|b| std::mem::take(&mut *b.lock()))
        .collect();
    all.sort_unstable();
    let pick = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0) as f64
            / 1000.0
    };
    Outcome {
        p50: pick(0.5),
        p99: pick(0.99),
        max: all.last().copied().unwrap_or(0) as f64 / 1000.0,
        delivered: received.load(Ordering::Relaxed) as f64 / expected.max(1) as f64,
        resumed: resumed.load(Ordering::Relaxed),
    }
}

async fn client(
    target: Target,
    addr: String,
    latencies: Arc<Mutex<Vec<u32>>>,
    received: Arc<AtomicU64>,
    resumed: Arc<AtomicU64>,
    ready: Arc<tokio::sync::Semaphore>,
) {
    let mut since: Option<u64> = None;
    let mut first = true;

    loop {
        let url = match since {
            Some(s) => format!("ws://{addr}/ws?since={s}"),
            None => format!("ws://{addr}/ws"),
        };
        let Ok((mut socket, _)) = tokio_tungstenite::connect_async(url).await else {
            return;
        };
        if first && target == Target::Baseline {
            ready.add_permits(1);
            first = false;
        }
        let mut lagged_at = None;
        while let Some(Ok(message)) = socket.next().await {
            match message {
                Message::Text(text) => {
                    if let Some(at) = frame_timestamp(&text) {
                        let seq = frame_seq(&text).unwrap_or(0);
                        if since.is_none_or(|s| seq > s) {
                            since = Some(seq);
                            latencies.lock().push((now_micros() - at).max(0) as u32);
                            received.fetch_add(1, Ordering::Relaxed);
                        }
                    } else if first && text.contains("\"subscribed\"") {
                        ready.add_permits(1);
                        first = false;
                        since = since.or(Some(0));
                    }
                }
                Message::Close(Some(frame)) => {
                    if let Some(n) = frame.reason.strip_prefix("lagged; resume since=") {
                        lagged_at = n.parse::<u64>().ok();
                    }
                    break;
                }
                _ => {}
            }
        }
        match lagged_at {
            Some(n) => {
                resumed.fetch_add(1, Ordering::Relaxed);
                since = Some(n);
            }
            None => return,
        }
    }
}

async fn idle_memory(conns: usize) -> f64 {
    let server = start(Target::Flightdeck);
    let rss = |pid: u32| -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .unwrap_or(0.0)
            * 1024.0
    };
    let pid = server.child.id();
    // Warm up the allocator and the runtime with a few connections first.
    let mut sockets = Vec::new();
    open(&server.addr, 100, &mut sockets).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss(pid);
    open(&server.addr, conns, &mut sockets).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss(pid);
    drop(sockets);
    (after - before) / conns as f64
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens `n` more idle connections to `/ws`.
async fn open(addr: &str, n: usize, sockets: &mut Vec<Socket>) {
    for _ in 0..n {
        let url = format!("ws://{addr}/ws");
        sockets.push(tokio_tungstenite::connect_async(url).await.unwrap().0);
    }
}

/// The baseline: a bare fastwebsockets broadcast server. `POST /publish` stamps a frame and sends
/// it to every connection through a tokio broadcast channel; each connection writes each frame
/// with its own `write_frame`. Lagging receivers lose frames.
fn baseline_server() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!("listening on {}", listener.local_addr().unwrap());
        let (tx, _) = tokio::sync::broadcast::channel::<Bytes>(1024);
        let seq = Arc::new(AtomicU64::new(0));
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let _ = stream.set_nodelay(true);
            let (tx, seq) = (tx.clone(), seq.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                    let (tx, seq) = (tx.clone(), seq.clone());
                    async move {
                        if req.uri().path() == "/publish" {
                            let n = seq.fetch_add(1, Ordering::Relaxed) + 1;
                            let ts = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.6fZ");
                            let frame = format!("{{\"seq\":{n},\"event_type\":\"bench\",\"data\":{{}},\"timestamp\":\"{ts}\"}}");
                            let _ = tx.send(Bytes::from(frame));
                            return Ok::<_, Infallible>(hyper::Response::new(http_body_util::Either::Left(Full::new(Bytes::from_static(b"{}")))));
                        }
                        let (response, upgrade) = fastwebsockets::upgrade::upgrade(&mut req).unwrap();
                        let mut rx = tx.subscribe();
                        tokio::spawn(async move {
                            let Ok(mut ws) = upgrade.await else { return };
                            loop {
                                match rx.recv().await {
                                    Ok(payload) => {
                                        let frame = fastwebsockets::Frame::text(fastwebsockets::Payload::Borrowed(&payload));
                                        if ws.write_frame(frame).await.is_err() {
                                            return;
                                        }
                                    }
                                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                                    Err(_) => return,
                                }
                            }
                        });
                        let (parts, _) = response.into_parts();
                        Ok(hyper::Response::from_parts(parts, http_body_util::Either::Right(Empty::<Bytes>::new())))
                    }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).with_upgrades().await;
            });
        }
    });
}
