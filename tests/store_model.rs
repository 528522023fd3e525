//! Model-based property test of the store: random sequences of creates, updates, transitions and
//! deletes go to the real store and to an in-memory model; after every step every query (by id, by
//! each index with pagination, summaries, agents, the event log) is compared and the consistency
//! check runs. Long-polling claims wait among the ops, and the writer must hand each the task its
//! claim would take, in the commit that made one claimable. Model-usage reports (priced or
//! reported, repeated, under a lost lease, past the models kept apart) are summed by the model
//! per task, project, agent type and model, and compared with the store's totals and sums.

use std::collections::BTreeMap;

use flightdeck::domain::{
    AgentStatus, AgentType, ArtifactType, HitlAction, HitlStatus, Id, TaskStatus, Vocabulary,
    task_transition,
};
use flightdeck::events::no_publisher;
use flightdeck::store::command::{self, BulkApproved, HitlAnswer};
use flightdeck::store::{
    ArtifactFilter, Durability, HitlFilter, Store, StoreConfig, StoreError, TaskFilter,
};
use proptest::prelude::*;

#[path = "support/claims.rs"]
mod claims;
use claims::next_claim;

#[derive(Debug, Clone)]
enum Op {
    CreateProject,
    CreateTask {
        project: usize,
        agent: usize,
        context: Vec<usize>,
    },
    SetTaskStatus {
        task: usize,
        status: usize,
    },
    CreateArtifact {
        project: usize,
        kind: usize,
        source: usize,
        content: u32,
    },
    UpdateArtifact {
        artifact: usize,
        content: u32,
    },
    DeleteArtifact {
        artifact: usize,
    },
    CreateHitl {
        project: usize,
        with_task: Option<usize>,
    },
    RespondHitl {
        hitl: usize,
        action: usize,
    },
    BulkApprove {
        hitls: Vec<usize>,
    },
    ResetAgent {
        agent: usize,
    },
    Claim {
        agent: usize,
    },
    /// A long-polling claim: it claims at once, or waits for the writer to hand it a task in the
    /// commit that makes one claimable.
    Wait {
        agent: usize,
    },
    /// A waiting claim whose client goes away.
    Leave {
        waiter: usize,
    },
    /// The next step of the pending → working → failed → pending cycle (or completion).
    Advance {
        task: usize,
    },
    /// A usage report: `report` picks one of four report ids (repeats count once), `model` one
    /// of four models (two are kept apart, `model-0` has a price), under the task's lease or a
    /// wrong one.
    ReportUsage {
        task: usize,
        report: usize,
        model: usize,
        right_lease: bool,
        input: u16,
        output: u16,
        cost: Option<u16>,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let ix = 0usize..64;
    prop_oneof![
        1 => Just(Op::CreateProject),
        3 => (ix.clone(), 0usize..6, prop::collection::vec(0usize..64, 0..3))
            .prop_map(|(project, agent, context)| Op::CreateTask { project, agent, context }),
        5 => (ix.clone(), 0usize..5).prop_map(|(task, status)| Op::SetTaskStatus { task, status }),
        3 => (ix.clone(), 0usize..11, 0usize..6, any::<u32>())
            .prop_map(|(project, kind, source, content)| Op::CreateArtifact { project, kind, source, content }),
        2 => (ix.clone(), any::<u32>()).prop_map(|(artifact, content)| Op::UpdateArtifact { artifact, content }),
        1 => ix.clone().prop_map(|artifact| Op::DeleteArtifact { artifact }),
        2 => (ix.clone(), prop::option::of(0usize..64))
            .prop_map(|(project, with_task)| Op::CreateHitl { project, with_task }),
        2 => (ix.clone(), 0usize..3).prop_map(|(hitl, action)| Op::RespondHitl { hitl, action }),
        1 => prop::collection::vec(0usize..64, 0..4).prop_map(|hitls| Op::BulkApprove { hitls }),
        1 => (0usize..AGENTS).prop_map(|agent| Op::ResetAgent { agent }),
        3 => (0usize..AGENTS).prop_map(|agent| Op::Claim { agent }),
        3 => (0usize..AGENTS).prop_map(|agent| Op::Wait { agent }),
        1 => (0usize..8).prop_map(|waiter| Op::Leave { waiter }),
        6 => (0usize..4).prop_map(|task| Op::Advance { task }),
        4 => (0usize..6, 0usize..4, 0usize..4, any::<bool>(), any::<u16>(), any::<u16>(), prop::option::of(any::<u16>()))
            .prop_map(|(task, report, model, right_lease, input, output, cost)| Op::ReportUsage {
                task, report, model, right_lease, input, output, cost }),
    ]
}

/// The agent types the ops name: BotArmy's six and two of a team's own.
const AGENTS: usize = 8;
/// The artifact types: BotArmy's eleven and one of a team's own.
const ARTIFACTS: usize = 12;

fn agent_type(i: usize) -> AgentType {
    match AgentType::KNOWN.get(i) {
        Some(a) => a.clone(),
        None => AgentType::parse(["researcher", "writer.v2"][i - AgentType::KNOWN.len()]).unwrap(),
    }
}

fn artifact_type(i: usize) -> ArtifactType {
    match ArtifactType::KNOWN.get(i) {
        Some(a) => a.clone(),
        None => ArtifactType::parse("research_notes").unwrap(),
    }
}

#[derive(Debug, Clone)]
struct MTask {
    project: Id,
    agent: AgentType,
    status: TaskStatus,
    failures: u32,
    /// The claim's lease id while it works under one.
    lease: Option<Id>,
}

#[derive(Debug, Clone)]
struct MArtifact {
    project: Id,
    kind: ArtifactType,
    source: AgentType,
    content: String,
    version: u32,
}

#[derive(Debug, Clone)]
struct MHitl {
    project: Id,
    status: HitlStatus,
}

#[derive(Default)]
struct Model {
    /// Every id ever created per kind, in creation order (deleted artifacts stay: they test 404s).
    project_ids: Vec<Id>,
    task_ids: Vec<Id>,
    artifact_ids: Vec<Id>,
    hitl_ids: Vec<Id>,
    tasks: BTreeMap<Id, MTask>,
    artifacts: BTreeMap<Id, MArtifact>,
    hitl: BTreeMap<Id, MHitl>,
    agents: BTreeMap<AgentType, (AgentStatus, u32)>,
    events: u64,
    /// Per agent type, the project its last claim was served from.
    turn: BTreeMap<AgentType, Id>,
    /// Waiting claims registered so far (their worker ids are numbered).
    waiters_seen: usize,
    /// Usage reports by (task, report id): the first of each.
    usage: BTreeMap<(Id, String), MUsage>,
    /// The models kept apart, in the order first reported (at most `MAX_MODELS`).
    models: Vec<String>,
}

/// A usage report as the model keeps it.
#[derive(Debug, Clone)]
struct MUsage {
    task: Id,
    project: Id,
    agent: AgentType,
    /// The model's label in the sums: its name, or `other`.
    label: String,
    tokens: [u64; 4],
    cost_nanos: u64,
}

/// Reports, tokens by kind and nano-dollars, summed.
type Sums = (u64, [u64; 4], u64);

/// The models the store keeps apart in the model test.
const MAX_MODELS: usize = 2;
/// `model-0`'s price, USD per million input and output tokens.
const PRICE: (f64, f64) = (2.0, 8.0);

/// A waiting claim: its agent type, its worker id and its place in the store's queue.
type Waiting<'s> = (AgentType, String, flightdeck::store::Ticket<'s>);

