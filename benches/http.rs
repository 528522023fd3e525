//! The cost of instrumentation per request: a status query (`GET /api/v1/projects/{id}/status`,
//! 10 projects x 50 tasks) served by the same handler with and without the timing wrapper (request
//! id, span, duration histogram, counters, windowed latency, Server-Timing), in the same process
//! and run, ABBA-ordered rounds. Throughput and latency percentiles from 10 keep-alive connections.
//!
//! `cargo bench --bench http` (`FLIGHTDECK_BENCH_SECONDS` per round, default 3; 4 rounds each).

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
        .unwrap_or(3);
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

    let server = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
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
    // ABBA order (A B B A A B B A) so neither side always runs first or second.
    for round in 0..8 {
        let (which, addr) = if [0, 3, 4, 7].contains(&round) {
            (0, plain)
        } else {
            (1, timed)
        };
        let (count, latencies) = load(addr, &projects, Duration::from_secs(seconds));
        totals[which].0 += count;
        totals[which].1.extend(latencies);
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
        rates[i] = *count as f64 / (4 * seconds) as f64;
        println!(
            "| {name} | {:.0} | {} | {} | {} |",
            rates[i],
            pct(0.5),
            pct(0.99),
            latencies.last().unwrap()
        );
    }
    println!(
        "\nthroughput with / without: {:.3} ({:+.1} %)",
        rates[1] / rates[0],
        (rates[1] / rates[0] - 1.0) * 100.0
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

/// `CONNECTIONS` threads, each a keep-alive connection sending status queries for `duration`.
fn load(addr: SocketAddr, projects: &[Id], duration: Duration) -> (u64, Vec<u32>) {
    let deadline = Instant::now() + duration;
    let threads: Vec<_> = (0..CONNECTIONS)
        .map(|c| {
            let project = projects[c % projects.len()];
            std::thread::spawn(move || {
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
