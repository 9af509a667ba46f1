//! Reads the two fields routing needs (`model`, `stream`) from a request
//! body without building a value of the rest: the body is forwarded as the
//! client sent it, byte for byte.

use std::borrow::Cow;

use serde::Deserialize;

use super::error::ProxyError;

#[derive(Deserialize)]
struct Fields<'a> {
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
    /// Older Ollama clients send `name` to `/api/show`.
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
    #[serde(default)]
    stream: Option<serde_json::Value>,
    #[serde(default)]
    keep_alive: Option<serde_json::Value>,
    /// Read only to tell an unload (`keep_alive: 0` and nothing to answer).
    #[serde(default)]
    prompt: Emptiness,
    #[serde(default)]
    messages: Emptiness,
}

/// Whether a field of any type is empty (absent, null, `""`, `[]`, `{}`),
/// read without keeping any of it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Emptiness {
    #[default]
    Empty,
    Something,
}

impl<'de> Deserialize<'de> for Emptiness {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Probe;
        impl<'de> serde::de::Visitor<'de> for Probe {
            type Value = Emptiness;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_str<E>(self, v: &str) -> Result<Emptiness, E> {
                Ok(if v.is_empty() {
                    Emptiness::Empty
                } else {
                    Emptiness::Something
                })
            }
            fn visit_unit<E>(self) -> Result<Emptiness, E> {
                Ok(Emptiness::Empty)
            }
            fn visit_none<E>(self) -> Result<Emptiness, E> {
                Ok(Emptiness::Empty)
            }
            fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Emptiness, D::Error> {
                d.deserialize_any(Probe)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Emptiness, E> {
                Ok(Emptiness::Something)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Emptiness, E> {
                Ok(Emptiness::Something)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Emptiness, E> {
                Ok(Emptiness::Something)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Emptiness, E> {
                Ok(Emptiness::Something)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Emptiness, A::Error> {
                let mut seen = Emptiness::Empty;
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {
                    seen = Emptiness::Something;
                }
                Ok(seen)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Emptiness, A::Error> {
                let mut seen = Emptiness::Empty;
                while map
                    .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                    .is_some()
                {
                    seen = Emptiness::Something;
                }
                Ok(seen)
            }
        }
        deserializer.deserialize_any(Probe)
    }
}

/// Whether `keep_alive` says "unload now": 0 as a number, or a duration
/// of zero (`"0"`, `"0s"`, `"0m"`).
fn is_zero_duration(keep_alive: &serde_json::Value) -> bool {
    match keep_alive {
        serde_json::Value::Number(n) => n.as_f64() == Some(0.0),
        serde_json::Value::String(s) => s
            .trim()
            .trim_end_matches(|c: char| c.is_ascii_alphabetic())
            .parse::<f64>()
            .is_ok_and(|v| v == 0.0),
        _ => false,
    }
}

/// What the router reads of an inference request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestFacts {
    pub model: String,
    /// Whether the client asked for a streamed answer (with the API's default applied).
    pub stream: bool,
    /// Whether the client said how long the model stays in memory (Ollama's `keep_alive`).
    pub keep_alive: bool,
    /// An Ollama request that only unloads the model (`ollama stop`):
    /// `keep_alive` of zero, no prompt, no messages.
    pub unload: bool,
}

/// The path that only reads a model's metadata (`ollama show`): the node
/// answers it from disk, without loading the model.
pub const SHOW_PATH: &str = "/api/show";

impl RequestFacts {
    /// Whether this request, sent to `path`, makes a node run its model (and
    /// so load it): not an unload, nor a metadata read. Only these count as
    /// demand for the model and change what a node is believed to hold.
    pub fn runs_model(&self, path: &str) -> bool {
        !self.unload && path != SHOW_PATH
    }
}

/// Parses `model` and `stream`; `stream_default` is the API's default when absent.
pub fn peek(body: &[u8], stream_default: bool) -> Result<RequestFacts, ProxyError> {
    if body.is_empty() {
        return Err(ProxyError::BadRequest(
            "request body is empty; expected a JSON object with a \"model\"".into(),
        ));
    }
    let fields: Fields<'_> = serde_json::from_slice(body).map_err(|e| {
        ProxyError::BadRequest(if e.is_data() {
            format!("invalid request body: {e}")
        } else {
            format!("malformed JSON in request body: {e}")
        })
    })?;
    let model = fields
        .model
        .or(fields.name)
        .map(|m| m.trim().to_owned())
        .filter(|m| !m.is_empty())
        .ok_or_else(|| ProxyError::BadRequest("model is required".into()))?;
    let stream = match fields.stream {
        None | Some(serde_json::Value::Null) => stream_default,
        Some(serde_json::Value::Bool(b)) => b,
        Some(other) => {
            return Err(ProxyError::BadRequest(format!(
                "stream must be true or false, not {other}"
            )));
        }
    };
    let unload = fields.keep_alive.as_ref().is_some_and(is_zero_duration)
        && fields.prompt == Emptiness::Empty
        && fields.messages == Emptiness::Empty;
    Ok(RequestFacts {
        model,
        stream,
        keep_alive: fields.keep_alive.is_some(),
        unload,
    })
}

/// `body` (a JSON object) with `"keep_alive": value` added as its first
/// field; `None` when it does not start with `{`. The rest is kept byte for
/// byte.
pub fn with_keep_alive(body: &[u8], value: &str) -> Option<Vec<u8>> {
    let open = body.iter().position(|b| !b.is_ascii_whitespace())?;
    if body[open] != b'{' {
        return None;
    }
    let rest = &body[open + 1..];
    let empty = rest
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|&b| b == b'}');
    let field = serde_json::to_string(value).ok()?;
    let mut out = Vec::with_capacity(body.len() + field.len() + 16);
    out.extend_from_slice(&body[..open]);
    out.extend_from_slice(b"{\"keep_alive\":");
    out.extend_from_slice(field.as_bytes());
    if !empty {
        out.push(b',');
    }
    out.extend_from_slice(rest);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_model_and_stream_and_ignores_everything_else() {
        let body = br#"{"model":"llama3.2","stream":false,"messages":[{"role":"user","content":"hi","images":["aGk="]}],"tools":[],"options":{"num_ctx":4096},"future_field":{"x":[1,2]}}"#;
        let facts = peek(body, true).unwrap();
        assert_eq!(facts.model, "llama3.2");
        assert!(!facts.stream);
    }

