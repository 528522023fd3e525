//! The timing wrapper: a hand-written hyper `Service` around the application that measures every
//! request, labels it by method, `Route::name()` and status (closed sets only), counts requests in
//! flight and adds a `Server-Timing` header.

use std::cell::Cell;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::task::futures::TaskLocalFuture;

use hyper::service::Service;
use hyper::{
    Method, Request, Response,
    header::{HeaderName, HeaderValue},
};

use super::body::Body;
use super::router::{Class, Route};

/// Metric names of the HTTP layer.
pub const REQUEST_DURATION: &str = "flightdeck_http_request_duration_seconds";
pub const REQUESTS_TOTAL: &str = "flightdeck_http_requests_total";
/// Connections answered 503 because the process was out of file descriptors.
pub const OUT_OF_DESCRIPTORS: &str = "flightdeck_http_out_of_descriptors_total";
/// Connections dropped because their response made no progress within `--write-timeout-ms`.
pub const WRITE_TIMEOUTS: &str = "flightdeck_http_write_timeouts_total";
pub const REQUESTS_IN_FLIGHT: &str = "flightdeck_http_requests_in_flight";

tokio::task_local! {
    /// The request whose future is being polled. `crate::logging` adds its id to every log line
    /// written meanwhile; the application names the route that answered (`set_route`). A
    /// task-local costs a thread-local swap per poll, where a tracing span per request cost about a
    /// tenth of a core at 90,000 requests/s and a response extension two allocations.
    static REQUEST: RequestContext;
}

struct RequestContext {
    /// Taken out only to be read and put back, or at completion.
    id: Cell<Option<HeaderValue>>,
    route: Cell<Option<Route>>,
}

impl RequestContext {
    /// Moves the context out from behind a shared reference (the task-local's).
    fn take(&self) -> RequestContext {
        RequestContext {
            id: Cell::new(self.id.take()),
            route: Cell::new(self.route.get()),
        }
    }
}

/// Calls `f` with the id of the request being handled on this task, if any.
pub fn with_request_id<R>(f: impl FnOnce(Option<&str>) -> R) -> R {
    let mut f = Some(f);
    let called = REQUEST.try_with(|r| {
        let id = r.id.take();
        let result = f
            .take()
            .map(|f| f(id.as_ref().and_then(|v| v.to_str().ok())));
        r.id.set(id);
        result
    });
    match called {
        Ok(Some(result)) => result,
        _ => f.take().expect("not called yet")(None),
    }
}

/// Called by the application once it knows which route answers the request being handled: the
/// label of its metric series. Outside a timed request (a bench's bare handler) it does nothing.
pub fn set_route(route: Route) {
    let _ = REQUEST.try_with(|r| r.route.set(Some(route)));
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
    monitor: Arc<dyn Observer>,
    handles: Handles,
}

/// Who learns of every request: the monitoring side (`monitor::Monitor` implements it), so this
/// layer reports without depending on it.
pub trait Observer: Send + Sync + 'static {
    fn request_started(&self);
    fn request_finished(&self);
    /// One answered request; `started` is when it began.
    fn observe_request(
        &self,
        route: Option<Route>,
        status: u16,
        started: Instant,
        elapsed: Duration,
    );
    /// Requests of the class slower than this are logged as warnings.
    fn slow_threshold(&self, class: Class) -> Duration;
}

/// The descriptions of this layer's metrics, and their series that exist from start-up (every
/// route's usual answer).
pub fn describe_metrics() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_histogram!(
        REQUEST_DURATION,
        Unit::Seconds,
        "HTTP request duration inside the server, by method, route and status."
    );
    describe_counter!(
        REQUESTS_TOTAL,
        "HTTP requests answered, by method, route and status."
    );
    describe_gauge!(REQUESTS_IN_FLIGHT, "HTTP requests being handled.");
    describe_counter!(
        WRITE_TIMEOUTS,
        "Connections dropped because their response made no progress within the write timeout."
    );
    metrics::counter!(WRITE_TIMEOUTS).increment(0);
    describe_counter!(
        OUT_OF_DESCRIPTORS,
        "Connections answered 503 because the process had no file descriptor left."
    );
    metrics::counter!(OUT_OF_DESCRIPTORS).increment(0);
    for route in Route::ALL {
        let (method, status) = route.primary();
        let status = status_label(status);
        metrics::counter!(REQUESTS_TOTAL, "method" => method, "route" => route.name(), "status" => status).increment(0);
        let _ = metrics::histogram!(REQUEST_DURATION, "method" => method, "route" => route.name(), "status" => status);
    }
    metrics::gauge!(REQUESTS_IN_FLIGHT).set(0.0);
}

