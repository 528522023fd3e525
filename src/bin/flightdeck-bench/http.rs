//! The driver's HTTP side: one keep-alive HTTP/1.1 connection per simulated client (hyper's
//! low-level client, no pool), and the bare hyper server that answers a fixed body as the baseline.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

/// One answered request: status, body, the server's own time from `Server-Timing` (µs) and the
/// time the client saw.
pub struct Answer {
    pub status: u16,
    pub body: Bytes,
    pub server_micros: Option<u64>,
    pub elapsed: Duration,
}

impl Answer {
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// A client holding one connection to `addr`, reconnecting when the server closes it.
pub struct Client {
    addr: SocketAddr,
    token: Option<String>,
    sender: Option<SendRequest<Full<Bytes>>>,
}

#[derive(Debug)]
pub struct ClientError(pub String);

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Client {
    pub fn new(addr: SocketAddr, token: Option<String>) -> Self {
        Client {
            addr,
            token,
            sender: None,
        }
    }

    async fn connect(&mut self) -> Result<&mut SendRequest<Full<Bytes>>, ClientError> {
        if self.sender.as_ref().is_none_or(|s| s.is_closed()) {
            let stream = tokio::net::TcpStream::connect(self.addr)
                .await
                .map_err(|e| ClientError(format!("connect {}: {e}", self.addr)))?;
            let _ = stream.set_nodelay(true);
            let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| ClientError(format!("handshake: {e}")))?;
            tokio::spawn(async move {
                let _ = connection.await;
            });
            self.sender = Some(sender);
        }
        Ok(self.sender.as_mut().expect("connected above"))
    }

    pub async fn get(&mut self, path: &str) -> Result<Answer, ClientError> {
        self.send(hyper::Method::GET, path, None).await
    }

    pub async fn post(
        &mut self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<Answer, ClientError> {
        let body = serde_json::to_vec(body).expect("a JSON value serialises");
        self.send(hyper::Method::POST, path, Some(body)).await
    }

    pub async fn send(
        &mut self,
        method: hyper::Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Answer, ClientError> {
        self.send_with(method, path, body, &[]).await
    }

    /// `send`, with headers of the caller's.
    pub async fn send_with(
        &mut self,
        method: hyper::Method,
        path: &str,
        body: Option<Vec<u8>>,
        headers: &[(&str, &str)],
    ) -> Result<Answer, ClientError> {
        let host = self.addr.to_string();
        // A POST says it is JSON even without a body (a server without keys refuses it otherwise).
        let json = body.is_some() || method == hyper::Method::POST;
        let mut builder = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, host);
        if let Some(token) = &self.token {
            builder = builder.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        if json {
            builder = builder.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let request = builder
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| ClientError(format!("request: {e}")))?;
        let started = Instant::now();
        let sender = self.connect().await?;
        sender
            .ready()
            .await
            .map_err(|e| ClientError(format!("connection: {e}")))?;
        let result = async {
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| ClientError(format!("request: {e}")))?;
            let status = response.status().as_u16();
            let server_micros = response
                .headers()
                .get("server-timing")
                .and_then(|v| v.to_str().ok())
                .and_then(server_timing_micros);
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| ClientError(format!("body: {e}")))?
                .to_bytes();
            Ok(Answer {
                status,
                body,
                server_micros,
                elapsed: started.elapsed(),
            })
        }
        .await;
        if result.is_err() {
            self.sender = None;
        }
        result
    }
}

/// The `app;dur=<ms>` entry of a `Server-Timing` header, in microseconds.
pub fn server_timing_micros(header: &str) -> Option<u64> {
    header.split(',').find_map(|entry| {
        let mut parts = entry.trim().split(';');
        (parts.next()? == "app").then_some(())?;
        let ms: f64 = parts
            .find_map(|p| p.trim().strip_prefix("dur="))?
            .parse()
            .ok()?;
        Some((ms * 1000.0).round() as u64)
    })
}

/// The baseline: a bare hyper HTTP/1.1 server on a multi-thread runtime that answers every
/// request with `body` as JSON. Prints `listening on ADDR` and serves until killed.
pub fn bare_server(body: Bytes) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("listening on {}", listener.local_addr()?);
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            let body = body.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_req| {
                    let body = body.clone();
                    async move {
                        let mut response = hyper::Response::new(Full::new(body));
                        response.headers_mut().insert(
                            hyper::header::CONTENT_TYPE,
                            hyper::header::HeaderValue::from_static("application/json"),
                        );
                        Ok::<_, Infallible>(response)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

#[cfg(test)]
mod tests {
    use super::server_timing_micros;

    #[test]
    fn reads_the_app_entry_of_server_timing() {
        assert_eq!(server_timing_micros("app;dur=0.123"), Some(123));
        assert_eq!(server_timing_micros("db;dur=5, app;dur=1.5"), Some(1500));
        assert_eq!(server_timing_micros("db;dur=5"), None);
        assert_eq!(server_timing_micros("app;dur=x"), None);
    }
}
