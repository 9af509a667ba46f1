//! Connection behaviour: injected deaths, client disconnects, recording,
//! stopping and restarting.

use bytes::Bytes;
use llm_router_mock_node::{Endpoint, MockConfig, MockNode};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use super::{get_json, send_json, start, wait_until};

fn slow_stream_config() -> MockConfig {
    MockConfig {
        default_tokens: 100_000,
        tokens_per_sec: 50.0,
        ..MockConfig::default()
    }
}

fn chat(stream: bool) -> Value {
    json!({"model": "llama3.2", "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
}

#[tokio::test]
async fn die_after_tokens_cuts_the_stream_with_an_error_after_n_tokens() {
    let config = MockConfig {
        die_after_tokens: Some(3),
        ..MockConfig::default()
    };
    let (node, client) = start(config).await;
    let mut response = send_json(&client, format!("{}/api/chat", node.url()), &chat(true)).await;
    assert_eq!(response.status(), 200);
    let mut received = Vec::new();
    let error = loop {
        match response.chunk().await {
            Ok(Some(chunk)) => received.extend_from_slice(&chunk),
            Ok(None) => panic!("the stream ended cleanly; it should have broken"),
            Err(error) => break error,
        }
    };
    assert!(error.is_body() || error.is_decode(), "{error:?}");
    let text = String::from_utf8(received).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert!(lines.iter().all(|l| l["done"] == false));
    wait_until("the cut is counted", || node.stats().aborted() == 1).await;
    assert_eq!(node.stats().cancelled(), 0);
}

#[tokio::test]
async fn die_after_tokens_breaks_a_whole_answer_too() {
    let config = MockConfig {
        die_after_tokens: Some(0),
        ..MockConfig::default()
    };
    let (node, client) = start(config).await;
    let result = async {
        client
            .post(format!("{}/v1/chat/completions", node.url()))
            .json(&chat(false))
            .send()
            .await?
            .bytes()
            .await
    }
    .await;
    assert!(result.is_err(), "got a whole body: {result:?}");
}

#[tokio::test]
async fn client_disconnect_counts_a_cancellation_and_in_flight_returns_to_zero() {
    let (node, client) = start(slow_stream_config()).await;
    let mut response = send_json(
        &client,
        format!("{}/api/generate", node.url()),
        &json!({"model": "llama3.2", "prompt": "tell me everything"}),
    )
    .await;
    let first = response.chunk().await.unwrap().unwrap();
    assert!(!first.is_empty());
    assert_eq!(node.stats().in_flight(), 1);
    drop(response);
    wait_until("the stream is dropped", || node.stats().in_flight() == 0).await;
    assert_eq!(node.stats().cancelled(), 1);
    assert_eq!(node.stats().active(), 0);
    assert_eq!(node.stats().completed(), 0);
}

#[tokio::test]
async fn recorded_request_body_is_byte_identical() {
    let (node, client) = start(MockConfig::default()).await;
    // Odd spacing, key order, unicode escapes and unknown fields must all
    // survive untouched.
    let raw = Bytes::from_static(
        b"{ \"stream\":false,\n  \"model\" : \"llama3.2\", \"messages\":[{\"role\":\"user\",\"content\":\"h\\u00e9 \xc3\xa9\"}],\"x-unknown\":{\"a\":[1,2.50]} }",
    );
    let response = client
        .post(format!("{}/api/chat", node.url()))
        .header("content-type", "application/json")
        .header("x-test-id", "42")
        .body(raw.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let recorded = node.stats().last_request().unwrap();
    assert_eq!(recorded.body, raw);
    assert_eq!(recorded.path(), "/api/chat");
    assert_eq!(recorded.endpoint, Endpoint::Chat);
    assert_eq!(recorded.headers["x-test-id"], "42");
    assert_eq!(node.stats().last_request_to("/api/chat").unwrap().body, raw);
}

#[tokio::test]
async fn stop_closes_the_listener_so_connects_are_refused() {
    let (node, client) = start(MockConfig::default()).await;
    let url = format!("{}/api/tags", node.url());
    // The client now holds a pooled keep-alive connection to the node.
    assert_eq!(client.get(&url).send().await.unwrap().status(), 200);
    node.stop().await;
    let pooled = client.get(&url).send().await;
    assert!(pooled.is_err(), "the idle connection must be closed too");
    let fresh = reqwest::Client::new().get(&url).send().await.unwrap_err();
    assert!(fresh.is_connect(), "{fresh:?}");
}

#[tokio::test]
async fn stop_cuts_off_streams_in_flight() {
    let (node, client) = start(slow_stream_config()).await;
    let mut response = send_json(&client, format!("{}/api/chat", node.url()), &chat(true)).await;
    response.chunk().await.unwrap().unwrap();
    let state = node.state().clone();
    node.stop().await;
    let rest = async {
        while response.chunk().await?.is_some() {}
        Ok::<_, reqwest::Error>(())
    }
    .await;
    assert!(rest.is_err(), "the stream must break, not finish");
    assert_eq!(state.stats().aborted(), 1);
    assert_eq!(state.stats().in_flight(), 0);
}

#[tokio::test]
async fn a_stopped_node_comes_back_on_the_same_address() {
    let (node, client) = start(MockConfig::named("phoenix")).await;
    let addr = node.addr();
    node.stop().await;
    let listener = TcpListener::bind(addr).await.unwrap();
    let node = MockNode::start_on(listener, MockConfig::named("phoenix")).unwrap();
    assert_eq!(node.addr(), addr);
    let response = client.get(node.url()).send().await.unwrap();
    assert_eq!(response.headers()["x-mock-node"], "phoenix");
}

#[tokio::test]
async fn recorded_requests_are_listed_over_http() {
    let (node, client) = start(MockConfig::default()).await;
    let raw = r#"{"model":"llama3.2","prompt":"hi","stream":false}"#;
    client
        .post(format!("{}/api/generate", node.url()))
        .header("x-test-id", "7")
        .body(raw)
        .send()
        .await
        .unwrap();
    let listed: Value = get_json(&client, format!("{}/mock/requests", node.url())).await;
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["path"], "/api/generate");
    assert_eq!(listed[0]["method"], "POST");
    assert_eq!(listed[0]["body"], raw);
    assert_eq!(listed[0]["headers"]["x-test-id"], "7");
}
