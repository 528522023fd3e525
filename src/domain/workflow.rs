//! Workflow definitions: an ordered list of phases, each with an agent type, an instruction
//! template, the artifact types it is expected to produce, and whether a human approves the
//! hand-off after it. The project's oversight level decides which gates apply.

use serde::{Deserialize, Serialize};

use super::rules::DomainError;
use super::vocab::{AgentType, ArtifactType, OversightLevel, Vocabulary};

/// One phase as defined (in the config file: `agent_type`, `instructions`, `produces`, `gate`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhaseDef {
    pub agent_type: String,
    /// `{project}` is replaced by the project's name, `{context}` by the workflow's context JSON.
    pub instructions: String,
    #[serde(default)]
    pub produces: Vec<String>,
    /// Gated at the medium oversight level (high gates every phase, low none).
    #[serde(default)]
    pub gate: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkflowDef {
    pub name: String,
    pub phases: Vec<PhaseDef>,
}

/// The built-in `sdlc` workflow: analyst → architect → coder → tester → deployer; at the medium
/// oversight level a human approves after the architect and before the deployer.
pub fn sdlc() -> WorkflowDef {
    let phase = |agent: &str, instructions: &str, produces: &[&str], gate: bool| PhaseDef {
        agent_type: agent.into(),
        instructions: instructions.into(),
        produces: produces.iter().map(|p| p.to_string()).collect(),
        gate,
    };
    WorkflowDef {
        name: "sdlc".into(),
        phases: vec![
            phase(
                "analyst",
                "Analyse the requirements of {project} and write a software specification. Context: {context}",
                &["software_specification"],
                false,
            ),
            phase(
                "architect",
                "Design the system architecture of {project} from the specification.",
                &["system_architecture"],
                true,
            ),
            phase(
                "coder",
                "Implement {project} following the architecture.",
                &["source_code"],
                false,
            ),
            phase(
                "tester",
                "Test {project} and report the results.",
                &["test_results"],
                true,
            ),
            phase(
                "deployer",
                "Deploy {project} and record the deployment.",
                &["deployment_log"],
                false,
            ),
        ],
    }
}

impl WorkflowDef {
    /// Checks names, agent types and artifact types; a malformed definition stops start-up.
    pub fn validate(&self) -> Result<(), DomainError> {
        if self.name.trim().is_empty() {
            return Err(DomainError::invalid("workflows.name", "must not be empty"));
        }
        if self.phases.is_empty() {
            return Err(DomainError::invalid(
                format!("workflows.{}.phases", self.name),
                "needs at least one phase",
            ));
        }
        for (i, phase) in self.phases.iter().enumerate() {
            let field = |f: &str| format!("workflows.{}.phases[{i}].{f}", self.name);
            if AgentType::parse(&phase.agent_type).is_none() {
                return Err(DomainError::unknown_value::<AgentType>(
                    &field("agent_type"),
                    &phase.agent_type,
                ));
            }
            if phase.instructions.trim().is_empty() {
                return Err(DomainError::invalid(
                    field("instructions"),
                    "must not be empty",
                ));
            }
            for kind in &phase.produces {
                if ArtifactType::parse(kind).is_none() {
                    return Err(DomainError::unknown_value::<ArtifactType>(
                        &field("produces"),
                        kind,
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Whether the hand-off after a phase waits for a human at this oversight level.
pub fn gated(level: OversightLevel, phase_gate: bool) -> bool {
    match level {
        OversightLevel::High => true,
        OversightLevel::Medium => phase_gate,
        OversightLevel::Low => false,
    }
}

/// The phase's instructions for a project.
pub fn render(template: &str, project: &str, context: Option<&str>) -> String {
    template
        .replace("{project}", project)
        .replace("{context}", context.unwrap_or("none"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sdlc_is_valid_and_gated_by_level() {
        let w = sdlc();
        w.validate().unwrap();
        let gates = |level| w.phases.iter().filter(|p| gated(level, p.gate)).count();
        assert_eq!(gates(OversightLevel::High), 5);
        assert_eq!(gates(OversightLevel::Medium), 2);
        assert_eq!(gates(OversightLevel::Low), 0);
    }

    #[test]
    fn malformed_definitions_are_refused() {
        let mut w = sdlc();
        w.phases[2].agent_type = "wizard".into();
        let e = w.validate().unwrap_err().to_string();
        assert!(
            e.contains("phases[2].agent_type") && e.contains("coder"),
            "{e}"
        );
        let mut w = sdlc();
        w.phases[0].produces = vec!["poem".into()];
        assert!(w.validate().is_err());
        assert!(
            WorkflowDef {
                name: "x".into(),
                phases: vec![]
            }
            .validate()
            .is_err()
        );
        assert_eq!(
            render("Build {project}: {context}", "todo", None),
            "Build todo: none"
        );
    }
}
