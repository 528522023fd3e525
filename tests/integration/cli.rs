use std::process::Command;

use crate::common::{BIN, a_file, check};

#[test]
fn help_documents_every_flag() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--listen",
        "--data-dir",
        "--config",
        "--durability",
        "--log-format",
        "--max-body-bytes",
        "FLIGHTDECK_LISTEN",
        "FLIGHTDECK_DATA_DIR",
    ] {
        assert!(text.contains(flag), "{flag} missing from --help:\n{text}");
    }
    let out = Command::new(BIN)
        .args(["serve", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("--durability"));
}

#[test]
fn bad_flags_exit_non_zero_with_one_line() {
    for args in [
        vec!["--no-such-flag"],
        vec!["--durability", "sometimes"],
        vec!["--listen", "not-an-address"],
    ] {
        let out = Command::new(BIN).args(&args).output().unwrap();
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("flightdeck: "), "{err}");
    }
}

#[test]
fn an_unusable_data_directory_exits_non_zero_with_one_line() {
    let (_keep, file) = a_file();
    let out = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&file)
        .env("FLIGHTDECK_LOG", "off")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("data directory"), "{err}");
}

#[test]
fn a_bad_config_file_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.toml");
    std::fs::write(&file, "durability = \"maybe\"\n").unwrap();
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("c.toml"), "{err}");
}

#[test]
fn check_refuses_a_missing_database() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, text) = check(dir.path());
    assert!(!ok);
    assert!(text.contains("no database"), "{text}");
}

#[test]
fn a_database_of_a_newer_schema_is_refused_with_a_clear_error() {
    let s = crate::common::Server::start();
    s.project("p");
    let dir = s.stop();
    {
        // Written behind the server's back, as a newer flightdeck would have left it.
        let db = redb::Database::open(dir.path().join("flightdeck.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut meta = txn
                .open_table(redb::TableDefinition::<&str, u64>::new("meta"))
                .unwrap();
            meta.insert("schema_version", 99).unwrap();
        }
        txn.commit().unwrap();
    }
    let out = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env("FLIGHTDECK_LOG", "off")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("schema version 99"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let (ok, text) = check(dir.path());
    assert!(!ok);
    assert!(text.contains("schema version 99"), "{text}");
}

/// A UUID's 16 bytes, from its text.
fn uuid_bytes(id: &str) -> [u8; 16] {
    let hex: String = id.chars().filter(|c| *c != '-').collect();
    let mut out = [0u8; 16];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap();
    }
    out
}

#[test]
fn check_finds_a_missing_and_a_stray_entry_in_the_project_indexes() {
    use redb::{ReadableTable, ReadableTableMetadata};
    let s = crate::common::Server::start();
    let project = s.project("checked");
    let artifact = s.artifact(
        &project,
        "source_code",
        "coder",
        serde_json::json!({"a": 1}),
    );
    let task = s.task(&project, "coder");
    let dir = s.stop();
    let (ok, text) = check(dir.path());
    assert!(ok, "{text}");
    {
        let db = redb::Database::open(dir.path().join("flightdeck.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let def = redb::TableDefinition::<&[u8; 35], ()>::new("ix_artifacts");
            let mut artifacts = txn.open_table(def).unwrap();
            let entries: Vec<[u8; 35]> = artifacts
                .iter()
                .unwrap()
                .map(|e| *e.unwrap().0.value())
                .collect();
            // Its three entries: every artifact, by type, by source, under its project.
            assert_eq!(entries.len(), 3, "{entries:?}");
            let by_type = entries.iter().find(|k| k[16] == 1).unwrap();
            assert_eq!(by_type[..16], uuid_bytes(&project));
            assert_eq!(by_type[19..], uuid_bytes(&artifact));
            artifacts.remove(by_type).unwrap();
            let def = redb::TableDefinition::<&[u8; 35], ()>::new("ix_tasks");
            let mut tasks = txn.open_table(def).unwrap();
            assert_eq!(tasks.len().unwrap(), 3);
            let mut stray = [0u8; 35];
            stray[..16].copy_from_slice(&uuid_bytes(&project));
            stray[16] = 1; // by status
            stray[19..].copy_from_slice(&[0x42; 16]);
            tasks.insert(&stray, ()).unwrap();
        }
        txn.commit().unwrap();
    }
    let (ok, text) = check(dir.path());
    assert!(!ok, "{text}");
    // Each problem names the table (with its key type) and the record.
    let line = |table: &str, what: String| {
        text.lines()
            .any(|l| l.starts_with(&format!("problem: {table}<")) && l.ends_with(&what))
    };
    assert!(
        line(
            "ix_artifacts",
            format!("missing entry for record {artifact}")
        ),
        "{text}"
    );
    let stray = "entry for record 42424242-4242-4242-4242-424242424242 matches no record";
    assert!(line("ix_tasks", stray.into()), "{text}");
    assert!(text.contains("2 problems found"), "{text}");
    assert!(
        !text.contains(&task),
        "the task's own entries are intact: {text}"
    );
}
