//! Model-based property test of everything in the store that time drives, under an injected clock:
//! claims and their leases, heartbeats (only the holder's), work timeouts, failures with their
//! doubling retry backoff and the escalation after the last attempt, HITL expiry (by the timer,
//! and when an answer comes too late, and timeouts that reject, approve or escalate, then expire),
//! workflows (the linear `sdlc` and a diamond of parallel phases defined through the API, one of
//! them a fan-out over its parent's output: phases started when their dependencies are done,
//! fan-outs of one task per element, empty or failing the run when the list is missing or too
//! long, gates approved, rejected, amended or timed out, completion, a run failed by a task that
//! failed for good, by a cancelled task or by a gate nobody answered, a run cancelled, each
//! cancelling its open tasks and expiring its gates), trimming the event log, and a daily
//! budget over everything: usage reports count against it in their UTC day, an exhausted one
//! holds claims and sends the working task that reports or heartbeats back to pending (asking a
//! human in its project), and a new day, a raise or a removal lifts it. Random operations
//! go to the real store and to a model written from the documented rules; after every step each
//! task, request, workflow and agent is compared, the event log must be gap-free up to the latest
//! seq, and the consistency check runs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use flightdeck::domain::records::{HitlTimeout, PhaseStatus, RunStatus, TimeoutAction};
use flightdeck::domain::{
    AgentStatus, AgentType, DomainError, HitlAction, HitlStatus, Id, OversightLevel, TaskSettings,
    TaskStatus, Vocabulary,
};
use flightdeck::events::no_publisher;
use flightdeck::store::command::{self, HitlAnswer};
use flightdeck::store::{Clock, Durability, Store, StoreConfig, StoreError};
use proptest::prelude::*;

#[path = "support/claims.rs"]
mod claims;
use claims::next_claim;

const SECOND: i64 = 1_000_000;
const TIMEOUT: i64 = 10 * SECOND;
const BACKOFF: i64 = SECOND;
const MAX_ATTEMPTS: u32 = 3;
/// Kept small so that the model's runs reach them: each write trims the log and the agent
/// history as it appends.
const EVENT_RETENTION: u64 = 60;
const HISTORY_RETENTION: u64 = 5;
/// The phases the built-in workflow gates at the medium level.
const MEDIUM_GATES: [bool; 5] = [false, true, false, true, false];
/// A diamond defined through the API: `a`, then `b` (one task per element of `a`'s output's
/// `items`) and `c` at the same time (`c` gated at the medium level), then `d` when both are
/// done; the gates of `b`, `c` and `d` time out to approve, escalate and reject. Its agent types are some of the defaults, so that
/// the claims of this test serve its tasks too.
const DIAMOND: &str = r#"{"phases": [
    {"id": "a", "agent_type": "orchestrator", "instructions": "plan", "depends_on": []},
    {"id": "b", "agent_type": "analyst", "instructions": "study {item}", "depends_on": ["a"],
     "for_each": "a.output.items", "gate_timeout_seconds": 2, "gate_on_timeout": "approve"},
    {"id": "c", "agent_type": "coder", "instructions": "build", "depends_on": ["a"], "gate": true,
     "gate_timeout_seconds": 3, "gate_on_timeout": "escalate", "gate_escalate_to": ["lead"]},
    {"id": "d", "agent_type": "tester", "instructions": "join", "depends_on": ["b", "c"],
     "gate_timeout_seconds": 4, "gate_on_timeout": "reject"}
]}"#;
/// The diamond's gate timeouts (a gate has one only when the oversight level gates the phase).
const DIAMOND_TIMEOUTS: [Option<(u64, TimeoutAction)>; 4] = [
    None,
    Some((2, TimeoutAction::Approve)),
    Some((3, TimeoutAction::Escalate)),
    Some((4, TimeoutAction::Reject)),
];
const DIAMOND_DEPS: [&[usize]; 4] = [&[], &[0], &[0], &[1, 2]];
/// `--max-fan-out` of this test: a list of 3 fails its run.
const MAX_FAN_OUT: usize = 2;
#[derive(Debug, Clone)]
enum Op {
    CreateTask {
        agent: usize,
        priority: u8,
        /// 0: the timed project; otherwise one of the workflow projects (if any).
        project: usize,
    },
    Claim {
        agent: usize,
        lease_ms: i64,
        worker: usize,
    },
    Heartbeat {
        task: usize,
        worker: usize,
        lease_ms: i64,
        fence: usize,
    },
    /// `fence`: 0 the task's current lease (what its worker holds), 1 none, 2 a stale one.
    /// `output` (from `Work` only): a list of that many elements under `items`, or with 4 an
    /// output without one.
    Set {
        task: usize,
        status: usize,
        fence: usize,
        output: Option<usize>,
    },
    Advance {
        ms: i64,
    },
    /// `timeout`: seconds and what it does (0 reject, 1 approve, 2 escalate), instead of
    /// `expires_s`.
    CreateHitl {
        task: Option<usize>,
        expires_s: Option<u64>,
        timeout: Option<(u64, usize)>,
    },
    Respond {
        hitl: usize,
        action: usize,
    },
    /// `which`: 0 the built-in `sdlc`, 1 the diamond.
    StartWorkflow {
        level: usize,
        which: usize,
    },
    /// Cancels one of the workflow projects' runs.
    CancelWorkflow {
        project: usize,
    },
    /// A worker takes a pending task of a running phase of one of the runs: a claim of its agent
    /// type (which may hand out another task first) and, if it got that task, its completion
    /// (`fail`: 0 completes, 1 fails the attempt).
    Work {
        run: usize,
        phase: usize,
        fail: usize,
        items: usize,
    },
    Trim {
        keep: u64,
    },
    /// 0 pause, 1 resume, 2 limit to `limit` working, 3 no limit.
    Queue {
        agent: usize,
        change: usize,
        limit: u32,
    },
    /// 0: the timed project, otherwise a workflow project.
    PauseProject {
        project: usize,
        paused: bool,
    },
    /// A daily token budget over everything (`None`: removed).
    Budget {
        max_tokens: Option<u64>,
    },
    /// A usage report of a task under a lease (`fence` as for `Set`).
    Report {
        task: usize,
        tokens: u64,
        fence: usize,
    },
    /// The clock moves to just after the next UTC midnight.
    NextDay,
}

