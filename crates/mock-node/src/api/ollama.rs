//! Ollama's native API (`/api/...`), with its wire formats: NDJSON streams
//! that default to on, nanosecond counters, `{"error": "..."}` errors.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use chrono::{SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::time::Instant;

use super::error::{ApiError, Dialect};
use super::request::{self, injected_failure, lookup, read_body, run_without_tokens};
use super::{
    JsonText, NDJSON, cut_response, generation_response, json_bytes, json_response, push_json_line,
    required_model, stream_response, tokens_to_generate,
};
use crate::embedding::embed_text;
use crate::generation::{ChunkEncoder, Cut, Summary, count_words};
use crate::models::{ModelInfo, expires_at};
use crate::pull::{Pull, PullEnding};
use crate::state::MockState;
use crate::stats::Endpoint;

const OLLAMA: Dialect = Dialect::Ollama;

fn parse<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, ApiError> {
    if body.is_empty() {
        return Err(ApiError::bad_request(OLLAMA, "missing request body"));
    }
    request::parse(OLLAMA, body)
}

/// A model the node does not hold, as `show`, `delete` and `copy` say it.
fn no_such_model(name: &str) -> ApiError {
    ApiError::new(
        OLLAMA,
        StatusCode::NOT_FOUND,
        format!("model '{name}' not found"),
    )
}

fn now_rfc3339() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Nanos, true)
}

#[derive(Deserialize)]
struct GenerateOptions {
    num_predict: Option<i64>,
}

/// `keep_alive` is a number of seconds or a duration string (`"5m"`).
#[derive(Deserialize)]
#[serde(untagged)]
enum KeepAlive<'a> {
    Seconds(f64),
    Text(#[serde(borrow)] JsonText<'a>),
}

impl KeepAlive<'_> {
    fn is_zero(&self) -> bool {
        match self {
            KeepAlive::Seconds(s) => *s == 0.0,
            KeepAlive::Text(t) => t
                .as_str()
                .trim_end_matches(|c: char| c.is_ascii_alphabetic())
                .parse::<f64>()
                .is_ok_and(|v| v == 0.0),
        }
    }
}

#[derive(Deserialize)]
struct ChatRequest<'a> {
    #[serde(borrow)]
    model: Option<JsonText<'a>>,
    #[serde(borrow)]
    messages: Option<Vec<ChatMessage<'a>>>,
    stream: Option<bool>,
    options: Option<GenerateOptions>,
    #[serde(borrow)]
    keep_alive: Option<KeepAlive<'a>>,
}

#[derive(Deserialize)]
struct ChatMessage<'a> {
    #[serde(borrow)]
    content: Option<JsonText<'a>>,
}

#[derive(Deserialize)]
struct GenerateRequest<'a> {
    #[serde(borrow)]
    model: Option<JsonText<'a>>,
    #[serde(borrow)]
    prompt: Option<JsonText<'a>>,
    #[serde(default)]
    images: Vec<serde::de::IgnoredAny>,
    stream: Option<bool>,
    options: Option<GenerateOptions>,
    #[serde(borrow)]
    keep_alive: Option<KeepAlive<'a>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Chat,
    Generate,
}

#[derive(Serialize)]
struct AssistantMessage<'a> {
    role: &'static str,
    content: &'a str,
}

/// One object of a chat or generate answer; the counters appear on the
/// final one only.
#[derive(Serialize)]
struct Chunk<'a> {
    model: &'a str,
    created_at: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<AssistantMessage<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response: Option<&'a str>,
    done: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    done_reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    total_duration: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    load_duration: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt_eval_count: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt_eval_duration: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    eval_count: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    eval_duration: Option<u64>,
}

/// Writes `/api/chat` and `/api/generate` answers.
struct OllamaEncoder {
    kind: Kind,
    /// The model as the request spelled it (Ollama echoes it).
    model: String,
    created_at: String,
}

impl OllamaEncoder {
    fn new(kind: Kind, model: &str) -> Self {
        Self {
            kind,
            model: model.to_owned(),
            created_at: now_rfc3339(),
        }
    }

