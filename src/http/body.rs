//! Request bodies in (size-limited, JSON only, depth-limited, errors naming the field) and JSON
//! responses out.

use crate::http::ErrorCode;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::{Request, Response, StatusCode, header};
use serde::de::DeserializeOwned;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::error::ApiError;
use crate::json::nesting_depth;

/// Deepest nesting of arrays and objects accepted in a request body.
pub const MAX_JSON_DEPTH: usize = 64;

/// A response's body: whole (every route), or a stream of chunks sent as they come (an MCP call
/// that reports progress while it waits, as server-sent events).
#[derive(Debug)]
pub struct Body(Chunks);

#[derive(Debug)]
enum Chunks {
    Whole(Full<Bytes>),
    Stream(tokio::sync::mpsc::Receiver<Bytes>),
}

impl Body {
    pub fn new(bytes: Bytes) -> Body {
        Body(Chunks::Whole(Full::new(bytes)))
    }

    /// A body of the chunks sent on `chunks`, ending when every sender is gone.
    pub fn stream(chunks: tokio::sync::mpsc::Receiver<Bytes>) -> Body {
        Body(Chunks::Stream(chunks))
    }
}

impl Default for Body {
    fn default() -> Body {
        Body::new(Bytes::new())
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match &mut self.get_mut().0 {
            Chunks::Whole(full) => Pin::new(full).poll_frame(cx),
            Chunks::Stream(chunks) => chunks.poll_recv(cx).map(|c| c.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            Chunks::Whole(full) => full.is_end_stream(),
            Chunks::Stream(_) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Chunks::Whole(full) => full.size_hint(),
            Chunks::Stream(_) => SizeHint::default(),
        }
    }
}

/// A request's body: as it arrives on the connection, or already whole (a tool call of the MCP
/// endpoint, which hands the same handlers a body of its own making).
pub enum ReqBody {
    Wire(Incoming),
    /// `None` once read.
    Local(Option<Bytes>),
}

impl hyper::body::Body for ReqBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ReqBody::Wire(body) => Pin::new(body).poll_frame(cx),
            ReqBody::Local(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ReqBody::Wire(body) => body.is_end_stream(),
            ReqBody::Local(bytes) => bytes.as_ref().is_none_or(Bytes::is_empty),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ReqBody::Wire(body) => body.size_hint(),
            ReqBody::Local(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
        }
    }
}

/// Reads and decodes a JSON body of at most `limit` bytes.
pub async fn read_json<T: DeserializeOwned>(
    req: Request<ReqBody>,
    limit: usize,
    timeout: Duration,
) -> Result<T, ApiError> {
    let bytes = read_body(req, limit, timeout).await?;
    decode_json(&bytes)
}

/// The body's bytes as sent, at most `limit` of them, when its Content-Type says JSON.
pub async fn read_bytes(
    req: Request<ReqBody>,
    limit: usize,
    timeout: Duration,
) -> Result<Bytes, ApiError> {
    read_body(req, limit, timeout).await
}

/// `read_json`, and the body's bytes (for an idempotency fingerprint).
pub async fn read_json_and_bytes<T: DeserializeOwned>(
    req: Request<ReqBody>,
    limit: usize,
    timeout: Duration,
) -> Result<(T, Bytes), ApiError> {
    let bytes = read_body(req, limit, timeout).await?;
    Ok((decode_json(&bytes)?, bytes))
}

/// Like `read_json`, but a request with no body and no Content-Type decodes as `T::default()`.
pub async fn read_optional_json<T: DeserializeOwned + Default>(
    req: Request<ReqBody>,
    limit: usize,
    timeout: Duration,
) -> Result<T, ApiError> {
    let untyped = !req.headers().contains_key(header::CONTENT_TYPE);
    let no_length = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .is_none_or(|v| v.as_bytes() == b"0");
    if untyped && no_length {
        let body = collect(req, limit, timeout).await?;
        return if body.is_empty() {
            Ok(T::default())
        } else {
            Err(ApiError::new(
                ErrorCode::UnsupportedMediaType,
                "a body must be JSON with Content-Type: application/json",
            ))
        };
    }
    read_json(req, limit, timeout).await
}

fn body_timeout(timeout: Duration) -> ApiError {
    ApiError::new(
        ErrorCode::BodyTimeout,
        format!("the body did not arrive within {} ms", timeout.as_millis()),
    )
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        ErrorCode::PayloadTooLarge,
        format!("the body is larger than the limit of {limit} bytes"),
    )
}

async fn read_body(
    req: Request<ReqBody>,
    limit: usize,
    timeout: Duration,
) -> Result<Bytes, ApiError> {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    match content_type {
        Some(ct) if is_json(ct) => {}
        other => {
            let error = ApiError::new(
                ErrorCode::UnsupportedMediaType,
                format!(
                    "the body must be JSON with Content-Type: application/json (got {})",
                    other.unwrap_or("no Content-Type")
                ),
            );
            linger(req);
            return Err(error);
        }
    }
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        linger(req);
        return Err(too_large(limit));
    }
    collect(req, limit, timeout).await
}

