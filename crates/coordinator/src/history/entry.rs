//! One history row as it travels from the proxy to the writer, and what the
//! writer derives from the captured response (assembled text, final counters).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::proxy::record::{Outcome, RequestRecord};

/// A finished request, ready to be stored. Built on the request path, so it
/// only copies what the record holds (the request body is cut to the limit).
#[derive(Debug, Clone)]
pub struct HistoryEntry {
    pub request_id: String,
    pub time: DateTime<Utc>,
    pub client_ip: Option<String>,
    /// Name of the client's API key; none when it sent no valid key.
    pub api_key: Option<Arc<str>>,
    pub endpoint: String,
    pub model: String,
    pub stream: bool,
    pub node: Option<String>,
    pub nodes_tried: Vec<String>,
    pub status: u16,
    /// `completed`, `rejected`, `failed` or `cancelled`.
    pub outcome: Outcome,
    pub duration: Duration,
    pub time_to_first_token: Option<Duration>,
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
    pub generation_time: Option<Duration>,
    pub error: Option<String>,
    /// The request body, at most the body limit.
    pub request_body: Bytes,
    /// Size of the request body as received (larger than `request_body` when it was cut).
    pub request_bytes: u64,
    /// The response as captured by the proxy (at most the body limit).
    pub response_body: Bytes,
    /// Response bytes beyond the capture limit, not stored.
    pub response_bytes_dropped: u64,
}

impl HistoryEntry {
    /// The row for `record`, keeping at most `body_limit` bytes of its request body.
    pub fn from_record(record: &RequestRecord, body_limit: usize) -> Self {
        let request_body = if record.request_body.len() > body_limit {
            // A copy, so that a queued entry does not pin a large upload in memory.
            Bytes::copy_from_slice(&record.request_body[..body_limit])
        } else {
            record.request_body.clone()
        };
        let response_body = if record.response_body.len() > body_limit {
            Bytes::copy_from_slice(&record.response_body[..body_limit])
        } else {
            record.response_body.clone()
        };
        let response_bytes_dropped = record.response_bytes_dropped
            + (record.response_body.len() - response_body.len()) as u64;
        Self {
            request_id: record.request_id.clone(),
            time: record.started_at,
            client_ip: record.client_ip.map(|ip| ip.to_string()),
            api_key: record.api_key.clone(),
            endpoint: record.endpoint.clone(),
            model: record.model.clone(),
            stream: record.stream,
            node: record.node_name.clone(),
            nodes_tried: record.nodes_tried.iter().map(|n| n.name.clone()).collect(),
            status: record.status,
            outcome: record.outcome,
            duration: record.duration,
            time_to_first_token: record.time_to_first_byte,
            prompt_tokens: record.usage.prompt_tokens,
            completion_tokens: record.usage.completion_tokens,
            generation_time: record.usage.generation_time,
            error: record.error.clone(),
            request_bytes: record.request_body.len() as u64,
            request_body,
            response_body,
            response_bytes_dropped,
        }
    }

    /// Whether the stored request body is shorter than the one received.
    pub fn request_truncated(&self) -> bool {
        self.request_bytes > self.request_body.len() as u64
    }
}

/// What the captured response says, beyond its bytes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResponseDigest {
    /// The generated text: streamed pieces joined, or the single message.
    /// `None` when the response carries no text (embeddings, errors, model lists).
    pub text: Option<String>,
    /// The final counters: Ollama's `done` line fields, or OpenAI's `usage`
    /// and finish reason. `None` when the response had none (or they were cut off).
    pub counters: Option<Map<String, Value>>,
}

/// Ollama's closing fields kept as the request's counters.
const OLLAMA_COUNTERS: [&str; 7] = [
    "done_reason",
    "total_duration",
    "load_duration",
    "prompt_eval_count",
    "prompt_eval_duration",
    "eval_count",
    "eval_duration",
];

/// Reads a captured response in any of the formats the proxy forwards:
/// Ollama NDJSON (`message.content` or `response` per line), OpenAI SSE
/// (`choices[].delta.content` or `choices[].text` per `data:` event), or one
/// JSON document (either API, streamed or not). Lines that do not parse (the
/// last one when the capture was cut) are skipped.
pub fn digest_response(body: &[u8]) -> ResponseDigest {
    let mut digest = Digest::default();
    let text = String::from_utf8_lossy(body);
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return ResponseDigest::default();
    }
    // One document (a non-streamed answer, possibly pretty-printed).
    if !trimmed.starts_with("data:")
        && let Ok(value) = serde_json::from_str::<Value>(trimmed)
    {
        digest.add(&value);
        return digest.finish();
    }
    for line in trimmed.lines() {
        let line = line.trim();
        let payload = match line.strip_prefix("data:") {
            Some(data) => data.trim(),
            None => line,
        };
        if payload.is_empty() || payload == "[DONE]" || !payload.starts_with('{') {
            continue;
        }
        if let Ok(value) = serde_json::from_str::<Value>(payload) {
            digest.add(&value);
        }
    }
    digest.finish()
}

#[derive(Default)]
struct Digest {
    text: String,
    found_text: bool,
    counters: Map<String, Value>,
}