    fn chunk<'a>(
        &'a self,
        text: &'a str,
        done_reason: Option<&'a str>,
        summary: Option<&Summary>,
    ) -> Chunk<'a> {
        let (message, response) = match self.kind {
            Kind::Chat => (
                Some(AssistantMessage {
                    role: "assistant",
                    content: text,
                }),
                None,
            ),
            Kind::Generate => (None, Some(text)),
        };
        Chunk {
            model: &self.model,
            created_at: &self.created_at,
            message,
            response,
            done: done_reason.is_some(),
            done_reason,
            total_duration: summary.map(|s| s.total_duration),
            load_duration: summary.map(|s| s.load_duration),
            prompt_eval_count: summary.map(|s| s.prompt_eval_count),
            prompt_eval_duration: summary.map(|s| s.prompt_eval_duration),
            eval_count: summary.map(|s| s.eval_count),
            eval_duration: summary.map(|s| s.eval_duration),
        }
    }
}

impl ChunkEncoder for OllamaEncoder {
    const STREAM_CONTENT_TYPE: &'static str = NDJSON;

    fn token(&mut self, _index: u64, text: &str, out: &mut BytesMut) {
        push_json_line(out, &self.chunk(text, None, None));
    }

    fn finish(&mut self, summary: &Summary, out: &mut BytesMut) {
        push_json_line(out, &self.chunk("", Some("stop"), Some(summary)));
    }

    fn whole(&mut self, text: &str, summary: &Summary) -> Bytes {
        json_bytes(&self.chunk(text, Some("stop"), Some(summary)))
    }
}

/// `POST /api/chat`.
pub(super) async fn chat(
    State(node): State<Arc<MockState>>,
    request: Request,
) -> Result<Response, ApiError> {
    let received = Instant::now();
    let body = read_body(&node, OLLAMA, Endpoint::Chat, request).await?;
    let req: ChatRequest<'_> = parse(&body)?;
    let (name, model) = lookup(&node, OLLAMA, req.model)?;
    injected_failure(&node, OLLAMA)?;
    let messages = req.messages.unwrap_or_default();
    let ask = Ask {
        kind: Kind::Chat,
        prompt_tokens: (!messages.is_empty()).then(|| {
            messages
                .iter()
                .filter_map(|m| m.content.as_ref())
                .map(|c| count_words(c.as_str()))
                .sum::<u64>()
                .max(1)
        }),
        options: req.options,
        stream: req.stream,
        keep_alive: req.keep_alive,
    };
    Ok(answer(&node, name.as_str(), &model, received, ask).await)
}

/// `POST /api/generate`.
pub(super) async fn generate(
    State(node): State<Arc<MockState>>,
    request: Request,
) -> Result<Response, ApiError> {
    let received = Instant::now();
    let body = read_body(&node, OLLAMA, Endpoint::Generate, request).await?;
    let req: GenerateRequest<'_> = parse(&body)?;
    let (name, model) = lookup(&node, OLLAMA, req.model)?;
    injected_failure(&node, OLLAMA)?;
    let prompt = req.prompt.as_ref().map_or("", JsonText::as_str);
    let ask = Ask {
        kind: Kind::Generate,
        prompt_tokens: (!(prompt.is_empty() && req.images.is_empty()))
            .then(|| count_words(prompt).max(1)),
        options: req.options,
        stream: req.stream,
        keep_alive: req.keep_alive,
    };
    Ok(answer(&node, name.as_str(), &model, received, ask).await)
}

/// What a chat or generate request asks for, its prompt counted.
struct Ask<'a> {
    kind: Kind,
    /// `None` when there is nothing to answer: no messages, or no prompt
    /// and no images.
    prompt_tokens: Option<u64>,
    options: Option<GenerateOptions>,
    stream: Option<bool>,
    keep_alive: Option<KeepAlive<'a>>,
}

