//! Webhooks against a loopback receiver (a plain HTTP/1.1 server on a socket of its own, keep-alive
//! like a real one): every matching event arrives once per success and in seq order; a receiver
//! failing its first attempts still gets everything; a restart in between loses and duplicates
//! nothing, a SIGKILL loses nothing; signatures verify; the Slack format is well-formed.

use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use crate::common::{Server, wait_for};

/// A post the receiver accepted.
#[derive(Clone, Debug)]
struct Post {
    path: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

impl Post {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    fn seq(&self) -> u64 {
        self.headers["x-flightdeck-seq"].parse().unwrap()
    }
}

/// A loopback receiver: answers 503 to the first `fail_first` requests and while `refusing` is
/// set, 200 otherwise, and keeps what it accepted.
struct Receiver {
    addr: String,
    accepted: Arc<Mutex<Vec<Post>>>,
    attempts: Arc<AtomicUsize>,
    refusing: Arc<std::sync::atomic::AtomicBool>,
}

impl Receiver {
    fn start(fail_first: usize) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let attempts = Arc::new(AtomicUsize::new(0));
        let refusing = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (a, n, r) = (accepted.clone(), attempts.clone(), refusing.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let (a, n, r) = (a.clone(), n.clone(), r.clone());
                std::thread::spawn(move || serve(stream, fail_first, &a, &n, &r));
            }
        });
        Receiver {
            addr,
            accepted,
            attempts,
            refusing,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The accepted posts to `path`, in arrival order.
    fn posts(&self, path: &str) -> Vec<Post> {
        self.accepted
            .lock()
            .unwrap()
            .iter()
            .filter(|p| p.path == path)
            .cloned()
            .collect()
    }
}

fn serve(
    stream: TcpStream,
    fail_first: usize,
    accepted: &Mutex<Vec<Post>>,
    attempts: &AtomicUsize,
    refusing: &std::sync::atomic::AtomicBool,
) {
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
        let mut headers = HashMap::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
        let length: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let n = attempts.fetch_add(1, Ordering::SeqCst);
        let ok = n >= fail_first && !refusing.load(Ordering::SeqCst);
        if ok {
            accepted.lock().unwrap().push(Post {
                path,
                headers,
                body,
            });
        }
        let answer: &[u8] = if ok {
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
        } else {
            b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 4\r\n\r\nbusy"
        };
        if writer.write_all(answer).is_err() {
            return;
        }
    }
}

