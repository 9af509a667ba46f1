//! An OpenAI-compatible server's answer as the Ollama answer the client asked for.
//!
//! A streamed answer (server-sent events) is turned into NDJSON event by event:
//! each chunk of text becomes one Ollama line as soon as its event is complete;
//! tool calls, streamed in pieces, are put together and sent before the last
//! line; the last line carries `done_reason`, the token counts (the server's
//! usage, else one token per chunk of text) and the durations as measured here
//! (`total_duration` from the request's arrival, `prompt_eval_duration` to the
//! first token, `eval_duration` after it, in nanoseconds). An error event ends
//! the stream with Ollama's `{"error": …}` line. A whole answer (or an error
//! status) is read to its end and converted once.

use bytes::{BufMut as _, Bytes, BytesMut};
use serde_json::{Map, Value, json};
use tokio::time::Instant;

use super::{Endpoint, Upstream};

/// Longest event line or whole answer kept while waiting for its end.
const MAX_PENDING_BYTES: usize = 64 * 1024 * 1024;

/// One tool call being streamed in pieces.
#[derive(Debug, Default)]
struct PartialCall {
    name: String,
    arguments: String,
}

/// The translation of one answer.
#[derive(Debug)]
pub struct Answer {
    endpoint: Endpoint,
    model: String,
    /// Event by event (a 2xx streamed answer), else the whole document at the end.
    streaming: bool,
    status_ok: bool,
    started: Instant,
    first_token: Option<Instant>,
    pending: BytesMut,
    calls: Vec<PartialCall>,
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    text_chunks: u64,
    done_reason: Option<String>,
    ended: bool,
}

impl Answer {
    /// The translation of an answer to an Ollama `endpoint` request for `model`
    /// (the client's name for it), that arrived at `started`.
    pub fn new(
        endpoint: Endpoint,
        _upstream: Upstream,
        model: &str,
        stream: bool,
        status: u16,
        started: Instant,
    ) -> Self {
        let status_ok = (200..300).contains(&status);
        Self {
            endpoint,
            model: model.to_owned(),
            streaming: stream && status_ok,
            status_ok,
            started,
            first_token: None,
            pending: BytesMut::new(),
            calls: Vec::new(),
            prompt_tokens: None,
            completion_tokens: None,
            text_chunks: 0,
            done_reason: None,
            ended: false,
        }
    }