/// Answers a chat or generate request: streamed unless asked not to, or a
/// load or unload when there is nothing to answer.
async fn answer(
    node: &Arc<MockState>,
    name: &str,
    model: &Arc<ModelInfo>,
    received: Instant,
    ask: Ask<'_>,
) -> Response {
    let Some(prompt_tokens) = ask.prompt_tokens else {
        return load_or_unload(node, model, ask.kind, name, ask.keep_alive, received).await;
    };
    let tokens = tokens_to_generate(ask.options.and_then(|o| o.num_predict), node.control());
    let encoder = OllamaEncoder::new(ask.kind, name);
    let stream = ask.stream.unwrap_or(true);
    generation_response(
        node,
        model,
        received,
        tokens,
        prompt_tokens,
        stream,
        encoder,
    )
    .await
}

/// An empty chat or prompt loads the model (`done_reason: "load"`), or
/// unloads it with `keep_alive: 0` (`"unload"`), as Ollama does.
async fn load_or_unload(
    node: &Arc<MockState>,
    model: &Arc<ModelInfo>,
    kind: Kind,
    name: &str,
    keep_alive: Option<KeepAlive<'_>>,
    received: Instant,
) -> Response {
    let encoder = OllamaEncoder::new(kind, name);
    if keep_alive.is_some_and(|k| k.is_zero()) {
        node.models().unload(&model.name);
        return json_response(StatusCode::OK, &encoder.chunk("", Some("unload"), None));
    }
    let _generation = match run_without_tokens(node, model, received, 0).await {
        Ok((generation, _)) => generation,
        Err(cut) => return cut,
    };
    json_response(StatusCode::OK, &encoder.chunk("", Some("load"), None))
}

#[derive(Deserialize)]
#[serde(untagged)]
enum EmbedInput<'a> {
    One(#[serde(borrow)] JsonText<'a>),
    Many(#[serde(borrow)] Vec<JsonText<'a>>),
}

#[derive(Deserialize)]
struct EmbedRequest<'a> {
    #[serde(borrow)]
    model: Option<JsonText<'a>>,
    #[serde(borrow)]
    input: Option<EmbedInput<'a>>,
}

#[derive(Deserialize)]
struct EmbeddingsRequest<'a> {
    #[serde(borrow)]
    model: Option<JsonText<'a>>,
    #[serde(borrow)]
    prompt: Option<JsonText<'a>>,
}

/// `POST /api/embed`.
pub(super) async fn embed(
    State(node): State<Arc<MockState>>,
    request: Request,
) -> Result<Response, ApiError> {
    let received = Instant::now();
    let body = read_body(&node, OLLAMA, Endpoint::Embed, request).await?;
    let req: EmbedRequest<'_> = parse(&body)?;
    let (name, model) = lookup(&node, OLLAMA, req.model)?;
    injected_failure(&node, OLLAMA)?;
    let inputs: Vec<JsonText<'_>> = match req.input {
        None => Vec::new(),
        Some(EmbedInput::One(text)) => vec![text],
        Some(EmbedInput::Many(texts)) => texts,
    };
    let prompt_tokens: u64 = inputs.iter().map(|t| count_words(t.as_str())).sum();
    let (_generation, summary) =
        match run_without_tokens(&node, &model, received, prompt_tokens).await {
            Ok(ran) => ran,
            Err(cut) => return Ok(cut),
        };
    let dim = node.embedding_dim();
    let embeddings: Vec<Vec<f32>> = inputs.iter().map(|t| embed_text(t.as_str(), dim)).collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "model": name.as_str(),
            "embeddings": embeddings,
            "total_duration": summary.total_duration,
            "load_duration": summary.load_duration,
            "prompt_eval_count": summary.prompt_eval_count,
        }),
    ))
}