fn op() -> impl Strategy<Value = Op> {
    let ix = 0usize..32;
    prop_oneof![
        3 => (0usize..6, 1u8..=5, 0usize..3)
            .prop_map(|(agent, priority, project)| Op::CreateTask { agent, priority, project }),
        5 => (0usize..6, 1i64..6_000, 0usize..3)
            .prop_map(|(agent, lease_ms, worker)| Op::Claim { agent, lease_ms, worker }),
        3 => (ix.clone(), 0usize..3, 1i64..6_000, prop::sample::select(vec![0usize, 0, 1, 2]))
            .prop_map(|(task, worker, lease_ms, fence)| Op::Heartbeat { task, worker, lease_ms, fence }),
        6 => (ix.clone(), prop::sample::select(vec![0usize, 2, 3, 4]), prop::sample::select(vec![0usize, 0, 0, 1, 2]))
            .prop_map(|(task, status, fence)| Op::Set { task, status, fence, output: None }),
        5 => prop_oneof![0i64..2_000, 0i64..15_000].prop_map(|ms| Op::Advance { ms }),
        3 => (prop::option::of(ix.clone()), prop::option::of(1u64..20), prop::option::of((1u64..20, 0usize..3)))
            .prop_map(|(task, expires_s, timeout)| Op::CreateHitl { task, expires_s, timeout }),
        4 => (ix.clone(), 0usize..3).prop_map(|(hitl, action)| Op::Respond { hitl, action }),
        2 => (0usize..3, 0usize..2).prop_map(|(level, which)| Op::StartWorkflow { level, which }),
        1 => (0usize..4).prop_map(|project| Op::CancelWorkflow { project }),
        6 => (0usize..4, 0usize..4, prop::sample::select(vec![0usize, 0, 0, 1]), prop::sample::select(vec![0usize, 1, 2, 2, 2, 3, 4]))
            .prop_map(|(run, phase, fail, items)| Op::Work { run, phase, fail, items }),
        1 => (0u64..40).prop_map(|keep| Op::Trim { keep }),
        2 => (0usize..6, 0usize..4, 0u32..3)
            .prop_map(|(agent, change, limit)| Op::Queue { agent, change, limit }),
        1 => (0usize..3, any::<bool>()).prop_map(|(project, paused)| Op::PauseProject { project, paused }),
        2 => prop::option::of(1u64..80).prop_map(|max_tokens| Op::Budget { max_tokens }),
        4 => (ix.clone(), 0u64..30, prop::sample::select(vec![0usize, 0, 0, 2]))
            .prop_map(|(task, tokens, fence)| Op::Report { task, tokens, fence }),
        1 => Just(Op::NextDay),
    ]
}

const DAY: i64 = 86_400 * SECOND;

/// The daily budget over everything: its limit, the day its use counts, what that day used.
#[derive(Debug, Clone)]
struct MBudget {
    max_tokens: u64,
    day: i64,
    used: u64,
}

#[derive(Debug, Clone, PartialEq)]
struct MTask {
    project: Id,
    agent: AgentType,
    status: TaskStatus,
    worker: Option<String>,
    lease: Option<i64>,
    timeout: Option<i64>,
    retry: Option<i64>,
    failures: u32,
    attempts: u32,
    /// The claim's fencing token while it works under one.
    lease_id: Option<Id>,
    priority: u8,
}

#[derive(Debug, Clone)]
struct MHitl {
    status: HitlStatus,
    expires: Option<i64>,
    /// Its timeout: seconds, what it does, and whether it escalated already.
    timeout: Option<(u64, TimeoutAction, bool)>,
}

#[derive(Debug, Clone)]
struct MRun {
    deps: Vec<Vec<usize>>,
    gated: Vec<bool>,
    gate_timeouts: Vec<Option<(u64, TimeoutAction)>>,
    tasks: Vec<Option<Id>>,
    statuses: Vec<PhaseStatus>,
    gates: Vec<Option<Id>>,
    status: RunStatus,
    /// A fan-out phase's source phase, its tasks and how many completed.
    for_each: Vec<Option<usize>>,
    items: Vec<Vec<Id>>,
    items_done: Vec<u32>,
}

impl MRun {
    /// The running phase whose task (or one of whose fan-out tasks) this is.
    fn phase_of(&self, task: Id) -> Option<usize> {
        (self.status == RunStatus::Running)
            .then(|| {
                (0..self.tasks.len()).find(|&i| {
                    self.statuses[i] == PhaseStatus::Running
                        && (self.tasks[i] == Some(task) || self.items[i].contains(&task))
                })
            })
            .flatten()
    }
}

struct Model {
    now: i64,
    project: Id,
    task_ids: Vec<Id>,
    tasks: BTreeMap<Id, MTask>,
    hitl_ids: Vec<Id>,
    hitl: BTreeMap<Id, MHitl>,
    runs: BTreeMap<Id, MRun>,
    /// Per agent type: working tasks, and whether an escalation left it in error.
    agents: BTreeMap<AgentType, (AgentStatus, u32)>,
    /// Events trimmed away: the log starts after this seq.
    trimmed_through: u64,
    /// Every agent status change the store published, as (seq, agent type): its history must
    /// be the newest `HISTORY_RETENTION` of each type's.
    changes: Arc<parking_lot::Mutex<Vec<(u64, String)>>>,
    /// The lease each task was last claimed under, once it no longer holds it.
    stale: BTreeMap<Id, Id>,
    /// Per agent type, the project its last claim was served from.
    turn: BTreeMap<AgentType, Id>,
    /// Per agent type: paused, and the most working tasks it may have.
    queues: BTreeMap<AgentType, (bool, Option<u32>)>,
    paused_projects: std::collections::BTreeSet<Id>,
    /// The length of the `items` list in each task's output as last completed (None: no list).
    outputs: BTreeMap<Id, Option<usize>>,
    budget: Option<MBudget>,
    /// Every usage report: when, and its tokens.
    reports: Vec<(i64, u64)>,
}

fn worker(i: usize) -> String {
    format!("w{i}")
}

fn pick(ids: &[Id], i: usize) -> Option<Id> {
    (!ids.is_empty()).then(|| ids[ids.len() - 1 - (i % ids.len())])
}

impl Model {
    /// Whether the budget holds every claim now: exhausted in the current day.
    fn held(&self) -> bool {
        self.budget
            .as_ref()
            .is_some_and(|b| b.day == self.now.div_euclid(DAY) * DAY && b.used >= b.max_tokens)
    }

    /// Whether the budget is past its warning (80 %) or exhausted in the current day.
    fn alerting(&self) -> bool {
        self.budget.as_ref().is_some_and(|b| {
            b.day == self.now.div_euclid(DAY) * DAY
                && (b.used >= b.max_tokens || b.used as f64 / b.max_tokens as f64 * 100.0 >= 80.0)
        })
    }

    /// The HITL request an exhaustion opened in `project`, which the model then keeps like any.
    fn asked(&mut self, store: &Store, project: Id) {
        let page = store
            .project_hitl(
                &project,
                flightdeck::store::HitlFilter::default(),
                None,
                1000,
            )
            .unwrap();
        let new: Vec<Id> = page
            .items
            .iter()
            .filter(|h| !self.hitl.contains_key(&h.id))
            .map(|h| h.id)
            .collect();
        assert_eq!(new.len(), 1, "one request asks to raise the budget");
        let h = page.items.iter().find(|h| h.id == new[0]).unwrap();
        assert!(
            h.question.contains("budget of global is exhausted"),
            "{}",
            h.question
        );
        self.hitl_ids.push(h.id);
        self.hitl.insert(
            h.id,
            MHitl {
                status: HitlStatus::Pending,
                expires: None,
                timeout: None,
            },
        );
    }

    fn agent(&mut self, a: AgentType) -> &mut (AgentStatus, u32) {
        self.agents.entry(a).or_insert((AgentStatus::Idle, 0))
    }

    fn add_task(&mut self, id: Id, project: Id, agent: AgentType) {
        self.add_task_at(id, project, agent, 3);
    }

    fn add_task_at(&mut self, id: Id, project: Id, agent: AgentType, priority: u8) {
        self.task_ids.push(id);
        self.tasks.insert(
            id,
            MTask {
                project,
                agent,
                status: TaskStatus::Pending,
                worker: None,
                lease: None,
                timeout: None,
                retry: None,
                failures: 0,
                attempts: 0,
                lease_id: None,
                priority,
            },
        );
    }