    /// The content type the client gets.
    pub fn content_type(&self) -> &'static str {
        if self.streaming {
            "application/x-ndjson"
        } else {
            "application/json; charset=utf-8"
        }
    }

    /// What to send the client for `chunk` of the node's answer (often nothing yet).
    pub fn push(&mut self, chunk: &[u8]) -> Bytes {
        if self.ended {
            return Bytes::new();
        }
        if self.pending.len() + chunk.len() > MAX_PENDING_BYTES {
            self.ended = true;
            return self.error_line("the node's answer is too large to translate");
        }
        self.pending.extend_from_slice(chunk);
        if !self.streaming {
            return Bytes::new();
        }
        let mut out = BytesMut::new();
        while let Some(at) = self.pending.iter().position(|b| *b == b'\n') {
            let line = self.pending.split_to(at + 1);
            self.event_line(&line, &mut out);
            if self.ended {
                break;
            }
        }
        out.freeze()
    }

    /// What to send the client once the node's answer ended.
    pub fn finish(&mut self) -> Bytes {
        if self.ended {
            return Bytes::new();
        }
        if self.streaming {
            let mut out = BytesMut::new();
            let rest = self.pending.split();
            self.event_line(&rest, &mut out);
            if !self.ended {
                self.final_lines(&mut out);
            }
            return out.freeze();
        }
        self.ended = true;
        let whole = self.pending.split();
        if !self.status_ok {
            let message = node_error_message(&String::from_utf8_lossy(&whole));
            return Bytes::from(json!({ "error": message }).to_string());
        }
        match serde_json::from_slice::<Value>(&whole) {
            Ok(answer) => self.whole(&answer),
            Err(e) => Bytes::from(
                json!({ "error": format!("the node's answer is not JSON: {e}") }).to_string(),
            ),
        }
    }

    fn now(&self) -> String {
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
    }

    fn error_line(&self, message: &str) -> Bytes {
        let mut line = json!({ "error": message }).to_string();
        line.push('\n');
        Bytes::from(line)
    }

    /// One line of the event stream: `data: {...}`, `data: [DONE]`, or something to skip.
    fn event_line(&mut self, line: &[u8], out: &mut BytesMut) {
        let line = line.trim_ascii();
        let Some(data) = line.strip_prefix(b"data:") else {
            return; // blank separators, comments, `event:` and `id:` lines
        };
        let data = data.trim_ascii();
        if data == b"[DONE]" {
            self.final_lines(out);
            return;
        }
        let event: Value = match serde_json::from_slice(data) {
            Ok(event) => event,
            Err(_) => {
                self.ended = true;
                out.extend_from_slice(&self.error_line("the node sent an event that is not JSON"));
                return;
            }
        };
        if let Some(error) = event.get("error").filter(|e| !e.is_null()) {
            let message = error
                .get("message")
                .and_then(Value::as_str)
                .or_else(|| error.as_str())
                .unwrap_or("the node reported an error");
            self.ended = true;
            out.extend_from_slice(&self.error_line(message));
            return;
        }
        self.count_usage(&event);
        let Some(choice) = event.get("choices").and_then(|c| c.get(0)) else {
            return;
        };
        if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
            self.done_reason = Some(done_reason(reason).to_owned());
        }
        let delta = choice.get("delta");
        let text = delta
            .and_then(|d| d.get("content"))
            .or_else(|| choice.get("text"))
            .and_then(Value::as_str)
            .unwrap_or("");
        let thinking = delta
            .and_then(|d| d.get("reasoning_content").or_else(|| d.get("reasoning")))
            .and_then(Value::as_str)
            .unwrap_or("");
        if let Some(Value::Array(calls)) = delta.and_then(|d| d.get("tool_calls")) {
            for call in calls {
                let index = call.get("index").and_then(Value::as_u64).unwrap_or(0) as usize;
                if index >= 128 {
                    continue;
                }
                if self.calls.len() <= index {
                    self.calls.resize_with(index + 1, PartialCall::default);
                }
                let function = call.get("function");
                if let Some(name) = function.and_then(|f| f.get("name")).and_then(Value::as_str) {
                    self.calls[index].name.push_str(name);
                }
                if let Some(args) = function
                    .and_then(|f| f.get("arguments"))
                    .and_then(Value::as_str)
                {
                    self.calls[index].arguments.push_str(args);
                }
            }
        }
        if text.is_empty() && thinking.is_empty() {
            return;
        }
        self.first_token.get_or_insert_with(Instant::now);
        self.text_chunks += 1;
        let mut line = self.line_start();
        match self.endpoint {
            Endpoint::Chat => {
                let mut message = json!({ "role": "assistant", "content": text });
                if !thinking.is_empty() {
                    message["thinking"] = Value::String(thinking.to_owned());
                }
                line.insert("message".into(), message);
            }
            _ => {
                line.insert("response".into(), Value::String(text.to_owned()));
                if !thinking.is_empty() {
                    line.insert("thinking".into(), Value::String(thinking.to_owned()));
                }
            }
        }
        line.insert("done".into(), Value::Bool(false));
        push_line(out, &Value::Object(line));
    }

    fn count_usage(&mut self, event: &Value) {
        let Some(usage) = event.get("usage").filter(|u| u.is_object()) else {
            return;
        };
        if let Some(n) = usage.get("prompt_tokens").and_then(Value::as_u64) {
            self.prompt_tokens = Some(n);
        }
        if let Some(n) = usage.get("completion_tokens").and_then(Value::as_u64) {
            self.completion_tokens = Some(n);
        }
    }

    fn line_start(&self) -> Map<String, Value> {
        let mut line = Map::new();
        line.insert("model".into(), Value::String(self.model.clone()));
        line.insert("created_at".into(), Value::String(self.now()));
        line
    }

    /// The tool calls (if any) and the `done` line of a stream.
    fn final_lines(&mut self, out: &mut BytesMut) {
        self.ended = true;
        if !self.calls.is_empty() {
            match self.tool_calls() {
                Ok(calls) => {
                    let mut line = self.line_start();
                    line.insert(
                        "message".into(),
                        json!({ "role": "assistant", "content": "", "tool_calls": calls }),
                    );
                    line.insert("done".into(), Value::Bool(false));
                    push_line(out, &Value::Object(line));
                }
                Err(message) => {
                    out.extend_from_slice(&self.error_line(&message));
                    return;
                }
            }
        }
        let mut line = self.line_start();
        match self.endpoint {
            Endpoint::Chat => {
                line.insert(
                    "message".into(),
                    json!({ "role": "assistant", "content": "" }),
                );
            }
            _ => {
                line.insert("response".into(), Value::String(String::new()));
            }
        }
        line.insert("done".into(), Value::Bool(true));
        self.counters(&mut line);
        push_line(out, &Value::Object(line));
    }

    /// `done_reason`, token counts and durations, as Ollama's last line has them.
    fn counters(&self, line: &mut Map<String, Value>) {
        let now = Instant::now();
        let first = self.first_token.unwrap_or(now);
        let nanos = |d: std::time::Duration| json!(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        line.insert(
            "done_reason".into(),
            Value::String(self.done_reason.clone().unwrap_or_else(|| "stop".into())),
        );
        line.insert(
            "total_duration".into(),
            nanos(now.duration_since(self.started)),
        );
        line.insert("load_duration".into(), json!(0));
        if let Some(n) = self.prompt_tokens {
            line.insert("prompt_eval_count".into(), json!(n));
        }
        line.insert(
            "prompt_eval_duration".into(),
            nanos(first.duration_since(self.started)),
        );
        let completion = self.completion_tokens.or(Some(self.text_chunks));
        if let Some(n) = completion {
            line.insert("eval_count".into(), json!(n));
        }
        line.insert("eval_duration".into(), nanos(now.duration_since(first)));
    }

    /// The streamed tool calls, their arguments parsed from JSON text.
    fn tool_calls(&self) -> Result<Vec<Value>, String> {
        self.calls
            .iter()
            .filter(|c| !c.name.is_empty())
            .map(|c| tool_call(&c.name, &c.arguments))
            .collect()
    }

    /// A whole answer (not streamed) as Ollama's.
    fn whole(&mut self, answer: &Value) -> Bytes {
        if let Some(error) = answer.get("error").filter(|e| !e.is_null()) {
            let message = error
                .get("message")
                .and_then(Value::as_str)
                .or_else(|| error.as_str())
                .unwrap_or("the node reported an error");
            return Bytes::from(json!({ "error": message }).to_string());
        }
        self.count_usage(answer);
        let mut out = Map::new();
        out.insert("model".into(), Value::String(self.model.clone()));
        let vectors = || -> Vec<Value> {
            answer
                .get("data")
                .and_then(Value::as_array)
                .map(|data| {
                    data.iter()
                        .filter_map(|d| d.get("embedding").cloned())
                        .collect()
                })
                .unwrap_or_default()
        };
        let nanos = |d: std::time::Duration| json!(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        match self.endpoint {
            Endpoint::Embeddings => {
                let first = vectors().into_iter().next().unwrap_or(json!([]));
                return Bytes::from(json!({ "embedding": first }).to_string());
            }
            Endpoint::Embed => {
                out.insert("embeddings".into(), Value::Array(vectors()));
                out.insert("total_duration".into(), nanos(self.started.elapsed()));
                out.insert("load_duration".into(), json!(0));
                if let Some(n) = self.prompt_tokens {
                    out.insert("prompt_eval_count".into(), json!(n));
                }
                return Bytes::from(Value::Object(out).to_string());
            }
            Endpoint::Chat | Endpoint::Generate => {}
        }
        let choice = answer.get("choices").and_then(|c| c.get(0));
        let message = choice.and_then(|c| c.get("message"));
        let text = message
            .and_then(|m| m.get("content"))
            .or_else(|| choice.and_then(|c| c.get("text")))
            .and_then(Value::as_str)
            .unwrap_or("");
        if let Some(reason) = choice
            .and_then(|c| c.get("finish_reason"))
            .and_then(Value::as_str)
        {
            self.done_reason = Some(done_reason(reason).to_owned());
        }
        out.insert("created_at".into(), Value::String(self.now()));
        match self.endpoint {
            Endpoint::Chat => {
                let mut reply = json!({ "role": "assistant", "content": text });
                if let Some(Value::Array(calls)) = message.and_then(|m| m.get("tool_calls")) {
                    let converted: Result<Vec<Value>, String> = calls
                        .iter()
                        .map(|call| {
                            let function = call.get("function");
                            let name = function
                                .and_then(|f| f.get("name"))
                                .and_then(Value::as_str)
                                .unwrap_or("");
                            let arguments = function
                                .and_then(|f| f.get("arguments"))
                                .and_then(Value::as_str)
                                .unwrap_or("{}");
                            tool_call(name, arguments)
                        })
                        .collect();
                    match converted {
                        Ok(calls) if !calls.is_empty() => reply["tool_calls"] = Value::Array(calls),
                        Ok(_) => {}
                        Err(message) => {
                            return Bytes::from(json!({ "error": message }).to_string());
                        }
                    }
                }
                out.insert("message".into(), reply);
            }
            _ => {
                out.insert("response".into(), Value::String(text.to_owned()));
            }
        }
        out.insert("done".into(), Value::Bool(true));
        // A whole answer has no first token to time: all of it is generation.
        self.first_token = Some(self.started);
        if self.completion_tokens.is_none() {
            self.text_chunks = u64::from(!text.is_empty());
        }
        self.counters(&mut out);
        Bytes::from(Value::Object(out).to_string())
    }
}

pub fn node_error_message(body: &str) -> String {
    let parsed: Option<serde_json::Value> = serde_json::from_str(body).ok();
    let message = parsed.as_ref().and_then(|v| {
        v["error"]
            .as_str()
            .or_else(|| v["error"]["message"].as_str())
            .map(str::to_owned)
    });
    let mut text = message.unwrap_or_else(|| body.trim().to_owned());
    if text.len() > 300 {
        let cut = (0..=300)
            .rev()
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(0);
        text.truncate(cut);
        text.push('…');
    }
    if text.is_empty() {
        "(empty body)".into()
    } else {
        text
    }
}

/// OpenAI's `finish_reason` as Ollama's `done_reason`.
fn done_reason(reason: &str) -> &str {
    match reason {
        "length" => "length",
        _ => "stop",
    }
}

/// An Ollama tool call: its arguments an object, parsed from the node's JSON text.
fn tool_call(name: &str, arguments: &str) -> Result<Value, String> {
    let arguments = if arguments.trim().is_empty() {
        Value::Object(Map::new())
    } else {
        match serde_json::from_str::<Value>(arguments) {
            Ok(value @ Value::Object(_)) => value,
            _ => {
                return Err(format!(
                    "the node called tool {name:?} with arguments that are not a JSON object"
                ));
            }
        }
    };
    Ok(json!({ "function": { "name": name, "arguments": arguments } }))
}

fn push_line(out: &mut BytesMut, value: &Value) {
    let mut writer = out.writer();
    if serde_json::to_writer(&mut writer, value).is_ok() {
        writer.into_inner().put_u8(b'\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(bytes: &[u8]) -> Vec<Value> {
        std::str::from_utf8(bytes)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Feeds `stream` in pieces of `size` bytes, as the network may cut it.
    fn translate_stream(endpoint: Endpoint, stream: &[u8], size: usize) -> Vec<Value> {
        let mut answer = Answer::new(
            endpoint,
            Upstream::ChatCompletions,
            "tiny",
            true,
            200,
            Instant::now(),
        );
        let mut out = Vec::new();
        for piece in stream.chunks(size) {
            out.extend_from_slice(&answer.push(piece));
        }
        out.extend_from_slice(&answer.finish());
        lines(&out)
    }

    #[test]
    fn a_streamed_chat_becomes_ndjson_lines_with_the_final_counters() {
        let stream = include_bytes!("fixtures/openai_chat_stream.sse");
        for size in [1, 7, 64, stream.len()] {
            let out = translate_stream(Endpoint::Chat, stream, size);
            let text: String = out
                .iter()
                .filter_map(|l| l["message"]["content"].as_str())
                .collect();
            assert_eq!(text, "Hello there!", "pieces of {size}");
            assert!(out[..out.len() - 1].iter().all(|l| l["done"] == false));
            let last = out.last().unwrap();
            assert_eq!(last["done"], true);
            assert_eq!(last["done_reason"], "stop");
            assert_eq!(
                (
                    last["prompt_eval_count"].as_u64(),
                    last["eval_count"].as_u64()
                ),
                (Some(9), Some(3))
            );
            assert!(last["total_duration"].as_u64().is_some());
            assert_eq!(last["model"], "tiny");
        }
    }

    #[test]
    fn streamed_tool_calls_are_put_together_before_the_last_line() {
        let out = translate_stream(
            Endpoint::Chat,
            include_bytes!("fixtures/openai_tool_call_stream.sse"),
            5,
        );
        let calls = &out[out.len() - 2]["message"]["tool_calls"];
        assert_eq!(
            calls,
            &json!([{ "function": { "name": "get_weather", "arguments": { "city": "Paris" } } }])
        );
        assert_eq!(out.last().unwrap()["done"], true);
    }

    #[test]
    fn an_error_event_mid_stream_ends_it_with_an_ollama_error_line() {
        let out = translate_stream(
            Endpoint::Generate,
            include_bytes!("fixtures/openai_error_mid_stream.sse"),
            11,
        );
        assert_eq!(out[0]["response"], "Once");
        assert_eq!(
            out.last().unwrap(),
            &json!({ "error": "the context window is full" })
        );
        assert_eq!(out.len(), 2, "nothing after the error: {out:?}");
    }

    #[test]
    fn a_stream_without_usage_counts_its_chunks_of_text() {
        let stream = b"data: {\"choices\":[{\"text\":\"a\"}]}\n\ndata: {\"choices\":[{\"text\":\"b\",\"finish_reason\":\"length\"}]}\n\n";
        let out = translate_stream(Endpoint::Generate, stream, 3);
        let last = out.last().unwrap();
        assert_eq!(last["eval_count"], 2);
        assert_eq!(last["done_reason"], "length");
        assert!(last.get("prompt_eval_count").is_none());
    }

    #[test]
    fn whole_answers_and_errors_are_converted_once() {
        let mut chat = Answer::new(
            Endpoint::Chat,
            Upstream::ChatCompletions,
            "tiny",
            false,
            200,
            Instant::now(),
        );
        assert!(
            chat.push(include_bytes!("fixtures/openai_chat_answer.json"))
                .is_empty()
        );
        let answer: Value = serde_json::from_slice(&chat.finish()).unwrap();
        assert_eq!(answer["message"]["content"], "Paris is sunny.");
        assert_eq!(
            answer["message"]["tool_calls"][0]["function"]["arguments"],
            json!({"city": "Paris"})
        );
        assert_eq!(
            (
                answer["prompt_eval_count"].as_u64(),
                answer["eval_count"].as_u64()
            ),
            (Some(20), Some(5))
        );
        assert_eq!(chat.content_type(), "application/json; charset=utf-8");

        let mut embed = Answer::new(
            Endpoint::Embed,
            Upstream::Embeddings,
            "e",
            false,
            200,
            Instant::now(),
        );
        embed.push(br#"{"object":"list","data":[{"embedding":[0.1,0.2]},{"embedding":[0.3,0.4]}],"usage":{"prompt_tokens":4}}"#);
        let answer: Value = serde_json::from_slice(&embed.finish()).unwrap();
        assert_eq!(answer["embeddings"], json!([[0.1, 0.2], [0.3, 0.4]]));
        assert_eq!(answer["prompt_eval_count"], 4);

        let mut old = Answer::new(
            Endpoint::Embeddings,
            Upstream::Embeddings,
            "e",
            false,
            200,
            Instant::now(),
        );
        old.push(br#"{"data":[{"embedding":[1.0]}]}"#);
        assert_eq!(
            serde_json::from_slice::<Value>(&old.finish()).unwrap(),
            json!({"embedding": [1.0]})
        );

        let mut refused = Answer::new(
            Endpoint::Chat,
            Upstream::ChatCompletions,
            "tiny",
            true,
            400,
            Instant::now(),
        );
        assert_eq!(refused.content_type(), "application/json; charset=utf-8");
        refused.push(
            br#"{"error":{"message":"max_tokens is too large","type":"invalid_request_error"}}"#,
        );
        assert_eq!(
            serde_json::from_slice::<Value>(&refused.finish()).unwrap(),
            json!({ "error": "max_tokens is too large" })
        );
    }

    #[test]
    fn tool_arguments_that_are_not_an_object_are_an_error_not_a_guess() {
        assert!(tool_call("f", "[1]").is_err());
        assert_eq!(
            tool_call("f", "").unwrap()["function"]["arguments"],
            json!({})
        );
    }
}
