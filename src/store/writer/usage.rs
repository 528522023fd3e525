//! Usage reports: each a ledger entry, counted once per (task, `report_id`), with the totals of
//! its task, project, agent type and of everything, and the hourly rollups, in the same
//! transaction.

use super::batch::read;
use super::{Batch, Checked, Write, Written};
use crate::domain::records::Task;
use crate::domain::usage::{self, UsageEntry, UsageReport, UsageTotals};
use crate::domain::{DomainError, Id, TaskStatus};
use crate::store::StoreError;
use crate::store::codec::{decode, encode};
use crate::store::tables;
use redb::{ReadableTable, ReadableTableMetadata};

/// Records a worker's usage reports for a task, under the lease it names. A report whose lease
/// no longer holds the task is recorded all the same (the money was spent), marked `lease_lost`.
#[derive(Clone, Debug)]
pub struct ReportUsage {
    pub task_id: Id,
    pub lease_id: Option<Id>,
    pub worker_id: Option<String>,
    pub reports: Vec<UsageReport>,
    /// Send the task back to pending when a budget over it is exhausted (not when the usage
    /// rides on the task's completion or failure, which then goes ahead).
    pub hold: bool,
}

/// One report as the ledger holds it.
#[derive(Clone, Debug, PartialEq)]
pub struct Recorded {
    pub entry: UsageEntry,
    /// Its `report_id` had been reported for this task before: this is the first report's entry,
    /// and nothing was counted again.
    pub repeated: bool,
    /// The model as rollups and metrics name it: itself, or `other` past `--max-models`.
    pub model_label: String,
}

/// What a `ReportUsage` did, and the task's totals after it.
#[derive(Clone, Debug, PartialEq)]
pub struct UsageRecorded {
    pub recorded: Vec<Recorded>,
    pub task_totals: UsageTotals,
    /// A budget over the task is exhausted (this report may have used it up): the task, worked
    /// under the lease given, went back to pending, and its worker must stop.
    pub held: Option<super::Held>,
}

pub struct Plan {
    task: Task,
    holds: bool,
    recorded: Vec<Recorded>,
    agent: u16,
    new_models: Vec<String>,
    task_totals: UsageTotals,
}

impl Write for ReportUsage {
    type Plan = Plan;
    type Output = UsageRecorded;

    fn check(self, batch: &Batch<'_>) -> Checked<Plan> {
        let task: Task = read(batch.tasks.open()?, &self.task_id)?
            .ok_or_else(|| DomainError::not_found("task", self.task_id))?;
        let lease_lost = task.status != TaskStatus::Working
            || crate::domain::tasks::fence(&task, self.lease_id).is_err()
            || (self.worker_id.is_some() && task.worker_id != self.worker_id);
        let agent = batch
            .agent_id(&task.agent_type)
            .ok_or_else(|| StoreError::Corrupt(format!("task {} has no agent type id", task.id)))?;
        let reports = batch
            .txn
            .open_table(tables::USAGE_REPORTS)
            .map_err(StoreError::from)?;
        let ledger = batch
            .txn
            .open_table(tables::USAGE)
            .map_err(StoreError::from)?;
        let models = batch
            .txn
            .open_table(tables::USAGE_MODELS)
            .map_err(StoreError::from)?;
        let mut known_models = models.len()? as usize;
        let mut new_models: Vec<String> = Vec::new();
        let mut task_totals = totals(batch, tables::USAGE_TASK, task.id.as_bytes())?;
        let mut recorded: Vec<Recorded> = Vec::with_capacity(self.reports.len());
        for report in self.reports {
            // Reported before, by an earlier request or earlier in this one.
            if let Some(first) = recorded
                .iter()
                .find(|r| r.entry.report_id == report.report_id)
            {
                let again = Recorded {
                    repeated: true,
                    ..first.clone()
                };
                recorded.push(again);
                continue;
            }
            let key = (task.id.as_bytes(), report.report_id.as_str());
            if let Some(entry_id) = reports.get(key)? {
                let entry_id = Id(*entry_id.value());
                let bytes = ledger.get(entry_id.as_bytes())?.ok_or_else(|| {
                    StoreError::Corrupt(format!("usage report names entry {entry_id}, not there"))
                })?;
                let entry: UsageEntry = decode(bytes.value())?;
                let model_label = if entry.model_other {
                    tables::OTHER_MODEL.to_string()
                } else {
                    entry.model.clone()
                };
                recorded.push(Recorded {
                    entry,
                    repeated: true,
                    model_label,
                });
                continue;
            }
            let kept = if models.get(report.model.as_str())?.is_some()
                || new_models.contains(&report.model)
            {
                true
            } else if known_models < batch.shared.max_models {
                known_models += 1;
                new_models.push(report.model.clone());
                true
            } else {
                false
            };
            let model_label = if kept {
                report.model.clone()
            } else {
                tables::OTHER_MODEL.to_string()
            };
            let (cost_nanos, cost_source) = usage::cost(&report, &batch.shared.prices, batch.now);
            task_totals.add(&report.tokens, cost_nanos);
            recorded.push(Recorded {
                entry: UsageEntry {
                    id: Id::new_v7(),
                    task_id: task.id,
                    project_id: task.project_id,
                    agent_type: task.agent_type.clone(),
                    worker_id: self.worker_id.clone(),
                    report_id: report.report_id,
                    model: report.model,
                    provider: report.provider,
                    tokens: report.tokens,
                    cost_nanos,
                    cost_source,
                    lease_lost,
                    at: batch.now,
                    model_other: !kept,
                },
                repeated: false,
                model_label,
            });
        }
        Ok(Plan {
            holds: self.hold && !lease_lost,
            task,
            recorded,
            agent,
            new_models,
            task_totals,
        })
    }

