//! A full disk: writes answer 507 and store nothing, reads keep working, readiness says why, and
//! writes succeed again once space returns — without a restart. Runs on a small tmpfs (CI is root).

use std::process::Command;
use std::sync::Arc;

use serde_json::json;

use crate::common::{Server, Tmpfs, check, wait_for};

#[test]
fn a_full_disk_refuses_writes_with_507_and_recovers_when_space_returns() {
    let Some(tmpfs) = Tmpfs::mount("12m") else {
        return;
    };
    let data = tempfile::Builder::new().tempdir_in(tmpfs.path()).unwrap();
    // Segments of the write-ahead log as small as they come: the disk is 12 MiB.
    let s = Server::start_in(
        Arc::new(data),
        &["--min-free-disk-mb", "1", "--wal-segment-mib", "1"],
    );
    let p = s.project("p");
    let kept = s.artifact(&p, "project_plan", "analyst", json!({"plan": "kept"}));
    let big = "x".repeat(400_000);
    let mut stored = 0;
    let refused = loop {
        let r = s.post(
            "/api/v1/context/artifacts",
            json!({"project_id": p, "source_agent": "coder", "artifact_type": "source_code", "content": big}),
        );
        match r.status {
            201 => stored += 1,
            507 => break r,
            other => panic!("{other}: {}", r.body),
        }
        assert!(stored < 100, "the disk never filled");
    };
    assert_eq!(refused.json()["error"]["code"], "disk_full");
    // Reads keep working; what was committed is intact.
    assert_eq!(
        s.get(&format!("/api/v1/context/artifacts/{kept}"))
            .expect(200)["content"]["plan"],
        "kept"
    );
    let listed = s
        .get(&format!(
            "/api/v1/context/project/{p}/artifacts?artifact_type=source_code"
        ))
        .expect(200);
    assert_eq!(
        listed.as_array().unwrap().len(),
        stored,
        "nothing half-written"
    );
    let body = wait_for("readiness to fail", || {
        let r = s.get("/readyz?verbose");
        (r.status == 503).then_some(r.body)
    });
    assert!(body.contains("[-]"), "{body}");
    // Space returns: writes work again without a restart.
    assert!(
        Command::new("mount")
            .args(["-o", "remount,size=64m"])
            .arg(tmpfs.path())
            .status()
            .unwrap()
            .success()
    );
    let t = wait_for("writes to succeed again", || {
        let r = s.post(
            &format!("/api/v1/projects/{p}/tasks"),
            json!({"agent_type": "coder", "instructions": "after"}),
        );
        (r.status == 201).then(|| r.json()["task_id"].as_str().unwrap().to_string())
    });
    s.get(&format!("/api/v1/tasks/{t}")).expect(200);
    wait_for("readiness to recover", || {
        (s.get("/readyz").status == 200).then_some(())
    });
    let events = s.all_events(None);
    crate::common::assert_gap_free(&events);
    let dir = s.stop();
    let (ok, report) = check(dir.path());
    assert!(ok, "{report}");
    drop(dir);
    drop(tmpfs);
}

#[test]
fn a_backup_that_would_fill_the_disk_is_refused_and_leaves_nothing() {
    // A backup is at most the database's size. With less free than that and the floor the
    // server keeps, it is refused at once (507), before a byte is written, instead of filling the
    // disk under the live database.
    let Some(tmpfs) = Tmpfs::mount("24m") else {
        return;
    };
    let data = tempfile::Builder::new().tempdir_in(tmpfs.path()).unwrap();
    let db = data.path().join("flightdeck.redb");
    let s = Server::start_in(
        Arc::new(data),
        &[
            "--min-free-disk-mb",
            "1",
            "--max-body-bytes",
            "2000000",
            "--wal-segment-mib",
            "1",
        ],
    );
    let p = s.project("p");
    let big = "x".repeat(900_000);
    // Until the database holds more than half the disk (or the disk is full): its blocks, not its
    // length, which redb may grow ahead of what it wrote (a sparse file).
    let used = |db: &std::path::Path| {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(db).unwrap().blocks() * 512
    };
    while used(&db) < 13 << 20 {
        let r = s.post(
            "/api/v1/context/artifacts",
            json!({"project_id": p, "source_agent": "coder", "artifact_type": "source_code", "content": big}),
        );
        match r.status {
            201 => {}
            507 => break,
            other => panic!("{other}: {}", r.body),
        }
    }
    let refused = s.backup();
    refused.expect_error(507, "disk_full");
    let left: Vec<_> = std::fs::read_dir(s.dir.path().join("backups"))
        .map(|d| d.filter_map(Result::ok).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
    // Reads and small writes go on.
    assert_eq!(s.get(&format!("/api/v1/projects/{p}")).status, 200);
}
