//! Method + path to a closed set of routes. `Route::name()` is the metric label: never an id or a
//! raw path. A trailing slash is accepted wherever the route exists without one.

use hyper::Method;

/// Every route flightdeck answers.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Route {
    ProjectsList,
    ProjectsCreate,
    ProjectGet,
    ProjectStatus,
    ProjectCompletion,
    ProjectTasksList,
    ProjectTasksCreate,
    TaskGet,
    TaskSetStatus,
    TaskClaim,
    TaskHeartbeat,
    WorkflowStart,
    WorkflowGet,
    AdminBackup,
    OpenApi,
    AgentsStatus,
    AgentStatus,
    AgentStatusHistory,
    AgentReset,
    ArtifactCreate,
    ArtifactBatch,
    ArtifactGet,
    ArtifactUpdate,
    ArtifactDelete,
    ProjectArtifacts,
    HitlCreate,
    HitlPending,
    HitlBulkApprove,
    HitlProjectRequests,
    OversightGet,
    OversightSet,
    HitlGet,
    HitlHistory,
    HitlRespond,
    EventsList,
    WsAll,
    WsProject,
    Livez,
    Readyz,
    Health,
    HealthDetailed,
    HealthReady,
    HealthZ,
    Metrics,
    MonitoringMetrics,
    MonitoringPerformance,
    MonitoringAlerts,
    MonitoringHistory,
    MonitoringWebhooks,
    QueuesList,
    QueuePause,
    QueueResume,
    QueueUpdate,
    ProjectPause,
    ProjectResume,
    TaskProgress,
    /// The web console: `/` and its assets under `/console/`.
    Console,
    /// `GET /api/v1/auth/whoami`: the presented key's name and access.
    WhoAmI,
}

/// Which service level a route's latency counts towards.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Class {
    StatusQuery,
    TaskOperation,
    ContextRetrieval,
    Other,
}

impl Route {
    /// Every route, for metric series that exist from start-up.
    pub const ALL: &[Route] = &[
        Route::ProjectsList,
        Route::ProjectsCreate,
        Route::ProjectGet,
        Route::ProjectStatus,
        Route::ProjectCompletion,
        Route::ProjectTasksList,
        Route::ProjectTasksCreate,
        Route::TaskGet,
        Route::TaskSetStatus,
        Route::TaskClaim,
        Route::TaskHeartbeat,
        Route::WorkflowStart,
        Route::WorkflowGet,
        Route::AdminBackup,
        Route::OpenApi,
        Route::AgentsStatus,
        Route::AgentStatus,
        Route::AgentStatusHistory,
        Route::AgentReset,
        Route::ArtifactCreate,
        Route::ArtifactBatch,
        Route::ArtifactGet,
        Route::ArtifactUpdate,
        Route::ArtifactDelete,
        Route::ProjectArtifacts,
        Route::HitlCreate,
        Route::HitlPending,
        Route::HitlBulkApprove,
        Route::HitlProjectRequests,
        Route::OversightGet,
        Route::OversightSet,
        Route::HitlGet,
        Route::HitlHistory,
        Route::HitlRespond,
        Route::EventsList,
        Route::WsAll,
        Route::WsProject,
        Route::Livez,
        Route::Readyz,
        Route::Health,
        Route::HealthDetailed,
        Route::HealthReady,
        Route::HealthZ,
        Route::Metrics,
        Route::MonitoringMetrics,
        Route::MonitoringPerformance,
        Route::MonitoringAlerts,
        Route::MonitoringHistory,
        Route::MonitoringWebhooks,
        Route::QueuesList,
        Route::QueuePause,
        Route::QueueResume,
        Route::QueueUpdate,
        Route::ProjectPause,
        Route::ProjectResume,
        Route::TaskProgress,
        Route::Console,
        Route::WhoAmI,
    ];

