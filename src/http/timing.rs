//! The timing wrapper: a hand-written hyper `Service` around the application that measures every
//! request, labels it by method, `Route::name()` and status (closed sets only), counts requests in
//! flight and adds a `Server-Timing` header.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use parking_lot::RwLock;
use std::time::Instant;

use tracing::Instrument;

use hyper::body::Incoming;
use hyper::service::Service;
use hyper::{Method, Request, Response, header::HeaderValue};

use super::body::Body;
use super::router::{Class, Route};
use crate::monitor::Monitor;

/// Metric names of the HTTP layer.
pub const REQUEST_DURATION: &str = "flightdeck_http_request_duration_seconds";
pub const REQUESTS_TOTAL: &str = "flightdeck_http_requests_total";
pub const REQUESTS_IN_FLIGHT: &str = "flightdeck_http_requests_in_flight";

/// Put into a response's extensions by the application: the route that answered (none when no
/// route matched).
#[derive(Copy, Clone, Debug)]
pub struct RouteLabel(pub Option<Route>);

/// Wraps a service with timing.
#[derive(Clone)]
pub struct Timed<S> {
    inner: S,
    monitor: Arc<Monitor>,
    handles: Arc<Handles>,
}

/// (method, route, status) of a request.
type SeriesKey = (&'static str, Option<Route>, u16);
/// The duration histogram and the counter of one series.
type Series = (metrics::Histogram, metrics::Counter);

/// Metric handles by (method, route, status), resolved once: the registry lookup per request is
/// replaced by a read-locked map lookup.
struct Handles {
    in_flight: metrics::Gauge,
    series: RwLock<HashMap<SeriesKey, Series>>,
}

impl Handles {
    fn series(&self, method: &'static str, route: Option<Route>, code: u16) -> Series {
        if let Some(found) = self.series.read().get(&(method, route, code)) {
            return found.clone();
        }
        let route_name = route.map_or("unmatched", Route::name);
        let status = status_label(code);
        let made = (
            metrics::histogram!(REQUEST_DURATION, "method" => method, "route" => route_name, "status" => status),
            metrics::counter!(REQUESTS_TOTAL, "method" => method, "route" => route_name, "status" => status),
        );
        self.series
            .write()
            .insert((method, route, code), made.clone());
        made
    }
}

impl<S> Timed<S> {
    pub fn new(inner: S, monitor: Arc<Monitor>) -> Timed<S> {
        let handles = Handles {
            in_flight: metrics::gauge!(REQUESTS_IN_FLIGHT),
            series: RwLock::default(),
        };
        Timed {
            inner,
            monitor,
            handles: Arc::new(handles),
        }
    }
}

/// The request id: the client's `x-request-id` if it is a sane token, else a fresh one.
fn request_id(req: &Request<Incoming>) -> HeaderValue {
    req.headers()
        .get("x-request-id")
        .filter(|v| {
            !v.is_empty() && v.len() <= 128 && v.as_bytes().iter().all(|b| b.is_ascii_graphic())
        })
        .cloned()
        .unwrap_or_else(|| {
            let id = uuid::Uuid::now_v7().simple().to_string();
            HeaderValue::from_str(&id).expect("hex is a valid header value")
        })
}

impl<S> Service<Request<Incoming>> for Timed<S>
where
    S: Service<Request<Incoming>, Response = Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let start = Instant::now();
        let method = method_label(req.method());
        let id = request_id(&req);
        // Every log line of this request carries its id.
        let span = tracing::info_span!("request", request_id = id.to_str().unwrap_or(""), method);
        self.handles.in_flight.increment(1.0);
        let future = {
            let _entered = span.enter();
            self.inner.call(req)
        };
        let monitor = self.monitor.clone();
        let handles = self.handles.clone();
        Box::pin(
            async move {
                let Ok(mut response) = future.await;
                let elapsed = start.elapsed();
                let route = response.extensions().get::<RouteLabel>().and_then(|r| r.0);
                let route_name = route.map_or("unmatched", Route::name);
                let code = response.status().as_u16();
                handles.in_flight.decrement(1.0);
                let (histogram, counter) = handles.series(method, route, code);
                histogram.record(elapsed.as_secs_f64());
                counter.increment(1);
                monitor.observe_request(route, code, elapsed);
                let millis = elapsed.as_secs_f64() * 1000.0;
                if let Ok(value) = HeaderValue::from_str(&format!("app;dur={millis:.3}")) {
                    response.headers_mut().insert("server-timing", value);
                }
                response.headers_mut().insert("x-request-id", id);
                let class = route.map_or(Class::Other, Route::class);
                if elapsed > monitor.slow_threshold(class) {
                    tracing::warn!(route = route_name, status = code, millis, "slow request");
                }
                Ok(response)
            }
            .instrument(span),
        )
    }
}

fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Status codes as static labels; anything unexpected is grouped by class.
pub fn status_label(code: u16) -> &'static str {
    match code {
        101 => "101",
        200 => "200",
        201 => "201",
        204 => "204",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        405 => "405",
        409 => "409",
        413 => "413",
        415 => "415",
        422 => "422",
        429 => "429",
        500 => "500",
        503 => "503",
        507 => "507",
        _ => match code / 100 {
            1 => "1xx",
            2 => "2xx",
            3 => "3xx",
            4 => "4xx",
            _ => "5xx",
        },
    }
}
