//! Budgets: set, removed, and counted against by each usage report, in the report's transaction;
//! an exhausted scope's work is held (claims skip it, its working tasks go back to pending).

use super::{Batch, Checked, Write, Written};
use crate::domain::budget::{Budget, BudgetScope, BudgetState, Window};
use crate::domain::records::Task;
use crate::domain::usage::{self, UsageTotals};
use crate::domain::{DomainError, EventType, Id};
use crate::events::EventDraft;
use crate::json::object_string;
use crate::store::StoreError;
use crate::store::codec::{decode, encode};
use crate::store::tables;
use redb::{ReadableTable, ReadableTableMetadata};

/// Sets a scope's budget (new, or its limits changed): what it used in the current window is
/// summed from the usage rollups, and its state follows at once — raising a budget lifts its
/// exhaustion and serves the waiting claims.
#[derive(Clone, Debug)]
pub struct PutBudget {
    pub scope: BudgetScope,
    pub max_cost_nanos: Option<u64>,
    pub max_tokens: Option<u64>,
    pub window: Window,
    pub warn_percent: u8,
}

/// A working task went back to pending because this budget scope is exhausted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    pub scope: String,
}

/// Sends a working task back to pending when a budget over it is exhausted (a progress report's
/// check, which is not a write of its own): only under the claim's lease.
#[derive(Clone, Debug)]
pub struct ReleaseHeld {
    pub task_id: Id,
    pub lease_id: Option<Id>,
}

impl Write for ReleaseHeld {
    type Plan = Option<(Task, String)>;
    /// The exhausted scope, when the task was sent back.
    type Output = Option<Held>;

    fn check(self, batch: &Batch<'_>) -> Checked<Option<(Task, String)>> {
        let task: Task = super::batch::read(batch.tasks.open()?, &self.task_id)?
            .ok_or_else(|| DomainError::not_found("task", self.task_id))?;
        if task.status != crate::domain::TaskStatus::Working
            || crate::domain::tasks::fence(&task, self.lease_id).is_err()
        {
            return Ok(None);
        }
        Ok(batch
            .held_by(&task.project_id, &task.agent_type)?
            .map(|scope| (task, scope)))
    }

    fn apply(plan: Option<(Task, String)>, batch: &mut Batch<'_>) -> Written<Option<Held>> {
        let Some((task, scope)) = plan else {
            return Ok(None);
        };
        batch.change_task(
            task,
            crate::domain::tasks::TaskChange::HeldByBudget,
            crate::domain::tasks::TaskEdits::default(),
        )?;
        Ok(Some(Held { scope }))
    }
}

/// A budget as set, and whether it is new.
#[derive(Clone, Debug, PartialEq)]
pub struct BudgetSet {
    pub budget: Budget,
    pub created: bool,
}

impl Write for PutBudget {
    type Plan = (Budget, Option<BudgetState>, bool);
    type Output = BudgetSet;

    fn check(self, batch: &Batch<'_>) -> Checked<(Budget, Option<BudgetState>, bool)> {
        match &self.scope {
            BudgetScope::Project(id) => {
                batch.require_project(id)?;
            }
            BudgetScope::AgentType(name) => batch.check_agent_type("scope", name)?,
            BudgetScope::Global => {}
        }
        let old = batch.budget(&self.scope.key())?;
        let now = batch.now;
        let (window_start, _) = self.window.bounds(now);
        let used = batch.used_since(&self.scope, self.window, window_start)?;
        let mut budget = Budget {
            scope: self.scope,
            max_cost_nanos: self.max_cost_nanos,
            max_tokens: self.max_tokens,
            window: self.window,
            warn_percent: self.warn_percent,
            created_at: old.as_ref().map_or(now, |b| b.created_at),
            updated_at: now,
            window_start,
            used,
            state: BudgetState::Ok,
        };
        budget.state = budget.evaluate();
        let before = old.as_ref().map(|b| b.state_at(now));
        Ok((budget, before, old.is_none()))
    }

    fn apply(
        (budget, before, created): (Budget, Option<BudgetState>, bool),
        batch: &mut Batch<'_>,
    ) -> Written<BudgetSet> {
        batch.store_budget(&budget)?;
        let project = match budget.scope {
            BudgetScope::Project(p) => Some(p),
            _ => None,
        };
        batch.budget_changed(&budget, before.unwrap_or(BudgetState::Ok), project, "set")?;
        Ok(BudgetSet { budget, created })
    }
}

/// Removes a scope's budget; an exhausted one's held work is served again.
#[derive(Clone, Debug)]
pub struct DeleteBudget {
    pub scope: BudgetScope,
}

impl Write for DeleteBudget {
    type Plan = Budget;
    type Output = ();

    fn check(self, batch: &Batch<'_>) -> Checked<Budget> {
        let key = self.scope.key();
        Ok(batch
            .budget(&key)?
            .ok_or_else(|| DomainError::not_found("budget", key))?)
    }

