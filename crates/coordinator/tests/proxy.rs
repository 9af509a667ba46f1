//! The inference proxy against mock nodes on real sockets: routing,
//! pass-through fidelity, streaming, failover, cancellation, error formats.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;
use llm_router_coordinator::config::BalancerMode;
use llm_router_mock_node::MockConfig;
use serde_json::{Value, json};
use support::chat;
use support::fleet::Fleet;
use support::process::eventually;

/// `body` with options asking the node for `n` tokens.
fn predicting(mut body: Value, n: u64) -> Value {
    body["options"] = json!({ "num_predict": n });
    body
}

#[tokio::test]
async fn chat_is_answered_by_a_node_holding_the_model() {
    let fleet = Fleet::start(vec![MockConfig::named("a").with_models(["llama3.2"])]).await;
    let response = fleet.post("/api/chat", chat("llama3.2", false)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(Fleet::served_by(&response), "a");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["done"], true);
    assert!(
        body["message"]["content"]
            .as_str()
            .unwrap()
            .starts_with("a ")
    );
    fleet.stop().await;
}

#[tokio::test]
async fn request_body_reaches_the_node_byte_for_byte() {
    let fleet = Fleet::start(vec![MockConfig::named("a").with_models(["llava"])]).await;
    // Odd spacing, key order, unicode escapes, images, tools, options, format and a field
    // no API knows yet: any re-serialisation would change these bytes.
    let body = concat!(
        "{ \"stream\":false,\"model\" : \"llava\", \"messages\":[{\"role\":\"user\",",
        "\"content\":\"what is in this picture? \\u00e9\\ud83d\\ude00\",\"images\":[\"iVBORw0KGgoAAAANSUhEUg==\"]}],",
        "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"parameters\":{\"type\":\"object\"}}}],",
        "\"options\":{\"temperature\":0.70,\"num_ctx\":8192,\"seed\":42},",
        "\"format\":{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"string\"}}},",
        "\"keep_alive\":\"10m\",\"think\":false,\"x_future_field\":[1,2.50,{\"nested\":null}]}"
    );
    let response = fleet
        .client
        .post(fleet.url("/api/chat"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let recorded = fleet
        .node("a")
        .stats()
        .last_request_to("/api/chat")
        .unwrap();
    assert_eq!(recorded.body.as_ref(), body.as_bytes());
    fleet.stop().await;
}

#[tokio::test]
async fn ollama_streams_by_default_and_openai_does_not() {
    let fleet = Fleet::start(vec![MockConfig::named("a").with_models(["llama3.2"])]).await;
    let response = fleet
        .post(
            "/api/chat",
            json!({"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    let text = response.text().await.unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines.len() > 1);
    assert_eq!(lines.last().unwrap()["done"], true);

    let response = fleet
        .post(
            "/v1/chat/completions",
            json!({"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    fleet.stop().await;
}

#[tokio::test]
async fn first_chunk_arrives_long_before_the_last_is_produced() {
    let fleet = Fleet::start(vec![
        MockConfig::named("slow")
            .with_models(["llama3.2"])
            .with_tokens_per_sec(5.0),
    ])
    .await;
    let body = json!({"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}]});
    let response = fleet.post("/api/chat", predicting(body, 10)).await;
    assert_eq!(response.status(), 200);
    let mut stream = response.bytes_stream();
    let first = stream.next().await.unwrap().unwrap();
    let first: Value =
        serde_json::from_slice(first.split(|b| *b == b'\n').next().unwrap()).unwrap();
    assert_eq!(first["done"], false);
    // The node is still generating: it has not finished a single response.
    let stats = fleet.node("slow").stats();
    assert_eq!(
        stats.completed(),
        0,
        "first chunk arrived only after the node finished"
    );
    assert_eq!(stats.in_flight(), 1);
    let mut rest = Vec::new();
    while let Some(chunk) = stream.next().await {
        rest.extend_from_slice(&chunk.unwrap());
    }
    let last: Value = serde_json::from_slice(
        rest.trim_ascii_end()
            .rsplit(|b| *b == b'\n')
            .next()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(last["done"], true);
    fleet.stop().await;
}

#[tokio::test]
async fn each_request_lands_only_on_nodes_holding_its_model() {
    let fleet = Fleet::start(vec![
        MockConfig::named("llama-node").with_models(["llama3.2"]),
        MockConfig::named("qwen-node").with_models(["qwen2.5:7b"]),
        MockConfig::named("both-node").with_models(["llama3.2", "mistral"]),
    ])
    .await;
    for _ in 0..6 {
        let response = fleet.post("/api/chat", chat("qwen2.5:7b", false)).await;
        assert_eq!(Fleet::served_by(&response), "qwen-node");
        let response = fleet
            .post(
                "/api/generate",
                json!({"model": "mistral:latest", "prompt": "x", "stream": false}),
            )
            .await;
        assert_eq!(Fleet::served_by(&response), "both-node");
        for model in ["llama3.2", "llama3.2:latest"] {
            let response = fleet.post("/api/chat", chat(model, false)).await;
            assert_eq!(response.status(), 200);
            let node = Fleet::served_by(&response);
            assert!(
                node == "llama-node" || node == "both-node",
                "{model} went to {node}"
            );
        }
    }
    fleet.stop().await;
}

#[tokio::test]
async fn unknown_model_is_404_in_each_apis_format() {
    let fleet = Fleet::start(vec![MockConfig::named("a").with_models(["llama3.2"])]).await;
    let (status, body) = fleet
        .post_json("/api/chat", chat("no-such-model", false))
        .await;
    assert_eq!(status, 404);
    assert!(
        body["error"].as_str().unwrap().contains("no-such-model"),
        "{body}"
    );

    let (status, body) = fleet
        .post_json("/v1/chat/completions", chat("no-such-model", false))
        .await;
    assert_eq!(status, 404);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no-such-model"),
        "{body}"
    );
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert_eq!(body["error"]["code"], "model_not_found");

    let response = fleet.get("/v1/models/no-such-model").await;
    assert_eq!(response.status(), 404);
    fleet.stop().await;
}

#[tokio::test]
async fn no_node_online_is_503_saying_so() {
    let fleet = Fleet::empty_with(|_| {}).await;
    let (status, body) = fleet.post_json("/api/chat", chat("llama3.2", false)).await;
    assert_eq!(status, 503);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("no node is available"),
        "{body}"
    );
    let (status, body) = fleet
        .post_json("/v1/embeddings", json!({"model": "m", "input": "x"}))
        .await;
    assert_eq!(status, 503);
    assert_eq!(body["error"]["code"], "no_available_node");
    fleet.stop().await;
}

#[tokio::test]
async fn a_model_only_draining_nodes_hold_is_503_naming_them_not_404() {
    let mut fleet = Fleet::start(vec![MockConfig::named("a").with_models(["llama3.2"])]).await;
    let id = fleet
        .add_node(MockConfig::named("b").with_models(["mistral"]))
        .await;
    let response = fleet
        .client
        .patch(fleet.url(&format!("/api/agents/{id}")))
        .json(&json!({"draining": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    // An Ollama client takes a 404 from show as "pull it": this model exists.
    let (status, body) = fleet.post_json("/api/chat", chat("mistral", false)).await;
    assert_eq!(status, 503, "{body}");
    let message = body["error"].as_str().unwrap();
    assert!(message.contains("b (draining)"), "{message}");
    let (status, _) = fleet
        .post_json("/api/show", json!({"model": "mistral"}))
        .await;
    assert_eq!(status, 503);
    let (status, body) = fleet
        .post_json("/v1/chat/completions", chat("mistral", false))
        .await;
    assert_eq!(status, 503);
    assert_eq!(body["error"]["code"], "no_available_node");
    // A model nobody holds is still 404.
    let (status, _) = fleet.post_json("/api/chat", chat("gemma", false)).await;
    assert_eq!(status, 404);
    fleet.stop().await;
}

#[tokio::test]
async fn an_unload_reaches_every_node_holding_the_model_in_memory() {
    let mut fleet = Fleet::start(vec![]).await;
    let mut ids = Vec::new();
    for name in ["a", "b", "c"] {
        let id = fleet
            .add_node(MockConfig::named(name).with_models(["llama3.2", "mistral"]))
            .await;
        ids.push(id);
    }
    // llama3.2 in memory on a and b, as their heartbeats say; c holds it on disk only.
    for (id, name) in ids.iter().zip(["a", "b"]) {
        let load = fleet
            .client
            .post(format!("{}/api/generate", fleet.node(name).url()))
            .json(&json!({"model": "llama3.2"}))
            .send()
            .await
            .unwrap();
        assert_eq!(load.status(), 200);
        fleet.heartbeat(id, 10.0, &["llama3.2:latest"]).await;
    }
    assert!(
        fleet
            .node("a")
            .models()
            .loaded_names()
            .contains(&"llama3.2:latest".to_owned())
    );

    // What `ollama stop llama3.2` sends.
    let (status, body) = fleet
        .post_json(
            "/api/generate",
            json!({"model": "llama3.2", "keep_alive": 0}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["done_reason"], "unload");
    for name in ["a", "b"] {
        eventually(
            &format!("llama3.2 unloaded on {name}"),
            Duration::from_secs(10),
            || async {
                (!fleet
                    .node(name)
                    .models()
                    .loaded_names()
                    .contains(&"llama3.2:latest".to_owned()))
                .then_some(())
            },
        )
        .await;
    }
    fleet.stop().await;
}

#[tokio::test]
async fn unknown_paths_and_methods_are_answered_in_each_apis_format() {
    let fleet = Fleet::start(vec![MockConfig::named("a")]).await;
    let (status, body) = fleet.get_status_json("/v1/nonexistent").await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["message"], "no route for /v1/nonexistent");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    let (status, body) = fleet.get_status_json("/api/nonexistent").await;
    assert_eq!(status, 404);
    assert_eq!(body["error"], "no route for /api/nonexistent");

    let response = fleet.get("/api/chat").await;
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["allow"], "POST");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "/api/chat does not take GET requests");
    let response = fleet.get("/v1/chat/completions").await;
    assert_eq!(response.status(), 405);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "method_not_allowed");
    fleet.stop().await;
}

#[tokio::test]
async fn bad_requests_are_400_in_each_apis_format() {
    let fleet = Fleet::start(vec![MockConfig::named("a")]).await;
    for (path, body) in [
        ("/api/chat", "{not json"),
        ("/api/generate", r#"{"prompt":"no model"}"#),
        ("/api/embed", ""),
        ("/api/chat", r#"{"model":"llama3.2","stream":"sometimes"}"#),
    ] {
        let response = fleet
            .client
            .post(fleet.url(path))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{path} {body}");
        let json: Value = response.json().await.unwrap();
        assert!(json["error"].is_string(), "{path}: {json}");
    }
    let response = fleet
        .client
        .post(fleet.url("/v1/chat/completions"))
        .body("[]")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let json: Value = response.json().await.unwrap();
    assert_eq!(json["error"]["type"], "invalid_request_error");
    assert_eq!(
        fleet.node("a").stats().total_requests(),
        0,
        "a bad request reached a node"
    );
    fleet.stop().await;
}

#[tokio::test]
async fn oversized_request_is_413() {
    let fleet = Fleet::start_with(vec![MockConfig::named("a")], |c| {
        c.proxy.max_request_bytes = 1024
    })
    .await;
    let big = "x".repeat(4096);
    let (status, json) = fleet
        .post_json("/api/generate", json!({"model": "llama3.2", "prompt": big}))
        .await;
    assert_eq!(status, 413);
    assert!(json["error"].as_str().unwrap().contains("1024"), "{json}");
    fleet.stop().await;
}

#[tokio::test]
async fn a_node_refusing_connections_is_skipped_and_every_request_succeeds() {
    let mut fleet = Fleet::start(vec![
        MockConfig::named("a").with_models(["llama3.2"]),
        MockConfig::named("b").with_models(["llama3.2"]),
        MockConfig::named("c").with_models(["llama3.2"]),
    ])
    .await;
    let dead = fleet.nodes.remove(1);
    dead.stop().await;
    let mut served: HashMap<String, usize> = HashMap::new();
    for _ in 0..100 {
        let response = fleet.post("/api/chat", chat("llama3.2", false)).await;
        assert_eq!(response.status(), 200);
        *served.entry(Fleet::served_by(&response)).or_default() += 1;
    }
    assert_eq!(served.get("b"), None);
    assert_eq!(served.values().sum::<usize>(), 100);
    fleet.stop().await;
}

#[tokio::test]
async fn a_node_answering_5xx_before_any_byte_is_failed_over() {
    let fleet = Fleet::start(vec![
        MockConfig::named("a").with_models(["llama3.2"]),
        MockConfig::named("b").with_models(["llama3.2"]),
    ])
    .await;
    fleet.node("a").control().set_fail_rate(1.0);
    for _ in 0..10 {
        let response = fleet.post("/api/chat", chat("llama3.2", true)).await;
        assert_eq!(response.status(), 200);
        assert_eq!(Fleet::served_by(&response), "b");
    }
    fleet.node("b").control().set_fail_rate(1.0);
    let (status, body) = fleet.post_json("/api/chat", chat("llama3.2", false)).await;
    assert_eq!(status, 502);
    assert!(
        body["error"].as_str().unwrap().contains("injected failure"),
        "{body}"
    );
    fleet.stop().await;
}

#[tokio::test]
async fn a_node_dying_mid_stream_ends_the_stream_with_an_error_chunk() {
    let fleet = Fleet::start(vec![MockConfig::named("a").with_models(["llama3.2"])]).await;
    fleet.node("a").control().set_die_after_tokens(Some(3));
    let response = fleet.post("/api/chat", chat("llama3.2", true)).await;
    assert_eq!(response.status(), 200);
    let text = tokio::time::timeout(Duration::from_secs(10), response.text())
        .await
        .expect("client hung after the node died")
        .unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert!(lines[..3].iter().all(|l| l["done"] == false));
    assert!(
        lines[3]["error"]
            .as_str()
            .unwrap()
            .contains("failed mid-response"),
        "{text}"
    );

    let response = fleet
        .post("/v1/chat/completions", chat("llama3.2", true))
        .await;
    let text = response.text().await.unwrap();
    let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
    let last: Value =
        serde_json::from_str(events.last().unwrap().strip_prefix("data: ").unwrap()).unwrap();
    assert_eq!(last["error"]["type"], "server_error", "{text}");
    assert!(!text.contains("[DONE]"));
    fleet.stop().await;
}

#[tokio::test]
async fn a_client_that_disconnects_cancels_the_node_request() {
    let fleet = Fleet::start(vec![
        MockConfig::named("a")
            .with_models(["llama3.2"])
            .with_tokens_per_sec(20.0),
    ])
    .await;
    let response = fleet
        .post("/api/chat", predicting(chat("llama3.2", true), 1000))
        .await;
    let mut stream = response.bytes_stream();
    stream.next().await.unwrap().unwrap();
    let agents = fleet.agents().await;
    assert_eq!(agents[0]["in_flight"], 1);
    drop(stream);

    let node = fleet.node("a");
    eventually(
        "the node sees the cancellation",
        Duration::from_secs(10),
        || async { (node.stats().cancelled() == 1 && node.stats().in_flight() == 0).then_some(()) },
    )
    .await;
    eventually(
        "the router's in-flight count returns to 0",
        Duration::from_secs(10),
        || async { (fleet.agents().await[0]["in_flight"] == 0).then_some(()) },
    )
    .await;
    fleet.stop().await;
}

#[tokio::test]
async fn nine_requests_over_three_idle_nodes_land_three_on_each_with_round_robin() {
    let fleet = Fleet::start_with(
        vec![
            MockConfig::named("a").with_models(["llama3.2"]),
            MockConfig::named("b").with_models(["llama3.2"]),
            MockConfig::named("c").with_models(["llama3.2"]),
        ],
        |c| c.proxy.balancer = BalancerMode::RoundRobin,
    )
    .await;
    let mut served: HashMap<String, usize> = HashMap::new();
    for _ in 0..9 {
        let response = fleet
            .post(
                "/api/generate",
                json!({"model": "llama3.2", "prompt": "x", "stream": false}),
            )
            .await;
        *served.entry(Fleet::served_by(&response)).or_default() += 1;
    }
    assert_eq!(
        served,
        HashMap::from([("a".into(), 3), ("b".into(), 3), ("c".into(), 3)])
    );
    fleet.stop().await;
}

#[tokio::test]
async fn node_that_answers_nothing_in_time_is_failed_over_then_504() {
    let fleet = Fleet::start_with(
        vec![
            MockConfig::named("stuck")
                .with_models(["llama3.2"])
                .with_ttft(Duration::from_secs(30)),
            MockConfig::named("quick").with_models(["llama3.2"]),
        ],
        |c| c.proxy.first_byte_timeout = Duration::from_millis(300),
    )
    .await;
    for _ in 0..4 {
        let response = fleet.post("/api/chat", chat("llama3.2", true)).await;
        assert_eq!(response.status(), 200);
        assert_eq!(Fleet::served_by(&response), "quick");
    }
    fleet
        .node("quick")
        .control()
        .set_ttft(Duration::from_secs(30));
    let (status, body) = fleet
        .post_json("/v1/chat/completions", chat("llama3.2", false))
        .await;
    assert_eq!(status, 504);
    assert_eq!(body["error"]["code"], "upstream_timeout");
    fleet.stop().await;
}

#[tokio::test]
async fn a_silent_stream_is_ended_with_an_error_after_the_idle_timeout() {
    let fleet = Fleet::start_with(
        vec![
            MockConfig::named("a")
                .with_models(["llama3.2"])
                .with_tokens_per_sec(0.5),
        ],
        |c| c.proxy.stream_idle_timeout = Duration::from_millis(300),
    )
    .await;
    let response = fleet
        .post("/api/generate", json!({"model": "llama3.2", "prompt": "x"}))
        .await;
    let text = tokio::time::timeout(Duration::from_secs(10), response.text())
        .await
        .unwrap()
        .unwrap();
    let last: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert!(
        last["error"].as_str().unwrap().contains("sent nothing"),
        "{text}"
    );
    fleet.stop().await;
}

#[tokio::test]
async fn model_lists_are_the_union_over_online_nodes() {
    let fleet = Fleet::start(vec![
        MockConfig::named("a").with_models(["llama3.2", "qwen2.5:7b"]),
        MockConfig::named("b").with_models(["llama3.2:latest", "mistral"]),
    ])
    .await;
    let tags: Value = fleet.get_json("/api/tags").await;
    let names: Vec<&str> = tags["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["llama3.2:latest", "mistral:latest", "qwen2.5:7b"]);
    assert!(tags["models"][0]["details"].is_object());

    let models: Value = fleet.get_json("/v1/models").await;
    assert_eq!(models["object"], "list");
    assert_eq!(models["data"].as_array().unwrap().len(), 3);
    let one: Value = fleet.get_json("/v1/models/qwen2.5:7b").await;
    assert_eq!(one["id"], "qwen2.5:7b");

    let version: Value = fleet.get_json("/api/version").await;
    assert_eq!(version["version"], "0.12.0");
    assert_eq!(fleet.get_text("/").await, "Ollama is running");
    let head = fleet.client.head(fleet.url("/")).send().await.unwrap();
    assert_eq!(head.status(), 200);
    fleet.stop().await;
}

#[tokio::test]
async fn embeddings_and_show_are_routed_by_model() {
    let fleet = Fleet::start(vec![
        MockConfig::named("a").with_models(["llama3.2"]),
        MockConfig::named("e").with_models(["nomic-embed-text"]),
    ])
    .await;
    let response = fleet
        .post(
            "/api/embed",
            json!({"model": "nomic-embed-text", "input": ["a", "b"]}),
        )
        .await;
    assert_eq!(Fleet::served_by(&response), "e");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["embeddings"].as_array().unwrap().len(), 2);
    let response = fleet
        .post(
            "/v1/embeddings",
            json!({"model": "nomic-embed-text", "input": "a"}),
        )
        .await;
    assert_eq!(Fleet::served_by(&response), "e");
    let response = fleet.post("/api/show", json!({"model": "llama3.2"})).await;
    assert_eq!(response.status(), 200);
    assert_eq!(Fleet::served_by(&response), "a");
    fleet.stop().await;
}

#[tokio::test]
async fn request_id_is_echoed_and_forwarded_to_the_node() {
    let fleet = Fleet::start(vec![MockConfig::named("a")]).await;
    let response = fleet
        .client
        .post(fleet.url("/api/chat"))
        .header("x-request-id", "trace-me-7")
        .json(&chat("llama3.2", false))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "trace-me-7");
    let recorded = fleet
        .node("a")
        .stats()
        .last_request_to("/api/chat")
        .unwrap();
    assert_eq!(recorded.headers["x-request-id"], "trace-me-7");
    fleet.stop().await;
}

#[tokio::test]
async fn a_generated_request_id_is_a_uuid_the_node_and_the_client_both_see() {
    // Inference servers (llama.cpp's among them) reject an `x-request-id` that is not a UUID.
    let fleet = Fleet::start(vec![MockConfig::named("a")]).await;
    let response = fleet
        .client
        .post(fleet.url("/api/chat"))
        .json(&chat("llama3.2", false))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let echoed = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let id = uuid::Uuid::parse_str(&echoed).expect("the generated id is a UUID");
    assert_eq!(id.get_version_num(), 4);
    let recorded = fleet
        .node("a")
        .stats()
        .last_request_to("/api/chat")
        .unwrap();
    assert_eq!(recorded.headers["x-request-id"], echoed);
    fleet.stop().await;
}

#[tokio::test]
async fn a_model_every_listing_node_turns_out_not_to_have_is_404_not_502() {
    let mut fleet = Fleet::empty_with(|_| {}).await;
    let id = fleet
        .add_node(MockConfig::named("a").with_models(["llama3.2"]))
        .await;
    // A stale model list: the node is registered as holding a model it no longer has.
    let node = fleet.node("a");
    let (status, _) = fleet
        .post_json(
            "/api/agents/register",
            json!({
                "machine_name": "a",
                "ip_address": "127.0.0.1",
                "ollama_port": node.addr().port(),
                "models": [{"name": "llama3.2"}, {"name": "deleted-model"}],
                "node_credential": fleet.credentials[&id],
            }),
        )
        .await;
    assert_eq!(status, 200);
    let (status, body) = fleet
        .post_json("/api/chat", chat("deleted-model", false))
        .await;
    assert_eq!(status, 404, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("deleted-model"),
        "{body}"
    );
    fleet.stop().await;
}
