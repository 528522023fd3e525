//! Probes: `/livez`, `/readyz` (Kubernetes style), and the BotArmy shapes `/health`,
//! `/health/detailed`, `/health/ready`, `/health/z`.

use super::{AppState, Query};
use crate::domain::{format_timestamp, now_micros};
use crate::http::body::json;
use crate::http::{ApiError, Response, StatusCode, set_header};
use crate::json::object;
use crate::monitor::{Severity, State};

const SERVICE: &str = "flightdeck";
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// 200 while the process and its runtime answer.
pub fn livez() -> Result<Response, ApiError> {
    Ok(json(
        StatusCode::OK,
        object(|o| {
            o.str("status", "alive");
        }),
    ))
}

/// 200 only when every readiness check passes; `?verbose` lists them.
pub async fn readyz(state: &AppState, query: &Query) -> Result<Response, ApiError> {
    let checks = state.health.checks().await;
    let leader = state.store.leader();
    let role = if leader.is_some() {
        "follower"
    } else {
        "leader"
    };
    // `?role=leader`, for load balancers: ready and the leader.
    let wrong_role = query.get("role").is_some_and(|r| r != role);
    let ready = checks.ok() && !wrong_role;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    if query.present("verbose") {
        let mut text = String::new();
        for c in checks.all() {
            if c.ok {
                text.push_str(&format!("[+]{} ok\n", c.name.as_str()));
            } else {
                let (name, detail) = (c.name.as_str(), &c.detail);
                text.push_str(&format!("[-]{name} failed: {detail}\n"));
            }
        }
        text.push_str(&format!("role: {role}\n"));
        text.push_str(if ready {
            "readyz check passed\n"
        } else {
            "readyz check failed\n"
        });
        let mut response = json(status, text);
        set_header(&mut response, "content-type", "text/plain; charset=utf-8");
        return Ok(response);
    }
    let failed: Vec<String> = checks
        .all()
        .iter()
        .filter(|c| !c.ok)
        .map(|c| format!("{}: {}", c.name.as_str(), c.detail))
        .chain(wrong_role.then(|| format!("role: this node is the {role}")))
        .collect();
    Ok(json(
        status,
        object(|o| {
            o.str("status", if ready { "ready" } else { "not_ready" })
                .str("role", role)
                .strs("failed", &failed);
            if let Some(leader) = leader {
                o.str("leader", leader);
            }
        }),
    ))
}

/// BotArmy: `{status, service, version, timestamp}`.
pub fn health() -> Result<Response, ApiError> {
    Ok(json(
        StatusCode::OK,
        object(|o| {
            o.str("status", "healthy")
                .str("service", SERVICE)
                .str("version", VERSION)
                .str("timestamp", &format_timestamp(now_micros()));
        }),
    ))
}

/// BotArmy: every component with its status, latency and key figures; 503 when unhealthy.
pub async fn detailed(state: &AppState) -> Result<Response, ApiError> {
    let checks = state.health.checks().await;
    let healthy = checks.ok();
    let store = &state.store;
    let cache = store.cache_stats();
    let (firing, critical) = {
        let alerts = state.monitor.alerts();
        let firing: Vec<_> = alerts
            .rules
            .iter()
            .filter(|r| r.state == State::Firing)
            .collect();
        let critical = firing
            .iter()
            .filter(|r| r.config.severity == Severity::Critical)
            .count();
        (firing.len(), critical)
    };
    let status_of = |ok: bool| if ok { "healthy" } else { "unhealthy" };
    let read = &checks.store_read;
    let write = &checks.writer_round_trip;
    let alive = &checks.writer_alive;
    let disk = &checks.disk_space;
    let writable = &checks.data_dir_writable;
    let sizes = store.table_sizes().unwrap_or_default();
    let body = object(|o| {
        o.str("status", status_of(healthy))
            .str("service", SERVICE)
            .str("version", VERSION)
            .str("timestamp", &format_timestamp(now_micros()))
            .f64("uptime_seconds", state.monitor.uptime().as_secs_f64())
            .object("components", |c| {
                c.object("store", |s| {
                    s.str("status", status_of(read.ok))
                        .f64("latency_ms", read.latency.as_secs_f64() * 1e3)
                        .str("error", &read.detail)
                        .u64("file_size_bytes", store.file_size())
                        .u64("used_bytes", store.used_bytes())
                        .object("records", |r| {
                            for (table, n) in &sizes {
                                r.u64(table, *n);
                            }
                        });
                })
                .object("writer", |w| {
                    w.str("status", status_of(write.ok && alive.ok))
                        .f64("latency_ms", write.latency.as_secs_f64() * 1e3)
                        .str(
                            "error",
                            if write.ok {
                                &alive.detail
                            } else {
                                &write.detail
                            },
                        )
                        .u64("queue_depth", store.writer_queue_depth() as u64)
                        .u64("latest_seq", store.latest_seq());
                })
                .object("websocket", |w| {
                    w.str("status", "healthy")
                        .u64("connections", state.ws.open_connections() as u64)
                        .u64("max_connections", state.ws.config.max_connections as u64);
                })
                .object("cache", |k| {
                    k.str("status", "healthy")
                        .u64("entries", cache.entries)
                        .u64("bytes", cache.bytes)
                        .u64("budget_bytes", cache.budget)
                        .u64("hits", cache.hits)
                        .u64("misses", cache.misses);
                })
                .object("disk", |d| {
                    d.str("status", status_of(disk.ok && writable.ok))
                        .u64("free_bytes", state.health.disk_free())
                        .u64("floor_bytes", state.health.min_free_bytes())
                        .bool("writable", writable.ok)
                        .str(
                            "error",
                            if disk.ok {
                                &writable.detail
                            } else {
                                &disk.detail
                            },
                        );
                })
                .object("alerts", |a| {
                    a.str("status", if critical == 0 { "healthy" } else { "degraded" })
                        .u64("firing", firing as u64);
                });
            });
    });
    let code = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    Ok(json(code, body))
}

/// BotArmy: `{status: "ready"|"not_ready", services_ready}`.
pub async fn ready(state: &AppState) -> Result<Response, ApiError> {
    let checks = state.health.checks().await;
    let ready = checks.ok();
    let body = object(|o| {
        o.str("status", if ready { "ready" } else { "not_ready" })
            .bool("services_ready", ready)
            .object("services", |s| {
                for c in checks.all() {
                    s.bool(c.name.as_str(), c.ok);
                }
            });
    });
    Ok(json(
        if ready {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        },
        body,
    ))
}

/// BotArmy: `{status, checks:{…: "pass"|"fail"}, health_percentage, services_healthy, timestamp, version}`.
pub async fn z(state: &AppState) -> Result<Response, ApiError> {
    let checks = state.health.checks().await;
    let (passed, total) = (checks.passed(), checks.all().len());
    let percentage = (passed as f64 * 1000.0 / total as f64).round() / 10.0;
    let status = match passed {
        p if p == total => "healthy",
        0 => "unhealthy",
        _ => "degraded",
    };
    let body = object(|o| {
        o.str("status", status)
            .object("checks", |c| {
                for check in checks.all() {
                    c.str(check.name.as_str(), if check.ok { "pass" } else { "fail" });
                }
            })
            .f64("health_percentage", percentage)
            .str("services_healthy", &format!("{passed}/{total}"))
            .str("timestamp", &format_timestamp(now_micros()))
            .str("version", VERSION);
    });
    let code = if passed == total {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    Ok(json(code, body))
}