/// The duration histogram and the counter of one (method, route, status) series.
type Series = (metrics::Histogram, metrics::Counter);

/// Series of one route (or of unmatched requests), by method and status index.
type RouteSeries = [OnceLock<Series>; METHODS.len() * STATUSES.len()];

/// Metric handles, each resolved from the registry on first use and then found by indexing: no
/// lock, no hashing and no reference counting per request.
struct Handles {
    /// By `Route::index()`; the last entry is for requests that matched no route.
    routes: Box<[OnceLock<Box<RouteSeries>>]>,
}

impl Handles {
    fn new() -> Handles {
        Handles {
            routes: (0..=Route::ALL.len()).map(|_| OnceLock::new()).collect(),
        }
    }

    fn series(&self, method: usize, route: Option<Route>, status: usize) -> &Series {
        let block = self.routes[route.map_or(Route::ALL.len(), Route::index)]
            .get_or_init(|| Box::new(std::array::from_fn(|_| OnceLock::new())));
        block[method * STATUSES.len() + status].get_or_init(|| {
            let route_name = route.map_or("unmatched", Route::name);
            let (method, status) = (METHODS[method], STATUSES[status]);
            (
                metrics::histogram!(REQUEST_DURATION, "method" => method, "route" => route_name, "status" => status),
                metrics::counter!(REQUESTS_TOTAL, "method" => method, "route" => route_name, "status" => status),
            )
        })
    }
}

impl<S> Timed<S> {
    pub fn new(inner: S, monitor: Arc<dyn Observer>) -> Timed<S> {
        Timed {
            inner,
            shared: Box::leak(Box::new(TimedShared {
                monitor,
                handles: Handles::new(),
            })),
        }
    }
}

/// The request id: the client's `x-request-id` if it is a sane token, else a fresh one.
fn request_id<B>(req: &Request<B>) -> HeaderValue {
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
    HeaderValue::from_bytes(&text).expect("hex digits are a valid header value")
}

const HEX: &[u8; 16] = b"0123456789abcdef";
static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static SERVER_TIMING: HeaderName = HeaderName::from_static("server-timing");

/// `app;dur=1.234` (milliseconds) without going through `format!`.
fn server_timing(elapsed: std::time::Duration) -> HeaderValue {
    let micros = elapsed.as_micros() as u64;
    let fraction = (micros % 1000) as u8;
    let mut itoa = itoa::Buffer::new();
    let mut text = [0u8; 32];
    let mut len = 0;
    for part in [
        &b"app;dur="[..],
        itoa.format(micros / 1000).as_bytes(),
        &[
            b'.',
            b'0' + fraction / 100,
            b'0' + fraction / 10 % 10,
            b'0' + fraction % 10,
        ],
    ] {
        text[len..len + part.len()].copy_from_slice(part);
        len += part.len();
    }
    HeaderValue::from_bytes(&text[..len]).expect("digits are a valid header value")
}

impl<S, B> Service<Request<B>> for Timed<S>
where
    S: Service<Request<B>, Response = Response<Body>, Error = Infallible>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = TimedFuture<S::Future>;

    fn call(&self, req: Request<B>) -> Self::Future {
        let start = Instant::now();
        let method = method_index(req.method());
        let context = RequestContext {
            id: Cell::new(Some(request_id(&req))),
            route: Cell::new(None),
        };
        let in_flight = InFlight::start(self.shared);
        // The application may answer right here (a read does): its route and log lines need the
        // context now, as they do in every later poll.
        let (inner, context) = REQUEST.sync_scope(context, || {
            (self.inner.call(req), REQUEST.with(RequestContext::take))
        });
        TimedFuture {
            inner: REQUEST.scope(context, inner),
            start,
            method,
            shared: self.shared,
            in_flight: Some(in_flight),
        }
    }
}

pin_project_lite::pin_project! {
    /// The application's future with the request's context in scope; measures the request when it
    /// completes. A concrete type, so hyper keeps it inline: no allocation per request.
    pub struct TimedFuture<F> {
        #[pin]
        inner: TaskLocalFuture<RequestContext, F>,
        start: Instant,
        method: usize,
        shared: &'static TimedShared,
        // Dropped when the request finishes, or with the future if it never does (the client
        // went away).
        in_flight: Option<InFlight>,
    }
}

