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
    /// Only whether the client set one.
    #[serde(default)]
    keep_alive: Option<serde::de::IgnoredAny>,
}

/// What the router reads of an inference request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestFacts {
    pub model: String,
    /// Whether the client asked for a streamed answer (with the API's default applied).
    pub stream: bool,
    /// Whether the client said how long the model stays in memory (Ollama's `keep_alive`).
    pub keep_alive: bool,
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
    Ok(RequestFacts {
        model,
        stream,
        keep_alive: fields.keep_alive.is_some(),
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
