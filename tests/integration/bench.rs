//! `flightdeck bench`, the load driver, run at its tiny scenario: against a server it starts
//! itself, and against a running server with a key (`--url`). Timing is reported, never asserted;
//! what is asserted is that the driver drove the whole workflow, saw every event exactly once,
//! counted no errors where there were none and refuses a server it cannot write to.

use std::process::Command;

use serde_json::Value;

use crate::common::{BIN, Server};

fn bench(args: &[&str]) -> (bool, Value, String) {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.json");
    let output = Command::new(BIN)
        .args(["bench", "--scenario", "tiny", "--json"])
        .arg(&report)
        .args(args)
        .current_dir(dir.path())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let json = std::fs::read_to_string(&report)
        .ok()
        .and_then(|r| serde_json::from_str(&r).ok())
        .unwrap_or(Value::Null);
    (output.status.success(), json, text)
}

fn assert_clean(report: &Value, output: &str) {
    assert_eq!(report["clean"], true, "{output}");
    let expected = report["tasks_expected"].as_u64().unwrap();
    assert_eq!(expected, 2 * 10, "tiny: 2 projects x 10 tasks");
    assert_eq!(report["tasks_completed"].as_u64(), Some(expected));
    assert_eq!(report["workflows_completed"].as_u64(), Some(2));
    let classes = report["classes"].as_array().unwrap();
    for class in classes {
        assert_eq!(class["client"]["errors"], 0, "{class}");
        if class["class"] != "HITL (list, approve)" {
            assert!(class["client"]["count"].as_u64().unwrap() > 0, "{class}");
        }
        let c = &class["client"];
        let (p50, p99, max) = (
            c["p50_ms"].as_f64().unwrap(),
            c["p99_ms"].as_f64().unwrap(),
            c["max_ms"].as_f64().unwrap(),
        );
        assert!(p50 <= p99 && p99 <= max, "{class}");
    }
    // Every task is claimed once and completed once, plus 8 created and 1 workflow start per
    // project: the task operations are at least that many.
    let task_ops = classes
        .iter()
        .find(|c| c["class"] == "task operation")
        .unwrap();
    assert!(task_ops["client"]["count"].as_u64().unwrap() >= 2 * expected + 2 * 9);
    let ws = &report["websocket"];
    assert_eq!(ws["connected"], 4);
    let verdict = &ws["verdict"];
    // Each task yields at least created, claimed (status change) and completed events, and each
    // of the 2 connections per project must hold all of its project's.
    assert!(verdict["expected"].as_u64().unwrap() >= 2 * 3 * expected);
    assert_eq!(verdict["delivered"], verdict["expected"]);
    for field in ["missing", "duplicated", "reordered", "unexpected"] {
        assert_eq!(verdict[field], 0, "{field}: {ws}");
    }
    assert_eq!(
        ws["delivery"]["count"], verdict["delivered"],
        "one latency sample per event"
    );
    assert!(report["quiet"]["bare"]["count"].as_u64().unwrap() > 0);
    assert!(report["quiet"]["flightdeck"]["count"].as_u64().unwrap() > 0);
    assert_eq!(
        report["quiet"]["flightdeck_server"]["count"], report["quiet"]["flightdeck"]["count"],
        "every answer carries Server-Timing"
    );
    assert!(!report["verdicts"].as_array().unwrap().is_empty());
}

#[test]
fn tiny_scenario_on_its_own_server() {
    let (ok, report, output) = bench(&[]);
    assert!(ok, "{output}");
    assert_clean(&report, &output);
    assert_eq!(report["server"]["consistent"], true, "check after the run");
    assert!(report["server"]["peak_rss_bytes"].as_u64().unwrap() > 0);
    assert!(report["server"]["startup_ms"].as_f64().is_some());
    assert!(
        output.contains("| service level | target | measured | met |"),
        "{output}"
    );
    // Open loop at the scenario's rates, with `--rate` taken.
    assert_eq!(report["scenario"]["rates"]["status"], 100.0);
    assert!(output.contains("load: open loop"), "{output}");
    // The cost phase: every class alone, its server CPU per operation from /proc.
    let costs = report["costs"].as_array().unwrap();
    let classes: Vec<&str> = costs.iter().map(|c| c["class"].as_str().unwrap()).collect();
    assert_eq!(
        classes,
        [
            "status query",
            "task operation",
            "context-store put",
            "context-store get",
            "context-store list",
            "usage report (1,000 a second)",
            "WebSocket frame delivered (100 connections)"
        ]
    );
    assert!(
        output.contains("usage reports at 1,000 per second would take"),
        "{output}"
    );
    let (frames, classes) = costs.split_last().unwrap();
    for c in classes {
        assert!(c["operations"].as_u64().unwrap() > 0, "{c}");
        assert!(c["server_cpu_us"].as_f64().unwrap() > 0.0, "{c}");
    }
    // Every task created in the frame row reaches all 100 connections: at least 100 frames.
    assert!(frames["operations"].as_u64().unwrap() >= 100, "{frames}");
}

