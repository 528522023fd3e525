//! Workflow definitions: an ordered list of phases, each with an agent type, an instruction
//! template, the artifact types it is expected to produce, and whether a human approves the
//! hand-off after it. The project's oversight level decides which gates apply.

use serde::{Deserialize, Serialize};

use super::ids::Id;
use super::names::{AgentKind, AgentType, Allowed, ArtifactKind, ArtifactType};
use super::records::{PhaseRun, PhaseStatus, Project, WorkflowRun};
use super::rules::DomainError;
use super::time::Micros;
use super::vocab::OversightLevel;

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
    /// The priority of the phase's task, 1 (highest) to 5 [default: 3].
    #[serde(default)]
    pub priority: Option<u64>,
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
        priority: None,
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

/// A phase of a parsed definition.
#[derive(Clone, Debug, PartialEq)]
pub struct Phase {
    pub agent_type: AgentType,
    pub instructions: String,
    pub produces: Vec<ArtifactType>,
    pub gate: bool,
    pub priority: u8,
}

/// A definition parsed at the edge (start-up, reload): typed, and known to be well formed.
#[derive(Clone, Debug, PartialEq)]
pub struct Workflow {
    pub name: String,
    pub phases: Vec<Phase>,
}

/// The built-in `sdlc` workflow, parsed.
pub fn builtin() -> Workflow {
    sdlc()
        .parse()
        .unwrap_or_else(|e| unreachable!("the built-in workflow is malformed: {e}"))
}

impl Workflow {
    /// Whether every phase names only types a server with these settings takes (an operator's
    /// closed `agent_types` or `artifact_types` list).
    pub fn check_allowed(
        &self,
        agents: &Allowed<AgentKind>,
        artifacts: &Allowed<ArtifactKind>,
    ) -> Result<(), DomainError> {
        for (i, phase) in self.phases.iter().enumerate() {
            let field = |f: &str| format!("workflows.{}.phases[{i}].{f}", self.name);
            agents.parse(&field("agent_type"), phase.agent_type.as_str())?;
            for kind in &phase.produces {
                artifacts.parse(&field("produces"), kind.as_str())?;
            }
        }
        Ok(())
    }
}

impl WorkflowDef {
    /// Checks names, agent types and artifact types; a malformed definition stops start-up.
    pub fn validate(&self) -> Result<(), DomainError> {
        self.parse().map(|_| ())
    }

    /// The typed definition, or why it is malformed.
    pub fn parse(&self) -> Result<Workflow, DomainError> {
        if self.name.trim().is_empty() {
            return Err(DomainError::invalid("workflows.name", "must not be empty"));
        }
        if self.phases.is_empty() {
            return Err(DomainError::invalid(
                format!("workflows.{}.phases", self.name),
                "needs at least one phase",
            ));
        }
        let mut phases = Vec::with_capacity(self.phases.len());
        for (i, phase) in self.phases.iter().enumerate() {
            let field = |f: &str| format!("workflows.{}.phases[{i}].{f}", self.name);
            let agent_type = AgentType::parse(&phase.agent_type)
                .map_err(|m| DomainError::invalid(field("agent_type"), m))?;
            if phase.instructions.trim().is_empty() {
                return Err(DomainError::invalid(
                    field("instructions"),
                    "must not be empty",
                ));
            }
            let mut produces = Vec::with_capacity(phase.produces.len());
            for kind in &phase.produces {
                let kind = ArtifactType::parse(kind)
                    .map_err(|m| DomainError::invalid(field("produces"), m))?;
                produces.push(kind);
            }
            let priority = match phase.priority {
                Some(p) => super::tasks::check_priority(&field("priority"), p)?,
                None => super::tasks::DEFAULT_PRIORITY,
            };
            phases.push(Phase {
                agent_type,
                instructions: phase.instructions.clone(),
                produces,
                gate: phase.gate,
                priority,
            });
        }
        Ok(Workflow {
            name: self.name.clone(),
            phases,
        })
    }
}

impl Workflow {
    /// A new run of this workflow on a project: every phase waiting, its instructions rendered and
    /// its gate decided by the project's oversight level.
    pub fn start(&self, project: &Project, context: Option<String>, now: Micros) -> WorkflowRun {
        let phases = self
            .phases
            .iter()
            .map(|p| PhaseRun {
                agent_type: p.agent_type.clone(),
                instructions: render(&p.instructions, &project.name, context.as_deref()),
                produces: p.produces.clone(),
                gated: gated(project.oversight_level, p.gate),
                status: PhaseStatus::Waiting,
                task_id: None,
                gate_id: None,
                priority: p.priority,
            })
            .collect();
        WorkflowRun {
            project_id: project.id,
            workflow: self.name.clone(),
            context,
            phases,
            current: 0,
            completed: false,
            started_at: now,
            completed_at: None,
        }
    }
}

