//! The consistency check: every index entry points at a record that has that key, every record has
//! all its index entries, and the event log is gap-free.

use std::path::Path;

use redb::{ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;

use crate::domain::Id;

use super::StoreError;
use super::codec::decode;
use super::tables::{self, ArtifactKeys, HitlKeys, TaskKeys, trailing_id};
use super::types::Registry;
use crate::domain::records::{
    Agent, AgentHistoryEntry, Artifact, EventRecord, HitlRequest, IdempotencyRecord, Project,
    QueueSettings, Task, WorkflowRun,
};

/// What the check found. `problems` is empty for a consistent database.
#[derive(Debug, Default)]
pub struct CheckReport {
    pub records: u64,
    pub index_entries: u64,
    pub events: u64,
    /// Write-ahead log records the database does not hold yet: the next start replays them
    /// (`check` itself changes nothing).
    pub log_pending: u64,
    pub problems: Vec<String>,
}

impl CheckReport {
    pub fn is_consistent(&self) -> bool {
        self.problems.is_empty()
    }

    fn problem(&mut self, text: String) {
        // A badly broken database could list millions; the first thousand say enough.
        if self.problems.len() < 1000 {
            self.problems.push(text);
        }
    }
}

/// Checks the database in `data_dir`. The server must not be running on it (redb allows one
/// process at a time).
pub fn check_database(data_dir: &Path) -> Result<CheckReport, StoreError> {
    let db = super::open_existing(data_dir)?;
    // The log: every record after the database's durable state read and its frame and operations
    // checked, as the next start would replay them.
    let log = super::wal::check_log(
        &db,
        &super::wal::Files {
            dir: data_dir.join(super::WAL_DIR),
        },
    )?;
    let mut report = check_database_file(data_dir, db)?;
    report.log_pending = log.pending;
    if let Some(problem) = log.problem {
        report.problem(format!("write-ahead log: {problem}"));
    }
    Ok(report)
}

fn check_database_file(data_dir: &Path, db: redb::Database) -> Result<CheckReport, StoreError> {
    let version = db
        .begin_read()?
        .open_table(tables::META)?
        .get(tables::META_SCHEMA_VERSION)?
        .map(|v| v.value());
    match version {
        // Its index keys held one-byte enum codes, in tables of other key widths: it is checked
        // as the server would migrate it, in a copy (the file itself is left as it is).
        Some(v) if v < 6 => {
            drop(db);
            let copy = tempfile::Builder::new()
                .prefix(".check-")
                .tempdir_in(data_dir)
                .map_err(|e| StoreError::storage("cannot make the copy to check", e))?;
            let path = copy.path().join(super::config::DB_FILE);
            std::fs::copy(data_dir.join(super::config::DB_FILE), &path)
                .map_err(|e| StoreError::storage("cannot copy the database to check", e))?;
            let db = redb::Database::open(&path)
                .map_err(|e| StoreError::storage("cannot open the copy to check", e))?;
            super::shared::init_schema(&db)?;
            check_open(&db)
        }
        _ => check_open(&db),
    }
}

/// The check on an open database, inside one read transaction (a consistent snapshot).
pub(crate) fn check_open(db: &redb::Database) -> Result<CheckReport, StoreError> {
    let txn = db.begin_read()?;
    let mut report = CheckReport::default();
    let version = txn
        .open_table(tables::META)?
        .get(tables::META_SCHEMA_VERSION)?
        .map(|v| v.value());
    match version {
        Some(v) if v > tables::SCHEMA_VERSION => {
            return Err(StoreError::NewerSchema {
                found: v,
                supported: tables::SCHEMA_VERSION,
            });
        }
        Some(_) => {}
        None => report.problem("meta: no schema version".into()),
    }
    // An older database is checked as it is: its records in the shape its version wrote. Its
    // index keys before schema 6 held enum codes, in tables of other key widths, which this build
    // cannot open: such a database is checked once the server has migrated it.
    let version = version.unwrap_or(tables::SCHEMA_VERSION);
    if version < 6 {
        report.problem(format!(
            "meta: schema {version} is older than 6, whose index keys this build cannot read (`flightdeck check` checks such a file as migrated, in a copy)"
        ));
        return Ok(report);
    }
    let types = {
        let table = txn.open_table(tables::TYPE_NAMES)?;
        let allowed = super::StoreConfig::new(".");
        match super::types::Registry::load(&table, allowed.agent_types, allowed.artifact_types) {
            Ok(types) => {
                report.records += (types.agents.len() + types.artifacts.len()) as u64;
                types
            }
            Err(e) => {
                report.problem(format!("type_names: {e}"));
                return Ok(report);
            }
        }
    };
    // Timers are an index derived from tasks and HITL requests; so is the pending-since index.
    let mut timers = Vec::new();
    let mut pending = Vec::new();
    check_tasks(
        &txn,
        version,
        &mut report,
        &mut timers,
        &mut pending,
        &types,
    )?;
    check_index(&txn, tables::TASKS_PENDING_SINCE, pending, &mut report)?;
    check_queues(&txn, &mut report, &types)?;
    check_artifacts(&txn, version, &mut report, &types)?;
    check_hitl(&txn, version, &mut report, &mut timers, &types)?;
    if version >= 9 {
        // Since schema 9 each budget of a day or month window has its window's timer.
        let budgets = txn.open_table(tables::BUDGETS)?;
        for entry in budgets.iter()? {
            if let Ok(b) = decode::<crate::domain::budget::Budget>(entry?.1.value()) {
                timers.extend(tables::budget_timer(&b));
            }
        }
    }
    check_index(&txn, tables::TIMERS, timers, &mut report)?;
    check_workflows(&txn, version, &mut report)?;
    if version >= 7 {
        check_workflow_defs(&txn, &mut report)?;
    }
    check_events(&txn, &mut report)?;
    check_records::<Project>(&txn, tables::PROJECTS, &mut report, |p| p.id, |_| {})?;
    check_agents(&txn, &mut report, &types)?;
    if version >= 8 {
        check_usage(&txn, &mut report, &types)?;
    }
    Ok(report)
}

/// The usage ledger against what is derived from it: each entry's report index, the totals of
/// every task, project, agent type and of all, and the hourly rollups (models past the kept
/// ones summed as `other`); every derived row must be what the entries sum to, and no more.
fn check_usage(
    txn: &ReadTransaction,
    report: &mut CheckReport,
    types: &Registry,
) -> Result<(), StoreError> {
    use crate::domain::usage::{UsageEntry, UsageTotals, hour_of};
    use std::collections::BTreeMap;
    let models = txn.open_table(tables::USAGE_MODELS)?;
    let mut reports: BTreeMap<(Id, String), Id> = BTreeMap::new();
    let mut totals: BTreeMap<[u8; 17], UsageTotals> = BTreeMap::new();
    let mut hourly: BTreeMap<(Id, u32, u16, String), UsageTotals> = BTreeMap::new();
    let mut hourly_all: BTreeMap<(u32, u16, String), UsageTotals> = BTreeMap::new();
    let ledger = txn.open_table(tables::USAGE)?;
    for entry in ledger.iter()? {
        let (key, value) = entry?;
        let id = Id(*key.value());
        report.records += 1;
        let e: UsageEntry = match decode(value.value()) {
            Ok(e) => e,
            Err(err) => {
                report.problem(format!("usage {id}: {err}"));
                continue;
            }
        };
        if e.id != id {
            report.problem(format!("usage {id}: holds the entry of {}", e.id));
        }
        let Some(agent) = types.agent(&e.agent_type) else {
            report.problem(format!("usage {id}: agent type {} has no id", e.agent_type));
            continue;
        };
        reports.insert((e.task_id, e.report_id.clone()), id);
        let mut agent_key = [0u8; 16];
        agent_key[..2].copy_from_slice(&agent.to_be_bytes());
        for (scope, key) in [
            (tables::USAGE_TASK, *e.task_id.as_bytes()),
            (tables::USAGE_PROJECT, *e.project_id.as_bytes()),
            (tables::USAGE_AGENT, agent_key),
            (tables::USAGE_ALL, [0u8; 16]),
        ] {
            totals
                .entry(tables::usage_totals_key(scope, &key))
                .or_default()
                .add(&e.tokens, e.cost_nanos);
        }
        let model = if e.model_other {
            tables::OTHER_MODEL.to_string()
        } else {
            if models.get(e.model.as_str())?.is_none() {
                report.problem(format!(
                    "usage {id}: model {} is not among the kept",
                    e.model
                ));
            }
            e.model.clone()
        };
        let hour = hour_of(e.at);
        hourly
            .entry((e.project_id, hour, agent, model.clone()))
            .or_default()
            .add(&e.tokens, e.cost_nanos);
        hourly_all
            .entry((hour, agent, model))
            .or_default()
            .add(&e.tokens, e.cost_nanos);
    }
    let index = txn.open_table(tables::USAGE_REPORTS)?;
    let mut held = 0usize;
    for entry in index.iter()? {
        let (key, value) = entry?;
        let (task, report_id) = key.value();
        held += 1;
        report.index_entries += 1;
        let want = reports.get(&(Id(*task), report_id.to_string()));
        if want != Some(&Id(*value.value())) {
            report.problem(format!(
                "usage_reports ({}, {report_id}): names {}, the ledger {want:?}",
                Id(*task),
                Id(*value.value())
            ));
        }
    }
    if held != reports.len() {
        report.problem(format!(
            "usage_reports: {held} entries for {} reports in the ledger",
            reports.len()
        ));
    }
    let mut compare =
        |name: &str, found: Vec<(String, UsageTotals)>, want: Vec<(String, UsageTotals)>| {
            report.index_entries += found.len() as u64;
            if found != want {
                let first =
                    found.iter().zip(&want).find(|(a, b)| a != b).map(|(a, b)| {
                        format!("{} holds {:?}, the ledger sums {:?}", a.0, a.1, b.1)
                    });
                report.problem(format!(
                    "{name}: {} rows against {} the ledger sums to; {}",
                    found.len(),
                    want.len(),
                    first.unwrap_or_else(|| "one side has rows the other lacks".into())
                ));
            }
        };
    let table = txn.open_table(tables::USAGE_TOTALS)?;
    let mut found = Vec::new();
    for entry in table.iter()? {
        let (key, value) = entry?;
        found.push((format!("{:?}", key.value()), decode(value.value())?));
    }
    let want = totals.iter().map(|(k, t)| (format!("{k:?}"), *t)).collect();
    compare("usage_totals", found, want);
    let table = txn.open_table(tables::USAGE_HOURLY)?;
    let mut found = Vec::new();
    for entry in table.iter()? {
        let (key, value) = entry?;
        let (p, h, a, m) = key.value();
        found.push((format!("{} {h} {a} {m}", Id(*p)), decode(value.value())?));
    }
    let want = hourly
        .iter()
        .map(|((p, h, a, m), t)| (format!("{p} {h} {a} {m}"), *t))
        .collect();
    compare("usage_hourly", found, want);
    let table = txn.open_table(tables::USAGE_HOURLY_ALL)?;
    let mut found = Vec::new();
    for entry in table.iter()? {
        let (key, value) = entry?;
        let (h, a, m) = key.value();
        found.push((format!("{h} {a} {m}"), decode(value.value())?));
    }
    let want = hourly_all
        .iter()
        .map(|((h, a, m), t)| (format!("{h} {a} {m}"), *t))
        .collect();
    compare("usage_hourly_all", found, want);
    let budgets = txn.open_table(tables::BUDGETS)?;
    for entry in budgets.iter()? {
        let (key, value) = entry?;
        report.records += 1;
        match decode::<crate::domain::budget::Budget>(value.value()) {
            Ok(b) if b.scope.key() == key.value() => {}
            Ok(b) => report.problem(format!(
                "budgets {}: holds the budget of {}",
                key.value(),
                b.scope.key()
            )),
            Err(e) => report.problem(format!("budgets {}: {e}", key.value())),
        }
    }
    Ok(())
}

/// The tables the check reads besides the indexes the registry declares (`tables::indexes!`); a
/// test holds this against the schema's table list, so a new table cannot go unchecked.
#[cfg(test)]
pub(crate) const CHECKED_TABLES: &[&str] = &[
    "META",
    "TYPE_NAMES",
    "PROJECTS",
    "TASKS",
    "ARTIFACTS",
    "HITL",
    "AGENTS",
    "AGENT_HISTORY",
    "EVENTS",
    "WORKFLOWS",
    "WORKFLOW_DEFS",
    "TIMERS",
    "EVENTS_BY_PROJECT",
    "TASKS_PENDING_SINCE",
    "QUEUES",
    "PAUSED_PROJECTS",
    "IDEMPOTENCY",
    "IDEMPOTENCY_BY_AGE",
    "WEBHOOK_CURSORS",
    "WEBHOOK_DEAD_LETTERS",
    "TASK_CLAIMERS",
    "USAGE",
    "USAGE_REPORTS",
    "USAGE_TOTALS",
    "USAGE_HOURLY",
    "USAGE_HOURLY_ALL",
    "USAGE_MODELS",
    "BUDGETS",
];

/// Every queue setting is under a known agent type and decodes; every paused project exists.
fn check_queues(
    txn: &ReadTransaction,
    report: &mut CheckReport,
    types: &Registry,
) -> Result<(), StoreError> {
    for entry in txn.open_table(tables::QUEUES)?.iter()? {
        let (key, value) = entry?;
        report.records += 1;
        if types.agents.name(key.value()).is_none() {
            report.problem(format!("queues: key {} is no agent type", key.value()));
        }
        if let Err(e) = decode::<QueueSettings>(value.value()) {
            report.problem(format!("queues: {}: {e}", key.value()));
        }
    }
    // Every remembered key has its age entry and no age entry names a key that is gone.
    let mut ages = Vec::new();
    for entry in txn.open_table(tables::IDEMPOTENCY)?.iter()? {
        let (key, value) = entry?;
        report.records += 1;
        match decode::<IdempotencyRecord>(value.value()) {
            Ok(record) => ages.push(tables::idempotency_age_key(record.at, key.value())),
            Err(e) => report.problem(format!("idempotency: {e}")),
        }
    }
    ages.sort_unstable();
    let mut indexed = Vec::new();
    for entry in txn.open_table(tables::IDEMPOTENCY_BY_AGE)?.iter()? {
        report.index_entries += 1;
        indexed.push(*entry?.0.value());
    }
    if ages != indexed {
        report.problem(format!(
            "ix_idempotency_age: {} entries for {} remembered keys, or at other times",
            indexed.len(),
            ages.len()
        ));
    }
    // Webhook cursors: never past the log's end (a database of schema 3 has none yet).
    if let Ok(cursors) = txn.open_table(tables::WEBHOOK_CURSORS) {
        let last = txn
            .open_table(tables::META)?
            .get(tables::META_LAST_SEQ)?
            .map_or(0, |v| v.value());
        for entry in cursors.iter()? {
            let (name, seq) = entry?;
            report.records += 1;
            if seq.value() > last {
                report.problem(format!(
                    "webhook_cursors: {} is at seq {}, past the log's last {last}",
                    name.value(),
                    seq.value()
                ));
            }
        }
    }
    // Dead letters decode and name events the log has assigned (a database before them has none).
    if let Ok(letters) = txn.open_table(tables::WEBHOOK_DEAD_LETTERS) {
        let last = txn
            .open_table(tables::META)?
            .get(tables::META_LAST_SEQ)?
            .map_or(0, |v| v.value());
        for entry in letters.iter()? {
            let (key, value) = entry?;
            let (name, seq) = key.value();
            report.records += 1;
            if seq > last {
                report.problem(format!(
                    "webhook_dead_letters: {name} holds seq {seq}, past the log's last {last}"
                ));
            }
            if let Err(e) = decode::<crate::domain::records::DeadLetter>(value.value()) {
                report.problem(format!("webhook_dead_letters: {name} {seq}: {e}"));
            }
        }
    }
    // Every claimer names a task that exists.
    if let Ok(claimers) = txn.open_table(tables::TASK_CLAIMERS) {
        let tasks = txn.open_table(tables::TASKS)?;
        for entry in claimers.iter()? {
            let (key, _) = entry?;
            report.records += 1;
            if tasks.get(key.value())?.is_none() {
                report.problem(format!("task_claimers: {} is no task", Id(*key.value())));
            }
        }
    }
    let projects = txn.open_table(tables::PROJECTS)?;
    for entry in txn.open_table(tables::PAUSED_PROJECTS)?.iter()? {
        let (key, _) = entry?;
        report.records += 1;
        if projects.get(key.value())?.is_none() {
            report.problem(format!(
                "paused_projects: {} is no project",
                Id(*key.value())
            ));
        }
    }
    Ok(())
}

/// Every agent's record is under its own type's code; every history entry under (its agent type,
/// its seq).
fn check_agents(
    txn: &ReadTransaction,
    report: &mut CheckReport,
    types: &Registry,
) -> Result<(), StoreError> {
    for entry in txn.open_table(tables::AGENTS)?.iter()? {
        let (key, value) = entry?;
        report.records += 1;
        match decode::<Agent>(value.value()) {
            Ok(agent) if types.agent(&agent.agent_type) == Some(key.value()) => {}
            Ok(agent) => report.problem(format!(
                "agents: key {} holds agent {}",
                key.value(),
                agent.agent_type
            )),
            Err(e) => report.problem(format!("agents: {}: {e}", key.value())),
        }
    }
    for entry in txn.open_table(tables::AGENT_HISTORY)?.iter()? {
        let (key, value) = entry?;
        report.records += 1;
        let key = *key.value();
        match decode::<AgentHistoryEntry>(value.value()) {
            Ok(e)
                if tables::agent_history_key(
                    tables::TypeIds::agent(types, &e.agent_type),
                    e.seq,
                ) == key => {}
            Ok(e) => report.problem(format!(
                "agent_history: an entry of {} seq {} is under another key",
                e.agent_type, e.seq
            )),
            Err(e) => report.problem(format!("agent_history: {key:?}: {e}")),
        }
    }
    Ok(())
}

fn check_records<T: DeserializeOwned>(
    txn: &ReadTransaction,
    def: TableDefinition<&'static [u8; 16], &'static [u8]>,
    report: &mut CheckReport,
    id_of: impl Fn(&T) -> Id,
    visit: impl FnMut(&T),
) -> Result<(), StoreError> {
    check_records_with(txn, def, report, decode::<T>, id_of, visit)
}

fn check_records_with<T>(
    txn: &ReadTransaction,
    def: TableDefinition<&'static [u8; 16], &'static [u8]>,
    report: &mut CheckReport,
    decode: impl Fn(&[u8]) -> Result<T, StoreError>,
    id_of: impl Fn(&T) -> Id,
    mut visit: impl FnMut(&T),
) -> Result<(), StoreError> {
    for entry in txn.open_table(def)?.iter()? {
        let (key, value) = entry?;
        report.records += 1;
        match decode(value.value()) {
            Ok(record) => {
                if id_of(&record).0 != *key.value() {
                    report.problem(format!(
                        "{}: key {} holds a record with another id",
                        def,
                        Id(*key.value())
                    ));
                }
                visit(&record);
            }
            Err(e) => report.problem(format!("{}: {}: {e}", def, Id(*key.value()))),
        }
    }
    Ok(())
}

/// Both directions for one index: every expected key exists, and every existing key is expected.
/// The check of index tables the registry (`tables::indexes!`) hands over.
struct Indexes<'a> {
    txn: &'a ReadTransaction,
    report: &'a mut CheckReport,
}

