//! Answers bounded in bytes, not only in items: every list stops a page at `--max-page-bytes`
//! with a cursor to the rest, the artifact batch names what it left out, and the progress reports
//! held in memory are bounded per report and in total.

use std::collections::HashSet;

use serde_json::{Value, json};

use crate::common::Server;

/// Follows a list's cursors (`next_cursor` in the envelope, or `X-Next-Cursor` for a bare
/// array): each page's body size and its ids, in order.
fn pages(s: &Server, path: &str, id: &str) -> Vec<(usize, Vec<String>)> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let sep = if path.contains('?') { '&' } else { '?' };
        let url = match &cursor {
            Some(c) => format!("{path}{sep}cursor={c}"),
            None => path.to_string(),
        };
        let r = s.get(&url);
        assert_eq!(r.status, 200, "{}", r.body);
        let v = r.json();
        let (items, next) = match &v {
            Value::Array(items) => (items.clone(), r.header("x-next-cursor").map(str::to_string)),
            _ => (
                v["items"].as_array().unwrap().clone(),
                v["next_cursor"].as_str().map(str::to_string),
            ),
        };
        let ids = items
            .iter()
            .map(|i| {
                i[id]
                    .as_str()
                    .map_or_else(|| i[id].to_string(), str::to_string)
            })
            .collect();
        out.push((r.body.len(), ids));
        match next {
            Some(c) => cursor = Some(c),
            None => return out,
        }
    }
}

const BOUND: usize = 1_000_000;

#[test]
fn every_list_stops_a_page_at_the_byte_bound_and_the_cursors_lose_nothing() {
    let bound = BOUND.to_string();
    let s = Server::start_with(&["--max-page-bytes", &bound]);
    let p = s.project("p");
    // 30 tasks of ~90 KB: 2.7 MB in one `limit=1000` page before.
    let big = "i".repeat(90_000);
    let mut tasks = Vec::new();
    for _ in 0..30 {
        let t = s
            .post(
                &format!("/api/v1/projects/{p}/tasks"),
                json!({"agent_type": "coder", "instructions": big}),
            )
            .expect(201);
        tasks.push(t["task_id"].as_str().unwrap().to_string());
    }
    let got = pages(
        &s,
        &format!("/api/v1/projects/{p}/tasks?limit=1000"),
        "task_id",
    );
    assert!(got.len() >= 3, "{} pages", got.len());
    for (bytes, ids) in &got {
        assert!(*bytes <= BOUND + 100, "a page of {bytes} bytes");
        assert!(!ids.is_empty());
    }
    let all: Vec<String> = got.iter().flat_map(|(_, ids)| ids.clone()).collect();
    assert_eq!(all, tasks, "every task once, in order");

    // Artifacts of 200 KB, listed with their content (a bare array and X-Next-Cursor).
    let content = "c".repeat(200_000);
    let mut artifacts = Vec::new();
    for _ in 0..12 {
        artifacts.push(s.artifact(&p, "source_code", "coder", json!(content)));
    }
    let got = pages(
        &s,
        &format!("/api/v1/context/project/{p}/artifacts?include=content&limit=1000"),
        "context_id",
    );
    assert!(got.len() >= 3, "{} pages", got.len());
    assert!(got.iter().all(|(bytes, _)| *bytes <= BOUND + 100));
    let all: Vec<String> = got.iter().flat_map(|(_, ids)| ids.clone()).collect();
    assert_eq!(all, artifacts);

    // The batch answers what fits and names the rest, with the missing ones apart.
    let unknown = "0190b5c2-1111-7000-8000-000000000000";
    let mut asked: Vec<String> = artifacts.clone();
    asked.insert(1, unknown.to_string());
    let mut fetched = Vec::new();
    let mut missing = Vec::new();
    let mut rounds = 0;
    while !asked.is_empty() {
        rounds += 1;
        let r = s.post(
            "/api/v1/context/artifacts/batch",
            json!({"context_ids": asked}),
        );
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(r.body.len() <= BOUND + 40_000, "{} bytes", r.body.len());
        let v = r.json();
        let got: Vec<String> = v["artifacts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["context_id"].as_str().unwrap().to_string())
            .collect();
        assert!(!got.is_empty());
        fetched.extend(got);
        missing.extend(v["missing"].as_array().unwrap().iter().cloned());
        asked = v["not_fetched"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i.as_str().unwrap().to_string())
            .collect();
    }
    assert!(rounds >= 3, "{rounds} rounds");
    assert_eq!(fetched, artifacts);
    assert_eq!(missing, vec![json!(unknown)]);

    // The event log, page by page (`next_cursor` is a seq).
    let got = pages(&s, "/api/v1/events?limit=1000", "seq");
    assert!(got.iter().all(|(bytes, _)| *bytes <= BOUND + 100));
    let seqs: Vec<u64> = got
        .iter()
        .flat_map(|(_, ids)| ids.iter().map(|i| i.parse::<u64>().unwrap()))
        .collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    assert!(seqs.len() >= 43);
}

#[test]
fn an_item_larger_than_the_bound_is_a_page_of_its_own() {
    let s = Server::start_with(&["--max-page-bytes", "50000"]);
    let p = s.project("p");
    let big = "i".repeat(90_000);
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let t = s
            .post(
                &format!("/api/v1/projects/{p}/tasks"),
                json!({"agent_type": "coder", "instructions": big}),
            )
            .expect(201);
        tasks.push(t["task_id"].as_str().unwrap().to_string());
    }
    let got = pages(&s, &format!("/api/v1/projects/{p}/tasks"), "task_id");
    let ids: Vec<Vec<String>> = got.into_iter().map(|(_, ids)| ids).collect();
    assert_eq!(
        ids,
        tasks.iter().map(|t| vec![t.clone()]).collect::<Vec<_>>()
    );
}