/// A stored run that names a phase it does not have, or a gated phase without its task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokenRun(pub String);

/// The run's current phase.
pub fn current(run: &WorkflowRun) -> Result<&PhaseRun, BrokenRun> {
    let index = run.current as usize;
    run.phases.get(index).ok_or_else(|| {
        BrokenRun(format!(
            "the workflow of project {} is at phase {index} of {}",
            run.project_id,
            run.phases.len()
        ))
    })
}

fn current_mut(run: &mut WorkflowRun) -> Result<&mut PhaseRun, BrokenRun> {
    let (project, index, len) = (run.project_id, run.current as usize, run.phases.len());
    run.phases.get_mut(index).ok_or_else(|| {
        BrokenRun(format!(
            "the workflow of project {project} is at phase {index} of {len}"
        ))
    })
}

/// What a completed task means for its project's run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OnCompleted {
    /// Not the running phase's task (or the run is over): nothing.
    Nothing,
    /// A human approves the hand-off first: ask this.
    OpenGate {
        question: String,
        options: Vec<String>,
    },
    /// Hand off at once (`hand_off`).
    HandOff,
}

pub fn on_completed(run: &WorkflowRun, task_id: Id) -> Result<OnCompleted, BrokenRun> {
    if run.completed {
        return Ok(OnCompleted::Nothing);
    }
    let phase = current(run)?;
    if phase.task_id != Some(task_id) {
        return Ok(OnCompleted::Nothing);
    }
    if !phase.gated {
        return Ok(OnCompleted::HandOff);
    }
    let next = run
        .phases
        .get(run.current as usize + 1)
        .map_or("completion".to_string(), |p| p.agent_type.to_string());
    Ok(OnCompleted::OpenGate {
        question: format!(
            "Approve the {} phase's work on this project and hand it to {next}?",
            phase.agent_type
        ),
        options: vec!["approve".into(), "reject".into(), "amend".into()],
    })
}

/// The gate of the current phase is open, waiting for `gate_id`.
pub fn gate_opened(run: &mut WorkflowRun, gate_id: Id) -> Result<(), BrokenRun> {
    let phase = current_mut(run)?;
    phase.status = PhaseStatus::AwaitingApproval;
    phase.gate_id = Some(gate_id);
    Ok(())
}

/// Whether `request` is the run's open gate (its answer moves the run on).
pub fn is_open_gate(run: &WorkflowRun, request: Id) -> Result<bool, BrokenRun> {
    Ok(!run.completed && current(run)?.gate_id == Some(request))
}

/// What follows a hand-off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Start this phase (its task).
    Phase(usize),
    /// That was the last phase: the run and the project are complete.
    Complete,
}

/// The current phase is done: the next starts, or the run completes.
pub fn hand_off(run: &mut WorkflowRun, now: Micros) -> Result<Next, BrokenRun> {
    let phase = current_mut(run)?;
    phase.status = PhaseStatus::Done;
    phase.gate_id = None;
    let index = run.current as usize;
    if index + 1 < run.phases.len() {
        return Ok(Next::Phase(index + 1));
    }
    run.completed = true;
    run.completed_at = Some(now);
    Ok(Next::Complete)
}

/// A phase's task was created: the phase runs.
pub fn phase_started(run: &mut WorkflowRun, index: usize, task_id: Id) -> Result<(), BrokenRun> {
    run.current = u32::try_from(index).map_err(|_| BrokenRun(format!("phase {index}")))?;
    let phase = current_mut(run)?;
    phase.task_id = Some(task_id);
    phase.status = PhaseStatus::Running;
    Ok(())
}

/// The gate was rejected: the phase runs again, its task reopened with the reviewer's feedback.
/// The task to reopen.
pub fn gate_rejected(run: &mut WorkflowRun) -> Result<Id, BrokenRun> {
    let project = run.project_id;
    let index = run.current;
    let phase = current_mut(run)?;
    let task = phase.task_id.ok_or_else(|| {
        BrokenRun(format!(
            "the workflow of project {project} gates phase {index}, which has no task"
        ))
    })?;
    phase.status = PhaseStatus::Running;
    phase.gate_id = None;
    Ok(task)
}

