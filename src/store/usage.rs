//! Reading what the agents spent: a scope's totals, and sums over the hourly rollups grouped by
//! project, agent type, model, day or hour.

use std::collections::BTreeMap;

use super::codec::decode;
use super::{Store, StoreError, tables};
use crate::domain::budget::{Budget, BudgetScope, BudgetState};
use crate::domain::usage::UsageTotals;
use crate::domain::{AgentType, Id};
use redb::{ReadableTable, ReadableTableMetadata};

/// A scope whose totals are kept.
#[derive(Clone, Copy, Debug)]
pub enum Scope<'a> {
    Task(Id),
    Project(Id),
    Agent(&'a AgentType),
    All,
}

/// How a usage query groups its sums.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupBy {
    Project,
    AgentType,
    Model,
    /// Days, UTC.
    Day,
    Hour,
}

impl GroupBy {
    pub const NAMES: [&'static str; 5] = ["project", "agent_type", "model", "day", "hour"];

    pub fn parse(name: &str) -> Option<GroupBy> {
        Some(match name {
            "project" => GroupBy::Project,
            "agent_type" => GroupBy::AgentType,
            "model" => GroupBy::Model,
            "day" => GroupBy::Day,
            "hour" => GroupBy::Hour,
            _ => return None,
        })
    }
}

/// What a usage query sums: rollup rows of hours `from_hour..to_hour`, narrowed.
#[derive(Clone, Debug)]
pub struct UsageQuery {
    pub project: Option<Id>,
    pub agent_type: Option<AgentType>,
    /// A model name (`other` for the models past `--max-models`).
    pub model: Option<String>,
    pub from_hour: u32,
    pub to_hour: u32,
    pub group_by: Option<GroupBy>,
}

/// A group's key: what it groups by, in the query's terms.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum GroupKey {
    Project(Id),
    Agent(String),
    Model(String),
    /// Hours since the epoch of the group's first hour (a day's first).
    Hour(u32),
}

/// Sums over the query's rows, in all and per group (groups in key order).
#[derive(Clone, Debug, Default)]
pub struct UsageSums {
    pub totals: UsageTotals,
    pub groups: Vec<(GroupKey, UsageTotals)>,
}

/// What exhausted budgets hold.
#[derive(Clone, Debug, Default)]
pub struct Held {
    /// Per agent type in use: the scope holding its whole queue (`global` or its own), if any.
    pub queues: Vec<(AgentType, Option<String>)>,
    /// The projects whose own budget is exhausted.
    pub projects: Vec<Id>,
}

/// Most rollup rows one query reads; past it the query asks to be narrowed.
pub const MAX_ROWS: usize = 2_000_000;

impl Store {
    /// A scope's totals (zeros when nothing was reported in it).
    pub fn usage_totals(&self, scope: Scope<'_>) -> Result<UsageTotals, StoreError> {
        let mut id = [0u8; 16];
        let kind = match scope {
            Scope::Task(t) => {
                id = *t.as_bytes();
                tables::USAGE_TASK
            }
            Scope::Project(p) => {
                id = *p.as_bytes();
                tables::USAGE_PROJECT
            }
            Scope::Agent(name) => {
                let Some(agent) = self.shared.types.read().agent(name) else {
                    return Ok(UsageTotals::default());
                };
                id[..2].copy_from_slice(&agent.to_be_bytes());
                tables::USAGE_AGENT
            }
            Scope::All => tables::USAGE_ALL,
        };
        let txn = self.txn("usage_totals")?;
        let table = txn.open_table(tables::USAGE_TOTALS)?;
        Ok(match table.get(&tables::usage_totals_key(kind, &id))? {
            Some(bytes) => decode(bytes.value())?,
            None => UsageTotals::default(),
        })
    }

