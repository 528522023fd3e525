//! Workflow definitions and the rules of a run. A definition is a list of phases, each with an id
//! (default: its agent type), the phases it depends on (default: the one before it), an agent
//! type, an instruction template, the artifact types it is expected to produce, and whether a
//! human approves the hand-off after it. A phase starts when every phase it depends on is done;
//! phases whose dependencies are done run at the same time. The project's oversight level decides
//! which gates apply.

use serde::{Deserialize, Serialize};

use super::ids::Id;
use super::names::{AgentKind, AgentType, Allowed, ArtifactKind, ArtifactType, check_syntax};
use super::records::{HitlTimeout, PhaseRun, PhaseStatus, Project, RunStatus, WorkflowRun};
use super::rules::{DomainError, Limits};
use super::time::Micros;
use super::vocab::OversightLevel;

/// One phase as defined (in the config file or a `PUT /api/v1/workflows/{name}` body).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhaseDef {
    /// Unique in the workflow [default: the agent type, `coder.2` for its second default].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
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
    /// The ids of the phases it waits for [default: the phase before it; `[]` starts at once].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depends_on: Option<Vec<String>>,
    /// `<phase id>.output.<field>`: one task per element of that list in the output of a phase
    /// it depends on (directly or not), each with its element as `item`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub for_each: Option<String>,
    /// The gate's request times out after this long unanswered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate_timeout_seconds: Option<u64>,
    /// Then: `reject` [default], `approve` or `escalate` (to `gate_escalate_to`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate_on_timeout: Option<String>,
    /// The API key names the gate escalates to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gate_escalate_to: Vec<String>,
    /// The API key names that may answer the gate [default: any reviewer].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gate_assignees: Vec<String>,
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
        id: None,
        depends_on: None,
        for_each: None,
        gate_timeout_seconds: None,
        gate_on_timeout: None,
        gate_escalate_to: Vec::new(),
        gate_assignees: Vec::new(),
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
    pub id: String,
    pub agent_type: AgentType,
    pub instructions: String,
    pub produces: Vec<ArtifactType>,
    pub gate: bool,
    pub priority: u8,
    /// Indexes of the phases it waits for.
    pub depends_on: Vec<usize>,
    /// A fan-out over a list in the output of phase `.0` (an ancestor), at path `.1`.
    pub for_each: Option<(usize, String)>,
    /// The gate's timeout, if it has one.
    pub gate_timeout: Option<HitlTimeout>,
    /// Who may answer the gate (empty: any reviewer).
    pub gate_assignees: Vec<String>,
}

/// Where a definition comes from: only the API's can be replaced or deleted through the API.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Source {
    Builtin,
    Config,
    Api,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Builtin => "builtin",
            Source::Config => "config",
            Source::Api => "api",
        }
    }
}

/// A definition parsed at the edge (start-up, `PUT`): typed, and known to be well formed (ids
/// unique, dependencies known and acyclic).
#[derive(Clone, Debug, PartialEq)]
pub struct Workflow {
    pub name: String,
    /// Rises with every change through the API; 1 for the built-in and the config file's.
    pub version: u32,
    pub source: Source,
    pub phases: Vec<Phase>,
}

/// The built-in `sdlc` workflow, parsed.
pub fn builtin() -> Workflow {
    let mut w = sdlc()
        .parse()
        .unwrap_or_else(|e| unreachable!("the built-in workflow is malformed: {e}"));
    w.source = Source::Builtin;
    w
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

    /// The definition as a client writes it, every default spelled out (ids, dependencies,
    /// priorities): what `GET /api/v1/workflows/{name}` shows.
    pub fn to_def(&self) -> WorkflowDef {
        WorkflowDef {
            name: self.name.clone(),
            phases: self
                .phases
                .iter()
                .map(|p| PhaseDef {
                    id: Some(p.id.clone()),
                    agent_type: p.agent_type.to_string(),
                    instructions: p.instructions.clone(),
                    produces: p.produces.iter().map(|k| k.to_string()).collect(),
                    gate: p.gate,
                    priority: Some(u64::from(p.priority)),
                    depends_on: Some(
                        p.depends_on
                            .iter()
                            .map(|&d| self.phases[d].id.clone())
                            .collect(),
                    ),
                    for_each: p
                        .for_each
                        .as_ref()
                        .map(|(from, path)| format!("{}.output.{path}", self.phases[*from].id)),
                    gate_timeout_seconds: p.gate_timeout.as_ref().map(|t| t.seconds),
                    gate_on_timeout: p.gate_timeout.as_ref().map(|t| t.action.as_str().into()),
                    gate_escalate_to: p
                        .gate_timeout
                        .as_ref()
                        .map(|t| t.escalate_to.clone())
                        .unwrap_or_default(),
                    gate_assignees: p.gate_assignees.clone(),
                })
                .collect(),
        }
    }
}