/// One request counted in flight while this lives.
struct InFlight(&'static TimedShared);

impl InFlight {
    fn start(shared: &'static TimedShared) -> InFlight {
        shared.monitor.request_started();
        InFlight(shared)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.monitor.request_finished();
    }
}

impl<F> Future for TimedFuture<F>
where
    F: Future<Output = Result<Response<Body>, Infallible>>,
{
    type Output = Result<Response<Body>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let Ok(mut response) = std::task::ready!(this.inner.as_mut().poll(cx));
        let elapsed = this.start.elapsed();
        drop(this.in_flight.take());
        let mut context = this
            .inner
            .take_value()
            .expect("the context is taken once, at completion");
        let route = context.route.get();
        let code = response.status().as_u16();
        let shared = *this.shared;
        let monitor = &shared.monitor;
        let (histogram, counter) = shared
            .handles
            .series(*this.method, route, status_index(code));
        histogram.record(elapsed.as_secs_f64());
        counter.increment(1);
        monitor.observe_request(route, code, *this.start, elapsed);
        let class = route.map_or(Class::Other, Route::class);
        if elapsed > monitor.slow_threshold(class) {
            let millis = elapsed.as_secs_f64() * 1000.0;
            let route_name = route.map_or("unmatched", Route::name);
            // Back in the request's scope, so the line carries its id like every other.
            context = REQUEST.sync_scope(context, || {
                tracing::warn!(route = route_name, status = code, millis, "slow request");
                REQUEST.with(RequestContext::take)
            });
        }
        if let Some(id) = context.id.take() {
            response.headers_mut().insert(X_REQUEST_ID.clone(), id);
        }
        response
            .headers_mut()
            .insert(SERVER_TIMING.clone(), server_timing(elapsed));
        Poll::Ready(Ok(response))
    }
}

/// Method labels; the index is the series' position.
const METHODS: [&str; 8] = [
    "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "other",
];

/// Status labels: the usual codes, anything else grouped by class.
const STATUSES: [&str; 22] = [
    "101", "200", "201", "204", "400", "401", "403", "404", "405", "409", "413", "415", "422",
    "429", "500", "503", "507", "1xx", "2xx", "3xx", "4xx", "5xx",
];

fn method_index(method: &Method) -> usize {
    match *method {
        Method::GET => 0,
        Method::POST => 1,
        Method::PUT => 2,
        Method::PATCH => 3,
        Method::DELETE => 4,
        Method::HEAD => 5,
        Method::OPTIONS => 6,
        _ => 7,
    }
}

fn status_index(code: u16) -> usize {
    match code {
        101 => 0,
        200 => 1,
        201 => 2,
        204 => 3,
        400 => 4,
        401 => 5,
        403 => 6,
        404 => 7,
        405 => 8,
        409 => 9,
        413 => 10,
        415 => 11,
        422 => 12,
        429 => 13,
        500 => 14,
        503 => 15,
        507 => 16,
        _ => match code / 100 {
            1 => 17,
            2 => 18,
            3 => 19,
            4 => 20,
            _ => 21,
        },
    }
}

