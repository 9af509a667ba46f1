//! The HTTP surface: one router for the Ollama API, the OpenAI API and the
//! mock's own control endpoints, with the `x-mock-node` header on every
//! response.

mod error;
mod mock;
mod ollama;
mod openai;
mod request;

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::map_response_with_state;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;
use serde::de::{self, Deserialize, Deserializer, Visitor};

use tokio::time::Instant;

use crate::control::MockControl;
use crate::generation::{ChunkEncoder, Cut, MAX_TOKENS, broken_body, generated_text};
use crate::models::ModelInfo;
use crate::state::MockState;

/// Header naming the node that answered, on every response.
pub const NODE_HEADER: &str = "x-mock-node";

/// The node's router. Tests can drive it without a socket through
/// `tower::ServiceExt::oneshot`.
pub fn app(state: Arc<MockState>) -> Router {
    Router::new()
        .route("/", get(mock::root))
        .route("/health", get(mock::health))
        .route("/slots", get(mock::slots))
        .route("/api/version", get(ollama::version))
        .route("/api/tags", get(ollama::tags))
        .route("/api/ps", get(ollama::ps))
        .route("/api/show", post(ollama::show))
        .route("/api/chat", post(ollama::chat))
        .route("/api/generate", post(ollama::generate))
        .route("/api/embed", post(ollama::embed))
        .route("/api/embeddings", post(ollama::embeddings))
        .route("/api/pull", post(ollama::pull))
        .route("/api/create", post(ollama::create))
        .route("/api/delete", delete(ollama::delete))
        .route("/api/copy", post(ollama::copy))
        .route("/v1/models", get(openai::models))
        .route("/v1/models/{*model}", get(openai::model))
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/completions", post(openai::completions))
        .route("/v1/embeddings", post(openai::embeddings))
        .route("/mock/config", get(mock::get_config).post(mock::set_config))
        .route("/mock/stats", get(mock::stats))
        .route("/mock/requests", get(mock::requests))
        .fallback(mock::not_found)
        .layer(map_response_with_state(Arc::clone(&state), add_node_header))
        .with_state(state)
}

async fn add_node_header(State(node): State<Arc<MockState>>, mut response: Response) -> Response {
    response.headers_mut().insert(
        HeaderName::from_static(NODE_HEADER),
        node.name_header().clone(),
    );
    if node.hostile_headers() {
        let headers = response.headers_mut();
        headers.insert(
            axum::http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        headers.insert(
            axum::http::header::SET_COOKIE,
            HeaderValue::from_static("session=planted-by-the-node; Path=/"),
        );
        headers.insert(
            axum::http::header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
    }
    response
}

/// A JSON string field that borrows from the request body when it has no
/// escapes and allocates only when it must.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JsonText<'a>(pub(crate) Cow<'a, str>);

impl<'a> JsonText<'a> {
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for JsonText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for JsonText<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = JsonText<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(JsonText(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(JsonText(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(JsonText(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(TextVisitor)
    }
}

/// The model named by a request, when it names one.
pub(crate) fn required_model<'a>(model: Option<JsonText<'a>>) -> Option<JsonText<'a>> {
    model.filter(|m| !m.as_str().trim().is_empty())
}

/// Tokens to generate: the request's limit when it sets a usable one, else
/// the node's default; never more than [`MAX_TOKENS`].
pub(crate) fn tokens_to_generate(requested: Option<i64>, control: &MockControl) -> u64 {
    match requested {
        Some(n) if n >= 0 => (n as u64).min(MAX_TOKENS),
        _ => control.default_tokens().min(MAX_TOKENS),
    }
}

/// Serialises `value` as one JSON body with an exact `Content-Length`.
pub(crate) fn json_bytes<T: Serialize>(value: &T) -> Bytes {
    let mut buf = BytesMut::with_capacity(256);
    // Serialising plain structs into memory cannot fail.
    let _ = serde_json::to_writer((&mut buf).writer(), value);
    buf.freeze()
}

/// Appends `value` as one JSON line (NDJSON).
pub(crate) fn push_json_line<T: Serialize>(out: &mut BytesMut, value: &T) {
    let _ = serde_json::to_writer((&mut *out).writer(), value);
    out.put_u8(b'\n');
}

/// Appends `value` as one server-sent event (`data: {...}\n\n`).
pub(crate) fn push_sse_event<T: Serialize>(out: &mut BytesMut, value: &T) {
    out.put_slice(b"data: ");
    let _ = serde_json::to_writer((&mut *out).writer(), value);
    out.put_slice(b"\n\n");
}

/// A response whose body is complete and whose length is known.
pub(crate) fn full_response(
    status: StatusCode,
    content_type: &'static str,
    body: axum::body::Body,
    len: usize,
) -> Response {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    response
}

/// A streamed response (no length, chunked).
pub(crate) fn stream_response(content_type: &'static str, body: axum::body::Body) -> Response {
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// A 200 whose body breaks at once: the connection is dropped mid-response.
pub(crate) fn cut_response(cut: Cut) -> Response {
    stream_response("application/json; charset=utf-8", broken_body(cut))
}

pub(crate) const JSON: &str = "application/json; charset=utf-8";
pub(crate) const NDJSON: &str = "application/x-ndjson";
pub(crate) const SSE: &str = "text/event-stream";

/// Plain JSON value responses for the small, cold endpoints.
pub(crate) fn json_response<T: Serialize>(status: StatusCode, value: &T) -> Response {
    let bytes = json_bytes(value);
    let len = bytes.len();
    full_response(status, JSON, axum::body::Body::from(bytes), len)
}

impl IntoResponse for crate::control::InvalidKnob {
    fn into_response(self) -> Response {
        error::ApiError::bad_request(error::Dialect::Ollama, self.to_string()).into_response()
    }
}

/// Admits a generation and answers it, streamed or whole. Shared by the
/// Ollama and OpenAI endpoints; only the encoder differs.
pub(crate) async fn generation_response<E: ChunkEncoder>(
    node: &Arc<MockState>,
    model: &Arc<ModelInfo>,
    received: Instant,
    tokens: u64,
    prompt_tokens: u64,
    stream: bool,
    mut encoder: E,
) -> Response {
    let mut generation = match request::admit(node, model, received, tokens, prompt_tokens).await {
        Ok(generation) => generation,
        Err(stopped) => return stopped,
    };
    if stream {
        return stream_response(E::STREAM_CONTENT_TYPE, generation.into_stream_body(encoder));
    }
    match generation.run_to_end().await {
        Ok(summary) => {
            let text = generated_text(node.name(), tokens);
            let bytes = encoder.whole(&text, &summary);
            let len = bytes.len();
            full_response(StatusCode::OK, JSON, generation.into_whole_body(bytes), len)
        }
        Err(cut) => cut_response(cut),
    }
}