/// Mostly an existing id (newest ones likelier), sometimes one never created.
fn pick(ids: &[Id], i: usize) -> Id {
    if ids.is_empty() || i % 16 == 15 {
        Id([0xee; 16])
    } else {
        ids[ids.len() - 1 - (i % ids.len())]
    }
}

fn fail_kind(e: &StoreError) -> &'static str {
    use flightdeck::domain::DomainError::*;
    match e {
        StoreError::Domain(NotFound { .. }) => "not_found",
        StoreError::Domain(InvalidTransition { .. }) => "transition",
        StoreError::Domain(InvalidField { .. }) => "invalid",
        other => panic!("unexpected store failure: {other}"),
    }
}

impl Model {
    fn agent(&mut self, a: AgentType) -> &mut (AgentStatus, u32) {
        self.agents.entry(a).or_insert((AgentStatus::Idle, 0))
    }

    fn set_status(&mut self, store: &Store, id: Id, to: TaskStatus) {
        // The worker holding the claim finishes with its lease (the fencing itself is the timed
        // model's subject).
        let lease_id = self.tasks.get(&id).and_then(|t| t.lease);
        let reply = store.write_blocking(command::SetTaskStatus {
            task_id: id,
            status: to,
            output: Some("{\"ok\":true}".into()),
            error_message: None,
            lease_id,
        });
        let Some(mtask) = self.tasks.get(&id).cloned() else {
            assert_eq!(fail_kind(&reply.unwrap_err()), "not_found");
            return;
        };
        match (task_transition(mtask.status, to), reply) {
            (Ok(_), Ok(t)) => {
                assert_eq!(t.status, to);
                assert_eq!(
                    t.retry_at.is_some(),
                    to == TaskStatus::Failed && mtask.failures + 1 < 3
                );
                self.start_or_leave(store, id, mtask, to);
            }
            (Err(_), Err(e)) => assert_eq!(fail_kind(&e), "transition"),
            (want, got) => panic!(
                "{:?} -> {to:?}: model {want:?}, store {got:?}",
                mtask.status
            ),
        }
    }

