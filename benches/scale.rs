//! Scale: what a large store costs. One run, against the release server (durable, the default
//! settings):
//! 1. the cost of a durable write on the empty database: 4 clients, task creates and artifact
//!    puts, the server's CPU per write (from /proc) and the latency inside the server
//!    (`Server-Timing`);
//! 2. 1,000,000 artifacts (~300 bytes each, 1,000 projects, every artifact type) written over
//!    HTTP from 64 connections, the server's resident memory read every 100,000;
//! 3. the same write cost again at 1,000,000 artifacts: the ratio against step 1 is the store's
//!    growth cost;
//! 4. resident memory per 1,000 idle WebSocket connections;
//! 5. start-up with the million: after a clean stop, and after SIGKILL (redb repairs the file
//!    after an unclean exit), each until `/readyz` answers 200.
//!
//! And the write-ahead log's targets (issue 29), in the same run:
//! - the floor: the same task creates on the same data directory restarted with
//!   `--durability none`, empty and at the million, and the same run's sequential `fdatasync`
//!   (a 300-byte append and `fdatasync`, 300 rounds, beside the data directory): a durable create's
//!   p99 should be at most floor + `fdatasync` p99 + 0.5 ms;
//! - `--durability periodic` at the million, against `immediate`;
//! - checkpoints at the million: 20 s of creates from 4 clients with a checkpoint every 2 s, then
//!   with the default spread (every 0.5 s): the checkpoints' durations, how many took over 50 ms
//!   (a write waits for at most one), and the slowest write;
//! - a full log: 256 MiB of records not checkpointed, SIGKILL, and the start-up that replays them.
//!
//! `cargo bench --bench scale` (FLIGHTDECK_BENCH_SCALE_ARTIFACTS sets the artifacts, default
//! 1,000,000). Talks only to 127.0.0.1; about ten minutes.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::json;

#[path = "support/server.rs"]
mod server;
use server::{Server, agent, start, start_in};

const TYPES: [&str; 5] = [
    "software_specification",
    "system_architecture",
    "source_code",
    "test_results",
    "deployment_package",
];

/// VmRSS and CPU seconds (user + system) of a process.
fn process(pid: u32) -> (u64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0)
        * 1024;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let cpu = stat
        .rsplit_once(')')
        .map(|(_, rest)| {
            let f: Vec<&str> = rest.split_whitespace().collect();
            (f[11].parse::<f64>().unwrap_or(0.0) + f[12].parse::<f64>().unwrap_or(0.0)) / 100.0
        })
        .unwrap_or(0.0);
    (rss, cpu)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / 1048576.0
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn server_ms(r: &ureq::http::Response<ureq::Body>) -> Option<f64> {
    let v = r.headers().get("server-timing")?.to_str().ok()?;
    v.split("dur=")
        .nth(1)?
        .split([',', ';'])
        .next()?
        .parse()
        .ok()
}

fn create_project(base: &str, name: &str) -> String {
    let mut r = agent()
        .post(format!("{base}/projects"))
        .send_json(json!({"name": name}))
        .unwrap();
    let v: serde_json::Value = r.body_mut().read_json().unwrap();
    v["id"].as_str().unwrap().to_string()
}

/// One kind of durable write measured: count, server CPU per write, server p50/p99 (ms).
struct Cost {
    writes: usize,
    cpu_us: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    seconds: f64,
}

/// p50, p99 and max (ms) of appending 300 bytes to a file beside `dir` and `fdatasync`ing it, 300
/// rounds: the physical floor of a durable write on this disk.
fn fdatasync(dir: &std::path::Path) -> (f64, f64, f64) {
    use std::io::Write;
    let path = dir.join("fdatasync-probe");
    let mut file = std::fs::File::create(&path).unwrap();
    let mut times = Vec::new();
    for _ in 0..300 {
        let started = Instant::now();
        file.write_all(&[7u8; 300]).unwrap();
        file.sync_data().unwrap();
        times.push(started.elapsed().as_secs_f64() * 1e3);
    }
    let _ = std::fs::remove_file(&path);
    times.sort_by(f64::total_cmp);
    (
        percentile(&times, 0.5),
        percentile(&times, 0.99),
        *times.last().unwrap(),
    )
}

