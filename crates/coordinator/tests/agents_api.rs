//! The management API through the router, without sockets.

mod support;

use axum::http::{Method, StatusCode};
use serde_json::json;
use support::{TestCoordinator, registration};

#[tokio::test]
async fn register_then_list_shows_the_node_online_with_its_details() {
    let dir = tempfile::tempdir().unwrap();
    let c = TestCoordinator::start(dir.path());
    let (status, body) = c.register("gpu-1", 11434).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(body["status"], "registered");
    assert_eq!(body["heartbeat_interval_secs"], 10);
    let id = body["node_id"].as_str().unwrap().to_owned();

    let (status, nodes) = c.call(Method::GET, "/api/agents", None).await;
    assert_eq!(status, StatusCode::OK);
    let node = &nodes[0];
    assert_eq!(node["id"], id);
    assert_eq!(node["machine_name"], "gpu-1");
    assert_eq!(node["status"], "online");
    assert_eq!(node["ip_address"], "127.0.0.1");
    assert_eq!(node["api_url"], "http://127.0.0.1:11434");
    assert_eq!(node["ollama_version"], "0.12.0");
    assert_eq!(node["models"][0]["name"], "llama3.2:latest");
    assert_eq!(node["system_info"]["cpu_cores"], 8);
    assert_eq!(node["in_flight"], 0);

    let (status, again) = c.register("gpu-1", 11434).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again["status"], "updated");
    assert_eq!(again["node_id"], id);
    c.stop().await;
}