    fn apply(budget: Budget, batch: &mut Batch<'_>) -> Written<()> {
        batch
            .budgets
            .open_mut()?
            .remove(budget.scope.key().as_str())?;
        batch.set_budget_timer(Some(&budget), None)?;
        if budget.state_at(batch.now) == BudgetState::Exhausted {
            let slots = batch.claimable.len() as u16;
            batch.wake_all.extend(0..slots);
        }
        let mut gone = budget;
        gone.state = BudgetState::Ok;
        gone.used = UsageTotals::default();
        batch.emit(budget_event(EventType::BudgetRestored, &gone, "deleted"))?;
        Ok(())
    }
}

/// A budget event's draft: the scope, its limits and use, and why.
fn budget_event(kind: EventType, b: &Budget, why: &str) -> EventDraft {
    let data = object_string(|o| {
        o.str("scope", &b.scope.key())
            .str("state", b.state.as_str())
            .str("window", b.window.as_str())
            .f64("ratio", b.ratio())
            .f64("used_cost_usd", b.used.cost_usd())
            .u64("used_tokens", b.used.tokens.total())
            .str("reason", why);
        match b.max_cost_nanos {
            Some(m) => o.f64("max_cost_usd", m as f64 / usage::NANOS_PER_USD),
            None => o.null("max_cost_usd"),
        };
        match b.max_tokens {
            Some(m) => o.u64("max_tokens", m),
            None => o.null("max_tokens"),
        };
    });
    EventDraft {
        event_type: kind,
        project_id: match b.scope {
            BudgetScope::Project(p) => Some(p),
            _ => None,
        },
        task_id: None,
        agent_type: match &b.scope {
            BudgetScope::AgentType(a) => Some(a.clone()),
            _ => None,
        },
        data,
    }
}

