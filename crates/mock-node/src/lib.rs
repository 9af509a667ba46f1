//! A fake Ollama / OpenAI-compatible inference server with knobs, used by
//! tests, benchmarks and the demo fleet. It speaks the real wire formats,
//! generates deterministic text at a configurable pace, queues requests
//! beyond its slots, loads and evicts models, fails on demand, and records
//! what it saw.
//!
//! # Layout
//!
//! - [`config`]: [`MockConfig`], the start-up configuration, and its checks.
//! - [`control`]: [`MockControl`], the knobs tests turn while the node runs
//!   (also `POST /mock/config`).
//! - [`stats`]: [`MockStats`], request counts, in-flight and cancelled
//!   generations, how pulls ended, recorded request bodies (also
//!   `GET /mock/stats`).
//! - [`models`]: the held and loaded models, with made-up metadata.
//! - `scheduler`: generation slots and model loading.
//! - `generation`: generated text, token pacing and the streamed body.
//! - `pull`: simulated model pulls: layers, download clock, progress stream.
//! - [`embedding`]: deterministic embedding vectors.
//! - [`api`]: the router: Ollama API, OpenAI API and `/mock/...` routes.
//! - [`state`]: [`MockState`], everything a running node shares.
//! - [`server`]: [`serve`] on a bound listener, and [`MockNode`] for tests.
//!
//! # Routes
//!
//! Ollama: `GET|HEAD /`, `GET /api/version`, `/api/tags`, `/api/ps`,
//! `POST /api/show`, `/api/chat`, `/api/generate`, `/api/embed`,
//! `/api/embeddings`, `/api/pull`, `/api/copy`, `DELETE /api/delete`. OpenAI: `GET /v1/models`,
//! `/v1/models/{model}`, `POST /v1/chat/completions`, `/v1/completions`,
//! `/v1/embeddings`. Mock: `GET /health`, `GET|POST /mock/config` (a
//! partial [`ControlUpdate`]), `GET /mock/stats`, `GET /mock/requests`.
//! Every response carries `x-mock-node: <name>`.
//!
//! Generated text is `"<name> token1 token2 ..."`, one word per token, as
//! many tokens as `options.num_predict` / `max_tokens` ask, else
//! `default_tokens`.
//!
//! `POST /api/pull` streams Ollama's progress (`pulling manifest`, one
//! `pulling <digest>` line per layer and tick, `verifying sha256 digest`,
//! `writing manifest`, `success`) at `pull_bytes_per_sec` (0 = at once),
//! and can fail (`pull_fail_after_bytes`) or stall (`pull_stall_after_bytes`)
//! on demand; the model is held only once the pull succeeded.
//!
//! # Example
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use llm_router_mock_node::{MockConfig, MockNode};
//! let node = MockNode::start(MockConfig::named("node-a").with_models(["llama3.2"])).await?;
//! println!("{}", node.url()); // http://127.0.0.1:PORT
//! node.control().set_fail_rate(1.0);
//! node.stop().await;
//! # Ok(())
//! # }
//! ```

pub mod api;
pub mod config;
pub mod control;
pub mod embedding;
mod generation;
mod hashing;
pub mod models;
mod pull;
mod scheduler;
pub mod server;
pub mod state;
pub mod stats;

pub use api::{NODE_HEADER, app};
pub use config::{ConfigError, MockConfig};
pub use control::{ControlSnapshot, ControlUpdate, InvalidKnob, MockControl};
pub use generation::generated_text;
pub use models::{ModelCatalog, ModelInfo, normalize_model_name};
pub use server::{MockNode, run, serve};
pub use state::MockState;
pub use stats::{Endpoint, MockStats, RecordedRequest, StatsSnapshot};
