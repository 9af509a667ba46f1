//! llm-router coordinator: one endpoint for a fleet of inference nodes.
//!
//! Layout:
//! - [`config`]: command line and environment, checked into a [`config::Config`];
//! - [`auth`]: who may do what: the node token, node credentials, client API keys,
//!   operator logins, and the host and origin rules;
//! - [`registry`]: the nodes, their health, the routable snapshot, and
//!   `agents.json` ([`registry::store`], written by [`registry::persist`]);
//! - [`health`]: the monitor that takes silent nodes offline;
//! - [`agentless`]: the poller that probes nodes added by URL, without an agent;
//! - [`history`]: every proxied request in `history.db` (SQLite), written off the request path;
//! - [`balancer`]: the load-balancing policies behind one trait;
//! - [`proxy`]: forwards Ollama and OpenAI requests to a node holding the
//!   model, streaming, with failover;
//! - [`distribute`]: models across the fleet: pull, create, copy and delete on many
//!   nodes as tasks with progress;
//! - [`translate`]: Ollama requests answered by OpenAI-compatible servers, and their
//!   answers back; [`aliases`]: one model under the names different servers give it;
//! - [`demo`]: the simulated fleet of `llm-router --demo` (mock nodes with in-process agents);
//! - [`api`]: the HTTP routes (`fn app(state) -> Router`);
//! - [`dashboard`]: the operator web page at `/dashboard` (embedded assets) and its live
//!   event stream `/api/events`;
//! - [`stats`]: per-node request statistics (`/api/agents`) and Prometheus metrics (`/metrics`),
//!   kept by a sink of the proxy's finished requests;
//! - [`tls`]: HTTPS for the coordinator's own listener (`--tls-cert`/`--tls-key`, rustls);
//! - [`error`]: the error type every endpoint answers with;
//! - [`commands`]: the `keys` and `admin` subcommands;
//! - [`tray`]: the tray's menu on a desktop start (nodes taking requests, Open dashboard, Quit);
//! - [`server`]: `--check-config`, start-up (`run(listener, config, shutdown)`) and the
//!   graceful shutdown.

pub mod admission;
pub mod agentless;
pub mod aliases;
pub mod api;
pub mod auth;
pub mod balancer;
pub mod commands;
pub mod config;
#[cfg(feature = "demo")]
pub mod demo;
pub mod distribute;
pub mod error;
pub mod health;
pub mod history;
pub mod placement;
pub mod proxy;
pub mod registry;
pub mod serve;
pub mod server;
pub mod stats;
pub mod tls;
pub mod translate;
pub mod tray;

#[cfg(test)]
mod fuzz;

pub use config::{Cli, Config};
pub use server::{run, run_observed};