#[test]
fn tiny_scenario_against_a_running_server_with_a_key() {
    let s = Server::start_with(&[
        "--api-key",
        "rw:bench-writer-0123456",
        "--api-key",
        "ro:bench-reader-0123456",
        "--api-key",
        "review:reviewer:bench-review-0123456",
    ]);
    let url = format!("http://{}", s.addr);
    // The reviewer has a key of its own: the workers' key may not approve the gates of the tasks
    // it claimed.
    let (ok, report, output) = bench(&[
        "--url",
        &url,
        "--api-key",
        "bench-writer-0123456",
        "--reviewer-api-key",
        "bench-review-0123456",
        "--closed-loop",
    ]);
    assert!(ok, "{output}");
    assert_clean(&report, &output);
    // The saturation mode, and the cost phase from the server's /metrics.
    assert!(report["scenario"]["rates"].is_null());
    assert!(output.contains("load: closed loop"), "{output}");
    assert_eq!(report["costs"].as_array().unwrap().len(), 7);
    // Rates are checked before anything runs.
    let (ok, _, output) = bench(&["--url", &url, "--rate", "status=fast"]);
    assert!(!ok);
    assert!(output.contains("--rate status=fast"), "{output}");
    assert_eq!(
        report["server"]["consistent"],
        Value::Null,
        "not ours to check"
    );

    // A read-only key cannot create the projects: the run stops with the server's answer.
    let (ok, _, output) = bench(&["--url", &url, "--api-key", "bench-reader-0123456"]);
    assert!(!ok);
    assert!(
        output.contains("creating a project answered 403"),
        "{output}"
    );
}