fn gauge(s: &Server, name: &str) -> f64 {
    s.get("/metrics")
        .body
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name}"))
}

#[test]
fn progress_reports_are_bounded_per_report_and_in_total() {
    let s = Server::start_with(&["--progress-mib", "1"]);
    let p = s.project("p");
    let mut leases = Vec::new();
    for _ in 0..30 {
        s.task(&p, "coder");
        let t = s
            .post(
                "/api/v1/tasks/claim",
                json!({"agent_type": "coder", "worker_id": "w"}),
            )
            .expect(200);
        leases.push((
            t["task_id"].as_str().unwrap().to_string(),
            t["lease_id"].as_str().unwrap().to_string(),
        ));
    }
    // One report over --max-progress-bytes (64 KiB): 413, with what to do instead.
    let (task, lease) = &leases[0];
    let e = s
        .post(
            &format!("/api/v1/tasks/{task}/progress"),
            json!({"lease_id": lease, "data": {"blob": "x".repeat(70_000)}}),
        )
        .expect_error(413, "payload_too_large");
    assert!(e.contains("--max-progress-bytes"), "{e}");
    // On a heartbeat too, refused before the heartbeat is written: the lease is not extended.
    let before = s.get(&format!("/api/v1/tasks/{task}")).expect(200)["lease_expires_at"].clone();
    s.post(
        &format!("/api/v1/tasks/{task}/heartbeat"),
        json!({"lease_id": lease, "lease_seconds": 600, "data": {"blob": "x".repeat(70_000)}}),
    )
    .expect_error(413, "payload_too_large");
    let after = s.get(&format!("/api/v1/tasks/{task}")).expect(200)["lease_expires_at"].clone();
    assert_eq!(before, after);
    // 30 tasks × 60 KB against 1 MiB in all: every report is taken (202) and sent on, but only
    // what fits is kept.
    for (task, lease) in &leases {
        s.post(
            &format!("/api/v1/tasks/{task}/progress"),
            json!({"lease_id": lease, "percent": 50, "data": {"blob": "y".repeat(60_000)}}),
        )
        .expect(202);
    }
    let held = gauge(&s, "flightdeck_progress_bytes");
    assert!(held <= 1024.0 * 1024.0, "{held} bytes held");
    assert!(held >= 15.0 * 60_000.0, "{held} bytes held");
    let not_kept = gauge(&s, "flightdeck_progress_not_kept_total");
    assert!(not_kept >= 12.0, "{not_kept} not kept");
    let shown: HashSet<String> = leases
        .iter()
        .filter(|(task, _)| {
            !s.get(&format!("/api/v1/tasks/{task}")).expect(200)["progress"].is_null()
        })
        .map(|(task, _)| task.clone())
        .collect();
    assert_eq!(shown.len() as f64, 30.0 - not_kept);
    // A task that ends frees its report's bytes for the others.
    let (task, lease) = leases.iter().find(|(t, _)| shown.contains(t)).unwrap();
    s.post(
        &format!("/api/v1/tasks/{task}/status"),
        json!({"status": "completed", "lease_id": lease, "output": {}}),
    )
    .expect(200);
    crate::common::wait_for("the ended task's report to be let go", || {
        (gauge(&s, "flightdeck_progress_bytes") < held).then_some(())
    });
}