/// `POST /api/embeddings` (the older, single-prompt form).
pub(super) async fn embeddings(
    State(node): State<Arc<MockState>>,
    request: Request,
) -> Result<Response, ApiError> {
    let received = Instant::now();
    let body = read_body(&node, OLLAMA, Endpoint::Embeddings, request).await?;
    let req: EmbeddingsRequest<'_> = parse(&body)?;
    let (_, model) = lookup(&node, OLLAMA, req.model)?;
    injected_failure(&node, OLLAMA)?;
    let prompt = req.prompt.as_ref().map_or("", JsonText::as_str);
    let _generation = match run_without_tokens(&node, &model, received, count_words(prompt)).await {
        Ok((generation, _)) => generation,
        Err(cut) => return Ok(cut),
    };
    let embedding = if prompt.is_empty() {
        Vec::new()
    } else {
        embed_text(prompt, node.embedding_dim())
    };
    Ok(json_response(
        StatusCode::OK,
        &json!({ "embedding": embedding }),
    ))
}

/// `GET /api/version`.
pub(super) async fn version(State(node): State<Arc<MockState>>) -> Response {
    node.stats().count_request(Endpoint::Version);
    json_response(StatusCode::OK, &json!({ "version": node.version() }))
}

#[derive(Serialize)]
struct Details<'a> {
    parent_model: &'static str,
    format: &'static str,
    family: &'a str,
    families: [&'a str; 1],
    parameter_size: &'a str,
    quantization_level: &'a str,
}

fn details(info: &ModelInfo) -> Details<'_> {
    Details {
        parent_model: "",
        format: "gguf",
        family: &info.family,
        families: [&info.family],
        parameter_size: &info.parameter_size,
        quantization_level: &info.quantization_level,
    }
}

#[derive(Serialize)]
struct TagEntry<'a> {
    name: &'a str,
    model: &'a str,
    modified_at: String,
    size: u64,
    digest: &'a str,
    details: Details<'a>,
}

/// `GET /api/tags`: the held models.
pub(super) async fn tags(State(node): State<Arc<MockState>>) -> Response {
    node.stats().count_request(Endpoint::Tags);
    let held = node.models().held();
    let models: Vec<TagEntry<'_>> = held
        .iter()
        .map(|m| TagEntry {
            name: &m.name,
            model: &m.name,
            modified_at: m.modified_at.to_rfc3339_opts(SecondsFormat::Nanos, true),
            size: m.size,
            digest: &m.digest,
            details: details(m),
        })
        .collect();
    json_response(StatusCode::OK, &json!({ "models": models }))
}

#[derive(Serialize)]
struct PsEntry<'a> {
    name: &'a str,
    model: &'a str,
    size: u64,
    digest: &'a str,
    details: Details<'a>,
    expires_at: String,
    size_vram: u64,
    context_length: u64,
}

/// `GET /api/ps`: the models in memory, most recently used first.
pub(super) async fn ps(State(node): State<Arc<MockState>>) -> Response {
    node.stats().count_request(Endpoint::Ps);
    let loaded = node.models().loaded();
    let keep_alive = node.keep_alive();
    let models: Vec<PsEntry<'_>> = loaded
        .iter()
        .map(|l| PsEntry {
            name: &l.info.name,
            model: &l.info.name,
            size: l.info.size,
            digest: &l.info.digest,
            details: details(&l.info),
            expires_at: expires_at(l.last_used, keep_alive)
                .to_rfc3339_opts(SecondsFormat::Nanos, true),
            size_vram: l.info.size,
            context_length: 4096,
        })
        .collect();
    json_response(StatusCode::OK, &json!({ "models": models }))
}

#[derive(Deserialize)]
struct ShowRequest<'a> {
    #[serde(borrow)]
    model: Option<JsonText<'a>>,
    /// The older spelling of `model`.
    #[serde(borrow)]
    name: Option<JsonText<'a>>,
}