#[test]
fn capacity_search_steps_up_or_down_and_reports_the_highest_load_that_held() {
    let (ok, report, output) =
        bench(&["--find-capacity", "--step-seconds", "2", "--max-steps", "3"]);
    assert!(ok, "{output}");
    assert_eq!(report["clean"], true, "{output}");
    let all = report["steps"].as_array().unwrap();
    // The search proper; when no load held every level, a second search without the levels
    // broken at the lowest load follows (checked below).
    let relaxed = &report["relaxed"];
    let first_relaxed = relaxed["first_step"]
        .as_u64()
        .map_or(all.len(), |i| i as usize);
    let steps = &all[..first_relaxed];
    assert!((1..=3).contains(&steps.len()), "{output}");
    let base = &report["scenario"]["rates"];
    assert_eq!(base["status"], 100.0, "the tiny scenario's rates");
    let mut tried = Vec::new();
    for step in steps {
        let factor = step["factor"].as_f64().unwrap();
        for class in ["status", "tasks", "review"] {
            let offered = step["offered"][class].as_f64().unwrap();
            let expected = base[class].as_f64().unwrap() * factor;
            assert!((offered - expected).abs() < 1e-9, "{class}: {step}");
        }
        // A fixed-time steady step: the workers kept the projects in work for the whole step.
        assert!(step["seconds"].as_f64().unwrap() >= 2.0, "{step}");
        assert!(step["tasks_completed_per_second"].as_f64().unwrap() > 0.0);
        let ws = &step["websocket"]["verdict"];
        assert!(ws["expected"].as_u64().unwrap() > 0, "{step}");
        assert_eq!(ws["delivered"], ws["expected"], "{step}");
        let verdicts = step["verdicts"].as_array().unwrap();
        let met = verdicts.iter().all(|v| v["met"] == true);
        assert_eq!(step["met"], met, "a step holds when every level does");
        assert!(
            verdicts.iter().any(|v| v["what"]
                .as_str()
                .unwrap()
                .starts_with("task operation p99")),
            "{step}"
        );
        tried.push((factor, met));
    }
    // Up by 1.5 from the scenario's rates while every level holds, down by half when the first
    // step breaks.
    assert_eq!(tried[0].0, 1.0);
    if let Some(second) = tried.get(1) {
        assert_eq!(second.0, if tried[0].1 { 1.5 } else { 0.5 }, "{tried:?}");
    }
    // The capacity is the highest load that held below every load that broke.
    let lowest_broken = tried
        .iter()
        .filter(|t| !t.1)
        .map(|t| t.0)
        .fold(f64::INFINITY, f64::min);
    let highest_held = tried
        .iter()
        .filter(|t| t.1 && t.0 < lowest_broken)
        .map(|t| t.0)
        .fold(None, |a: Option<f64>, f| Some(a.map_or(f, |a| a.max(f))));
    let capacity = report["capacity"].as_u64().map(|i| tried[i as usize].0);
    assert_eq!(capacity, highest_held, "{output}");
    let first_break = report["first_break"].as_u64().map(|i| tried[i as usize].0);
    assert_eq!(
        first_break,
        lowest_broken.is_finite().then_some(lowest_broken)
    );
    assert!(output.contains("capacity: "), "{output}");
    if capacity.is_some() {
        assert!(relaxed.is_null(), "a capacity was found: no second search");
    } else {
        // Without the levels the lowest load broke, the rest judged again and searched on.
        let lowest = tried
            .iter()
            .enumerate()
            .min_by(|a, b| a.1.0.total_cmp(&b.1.0))
            .unwrap()
            .0;
        let excluded: Vec<&str> = relaxed["excluded"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e.as_str().unwrap())
            .collect();
        let broken: Vec<&str> = steps[lowest]["verdicts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| v["met"] == false)
            .map(|v| v["what"].as_str().unwrap())
            .collect();
        assert_eq!(excluded, broken);
        let held_without = |step: &Value| {
            step["verdicts"]
                .as_array()
                .unwrap()
                .iter()
                .all(|v| v["met"] == true || excluded.contains(&v["what"].as_str().unwrap()))
        };
        let judged: Vec<(f64, bool)> = all
            .iter()
            .map(|s| (s["factor"].as_f64().unwrap(), held_without(s)))
            .collect();
        assert!(
            judged[lowest].1,
            "the lowest load holds without what it broke"
        );
        let lowest_broken = judged
            .iter()
            .filter(|t| !t.1)
            .map(|t| t.0)
            .fold(f64::INFINITY, f64::min);
        let highest_held = judged
            .iter()
            .filter(|t| t.1 && t.0 < lowest_broken)
            .map(|t| t.0)
            .fold(f64::NEG_INFINITY, f64::max);
        let relaxed_capacity = relaxed["capacity"].as_u64().map(|i| judged[i as usize].0);
        assert_eq!(relaxed_capacity, Some(highest_held), "{output}");
    }
    assert_eq!(report["consistent"], true);
    // The search offers rates: it cannot be closed loop.
    let (ok, _, output) = bench(&["--find-capacity", "--closed-loop"]);
    assert!(!ok);
    assert!(output.contains("--closed-loop"), "{output}");
}

#[test]
fn soak_reports_each_minute_with_memory_descriptors_and_alerts() {
    let (_, report, output) = bench(&["--soak", "7"]);
    let minutes = report["minutes"].as_array().expect(&output);
    assert_eq!(minutes.len(), 1, "7 s: one (short) minute");
    let m = &minutes[0];
    assert_eq!(m["minute"], 1);
    assert!(m["step"]["seconds"].as_f64().unwrap() >= 7.0, "{m}");
    assert_eq!(m["step"]["errors"], 0, "{output}");
    let ws = &m["step"]["websocket"]["verdict"];
    assert!(ws["expected"].as_u64().unwrap() > 0);
    assert_eq!(ws["delivered"], ws["expected"]);
    // The server's own figures, from its /metrics (the first evaluation is 5 s after start).
    assert!(m["rss_bytes"].as_u64().unwrap() > 1 << 20, "{m}");
    assert!(m["open_fds"].as_u64().unwrap() >= 3, "{m}");
    assert!(m["alerts_fired"].is_array());
    let whats: Vec<&str> = report["verdicts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["what"].as_str().unwrap())
        .collect();
    assert_eq!(
        whats,
        [
            "errors over the soak",
            "events missing, duplicated or reordered",
            "resident memory growth after the first two minutes",
            "alerts fired"
        ]
    );
    assert_eq!(report["errors"], 0);
    assert_eq!(report["events_wrong"], 0);
    assert_eq!(report["consistent"], true);
    assert!(output.contains("| minute | resident MiB |"), "{output}");
}
