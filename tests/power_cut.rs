//! Power cuts: what a SIGKILL cannot show. A killed process's writes survive in the kernel's page
//! cache, so a missing sync passes every crash test; here the store runs on a storage layer that
//! keeps only what was synced when its "power" is cut. Random workloads are cut at a random write
//! of the storage, cut again at a random write while the store opens on what the disk kept, and
//! then every acknowledged write is there as it was acknowledged, the write the cut interrupted is
//! there whole or not at all, the event log has no gap and `check` passes.

use std::collections::BTreeMap;

use flightdeck::domain::{AgentType, ArtifactType, Id, TaskStatus};
use flightdeck::events::no_publisher;
use flightdeck::store::command;
use flightdeck::store::{Store, StoreConfig, StoreError};
use proptest::prelude::*;

#[path = "support/power.rs"]
mod power;
use power::Machine;

#[derive(Clone, Debug)]
enum Op {
    Project,
    Task { project: usize, agent: usize },
    Claim { agent: usize },
    Complete { task: usize },
    Artifact { project: usize, size: usize },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => Just(Op::Project),
        4 => (0usize..8, 0usize..2).prop_map(|(project, agent)| Op::Task { project, agent }),
        3 => (0usize..2).prop_map(|agent| Op::Claim { agent }),
        3 => (0usize..16).prop_map(|task| Op::Complete { task }),
        2 => (0usize..8, 0usize..6000).prop_map(|(project, size)| Op::Artifact { project, size }),
    ]
}

const AGENTS: [&str; 2] = ["coder", "tester"];

/// What was acknowledged: the records as their writes answered them.
#[derive(Default)]
struct Acked {
    projects: Vec<Id>,
    tasks: Vec<Id>,
    /// Each task's status and lease as last acknowledged.
    task_state: BTreeMap<Id, (TaskStatus, Option<Id>)>,
    artifacts: BTreeMap<Id, String>,
}

fn pick(ids: &[Id], i: usize) -> Option<Id> {
    (!ids.is_empty()).then(|| ids[i % ids.len()])
}

/// The store on `machine`. Segments are small (64 KiB), so that the workloads fill and reuse
/// some, and checkpoints run when forced by the log's size, at random points of the workload.
fn config(machine: &Machine, dir: &std::path::Path) -> StoreConfig {
    let mut config = machine.store_config(dir);
    config.checkpoint_bytes = 96 * 1024;
    config
}

/// The write an op makes, run: `Ok(None)` when refused (nothing written), `Err` when the storage
/// failed. Acknowledged results go into `acked`; the interrupted one is returned for the check.
fn run(store: &Store, acked: &mut Acked, op: &Op) -> Result<(), Interrupted> {
    let lost = |e: StoreError, what| match e {
        StoreError::Domain(_) => Ok(()),
        _ => Err(what),
    };
    match *op {
        Op::Project => {
            let name = format!("p{}", acked.projects.len());
            match store.write_blocking(command::CreateProject {
                name: name.clone(),
                description: None,
            }) {
                Ok(p) => acked.projects.push(p.id),
                Err(e) => return lost(e, Interrupted::Project(name)),
            }
        }
        Op::Task { project, agent } => {
            let Some(project_id) = pick(&acked.projects, project) else {
                return Ok(());
            };
            let instructions = format!("t{}", acked.tasks.len());
            match store.write_blocking(command::CreateTask {
                project_id,
                agent_type: AgentType::parse(AGENTS[agent]).unwrap(),
                instructions: instructions.clone(),
                context_ids: Vec::new(),
                priority: 3,
            }) {
                Ok(t) => {
                    acked.tasks.push(t.id);
                    acked.task_state.insert(t.id, (t.status, None));
                }
                Err(e) => return lost(e, Interrupted::Task(project_id, instructions)),
            }
        }
        Op::Claim { agent } => match store.write_blocking(command::Claim {
            agent_type: AgentType::parse(AGENTS[agent]).unwrap(),
            worker_id: "w".into(),
            lease: 3_600_000_000,
            claimer: None,
        }) {
            Ok(Some(t)) => {
                acked.task_state.insert(t.id, (t.status, t.lease_id));
            }
            Ok(None) => {}
            Err(e) => return lost(e, Interrupted::Claim(AGENTS[agent])),
        },
        Op::Complete { task } => {
            let Some(id) = pick(&acked.tasks, task) else {
                return Ok(());
            };
            let (status, lease) = acked.task_state[&id];
            if status != TaskStatus::Working {
                return Ok(());
            }
            match store.write_blocking(command::SetTaskStatus {
                task_id: id,
                status: TaskStatus::Completed,
                output: Some("{\"ok\":true}".into()),
                error_message: None,
                lease_id: lease,
            }) {
                Ok(t) => {
                    acked.task_state.insert(id, (t.status, None));
                }
                Err(e) => return lost(e, Interrupted::Complete(id)),
            }
        }
        Op::Artifact { project, size } => {
            let Some(project_id) = pick(&acked.projects, project) else {
                return Ok(());
            };
            let content = format!("{{\"text\":\"{}\"}}", "x".repeat(size));
            match store.write_blocking(command::CreateArtifact {
                project_id,
                source_agent: AgentType::parse("coder").unwrap(),
                artifact_type: ArtifactType::parse("code").unwrap(),
                content: content.clone(),
                metadata: None,
            }) {
                Ok(a) => {
                    acked.artifacts.insert(a.id, content);
                }
                Err(e) => return lost(e, Interrupted::Other),
            }
        }
    }
    Ok(())
}

