//! The cost of instrumentation per request: a status query (`GET /api/v1/projects/{id}/status`,
//! 10 projects x 50 tasks) served by the same handler with and without the timing wrapper (request
//! id, span, duration histogram, counters, windowed latency, Server-Timing), in the same process
//! and run, ABBA-ordered rounds. Throughput and latency percentiles from 10 keep-alive connections.
//!
//! The server runs on one worker thread pinned to CPU 0 and the clients on CPU 1, so the server's
//! core is the bottleneck (its busy share is printed) and the throughput ratio is the ratio of CPU
//! per request; the log subscriber is the server's (text, `info`), so the request span is real.
//!
//! `cargo bench --bench http` (`FLIGHTDECK_BENCH_SECONDS` per round, default 2; 8 rounds each).

use std::convert::Infallible;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flightdeck::api::{AppState, handle};
use flightdeck::domain::{AgentType, Id};
use flightdeck::events::hub::Hub;
use flightdeck::http::Request;
use flightdeck::http::timing::Timed;
use flightdeck::monitor::health::Health;
use flightdeck::monitor::{Monitor, MonitorConfig};
use flightdeck::store::{Command, Durability, Reply, Store, StoreConfig};
use flightdeck::ws::{WsConfig, WsContext};
use hyper_util::rt::TokioIo;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const CONNECTIONS: usize = 10;

fn main() {
    let seconds: u64 = std::env::var("FLIGHTDECK_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    // As `flightdeck serve` logs: text at `info` (to a sink here).
    flightdeck::logging::init_with(flightdeck::config::LogFormat::Text, std::io::sink, false);
    let dir = tempfile::tempdir().unwrap();
    let mut config = StoreConfig::new(dir.path());
    config.durability = Durability::None;
    let hub = Hub::new();
    let publisher_hub = hub.clone();
    let store = Store::open(&config, Arc::new(move |e| publisher_hub.publish(e))).unwrap();
    let projects: Vec<Id> = (0..10)
        .map(|i| {
            let Ok(Reply::Project(p)) = store.write_blocking(Command::CreateProject {
                name: format!("p{i}"),
                description: None,
            }) else {
                panic!()
            };
            for _ in 0..50 {
                store
                    .write_blocking(Command::CreateTask {
                        project_id: p.id,
                        agent_type: AgentType::Coder,
                        instructions: "benchmark task".into(),
                        context_ids: Vec::new(),
                    })
                    .unwrap();
            }
            p.id
        })
        .collect();

    // Every thread of the server's runtime (one worker; blocking threads if any), for its CPU time.
    let server_threads = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let tids = server_threads.clone();
    let server = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .on_thread_start(move || {
            pin_to(0);
            // SAFETY: gettid has no preconditions.
            tids.lock().push(unsafe { libc::gettid() });
        })
        .enable_all()
        .build()
        .unwrap();
    let (plain, timed) = server.block_on(async {
        let stop = CancellationToken::new();
        let tracker = TaskTracker::new();
        let monitor = Monitor::new(MonitorConfig::default());
        // As in the server, histogram samples are drained into their buckets every few seconds.
        let upkeep = monitor.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                upkeep.upkeep();
            }
        });
        let health = Arc::new(Health::new(
            store.clone(),
            dir.path().to_path_buf(),
            0,
            stop.clone(),
        ));
        let ws = WsContext::new(
            WsConfig::default(),
            hub,
            store.clone(),
            monitor.clone(),
            stop.clone(),
            tracker.clone(),
        );
        let state = Arc::new(AppState {
            store: store.clone(),
            max_body_bytes: 1 << 20,
            ws,
            monitor: monitor.clone(),
            health,
            keys: Default::default(),
        });
        let plain_state = state.clone();
        let plain = serve(hyper::service::service_fn(move |req| {
            let state = plain_state.clone();
            async move { Ok::<_, Infallible>(handle(&state, Request::new(req)).await) }
        }))
        .await;
        let timed = serve(Timed::new(
            hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(&state, Request::new(req)).await) }
            }),
            monitor,
        ))
        .await;
        (plain, timed)
    });

    println!(
        "# status query, 10 projects x 50 tasks, {CONNECTIONS} connections, {seconds} s rounds"
    );
    println!("| handler | requests/s | p50 µs | p99 µs | max µs |");
    println!("|---|---|---|---|---|");
    let mut totals = [(0u64, Vec::new()), (0u64, Vec::new())];
    let mut busy = [0.0f64; 2];
    let mut pairs = Vec::new();
    let server_cpu = || -> u64 {
        server_threads
            .lock()
            .iter()
            .map(|t| thread_cpu_ticks(*t))
            .sum()
    };
    // ABBA order (A B B A ...) so neither side always runs first or second; each A-B pair gives one
    // ratio.
    let rounds = 16;
    let mut last = [0u64; 2];
    for round in 0..rounds {
        let which = if [0, 3].contains(&(round % 4)) { 0 } else { 1 };
        let addr = if which == 0 { plain } else { timed };
        let cpu_before = server_cpu();
        let started = Instant::now();
        let (count, latencies) = load(addr, &projects, Duration::from_secs(seconds));
        let wall = started.elapsed().as_secs_f64();
        busy[which] += (server_cpu() - cpu_before) as f64 / 100.0 / wall;
        totals[which].0 += count;
        totals[which].1.extend(latencies);
        last[which] = count;
        if round % 2 == 1 {
            pairs.push(last[1] as f64 / last[0] as f64);
        }
    }
    let mut rates = [0.0; 2];
    for (i, name) in ["without instrumentation", "with instrumentation"]
        .iter()
        .enumerate()
    {
        let (count, latencies) = &mut totals[i];
        latencies.sort_unstable();
        let pct =
            |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
        rates[i] = *count as f64 / ((rounds / 2) as u64 * seconds) as f64;
        println!(
            "| {name} | {:.0} | {} | {} | {} |",
            rates[i],
            pct(0.5),
            pct(0.99),
            latencies.last().unwrap()
        );
    }
    pairs.sort_by(f64::total_cmp);
    println!(
        "\nthroughput with / without: {:.3} ({:+.1} %); median of {} round pairs {:.3}, range {:.3}–{:.3}",
        rates[1] / rates[0],
        (rates[1] / rates[0] - 1.0) * 100.0,
        pairs.len(),
        pairs[pairs.len() / 2],
        pairs[0],
        pairs[pairs.len() - 1]
    );
    println!(
        "server core busy: {:.0} % without, {:.0} % with instrumentation",
        busy[0] / (rounds / 2) as f64 * 100.0,
        busy[1] / (rounds / 2) as f64 * 100.0
    );
    drop(server);
    store.close();
}

