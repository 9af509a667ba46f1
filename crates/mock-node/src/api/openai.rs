//! The OpenAI-compatible API (`/v1/...`) as Ollama serves it: streaming off
//! by default, SSE `data:` events ending with `[DONE]`, optional usage
//! chunk, `{"error": {"message", "type", "param", "code"}}` errors.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::json;
use tokio::time::Instant;

use super::error::{ApiError, Dialect};
use super::request::{injected_failure, lookup, parse, read_body, run_without_tokens};
use super::{
    JsonText, SSE, generation_response, json_bytes, json_response, push_sse_event,
    tokens_to_generate,
};
use crate::embedding::embed_text;
use crate::generation::{ChunkEncoder, Summary, count_words};
use crate::models::ModelInfo;
use crate::state::MockState;
use crate::stats::Endpoint;

const OPENAI: Dialect = Dialect::OpenAi;

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[derive(Deserialize)]
struct StreamOptions {
    include_usage: Option<bool>,
}

#[derive(Deserialize)]
struct ChatCompletionRequest<'a> {
    #[serde(borrow)]
    model: Option<JsonText<'a>>,
    #[serde(borrow)]
    messages: Option<Vec<Message<'a>>>,
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
    max_tokens: Option<i64>,
    max_completion_tokens: Option<i64>,
}

#[derive(Deserialize)]
struct Message<'a> {
    #[serde(borrow)]
    content: Option<Content<'a>>,
}

/// A message's content: a string, or a list of parts (text, image, ...).
#[derive(Deserialize)]
#[serde(untagged)]
enum Content<'a> {
    Text(#[serde(borrow)] JsonText<'a>),
    Parts(#[serde(borrow)] Vec<Part<'a>>),
}

#[derive(Deserialize)]
struct Part<'a> {
    #[serde(borrow)]
    text: Option<JsonText<'a>>,
}

impl Content<'_> {
    fn words(&self) -> u64 {
        match self {
            Content::Text(text) => count_words(text.as_str()),
            Content::Parts(parts) => parts
                .iter()
                .filter_map(|p| p.text.as_ref())
                .map(|t| count_words(t.as_str()))
                .sum(),
        }
    }
}

/// A prompt or embedding input: text, texts, tokens or lists of tokens.
#[derive(Deserialize)]
#[serde(untagged)]
enum Input<'a> {
    One(#[serde(borrow)] JsonText<'a>),
    Many(#[serde(borrow)] Vec<JsonText<'a>>),
    Tokens(Vec<i64>),
    TokenLists(Vec<Vec<i64>>),
}

impl Input<'_> {
    /// Each input as text (token ids joined by spaces).
    fn texts(&self) -> Vec<String> {
        fn join(tokens: &[i64]) -> String {
            tokens
                .iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(" ")
        }
        match self {
            Input::One(text) => vec![text.as_str().to_owned()],
            Input::Many(texts) => texts.iter().map(|t| t.as_str().to_owned()).collect(),
            Input::Tokens(tokens) => vec![join(tokens)],
            Input::TokenLists(lists) => lists.iter().map(|t| join(t)).collect(),
        }
    }

    fn words(&self) -> u64 {
        match self {
            Input::One(text) => count_words(text.as_str()),
            Input::Many(texts) => texts.iter().map(|t| count_words(t.as_str())).sum(),
            Input::Tokens(tokens) => tokens.len() as u64,
            Input::TokenLists(lists) => lists.iter().map(|l| l.len() as u64).sum(),
        }
    }
}

#[derive(Deserialize)]
struct CompletionRequest<'a> {
    #[serde(borrow)]
    model: Option<JsonText<'a>>,
    #[serde(borrow)]
    prompt: Option<Input<'a>>,
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
    max_tokens: Option<i64>,
}

#[derive(Deserialize)]
struct EmbeddingsRequest<'a> {
    #[serde(borrow)]
    model: Option<JsonText<'a>>,
    #[serde(borrow)]
    input: Option<Input<'a>>,
}

#[derive(Debug, Clone, Copy, Serialize)]
struct Usage {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
}

impl Usage {
    fn of(summary: &Summary) -> Self {
        Self {
            prompt_tokens: summary.prompt_eval_count,
            completion_tokens: summary.eval_count,
            total_tokens: summary.prompt_eval_count + summary.eval_count,
        }
    }
}

/// `usage` of a stream chunk: left out unless usage was asked for, then
/// `null` on every chunk but the last one.
#[derive(Debug, Clone, Copy)]
enum ChunkUsage {
    Absent,
    Null,
    Present(Usage),
}

impl ChunkUsage {
    fn is_absent(&self) -> bool {
        matches!(self, ChunkUsage::Absent)
    }
}

impl Serialize for ChunkUsage {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            ChunkUsage::Present(usage) => usage.serialize(serializer),
            ChunkUsage::Absent | ChunkUsage::Null => serializer.serialize_none(),
        }
    }
}