    /// Sums the hourly rollups the query selects. `None` when it would read more than
    /// [`MAX_ROWS`] rows.
    pub fn usage_sums(&self, q: &UsageQuery) -> Result<Option<UsageSums>, StoreError> {
        // The names copied, so that a long scan does not hold the registry the writer changes.
        let (agent, names) = {
            let registry = self.shared.types.read();
            let agent = match &q.agent_type {
                Some(name) => match registry.agent(name) {
                    Some(id) => Some(id),
                    // Never reported under: nothing to sum.
                    None => return Ok(Some(UsageSums::default())),
                },
                None => None,
            };
            (agent, registry.agents.names().to_vec())
        };
        let agent_name = |id: u16| {
            names
                .get(usize::from(id))
                .map_or_else(|| format!("#{id}"), |n| n.to_string())
        };
        let mut groups: BTreeMap<GroupKey, UsageTotals> = BTreeMap::new();
        let mut totals = UsageTotals::default();
        let mut rows = 0usize;
        let mut add = |project: Option<Id>, hour: u32, a: u16, model: &str, t: UsageTotals| {
            if agent.is_some_and(|want| want != a) || q.model.as_deref().is_some_and(|m| m != model)
            {
                return;
            }
            totals.merge(&t);
            let key = match q.group_by {
                None => return,
                Some(GroupBy::Project) => match project {
                    Some(p) => GroupKey::Project(p),
                    None => return,
                },
                Some(GroupBy::AgentType) => GroupKey::Agent(agent_name(a)),
                Some(GroupBy::Model) => GroupKey::Model(model.to_string()),
                Some(GroupBy::Day) => GroupKey::Hour(hour - hour % 24),
                Some(GroupBy::Hour) => GroupKey::Hour(hour),
            };
            groups.entry(key).or_default().merge(&t);
        };
        let txn = self.txn("usage_sums")?;
        if q.from_hour >= q.to_hour {
            return Ok(Some(UsageSums::default()));
        }
        let per_project = q.project.is_some() || q.group_by == Some(GroupBy::Project);
        if per_project {
            let table = txn.open_table(tables::USAGE_HOURLY)?;
            let projects: Vec<Id> = match q.project {
                Some(p) => vec![p],
                None => {
                    // Every project with usage: the totals table lists them.
                    let totals = txn.open_table(tables::USAGE_TOTALS)?;
                    let lo = tables::usage_totals_key(tables::USAGE_PROJECT, &[0u8; 16]);
                    let hi = tables::usage_totals_key(tables::USAGE_PROJECT, &[0xff; 16]);
                    let mut list = Vec::new();
                    for entry in totals.range::<&[u8; 17]>(&lo..=&hi)? {
                        let (key, _) = entry?;
                        let mut id = [0u8; 16];
                        id.copy_from_slice(&key.value()[1..]);
                        list.push(Id(id));
                    }
                    list
                }
            };
            for project in projects {
                let lo = (project.as_bytes(), q.from_hour, 0u16, "");
                let hi = (project.as_bytes(), q.to_hour, 0u16, "");
                for entry in table.range(lo..hi)? {
                    rows += 1;
                    if rows > MAX_ROWS {
                        return Ok(None);
                    }
                    let (key, value) = entry?;
                    let (_, hour, a, model) = key.value();
                    add(Some(project), hour, a, model, decode(value.value())?);
                }
            }
        } else {
            let table = txn.open_table(tables::USAGE_HOURLY_ALL)?;
            let lo = (q.from_hour, 0u16, "");
            let hi = (q.to_hour, 0u16, "");
            for entry in table.range(lo..hi)? {
                rows += 1;
                if rows > MAX_ROWS {
                    return Ok(None);
                }
                let (key, value) = entry?;
                let (hour, a, model) = key.value();
                add(None, hour, a, model, decode(value.value())?);
            }
        }
        Ok(Some(UsageSums {
            totals,
            groups: groups.into_iter().collect(),
        }))
    }
}

impl Store {
    /// Every budget, by scope.
    pub fn budgets(&self) -> Result<Vec<Budget>, StoreError> {
        let txn = self.txn("budgets")?;
        let table = txn.open_table(tables::BUDGETS)?;
        let mut list = Vec::new();
        for entry in table.iter()? {
            list.push(decode(entry?.1.value())?);
        }
        Ok(list)
    }

    /// A scope's budget.
    pub fn budget(&self, scope: &BudgetScope) -> Result<Option<Budget>, StoreError> {
        let txn = self.txn("budgets")?;
        let table = txn.open_table(tables::BUDGETS)?;
        match table.get(scope.key().as_str())? {
            Some(bytes) => Ok(Some(decode(bytes.value())?)),
            None => Ok(None),
        }
    }

    /// The scope of an exhausted budget over a task of this project and agent type, now.
    pub fn budget_held(
        &self,
        project: &Id,
        agent: &AgentType,
    ) -> Result<Option<String>, StoreError> {
        let now = self.shared.clock.now();
        let txn = self.txn("budgets")?;
        let table = txn.open_table(tables::BUDGETS)?;
        // No budget at all, the usual case: nothing to look up (the length is in the header).
        if table.len()? == 0 {
            return Ok(None);
        }
        for key in BudgetScope::keys_over(project, agent) {
            if let Some(bytes) = table.get(key.as_str())? {
                let budget: Budget = decode(bytes.value())?;
                if budget.state_at(now) == BudgetState::Exhausted {
                    return Ok(Some(key));
                }
            }
        }
        Ok(None)
    }

    /// Budgets in warning or exhausted in their current window (the `BudgetBurnHigh` signal).
    pub fn budgets_burning(&self) -> Result<usize, StoreError> {
        let now = self.now();
        Ok(self
            .budgets()?
            .iter()
            .filter(|b| b.state_at(now) != BudgetState::Ok)
            .count())
    }

    /// What exhausted budgets hold now: per agent type in use, the scope holding its whole queue
    /// (`global` or `agent_type:{name}`), and the projects held.
    pub fn held_by_budgets(&self) -> Result<Held, StoreError> {
        let now = self.now();
        let exhausted: Vec<Budget> = self
            .budgets()?
            .into_iter()
            .filter(|b| b.state_at(now) == BudgetState::Exhausted)
            .collect();
        let global = exhausted.iter().any(|b| b.scope == BudgetScope::Global);
        let agents = self.shared.types.read().agents.names().to_vec();
        let queues = agents
            .into_iter()
            .map(|a| {
                let scope = BudgetScope::AgentType(a.clone());
                let held = if global {
                    Some("global".to_string())
                } else {
                    exhausted
                        .iter()
                        .any(|b| b.scope == scope)
                        .then(|| scope.key())
                };
                (a, held)
            })
            .collect();
        let projects = exhausted
            .iter()
            .filter_map(|b| match b.scope {
                BudgetScope::Project(p) => Some(p),
                _ => None,
            })
            .collect();
        Ok(Held { queues, projects })
    }

    /// The store's clock (microseconds), which budgets' windows are judged by.
    pub fn now(&self) -> crate::domain::Micros {
        self.shared.clock.now()
    }
}