    /// The lease a request presents: the task's current one, none, or one it held once.
    fn presented(&self, id: Id, fence: usize) -> Option<Id> {
        match fence {
            0 => self.tasks[&id].lease_id,
            1 => None,
            _ => self.stale.get(&id).copied().or(Some(Id([0xab; 16]))),
        }
    }

    /// Whether a worker presenting `given` holds the task's claim (the documented rule).
    fn holds(&self, id: Id, given: Option<Id>) -> bool {
        self.tasks[&id].lease_id == given
    }

    /// A task leaves `working` (or any state) for `to`, with what follows for its agent.
    fn leave(&mut self, id: Id, to: TaskStatus) {
        let t = self.tasks.get_mut(&id).unwrap();
        let was_working = t.status == TaskStatus::Working;
        let agent = t.agent.clone();
        t.status = to;
        if to != TaskStatus::Working {
            t.worker = None;
            t.lease = None;
            t.timeout = None;
            if let Some(old) = t.lease_id.take() {
                self.stale.insert(id, old);
            }
        }
        if was_working && to != TaskStatus::Working {
            let a = self.agent(agent);
            a.1 -= 1;
            if a.1 == 0 && a.0 == AgentStatus::Working {
                a.0 = AgentStatus::Idle;
            }
        }
    }

    /// A failed attempt: a retry after the doubled backoff, or the escalation to a human.
    fn fail(&mut self, store: &Store, id: Id) {
        self.leave(id, TaskStatus::Failed);
        let now = self.now;
        let t = self.tasks.get_mut(&id).unwrap();
        t.failures += 1;
        if t.failures < MAX_ATTEMPTS {
            t.retry = Some(now + BACKOFF * (1 << (t.failures - 1)));
        } else {
            t.retry = None;
            let agent = t.agent.clone();
            self.agent(agent).0 = AgentStatus::Error;
            // The escalation: one new pending request about this task.
            let new: Vec<Id> = store
                .hitl_by_status(HitlStatus::Pending, None, 10_000)
                .unwrap()
                .items
                .iter()
                .filter(|h| !self.hitl.contains_key(&h.id) && h.task_id == Some(id))
                .map(|h| {
                    assert_eq!(h.options, vec!["retry".to_string(), "cancel".to_string()]);
                    h.id
                })
                .collect();
            assert_eq!(new.len(), 1, "one escalation request");
            self.hitl_ids.push(new[0]);
            self.hitl.insert(
                new[0],
                MHitl {
                    status: HitlStatus::Pending,
                    expires: None,
                    timeout: None,
                },
            );
            self.ended(id);
        }
    }

    fn complete(&mut self, store: &Store, id: Id) {
        self.leave(id, TaskStatus::Completed);
        let project = self.tasks[&id].project;
        let Some(phase) = self.runs.get(&project).and_then(|r| r.phase_of(id)) else {
            return;
        };
        let run = self.runs.get_mut(&project).unwrap();
        if !run.items[phase].is_empty() {
            run.items_done[phase] += 1;
            if (run.items_done[phase] as usize) < run.items[phase].len() {
                return;
            }
        }
        self.finished(store, project, phase, Some(id));
    }

    /// Phase `phase` has done its work (`task` the last of it): its gate opens, or it hands off.
    fn finished(&mut self, store: &Store, project: Id, phase: usize, task: Option<Id>) {
        let run = &self.runs[&project];
        if run.gated[phase] {
            let stored = store.workflow(&project).unwrap().unwrap();
            let gate = stored.phases[phase].gate_id.expect("a gate opened");
            let request = store.get_hitl(&gate).unwrap().unwrap();
            assert_eq!(request.task_id, task);
            let timeout = run.gate_timeouts[phase];
            self.hitl_ids.push(gate);
            self.hitl.insert(
                gate,
                MHitl {
                    status: HitlStatus::Pending,
                    expires: timeout.map(|(seconds, _)| self.now + seconds as i64 * SECOND),
                    timeout: timeout.map(|(seconds, action)| (seconds, action, false)),
                },
            );
            let run = self.runs.get_mut(&project).unwrap();
            run.statuses[phase] = PhaseStatus::AwaitingApproval;
            run.gates[phase] = Some(gate);
        } else {
            self.hand_off(store, project, phase);
        }
    }

    fn hand_off(&mut self, store: &Store, project: Id, phase: usize) {
        let run = self.runs.get_mut(&project).unwrap();
        run.statuses[phase] = PhaseStatus::Done;
        run.gates[phase] = None;
        if run.statuses.iter().all(|s| *s == PhaseStatus::Done) {
            run.status = RunStatus::Completed;
            return;
        }
        self.start_ready(store, project);
    }

    /// The waiting phases whose dependencies are all done start, in order, each with its task;
    /// a fan-out with one task per element of its source's list, which must be there and at most
    /// `MAX_FAN_OUT` long, or the run fails there (and nothing after it starts).
    fn start_ready(&mut self, store: &Store, project: Id) {
        let run = self.runs.get(&project).unwrap();
        let ready: Vec<usize> = (0..run.statuses.len())
            .filter(|&i| {
                run.statuses[i] == PhaseStatus::Waiting
                    && run.deps[i]
                        .iter()
                        .all(|&d| run.statuses[d] == PhaseStatus::Done)
            })
            .collect();
        if ready.is_empty() {
            return;
        }
        let stored = store.workflow(&project).unwrap().unwrap();
        for i in ready {
            let run = self.runs.get(&project).unwrap();
            if run.status != RunStatus::Running {
                return;
            }
            // Started already, by the hand-off of an empty fan-out before it in this list.
            if run.statuses[i] != PhaseStatus::Waiting {
                continue;
            }
            let agent = stored.phases[i].agent_type.clone();
            let Some(source) = run.for_each[i] else {
                let task = stored.phases[i].task_id.expect("a ready phase's task");
                let run = self.runs.get_mut(&project).unwrap();
                run.statuses[i] = PhaseStatus::Running;
                run.tasks[i] = Some(task);
                self.add_task(task, project, agent);
                continue;
            };
            let source_task = run.tasks[source].expect("the source phase's task");
            match self.outputs.get(&source_task).copied().flatten() {
                Some(n) if n <= MAX_FAN_OUT => {
                    let items = stored.phases[i].items.clone();
                    assert_eq!(items.len(), n, "one task per element");
                    let run = self.runs.get_mut(&project).unwrap();
                    run.statuses[i] = PhaseStatus::Running;
                    run.items[i] = items.clone();
                    run.items_done[i] = 0;
                    for task in items {
                        self.add_task(task, project, agent.clone());
                    }
                    if n == 0 {
                        self.finished(store, project, i, None);
                    }
                }
                _ => self.end_run(project, Some(i)),
            }
        }
    }

