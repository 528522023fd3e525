//! Store benchmark: get by id, a page of 100 by (project, artifact type), and a durable commit,
//! each against a bare-redb baseline doing the same work on the same kind of data in the same
//! process. Percentiles, not averages; the ratio is flightdeck / baseline.
//!
//! `cargo bench --bench store` (FLIGHTDECK_BENCH_ARTIFACTS sets the artifact count, default 200000).

use std::time::{Duration, Instant};

use flightdeck::domain::{AgentType, ArtifactType, Id};
use flightdeck::events::no_publisher;
use flightdeck::store::{ArtifactFilter, Durability, Store, StoreConfig, command};
use redb::{ReadableDatabase, TableDefinition};

const PROJECTS: usize = 10;
const SAMPLES: usize = 5_000;
const COMMITS: usize = 300;

const RAW: TableDefinition<&[u8; 16], &[u8]> = TableDefinition::new("raw");
const RAW_INDEX: TableDefinition<&[u8; 33], ()> = TableDefinition::new("raw_index");

fn main() {
    let count: usize = std::env::var("FLIGHTDECK_BENCH_ARTIFACTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let content = format!("{{\"text\":\"{}\"}}", "x".repeat(1000));
    println!(
        "# store benchmark: {count} artifacts of ~1 KiB in {PROJECTS} projects, {SAMPLES} samples"
    );

    let dir = tempfile::tempdir().unwrap();
    let mut config = StoreConfig::new(dir.path());
    config.durability = Durability::None;
    let store = Store::open(&config, no_publisher()).unwrap();
    let projects: Vec<Id> = (0..PROJECTS)
        .map(|i| {
            store
                .write_blocking(command::CreateProject {
                    name: format!("p{i}"),
                    description: None,
                })
                .unwrap()
                .id
        })
        .collect();
    let started = Instant::now();
    let ids: Vec<Id> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|t| {
                let (store, projects, content) = (&store, &projects, &content);
                scope.spawn(move || {
                    (t..count)
                        .step_by(8)
                        .map(|i| {
                            let command = command::CreateArtifact {
                                project_id: projects[i % PROJECTS],
                                source_agent: AgentType::KNOWN[i % 6].clone(),
                                artifact_type: ArtifactType::KNOWN[i % 11].clone(),
                                content: content.clone(),
                                metadata: None,
                            };
                            store.write_blocking(command).unwrap().id
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    println!(
        "loaded through the writer in {:.1} s (non-durable group commits)",
        started.elapsed().as_secs_f64()
    );

    // The baseline: the same records and one composite index, written with bare redb.
    let raw_dir = tempfile::tempdir().unwrap();
    let raw = redb::Database::create(raw_dir.path().join("raw.redb")).unwrap();
    {
        let txn = raw.begin_write().unwrap();
        {
            let mut table = txn.open_table(RAW).unwrap();
            let mut index = txn.open_table(RAW_INDEX).unwrap();
            for (i, id) in ids.iter().enumerate() {
                table.insert(id.as_bytes(), content.as_bytes()).unwrap();
                index
                    .insert(&index_key(&projects[i % PROJECTS], (i % 11) as u8, id), ())
                    .unwrap();
            }
        }
        txn.commit().unwrap();
    }

    let pick = |i: usize| ids[(i.wrapping_mul(2_654_435_761)) % ids.len()];
    let ours = sample(SAMPLES, |i| {
        store.get_artifact(&pick(i)).unwrap().unwrap();
    });
    let base = sample(SAMPLES, |i| {
        let txn = raw.begin_read().unwrap();
        let table = txn.open_table(RAW).unwrap();
        table.get(pick(i).as_bytes()).unwrap().unwrap();
    });
    report("get artifact by id (decoded record)", &ours, &base);

    let hot: Vec<Id> = (0..100).map(pick).collect();
    for id in &hot {
        store
            .artifact_response(id, |a| a.content.clone().into_bytes())
            .unwrap();
    }
    let cached = sample(SAMPLES, |i| {
        store
            .artifact_response(&hot[i % hot.len()], |a| a.content.clone().into_bytes())
            .unwrap()
            .unwrap();
    });
    report("get artifact response, cache hit", &cached, &base);

    let ours = sample(SAMPLES / 5, |i| {
        let filter = ArtifactFilter {
            artifact_type: Some(ArtifactType::KNOWN[i % 11].clone()),
            source_agent: None,
            summaries: false,
        };
        let page = store
            .project_artifacts(&projects[i % PROJECTS], filter, None, 100)
            .unwrap();
        assert_eq!(page.items.len(), 100);
    });
    let base = sample(SAMPLES / 5, |i| {
        let txn = raw.begin_read().unwrap();
        let index = txn.open_table(RAW_INDEX).unwrap();
        let table = txn.open_table(RAW).unwrap();
        let lo = index_key(&projects[i % PROJECTS], (i % 11) as u8, &Id([0; 16]));
        let hi = index_key(&projects[i % PROJECTS], (i % 11) as u8, &Id([0xff; 16]));
        let mut n = 0;
        for entry in index.range::<&[u8; 33]>(&lo..=&hi).unwrap().take(100) {
            let (key, _) = entry.unwrap();
            let mut id = [0u8; 16];
            id.copy_from_slice(&key.value()[17..]);
            let value = table.get(&id).unwrap().unwrap();
            let _: serde_json::Value = serde_json::from_slice(value.value()).unwrap();
            n += 1;
        }
        assert_eq!(n, 100);
    });
    report("list 100 by (project, artifact type)", &ours, &base);
    store.close();
    drop(store);

    // Durable commits: one write at a time, fsync before the answer.
    let mut config = StoreConfig::new(dir.path());
    config.durability = Durability::Immediate;
    let store = Store::open(&config, no_publisher()).unwrap();
    let ours = sample(COMMITS, |i| {
        let command = command::CreateTask {
            project_id: projects[i % PROJECTS],
            agent_type: AgentType::CODER,
            instructions: "benchmark".into(),
            context_ids: Vec::new(),
            priority: 3,
        };
        store.write_blocking(command).unwrap();
    });
    let base = sample(COMMITS, |i| {
        let txn = raw.begin_write().unwrap();
        {
            let mut table = txn.open_table(RAW).unwrap();
            let id = Id::new_v7();
            table.insert(id.as_bytes(), content.as_bytes()).unwrap();
            let mut index = txn.open_table(RAW_INDEX).unwrap();
            index
                .insert(&index_key(&projects[i % PROJECTS], 0, &id), ())
                .unwrap();
        }
        txn.commit().unwrap();
    });
    report(
        "durable commit of one task (record, 3 indexes, event)",
        &ours,
        &base,
    );
    store.close();
}

fn index_key(project: &Id, code: u8, id: &Id) -> [u8; 33] {
    let mut k = [0u8; 33];
    k[..16].copy_from_slice(&project.0);
    k[16] = code;
    k[17..].copy_from_slice(&id.0);
    k
}

fn sample(n: usize, mut f: impl FnMut(usize)) -> Vec<Duration> {
    for i in 0..n / 10 {
        f(i); // warm-up
    }
    let mut out: Vec<Duration> = (0..n)
        .map(|i| {
            let start = Instant::now();
            f(i);
            start.elapsed()
        })
        .collect();
    out.sort_unstable();
    out
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

fn report(name: &str, ours: &[Duration], base: &[Duration]) {
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "| {name} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.2}x |",
        us(pct(ours, 0.5)),
        us(pct(ours, 0.99)),
        us(*ours.last().unwrap()),
        us(pct(base, 0.5)),
        us(pct(base, 0.99)),
        us(pct(ours, 0.99)) / us(pct(base, 0.99)),
    );
}
