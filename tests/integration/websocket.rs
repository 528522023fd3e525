//! WebSocket: fan-out, resume, slow consumers, client messages, limits, shutdown, retention and
//! heartbeats, against the real server with an independent client (tokio-tungstenite).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::common::{Server, wait_for};

const PATIENCE: Duration = Duration::from_secs(60);

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What a client read.
#[derive(Debug)]
enum Incoming {
    Json(Value),
    Close(u16, String),
    /// The connection ended without a close frame.
    End,
}

pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

pub(crate) async fn connect(s: &Server, path: &str) -> Socket {
    let url = format!("ws://{}{}", s.addr, path);
    let (socket, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("upgrade");
    socket
}

async fn recv(socket: &mut Socket) -> Incoming {
    loop {
        let next = tokio::time::timeout(PATIENCE, socket.next())
            .await
            .expect("a frame within the patience");
        match next {
            Some(Ok(Message::Text(text))) => {
                return Incoming::Json(serde_json::from_str(&text).expect("JSON frame"));
            }
            Some(Ok(Message::Close(frame))) => {
                return match frame {
                    Some(f) => Incoming::Close(u16::from(f.code), f.reason.to_string()),
                    None => Incoming::Close(1005, String::new()),
                };
            }
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return Incoming::End,
        }
    }
}

/// The next event frame, skipping acknowledgements.
pub(crate) async fn next_event(socket: &mut Socket) -> Value {
    loop {
        match recv(socket).await {
            Incoming::Json(v) if v.get("seq").is_some() => return v,
            Incoming::Json(_) => continue,
            other => panic!("expected an event, got {other:?}"),
        }
    }
}

/// Waits for the acknowledgement of the URL's subscription.
async fn subscribed(socket: &mut Socket) {
    loop {
        match recv(socket).await {
            Incoming::Json(v) if v["op"] == "subscribed" => return,
            Incoming::Json(_) => continue,
            other => panic!("expected the subscription ack, got {other:?}"),
        }
    }
}

/// The log as a subscription to `project` sees it: its events and those without a project.
pub(crate) fn log_for(s: &Server, project: &str, after: u64) -> Vec<u64> {
    s.all_events(None)
        .iter()
        .filter(|e| e["project_id"].is_null() || e["project_id"] == project)
        .map(|e| e["seq"].as_u64().unwrap())
        .filter(|seq| *seq > after)
        .collect()
}

fn latest_seq(s: &Server) -> u64 {
    s.all_events(None)
        .last()
        .map(|e| e["seq"].as_u64().unwrap())
        .unwrap_or(0)
}

#[test]
fn hundred_clients_on_ten_projects_get_their_events_exactly_once_in_order() {
    let s = Arc::new(Server::start());
    let projects: Vec<String> = (0..10).map(|i| s.project(&format!("p{i}"))).collect();
    let start = latest_seq(&s);
    let rt = runtime();
    let received: Vec<(String, Vec<u64>)> = rt.block_on(async {
        let mut clients = Vec::new();
        for (i, p) in projects.iter().cycle().take(100).enumerate() {
            let mut socket = connect(&s, &format!("/ws/{p}")).await;
            subscribed(&mut socket).await;
            clients.push((i, p.clone(), socket));
        }
        // Writes from several threads at once while the clients listen.
        let writer = {
            let (s, projects) = (s.clone(), projects.clone());
            tokio::task::spawn_blocking(move || {
                std::thread::scope(|scope| {
                    for p in &projects {
                        let s = &s;
                        scope.spawn(move || {
                            for n in 0..8 {
                                let t = s.task(p, "coder");
                                if n % 4 == 0 {
                                    s.set_status(&t, "working").expect(200);
                                }
                            }
                        });
                    }
                });
            })
        };
        writer.await.unwrap();
        let expected: BTreeMap<String, Vec<u64>> = {
            let s = s.clone();
            let projects = projects.clone();
            tokio::task::spawn_blocking(move || {
                projects
                    .iter()
                    .map(|p| (p.clone(), log_for(&s, p, start)))
                    .collect()
            })
            .await
            .unwrap()
        };
        let mut tasks = Vec::new();
        for (_, p, mut socket) in clients {
            let want = expected[&p].len();
            tasks.push(tokio::spawn(async move {
                let mut seqs = Vec::new();
                while seqs.len() < want {
                    seqs.push(next_event(&mut socket).await["seq"].as_u64().unwrap());
                }
                (p, seqs)
            }));
        }
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    });
    for (p, seqs) in &received {
        assert_eq!(seqs, &log_for(&s, p, start), "client of {p}");
    }
    assert_eq!(received.len(), 100);
    assert!(
        received.iter().all(|(_, seqs)| seqs.len() >= 8),
        "each got its project's tasks"
    );
}

#[test]
fn a_client_cut_off_mid_burst_resumes_with_since_and_misses_nothing() {
    let s = Arc::new(Server::start_with(&["--durability", "none"]));
    let p = s.project("p");
    let rt = runtime();
    rt.block_on(async {
        let mut socket = connect(&s, &format!("/ws/{p}?since=0")).await;
        let burst = {
            let (s, p) = (s.clone(), p.clone());
            tokio::task::spawn_blocking(move || {
                for _ in 0..150 {
                    s.task(&p, "tester");
                }
            })
        };
        let mut seen = Vec::new();
        while seen.len() < 40 {
            seen.push(next_event(&mut socket).await["seq"].as_u64().unwrap());
        }
        drop(socket); // cut off, no close handshake
        let last = *seen.last().unwrap();
        let mut socket = connect(&s, &format!("/ws/{p}?since={last}")).await;
        burst.await.unwrap();
        let log = {
            let (s, p) = (s.clone(), p.clone());
            tokio::task::spawn_blocking(move || log_for(&s, &p, 0))
                .await
                .unwrap()
        };
        while seen.last() != log.last() {
            seen.push(next_event(&mut socket).await["seq"].as_u64().unwrap());
        }
        assert_eq!(
            seen, log,
            "the union of both connections is exactly the log"
        );
    });
}

#[test]
fn an_unread_client_is_closed_with_4008_and_resumes_without_loss() {
    let s = Arc::new(Server::start_with(&[
        "--durability",
        "none",
        "--ws-queue-bytes",
        "65536",
    ]));
    let p = s.project("p");
    let rt = runtime();
    rt.block_on(async {
        let mut socket = connect(&s, &format!("/ws/{p}")).await;
        subscribed(&mut socket).await;
        let after = {
            let s = s.clone();
            tokio::task::spawn_blocking(move || latest_seq(&s))
                .await
                .unwrap()
        };
        // Far more than the socket buffers and the queue hold, while the client reads nothing.
        let big = "x".repeat(60_000);
        {
            let (s, p) = (s.clone(), p.clone());
            tokio::task::spawn_blocking(move || {
                for _ in 0..400 {
                    let t = s.task(&p, "coder");
                    s.set_status(&t, "working").expect(200);
                    s.post(
                        &format!("/api/v1/tasks/{t}/status"),
                        json!({"status": "completed", "output": {"blob": big}}),
                    )
                    .expect(200);
                }
            })
            .await
            .unwrap();
        }
        let mut seen = Vec::new();
        let resume = loop {
            match recv(&mut socket).await {
                Incoming::Json(v) if v.get("seq").is_some() => {
                    seen.push(v["seq"].as_u64().unwrap())
                }
                Incoming::Json(_) => {}
                Incoming::Close(code, reason) => {
                    assert_eq!(code, 4008, "{reason}");
                    let n: u64 = reason
                        .strip_prefix("lagged; resume since=")
                        .expect(&reason)
                        .parse()
                        .unwrap();
                    break n;
                }
                Incoming::End => panic!("closed without a close frame"),
            }
        };
        assert_eq!(
            seen.last().copied().unwrap_or(after),
            resume,
            "resume from the last frame received"
        );
        let mut socket = connect(&s, &format!("/ws/{p}?since={resume}")).await;
        let log = {
            let (s, p) = (s.clone(), p.clone());
            tokio::task::spawn_blocking(move || log_for(&s, &p, after))
                .await
                .unwrap()
        };
        while seen.last() != log.last() {
            seen.push(next_event(&mut socket).await["seq"].as_u64().unwrap());
        }
        assert_eq!(seen, log, "nothing lost, nothing repeated");
    });
}

#[test]
fn client_messages_subscribe_ping_and_errors() {
    let s = Arc::new(Server::start());
    let a = s.project("a");
    let b = s.project("b");
    let t = s.task(&b, "coder");
    let rt = runtime();
    rt.block_on(async {
        let mut socket = connect(&s, &format!("/ws/{a}")).await;
        subscribed(&mut socket).await;
        socket
            .send(Message::text(r#"{"op":"dance"}"#))
            .await
            .unwrap();
        let Incoming::Json(e) = recv(&mut socket).await else {
            panic!()
        };
        assert_eq!(e["event_type"], "error");
        assert_eq!(e["data"]["code"], "unknown_op");
        socket.send(Message::text("not json")).await.unwrap();
        let Incoming::Json(e) = recv(&mut socket).await else {
            panic!()
        };
        assert_eq!(e["data"]["code"], "malformed_message");
        socket
            .send(Message::text(r#"{"op":"subscribe","project_id":"nope"}"#))
            .await
            .unwrap();
        let Incoming::Json(e) = recv(&mut socket).await else {
            panic!()
        };
        assert_eq!(e["data"]["code"], "invalid_id");
        socket
            .send(Message::text(r#"{"op":"ping"}"#))
            .await
            .unwrap();
        let Incoming::Json(pong) = recv(&mut socket).await else {
            panic!()
        };
        assert_eq!(pong, json!({"op": "pong"}), "the connection stayed open");
        // Subscribing to b with since=0 replays b's log, then the ack.
        socket
            .send(Message::text(
                json!({"op": "subscribe", "project_id": b, "since": 0}).to_string(),
            ))
            .await
            .unwrap();
        let first = next_event(&mut socket).await;
        assert_eq!(first["event_type"], "project_created");
        assert_eq!(first["project_id"], b.as_str());
        let second = next_event(&mut socket).await;
        assert_eq!(second["task_id"], t.as_str());
        socket
            .send(Message::text(
                json!({"op": "unsubscribe", "project_id": b}).to_string(),
            ))
            .await
            .unwrap();
        loop {
            if let Incoming::Json(v) = recv(&mut socket).await
                && v["op"] == "unsubscribed"
            {
                break;
            }
        }
        // Now only a's events arrive.
        let (s2, a2, b2) = (s.clone(), a.clone(), b.clone());
        tokio::task::spawn_blocking(move || {
            s2.task(&b2, "coder");
            s2.task(&a2, "coder");
        })
        .await
        .unwrap();
        let e = next_event(&mut socket).await;
        assert_eq!(e["project_id"], a.as_str());
        assert_eq!(e["event_type"], "task_created");
    });
}

#[test]
fn oversize_and_binary_frames_are_refused() {
    let s = Server::start();
    let rt = runtime();
    rt.block_on(async {
        let mut socket = connect(&s, "/ws").await;
        subscribed(&mut socket).await;
        socket
            .send(Message::text("x".repeat(64 * 1024 + 1)))
            .await
            .unwrap();
        match recv(&mut socket).await {
            Incoming::Close(code, _) => assert_eq!(code, 1009),
            other => panic!("{other:?}"),
        }
        let mut socket = connect(&s, "/ws").await;
        subscribed(&mut socket).await;
        socket.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
        match recv(&mut socket).await {
            Incoming::Close(code, _) => assert_eq!(code, 1003),
            other => panic!("{other:?}"),
        }
    });
}

#[test]
fn refusals_before_the_upgrade() {
    let s = Server::start_with(&["--max-ws-connections", "2"]);
    s.get("/ws/0190b5c2-1111-7000-8000-000000000000")
        .expect_error(404, "project_not_found");
    s.get("/ws/not-a-uuid").expect_error(400, "invalid_id");
    s.get("/ws?project_id=not-a-uuid")
        .expect_error(400, "invalid_id");
    s.get("/ws?since=minus").expect_error(422, "invalid_field");
    // A since beyond the latest seq: the client cannot have seen it.
    s.get("/ws?since=999999").expect_error(422, "invalid_field");
    s.get("/ws").expect_error(426, "upgrade_required");
    let rt = runtime();
    rt.block_on(async {
        let _one = connect(&s, "/ws").await;
        let _two = connect(&s, "/ws").await;
        let url = format!("ws://{}/ws", s.addr);
        match tokio_tungstenite::connect_async(url).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status().as_u16(), 503);
                let body: Value =
                    serde_json::from_slice(response.body().as_deref().unwrap_or(b"{}")).unwrap();
                assert_eq!(body["error"]["code"], "too_many_connections");
            }
            other => panic!("expected 503, got {:?}", other.map(|_| ())),
        }
    });
}

#[test]
fn shutdown_closes_with_1001_and_the_seq_to_resume_from() {
    let s = Server::start();
    let p = s.project("p");
    let rt = runtime();
    rt.block_on(async {
        let mut socket = connect(&s, &format!("/ws/{p}?since=0")).await;
        let first = next_event(&mut socket).await;
        subscribed(&mut socket).await;
        let stopper = tokio::task::spawn_blocking(move || {
            s.stop();
        });
        match recv(&mut socket).await {
            Incoming::Close(code, reason) => {
                assert_eq!(code, 1001);
                assert_eq!(
                    reason,
                    format!("server shutting down; resume since={}", first["seq"])
                );
            }
            other => panic!("{other:?}"),
        }
        drop(socket);
        stopper.await.unwrap();
    });
}

#[test]
fn a_since_older_than_the_log_gets_resync_required_first() {
    let s = Arc::new(Server::start_with(&[
        "--event-retention",
        "10",
        "--durability",
        "none",
    ]));
    let p = s.project("p");
    for _ in 0..30 {
        s.task(&p, "coder");
    }
    // Retention runs in the background: wait until it has trimmed.
    let deadline = std::time::Instant::now() + PATIENCE;
    let oldest = loop {
        let first = s.get("/api/v1/events?limit=1").expect(200)["items"][0]["seq"]
            .as_u64()
            .unwrap();
        if first > 1 {
            break first;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the log was never trimmed"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let rt = runtime();
    rt.block_on(async {
        let mut socket = connect(&s, &format!("/ws/{p}?since=0")).await;
        let Incoming::Json(notice) = recv(&mut socket).await else {
            panic!()
        };
        assert_eq!(notice["event_type"], "resync_required");
        let oldest_now = notice["data"]["oldest_seq"].as_u64().unwrap();
        assert!(oldest_now >= oldest);
        let next = next_event(&mut socket).await;
        assert_eq!(
            next["seq"].as_u64().unwrap(),
            oldest_now,
            "delivery continues from the oldest retained"
        );
    });
}

#[test]
fn a_client_that_never_answers_pings_is_closed() {
    let s = Server::start_with(&["--ws-ping-interval-secs", "1"]);
    let mut stream = std::net::TcpStream::connect(&s.addr).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream
        .write_all(
            b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
              Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        )
        .unwrap();
    let mut bytes = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
            Err(e) => panic!("the server kept the connection open: {e}"),
        }
    }
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.starts_with("HTTP/1.1 101"), "{text}");
    // A close frame with code 4009 (0x0f 0xa9) after the pings (0x89 0x00).
    let close = bytes
        .windows(4)
        .position(|w| w[0] == 0x88 && w[2] == 0x0f && w[3] == 0xa9);
    assert!(close.is_some(), "no 4009 close in {bytes:?}");
    let pings = bytes.windows(2).filter(|w| w == &[0x89, 0x00]).count();
    assert!(pings >= 2, "{pings} pings");
}

/// The next `task_progress` frame, skipping events and acknowledgements.
async fn next_progress(socket: &mut Socket) -> Value {
    loop {
        match recv(socket).await {
            Incoming::Json(v) if v["event_type"] == "task_progress" => return v,
            Incoming::Json(_) => continue,
            other => panic!("expected progress, got {other:?}"),
        }
    }
}

#[test]
fn task_progress_reaches_subscribers_at_once_coalesced_and_never_logged() {
    let s = Server::start();
    let p = s.project("p");
    let other = s.project("other");
    let t = s.task(&p, "coder");
    let claimed = s
        .post(
            "/api/v1/tasks/claim",
            json!({"agent_type": "coder", "worker_id": "w", "lease_seconds": 60}),
        )
        .expect(200);
    let lease = claimed["lease_id"].clone();
    let rt = runtime();
    rt.block_on(async {
        let mut socket = connect(&s, &format!("/ws/{p}")).await;
        subscribed(&mut socket).await;
        let mut elsewhere = connect(&s, &format!("/ws/{other}")).await;
        subscribed(&mut elsewhere).await;
        let r = s
            .post(
                &format!("/api/v1/tasks/{t}/progress"),
                json!({"lease_id": lease, "message": "parsing", "percent": 10, "data": {"files": 3}}),
            )
            .expect(202);
        assert_eq!(r["accepted"], true);
        let frame = next_progress(&mut socket).await;
        assert_eq!(frame["task_id"], t.as_str());
        assert_eq!(frame["project_id"], p.as_str());
        assert_eq!(frame["agent_type"], "coder");
        assert!(frame.get("seq").is_none(), "ephemeral: no seq: {frame}");
        assert_eq!(frame["data"]["message"], "parsing");
        assert_eq!(frame["data"]["percent"], 10.0);
        assert_eq!(frame["data"]["data"], json!({"files": 3}));
        assert!(frame["timestamp"].is_string());
        // A burst: at most one frame per 100 ms, and the latest report is the last one sent.
        let started = std::time::Instant::now();
        for i in 0..40 {
            s.post(
                &format!("/api/v1/tasks/{t}/progress"),
                json!({"lease_id": lease, "percent": i}),
            )
            .expect(202);
        }
        let burst = started.elapsed();
        let mut frames = Vec::new();
        loop {
            let f = next_progress(&mut socket).await;
            let percent = f["data"]["percent"].as_f64().unwrap();
            frames.push(percent);
            if percent == 39.0 {
                break;
            }
        }
        let allowed = (burst.as_millis() / 100 + 2) as usize;
        assert!(frames.len() <= allowed, "{} frames in {burst:?}: {frames:?}", frames.len());
        assert!(frames.len() < 40, "coalesced: {frames:?}");
        // The other project's subscriber saw none of it: its next frame is its own project's.
        s.task(&other, "tester");
        let first = loop {
            match recv(&mut elsewhere).await {
                Incoming::Json(v) if v.get("op").is_some() => continue,
                Incoming::Json(v) => break v,
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(first["event_type"], "task_created", "{first}");
    });
    // The latest report is shown with the task (alone and in its project's list), and stored
    // with it at its next durable change.
    let v = s.get(&format!("/api/v1/tasks/{t}")).expect(200);
    assert_eq!(v["progress"]["percent"], 39.0);
    let listed = s.get(&format!("/api/v1/projects/{p}/tasks")).expect(200);
    let item = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["task_id"] == t.as_str())
        .unwrap()
        .clone();
    assert_eq!(item["progress"]["percent"], 39.0, "{item}");
    s.post(
        &format!("/api/v1/tasks/{t}/status"),
        json!({"status": "completed", "lease_id": lease}),
    )
    .expect(200);
    let dir = s.stop();
    let s = Server::start_in(dir, &[]);
    let v = s.get(&format!("/api/v1/tasks/{t}")).expect(200);
    assert_eq!(v["status"], "completed");
    assert_eq!(v["progress"]["percent"], 39.0, "kept with the task: {v}");
    assert!(
        s.all_events(None)
            .iter()
            .all(|e| e["event_type"] != "task_progress"),
        "progress is never logged"
    );
    // Only a working task under its lease reports progress.
    s.post(
        &format!("/api/v1/tasks/{t}/progress"),
        json!({"lease_id": lease, "percent": 100}),
    )
    .expect_error(409, "lease_lost");
    let u = s.task(&p, "coder");
    let claimed = s
        .post(
            "/api/v1/tasks/claim",
            json!({"agent_type": "coder", "worker_id": "w"}),
        )
        .expect(200);
    s.post(
        &format!("/api/v1/tasks/{u}/progress"),
        json!({"lease_id": claimed["lease_id"], "percent": 101}),
    )
    .expect_error(422, "invalid_field");
    // A heartbeat may carry a report.
    s.post(
        &format!("/api/v1/tasks/{u}/heartbeat"),
        json!({"lease_id": claimed["lease_id"], "message": "still here"}),
    )
    .expect(200);
    assert_eq!(
        s.get(&format!("/api/v1/tasks/{u}")).expect(200)["progress"]["message"],
        "still here"
    );
    s.post(
        &format!("/api/v1/tasks/{u}/status"),
        json!({"status": "cancelled"}),
    )
    .expect(200);
    s.post(
        &format!("/api/v1/tasks/{u}/progress"),
        json!({"lease_id": claimed["lease_id"], "percent": 50}),
    )
    .expect_error(409, "task_cancelled");
}

/// The acknowledgement names the latest seq: a client that started live and lost its connection
/// resumes from it with `since`, and misses nothing committed meanwhile.
#[test]
fn the_ack_names_the_latest_seq_to_resume_from() {
    let s = Server::start();
    let p = s.project("p");
    s.task(&p, "coder");
    let before = latest_seq(&s);
    assert!(before >= 2);
    let rt = runtime();
    let resume = rt.block_on(async {
        let mut socket = connect(&s, "/ws").await;
        loop {
            match recv(&mut socket).await {
                Incoming::Json(v) if v["op"] == "subscribed" => {
                    break v["latest_seq"].as_u64().expect("latest_seq in the ack");
                }
                Incoming::Json(_) => continue,
                other => panic!("expected the ack, got {other:?}"),
            }
        }
    });
    assert_eq!(resume, before);
    // Committed while the client was away: replayed from the ack's seq.
    let missed = s.task(&p, "tester");
    rt.block_on(async {
        let mut socket = connect(&s, &format!("/ws?since={resume}")).await;
        let first = next_event(&mut socket).await;
        assert_eq!(first["seq"].as_u64(), Some(before + 1));
        assert_eq!(first["task_id"], missed.as_str());
    });
}

/// A client whose kernel receive buffer is small (4 KiB), so that when it stops reading the
/// server's queue fills after a few frames rather than after the megabytes loopback autotuning
/// would take.
async fn connect_small_buffer(s: &Server, path: &str) -> Socket {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(s.addr.parse().unwrap()).await.unwrap();
    let url = format!("ws://{}{}", s.addr, path);
    let (socket, _) = tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(stream))
        .await
        .expect("upgrade");
    socket
}

/// Reads a stalled client's backlog up to its close, which must be a 4008 naming the seq to
/// resume from; answers the seqs it held and that seq.
async fn drain_to_lag_close(socket: &mut Socket, after: u64) -> (Vec<u64>, u64) {
    let mut seen = Vec::new();
    loop {
        match recv(socket).await {
            Incoming::Json(v) if v.get("seq").is_some() => seen.push(v["seq"].as_u64().unwrap()),
            Incoming::Json(_) => {}
            Incoming::Close(code, reason) => {
                assert_eq!(code, 4008, "{reason}");
                let n: u64 = reason
                    .strip_prefix("lagged; resume since=")
                    .expect(&reason)
                    .parse()
                    .unwrap();
                assert_eq!(seen.last().copied().unwrap_or(after), n);
                return (seen, n);
            }
            Incoming::End => panic!("closed without a close frame"),
        }
    }
}

#[test]
fn stalled_clients_over_the_global_budget_are_closed_largest_first_and_resume_without_loss() {
    // Each connection's own bound (4 MiB) is far above the global budget (1 MiB): only the
    // budget can close them.
    let s = Arc::new(Server::start_with(&[
        "--durability",
        "none",
        "--ws-total-queue-mib",
        "1",
        "--socket-send-buffer-kib",
        "32",
    ]));
    let (busy, quiet) = (s.project("busy"), s.project("quiet"));
    let rt = runtime();
    rt.block_on(async {
        // Two stalled clients of the busy project, and one of the quiet project that reads
        // nothing meanwhile either but is queued little.
        let mut stalled = Vec::new();
        for _ in 0..2 {
            let mut socket = connect_small_buffer(&s, &format!("/ws/{busy}")).await;
            subscribed(&mut socket).await;
            stalled.push(socket);
        }
        let mut small = connect_small_buffer(&s, &format!("/ws/{quiet}")).await;
        subscribed(&mut small).await;
        let after = {
            let s = s.clone();
            tokio::task::spawn_blocking(move || latest_seq(&s))
                .await
                .unwrap()
        };
        let big = "x".repeat(60_000);
        {
            let (s, busy, quiet) = (s.clone(), busy.clone(), quiet.clone());
            tokio::task::spawn_blocking(move || {
                // About 4.8 MB for each busy client: far over the budget.
                for i in 0..80 {
                    let t = s.task(&busy, "coder");
                    s.set_status(&t, "working").expect(200);
                    s.post(
                        &format!("/api/v1/tasks/{t}/status"),
                        json!({"status": "completed", "output": {"blob": big}}),
                    )
                    .expect(200);
                    if i % 20 == 0 {
                        s.task(&quiet, "tester");
                    }
                }
                // While over budget the stalled clients were closed; the sum of what is queued
                // is back under it (the gauge is sampled every second).
                let value = |name: &str| -> f64 {
                    s.get("/metrics")
                        .body
                        .lines()
                        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
                        .unwrap_or_else(|| panic!("{name} is exported"))
                };
                wait_for("the queued bytes back under the budget", || {
                    (value("flightdeck_ws_queued_bytes") <= 1024.0 * 1024.0).then_some(())
                });
            })
            .await
            .unwrap();
        }
        let log = {
            let (s, busy) = (s.clone(), busy.clone());
            tokio::task::spawn_blocking(move || log_for(&s, &busy, after))
                .await
                .unwrap()
        };
        for mut socket in stalled {
            let (mut seen, resume) = drain_to_lag_close(&mut socket, after).await;
            let mut socket = connect(&s, &format!("/ws/{busy}?since={resume}")).await;
            while seen.last() != log.last() {
                seen.push(next_event(&mut socket).await["seq"].as_u64().unwrap());
            }
            assert_eq!(seen, log, "nothing lost, nothing repeated");
        }
        let closes = {
            let s = s.clone();
            tokio::task::spawn_blocking(move || s.get("/metrics").body)
                .await
                .unwrap()
                .lines()
                .find_map(|l| l.strip_prefix("flightdeck_ws_slow_consumer_closes_total "))
                .unwrap()
                .trim()
                .to_string()
        };
        assert_eq!(
            closes, "2",
            "both stalled clients, and only they, were closed"
        );
        // The small queue was not the largest: it was never closed and holds every event of
        // its project, in order.
        let expected = {
            let (s, quiet) = (s.clone(), quiet.clone());
            tokio::task::spawn_blocking(move || log_for(&s, &quiet, after))
                .await
                .unwrap()
        };
        // Four tasks created in the quiet project, and events of no project (the slow-consumer
        // alert firing).
        assert!(expected.len() >= 4, "{expected:?}");
        let mut seen = Vec::new();
        while seen.len() < expected.len() {
            seen.push(next_event(&mut small).await["seq"].as_u64().unwrap());
        }
        assert_eq!(seen, expected);
        small
            .send(Message::Text(r#"{"op":"ping"}"#.into()))
            .await
            .unwrap();
        match recv(&mut small).await {
            Incoming::Json(v) => assert_eq!(v["op"], "pong"),
            other => panic!("still open: {other:?}"),
        }
    });
}

#[test]
fn a_slow_reader_under_the_budget_is_not_closed() {
    let s = Arc::new(Server::start_with(&[
        "--durability",
        "none",
        "--ws-total-queue-mib",
        "1",
        "--ws-queue-bytes",
        "1048576",
    ]));
    let p = s.project("p");
    let rt = runtime();
    rt.block_on(async {
        let mut socket = connect(&s, &format!("/ws/{p}")).await;
        subscribed(&mut socket).await;
        let after = {
            let s = s.clone();
            tokio::task::spawn_blocking(move || latest_seq(&s))
                .await
                .unwrap()
        };
        // Written faster than the client reads (a pause after every frame). Together the
        // frames pass well over the 1 MiB budget (about 1.4 MB), so a budget that did not give
        // back what was written would close this reader; at any moment far less is unsent.
        let writer = {
            let (s, p) = (s.clone(), p.clone());
            tokio::task::spawn_blocking(move || {
                for _ in 0..2500 {
                    s.task(&p, "coder");
                }
            })
        };
        let mut seen = Vec::new();
        while seen.len() < 2500 {
            seen.push(next_event(&mut socket).await["seq"].as_u64().unwrap());
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        writer.await.unwrap();
        let log = {
            let (s, p) = (s.clone(), p.clone());
            tokio::task::spawn_blocking(move || log_for(&s, &p, after))
                .await
                .unwrap()
        };
        assert_eq!(seen, log, "every event, none closed for lagging");
    });
}

/// A raw data frame: tungstenite writes `Message::Frame` as it is, unfragmented by itself.
fn fragment(payload: &[u8], first: bool, fin: bool) -> Message {
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    let opcode = OpCode::Data(if first { Data::Text } else { Data::Continue });
    Message::Frame(Frame::message(payload.to_vec(), opcode, fin))
}

#[test]
fn fragments_with_split_characters_and_pings_between_them_make_one_message() {
    let s = Server::start();
    let rt = runtime();
    rt.block_on(async {
        let mut socket = connect(&s, "/ws").await;
        subscribed(&mut socket).await;
        // `{"op":"ping","note":"café €"}` in four fragments, "é" and "€" split across them, a
        // ping between the first two and another before the last.
        let text = r#"{"op":"ping","note":"café €"}"#.as_bytes();
        let e_acute = text.iter().position(|&b| b == 0xC3).unwrap();
        let euro = text.iter().position(|&b| b == 0xE2).unwrap();
        socket
            .send(fragment(&text[..=e_acute], true, false))
            .await
            .unwrap();
        socket
            .send(Message::Ping(b"between".to_vec().into()))
            .await
            .unwrap();
        socket
            .send(fragment(&text[e_acute + 1..=euro], false, false))
            .await
            .unwrap();
        socket
            .send(fragment(&text[euro + 1..euro + 2], false, false))
            .await
            .unwrap();
        socket
            .send(Message::Ping(b"again".to_vec().into()))
            .await
            .unwrap();
        socket
            .send(fragment(&text[euro + 2..], false, true))
            .await
            .unwrap();
        // Both pings are answered at once, in order, and then the assembled message.
        let mut pongs = Vec::new();
        let answer = loop {
            let next = tokio::time::timeout(PATIENCE, socket.next())
                .await
                .expect("a frame within the patience");
            match next {
                Some(Ok(Message::Pong(payload))) => pongs.push(payload.to_vec()),
                Some(Ok(Message::Text(text))) => break text.to_string(),
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(pongs, vec![b"between".to_vec(), b"again".to_vec()]);
        assert_eq!(answer, r#"{"op":"pong"}"#);

        // Invalid UTF-8 in a fragment that is not the last is refused at once with 1007.
        socket
            .send(fragment(b"{\"op\":\"ping\",\"x\":\"\xFF", true, false))
            .await
            .unwrap();
        match recv(&mut socket).await {
            Incoming::Close(code, reason) => {
                assert_eq!((code, reason.as_str()), (1007, "invalid UTF-8"));
            }
            other => panic!("{other:?}"),
        }

        // A continuation with no message before it.
        let mut socket = connect(&s, "/ws").await;
        subscribed(&mut socket).await;
        socket.send(fragment(b"x", false, true)).await.unwrap();
        match recv(&mut socket).await {
            Incoming::Close(code, reason) => {
                assert_eq!(
                    (code, reason.as_str()),
                    (1002, "continuation without a message")
                );
            }
            other => panic!("{other:?}"),
        }
    });
}

#[test]
fn close_frames_are_echoed_or_answered_with_1002_and_1007() {
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Control, OpCode};
    use tokio_tungstenite::tungstenite::protocol::frame::{Frame, FrameHeader};
    let s = Server::start();
    let rt = runtime();
    rt.block_on(async {
        // (the client's close payload, the code the server answers)
        let cases: [(Vec<u8>, u16); 5] = [
            (4321u16.to_be_bytes().to_vec(), 4321),
            (vec![], 1000),
            (1005u16.to_be_bytes().to_vec(), 1002),
            (vec![0x03], 1002),
            ([&1000u16.to_be_bytes()[..], b"\xC3("].concat(), 1007),
        ];
        for (payload, expected) in cases {
            let mut socket = connect(&s, "/ws").await;
            subscribed(&mut socket).await;
            // A close frame written raw, so the client library sends even an invalid one.
            let header = FrameHeader {
                opcode: OpCode::Control(Control::Close),
                ..FrameHeader::default()
            };
            let close = Frame::from_payload(header, payload.clone().into());
            socket.send(Message::Frame(close)).await.unwrap();
            let answer = loop {
                let next = tokio::time::timeout(PATIENCE, socket.next())
                    .await
                    .expect("a frame within the patience");
                match next {
                    Some(Ok(Message::Close(frame))) => {
                        break frame.map_or(1005, |f| u16::from(f.code));
                    }
                    Some(Ok(Message::Frame(f))) => {
                        let p = f.payload();
                        break u16::from_be_bytes([p[0], p[1]]);
                    }
                    Some(Ok(_)) => continue,
                    other => panic!("{payload:?}: {other:?}"),
                }
            };
            assert_eq!(answer, expected, "the close payload {payload:?}");
        }
    });
}

/// A counter's value in `/metrics`.
fn counter(s: &Server, name: &str) -> f64 {
    let text = s.get("/metrics").body;
    text.lines()
        .find_map(|l| {
            l.strip_prefix(name)
                .and_then(|rest| rest.strip_prefix(' '))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
}

#[test]
fn repeated_replays_read_nothing_twice_a_later_subscribe_cancels_one_and_a_future_since_is_refused()
{
    let s = Arc::new(Server::start());
    let p = s.project("p");
    let q = s.project("q");
    for _ in 0..1500 {
        s.task(&p, "coder");
    }
    let latest = latest_seq(&s);
    const READ: &str = "flightdeck_ws_replay_read_events_total";
    let rt = runtime();
    rt.block_on(async {
        // One full replay: every event once, then the ack.
        let mut socket = connect(&s, "/ws").await;
        subscribed(&mut socket).await;
        let before = counter(&s, READ);
        socket
            .send(Message::text(r#"{"op":"subscribe","since":0}"#))
            .await
            .unwrap();
        let mut seqs = Vec::new();
        loop {
            match recv(&mut socket).await {
                Incoming::Json(v) if v["op"] == "subscribed" => break,
                Incoming::Json(v) => seqs.push(v["seq"].as_u64().unwrap()),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(seqs, (1..=latest).collect::<Vec<_>>());
        let once = counter(&s, READ) - before;
        assert!(once >= latest as f64, "read {once} for {latest} events");
        // The attack: 200 more `since: 0` subscribes (about 6 KB of messages). Each used to
        // read the whole log again; now each starts after what was already sent, and each cancels
        // the one before it if that is still under way. A ping after them, and another after its
        // pong: the second pong comes after every answer to the subscribes.
        for _ in 0..200 {
            socket
                .feed(Message::text(r#"{"op":"subscribe","since":0}"#))
                .await
                .unwrap();
        }
        let mut acks = 0;
        for _ in 0..2 {
            socket
                .send(Message::text(r#"{"op":"ping"}"#))
                .await
                .unwrap();
            loop {
                match recv(&mut socket).await {
                    Incoming::Json(v) if v["op"] == "subscribed" => {
                        assert_eq!(v["latest_seq"], latest);
                        acks += 1;
                    }
                    Incoming::Json(v) if v["op"] == "pong" => break,
                    other => panic!("expected only acks and pongs, got {other:?}"),
                }
            }
        }
        // A since beyond the latest seq is refused, not scanned (and not left to swallow every
        // event to come). The pongs are answered as they come, so under load the ack of the last
        // subscribes may still follow them: acks only, before the error.
        socket
            .send(Message::text(
                json!({"op": "subscribe", "since": latest + 1000}).to_string(),
            ))
            .await
            .unwrap();
        let e = loop {
            match recv(&mut socket).await {
                Incoming::Json(v) if v["op"] == "subscribed" => {
                    assert_eq!(v["latest_seq"], latest);
                    acks += 1;
                }
                Incoming::Json(v) => break v,
                other => panic!("expected acks, then the error, got {other:?}"),
            }
        };
        assert!((1..=200).contains(&acks), "{acks} acks");
        let again = counter(&s, READ) - before - once;
        assert!(
            again < 256.0,
            "200 repeated replays read {again} events (a full replay reads {once})"
        );
        assert_eq!(e["event_type"], "error");
        assert_eq!(e["data"]["code"], "invalid_field");
        assert!(
            e["data"]["message"].as_str().unwrap().contains("beyond"),
            "{e}"
        );

        // A later subscribe cancels a replay under way: subscribe to everything from 0, then at
        // once to p from 0, before reading anything (the replay waits on the unread socket).
        let mut socket = connect(&s, &format!("/ws/{q}")).await;
        subscribed(&mut socket).await;
        socket
            .feed(Message::text(r#"{"op":"subscribe","since":0}"#))
            .await
            .unwrap();
        socket
            .feed(Message::text(
                json!({"op": "subscribe", "project_id": p, "since": 0}).to_string(),
            ))
            .await
            .unwrap();
        socket.flush().await.unwrap();
        let mut cancelled = None;
        let mut after_cancel = Vec::new();
        loop {
            match recv(&mut socket).await {
                Incoming::Json(v) if v["op"] == "unsubscribed" => {
                    assert!(cancelled.is_none(), "{v}");
                    assert_eq!(v["project_id"], Value::Null, "{v}");
                    assert!(v["reason"].as_str().unwrap().contains("cancelled"), "{v}");
                    cancelled = Some(v["resume_since"].as_u64().unwrap());
                }
                Incoming::Json(v) if v["op"] == "subscribed" => {
                    assert_eq!(v["project_id"], p.as_str(), "only p's replay completes");
                    break;
                }
                Incoming::Json(v) if cancelled.is_some() => {
                    after_cancel.push(v["seq"].as_u64().unwrap());
                }
                Incoming::Json(_) => {}
                other => panic!("{other:?}"),
            }
        }
        let resume = cancelled.expect("the replay of everything was cancelled");
        assert!(resume < latest, "cancelled at {resume} of {latest}");
        // p's replay: its events and those of no project, once each (q's stream was subscribed
        // from the URL, so its own project_created is not among them).
        assert_eq!(after_cancel, log_for(&s, &p, 0));
        // Everything is unsubscribed but q (from the URL) and p: an event of a third project
        // does not arrive, the next of p does, once.
        let (s2, p2) = (s.clone(), p.clone());
        let r = tokio::task::spawn_blocking(move || {
            let r = s2.project("r");
            s2.task(&r, "coder");
            s2.task(&p2, "tester");
            r
        })
        .await
        .unwrap();
        let mut seen = Vec::new();
        loop {
            let e = next_event(&mut socket).await;
            assert_ne!(e["project_id"], r.as_str(), "{e}");
            assert!(!seen.contains(&e["seq"]), "{e} twice");
            seen.push(e["seq"].clone());
            if e["project_id"] == p.as_str() && e["event_type"] == "task_created" {
                break;
            }
        }
    });
}
