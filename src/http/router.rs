//! Every route, declared once in one table (`routes!`), and the matcher built from it.
//!
//! A row names the route's method, path template, metric label (never an id or a raw path), its
//! service-level class, the access it needs, how it answers, its usual status and what OpenAPI
//! says of it. From the table come the `Route` enum, `Route::ALL`, the matcher with its `Allow`
//! headers (and so CORS preflights), the per-route metric series, the OpenAPI paths and methods,
//! and the check that the shipped Prometheus rules name every route of each class. Adding a route
//! is a row here, a handler in `api`, and its body's schema in `api::openapi`.
//!
//! Matching walks a tree of the templates' segments built once, literal segments before
//! parameters (as the table's order would try them): no allocation per request. A trailing slash
//! is accepted wherever the route exists without one.

use std::sync::OnceLock;

use hyper::Method;

/// Which service level a route's latency counts towards.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Class {
    StatusQuery,
    TaskOperation,
    ContextRetrieval,
    Other,
}

/// The access a route needs when API keys are configured: nothing, any key, or a key holding one
/// role (`http::auth`).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Access {
    /// None: probes, the console and the OpenAPI document.
    Open,
    /// `/metrics` and `/health/detailed`: open, unless `--protect-metrics` asks for a key.
    Scrape,
    /// Any key.
    Read,
    /// The `worker` role: claim, heartbeat, progress, complete, create tasks, artifacts and
    /// approval requests.
    Worker,
    /// The `reviewer` role: answer approvals.
    Reviewer,
    /// The `operator` role: projects, workflows, queues, pauses, agent resets, webhooks.
    Operator,
    /// The `admin` role: backups.
    Admin,
}

impl Access {
    /// The role a route needs, if it needs one (a write).
    pub fn role(self) -> Option<Role> {
        match self {
            Access::Open | Access::Scrape | Access::Read => None,
            Access::Worker => Some(Role::Worker),
            Access::Reviewer => Some(Role::Reviewer),
            Access::Operator => Some(Role::Operator),
            Access::Admin => Some(Role::Admin),
        }
    }
}

/// What a key may do beyond reading. Every key reads.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    Worker,
    Reviewer,
    Operator,
    Admin,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Worker, Role::Reviewer, Role::Operator, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Worker => "worker",
            Role::Reviewer => "reviewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == text)
    }

    /// Its bit in a key's set of roles.
    pub fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// How a route answers.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Answers {
    /// While it is called, from memory or a read transaction.
    Now,
    /// After reading the request's body (its schema is the row's `body`).
    Body,
    /// After waiting without a body: for the writer, a probe or a backup.
    Wait,
}

/// A route's method (HEAD is answered wherever GET is).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Verb {
    Get,
    /// A GET that upgrades to a WebSocket: no HEAD.
    Upgrade,
    Post,
    Put,
    Patch,
    Delete,
}

impl Verb {
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Get | Verb::Upgrade => "GET",
            Verb::Post => "POST",
            Verb::Put => "PUT",
            Verb::Patch => "PATCH",
            Verb::Delete => "DELETE",
        }
    }

    /// Whether a request's method asks for this route's (HEAD for GET).
    fn accepts(self, method: &Method) -> bool {
        match self {
            Verb::Get => method == Method::GET || method == Method::HEAD,
            Verb::Upgrade => method == Method::GET,
            Verb::Post => method == Method::POST,
            Verb::Put => method == Method::PUT,
            Verb::Patch => method == Method::PATCH,
            Verb::Delete => method == Method::DELETE,
        }
    }
}

/// One row of the route table.
#[derive(Debug)]
pub struct RouteDef {
    pub route: Route,
    pub verb: Verb,
    /// The path templates: `{name}` is the one path parameter. OpenAPI describes the first.
    pub paths: &'static [&'static str],
    /// The metric label and log name.
    pub name: &'static str,
    pub class: Class,
    pub access: Access,
    pub answers: Answers,
    /// The status of the usual answer, for the series that exist from start-up and OpenAPI.
    pub status: u16,
    /// OpenAPI's summary.
    pub summary: &'static str,
    /// The request body's schema in OpenAPI's components, for routes that read one.
    pub body: Option<&'static str>,
}

