//! Agent status (BotArmy): all agents, one agent, its history, and reset.

use crate::http::ErrorCode;
use crate::http::{Response, StatusCode};

use super::{AppState, Query, bare_list};
use crate::domain::{AgentType, Vocabulary};
use crate::http::ApiError;
use crate::http::body::json;
use crate::json::{ObjectWriter, object};
use crate::store::{Agent, command};

/// BotArmy: an object keyed by agent type.
pub fn all(state: &AppState) -> Result<Response, ApiError> {
    let agents = state.store.agents()?;
    let body = object(|o| {
        for agent in &agents {
            o.object(agent.agent_type.as_str(), |a| write(a, agent));
        }
    });
    Ok(json(StatusCode::OK, body))
}

pub fn one(state: &AppState, agent: &str) -> Result<Response, ApiError> {
    let agent_type: AgentType = state.store.agent_type("agent_type", agent)?;
    let agent = state.store.agent(&agent_type)?;
    let usage = state
        .store
        .usage_totals(crate::store::UsageScope::Agent(&agent_type))?;
    let body = object(|o| {
        write(o, &agent);
        o.object("usage", |u| super::usage::write_totals(u, &usage));
    });
    Ok(json(StatusCode::OK, body))
}

/// BotArmy: `[{agent_type, status, current_task_id, last_activity, error_message, updated_at}]`
/// (plus `task_id`, `timestamp`, `seq`), newest first; `?cursor=` is the seq of the last entry of
/// the previous page.
pub fn history(state: &AppState, agent: &str, query: &Query) -> Result<Response, ApiError> {
    let agent_type: AgentType = state.store.agent_type("agent_type", agent)?;
    let before = match query.cursor() {
        Some(c) => Some(c.parse::<u64>().map_err(|_| {
            ApiError::new(
                ErrorCode::InvalidCursor,
                "the cursor is not one this server issued",
            )
        })?),
        None => None,
    };
    let (entries, next) = state
        .store
        .agent_history(&agent_type, before, query.limit()?)?;
    let items: Vec<Vec<u8>> = entries
        .iter()
        .map(|e| {
            object(|o| {
                o.str("agent_type", e.agent_type.as_str())
                    .str("status", e.status.as_str())
                    .opt_id("current_task_id", e.task_id)
                    .timestamp("last_activity", e.at)
                    .opt_str("error_message", e.error_message.as_deref())
                    .timestamp("updated_at", e.at)
                    .opt_id("task_id", e.task_id)
                    .timestamp("timestamp", e.at)
                    .u64("seq", e.seq);
            })
        })
        .collect();
    Ok(bare_list(&items, next.map(|s| s.to_string()).as_deref()))
}

/// BotArmy: back to idle, 200 with the agent; broadcasts `agent_status_change`.
pub async fn reset(state: &AppState, agent: &str) -> Result<Response, ApiError> {
    let agent_type: AgentType = state.store.agent_type("agent_type", agent)?;
    let agent = state
        .store
        .write(command::ResetAgent {
            agent_type: agent_type.clone(),
        })
        .await?;
    let body = object(|o| {
        write(o, &agent);
        o.str("message", &format!("agent {agent_type} reset to idle"));
    });
    Ok(json(StatusCode::OK, body))
}

fn write(o: &mut ObjectWriter<'_>, a: &Agent) {
    o.str("agent_type", a.agent_type.as_str())
        .str("status", a.status.as_str())
        .opt_id("current_task_id", a.current_task_id)
        .opt_timestamp(
            "last_activity",
            (a.last_activity > 0).then_some(a.last_activity),
        )
        .opt_str("error_message", a.error_message.as_deref())
        .u64("working_tasks", u64::from(a.working_tasks));
}