    /// A run ends (failed at `failed`, or cancelled): its open tasks are cancelled, its open
    /// gates expire, and every phase not done is cancelled.
    fn end_run(&mut self, project: Id, failed: Option<usize>) {
        let run = self.runs.get_mut(&project).unwrap();
        run.status = if failed.is_some() {
            RunStatus::Failed
        } else {
            RunStatus::Cancelled
        };
        let mut cancel = Vec::new();
        let mut expire = Vec::new();
        for i in 0..run.statuses.len() {
            if Some(i) == failed {
                run.statuses[i] = PhaseStatus::Failed;
                continue;
            }
            match run.statuses[i] {
                PhaseStatus::Running => {
                    cancel.extend(run.tasks[i]);
                    cancel.extend(run.items[i].iter().copied());
                }
                PhaseStatus::AwaitingApproval => expire.extend(run.gates[i]),
                PhaseStatus::Waiting => {}
                _ => continue,
            }
            run.statuses[i] = PhaseStatus::Cancelled;
            run.gates[i] = None;
        }
        for task in cancel {
            if matches!(
                self.tasks[&task].status,
                TaskStatus::Pending | TaskStatus::Working | TaskStatus::Failed
            ) {
                self.tasks.get_mut(&task).unwrap().retry = None;
                self.leave(task, TaskStatus::Cancelled);
            }
        }
        for gate in expire {
            let h = self.hitl.get_mut(&gate).unwrap();
            if h.status == HitlStatus::Pending {
                h.status = HitlStatus::Expired;
            }
        }
    }

    /// A task failed for good or was cancelled: its run fails if it was a running phase's.
    fn ended(&mut self, id: Id) {
        let project = self.tasks[&id].project;
        if let Some(phase) = self.runs.get(&project).and_then(|r| r.phase_of(id)) {
            self.end_run(project, Some(phase));
        }
    }

    /// The due timers, in the store's order (deadline, kind: lease 0, work timeout 1, retry 2,
    /// HITL expiry 3, then id), each acting on its record as earlier ones left it: a task that
    /// fails for good fails its run, which cancels the run's other tasks, due or not.
    fn fire(&mut self, store: &Store) {
        let now = self.now;
        let mut due: Vec<(i64, u8, Id)> = Vec::new();
        for (id, t) in &self.tasks {
            let first = match t.status {
                TaskStatus::Working => [(t.lease, 0u8), (t.timeout, 1)]
                    .into_iter()
                    .filter_map(|(at, kind)| at.filter(|at| *at <= now).map(|at| (at, kind)))
                    .min(),
                TaskStatus::Failed => t.retry.filter(|at| *at <= now).map(|at| (at, 2)),
                _ => None,
            };
            due.extend(first.map(|(at, kind)| (at, kind, *id)));
        }
        for (id, h) in &self.hitl {
            if h.status == HitlStatus::Pending
                && let Some(at) = h.expires.filter(|at| *at <= now)
            {
                due.push((at, 3, *id));
            }
        }
        due.sort();
        for (_, kind, id) in due {
            if kind == 3 {
                self.time_out(store, id);
                continue;
            }
            let t = self.tasks[&id].clone();
            match t.status {
                TaskStatus::Working => {
                    let lease = t.lease.filter(|at| *at <= now);
                    let timeout = t.timeout.filter(|at| *at <= now);
                    match (lease, timeout) {
                        (Some(l), Some(o)) if o < l => self.fail(store, id),
                        (Some(_), _) => self.leave(id, TaskStatus::Pending),
                        (None, Some(_)) => self.fail(store, id),
                        (None, None) => {}
                    }
                }
                TaskStatus::Failed if t.retry.is_some_and(|at| at <= now) => {
                    self.tasks.get_mut(&id).unwrap().retry = None;
                    self.leave(id, TaskStatus::Pending);
                }
                _ => {}
            }
        }
    }

