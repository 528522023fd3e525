//! The write-ahead log where a SIGKILL cannot reach: torn tails at every byte of the last record,
//! flipped bits, failing syncs of the log and of a checkpoint, periodic syncs across a crash of the
//! process and a power cut, segments reused, replays that agree, and a log written by an earlier
//! build replayed by this one. The stores run on a machine whose disks keep only what was synced
//! (`support/power.rs`).

use std::io::ErrorKind;
use std::time::Duration;

use flightdeck::domain::Id;
use flightdeck::events::no_publisher;
use flightdeck::store::command;
use flightdeck::store::{Durability, Store, StoreConfig, StoreError};

#[path = "support/power.rs"]
mod power;
use power::Machine;

/// The layout of a segment, as ARCHITECTURE.md describes it.
const HEADER_LEN: usize = 64;
const FRAME_HEAD: usize = 16;

/// A store on `machine` that checkpoints only when a test asks it to (never, by default).
fn config(machine: &Machine, dir: &std::path::Path) -> StoreConfig {
    let mut config = machine.store_config(dir);
    config.checkpoint_bytes = 1 << 30;
    config.checkpoint_age = Duration::from_secs(3600);
    config
}

fn open(machine: &Machine, dir: &std::path::Path) -> Result<Store, StoreError> {
    Store::open(&config(machine, dir), no_publisher())
}

fn project(store: &Store, name: &str) -> Result<Id, StoreError> {
    store
        .write_blocking(command::CreateProject {
            name: name.into(),
            description: None,
        })
        .map(|p| p.id)
}

fn names(store: &Store) -> Vec<String> {
    let mut names: Vec<String> = store
        .list_projects(None, 1000)
        .unwrap()
        .items
        .into_iter()
        .map(|p| p.name)
        .collect();
    names.sort();
    names
}

/// Everything a reader sees: the projects and the event log, as text.
fn dump(store: &Store) -> (Vec<String>, Vec<(u64, String)>) {
    let (events, _) = store.events(None, 0, 1_000_000).unwrap();
    (names(store), events)
}

/// The store is whole: its event log has no gap and `check` passes.
fn assert_whole(store: &Store) {
    let latest = store.latest_seq();
    let (events, _) = store.events(None, 0, 1_000_000).unwrap();
    let seqs: Vec<u64> = events.iter().map(|(s, _)| *s).collect();
    assert_eq!(
        seqs,
        (1..=latest).collect::<Vec<_>>(),
        "the event log has a gap"
    );
    let report = store.check().unwrap();
    assert!(report.is_consistent(), "{:?}", report.problems);
}

/// A machine whose power was cut after a store made the projects `names`, every one acknowledged
/// and in the log, none checkpointed.
fn crashed_after(names: &[&str]) -> (Machine, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let machine = Machine::new();
    let store = open(&machine, dir.path()).unwrap();
    for name in names {
        project(&store, name).unwrap();
    }
    machine.power.cut_now();
    store.close();
    (machine.restarted(), dir)
}

/// The segment holding records (the newest), and each record's start and end in it.
fn records(machine: &Machine) -> (String, Vec<u8>, Vec<(usize, usize)>) {
    let names: Vec<String> = machine.log.files.lock().unwrap().keys().cloned().collect();
    let mut best: Option<(u64, String, Vec<u8>)> = None;
    for name in names {
        let bytes = machine.log.synced(&name);
        if bytes.len() < HEADER_LEN || &bytes[0..5] != b"FDWAL" {
            continue;
        }
        let seq = u64::from_le_bytes(bytes[24..32].try_into().unwrap());
        if best.as_ref().is_none_or(|(s, _, _)| seq > *s) {
            best = Some((seq, name, bytes));
        }
    }
    let (_, name, bytes) = best.expect("a segment");
    let mut spans = Vec::new();
    let mut pos = HEADER_LEN;
    loop {
        let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
        if len == 0 {
            break;
        }
        spans.push((pos, pos + FRAME_HEAD + len));
        pos += FRAME_HEAD + len;
    }
    (name, bytes, spans)
}