/// `POST /api/show`.
pub(super) async fn show(
    State(node): State<Arc<MockState>>,
    request: Request,
) -> Result<Response, ApiError> {
    let body = read_body(&node, OLLAMA, Endpoint::Show, request).await?;
    let req: ShowRequest<'_> = parse(&body)?;
    let name = required_model(req.model.or(req.name))
        .ok_or_else(|| ApiError::bad_request(OLLAMA, "model is required"))?;
    let info = node
        .models()
        .find(name.as_str())
        .ok_or_else(|| no_such_model(name.as_str()))?;
    let capabilities: &[&str] = if info.name.contains("embed") {
        &["embedding"]
    } else {
        &["completion"]
    };
    let family = info.family.as_str();
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "license": "",
            "modelfile": format!(
                "# Modelfile generated by \"ollama show\"\nFROM {}\nTEMPLATE \"{{{{ .Prompt }}}}\"\n",
                info.name
            ),
            "parameters": "num_ctx                        4096",
            "template": "{{ .Prompt }}",
            "details": details(&info),
            "model_info": {
                "general.architecture": family,
                "general.file_type": 15,
                "general.parameter_count": info.size * 5 / 3,
                "general.quantization_version": 2,
                format!("{family}.context_length"): 4096,
                format!("{family}.embedding_length"): node.embedding_dim(),
            },
            "capabilities": capabilities,
            "modified_at": info.modified_at.to_rfc3339_opts(SecondsFormat::Nanos, true),
        }),
    ))
}

#[derive(Deserialize)]
struct PullRequest<'a> {
    #[serde(borrow)]
    model: Option<JsonText<'a>>,
    /// The older spelling of `model`.
    #[serde(borrow)]
    name: Option<JsonText<'a>>,
    stream: Option<bool>,
    // `insecure` is accepted and ignored, like every other unknown field.
}

/// `POST /api/pull`: "downloads" the model's layers at `pull_bytes_per_sec`,
/// streaming Ollama's progress lines unless `stream: false` (then the same
/// wait, and one `{"status": "success"}`), and adds the model to the held
/// list at `success`. An injected failure ends the stream with an
/// `{"error": ...}` line (a 500 when not streamed).
pub(super) async fn pull(
    State(node): State<Arc<MockState>>,
    request: Request,
) -> Result<Response, ApiError> {
    let body = read_body(&node, OLLAMA, Endpoint::Pull, request).await?;
    let req: PullRequest<'_> = parse(&body)?;
    let name = required_model(req.model.or(req.name))
        .ok_or_else(|| ApiError::bad_request(OLLAMA, "model is required"))?;
    let pull = Pull::start(&node, name.as_str());
    if req.stream.unwrap_or(true) {
        return Ok(stream_response(NDJSON, pull.into_stream_body()));
    }
    match pull.run_to_end().await {
        PullEnding::Success => Ok(json_response(
            StatusCode::OK,
            &json!({ "status": "success" }),
        )),
        PullEnding::Failed(message) => Err(ApiError::new(
            OLLAMA,
            StatusCode::INTERNAL_SERVER_ERROR,
            message,
        )),
        PullEnding::Stopped => Ok(cut_response(Cut::Stopped)),
    }
}

#[derive(Deserialize)]
struct DeleteRequest<'a> {
    #[serde(borrow)]
    model: Option<JsonText<'a>>,
    /// The older spelling of `model`.
    #[serde(borrow)]
    name: Option<JsonText<'a>>,
}

/// `DELETE /api/delete`: forgets a held model (and unloads it); 200 with an
/// empty body, as Ollama answers.
pub(super) async fn delete(
    State(node): State<Arc<MockState>>,
    request: Request,
) -> Result<Response, ApiError> {
    let body = read_body(&node, OLLAMA, Endpoint::Delete, request).await?;
    let req: DeleteRequest<'_> = parse(&body)?;
    let name = required_model(req.model.or(req.name))
        .ok_or_else(|| ApiError::bad_request(OLLAMA, "model is required"))?;
    if !node.models().remove(name.as_str()) {
        return Err(no_such_model(name.as_str()));
    }
    Ok(StatusCode::OK.into_response())
}

#[derive(Deserialize)]
struct CopyRequest<'a> {
    #[serde(borrow)]
    source: Option<JsonText<'a>>,
    #[serde(borrow)]
    destination: Option<JsonText<'a>>,
}

