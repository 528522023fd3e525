//! A project's status (`GET /api/v1/projects/{id}/status`): served from the cached view the writer
//! patches task by task, built from one read transaction on a miss, or read one page at a time.

use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;

use super::cache::{self, Cached, StatusView};
use super::read::{get, scan};
use super::{CacheKey, Store, StoreError, TaskFilter, tables};
use crate::domain::records::{Project, Task};
use crate::domain::{Id, Vocabulary};

/// The project's fields at the head of its status answer.
fn write_status_head(o: &mut crate::json::ObjectWriter<'_>, p: &Project) {
    o.id("project_id", p.id)
        .str("status", p.status.as_str())
        .str("name", &p.name);
}

/// A task's entry in its project's status: `{task_id, agent_type, status, created_at,
/// updated_at}`.
pub fn task_status_entry(t: &Task) -> Vec<u8> {
    crate::json::object(|o| {
        o.id("task_id", t.id)
            .str("agent_type", t.agent_type.as_str())
            .str("status", t.status.as_str())
            .timestamp("created_at", t.created_at)
            .timestamp("updated_at", t.updated_at);
    })
}

impl Store {
    /// `GET /api/v1/projects/{id}/status`, BotArmy's shape: `{project_id, status, name,
    /// tasks:[{task_id, agent_type, status, created_at, updated_at}]}`, every task oldest first.
    /// Served from the project's cached view, which the writer patches task by task; a miss reads
    /// the project's tasks once.
    pub fn project_status(&self, project: &Id) -> Result<Option<Bytes>, StoreError> {
        let key = CacheKey::ProjectStatus(*project);
        let looked_up = self.shared.cache.lock().lookup_status(&key);
        let view = match looked_up {
            Ok(view) => view,
            Err(since) => {
                let Some(view) = self.build_status_view(project)? else {
                    return Ok(None);
                };
                let view = Arc::new(Mutex::new(view));
                self.shared
                    .cache
                    .lock()
                    .insert_built(key, Cached::Status(view.clone()), since);
                view
            }
        };
        let (body, assembled) = {
            let mut v = view.lock();
            match v.assembled() {
                Some(body) => (body, None),
                None => (v.body(), Some(cache::view_weight(&v))),
            }
        };
        // Only an answer assembled now changed the entry's weight.
        if let Some(weight) = assembled {
            self.shared.cache.lock().reweigh(&key, &view, weight);
        }
        Ok(Some(body))
    }

    /// One page of a project's status: the same shape with at most `limit` tasks after the
    /// cursor, and `next_cursor`.
    pub fn project_status_page(
        &self,
        project: &Id,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Option<Bytes>, StoreError> {
        let Some(found) = self.get_project(project)? else {
            return Ok(None);
        };
        let page = self.project_tasks(project, TaskFilter::default(), cursor, limit)?;
        let entries: Vec<Vec<u8>> = page.items.iter().map(task_status_entry).collect();
        Ok(Some(Bytes::from(crate::json::object(|o| {
            write_status_head(o, &found);
            o.raw_array("tasks", entries.iter().map(Vec::as_slice))
                .opt_str("next_cursor", page.next_cursor.as_deref());
        }))))
    }

    fn build_status_view(&self, project: &Id) -> Result<Option<StatusView>, StoreError> {
        let txn = self.txn("list")?;
        let Some(found) = get::<Project>(&txn, tables::PROJECTS, project)? else {
            return Ok(None);
        };
        let mut head = crate::json::object(|o| write_status_head(o, &found));
        head.pop(); // the closing brace: the tasks follow
        head.extend_from_slice(b",\"tasks\":[");
        let mut view = StatusView::new(head);
        // Every task: the whole view is built once and cached; its entries are small (no
        // output, no instructions).
        let (tasks, _): (Vec<Task>, bool) = scan(
            &txn,
            tables::TASK_INDEX,
            &tables::project_prefix(project, tables::TASK_ALL, 0),
            None,
            usize::MAX - 1,
            usize::MAX,
            tables::TASKS,
            |_| true,
        )?;
        for task in &tasks {
            view.set_task(task.id, Bytes::from(task_status_entry(task)));
        }
        Ok(Some(view))
    }
}