/// The reviewer's feedback a rejected gate sends back with its task.
pub fn rejection_feedback(comment: Option<&str>) -> String {
    comment.unwrap_or("rejected without a comment").to_string()
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

    fn project(level: OversightLevel) -> Project {
        Project {
            id: Id::new_v7(),
            name: "todo".into(),
            description: None,
            status: crate::domain::ProjectStatus::Active,
            oversight_level: level,
            created_at: 0,
            updated_at: 0,
        }
    }

    #[test]
    fn a_run_gates_hands_off_reopens_and_completes() {
        let mut run = builtin().start(&project(OversightLevel::Medium), Some("{}".into()), 5);
        assert_eq!(run.phases.len(), 5);
        assert!(run.phases[0].instructions.contains("todo"));
        let gates: Vec<bool> = run.phases.iter().map(|p| p.gated).collect();
        assert_eq!(gates, vec![false, true, false, true, false]);
        let t0 = Id::new_v7();
        phase_started(&mut run, 0, t0).unwrap();
        assert_eq!(
            on_completed(&run, Id::new_v7()).unwrap(),
            OnCompleted::Nothing
        );
        assert_eq!(on_completed(&run, t0).unwrap(), OnCompleted::HandOff);
        assert_eq!(hand_off(&mut run, 6).unwrap(), Next::Phase(1));
        assert_eq!(run.phases[0].status, PhaseStatus::Done);
        let t1 = Id::new_v7();
        phase_started(&mut run, 1, t1).unwrap();
        let OnCompleted::OpenGate { question, options } = on_completed(&run, t1).unwrap() else {
            panic!("the architect's phase is gated")
        };
        assert!(
            question.contains("architect") && question.contains("coder"),
            "{question}"
        );
        assert_eq!(options, vec!["approve", "reject", "amend"]);
        let gate = Id::new_v7();
        gate_opened(&mut run, gate).unwrap();
        assert!(is_open_gate(&run, gate).unwrap());
        assert_eq!(gate_rejected(&mut run).unwrap(), t1);
        assert_eq!(run.phases[1].status, PhaseStatus::Running);
        assert!(!is_open_gate(&run, gate).unwrap());
        for (index, _) in [(2, ()), (3, ()), (4, ())] {
            assert_eq!(hand_off(&mut run, 7).unwrap(), Next::Phase(index));
            phase_started(&mut run, index, Id::new_v7()).unwrap();
        }
        assert_eq!(hand_off(&mut run, 8).unwrap(), Next::Complete);
        assert!(run.completed);
        assert_eq!(run.completed_at, Some(8));
        assert_eq!(on_completed(&run, t0).unwrap(), OnCompleted::Nothing);
        assert_eq!(rejection_feedback(None), "rejected without a comment");
    }

    #[test]
    fn a_run_at_a_phase_it_does_not_have_is_broken_not_a_panic() {
        let mut run = builtin().start(&project(OversightLevel::High), None, 0);
        run.current = 9;
        assert!(current(&run).is_err());
        assert!(on_completed(&run, Id::new_v7()).is_err());
        assert!(hand_off(&mut run, 1).is_err());
        assert!(gate_rejected(&mut run).is_err());
        assert!(phase_started(&mut run, 7, Id::new_v7()).is_err());
    }

    #[test]
    fn malformed_definitions_are_refused() {
        let mut w = sdlc();
        w.phases[2].agent_type = "Wizard".into();
        let e = w.validate().unwrap_err().to_string();
        assert!(
            e.contains("phases[2].agent_type") && e.contains("`Wizard` is not a name"),
            "{e}"
        );
        let mut w = sdlc();
        w.phases[0].produces = vec!["poem!".into()];
        let e = w.validate().unwrap_err().to_string();
        assert!(e.contains("phases[0].produces"), "{e}");
        // A team's own names are taken, unless the operator closed the list.
        let mut w = sdlc();
        w.phases[2].agent_type = "wizard".into();
        w.phases[0].produces = vec!["poem".into()];
        let parsed = w.parse().unwrap();
        assert_eq!(parsed.phases[2].agent_type.as_str(), "wizard");
        parsed
            .check_allowed(&Allowed::open(256), &Allowed::open(1024))
            .unwrap();
        let closed = Allowed {
            only: Some(AgentType::KNOWN.to_vec()),
            max: 256,
        };
        let e = parsed
            .check_allowed(&closed, &Allowed::open(1024))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("phases[2].agent_type") && e.contains("unknown agent_type `wizard`"),
            "{e}"
        );
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