#[derive(Serialize)]
struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
}

#[derive(Serialize)]
struct AssistantMessage<'a> {
    role: &'static str,
    content: &'a str,
}

/// One element of `choices`, in the shape each object type uses.
#[derive(Serialize)]
#[serde(untagged)]
enum Choice<'a> {
    Delta {
        index: u32,
        delta: Delta<'a>,
        logprobs: Option<()>,
        finish_reason: Option<&'a str>,
    },
    Message {
        index: u32,
        message: AssistantMessage<'a>,
        logprobs: Option<()>,
        finish_reason: Option<&'a str>,
    },
    Text {
        text: &'a str,
        index: u32,
        logprobs: Option<()>,
        finish_reason: Option<&'a str>,
    },
}

#[derive(Serialize)]
struct Envelope<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    system_fingerprint: &'static str,
    choices: &'a [Choice<'a>],
    #[serde(skip_serializing_if = "ChunkUsage::is_absent")]
    usage: ChunkUsage,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Chat,
    Completion,
}

/// Writes chat completion and text completion answers.
struct OpenAiEncoder {
    kind: Kind,
    id: String,
    created: u64,
    model: String,
    include_usage: bool,
}

impl OpenAiEncoder {
    fn new(kind: Kind, node: &MockState, model: &str, include_usage: bool) -> Self {
        let prefix = match kind {
            Kind::Chat => "chatcmpl",
            Kind::Completion => "cmpl",
        };
        Self {
            kind,
            id: format!("{prefix}-{}", node.next_id()),
            created: unix_now(),
            model: model.to_owned(),
            include_usage,
        }
    }

    fn stream_object(&self) -> &'static str {
        match self.kind {
            Kind::Chat => "chat.completion.chunk",
            Kind::Completion => "text_completion",
        }
    }

    fn envelope<'a>(
        &'a self,
        object: &'static str,
        choices: &'a [Choice<'a>],
        usage: ChunkUsage,
    ) -> Envelope<'a> {
        Envelope {
            id: &self.id,
            object,
            created: self.created,
            model: &self.model,
            system_fingerprint: "fp_ollama",
            choices,
            usage,
        }
    }

    fn chunk_usage(&self) -> ChunkUsage {
        if self.include_usage {
            ChunkUsage::Null
        } else {
            ChunkUsage::Absent
        }
    }

    /// A stream choice. Like Ollama, every chat delta carries the role and
    /// the content (empty on the closing chunk).
    fn delta<'a>(&self, text: &'a str, finish_reason: Option<&'a str>) -> Choice<'a> {
        match self.kind {
            Kind::Chat => Choice::Delta {
                index: 0,
                delta: Delta {
                    role: Some("assistant"),
                    content: Some(text),
                },
                logprobs: None,
                finish_reason,
            },
            Kind::Completion => Choice::Text {
                text,
                index: 0,
                logprobs: None,
                finish_reason,
            },
        }
    }
}

impl ChunkEncoder for OpenAiEncoder {
    const STREAM_CONTENT_TYPE: &'static str = SSE;

    fn token(&mut self, _index: u64, text: &str, out: &mut BytesMut) {
        let choice = [self.delta(text, None)];
        push_sse_event(
            out,
            &self.envelope(self.stream_object(), &choice, self.chunk_usage()),
        );
    }

    fn finish(&mut self, summary: &Summary, out: &mut BytesMut) {
        let choice = [self.delta("", Some("stop"))];
        push_sse_event(
            out,
            &self.envelope(self.stream_object(), &choice, self.chunk_usage()),
        );
        if self.include_usage {
            let usage = ChunkUsage::Present(Usage::of(summary));
            push_sse_event(out, &self.envelope(self.stream_object(), &[], usage));
        }
        out.put_slice(b"data: [DONE]\n\n");
    }

    fn whole(&mut self, text: &str, summary: &Summary) -> Bytes {
        let usage = ChunkUsage::Present(Usage::of(summary));
        match self.kind {
            Kind::Chat => {
                let choice = [Choice::Message {
                    index: 0,
                    message: AssistantMessage {
                        role: "assistant",
                        content: text,
                    },
                    logprobs: None,
                    finish_reason: Some("stop"),
                }];
                json_bytes(&self.envelope("chat.completion", &choice, usage))
            }
            Kind::Completion => {
                let choice = [Choice::Text {
                    text,
                    index: 0,
                    logprobs: None,
                    finish_reason: Some("stop"),
                }];
                json_bytes(&self.envelope("text_completion", &choice, usage))
            }
        }
    }
}