impl tables::IndexCheck for Indexes<'_> {
    type Error = StoreError;

    fn index<const N: usize>(
        &mut self,
        table: TableDefinition<'static, &'static [u8; N], ()>,
        expected: Vec<[u8; N]>,
    ) -> Result<(), StoreError> {
        check_index(self.txn, table, expected, self.report)
    }
}

pub(super) fn check_index<const N: usize>(
    txn: &ReadTransaction,
    def: TableDefinition<&'static [u8; N], ()>,
    mut expected: Vec<[u8; N]>,
    report: &mut CheckReport,
) -> Result<(), StoreError> {
    expected.sort_unstable();
    let table = txn.open_table(def)?;
    let mut actual = Vec::new();
    for entry in table.iter()? {
        let (key, _) = entry?;
        report.index_entries += 1;
        actual.push(*key.value());
    }
    let (mut i, mut j) = (0, 0);
    while i < expected.len() || j < actual.len() {
        match (expected.get(i), actual.get(j)) {
            (Some(e), Some(a)) if e == a => {
                i += 1;
                j += 1;
            }
            (Some(e), Some(a)) if e > a => {
                report.problem(format!(
                    "{def}: entry for record {} matches no record",
                    trailing_id(a)
                ));
                j += 1;
            }
            (Some(e), _) => {
                report.problem(format!(
                    "{def}: missing entry for record {}",
                    trailing_id(e)
                ));
                i += 1;
            }
            (None, Some(a)) => {
                report.problem(format!(
                    "{def}: entry for record {} matches no record",
                    trailing_id(a)
                ));
                j += 1;
            }
            (None, None) => break,
        }
    }
    Ok(())
}