#[test]
fn a_torn_last_record_is_cut_off_at_every_byte() {
    let (machine, dir) = crashed_after(&["a", "b", "c"]);
    let (segment, bytes, spans) = records(&machine);
    assert!(spans.len() >= 3, "{spans:?}");
    let (start, end) = *spans.last().unwrap();
    for cut in start..end {
        // The record reached the disk up to `cut`; the rest of it never did (zeros, as written
        // ahead).
        let mut torn = bytes.clone();
        torn[cut..end].fill(0);
        let image = machine.restarted();
        image.log.replace(&segment, torn);
        let store = open(&image, dir.path()).unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
        if bytes[cut..end].iter().all(|&b| b == 0) {
            // What did not reach the disk was zeros already: the record is whole.
            assert_eq!(names(&store), ["a", "b", "c"], "cut at {cut}");
            store.close();
            continue;
        }
        assert_eq!(names(&store), ["a", "b"], "cut at {cut}");
        if cut == start + 1 || cut + 1 == end {
            assert_whole(&store);
            // It goes on: a new write lands, and survives the next power cut.
            project(&store, "after").unwrap();
            image.power.cut_now();
            store.close();
            let again = open(&image.restarted(), dir.path()).unwrap();
            assert_eq!(names(&again), ["a", "after", "b"], "cut at {cut}");
            assert_whole(&again);
            again.close();
        } else {
            store.close();
        }
    }
}

#[test]
fn a_flipped_bit_in_the_last_record_loses_it_and_in_an_earlier_one_refuses_to_start() {
    let (machine, dir) = crashed_after(&["a", "b", "c"]);
    let (segment, bytes, spans) = records(&machine);
    let flip = |at: usize| {
        let mut bad = bytes.clone();
        bad[at] ^= 0x10;
        let image = machine.restarted();
        image.log.replace(&segment, bad);
        image
    };
    // In the last record: a torn tail, cut off.
    let (start, end) = *spans.last().unwrap();
    for at in [start + 2, start + 9, (start + end) / 2, end - 1] {
        let store = open(&flip(at), dir.path()).unwrap();
        assert_eq!(names(&store), ["a", "b"], "bit at {at}");
        assert_whole(&store);
        store.close();
    }
    // In the one before: good records follow a bad one. The store refuses to start and says
    // where; so does `flightdeck check` on the same files, and it changes nothing.
    let (start, end) = spans[spans.len() - 2];
    for at in [start + 1, (start + end) / 2] {
        let image = flip(at);
        let error = open(&image, dir.path()).err().expect("refused");
        let message = error.to_string();
        assert!(matches!(error, StoreError::Corrupt(_)), "{message}");
        assert!(message.contains(&format!("segment {segment}")), "{message}");
        assert!(message.contains("corrupt"), "{message}");
        let files = tempfile::tempdir().unwrap();
        image.write_out(files.path(), false);
        let report = flightdeck::store::check_database(files.path()).unwrap();
        assert!(!report.is_consistent());
        assert!(
            report
                .problems
                .iter()
                .any(|p| p.contains("write-ahead log")),
            "{:?}",
            report.problems
        );
        let refused = Store::open(&StoreConfig::new(files.path()), no_publisher());
        assert!(matches!(refused, Err(StoreError::Corrupt(_))));
    }
}

#[test]
fn a_failed_sync_of_the_log_stops_the_store_for_good() {
    for kind in [ErrorKind::Other, ErrorKind::StorageFull] {
        let dir = tempfile::tempdir().unwrap();
        let machine = Machine::new();
        let store = open(&machine, dir.path()).unwrap();
        project(&store, "kept").unwrap();
        machine.log.sync_faults.lock().unwrap().push(kind);
        let failed = project(&store, "failed").unwrap_err();
        assert!(matches!(failed, StoreError::Unavailable(_)), "{failed:?}");
        assert!(store.failure().unwrap().contains("write-ahead log"));
        assert!(!store.writer_alive());
        // Never retried: nothing more is taken, though the next sync would succeed.
        assert!(project(&store, "later").is_err());
        machine.power.cut_now();
        store.close();
        let store = open(&machine.restarted(), dir.path()).unwrap();
        assert_eq!(names(&store), ["kept"], "{kind:?}");
        assert_whole(&store);
        store.close();
    }
}

