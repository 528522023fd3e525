//! Artifacts of the context store: created, updated, deleted.

use super::batch::read;
use super::{Batch, Checked, Write, Written};
use crate::domain::records::Artifact;
use crate::domain::{AgentType, ArtifactType, DomainError, EventType, Id};
use crate::events::EventDraft;
use crate::json::object_string;
use crate::store::tables::Versions;

/// A new artifact in a project's context store.
#[derive(Clone, Debug)]
pub struct CreateArtifact {
    pub project_id: Id,
    pub source_agent: AgentType,
    pub artifact_type: ArtifactType,
    /// JSON text.
    pub content: String,
    /// JSON text.
    pub metadata: Option<String>,
}

impl Write for CreateArtifact {
    type Plan = CreateArtifact;
    type Output = Artifact;

    fn check(self, batch: &Batch<'_>) -> Checked<CreateArtifact> {
        batch.require_project(&self.project_id)?;
        batch.check_types(
            &[("source_agent", &self.source_agent)],
            &[("artifact_type", &self.artifact_type)],
        )?;
        Ok(self)
    }

    fn apply(c: CreateArtifact, batch: &mut Batch<'_>) -> Written<Artifact> {
        batch.insert_artifact(c)
    }
}

/// Replaces an artifact's content and/or metadata; its version goes up by one.
#[derive(Clone, Debug)]
pub struct UpdateArtifact {
    pub artifact_id: Id,
    /// JSON text.
    pub content: Option<String>,
    /// JSON text.
    pub metadata: Option<String>,
}

impl Write for UpdateArtifact {
    type Plan = (Artifact, Artifact);
    type Output = Artifact;

    fn check(self, batch: &Batch<'_>) -> Checked<(Artifact, Artifact)> {
        let old: Artifact = read(batch.artifacts.open()?, &self.artifact_id)?
            .ok_or_else(|| DomainError::not_found("artifact", self.artifact_id))?;
        let mut artifact = old.clone();
        if let Some(content) = self.content {
            artifact.content = content;
        }
        if self.metadata.is_some() {
            artifact.metadata = self.metadata;
        }
        artifact.updated_at = batch.now;
        artifact.version += 1;
        Ok((old, artifact))
    }

    fn apply((old, artifact): (Artifact, Artifact), batch: &mut Batch<'_>) -> Written<Artifact> {
        batch.put_artifact(Versions {
            old: Some(&old),
            new: Some(&artifact),
        })?;
        let data = artifact_event_data(&artifact);
        batch.emit(EventDraft {
            event_type: EventType::ArtifactUpdated,
            project_id: Some(artifact.project_id),
            task_id: None,
            agent_type: Some(artifact.source_agent.clone()),
            data,
        })?;
        Ok(artifact)
    }
}

/// Deletes an artifact; answers its id.
#[derive(Clone, Debug)]
pub struct DeleteArtifact {
    pub artifact_id: Id,
}

impl Write for DeleteArtifact {
    type Plan = Artifact;
    type Output = Id;

    fn check(self, batch: &Batch<'_>) -> Checked<Artifact> {
        Ok(read(batch.artifacts.open()?, &self.artifact_id)?
            .ok_or_else(|| DomainError::not_found("artifact", self.artifact_id))?)
    }

    fn apply(old: Artifact, batch: &mut Batch<'_>) -> Written<Id> {
        batch.put_artifact(Versions {
            old: Some(&old),
            new: None,
        })?;
        let data = object_string(|o| {
            o.id("context_id", old.id)
                .str("artifact_type", old.artifact_type.as_str());
        });
        batch.emit(EventDraft {
            event_type: EventType::ArtifactDeleted,
            project_id: Some(old.project_id),
            task_id: None,
            agent_type: Some(old.source_agent),
            data,
        })?;
        Ok(old.id)
    }
}

impl<'t> Batch<'t> {
    /// Writes a new artifact (its project already checked) and its event.
    pub(super) fn insert_artifact(&mut self, c: CreateArtifact) -> Written<Artifact> {
        let artifact = Artifact {
            id: Id::new_v7(),
            project_id: c.project_id,
            source_agent: c.source_agent,
            artifact_type: c.artifact_type,
            content: c.content,
            metadata: c.metadata,
            created_at: self.now,
            updated_at: self.now,
            version: 1,
        };
        self.put_artifact(Versions {
            old: None,
            new: Some(&artifact),
        })?;
        let data = artifact_event_data(&artifact);
        self.emit(EventDraft {
            event_type: EventType::ArtifactCreated,
            project_id: Some(artifact.project_id),
            task_id: None,
            agent_type: Some(artifact.source_agent.clone()),
            data,
        })?;
        Ok(artifact)
    }
}

pub(super) fn artifact_event_data(artifact: &Artifact) -> String {
    object_string(|o| {
        o.id("context_id", artifact.id)
            .str("artifact_type", artifact.artifact_type.as_str())
            .str("source_agent", artifact.source_agent.as_str())
            .u64("version", u64::from(artifact.version));
    })
}
