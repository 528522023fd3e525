//! Table definitions and the composite keys of the secondary indexes. Every index key ends with the
//! 16-byte id of the record it points at, so a prefix range scan yields ids in creation order.

use redb::TableDefinition;

use crate::domain::{Id, Vocabulary};

use crate::domain::records::{Artifact, HitlRequest, Task};

/// The schema version this build writes. Opening a database with a newer one fails; an older one
/// is migrated (`store::migrate`). 2: agent changes caused by a task are in its project's stream.
/// 3: tasks carry their claim's `lease_id`. 4: HITL requests record who answered them. 5: each
/// record kind's project indexes share one table (`TASK_INDEX`, `ARTIFACT_INDEX`, `HITL_INDEX`).
/// 6: agent and artifact types are names interned into two-byte ids (`TYPE_NAMES`), which the
/// index keys hold where they held a one-byte enum code. 7: workflow runs are graphs of phases,
/// tasks carry a phase's `workflow` context, and definitions are stored through the API
/// (`WORKFLOW_DEFS`). 8: the usage ledger (`USAGE` and the tables after it).
pub const SCHEMA_VERSION: u64 = 9;

pub const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
pub const META_SCHEMA_VERSION: &str = "schema_version";
/// The newest seq ever assigned, so seqs are never reused even if the log is trimmed to nothing.
pub const META_LAST_SEQ: &str = "last_seq";
/// When the last readiness probe wrote (microseconds since the epoch).
pub const META_PROBE: &str = "probe_at";
/// The LSN of the last write-ahead log record the database holds (`store::wal`): replay starts
/// after the one its durable state holds.
pub const META_WAL_LSN: &str = "wal_lsn";

pub const PROJECTS: TableDefinition<&[u8; 16], &[u8]> = TableDefinition::new("projects");
pub const TASKS: TableDefinition<&[u8; 16], &[u8]> = TableDefinition::new("tasks");
pub const ARTIFACTS: TableDefinition<&[u8; 16], &[u8]> = TableDefinition::new("artifacts");
pub const HITL: TableDefinition<&[u8; 16], &[u8]> = TableDefinition::new("hitl");
/// (kind: 0 agent types, 1 artifact types; id) → the name. Ids are given in order from 0; the
/// defaults hold the ids their enum codes had. Schema 6.
pub const TYPE_NAMES: TableDefinition<(u8, u16), &str> = TableDefinition::new("type_names");
/// Keyed by agent type id (schema 6; the enum code before).
pub const AGENTS: TableDefinition<u16, &[u8]> = TableDefinition::new("agents");
/// (agent type id big-endian, event seq big-endian).
pub const AGENT_HISTORY: TableDefinition<&[u8; 10], &[u8]> = TableDefinition::new("agent_history");
/// Keyed by the global event seq.
pub const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");

/// A task's entries under its project: (project, tag, code, task) with the tags below, all in one
/// tree, so that the entries a write moves sit under one project's prefix and share the upper
/// pages of their paths, where one tree per index had a whole root-to-leaf path copied for each at
/// every commit. Schema 5; it replaced
/// `ix_tasks_project`, `ix_tasks_project_status` and `ix_tasks_project_agent`.
pub const TASK_INDEX: TableDefinition<&[u8; 35], ()> = TableDefinition::new("ix_tasks");
/// Every task of the project (code 0).
pub const TASK_ALL: u8 = 0;
/// By status (code: the status's).
pub const TASK_BY_STATUS: u8 = 1;
/// By agent type (code: the agent type's).
pub const TASK_BY_AGENT: u8 = 2;
/// (agent type id, status code, priority, project, task): the claim queue, highest priority
/// first, then project by project, oldest first within one. Schema 3; it replaced
/// `ix_tasks_agent_status` (agent type, status, task).
pub const TASKS_CLAIM: TableDefinition<&[u8; 36], ()> = TableDefinition::new("ix_tasks_claim");
/// (agent type id, pending since in microseconds big-endian, task): pending tasks only, oldest
/// first: the queue's oldest pending task. Schema 3.
pub const TASKS_PENDING_SINCE: TableDefinition<&[u8; 26], ()> =
    TableDefinition::new("ix_tasks_pending_since");
/// Creates remembered by idempotency key (a digest of the route and the key). Schema 3.
pub const IDEMPOTENCY: TableDefinition<&[u8; 20], &[u8]> = TableDefinition::new("idempotency");
/// (remembered at, big-endian microseconds; key digest): for trimming the oldest. Schema 3.
pub const IDEMPOTENCY_BY_AGE: TableDefinition<&[u8; 28], ()> =
    TableDefinition::new("ix_idempotency_age");

