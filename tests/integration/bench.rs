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
            "context-store list"
        ]
    );
    for c in costs {
        assert!(c["operations"].as_u64().unwrap() > 0, "{c}");
        assert!(c["server_cpu_us"].as_f64().unwrap() > 0.0, "{c}");
    }
}

#[test]
fn tiny_scenario_against_a_running_server_with_a_key() {
    let s = Server::start_with(&[
        "--api-key",
        "rw:bench-writer-0123456",
        "--api-key",
        "ro:bench-reader-0123456",
    ]);
    let url = format!("http://{}", s.addr);
    let (ok, report, output) = bench(&[
        "--url",
        &url,
        "--api-key",
        "bench-writer-0123456",
        "--closed-loop",
    ]);
    assert!(ok, "{output}");
    assert_clean(&report, &output);
    // The saturation mode, and the cost phase from the server's /metrics.
    assert!(report["scenario"]["rates"].is_null());
    assert!(output.contains("load: closed loop"), "{output}");
    assert_eq!(report["costs"].as_array().unwrap().len(), 5);
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