impl WorkflowDef {
    /// Checks names, agent types and artifact types; a malformed definition stops start-up.
    pub fn validate(&self) -> Result<(), DomainError> {
        self.parse().map(|_| ())
    }

    /// The typed definition (from the config file: version 1), or why it is malformed, naming
    /// the failing field (`workflows.{name}.phases[2].depends_on[0]`).
    pub fn parse(&self) -> Result<Workflow, DomainError> {
        if self.name.trim().is_empty() {
            return Err(DomainError::invalid("workflows.name", "must not be empty"));
        }
        self.parse_at(&format!("workflows.{}.", self.name))
    }

    /// As `parse`, its fields named under `prefix`.
    fn parse_at(&self, prefix: &str) -> Result<Workflow, DomainError> {
        let at = |f: &str| format!("{prefix}{f}");
        if self.phases.is_empty() {
            return Err(DomainError::invalid(
                at("phases"),
                "needs at least one phase",
            ));
        }
        if self.phases.len() > Limits::PHASES {
            return Err(DomainError::invalid(
                at("phases"),
                format!(
                    "has {} phases; at most {}",
                    self.phases.len(),
                    Limits::PHASES
                ),
            ));
        }
        let mut phases: Vec<Phase> = Vec::with_capacity(self.phases.len());
        for (i, phase) in self.phases.iter().enumerate() {
            let field = |f: &str| at(&format!("phases[{i}].{f}"));
            let agent_type = AgentType::parse(&phase.agent_type)
                .map_err(|m| DomainError::invalid(field("agent_type"), m))?;
            let taken = |id: &str| phases.iter().position(|p| p.id == id);
            let id = match &phase.id {
                Some(id) => {
                    check_syntax(id).map_err(|m| DomainError::invalid(field("id"), m))?;
                    if let Some(j) = taken(id) {
                        return Err(DomainError::invalid(
                            field("id"),
                            format!("duplicate phase id `{id}` (phases[{j}] has it)"),
                        ));
                    }
                    id.clone()
                }
                None => {
                    let base = agent_type.as_str();
                    let mut id = base.to_string();
                    let mut n = 2;
                    while taken(&id).is_some() {
                        id = format!("{base}.{n}");
                        n += 1;
                    }
                    id
                }
            };
            super::rules::check_len(
                &field("instructions"),
                &phase.instructions,
                Limits::INSTRUCTIONS,
                true,
            )?;
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
            let gate_timeout = super::tasks::hitl_timeout(
                [
                    &field("gate_timeout_seconds"),
                    &field("gate_on_timeout"),
                    &field("gate_escalate_to"),
                ],
                phase.gate_timeout_seconds,
                phase.gate_on_timeout.as_deref(),
                &phase.gate_escalate_to,
            )?;
            super::tasks::check_key_names(&field("gate_assignees"), &phase.gate_assignees)?;
            phases.push(Phase {
                id,
                agent_type,
                instructions: phase.instructions.clone(),
                produces,
                gate: phase.gate,
                priority,
                depends_on: Vec::new(),
                for_each: None,
                gate_timeout,
                gate_assignees: phase.gate_assignees.clone(),
            });
        }
        // Dependencies may name later phases: resolved once every id is known.
        for (i, phase) in self.phases.iter().enumerate() {
            let field = |f: &str| at(&format!("phases[{i}].{f}"));
            let depends_on = match &phase.depends_on {
                None => i.checked_sub(1).into_iter().collect(),
                Some(names) => {
                    let mut found: Vec<usize> = Vec::with_capacity(names.len());
                    for (j, name) in names.iter().enumerate() {
                        let Some(d) = phases.iter().position(|p| p.id == *name) else {
                            let known: Vec<&str> = phases.iter().map(|p| p.id.as_str()).collect();
                            return Err(DomainError::invalid(
                                field(&format!("depends_on[{j}]")),
                                format!("unknown phase `{name}`; phases: {}", known.join(", ")),
                            ));
                        };
                        if found.contains(&d) {
                            return Err(DomainError::invalid(
                                field(&format!("depends_on[{j}]")),
                                format!("names `{name}` twice"),
                            ));
                        }
                        found.push(d);
                    }
                    found
                }
            };
            phases[i].depends_on = depends_on;
        }
        if let Some(cycle) = find_cycle(&phases) {
            let path: Vec<&str> = cycle.iter().map(|&i| phases[i].id.as_str()).collect();
            return Err(DomainError::invalid(
                at(&format!("phases[{}].depends_on", cycle[0])),
                format!("the dependencies form a cycle: {}", path.join(" → ")),
            ));
        }
        // A fan-out's list comes from a phase that is done before it starts: an ancestor, itself
        // one task (its output is one JSON value).
        for (i, phase) in self.phases.iter().enumerate() {
            let Some(text) = &phase.for_each else {
                continue;
            };
            let field = at(&format!("phases[{i}].for_each"));
            let (from, path) = text
                .split_once(".output.")
                .filter(|(from, path)| !from.is_empty() && path.split('.').all(|s| !s.is_empty()))
                .ok_or_else(|| {
                    DomainError::invalid(
                        &field,
                        format!("`{text}` is not `<phase id>.output.<field>`"),
                    )
                })?;
            let ancestors = ancestors_of(&phases, i);
            let Some(source) = ancestors.iter().copied().find(|&a| phases[a].id == from) else {
                return Err(DomainError::invalid(
                    &field,
                    format!("`{from}` is not a phase that `{}` depends on", phases[i].id),
                ));
            };
            if self.phases[source].for_each.is_some() {
                return Err(DomainError::invalid(
                    &field,
                    format!("`{from}` fans out itself: its tasks have no one output to split"),
                ));
            }
            phases[i].for_each = Some((source, path.to_string()));
        }
        Ok(Workflow {
            name: self.name.clone(),
            version: 1,
            source: Source::Config,
            phases,
        })
    }
}