#[test]
fn a_failed_periodic_sync_stops_the_store_and_nothing_syncs_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let machine = Machine::new();
    let mut config = config(&machine, dir.path());
    config.durability = Durability::Periodic;
    config.sync_interval = Duration::from_millis(10);
    let store = Store::open(&config, no_publisher()).unwrap();
    project(&store, "synced").unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !machine.log.all_synced() {
        assert!(std::time::Instant::now() < deadline, "never synced");
        std::thread::sleep(Duration::from_millis(5));
    }
    machine
        .log
        .sync_faults
        .lock()
        .unwrap()
        .push(ErrorKind::Other);
    // Acknowledged once written; its sync, on the thread, fails.
    project(&store, "written").unwrap();
    while store.failure().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "the failed sync went unnoticed"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(store.failure().unwrap().contains("write-ahead log"));
    assert!(project(&store, "refused").is_err());
    // Closing syncs nothing more: what the failed sync left unsynced stays so.
    store.close();
    assert!(!machine.log.all_synced());
    machine.power.cut_now();
    let store = open(&machine.restarted(), dir.path()).unwrap();
    assert_eq!(names(&store), ["synced"]);
    assert_whole(&store);
    store.close();
}

#[test]
fn a_failed_checkpoint_loses_nothing_and_the_store_goes_on() {
    for kind in [ErrorKind::Other, ErrorKind::StorageFull] {
        let dir = tempfile::tempdir().unwrap();
        let machine = Machine::new();
        let mut config = config(&machine, dir.path());
        config.checkpoint_idle = Duration::from_millis(20);
        let store = Store::open(&config, no_publisher()).unwrap();
        project(&store, "a").unwrap();
        machine.disk.sync_faults.lock().unwrap().push(kind);
        project(&store, "b").unwrap();
        // The idle writer checkpoints, and the database's sync fails.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !machine.disk.sync_faults.lock().unwrap().is_empty() {
            assert!(std::time::Instant::now() < deadline, "no checkpoint ran");
            std::thread::sleep(Duration::from_millis(5));
        }
        // The next write reopens the database and replays the log into it.
        let c = (0..1000)
            .find_map(|_| project(&store, "c").ok())
            .expect("writes go on");
        assert!(store.get_project(&c).unwrap().is_some());
        assert_eq!(names(&store), ["a", "b", "c"], "{kind:?}");
        machine.power.cut_now();
        store.close();
        let store = open(&machine.restarted(), dir.path()).unwrap();
        assert_eq!(names(&store), ["a", "b", "c"], "{kind:?}");
        assert_whole(&store);
        store.close();
    }
}

#[test]
fn periodic_syncs_survive_a_crash_of_the_process_and_lose_at_most_an_interval_to_a_power_cut() {
    let dir = tempfile::tempdir().unwrap();
    let periodic = |machine: &Machine, interval: Duration| {
        let mut config = config(machine, dir.path());
        config.durability = Durability::Periodic;
        config.sync_interval = interval;
        Store::open(&config, no_publisher()).unwrap()
    };
    // An interval longer than the test: nothing after the start is synced.
    let machine = Machine::new();
    let store = periodic(&machine, Duration::from_secs(3600));
    for name in ["a", "b", "c"] {
        project(&store, name).unwrap();
    }
    machine.power.cut_now();
    store.close();
    // The process crashed, the kernel kept its writes: nothing is lost.
    let crashed = machine.after_process_crash();
    let store = open(&crashed, dir.path()).unwrap();
    assert_eq!(names(&store), ["a", "b", "c"]);
    assert_whole(&store);
    store.close();
    // The power was cut: the unsynced interval is lost, and the store is whole.
    let store = open(&machine.restarted(), dir.path()).unwrap();
    assert_eq!(names(&store), Vec::<String>::new());
    assert_whole(&store);
    store.close();

    // A short interval: once it has passed, a power cut loses nothing.
    let machine = Machine::new();
    let store = periodic(&machine, Duration::from_millis(10));
    for name in ["d", "e"] {
        project(&store, name).unwrap();
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !machine.log.all_synced() {
        assert!(std::time::Instant::now() < deadline, "never synced");
        std::thread::sleep(Duration::from_millis(5));
    }
    machine.power.cut_now();
    store.close();
    let store = open(&machine.restarted(), dir.path()).unwrap();
    assert_eq!(names(&store), ["d", "e"]);
    assert_whole(&store);
    store.close();
}

#[test]
fn segments_are_reused_after_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let machine = Machine::new();
    let mut config = config(&machine, dir.path());
    config.checkpoint_bytes = 96 * 1024;
    let store = Store::open(&config, no_publisher()).unwrap();
    let p = project(&store, "p").unwrap();
    let mut kept = Vec::new();
    let mut most_segments = 0;
    for i in 0..300 {
        let content = format!("{{\"n\":{i},\"text\":\"{}\"}}", "x".repeat(2000));
        let a = store
            .write_blocking(command::CreateArtifact {
                project_id: p,
                source_agent: flightdeck::domain::AgentType::parse("coder").unwrap(),
                artifact_type: flightdeck::domain::ArtifactType::parse("code").unwrap(),
                content: content.clone(),
                metadata: None,
            })
            .unwrap();
        kept.push((a.id, content));
        most_segments = most_segments.max(machine.log.files.lock().unwrap().len());
    }
    // About 600 KiB logged in 64 KiB segments, checkpointed every 96 KiB: a few segments, reused.
    assert!(most_segments <= 4, "{most_segments} segments");
    machine.power.cut_now();
    store.close();
    let store = open(&machine.restarted(), dir.path()).unwrap();
    for (id, content) in &kept {
        assert_eq!(store.get_artifact(id).unwrap().unwrap().content, *content);
    }
    assert_whole(&store);
    store.close();
}