macro_rules! routes {
    ($(
        $(#[$doc:meta])*
        $route:ident: $verb:ident $path:literal $(| $more:literal)*
            => $name:literal, $class:ident, $access:ident, $answers:ident, $status:literal,
            $summary:expr $(, body $body:literal)?;
    )+) => {
        /// Every route flightdeck answers.
        #[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
        pub enum Route {
            $($(#[$doc])* $route,)+
        }

        impl Route {
            /// Every route, in the table's order (`Route::index`).
            pub const ALL: &[Route] = &[$(Route::$route,)+];
        }

        /// The route table, in `Route::ALL`'s order.
        pub const TABLE: &[RouteDef] = &[$(
            RouteDef {
                route: Route::$route,
                verb: routes!(@verb $verb),
                paths: &[$path $(, $more)*],
                name: $name,
                class: Class::$class,
                access: Access::$access,
                answers: Answers::$answers,
                status: $status,
                summary: $summary,
                body: routes!(@body $($body)?),
            },
        )+];
    };
    (@verb GET) => { Verb::Get };
    (@verb UPGRADE) => { Verb::Upgrade };
    (@verb POST) => { Verb::Post };
    (@verb PUT) => { Verb::Put };
    (@verb PATCH) => { Verb::Patch };
    (@verb DELETE) => { Verb::Delete };
    (@body) => { None };
    (@body $body:literal) => { Some($body) };
}

routes! {
    ProjectsList: GET "/api/v1/projects"
        => "projects.list", Other, Read, Now, 200,
        "List projects, newest first";
    ProjectsCreate: POST "/api/v1/projects"
        => "projects.create", Other, Operator, Body, 201,
        "Create a project", body "CreateProject";
    ProjectGet: GET "/api/v1/projects/{id}"
        => "projects.get", StatusQuery, Read, Now, 200,
        "A project with task counts";
    ProjectStatus: GET "/api/v1/projects/{id}/status"
        => "projects.status", StatusQuery, Read, Now, 200,
        "A project's tasks (BotArmy)";
    ProjectCompletion: GET "/api/v1/projects/{id}/completion"
        => "projects.completion", StatusQuery, Read, Now, 200,
        "Completion (BotArmy)";
    ProjectTasksList: GET "/api/v1/projects/{id}/tasks"
        => "tasks.list", TaskOperation, Read, Now, 200,
        "A project's tasks, filtered";
    ProjectTasksCreate: POST "/api/v1/projects/{id}/tasks"
        => "tasks.create", TaskOperation, Worker, Body, 201,
        "Create a task (BotArmy)", body "CreateTask";
    TaskGet: GET "/api/v1/tasks/{id}"
        => "tasks.get", TaskOperation, Read, Now, 200,
        "A task";
    TaskSetStatus: POST "/api/v1/tasks/{id}/status"
        => "tasks.set_status", TaskOperation, Worker, Body, 200,
        "Change a task's status", body "SetStatus";
    TaskClaim: POST "/api/v1/tasks/claim"
        => "tasks.claim", TaskOperation, Worker, Body, 200,
        "Claim the oldest pending task of an agent type", body "Claim";
    TaskHeartbeat: POST "/api/v1/tasks/{id}/heartbeat"
        => "tasks.heartbeat", TaskOperation, Worker, Body, 200,
        "Extend a claim's lease", body "Heartbeat";
    TaskUsage: POST "/api/v1/tasks/{id}/usage"
        => "tasks.usage", TaskOperation, Worker, Body, 201,
        "Report a task's model usage (tokens, cost) under its lease", body "UsageReport";
    BudgetsList: GET "/api/v1/budgets"
        => "budgets.list", Other, Read, Now, 200,
        "Every budget with what it used, its ratio and its state";
    BudgetGet: GET "/api/v1/budgets/{scope}"
        => "budgets.get", Other, Read, Now, 200,
        "A scope's budget (global, project:{id}, agent_type:{name})";
    BudgetPut: PUT "/api/v1/budgets/{scope}"
        => "budgets.put", Other, Operator, Body, 200,
        "Set a scope's budget (201 when new): limits in dollars and tokens, a window", body "Budget";
    BudgetDelete: DELETE "/api/v1/budgets/{scope}"
        => "budgets.delete", Other, Operator, Wait, 204,
        "Remove a scope's budget";
    UsageGet: GET "/api/v1/usage"
        => "usage.get", Other, Read, Now, 200,
        "Model usage: totals and groups by project, agent type, model, day or hour";
    WorkflowStart: POST "/api/v1/projects/{id}/workflow"
        => "workflows.start", Other, Operator, Body, 201,
        "Start a workflow", body "StartWorkflow";
    WorkflowGet: GET "/api/v1/projects/{id}/workflow"
        => "workflows.get", Other, Read, Now, 200,
        "The project's workflow run";
    WorkflowCancel: POST "/api/v1/projects/{id}/workflow/cancel"
        => "workflows.cancel", Other, Operator, Body, 200,
        "Cancel the project's running workflow and its open tasks", body "CancelWorkflow";
    WorkflowsList: GET "/api/v1/workflows"
        => "workflows.list", Other, Read, Now, 200,
        "Every workflow definition: built in, the config file's, stored through the API";
    WorkflowDefGet: GET "/api/v1/workflows/{workflow}"
        => "workflows.definition", Other, Read, Now, 200,
        "One workflow definition";
    WorkflowDefPut: PUT "/api/v1/workflows/{workflow}"
        => "workflows.put", Other, Operator, Body, 200,
        "Store a workflow definition (201 when new; a new version when changed)", body "WorkflowDefinition";
    WorkflowDefDelete: DELETE "/api/v1/workflows/{workflow}"
        => "workflows.delete", Other, Operator, Wait, 204,
        "Delete a workflow definition stored through the API";
    AdminBackup: POST "/api/v1/admin/backup"
        => "admin.backup", Other, Admin, Wait, 201,
        "Write an online backup";
    ReplicationSnapshot: GET "/replication/snapshot"
        => "replication.snapshot", Other, Open, Wait, 200,
        "A consistent snapshot of the database for a follower (the replication key)";
    ReplicationLog: GET "/replication/log"
        => "replication.log", Other, Open, Wait, 200,
        "The write-ahead log from record `from` on, streamed to a follower (the replication key)";
    ReplicationAck: POST "/replication/ack"
        => "replication.ack", Other, Open, Wait, 204,
        "A follower holds the log through record `lsn` (the replication key)";
    OpenApi: GET "/openapi.json"
        => "openapi", Other, Open, Now, 200,
        "This document";
    AgentsStatus: GET "/api/v1/agents/status"
        => "agents.status", StatusQuery, Read, Now, 200,
        "Every agent (BotArmy)";
    AgentStatus: GET "/api/v1/agents/status/{agent_type}"
        => "agents.status_one", StatusQuery, Read, Now, 200,
        "One agent (BotArmy)";
    AgentStatusHistory: GET "/api/v1/agents/status-history/{agent_type}"
        => "agents.status_history", Other, Read, Now, 200,
        "An agent's status changes (BotArmy)";
    AgentReset: POST "/api/v1/agents/status/{agent_type}/reset"
        => "agents.reset", Other, Operator, Wait, 200,
        "Reset an agent to idle (BotArmy)";
    ArtifactCreate: POST "/api/v1/context/artifacts"
        => "artifacts.create", Other, Worker, Body, 201,
        "Store an artifact", body "CreateArtifact";
    ArtifactBatch: POST "/api/v1/context/artifacts/batch"
        => "artifacts.batch", ContextRetrieval, Read, Body, 200,
        "Fetch artifacts by id", body "Batch";
    ArtifactGet: GET "/api/v1/context/artifacts/{id}"
        => "artifacts.get", ContextRetrieval, Read, Now, 200,
        "An artifact (BotArmy)";
    ArtifactUpdate: PATCH "/api/v1/context/artifacts/{id}"
        => "artifacts.update", Other, Worker, Body, 200,
        "Update an artifact", body "UpdateArtifact";
    ArtifactDelete: DELETE "/api/v1/context/artifacts/{id}"
        => "artifacts.delete", Other, Worker, Wait, 200,
        "Delete an artifact";
    ProjectArtifacts: GET "/api/v1/context/project/{id}/artifacts"
        => "artifacts.list", ContextRetrieval, Read, Now, 200,
        "A project's artifacts (BotArmy)";
    HitlCreate: POST "/api/v1/hitl"
        => "hitl.create", Other, Worker, Body, 201,
        "Create a HITL request", body "CreateHitl";
    HitlPending: GET "/api/v1/hitl/pending"
        => "hitl.pending", Other, Read, Now, 200,
        "Pending HITL requests (BotArmy)";
    HitlBulkApprove: POST "/api/v1/hitl/bulk/approve"
        => "hitl.bulk_approve", Other, Reviewer, Body, 200,
        "Approve several requests (BotArmy)", body "BulkApprove";
    HitlProjectRequests: GET "/api/v1/hitl/project/{id}/requests"
        => "hitl.list", Other, Read, Now, 200,
        "A project's HITL requests (BotArmy)";
    OversightGet: GET "/api/v1/hitl/project/{id}/oversight-level"
        => "hitl.oversight_get", Other, Read, Now, 200,
        "Oversight level (BotArmy)";
    OversightSet: POST "/api/v1/hitl/project/{id}/oversight-level"
        => "hitl.oversight_set", Other, Operator, Body, 200,
        "Set the oversight level (BotArmy)", body "SetLevel";
    HitlGet: GET "/api/v1/hitl/{id}"
        => "hitl.get", Other, Read, Now, 200,
        "A HITL request (BotArmy)";
    HitlHistory: GET "/api/v1/hitl/{id}/history"
        => "hitl.history", Other, Read, Now, 200,
        "A HITL request's history (BotArmy)";
    HitlRespond: POST "/api/v1/hitl/{id}/respond"
        => "hitl.respond", Other, Reviewer, Body, 200,
        "Answer a HITL request (BotArmy)", body "Respond";
    EventsList: GET "/api/v1/events"
        => "events.list", Other, Read, Now, 200,
        "The event log";
    WsAll: UPGRADE "/ws"
        => "ws.all", Other, Read, Now, 101,
        "WebSocket: every event";
    WsProject: UPGRADE "/ws/{id}"
        => "ws.project", Other, Read, Now, 101,
        "WebSocket: one project's events";
    Livez: GET "/livez"
        => "probes.livez", StatusQuery, Open, Now, 200,
        "Liveness probe";
    Readyz: GET "/readyz"
        => "probes.readyz", StatusQuery, Open, Wait, 200,
        "Readiness probe";
    Health: GET "/health"
        => "health.basic", StatusQuery, Open, Now, 200,
        "Health (BotArmy)";
    HealthDetailed: GET "/health/detailed"
        => "health.detailed", Other, Scrape, Wait, 200,
        "Health per component (BotArmy)";
    HealthReady: GET "/health/ready"
        => "health.ready", StatusQuery, Open, Wait, 200,
        "Readiness (BotArmy)";
    HealthZ: GET "/health/z"
        => "health.z", StatusQuery, Open, Wait, 200,
        "Health checks (BotArmy)";
    Metrics: GET "/metrics"
        => "metrics.prometheus", Other, Scrape, Now, 200,
        "Prometheus metrics";
    MonitoringMetrics: GET "/api/v1/monitoring/metrics"
        => "monitoring.metrics", Other, Read, Now, 200,
        "Windowed latency and figures";
    MonitoringPerformance: GET "/api/v1/monitoring/performance"
        => "monitoring.performance", Other, Read, Now, 200,
        "Service levels";
    MonitoringAlerts: GET "/api/v1/monitoring/alerts"
        => "monitoring.alerts", Other, Read, Now, 200,
        "Alert rules and transitions";
    MonitoringHistory: GET "/api/v1/monitoring/history"
        => "monitoring.history", Other, Read, Now, 200,
        "The last hour of each class: p99 and rate every 30 s";
    MonitoringWebhooks: GET "/api/v1/monitoring/webhooks"
        => "monitoring.webhooks", Other, Read, Now, 200,
        "Each webhook: its cursor, lag, deliveries and last error";
    WebhookRetry: POST "/api/v1/monitoring/webhooks/{name}/retry"
        => "monitoring.webhook_retry", Other, Operator, Body, 200,
        "Post a webhook's dead letters again: one by seq, or all", body "DeadLetters";
    WebhookDiscard: POST "/api/v1/monitoring/webhooks/{name}/discard"
        => "monitoring.webhook_discard", Other, Operator, Body, 200,
        "Drop a webhook's dead letters: one by seq, or all", body "DeadLetters";
    QueuesList: GET "/api/v1/queues"
        => "queues.list", Other, Read, Now, 200,
        concat!(
            "Every agent type's queue: paused, pending, scheduled, working, waiting workers, ",
            "oldest pending age, limit"
        );
    QueuePause: POST "/api/v1/queues/{agent_type}/pause"
        => "queues.pause", Other, Operator, Wait, 200,
        "Pause a queue: it hands out nothing, its tasks stay pending";
    QueueResume: POST "/api/v1/queues/{agent_type}/resume"
        => "queues.resume", Other, Operator, Wait, 200,
        "Resume a queue";
    QueueUpdate: PATCH "/api/v1/queues/{agent_type}"
        => "queues.update", Other, Operator, Body, 200,
        "Set a queue's concurrency limit (max_working, or null for none)", body "QueueLimit";
    ProjectPause: POST "/api/v1/projects/{id}/pause"
        => "projects.pause", Other, Operator, Wait, 200,
        "Pause a project: none of its tasks is handed out";
    ProjectResume: POST "/api/v1/projects/{id}/resume"
        => "projects.resume", Other, Operator, Wait, 200,
        "Resume a project";
    TaskProgress: POST "/api/v1/tasks/{id}/progress"
        => "tasks.progress", TaskOperation, Worker, Body, 202,
        concat!(
            "Report a working task's progress (ephemeral: reaches WebSocket subscribers, not ",
            "the log)"
        ), body "Progress";
    /// The web console: `/` and its assets under `/console/` (OpenAPI describes the page).
    Console: GET "/" | "/console/{file}"
        => "console", Other, Open, Now, 200,
        "The web console (HTML)";
    /// The Model Context Protocol endpoint (Streamable HTTP): JSON-RPC tools for agents (`mcp`).
    Mcp: POST "/mcp"
        => "mcp", Other, Read, Body, 200,
        "Model Context Protocol (Streamable HTTP, JSON-RPC 2.0): tools for agent workers, reviewers and operators",
        body "JsonRpcRequest";
    /// The presented key's name and access.
    WhoAmI: GET "/api/v1/auth/whoami"
        => "auth.whoami", Other, Read, Now, 200,
        "The presented API key's name and access";
}

impl Route {
    /// The route's row of the table.
    pub fn def(self) -> &'static RouteDef {
        &TABLE[self.index()]
    }

    /// Position in `Route::ALL` (the table's order): an index for per-route arrays.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The metric label and log name of the route.
    pub fn name(self) -> &'static str {
        self.def().name
    }

    /// The service-level class of the route.
    pub fn class(self) -> Class {
        self.def().class
    }

    pub fn access(self) -> Access {
        self.def().access
    }

    pub fn answers(self) -> Answers {
        self.def().answers
    }

    /// The method and status of the route's usual answer, for the series that exist from start-up.
    pub fn primary(self) -> (&'static str, u16) {
        (self.def().verb.as_str(), self.def().status)
    }

    pub fn is_websocket(self) -> bool {
        matches!(self, Route::WsAll | Route::WsProject)
    }
}

/// A matched route and its one path parameter, if the route has one.
#[derive(Debug, PartialEq, Eq)]
pub struct Matched<'p> {
    pub route: Route,
    pub param: &'p str,
}

