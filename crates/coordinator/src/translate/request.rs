//! An Ollama request body as the OpenAI request an OpenAI-compatible server takes.
//!
//! - messages keep their roles; `images` (base64) become `image_url` content parts
//!   with a data URI; an assistant's `tool_calls` get ids and their arguments as
//!   JSON text, and the `tool` messages after them answer those ids in order;
//! - `tools` are the same in both APIs and pass as they are;
//! - `format`: `"json"` is `response_format: json_object`, a JSON schema is
//!   `response_format: json_schema`;
//! - `options`: `temperature`, `top_p`, `top_k`, `min_p`, `seed`, `stop`,
//!   `presence_penalty`, `frequency_penalty`, `repeat_penalty`, and `num_predict` as
//!   `max_tokens`; `num_ctx` and the rest cannot be set per request there and are
//!   dropped (logged at debug);
//! - `/api/generate` goes to `/v1/completions`, unless it has a `system` prompt or
//!   images: then to `/v1/chat/completions` as a system and a user message;
//! - a stream asks for usage (`stream_options.include_usage`), so the last line
//!   carries the token counts.
//!
//! What has no equivalent (`context` from an earlier answer, a raw `template`) is
//! refused with the reason, never dropped silently.

use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::{Endpoint, Upstream};

/// The request for the node.
#[derive(Debug, Clone)]
pub struct Translated {
    pub upstream: Upstream,
    pub body: Bytes,
    /// Whether the answer streams (Ollama's default is to stream).
    pub stream: bool,
}

/// Options passed on under the same name.
const SAME_OPTIONS: [&str; 8] = [
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "repeat_penalty",
];

/// `body` of an Ollama request to `endpoint`, for a node that serves the model as `model`.
pub fn translate(endpoint: Endpoint, body: &[u8], model: &str) -> Result<Translated, String> {
    let request: Map<String, Value> = match serde_json::from_slice(body) {
        Ok(Value::Object(map)) => map,
        Ok(_) => return Err("the body must be a JSON object".into()),
        Err(e) => return Err(format!("invalid JSON: {e}")),
    };
    match endpoint {
        Endpoint::Chat => chat(&request, model),
        Endpoint::Generate => generate(&request, model),
        Endpoint::Embed | Endpoint::Embeddings => embeddings(endpoint, &request, model),
    }
}

fn streams(request: &Map<String, Value>) -> bool {
    request
        .get("stream")
        .and_then(Value::as_bool)
        .unwrap_or(true)
}

fn finish(upstream: Upstream, mut out: Map<String, Value>, stream: bool) -> Translated {
    out.insert("stream".into(), Value::Bool(stream));
    if stream {
        out.insert("stream_options".into(), json!({ "include_usage": true }));
    }
    Translated {
        upstream,
        body: Bytes::from(Value::Object(out).to_string()),
        stream,
    }
}

fn chat(request: &Map<String, Value>, model: &str) -> Result<Translated, String> {
    let messages = match request.get("messages") {
        Some(Value::Array(messages)) => messages_of(messages)?,
        None | Some(Value::Null) => Vec::new(),
        Some(_) => return Err("messages must be a list".into()),
    };
    let mut out = Map::new();
    out.insert("model".into(), Value::String(model.to_owned()));
    out.insert("messages".into(), Value::Array(messages));
    if let Some(tools) = request.get("tools").filter(|t| !t.is_null()) {
        out.insert("tools".into(), tools.clone());
    }
    sampling(request, &mut out)?;
    Ok(finish(Upstream::ChatCompletions, out, streams(request)))
}

fn generate(request: &Map<String, Value>, model: &str) -> Result<Translated, String> {
    for unsupported in ["context", "template"] {
        if request.get(unsupported).is_some_and(|v| !v.is_null()) {
            return Err(format!(
                "{unsupported} cannot be passed to an OpenAI-compatible server; send the \
                 conversation as /api/chat messages instead"
            ));
        }
    }
    let prompt = text_field(request, "prompt")?.unwrap_or_default();
    let system = text_field(request, "system")?.filter(|s| !s.is_empty());
    let images = request.get("images").filter(|i| !i.is_null());
    let mut out = Map::new();
    out.insert("model".into(), Value::String(model.to_owned()));
    let upstream = if system.is_some() || images.is_some() {
        let mut messages = Vec::new();
        if let Some(system) = system {
            messages.push(json!({ "role": "system", "content": system }));
        }
        messages.push(message_content("user", &prompt, images)?);
        out.insert("messages".into(), Value::Array(messages));
        Upstream::ChatCompletions
    } else {
        out.insert("prompt".into(), Value::String(prompt));
        if let Some(suffix) = text_field(request, "suffix")? {
            out.insert("suffix".into(), Value::String(suffix));
        }
        Upstream::Completions
    };
    sampling(request, &mut out)?;
    Ok(finish(upstream, out, streams(request)))
}