    /// The method and status of the route's usual answer, for the series that exist from start-up.
    pub fn primary(self) -> (&'static str, u16) {
        use Route::{
            AdminBackup, AgentReset, ArtifactBatch, ArtifactCreate, ArtifactDelete, ArtifactUpdate,
            HitlBulkApprove, HitlCreate, HitlRespond, OversightSet, ProjectPause, ProjectResume,
            ProjectTasksCreate, ProjectsCreate, QueuePause, QueueResume, QueueUpdate, TaskClaim,
            TaskHeartbeat, TaskProgress, TaskSetStatus, WorkflowStart, WsAll, WsProject,
        };
        match self {
            ProjectsCreate | ProjectTasksCreate | ArtifactCreate | HitlCreate | WorkflowStart
            | AdminBackup => ("POST", 201),
            TaskSetStatus | TaskClaim | TaskHeartbeat | AgentReset | ArtifactBatch
            | HitlBulkApprove | OversightSet | HitlRespond | QueuePause | QueueResume
            | ProjectPause | ProjectResume => ("POST", 200),
            TaskProgress => ("POST", 202),
            ArtifactUpdate | QueueUpdate => ("PATCH", 200),
            ArtifactDelete => ("DELETE", 200),
            WsAll | WsProject => ("GET", 101),
            _ => ("GET", 200),
        }
    }

    /// Probes are answered without an API key.
    pub fn is_probe(self) -> bool {
        use Route::{Health, HealthDetailed, HealthReady, HealthZ, Livez, OpenApi, Readyz};
        matches!(
            self,
            Livez | Readyz | Health | HealthDetailed | HealthReady | HealthZ | OpenApi
        )
    }

    /// The console's page and assets: served without a key (the page asks for one).
    pub fn is_console(self) -> bool {
        self == Route::Console
    }

    pub fn is_websocket(self) -> bool {
        matches!(self, Route::WsAll | Route::WsProject)
    }

    /// The service-level class of the route.
    /// Position in `Route::ALL` (the declaration order): an index for per-route arrays.
    pub fn index(self) -> usize {
        self as usize
    }

    pub fn class(self) -> Class {
        use Route::{
            AgentStatus, AgentsStatus, ArtifactBatch, ArtifactGet, Health, HealthReady, HealthZ,
            Livez, ProjectArtifacts, ProjectCompletion, ProjectGet, ProjectStatus,
            ProjectTasksCreate, ProjectTasksList, Readyz, TaskClaim, TaskGet, TaskHeartbeat,
            TaskProgress, TaskSetStatus,
        };
        match self {
            ProjectGet | ProjectStatus | ProjectCompletion | AgentsStatus | AgentStatus | Livez
            | Readyz | Health | HealthReady | HealthZ => Class::StatusQuery,
            ProjectTasksCreate | TaskSetStatus | ProjectTasksList | TaskGet | TaskClaim
            | TaskHeartbeat | TaskProgress => Class::TaskOperation,
            ArtifactGet | ProjectArtifacts | ArtifactBatch => Class::ContextRetrieval,
            _ => Class::Other,
        }
    }