    fn apply(plan: Plan, batch: &mut Batch<'_>) -> Written<UsageRecorded> {
        let mut ledger = batch.txn.open_table(tables::USAGE)?;
        let mut reports = batch.txn.open_table(tables::USAGE_REPORTS)?;
        let mut totals_table = batch.txn.open_table(tables::USAGE_TOTALS)?;
        let mut hourly = batch.txn.open_table(tables::USAGE_HOURLY)?;
        let mut hourly_all = batch.txn.open_table(tables::USAGE_HOURLY_ALL)?;
        let mut models = batch.txn.open_table(tables::USAGE_MODELS)?;
        for model in &plan.new_models {
            models.insert(model.as_str(), ())?;
        }
        let mut agent_key = [0u8; 16];
        agent_key[..2].copy_from_slice(&plan.agent.to_be_bytes());
        for r in plan.recorded.iter().filter(|r| !r.repeated) {
            let e = &r.entry;
            ledger.insert(e.id.as_bytes(), encode(e).as_slice())?;
            reports.insert(
                (e.task_id.as_bytes(), e.report_id.as_str()),
                e.id.as_bytes(),
            )?;
            let scopes = [
                (tables::USAGE_TASK, *e.task_id.as_bytes()),
                (tables::USAGE_PROJECT, *e.project_id.as_bytes()),
                (tables::USAGE_AGENT, agent_key),
                (tables::USAGE_ALL, [0u8; 16]),
            ];
            for (scope, id) in scopes {
                let key = tables::usage_totals_key(scope, &id);
                let mut t = match totals_table.get(&key)? {
                    Some(bytes) => decode::<UsageTotals>(bytes.value())?,
                    None => UsageTotals::default(),
                };
                t.add(&e.tokens, e.cost_nanos);
                totals_table.insert(&key, encode(&t).as_slice())?;
            }
            let hour = usage::hour_of(e.at);
            let key = (
                e.project_id.as_bytes(),
                hour,
                plan.agent,
                r.model_label.as_str(),
            );
            let mut t = match hourly.get(key)? {
                Some(bytes) => decode::<UsageTotals>(bytes.value())?,
                None => UsageTotals::default(),
            };
            t.add(&e.tokens, e.cost_nanos);
            hourly.insert(key, encode(&t).as_slice())?;
            let key = (hour, plan.agent, r.model_label.as_str());
            let mut t = match hourly_all.get(key)? {
                Some(bytes) => decode::<UsageTotals>(bytes.value())?,
                None => UsageTotals::default(),
            };
            t.add(&e.tokens, e.cost_nanos);
            hourly_all.insert(key, encode(&t).as_slice())?;
        }
        drop((ledger, reports, totals_table, hourly, hourly_all, models));
        for r in plan.recorded.iter().filter(|r| !r.repeated) {
            batch.count_against_budgets(&plan.task, &r.entry.tokens, r.entry.cost_nanos)?;
        }
        let mut held = None;
        if plan.holds
            && let Some(scope) = batch.held_by(&plan.task.project_id, &plan.task.agent_type)?
        {
            batch.change_task(
                plan.task,
                crate::domain::tasks::TaskChange::HeldByBudget,
                crate::domain::tasks::TaskEdits::default(),
            )?;
            held = Some(super::Held { scope });
        }
        Ok(UsageRecorded {
            recorded: plan.recorded,
            task_totals: plan.task_totals,
            held,
        })
    }
}

/// A scope's totals as stored (none yet: zeros).
fn totals(batch: &Batch<'_>, scope: u8, id: &[u8]) -> Result<UsageTotals, StoreError> {
    let table = batch.txn.open_table(tables::USAGE_TOTALS)?;
    Ok(match table.get(&tables::usage_totals_key(scope, id))? {
        Some(bytes) => decode(bytes.value())?,
        None => UsageTotals::default(),
    })
}