/// (when remembered, key): an entry of `IDEMPOTENCY_BY_AGE`.
pub fn idempotency_age_key(at: i64, key: &[u8; 20]) -> [u8; 28] {
    let mut k = [0u8; 28];
    k[..8].copy_from_slice(&(at.max(0) as u64).to_be_bytes());
    k[8..].copy_from_slice(key);
    k
}

/// The usage ledger: one entry per model-usage report, by its id (UUIDv7: in the order
/// reported). Schema 8, as are the usage tables below.
pub const USAGE: TableDefinition<&[u8; 16], &[u8]> = TableDefinition::new("usage");
/// (task, the worker's `report_id`) → the entry: a report repeated counts once.
pub const USAGE_REPORTS: TableDefinition<(&[u8; 16], &str), &[u8; 16]> =
    TableDefinition::new("usage_reports");
/// (scope: `USAGE_TASK` and the others below, then 16 bytes naming it) → `UsageTotals`.
pub const USAGE_TOTALS: TableDefinition<&[u8; 17], &[u8]> = TableDefinition::new("usage_totals");
/// A task's totals (its id follows).
pub const USAGE_TASK: u8 = 0;
/// A project's totals (its id follows).
pub const USAGE_PROJECT: u8 = 1;
/// An agent type's totals (its id, two bytes big-endian, then zeros).
pub const USAGE_AGENT: u8 = 2;
/// Everything's totals (zeros follow).
pub const USAGE_ALL: u8 = 3;
/// (project, hour since the epoch, agent type id, model or `other`) → `UsageTotals`.
pub const USAGE_HOURLY: TableDefinition<(&[u8; 16], u32, u16, &str), &[u8]> =
    TableDefinition::new("usage_hourly");
/// (hour since the epoch, agent type id, model or `other`) → `UsageTotals`, all projects.
pub const USAGE_HOURLY_ALL: TableDefinition<(u32, u16, &str), &[u8]> =
    TableDefinition::new("usage_hourly_all");
/// The model names kept apart (at most `--max-models`); the others count as `other`.
pub const USAGE_MODELS: TableDefinition<&str, ()> = TableDefinition::new("usage_models");
/// Budgets by scope (`global`, `project:{id}`, `agent_type:{name}`): limits, window, what the
/// current window used and the state. Schema 8.
pub const BUDGETS: TableDefinition<&str, &[u8]> = TableDefinition::new("budgets");
/// The model label of reports past `--max-models` distinct models.
pub const OTHER_MODEL: &str = "other";

/// A `USAGE_TOTALS` key.
pub fn usage_totals_key(scope: u8, id: &[u8]) -> [u8; 17] {
    let mut k = [0u8; 17];
    k[0] = scope;
    k[1..1 + id.len().min(16)].copy_from_slice(&id[..id.len().min(16)]);
    k
}

/// Queue settings by agent type id. Schema 3.
pub const QUEUES: TableDefinition<u16, &[u8]> = TableDefinition::new("queues");
/// Paused projects (their tasks are not handed out). Schema 3.
pub const PAUSED_PROJECTS: TableDefinition<&[u8; 16], ()> = TableDefinition::new("paused_projects");
/// Per configured webhook (by name): the seq of the last event it has handled (delivered, or
/// skipped by its filter). Since schema 4.
pub const WEBHOOK_CURSORS: TableDefinition<&str, u64> = TableDefinition::new("webhook_cursors");
/// (webhook name, event seq): the events a webhook gave up on (`DeadLetter`), at most
/// `DEAD_LETTERS_KEPT` per webhook.
pub const WEBHOOK_DEAD_LETTERS: TableDefinition<(&str, u64), &[u8]> =
    TableDefinition::new("webhook_dead_letters");