    /// The metric label and log name of the route.
    pub fn name(self) -> &'static str {
        use Route::{
            AdminBackup, AgentReset, AgentStatus, AgentStatusHistory, AgentsStatus, ArtifactBatch,
            ArtifactCreate, ArtifactDelete, ArtifactGet, ArtifactUpdate, Console, EventsList,
            Health, HealthDetailed, HealthReady, HealthZ, HitlBulkApprove, HitlCreate, HitlGet,
            HitlHistory, HitlPending, HitlProjectRequests, HitlRespond, Livez, Metrics,
            MonitoringAlerts, MonitoringHistory, MonitoringMetrics, MonitoringPerformance,
            MonitoringWebhooks, OpenApi, OversightGet, OversightSet, ProjectArtifacts,
            ProjectCompletion, ProjectGet, ProjectPause, ProjectResume, ProjectStatus,
            ProjectTasksCreate, ProjectTasksList, ProjectsCreate, ProjectsList, QueuePause,
            QueueResume, QueueUpdate, QueuesList, Readyz, TaskClaim, TaskGet, TaskHeartbeat,
            TaskProgress, TaskSetStatus, WhoAmI, WorkflowGet, WorkflowStart, WsAll, WsProject,
        };
        match self {
            ProjectsList => "projects.list",
            ProjectsCreate => "projects.create",
            ProjectGet => "projects.get",
            ProjectStatus => "projects.status",
            ProjectCompletion => "projects.completion",
            ProjectTasksList => "tasks.list",
            ProjectTasksCreate => "tasks.create",
            TaskGet => "tasks.get",
            TaskSetStatus => "tasks.set_status",
            TaskClaim => "tasks.claim",
            TaskHeartbeat => "tasks.heartbeat",
            WorkflowStart => "workflows.start",
            WorkflowGet => "workflows.get",
            AdminBackup => "admin.backup",
            OpenApi => "openapi",
            AgentsStatus => "agents.status",
            AgentStatus => "agents.status_one",
            AgentStatusHistory => "agents.status_history",
            AgentReset => "agents.reset",
            ArtifactCreate => "artifacts.create",
            ArtifactBatch => "artifacts.batch",
            ArtifactGet => "artifacts.get",
            ArtifactUpdate => "artifacts.update",
            ArtifactDelete => "artifacts.delete",
            ProjectArtifacts => "artifacts.list",
            HitlCreate => "hitl.create",
            HitlPending => "hitl.pending",
            HitlBulkApprove => "hitl.bulk_approve",
            HitlProjectRequests => "hitl.list",
            OversightGet => "hitl.oversight_get",
            OversightSet => "hitl.oversight_set",
            HitlGet => "hitl.get",
            HitlHistory => "hitl.history",
            HitlRespond => "hitl.respond",
            EventsList => "events.list",
            WsAll => "ws.all",
            WsProject => "ws.project",
            Livez => "probes.livez",
            Readyz => "probes.readyz",
            Health => "health.basic",
            HealthDetailed => "health.detailed",
            HealthReady => "health.ready",
            HealthZ => "health.z",
            Metrics => "metrics.prometheus",
            MonitoringMetrics => "monitoring.metrics",
            MonitoringPerformance => "monitoring.performance",
            MonitoringAlerts => "monitoring.alerts",
            MonitoringHistory => "monitoring.history",
            MonitoringWebhooks => "monitoring.webhooks",
            QueuesList => "queues.list",
            QueuePause => "queues.pause",
            QueueResume => "queues.resume",
            QueueUpdate => "queues.update",
            ProjectPause => "projects.pause",
            ProjectResume => "projects.resume",
            TaskProgress => "tasks.progress",
            Console => "console",
            WhoAmI => "auth.whoami",
        }
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

/// Matches a request. Segments are compared as they come; ids are validated by the handlers.
pub fn route<'p>(method: &Method, path: &'p str) -> Result<Matched<'p>, NoRoute> {
    use Route::{
        AdminBackup, AgentReset, AgentStatus, AgentStatusHistory, AgentsStatus, ArtifactBatch,
        ArtifactCreate, ArtifactDelete, ArtifactGet, ArtifactUpdate, Console, EventsList, Health,
        HealthDetailed, HealthReady, HealthZ, HitlBulkApprove, HitlCreate, HitlGet, HitlHistory,
        HitlPending, HitlProjectRequests, HitlRespond, Livez, Metrics, MonitoringAlerts,
        MonitoringHistory, MonitoringMetrics, MonitoringPerformance, MonitoringWebhooks, OpenApi,
        OversightGet, OversightSet, ProjectArtifacts, ProjectCompletion, ProjectGet, ProjectPause,
        ProjectResume, ProjectStatus, ProjectTasksCreate, ProjectTasksList, ProjectsCreate,
        ProjectsList, QueuePause, QueueResume, QueueUpdate, QueuesList, Readyz, TaskClaim, TaskGet,
        TaskHeartbeat, TaskProgress, TaskSetStatus, WhoAmI, WorkflowGet, WorkflowStart, WsAll,
        WsProject,
    };
    let path = path
        .strip_suffix('/')
        .filter(|p| !p.is_empty())
        .unwrap_or(path);
    let plain = match path {
        "/livez" => Some(Livez),
        "/readyz" => Some(Readyz),
        "/health" => Some(Health),
        "/health/detailed" => Some(HealthDetailed),
        "/health/ready" => Some(HealthReady),
        "/health/z" => Some(HealthZ),
        "/metrics" => Some(Metrics),
        "/api/v1/monitoring/metrics" => Some(MonitoringMetrics),
        "/api/v1/monitoring/performance" => Some(MonitoringPerformance),
        "/api/v1/monitoring/alerts" => Some(MonitoringAlerts),
        "/api/v1/monitoring/history" => Some(MonitoringHistory),
        "/api/v1/monitoring/webhooks" => Some(MonitoringWebhooks),
        "/openapi.json" => Some(OpenApi),
        "/" => Some(Console),
        _ => None,
    };
    if let Some(route) = plain {
        return if method == Method::GET || method == Method::HEAD {
            Ok(Matched { route, param: "" })
        } else {
            Err(NoRoute::MethodNotAllowed("GET, HEAD"))
        };
    }
    if let Some(file) = path.strip_prefix("/console/") {
        if file.is_empty() || file.contains('/') {
            return Err(NoRoute::NotFound);
        }
        return if method == Method::GET || method == Method::HEAD {
            Ok(Matched {
                route: Console,
                param: file,
            })
        } else {
            Err(NoRoute::MethodNotAllowed("GET, HEAD"))
        };
    }
    if let Some(rest) = path.strip_prefix("/ws") {
        let found = match rest.strip_prefix('/') {
            None if rest.is_empty() => (WsAll, ""),
            Some(id) if !id.is_empty() && !id.contains('/') => (WsProject, id),
            _ => return Err(NoRoute::NotFound),
        };
        if method != Method::GET {
            return Err(NoRoute::MethodNotAllowed("GET"));
        }
        return Ok(Matched {
            route: found.0,
            param: found.1,
        });
    }
    let Some(rest) = path.strip_prefix("/api/v1/") else {
        return Err(NoRoute::NotFound);
    };
    let segments: Vec<&str> = rest.split('/').collect();
    if segments.iter().any(|s| s.is_empty()) {
        return Err(NoRoute::NotFound);
    }
    let m = method;
    let get = m == Method::GET || m == Method::HEAD;
    let post = m == Method::POST;
    // (route if the method fits, Allow header of the path)
    let found: (Option<(Route, &str)>, &'static str) = match segments.as_slice() {
        ["projects"] => (
            pick2(get, ProjectsList, post, ProjectsCreate, ""),
            "GET, HEAD, POST",
        ),
        ["projects", id] => (get.then_some((ProjectGet, *id)), "GET, HEAD"),
        ["projects", id, "status"] => (get.then_some((ProjectStatus, *id)), "GET, HEAD"),
        ["projects", id, "completion"] => (get.then_some((ProjectCompletion, *id)), "GET, HEAD"),
        ["projects", id, "workflow"] => (
            pick2(get, WorkflowGet, post, WorkflowStart, id),
            "GET, HEAD, POST",
        ),
        ["projects", id, "tasks"] => (
            pick2(get, ProjectTasksList, post, ProjectTasksCreate, id),
            "GET, HEAD, POST",
        ),
        ["projects", id, "pause"] => (post.then_some((ProjectPause, *id)), "POST"),
        ["projects", id, "resume"] => (post.then_some((ProjectResume, *id)), "POST"),
        ["queues"] => (get.then_some((QueuesList, "")), "GET, HEAD"),
        ["queues", agent] => (
            (m == Method::PATCH).then_some((QueueUpdate, *agent)),
            "PATCH",
        ),
        ["queues", agent, "pause"] => (post.then_some((QueuePause, *agent)), "POST"),
        ["queues", agent, "resume"] => (post.then_some((QueueResume, *agent)), "POST"),
        ["tasks", "claim"] => (post.then_some((TaskClaim, "")), "POST"),
        ["tasks", id, "heartbeat"] => (post.then_some((TaskHeartbeat, *id)), "POST"),
        ["tasks", id, "progress"] => (post.then_some((TaskProgress, *id)), "POST"),
        ["tasks", id] => (get.then_some((TaskGet, *id)), "GET, HEAD"),
        ["tasks", id, "status"] => (post.then_some((TaskSetStatus, *id)), "POST"),
        ["agents", "status"] => (get.then_some((AgentsStatus, "")), "GET, HEAD"),
        ["agents", "status", agent] => (get.then_some((AgentStatus, *agent)), "GET, HEAD"),
        ["agents", "status-history", agent] => {
            (get.then_some((AgentStatusHistory, *agent)), "GET, HEAD")
        }
        ["agents", "status", agent, "reset"] => (post.then_some((AgentReset, *agent)), "POST"),
        ["context", "artifacts"] => (post.then_some((ArtifactCreate, "")), "POST"),
        ["context", "artifacts", "batch"] => (post.then_some((ArtifactBatch, "")), "POST"),
        ["context", "artifacts", id] => {
            let r = if get {
                Some(ArtifactGet)
            } else if m == Method::PATCH {
                Some(ArtifactUpdate)
            } else if m == Method::DELETE {
                Some(ArtifactDelete)
            } else {
                None
            };
            (r.map(|r| (r, *id)), "DELETE, GET, HEAD, PATCH")
        }
        ["context", "project", id, "artifacts"] => {
            (get.then_some((ProjectArtifacts, *id)), "GET, HEAD")
        }
        ["hitl"] => (post.then_some((HitlCreate, "")), "POST"),
        ["hitl", "pending"] => (get.then_some((HitlPending, "")), "GET, HEAD"),
        ["hitl", "bulk", "approve"] => (post.then_some((HitlBulkApprove, "")), "POST"),
        ["hitl", "project", id, "requests"] => {
            (get.then_some((HitlProjectRequests, *id)), "GET, HEAD")
        }
        ["hitl", "project", id, "oversight-level"] => (
            pick2(get, OversightGet, post, OversightSet, id),
            "GET, HEAD, POST",
        ),
        ["hitl", id] => (get.then_some((HitlGet, *id)), "GET, HEAD"),
        ["hitl", id, "history"] => (get.then_some((HitlHistory, *id)), "GET, HEAD"),
        ["hitl", id, "respond"] => (post.then_some((HitlRespond, *id)), "POST"),
        ["admin", "backup"] => (post.then_some((AdminBackup, "")), "POST"),
        ["events"] => (get.then_some((EventsList, "")), "GET, HEAD"),
        ["auth", "whoami"] => (get.then_some((WhoAmI, "")), "GET, HEAD"),
        _ => return Err(NoRoute::NotFound),
    };
    match found {
        (Some((route, param)), _) => Ok(Matched { route, param }),
        (None, allow) => Err(NoRoute::MethodNotAllowed(allow)),
    }
}

fn pick2(a: bool, ra: Route, b: bool, rb: Route, param: &str) -> Option<(Route, &str)> {
    if a {
        Some((ra, param))
    } else if b {
        Some((rb, param))
    } else {
        None
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

    #[test]
    fn every_route_is_listed_once_at_its_index() {
        for (i, route) in Route::ALL.iter().enumerate() {
            assert_eq!(route.index(), i, "{route:?}");
        }
        // The last declared route ends the list: a route declared but missing from ALL would
        // have an index past the end of every per-route array.
        assert_eq!(Route::WhoAmI.index(), Route::ALL.len() - 1);
    }

    #[test]
    fn routes_by_method_and_path() {
        use Route::*;
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
        assert_eq!(Route::ALL.len(), 58);
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
