//! The timing wrapper: a hand-written hyper `Service` around the application that measures every
//! request, labels it by method, `Route::name()` and status (closed sets only), counts requests in
//! flight and adds a `Server-Timing` header.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::service::Service;
use hyper::{Method, Request, Response, header::HeaderValue};

use super::body::Body;

/// Metric names of the HTTP layer.
pub const REQUEST_DURATION: &str = "flightdeck_http_request_duration_seconds";
pub const REQUESTS_TOTAL: &str = "flightdeck_http_requests_total";
pub const REQUESTS_IN_FLIGHT: &str = "flightdeck_http_requests_in_flight";

/// Requests slower than this are logged as warnings.
const SLOW_REQUEST: Duration = Duration::from_millis(500);

/// Put into a response's extensions by the application: the route that answered.
#[derive(Copy, Clone, Debug)]
pub struct RouteLabel(pub &'static str);

/// Wraps a service with timing.
#[derive(Clone)]
pub struct Timed<S> {
    inner: S,
}

impl<S> Timed<S> {
    pub fn new(inner: S) -> Timed<S> {
        Timed { inner }
    }
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
        metrics::gauge!(REQUESTS_IN_FLIGHT).increment(1.0);
        let future = self.inner.call(req);
        Box::pin(async move {
            let Ok(mut response) = future.await;
            let elapsed = start.elapsed();
            let route = response
                .extensions()
                .get::<RouteLabel>()
                .map_or("unmatched", |r| r.0);
            let status = status_label(response.status().as_u16());
            metrics::gauge!(REQUESTS_IN_FLIGHT).decrement(1.0);
            metrics::histogram!(REQUEST_DURATION, "method" => method, "route" => route, "status" => status)
                .record(elapsed.as_secs_f64());
            metrics::counter!(REQUESTS_TOTAL, "method" => method, "route" => route, "status" => status)
                .increment(1);
            let millis = elapsed.as_secs_f64() * 1000.0;
            if let Ok(value) = HeaderValue::from_str(&format!("app;dur={millis:.3}")) {
                response.headers_mut().insert("server-timing", value);
            }
            if elapsed > SLOW_REQUEST {
                tracing::warn!(method, route, status, millis, "slow request");
            }
            Ok(response)
        })
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
fn status_label(code: u16) -> &'static str {
    match code {
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
