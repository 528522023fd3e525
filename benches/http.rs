//! The cost of instrumentation per request: a status query (`GET /api/v1/projects/{id}/status`,
//! 10 projects x 50 tasks) served by the same handler with and without the timing wrapper (request
//! id and its task-local, duration histogram, counter, in-flight gauge, windowed latency,
//! `Server-Timing` and `x-request-id` headers, and the periodic drain of histogram samples), in the
//! same process and run.
//!
//! The server runs on one worker thread pinned to CPU 0; the client is one event-loop thread on
//! CPU 1 (cheaper per request than the server, so the server's core is the bottleneck; both cores'
//! busy shares are printed to show it). The log subscriber is the server's (text, `info`, to a
//! sink). Two measurements:
//!
//! 1. **Rounds** (throughput and latency): the two servers in turn, short rounds in ABBA order,
//!    requests/s and latency percentiles per side, and the ratio per pair of rounds. On this shared
//!    machine one handler's rate moves ±20 % from one round to the next, so these ratios are only
//!    good to a few per cent.
//! 2. **Side by side** (cost per request): both servers on the same thread at the same time, 10
//!    connections each, and the time spent polling each server's connection tasks (hyper, the
//!    handler, the wrapper, the socket calls), per request. Whatever disturbs the machine disturbs
//!    both in the same microsecond, so the difference is the wrapper's CPU per request to within a
//!    few nanoseconds; the drain of histogram samples is charged to the instrumented side. The
//!    throughput this costs a saturated core follows from the server's total CPU per request.
//!    Then the same for a task list of 50 (read and encoded per request), for scale.
//!
//! `cargo bench --bench http` (`FLIGHTDECK_BENCH_ROUNDS`, default 48, of
//! `FLIGHTDECK_BENCH_ROUND_MS`, default 500, for each measurement; `FLIGHTDECK_BENCH_ONLY=plain|timed`
//! runs one side's rounds alone, for profiling, and `=side` only the side-by-side measurement).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use flightdeck::api::{AppState, handle};
use flightdeck::domain::{AgentType, Id};
use flightdeck::events::hub::Hub;
use flightdeck::http::Request;
use flightdeck::http::timing::Timed;
use flightdeck::monitor::health::Health;
use flightdeck::monitor::{Monitor, MonitorConfig};
use flightdeck::store::{Durability, Store, StoreConfig, command};
use flightdeck::ws::{WsConfig, WsContext};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const CONNECTIONS: usize = 10;