/// A definition as listed: the built-in and the config file's have no dates (0).
#[derive(Clone, Debug, PartialEq)]
pub struct Definition {
    pub workflow: Workflow,
    pub created_at: Micros,
    pub updated_at: Micros,
}

/// The body of `PUT /api/v1/workflows/{name}`, as the store keeps it (the client's JSON text).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefinitionBody {
    /// If given, the name in the path.
    #[serde(default)]
    pub name: Option<String>,
    pub phases: Vec<PhaseDef>,
}

impl DefinitionBody {
    /// The definition stored under `name` at `version`, or why it is malformed (fields named as
    /// in the body: `phases[2].depends_on[0]`).
    pub fn parse(self, name: &str, version: u32) -> Result<Workflow, DomainError> {
        check_syntax(name).map_err(|m| DomainError::invalid("name", m))?;
        if let Some(given) = &self.name
            && given != name
        {
            return Err(DomainError::invalid(
                "name",
                format!("`{given}` is not the name in the path, `{name}`"),
            ));
        }
        let mut workflow = WorkflowDef {
            name: name.to_string(),
            phases: self.phases,
        }
        .parse_at("")?;
        workflow.version = version;
        workflow.source = Source::Api;
        Ok(workflow)
    }
}

/// Every phase `index` depends on, directly or not, in definition order (an acyclic graph).
fn ancestors_of(phases: &[Phase], index: usize) -> Vec<usize> {
    reachable(phases.len(), index, |i| phases[i].depends_on.clone())
}

/// Every node of `len` that `from` reaches through `deps` (itself only through a cycle), in
/// index order; dependencies out of range are ignored.
fn reachable(len: usize, from: usize, deps: impl Fn(usize) -> Vec<usize>) -> Vec<usize> {
    let mut seen = vec![false; len];
    let mut stack: Vec<usize> = if from < len { deps(from) } else { Vec::new() };
    while let Some(i) = stack.pop() {
        if i < len && !seen[i] {
            seen[i] = true;
            stack.extend(deps(i));
        }
    }
    (0..len).filter(|&i| seen[i]).collect()
}

/// A cycle among the phases' dependencies, as the path of indexes that closes it (first = last),
/// or None when they form a DAG.
fn find_cycle(phases: &[Phase]) -> Option<Vec<usize>> {
    // 0 unvisited, 1 on the current path, 2 done.
    let mut state = vec![0u8; phases.len()];
    let mut path: Vec<usize> = Vec::new();
    fn visit(i: usize, phases: &[Phase], state: &mut [u8], path: &mut Vec<usize>) -> bool {
        state[i] = 1;
        path.push(i);
        for &d in &phases[i].depends_on {
            if state[d] == 1 {
                path.push(d);
                return true;
            }
            if state[d] == 0 && visit(d, phases, state, path) {
                return true;
            }
        }
        state[i] = 2;
        path.pop();
        false
    }
    for i in 0..phases.len() {
        if state[i] == 0 && visit(i, phases, &mut state, &mut path) {
            let last = *path.last()?;
            let from = path.iter().position(|&p| p == last)?;
            return Some(path[from..].to_vec());
        }
    }
    None
}