#[test]
fn usage_and_budgets_come_back_from_the_log() {
    use flightdeck::domain::budget::{BudgetScope, Window};
    use flightdeck::domain::usage::{Tokens, UsageReport};
    use flightdeck::store::UsageScope;
    let dir = tempfile::tempdir().unwrap();
    let machine = Machine::new();
    let store = open(&machine, dir.path()).unwrap();
    let p = project(&store, "p").unwrap();
    store
        .write_blocking(command::PutBudget {
            scope: BudgetScope::Global,
            max_cost_nanos: None,
            max_tokens: Some(1_000_000),
            // Not a day: the test must not depend on when it runs.
            window: Window::Total,
            warn_percent: 80,
        })
        .unwrap();
    let coder = flightdeck::domain::AgentType::parse("coder").unwrap();
    let task = store
        .write_blocking(command::CreateTask {
            project_id: p,
            agent_type: coder.clone(),
            instructions: "spend".into(),
            context_ids: Vec::new(),
            priority: 3,
        })
        .unwrap();
    let claimed = store
        .write_blocking(command::Claim {
            agent_type: coder.clone(),
            worker_id: "w".into(),
            lease: 3_600_000_000,
            claimer: None,
        })
        .unwrap()
        .unwrap();
    for (id, model) in [("r1", "model-a"), ("r2", "model-b")] {
        store
            .write_blocking(command::ReportUsage {
                task_id: task.id,
                lease_id: claimed.lease_id,
                worker_id: Some("w".into()),
                reports: vec![UsageReport {
                    report_id: id.into(),
                    model: model.into(),
                    provider: None,
                    tokens: Tokens {
                        input: 1000,
                        output: 500,
                        cache_read: 0,
                        cache_write: 0,
                    },
                    cost_nanos: Some(2_000_000),
                }],
                hold: true,
            })
            .unwrap();
    }
    let totals = store.usage_totals(UsageScope::Task(task.id)).unwrap();
    let budgets = store.budgets().unwrap();
    machine.power.cut_now();
    store.close();
    // Every usage table and the budget's count came back from the log alone.
    let store = open(&machine.restarted(), dir.path()).unwrap();
    assert_eq!(totals.reports, 2);
    assert_eq!(
        store.usage_totals(UsageScope::Task(task.id)).unwrap(),
        totals
    );
    assert_eq!(store.usage_totals(UsageScope::Project(p)).unwrap(), totals);
    assert_eq!(
        store.usage_totals(UsageScope::Agent(&coder)).unwrap(),
        totals
    );
    assert_eq!(store.budgets().unwrap(), budgets);
    assert_eq!(budgets[0].used.tokens.input, 2000);
    assert_whole(&store);
    store.close();
}

#[test]
fn replaying_the_same_log_twice_gives_the_same_state() {
    let (machine, dir) = crashed_after(&["a", "b", "c", "d"]);
    let first = open(&machine.restarted(), dir.path()).unwrap();
    let second = open(&machine.restarted(), dir.path()).unwrap();
    let seen = dump(&first);
    assert_eq!(seen.0, ["a", "b", "c", "d"]);
    assert_eq!(seen, dump(&second));
    // And over a database that already holds the replay (its log redundant): the same again.
    let replayed = first.clone();
    let image = {
        let image = machine.restarted();
        let store = open(&image, dir.path()).unwrap();
        store.close();
        image.restarted()
    };
    let third = open(&image, dir.path()).unwrap();
    assert_eq!(seen, dump(&third));
    for store in [replayed, second, third] {
        store.close();
    }
}

