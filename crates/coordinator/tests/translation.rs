//! Ollama clients using models that only OpenAI-compatible servers hold: their
//! requests are translated (`/api/chat` → `/v1/chat/completions`, `/api/generate`
//! → `/v1/completions`, `/api/embed` and `/api/embeddings` → `/v1/embeddings`) and
//! the answers come back in Ollama's format, streamed line by line; the fleet's
//! lists show those models; and `--model-alias` lets one model be served by Ollama
//! and OpenAI-style nodes under their own names. The OpenAI-style servers are mock
//! nodes added by URL as `kind: openai`, so only their `/v1` API is used.

mod support;

use std::time::Duration;

use llm_router_coordinator::config::BalancerMode;
use llm_router_mock_node::{MockConfig, MockNode};
use serde_json::{Value, json};
use support::fleet::Fleet;

async fn add_openai_node(fleet: &mut Fleet, config: MockConfig) {
    let node = MockNode::start(config).await.unwrap();
    let (status, added) = fleet
        .post_json(
            "/api/nodes",
            json!({ "api_url": node.url(), "kind": "openai", "name": node.name() }),
        )
        .await;
    assert_eq!(status, 201, "{added}");
    fleet.nodes.push(node);
    fleet
        .wait_for_status(added["id"].as_str().unwrap(), "online")
        .await;
}

async fn openai_fleet() -> Fleet {
    let mut fleet = Fleet::empty_with(|c| {
        c.heartbeat_interval = Duration::from_millis(200);
        c.health_check_interval = Duration::from_millis(100);
    })
    .await;
    let mut config = MockConfig::named("llama-server").with_models(["tiny", "embedder"]);
    config.default_tokens = 6;
    config.tokens_per_sec = 200.0;
    add_openai_node(&mut fleet, config).await;
    fleet
}

