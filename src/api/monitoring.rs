//! `GET /metrics` (Prometheus text) and the JSON views under `/api/v1/monitoring/`.

use super::AppState;
use crate::domain::{format_timestamp, now_micros};
use crate::http::body::json;
use crate::http::{ApiError, Class, ErrorCode, Request, Response, Route, StatusCode, set_header};
use crate::json::{ObjectWriter, object};
use crate::monitor::Summary;
use serde_json::Value;

pub fn prometheus(state: &AppState) -> Result<Response, ApiError> {
    let text = state.monitor.render_prometheus(&state.store);
    let mut response = json(StatusCode::OK, text);
    set_header(
        &mut response,
        "content-type",
        "text/plain; version=0.0.4; charset=utf-8",
    );
    Ok(response)
}

fn write_summary(o: &mut ObjectWriter<'_>, s: &Summary) {
    o.u64("count", s.count)
        .f64("rate_per_second", s.rate)
        .f64("error_ratio", s.error_ratio)
        .f64("p50_ms", s.p50 * 1e3)
        .f64("p95_ms", s.p95 * 1e3)
        .f64("p99_ms", s.p99 * 1e3)
        .f64("max_ms", s.max * 1e3);
}

const CLASSES: [(Class, &str); 3] = [
    (Class::StatusQuery, "status_query"),
    (Class::TaskOperation, "task_operation"),
    (Class::ContextRetrieval, "context_retrieval"),
];

/// The windowed latency per route and class, plus WebSocket, store, cache and process figures.
pub fn metrics(state: &AppState) -> Result<Response, ApiError> {
    let m = &state.monitor;
    let store = &state.store;
    let cache = store.cache_stats();
    let process = m.process_figures(store);
    let sizes = store.table_sizes().unwrap_or_default();
    let body = object(|o| {
        o.str("timestamp", &format_timestamp(now_micros()))
            .f64("uptime_seconds", m.uptime().as_secs_f64());
        for (key, seconds) in [("last_1m", 60), ("last_5m", 300)] {
            o.object(key, |w| {
                w.object("all_requests", |a| {
                    write_summary(a, &m.http_summary(seconds))
                });
                w.object("classes", |c| {
                    for (class, name) in CLASSES {
                        c.object(name, |x| write_summary(x, &m.class_summary(class, seconds)));
                    }
                    c.object("websocket_delivery", |x| {
                        write_summary(x, &m.ws_delivery_summary(seconds))
                    });
                });
                w.object("routes", |r| {
                    for route in Route::ALL {
                        let s = m.route_summary(*route, seconds);
                        if s.count > 0 {
                            r.object(route.name(), |x| write_summary(x, &s));
                        }
                    }
                });
            });
        }
        o.object("websocket", |w| {
            w.u64("connections", state.ws.open_connections() as u64)
                .u64("subscribers", state.ws.hub.subscribers() as u64)
                .u64("slow_consumer_closes_5m", m.slow_consumer_closes(300));
        })
        .object("store", |s| {
            s.u64("writer_queue_depth", store.writer_queue_depth() as u64)
                .bool("writer_alive", store.writer_alive())
                .u64("latest_seq", store.latest_seq())
                .u64("file_size_bytes", store.file_size())
                .u64("used_bytes", store.used_bytes())
                .object("records", |r| {
                    for (table, n) in &sizes {
                        r.u64(table, *n);
                    }
                });
        })
        .object("cache", |c| {
            c.u64("entries", cache.entries)
                .u64("bytes", cache.bytes)
                .u64("budget_bytes", cache.budget)
                .u64("hits", cache.hits)
                .u64("misses", cache.misses)
                .u64("evictions", cache.evictions);
        })
        .object("process", |p| {
            for (name, value) in &process {
                p.f64(name.trim_start_matches("flightdeck_process_"), *value);
            }
        });
    });
    Ok(json(StatusCode::OK, body))
}