#[tokio::test]
async fn management_actions_change_the_node() {
    let dir = tempfile::tempdir().unwrap();
    let c = TestCoordinator::start(dir.path());
    let id = c.register_id("gpu-1", 11434).await;
    let node_uri = format!("/api/agents/{id}");

    let (status, node) = c
        .call(
            Method::PATCH,
            &node_uri,
            Some(r#"{"display_name":"Big GPU","tags":["gpu","rack-2"],"notes":"4090","draining":true}"#),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(node["display_name"], "Big GPU");
    assert_eq!(node["tags"], json!(["gpu", "rack-2"]));
    assert_eq!(node["notes"], "4090");
    assert_eq!(node["status"], "draining");

    let (status, node) = c
        .call(Method::PATCH, &node_uri, Some(r#"{"draining":false}"#))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(node["status"], "online");

    let (status, node) = c
        .call(Method::POST, &format!("{node_uri}/disconnect"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(node["status"], "offline");
    assert_eq!(node["status_reason"], "disconnected by an operator");

    let (status, _) = c
        .call(
            Method::POST,
            &format!("{node_uri}/heartbeat"),
            Some(r#"{"metrics":{"cpu_percent":12.5,"memory_percent":40}}"#),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, node) = c.call(Method::GET, &node_uri, None).await;
    assert_eq!(node["status"], "online");
    assert_eq!(node["metrics"]["cpu_percent"], 12.5);

    let (status, _) = c
        .call(Method::POST, &format!("{node_uri}/shutdown"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, node) = c.call(Method::GET, &node_uri, None).await;
    assert_eq!(node["status"], "offline");
    assert_eq!(node["status_reason"], "agent shut down");

    let (status, _) = c.call(Method::DELETE, &node_uri, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = c.call(Method::GET, &node_uri, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body["error"].as_str().unwrap().contains(&id));
    c.stop().await;
}

/// The registry on disk in `dir`, as a restarted coordinator would read it.
fn agents_file(dir: &std::path::Path) -> serde_json::Value {
    support::registry_on_disk(dir)
}

#[tokio::test]
async fn acknowledged_changes_are_on_disk_when_the_answer_arrives() {
    let dir = tempfile::tempdir().unwrap();
    let c = TestCoordinator::start(dir.path());
    let id = c.register_id("gpu-1", 11434).await;
    let on_disk = agents_file(dir.path());
    assert_eq!(on_disk["nodes"][0]["id"], id);

    c.call(
        Method::PATCH,
        &format!("/api/agents/{id}"),
        Some(r#"{"notes":"kept"}"#),
    )
    .await;
    let on_disk = agents_file(dir.path());
    assert_eq!(on_disk["nodes"][0]["notes"], "kept");
    c.stop().await;
}

#[tokio::test]
async fn registry_survives_a_restart_with_ids_and_operator_fields() {
    let dir = tempfile::tempdir().unwrap();
    let c = TestCoordinator::start(dir.path());
    let id = c.register_id("gpu-1", 11434).await;
    c.call(
        Method::PATCH,
        &format!("/api/agents/{id}"),
        Some(r#"{"tags":["a"]}"#),
    )
    .await;
    let credential = c.credential(&id).unwrap();
    c.stop().await;

    let c = TestCoordinator::start(dir.path());
    let (status, node) = c
        .call(Method::GET, &format!("/api/agents/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(node["tags"], json!(["a"]));
    // The agent's credential is still its own after the restart.
    let heartbeat = format!("/api/agents/{id}/heartbeat");
    let (status, _) = c
        .call_as(Method::POST, &heartbeat, Some("{}"), Some(&credential))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = c.call_as(Method::POST, &heartbeat, Some("{}"), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    c.stop().await;
}

#[tokio::test]
async fn corrupt_registry_file_is_moved_aside_and_the_coordinator_starts_empty() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("agents.json"), b"{ this is not json").unwrap();
    let c = TestCoordinator::start(dir.path());
    let (_, nodes) = c.call(Method::GET, "/api/agents", None).await;
    assert_eq!(nodes, json!([]));
    let aside: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("agents.json.corrupt-"))
        .collect();
    assert_eq!(aside.len(), 1, "corrupt file not kept aside: {aside:?}");
    assert_eq!(
        std::fs::read(dir.path().join(&aside[0])).unwrap(),
        b"{ this is not json"
    );
    c.stop().await;
}

/// Every endpoint answers bad input with a 4xx and a JSON `error` that says what is wrong.
#[tokio::test]
async fn bad_inputs_get_4xx_json_errors() {
    let dir = tempfile::tempdir().unwrap();
    let c = TestCoordinator::start(dir.path());
    let id = c.register_id("gpu-1", 11434).await;
    let unknown = uuid::Uuid::new_v4();
    let huge_name = "x".repeat(300);
    let too_many_models = json!({
        "machine_name": "m", "ip_address": "127.0.0.1",
        "models": (0..5000).map(|i| json!({"name": format!("m{i}")})).collect::<Vec<_>>()
    })
    .to_string();
    let oversized = format!(
        r#"{{"machine_name":"{}","ip_address":"127.0.0.1"}}"#,
        "x".repeat(3 * 1024 * 1024)
    );

    let hb = |target: &str| format!("/api/agents/{target}/heartbeat");
    let register = |body: &str, expected, message| {
        (
            Method::POST,
            "/api/agents/register".to_owned(),
            Some(body.to_owned()),
            expected,
            message,
        )
    };
    let node = format!("/api/agents/{id}");
    let patch = |body: &str, expected, message| {
        (
            Method::PATCH,
            node.clone(),
            Some(body.to_owned()),
            expected,
            message,
        )
    };
    let cases: Vec<(Method, String, Option<String>, StatusCode, &str)> = vec![
        register("{not json", StatusCode::BAD_REQUEST, "malformed JSON"),
        register(
            r#"{"ip_address":"127.0.0.1"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "machine_name",
        ),
        register(
            r#"{"machine_name":"m","ip_address":"not-an-ip"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "ip_address",
        ),
        register(
            r#"{"machine_name":"m","ip_address":"127.0.0.1","ollama_port":"x"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "ollama_port",
        ),
        register(
            r#"{"machine_name":"m","ip_address":"127.0.0.1","ollama_port":70000}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "ollama_port",
        ),
        register(
            r#"{"machine_name":"   ","ip_address":"127.0.0.1"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "machine_name must not be empty",
        ),
        register(
            &format!(r#"{{"machine_name":"{huge_name}","ip_address":"127.0.0.1"}}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
            "limit",
        ),
        register(
            r#"{"machine_name":"m","ip_address":"0.0.0.0"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "ip_address",
        ),
        register(
            r#"{"machine_name":"m","ip_address":"127.0.0.1","api_url":"ftp://x"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "api_url",
        ),
        register(
            &too_many_models,
            StatusCode::UNPROCESSABLE_ENTITY,
            "limit is 4096",
        ),
        register(&oversized, StatusCode::PAYLOAD_TOO_LARGE, "larger than"),
        register(
            "[]",
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid request body",
        ),
        (
            Method::POST,
            hb(&unknown.to_string()),
            Some("{}".into()),
            StatusCode::NOT_FOUND,
            "not registered",
        ),
        (
            Method::POST,
            hb("not-a-uuid"),
            Some("{}".into()),
            StatusCode::BAD_REQUEST,
            "invalid path parameter",
        ),
        (
            Method::POST,
            hb(&id),
            Some("{\"metrics\":".into()),
            StatusCode::BAD_REQUEST,
            "malformed JSON",
        ),
        (
            Method::POST,
            hb(&id),
            Some(r#"{"metrics":{"cpu_percent":"high"}}"#.into()),
            StatusCode::UNPROCESSABLE_ENTITY,
            "cpu_percent",
        ),
        (
            Method::POST,
            hb(&id),
            Some(r#"{"metrics":{"cpu_percent":-5}}"#.into()),
            StatusCode::UNPROCESSABLE_ENTITY,
            "percentage",
        ),
        (
            Method::GET,
            format!("/api/agents/{unknown}"),
            None,
            StatusCode::NOT_FOUND,
            "not registered",
        ),
        (
            Method::GET,
            "/api/agents/123".into(),
            None,
            StatusCode::BAD_REQUEST,
            "invalid path parameter",
        ),
        patch("{}", StatusCode::UNPROCESSABLE_ENTITY, "nothing to change"),
        patch(
            r#"{"colour":"red"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown field",
        ),
        patch(
            r#"{"tags":"gpu"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "tags",
        ),
        patch(
            &format!(r#"{{"display_name":"{huge_name}"}}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
            "display_name",
        ),
        patch(
            r#"{"draining":"yes"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "draining",
        ),
        (
            Method::PATCH,
            format!("/api/agents/{unknown}"),
            Some(r#"{"notes":"x"}"#.into()),
            StatusCode::NOT_FOUND,
            "not registered",
        ),
        (
            Method::POST,
            format!("/api/agents/{unknown}/disconnect"),
            None,
            StatusCode::NOT_FOUND,
            "not registered",
        ),
        (
            Method::POST,
            format!("/api/agents/{unknown}/shutdown"),
            None,
            StatusCode::NOT_FOUND,
            "not registered",
        ),
        (
            Method::DELETE,
            format!("/api/agents/{unknown}"),
            None,
            StatusCode::NOT_FOUND,
            "not registered",
        ),
        (
            Method::GET,
            "/api/nothing-here".into(),
            None,
            StatusCode::NOT_FOUND,
            "no route",
        ),
    ];
    for (method, uri, body, expected, message) in cases {
        let (status, json) = c.call(method.clone(), &uri, body.as_deref()).await;
        assert_eq!(
            status,
            expected,
            "{method} {uri} {:?}: {json}",
            body.as_deref().map(|b| &b[..b.len().min(80)])
        );
        let error = json["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{method} {uri}: no error string in {json}"));
        assert!(
            error.contains(message),
            "{method} {uri}: {error:?} does not mention {message:?}"
        );
    }
    // Nothing was changed by the rejected requests.
    let (_, nodes) = c.call(Method::GET, "/api/agents", None).await;
    assert_eq!(nodes.as_array().unwrap().len(), 1);
    assert_eq!(nodes[0]["status"], "online");
    c.stop().await;
}

#[tokio::test]
async fn a_missing_content_type_is_415_json() {
    let dir = tempfile::tempdir().unwrap();
    let c = TestCoordinator::start(dir.path());
    let request = axum::http::Request::post("/api/agents/register")
        .body(axum::body::Body::from(registration("m", 1)))
        .unwrap();
    let response = tower::ServiceExt::oneshot(c.app(), request).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let bytes = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert!(json["error"].as_str().unwrap().contains("application/json"));
    c.stop().await;
}

#[tokio::test]
async fn every_response_carries_a_request_id_and_echoes_the_clients() {
    let dir = tempfile::tempdir().unwrap();
    let c = TestCoordinator::start(dir.path());
    let request = axum::http::Request::get("/api/agents")
        .header("x-request-id", "client-chosen-42")
        .body(axum::body::Body::empty())
        .unwrap();
    let response = tower::ServiceExt::oneshot(c.app(), request).await.unwrap();
    assert_eq!(response.headers()["x-request-id"], "client-chosen-42");
    let request = axum::http::Request::get("/api/agents")
        .body(axum::body::Body::empty())
        .unwrap();
    let response = tower::ServiceExt::oneshot(c.app(), request).await.unwrap();
    assert!(!response.headers()["x-request-id"].is_empty());
    c.stop().await;
}
