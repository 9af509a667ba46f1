//! The llm-router agent: runs beside Ollama on each machine, registers the machine with
//! the coordinator and keeps it informed with heartbeats.
//!
//! Layout:
//! - [`config`]: command line, environment and settings file, merged into a validated [`AgentConfig`];
//! - [`settings_file`]: the optional `agent-settings.json` in the data directory;
//! - [`identity`]: the machine name and the IP address the node advertises;
//! - [`node_file`]: `agent-node.json`, the node's id and credential kept between runs;
//! - [`ollama`]: client for the local Ollama (version, models, loaded models);
//! - [`metrics`]: static machine facts, CPU/memory load and GPU readings (NVIDIA, AMD, Apple);
//! - [`coordinator`]: client for the coordinator's agent API and its error classification;
//! - [`http`]: what both HTTP clients share (URL joining, transport error descriptions);
//! - [`backoff`]: the registration retry schedule, a pure function;
//! - [`registration`]: the registration retry loop;
//! - [`heartbeat`]: the heartbeat loop;
//! - [`lifecycle`]: [`run`], which ties them together from start-up to the shutdown notice;
//! - [`status`]: what the agent is doing, for the tray and the settings panel, and their commands;
//! - [`desktop`]: the tray's menu for each status, and what each item does;
//! - [`panel`]: the settings panel on 127.0.0.1, which edits `agent-settings.json` and
//!   applies it live;
//! - [`supervise`]: `--manage-ollama`, running `ollama serve` when no Ollama answers.

pub mod backoff;
pub mod config;
pub mod coordinator;
pub mod desktop;
pub mod heartbeat;
pub mod http;
pub mod identity;
pub mod lifecycle;
pub mod metrics;
pub mod node_file;
pub mod ollama;
pub mod panel;
pub mod registration;
pub mod settings_file;
pub mod status;
pub mod supervise;

pub use config::{AgentConfig, Backend, Cli, ConfigError};
pub use lifecycle::{AGENT_VERSION, AgentError, run, run_controlled, run_reconfigurable};