impl Workflow {
    /// A new run of this workflow on a project: every phase waiting, its instructions rendered and
    /// its gate decided by the project's oversight level. `ready` says which phases start.
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
                id: p.id.clone(),
                depends_on: p.depends_on.iter().map(|&d| d as u32).collect(),
                for_each: p
                    .for_each
                    .as_ref()
                    .map(|(from, path)| (*from as u32, path.clone())),
                items: Vec::new(),
                items_done: 0,
                gate_timeout: p.gate_timeout.clone(),
                gate_assignees: p.gate_assignees.clone(),
            })
            .collect();
        WorkflowRun {
            project_id: project.id,
            workflow: self.name.clone(),
            context,
            phases,
            status: RunStatus::Running,
            started_at: now,
            completed_at: None,
            version: self.version,
            reason: None,
        }
    }
}

/// A stored run that names a phase it does not have, or a gated phase without its task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokenRun(pub String);

/// The run's phase `index`.
pub fn phase(run: &WorkflowRun, index: usize) -> Result<&PhaseRun, BrokenRun> {
    run.phases.get(index).ok_or_else(|| {
        BrokenRun(format!(
            "the workflow of project {} has no phase {index} (it has {})",
            run.project_id,
            run.phases.len()
        ))
    })
}

fn phase_mut(run: &mut WorkflowRun, index: usize) -> Result<&mut PhaseRun, BrokenRun> {
    let (project, len) = (run.project_id, run.phases.len());
    run.phases.get_mut(index).ok_or_else(|| {
        BrokenRun(format!(
            "the workflow of project {project} has no phase {index} (it has {len})"
        ))
    })
}

/// Whether every phase names only phases it has as dependencies (a stored run's invariant).
pub fn check(run: &WorkflowRun) -> Result<(), BrokenRun> {
    for (i, p) in run.phases.iter().enumerate() {
        let source = p.for_each.as_ref().map(|(from, _)| *from);
        if let Some(d) = p
            .depends_on
            .iter()
            .copied()
            .chain(source)
            .find(|&d| d as usize >= run.phases.len())
        {
            return Err(BrokenRun(format!(
                "the workflow of project {} has phase {i} depend on phase {d} of {}",
                run.project_id,
                run.phases.len()
            )));
        }
    }
    Ok(())
}

/// The phase the run is at, for display: the first not done (the last when all are).
pub fn current(run: &WorkflowRun) -> usize {
    run.phases
        .iter()
        .position(|p| p.status != PhaseStatus::Done)
        .unwrap_or(run.phases.len().saturating_sub(1))
}

/// The waiting phases whose dependencies are all done: they start now.
pub fn ready(run: &WorkflowRun) -> Vec<usize> {
    if !run.is_running() {
        return Vec::new();
    }
    run.phases
        .iter()
        .enumerate()
        .filter(|(_, p)| {
            p.status == PhaseStatus::Waiting
                && p.depends_on.iter().all(|&d| {
                    run.phases
                        .get(d as usize)
                        .is_some_and(|d| d.status == PhaseStatus::Done)
                })
        })
        .map(|(i, _)| i)
        .collect()
}

/// Every phase `index` depends on, directly or not, in definition order.
pub fn ancestors(run: &WorkflowRun, index: usize) -> Vec<usize> {
    reachable(run.phases.len(), index, |i| {
        run.phases[i]
            .depends_on
            .iter()
            .map(|&d| d as usize)
            .collect()
    })
}

/// The running phase whose task this is.
pub fn phase_of_task(run: &WorkflowRun, task_id: Id) -> Option<usize> {
    if !run.is_running() {
        return None;
    }
    run.phases.iter().position(|p| {
        p.status == PhaseStatus::Running
            && (p.task_id == Some(task_id) || p.items.contains(&task_id))
    })
}

/// What a completed task means for its project's run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OnCompleted {
    /// Not a running phase's task (or the run is over): nothing.
    Nothing,
    /// A human approves the hand-off of this phase first: ask this.
    OpenGate {
        phase: usize,
        question: String,
        options: Vec<String>,
    },
    /// Hand this phase off at once (`hand_off`).
    HandOff(usize),
    /// One of this fan-out phase's tasks completed, not the last: `items_done` of its `items`.
    ItemDone(usize),
}

/// What a completed task means for its run; a fan-out phase counts it.
pub fn on_completed(run: &mut WorkflowRun, task_id: Id) -> OnCompleted {
    let Some(index) = phase_of_task(run, task_id) else {
        return OnCompleted::Nothing;
    };
    let phase = &mut run.phases[index];
    if !phase.items.is_empty() {
        phase.items_done = (phase.items_done + 1).min(phase.items.len() as u32);
        if (phase.items_done as usize) < phase.items.len() {
            return OnCompleted::ItemDone(index);
        }
    }
    finished(run, index)
}

