//! The timing wrapper: a hand-written hyper `Service` around the application that measures every
//! request, labels it by method, `Route::name()` and status (closed sets only), counts requests in
//! flight and adds a `Server-Timing` header.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use parking_lot::RwLock;
use std::time::Instant;

use hyper::body::Incoming;
use hyper::service::Service;
use hyper::{
    Method, Request, Response,
    header::{HeaderName, HeaderValue},
};

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

tokio::task_local! {
    /// The id of the request whose future is being polled; `crate::logging` adds it to every log
    /// line written meanwhile. A task-local costs a thread-local swap per poll, where a tracing
    /// span per request cost about a tenth of a core at 90,000 requests/s.
    static REQUEST_ID: HeaderValue;
}

/// Calls `f` with the id of the request being handled on this task, if any.
pub fn with_request_id<R>(f: impl FnOnce(Option<&str>) -> R) -> R {
    match REQUEST_ID.try_with(|id| id.clone()) {
        Ok(id) => f(id.to_str().ok()),
        Err(_) => f(None),
    }
}

/// Wraps a service with timing.
#[derive(Clone)]
pub struct Timed<S> {
    inner: S,
    /// Shared by every request of the server. A `'static` reference rather than an `Arc`, so a
    /// request does not bump (and later drop) a reference count that both cores fight over; the
    /// one `Shared` per server lives as long as the process.
    shared: &'static TimedShared,
}

struct TimedShared {
    monitor: Arc<Monitor>,
    handles: Handles,
}

/// (method, route, status) of a request.
type SeriesKey = (&'static str, Option<Route>, u16);
/// The duration histogram and the counter of one series.
type Series = (metrics::Histogram, metrics::Counter);

/// Metric handles by (method, route, status), resolved once: the registry lookup per request is
/// replaced by a read-locked map lookup.
struct Handles {
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
            series: RwLock::default(),
        };
        Timed {
            inner,
            shared: Box::leak(Box::new(TimedShared { monitor, handles })),
        }
    }
}

/// The request id: the client's `x-request-id` if it is a sane token, else a fresh one.
fn request_id(req: &Request<Incoming>) -> HeaderValue {
    req.headers()
        .get(&X_REQUEST_ID)
        .filter(|v| {
            !v.is_empty() && v.len() <= 128 && v.as_bytes().iter().all(|b| b.is_ascii_graphic())
        })
        .cloned()
        .unwrap_or_else(fresh_request_id)
}

/// 32 hex digits: 64 random bits drawn once per process, then a per-thread counter. Unique within the
/// process and across restarts, without a random draw per request.
fn fresh_request_id() -> HeaderValue {
    static PREFIX: OnceLock<u64> = OnceLock::new();
    static THREADS: AtomicU64 = AtomicU64::new(0);
    thread_local! {
        /// This thread's number in the top 16 bits, its own count below: no shared counter.
        static NEXT: std::cell::Cell<u64> = std::cell::Cell::new(THREADS.fetch_add(1, Ordering::Relaxed) << 48);
    }
    let prefix = *PREFIX.get_or_init(|| uuid::Uuid::now_v7().as_u64_pair().1);
    let n = NEXT.with(|next| {
        let n = next.get();
        next.set(n + 1);
        n
    });
    let mut text = [0u8; 32];
    for (i, byte) in prefix
        .to_be_bytes()
        .iter()
        .chain(n.to_be_bytes().iter())
        .enumerate()
    {
        text[2 * i] = HEX[usize::from(byte >> 4)];
        text[2 * i + 1] = HEX[usize::from(byte & 0xf)];
    }
    HeaderValue::from_maybe_shared(bytes::Bytes::copy_from_slice(&text))
        .expect("hex digits are a valid header value")
}

const HEX: &[u8; 16] = b"0123456789abcdef";
static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static SERVER_TIMING: HeaderName = HeaderName::from_static("server-timing");

/// `app;dur=1.234` (milliseconds) without going through `format!`.
fn server_timing(elapsed: std::time::Duration) -> HeaderValue {
    let micros = elapsed.as_micros() as u64;
    let mut text = Vec::with_capacity(24);
    text.extend_from_slice(b"app;dur=");
    text.extend_from_slice(itoa::Buffer::new().format(micros / 1000).as_bytes());
    let fraction = micros % 1000;
    text.push(b'.');
    text.push(b'0' + (fraction / 100) as u8);
    text.push(b'0' + (fraction / 10 % 10) as u8);
    text.push(b'0' + (fraction % 10) as u8);
    HeaderValue::from_maybe_shared(bytes::Bytes::from(text))
        .expect("digits are a valid header value")
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
        let shared = self.shared;
        shared.monitor.request_started();
        let future = self.inner.call(req);
        // Every log line of this request carries its id (see `crate::logging`).
        Box::pin(REQUEST_ID.scope(id.clone(), async move {
            let Ok(mut response) = future.await;
            let elapsed = start.elapsed();
            let route = response.extensions().get::<RouteLabel>().and_then(|r| r.0);
            let route_name = route.map_or("unmatched", Route::name);
            let code = response.status().as_u16();
            let monitor = &shared.monitor;
            monitor.request_finished();
            let (histogram, counter) = shared.handles.series(method, route, code);
            histogram.record(elapsed.as_secs_f64());
            counter.increment(1);
            monitor.observe_request(route, code, start, elapsed);
            response
                .headers_mut()
                .insert(SERVER_TIMING.clone(), server_timing(elapsed));
            response.headers_mut().insert(X_REQUEST_ID.clone(), id);
            let class = route.map_or(Class::Other, Route::class);
            if elapsed > monitor.slow_threshold(class) {
                let millis = elapsed.as_secs_f64() * 1000.0;
                tracing::warn!(route = route_name, status = code, millis, "slow request");
            }
            Ok(response)
        }))
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