fn check_tasks(
    txn: &ReadTransaction,
    version: u64,
    report: &mut CheckReport,
    timers: &mut Vec<[u8; 25]>,
    pending: &mut Vec<[u8; 26]>,
    types: &Registry,
) -> Result<(), StoreError> {
    let mut keys: Vec<TaskKeys> = Vec::new();
    let mut owners: Vec<(Id, Id)> = Vec::new();
    check_records_with::<Task>(
        txn,
        tables::TASKS,
        report,
        |bytes| super::migrate::decode_task(version, bytes),
        |t| t.id,
        |t| {
            keys.push(TaskKeys::of(t, types));
            owners.push((t.id, t.project_id));
            timers.extend(tables::task_timers(t).into_iter().flatten());
            pending.extend(tables::pending_since_key(t, types));
        },
    )?;
    TaskKeys::check(
        &keys,
        super::migrate::absent_tables(version),
        &mut Indexes { txn, report },
    )?;
    let projects = txn.open_table(tables::PROJECTS)?;
    for (task, project) in owners {
        if projects.get(project.as_bytes())?.is_none() {
            report.problem(format!("task {task} belongs to missing project {project}"));
        }
    }
    Ok(())
}

fn check_artifacts(
    txn: &ReadTransaction,
    version: u64,
    report: &mut CheckReport,
    types: &Registry,
) -> Result<(), StoreError> {
    let mut keys: Vec<ArtifactKeys> = Vec::new();
    check_records::<Artifact>(
        txn,
        tables::ARTIFACTS,
        report,
        |a| a.id,
        |a| keys.push(ArtifactKeys::of(a, types)),
    )?;
    ArtifactKeys::check(
        &keys,
        super::migrate::absent_tables(version),
        &mut Indexes { txn, report },
    )?;
    Ok(())
}

