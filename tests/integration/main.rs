//! Black-box tests: the real binary, a temporary data directory, a real socket, an independent
//! client. One test binary; one module per area.

mod common;

mod agents;
mod approvals;
mod artifacts;
mod backup;
mod bad_input;
mod bench;
mod budgets;
mod cli;
mod clients;
mod crash;
mod events;
mod full_disk;
mod graphs;
mod hitl;
mod hostile;
mod idempotency;
mod mcp;
mod monitoring;
mod pages;
mod projects;
mod queues;
mod replication;
mod restart;
mod security;
mod tasks;
mod upgrade;
mod usage;
mod vocabularies;
mod webhooks;
mod websocket;
mod workers;
mod workflows;
