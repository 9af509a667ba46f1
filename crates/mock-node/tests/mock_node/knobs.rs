//! Knobs: failure injection, runtime control (library and HTTP), slots.

use llm_router_mock_node::{Endpoint, MockConfig};
use serde_json::{Value, json};

use super::{get_json, post_json, send_json, start, wait_until};

fn chat_body() -> Value {
    json!({"model": "llama3.2", "stream": false, "messages": [{"role": "user", "content": "hi"}]})
}

#[tokio::test]
async fn fail_rate_one_answers_every_inference_request_with_an_injected_500() {
    let config = MockConfig {
        fail_rate: 1.0,
        ..MockConfig::default()
    };
    let (node, client) = start(config).await;
    let ollama = send_json(&client, format!("{}/api/chat", node.url()), &chat_body()).await;
    assert_eq!(ollama.status(), 500);
    assert_eq!(
        ollama.json::<Value>().await.unwrap(),
        json!({"error": "injected failure"})
    );
    let openai = send_json(
        &client,
        format!("{}/v1/chat/completions", node.url()),
        &chat_body(),
    )
    .await;
    assert_eq!(openai.status(), 500);
    let body: Value = openai.json().await.unwrap();
    assert_eq!(body["error"]["message"], "injected failure");
    assert_eq!(node.stats().injected_failures(), 2);
    // Probes and listings keep working, so the node still looks alive.
    let tags = client
        .get(format!("{}/api/tags", node.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(tags.status(), 200);
}

#[tokio::test]
async fn mock_config_over_http_changes_knobs_while_running() {
    let (node, client) = start(MockConfig::default()).await;
    let config_url = format!("{}/mock/config", node.url());
    let chat_url = format!("{}/api/chat", node.url());
    let shown: Value = post_json(
        &client,
        &config_url,
        &json!({"fail_rate": 1.0, "default_tokens": 2}),
    )
    .await;
    assert_eq!(shown["fail_rate"], 1.0);
    assert_eq!(shown["default_tokens"], 2);
    assert_eq!(node.control().fail_rate(), 1.0);
    let failed = send_json(&client, &chat_url, &chat_body()).await;
    assert_eq!(failed.status(), 500);
    send_json(&client, &config_url, &json!({"fail_rate": 0.0})).await;
    let ok: Value = post_json(&client, &chat_url, &chat_body()).await;
    assert_eq!(ok["eval_count"], 2);
    let invalid = send_json(&client, &config_url, &json!({"fail_rate": 7})).await;
    assert_eq!(invalid.status(), 400);
    let stats: Value = get_json(&client, format!("{}/mock/stats", node.url())).await;
    assert_eq!(stats["requests"]["/api/chat"], 2);
    assert_eq!(stats["injected_failures"], 1);
    assert_eq!(stats["completed"], 1);
    assert_eq!(stats["in_flight"], 0);
}

#[tokio::test]
async fn control_changes_apply_to_the_next_request() {
    let (node, client) = start(MockConfig::named("k")).await;
    node.control().set_default_tokens(2);
    let body: Value = post_json(&client, format!("{}/api/chat", node.url()), &chat_body()).await;
    assert_eq!(body["message"]["content"], "k token1");
    node.models().add("phi4");
    let tags: Value = get_json(&client, format!("{}/api/tags", node.url())).await;
    assert_eq!(tags["models"][1]["name"], "phi4:latest");
}

#[tokio::test]
async fn requests_beyond_the_parallel_slots_queue_until_one_frees() {
    let config = MockConfig {
        parallel: 2,
        default_tokens: 100_000,
        tokens_per_sec: 50.0,
        ..MockConfig::default()
    };
    let (node, client) = start(config).await;
    let url = format!("{}/api/chat", node.url());
    let body = json!({"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}]});
    // Streaming answers send their headers once they hold a slot.
    let first = client.post(&url).json(&body).send().await.unwrap();
    let second = client.post(&url).json(&body).send().await.unwrap();
    let third = tokio::spawn(client.post(&url).json(&body).send());
    wait_until("the third request is queued", || {
        node.stats().in_flight() == 3
    })
    .await;
    assert_eq!(node.stats().active(), 2);
    assert!(
        !third.is_finished(),
        "the third request must wait for a slot"
    );
    drop(first);
    let third = third.await.unwrap().unwrap();
    assert_eq!(third.status(), 200);
    assert_eq!(node.stats().active(), 2);
    assert_eq!(node.stats().requests(Endpoint::Chat), 3);
    drop((second, third));
    wait_until("every stream is gone", || node.stats().in_flight() == 0).await;
    assert_eq!(node.stats().active(), 0);
}

#[tokio::test]
async fn a_queued_request_whose_client_leaves_is_cancelled_without_taking_a_slot() {
    let config = MockConfig {
        parallel: 1,
        default_tokens: 100_000,
        tokens_per_sec: 50.0,
        ..MockConfig::default()
    };
    let (node, client) = start(config).await;
    let url = format!("{}/api/chat", node.url());
    let body = json!({"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}]});
    let running = client.post(&url).json(&body).send().await.unwrap();
    let queued = tokio::spawn(client.post(&url).json(&body).send());
    wait_until("the second request is queued", || {
        node.stats().in_flight() == 2
    })
    .await;
    queued.abort();
    wait_until("the queued request is dropped", || {
        node.stats().in_flight() == 1
    })
    .await;
    assert_eq!(node.stats().cancelled(), 1);
    assert_eq!(
        node.stats().active(),
        1,
        "only the running stream holds a slot"
    );
    drop(running);
}