fn main() {
    // As `flightdeck serve` logs: text at `info` (to a sink here).
    flightdeck::logging::init_with(flightdeck::config::LogFormat::Text, std::io::sink, false);
    let dir = tempfile::tempdir().unwrap();
    let mut config = StoreConfig::new(dir.path());
    config.durability = Durability::None;
    let hub = Hub::new(usize::MAX);
    let publisher_hub = hub.clone();
    let store = Store::open(&config, Arc::new(move |e| publisher_hub.publish(e))).unwrap();
    let projects: Vec<Id> = (0..10)
        .map(|i| {
            let p = store
                .write_blocking(command::CreateProject {
                    name: format!("p{i}"),
                    description: None,
                })
                .unwrap();
            for _ in 0..50 {
                store
                    .write_blocking(command::CreateTask {
                        project_id: p.id,
                        agent_type: AgentType::CODER,
                        instructions: "benchmark task".into(),
                        context_ids: Vec::new(),
                        priority: 3,
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
    // Time spent polling: the plain server's connections, the timed server's, the upkeep task.
    let busy: [Arc<AtomicU64>; 3] = Default::default();
    let (plain, timed) = server.block_on(async {
        let stop = CancellationToken::new();
        let tracker = TaskTracker::new();
        let monitor = Monitor::new(MonitorConfig::default());
        // As in the server, histogram samples are drained into their buckets every few seconds.
        let upkeep = monitor.clone();
        tokio::spawn(Measured::new(
            async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    upkeep.upkeep();
                }
            },
            busy[2].clone(),
        ));
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
            cors: Default::default(),
            allowed_hosts: Default::default(),
            auth_failures: Default::default(),
            backup_keep: 7,
            allow_self_approval: false,
            stopping: stop.clone(),
            progress: flightdeck::api::progress_coalescer(65536),
            webhooks: flightdeck::webhooks::Webhooks::new(Vec::new(), 20),
            replication_key: None,
        });
        let plain_state = state.clone();
        let plain = serve(
            hyper::service::service_fn(move |req| handle(&plain_state, Request::new(req))),
            busy[0].clone(),
        )
        .await;
        let timed = serve(
            Timed::new(
                hyper::service::service_fn(move |req| handle(&state, Request::new(req))),
                monitor,
            ),
            busy[1].clone(),
        )
        .await;
        (plain, timed)
    });

    let round_ms: u64 = std::env::var("FLIGHTDECK_BENCH_ROUND_MS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(500);
    let rounds: usize = std::env::var("FLIGHTDECK_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(48);
    // FLIGHTDECK_BENCH_ONLY=plain|timed: one side's rounds alone, for profiling; =side: only measurement 2.
    let only = std::env::var("FLIGHTDECK_BENCH_ONLY").ok();
    let server_cpu = || -> u64 {
        server_threads
            .lock()
            .iter()
            .map(|t| thread_cpu_nanos(*t))
            .sum()
    };
    // Short rounds in ABBA order (A B B A ...): neither side always runs first, and a neighbour's
    // load on this shared machine, which drifts over seconds, falls on both halves of a pair.
    let mut sides = [Side::default(), Side::default()];
    let mut last = [Round::default(); 2];
    let mut pairs = Vec::new();
    let separate_rounds = if only.as_deref() == Some("side") {
        0
    } else {
        rounds
    };
    for round in 0..separate_rounds {
        let which = match only.as_deref() {
            Some("plain") => 0,
            Some("timed") => 1,
            _ if [0, 3].contains(&(round % 4)) => 0,
            _ => 1,
        };
        let addr = if which == 0 { plain } else { timed };
        let cpu_before = server_cpu();
        let started = Instant::now();
        let (mut latencies, client_nanos) = load(
            &[addr],
            &projects,
            Query::Status,
            Duration::from_millis(round_ms),
        );
        let latencies = latencies.remove(0);
        let this = Round {
            count: latencies.len() as u64,
            wall: started.elapsed().as_secs_f64(),
            server_nanos: server_cpu() - cpu_before,
            client_nanos,
        };
        sides[which].add(this, latencies);
        last[which] = this;
        if round % 2 == 1 && only.is_none() {
            pairs.push((
                last[1].rate() / last[0].rate(),
                last[0].nanos_per_request() / last[1].nanos_per_request(),
            ));
        }
    }
    if separate_rounds > 0 {
        print_rounds(&mut sides, pairs, rounds, round_ms);
    }
    if only.is_none() || only.as_deref() == Some("side") {
        let both = Both {
            plain,
            timed,
            projects: &projects,
            busy: &busy,
            server_cpu: &server_cpu,
        };
        side_by_side(&both, Query::Status, rounds, round_ms);
        // For scale: the same wrapper in front of a read that does its own work.
        side_by_side(&both, Query::Tasks, (rounds / 3).max(1), round_ms);
    }
    drop(server);
    store.close();
}

/// Measurement 1's report: per side, and the ratio per pair of rounds.
fn print_rounds(sides: &mut [Side; 2], pairs: Vec<(f64, f64)>, rounds: usize, round_ms: u64) {
    println!(
        "# status query, 10 projects x 50 tasks, {CONNECTIONS} connections, {rounds} rounds of {round_ms} ms"
    );
    println!(
        "| handler | requests/s | p50 µs | p99 µs | max µs | server CPU µs/request | server core busy | client core busy |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (side, name) in sides
        .iter_mut()
        .zip(["without instrumentation", "with instrumentation"])
    {
        if side.latencies.is_empty() {
            continue;
        }
        side.latencies.sort_unstable();
        let l = &side.latencies;
        let pct = |p: f64| l[((l.len() as f64 * p) as usize).min(l.len() - 1)];
        println!(
            "| {name} | {:.0} | {} | {} | {} | {:.2} | {:.0} % | {:.0} % |",
            side.total.rate(),
            pct(0.5),
            pct(0.99),
            l[l.len() - 1],
            side.total.nanos_per_request() / 1000.0,
            side.total.server_nanos as f64 / side.total.wall / 1e7,
            side.total.client_nanos as f64 / side.total.wall / 1e7,
        );
    }
    if !pairs.is_empty() {
        let (mut rate_ratios, mut cpu_ratios): (Vec<f64>, Vec<f64>) = pairs.into_iter().unzip();
        let describe = |name: &str, total: f64, ratios: &mut Vec<f64>| {
            ratios.sort_by(f64::total_cmp);
            let median = ratios[ratios.len() / 2];
            println!(
                "{name} with / without: {total:.3} over all rounds; median of {} round pairs {median:.3} ({:+.1} %), \
                 range {:.3}–{:.3}",
                ratios.len(),
                (median - 1.0) * 100.0,
                ratios[0],
                ratios[ratios.len() - 1]
            );
        };
        println!();
        describe(
            "throughput",
            sides[1].total.rate() / sides[0].total.rate(),
            &mut rate_ratios,
        );
        describe(
            "requests per server CPU second",
            sides[0].total.nanos_per_request() / sides[1].total.nanos_per_request(),
            &mut cpu_ratios,
        );
    }
}

/// The two servers and what measures them.
struct Both<'a> {
    plain: SocketAddr,
    timed: SocketAddr,
    projects: &'a [Id],
    /// Time spent polling: the plain server's connections, the timed server's, the upkeep task.
    busy: &'a [Arc<AtomicU64>; 3],
    server_cpu: &'a dyn Fn() -> u64,
}

/// Measurement 2: both servers at once; the wrapper's cost is the difference in polling time per
/// request.
fn side_by_side(both: &Both, query: Query, rounds: usize, round_ms: u64) {
    let Both {
        plain,
        timed,
        projects,
        busy,
        server_cpu,
    } = *both;
    let read = || busy.each_ref().map(|b| b.load(Ordering::Relaxed));
    let (mut counts, mut polled, mut cpu) = ([0u64; 2], [0u64; 3], 0u64);
    let mut differences = Vec::new();
    for _ in 0..rounds {
        let (before, cpu_before) = (read(), server_cpu());
        let (latencies, _) = load(
            &[plain, timed],
            projects,
            query,
            Duration::from_millis(round_ms),
        );
        let after = read();
        let n = [latencies[0].len() as u64, latencies[1].len() as u64];
        let d: [u64; 3] = std::array::from_fn(|i| after[i] - before[i]);
        differences.push((d[1] + d[2]) as f64 / n[1] as f64 - d[0] as f64 / n[0] as f64);
        for i in 0..2 {
            counts[i] += n[i];
        }
        for i in 0..3 {
            polled[i] += d[i];
        }
        cpu += server_cpu() - cpu_before;
    }
    let plain_cost = polled[0] as f64 / counts[0] as f64;
    let timed_cost = (polled[1] + polled[2]) as f64 / counts[1] as f64;
    let difference = timed_cost - plain_cost;
    // The server's CPU per request with both kinds mixed; all plain or all instrumented it would
    // be half the difference lower or higher.
    let mixed = cpu as f64 / (counts[0] + counts[1]) as f64;
    let (without, with) = (mixed - difference / 2.0, mixed + difference / 2.0);
    differences.sort_by(f64::total_cmp);
    println!(
        "\n# side by side, {}: both servers on the one core at once, {CONNECTIONS} connections each, {rounds} rounds of {round_ms} ms",
        query.describe()
    );
    println!("| handler | requests | polling µs/request |");
    println!("|---|---|---|");
    println!(
        "| without instrumentation | {} | {:.3} |",
        counts[0],
        plain_cost / 1000.0
    );
    println!(
        "| with instrumentation (and the sample drain: {:.1} ms) | {} | {:.3} |",
        polled[2] as f64 / 1e6,
        counts[1],
        timed_cost / 1000.0
    );
    println!(
        "\ninstrumentation costs {difference:.0} ns/request (per round: median {:.0}, range {:.0}–{:.0}); \
         server CPU {:.2} µs/request without, {:.2} with: throughput with / without {:.3} ({:+.1} %)",
        differences[differences.len() / 2],
        differences[0],
        differences[differences.len() - 1],
        without / 1000.0,
        with / 1000.0,
        without / with,
        (without / with - 1.0) * 100.0
    );
}

/// The request every client sends.
#[derive(Clone, Copy)]
enum Query {
    /// `GET /api/v1/projects/{id}/status`: answered from the response cache.
    Status,
    /// `GET /api/v1/projects/{id}/tasks?limit=50`: 50 task records read and encoded per request.
    Tasks,
}

impl Query {
    fn describe(self) -> &'static str {
        match self {
            Query::Status => "status query (response cache)",
            Query::Tasks => "task list of 50 (read and encoded per request)",
        }
    }
}

/// What one round measured.
#[derive(Clone, Copy, Default)]
struct Round {
    count: u64,
    wall: f64,
    server_nanos: u64,
    client_nanos: u64,
}

impl Round {
    fn rate(&self) -> f64 {
        self.count as f64 / self.wall
    }

    fn nanos_per_request(&self) -> f64 {
        self.server_nanos as f64 / self.count as f64
    }
}

/// Every round of one handler.
#[derive(Default)]
struct Side {
    total: Round,
    latencies: Vec<u32>,
}

impl Side {
    fn add(&mut self, round: Round, latencies: Vec<u32>) {
        self.total.count += round.count;
        self.total.wall += round.wall;
        self.total.server_nanos += round.server_nanos;
        self.total.client_nanos += round.client_nanos;
        self.latencies.extend(latencies);
    }
}

async fn serve<S>(service: S, busy: Arc<AtomicU64>) -> SocketAddr
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
            tokio::spawn(Measured::new(
                async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                },
                busy.clone(),
            ));
        }
    });
    addr
}