    fn step(&mut self, store: &Store, clock: &AtomicI64, op: &Op) {
        match *op {
            Op::CreateTask {
                agent,
                priority,
                project,
            } => {
                let agent = AgentType::KNOWN[agent].clone();
                let projects: Vec<Id> = self.runs.keys().copied().collect();
                let project_id = match project {
                    0 => self.project,
                    n => projects
                        .get(n % projects.len().max(1))
                        .copied()
                        .unwrap_or(self.project),
                };
                let t = store
                    .write_blocking(command::CreateTask {
                        project_id,
                        agent_type: agent.clone(),
                        instructions: "x".into(),
                        context_ids: Vec::new(),
                        priority,
                    })
                    .unwrap();
                assert_eq!(t.priority, priority);
                self.add_task_at(t.id, project_id, agent, priority);
            }
            Op::Claim {
                agent,
                lease_ms,
                worker: w,
            } => {
                let agent = AgentType::KNOWN[agent].clone();
                let got = store
                    .write_blocking(command::Claim {
                        agent_type: agent.clone(),
                        worker_id: worker(w),
                        lease: lease_ms * 1000,
                        claimer: None,
                    })
                    .unwrap();
                let (paused, limit) = self.queues.get(&agent).copied().unwrap_or((false, None));
                let working = self.agents.get(&agent).map_or(0, |a| a.1);
                let open = !paused && limit.is_none_or(|n| working < n) && !self.held();
                let next = next_claim(
                    self.tasks
                        .iter()
                        .filter(|(_, t)| t.agent == agent && t.status == TaskStatus::Pending)
                        .filter(|(_, t)| open && !self.paused_projects.contains(&t.project))
                        .map(|(id, t)| (*id, t.project, t.priority)),
                    self.turn.get(&agent).copied(),
                );
                assert_eq!(
                    got.as_ref().map(|t| t.id),
                    next.map(|n| n.0),
                    "priority, then the projects' turn, then the oldest"
                );
                if let Some((_, project)) = next {
                    self.turn.insert(agent.clone(), project);
                }
                if let Some(id) = next.map(|n| n.0) {
                    let now = self.now;
                    let lease_id = got.as_ref().and_then(|t| t.lease_id);
                    assert!(lease_id.is_some(), "a claim answers a lease id");
                    assert_ne!(lease_id, self.stale.get(&id).copied(), "a fresh one");
                    let t = self.tasks.get_mut(&id).unwrap();
                    t.lease_id = lease_id;
                    t.status = TaskStatus::Working;
                    t.worker = Some(worker(w));
                    t.lease = Some(now + lease_ms * 1000);
                    t.timeout = Some(now + TIMEOUT);
                    t.attempts += 1;
                    let a = self.agent(agent);
                    a.1 += 1;
                    a.0 = AgentStatus::Working;
                }
            }
            Op::Heartbeat {
                task,
                worker: w,
                lease_ms,
                fence,
            } => {
                let Some(id) = pick(&self.task_ids, task) else {
                    return;
                };
                let given = self.presented(id, fence);
                let holds = self.holds(id, given);
                let reply = store.write_blocking(command::Heartbeat {
                    task_id: id,
                    worker_id: Some(worker(w)),
                    lease_id: given,
                    lease: lease_ms * 1000,
                });
                let held_now = self.held();
                let m = self.tasks.get_mut(&id).unwrap();
                let cancelled = m.status == TaskStatus::Cancelled;
                let allowed =
                    holds && m.status == TaskStatus::Working && m.worker == Some(worker(w));
                match reply {
                    Ok(Err(held)) => {
                        assert!(allowed, "heartbeat answered on {m:?} from {}", worker(w));
                        assert_eq!(held.scope, "global");
                        assert!(held_now, "held by a budget that is not exhausted");
                        self.leave(id, TaskStatus::Pending);
                    }
                    Ok(Ok(t)) => {
                        assert!(allowed, "heartbeat accepted on {m:?} from {}", worker(w));
                        assert!(!held_now, "a heartbeat went on under an exhausted budget");
                        m.lease = Some(self.now + lease_ms * 1000);
                        assert_eq!(t.lease_expires_at, m.lease);
                    }
                    Err(StoreError::Domain(DomainError::TaskCancelled { .. })) => {
                        assert!(cancelled, "cancelled? {m:?}")
                    }
                    Err(StoreError::Domain(DomainError::LeaseLost { .. })) => {
                        assert!(!cancelled && !holds, "lease lost? {m:?} given {given:?}")
                    }
                    Err(StoreError::Domain(_)) => {
                        assert!(!allowed && holds && !cancelled, "heartbeat refused: {m:?}")
                    }
                    Err(e) => panic!("{e}"),
                }
            }
            Op::Set {
                task,
                status,
                fence,
                output,
            } => {
                let Some(id) = pick(&self.task_ids, task) else {
                    return;
                };
                let to = TaskStatus::ALL[status];
                let from = self.tasks[&id].status;
                let given = self.presented(id, fence);
                let text = match output {
                    None => None,
                    Some(4) => Some("{\"other\":1}".to_string()),
                    Some(n) => Some(format!(
                        "{{\"items\":[{}]}}",
                        (0..n).map(|i| i.to_string()).collect::<Vec<_>>().join(",")
                    )),
                };
                let reply = store.write_blocking(command::SetTaskStatus {
                    task_id: id,
                    status: to,
                    output: text.filter(|_| to == TaskStatus::Completed),
                    error_message: Some("boom".into()).filter(|_| to == TaskStatus::Failed),
                    lease_id: given,
                });
                use TaskStatus::*;
                // Finishing needs the claim; anything naming a lease is held to it.
                let fenced =
                    (matches!(to, Completed | Failed) || given.is_some()) && !self.holds(id, given);
                let legal = matches!(
                    (from, to),
                    (Working, Completed)
                        | (Working, Failed)
                        | (Pending | Working | Failed, Cancelled)
                        | (Failed, Pending)
                );
                match reply {
                    Ok(t) => {
                        assert!(legal && !fenced, "{from} -> {to} accepted ({given:?})");
                        assert_eq!(t.status, to);
                    }
                    Err(StoreError::Domain(DomainError::LeaseLost { .. })) => {
                        assert!(fenced, "{from} -> {to} lease lost with {given:?}");
                        return;
                    }
                    Err(StoreError::Domain(_)) => {
                        assert!(!legal && !fenced, "{from} -> {to} refused");
                        return;
                    }
                    Err(e) => panic!("{e}"),
                }
                match to {
                    Completed => {
                        // The list a fan-out over this task's output would split.
                        self.outputs.insert(id, output.filter(|n| *n < 4));
                        self.complete(store, id)
                    }
                    Failed => self.fail(store, id),
                    Pending => {
                        self.tasks.get_mut(&id).unwrap().retry = None;
                        self.leave(id, Pending);
                    }
                    _ => {
                        self.tasks.get_mut(&id).unwrap().retry = None;
                        self.leave(id, to);
                        if to == Cancelled {
                            self.ended(id);
                        }
                    }
                }
            }
            Op::NextDay => {
                let next = (self.now.div_euclid(DAY) + 1) * DAY + 1000;
                self.step(
                    store,
                    clock,
                    &Op::Advance {
                        ms: (next - self.now) / 1000,
                    },
                );
            }
            Op::Budget { max_tokens } => {
                let scope = flightdeck::domain::budget::BudgetScope::Global;
                let Some(max) = max_tokens else {
                    let reply = store.write_blocking(command::DeleteBudget { scope });
                    match self.budget.take() {
                        Some(_) => reply.unwrap(),
                        None => assert!(matches!(
                            reply,
                            Err(StoreError::Domain(DomainError::NotFound { .. }))
                        )),
                    }
                    return;
                };
                let set = store
                    .write_blocking(command::PutBudget {
                        scope,
                        max_cost_nanos: None,
                        max_tokens: Some(max),
                        window: flightdeck::domain::budget::Window::Day,
                        warn_percent: 80,
                    })
                    .unwrap();
                let day = self.now.div_euclid(DAY) * DAY;
                let used = self
                    .reports
                    .iter()
                    .filter(|(at, _)| *at >= day)
                    .map(|(_, n)| n)
                    .sum();
                assert_eq!(
                    set.budget.used.tokens.total(),
                    used,
                    "the day's use, summed"
                );
                self.budget = Some(MBudget {
                    max_tokens: max,
                    day,
                    used,
                });
            }
            Op::Report {
                task,
                tokens,
                fence,
            } => {
                let Some(id) = pick(&self.task_ids, task) else {
                    return;
                };
                let given = self.presented(id, fence);
                let report = flightdeck::domain::usage::UsageReport::new(
                    "",
                    format!("r{}", self.reports.len()),
                    "m".into(),
                    None,
                    flightdeck::domain::usage::Tokens {
                        input: tokens,
                        ..Default::default()
                    },
                    None,
                )
                .unwrap();
                let done = store
                    .write_blocking(command::ReportUsage {
                        task_id: id,
                        lease_id: given,
                        worker_id: None,
                        reports: vec![report],
                        hold: true,
                    })
                    .unwrap();
                self.reports.push((self.now, tokens));
                let t = self.tasks[&id].clone();
                let holds = t.status == TaskStatus::Working && self.holds(id, given);
                assert_eq!(done.recorded[0].entry.lease_lost, !holds, "{t:?} {given:?}");
                let day = self.now.div_euclid(DAY) * DAY;
                let mut exhausted_now = false;
                if let Some(b) = &mut self.budget {
                    if b.day != day {
                        b.day = day;
                        b.used = 0;
                    }
                    let before = b.used >= b.max_tokens;
                    b.used += tokens;
                    exhausted_now = !before && b.used >= b.max_tokens;
                }
                if exhausted_now {
                    self.asked(store, t.project);
                }
                let held = holds && self.held();
                assert_eq!(done.held.is_some(), held, "held? {t:?}");
                if held {
                    self.leave(id, TaskStatus::Pending);
                }
            }
            Op::Advance { ms } => {
                let (alerting, day, seq) = (
                    self.alerting(),
                    self.now.div_euclid(DAY),
                    store.latest_seq(),
                );
                self.now += ms * 1000;
                clock.store(self.now, Ordering::SeqCst);
                store
                    .write_blocking(command::FireTimers {
                        now: self.now,
                        max: 100_000,
                    })
                    .unwrap();
                self.fire(store);
                if self.budget.is_some() {
                    // The end of the budget's day is a timer: it counts in the day holding now.
                    let stored = store
                        .budget(&flightdeck::domain::budget::BudgetScope::Global)
                        .unwrap()
                        .expect("the budget");
                    assert_eq!(stored.window_start, self.now.div_euclid(DAY) * DAY);
                    // A warning or an exhaustion its day's end lifted says so, and why.
                    let (log, _) = store.events(None, seq, 1_000_000).unwrap();
                    let restored = log.iter().any(|(_, json)| {
                        json.contains("\"budget_restored\"")
                            && json.contains("\"reason\":\"window\"")
                    });
                    let new_day = self.now.div_euclid(DAY) != day;
                    assert_eq!(
                        restored,
                        alerting && new_day,
                        "budget_restored at the day's end"
                    );
                }
            }
            Op::CreateHitl {
                task,
                expires_s,
                timeout,
            } => {
                let task_id = task.and_then(|t| pick(&self.task_ids, t));
                let project_id = task_id.map_or(self.project, |t| self.tasks[&t].project);
                let timeout =
                    timeout.map(|(seconds, action)| (seconds, TimeoutAction::ALL[action]));
                let on_timeout = timeout.map(|(seconds, action)| HitlTimeout {
                    seconds,
                    action,
                    escalate_to: if action == TimeoutAction::Escalate {
                        vec!["lead".into()]
                    } else {
                        vec![]
                    },
                    escalated: false,
                });
                let expires_s = if timeout.is_some() { None } else { expires_s };
                let h = store
                    .write_blocking(command::CreateHitl {
                        project_id,
                        task_id,
                        question: "ok?".into(),
                        options: vec![],
                        expires_in_seconds: expires_s,
                        assignees: vec![],
                        on_timeout,
                    })
                    .unwrap();
                let expires = timeout
                    .map(|t| t.0)
                    .or(expires_s)
                    .map(|s| self.now + s as i64 * SECOND);
                assert_eq!(h.expires_at, expires);
                self.hitl_ids.push(h.id);
                self.hitl.insert(
                    h.id,
                    MHitl {
                        status: HitlStatus::Pending,
                        expires,
                        timeout: timeout.map(|(s, a)| (s, a, false)),
                    },
                );
            }
            Op::Respond { hitl, action } => {
                let Some(id) = pick(&self.hitl_ids, hitl) else {
                    return;
                };
                let action = HitlAction::ALL[action];
                let reply = store.write_blocking(command::RespondHitl {
                    hitl_id: id,
                    action,
                    content: Some("{\"amended\":true}".into()),
                    comment: Some("again".into()),
                    by: None,
                });
                let m = self.hitl.get_mut(&id).unwrap();
                let late =
                    m.status == HitlStatus::Pending && m.expires.is_some_and(|at| at <= self.now);
                match reply {
                    Ok(HitlAnswer::Expired(h)) => {
                        // Timing out now (by its timeout, or expiring), or expired already.
                        assert!(
                            late || m.status == HitlStatus::Expired,
                            "expired early: {m:?}"
                        );
                        if late {
                            self.time_out(store, id);
                        }
                        let m = &self.hitl[&id];
                        assert_eq!(h.status, m.status);
                        assert_eq!(h.expires_at, m.expires);
                    }
                    Ok(HitlAnswer::Answered {
                        request,
                        workflow_resumed,
                    }) => {
                        assert!(m.status == HitlStatus::Pending && !late, "{m:?} answered");
                        m.status = request.status;
                        let gate_of = self.runs.iter().find_map(|(p, r)| {
                            let phase = r.gates.iter().position(|g| *g == Some(id))?;
                            (r.status == RunStatus::Running).then_some((*p, phase))
                        });
                        assert_eq!(workflow_resumed, gate_of.is_some());
                        if let Some((project, phase)) = gate_of {
                            self.gate_answered(store, project, phase, action, "again");
                        }
                    }
                    Err(StoreError::Domain(_)) => {
                        assert!(m.status != HitlStatus::Pending, "{m:?} refused")
                    }
                    Err(e) => panic!("{e}"),
                }
            }
            Op::StartWorkflow { level, which } => {
                let level = [
                    OversightLevel::Low,
                    OversightLevel::Medium,
                    OversightLevel::High,
                ][level];
                let p = store
                    .write_blocking(command::CreateProject {
                        name: "wf".into(),
                        description: None,
                    })
                    .unwrap();
                store
                    .write_blocking(command::SetOversightLevel {
                        project_id: p.id,
                        level,
                    })
                    .unwrap();
                type Timeouts = Vec<Option<(u64, TimeoutAction)>>;
                let (workflow, deps, medium, gate_timeouts): (
                    &str,
                    Vec<Vec<usize>>,
                    Vec<bool>,
                    Timeouts,
                ) = match which {
                    0 => (
                        "sdlc",
                        (0..5)
                            .map(|i: usize| i.checked_sub(1).into_iter().collect())
                            .collect(),
                        MEDIUM_GATES.to_vec(),
                        vec![None; 5],
                    ),
                    _ => (
                        "diamond",
                        DIAMOND_DEPS.iter().map(|d| d.to_vec()).collect(),
                        vec![false, false, true, false],
                        DIAMOND_TIMEOUTS.to_vec(),
                    ),
                };
                let run = store
                    .write_blocking(command::StartWorkflow {
                        project_id: p.id,
                        workflow: workflow.into(),
                        context: None,
                    })
                    .unwrap();
                let n = deps.len();
                let gated = match level {
                    OversightLevel::Low => vec![false; n],
                    OversightLevel::Medium => medium,
                    OversightLevel::High => vec![true; n],
                };
                let stored_deps: Vec<Vec<usize>> = run
                    .phases
                    .iter()
                    .map(|p| p.depends_on.iter().map(|&d| d as usize).collect())
                    .collect();
                assert_eq!(stored_deps, deps);
                self.runs.insert(
                    p.id,
                    MRun {
                        deps,
                        gated,
                        gate_timeouts,
                        tasks: vec![None; n],
                        statuses: vec![PhaseStatus::Waiting; n],
                        gates: vec![None; n],
                        status: RunStatus::Running,
                        for_each: run
                            .phases
                            .iter()
                            .map(|p| p.for_each.as_ref().map(|(from, _)| *from as usize))
                            .collect(),
                        items: vec![Vec::new(); n],
                        items_done: vec![0; n],
                    },
                );
                self.start_ready(store, p.id);
            }
            Op::Work {
                run,
                phase,
                fail,
                items,
            } => {
                let running: Vec<&MRun> = self
                    .runs
                    .values()
                    .filter(|r| r.status == RunStatus::Running)
                    .collect();
                let Some(r) = running.get(run % running.len().max(1)) else {
                    return;
                };
                let open: Vec<Id> = (0..r.tasks.len())
                    .filter(|&i| r.statuses[i] == PhaseStatus::Running)
                    .flat_map(|i| r.tasks[i].into_iter().chain(r.items[i].clone()))
                    .filter(|t| self.tasks[t].status == TaskStatus::Pending)
                    .collect();
                let Some(&task) = open.get(phase % open.len().max(1)) else {
                    return;
                };
                let agent = AgentType::KNOWN
                    .iter()
                    .position(|a| *a == self.tasks[&task].agent)
                    .expect("a default agent type");
                self.step(
                    store,
                    clock,
                    &Op::Claim {
                        agent,
                        lease_ms: 5_000,
                        worker: 0,
                    },
                );
                if self.tasks[&task].status != TaskStatus::Working {
                    return;
                }
                let at = self.task_ids.iter().position(|t| *t == task).unwrap();
                let status = if fail == 0 { 2 } else { 3 };
                self.step(
                    store,
                    clock,
                    &Op::Set {
                        task: self.task_ids.len() - 1 - at,
                        status,
                        fence: 0,
                        output: Some(items),
                    },
                );
            }
            Op::CancelWorkflow { project } => {
                let projects: Vec<Id> = self.runs.keys().copied().collect();
                let Some(&project_id) = projects.get(project % projects.len().max(1)) else {
                    return;
                };
                let reply = store.write_blocking(command::CancelWorkflow {
                    project_id,
                    reason: Some("enough".into()),
                });
                let running = self.runs[&project_id].status == RunStatus::Running;
                match reply {
                    Ok(run) => {
                        assert!(running, "an ended run was cancelled");
                        assert_eq!(run.status, RunStatus::Cancelled);
                        assert_eq!(run.reason.as_deref(), Some("enough"));
                        self.end_run(project_id, None);
                    }
                    Err(StoreError::Domain(DomainError::InvalidTransition { .. })) => {
                        assert!(!running, "a running run was not cancelled")
                    }
                    Err(e) => panic!("{e}"),
                }
            }
            Op::Queue {
                agent,
                change,
                limit,
            } => {
                let agent = AgentType::KNOWN[agent].clone();
                let entry = self.queues.entry(agent.clone()).or_insert((false, None));
                let change = match change {
                    0 => {
                        entry.0 = true;
                        command::QueueChange::Pause
                    }
                    1 => {
                        entry.0 = false;
                        command::QueueChange::Resume
                    }
                    2 => {
                        entry.1 = Some(limit);
                        command::QueueChange::Limit(Some(limit))
                    }
                    _ => {
                        entry.1 = None;
                        command::QueueChange::Limit(None)
                    }
                };
                let want = *entry;
                let got = store
                    .write_blocking(command::SetQueue {
                        agent_type: agent.clone(),
                        change,
                    })
                    .unwrap();
                assert_eq!((got.paused, got.max_working), want);
            }
            Op::PauseProject { project, paused } => {
                let projects: Vec<Id> = self.runs.keys().copied().collect();
                let project_id = match project {
                    0 => self.project,
                    n => projects
                        .get(n % projects.len().max(1))
                        .copied()
                        .unwrap_or(self.project),
                };
                let got = store
                    .write_blocking(command::SetProjectPaused { project_id, paused })
                    .unwrap();
                assert_eq!(got, paused);
                if paused {
                    self.paused_projects.insert(project_id);
                } else {
                    self.paused_projects.remove(&project_id);
                }
            }
            Op::Trim { keep } => {
                let latest = store.latest_seq();
                if latest > keep {
                    let through = latest - keep;
                    store
                        .write_blocking(command::TrimEvents {
                            through,
                            max: 100_000,
                        })
                        .unwrap();
                    self.trimmed_through = self.trimmed_through.max(through);
                }
            }
        }
    }