/// The write the cut interrupted, as far as it can be found again.
#[derive(Debug)]
enum Interrupted {
    Project(String),
    Task(Id, String),
    /// A claim by this agent type: whole, it turned one pending task of the type to working.
    Claim(&'static str),
    /// The completion of this task.
    Complete(Id),
    Other,
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn every_acknowledged_write_survives_a_power_cut(
        ops in prop::collection::vec(op(), 1..50),
        cut in 0usize..400,
        recovery_cut in 0usize..80,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let machine = Machine::new();
        let store = Store::open(&config(&machine, dir.path()), no_publisher()).unwrap();
        machine.power.cut_after(cut);
        let mut acked = Acked::default();
        let mut interrupted = None;
        for op in &ops {
            if let Err(what) = run(&store, &mut acked, op) {
                interrupted = Some(what);
                break;
            }
        }
        prop_assert!(interrupted.is_none() || machine.power.dead(), "a write failed with power on");
        machine.power.cut_now();
        store.close();
        drop(store);

        // The power goes again while the store opens on what the disks kept (replaying the log,
        // checkpointing, reusing a segment; and, opened, it starts its writer), then comes back
        // for good.
        let recovering = machine.restarted();
        recovering.power.cut_after(recovery_cut);
        if let Ok(store) = Store::open(&config(&recovering, dir.path()), no_publisher()) {
            store.close();
        }
        recovering.power.cut_now();
        let after = recovering.restarted();
        let store = Store::open(&config(&after, dir.path()), no_publisher()).unwrap();
        for id in &acked.projects {
            prop_assert!(store.get_project(id).unwrap().is_some(), "project {id} lost");
        }
        // Each task as acknowledged, but for the one the interrupted write changed, if it
        // landed whole: the task it completed, or one pending task of its agent type claimed.
        let mut claimed = 0;
        for (id, (status, _)) in &acked.task_state {
            let task = store.get_task(id).unwrap();
            prop_assert!(task.is_some(), "task {id} lost");
            let task = task.unwrap();
            let landed = match interrupted {
                Some(Interrupted::Complete(done)) => {
                    done == *id && task.status == TaskStatus::Completed
                }
                Some(Interrupted::Claim(agent)) => {
                    *status == TaskStatus::Pending
                        && task.status == TaskStatus::Working
                        && task.agent_type.as_str() == agent
                        && task.lease_id.is_some()
                }
                _ => false,
            };
            if landed {
                claimed += 1;
            } else {
                prop_assert_eq!(task.status, *status, "task {}", id);
            }
        }
        prop_assert!(claimed <= 1, "{claimed} tasks changed by one interrupted write");
        for (id, content) in &acked.artifacts {
            let artifact = store.get_artifact(id).unwrap();
            prop_assert_eq!(artifact.map(|a| a.content), Some(content.clone()), "artifact {}", id);
        }
        // The write the cut interrupted is there whole or not at all.
        match interrupted {
            Some(Interrupted::Project(name)) => {
                let projects = store.list_projects(None, 1000).unwrap().items;
                let found: Vec<_> = projects.iter().filter(|p| p.name == name).collect();
                prop_assert!(found.len() <= 1);
            }
            Some(Interrupted::Task(project, instructions)) => {
                let tasks = store
                    .project_tasks(&project, flightdeck::store::TaskFilter::default(), None, 1000)
                    .unwrap()
                    .items;
                for t in tasks.iter().filter(|t| t.instructions == instructions) {
                    prop_assert_eq!(t.status, TaskStatus::Pending);
                    prop_assert!(!acked.task_state.contains_key(&t.id));
                }
            }
            Some(Interrupted::Claim(_) | Interrupted::Complete(_) | Interrupted::Other) | None => {}
        }
        let latest = store.latest_seq();
        let (log, _) = store.events(None, 0, 1_000_000).unwrap();
        let seqs: Vec<u64> = log.iter().map(|(s, _)| *s).collect();
        prop_assert_eq!(seqs, (1..=latest).collect::<Vec<_>>(), "the event log has a gap");
        let report = store.check().unwrap();
        prop_assert!(report.is_consistent(), "{:?}", report.problems);
        store.close();
    }
}
