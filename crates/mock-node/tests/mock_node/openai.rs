//! OpenAI-compatible API wire formats.

use llm_router_mock_node::MockConfig;
use serde_json::{Value, json};

use super::{get_json, post_json, post_text, send_json, sse_data, start};

#[tokio::test]
async fn models_list_and_single_model_use_openai_objects() {
    let (node, client) =
        start(MockConfig::default().with_models(["llama3.2", "acme/coder:7b"])).await;
    let list: Value = get_json(&client, format!("{}/v1/models", node.url())).await;
    assert_eq!(list["object"], "list");
    let data = list["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    assert_eq!(data[0]["id"], "llama3.2:latest");
    assert_eq!(data[0]["object"], "model");
    assert_eq!(data[0]["owned_by"], "library");
    assert!(data[0]["created"].is_i64());
    let one: Value = get_json(&client, format!("{}/v1/models/acme/coder:7b", node.url())).await;
    assert_eq!(one["id"], "acme/coder:7b");
    assert_eq!(one["owned_by"], "acme");
    let missing = client
        .get(format!("{}/v1/models/nope", node.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let error: Value = missing.json().await.unwrap();
    assert!(error["error"]["message"].as_str().unwrap().contains("nope"));
    assert_eq!(error["error"]["type"], "not_found_error");
}

#[tokio::test]
async fn chat_completions_answer_whole_by_default_with_usage() {
    let (node, client) = start(MockConfig::named("oa")).await;
    let response = send_json(
        &client,
        format!("{}/v1/chat/completions", node.url()),
        &json!({"model": "llama3.2", "max_tokens": 3,
                      "messages": [{"role": "user", "content": "say three words"}]}),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert!(body["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(body["model"], "llama3.2");
    assert_eq!(body["choices"][0]["message"]["role"], "assistant");
    assert_eq!(body["choices"][0]["message"]["content"], "oa token1 token2");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        body["usage"],
        json!({"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6})
    );
}

#[tokio::test]
async fn chat_completions_stream_sse_chunks_ending_with_done() {
    let (node, client) = start(MockConfig::named("oa")).await;
    let response = send_json(
        &client,
        format!("{}/v1/chat/completions", node.url()),
        &json!({"model": "llama3.2", "stream": true, "max_tokens": 4,
                      "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let events = sse_data(&response.text().await.unwrap());
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert_eq!(chunks.len(), 4 + 1, "4 token chunks and a finishing one");
    let mut text = String::new();
    for chunk in &chunks {
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(chunk["id"], chunks[0]["id"]);
        assert!(chunk.get("usage").is_none(), "no usage unless asked");
        text.push_str(chunk["choices"][0]["delta"]["content"].as_str().unwrap());
    }
    assert_eq!(text, "oa token1 token2 token3");
    assert!(chunks[0]["choices"][0]["finish_reason"].is_null());
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "stop"
    );
}

#[tokio::test]
async fn include_usage_adds_a_usage_chunk_before_done() {
    let (node, client) = start(MockConfig::default()).await;
    let body = post_text(
        &client,
        format!("{}/v1/chat/completions", node.url()),
        &json!({"model": "llama3.2", "stream": true, "max_tokens": 2,
                      "stream_options": {"include_usage": true},
                      "messages": [{"role": "user", "content": "a b c d"}]}),
    )
    .await;
    let events = sse_data(&body);
    assert_eq!(events.last().unwrap(), "[DONE]");
    let usage_chunk: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(usage_chunk["choices"], json!([]));
    assert_eq!(
        usage_chunk["usage"],
        json!({"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6})
    );
    let first: Value = serde_json::from_str(&events[0]).unwrap();
    assert!(first["usage"].is_null() && first.get("usage").is_some());
}

#[tokio::test]
async fn completions_stream_text_chunks_and_honour_max_tokens() {
    let (node, client) = start(MockConfig::named("c")).await;
    let url = format!("{}/v1/completions", node.url());
    let whole: Value = post_json(
        &client,
        &url,
        &json!({"model": "llama3.2", "prompt": "x", "max_tokens": 2}),
    )
    .await;
    assert_eq!(whole["object"], "text_completion");
    assert_eq!(whole["choices"][0]["text"], "c token1");
    assert_eq!(whole["usage"]["completion_tokens"], 2);
    let body = post_text(
        &client,
        &url,
        &json!({"model": "llama3.2", "prompt": "x", "max_tokens": 2, "stream": true}),
    )
    .await;
    let events = sse_data(&body);
    assert_eq!(events.len(), 2 + 1 + 1);
    assert_eq!(events[3], "[DONE]");
    let first: Value = serde_json::from_str(&events[0]).unwrap();
    assert_eq!(first["object"], "text_completion");
    assert_eq!(first["choices"][0]["text"], "c");
}

#[tokio::test]
async fn embeddings_return_a_list_of_embedding_objects() {
    let (node, client) = start(MockConfig::default()).await;
    let body: Value = post_json(
        &client,
        format!("{}/v1/embeddings", node.url()),
        &json!({"model": "llama3.2", "input": ["one two", "three"]}),
    )
    .await;
    assert_eq!(body["object"], "list");
    assert_eq!(body["model"], "llama3.2");
    let data = body["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    assert_eq!(data[1]["object"], "embedding");
    assert_eq!(data[1]["index"], 1);
    assert_eq!(data[1]["embedding"].as_array().unwrap().len(), 8);
    assert_eq!(
        body["usage"],
        json!({"prompt_tokens": 3, "total_tokens": 3})
    );
}

#[tokio::test]
async fn errors_use_the_openai_error_object() {
    let (node, client) = start(MockConfig::default()).await;
    let url = format!("{}/v1/chat/completions", node.url());
    let cases = [
        (
            json!({"messages": [{"role": "user", "content": "hi"}]}),
            400,
        ),
        (
            json!({"model": "nope", "messages": [{"role": "user", "content": "hi"}]}),
            404,
        ),
        (json!({"model": "llama3.2"}), 400),
    ];
    for (request, status) in cases {
        let response = client.post(&url).json(&request).send().await.unwrap();
        assert_eq!(response.status(), status, "{request}");
        let body: Value = response.json().await.unwrap();
        let error = &body["error"];
        assert!(error["message"].is_string(), "{body}");
        assert!(error["type"].is_string(), "{body}");
        assert!(error.get("code").is_some(), "{body}");
    }
}