    /// The open gate `id` of a running run, as (project, phase).
    fn gate_of(&self, id: Id) -> Option<(Id, usize)> {
        self.runs.iter().find_map(|(p, r)| {
            let phase = r.gates.iter().position(|g| *g == Some(id))?;
            (r.status == RunStatus::Running).then_some((*p, phase))
        })
    }

    /// A pending request's deadline passed: its timeout rejects or approves it (a gate then moves
    /// as a human's answer would move it), escalates it with a fresh deadline, or, with none or
    /// once escalated, it expires (a gate's run then fails).
    fn time_out(&mut self, store: &Store, id: Id) {
        let now = self.now;
        let gate = self.gate_of(id);
        let m = self.hitl.get_mut(&id).unwrap();
        if m.status != HitlStatus::Pending {
            return;
        }
        match m.timeout {
            Some((seconds, TimeoutAction::Escalate, false)) => {
                m.expires = Some(now + seconds as i64 * SECOND);
                m.timeout = Some((seconds, TimeoutAction::Escalate, true));
            }
            Some((seconds, action @ (TimeoutAction::Approve | TimeoutAction::Reject), false)) => {
                let (status, action) = match action {
                    TimeoutAction::Approve => (HitlStatus::Approved, HitlAction::Approve),
                    _ => (HitlStatus::Rejected, HitlAction::Reject),
                };
                m.status = status;
                if let Some((project, phase)) = gate {
                    let feedback = format!("timed out after {seconds} s");
                    self.gate_answered(store, project, phase, action, &feedback);
                }
            }
            timeout => {
                m.status = HitlStatus::Expired;
                if let Some((project, phase)) = gate
                    && timeout.is_some()
                {
                    self.end_run(project, Some(phase));
                }
            }
        }
    }