/// Dead letters kept per webhook; beyond, the oldest are dropped (and logged).
pub const DEAD_LETTERS_KEPT: usize = 1000;
/// The name of the API key whose claim a task last went to (when keys are on): who may not
/// answer an approval about it (`self_approval`).
pub const TASK_CLAIMERS: TableDefinition<&[u8; 16], &str> = TableDefinition::new("task_claimers");
/// A project's workflow, keyed by project.
pub const WORKFLOWS: TableDefinition<&[u8; 16], &[u8]> = TableDefinition::new("workflows");
/// Workflow definitions stored through the API, by name (`StoredWorkflow`: the version and the
/// client's JSON text, none once deleted so that a version is never reused). Schema 7.
pub const WORKFLOW_DEFS: TableDefinition<&str, &[u8]> = TableDefinition::new("workflow_defs");
/// Timers that survive restarts: (deadline, kind, id).
pub const TIMERS: TableDefinition<&[u8; 25], ()> = TableDefinition::new("timers");
/// An artifact's entries under its project, (project, tag, code, artifact), as `TASK_INDEX` has
/// them for tasks. Schema 5; it replaced `ix_artifacts_project`, `ix_artifacts_project_type` and
/// `ix_artifacts_project_source`.
pub const ARTIFACT_INDEX: TableDefinition<&[u8; 35], ()> = TableDefinition::new("ix_artifacts");
/// Every artifact of the project (code 0).
pub const ARTIFACT_ALL: u8 = 0;
/// By artifact type (code: the type's).
pub const ARTIFACT_BY_TYPE: u8 = 1;
/// By source agent (code: the agent type's).
pub const ARTIFACT_BY_SOURCE: u8 = 2;
/// A HITL request's entries under its project, (project, tag, code, request). Schema 5; it
/// replaced `ix_hitl_project` and `ix_hitl_project_status`.
pub const HITL_INDEX: TableDefinition<&[u8; 35], ()> = TableDefinition::new("ix_hitl");
/// Every request of the project (code 0).
pub const HITL_ALL: u8 = 0;
/// By status (code: the status's).
pub const HITL_BY_STATUS_IN_PROJECT: u8 = 1;
/// (status code, hitl): across projects.
pub const HITL_BY_STATUS: TableDefinition<&[u8; 17], ()> = TableDefinition::new("ix_hitl_status");
/// The pseudo-project under which events without a project are indexed (no UUIDv7 is all zeros).
pub const GLOBAL_STREAM: Id = Id([0; 16]);

/// (project or `GLOBAL_STREAM`, event seq big-endian)
pub const EVENTS_BY_PROJECT: TableDefinition<&[u8; 24], ()> =
    TableDefinition::new("ix_events_project");

/// An entry of a project-prefixed index (`TASK_INDEX`, `ARTIFACT_INDEX`, `HITL_INDEX`): the code
/// is a status's code or a type's id.
pub fn project_key(project: &Id, tag: u8, code: u16, id: &Id) -> [u8; 35] {
    let mut k = [0u8; 35];
    k[..19].copy_from_slice(&project_prefix(project, tag, code));
    k[19..].copy_from_slice(&id.0);
    k
}

/// The prefix of one project's entries of one tag and code: a range scan under it yields their
/// ids in creation order.
pub fn project_prefix(project: &Id, tag: u8, code: u16) -> [u8; 19] {
    let mut k = [0u8; 19];
    k[..16].copy_from_slice(&project.0);
    k[16] = tag;
    k[17..19].copy_from_slice(&code.to_be_bytes());
    k
}

/// (agent type id, status, priority, project, task).
pub fn claim_key(agent: u16, status: u8, priority: u8, project: &Id, id: &Id) -> [u8; 36] {
    let mut k = [0u8; 36];
    k[..2].copy_from_slice(&agent.to_be_bytes());
    k[2] = status;
    k[3] = priority;
    k[4..20].copy_from_slice(&project.0);
    k[20..].copy_from_slice(&id.0);
    k
}

/// The ids index keys hold for the types a record names (`store::types`). A name without one
/// (never in the writer, which interns a record's names before it indexes it) maps to
/// `UNKNOWN_TYPE`, so a check finds its entries missing.
pub trait TypeIds {
    fn agent(&self, name: &crate::domain::AgentType) -> u16;
    fn artifact(&self, name: &crate::domain::ArtifactType) -> u16;
}

/// The id of a name a registry does not hold.
pub const UNKNOWN_TYPE: u16 = u16::MAX;

impl TypeIds for super::types::Registry {
    fn agent(&self, name: &crate::domain::AgentType) -> u16 {
        super::types::Registry::agent(self, name).unwrap_or(UNKNOWN_TYPE)
    }
    fn artifact(&self, name: &crate::domain::ArtifactType) -> u16 {
        super::types::Registry::artifact(self, name).unwrap_or(UNKNOWN_TYPE)
    }
}