    /// The model of a task status change: its event, the agent's, and the escalation after the
    /// third failure (agent in error, a HITL request).
    fn start_or_leave(&mut self, store: &Store, id: Id, mtask: MTask, to: TaskStatus) {
        self.events += 1;
        let agent = self.agent(mtask.agent.clone());
        if to == TaskStatus::Working {
            agent.1 += 1;
            agent.0 = AgentStatus::Working;
            self.events += 1;
        } else if mtask.status == TaskStatus::Working {
            agent.1 -= 1;
            if agent.1 == 0 && agent.0 == AgentStatus::Working {
                agent.0 = AgentStatus::Idle;
            }
            self.events += 1;
        }
        let m = self.tasks.get_mut(&id).unwrap();
        m.status = to;
        if to != TaskStatus::Working {
            m.lease = None;
        }
        if to == TaskStatus::Failed {
            m.failures += 1;
            if m.failures >= 3 {
                self.agent(mtask.agent).0 = AgentStatus::Error;
                self.events += 1;
                let known: Vec<Id> = self.hitl_ids.clone();
                let page = store
                    .hitl_by_status(HitlStatus::Pending, None, 1000)
                    .unwrap();
                let new: Vec<Id> = page
                    .items
                    .iter()
                    .map(|h| h.id)
                    .filter(|h| !known.contains(h))
                    .collect();
                assert_eq!(new.len(), 1, "one escalation request");
                let request = store.get_hitl(&new[0]).unwrap().unwrap();
                assert_eq!(request.task_id, Some(id));
                self.hitl_ids.push(new[0]);
                self.hitl.insert(
                    new[0],
                    MHitl {
                        project: mtask.project,
                        status: HitlStatus::Pending,
                    },
                );
            }
        }
    }

    /// The task the next claim of `agent` takes, with its project.
    fn next_claim(&self, agent: &AgentType) -> Option<(Id, Id)> {
        next_claim(
            self.tasks
                .iter()
                .filter(|(_, t)| t.agent == *agent && t.status == TaskStatus::Pending)
                .map(|(id, t)| (*id, t.project, 3)),
            self.turn.get(agent).copied(),
        )
    }