/// Phase `index` has done its work (its task, or all a fan-out's): its gate opens, or it hands
/// off.
pub fn finished(run: &WorkflowRun, index: usize) -> OnCompleted {
    let Some(phase) = run.phases.get(index) else {
        return OnCompleted::Nothing;
    };
    if !phase.gated {
        return OnCompleted::HandOff(index);
    }
    let dependents: Vec<&str> = run
        .phases
        .iter()
        .filter(|p| p.depends_on.contains(&(index as u32)))
        .map(|p| p.id.as_str())
        .collect();
    let next = if dependents.is_empty() {
        "completion".to_string()
    } else {
        dependents.join(" and ")
    };
    OnCompleted::OpenGate {
        phase: index,
        question: format!(
            "Approve the {} phase's work on this project and hand it to {next}?",
            phase.id
        ),
        options: vec!["approve".into(), "reject".into(), "amend".into()],
    }
}

/// The gate of phase `index` is open, waiting for `gate_id`.
pub fn gate_opened(run: &mut WorkflowRun, index: usize, gate_id: Id) -> Result<(), BrokenRun> {
    let phase = phase_mut(run, index)?;
    phase.status = PhaseStatus::AwaitingApproval;
    phase.gate_id = Some(gate_id);
    Ok(())
}

/// The phase whose open gate `request` is (its answer moves the run on).
pub fn open_gate(run: &WorkflowRun, request: Id) -> Option<usize> {
    if !run.is_running() {
        return None;
    }
    run.phases
        .iter()
        .position(|p| p.status == PhaseStatus::AwaitingApproval && p.gate_id == Some(request))
}

/// What follows a hand-off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Start these phases (their tasks); none while other branches still run.
    Phases(Vec<usize>),
    /// That was the last phase: the run and the project are complete.
    Complete,
}

/// Phase `index` is done: the phases that now have every dependency done start, or the run
/// completes.
pub fn hand_off(run: &mut WorkflowRun, index: usize, now: Micros) -> Result<Next, BrokenRun> {
    let phase = phase_mut(run, index)?;
    phase.status = PhaseStatus::Done;
    phase.gate_id = None;
    if run.phases.iter().all(|p| p.status == PhaseStatus::Done) {
        run.status = RunStatus::Completed;
        run.completed_at = Some(now);
        return Ok(Next::Complete);
    }
    Ok(Next::Phases(ready(run)))
}

/// A phase's task was created: the phase runs.
pub fn phase_started(run: &mut WorkflowRun, index: usize, task_id: Id) -> Result<(), BrokenRun> {
    let phase = phase_mut(run, index)?;
    phase.task_id = Some(task_id);
    phase.status = PhaseStatus::Running;
    Ok(())
}

/// The gate of phase `index` was rejected: the phase runs again, its task (a fan-out's every
/// task) reopened with the reviewer's feedback. The tasks to reopen; none for a fan-out whose list
/// was empty, which waits to be started again (its list read again from its source).
pub fn gate_rejected(run: &mut WorkflowRun, index: usize) -> Result<Vec<Id>, BrokenRun> {
    let project = run.project_id;
    let phase = phase_mut(run, index)?;
    let tasks: Vec<Id> = phase
        .task_id
        .into_iter()
        .chain(phase.items.clone())
        .collect();
    if tasks.is_empty() && phase.for_each.is_some() && phase.gate_id.is_some() {
        phase.status = PhaseStatus::Waiting;
        phase.gate_id = None;
        phase.items_done = 0;
        return Ok(tasks);
    }
    if tasks.is_empty() {
        return Err(BrokenRun(format!(
            "the workflow of project {project} gates phase {index}, which has no task"
        )));
    }
    phase.status = PhaseStatus::Running;
    phase.gate_id = None;
    phase.items_done = 0;
    Ok(tasks)
}

/// A fan-out phase's tasks were created (none for an empty list): the phase runs.
pub fn items_started(run: &mut WorkflowRun, index: usize, tasks: Vec<Id>) -> Result<(), BrokenRun> {
    let phase = phase_mut(run, index)?;
    phase.items = tasks;
    phase.items_done = 0;
    phase.status = PhaseStatus::Running;
    Ok(())
}

