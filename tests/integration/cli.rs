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