    /// Applies an op, with the waiting claims it may serve: a `Wait` claims at once when the model
    /// says there is a task, else it waits; after every op each waiting claim, oldest first, is
    /// handed the task its claim would take, as long as there is one.
    fn run<'s>(&mut self, store: &'s Store, op: &Op, waiters: &mut Vec<Waiting<'s>>) {
        match op {
            Op::Wait { agent } => {
                let agent_type = agent_type(*agent);
                let claims_now = self.next_claim(&agent_type).is_some();
                self.step(store, &Op::Claim { agent: *agent });
                if !claims_now {
                    let worker = format!("waiter-{}", self.waiters_seen);
                    self.waiters_seen += 1;
                    // A claim waiting for a type nothing named yet gives it an id (no event).
                    store
                        .write_blocking(command::InternAgentType {
                            name: agent_type.clone(),
                        })
                        .unwrap();
                    let id = store.agent_id(&agent_type).expect("interned");
                    let ticket = store.wait_for_task(id, worker.clone(), 60_000_000, None);
                    waiters.push((agent_type, worker, ticket));
                }
            }
            Op::Leave { waiter } if !waiters.is_empty() => {
                let i = waiter % waiters.len();
                waiters.remove(i);
            }
            other => self.step(store, other),
        }
        let mut i = 0;
        while i < waiters.len() {
            let (agent, worker, ticket) = &mut waiters[i];
            let (agent, worker) = (agent.clone(), worker.clone());
            let got = ticket.task.try_recv().ok();
            match (self.next_claim(&agent), got) {
                (Some((id, project)), Some(t)) => {
                    assert_eq!(t.id, id, "handed the task its claim would take");
                    assert_eq!(t.worker_id.as_deref(), Some(worker.as_str()));
                    assert_eq!(t.status, TaskStatus::Working);
                    self.turn.insert(agent, project);
                    let mtask = self.tasks[&id].clone();
                    self.start_or_leave(store, id, mtask, TaskStatus::Working);
                    self.tasks.get_mut(&id).unwrap().lease = t.lease_id;
                    waiters.remove(i);
                }
                (None, None) => i += 1,
                (want, got) => panic!("waiting claim {worker}: model {want:?}, store {got:?}"),
            }
        }
    }

    /// Applies an op to the store and the model; checks the outcome kinds agree.
    fn step(&mut self, store: &Store, op: &Op) {
        match op {
            Op::CreateProject => {
                let reply = store.write_blocking(command::CreateProject {
                    name: "p".into(),
                    description: None,
                });
                let Ok(p) = reply else { panic!("{reply:?}") };
                self.project_ids.push(p.id);
                self.events += 1;
            }
            Op::CreateTask {
                project,
                agent,
                context,
            } => {
                let project_id = pick(&self.project_ids, *project);
                let agent = agent_type(*agent);
                let context_ids: Vec<Id> = context
                    .iter()
                    .map(|c| pick(&self.artifact_ids, *c))
                    .collect();
                let reply = store.write_blocking(command::CreateTask {
                    project_id,
                    agent_type: agent.clone(),
                    instructions: "do".into(),
                    context_ids: context_ids.clone(),
                    priority: 3,
                });
                let exists = self.project_ids.contains(&project_id);
                let context_ok = context_ids.iter().all(|c| {
                    self.artifacts
                        .get(c)
                        .is_some_and(|a| a.project == project_id)
                });
                match reply {
                    Ok(t) => {
                        assert!(exists && context_ok);
                        self.task_ids.push(t.id);
                        self.tasks.insert(
                            t.id,
                            MTask {
                                project: project_id,
                                agent,
                                status: TaskStatus::Pending,
                                failures: 0,
                                lease: None,
                            },
                        );
                        self.events += 1;
                    }
                    Err(e) => {
                        let want = if !exists { "not_found" } else { "invalid" };
                        assert!(!(exists && context_ok), "refused: {e}");
                        assert_eq!(fail_kind(&e), want);
                    }
                }
            }
            Op::SetTaskStatus { task, status } => {
                let id = pick(&self.task_ids, *task);
                self.set_status(store, id, TaskStatus::ALL[*status]);
            }
            Op::Advance { task } => {
                let id = pick(&self.task_ids, *task);
                let next = match self.tasks.get(&id).map(|t| t.status) {
                    Some(TaskStatus::Pending) => TaskStatus::Working,
                    Some(TaskStatus::Working) => TaskStatus::Failed,
                    Some(TaskStatus::Failed) => TaskStatus::Pending,
                    _ => TaskStatus::Completed,
                };
                self.set_status(store, id, next);
            }
            Op::ReportUsage {
                task,
                report,
                model,
                right_lease,
                input,
                output,
                cost,
            } => {
                let id = pick(&self.task_ids, *task);
                let report_id = format!("r{report}");
                let model = format!("model-{model}");
                let held = self.tasks.get(&id).and_then(|t| t.lease);
                let lease = if *right_lease {
                    held
                } else {
                    Some(Id([0x11; 16]))
                };
                let tokens = flightdeck::domain::usage::Tokens {
                    input: u64::from(*input),
                    output: u64::from(*output),
                    ..Default::default()
                };
                let sent = flightdeck::domain::usage::UsageReport::new(
                    "",
                    report_id.clone(),
                    model.clone(),
                    None,
                    tokens,
                    cost.map(|c| f64::from(c) / 100.0),
                )
                .unwrap();
                let reply = store.write_blocking(command::ReportUsage {
                    task_id: id,
                    lease_id: lease,
                    worker_id: None,
                    reports: vec![sent],
                    hold: true,
                });
                let Some(t) = self.tasks.get(&id).cloned() else {
                    assert_eq!(fail_kind(&reply.unwrap_err()), "not_found");
                    return;
                };
                let done = reply.unwrap();
                let got = &done.recorded[0];
                if let Some(first) = self.usage.get(&(id, report_id.clone())) {
                    assert!(got.repeated);
                    assert_eq!(got.model_label, first.label);
                    assert_eq!(got.entry.tokens.array(), first.tokens);
                    assert_eq!(got.entry.cost_nanos, first.cost_nanos);
                    return;
                }
                assert!(!got.repeated);
                let holds = t.status == TaskStatus::Working
                    && match (t.lease, lease) {
                        (Some(a), Some(b)) => a == b,
                        (None, None) => true,
                        _ => false,
                    };
                assert_eq!(got.entry.lease_lost, !holds, "{t:?} {lease:?}");
                if !self.models.contains(&model) && self.models.len() < MAX_MODELS {
                    self.models.push(model.clone());
                }
                let label = if self.models.contains(&model) {
                    model.clone()
                } else {
                    "other".to_string()
                };
                let (cost_nanos, source) = match cost {
                    Some(c) => ((f64::from(*c) / 100.0 * 1e9).round() as u64, "reported"),
                    None if model == "model-0" => {
                        let dollars = f64::from(*input) * PRICE.0 / 1e6
                            + f64::from(*output) * PRICE.1 / 1e6
                            + 0.0
                            + 0.0;
                        ((dollars * 1e9).round() as u64, "priced")
                    }
                    None => (0, "unpriced"),
                };
                assert_eq!(got.entry.cost_source.as_str(), source);
                assert_eq!(got.entry.cost_nanos, cost_nanos);
                assert_eq!(got.model_label, label);
                self.usage.insert(
                    (id, report_id),
                    MUsage {
                        task: id,
                        project: t.project,
                        agent: t.agent.clone(),
                        label,
                        tokens: tokens.array(),
                        cost_nanos,
                    },
                );
            }
            // Waiting claims come and go in `run`, which holds their tickets.
            Op::Wait { .. } | Op::Leave { .. } => {}
            Op::Claim { agent } => {
                let agent = agent_type(*agent);
                let reply = store.write_blocking(command::Claim {
                    agent_type: agent.clone(),
                    worker_id: "w".into(),
                    lease: 60_000_000,
                    claimer: None,
                });
                let next = self.next_claim(&agent);
                if let Some((_, project)) = next {
                    self.turn.insert(agent, project);
                }
                let next = next.map(|(id, _)| (id, self.tasks[&id].clone()));
                match (next, reply) {
                    (Some((id, mtask)), Ok(Some(t))) => {
                        assert_eq!(t.id, id, "the projects' turn, then the oldest");
                        assert_eq!(t.worker_id.as_deref(), Some("w"));
                        self.start_or_leave(store, id, mtask, TaskStatus::Working);
                        self.tasks.get_mut(&id).unwrap().lease = t.lease_id;
                    }
                    (None, Ok(None)) => {}
                    (want, got) => panic!("claim: model {want:?}, store {got:?}"),
                }
            }
            Op::CreateArtifact {
                project,
                kind,
                source,
                content,
            } => {
                let project_id = pick(&self.project_ids, *project);
                let (kind, source) = (artifact_type(*kind), agent_type(*source));
                let content = format!("{{\"n\":{content}}}");
                let reply = store.write_blocking(command::CreateArtifact {
                    project_id,
                    source_agent: source.clone(),
                    artifact_type: kind.clone(),
                    content: content.clone(),
                    metadata: None,
                });
                match reply {
                    Ok(a) => {
                        assert!(self.project_ids.contains(&project_id));
                        self.artifact_ids.push(a.id);
                        self.artifacts.insert(
                            a.id,
                            MArtifact {
                                project: project_id,
                                kind,
                                source,
                                content,
                                version: 1,
                            },
                        );
                        self.events += 1;
                    }
                    Err(e) => {
                        assert!(!self.project_ids.contains(&project_id));
                        assert_eq!(fail_kind(&e), "not_found");
                    }
                }
            }
            Op::UpdateArtifact { artifact, content } => {
                let id = pick(&self.artifact_ids, *artifact);
                // Read first so the cache holds the old version; the update must invalidate it.
                let _ = store.artifact_response(&id, |a| a.content.clone().into_bytes());
                let content = format!("[{content}]");
                let reply = store.write_blocking(command::UpdateArtifact {
                    artifact_id: id,
                    content: Some(content.clone()),
                    metadata: None,
                });
                match (self.artifacts.get_mut(&id), reply) {
                    (Some(m), Ok(a)) => {
                        m.content = content;
                        m.version += 1;
                        assert_eq!(a.version, m.version);
                        self.events += 1;
                    }
                    (None, Err(e)) => assert_eq!(fail_kind(&e), "not_found"),
                    (m, got) => panic!("model {m:?}, store {got:?}"),
                }
            }
            Op::DeleteArtifact { artifact } => {
                let id = pick(&self.artifact_ids, *artifact);
                let _ = store.artifact_response(&id, |a| a.content.clone().into_bytes());
                let reply = store.write_blocking(command::DeleteArtifact { artifact_id: id });
                match (self.artifacts.remove(&id), reply) {
                    (Some(_), Ok(got)) => {
                        assert_eq!(got, id);
                        self.events += 1;
                    }
                    (None, Err(e)) => assert_eq!(fail_kind(&e), "not_found"),
                    (m, got) => panic!("model {m:?}, store {got:?}"),
                }
            }
            Op::CreateHitl { project, with_task } => {
                let project_id = pick(&self.project_ids, *project);
                let task_id = with_task.map(|t| pick(&self.task_ids, t));
                let reply = store.write_blocking(command::CreateHitl {
                    project_id,
                    task_id,
                    question: "ok?".into(),
                    options: vec!["yes".into()],
                    expires_in_seconds: None,
                    assignees: vec![],
                    on_timeout: None,
                });
                let exists = self.project_ids.contains(&project_id);
                let task_ok = task_id
                    .is_none_or(|t| self.tasks.get(&t).is_some_and(|m| m.project == project_id));
                match reply {
                    Ok(h) => {
                        assert!(exists && task_ok);
                        self.hitl_ids.push(h.id);
                        self.hitl.insert(
                            h.id,
                            MHitl {
                                project: project_id,
                                status: HitlStatus::Pending,
                            },
                        );
                        self.events += 1;
                    }
                    Err(e) => {
                        assert!(!(exists && task_ok));
                        assert_eq!(fail_kind(&e), if exists { "invalid" } else { "not_found" });
                    }
                }
            }
            Op::RespondHitl { hitl, action } => {
                let id = pick(&self.hitl_ids, *hitl);
                let action = HitlAction::ALL[*action];
                // Answered with a key's name, or without keys.
                let by = (hitl % 2 == 0).then(|| format!("reviewer-{hitl}"));
                let reply = store.write_blocking(command::RespondHitl {
                    hitl_id: id,
                    action,
                    content: Some("\"amended\"".into()),
                    comment: None,
                    by: by.clone(),
                });
                match (self.hitl.get_mut(&id), reply) {
                    (
                        Some(m),
                        Ok(HitlAnswer::Answered {
                            request: h,
                            workflow_resumed,
                        }),
                    ) => {
                        assert_eq!(m.status, HitlStatus::Pending);
                        // The model runs no workflows: no answer resumes one.
                        assert!(!workflow_resumed);
                        assert_eq!(h.responded_by, by);
                        assert_eq!(h.history.last().unwrap().user_id, by);
                        let stored = store.get_hitl(&id).unwrap().unwrap();
                        assert_eq!(stored.responded_by, by, "stored with the answer");
                        m.status = h.status;
                        self.events += 1;
                    }
                    (Some(m), Err(e)) => {
                        assert_ne!(m.status, HitlStatus::Pending);
                        assert_eq!(fail_kind(&e), "transition");
                    }
                    (None, Err(e)) => assert_eq!(fail_kind(&e), "not_found"),
                    (m, got) => panic!("model {m:?}, store {got:?}"),
                }
            }
            Op::BulkApprove { hitls } => {
                let ids: Vec<Id> = hitls.iter().map(|h| pick(&self.hitl_ids, *h)).collect();
                let reply = store.write_blocking(command::BulkApproveHitl {
                    hitl_ids: ids.clone(),
                    comment: None,
                    by: Some("bulk".into()),
                });
                let Ok(BulkApproved { approved, skipped }) = reply else {
                    panic!("{reply:?}")
                };
                assert!(
                    approved
                        .iter()
                        .all(|h| h.responded_by.as_deref() == Some("bulk"))
                );
                let mut want_approved = Vec::new();
                for id in &ids {
                    if let Some(m) = self.hitl.get_mut(id)
                        && m.status == HitlStatus::Pending
                    {
                        m.status = HitlStatus::Approved;
                        want_approved.push(*id);
                        self.events += 1;
                    }
                }
                assert_eq!(
                    approved.iter().map(|h| h.id).collect::<Vec<_>>(),
                    want_approved
                );
                assert_eq!(approved.len() + skipped.len(), ids.len());
            }
            Op::ResetAgent { agent } => {
                let agent = agent_type(*agent);
                let reply = store.write_blocking(command::ResetAgent {
                    agent_type: agent.clone(),
                });
                let Ok(a) = reply else { panic!("{reply:?}") };
                assert_eq!(a.status, AgentStatus::Idle);
                self.agent(agent).0 = AgentStatus::Idle;
                self.events += 1;
            }
        }
    }

    /// Compares every query the store answers with the model.
    fn compare(&self, store: &Store) {
        self.compare_usage(store);
        assert_eq!(store.latest_seq(), self.events);
        let (log, more) = store.events(None, 0, 100_000).unwrap();
        assert!(!more);
        assert_eq!(
            log.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
            (1..=self.events).collect::<Vec<_>>()
        );

        for project in &self.project_ids {
            let summary = store.summary(project).expect("summary of every project");
            let tasks: Vec<(&Id, &MTask)> = self
                .tasks
                .iter()
                .filter(|(_, t)| t.project == *project)
                .collect();
            for status in TaskStatus::ALL {
                let want = tasks.iter().filter(|(_, t)| t.status == *status).count() as u64;
                assert_eq!(summary.count(*status), want, "{status} count");
            }
            let artifacts: Vec<(&Id, &MArtifact)> = self
                .artifacts
                .iter()
                .filter(|(_, a)| a.project == *project)
                .collect();
            assert_eq!(summary.artifacts, artifacts.len() as u64);
            let pending = self
                .hitl
                .values()
                .filter(|h| h.project == *project && h.status == HitlStatus::Pending)
                .count();
            assert_eq!(summary.hitl_pending, pending as u64);
            let (project_log, _) = store.events(Some(project), 0, 100_000).unwrap();
            assert_eq!(
                summary.latest_seq,
                project_log.last().map(|e| e.0).unwrap_or(0)
            );

            // The cached status view must follow every change to the project's tasks: the same
            // tasks, oldest first, each with its current status.
            let status = store.project_status(project).unwrap().expect("status");
            let status: serde_json::Value = serde_json::from_slice(&status).unwrap();
            let got: Vec<(String, String)> = status["tasks"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| {
                    (
                        t["task_id"].as_str().unwrap().to_string(),
                        t["status"].as_str().unwrap().to_string(),
                    )
                })
                .collect();
            let want: Vec<(String, String)> = tasks
                .iter()
                .map(|(id, t)| (id.to_string(), t.status.as_str().to_string()))
                .collect();
            assert_eq!(got, want, "the cached status is stale");
            assert_eq!(status["project_id"], project.to_string());

            let mut filters = vec![TaskFilter::default()];
            filters.extend(TaskStatus::ALL.iter().map(|s| TaskFilter {
                status: Some(*s),
                agent_type: None,
            }));
            filters.extend((0..AGENTS).map(|a| TaskFilter {
                status: None,
                agent_type: Some(agent_type(a)),
            }));
            filters.push(TaskFilter {
                status: Some(TaskStatus::Pending),
                agent_type: Some(AgentType::CODER),
            });
            for filter in filters {
                let want: Vec<Id> = tasks
                    .iter()
                    .filter(|(_, t)| filter.status.is_none_or(|s| t.status == s))
                    .filter(|(_, t)| filter.agent_type.as_ref().is_none_or(|a| t.agent == *a))
                    .map(|(id, _)| **id)
                    .collect();
                let got = all_pages(|cursor| {
                    let page = store
                        .project_tasks(project, filter.clone(), cursor, 3)
                        .unwrap();
                    (page.items.iter().map(|t| t.id).collect(), page.next_cursor)
                });
                assert_eq!(got, want, "tasks {filter:?}");
            }

            let mut filters = vec![ArtifactFilter::default()];
            filters.extend((0..ARTIFACTS).map(|k| ArtifactFilter {
                artifact_type: Some(artifact_type(k)),
                source_agent: None,
                summaries: false,
            }));
            filters.extend((0..AGENTS).map(|a| ArtifactFilter {
                artifact_type: None,
                source_agent: Some(agent_type(a)),
                summaries: true,
            }));
            for filter in filters {
                let want: Vec<Id> = artifacts
                    .iter()
                    .filter(|(_, a)| filter.artifact_type.as_ref().is_none_or(|k| a.kind == *k))
                    .filter(|(_, a)| filter.source_agent.as_ref().is_none_or(|s| a.source == *s))
                    .map(|(id, _)| **id)
                    .collect();
                let got = all_pages(|cursor| {
                    let page = store
                        .project_artifacts(project, filter.clone(), cursor, 2)
                        .unwrap();
                    (page.items.iter().map(|a| a.id).collect(), page.next_cursor)
                });
                assert_eq!(got, want, "artifacts {filter:?}");
            }

            for status in std::iter::once(None).chain(HitlStatus::ALL.iter().map(|s| Some(*s))) {
                // Newest first, as BotArmy lists them.
                let want: Vec<Id> = self
                    .hitl
                    .iter()
                    .rev()
                    .filter(|(_, h)| h.project == *project && status.is_none_or(|s| h.status == s))
                    .map(|(id, _)| *id)
                    .collect();
                let got = all_pages(|cursor| {
                    let page = store
                        .project_hitl(project, HitlFilter { status }, cursor, 2)
                        .unwrap();
                    (page.items.iter().map(|h| h.id).collect(), page.next_cursor)
                });
                assert_eq!(got, want, "hitl {status:?}");
            }
        }

        let pending: Vec<Id> = self
            .hitl
            .iter()
            .rev()
            .filter(|(_, h)| h.status == HitlStatus::Pending)
            .map(|(id, _)| *id)
            .collect();
        let got = all_pages(|cursor| {
            let page = store
                .hitl_by_status(HitlStatus::Pending, cursor, 4)
                .unwrap();
            (page.items.iter().map(|h| h.id).collect(), page.next_cursor)
        });
        assert_eq!(got, pending);

        for id in &self.task_ids {
            let task = store.get_task(id).unwrap().expect("task");
            let m = &self.tasks[id];
            assert_eq!(
                (task.project_id, task.agent_type, task.status),
                (m.project, m.agent.clone(), m.status)
            );
        }
        for id in &self.artifact_ids {
            let stored = store.get_artifact(id).unwrap();
            let cached = store
                .artifact_response(id, |a| a.content.clone().into_bytes())
                .unwrap();
            match self.artifacts.get(id) {
                Some(m) => {
                    let a = stored.expect("artifact");
                    assert_eq!(
                        (a.project_id, a.artifact_type, a.source_agent),
                        (m.project, m.kind.clone(), m.source.clone())
                    );
                    assert_eq!(
                        (a.content.as_str(), a.version),
                        (m.content.as_str(), m.version)
                    );
                    assert_eq!(
                        cached.as_deref(),
                        Some(m.content.as_bytes()),
                        "the cache is stale"
                    );
                }
                None => {
                    assert!(stored.is_none());
                    assert!(cached.is_none());
                }
            }
        }
        for id in &self.hitl_ids {
            assert_eq!(
                store.get_hitl(id).unwrap().expect("hitl").status,
                self.hitl[id].status
            );
        }
        let listed: Vec<AgentType> = store
            .agents()
            .unwrap()
            .iter()
            .map(|a| a.agent_type.clone())
            .collect();
        assert_eq!(&listed[..AgentType::KNOWN.len()], AgentType::KNOWN);
        for used in self
            .tasks
            .values()
            .map(|t| &t.agent)
            .chain(self.artifacts.values().map(|a| &a.source))
        {
            assert!(listed.contains(used), "{used} in use, not listed");
        }
        for agent in store.agents().unwrap() {
            let (status, working) = self
                .agents
                .get(&agent.agent_type)
                .copied()
                .unwrap_or((AgentStatus::Idle, 0));
            assert_eq!(
                (agent.status, agent.working_tasks),
                (status, working),
                "{}",
                agent.agent_type
            );
        }
        let report = store.check().unwrap();
        assert!(report.is_consistent(), "{:?}", report.problems);
    }
}