impl Digest {
    fn push(&mut self, piece: &Value) {
        if let Some(piece) = piece.as_str() {
            self.text.push_str(piece);
            self.found_text = true;
        }
    }

    fn add(&mut self, value: &Value) {
        let Some(object) = value.as_object() else {
            return;
        };
        // Ollama: /api/chat lines carry message.content, /api/generate lines carry response.
        if let Some(message) = object.get("message") {
            self.push(&message["content"]);
        }
        if let Some(response) = object.get("response") {
            self.push(response);
        }
        // OpenAI: chat chunks carry choices[].delta.content, whole answers
        // choices[].message.content, completions choices[].text.
        if let Some(choices) = object.get("choices").and_then(Value::as_array) {
            for choice in choices {
                self.push(&choice["delta"]["content"]);
                self.push(&choice["message"]["content"]);
                self.push(&choice["text"]);
                if let Some(reason) = choice.get("finish_reason").filter(|r| !r.is_null()) {
                    self.counters
                        .insert("finish_reason".to_owned(), reason.clone());
                }
            }
        }
        if let Some(usage) = object.get("usage").filter(|u| u.is_object()) {
            self.counters.insert("usage".to_owned(), usage.clone());
        }
        if object.get("done").and_then(Value::as_bool) == Some(true) {
            for name in OLLAMA_COUNTERS {
                if let Some(counter) = object.get(name) {
                    self.counters.insert(name.to_owned(), counter.clone());
                }
            }
        }
    }

    fn finish(self) -> ResponseDigest {
        ResponseDigest {
            text: self.found_text.then_some(self.text),
            counters: (!self.counters.is_empty()).then_some(self.counters),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ollama_chat_stream_is_assembled_and_its_counters_kept() {
        let body = concat!(
            r#"{"model":"m","message":{"role":"assistant","content":"Hel"},"done":false}"#,
            "\n",
            r#"{"model":"m","message":{"role":"assistant","content":"lo"},"done":false}"#,
            "\n",
            r#"{"model":"m","message":{"role":"assistant","content":""},"done":true,"done_reason":"stop","eval_count":2,"prompt_eval_count":5,"total_duration":1000}"#,
            "\n"
        );
        let digest = digest_response(body.as_bytes());
        assert_eq!(digest.text.as_deref(), Some("Hello"));
        let counters = digest.counters.unwrap();
        assert_eq!(counters["eval_count"], 2);
        assert_eq!(counters["done_reason"], "stop");
        assert_eq!(counters["total_duration"], 1000);
    }

    #[test]
    fn ollama_generate_stream_with_a_cut_last_line() {
        let body = "{\"response\":\"a\",\"done\":false}\n{\"response\":\"b\",\"done\":false}\n{\"response\":\"c\",\"do";
        let digest = digest_response(body.as_bytes());
        assert_eq!(digest.text.as_deref(), Some("ab"));
        assert_eq!(digest.counters, None);
    }

    #[test]
    fn openai_sse_chat_and_completions_are_assembled() {
        let chat = concat!(
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\"}}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi \"}}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"there\"},\"finish_reason\":\"stop\"}]}\n\n",
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2}}\n\n",
            "data: [DONE]\n\n"
        );
        let digest = digest_response(chat.as_bytes());
        assert_eq!(digest.text.as_deref(), Some("Hi there"));
        let counters = digest.counters.unwrap();
        assert_eq!(counters["finish_reason"], "stop");
        assert_eq!(counters["usage"]["completion_tokens"], 2);

        let completions = "data: {\"choices\":[{\"text\":\"x\"}]}\n\ndata: {\"choices\":[{\"text\":\"y\"}]}\n\ndata: [DONE]\n\n";
        assert_eq!(
            digest_response(completions.as_bytes()).text.as_deref(),
            Some("xy")
        );
    }

    #[test]
    fn whole_documents_of_both_apis() {
        let ollama = r#"{"model":"m","message":{"role":"assistant","content":"Whole answer"},"done":true,"eval_count":7}"#;
        let digest = digest_response(ollama.as_bytes());
        assert_eq!(digest.text.as_deref(), Some("Whole answer"));
        assert_eq!(digest.counters.unwrap()["eval_count"], 7);

        let openai = "{\n  \"choices\": [{\"message\": {\"role\": \"assistant\", \"content\": \"Pretty\"}, \"finish_reason\": \"length\"}],\n  \"usage\": {\"prompt_tokens\": 1}\n}";
        let digest = digest_response(openai.as_bytes());
        assert_eq!(digest.text.as_deref(), Some("Pretty"));
        assert_eq!(digest.counters.unwrap()["finish_reason"], "length");
    }

    #[test]
    fn responses_without_text_have_none() {
        assert_eq!(
            digest_response(br#"{"embeddings":[[0.1,0.2]]}"#),
            ResponseDigest::default()
        );
        assert_eq!(digest_response(b""), ResponseDigest::default());
        assert_eq!(digest_response(b"not json at all").text, None);
        assert_eq!(digest_response(br#"{"error":"boom"}"#).text, None);
    }
}