/// `POST /api/copy`: the destination becomes another name for the source
/// (same size and digest); 200 with an empty body.
pub(super) async fn copy(
    State(node): State<Arc<MockState>>,
    request: Request,
) -> Result<Response, ApiError> {
    let body = read_body(&node, OLLAMA, Endpoint::Copy, request).await?;
    let req: CopyRequest<'_> = parse(&body)?;
    let source = required_model(req.source)
        .ok_or_else(|| ApiError::bad_request(OLLAMA, "source is required"))?;
    let destination = required_model(req.destination)
        .ok_or_else(|| ApiError::bad_request(OLLAMA, "destination is required"))?;
    node.models()
        .copy(source.as_str(), destination.as_str())
        .ok_or_else(|| no_such_model(source.as_str()))?;
    Ok(StatusCode::OK.into_response())
}

#[derive(Deserialize)]
struct CreateRequest<'a> {
    #[serde(borrow)]
    model: Option<JsonText<'a>>,
    #[serde(borrow)]
    name: Option<JsonText<'a>>,
    #[serde(borrow)]
    from: Option<JsonText<'a>>,
    stream: Option<bool>,
}

/// `POST /api/create`: a model made `from` another (same size and digest) or
/// made up; streams the statuses Ollama sends unless `stream: false`.
pub(super) async fn create(
    State(node): State<Arc<MockState>>,
    request: Request,
) -> Result<Response, ApiError> {
    let body = read_body(&node, OLLAMA, Endpoint::Create, request).await?;
    let req: CreateRequest<'_> = parse(&body)?;
    let name = required_model(req.model.or(req.name))
        .ok_or_else(|| ApiError::bad_request(OLLAMA, "model is required"))?;
    match required_model(req.from) {
        Some(from) => {
            node.models()
                .copy(from.as_str(), name.as_str())
                .ok_or_else(|| no_such_model(from.as_str()))?;
        }
        None => {
            node.models().add(name.as_str());
        }
    }
    if !req.stream.unwrap_or(true) {
        return Ok(json_response(
            StatusCode::OK,
            &json!({ "status": "success" }),
        ));
    }
    let mut lines = BytesMut::with_capacity(256);
    for status in [
        "reading model metadata",
        "creating system layer",
        "writing manifest",
        "success",
    ] {
        push_json_line(&mut lines, &json!({ "status": status }));
    }
    Ok(stream_response(
        NDJSON,
        axum::body::Body::from(lines.freeze()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_alive_zero_in_any_spelling() {
        for zero in ["0", "\"0\"", "\"0s\"", "\"0m\""] {
            let k: KeepAlive<'_> = serde_json::from_str(zero).unwrap();
            assert!(k.is_zero(), "{zero}");
        }
        for not_zero in ["300", "\"5m\"", "\"-1\""] {
            let k: KeepAlive<'_> = serde_json::from_str(not_zero).unwrap();
            assert!(!k.is_zero(), "{not_zero}");
        }
    }

    #[test]
    fn final_chunk_has_done_reason_and_every_counter() {
        let encoder = OllamaEncoder::new(Kind::Chat, "llama3.2");
        let summary = Summary {
            total_duration: 6,
            load_duration: 1,
            prompt_eval_count: 2,
            prompt_eval_duration: 3,
            eval_count: 4,
            eval_duration: 5,
        };
        let value = serde_json::to_value(encoder.chunk("", Some("stop"), Some(&summary))).unwrap();
        assert_eq!(value["done"], true);
        assert_eq!(value["done_reason"], "stop");
        assert_eq!(value["message"]["role"], "assistant");
        for field in [
            "total_duration",
            "load_duration",
            "prompt_eval_count",
            "prompt_eval_duration",
            "eval_count",
            "eval_duration",
        ] {
            assert!(value[field].is_u64(), "{field}");
        }
        let token = serde_json::to_value(encoder.chunk("hi", None, None)).unwrap();
        assert_eq!(token["done"], false);
        assert!(token.get("done_reason").is_none());
        assert!(token.get("eval_count").is_none());
    }
}
