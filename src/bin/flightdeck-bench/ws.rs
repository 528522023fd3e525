//! The driver's WebSocket clients: each subscribes to one project from a starting seq, measures
//! every event's delivery latency (commit timestamp in the frame to receipt) and records the seqs
//! it received; at the end the seqs are checked against the project's event log read over HTTP.
//! They run in the driver's process or, for large fleets, in a child process of their own
//! (`flightdeck-bench ws-clients`, which reads a [`WsPlan`] and `stop` on stdin and answers with a
//! [`WsReport`] on stdout).

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fastwebsockets::{FragmentCollector, OpCode};
use http_body_util::Empty;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;

use super::http::Client;
use super::stats::{Samples, StreamCheck, StreamVerdict, Summary};
use flightdeck::events::peek::{frame_seq, frame_timestamp};

/// Who connects where.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct WsPlan {
    pub addr: SocketAddr,
    pub token: Option<String>,
    /// Connection `i` subscribes to `projects[i % projects.len()]`.
    pub projects: Vec<String>,
    pub connections: usize,
    /// Every connection asks for the events after this seq.
    pub since: u64,
}

#[derive(Serialize, Deserialize, Debug, Clone, Default)]
pub struct WsReport {
    pub connections: usize,
    pub connected: usize,
    pub delivery: Summary,
    pub verdict: StreamVerdict,
    /// Connections closed for lagging that resumed from their last seq.
    pub resumed: u64,
    /// Failed handshakes and connections lost other than by a lag close.
    pub errors: u64,
    /// Connections that had not received everything when the wait for stragglers ended.
    pub incomplete: u64,
    /// CPU time of the client process, when the clients ran in one of their own.
    pub process_cpu_seconds: Option<f64>,
}

#[derive(Default)]
struct Received {
    check: StreamCheck,
    latency: Samples,
    resumed: u64,
}

struct Executor;

impl<F> hyper::rt::Executor<F> for Executor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        tokio::spawn(fut);
    }
}

type Socket = FragmentCollector<hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>>;

async fn connect(addr: SocketAddr, path: &str) -> Result<Socket, String> {
    let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    let request = hyper::Request::builder()
        .method("GET")
        .uri(path)
        .header("host", addr.to_string())
        .header("upgrade", "websocket")
        .header("connection", "upgrade")
        .header(
            "sec-websocket-key",
            fastwebsockets::handshake::generate_key(),
        )
        .header("sec-websocket-version", "13")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let (socket, _) = fastwebsockets::handshake::client(&Executor, request, stream)
        .await
        .map_err(|e| e.to_string())?;
    Ok(FragmentCollector::new(socket))
}

/// One connection: subscribe, receive until the server closes, resume after a lag close.
async fn connection(
    plan: Arc<WsPlan>,
    project: String,
    received: Arc<Mutex<Received>>,
    subscribed: Arc<tokio::sync::Semaphore>,
    errors: Arc<AtomicU64>,
) {
    let marker = format!("\"project_id\":\"{project}\"");
    let token = plan
        .token
        .as_ref()
        .map(|t| format!("&token={t}"))
        .unwrap_or_default();
    let mut since = plan.since;
    let mut signalled = false;
    loop {
        let path = format!("/ws/{project}?since={since}{token}");
        let mut socket = match connect(plan.addr, &path).await {
            Ok(s) => s,
            Err(_) => {
                errors.fetch_add(1, Ordering::Relaxed);
                if !signalled {
                    subscribed.add_permits(1);
                }
                return;
            }
        };
        let resume = loop {
            let Ok(frame) = socket.read_frame().await else {
                errors.fetch_add(1, Ordering::Relaxed);
                break None;
            };
            match frame.opcode {
                OpCode::Text => {
                    let Ok(text) = std::str::from_utf8(&frame.payload) else {
                        continue;
                    };
                    match (frame_seq(text), frame_timestamp(text)) {
                        // Events of other streams (alerts have no project) are not judged.
                        (Some(seq), Some(at)) if text.contains(&marker) => {
                            let now = flightdeck::domain::now_micros();
                            let mut r = received.lock();
                            r.check.observe(seq);
                            r.latency.record_micros((now - at).max(0) as u64);
                            since = since.max(seq);
                        }
                        _ if !signalled && text.contains("\"subscribed\"") => {
                            signalled = true;
                            subscribed.add_permits(1);
                        }
                        _ => {}
                    }
                }
                OpCode::Close => {
                    let reason = frame.payload.get(2..).unwrap_or_default();
                    break std::str::from_utf8(reason)
                        .ok()
                        .and_then(|r| r.strip_prefix("lagged; resume since="))
                        .and_then(|n| n.parse::<u64>().ok());
                }
                _ => {}
            }
        };
        match resume {
            Some(n) => {
                received.lock().resumed += 1;
                since = n;
            }
            None => return,
        }
    }
}