/// Reads the whole body: 413 past `limit` bytes, 408 past `timeout`. On either, what the client
/// still sends is drained (`linger`) so it can read the answer.
async fn collect(
    req: Request<ReqBody>,
    limit: usize,
    timeout: Duration,
) -> Result<Bytes, ApiError> {
    let continues = expects_continue(&req);
    let mut body = req.into_body();
    let deadline = tokio::time::Instant::now() + timeout;
    let mut first: Option<Bytes> = None;
    let mut joined: Vec<u8> = Vec::new();
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => {
                drain(body, continues);
                return Err(body_timeout(timeout));
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                return Err(ApiError::new(
                    ErrorCode::BodyReadFailed,
                    format!("reading the body failed: {e}"),
                ));
            }
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let received = first.as_ref().map_or(0, Bytes::len) + joined.len() + data.len();
        if received > limit {
            drain(body, continues);
            return Err(too_large(limit));
        }
        // One frame is kept as it came; only a body of several frames is copied together.
        match first.take() {
            None if joined.is_empty() => first = Some(data),
            Some(earlier) => {
                joined.extend_from_slice(&earlier);
                joined.extend_from_slice(&data);
            }
            None => joined.extend_from_slice(&data),
        }
    }
    Ok(first.unwrap_or_else(|| Bytes::from(joined)))
}

/// The most of an unwanted body read and discarded after the answer, and for how long: what
/// nginx calls a lingering close. A client that writes its whole body before it reads (Python's
/// urllib, requests) would otherwise meet a reset connection instead of the answer.
pub const LINGER_BYTES: u64 = 64 * 1024 * 1024;
pub const LINGER_TIME: Duration = Duration::from_secs(5);

/// Drains whatever is left of a request's body in the background, bounded by `LINGER_BYTES` and
/// `LINGER_TIME`, while the answer goes out. Nothing to do for a body already complete, and
/// nothing for a client that waits for `100 Continue` (it sends no body after a final answer).
pub fn linger(req: Request<ReqBody>) {
    use hyper::body::Body as _;
    // Every request without a body passes here when it is dropped: decide on the cheap test first.
    if req.body().is_end_stream() {
        return;
    }
    let continues = expects_continue(&req);
    drain(req.into_body(), continues);
}

fn expects_continue<B>(req: &Request<B>) -> bool {
    req.headers()
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}

fn drain(mut body: ReqBody, continues: bool) {
    use hyper::body::Body as _;
    // A body made inside the server has no connection to drain.
    if continues || body.is_end_stream() || matches!(body, ReqBody::Local(_)) {
        return;
    }
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn(async move {
        let deadline = tokio::time::Instant::now() + LINGER_TIME;
        let mut drained = 0u64;
        while drained < LINGER_BYTES {
            match tokio::time::timeout_at(deadline, body.frame()).await {
                Ok(Some(Ok(frame))) => {
                    drained += frame.data_ref().map_or(0, |d| d.len() as u64);
                }
                _ => break,
            }
        }
    });
}

fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Decodes JSON: 400 for malformed or too deeply nested text, 422 naming the field for a value of
/// the wrong shape, and 422 for half a surrogate pair anywhere (raw fields are stored as sent).
pub fn decode_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if nesting_depth(bytes, MAX_JSON_DEPTH) > MAX_JSON_DEPTH {
        return Err(ApiError::new(
            ErrorCode::TooDeep,
            format!("JSON nested deeper than {MAX_JSON_DEPTH} levels"),
        ));
    }
    if let Some(at) = crate::json::lone_surrogate(bytes) {
        return Err(ApiError::invalid_field(
            "body",
            format!(
                "a \\u escape at byte {at} is half a UTF-16 surrogate pair: text must be Unicode"
            ),
        ));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_data() {
            let field = if path == "." {
                "body".to_string()
            } else {
                path
            };
            ApiError::invalid_field(&field, strip_position(&inner.to_string()))
        } else {
            ApiError::new(
                ErrorCode::MalformedJson,
                format!("the body is not valid JSON: {inner}"),
            )
        }
    })?;
    de.end().map_err(|e| {
        ApiError::new(
            ErrorCode::MalformedJson,
            format!("the body is not valid JSON: {e}"),
        )
    })?;
    Ok(value)
}

/// serde_json appends " at line L column C" to data errors; it says nothing useful for a field.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

/// A JSON response.
pub fn json(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::new(body.into()))
        .expect("static headers are valid")
}

/// An empty response (204).
pub fn empty(status: StatusCode) -> Response<Body> {
    Response::builder()
        .status(status)
        .body(Body::default())
        .expect("no headers")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Sample {
        name: String,
        count: u32,
        content: Box<serde_json::value::RawValue>,
    }

    #[test]
    fn errors_name_the_field() {
        let e = decode_json::<Sample>(br#"{"name":"a","count":"x","content":{}}"#).unwrap_err();
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(e.message.starts_with("count:"), "{}", e.message);
        let e = decode_json::<Sample>(br#"{"count":1,"content":{}}"#).unwrap_err();
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(e.message.contains("name"), "{}", e.message);
        let e = decode_json::<Sample>(br#"{"name":"a","#).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        let e = decode_json::<Sample>(br#"{"name":"a","count":1,"content":{}} x"#).unwrap_err();
        assert_eq!(e.code, "malformed_json");
    }

    #[test]
    fn raw_values_keep_the_clients_text() {
        let s: Sample = decode_json(br#"{"name":"a","count":1,"content":{"k": [1, 2]}}"#).unwrap();
        assert_eq!(s.content.get(), r#"{"k": [1, 2]}"#);
    }

    #[test]
    fn deep_nesting_is_refused() {
        let deep = format!("{}{}", "[".repeat(65), "]".repeat(65));
        let e = decode_json::<serde_json::Value>(deep.as_bytes()).unwrap_err();
        assert_eq!(e.code, "too_deep");
        let ok = format!("{}{}", "[".repeat(64), "]".repeat(64));
        assert!(decode_json::<serde_json::Value>(ok.as_bytes()).is_ok());
    }

    #[test]
    fn json_content_types() {
        assert!(is_json("application/json"));
        assert!(is_json("Application/JSON; charset=utf-8"));
        assert!(is_json("application/merge-patch+json"));
        assert!(!is_json("text/plain"));
    }
}
