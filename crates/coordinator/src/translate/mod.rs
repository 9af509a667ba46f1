//! Ollama requests answered by OpenAI-compatible servers (llama.cpp's server,
//! vLLM, SGLang, LM Studio): a model that such a node serves is usable from
//! Ollama clients too.
//!
//! - [`request`]: an Ollama body (`/api/chat`, `/api/generate`, `/api/embed`,
//!   `/api/embeddings`) as the OpenAI body of `/v1/chat/completions`,
//!   `/v1/completions` or `/v1/embeddings`, or the reason it cannot be;
//! - [`response`]: the answer back, a whole document or a stream of server-sent
//!   events turned into NDJSON as each event arrives (never buffered), with
//!   Ollama's final counters (token counts, durations measured here, `done_reason`).
//!
//! OpenAI requests need no translation: every node answers `/v1` (Ollama has its own).

pub mod request;
pub mod response;

/// The Ollama endpoints that can be translated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Chat,
    Generate,
    Embed,
    /// The older `/api/embeddings` (`prompt` in, one `embedding` out).
    Embeddings,
}

impl Endpoint {
    /// The endpoint of an Ollama request path, when it can be translated.
    pub fn of(path: &str) -> Option<Self> {
        match path {
            "/api/chat" => Some(Endpoint::Chat),
            "/api/generate" => Some(Endpoint::Generate),
            "/api/embed" => Some(Endpoint::Embed),
            "/api/embeddings" => Some(Endpoint::Embeddings),
            _ => None,
        }
    }
}

/// The OpenAI endpoint a translated request goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upstream {
    ChatCompletions,
    Completions,
    Embeddings,
}

impl Upstream {
    pub fn path(self) -> &'static str {
        match self {
            Upstream::ChatCompletions => "/v1/chat/completions",
            Upstream::Completions => "/v1/completions",
            Upstream::Embeddings => "/v1/embeddings",
        }
    }
}
