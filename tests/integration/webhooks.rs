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

use crate::common::{Server, alert_state, wait_for};

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
/// set, 413 to a body longer than `max_body`, 200 otherwise, and keeps what it accepted.
struct Receiver {
    addr: String,
    accepted: Arc<Mutex<Vec<Post>>>,
    attempts: Arc<AtomicUsize>,
    refusing: Arc<std::sync::atomic::AtomicBool>,
    max_body: Arc<AtomicUsize>,
}

impl Receiver {
    fn start(fail_first: usize) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let attempts = Arc::new(AtomicUsize::new(0));
        let refusing = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let max_body = Arc::new(AtomicUsize::new(usize::MAX));
        let (a, n, r, m) = (
            accepted.clone(),
            attempts.clone(),
            refusing.clone(),
            max_body.clone(),
        );
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let (a, n, r, m) = (a.clone(), n.clone(), r.clone(), m.clone());
                std::thread::spawn(move || serve(stream, fail_first, &a, &n, &r, &m));
            }
        });
        Receiver {
            addr,
            accepted,
            attempts,
            refusing,
            max_body,
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
    max_body: &AtomicUsize,
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
        let too_large = body.len() > max_body.load(Ordering::SeqCst);
        let ok = n >= fail_first && !refusing.load(Ordering::SeqCst) && !too_large;
        if ok {
            accepted.lock().unwrap().push(Post {
                path,
                headers,
                body,
            });
        }
        let answer: &[u8] = if ok {
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
        } else if too_large {
            b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 5\r\n\r\nlarge"
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

/// The webhook of this name in `GET /api/v1/monitoring/webhooks`.
fn hook(s: &Server, name: &str) -> Value {
    s.get("/api/v1/monitoring/webhooks").expect(200)["webhooks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["name"] == name)
        .cloned()
        .unwrap()
}

#[test]
fn an_event_the_receiver_can_never_take_becomes_a_dead_letter_and_delivery_goes_on() {
    let receiver = Receiver::start(0);
    // The receiver takes nothing over 5 KB: a permanent refusal (413).
    receiver.max_body.store(5_000, Ordering::SeqCst);
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let files = tempfile::tempdir().unwrap();
    let text = format!(
        r#"
[[webhooks]]
name = "audit"
url = "{}"
events = ["hitl_request_created"]
"#,
        receiver.url("/audit")
    );
    let file = config(files.path(), &text);
    let args = [
        "--config",
        &file,
        "--webhook-max-attempts",
        "2",
        "--alert-eval-interval-secs",
        "1",
    ];
    let s = Server::start_in(dir.clone(), &args);
    assert_eq!(alert_state(&s, "WebhookDeadLetters"), "inactive");
    let p = s.project("p");
    let ask = |s: &Server, question: String| {
        s.post(
            "/api/v1/hitl",
            json!({"project_id": p, "question": question}),
        )
        .expect(201);
        *log_seqs(s, &["hitl_request_created"], None, 0)
            .last()
            .unwrap()
    };
    let large = ask(&s, "x".repeat(9_000));
    let after = ask(&s, "a small one after it".into());
    // The 413 gives up at once (one attempt): the next event is delivered.
    wait_for("the event after the refused one", || {
        (seqs(&receiver.posts("/audit")) == vec![after]).then_some(())
    });
    let audit = hook(&s, "audit");
    let letters = audit["dead_letters"].as_array().unwrap();
    assert_eq!(letters.len(), 1, "{audit}");
    assert_eq!(letters[0]["seq"], large);
    assert_eq!(letters[0]["event_type"], "hitl_request_created");
    assert_eq!(letters[0]["attempts"], 1);
    assert!(
        letters[0]["error"].as_str().unwrap().contains("413"),
        "{audit}"
    );
    assert_eq!(audit["max_attempts"], 2);
    assert_eq!(audit["cursor"], after);
    assert_eq!(
        sample(&s, "flightdeck_webhook_dead_letters{webhook=\"audit\"} "),
        1.0
    );
    wait_for("WebhookDeadLetters to fire", || {
        (alert_state(&s, "WebhookDeadLetters") == "firing").then_some(())
    });

    // A receiver that keeps failing (503): given up after --webhook-max-attempts, and the events
    // after it still go out once it is back.
    receiver.refusing.store(true, Ordering::SeqCst);
    let refused = ask(&s, "asked while the receiver is down".into());
    wait_for("the 503s to give up", || {
        (hook(&s, "audit")["dead_letters"].as_array().unwrap().len() == 2).then_some(())
    });
    receiver.refusing.store(false, Ordering::SeqCst);
    let later = ask(&s, "asked once it is back".into());
    wait_for("the event after the given-up one", || {
        (seqs(&receiver.posts("/audit")) == vec![after, later]).then_some(())
    });
    let letters = hook(&s, "audit")["dead_letters"].clone();
    assert_eq!(letters[1]["seq"], refused);
    assert_eq!(letters[1]["attempts"], 2);
    assert!(letters[1]["error"].as_str().unwrap().contains("503"));

    // Dead letters are durable: a restart keeps them and posts neither again.
    let dir = {
        let dir = s.stop();
        let s = Server::start_in(dir.clone(), &args);
        assert_eq!(
            hook(&s, "audit")["dead_letters"].as_array().unwrap().len(),
            2
        );
        assert_eq!(
            sample(&s, "flightdeck_webhook_dead_letters{webhook=\"audit\"} "),
            2.0
        );
        // A retry that fails again keeps the letter and counts the attempt.
        let retried = s
            .post(
                "/api/v1/monitoring/webhooks/audit/retry",
                json!({ "seq": large }),
            )
            .expect(200);
        assert_eq!(retried["delivered"], json!([]));
        assert_eq!(retried["failed"]["seq"], large);
        assert!(retried["failed"]["error"].as_str().unwrap().contains("413"));
        assert_eq!(retried["remaining"], 2);
        assert_eq!(hook(&s, "audit")["dead_letters"][0]["attempts"], 2);
        // The receiver is fixed: retrying all posts both, oldest first, signed and framed as
        // before, and empties the list.
        receiver.max_body.store(usize::MAX, Ordering::SeqCst);
        let retried = s
            .post("/api/v1/monitoring/webhooks/audit/retry", json!({}))
            .expect(200);
        assert_eq!(retried["delivered"], json!([large, refused]));
        assert_eq!(retried["failed"], Value::Null);
        assert_eq!(retried["remaining"], 0);
        let posted = seqs(&receiver.posts("/audit"));
        assert_eq!(posted, vec![after, later, large, refused]);
        let events = s.all_events(None);
        let big = receiver.posts("/audit")[2].clone();
        assert_eq!(
            &big.json(),
            events.iter().find(|e| e["seq"] == large).unwrap()
        );
        assert_eq!(hook(&s, "audit")["dead_letters"], json!([]));
        assert_eq!(
            sample(&s, "flightdeck_webhook_dead_letters{webhook=\"audit\"} "),
            0.0
        );
        // A seq that is no dead letter, a webhook that does not exist, a bad body.
        s.post(
            "/api/v1/monitoring/webhooks/audit/retry",
            json!({ "seq": large }),
        )
        .expect_error(404, "not_found");
        s.post("/api/v1/monitoring/webhooks/nope/retry", json!({}))
            .expect_error(404, "not_found");
        s.post(
            "/api/v1/monitoring/webhooks/audit/retry",
            json!({ "seq": "one" }),
        )
        .expect_error(422, "invalid_field");
        s.post(
            "/api/v1/monitoring/webhooks/audit/discard",
            json!({ "seqs": [1] }),
        )
        .expect_error(422, "invalid_field");
        s.stop()
    };

    // Discarding drops a letter without posting it.
    let s = Server::start_in(dir, &args);
    receiver.max_body.store(5_000, Ordering::SeqCst);
    let again = ask(&s, "y".repeat(9_000));
    wait_for("the large one to be given up again", || {
        (hook(&s, "audit")["dead_letters"].as_array().unwrap().len() == 1).then_some(())
    });
    let discarded = s
        .post(
            "/api/v1/monitoring/webhooks/audit/discard",
            json!({ "seq": again }),
        )
        .expect(200);
    assert_eq!(discarded["discarded"], 1);
    assert_eq!(discarded["remaining"], 0);
    assert_eq!(hook(&s, "audit")["dead_letters"], json!([]));
    assert_eq!(
        seqs(&receiver.posts("/audit")),
        vec![after, later, large, refused]
    );
    wait_for("WebhookDeadLetters to resolve", || {
        matches!(
            alert_state(&s, "WebhookDeadLetters").as_str(),
            "resolved" | "inactive"
        )
        .then_some(())
    });
    let (ok, report) = crate::common::check(s.stop().path());
    assert!(ok, "{report}");
}