fn all_pages(mut page: impl FnMut(Option<&str>) -> (Vec<Id>, Option<String>)) -> Vec<Id> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let (ids, next) = page(cursor.as_deref());
        out.extend(ids);
        match next {
            Some(n) => cursor = Some(n),
            None => return out,
        }
    }
}

impl Model {
    /// Every scope's totals, and the sums by model, against the reports the model kept.
    fn compare_usage(&self, store: &Store) {
        use flightdeck::domain::usage::UsageTotals;
        use flightdeck::store::{GroupBy, GroupKey, UsageQuery, UsageScope};
        let sum = |keep: &dyn Fn(&MUsage) -> bool| {
            let mut t = (0u64, [0u64; 4], 0u64);
            for u in self.usage.values().filter(|u| keep(u)) {
                t.0 += 1;
                for (a, b) in t.1.iter_mut().zip(u.tokens) {
                    *a += b;
                }
                t.2 += u.cost_nanos;
            }
            t
        };
        let seen = |t: UsageTotals| (t.reports, t.tokens.array(), t.cost_nanos);
        for task in &self.task_ids {
            let want = sum(&|u| u.task == *task);
            assert_eq!(
                seen(store.usage_totals(UsageScope::Task(*task)).unwrap()),
                want
            );
        }
        for project in &self.project_ids {
            let want = sum(&|u| u.project == *project);
            assert_eq!(
                seen(store.usage_totals(UsageScope::Project(*project)).unwrap()),
                want
            );
        }
        for i in 0..AGENTS {
            let agent = agent_type(i);
            let want = sum(&|u| u.agent == agent);
            assert_eq!(
                seen(store.usage_totals(UsageScope::Agent(&agent)).unwrap()),
                want
            );
        }
        assert_eq!(
            seen(store.usage_totals(UsageScope::All).unwrap()),
            sum(&|_| true)
        );
        let sums = store
            .usage_sums(&UsageQuery {
                project: None,
                agent_type: None,
                model: None,
                from_hour: 0,
                to_hour: u32::MAX,
                group_by: Some(GroupBy::Model),
            })
            .unwrap()
            .unwrap();
        let mut labels: Vec<&str> = self.usage.values().map(|u| u.label.as_str()).collect();
        labels.sort_unstable();
        labels.dedup();
        let got: Vec<(String, Sums)> = sums
            .groups
            .iter()
            .map(|(k, t)| match k {
                GroupKey::Model(m) => (m.clone(), seen(*t)),
                other => panic!("{other:?}"),
            })
            .collect();
        let want: Vec<(String, Sums)> = labels
            .iter()
            .map(|l| (l.to_string(), sum(&|u| u.label == *l)))
            .collect();
        assert_eq!(got, want);
        assert_eq!(seen(sums.totals), sum(&|_| true));
    }
}

fn open(dir: &std::path::Path) -> Store {
    let mut config = StoreConfig::new(dir);
    config.max_models = MAX_MODELS;
    config.prices = vec![
        flightdeck::domain::usage::Price {
            model: "model-0".into(),
            input_per_million: PRICE.0,
            output_per_million: PRICE.1,
            ..Default::default()
        }
        .check("prices[0]")
        .unwrap(),
    ];
    config.durability = Durability::None;
    config.cache_bytes = 8 * 1024;
    Store::open(&config, no_publisher()).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn store_matches_the_model(ops in prop::collection::vec(op(), 1..60)) {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let mut model = Model::default();
        let mut waiters = Vec::new();
        model.step(&store, &Op::CreateProject);
        for op in &ops {
            model.run(&store, op, &mut waiters);
            model.compare(&store);
        }
        drop(waiters);
        prop_assert!(model.events >= 1);
        // Reopening rebuilds the summaries from the indexes: they must match what the writer kept.
        store.close();
        drop(store);
        let store = open(dir.path());
        model.compare(&store);
        store.close();
    }
}
