//! Ollama API wire formats.

use llm_router_mock_node::{MockConfig, NODE_HEADER};
use serde_json::{Value, json};

use super::{get_json, ndjson, post_json, post_text, send_json, start};

const COUNTERS: [&str; 6] = [
    "total_duration",
    "load_duration",
    "prompt_eval_count",
    "prompt_eval_duration",
    "eval_count",
    "eval_duration",
];

#[tokio::test]
async fn root_get_and_head_answer_ollama_is_running() {
    let (node, client) = start(MockConfig::default()).await;
    let get = client.get(node.url()).send().await.unwrap();
    assert_eq!(get.status(), 200);
    assert!(
        get.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    assert_eq!(get.text().await.unwrap(), "Ollama is running");
    let head = client.head(node.url()).send().await.unwrap();
    assert_eq!(head.status(), 200);
    let health: Value = get_json(&client, format!("{}/health", node.url())).await;
    assert_eq!(health, json!({"status": "ok"}));
}

#[tokio::test]
async fn version_reports_the_configured_version() {
    let config = MockConfig {
        version: "0.9.9".into(),
        ..MockConfig::default()
    };
    let (node, client) = start(config).await;
    let body: Value = get_json(&client, format!("{}/api/version", node.url())).await;
    assert_eq!(body, json!({"version": "0.9.9"}));
}

#[tokio::test]
async fn tags_list_held_models_with_latest_tag_and_details() {
    let (node, client) = start(MockConfig::default().with_models(["llama3.2", "qwen3:8b"])).await;
    let body: Value = get_json(&client, format!("{}/api/tags", node.url())).await;
    let models = body["models"].as_array().unwrap();
    let names: Vec<&str> = models.iter().map(|m| m["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["llama3.2:latest", "qwen3:8b"]);
    for model in models {
        assert_eq!(model["model"], model["name"]);
        assert!(model["modified_at"].is_string());
        assert!(model["size"].as_u64().unwrap() > 0);
        assert_eq!(model["digest"].as_str().unwrap().len(), 64);
        let details = &model["details"];
        for field in [
            "parent_model",
            "format",
            "family",
            "parameter_size",
            "quantization_level",
        ] {
            assert!(details[field].is_string(), "details.{field}");
        }
        assert!(details["families"].is_array());
    }
    assert_eq!(models[1]["details"]["parameter_size"], "8B");
}

#[tokio::test]
async fn show_returns_details_for_a_held_model_and_404_otherwise() {
    let (node, client) = start(MockConfig::default()).await;
    let url = format!("{}/api/show", node.url());
    let found = send_json(&client, &url, &json!({"model": "llama3.2"})).await;
    assert_eq!(found.status(), 200);
    let body: Value = found.json().await.unwrap();
    assert_eq!(body["details"]["family"], "llama");
    assert!(body["model_info"].is_object());
    assert!(body["modelfile"].is_string());
    let missing = send_json(&client, &url, &json!({"model": "nope"})).await;
    assert_eq!(missing.status(), 404);
    let body: Value = missing.json().await.unwrap();
    assert_eq!(body, json!({"error": "model 'nope' not found"}));
}

#[tokio::test]
async fn chat_streams_ndjson_by_default_ending_with_done_and_counters() {
    let (node, client) = start(MockConfig::named("node-a")).await;
    let response = send_json(&client, format!("{}/api/chat", node.url()), &json!({"model": "llama3.2", "messages": [{"role": "user", "content": "why is the sky blue?"}]})).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    let lines = ndjson(&response.text().await.unwrap());
    assert_eq!(
        lines.len(),
        16 + 1,
        "16 tokens by default, then the final object"
    );
    let (last, tokens) = lines.split_last().unwrap();
    let mut text = String::new();
    for token in tokens {
        assert_eq!(token["done"], false);
        assert_eq!(token["model"], "llama3.2");
        assert_eq!(token["message"]["role"], "assistant");
        text.push_str(token["message"]["content"].as_str().unwrap());
    }
    assert!(text.starts_with("node-a token1"), "{text}");
    assert_eq!(last["done"], true);
    assert_eq!(last["done_reason"], "stop");
    for counter in COUNTERS {
        assert!(last[counter].is_u64(), "{counter} in {last}");
    }
    assert_eq!(last["eval_count"], 16);
    assert_eq!(last["prompt_eval_count"], 5);
}

#[tokio::test]
async fn chat_with_stream_false_returns_one_object_with_the_whole_text() {
    let (node, client) = start(MockConfig::named("node-b")).await;
    let response = send_json(
        &client,
        format!("{}/api/chat", node.url()),
        &json!({"model": "llama3.2:latest", "stream": false, "options": {"num_predict": 3},
                      "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert!(
        response.content_length().is_some(),
        "a whole answer has a length"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["message"]["content"], "node-b token1 token2");
    assert_eq!(body["done"], true);
    assert_eq!(body["done_reason"], "stop");
    assert_eq!(body["eval_count"], 3);
    for counter in COUNTERS {
        assert!(body[counter].is_u64(), "{counter}");
    }
}

#[tokio::test]
async fn generate_honours_num_predict_and_streams_response_fields() {
    let (node, client) = start(MockConfig::named("g")).await;
    let body = post_text(
        &client,
        format!("{}/api/generate", node.url()),
        &json!({"model": "llama3.2", "prompt": "one two three", "options": {"num_predict": 2}}),
    )
    .await;
    let lines = ndjson(&body);
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["response"], "g");
    assert_eq!(lines[1]["response"], " token1");
    assert_eq!(lines[2]["done"], true);
    assert_eq!(lines[2]["prompt_eval_count"], 3);
    assert_eq!(lines[2]["eval_count"], 2);
}

#[tokio::test]
async fn unknown_model_is_404_with_ollamas_message() {
    let (node, client) = start(MockConfig::default()).await;
    let response = send_json(
        &client,
        format!("{}/api/chat", node.url()),
        &json!({"model": "mistral", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        json!({"error": "model \"mistral\" not found, try pulling it first"})
    );
}

#[tokio::test]
async fn missing_model_and_bad_json_are_400_with_an_error_field() {
    let (node, client) = start(MockConfig::default()).await;
    let url = format!("{}/api/generate", node.url());
    for body in [r#"{"prompt": "hi"}"#, "{not json", ""] {
        let response = client.post(&url).body(body).send().await.unwrap();
        assert_eq!(response.status(), 400, "{body:?}");
        let error: Value = response.json().await.unwrap();
        assert!(error["error"].is_string(), "{error}");
    }
}

#[tokio::test]
async fn embed_returns_deterministic_vectors_per_input() {
    let (node, client) = start(MockConfig::default()).await;
    let url = format!("{}/api/embed", node.url());
    let body: Value = post_json(
        &client,
        &url,
        &json!({"model": "llama3.2", "input": ["a b", "c", "a b"]}),
    )
    .await;
    assert_eq!(body["model"], "llama3.2");
    let embeddings = body["embeddings"].as_array().unwrap();
    assert_eq!(embeddings.len(), 3);
    assert_eq!(embeddings[0].as_array().unwrap().len(), 8);
    assert_eq!(embeddings[0], embeddings[2]);
    assert_ne!(embeddings[0], embeddings[1]);
    let single: Value =
        post_json(&client, &url, &json!({"model": "llama3.2", "input": "a b"})).await;
    assert_eq!(single["embeddings"][0], embeddings[0]);
    let legacy: Value = post_json(
        &client,
        format!("{}/api/embeddings", node.url()),
        &json!({"model": "llama3.2", "prompt": "a b"}),
    )
    .await;
    assert_eq!(legacy["embedding"], embeddings[0]);
}

#[tokio::test]
async fn pull_streams_progress_then_success_and_adds_the_model() {
    let (node, client) = start(MockConfig::default()).await;
    let body = post_text(
        &client,
        format!("{}/api/pull", node.url()),
        &json!({"model": "qwen3"}),
    )
    .await;
    let lines = ndjson(&body);
    assert_eq!(lines.first().unwrap()["status"], "pulling manifest");
    assert_eq!(lines.last().unwrap(), &json!({"status": "success"}));
    let progress: Vec<&Value> = lines.iter().filter(|l| l.get("total").is_some()).collect();
    assert!(!progress.is_empty());
    for p in &progress {
        assert!(p["digest"].as_str().unwrap().starts_with("sha256:"));
        assert!(p["completed"].as_u64().unwrap() <= p["total"].as_u64().unwrap());
    }
    let done = progress.last().unwrap();
    assert_eq!(done["completed"], done["total"]);
    assert!(node.models().find("qwen3:latest").is_some());
}

#[tokio::test]
async fn ps_lists_the_model_loaded_by_a_request() {
    let (node, client) = start(MockConfig::default()).await;
    let ps_url = format!("{}/api/ps", node.url());
    let before: Value = get_json(&client, &ps_url).await;
    assert_eq!(before, json!({"models": []}));
    send_json(
        &client,
        format!("{}/api/generate", node.url()),
        &json!({"model": "llama3.2", "prompt": "hi", "stream": false}),
    )
    .await;
    let after: Value = get_json(&client, &ps_url).await;
    let models = after["models"].as_array().unwrap();
    assert_eq!(models.len(), 1);
    assert_eq!(models[0]["name"], "llama3.2:latest");
    assert!(models[0]["expires_at"].is_string());
    assert_eq!(models[0]["size_vram"], models[0]["size"]);
}

#[tokio::test]
async fn every_response_carries_the_node_header() {
    let (node, client) = start(MockConfig::named("node-h")).await;
    let requests = [
        client.get(node.url()),
        client.get(format!("{}/api/tags", node.url())),
        client.get(format!("{}/no/such/route", node.url())),
        client.post(format!("{}/api/chat", node.url())).body("{bad"),
        client
            .post(format!("{}/v1/chat/completions", node.url()))
            .json(&json!({"model": "x"})),
    ];
    for request in requests {
        let response = request.send().await.unwrap();
        assert_eq!(
            response.headers()[NODE_HEADER],
            "node-h",
            "{}",
            response.url()
        );
    }
}
