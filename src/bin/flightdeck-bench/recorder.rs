//! Per class, the latencies the clients saw and the server reported.

use crate::Class;
use crate::http::{Answer, Client};
use crate::stats::Samples;
use serde_json::Value;
use std::time::Instant;

/// One request as the recorder sends it.
pub struct Call<'a> {
    /// The class it is recorded under.
    pub class: Class,
    pub method: hyper::Method,
    pub path: &'a str,
    pub body: Option<&'a Value>,
    /// The statuses that count as answered; any other is an error.
    pub ok: &'a [u16],
}

/// Per class, what the clients saw and what the server reported in `Server-Timing`.
#[derive(Default)]
pub struct Recorder {
    pub(super) client: [Samples; 6],
    pub(super) server: [Samples; 6],
}

impl Recorder {
    pub(super) fn index(class: Class) -> usize {
        Class::ALL.iter().position(|c| *c == class).expect("listed")
    }

    pub fn merge(&mut self, other: Recorder) {
        for (mine, theirs) in self.client.iter_mut().zip(other.client) {
            mine.merge(theirs);
        }
        for (mine, theirs) in self.server.iter_mut().zip(other.server) {
            mine.merge(theirs);
        }
    }

    /// A class's errors so far (the report reads them from the summaries).
    #[cfg(test)]
    pub fn errors(&self, class: Class) -> u64 {
        self.client[Self::index(class)].clone().summary().errors
    }

    /// Sends one request and records it under its class: an answer with a status outside the
    /// call's `ok`, or no answer, is an error.
    pub async fn request(&mut self, client: &mut Client, call: Call<'_>) -> Option<Answer> {
        self.request_due(None, client, call).await
    }

    /// `request` for an open-loop client: the latency recorded runs from `due`, when the request
    /// was due, rather than from when it could be sent.
    pub async fn request_due(
        &mut self,
        due: Option<Instant>,
        client: &mut Client,
        call: Call<'_>,
    ) -> Option<Answer> {
        let Call {
            class,
            method,
            path,
            body,
            ok,
        } = call;
        let i = Self::index(class);
        let body = body.map(|b| serde_json::to_vec(b).expect("a JSON value serialises"));
        match client.send(method, path, body).await {
            Ok(answer) if ok.contains(&answer.status) => {
                let seen = due.map_or(answer.elapsed, |d| d.elapsed().max(answer.elapsed));
                self.client[i].record(seen);
                if let Some(micros) = answer.server_micros {
                    self.server[i].record_micros(micros);
                }
                Some(answer)
            }
            Ok(answer) => {
                tracing::warn!(
                    %path,
                    status = answer.status,
                    body = %String::from_utf8_lossy(&answer.body),
                    "unexpected answer"
                );
                self.client[i].error();
                None
            }
            Err(e) => {
                tracing::warn!(%path, error = %e, "request failed");
                self.client[i].error();
                None
            }
        }
    }
}
