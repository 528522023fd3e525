//! Connection storms: how fast the server takes connections arriving all at once. Two parts, each
//! run against the server at the old listen backlog (128, the baseline) and at the default
//! (`--listen-backlog 4096`), in the same run:
//! - 3,000 sequential TCP connects (each connected, then dropped): the total time;
//! - 10,000 WebSocket clients connecting at once, each until its subscription is acknowledged:
//!   the time until all are subscribed, and the percentiles of connect-to-subscribed.
//!
//! For each, the kernel's `TcpExtListenOverflows` and `TcpExtListenDrops` before and after (as
//! `nstat` shows them, read from /proc/net/netstat): every overflow is a client whose SYN was
//! dropped and who waits for its retransmit (1 s, then 3 s, …); and `TcpRetransSegs`, since some
//! network stacks (sandboxes) do not keep the listen counters. Talks only to 127.0.0.1.
//!
//! `cargo bench --bench storm` (FLIGHTDECK_BENCH_STORM_CLIENTS sets the WebSocket clients,
//! default 10,000).

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;

#[path = "support/server.rs"]
mod server;
use server::start;

const SEQUENTIAL: usize = 3000;

/// A counter of one of the kernel's tables (`TcpExt:` in /proc/net/netstat, `Tcp:` in
/// /proc/net/snmp), as `nstat` shows them.
fn counter(file: &str, table: &str, name: &str) -> u64 {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with(table)).collect();
    let (Some(names), Some(values)) = (lines.first(), lines.get(1)) else {
        return 0;
    };
    let pairs: Vec<(&str, u64)> = names
        .split_whitespace()
        .zip(values.split_whitespace())
        .filter_map(|(n, v)| Some((n, v.parse().ok()?)))
        .collect();
    pairs.iter().find(|p| p.0 == name).map_or(0, |p| p.1)
}

/// Listen-queue overflows, listen drops, and TCP segments retransmitted (a dropped SYN or
/// handshake ACK is retransmitted after 1 s).
fn overflows() -> (u64, u64, u64) {
    (
        counter("/proc/net/netstat", "TcpExt:", "ListenOverflows"),
        counter("/proc/net/netstat", "TcpExt:", "ListenDrops"),
        counter("/proc/net/snmp", "Tcp:", "RetransSegs"),
    )
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1e3
}

struct Figures {
    backlog: u32,
    sequential_seconds: f64,
    sequential_overflows: u64,
    subscribed: usize,
    all_subscribed_seconds: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    storm_overflows: u64,
    storm_drops: u64,
    storm_retransmits: u64,
}

fn main() {
    let clients: usize = std::env::var("FLIGHTDECK_BENCH_STORM_CLIENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let somaxconn = std::fs::read_to_string("/proc/sys/net/core/somaxconn").unwrap_or_default();
    println!(
        "connection storms: {SEQUENTIAL} sequential connects, {clients} WebSocket clients at once; net.core.somaxconn = {}",
        somaxconn.trim()
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut rows = Vec::new();
    for backlog in [128u32, 4096] {
        rows.push(runtime.block_on(storm(backlog, clients)));
    }
    println!(
        "\n| listen backlog | {SEQUENTIAL} sequential connects | overflows | {clients} WebSocket clients all subscribed | connect→subscribed p50 | p99 | max | overflows | drops | TCP retransmits |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {:.3} s | {} | {:.3} s ({} of {clients}) | {:.1} ms | {:.1} ms | {:.1} ms | {} | {} | {} |",
            r.backlog,
            r.sequential_seconds,
            r.sequential_overflows,
            r.all_subscribed_seconds,
            r.subscribed,
            r.p50_ms,
            r.p99_ms,
            r.max_ms,
            r.storm_overflows,
            r.storm_drops,
            r.storm_retransmits
        );
    }
    let (old, new) = (&rows[0], &rows[1]);
    println!(
        "\nall subscribed: {:.2}x the baseline's time; sequential connects: {:.2}x",
        new.all_subscribed_seconds / old.all_subscribed_seconds.max(1e-9),
        new.sequential_seconds / old.sequential_seconds.max(1e-9)
    );
}

async fn storm(backlog: u32, clients: usize) -> Figures {
    let backlog_arg = backlog.to_string();
    let server = start(&[
        "--durability",
        "none",
        "--listen-backlog",
        &backlog_arg,
        "--max-connections",
        "25000",
        "--max-ws-connections",
        "20000",
    ]);
    let addr: std::net::SocketAddr = server
        .base
        .trim_start_matches("http://")
        .trim_end_matches("/api/v1")
        .parse()
        .unwrap();
    let project = tokio::task::spawn_blocking({
        let base = server.base.clone();
        move || {
            let agent = server::agent();
            let mut r = agent
                .post(format!("{base}/projects"))
                .send_json(serde_json::json!({"name": "storm"}))
                .unwrap();
            let v: serde_json::Value = r.body_mut().read_json().unwrap();
            v["id"].as_str().unwrap().to_string()
        }
    })
    .await
    .unwrap();

    // Sequential connects.
    let before = overflows();
    let started = Instant::now();
    for _ in 0..SEQUENTIAL {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        drop(stream);
    }
    let sequential_seconds = started.elapsed().as_secs_f64();
    let sequential_overflows = overflows().0 - before.0;
    // Let the server see those connections end before the storm.
    tokio::time::sleep(Duration::from_secs(2)).await;

    // The storm: every client at once, each until its subscription is acknowledged.
    let before = overflows();
    let started = Instant::now();
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
    let (hold_tx, hold_rx) = tokio::sync::watch::channel(false);
    for _ in 0..clients {
        let url = format!("ws://{addr}/ws/{project}");
        let (done, mut hold) = (done_tx.clone(), hold_rx.clone());
        tokio::spawn(async move {
            let begun = Instant::now();
            let outcome = match tokio::time::timeout(
                Duration::from_secs(60),
                tokio_tungstenite::connect_async(url),
            )
            .await
            {
                Ok(Ok((mut socket, _))) => loop {
                    match socket.next().await {
                        Some(Ok(Message::Text(t))) if t.contains("\"subscribed\"") => {
                            break Some((begun.elapsed(), socket));
                        }
                        Some(Ok(_)) => continue,
                        _ => break None,
                    }
                },
                _ => None,
            };
            match outcome {
                Some((elapsed, socket)) => {
                    let _ = done.send(Some(elapsed));
                    // Stay connected until every client is in.
                    let _ = hold.wait_for(|go| *go).await;
                    drop(socket);
                }
                None => {
                    let _ = done.send(None);
                }
            }
        });
    }
    drop(done_tx);
    let mut times = Vec::with_capacity(clients);
    let mut failed = 0;
    while let Some(outcome) = done_rx.recv().await {
        match outcome {
            Some(t) => times.push(t),
            None => failed += 1,
        }
        if times.len() + failed == clients {
            break;
        }
    }
    let all_subscribed_seconds = started.elapsed().as_secs_f64();
    let after = overflows();
    let _ = hold_tx.send(true);
    times.sort();
    drop(server);
    Figures {
        backlog,
        sequential_seconds,
        sequential_overflows,
        subscribed: times.len(),
        all_subscribed_seconds,
        p50_ms: percentile(&times, 0.50),
        p99_ms: percentile(&times, 0.99),
        max_ms: times.last().map_or(0.0, |t| t.as_secs_f64() * 1e3),
        storm_overflows: after.0 - before.0,
        storm_drops: after.1 - before.1,
        storm_retransmits: after.2 - before.2,
    }
}
