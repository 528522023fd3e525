//! Backups: online through the API while writes continue, offline from a stopped server's
//! directory, restored into an empty directory (refusing a non-empty one), checked, and served.

use std::process::Command;

use serde_json::json;

use crate::common::{BIN, Server, check};

fn run(args: &[&str]) -> (bool, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn an_online_backup_restores_to_a_server_with_the_same_data() {
    let s = Server::start();
    let p = s.project("kept");
    let a = s.artifact(&p, "project_plan", "analyst", json!({"plan": 1}));
    for _ in 0..20 {
        s.task(&p, "coder");
    }
    // Writes keep going while the snapshot is taken.
    let backup = std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            for _ in 0..30 {
                s.task(&p, "tester");
            }
        });
        let b = s.backup().expect(201);
        writer.join().unwrap();
        b
    });
    let file = s
        .dir
        .path()
        .join(backup["path"].as_str().unwrap())
        .display()
        .to_string();
    assert!(backup["bytes"].as_u64().unwrap() > 0);
    let events_in_backup = {
        let dir = tempfile::tempdir().unwrap();
        let (ok, text) = run(&[
            "restore",
            "--from",
            &file,
            "--data-dir",
            dir.path().to_str().unwrap(),
        ]);
        assert!(ok, "{text}");
        assert!(text.contains("consistent"), "{text}");
        let (ok, text) = run(&[
            "restore",
            "--from",
            &file,
            "--data-dir",
            dir.path().to_str().unwrap(),
        ]);
        assert!(
            !ok && text.contains("--force"),
            "a non-empty directory is refused: {text}"
        );
        let (ok, text) = check(dir.path());
        assert!(ok, "{text}");
        let restored = Server::start_in(std::sync::Arc::new(dir), &[]);
        assert_eq!(
            restored
                .get(&format!("/api/v1/context/artifacts/{a}"))
                .expect(200)["content"]["plan"],
            1
        );
        let summary = restored.get(&format!("/api/v1/projects/{p}")).expect(200);
        let total = summary["total_tasks"].as_u64().unwrap();
        assert!(
            (20..=50).contains(&total),
            "a snapshot between the writes: {total}"
        );
        let events = restored.all_events(None);
        let seqs = crate::common::assert_gap_free(&events);
        assert_eq!(
            summary["latest_seq"].as_u64().unwrap(),
            *seqs.last().unwrap()
        );
        seqs.len()
    };
    assert!(events_in_backup >= 22);
}

#[test]
fn offline_backup_and_compaction() {
    let s = Server::start();
    let p = s.project("p");
    for _ in 0..50 {
        s.task(&p, "coder");
    }
    let dir = s.stop();
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("b.redb");
    let (ok, text) = run(&[
        "backup",
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--to",
        file.to_str().unwrap(),
    ]);
    assert!(ok, "{text}");
    let (ok, text) = run(&[
        "backup",
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--to",
        file.to_str().unwrap(),
    ]);
    assert!(!ok && text.contains("already exists"), "{text}");
    let (ok, text) = run(&["compact", "--data-dir", dir.path().to_str().unwrap()]);
    assert!(ok && text.starts_with("compacted:"), "{text}");
    let (ok, text) = check(dir.path());
    assert!(ok, "{text}");
    let restored = tempfile::tempdir().unwrap();
    let (ok, text) = run(&[
        "restore",
        "--from",
        file.to_str().unwrap(),
        "--data-dir",
        restored.path().to_str().unwrap(),
    ]);
    assert!(ok, "{text}");
    let s = Server::start_in(std::sync::Arc::new(restored), &[]);
    assert_eq!(
        s.get(&format!("/api/v1/projects/{p}")).expect(200)["total_tasks"],
        50
    );
}

#[test]
fn the_online_backup_needs_the_admin_role() {
    let s = Server::start_with(&[
        "--api-key",
        "ro:reader-secret-0123",
        "--api-key",
        "rw:writer-secret-0123",
        "--api-key",
        "root:admin:admin-secret-0123",
    ]);
    let backup = |key: &str| {
        let request = ureq::http::Request::builder()
            .method("POST")
            .uri(s.url("/api/v1/admin/backup"))
            .header("authorization", format!("Bearer {key}"))
            .body(Vec::new())
            .unwrap();
        s.send_request(request)
    };
    backup("reader-secret-0123").expect_error(403, "forbidden");
    // A read-write key holds every role but admin: no backups (the README's upgrade note).
    let e = backup("writer-secret-0123").expect_error(403, "forbidden");
    assert!(e.contains("admin"), "{e}");
    let made = backup("admin-secret-0123").expect(201);
    assert!(made["path"].as_str().unwrap().starts_with("backups/"));
}

#[test]
fn a_restore_onto_a_running_servers_directory_is_refused() {
    // The mistake: `restore --force` onto the directory a running server holds. Replaced under
    // it, the database would lose at the server's next start every write acknowledged after.
    let s = Server::start();
    let p = s.project("kept");
    let backup = s.backup().expect(201);
    let file = s
        .dir
        .path()
        .join(backup["path"].as_str().unwrap())
        .display()
        .to_string();
    let (ok, text) = run(&[
        "restore",
        "--from",
        &file,
        "--data-dir",
        s.dir.path().to_str().unwrap(),
        "--force",
    ]);
    assert!(
        !ok && text.contains("in use by a running flightdeck"),
        "{text}"
    );
    // Acknowledged after the refused restore, and still there after a restart.
    let t = s.task(&p, "coder");
    let dir = s.stop();
    let s = Server::start_in(dir, &[]);
    assert_eq!(
        s.get(&format!("/api/v1/tasks/{t}")).expect(200)["task_id"],
        t.as_str()
    );
    // Stopped, the same restore goes ahead: the task written after the backup is gone.
    let dir = s.stop();
    let (ok, text) = run(&[
        "restore",
        "--from",
        &file,
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--force",
    ]);
    assert!(ok, "{text}");
    let s = Server::start_in(dir, &[]);
    assert_eq!(s.get(&format!("/api/v1/tasks/{t}")).status, 404);
}

#[test]
fn online_backups_are_kept_to_their_count() {
    let s = Server::start_with(&["--backup-keep", "2"]);
    s.project("p");
    let files: Vec<String> = (0..3)
        .map(|_| s.backup().expect(201)["file"].as_str().unwrap().to_string())
        .collect();
    // A file of the operator's own in the directory is not the server's to remove.
    let dir = s.dir.path().join("backups");
    std::fs::write(dir.join("notes.txt"), "mine").unwrap();
    let mut left: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    let mut want = vec![files[1].clone(), files[2].clone(), "notes.txt".to_string()];
    want.sort();
    assert_eq!(left, want, "the newest two and the operator's file");
}