#[test]
fn backup_and_compaction_replay_the_log_and_restore_leaves_the_old_log_behind() {
    let (machine, _dir) = crashed_after(&["a", "b"]);
    let data = tempfile::tempdir().unwrap();
    machine.write_out(data.path(), false);
    let pending = flightdeck::store::check_database(data.path()).unwrap();
    assert_eq!(pending.log_pending, 2);
    // The backup holds what only the log held.
    let backup = tempfile::tempdir().unwrap();
    let file = backup.path().join("backup.redb");
    flightdeck::store::backup_database(data.path(), &file).unwrap();
    let restored = tempfile::tempdir().unwrap();
    flightdeck::store::restore_database(&file, restored.path(), false).unwrap();
    let store = Store::open(&StoreConfig::new(restored.path()), no_publisher()).unwrap();
    assert_eq!(names(&store), ["a", "b"]);
    store.close();
    drop(store);
    // Compaction after a crash keeps it too.
    let (machine, _dir) = crashed_after(&["c"]);
    let crashed = tempfile::tempdir().unwrap();
    machine.write_out(crashed.path(), false);
    flightdeck::store::compact_database(crashed.path()).unwrap();
    let report = flightdeck::store::check_database(crashed.path()).unwrap();
    assert!(report.is_consistent(), "{:?}", report.problems);
    assert_eq!(report.log_pending, 0);
    let store = Store::open(&StoreConfig::new(crashed.path()), no_publisher()).unwrap();
    assert_eq!(names(&store), ["c"]);
    store.close();
    drop(store);
    // Restored over a crashed one, the backup comes without the replaced database's log: its
    // third record, past the backup's own last, is not replayed into it.
    let (machine, _dir) = crashed_after(&["c", "d", "e"]);
    machine.write_out(crashed.path(), false);
    flightdeck::store::restore_database(&file, crashed.path(), true).unwrap();
    assert!(!crashed.path().join("wal").exists());
    let store = Store::open(&StoreConfig::new(crashed.path()), no_publisher()).unwrap();
    assert_eq!(names(&store), ["a", "b"]);
    assert_whole(&store);
    store.close();
}

/// The fixture of `a_log_written_by_an_earlier_build_is_replayed`: a data directory whose log
/// holds records its database does not. Written by this build with
/// `cargo test --test wal -- --ignored write_the_log_fixture`, and kept: later builds must
/// replay it.
#[test]
#[ignore]
fn write_the_log_fixture() {
    let dir = tempfile::tempdir().unwrap();
    let machine = Machine::new();
    let store = open(&machine, dir.path()).unwrap();
    for name in ["written before the crash 1", "written before the crash 2"] {
        project(&store, name).unwrap();
    }
    let p = project(&store, "with a task").unwrap();
    store
        .write_blocking(command::CreateTask {
            project_id: p,
            agent_type: flightdeck::domain::AgentType::parse("coder").unwrap(),
            instructions: "replayed from the log".into(),
            context_ids: Vec::new(),
            priority: 3,
        })
        .unwrap();
    machine.power.cut_now();
    store.close();
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/wal-v1");
    let _ = std::fs::remove_dir_all(&out);
    machine.restarted().write_out(&out, true);
}

#[test]
fn a_log_written_by_an_earlier_build_is_replayed() {
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/wal-v1");
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("wal")).unwrap();
    for entry in walk(&fixture) {
        let to = dir.path().join(entry.strip_prefix(&fixture).unwrap());
        std::fs::copy(&entry, to).unwrap();
    }
    // The database alone does not hold them: `check` counts them as the log's, to replay.
    let report = flightdeck::store::check_database(dir.path()).unwrap();
    assert!(report.is_consistent(), "{:?}", report.problems);
    assert_eq!(report.log_pending, 4);
    let store = Store::open(&StoreConfig::new(dir.path()), no_publisher()).unwrap();
    assert_eq!(
        names(&store),
        [
            "with a task",
            "written before the crash 1",
            "written before the crash 2"
        ]
    );
    let p = store
        .list_projects(None, 10)
        .unwrap()
        .items
        .into_iter()
        .find(|p| p.name == "with a task")
        .unwrap();
    let tasks = store
        .project_tasks(&p.id, flightdeck::store::TaskFilter::default(), None, 10)
        .unwrap()
        .items;
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0].instructions, "replayed from the log");
    assert_whole(&store);
    store.close();
    drop(store);
    // Replayed and checkpointed: nothing left to replay.
    let report = flightdeck::store::check_database(dir.path()).unwrap();
    assert!(report.is_consistent(), "{:?}", report.problems);
    assert_eq!(report.log_pending, 0);
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}
