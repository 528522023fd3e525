//! The HTTP layer: routing, timing, bodies and the error table. Only this module and `server`
//! (and later `ws`) touch hyper; the API handlers see the `Request` and `Response` defined here.

pub mod auth;
pub mod body;
pub mod cors;
pub mod error;
pub mod repoll;
pub mod router;
pub mod site;
pub mod timing;

use hyper::body::Incoming;
use hyper::header::HeaderValue;
use serde::de::DeserializeOwned;

pub use body::{Body, ReqBody};
pub use error::{ApiError, ErrorCode};
pub use hyper::{Method, StatusCode};
pub use router::{Class, Matched, NoRoute, Route, route};

/// A response as the handlers build it.
pub type Response = hyper::Response<Body>;

/// A request as the handlers see it: method, path, query and a body decoded on demand. A body
/// the handler never read is drained when the request is dropped (`body::linger`), so a client
/// that writes its whole body before reading still reads the answer.
pub struct Request {
    /// `None` only once the request was consumed (its body read, or handed to the upgrade).
    inner: Option<hyper::Request<ReqBody>>,
    /// Longest the body may take to arrive.
    body_timeout: std::time::Duration,
    /// The name of the API key the request presented, once `auth` accepted it (`None` when keys
    /// are off).
    caller: Option<String>,
}

/// The address a request's connection came from, as a request extension.
#[derive(Copy, Clone, Debug)]
pub struct Peer(pub std::net::IpAddr);

/// A connection's service: `inner`, with the connection's address on each request.
#[derive(Clone)]
pub struct WithPeer<S> {
    pub inner: S,
    pub peer: Option<std::net::IpAddr>,
}

impl<S> hyper::service::Service<hyper::Request<Incoming>> for WithPeer<S>
where
    S: hyper::service::Service<hyper::Request<Incoming>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn call(&self, mut req: hyper::Request<Incoming>) -> Self::Future {
        if let Some(peer) = self.peer {
            req.extensions_mut().insert(Peer(peer));
        }
        self.inner.call(req)
    }
}

/// The body timeout when none is configured.
pub const DEFAULT_BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

impl Request {
    pub fn new(inner: hyper::Request<Incoming>) -> Request {
        Request::with_body_timeout(inner, DEFAULT_BODY_TIMEOUT)
    }

    pub fn with_body_timeout(
        inner: hyper::Request<Incoming>,
        body_timeout: std::time::Duration,
    ) -> Request {
        Request {
            inner: Some(inner.map(ReqBody::Wire)),
            body_timeout,
            caller: None,
        }
    }

    /// A request made inside the server, its body already whole (see `ReqBody::Local`).
    pub fn local(inner: hyper::Request<bytes::Bytes>, caller: Option<String>) -> Request {
        Request {
            inner: Some(inner.map(|b| ReqBody::Local(Some(b)))),
            body_timeout: DEFAULT_BODY_TIMEOUT,
            caller,
        }
    }

    /// Records the name of the key `auth` accepted.
    pub fn set_caller(&mut self, name: Option<String>) {
        self.caller = name;
    }

    /// The name of the key the request presented (`None` when keys are off).
    pub fn caller(&self) -> Option<&str> {
        self.caller.as_deref()
    }

    /// The address the connection came from (`server` records it on each request).
    pub fn peer(&self) -> Option<std::net::IpAddr> {
        self.head().extensions().get::<Peer>().map(|p| p.0)
    }

    fn head(&self) -> &hyper::Request<ReqBody> {
        self.inner
            .as_ref()
            .expect("a request is only consumed by value")
    }

    fn take(mut self) -> hyper::Request<ReqBody> {
        self.inner
            .take()
            .expect("a request is only consumed by value")
    }

    pub fn method(&self) -> &Method {
        self.head().method()
    }

    pub fn uri(&self) -> &hyper::Uri {
        self.head().uri()
    }

    pub fn path(&self) -> &str {
        self.head().uri().path()
    }

    pub fn query(&self) -> Option<&str> {
        self.head().uri().query()
    }

    /// A header's value, if it is valid text.
    /// A header's bytes as sent, whatever they are.
    pub fn header_bytes(&self, name: &str) -> Option<&[u8]> {
        self.head().headers().get(name).map(|v| v.as_bytes())
    }

    /// How many times a header was sent.
    /// Every header, in the order received.
    pub fn headers(&self) -> http::header::Iter<'_, HeaderValue> {
        self.head().headers().iter()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.head()
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
    }

    /// The body as JSON, or `T::default()` when there is no body at all.
    pub async fn optional_json<T: DeserializeOwned + Default>(
        self,
        limit: usize,
    ) -> Result<T, ApiError> {
        let timeout = self.body_timeout;
        body::read_optional_json(self.take(), limit, timeout).await
    }

    /// The request itself, for the WebSocket upgrade.
    pub fn into_hyper(self) -> hyper::Request<ReqBody> {
        self.take()
    }

    /// The body as JSON of type `T`, at most `limit` bytes (see `body::read_json`).
    pub async fn json<T: DeserializeOwned>(self, limit: usize) -> Result<T, ApiError> {
        let timeout = self.body_timeout;
        body::read_json(self.take(), limit, timeout).await
    }

    /// The body's bytes, undecoded (JSON by its Content-Type, at most `limit` bytes).
    pub async fn bytes(self, limit: usize) -> Result<bytes::Bytes, ApiError> {
        let timeout = self.body_timeout;
        body::read_bytes(self.take(), limit, timeout).await
    }

    /// `json`, with the body's bytes.
    pub async fn json_and_bytes<T: DeserializeOwned>(
        self,
        limit: usize,
    ) -> Result<(T, bytes::Bytes), ApiError> {
        let timeout = self.body_timeout;
        body::read_json_and_bytes(self.take(), limit, timeout).await
    }
}

impl Drop for Request {
    fn drop(&mut self) {
        if let Some(req) = self.inner.take() {
            body::linger(req);
        }
    }
}

/// Sets a header whose value came from us; a value that is not a valid header is left out.
pub fn set_header(response: &mut Response, name: &'static str, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        response.headers_mut().insert(name, value);
    }
}
