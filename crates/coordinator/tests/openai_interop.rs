//! A server that speaks only OpenAI's API, as llama.cpp's server does, added
//! by URL: its model names are kept as it serves them, an Ollama request for
//! its model is translated and its refusal passed on, its error answers are recorded as
//! failures with its words, and "I cannot embed" does not take it out of
//! rotation. The server is a small fake with llama.cpp's answers.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};
use support::chat;
use support::fleet::Fleet;
use support::process::eventually;

const DEADLINE: Duration = Duration::from_secs(10);

/// Chats: 400 with an empty body (what llama-cpp-python answered to a request
/// id it did not like); embeddings: llama.cpp's 500 for a chat-only model.
async fn chat_only_server(embeddings: Arc<AtomicUsize>) -> String {
    let app = Router::new()
        .route(
            "/v1/models",
            get(|| async { Json(json!({"object": "list", "data": [{"id": "tiny", "object": "model"}]})) }),
        )
        .route(
            "/v1/chat/completions",
            post(|| async { StatusCode::BAD_REQUEST }),
        )
        .route(
            "/v1/embeddings",
            post(move || {
                embeddings.fetch_add(1, Ordering::Relaxed);
                async {
                    (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        Json(json!({"error": {
                            "message": "Llama model must be created with embedding=True to call this method",
                            "type": "internal_server_error"
                        }})),
                    )
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_openai_style_server_keeps_its_names_its_errors_and_its_place_in_rotation() {
    let fleet = Fleet::empty_with(|c| {
        c.heartbeat_interval = Duration::from_millis(200);
        c.health_check_interval = Duration::from_millis(100);
    })
    .await;
    let embeddings = Arc::new(AtomicUsize::new(0));
    let server = chat_only_server(Arc::clone(&embeddings)).await;
    let (status, added) = fleet
        .post_json("/api/nodes", json!({"api_url": server, "kind": "openai"}))
        .await;
    assert_eq!(status, 201, "{added}");
    let id = added["id"].as_str().unwrap().to_owned();
    fleet.wait_for_status(&id, "online").await;

    // Listed as the server lists it.
    let models: Value = fleet.get_json("/v1/models").await;
    assert_eq!(models["data"][0]["id"], "tiny", "{models}");

    // An Ollama client's chat is translated for it, and its refusal comes back in
    // Ollama's error format.
    let (status, answer) = fleet.post_json("/api/chat", chat("tiny", false)).await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer, json!({"error": "(empty body)"}));

    // "Cannot embed" is about embeddings, not the node: alone, it is still
    // tried as the last resort; beside an Ollama node that embeds, it is asked
    // once, and then the other answers.
    let embed = || fleet.post("/v1/embeddings", json!({"model": "tiny", "input": "hello"}));
    assert!(embed().await.status().is_server_error());
    assert_eq!(embeddings.load(Ordering::Relaxed), 1);
    let node = fleet.agent(&id).await.unwrap();
    assert_eq!(node["status"], "online", "{node:#}");
    // Its error answer is passed on, and recorded as the failure it is.
    let response = fleet
        .post(
            "/v1/chat/completions",
            json!({"model": "tiny", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(response.status(), 400);
    let entry = eventually("the chat in the history", DEADLINE, || async {
        let (_, list) = fleet
            .get_status_json("/api/history?endpoint=/v1/chat/completions")
            .await;
        list["items"]
            .as_array()?
            .iter()
            .find(|item| item["endpoint"] == "/v1/chat/completions")
            .cloned()
    })
    .await;
    assert_eq!(entry["status"], 400, "{entry}");
    assert_eq!(entry["outcome"], "failed", "{entry}");
    assert_eq!(
        entry["error"], "the node answered 400: (empty body)",
        "{entry}"
    );
    fleet.stop().await;
}

/// `llm-router-agent --backend openai` in front of such a server: the node
/// registers as OpenAI-style, with the server's models as it names them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_with_the_openai_backend_registers_the_server_as_such() {
    let fleet = Fleet::empty_with(|_| {}).await;
    let server = chat_only_server(Arc::new(AtomicUsize::new(0))).await;
    let data = tempfile::tempdir().unwrap();
    let _agent = fleet.openai_agent(&server, "llama-box", data.path());
    let node = eventually("the node online", DEADLINE, || async {
        let node = fleet.agents().await.into_iter().next()?;
        (node["status"] == "online").then_some(node)
    })
    .await;
    assert_eq!(node["api_kind"], "openai", "{node:#}");
    assert_eq!(node["models"][0]["name"], "tiny", "{node:#}");
    assert_eq!(node["agentless"], false, "{node:#}");
    let models: Value = fleet.get_json("/v1/models").await;
    assert_eq!(models["data"][0]["id"], "tiny", "{models}");
    // OpenAI requests reach it (this server refuses chats with a 400).
    let response = fleet
        .post(
            "/v1/chat/completions",
            json!({"model": "tiny", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(response.status(), 400);
    assert_eq!(response.headers()["x-llm-router-node"], "llama-box");
    fleet.stop().await;
}
