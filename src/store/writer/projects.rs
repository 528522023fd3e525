//! Projects: created, their oversight level set.

use super::{Batch, Checked, Write, Written};
use crate::domain::records::Project;
use crate::domain::{EventType, Id, OversightLevel, ProjectStatus, Vocabulary};
use crate::events::EventDraft;
use crate::json::object_string;
use crate::store::ProjectSummary;

/// A new active project at the medium oversight level.
#[derive(Clone, Debug)]
pub struct CreateProject {
    pub name: String,
    pub description: Option<String>,
}

impl Write for CreateProject {
    type Plan = CreateProject;
    type Output = Project;

    fn check(self, _: &Batch<'_>) -> Checked<CreateProject> {
        Ok(self)
    }

    fn apply(c: CreateProject, batch: &mut Batch<'_>) -> Written<Project> {
        let project = Project {
            id: Id::new_v7(),
            name: c.name,
            description: c.description,
            status: ProjectStatus::Active,
            oversight_level: OversightLevel::Medium,
            created_at: batch.now,
            updated_at: batch.now,
        };
        batch.put_project(&project)?;
        batch
            .summaries
            .insert(project.id, ProjectSummary::default());
        let data = object_string(|o| {
            o.id("id", project.id)
                .str("name", &project.name)
                .opt_str("description", project.description.as_deref())
                .str("status", project.status.as_str())
                .timestamp("created_at", project.created_at);
        });
        batch.emit(EventDraft {
            event_type: EventType::ProjectCreated,
            project_id: Some(project.id),
            task_id: None,
            agent_type: None,
            data,
        })?;
        Ok(project)
    }
}

/// Sets how much a project's workflow asks a human (which gates apply to runs started after).
#[derive(Clone, Debug)]
pub struct SetOversightLevel {
    pub project_id: Id,
    pub level: OversightLevel,
}

impl Write for SetOversightLevel {
    type Plan = (Project, OversightLevel);
    type Output = Project;

    fn check(self, batch: &Batch<'_>) -> Checked<(Project, OversightLevel)> {
        Ok((batch.require_project(&self.project_id)?, self.level))
    }

    fn apply((old, level): (Project, OversightLevel), batch: &mut Batch<'_>) -> Written<Project> {
        let mut project = old.clone();
        project.oversight_level = level;
        project.updated_at = batch.now;
        batch.put_project(&project)?;
        let data = object_string(|o| {
            o.str("level", level.as_str())
                .str("previous_level", old.oversight_level.as_str());
        });
        batch.emit(EventDraft {
            event_type: EventType::OversightLevelChanged,
            project_id: Some(project.id),
            task_id: None,
            agent_type: None,
            data,
        })?;
        Ok(project)
    }
}
