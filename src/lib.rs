//! understudy: automatic failover for web services.
//!
//! # Layout
//! Data flows one way (see ARCHITECTURE.md):
//! `probe` (I/O) -> `health` (pure) -> `decision` (pure) -> `actuator` (I/O), with every
//! transition recorded as an `events::Event` in a durable log before it is announced.
//! `daemon` wires these together; `api` serves the JSON API and metrics; `cli` is the command
//! line, which talks to a running daemon through the API.

pub mod actuator;
pub mod agent;
pub mod canary;
pub mod config;
pub mod coordinator;
pub mod clock;
pub mod crclog;
pub mod crypto;
pub mod decision;
pub mod pg;
pub mod dns;
pub mod probe;
pub mod health;
pub mod events;
pub mod process;
pub mod retry;
pub mod service;
pub mod api;
pub mod daemon;
pub mod metrics;
pub mod notify;
pub mod cli;
pub mod drill;
pub mod provider;
#[cfg(test)]
mod layers;
pub mod lb;
pub mod vrrp;
