//! What the store keeps in memory beside redb and hands out by value: per-project summaries,
//! their totals, the response cache's keys and figures.

use crate::domain::{Id, TaskStatus, Vocabulary};

/// What the writer keeps current for each project, so status queries need no scan.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProjectSummary {
    /// Indexed by `TaskStatus::code()`.
    pub task_counts: [u64; 5],
    pub artifacts: u64,
    pub hitl_pending: u64,
    /// The seq of the newest event about this project (0 if none).
    pub latest_seq: u64,
}

impl ProjectSummary {
    pub fn total_tasks(&self) -> u64 {
        self.task_counts.iter().sum()
    }

    pub fn count(&self, status: TaskStatus) -> u64 {
        self.task_counts[usize::from(status.code())]
    }
}

/// What the response cache holds: encoded responses that only the writer invalidates.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum CacheKey {
    /// `GET /api/v1/context/artifacts/{id}`.
    Artifact(Id),
    /// `GET /api/v1/projects/{id}/status`: the project and all its tasks.
    ProjectStatus(Id),
}

/// Sums over every project's summary.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub task_counts: [u64; 5],
    pub projects: u64,
    pub hitl_pending: u64,
    pub artifacts: u64,
}

/// The response cache's figures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub entries: u64,
    /// Bytes held, and the most it may hold.
    pub bytes: u64,
    pub budget: u64,
    pub hits: u64,
    pub misses: u64,
    pub evictions: u64,
}