/// For each service level: target, current p99 over the last 5 minutes, met or not (null without
/// traffic).
pub fn performance(state: &AppState) -> Result<Response, ApiError> {
    let m = &state.monitor;
    use crate::monitor::service_levels::{self as sl, original};
    let (status, tasks) = (
        m.class_summary(Class::StatusQuery, 300),
        m.class_summary(Class::TaskOperation, 300),
    );
    let delivery = m.ws_delivery_summary(300);
    let levels: Vec<(&str, &str, f64, Summary)> = vec![
        ("status_query", "flightdeck", sl::STATUS_QUERY, status),
        ("task_operation", "flightdeck", sl::TASK_OPERATION, tasks),
        (
            "websocket_delivery",
            "flightdeck",
            sl::WS_DELIVERY,
            delivery,
        ),
        (
            "context_store_get",
            "flightdeck",
            sl::CONTEXT_GET,
            m.route_summary(Route::ArtifactGet, 300),
        ),
        (
            "context_store_list",
            "flightdeck",
            sl::CONTEXT_LIST,
            m.route_summary(Route::ProjectArtifacts, 300),
        ),
        (
            "status_query",
            "original_requirement",
            original::STATUS_QUERY,
            status,
        ),
        (
            "task_operation",
            "original_requirement",
            original::TASK_OPERATION,
            tasks,
        ),
        (
            "websocket_delivery",
            "original_requirement",
            original::WS_DELIVERY,
            delivery,
        ),
        (
            "context_store_retrieval",
            "original_requirement",
            original::CONTEXT_RETRIEVAL,
            m.class_summary(Class::ContextRetrieval, 300),
        ),
    ];
    let items: Vec<Vec<u8>> = levels
        .iter()
        .map(|(name, source, target, s)| {
            object(|o| {
                o.str("name", name)
                    .str("source", source)
                    .f64("target_p99_ms", target * 1e3)
                    .f64("current_p99_ms", s.p99 * 1e3)
                    .u64("samples", s.count);
                if s.count == 0 {
                    o.null("met");
                } else {
                    o.bool("met", s.p99 < *target);
                }
            })
        })
        .collect();
    let (waited, wait_p99) = state.store.queue_wait_p99(300);
    let body = object(|o| {
        o.u64("window_seconds", 300)
            .raw_array("service_levels", items.iter().map(Vec::as_slice))
            .object("queue_wait", |q| {
                q.u64("claims", waited).f64("p99_seconds", wait_p99);
            });
    });
    Ok(json(StatusCode::OK, body))
}

/// `GET /api/v1/monitoring/history`: the last hour of each class, a point every 30 s
/// `{step_seconds, window_seconds, series:[{name, points:[{timestamp, p99_ms, rate_per_second,
/// count}]}]}`, oldest first (the console's charts).
pub fn history(state: &AppState) -> Result<Response, ApiError> {
    use crate::monitor::history::{CLASSES, POINTS, STEP_SECONDS};
    let points = state.monitor.history();
    let series: Vec<Vec<u8>> = CLASSES
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let items: Vec<Vec<u8>> = points
                .iter()
                .map(|p| {
                    let c = p.classes[i];
                    object(|o| {
                        o.str("timestamp", &format_timestamp(p.at))
                            .f64("p99_ms", c.p99 * 1e3)
                            .f64("rate_per_second", c.rate)
                            .u64("count", c.count);
                    })
                })
                .collect();
            object(|o| {
                o.str("name", name)
                    .raw_array("points", items.iter().map(Vec::as_slice));
            })
        })
        .collect();
    let body = object(|o| {
        o.u64("step_seconds", STEP_SECONDS)
            .u64("window_seconds", STEP_SECONDS * POINTS as u64)
            .raw_array("series", series.iter().map(Vec::as_slice));
    });
    Ok(json(StatusCode::OK, body))
}

