//! flightdeck keeps the state of a team of AI agents at work — projects, tasks, agent status, a
//! context store of artifacts, human-in-the-loop approvals and an event log — in an embedded redb
//! database, and serves it over HTTP.
//!
//! Layout (see ARCHITECTURE.md for the invariants):
//! - [`config`]: every setting, from flags, `FLIGHTDECK_*` variables and a TOML file;
//! - [`server`]: the accept loop, connection handling and graceful shutdown;
//! - [`http`]: routing to a closed [`http::Route`] set, request timing, bodies and the error table;
//! - [`api`]: one file per resource: decode, call the store, encode;
//! - [`domain`]: ids, vocabulary, state machines and validation, without I/O;
//! - [`store`]: the only module that touches redb: records, indexes, the writer thread, reads;
//! - [`events`]: the event wire format and the hub that fans committed events out;
//! - [`ws`]: the WebSocket endpoint: upgrade, replay, live delivery, heartbeats;
//! - [`json`]: the response writer that splices stored client JSON;
//! - [`monitor`]: metrics, windowed latency, health checks and alert rules;
//! - [`replication`]: followers: the leader's snapshot, its log streamed and applied, the
//!   acknowledgements synchronous replication waits for;
//! - [`logging`]: log output, with the request id on every line of a request;

#![forbid(unsafe_code)]

pub mod api;
pub mod config;
pub mod console;
pub mod domain;
pub mod events;
pub mod http;
pub mod json;
pub mod logging;
pub mod monitor;
pub mod replication;
pub mod server;
pub mod store;
pub mod webhooks;
pub mod ws;
