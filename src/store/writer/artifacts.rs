//! Artifacts of the context store: created, updated, deleted.

use super::*;

impl<'t> Batch<'t> {
    pub(super) fn create_artifact(
        &mut self,
        project_id: Id,
        source_agent: AgentType,
        artifact_type: ArtifactType,
        content: String,
        metadata: Option<String>,
    ) -> ApplyResult<Reply> {
        self.require_project(&project_id)?;
        let artifact = Artifact {
            id: Id::new_v7(),
            project_id,
            source_agent,
            artifact_type,
            content,
            metadata,
            created_at: self.now,
            updated_at: self.now,
            version: 1,
        };
        self.put_artifact(None, Some(&artifact))?;
        let data = artifact_event_data(&artifact);
        self.emit(
            EventType::ArtifactCreated,
            Some(project_id),
            None,
            Some(source_agent),
            data,
        )?;
        Ok(Reply::Artifact(artifact))
    }

    pub(super) fn update_artifact(
        &mut self,
        artifact_id: Id,
        content: Option<String>,
        metadata: Option<String>,
    ) -> ApplyResult<Reply> {
        let old: Artifact = read(&self.artifacts, &artifact_id)?
            .ok_or_else(|| DomainError::not_found("artifact", artifact_id))?;
        let mut artifact = old.clone();
        if let Some(content) = content {
            artifact.content = content;
        }
        if metadata.is_some() {
            artifact.metadata = metadata;
        }
        artifact.updated_at = self.now;
        artifact.version += 1;
        self.put_artifact(Some(&old), Some(&artifact))?;
        let data = artifact_event_data(&artifact);
        let (project, source) = (artifact.project_id, artifact.source_agent);
        self.emit(
            EventType::ArtifactUpdated,
            Some(project),
            None,
            Some(source),
            data,
        )?;
        Ok(Reply::Artifact(artifact))
    }

    pub(super) fn delete_artifact(&mut self, artifact_id: Id) -> ApplyResult<Reply> {
        let old: Artifact = read(&self.artifacts, &artifact_id)?
            .ok_or_else(|| DomainError::not_found("artifact", artifact_id))?;
        self.put_artifact(Some(&old), None)?;
        let data = object_string(|o| {
            o.id("context_id", old.id)
                .str("artifact_type", old.artifact_type.as_str());
        });
        self.emit(
            EventType::ArtifactDeleted,
            Some(old.project_id),
            None,
            Some(old.source_agent),
            data,
        )?;
        Ok(Reply::ArtifactDeleted(artifact_id))
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