fn ndjson(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

/// The last request the node got, its path and JSON body.
fn last_request(fleet: &Fleet) -> (String, Value) {
    let recorded = fleet.nodes[0].stats().recorded();
    let last = recorded.last().expect("the node got a request");
    (
        last.path().to_owned(),
        serde_json::from_slice(&last.body).unwrap(),
    )
}

#[tokio::test]
async fn an_ollama_chat_streams_from_an_openai_server_as_ndjson_with_the_counters() {
    let fleet = openai_fleet().await;
    let response = fleet
        .post(
            "/api/chat",
            json!({ "model": "tiny", "messages": [{ "role": "user", "content": "hello" }],
                    "options": { "temperature": 0.1, "num_predict": 32, "num_ctx": 2048 } }),
        )
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    let lines = ndjson(&response.text().await.unwrap());
    let (last, pieces) = lines.split_last().unwrap();
    assert!(pieces.len() >= 2, "streamed in pieces: {lines:?}");
    assert!(
        pieces
            .iter()
            .all(|l| l["done"] == false && l["message"]["role"] == "assistant")
    );
    let text: String = pieces
        .iter()
        .filter_map(|l| l["message"]["content"].as_str())
        .collect();
    assert!(!text.is_empty());
    assert_eq!(last["done"], true, "{last}");
    assert_eq!(last["done_reason"], "stop");
    assert_eq!(last["model"], "tiny");
    assert!(last["eval_count"].as_u64() > Some(0), "{last}");
    assert!(last["prompt_eval_count"].as_u64().is_some(), "{last}");
    assert!(last["total_duration"].as_u64() > Some(0), "{last}");

    let (path, body) = last_request(&fleet);
    assert_eq!(path, "/v1/chat/completions");
    assert_eq!(body["stream"], true);
    assert_eq!(body["stream_options"]["include_usage"], true);
    assert_eq!(body["max_tokens"], 32);
    assert_eq!(body["temperature"], 0.1);
    assert!(
        body.get("num_ctx").is_none() && body.get("options").is_none(),
        "{body}"
    );
    assert_eq!(
        body["messages"],
        json!([{ "role": "user", "content": "hello" }])
    );
}

#[tokio::test]
async fn whole_answers_generate_and_embeddings_come_back_in_ollamas_format() {
    let fleet = openai_fleet().await;
    let (status, chat) = fleet
        .post_json(
            "/api/chat",
            json!({ "model": "tiny", "stream": false, "messages": [{ "role": "user", "content": "hi" }] }),
        )
        .await;
    assert_eq!(status, 200, "{chat}");
    assert!(
        !chat["message"]["content"].as_str().unwrap().is_empty(),
        "{chat}"
    );
    assert_eq!(chat["done"], true);
    assert!(chat["eval_count"].as_u64() > Some(0), "{chat}");

    let response = fleet
        .post(
            "/api/generate",
            json!({ "model": "tiny", "prompt": "Once upon" }),
        )
        .await;
    assert_eq!(response.status(), 200);
    let lines = ndjson(&response.text().await.unwrap());
    assert!(
        lines
            .iter()
            .any(|l| l["response"].as_str().is_some_and(|r| !r.is_empty()))
    );
    assert_eq!(lines.last().unwrap()["done"], true);
    assert_eq!(last_request(&fleet).0, "/v1/completions");

    let (status, embed) = fleet
        .post_json(
            "/api/embed",
            json!({ "model": "embedder", "input": ["a", "b"] }),
        )
        .await;
    assert_eq!(status, 200, "{embed}");
    assert_eq!(embed["embeddings"].as_array().unwrap().len(), 2, "{embed}");
    assert!(embed["embeddings"][0][0].is_f64(), "{embed}");
    let (status, old) = fleet
        .post_json(
            "/api/embeddings",
            json!({ "model": "embedder", "prompt": "a" }),
        )
        .await;
    assert_eq!(status, 200, "{old}");
    assert!(
        old["embedding"].as_array().is_some_and(|v| !v.is_empty()),
        "{old}"
    );
    assert_eq!(last_request(&fleet).0, "/v1/embeddings");
}

#[tokio::test]
async fn the_ollama_lists_show_openai_only_models_and_untranslatable_requests_say_why() {
    let fleet = openai_fleet().await;
    let tags: Value = fleet.get_json("/api/tags").await;
    let names: Vec<&str> = tags["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"tiny:latest"), "{tags}");
    let (status, show) = fleet
        .post_json("/api/show", json!({ "model": "tiny" }))
        .await;
    assert_eq!(status, 200, "{show}");
    assert!(show["capabilities"].as_array().is_some(), "{show}");

    let (status, refused) = fleet
        .post_json(
            "/api/generate",
            json!({ "model": "tiny", "prompt": "x", "context": [1, 2, 3] }),
        )
        .await;
    assert_eq!(status, 400, "{refused}");
    assert!(
        refused["error"].as_str().unwrap().contains("context"),
        "{refused}"
    );
}

#[tokio::test]
async fn an_alias_spreads_both_apis_over_ollama_and_openai_nodes() {
    let mut fleet = Fleet::empty_with(|c| {
        c.heartbeat_interval = Duration::from_millis(200);
        c.health_check_interval = Duration::from_millis(100);
        c.proxy.balancer = BalancerMode::RoundRobin;
        c.proxy.aliases = llm_router_coordinator::aliases::ModelAliases::parse(&[
            "qwen2.5:7b=Qwen/Qwen2.5-7B-Instruct",
        ])
        .unwrap();
    })
    .await;
    fleet
        .add_node(MockConfig::named("ollama-box").with_models(["qwen2.5:7b"]))
        .await;
    add_openai_node(
        &mut fleet,
        MockConfig::named("vllm-box").with_models(["Qwen/Qwen2.5-7B-Instruct"]),
    )
    .await;

    let mut by_ollama = Vec::new();
    for _ in 0..4 {
        let ollama = fleet
            .post("/api/chat", support::chat("qwen2.5:7b", false))
            .await;
        assert_eq!(ollama.status(), 200);
        by_ollama.push(Fleet::served_by(&ollama));
    }
    let mut by_openai = Vec::new();
    for _ in 0..4 {
        let openai = fleet
            .post(
                "/v1/chat/completions",
                json!({ "model": "qwen2.5:7b", "messages": [{ "role": "user", "content": "hi" }] }),
            )
            .await;
        assert_eq!(openai.status(), 200);
        by_openai.push(Fleet::served_by(&openai));
    }
    for served in [&by_ollama, &by_openai] {
        for name in ["ollama-box", "vllm-box"] {
            assert_eq!(
                served.iter().filter(|s| *s == name).count(),
                2,
                "{served:?}"
            );
        }
    }
    // The OpenAI-style node is asked for the model under its own name.
    let vllm = fleet.node("vllm-box");
    for request in vllm.stats().recorded() {
        let body: Value = serde_json::from_slice(&request.body).unwrap();
        let model = body["model"].as_str().unwrap();
        assert!(
            model.starts_with("Qwen/Qwen2.5-7B-Instruct"),
            "{}: {model}",
            request.path()
        );
    }
    // Listed once, under the logical name.
    let models: Value = fleet.get_json("/v1/models").await;
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["qwen2.5:7b"], "{models}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_report_the_servers_slots_and_requests_go_to_the_free_one() {
    let mut fleet = Fleet::empty_with(|c| {
        c.heartbeat_interval = Duration::from_millis(200);
    })
    .await;
    let mut busy = MockConfig::named("busy-box").with_models(["tiny"]);
    busy.parallel = 1;
    busy.tokens_per_sec = 10.0;
    busy.default_tokens = 300;
    let mut free = MockConfig::named("free-box").with_models(["tiny"]);
    free.parallel = 1;
    free.default_tokens = 4;
    for config in [busy, free] {
        fleet.nodes.push(MockNode::start(config).await.unwrap());
    }
    let data = tempfile::tempdir().unwrap();
    let _agents: Vec<_> = fleet
        .nodes
        .iter()
        .map(|node| {
            let dir = data.path().join(node.name());
            std::fs::create_dir_all(&dir).unwrap();
            fleet.openai_agent(&node.url(), node.name(), &dir)
        })
        .collect();
    support::process::eventually("both nodes online", Duration::from_secs(20), || async {
        let nodes = fleet.agents().await;
        (nodes.len() == 2 && nodes.iter().all(|n| n["status"] == "online")).then_some(())
    })
    .await;

    // Another client of busy-box, not through the router, holds its only slot.
    let direct = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", fleet.node("busy-box").url()))
        .json(&json!({ "model": "tiny", "stream": true, "messages": [{ "role": "user", "content": "long" }] }))
        .send()
        .await
        .unwrap();
    assert_eq!(direct.status(), 200);
    let busy_node = support::process::eventually(
        "busy-box reports its slot busy",
        Duration::from_secs(20),
        || async {
            fleet.agents().await.into_iter().find(|n| {
                n["machine_name"] == "busy-box" && n["server_load"]["requests_running"] == 1
            })
        },
    )
    .await;
    assert_eq!(busy_node["server_load"]["slots_total"], 1, "{busy_node:#}");
    assert_eq!(busy_node["server_load"]["source"], "/slots");

    for _ in 0..4 {
        let response = fleet
            .post(
                "/v1/chat/completions",
                json!({ "model": "tiny", "messages": [{ "role": "user", "content": "hi" }] }),
            )
            .await;
        assert_eq!(response.status(), 200);
        assert_eq!(
            Fleet::served_by(&response),
            "free-box",
            "the busy server was chosen"
        );
    }
    drop(direct);
}