/// `POST /v1/chat/completions`.
pub(super) async fn chat_completions(
    State(node): State<Arc<MockState>>,
    request: Request,
) -> Result<Response, ApiError> {
    let received = Instant::now();
    let body = read_body(&node, OPENAI, Endpoint::OpenAiChat, request).await?;
    let req: ChatCompletionRequest<'_> = parse(OPENAI, &body)?;
    let (name, model) = lookup(&node, OPENAI, req.model)?;
    let messages = match req.messages {
        Some(messages) if !messages.is_empty() => messages,
        _ => return Err(ApiError::bad_request(OPENAI, "messages is required")),
    };
    injected_failure(&node, OPENAI)?;
    let ask = Ask {
        kind: Kind::Chat,
        prompt_tokens: messages
            .iter()
            .filter_map(|m| m.content.as_ref())
            .map(Content::words)
            .sum::<u64>()
            .max(1),
        max_tokens: req.max_completion_tokens.or(req.max_tokens),
        stream: req.stream,
        stream_options: req.stream_options,
    };
    Ok(complete(&node, name.as_str(), &model, received, ask).await)
}

/// `POST /v1/completions`.
pub(super) async fn completions(
    State(node): State<Arc<MockState>>,
    request: Request,
) -> Result<Response, ApiError> {
    let received = Instant::now();
    let body = read_body(&node, OPENAI, Endpoint::OpenAiCompletions, request).await?;
    let req: CompletionRequest<'_> = parse(OPENAI, &body)?;
    let (name, model) = lookup(&node, OPENAI, req.model)?;
    injected_failure(&node, OPENAI)?;
    let ask = Ask {
        kind: Kind::Completion,
        prompt_tokens: req.prompt.as_ref().map_or(0, Input::words).max(1),
        max_tokens: req.max_tokens,
        stream: req.stream,
        stream_options: req.stream_options,
    };
    Ok(complete(&node, name.as_str(), &model, received, ask).await)
}

/// What a chat or text completion request asks for, its prompt counted.
struct Ask {
    kind: Kind,
    prompt_tokens: u64,
    max_tokens: Option<i64>,
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
}

/// Answers a chat or text completion: not streamed unless asked, with a
/// usage chunk only when streamed and asked for.
async fn complete(
    node: &Arc<MockState>,
    name: &str,
    model: &Arc<ModelInfo>,
    received: Instant,
    ask: Ask,
) -> Response {
    let tokens = tokens_to_generate(ask.max_tokens, node.control());
    let stream = ask.stream.unwrap_or(false);
    let include_usage = stream
        && ask
            .stream_options
            .and_then(|o| o.include_usage)
            .unwrap_or(false);
    let encoder = OpenAiEncoder::new(ask.kind, node, name, include_usage);
    generation_response(
        node,
        model,
        received,
        tokens,
        ask.prompt_tokens,
        stream,
        encoder,
    )
    .await
}

/// `POST /v1/embeddings`.
pub(super) async fn embeddings(
    State(node): State<Arc<MockState>>,
    request: Request,
) -> Result<Response, ApiError> {
    let received = Instant::now();
    let body = read_body(&node, OPENAI, Endpoint::OpenAiEmbeddings, request).await?;
    let req: EmbeddingsRequest<'_> = parse(OPENAI, &body)?;
    let (name, model) = lookup(&node, OPENAI, req.model)?;
    let input = req
        .input
        .ok_or_else(|| ApiError::bad_request(OPENAI, "invalid input"))?;
    injected_failure(&node, OPENAI)?;
    let prompt_tokens = input.words();
    let _generation = match run_without_tokens(&node, &model, received, prompt_tokens).await {
        Ok((generation, _)) => generation,
        Err(cut) => return Ok(cut),
    };
    let dim = node.embedding_dim();
    let data: Vec<_> = input
        .texts()
        .iter()
        .enumerate()
        .map(|(index, text)| {
            json!({ "object": "embedding", "embedding": embed_text(text, dim), "index": index })
        })
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "object": "list",
            "data": data,
            "model": name.as_str(),
            "usage": { "prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens },
        }),
    ))
}

fn model_object(info: &ModelInfo) -> serde_json::Value {
    json!({
        "id": info.name,
        "object": "model",
        "created": info.modified_at.timestamp(),
        "owned_by": info.owner(),
    })
}

/// `GET /v1/models`.
pub(super) async fn models(State(node): State<Arc<MockState>>) -> Response {
    node.stats().count_request(Endpoint::OpenAiModels);
    let data: Vec<_> = node
        .models()
        .held()
        .iter()
        .map(|m| model_object(m))
        .collect();
    json_response(StatusCode::OK, &json!({ "object": "list", "data": data }))
}

/// `GET /v1/models/{model}` (the name may contain `/`).
pub(super) async fn model(
    State(node): State<Arc<MockState>>,
    Path(name): Path<String>,
) -> Response {
    node.stats().count_request(Endpoint::OpenAiModel);
    match node.models().find(&name) {
        Some(info) => json_response(StatusCode::OK, &model_object(&info)),
        None => ApiError::model_not_found(OPENAI, &name).into_response(),
    }
}