fn check_hitl(
    txn: &ReadTransaction,
    version: u64,
    report: &mut CheckReport,
    timers: &mut Vec<[u8; 25]>,
    types: &Registry,
) -> Result<(), StoreError> {
    let mut keys: Vec<HitlKeys> = Vec::new();
    check_records_with::<HitlRequest>(
        txn,
        tables::HITL,
        report,
        |bytes| super::migrate::decode_hitl(version, bytes),
        |h| h.id,
        |h| {
            keys.push(HitlKeys::of(h, types));
            timers.extend(tables::hitl_timer(h));
        },
    )?;
    HitlKeys::check(
        &keys,
        super::migrate::absent_tables(version),
        &mut Indexes { txn, report },
    )?;
    Ok(())
}

/// Every workflow belongs to a project and names tasks that exist, in its phases' order.
fn check_workflows(
    txn: &ReadTransaction,
    version: u64,
    report: &mut CheckReport,
) -> Result<(), StoreError> {
    let projects = txn.open_table(tables::PROJECTS)?;
    let tasks = txn.open_table(tables::TASKS)?;
    for entry in txn.open_table(tables::WORKFLOWS)?.iter()? {
        let (key, value) = entry?;
        report.records += 1;
        let project = Id(*key.value());
        let run: WorkflowRun = match super::migrate::decode_workflow(version, value.value()) {
            Ok(run) => run,
            Err(e) => {
                report.problem(format!("workflows: {project}: {e}"));
                continue;
            }
        };
        if run.project_id != project || projects.get(project.as_bytes())?.is_none() {
            report.problem(format!("workflows: {project} belongs to no project"));
        }
        if let Err(e) = crate::domain::workflow::check(&run) {
            report.problem(format!("workflows: {}", e.0));
        }
        for (i, phase) in run.phases.iter().enumerate() {
            for task in phase.task_id.iter().chain(&phase.items) {
                if tasks.get(task.as_bytes())?.is_none() {
                    report.problem(format!(
                        "workflows: {project} phase {i} names missing task {task}"
                    ));
                }
            }
            if phase.items_done as usize > phase.items.len() {
                report.problem(format!(
                    "workflows: {project} phase {i} counts {} of {} tasks done",
                    phase.items_done,
                    phase.items.len()
                ));
            }
        }
    }
    Ok(())
}

