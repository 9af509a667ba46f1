//! End-to-end tests of `llm_router_agent::run` against a fake coordinator and a fake Ollama.

mod binary;
mod credentials;
mod heartbeat;
mod ollama;
mod panel;
mod registration;
mod shutdown;
mod support;