/// `GET /api/v1/monitoring/webhooks`: `{webhooks:[{name, url (scheme and host only), format,
/// events, project_id, signed, cursor, lag_events, delivered, failed, attempts, last_error,
/// last_delivered_at, next_attempt_at, max_attempts, dead_letters:[{seq, event_type, error,
/// attempts, at}]}]}`.
pub fn webhooks(state: &AppState) -> Result<Response, ApiError> {
    let latest = state.store.latest_seq();
    let statuses = state.webhooks.statuses();
    let mut letters = Vec::with_capacity(statuses.len());
    for (w, _) in &statuses {
        let items: Vec<Vec<u8>> = state
            .store
            .dead_letters(&w.name)?
            .iter()
            .map(|(seq, l)| {
                object(|o| {
                    o.u64("seq", *seq)
                        .str("event_type", &l.event_type)
                        .str("error", &l.error)
                        .u64("attempts", u64::from(l.attempts))
                        .timestamp("at", l.at);
                })
            })
            .collect();
        letters.push(items);
    }
    let max_attempts = u64::from(state.webhooks.max_attempts());
    let items: Vec<Vec<u8>> = statuses
        .iter()
        .zip(&letters)
        .map(|((w, s), letters)| {
            let events: Vec<String> = match &w.events {
                None => vec!["*".to_string()],
                Some(types) => types
                    .iter()
                    .map(|t| crate::domain::Vocabulary::as_str(*t).to_string())
                    .collect(),
            };
            object(|o| {
                o.str("name", &w.name)
                    .str("url", &w.shown_url())
                    .str(
                        "format",
                        match w.format {
                            crate::webhooks::Format::Json => "json",
                            crate::webhooks::Format::Slack => "slack",
                        },
                    )
                    .strs("events", &events)
                    .opt_id("project_id", w.project)
                    .bool("signed", w.secret.is_some())
                    .u64("cursor", s.cursor)
                    .u64("lag_events", latest.saturating_sub(s.cursor))
                    .u64("delivered", s.delivered)
                    .u64("failed", s.failed)
                    .u64("attempts", u64::from(s.attempts))
                    .opt_str("last_error", s.last_error.as_deref())
                    .opt_timestamp("last_delivered_at", s.last_delivered_at)
                    .opt_timestamp("next_attempt_at", s.next_attempt_at)
                    .u64("max_attempts", max_attempts)
                    .raw_array("dead_letters", letters.iter().map(Vec::as_slice));
            })
        })
        .collect();
    let body = object(|o| {
        o.raw_array("webhooks", items.iter().map(Vec::as_slice));
    });
    Ok(json(StatusCode::OK, body))
}

/// Every rule with its state, since when, current value, and the last 100 transitions.
pub fn alerts(state: &AppState) -> Result<Response, ApiError> {
    let m = &state.monitor;
    let uptime = m.uptime().as_secs_f64();
    let wall = |at: f64| now_micros() - ((uptime - at).max(0.0) * 1e6) as i64;
    let alerts = m.alerts();
    let rules: Vec<Vec<u8>> = alerts
        .rules
        .iter()
        .map(|r| {
            object(|o| {
                let c = &r.config;
                o.str("name", &c.name)
                    .str("state", r.state.as_str())
                    .str("since", &format_timestamp(wall(r.since)))
                    .f64("value", r.value)
                    .f64("threshold", c.threshold)
                    .str(
                        "comparison",
                        if c.comparison == crate::monitor::alerts::Comparison::Above {
                            "above"
                        } else {
                            "below"
                        },
                    )
                    .str(
                        "signal",
                        &serde_json::to_value(c.signal)
                            .ok()
                            .and_then(|v| v.as_str().map(String::from))
                            .unwrap_or_default(),
                    )
                    .u64("window_seconds", c.window_seconds)
                    .u64("for_seconds", c.for_seconds)
                    .u64("keep_firing_for_seconds", c.keep_firing_for_seconds)
                    .object("labels", |l| {
                        l.str("severity", c.severity.as_str());
                    })
                    .object("annotations", |a| {
                        a.str("summary", &c.summary);
                    });
            })
        })
        .collect();
    let transitions: Vec<Vec<u8>> = alerts
        .history
        .iter()
        .rev()
        .map(|t| {
            object(|o| {
                o.str("rule", &t.rule)
                    .str("from", t.from.as_str())
                    .str("to", t.to.as_str())
                    .str("at", &format_timestamp(wall(t.at)))
                    .f64("value", t.value)
                    .f64("threshold", t.threshold);
            })
        })
        .collect();
    let body = object(|o| {
        o.raw_array("rules", rules.iter().map(Vec::as_slice))
            .raw_array("transitions", transitions.iter().map(Vec::as_slice));
    });
    Ok(json(StatusCode::OK, body))
}

/// The webhook a path names: 404 when there is none of that name.
fn webhook_named(state: &AppState, name: &str) -> Result<usize, ApiError> {
    state.webhooks.find(name).ok_or_else(|| {
        ApiError::new(
            ErrorCode::NotFound,
            format!(
                "no webhook named {:?}",
                name.chars().take(64).collect::<String>()
            ),
        )
    })
}