/// Connects every client (in chunks, each subscribed before the next starts), calls `ready`,
/// waits for `stop`, then waits (up to `settle`) until every connection holds every event its
/// project's log has, and judges each stream.
pub async fn run(
    plan: WsPlan,
    ready: impl FnOnce(usize),
    stop: impl Future<Output = ()>,
    settle: Duration,
) -> WsReport {
    let plan = Arc::new(plan);
    let errors = Arc::new(AtomicU64::new(0));
    let subscribed = Arc::new(tokio::sync::Semaphore::new(0));
    let mut streams: Vec<(String, Arc<Mutex<Received>>)> = Vec::with_capacity(plan.connections);
    let mut tasks = Vec::with_capacity(plan.connections);
    let indexes: Vec<usize> = (0..plan.connections).collect();
    for chunk in indexes.chunks(250) {
        for &i in chunk {
            let project = plan.projects[i % plan.projects.len()].clone();
            let received = Arc::new(Mutex::new(Received::default()));
            streams.push((project.clone(), received.clone()));
            tasks.push(tokio::spawn(connection(
                plan.clone(),
                project,
                received,
                subscribed.clone(),
                errors.clone(),
            )));
        }
        if let Ok(p) = subscribed.acquire_many(chunk.len() as u32).await {
            p.forget();
        }
    }
    let failed = errors.load(Ordering::Relaxed) as usize;
    ready(plan.connections - failed);
    stop.await;

    // What each project's log holds now is what every subscriber of it must have received.
    let mut expected: HashMap<String, Vec<u64>> = HashMap::new();
    let mut client = Client::new(plan.addr, plan.token.clone());
    for project in &plan.projects {
        let seqs = match project_seqs(&mut client, project, plan.since).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(%project, error = %e, "cannot read the event log");
                errors.fetch_add(1, Ordering::Relaxed);
                Vec::new()
            }
        };
        expected.insert(project.clone(), seqs);
    }
    let deadline = Instant::now() + settle;
    let complete = |streams: &[(String, Arc<Mutex<Received>>)]| {
        streams
            .iter()
            .filter(|(p, r)| r.lock().check.has_all(&expected[p]))
            .count()
    };
    let mut done = complete(&streams);
    while done < streams.len() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        done = complete(&streams);
    }
    for task in &tasks {
        task.abort();
    }
    let mut report = WsReport {
        connections: plan.connections,
        connected: plan.connections - failed,
        incomplete: (streams.len() - done) as u64,
        ..WsReport::default()
    };
    let mut latency = Samples::default();
    for (project, received) in &streams {
        let received = std::mem::take(&mut *received.lock());
        report
            .verdict
            .add(received.check.verify(&expected[project]));
        report.resumed += received.resumed;
        latency.merge(received.latency);
    }
    report.errors = errors.load(Ordering::Relaxed);
    report.delivery = latency.summary();
    report
}

/// The seqs of a project's events after `since`, from `GET /api/v1/events`, every page.
async fn project_seqs(client: &mut Client, project: &str, since: u64) -> Result<Vec<u64>, String> {
    let mut seqs = Vec::new();
    let mut cursor = since.to_string();
    loop {
        let answer = client
            .get(&format!(
                "/api/v1/events?project_id={project}&since={cursor}&limit=1000"
            ))
            .await
            .map_err(|e| e.to_string())?;
        let page = answer
            .json()
            .filter(|_| answer.status == 200)
            .ok_or_else(|| format!("events list answered {}", answer.status))?;
        for item in page["items"].as_array().into_iter().flatten() {
            seqs.extend(item["seq"].as_u64());
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = next.to_string(),
            None => return Ok(seqs),
        }
    }
}

/// `flightdeck-bench ws-clients`: the clients as a child process. Reads one JSON [`WsPlan`] line, prints
/// `ready N`, waits for a `stop` line, prints the [`WsReport`] as one JSON line.
pub fn child_main() -> std::io::Result<()> {
    let mut first = String::new();
    std::io::stdin().read_line(&mut first)?;
    let plan: WsPlan = serde_json::from_str(&first).map_err(std::io::Error::other)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        // `stop` or the end of stdin (the driver went away) ends the run.
        for line in std::io::stdin().lines() {
            if line.map_or(true, |l| l.trim() == "stop") {
                break;
            }
        }
        let _ = stop_tx.send(());
    });
    let mut report = runtime.block_on(run(
        plan,
        |n| println!("ready {n}"),
        async {
            let _ = stop_rx.await;
        },
        Duration::from_secs(60),
    ));
    report.process_cpu_seconds = super::process_figures(std::process::id()).1;
    println!(
        "{}",
        serde_json::to_string(&report).map_err(std::io::Error::other)?
    );
    Ok(())
}

/// Runs the clients in a child process of `exe`; `stop` is sent when `stop` resolves.
pub async fn run_in_child(
    exe: &std::path::Path,
    plan: WsPlan,
    ready: impl FnOnce(usize),
    stop: impl Future<Output = ()>,
) -> Result<WsReport, String> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let mut child = tokio::process::Command::new(exe)
        .arg("ws-clients")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start the WebSocket client process: {e}"))?;
    let mut stdin = child.stdin.take().expect("piped");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("piped")).lines();
    let plan_line = serde_json::to_string(&plan).map_err(|e| e.to_string())? + "\n";
    stdin
        .write_all(plan_line.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let line = lines.next_line().await.map_err(|e| e.to_string())?;
    let connected = line
        .as_deref()
        .and_then(|l| l.strip_prefix("ready "))
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("the WebSocket client process said {line:?}"))?;
    ready(connected);
    stop.await;
    stdin
        .write_all(b"stop\n")
        .await
        .map_err(|e| e.to_string())?;
    let line = lines
        .next_line()
        .await
        .map_err(|e| e.to_string())?
        .ok_or("the WebSocket client process ended without a report")?;
    let _ = child.wait().await;
    serde_json::from_str(&line).map_err(|e| format!("bad report from the client process: {e}"))
}