/// Where a fan-out's list is, and what it must be, or why the run cannot go on.
pub fn fan_out_list(
    run: &WorkflowRun,
    index: usize,
    output: Option<&serde_json::Value>,
    max: usize,
) -> Result<Vec<serde_json::Value>, String> {
    let phase = &run.phases[index];
    let Some((from, path)) = &phase.for_each else {
        return Ok(Vec::new());
    };
    let source = run
        .phases
        .get(*from as usize)
        .map_or("?", |p| p.id.as_str());
    let named = format!(
        "phase `{}` fans out over `{source}.output.{path}`",
        phase.id
    );
    let mut at = output.ok_or_else(|| format!("{named}, but `{source}` left no output"))?;
    for key in path.split('.') {
        at = at
            .get(key)
            .ok_or_else(|| format!("{named}, which has no `{key}`"))?;
    }
    let list = at
        .as_array()
        .ok_or_else(|| format!("{named}, which is not a list"))?;
    if list.len() > max {
        return Err(format!(
            "{named}, which has {} elements; at most {max} (--max-fan-out)",
            list.len()
        ));
    }
    Ok(list.clone())
}

/// What ending a run leaves to undo: the tasks of its running phases and its open gates.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Ended {
    pub tasks: Vec<Id>,
    pub gates: Vec<Id>,
}