impl Batch<'_> {
    /// A scope's budget, if it has one.
    pub(super) fn budget(&self, key: &str) -> Result<Option<Budget>, StoreError> {
        match self.budgets.open()?.get(key)? {
            Some(bytes) => Ok(Some(decode(bytes.value())?)),
            None => Ok(None),
        }
    }

    /// Stores a budget, and the timer of the end of its window in place of its last one.
    fn store_budget(&mut self, budget: &Budget) -> Written<()> {
        let key = budget.scope.key();
        let old = self
            .budgets
            .open_mut()?
            .insert(key.as_str(), encode(budget).as_slice())?
            .map(|bytes| decode::<Budget>(bytes.value()))
            .transpose()?;
        self.set_budget_timer(old.as_ref(), Some(budget))
    }

    fn set_budget_timer(&mut self, old: Option<&Budget>, new: Option<&Budget>) -> Written<()> {
        let (old, new) = (
            old.and_then(tables::budget_timer),
            new.and_then(tables::budget_timer),
        );
        if old != new {
            if let Some(key) = old {
                self.timers.open_mut()?.remove(&key)?;
            }
            if let Some(key) = new {
                self.timers.open_mut()?.insert(&key, ())?;
            }
        }
        Ok(())
    }

    /// The budget a window timer stands for, while it still does.
    pub(super) fn budget_of_timer(&self, key: &[u8; 25]) -> Result<Option<Budget>, StoreError> {
        for entry in self.budgets.open()?.iter()? {
            let (_, value) = entry?;
            let budget: Budget = decode(value.value())?;
            if tables::budget_timer(&budget).as_ref() == Some(key) {
                return Ok(Some(budget));
            }
        }
        Ok(None)
    }

    /// A budget's window ended: it counts again from what the new window used (nothing, unless
    /// reports came in it already), with `budget_restored` (reason `window`) when that lifts a
    /// warning or an exhaustion, whose held claims are then served at once. Answers whether the
    /// budget moved.
    pub(super) fn new_budget_window(&mut self, scope: &str) -> Written<bool> {
        let Some(mut budget) = self.budget(scope)? else {
            return Ok(false);
        };
        if !budget.window_over(self.now) {
            return Ok(false);
        }
        let before = budget.state;
        let (start, _) = budget.window.bounds(self.now);
        budget.window_start = start;
        budget.used = self.used_since(&budget.scope, budget.window, start)?;
        budget.state = budget.evaluate();
        self.store_budget(&budget)?;
        let project = match budget.scope {
            BudgetScope::Project(p) => Some(p),
            _ => None,
        };
        self.budget_changed(&budget, before, project, "window")?;
        Ok(true)
    }

    /// The events of a change of state, and the claims to serve when an exhaustion lifted. An
    /// exhaustion also asks a human, in `project` (the scope's, or that of the task whose report
    /// used the budget up), to raise the budget or cancel the scope's work.
    fn budget_changed(
        &mut self,
        budget: &Budget,
        before: BudgetState,
        project: Option<Id>,
        why: &str,
    ) -> Written<()> {
        let after = budget.state;
        if before == after {
            return Ok(());
        }
        let kind = match after {
            BudgetState::Warning if before == BudgetState::Ok => EventType::BudgetWarning,
            BudgetState::Exhausted => EventType::BudgetExhausted,
            _ => EventType::BudgetRestored,
        };
        if before == BudgetState::Exhausted {
            let slots = self.claimable.len() as u16;
            self.wake_all.extend(0..slots);
        }
        self.emit(budget_event(kind, budget, why))?;
        if after == BudgetState::Exhausted
            && let Some(project) = project
            && self.projects.open()?.get(project.as_bytes())?.is_some()
        {
            let scope = budget.scope.key();
            let limit = match (budget.max_cost_nanos, budget.max_tokens) {
                (Some(c), Some(t)) => {
                    format!("${:.2} or {t} tokens", c as f64 / usage::NANOS_PER_USD)
                }
                (Some(c), None) => format!("${:.2}", c as f64 / usage::NANOS_PER_USD),
                (None, Some(t)) => format!("{t} tokens"),
                (None, None) => "its limit".into(),
            };
            self.insert_hitl(
                project,
                None,
                format!(
                    "The budget of {scope} is exhausted ({} window: ${:.2} and {} tokens used of \
                     {limit}); its work is held. Raise the budget (PUT /api/v1/budgets/{scope}) \
                     or cancel the work.",
                    budget.window.as_str(),
                    budget.used.cost_usd(),
                    budget.used.tokens.total()
                ),
                vec!["raise the budget".into(), "cancel the work".into()],
                None,
            )?;
        }
        Ok(())
    }

    /// The exhausted budget over a task of this project and agent type now, if any: its scope.
    pub(super) fn held_by(
        &self,
        project: &Id,
        agent: &crate::domain::AgentType,
    ) -> Written<Option<String>> {
        // No budget at all, the usual case: nothing to read (a table's length is in its header).
        if self.budgets.open()?.len()? == 0 {
            return Ok(None);
        }
        for key in BudgetScope::keys_over(project, agent) {
            if let Some(b) = self.budget(&key)?
                && b.state_at(self.now) == BudgetState::Exhausted
            {
                return Ok(Some(key));
            }
        }
        Ok(None)
    }

    /// Whether a scope's budget is exhausted now (claims skip its tasks).
    pub(super) fn exhausted(&self, scope: &BudgetScope) -> Written<bool> {
        if self.budgets.open()?.len()? == 0 {
            return Ok(false);
        }
        Ok(self
            .budget(&scope.key())?
            .is_some_and(|b| b.state_at(self.now) == BudgetState::Exhausted))
    }

    /// Counts a recorded report against the budgets over its task (moving each to the window
    /// that holds the report first), with the events of their changes of state.
    pub(super) fn count_against_budgets(
        &mut self,
        task: &Task,
        tokens: &usage::Tokens,
        cost_nanos: u64,
    ) -> Written<()> {
        if self.budgets.open()?.len()? == 0 {
            return Ok(());
        }
        for key in BudgetScope::keys_over(&task.project_id, &task.agent_type) {
            let Some(mut budget) = self.budget(&key)? else {
                continue;
            };
            let (before, _) = budget.add(tokens, cost_nanos, self.now);
            self.store_budget(&budget)?;
            self.budget_changed(&budget, before, Some(task.project_id), "reported")?;
        }
        Ok(())
    }

    /// What a scope used since `start` (`Total`: ever), from the usage totals and rollups.
    fn used_since(
        &self,
        scope: &BudgetScope,
        window: Window,
        start: crate::domain::Micros,
    ) -> Result<UsageTotals, StoreError> {
        let agent = match scope {
            BudgetScope::AgentType(name) => match self.agent_id(name) {
                Some(id) => Some(id),
                None => return Ok(UsageTotals::default()),
            },
            _ => None,
        };
        let totals = self.txn.open_table(tables::USAGE_TOTALS)?;
        if window == Window::Total {
            let key = match scope {
                BudgetScope::Global => tables::usage_totals_key(tables::USAGE_ALL, &[]),
                BudgetScope::Project(p) => {
                    tables::usage_totals_key(tables::USAGE_PROJECT, p.as_bytes())
                }
                BudgetScope::AgentType(_) => tables::usage_totals_key(
                    tables::USAGE_AGENT,
                    &agent.unwrap_or_default().to_be_bytes(),
                ),
            };
            return Ok(match totals.get(&key)? {
                Some(bytes) => decode(bytes.value())?,
                None => UsageTotals::default(),
            });
        }
        let from = usage::hour_of(start);
        let mut sum = UsageTotals::default();
        match scope {
            BudgetScope::Project(p) => {
                let table = self.txn.open_table(tables::USAGE_HOURLY)?;
                for entry in table.range((p.as_bytes(), from, 0u16, "")..)? {
                    let (key, value) = entry?;
                    if key.value().0 != p.as_bytes() {
                        break;
                    }
                    sum.merge(&decode(value.value())?);
                }
            }
            BudgetScope::Global | BudgetScope::AgentType(_) => {
                let table = self.txn.open_table(tables::USAGE_HOURLY_ALL)?;
                for entry in table.range((from, 0u16, "")..)? {
                    let (key, value) = entry?;
                    if agent.is_some_and(|a| a != key.value().1) {
                        continue;
                    }
                    sum.merge(&decode(value.value())?);
                }
            }
        }
        Ok(sum)
    }
}