/// What a retry or discard is about: the webhook (its index and name), the one seq asked for if
/// any, and the seqs to handle (that one, or every dead letter of the webhook).
struct Target {
    index: usize,
    name: String,
    one: Option<u64>,
    seqs: Vec<u64>,
}

async fn target(state: &AppState, name: &str, req: Request) -> Result<Target, ApiError> {
    let index = webhook_named(state, name)?;
    let name = state.webhooks.name(index).to_string();
    let one = dead_letter_seq(state, req).await?;
    let seqs: Vec<u64> = match one {
        Some(seq) => vec![seq],
        None => state
            .store
            .dead_letters(&name)?
            .into_iter()
            .map(|(seq, _)| seq)
            .collect(),
    };
    Ok(Target {
        index,
        name,
        one,
        seqs,
    })
}

/// The body of a retry or discard: `{"seq": N}` for one dead letter, `{}` for all of them.
async fn dead_letter_seq(state: &AppState, req: Request) -> Result<Option<u64>, ApiError> {
    let body: Value = req.json(state.max_body_bytes).await?;
    let Some(fields) = body.as_object() else {
        return Err(ApiError::invalid_field("body", "must be an object"));
    };
    if let Some(unknown) = fields.keys().find(|k| *k != "seq") {
        return Err(ApiError::invalid_field(unknown, "unknown field"));
    }
    match fields.get("seq") {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| ApiError::invalid_field("seq", format!("{v} is not an event seq"))),
    }
}

fn no_letter(name: &str, seq: u64) -> ApiError {
    ApiError::new(
        ErrorCode::NotFound,
        format!("webhook {name} has no dead letter at seq {seq}"),
    )
}

/// `POST /api/v1/monitoring/webhooks/{name}/retry {"seq": N}` (or `{}`: every dead letter, oldest
/// first, stopping at the first failure) → 200 `{webhook, delivered:[seq], failed:{seq, error} |
/// null, remaining}`. A delivered letter is removed; one that failed again stays.
pub async fn webhook_retry(
    state: &AppState,
    name: &str,
    req: Request,
) -> Result<Response, ApiError> {
    let Target {
        index,
        name,
        one,
        seqs,
    } = target(state, name, req).await?;
    let mut delivered = Vec::new();
    let mut failed = None;
    for seq in seqs {
        match state.webhooks.retry(&state.store, index, seq).await? {
            None if one.is_some() => return Err(no_letter(&name, seq)),
            None => {}
            Some(Ok(())) => delivered.push(seq),
            Some(Err(error)) => {
                failed = Some((seq, error));
                break;
            }
        }
    }
    let remaining = state.store.dead_letters(&name)?.len() as u64;
    let delivered: Vec<String> = delivered.iter().map(u64::to_string).collect();
    let body = object(|o| {
        o.str("webhook", &name)
            .raw("delivered", &format!("[{}]", delivered.join(",")));
        match &failed {
            Some((seq, error)) => o.object("failed", |f| {
                f.u64("seq", *seq).str("error", error);
            }),
            None => o.null("failed"),
        };
        o.u64("remaining", remaining);
    });
    Ok(json(StatusCode::OK, body))
}

/// `POST /api/v1/monitoring/webhooks/{name}/discard {"seq": N}` (or `{}`: all) → 200 `{webhook,
/// discarded, remaining}`: the dead letters are dropped without posting.
pub async fn webhook_discard(
    state: &AppState,
    name: &str,
    req: Request,
) -> Result<Response, ApiError> {
    let Target {
        index,
        name,
        one,
        seqs,
    } = target(state, name, req).await?;
    let command = crate::store::command::DeleteDeadLetters {
        name: name.clone(),
        seqs,
    };
    let discarded = state.store.write(command).await?;
    if let (Some(seq), 0) = (one, discarded) {
        return Err(no_letter(&name, seq));
    }
    state.webhooks.dead_letters_changed(&state.store, index);
    let remaining = state.store.dead_letters(&name)?.len() as u64;
    let body = object(|o| {
        o.str("webhook", &name)
            .u64("discarded", discarded)
            .u64("remaining", remaining);
    });
    Ok(json(StatusCode::OK, body))
}