/// Why no route matched.
#[derive(Debug, PartialEq, Eq)]
pub enum NoRoute {
    NotFound,
    /// The path exists with other methods; the value is the `Allow` header.
    MethodNotAllowed(&'static str),
}

/// The most segments a template has; a longer path matches nothing.
const MAX_SEGMENTS: usize = 8;

/// A node of the template tree: one segment further down every template through it.
#[derive(Default)]
struct Node {
    /// Literal segments, tried first.
    literal: Vec<(&'static str, Node)>,
    /// A `{parameter}` segment, tried when no literal leads to a route.
    param: Option<Box<Node>>,
    /// The routes whose template ends here, and the `Allow` header of this path.
    routes: Vec<(Verb, Route)>,
    allow: &'static str,
}

impl Node {
    fn insert(&mut self, segments: &[&'static str], verb: Verb, route: Route) {
        let Some((first, rest)) = segments.split_first() else {
            assert!(
                self.routes.iter().all(|(v, _)| *v != verb),
                "two routes for {} on one path",
                verb.as_str()
            );
            self.routes.push((verb, route));
            return;
        };
        let next = if first.starts_with('{') {
            self.param.get_or_insert_with(Box::default)
        } else {
            match self.literal.iter().position(|(s, _)| s == first) {
                Some(i) => &mut self.literal[i].1,
                None => {
                    self.literal.push((first, Node::default()));
                    &mut self.literal.last_mut().expect("just pushed").1
                }
            }
        };
        next.insert(rest, verb, route);
    }

    /// Fills every node's `Allow` header from its routes' methods, sorted, HEAD beside GET.
    fn seal(&mut self) {
        if !self.routes.is_empty() {
            let mut methods: Vec<&str> = Vec::new();
            for (verb, _) in &self.routes {
                methods.push(verb.as_str());
                if *verb == Verb::Get {
                    methods.push("HEAD");
                }
            }
            methods.sort_unstable();
            // Built once per path at start-up: a few hundred bytes for the process's life.
            self.allow = Box::leak(methods.join(", ").into_boxed_str());
        }
        for (_, child) in &mut self.literal {
            child.seal();
        }
        if let Some(child) = &mut self.param {
            child.seal();
        }
    }

    /// The node `segments` lead to (with the parameter's index among them), literal segments
    /// first; a path that ends where no route does goes back to try the parameter.
    fn find(&self, segments: &[&str], depth: usize) -> Option<(&Node, Option<usize>)> {
        let Some((first, rest)) = segments.split_first() else {
            return (!self.routes.is_empty()).then_some((self, None));
        };
        if let Some((_, child)) = self.literal.iter().find(|(s, _)| same(s, first))
            && let Some(found) = child.find(rest, depth + 1)
        {
            return Some(found);
        }
        let child = self.param.as_ref()?;
        let (node, param) = child.find(rest, depth + 1)?;
        Some((node, param.or(Some(depth))))
    }
}

/// Whether two segments are equal: length and first byte decide most comparisons without a call
/// to compare the bytes.
#[inline]
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.as_bytes().first() == b.as_bytes().first() && a == b
}

/// The tree of every template, built from the table at first use.
fn tree() -> &'static Node {
    static TREE: OnceLock<Node> = OnceLock::new();
    TREE.get_or_init(|| {
        let mut root = Node::default();
        for def in TABLE {
            for path in def.paths {
                let segments: Vec<&'static str> =
                    path.split('/').filter(|s| !s.is_empty()).collect();
                assert!(segments.len() <= MAX_SEGMENTS, "{path} is too long");
                root.insert(&segments, def.verb, def.route);
            }
        }
        root.seal();
        root
    })
}

/// Matches a request. Segments are compared as they come; ids are validated by the handlers.
pub fn route<'p>(method: &Method, path: &'p str) -> Result<Matched<'p>, NoRoute> {
    let path = path
        .strip_suffix('/')
        .filter(|p| !p.is_empty())
        .unwrap_or(path);
    let Some(rest) = path.strip_prefix('/') else {
        return Err(NoRoute::NotFound);
    };
    let mut segments = [""; MAX_SEGMENTS];
    let mut count = 0;
    if !rest.is_empty() {
        let mut start = 0;
        let bytes = rest.as_bytes();
        for end in (0..=bytes.len()).filter(|&i| i == bytes.len() || bytes[i] == b'/') {
            if end == start || count == MAX_SEGMENTS {
                return Err(NoRoute::NotFound);
            }
            segments[count] = &rest[start..end];
            count += 1;
            start = end + 1;
        }
    }
    let segments = &segments[..count];
    let (node, param) = tree().find(segments, 0).ok_or(NoRoute::NotFound)?;
    match node.routes.iter().find(|(verb, _)| verb.accepts(method)) {
        Some(&(_, route)) => Ok(Matched {
            route,
            param: param.map_or("", |i| segments[i]),
        }),
        None => Err(NoRoute::MethodNotAllowed(node.allow)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(method: Method, path: &str, expected: Result<(Route, &str), NoRoute>) {
        let got = route(&method, path).map(|m| (m.route, m.param));
        assert_eq!(got, expected, "{method} {path}");
    }

    /// The Prometheus rules shipped for operators select each class's routes by name; they must
    /// be exactly the routes `Route::class` puts in it.
    #[test]
    fn the_shipped_prometheus_rules_select_each_class_by_its_routes() {
        let rules = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/deploy/prometheus/flightdeck-rules.yml"
        ))
        .unwrap();
        for (record, class) in [
            ("status_query", Class::StatusQuery),
            ("task_operation", Class::TaskOperation),
            ("context_retrieval", Class::ContextRetrieval),
        ] {
            let at = rules
                .find(&format!(
                    "record: flightdeck:{record}_latency_seconds:p99_1m"
                ))
                .unwrap_or_else(|| panic!("no {record} rule"));
            let rest = &rules[at..];
            let start = rest.find("route=~\"").unwrap() + "route=~\"".len();
            let end = start + rest[start..].find('"').unwrap();
            let mut listed: Vec<&str> = rest[start..end].split('|').collect();
            listed.sort_unstable();
            let mut want: Vec<&str> = Route::ALL
                .iter()
                .filter(|r| r.class() == class)
                .map(|r| r.name())
                .collect();
            want.sort_unstable();
            assert_eq!(listed, want, "{record}");
        }
    }

    /// Every template of every row routes to its row's route, with the parameter in its place,
    /// and every row is at its route's index.
    #[test]
    fn every_template_routes_to_its_row() {
        for (i, def) in TABLE.iter().enumerate() {
            assert_eq!(def.route.index(), i, "{:?}", def.route);
            assert_eq!(def.route.def().name, def.name);
            let method = Method::from_bytes(def.verb.as_str().as_bytes()).unwrap();
            for template in def.paths {
                let path = template
                    .replace("{id}", "0190b5c2-0000-7000-8000-000000000000")
                    .replace("{agent_type}", "coder")
                    .replace("{file}", "app.js");
                let matched = route(&method, &path)
                    .unwrap_or_else(|e| panic!("{} {template}: {e:?}", def.verb.as_str()));
                assert_eq!(matched.route, def.route, "{template}");
                let expected = if template.contains('{') {
                    path.rsplit('/')
                        .zip(template.rsplit('/'))
                        .find(|(_, t)| t.starts_with('{'))
                        .map(|(p, _)| p)
                        .unwrap()
                } else {
                    ""
                };
                assert_eq!(matched.param, expected, "{template}");
            }
        }
        // Labels are unique: each is one metric series.
        let mut names: Vec<&str> = TABLE.iter().map(|d| d.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), TABLE.len());
    }

    #[test]
    fn routes_by_method_and_path() {
        use Route::{
            AgentReset, ArtifactBatch, ArtifactUpdate, EventsList, HealthZ, HitlGet, HitlPending,
            MonitoringAlerts, ProjectResume, ProjectStatus, ProjectsCreate, ProjectsList,
            QueuePause, QueueUpdate, QueuesList, Readyz, TaskClaim, TaskHeartbeat, TaskProgress,
            WorkflowStart, WsAll, WsProject,
        };
        let id = "0190b5c2-0000-7000-8000-000000000000";
        check(Method::POST, "/api/v1/projects", Ok((ProjectsCreate, "")));
        check(Method::POST, "/api/v1/projects/", Ok((ProjectsCreate, "")));
        check(Method::GET, "/api/v1/projects", Ok((ProjectsList, "")));
        check(
            Method::GET,
            &format!("/api/v1/projects/{id}/status"),
            Ok((ProjectStatus, id)),
        );
        check(
            Method::GET,
            &format!("/api/v1/projects/{id}/status/"),
            Ok((ProjectStatus, id)),
        );
        check(
            Method::POST,
            "/api/v1/context/artifacts/batch",
            Ok((ArtifactBatch, "")),
        );
        check(
            Method::GET,
            "/api/v1/context/artifacts/batch",
            Err(NoRoute::MethodNotAllowed("POST")),
        );
        check(
            Method::PATCH,
            &format!("/api/v1/context/artifacts/{id}"),
            Ok((ArtifactUpdate, id)),
        );
        check(Method::GET, "/api/v1/hitl/pending", Ok((HitlPending, "")));
        check(
            Method::GET,
            &format!("/api/v1/hitl/{id}"),
            Ok((HitlGet, id)),
        );
        check(
            Method::POST,
            "/api/v1/agents/status/coder/reset",
            Ok((AgentReset, "coder")),
        );
        check(Method::HEAD, "/api/v1/events", Ok((EventsList, "")));
        check(
            Method::PUT,
            "/api/v1/projects",
            Err(NoRoute::MethodNotAllowed("GET, HEAD, POST")),
        );
        check(
            Method::GET,
            "/api/v1/tasks/x/status",
            Err(NoRoute::MethodNotAllowed("POST")),
        );
        check(Method::GET, "/api/v1/nope", Err(NoRoute::NotFound));
        check(
            Method::GET,
            "/api/v1/projects//status",
            Err(NoRoute::NotFound),
        );
        check(Method::GET, "/api/v2/projects", Err(NoRoute::NotFound));
        check(Method::GET, "/", Ok((Route::Console, "")));
        check(
            Method::GET,
            "/console/app.js",
            Ok((Route::Console, "app.js")),
        );
        check(Method::GET, "/console/a/b.js", Err(NoRoute::NotFound));
        check(
            Method::POST,
            "/console/app.js",
            Err(NoRoute::MethodNotAllowed("GET, HEAD")),
        );
        check(Method::GET, "/api/v1/auth/whoami", Ok((Route::WhoAmI, "")));
        check(Method::GET, "/ws", Ok((WsAll, "")));
        check(Method::GET, &format!("/ws/{id}"), Ok((WsProject, id)));
        check(Method::GET, &format!("/ws/{id}/"), Ok((WsProject, id)));
        check(Method::POST, "/ws", Err(NoRoute::MethodNotAllowed("GET")));
        check(Method::GET, "/ws/a/b", Err(NoRoute::NotFound));
        check(Method::GET, "/wsx", Err(NoRoute::NotFound));
        check(Method::GET, "/readyz", Ok((Readyz, "")));
        check(Method::GET, "/health/z/", Ok((HealthZ, "")));
        check(
            Method::GET,
            "/api/v1/monitoring/alerts",
            Ok((MonitoringAlerts, "")),
        );
        check(
            Method::POST,
            "/metrics",
            Err(NoRoute::MethodNotAllowed("GET, HEAD")),
        );
        assert_eq!(Route::ALL.len(), 75);
        check(
            Method::GET,
            "/replication/log",
            Ok((Route::ReplicationLog, "")),
        );
        check(
            Method::POST,
            "/replication/snapshot",
            Err(NoRoute::MethodNotAllowed("GET, HEAD")),
        );
        check(Method::POST, "/mcp", Ok((Route::Mcp, "")));
        check(Method::GET, "/mcp", Err(NoRoute::MethodNotAllowed("POST")));
        check(
            Method::PUT,
            "/api/v1/workflows/essay",
            Ok((Route::WorkflowDefPut, "essay")),
        );
        check(
            Method::DELETE,
            "/api/v1/workflows/essay",
            Ok((Route::WorkflowDefDelete, "essay")),
        );
        check(
            Method::POST,
            "/api/v1/workflows/essay",
            Err(NoRoute::MethodNotAllowed("DELETE, GET, HEAD, PUT")),
        );
        check(
            Method::POST,
            "/api/v1/monitoring/webhooks/audit/retry",
            Ok((Route::WebhookRetry, "audit")),
        );
        check(
            Method::POST,
            &format!("/api/v1/tasks/{id}/progress"),
            Ok((TaskProgress, id)),
        );
        check(Method::GET, "/api/v1/queues", Ok((QueuesList, "")));
        check(
            Method::PATCH,
            "/api/v1/queues/coder",
            Ok((QueueUpdate, "coder")),
        );
        check(
            Method::GET,
            "/api/v1/queues/coder",
            Err(NoRoute::MethodNotAllowed("PATCH")),
        );
        check(
            Method::POST,
            "/api/v1/queues/coder/pause",
            Ok((QueuePause, "coder")),
        );
        check(
            Method::POST,
            &format!("/api/v1/projects/{id}/resume"),
            Ok((ProjectResume, id)),
        );
        check(
            Method::POST,
            &format!("/api/v1/projects/{id}/workflow"),
            Ok((WorkflowStart, id)),
        );
        check(Method::POST, "/api/v1/tasks/claim", Ok((TaskClaim, "")));
        check(
            Method::GET,
            "/api/v1/tasks/claim",
            Err(NoRoute::MethodNotAllowed("POST")),
        );
        check(
            Method::POST,
            &format!("/api/v1/tasks/{id}/heartbeat"),
            Ok((TaskHeartbeat, id)),
        );
    }
}