    #[test]
    fn an_unload_is_a_zero_keep_alive_with_nothing_to_answer() {
        let unload = |body: &str| peek(body.as_bytes(), true).unwrap().unload;
        assert!(unload(r#"{"model":"m","keep_alive":0}"#));
        assert!(unload(r#"{"model":"m","keep_alive":"0s","prompt":""}"#));
        assert!(unload(r#"{"model":"m","keep_alive":"0","messages":[]}"#));
        assert!(!unload(r#"{"model":"m","keep_alive":0,"prompt":"hi"}"#));
        assert!(!unload(
            r#"{"model":"m","keep_alive":0,"messages":[{"role":"user","content":"hi"}]}"#
        ));
        assert!(!unload(r#"{"model":"m","keep_alive":"5m"}"#));
        assert!(!unload(r#"{"model":"m","keep_alive":-1}"#));
        assert!(!unload(r#"{"model":"m"}"#));
        // Prompts of other shapes (OpenAI's lists) are read, not refused.
        assert!(!unload(
            r#"{"model":"m","keep_alive":0,"prompt":["a",[1,2]]}"#
        ));
        assert!(unload(r#"{"model":"m","keep_alive":0,"prompt":null}"#));
    }

    #[test]
    fn stream_takes_the_apis_default_when_absent_or_null() {
        assert!(peek(br#"{"model":"m"}"#, true).unwrap().stream);
        assert!(!peek(br#"{"model":"m"}"#, false).unwrap().stream);
        assert!(
            peek(br#"{"model":"m","stream":null}"#, true)
                .unwrap()
                .stream
        );
    }

    #[test]
    fn keep_alive_is_seen_and_added_without_touching_the_rest() {
        assert!(!peek(br#"{"model":"m"}"#, true).unwrap().keep_alive);
        assert!(
            peek(br#"{"model":"m","keep_alive":"1h"}"#, true)
                .unwrap()
                .keep_alive
        );
        assert!(
            peek(br#"{"model":"m","keep_alive":-1}"#, true)
                .unwrap()
                .keep_alive
        );
        let body = br#" {"model":"m","messages":[{"content":"{x}"}]}"#;
        let added = with_keep_alive(body, "30m").unwrap();
        assert_eq!(
            added,
            br#" {"keep_alive":"30m","model":"m","messages":[{"content":"{x}"}]}"#
        );
        let facts = peek(&added, true).unwrap();
        assert!(facts.keep_alive);
        assert_eq!(facts.model, "m");
        assert_eq!(
            with_keep_alive(b"{ }", "5m").unwrap(),
            br#"{"keep_alive":"5m" }"#
        );
        assert_eq!(with_keep_alive(b"[1]", "5m"), None);
        assert_eq!(with_keep_alive(b"", "5m"), None);
    }

    #[test]
    fn escaped_model_names_are_decoded() {
        assert_eq!(peek(br#"{"model":"a\/b:c"}"#, true).unwrap().model, "a/b:c");
    }

    #[test]
    fn name_is_accepted_for_older_show_requests() {
        assert_eq!(
            peek(br#"{"name":"llama3.2"}"#, true).unwrap().model,
            "llama3.2"
        );
    }

    #[test]
    fn bad_bodies_are_rejected_with_a_reason() {
        for (body, expected) in [
            (&b""[..], "empty"),
            (b"{not json", "malformed JSON"),
            (b"[1,2]", "invalid request body"),
            (br#"{"messages":[]}"#, "model is required"),
            (br#"{"model":"  "}"#, "model is required"),
            (br#"{"model":42}"#, "invalid request body"),
            (br#"{"model":"m","stream":"yes"}"#, "stream must be"),
        ] {
            let err = peek(body, true).unwrap_err().to_string();
            assert!(err.contains(expected), "{body:?}: {err}");
        }
    }
}