fn config(dir: &std::path::Path, text: &str) -> String {
    let path = dir.join("webhooks.toml");
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

/// The seqs of the log's events of these types (all types when empty), after `after`.
fn log_seqs(s: &Server, types: &[&str], project: Option<&str>, after: u64) -> Vec<u64> {
    s.all_events(None)
        .iter()
        .filter(|e| types.is_empty() || types.contains(&e["event_type"].as_str().unwrap()))
        .filter(|e| project.is_none_or(|p| e["project_id"] == p))
        .map(|e| e["seq"].as_u64().unwrap())
        .filter(|seq| *seq > after)
        .collect()
}

fn seqs(posts: &[Post]) -> Vec<u64> {
    posts.iter().map(Post::seq).collect()
}

fn sample(s: &Server, series: &str) -> f64 {
    let text = s.get("/metrics").body;
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no {series} in /metrics"))
}

#[test]
fn webhooks_deliver_every_matching_event_in_order_through_failures_and_restarts() {
    let receiver = Receiver::start(2);
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let files = tempfile::tempdir().unwrap();
    let file = config(
        files.path(),
        &format!(
            r#"
[[webhooks]]
name = "tasks"
url = "{}"
events = ["task_created", "hitl_request_created"]
secret = "s3cret-for-the-test"

[[webhooks]]
name = "all"
url = "{}"
events = "*"
"#,
            receiver.url("/tasks"),
            receiver.url("/all")
        ),
    );
    let s = Server::start_in(dir.clone(), &["--config", &file]);
    let p = s.project("p");
    for agent in ["coder", "tester", "analyst"] {
        s.task(&p, agent);
    }
    s.post(
        "/api/v1/hitl",
        json!({"project_id": p, "question": "ship it?"}),
    )
    .expect(201);
    let want_tasks = log_seqs(&s, &["task_created", "hitl_request_created"], None, 0);
    assert_eq!(want_tasks.len(), 4);
    // The first two attempts were refused (503): retried until taken, then in order.
    wait_for("the tasks webhook to catch up", || {
        (seqs(&receiver.posts("/tasks")) == want_tasks).then_some(())
    });
    let want_all = log_seqs(&s, &[], None, 0);
    wait_for("the all webhook to catch up", || {
        (seqs(&receiver.posts("/all")) == want_all).then_some(())
    });
    assert!(receiver.attempts.load(Ordering::SeqCst) >= want_tasks.len() + want_all.len() + 2);
    // Each body is the event frame; signed when the webhook has a secret.
    let events = s.all_events(None);
    for post in receiver.posts("/tasks") {
        let frame = events.iter().find(|e| e["seq"] == post.seq()).unwrap();
        assert_eq!(&post.json(), frame);
        assert_eq!(
            post.headers["x-flightdeck-event"],
            frame["event_type"].as_str().unwrap()
        );
        assert_eq!(post.headers["x-flightdeck-webhook"], "tasks");
        assert_eq!(post.headers["content-type"], "application/json");
        use hmac::Mac;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"s3cret-for-the-test").unwrap();
        mac.update(&post.body);
        let hex: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            post.headers["x-flightdeck-signature"],
            format!("sha256={hex}")
        );
    }
    assert!(
        receiver
            .posts("/all")
            .iter()
            .all(|p| !p.headers.contains_key("x-flightdeck-signature"))
    );
    // Visible in the metrics and the monitoring API.
    let delivered = "flightdeck_webhook_deliveries_total{webhook=\"tasks\",result=\"delivered\"} ";
    let failed_all = sample(
        &s,
        "flightdeck_webhook_deliveries_total{webhook=\"all\",result=\"failed\"} ",
    ) + sample(
        &s,
        "flightdeck_webhook_deliveries_total{webhook=\"tasks\",result=\"failed\"} ",
    );
    assert_eq!(sample(&s, delivered), 4.0);
    assert_eq!(failed_all, 2.0);
    let status = s.get("/api/v1/monitoring/webhooks").expect(200);
    let hooks = status["webhooks"].as_array().unwrap();
    assert_eq!(hooks.len(), 2);
    let tasks = hooks.iter().find(|h| h["name"] == "tasks").unwrap();
    assert_eq!(tasks["delivered"], 4);
    assert_eq!(tasks["signed"], true);
    assert!(
        !tasks["url"].as_str().unwrap().contains("/tasks"),
        "the path is not shown"
    );
    wait_for("the cursors to reach the end of the log", || {
        let status = s.get("/api/v1/monitoring/webhooks").expect(200);
        let all = status["webhooks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["name"] == "all")
            .cloned()
            .unwrap();
        (all["lag_events"] == 0 && all["cursor"] == *want_all.last().unwrap()).then_some(())
    });

    // The receiver goes down; events keep coming; the server stops meanwhile (cursor stored).
    receiver.refusing.store(true, Ordering::SeqCst);
    for agent in ["deployer", "architect"] {
        s.task(&p, agent);
    }
    let before_stop = log_seqs(&s, &[], None, 0);
    wait_for("a refused attempt", || {
        (s.get("/api/v1/monitoring/webhooks").expect(200)["webhooks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["attempts"].as_u64().unwrap() > 0))
        .then_some(())
    });
    let dir = s.stop();
    receiver.refusing.store(false, Ordering::SeqCst);
    // Back with a third webhook, for one project, in the Slack format.
    let q = {
        let file = config(
            files.path(),
            &format!(
                r#"
public_url = "http://flightdeck.example/"

[[webhooks]]
name = "tasks"
url = "{}"
events = ["task_created", "hitl_request_created"]
secret = "s3cret-for-the-test"

[[webhooks]]
name = "all"
url = "{}"
events = ["*"]

[[webhooks]]
name = "slack"
url = "{}"
events = ["hitl_request_created", "hitl_response"]
project_id = "{p}"
format = "slack"
"#,
                receiver.url("/tasks"),
                receiver.url("/all"),
                receiver.url("/slack")
            ),
        );
        let s = Server::start_in(dir.clone(), &["--config", &file]);
        // Nothing lost, nothing twice: everything up to the stop, then what follows.
        wait_for("the all webhook to catch up after the restart", || {
            (seqs(&receiver.posts("/all")) == before_stop).then_some(())
        });
        let q = s.project("q");
        let h = s
            .post(
                "/api/v1/hitl",
                json!({"project_id": p, "question": "Deploy <b>now</b> & then?"}),
            )
            .expect(201)["request_id"]
            .as_str()
            .unwrap()
            .to_string();
        s.post(
            "/api/v1/hitl",
            json!({"project_id": q, "question": "another project's question"}),
        )
        .expect(201);
        s.post(
            &format!("/api/v1/hitl/{h}/respond"),
            json!({"action": "approve"}),
        )
        .expect(200);
        let want_tasks = log_seqs(&s, &["task_created", "hitl_request_created"], None, 0);
        wait_for("the tasks webhook after the restart", || {
            (seqs(&receiver.posts("/tasks")) == want_tasks).then_some(())
        });
        let want_all = log_seqs(&s, &[], None, 0);
        wait_for("the all webhook after the restart", || {
            (seqs(&receiver.posts("/all")) == want_all).then_some(())
        });
        // The new webhook starts at the end of the log, and sees its project only.
        let want_slack = log_seqs(&s, &["hitl_request_created", "hitl_response"], Some(&p), 0)
            .into_iter()
            .filter(|seq| *seq > *before_stop.last().unwrap())
            .collect::<Vec<_>>();
        assert_eq!(want_slack.len(), 2);
        wait_for("the slack webhook", || {
            (seqs(&receiver.posts("/slack")) == want_slack).then_some(())
        });
        let slack = receiver.posts("/slack");
        let first = slack[0].json();
        let text = first["text"].as_str().unwrap();
        assert!(
            text.contains("Approval needed: Deploy &lt;b&gt;now&lt;/b&gt; &amp; then?"),
            "{text}"
        );
        assert!(
            text.ends_with(&format!(
                "<http://flightdeck.example/#/project/{p}|Open in flightdeck>"
            )),
            "{text}"
        );
        assert_eq!(
            first.as_object().unwrap().len(),
            2,
            "text and unfurl_links: {first}"
        );
        assert!(
            slack[1].json()["text"]
                .as_str()
                .unwrap()
                .contains("Approval answered: approved")
        );
        // SIGKILL: nothing is lost; what was delivered since the last stored cursor may come again.
        receiver.refusing.store(true, Ordering::SeqCst);
        s.task(&q, "coder");
        s.kill();
        q
    };
    receiver.refusing.store(false, Ordering::SeqCst);
    let s = Server::start_in(dir.clone(), &["--config", &file]);
    s.task(&q, "tester");
    let want_all: BTreeSet<u64> = log_seqs(&s, &[], None, 0).into_iter().collect();
    wait_for("every event after the SIGKILL", || {
        let got: BTreeSet<u64> = seqs(&receiver.posts("/all")).into_iter().collect();
        (got == want_all).then_some(())
    });
    // In order, even where an event came again: never an older seq after a newer one except at
    // the one resumption after the kill.
    let all = seqs(&receiver.posts("/all"));
    let drops = all.windows(2).filter(|w| w[1] <= w[0]).count();
    assert!(drops <= 1, "{all:?}");
    let dir = s.stop();
    let (ok, text) = crate::common::check(dir.path());
    assert!(ok, "{text}");
}

#[test]
fn a_bad_webhook_entry_stops_the_server_from_starting() {
    let files = tempfile::tempdir().unwrap();
    for (entry, says) in [
        ("url = \"ftp://x/\"\nevents = \"*\"", "http"),
        ("url = \"http://127.0.0.1:9/\"", "events is required"),
        (
            "url = \"http://127.0.0.1:9/\"\nevents = [\"task_progress\"]",
            "ephemeral",
        ),
        (
            "url = \"http://127.0.0.1:9/\"\nevents = [\"nope\"]",
            "not an event type",
        ),
        (
            "url = \"http://127.0.0.1:9/\"\nevents = \"*\"\nretries = 3",
            "unknown field",
        ),
    ] {
        let file = config(files.path(), &format!("[[webhooks]]\n{entry}\n"));
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_flightdeck"))
            .args(["--listen", "127.0.0.1:0", "--config", &file, "--data-dir"])
            .arg(files.path().join("data"))
            .output()
            .unwrap();
        assert!(!out.status.success(), "{entry}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{entry}: {err}");
    }
}