    fn gate_answered(
        &mut self,
        store: &Store,
        project: Id,
        phase: usize,
        action: HitlAction,
        feedback: &str,
    ) {
        match action {
            HitlAction::Approve | HitlAction::Amend => self.hand_off(store, project, phase),
            HitlAction::Reject => {
                let run = self.runs.get_mut(&project).unwrap();
                run.statuses[phase] = PhaseStatus::Running;
                run.gates[phase] = None;
                run.items_done[phase] = 0;
                let tasks: Vec<Id> = run.tasks[phase]
                    .into_iter()
                    .chain(run.items[phase].clone())
                    .collect();
                if tasks.is_empty() {
                    // An empty fan-out: it runs again, its list (still empty) read again, and
                    // its gate asks again.
                    assert!(
                        run.for_each[phase].is_some(),
                        "a gated phase without a task"
                    );
                    self.finished(store, project, phase, None);
                    return;
                }
                // Each reopened with the feedback; the attempt counts stay.
                for task in tasks {
                    self.leave(task, TaskStatus::Pending);
                    let stored = store.get_task(&task).unwrap().unwrap();
                    assert!(
                        stored
                            .instructions
                            .ends_with(&format!("Reviewer feedback: {feedback}")),
                        "{}",
                        stored.instructions
                    );
                }
            }
        }
    }