/// Every definition stored through the API decodes and is well formed (as `PUT` checked it).
fn check_workflow_defs(txn: &ReadTransaction, report: &mut CheckReport) -> Result<(), StoreError> {
    for entry in txn.open_table(tables::WORKFLOW_DEFS)?.iter()? {
        let (key, value) = entry?;
        report.records += 1;
        let name = key.value();
        if let Err(e) = super::read::stored_workflow(name, value.value()) {
            report.problem(format!("workflow_defs: {name}: {e}"));
        }
    }
    Ok(())
}

fn check_events(txn: &ReadTransaction, report: &mut CheckReport) -> Result<(), StoreError> {
    let mut expected = Vec::new();
    let mut previous: Option<u64> = None;
    let mut first = None;
    for entry in txn.open_table(tables::EVENTS)?.iter()? {
        let (key, value) = entry?;
        let seq = key.value();
        first.get_or_insert(seq);
        report.events += 1;
        if let Some(p) = previous
            && seq != p + 1
        {
            report.problem(format!("events: gap between seq {p} and {seq}"));
        }
        previous = Some(seq);
        match decode::<EventRecord>(value.value()) {
            Ok(record) => {
                match serde_json::from_str::<serde_json::Value>(&record.json) {
                    Ok(v) if v["seq"].as_u64() == Some(seq) => {}
                    _ => report.problem(format!(
                        "events: seq {seq} holds a frame with another seq or bad JSON"
                    )),
                }
                let stream = record.project_id.unwrap_or(tables::GLOBAL_STREAM);
                expected.push(tables::event_project_key(&stream, seq));
            }
            Err(e) => report.problem(format!("events: seq {seq}: {e}")),
        }
    }
    let recorded = txn
        .open_table(tables::META)?
        .get(tables::META_LAST_SEQ)?
        .map(|v| v.value());
    if let (Some(last), Some(recorded)) = (previous, recorded)
        && recorded != last
    {
        report.problem(format!(
            "meta: last_seq is {recorded} but the newest event is {last}"
        ));
    }
    // The (project, seq) keys do not end with a record id; compare them directly. Entries of
    // events older than the oldest kept are those of trimmed events, which `TrimEventIndex`
    // removes later: none is expected, any is allowed.
    let first = first.unwrap_or(u64::MAX);
    expected.sort_unstable();
    let mut actual = Vec::new();
    for entry in txn.open_table(tables::EVENTS_BY_PROJECT)?.iter()? {
        let (key, _) = entry?;
        let key = *key.value();
        let seq = u64::from_be_bytes(key[16..].try_into().expect("8 bytes"));
        if seq < first {
            continue;
        }
        report.index_entries += 1;
        actual.push(key);
    }
    if actual != expected {
        let missing = expected
            .iter()
            .filter(|k| actual.binary_search(k).is_err())
            .count();
        let extra = actual
            .iter()
            .filter(|k| expected.binary_search(k).is_err())
            .count();
        report.problem(format!(
            "ix_events_project: {missing} entries missing, {extra} entries match no event"
        ));
    }
    Ok(())
}