fn embeddings(
    endpoint: Endpoint,
    request: &Map<String, Value>,
    model: &str,
) -> Result<Translated, String> {
    let field = if endpoint == Endpoint::Embed {
        "input"
    } else {
        "prompt"
    };
    let input = match request.get(field) {
        Some(Value::String(text)) => Value::String(text.clone()),
        Some(Value::Array(items)) if items.iter().all(Value::is_string) => {
            Value::Array(items.clone())
        }
        None | Some(Value::Null) => return Err(format!("{field} is required")),
        Some(_) => return Err(format!("{field} must be a string or a list of strings")),
    };
    let mut out = Map::new();
    out.insert("model".into(), Value::String(model.to_owned()));
    out.insert("input".into(), input);
    if let Some(dimensions) = request.get("dimensions").filter(|d| d.is_u64()) {
        out.insert("dimensions".into(), dimensions.clone());
    }
    out.insert("encoding_format".into(), Value::String("float".into()));
    Ok(Translated {
        upstream: Upstream::Embeddings,
        body: Bytes::from(Value::Object(out).to_string()),
        stream: false,
    })
}

fn text_field(request: &Map<String, Value>, name: &str) -> Result<Option<String>, String> {
    match request.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.clone())),
        Some(_) => Err(format!("{name} must be a string")),
    }
}

/// `options` and `format` as the OpenAI request's sampling fields.
fn sampling(request: &Map<String, Value>, out: &mut Map<String, Value>) -> Result<(), String> {
    if let Some(format) = request.get("format") {
        match format {
            Value::Null => {}
            Value::String(word) if word.is_empty() => {}
            Value::String(word) if word == "json" => {
                out.insert("response_format".into(), json!({ "type": "json_object" }));
            }
            Value::Object(_) => {
                out.insert(
                    "response_format".into(),
                    json!({
                        "type": "json_schema",
                        "json_schema": { "name": "response", "schema": format, "strict": true },
                    }),
                );
            }
            other => {
                return Err(format!(
                    "format must be \"json\" or a JSON schema, not {other}"
                ));
            }
        }
    }
    let options = match request.get("options") {
        None | Some(Value::Null) => return Ok(()),
        Some(Value::Object(options)) => options,
        Some(_) => return Err("options must be an object".into()),
    };
    for (name, value) in options {
        if value.is_null() {
            continue;
        }
        if SAME_OPTIONS.contains(&name.as_str()) {
            out.insert(name.clone(), value.clone());
            continue;
        }
        match name.as_str() {
            // -1 (no limit) and -2 (fill the context) have no OpenAI spelling: no limit.
            "num_predict" => {
                if let Some(n) = value.as_i64().filter(|n| *n > 0) {
                    out.insert("max_tokens".into(), json!(n));
                }
            }
            "stop" => {
                out.insert("stop".into(), value.clone());
            }
            other => {
                tracing::debug!(
                    option = other,
                    "Ollama option dropped: an OpenAI-compatible server takes no such option per request"
                );
            }
        }
    }
    Ok(())
}

/// Ollama messages as OpenAI ones; tool calls get ids that the tool answers after them use.
fn messages_of(messages: &[Value]) -> Result<Vec<Value>, String> {
    let mut out = Vec::with_capacity(messages.len());
    let mut calls_made = 0usize;
    let mut answered = 0usize;
    for message in messages {
        let Value::Object(message) = message else {
            return Err("each message must be an object".into());
        };
        let role = message
            .get("role")
            .and_then(Value::as_str)
            .ok_or("each message needs a role")?;
        let content = match message.get("content") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(text)) => text.clone(),
            Some(_) => return Err("a message's content must be a string".into()),
        };
        let mut converted = message_content(role, &content, message.get("images"))?;
        if role == "assistant"
            && let Some(Value::Array(calls)) = message.get("tool_calls")
        {
            let calls: Result<Vec<Value>, String> = calls
                .iter()
                .map(|call| {
                    calls_made += 1;
                    tool_call(call, calls_made)
                })
                .collect();
            converted["tool_calls"] = Value::Array(calls?);
        }
        if role == "tool" {
            // Answers the oldest call not answered yet.
            if answered < calls_made {
                answered += 1;
            }
            converted["tool_call_id"] = Value::String(format!("call_{}", answered.max(1)));
            if let Some(name) = message.get("tool_name").and_then(Value::as_str) {
                converted["name"] = Value::String(name.to_owned());
            }
        }
        out.push(converted);
    }
    Ok(out)
}

