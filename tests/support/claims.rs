//! The documented claim order, for the model tests (`tests/store_model.rs`, `tests/store_time.rs`).

use flightdeck::domain::Id;

/// The highest priority (lowest number) first; within it, the first project after the one the
/// last claim of this agent type was served from (by id, wrapping around); within the project,
/// the oldest task. Items are (task, project, priority) of the pending tasks a claim may take.
pub fn next_claim(tasks: impl Iterator<Item = (Id, Id, u8)>, turn: Option<Id>) -> Option<(Id, Id)> {
    let pending: Vec<(Id, Id, u8)> = tasks.collect();
    let best = pending.iter().map(|t| t.2).min()?;
    let at: Vec<&(Id, Id, u8)> = pending.iter().filter(|t| t.2 == best).collect();
    let project = at
        .iter()
        .map(|t| t.1)
        .filter(|p| turn.is_some_and(|last| *p > last))
        .min()
        .or_else(|| at.iter().map(|t| t.1).min())?;
    let task = at.iter().filter(|t| t.1 == project).map(|t| t.0).min()?;
    Some((task, project))
}