    fn compare(&self, store: &Store) {
        for (id, m) in &self.tasks {
            let t = store.get_task(id).unwrap().expect("task");
            let got = MTask {
                project: t.project_id,
                agent: t.agent_type,
                status: t.status,
                worker: t.worker_id.clone(),
                lease: t.lease_expires_at,
                timeout: t.timeout_at,
                retry: t.retry_at,
                failures: t.failures,
                attempts: t.attempts,
                lease_id: t.lease_id,
                priority: t.priority,
            };
            assert_eq!(&got, m, "task {id}");
        }
        for (id, m) in &self.hitl {
            let h = store.get_hitl(id).unwrap().expect("request");
            assert_eq!(h.status, m.status, "request {id}");
            assert_eq!(h.expires_at, m.expires, "request {id}");
            let escalated = h
                .on_timeout
                .as_ref()
                .map(|t| (t.seconds, t.action, t.escalated));
            assert_eq!(escalated, m.timeout, "request {id}");
        }
        for (project, m) in &self.runs {
            let run = store.workflow(project).unwrap().expect("run");
            assert_eq!(run.status, m.status, "run of {project}");
            let statuses: Vec<PhaseStatus> = run.phases.iter().map(|p| p.status).collect();
            assert_eq!(statuses, m.statuses, "phases of {project}");
            let tasks: Vec<Option<Id>> = run.phases.iter().map(|p| p.task_id).collect();
            assert_eq!(tasks, m.tasks);
            let gated: Vec<bool> = run.phases.iter().map(|p| p.gated).collect();
            assert_eq!(gated, m.gated);
            let gates: Vec<Option<Id>> = run.phases.iter().map(|p| p.gate_id).collect();
            assert_eq!(gates, m.gates);
            let items: Vec<Vec<Id>> = run.phases.iter().map(|p| p.items.clone()).collect();
            assert_eq!(items, m.items);
            let done: Vec<u32> = run.phases.iter().map(|p| p.items_done).collect();
            assert_eq!(done, m.items_done);
            let project_record = store.get_project(project).unwrap().unwrap();
            assert_eq!(
                project_record.status.as_str(),
                if m.status == RunStatus::Completed {
                    "completed"
                } else {
                    "active"
                }
            );
        }
        for agent in store.agents().unwrap() {
            let want = self
                .agents
                .get(&agent.agent_type)
                .copied()
                .unwrap_or((AgentStatus::Idle, 0));
            assert_eq!(
                (agent.status, agent.working_tasks),
                want,
                "{}",
                agent.agent_type
            );
        }
        let latest = store.latest_seq();
        let (log, _) = store.events(None, 0, 1_000_000).unwrap();
        let seqs: Vec<u64> = log.iter().map(|(s, _)| *s).collect();
        // Each write keeps the newest EVENT_RETENTION; a Trim op may have cut more.
        let first = self
            .trimmed_through
            .max(latest.saturating_sub(EVENT_RETENTION))
            .min(latest)
            + 1;
        assert_eq!(seqs, (first..=latest).collect::<Vec<_>>(), "the log");
        let changes = self.changes.lock();
        for agent_type in store.agent_types() {
            let (history, _) = store.agent_history(&agent_type, None, 1000).unwrap();
            let kept: Vec<u64> = history.iter().map(|e| e.seq).collect();
            let newest: Vec<u64> = changes
                .iter()
                .rev()
                .filter(|(_, t)| t == agent_type.as_str())
                .map(|(seq, _)| *seq)
                .take(HISTORY_RETENTION as usize)
                .collect();
            assert_eq!(kept, newest, "the history of {agent_type}");
        }
        let report = store.check().unwrap();
        assert!(report.is_consistent(), "{:?}", report.problems);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn time_driven_state_matches_the_model(ops in prop::collection::vec(op(), 1..120)) {
        let dir = tempfile::tempdir().unwrap();
        let start = 1_800_000_000 * SECOND;
        let clock = Arc::new(AtomicI64::new(start));
        let reader = clock.clone();
        let mut config = StoreConfig::new(dir.path());
        config.durability = Durability::None;
        config.tasks = TaskSettings {
            task_timeout: TIMEOUT,
            max_attempts: MAX_ATTEMPTS,
            retry_backoff: BACKOFF,
            default_lease: SECOND,
            max_claim_wait: SECOND,
        };
        config.clock = Clock(Arc::new(move || reader.load(Ordering::SeqCst)));
        config.max_fan_out = MAX_FAN_OUT;
        config.event_retention = EVENT_RETENTION;
        config.agent_history_retention = HISTORY_RETENTION;
        let changes = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let published = changes.clone();
        let publisher: flightdeck::events::Publisher = Arc::new(move |events| {
            let mut published = published.lock();
            for e in events {
                let frame: serde_json::Value = serde_json::from_slice(&e.json).unwrap();
                if frame["event_type"] == "agent_status_change" {
                    let agent_type = frame["agent_type"].as_str().unwrap().to_string();
                    published.push((e.seq, agent_type));
                }
            }
        });
        let store = Store::open(&config, publisher).unwrap();
        let project = store
            .write_blocking(command::CreateProject { name: "timed".into(), description: None })
            .unwrap();
        let body: flightdeck::domain::workflow::DefinitionBody =
            serde_json::from_str(DIAMOND).unwrap();
        store
            .write_blocking(command::PutWorkflow {
                name: "diamond".into(),
                json: DIAMOND.into(),
                body,
            })
            .unwrap();
        let mut model = Model {
            now: start,
            project: project.id,
            task_ids: Vec::new(),
            tasks: BTreeMap::new(),
            hitl_ids: Vec::new(),
            hitl: BTreeMap::new(),
            runs: BTreeMap::new(),
            agents: BTreeMap::new(),
            trimmed_through: 0,
            changes,
            stale: BTreeMap::new(),
            turn: BTreeMap::new(),
            queues: BTreeMap::new(),
            paused_projects: std::collections::BTreeSet::new(),
            outputs: BTreeMap::new(),
            budget: None,
            reports: Vec::new(),
        };
        for op in &ops {
            model.step(&store, &clock, op);
            model.compare(&store);
        }
        store.close();
    }
}

/// A claim waiting while a daily budget over everything is exhausted is handed the held task by
/// the commit of the day's end (the budget's window timer), not at its next try.
#[test]
fn the_end_of_an_exhausted_day_hands_the_held_task_to_the_waiting_claim() {
    let dir = tempfile::tempdir().unwrap();
    // An hour before a UTC midnight.
    let start = (1_800_000_000 * SECOND).div_euclid(DAY) * DAY + DAY - 3600 * SECOND;
    let clock = Arc::new(AtomicI64::new(start));
    let reader = clock.clone();
    let mut config = StoreConfig::new(dir.path());
    config.durability = Durability::None;
    config.clock = Clock(Arc::new(move || reader.load(Ordering::SeqCst)));
    let store = Store::open(&config, no_publisher()).unwrap();
    let project = store
        .write_blocking(command::CreateProject {
            name: "spend".into(),
            description: None,
        })
        .unwrap();
    let agent = flightdeck::domain::AgentType::parse("coder").unwrap();
    let task = store
        .write_blocking(command::CreateTask {
            project_id: project.id,
            agent_type: agent.clone(),
            instructions: "x".into(),
            context_ids: Vec::new(),
            priority: 3,
        })
        .unwrap();
    store
        .write_blocking(command::PutBudget {
            scope: flightdeck::domain::budget::BudgetScope::Global,
            max_cost_nanos: None,
            max_tokens: Some(10),
            window: flightdeck::domain::budget::Window::Day,
            warn_percent: 80,
        })
        .unwrap();
    let claimed = store
        .write_blocking(command::Claim {
            agent_type: agent.clone(),
            worker_id: "w1".into(),
            lease: 600 * SECOND,
            claimer: None,
        })
        .unwrap()
        .expect("the task");
    // Its report uses the day's budget up: the task goes back to pending, held.
    let report = flightdeck::domain::usage::UsageReport::new(
        "",
        "r1".into(),
        "m".into(),
        None,
        flightdeck::domain::usage::Tokens {
            input: 10,
            ..Default::default()
        },
        None,
    )
    .unwrap();
    let done = store
        .write_blocking(command::ReportUsage {
            task_id: task.id,
            lease_id: claimed.lease_id,
            worker_id: None,
            reports: vec![report],
            hold: true,
        })
        .unwrap();
    assert!(done.held.is_some(), "the report used the budget up");
    let refused = store
        .write_blocking(command::Claim {
            agent_type: agent.clone(),
            worker_id: "w2".into(),
            lease: 600 * SECOND,
            claimer: None,
        })
        .unwrap();
    assert!(refused.is_none(), "an exhausted budget holds its work");
    // A claim waits; half an hour on, the day has not ended and nothing comes.
    let mut ticket = store.wait_for_task(
        store.agent_id(&agent).unwrap(),
        "w2".into(),
        600 * SECOND,
        None,
    );
    for (at, handed) in [
        (start + 1800 * SECOND, false),
        (start + 3601 * SECOND, true),
    ] {
        clock.store(at, Ordering::SeqCst);
        store
            .write_blocking(command::FireTimers { now: at, max: 1000 })
            .unwrap();
        match ticket.task.try_recv() {
            Ok(t) => {
                assert!(handed, "handed before the day ended");
                assert_eq!(t.id, task.id);
                assert_eq!(t.worker_id.as_deref(), Some("w2"));
                assert_eq!(t.status, TaskStatus::Working);
            }
            Err(e) => assert!(!handed, "not handed at the day's end: {e:?}"),
        }
    }
    let budget = store
        .budget(&flightdeck::domain::budget::BudgetScope::Global)
        .unwrap()
        .unwrap();
    assert_eq!(budget.window_start, start + 3600 * SECOND, "the new day");
    assert_eq!(budget.used.tokens.total(), 0);
    assert!(store.check().unwrap().is_consistent());
    store.close();
}