/// What a timer does when it fires.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum TimerKind {
    /// A claim's lease ran out: the task goes back to pending.
    LeaseExpiry = 0,
    /// The task has worked longer than the timeout: a failed attempt.
    WorkTimeout = 1,
    /// A failed task goes back to pending.
    Retry = 2,
    /// A pending HITL request expires.
    HitlExpiry = 3,
    /// A budget's day or month ends: its use starts again from nothing.
    BudgetWindow = 4,
}

impl TimerKind {
    pub fn from_code(code: u8) -> Option<TimerKind> {
        [
            TimerKind::LeaseExpiry,
            TimerKind::WorkTimeout,
            TimerKind::Retry,
            TimerKind::HitlExpiry,
            TimerKind::BudgetWindow,
        ]
        .get(usize::from(code))
        .copied()
    }
}

/// (deadline in microseconds big-endian, kind, record id): range-scanned up to now.
pub fn timer_key(deadline: i64, kind: TimerKind, id: &Id) -> [u8; 25] {
    let mut k = [0u8; 25];
    k[..8].copy_from_slice(&(deadline.max(0) as u64).to_be_bytes());
    k[8] = kind as u8;
    k[9..].copy_from_slice(&id.0);
    k
}

/// A pending task's entry in the pending-since index (a pending task does not change until it
/// leaves pending, so its `updated_at` is when it became pending).
pub fn pending_since_key(t: &Task, ids: &dyn TypeIds) -> Option<[u8; 26]> {
    (t.status == crate::domain::TaskStatus::Pending).then(|| {
        let mut k = [0u8; 26];
        k[..2].copy_from_slice(&ids.agent(&t.agent_type).to_be_bytes());
        k[2..10].copy_from_slice(&(t.updated_at.max(0) as u64).to_be_bytes());
        k[10..].copy_from_slice(&t.id.0);
        k
    })
}

/// The project of a claim key.
pub fn claim_key_project(key: &[u8; 36]) -> Id {
    let mut id = [0u8; 16];
    id.copy_from_slice(&key[4..20]);
    Id(id)
}

/// The timers a task's state calls for: lease expiry, work timeout, retry (in that order).
pub fn task_timers(t: &Task) -> [Option<[u8; 25]>; 3] {
    let working = t.status == crate::domain::TaskStatus::Working;
    let failed = t.status == crate::domain::TaskStatus::Failed;
    [
        t.lease_expires_at
            .filter(|_| working)
            .map(|at| timer_key(at, TimerKind::LeaseExpiry, &t.id)),
        t.timeout_at
            .filter(|_| working)
            .map(|at| timer_key(at, TimerKind::WorkTimeout, &t.id)),
        t.retry_at
            .filter(|_| failed)
            .map(|at| timer_key(at, TimerKind::Retry, &t.id)),
    ]
}

/// The expiry timer a pending HITL request with an `expires_at` calls for.
pub fn hitl_timer(h: &HitlRequest) -> Option<[u8; 25]> {
    h.expires_at
        .filter(|_| h.status == crate::domain::HitlStatus::Pending)
        .map(|at| timer_key(at, TimerKind::HitlExpiry, &h.id))
}

/// A budget's timer: the end of the window it counts in (none for a `total` one). Its id is drawn
/// from the scope's key, so that each budget has its own.
pub fn budget_timer(b: &crate::domain::budget::Budget) -> Option<[u8; 25]> {
    use sha2::Digest;
    let (_, end) = b.window.bounds(b.window_start);
    let digest = sha2::Sha256::digest(b.scope.key().as_bytes());
    let mut id = [0u8; 16];
    id.copy_from_slice(&digest[..16]);
    end.map(|at| timer_key(at, TimerKind::BudgetWindow, &Id(id)))
}

pub fn status_key(code: u8, id: &Id) -> [u8; 17] {
    let mut k = [0u8; 17];
    k[0] = code;
    k[1..].copy_from_slice(&id.0);
    k
}

pub fn event_project_key(project: &Id, seq: u64) -> [u8; 24] {
    let mut k = [0u8; 24];
    k[..16].copy_from_slice(&project.0);
    k[16..].copy_from_slice(&seq.to_be_bytes());
    k
}

pub fn agent_history_key(agent: u16, seq: u64) -> [u8; 10] {
    let mut k = [0u8; 10];
    k[..2].copy_from_slice(&agent.to_be_bytes());
    k[2..].copy_from_slice(&seq.to_be_bytes());
    k
}