async fn serve<S>(service: S) -> SocketAddr
where
    S: hyper::service::Service<
            hyper::Request<hyper::body::Incoming>,
            Response = flightdeck::http::Response,
            Error = Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let _ = stream.set_nodelay(true);
            let service = service.clone();
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// Pins the calling thread to one CPU.
fn pin_to(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; the calls only read it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// User plus system CPU time of one thread of this process, in clock ticks (1/100 s).
fn thread_cpu_ticks(tid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap_or_default();
    stat.rsplit_once(')')
        .map(|(_, rest)| {
            let f: Vec<&str> = rest.split_whitespace().collect();
            f[11].parse::<u64>().unwrap_or(0) + f[12].parse::<u64>().unwrap_or(0)
        })
        .unwrap_or(0)
}

/// `CONNECTIONS` threads on CPU 1, each a keep-alive connection sending status queries for
/// `duration`.
fn load(addr: SocketAddr, projects: &[Id], duration: Duration) -> (u64, Vec<u32>) {
    let deadline = Instant::now() + duration;
    let threads: Vec<_> = (0..CONNECTIONS)
        .map(|c| {
            let project = projects[c % projects.len()];
            std::thread::spawn(move || {
                pin_to(1);
                let mut stream = TcpStream::connect(addr).unwrap();
                stream.set_nodelay(true).unwrap();
                let request = format!(
                    "GET /api/v1/projects/{project}/status HTTP/1.1\r\nHost: bench\r\n\r\n"
                );
                let mut latencies = Vec::new();
                let mut buf = vec![0u8; 64 * 1024];
                while Instant::now() < deadline {
                    let start = Instant::now();
                    stream.write_all(request.as_bytes()).unwrap();
                    read_response(&mut stream, &mut buf);
                    latencies.push(start.elapsed().as_micros() as u32);
                }
                latencies
            })
        })
        .collect();
    let latencies: Vec<u32> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    (latencies.len() as u64, latencies)
}

fn read_response(stream: &mut TcpStream, buf: &mut [u8]) {
    let mut filled = 0;
    loop {
        let n = stream.read(&mut buf[filled..]).unwrap();
        assert!(n > 0, "the server closed the connection");
        filled += n;
        let text = &buf[..filled];
        if let Some(end) = text.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = std::str::from_utf8(&text[..end])
                .unwrap()
                .to_ascii_lowercase();
            assert!(head.starts_with("http/1.1 200"), "{head}");
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map(|v| v.trim().parse().unwrap())
                .unwrap();
            if filled >= end + 4 + length {
                return;
            }
        }
    }
}