pin_project_lite::pin_project! {
    /// A future that adds the time spent in its polls to a counter.
    struct Measured<F> {
        #[pin]
        inner: F,
        busy: Arc<AtomicU64>,
    }
}

impl<F> Measured<F> {
    fn new(inner: F, busy: Arc<AtomicU64>) -> Measured<F> {
        Measured { inner, busy }
    }
}

impl<F: Future> Future for Measured<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<F::Output> {
        let this = self.project();
        let start = Instant::now();
        let result = this.inner.poll(cx);
        this.busy
            .fetch_add(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
        result
    }
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

/// CPU time of one thread of this process in nanoseconds (the first field of its `schedstat`).
fn thread_cpu_nanos(tid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// `CONNECTIONS` keep-alive connections to each of `addrs` sending status queries for `duration`,
/// from one thread on CPU 1 running a single-threaded runtime: an event loop like wrk's, so the
/// client costs less per request than the server. Returns every latency (µs) per address and the
/// client thread's CPU time.
fn load(
    addrs: &[SocketAddr],
    projects: &[Id],
    query: Query,
    duration: Duration,
) -> (Vec<Vec<u32>>, u64) {
    let projects = projects.to_vec();
    let addrs = addrs.to_vec();
    std::thread::spawn(move || {
        pin_to(1);
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        let cpu_before = thread_cpu_nanos(tid);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let deadline = Instant::now() + duration;
        let latencies = runtime.block_on(async move {
            let clients: Vec<Vec<_>> = addrs
                .iter()
                .map(|addr| {
                    (0..CONNECTIONS)
                        .map(|c| {
                            let project = projects[c % projects.len()];
                            tokio::spawn(client(*addr, project, query, deadline))
                        })
                        .collect()
                })
                .collect();
            let mut all = Vec::new();
            for of_addr in clients {
                let mut latencies = Vec::new();
                for client in of_addr {
                    latencies.extend(client.await.unwrap());
                }
                all.push(latencies);
            }
            all
        });
        (latencies, thread_cpu_nanos(tid) - cpu_before)
    })
    .join()
    .unwrap()
}

async fn client(addr: SocketAddr, project: Id, query: Query, deadline: Instant) -> Vec<u32> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let path = match query {
        Query::Status => "status",
        Query::Tasks => "tasks?limit=50",
    };
    let request = format!("GET /api/v1/projects/{project}/{path} HTTP/1.1\r\nHost: bench\r\n\r\n");
    let mut latencies = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    while Instant::now() < deadline {
        let start = Instant::now();
        stream.write_all(request.as_bytes()).await.unwrap();
        read_response(&mut stream, &mut buf).await;
        latencies.push(start.elapsed().as_micros() as u32);
    }
    latencies
}

/// Reads one `200` response with a `content-length` (as hyper writes it: lowercase).
async fn read_response(stream: &mut tokio::net::TcpStream, buf: &mut [u8]) {
    let mut filled = 0;
    let mut body_end = None;
    loop {
        let n = stream.read(&mut buf[filled..]).await.unwrap();
        assert!(n > 0, "the server closed the connection");
        // The head is short: look for its end only near the start, not through the body.
        let searched_from = filled.saturating_sub(3).min(HEAD_MAX);
        filled += n;
        if body_end.is_none()
            && let Some(at) = find(&buf[searched_from..filled.min(HEAD_MAX)], b"\r\n\r\n")
        {
            let head = &buf[..searched_from + at];
            assert!(
                head.starts_with(b"HTTP/1.1 200"),
                "{:?}",
                String::from_utf8_lossy(head)
            );
            let length = find(head, b"content-length: ")
                .map(|i| {
                    head[i + 16..]
                        .iter()
                        .take_while(|b| b.is_ascii_digit())
                        .fold(0usize, |n, b| n * 10 + usize::from(b - b'0'))
                })
                .expect("a content-length");
            body_end = Some(searched_from + at + 4 + length);
        }
        if body_end.is_some_and(|end| filled >= end) {
            assert_eq!(Some(filled), body_end, "one response at a time");
            return;
        }
    }
}

const HEAD_MAX: usize = 4096;

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