/// The id at the end of an index key.
pub fn trailing_id<const N: usize>(key: &[u8; N]) -> Id {
    let mut id = [0u8; 16];
    id.copy_from_slice(&key[N - 16..]);
    Id(id)
}

/// What compares an index table with the entries its records call for (`store::check` does):
/// the `indexes!` registry hands it every table a record kind has, without depending on it.
pub(crate) trait IndexCheck {
    type Error;
    fn index<const N: usize>(
        &mut self,
        table: redb::TableDefinition<'static, &'static [u8; N], ()>,
        expected: Vec<[u8; N]>,
    ) -> Result<(), Self::Error>;
}

/// Declares a record kind's secondary indexes once: the entries it has in its project-prefixed
/// table (each with its tag) and in tables of their own, and how each key derives from a record.
/// From that come the keys type (`of`), the writer's opened tables with their maintenance
/// (`reindex`), and the consistency check of every index (`check`).
macro_rules! indexes {
    ($(#[$doc:meta])* $keys:ident, $open:ident for $record:ty {
        $shared:ident {
            $($(#[$pdoc:meta])* $pfield:ident = |$pr:ident, $pids:ident| $pderive:expr;)+
        }
        $($(#[$fdoc:meta])* $field:ident: $table:ident [$n:literal] = |$r:ident, $ids:ident| $derive:expr;)*
    }) => {
        $(#[$doc])*
        #[derive(Debug, PartialEq, Eq, Clone, Copy)]
        pub struct $keys {
            $($(#[$pdoc])* pub $pfield: [u8; 35],)+
            $($(#[$fdoc])* pub $field: [u8; $n],)*
        }

        impl $keys {
            /// The index tables' names.
            #[cfg(test)]
            pub const TABLES: &[&str] = &[stringify!($shared) $(, stringify!($table))*];

            /// The record's entries in its project-prefixed table.
            pub fn shared(self) -> impl Iterator<Item = [u8; 35]> {
                [$(self.$pfield),+].into_iter()
            }

            #[allow(unused_variables)]
            pub fn of(record: &$record, ids: &dyn TypeIds) -> $keys {
                $keys {
                    $($pfield: (|$pr: &$record, $pids: &dyn TypeIds| $pderive)(record, ids),)+
                    $($field: (|$r: &$record, $ids: &dyn TypeIds| $derive)(record, ids),)*
                }
            }

            /// Hands each index table, with the entries the records call for, to `checker`;
            /// those named in `absent` (tables the database's older schema does not have) are
            /// skipped.
            pub(crate) fn check<C: IndexCheck>(
                keys: &[$keys],
                absent: &[&str],
                checker: &mut C,
            ) -> Result<(), C::Error> {
                if !absent.contains(&stringify!($shared)) {
                    let expected = keys.iter().copied().flat_map($keys::shared).collect();
                    checker.index($shared, expected)?;
                }
                $(if !absent.contains(&stringify!($table)) {
                    checker.index($table, keys.iter().map(|k| k.$field).collect())?;
                })*
                Ok(())
            }
        }

        /// The index tables opened in a write transaction.
        pub(crate) struct $open<'t> {
            /// The project-prefixed table.
            pub shared: crate::store::wal::Logged<'t, &'static [u8; 35], ()>,
            $(pub $field: crate::store::wal::Logged<'t, &'static [u8; $n], ()>,)*
        }

        impl<'t> $open<'t> {
            pub fn open(txn: &'t crate::store::wal::LoggedTxn) -> Result<$open<'t>, redb::TableError> {
                Ok($open {
                    shared: txn.open_table($shared)?,
                    $($field: txn.open_table($table)?,)*
                })
            }

            /// Moves every index entry from `old`'s keys to `new`'s: `None` for a record created
            /// (no old keys) or deleted (no new ones).
            pub fn reindex(
                &mut self,
                record: Versions<&$record>,
                ids: &dyn TypeIds,
            ) -> Result<(), redb::StorageError> {
                let Versions { old, new } = record;
                let old = old.map(|r| $keys::of(r, ids));
                let new = new.map(|r| $keys::of(r, ids));
                $(move_key(&mut self.shared, Versions { old: old.map(|k| k.$pfield), new: new.map(|k| k.$pfield) })?;)+
                $(move_key(&mut self.$field, Versions { old: old.map(|k| k.$field), new: new.map(|k| k.$field) })?;)*
                Ok(())
            }
        }
    };
}

indexes! {
    /// The index keys a task has.
    TaskKeys, TaskIndexes for Task {
        TASK_INDEX {
            by_project = |t, ids| project_key(&t.project_id, TASK_ALL, 0, &t.id);
            by_status = |t, ids| {
                project_key(&t.project_id, TASK_BY_STATUS, t.status.code().into(), &t.id)
            };
            by_agent = |t, ids| {
                project_key(&t.project_id, TASK_BY_AGENT, ids.agent(&t.agent_type), &t.id)
            };
        }
        /// The claim queue (`TASKS_CLAIM`).
        claim: TASKS_CLAIM [36] = |t, ids| claim_key(
            ids.agent(&t.agent_type),
            t.status.code(),
            t.priority,
            &t.project_id,
            &t.id,
        );
    }
}

indexes! {
    /// The index keys an artifact has.
    ArtifactKeys, ArtifactIndexes for Artifact {
        ARTIFACT_INDEX {
            by_project = |a, ids| project_key(&a.project_id, ARTIFACT_ALL, 0, &a.id);
            by_type = |a, ids| {
                project_key(&a.project_id, ARTIFACT_BY_TYPE, ids.artifact(&a.artifact_type), &a.id)
            };
            by_source = |a, ids| {
                project_key(&a.project_id, ARTIFACT_BY_SOURCE, ids.agent(&a.source_agent), &a.id)
            };
        }
    }
}

indexes! {
    /// The index keys a HITL request has.
    HitlKeys, HitlIndexes for HitlRequest {
        HITL_INDEX {
            by_project = |h, ids| project_key(&h.project_id, HITL_ALL, 0, &h.id);
            by_project_status = |h, ids| {
                project_key(
                    &h.project_id,
                    HITL_BY_STATUS_IN_PROJECT,
                    h.status.code().into(),
                    &h.id,
                )
            };
        }
        by_status: HITL_BY_STATUS [17] = |h, ids| status_key(h.status.code(), &h.id);
    }
}

/// A thing before and after a write: no old one for a thing created, no new one for a thing
/// deleted.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Versions<T> {
    pub old: Option<T>,
    pub new: Option<T>,
}

/// Moves an index entry from its old key to its new one; nothing when they are equal.
pub(crate) fn move_key<const N: usize>(
    index: &mut crate::store::wal::Logged<'_, &'static [u8; N], ()>,
    keys: Versions<[u8; N]>,
) -> Result<(), redb::StorageError> {
    let Versions { old, new } = keys;
    if old == new {
        return Ok(());
    }
    if let Some(old) = old {
        index.remove(&old)?;
    }
    if let Some(new) = new {
        index.insert(&new, ())?;
    }
    Ok(())
}

/// Every table of the schema, named once: `$apply!(TABLE)` for each. Opening a database and
/// taking a backup go through this list, and a test checks it against the tables a database
/// really holds, so a new table cannot be left out of either.
macro_rules! for_each_table {
    ($apply:ident) => {
        $apply!(META);
        $apply!(PROJECTS);
        $apply!(TASKS);
        $apply!(ARTIFACTS);
        $apply!(HITL);
        $apply!(TYPE_NAMES);
        $apply!(AGENTS);
        $apply!(AGENT_HISTORY);
        $apply!(EVENTS);
        $apply!(WORKFLOWS);
        $apply!(WORKFLOW_DEFS);
        $apply!(TIMERS);
        $apply!(TASK_INDEX);
        $apply!(TASKS_CLAIM);
        $apply!(TASKS_PENDING_SINCE);
        $apply!(QUEUES);
        $apply!(PAUSED_PROJECTS);
        $apply!(IDEMPOTENCY);
        $apply!(IDEMPOTENCY_BY_AGE);
        $apply!(WEBHOOK_CURSORS);
        $apply!(WEBHOOK_DEAD_LETTERS);
        $apply!(TASK_CLAIMERS);
        $apply!(ARTIFACT_INDEX);
        $apply!(HITL_INDEX);
        $apply!(HITL_BY_STATUS);
        $apply!(EVENTS_BY_PROJECT);
        $apply!(USAGE);
        $apply!(USAGE_REPORTS);
        $apply!(USAGE_TOTALS);
        $apply!(USAGE_HOURLY);
        $apply!(USAGE_HOURLY_ALL);
        $apply!(USAGE_MODELS);
        $apply!(BUDGETS);
    };
}
pub(crate) use for_each_table;
