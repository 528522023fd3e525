//! What the agents spend: usage reports under a lease, priced or reported, counted once, summed per
//! task, project, agent type, model, day and hour, exported to Prometheus, kept across restarts.

use crate::common::*;
use serde_json::{Value, json};
use std::sync::Arc;

/// A config file with prices for `model-a`: a cheaper one since yesterday (UTC), and one for it
/// from the day after tomorrow that no report here may use.
fn priced(dir: &std::path::Path) -> String {
    let path = dir.join("prices.toml");
    let day = |days: i64| (chrono::Utc::now() + chrono::Duration::days(days)).format("%Y-%m-%d");
    std::fs::write(
        &path,
        format!(
            r#"
[[prices]]
model = "model-a"
input_per_million = 3.0
output_per_million = 15.0
cache_read_per_million = 0.3
cache_write_per_million = 3.75

[[prices]]
model = "model-a"
input_per_million = 1.0
output_per_million = 5.0
since = "{yesterday}"

[[prices]]
model = "model-a"
input_per_million = 100.0
output_per_million = 100.0
since = "{later}"
"#,
            yesterday = day(-1),
            later = day(2),
        ),
    )
    .unwrap();
    path.to_string_lossy().into_owned()
}

/// Claims the task `agent` has pending: (task id, lease id).
fn claim(s: &Server, agent: &str, worker: &str) -> (String, String) {
    let t = s
        .post(
            "/api/v1/tasks/claim",
            json!({"agent_type": agent, "worker_id": worker}),
        )
        .expect(200);
    (
        t["task_id"].as_str().unwrap().to_string(),
        t["lease_id"].as_str().unwrap().to_string(),
    )
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[test]
fn reports_are_priced_or_taken_counted_once_and_summed_everywhere() {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let file = priced(dir.path());
    let s = Server::start_in(dir.clone(), &["--config", &file]);
    let p = s.project("spend");
    let other = s.project("other");
    s.task(&p, "developer");
    s.task(&other, "tester");
    let (task, lease) = claim(&s, "developer", "w1");

    // Priced from its tokens at the price since yesterday: 1 and 5 dollars per million.
    let r = s
        .post(
            &format!("/api/v1/tasks/{task}/usage"),
            json!({"lease_id": lease, "report_id": "call-1", "model": "model-a",
                   "provider": "anthropic", "input_tokens": 1_000_000, "output_tokens": 100_000}),
        )
        .expect(201);
    assert_eq!(r["cost_source"], "priced");
    assert!(close(r["cost_usd"].as_f64().unwrap(), 1.5), "{r}");
    assert_eq!(r["lease_lost"], false);
    assert_eq!(r["repeated"], false);
    assert_eq!(r["provider"], "anthropic");
    assert_eq!(r["task_usage"]["input_tokens"], 1_000_000);
    let first_id = r["usage_id"].as_str().unwrap().to_string();

    // The same report_id again: 200, the first entry, nothing counted twice.
    let again = s
        .post(
            &format!("/api/v1/tasks/{task}/usage"),
            json!({"lease_id": lease, "report_id": "call-1", "model": "model-a",
                   "input_tokens": 999, "output_tokens": 999}),
        )
        .expect(200);
    assert_eq!(again["repeated"], true);
    assert_eq!(again["usage_id"], first_id.as_str());
    assert_eq!(again["input_tokens"], 1_000_000);
    assert_eq!(again["task_usage"]["reports"], 1);

    // A reported cost wins over the price; an unknown model without a cost is unpriced.
    let r = s
        .post(
            &format!("/api/v1/tasks/{task}/usage"),
            json!({"lease_id": lease, "report_id": "call-2", "model": "model-a",
                   "input_tokens": 10, "output_tokens": 20, "cache_read_tokens": 30,
                   "cache_write_tokens": 40, "cost_usd": 0.25}),
        )
        .expect(201);
    assert_eq!(r["cost_source"], "reported");
    assert!(close(r["cost_usd"].as_f64().unwrap(), 0.25));
    let r = s
        .post(
            &format!("/api/v1/tasks/{task}/usage"),
            json!({"lease_id": lease, "report_id": "call-3", "model": "model-b",
                   "input_tokens": 5, "output_tokens": 5}),
        )
        .expect(201);
    assert_eq!(r["cost_source"], "unpriced");
    assert_eq!(r["cost_usd"], 0.0);

    // Riding on a heartbeat (a list, one of them a repeat) and on the completion.
    s.post(
        &format!("/api/v1/tasks/{task}/heartbeat"),
        json!({"lease_id": lease, "usage": [
            {"report_id": "call-4", "model": "model-b", "input_tokens": 100, "output_tokens": 1},
            {"report_id": "call-2", "model": "model-a", "input_tokens": 7, "output_tokens": 7}
        ]}),
    )
    .expect(200);
    s.post(
        &format!("/api/v1/tasks/{task}/status"),
        json!({"status": "completed", "lease_id": lease, "output": {"ok": true},
               "usage": {"report_id": "call-5", "model": "model-b", "input_tokens": 1000, "output_tokens": 0}}),
    )
    .expect(200);

    // The task, its project and its agent type carry the same totals.
    let expected_input = 1_000_000 + 10 + 5 + 100 + 1000;
    let expected_output = 100_000 + 20 + 5 + 1;
    let t = s.get(&format!("/api/v1/tasks/{task}")).expect(200);
    let usage = &t["usage"];
    assert_eq!(usage["reports"], 5, "{t}");
    assert_eq!(usage["input_tokens"], expected_input);
    assert_eq!(usage["output_tokens"], expected_output);
    assert_eq!(usage["cache_read_tokens"], 30);
    assert_eq!(usage["cache_write_tokens"], 40);
    assert_eq!(
        usage["total_tokens"],
        expected_input + expected_output + 30 + 40
    );
    assert!(close(usage["cost_usd"].as_f64().unwrap(), 1.75));
    let project = s.get(&format!("/api/v1/projects/{p}")).expect(200);
    assert_eq!(project["usage"], *usage);
    let completion = s
        .get(&format!("/api/v1/projects/{p}/completion"))
        .expect(200);
    assert_eq!(completion["usage"], *usage);
    let agent = s.get("/api/v1/agents/status/developer").expect(200);
    assert_eq!(agent["usage"], *usage);
    let idle = s.get("/api/v1/agents/status/tester").expect(200);
    assert_eq!(idle["usage"]["reports"], 0);

    // Sums: grouped by model, by project, by day and by hour; filtered.
    let by_model = s.get("/api/v1/usage?group_by=model").expect(200);
    assert_eq!(by_model["totals"], *usage);
    let groups = by_model["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 2, "{by_model}");
    assert_eq!(groups[0]["model"], "model-a");
    assert_eq!(groups[0]["reports"], 2);
    assert!(close(groups[0]["cost_usd"].as_f64().unwrap(), 1.75));
    assert_eq!(groups[1]["model"], "model-b");
    assert_eq!(groups[1]["input_tokens"], 5 + 100 + 1000);
    let by_project = s.get("/api/v1/usage?group_by=project").expect(200);
    let groups = by_project["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0]["project_id"], p.as_str());
    let today = s
        .get(&format!("/api/v1/usage?group_by=day&project_id={p}"))
        .expect(200);
    // One day, or two when the reports straddled midnight (UTC): five reports either way.
    let days = today["groups"].as_array().unwrap();
    assert!(matches!(days.len(), 1 | 2), "{today}");
    let reports: u64 = days.iter().map(|d| d["reports"].as_u64().unwrap()).sum();
    assert_eq!(reports, 5, "{today}");
    let day = days[0]["day"].as_str().unwrap().to_string();
    assert_eq!(day.len(), 10, "{day}");
    let hours = s.get("/api/v1/usage?group_by=hour").expect(200);
    assert!(
        hours["groups"][0]["hour"]
            .as_str()
            .unwrap()
            .ends_with(":00:00.000000Z")
    );
    let filtered = s
        .get("/api/v1/usage?model=model-b&agent_type=developer")
        .expect(200);
    assert_eq!(filtered["totals"]["reports"], 3);
    assert_eq!(
        s.get(&format!("/api/v1/usage?project_id={other}"))
            .expect(200)["totals"]["reports"],
        0
    );
    // A range before anything was reported sums nothing; one that holds today sums it all.
    let before = s
        .get("/api/v1/usage?from=2000-01-01&to=2000-01-02")
        .expect(200);
    assert_eq!(before["totals"]["reports"], 0);
    assert_eq!(before["from"], "2000-01-01T00:00:00.000000Z");
    let around = s
        .get(&format!("/api/v1/usage?from={day}&to=2100-01-01"))
        .expect(200);
    assert_eq!(around["totals"]["reports"], 5);

    // Prometheus: tokens by kind and dollars, by agent type and model.
    let metrics = s.get("/metrics").body;
    assert!(
        metrics.contains(&format!(
            "flightdeck_usage_tokens_total{{agent_type=\"developer\",model=\"model-b\",kind=\"input\"}} {}",
            5 + 100 + 1000
        )),
        "{metrics}"
    );
    assert!(metrics.contains(
        "flightdeck_usage_cost_usd_total{agent_type=\"developer\",model=\"model-a\"} 1.75"
    ));

    // Everything is kept across a restart.
    let dir = s.stop();
    let s = Server::start_in(dir, &["--config", &file]);
    let t = s.get(&format!("/api/v1/tasks/{task}")).expect(200);
    assert_eq!(t["usage"], *usage);
    assert_eq!(
        s.get("/api/v1/usage?group_by=model").expect(200)["totals"],
        *usage
    );
    let (ok, out) = check(s.stop().path());
    assert!(ok, "{out}");
}

#[test]
fn usage_after_the_lease_was_lost_is_recorded_and_marked() {
    let s = Server::start();
    let p = s.project("lost");
    s.task(&p, "developer");
    let (task, lease) = claim(&s, "developer", "w1");
    // A lease that is not the task's: what a worker holds whose claim ran out and went to
    // another worker (the fencing tests show how that happens; here only the answer matters).
    let wrong = "01900000-0000-7000-8000-000000000000";
    let r = s
        .post(
            &format!("/api/v1/tasks/{task}/usage"),
            json!({"lease_id": wrong, "report_id": "late", "model": "m",
                   "input_tokens": 10, "output_tokens": 10, "cost_usd": 0.01}),
        )
        .expect(201);
    assert_eq!(r["lease_lost"], true);
    // A heartbeat with a lost lease still records its usage, then answers lease_lost.
    s.post(
        &format!("/api/v1/tasks/{task}/heartbeat"),
        json!({"lease_id": wrong, "usage": {"report_id": "late-2", "model": "m",
               "input_tokens": 1, "output_tokens": 1}}),
    )
    .expect_error(409, "lease_lost");
    // Done with the right lease, then reported late: lost too (the task is no longer working).
    s.post(
        &format!("/api/v1/tasks/{task}/status"),
        json!({"status": "completed", "lease_id": lease}),
    )
    .expect(200);
    let r = s
        .post(
            &format!("/api/v1/tasks/{task}/usage"),
            json!({"lease_id": lease, "report_id": "after", "model": "m",
                   "input_tokens": 2, "output_tokens": 2}),
        )
        .expect(201);
    assert_eq!(r["lease_lost"], true);
    let t = s.get(&format!("/api/v1/tasks/{task}")).expect(200);
    assert_eq!(t["usage"]["reports"], 3);
    assert_eq!(t["usage"]["input_tokens"], 13);
}

#[test]
fn bad_reports_are_refused_by_field_and_change_nothing() {
    let s = Server::start_with(&["--max-models", "2"]);
    let p = s.project("bad");
    s.task(&p, "developer");
    let (task, lease) = claim(&s, "developer", "w1");
    let url = format!("/api/v1/tasks/{task}/usage");
    let base = json!({"lease_id": lease, "report_id": "r", "model": "m",
                      "input_tokens": 1, "output_tokens": 1});
    let with = |key: &str, value: Value| {
        let mut b = base.clone();
        b[key] = value;
        b
    };
    for (body, field) in [
        (with("cost_usd", json!(-1)), "cost_usd"),
        (with("model", json!("")), "model"),
        (with("report_id", json!("x".repeat(200))), "report_id"),
        (with("input_tokens", json!(-5)), "input_tokens"),
        (with("surprise", json!(1)), "surprise"),
    ] {
        let message = s.post(&url, body).expect_error(422, "invalid_field");
        assert!(message.contains(field), "{field}: {message}");
    }
    let message = s
        .post(&url, with("lease_id", json!("not-a-uuid")))
        .expect_error(400, "invalid_id");
    assert!(message.contains("lease_id"), "{message}");
    let missing = json!({"lease_id": lease, "model": "m", "input_tokens": 1, "output_tokens": 1});
    let message = s.post(&url, missing).expect_error(422, "invalid_field");
    assert!(message.contains("report_id"), "{message}");
    s.post(
        "/api/v1/tasks/01900000-0000-7000-8000-000000000000/usage",
        base.clone(),
    )
    .expect_error(404, "task_not_found");
    // A bad report inside a heartbeat's list refuses the heartbeat before anything is written.
    let message = s
        .post(
            &format!("/api/v1/tasks/{task}/heartbeat"),
            json!({"lease_id": lease, "usage": [
                {"report_id": "ok", "model": "m", "input_tokens": 1, "output_tokens": 1},
                {"report_id": "bad", "model": "m", "input_tokens": 1, "output_tokens": 1, "cost_usd": "free"}
            ]}),
        )
        .expect_error(422, "invalid_field");
    assert!(message.contains("usage"), "{message}");
    for bad in [
        "/api/v1/usage?group_by=week",
        "/api/v1/usage?from=yesterday",
        "/api/v1/usage?agent_type=Not%20A%20Name",
    ] {
        s.get(bad).expect_error(422, "invalid_field");
    }
    s.get("/api/v1/usage?project_id=01900000-0000-7000-8000-000000000000")
        .expect_error(404, "project_not_found");
    let t = s.get(&format!("/api/v1/tasks/{task}")).expect(200);
    assert_eq!(t["usage"]["reports"], 0, "{t}");

    // Past --max-models the sums and metrics say `other`; the ledger's entry keeps the name.
    for (i, model) in ["m1", "m2", "m3", "m4"].iter().enumerate() {
        let r = s
            .post(
                &url,
                json!({"lease_id": lease, "report_id": format!("r{i}"),
                               "model": model, "input_tokens": 1, "output_tokens": 0}),
            )
            .expect(201);
        assert_eq!(r["model"], *model);
    }
    let by_model = s.get("/api/v1/usage?group_by=model").expect(200);
    let models: Vec<&str> = by_model["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["model"].as_str().unwrap())
        .collect();
    assert_eq!(models, ["m1", "m2", "other"]);
    assert_eq!(by_model["groups"][2]["reports"], 2);
    let metrics = s.get("/metrics").body;
    assert!(metrics.contains("model=\"other\""));
    assert!(!metrics.contains("model=\"m3\""));
}
