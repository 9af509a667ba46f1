//! End-to-end tests of the mock node: real sockets on 127.0.0.1:0 for the
//! wire formats and connection behaviour, paused tokio time (no sockets)
//! for pacing and queueing.

mod knobs;
mod lifecycle;
mod models;
mod ollama;
mod openai;
mod timing;

use std::time::Duration;

use llm_router_mock_node::{MockConfig, MockNode};
use serde_json::Value;

/// A node with the given config, and a client for it.
pub async fn start(config: MockConfig) -> (MockNode, reqwest::Client) {
    let node = MockNode::start(config).await.expect("mock node starts");
    (node, reqwest::Client::new())
}

/// GETs `url` and parses the answer as JSON, whatever its status.
pub async fn get_json(client: &reqwest::Client, url: impl reqwest::IntoUrl) -> Value {
    client.get(url).send().await.unwrap().json().await.unwrap()
}

/// POSTs `body` as JSON to `url` and parses the answer as JSON, whatever
/// its status.
pub async fn post_json(
    client: &reqwest::Client,
    url: impl reqwest::IntoUrl,
    body: &Value,
) -> Value {
    send_json(client, url, body).await.json().await.unwrap()
}

/// POSTs `body` as JSON to `url` and reads the answer as text, whatever
/// its status.
pub async fn post_text(
    client: &reqwest::Client,
    url: impl reqwest::IntoUrl,
    body: &Value,
) -> String {
    send_json(client, url, body).await.text().await.unwrap()
}

/// POSTs `body` as JSON to `url`.
pub async fn send_json(
    client: &reqwest::Client,
    url: impl reqwest::IntoUrl,
    body: &Value,
) -> reqwest::Response {
    client.post(url).json(body).send().await.unwrap()
}

/// Polls `condition` until it holds, failing the test after 10 s.
pub async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Parses an NDJSON body into its objects.
pub fn ndjson(body: &str) -> Vec<Value> {
    body.lines()
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l:?}: {e}")))
        .collect()
}

/// Splits an SSE body into its `data:` payloads, checking the framing.
pub fn sse_data(body: &str) -> Vec<String> {
    assert!(
        body.ends_with("\n\n"),
        "SSE body must end with a blank line"
    );
    body.split("\n\n")
        .filter(|event| !event.is_empty())
        .map(|event| {
            event
                .strip_prefix("data: ")
                .unwrap_or_else(|| panic!("event without data: {event:?}"))
                .to_owned()
        })
        .collect()
}