/// One message with its text, and its images as data-URI parts when it has some.
fn message_content(role: &str, content: &str, images: Option<&Value>) -> Result<Value, String> {
    let images = match images {
        None | Some(Value::Null) => return Ok(json!({ "role": role, "content": content })),
        Some(Value::Array(images)) if images.is_empty() => {
            return Ok(json!({ "role": role, "content": content }));
        }
        Some(Value::Array(images)) => images,
        Some(_) => return Err("images must be a list of base64 strings".into()),
    };
    let mut parts = vec![json!({ "type": "text", "text": content })];
    for image in images {
        let data = image
            .as_str()
            .ok_or("images must be a list of base64 strings")?;
        parts.push(json!({
            "type": "image_url",
            "image_url": { "url": format!("data:{};base64,{data}", image_type(data)) },
        }));
    }
    Ok(json!({ "role": role, "content": parts }))
}

/// The media type of base64 image data, from its first bytes.
fn image_type(base64: &str) -> &'static str {
    if base64.starts_with("/9j/") {
        "image/jpeg"
    } else if base64.starts_with("R0lGOD") {
        "image/gif"
    } else if base64.starts_with("UklGR") {
        "image/webp"
    } else {
        "image/png"
    }
}

/// An Ollama tool call (`arguments` an object) as OpenAI's (`arguments` JSON text).
fn tool_call(call: &Value, number: usize) -> Result<Value, String> {
    let function = call.get("function").ok_or("a tool call needs a function")?;
    let name = function
        .get("name")
        .and_then(Value::as_str)
        .ok_or("a tool call needs a function name")?;
    let arguments = match function.get("arguments") {
        None | Some(Value::Null) => "{}".to_owned(),
        Some(Value::String(text)) => text.clone(),
        Some(value) => value.to_string(),
    };
    Ok(json!({
        "id": format!("call_{number}"),
        "type": "function",
        "function": { "name": name, "arguments": arguments },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(translated: &Translated) -> Value {
        serde_json::from_slice(&translated.body).unwrap()
    }

    #[test]
    fn a_chat_with_images_tools_format_and_options() {
        let ollama = include_bytes!("fixtures/ollama_chat_request.json");
        let t = translate(Endpoint::Chat, ollama, "tiny").unwrap();
        assert_eq!(t.upstream, Upstream::ChatCompletions);
        assert!(t.stream);
        let expected: Value =
            serde_json::from_str(include_str!("fixtures/openai_chat_request.json")).unwrap();
        assert_eq!(body(&t), expected);
    }

    #[test]
    fn generate_goes_to_completions_or_to_chat_with_a_system_prompt() {
        let plain = translate(
            Endpoint::Generate,
            br#"{"model":"m","prompt":"Once","stream":false,"options":{"num_predict":-1,"num_ctx":4096}}"#,
            "m",
        )
        .unwrap();
        assert_eq!(plain.upstream, Upstream::Completions);
        assert_eq!(
            body(&plain),
            json!({"model": "m", "prompt": "Once", "stream": false})
        );
        let system = translate(
            Endpoint::Generate,
            br#"{"model":"m","prompt":"Hi","system":"Be brief","format":{"type":"object"}}"#,
            "m",
        )
        .unwrap();
        assert_eq!(system.upstream, Upstream::ChatCompletions);
        let b = body(&system);
        assert_eq!(
            b["messages"][0],
            json!({"role": "system", "content": "Be brief"})
        );
        assert_eq!(b["response_format"]["type"], "json_schema");
        assert_eq!(b["stream_options"]["include_usage"], true);
    }

    #[test]
    fn embeddings_take_one_text_or_a_list() {
        let one = translate(Endpoint::Embeddings, br#"{"model":"e","prompt":"hi"}"#, "e").unwrap();
        assert_eq!(body(&one)["input"], "hi");
        assert!(!one.stream);
        let many = translate(
            Endpoint::Embed,
            br#"{"model":"e","input":["a","b"],"dimensions":8}"#,
            "e",
        )
        .unwrap();
        assert_eq!(body(&many)["input"], json!(["a", "b"]));
        assert_eq!(body(&many)["dimensions"], 8);
    }

    #[test]
    fn what_cannot_be_translated_is_refused_with_the_reason() {
        let context = translate(
            Endpoint::Generate,
            br#"{"model":"m","prompt":"x","context":[1,2]}"#,
            "m",
        );
        assert!(context.unwrap_err().contains("context"));
        assert!(translate(Endpoint::Chat, br#"{"model":"m","messages":"hi"}"#, "m").is_err());
        assert!(translate(Endpoint::Chat, br#"{"model":"m","format":5}"#, "m").is_err());
        assert!(
            translate(Endpoint::Embed, br#"{"model":"m"}"#, "m")
                .unwrap_err()
                .contains("input")
        );
        assert!(translate(Endpoint::Chat, b"not json", "m").is_err());
    }
}