/// Ends a running run as failed (phase `failed` is the one whose task failed for good) or
/// cancelled (`failed` None): every phase not done is cancelled.
pub fn end(
    run: &mut WorkflowRun,
    failed: Option<usize>,
    reason: String,
    now: Micros,
) -> Result<Ended, BrokenRun> {
    if let Some(index) = failed {
        phase_mut(run, index)?.status = PhaseStatus::Failed;
    }
    let mut ended = Ended::default();
    for phase in &mut run.phases {
        match phase.status {
            PhaseStatus::Running => {
                ended.tasks.extend(phase.task_id);
                ended.tasks.extend(phase.items.iter().copied());
            }
            PhaseStatus::AwaitingApproval => ended.gates.extend(phase.gate_id),
            PhaseStatus::Waiting => {}
            PhaseStatus::Done | PhaseStatus::Failed | PhaseStatus::Cancelled => continue,
        }
        phase.status = PhaseStatus::Cancelled;
        phase.gate_id = None;
    }
    run.status = if failed.is_some() {
        RunStatus::Failed
    } else {
        RunStatus::Cancelled
    };
    run.reason = Some(reason);
    run.completed_at = Some(now);
    Ok(ended)
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

/// A fan-out task's instructions: `{item}` replaced by its element (a string as it is, anything
/// else as JSON).
pub fn render_item(instructions: &str, item: &serde_json::Value) -> String {
    let text = match item {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    instructions.replace("{item}", &text)
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
    fn a_linear_run_gates_hands_off_reopens_and_completes() {
        let mut run = builtin().start(&project(OversightLevel::Medium), Some("{}".into()), 5);
        assert_eq!(run.phases.len(), 5);
        assert_eq!(run.version, 1);
        assert!(run.phases[0].instructions.contains("todo"));
        let gates: Vec<bool> = run.phases.iter().map(|p| p.gated).collect();
        assert_eq!(gates, vec![false, true, false, true, false]);
        let deps: Vec<Vec<u32>> = run.phases.iter().map(|p| p.depends_on.clone()).collect();
        assert_eq!(deps, vec![vec![], vec![0], vec![1], vec![2], vec![3]]);
        assert_eq!(ready(&run), vec![0]);
        let t0 = Id::new_v7();
        phase_started(&mut run, 0, t0).unwrap();
        assert_eq!(ready(&run), Vec::<usize>::new());
        assert_eq!(on_completed(&mut run, Id::new_v7()), OnCompleted::Nothing);
        assert_eq!(on_completed(&mut run, t0), OnCompleted::HandOff(0));
        assert_eq!(hand_off(&mut run, 0, 6).unwrap(), Next::Phases(vec![1]));
        assert_eq!(run.phases[0].status, PhaseStatus::Done);
        assert_eq!(current(&run), 1);
        let t1 = Id::new_v7();
        phase_started(&mut run, 1, t1).unwrap();
        let OnCompleted::OpenGate {
            phase,
            question,
            options,
        } = on_completed(&mut run, t1)
        else {
            panic!("the architect's phase is gated")
        };
        assert_eq!(phase, 1);
        assert_eq!(
            question,
            "Approve the architect phase's work on this project and hand it to coder?"
        );
        assert_eq!(options, vec!["approve", "reject", "amend"]);
        let gate = Id::new_v7();
        gate_opened(&mut run, 1, gate).unwrap();
        assert_eq!(open_gate(&run, gate), Some(1));
        assert_eq!(gate_rejected(&mut run, 1).unwrap(), vec![t1]);
        assert_eq!(run.phases[1].status, PhaseStatus::Running);
        assert_eq!(open_gate(&run, gate), None);
        for index in 2..5 {
            assert_eq!(
                hand_off(&mut run, index - 1, 7).unwrap(),
                Next::Phases(vec![index])
            );
            phase_started(&mut run, index, Id::new_v7()).unwrap();
        }
        assert_eq!(hand_off(&mut run, 4, 8).unwrap(), Next::Complete);
        assert_eq!(run.status, RunStatus::Completed);
        assert_eq!(run.completed_at, Some(8));
        assert_eq!(current(&run), 4);
        assert_eq!(on_completed(&mut run, t0), OnCompleted::Nothing);
        assert_eq!(rejection_feedback(None), "rejected without a comment");
    }

    fn team() -> Workflow {
        let phase = |id: &str, agent: &str, deps: &[&str], gate: bool| PhaseDef {
            id: Some(id.into()),
            agent_type: agent.into(),
            instructions: format!("{id} {{project}}"),
            produces: vec![],
            gate,
            priority: None,
            depends_on: Some(deps.iter().map(|d| d.to_string()).collect()),
            for_each: None,
            gate_timeout_seconds: None,
            gate_on_timeout: None,
            gate_escalate_to: Vec::new(),
            gate_assignees: Vec::new(),
        };
        DefinitionBody {
            name: None,
            phases: vec![
                // Listed out of order: dependencies may name later phases.
                phase("edit", "editor", &["draft"], true),
                phase("plan", "planner", &[], false),
                phase("research", "researcher", &["plan"], false),
                phase("outline", "writer", &["plan"], false),
                phase("draft", "writer", &["research", "outline"], false),
            ],
        }
        .parse("essay", 3)
        .unwrap()
    }

    #[test]
    fn a_graph_runs_its_branches_together_and_joins_them() {
        let w = team();
        assert_eq!((w.version, w.source), (3, Source::Api));
        let mut run = w.start(&project(OversightLevel::Medium), None, 1);
        assert_eq!(run.version, 3);
        assert_eq!(ready(&run), vec![1]);
        let plan = Id::new_v7();
        phase_started(&mut run, 1, plan).unwrap();
        assert_eq!(on_completed(&mut run, plan), OnCompleted::HandOff(1));
        assert_eq!(hand_off(&mut run, 1, 2).unwrap(), Next::Phases(vec![2, 3]));
        let (research, outline) = (Id::new_v7(), Id::new_v7());
        phase_started(&mut run, 2, research).unwrap();
        phase_started(&mut run, 3, outline).unwrap();
        // The join waits for both branches.
        assert_eq!(hand_off(&mut run, 3, 3).unwrap(), Next::Phases(vec![]));
        assert_eq!(hand_off(&mut run, 2, 3).unwrap(), Next::Phases(vec![4]));
        assert_eq!(ancestors(&run, 4), vec![1, 2, 3]);
        assert_eq!(ancestors(&run, 0), vec![1, 2, 3, 4]);
        assert_eq!(ancestors(&run, 1), Vec::<usize>::new());
        let draft = Id::new_v7();
        phase_started(&mut run, 4, draft).unwrap();
        hand_off(&mut run, 4, 4).unwrap();
        let edit = Id::new_v7();
        phase_started(&mut run, 0, edit).unwrap();
        let OnCompleted::OpenGate {
            phase, question, ..
        } = on_completed(&mut run, edit)
        else {
            panic!("the edit is gated")
        };
        assert_eq!(phase, 0);
        assert!(question.ends_with("hand it to completion?"), "{question}");
        assert_eq!(hand_off(&mut run, 0, 9).unwrap(), Next::Complete);
        assert_eq!(run.status, RunStatus::Completed);
    }

    #[test]
    fn a_failed_or_cancelled_run_names_what_to_undo() {
        let mut run = team().start(&project(OversightLevel::High), None, 1);
        let plan = Id::new_v7();
        phase_started(&mut run, 1, plan).unwrap();
        hand_off(&mut run, 1, 2).unwrap();
        let (research, outline) = (Id::new_v7(), Id::new_v7());
        phase_started(&mut run, 2, research).unwrap();
        phase_started(&mut run, 3, outline).unwrap();
        let gate = Id::new_v7();
        gate_opened(&mut run, 3, gate).unwrap();
        let mut failed = run.clone();
        let ended = end(&mut failed, Some(2), "research failed".into(), 5).unwrap();
        assert_eq!(ended.tasks, Vec::<Id>::new());
        assert_eq!(ended.gates, vec![gate]);
        assert_eq!(failed.status, RunStatus::Failed);
        assert_eq!(failed.reason.as_deref(), Some("research failed"));
        assert_eq!(failed.completed_at, Some(5));
        let statuses: Vec<PhaseStatus> = failed.phases.iter().map(|p| p.status).collect();
        use PhaseStatus::*;
        assert_eq!(
            statuses,
            vec![Cancelled, Done, Failed, Cancelled, Cancelled]
        );
        // An ended run takes no more steps.
        assert_eq!(on_completed(&mut failed, research), OnCompleted::Nothing);
        assert_eq!(open_gate(&failed, gate), None);
        assert_eq!(ready(&failed), Vec::<usize>::new());
        let ended = end(&mut run, None, "stop".into(), 6).unwrap();
        assert_eq!(ended.tasks, vec![research]);
        assert_eq!(ended.gates, vec![gate]);
        assert_eq!(run.status, RunStatus::Cancelled);
    }

    #[test]
    fn a_run_naming_a_phase_it_does_not_have_is_broken_not_a_panic() {
        let mut run = builtin().start(&project(OversightLevel::High), None, 0);
        run.phases[2].depends_on = vec![9];
        assert!(check(&run).is_err());
        assert_eq!(ready(&run), vec![0]);
        assert!(hand_off(&mut run, 7, 1).is_err());
        assert!(gate_rejected(&mut run, 7).is_err());
        assert!(gate_rejected(&mut run, 0).is_err(), "no task yet");
        assert!(phase_started(&mut run, 7, Id::new_v7()).is_err());
        assert!(end(&mut run, Some(8), String::new(), 1).is_err());
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

    fn body(phases: serde_json::Value) -> DefinitionBody {
        serde_json::from_value(serde_json::json!({ "phases": phases })).unwrap()
    }

    fn refused(phases: serde_json::Value) -> String {
        body(phases).parse("flow", 1).unwrap_err().to_string()
    }

    #[test]
    fn graphs_are_checked_naming_the_failing_field() {
        let p = |id: &str, deps: &[&str]| serde_json::json!({"id": id, "agent_type": "writer", "instructions": "x", "depends_on": deps});
        let e = refused(serde_json::json!([p("a", &[]), p("a", &["a"])]));
        assert_eq!(e, "phases[1].id: duplicate phase id `a` (phases[0] has it)");
        let e = refused(serde_json::json!([p("a", &[]), p("b", &["c"])]));
        assert_eq!(
            e,
            "phases[1].depends_on[0]: unknown phase `c`; phases: a, b"
        );
        let e = refused(serde_json::json!([
            p("a", &["c"]),
            p("b", &["a"]),
            p("c", &["b"])
        ]));
        assert_eq!(
            e,
            "phases[0].depends_on: the dependencies form a cycle: a → c → b → a"
        );
        let e = refused(serde_json::json!([p("a", &["a"])]));
        assert_eq!(
            e,
            "phases[0].depends_on: the dependencies form a cycle: a → a"
        );
        let e = refused(serde_json::json!([p("a", &[]), p("b", &["a", "a"])]));
        assert_eq!(e, "phases[1].depends_on[1]: names `a` twice");
        assert_eq!(
            refused(serde_json::json!([])),
            "phases: needs at least one phase"
        );
        let many: Vec<serde_json::Value> = (0..101).map(|i| p(&format!("p{i}"), &[])).collect();
        assert_eq!(
            refused(serde_json::Value::Array(many)),
            "phases: has 101 phases; at most 100"
        );
        let e = refused(serde_json::json!([p("Bad Id", &[])]));
        assert!(e.starts_with("phases[0].id: "), "{e}");
        let e = body(serde_json::json!([p("a", &[])]))
            .parse("Bad Name", 1)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("name: "), "{e}");
        let mut named = body(serde_json::json!([p("a", &[])]));
        named.name = Some("other".into());
        assert_eq!(
            named.parse("flow", 1).unwrap_err().to_string(),
            "name: `other` is not the name in the path, `flow`"
        );
        // Defaults: an agent type's id, suffixed when repeated; the phase before as dependency.
        let w = body(serde_json::json!([
            {"agent_type": "coder", "instructions": "one"},
            {"agent_type": "coder", "instructions": "two"},
            {"agent_type": "coder", "instructions": "three", "depends_on": []},
        ]))
        .parse("flow", 2)
        .unwrap();
        let ids: Vec<&str> = w.phases.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(ids, vec!["coder", "coder.2", "coder.3"]);
        let deps: Vec<Vec<usize>> = w.phases.iter().map(|p| p.depends_on.clone()).collect();
        assert_eq!(deps, vec![vec![], vec![0], vec![]]);
        // What GET shows parses back to the same definition.
        let shown = w.to_def();
        let again = DefinitionBody {
            name: Some("flow".into()),
            phases: shown.phases,
        }
        .parse("flow", 2)
        .unwrap();
        assert_eq!(again, w);
    }
}