/// A metric's value in `/metrics` (the first series whose line starts with `name`).
fn metric(server: &Server, name: &str) -> f64 {
    let mut r = agent()
        .get(format!("http://{}/metrics", server.addr()))
        .call()
        .unwrap();
    let text = r.body_mut().read_to_string().unwrap();
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Task creates from 4 clients for `seconds`: as `cost`, timed rather than counted.
fn timed_creates(server: &Server, project: &str, seconds: f64) -> Cost {
    writes(server, project, false, Until::Seconds(seconds))
}

/// `per_client` writes from each of 4 clients, all of one kind (task creates or artifact puts).
fn cost(server: &Server, project: &str, artifacts: bool, per_client: usize) -> Cost {
    writes(server, project, artifacts, Until::Count(per_client))
}

/// How long each client of `writes` goes on.
#[derive(Clone, Copy)]
enum Until {
    Count(usize),
    Seconds(f64),
}

/// Writes from 4 clients, all of one kind (task creates or artifact puts): the server's CPU per
/// write (from /proc) and the latencies inside the server (`Server-Timing`).
fn writes(server: &Server, project: &str, artifacts: bool, until: Until) -> Cost {
    let base = Arc::new(server.base.clone());
    let before = process(server.pid()).1;
    let started = Instant::now();
    let handles: Vec<_> = (0..4)
        .map(|c| {
            let (base, project) = (base.clone(), project.to_string());
            std::thread::spawn(move || {
                let agent = agent();
                let mut times = Vec::new();
                for i in 0.. {
                    let more = match until {
                        Until::Count(n) => i < n,
                        Until::Seconds(s) => started.elapsed().as_secs_f64() < s,
                    };
                    if !more {
                        break;
                    }
                    let r = if artifacts {
                        agent
                            .post(format!("{base}/context/artifacts"))
                            .send_json(json!({
                                "project_id": project,
                                "source_agent": "coder",
                                "artifact_type": TYPES[i % TYPES.len()],
                                "content": {"n": i, "client": c, "text": "x".repeat(200)},
                            }))
                    } else {
                        agent
                            .post(format!("{base}/projects/{project}/tasks"))
                            .send_json(json!({"agent_type": "coder", "instructions": "measure"}))
                    }
                    .unwrap();
                    assert_eq!(r.status().as_u16(), 201);
                    times.extend(server_ms(&r));
                }
                times
            })
        })
        .collect();
    let mut times: Vec<f64> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    let cpu = process(server.pid()).1 - before;
    times.sort_by(f64::total_cmp);
    Cost {
        writes: times.len(),
        cpu_us: cpu * 1e6 / times.len().max(1) as f64,
        p50_ms: percentile(&times, 0.5),
        p99_ms: percentile(&times, 0.99),
        max_ms: times.last().copied().unwrap_or(0.0),
        seconds: started.elapsed().as_secs_f64(),
    }
}

/// Writes `count` artifacts spread over `projects` from 64 keep-alive connections (hyper's
/// client: an async loader, so the client costs less CPU than the server); calls `every` after
/// each 100,000.
fn load(
    runtime: &tokio::runtime::Runtime,
    addr: &str,
    projects: &[String],
    count: usize,
    mut every: impl FnMut(usize),
) -> f64 {
    use http_body_util::{BodyExt, Full};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    let client: Client<_, Full<bytes::Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(64)
        .build_http();
    let uri = format!("http://{addr}/api/v1/context/artifacts");
    let projects = Arc::new(projects.to_vec());
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut done = 0;
    while done < count {
        let end = (done + 100_000).min(count);
        runtime.block_on(async {
            let tasks: Vec<_> = (0..64)
                .map(|_| {
                    let (client, uri, projects, next) =
                        (client.clone(), uri.clone(), projects.clone(), next.clone());
                    tokio::spawn(async move {
                        loop {
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            if i >= end {
                                return;
                            }
                            let body = json!({
                                "project_id": projects[i % projects.len()],
                                "source_agent": "coder",
                                "artifact_type": TYPES[(i / projects.len()) % TYPES.len()],
                                "content": {"n": i, "text": "x".repeat(200)},
                            })
                            .to_string();
                            let request = hyper::Request::post(uri.as_str())
                                .header("content-type", "application/json")
                                .body(Full::new(bytes::Bytes::from(body)))
                                .unwrap();
                            let response = client.request(request).await.unwrap();
                            assert_eq!(response.status().as_u16(), 201);
                            let _ = response.into_body().collect().await;
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
        });
        next.store(end, Ordering::Relaxed);
        done = end;
        every(done);
    }
    started.elapsed().as_secs_f64()
}

/// Starts on `dir` and times it until `/readyz` answers 200.
fn timed_start(dir: tempfile::TempDir) -> (Server, f64) {
    let started = Instant::now();
    let server = start_in(dir, &[]);
    let url = format!("http://{}/readyz", server.addr());
    let agent = agent();
    loop {
        if agent
            .get(&url)
            .call()
            .is_ok_and(|r| r.status().as_u16() == 200)
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    (server, started.elapsed().as_secs_f64() * 1e3)
}

fn main() {
    let count: usize = std::env::var("FLIGHTDECK_BENCH_SCALE_ARTIFACTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let server = start(&[]);
    let sync = fdatasync(server.dir().parent().unwrap());
    let measure = create_project(&server.base, "measure");
    let empty_tasks = cost(&server, &measure, false, 500);
    let empty_puts = cost(&server, &measure, true, 500);
    // The floor: the same writes without a log or a sync.
    let server = start_in(server.stop(), &["--durability", "none"]);
    let empty_floor = cost(&server, &measure, false, 500);
    let server = start_in(server.stop(), &[]);
    let projects: Vec<String> = (0..1000)
        .map(|i| create_project(&server.base, &format!("scale {i}")))
        .collect();
    let (rss_start, _) = process(server.pid());
    println!(
        "scale: {count} artifacts; resident {:.1} MiB before loading",
        mib(rss_start)
    );
    let mut rss = vec![(0usize, rss_start)];
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let seconds = load(&runtime, &server.addr(), &projects, count, |done| {
        let (r, _) = process(server.pid());
        println!("  {done} artifacts: resident {:.1} MiB", mib(r));
        rss.push((done, r));
    });
    let full_tasks = cost(&server, &measure, false, 500);
    let full_puts = cost(&server, &measure, true, 500);
    let server = start_in(server.stop(), &["--durability", "none"]);
    let full_floor = cost(&server, &measure, false, 500);
    let server = start_in(server.stop(), &["--durability", "periodic"]);
    let full_periodic = timed_creates(&server, &measure, 10.0);
    let server = start_in(server.stop(), &[]);
    let full_immediate = timed_creates(&server, &measure, 10.0);
    // Checkpoints under a steady load: one every 2 s, then spread (the default, every 0.5 s).
    let mut checkpointed = Vec::new();
    let mut server = server;
    for args in [
        &["--checkpoint-secs", "2", "--checkpoint-spread-ms", "0"][..],
        &[][..],
    ] {
        server = start_in(server.stop(), args);
        let creates = timed_creates(&server, &measure, 20.0);
        let count = metric(&server, "flightdeck_checkpoint_duration_seconds_count");
        let seconds = metric(&server, "flightdeck_checkpoint_duration_seconds_sum");
        // A write waits for at most one checkpoint (the writer runs them between batches), so
        // only a checkpoint over 50 ms can hold a write up for longer than the target.
        let within = metric(
            &server,
            "flightdeck_checkpoint_duration_seconds_bucket{le=\"0.05\"}",
        );
        checkpointed.push((args.join(" "), creates, count, seconds, count - within));
    }
    // A full log: 256 MiB not checkpointed, then SIGKILL.
    let server = start_in(
        server.stop(),
        &[
            "--checkpoint-mib",
            "100000",
            "--checkpoint-secs",
            "100000",
            "--checkpoint-spread-ms",
            "0",
        ],
    );
    let mut logged = 0.0;
    while logged < 256.0 * 1048576.0 {
        load(&runtime, &server.addr(), &projects, 20_000, |_| {});
        logged = metric(&server, "flightdeck_wal_uncheckpointed_bytes");
    }
    let (server, replay_start_ms) = timed_start(server.kill());
    let replayed = metric(&server, "flightdeck_wal_replayed_records");
    let replay_seconds = metric(&server, "flightdeck_wal_replay_seconds");

    // Idle WebSocket connections.
    let (before_ws, _) = process(server.pid());
    let url = format!("ws://{}/ws/{}", server.addr(), projects[0]);
    let sockets = runtime.block_on(async {
        let mut sockets = Vec::new();
        for _ in 0..1000 {
            let (mut s, _) = tokio_tungstenite::connect_async(url.as_str())
                .await
                .unwrap();
            // The subscription's acknowledgement.
            let _ = s.next().await;
            sockets.push(s);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        sockets
    });
    let (after_ws, _) = process(server.pid());
    drop(sockets);

    let dir = server.stop();
    let (server, clean_ms) = timed_start(dir);
    // Something written, then no shutdown at all.
    let _ = create_project(&server.base, "before the kill");
    let dir = server.kill();
    let (server, killed_ms) = timed_start(dir);
    let (rss_after_start, _) = process(server.pid());
    drop(server);

    println!(
        "\nloading {count} artifacts over HTTP from 64 connections: {seconds:.1} s ({:.0} durable writes/s)",
        count as f64 / seconds
    );
    println!("\n| artifacts | resident MiB |\n|---|---|");
    for (n, r) in &rss {
        println!("| {n} | {:.1} |", mib(*r));
    }
    let (n_last, r_last) = rss.last().copied().unwrap();
    println!(
        "\nresident memory per 100,000 artifacts: {:.1} MiB (start to {n_last}; redb's page cache, 1 GiB by default, and the response cache, 256 MiB, are most of it)",
        mib(r_last.saturating_sub(rss_start)) / (n_last.max(1) as f64 / 100_000.0)
    );
    println!(
        "resident memory per 1,000 idle WebSocket connections: {:.1} MiB",
        mib(after_ws.saturating_sub(before_ws))
    );
    println!(
        "\n| durable write, 4 clients | writes | server CPU per write | server p50 | server p99 |\n|---|---|---|---|---|"
    );
    for (what, c) in [
        ("task create, empty database", &empty_tasks),
        (
            &format!("task create, {count} artifacts") as &str,
            &full_tasks,
        ),
        ("artifact put, empty database", &empty_puts),
        (&format!("artifact put, {count} artifacts"), &full_puts),
    ] {
        println!(
            "| {what} | {} | {:.0} µs | {:.3} ms | {:.3} ms |",
            c.writes, c.cpu_us, c.p50_ms, c.p99_ms
        );
    }
    println!(
        "\nat {count} artifacts against empty: task create CPU {:.2}x, p99 {:.2}x; artifact put CPU {:.2}x, p99 {:.2}x (target: at most 1.5x)",
        full_tasks.cpu_us / empty_tasks.cpu_us,
        full_tasks.p99_ms / empty_tasks.p99_ms,
        full_puts.cpu_us / empty_puts.cpu_us,
        full_puts.p99_ms / empty_puts.p99_ms
    );
    println!(
        "\nstart-up with {count} artifacts, until /readyz answers: after a clean stop {clean_ms:.0} ms, after SIGKILL {killed_ms:.0} ms (resident {:.1} MiB after)",
        mib(rss_after_start)
    );

    println!(
        "\nsequential fdatasync of a 300-byte append, 300 rounds: p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        sync.0, sync.1, sync.2
    );
    println!(
        "\n| task create, 4 clients | writes | server CPU per write | server p50 | server p99 | max |\n|---|---|---|---|---|---|"
    );
    for (what, c) in [
        ("durable, empty database", &empty_tasks),
        ("floor (`--durability none`), empty database", &empty_floor),
        (&format!("durable, {count} artifacts") as &str, &full_tasks),
        (&format!("floor, {count} artifacts"), &full_floor),
    ] {
        println!(
            "| {what} | {} | {:.0} µs | {:.3} ms | {:.3} ms | {:.3} ms |",
            c.writes, c.cpu_us, c.p50_ms, c.p99_ms, c.max_ms
        );
    }
    for (what, durable, floor) in [
        ("empty", &empty_tasks, &empty_floor),
        ("at the million", &full_tasks, &full_floor),
    ] {
        let bound = floor.p99_ms + sync.1 + 0.5;
        println!(
            "durable create p99 {what}: {:.3} ms against floor {:.3} + fdatasync p99 {:.3} + 0.5 = {bound:.3} ms: {}",
            durable.p99_ms,
            floor.p99_ms,
            sync.1,
            if durable.p99_ms <= bound {
                "met"
            } else {
                "NOT met"
            }
        );
    }
    println!(
        "durable create p99 at the million against empty: {:.2}x (target at most 1.2x)",
        full_tasks.p99_ms / empty_tasks.p99_ms
    );
    println!(
        "\n| task creates for 10 s, 4 clients, {count} artifacts | creates/s | server CPU per write | p50 | p99 | max |\n|---|---|---|---|---|---|"
    );
    for (what, c) in [
        ("immediate", &full_immediate),
        ("periodic (1 s)", &full_periodic),
    ] {
        println!(
            "| {what} | {:.0} | {:.0} µs | {:.3} ms | {:.3} ms | {:.3} ms |",
            c.writes as f64 / c.seconds,
            c.cpu_us,
            c.p50_ms,
            c.p99_ms,
            c.max_ms
        );
    }
    println!(
        "\n| checkpoints under 20 s of creates, 4 clients, {count} artifacts | checkpoints | mean checkpoint | checkpoints over 50 ms (target: none) | creates/s | p50 | p99 | slowest write |\n|---|---|---|---|---|---|---|---|"
    );
    for (args, c, n, seconds, over) in &checkpointed {
        println!(
            "| `{}` | {n:.0} | {:.1} ms | {over:.0} | {:.0} | {:.3} ms | {:.3} ms | {:.3} ms |",
            if args.is_empty() {
                "the defaults"
            } else {
                args
            },
            seconds / n.max(1.0) * 1e3,
            c.writes as f64 / c.seconds,
            c.p50_ms,
            c.p99_ms,
            c.max_ms
        );
    }
    println!(
        "start-up after SIGKILL with {:.0} MiB of log not checkpointed: {replay_start_ms:.0} ms until /readyz, {replayed:.0} records replayed in {:.0} ms",
        logged / 1048576.0,
        replay_seconds * 1e3
    );
}