/// The label of a status code.
pub fn status_label(code: u16) -> &'static str {
    STATUSES[status_index(code)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::{Monitor, MonitorConfig};

    fn request_with_id(id: &'static str) -> Request<Body> {
        let mut request = Request::new(Body::default());
        request
            .headers_mut()
            .insert(X_REQUEST_ID.clone(), HeaderValue::from_static(id));
        request
    }

    fn ok_json(status: hyper::StatusCode) -> Result<Response<Body>, Infallible> {
        Ok(crate::http::body::json(status, "{}"))
    }

    #[test]
    fn a_request_dropped_before_it_finished_is_no_longer_in_flight() {
        let monitor = Monitor::new(MonitorConfig::default());
        let timed = Timed::new(
            hyper::service::service_fn(|_: Request<Body>| {
                std::future::pending::<Result<Response<Body>, Infallible>>()
            }),
            monitor.clone(),
        );
        let first = timed.call(Request::new(Body::default()));
        let second = timed.call(Request::new(Body::default()));
        assert_eq!(monitor.in_flight(), 2);
        // The client went away: hyper drops the request's future unfinished.
        drop(first);
        assert_eq!(monitor.in_flight(), 1);
        drop(second);
        assert_eq!(monitor.in_flight(), 0);
    }

    #[test]
    fn a_finished_request_carries_its_timing_and_id() {
        let monitor = Monitor::new(MonitorConfig::default());
        // What a log line written while the application answers would carry.
        let seen = Arc::new(parking_lot::Mutex::new(None::<String>));
        let seen_inside = seen.clone();
        let timed = Timed::new(
            hyper::service::service_fn(move |_: Request<Body>| {
                *seen_inside.lock() = with_request_id(|id| id.map(str::to_owned));
                set_route(Route::Livez);
                std::future::ready(ok_json(hyper::StatusCode::OK))
            }),
            monitor.clone(),
        );
        let mut future = std::pin::pin!(timed.call(request_with_id("abc-1")));
        let waker = std::task::Waker::noop();
        let Poll::Ready(Ok(response)) = future.as_mut().poll(&mut Context::from_waker(waker))
        else {
            panic!("a ready answer completes on its first poll");
        };
        assert_eq!(response.headers()[&X_REQUEST_ID], "abc-1");
        assert_eq!(seen.lock().as_deref(), Some("abc-1"));
        assert_eq!(with_request_id(|id| id.map(str::to_owned)), None);
        let timing = response.headers()[&SERVER_TIMING].to_str().unwrap();
        assert!(timing.starts_with("app;dur="), "{timing}");
        assert_eq!(monitor.in_flight(), 0);
        assert_eq!(monitor.route_summary(Route::Livez, 60).count, 1);
    }

    #[test]
    fn a_request_that_waits_keeps_its_id_in_every_poll() {
        let monitor = Monitor::new(MonitorConfig::default());
        let seen = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let seen_inside = seen.clone();
        let timed = Timed::new(
            hyper::service::service_fn(move |_: Request<Body>| {
                let seen = seen_inside.clone();
                let mut polls = 0;
                std::future::poll_fn(move |cx| {
                    seen.lock()
                        .push(with_request_id(|id| id.map(str::to_owned)));
                    polls += 1;
                    if polls == 1 {
                        cx.waker().wake_by_ref();
                        Poll::Pending
                    } else {
                        Poll::Ready(ok_json(hyper::StatusCode::CREATED))
                    }
                })
            }),
            monitor.clone(),
        );
        let mut future = std::pin::pin!(timed.call(request_with_id("w-2")));
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(future.as_mut().poll(&mut cx).is_pending());
        assert_eq!(monitor.in_flight(), 1);
        let Poll::Ready(Ok(response)) = future.as_mut().poll(&mut cx) else {
            panic!("the second poll completes");
        };
        assert_eq!(response.headers()[&X_REQUEST_ID], "w-2");
        assert_eq!(
            *seen.lock(),
            vec![Some("w-2".to_owned()), Some("w-2".to_owned())]
        );
        assert_eq!(monitor.in_flight(), 0);
    }

    #[test]
    fn server_timing_is_milliseconds_with_three_decimals() {
        for (micros, text) in [
            (0, "app;dur=0.000"),
            (7, "app;dur=0.007"),
            (1234, "app;dur=1.234"),
            (120_050, "app;dur=120.050"),
        ] {
            assert_eq!(
                server_timing(std::time::Duration::from_micros(micros)),
                text
            );
        }
    }

    #[test]
    fn fresh_ids_are_32_hex_digits_and_distinct() {
        let a = fresh_request_id();
        let b = fresh_request_id();
        assert_ne!(a, b);
        for id in [a, b] {
            assert_eq!(id.len(), 32);
            assert!(id.as_bytes().iter().all(u8::is_ascii_hexdigit));
        }
    }

    #[test]
    fn every_status_has_a_label_and_unknown_codes_go_by_class() {
        // Each listed code maps to its own label (the index table and the label table agree).
        for label in STATUSES.iter().filter(|l| !l.ends_with("xx")) {
            assert_eq!(status_label(label.parse().unwrap()), *label);
        }
        assert_eq!(status_label(200), "200");
        assert_eq!(status_label(507), "507");
        assert_eq!(status_label(302), "3xx");
        assert_eq!(status_label(418), "4xx");
        assert_eq!(status_label(599), "5xx");
        assert_eq!(status_label(102), "1xx");
    }
}
