//! Access control end to end, on a real socket: the node token and per-node
//! credentials, client API keys and their limits, operator login, and the
//! host, origin and CSRF rules.

mod support;

use std::sync::{Arc, Mutex};

use axum::http::HeaderMap;
use futures::StreamExt as _;
use llm_router_coordinator::auth::{AccessSettings, AdminMode};
use llm_router_coordinator::config::Config;
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::fleet::Fleet;

const NODE_TOKEN: &str = "fleet-token-for-tests";
const ADMIN_TOKEN: &str = "admin-token-for-tests";
const PASSWORD: &str = "correct horse battery";

/// A coordinator as it runs when reachable from the network: node token, login.
fn guarded(config: &mut Config) {
    config.access = AccessSettings {
        node_tokens: vec![NODE_TOKEN.to_owned()],
        admin: Some(AdminMode::Auth),
        admin_tokens: vec![ADMIN_TOKEN.to_owned()],
        admin_password: Some(PASSWORD.to_owned()),
        ..AccessSettings::default()
    };
}

fn registration(name: &str, port: u16) -> Value {
    json!({
        "machine_name": name,
        "ip_address": "127.0.0.1",
        "ollama_port": port,
        "models": [{"name": "llama3.2:latest"}],
    })
}

async fn register(fleet: &Fleet, bearer: Option<&str>, body: &Value) -> (StatusCode, Value) {
    let mut request = fleet
        .client
        .post(fleet.url("/api/agents/register"))
        .json(body);
    if let Some(bearer) = bearer {
        request = request.bearer_auth(bearer);
    }
    let response = request.send().await.unwrap();
    (
        response.status(),
        response.json().await.unwrap_or(Value::Null),
    )
}

async fn heartbeat(fleet: &Fleet, id: &str, bearer: Option<&str>) -> StatusCode {
    let mut request = fleet
        .client
        .post(fleet.url(&format!("/api/agents/{id}/heartbeat")))
        .json(&json!({"metrics": {"cpu_percent": 1.0, "memory_percent": 2.0}}));
    if let Some(bearer) = bearer {
        request = request.bearer_auth(bearer);
    }
    request.send().await.unwrap().status()
}

/// `GET path` as an operator holding the admin token.
async fn admin_get(fleet: &Fleet, path: &str) -> Value {
    let response = fleet
        .client
        .get(fleet.url(path))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK, "GET {path}");
    response.json().await.unwrap()
}

#[tokio::test]
async fn registration_needs_the_node_token_and_refusal_adds_nothing() {
    let fleet = Fleet::empty_with(guarded).await;
    for bearer in [None, Some("wrong-token")] {
        let (status, body) = register(&fleet, bearer, &registration("intruder", 11434)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{bearer:?}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains("node token"),
            "{body}"
        );
    }
    assert_eq!(admin_get(&fleet, "/api/agents").await, json!([]));

    let (status, body) = register(&fleet, Some(NODE_TOKEN), &registration("gpu-1", 11434)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let credential = body["node_credential"].as_str().unwrap();
    assert!(credential.starts_with("llmr_nc_"), "{credential}");
    let nodes = admin_get(&fleet, "/api/agents").await;
    assert_eq!(nodes[0]["machine_name"], "gpu-1");
    assert!(
        !nodes.to_string().contains(credential),
        "the credential is never shown"
    );
    fleet.stop().await;
}

#[tokio::test]
async fn holding_only_the_fleet_token_takes_over_no_node() {
    let fleet = Fleet::empty_with(guarded).await;
    let (_, first) = register(&fleet, Some(NODE_TOKEN), &registration("gpu-1", 11434)).await;
    let id = first["node_id"].as_str().unwrap();
    let credential = first["node_credential"].as_str().unwrap();

    // Heartbeats and the goodbye need the node's own credential.
    for bearer in [None, Some(NODE_TOKEN), Some("llmr_nc_guess")] {
        assert_eq!(
            heartbeat(&fleet, id, bearer).await,
            StatusCode::UNAUTHORIZED,
            "{bearer:?}"
        );
        let goodbye = fleet
            .client
            .post(fleet.url(&format!("/api/agents/{id}/shutdown")))
            .bearer_auth(bearer.unwrap_or(""))
            .send()
            .await
            .unwrap();
        assert_eq!(goodbye.status(), StatusCode::UNAUTHORIZED, "{bearer:?}");
    }
    // Re-registering over the node: by its URL and name, by its id, with a guessed credential.
    let same_machine = registration("gpu-1", 11434);
    let (status, body) = register(&fleet, Some(NODE_TOKEN), &same_machine).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let mut by_id = registration("attacker", 9999);
    by_id["node_id"] = json!(id);
    let (status, _) = register(&fleet, Some(NODE_TOKEN), &by_id).await;
    assert_eq!(status, StatusCode::CONFLICT);
    by_id["node_credential"] = json!("llmr_nc_guess");
    let (status, _) = register(&fleet, Some(NODE_TOKEN), &by_id).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Renaming or deleting is for operators, and the fleet token is not theirs.
    let rename = fleet
        .client
        .patch(fleet.url(&format!("/api/agents/{id}")))
        .bearer_auth(NODE_TOKEN)
        .json(&json!({"display_name": "mine now"}))
        .send()
        .await
        .unwrap();
    assert_eq!(rename.status(), StatusCode::UNAUTHORIZED);

    let node = admin_get(&fleet, &format!("/api/agents/{id}")).await;
    assert_eq!(node["api_url"], "http://127.0.0.1:11434");
    assert_eq!(node["status"], "online");
    assert!(node.get("display_name").is_none());

    // The real agent goes on as before, and may register again.
    assert_eq!(
        heartbeat(&fleet, id, Some(credential)).await,
        StatusCode::NO_CONTENT
    );
    let mut again = registration("gpu-1", 11434);
    again["node_id"] = json!(id);
    again["node_credential"] = json!(credential);
    let (status, body) = register(&fleet, Some(NODE_TOKEN), &again).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "updated");
    assert!(
        body.get("node_credential").is_none(),
        "the credential stays as it is"
    );
    fleet.stop().await;
}

#[cfg(unix)]
#[tokio::test]
async fn a_generated_node_token_is_private_and_it_and_node_credentials_survive_a_restart() {
    use std::os::unix::fs::PermissionsExt as _;
    let generate = |config: &mut Config| {
        config.access.generate_node_token = true;
    };
    let fleet = Fleet::empty_with(generate).await;
    let path = fleet.data_dir().join("node-token");
    let token = support::process::eventually(
        "the node token file",
        std::time::Duration::from_secs(10),
        || async { std::fs::read_to_string(&path).ok() },
    )
    .await;
    let token = token.trim().to_owned();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let (status, first) = register(&fleet, Some(&token), &registration("gpu-1", 11434)).await;
    assert_eq!(status, StatusCode::CREATED);
    let id = first["node_id"].as_str().unwrap().to_owned();
    let credential = first["node_credential"].as_str().unwrap().to_owned();
    // The registration is in the journal now, agents.json after the next compaction.
    for file in ["agents.json", "agents.journal"] {
        let path = fleet.data_dir().join(file);
        let stored = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            !stored.contains(&credential),
            "{file}: only a digest is stored"
        );
        if path.exists() {
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{file}");
        }
    }
    let on_disk = support::registry_on_disk(fleet.data_dir());
    assert_eq!(on_disk["nodes"][0]["id"], id.as_str());

    let fleet = fleet.restart_with(generate).await;
    assert_eq!(std::fs::read_to_string(&path).unwrap().trim(), token);
    support::process::eventually(
        "the restarted coordinator",
        std::time::Duration::from_secs(10),
        || async { fleet.client.get(fleet.url("/api/health")).send().await.ok() },
    )
    .await;
    assert_eq!(
        heartbeat(&fleet, &id, Some(&credential)).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(heartbeat(&fleet, &id, None).await, StatusCode::UNAUTHORIZED);
    let (status, _) = register(&fleet, Some(&token), &registration("gpu-1", 11434)).await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "the node is still its agent's"
    );
    fleet.stop().await;
}

/// A node that answers `/api/chat` and remembers the `Authorization` and `Cookie` it
/// got. A streamed chat sends one line and then never ends.
struct RecordingNode {
    port: u16,
    seen: SeenHeaders,
}

/// The `Authorization` and `Cookie` of each request a node got.
type SeenHeaders = Arc<Mutex<Vec<(Option<String>, Option<String>)>>>;

async fn recording_node() -> RecordingNode {
    let seen = SeenHeaders::default();
    let recorded = Arc::clone(&seen);
    let app = axum::Router::new().route(
        "/api/chat",
        axum::routing::post(
            move |headers: HeaderMap, axum::Json(request): axum::Json<Value>| {
                let recorded = Arc::clone(&recorded);
                async move {
                    let get = |name: &str| {
                        headers
                            .get(name)
                            .map(|v| v.to_str().unwrap_or_default().to_owned())
                    };
                    recorded
                        .lock()
                        .unwrap()
                        .push((get("authorization"), get("cookie")));
                    if request["stream"] == true {
                        let first = futures::stream::once(async {
                            Ok::<_, std::io::Error>(bytes::Bytes::from_static(
                                b"{\"message\":{\"content\":\"he\"},\"done\":false}\n",
                            ))
                        });
                        let endless = first.chain(futures::stream::pending());
                        return axum::response::IntoResponse::into_response(
                            axum::body::Body::from_stream(endless),
                        );
                    }
                    axum::response::IntoResponse::into_response(axum::Json(json!({
                        "model": "llama3.2:latest",
                        "message": {"role": "assistant", "content": "hello"},
                        "done": true, "done_reason": "stop"
                    })))
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    RecordingNode { port, seen }
}

fn chat() -> Value {
    json!({"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}], "stream": false})
}

async fn send_stream(fleet: &Fleet, key: &str) -> reqwest::Response {
    let mut body = chat();
    body["stream"] = json!(true);
    fleet
        .client
        .post(fleet.url("/api/chat"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// A coordinator that requires API keys, with one recording node; returns a key.
async fn keyed_fleet(limits: Value) -> (Fleet, RecordingNode, String) {
    let fleet = Fleet::empty_with(|config| {
        guarded(config);
        config.access.require_api_key = true;
    })
    .await;
    let node = recording_node().await;
    let mut body = registration("gpu-1", node.port);
    body["node_api_key"] = json!("the-nodes-own-key");
    let (status, _) = register(&fleet, Some(NODE_TOKEN), &body).await;
    assert_eq!(status, StatusCode::CREATED);
    let mut create = json!({"name": "alice"});
    create
        .as_object_mut()
        .unwrap()
        .extend(limits.as_object().unwrap().clone());
    let created = fleet
        .client
        .post(fleet.url("/api/keys"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&create)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let created: Value = created.json().await.unwrap();
    let key = created["key"].as_str().unwrap().to_owned();
    (fleet, node, key)
}

async fn send_chat(fleet: &Fleet, path: &str, key: Option<&str>) -> reqwest::Response {
    let mut request = fleet
        .client
        .post(fleet.url(path))
        .header("cookie", "tracking=secret-cookie")
        .json(&chat());
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn required_keys_guard_inference_and_a_revoked_key_stops_at_once() {
    let (fleet, node, key) = keyed_fleet(json!({})).await;

    let refused = send_chat(&fleet, "/api/chat", None).await;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let body: Value = refused.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("API key"),
        "{body}"
    );
    let refused = send_chat(&fleet, "/v1/chat/completions", Some("llmr_not-a-key")).await;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(
        body["error"]["code"], "invalid_api_key",
        "OpenAI's format: {body}"
    );
    let listing = fleet
        .client
        .get(fleet.url("/api/tags"))
        .send()
        .await
        .unwrap();
    assert_eq!(listing.status(), StatusCode::UNAUTHORIZED);
    let version = fleet
        .client
        .get(fleet.url("/api/version"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        version.status(),
        StatusCode::OK,
        "probes stay open as on Ollama"
    );

    let served = send_chat(&fleet, "/api/chat", Some(&key)).await;
    assert_eq!(served.status(), StatusCode::OK);
    let seen = node.seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        [(Some("Bearer the-nodes-own-key".to_owned()), None)],
        "the node gets its own key, never the client's key or cookies"
    );

    let revoked = fleet
        .client
        .delete(fleet.url("/api/keys/alice"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        send_chat(&fleet, "/api/chat", Some(&key)).await.status(),
        StatusCode::UNAUTHORIZED
    );
    fleet.stop().await;
}

#[tokio::test]
async fn a_keys_rate_limit_answers_429_with_retry_after() {
    let (fleet, _node, key) = keyed_fleet(json!({"requests_per_minute": 2})).await;
    for _ in 0..2 {
        assert_eq!(
            send_chat(&fleet, "/api/chat", Some(&key)).await.status(),
            StatusCode::OK
        );
    }
    let limited = send_chat(&fleet, "/v1/chat/completions", Some(&key)).await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=30).contains(&retry_after), "{retry_after}");
    let body: Value = limited.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limit_exceeded", "{body}");
    fleet.stop().await;
}

#[tokio::test]
async fn a_keys_concurrency_limit_refuses_the_request_beyond_it() {
    let (fleet, _node, key) = keyed_fleet(json!({"max_concurrent": 1})).await;
    // A stream still running holds the key's one slot until it ends.
    let held = send_stream(&fleet, &key).await;
    assert_eq!(held.status(), StatusCode::OK);
    let second = send_chat(&fleet, "/api/chat", Some(&key)).await;
    assert_eq!(second.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(second.headers().contains_key("retry-after"));
    drop(held);
    support::process::eventually(
        "the slot to be released",
        std::time::Duration::from_secs(10),
        || async {
            (send_chat(&fleet, "/api/chat", Some(&key)).await.status() == StatusCode::OK)
                .then_some(())
        },
    )
    .await;
    fleet.stop().await;
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

#[tokio::test]
async fn without_a_login_the_management_side_history_and_dashboard_are_refused() {
    let fleet = Fleet::empty_with(guarded).await;
    let client = no_redirects();
    for path in [
        "/api/agents",
        "/api/history",
        "/api/history/1",
        "/api/history/export?format=csv",
        "/api/history/timeseries?minutes=60",
        "/api/events",
        "/api/keys",
    ] {
        let response = client.get(fleet.url(path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{path}");
    }
    let page = client.get(fleet.url("/dashboard")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::SEE_OTHER);
    assert_eq!(page.headers()["location"], "/login");
    let login = client.get(fleet.url("/login")).send().await.unwrap();
    assert_eq!(login.status(), StatusCode::OK);
    let added = client
        .post(fleet.url("/api/nodes"))
        .json(&json!({"api_url": "http://127.0.0.1:9"}))
        .send()
        .await
        .unwrap();
    assert_eq!(added.status(), StatusCode::UNAUTHORIZED);
    fleet.stop().await;
}

#[tokio::test]
async fn login_opens_the_management_side_until_logout_and_wrong_passwords_are_slowed() {
    let fleet = Fleet::empty_with(guarded).await;
    let client = no_redirects();
    let login = |password: &'static str| {
        client
            .post(fleet.url("/api/auth/login"))
            .json(&json!({ "password": password }))
            .send()
    };
    assert_eq!(
        login("wrong").await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    let ok = login(PASSWORD).await.unwrap();
    assert_eq!(ok.status(), StatusCode::NO_CONTENT);
    let cookie = ok.headers()["set-cookie"].to_str().unwrap().to_owned();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    let session = cookie.split(';').next().unwrap().to_owned();
    let with_session = |path: &str| {
        client
            .get(fleet.url(path))
            .header("cookie", session.clone())
            .send()
    };
    assert_eq!(
        with_session("/api/agents").await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(
        with_session("/dashboard").await.unwrap().status(),
        StatusCode::OK
    );

    let logout = client
        .post(fleet.url("/api/auth/logout"))
        .header("cookie", session.clone())
        .header("x-requested-with", "test")
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        with_session("/api/agents").await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );

    // The login above cleared the address's one failure: five wrong ones, then it must wait.
    for _ in 0..5 {
        assert_eq!(
            login("wrong").await.unwrap().status(),
            StatusCode::UNAUTHORIZED
        );
    }
    let throttled = login(PASSWORD).await.unwrap();
    assert_eq!(throttled.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(throttled.headers().contains_key("retry-after"));
    fleet.stop().await;
}

#[tokio::test]
async fn a_cross_site_form_a_foreign_origin_and_a_foreign_host_are_refused() {
    // Loopback-only and open: the case a hostile page in the operator's browser aims at.
    let fleet = Fleet::empty_with(|_| {}).await;
    let (_, first) = register(&fleet, None, &registration("gpu-1", 11434)).await;
    let id = first["node_id"].as_str().unwrap();
    let disconnect = fleet.url(&format!("/api/agents/{id}/disconnect"));

    let form = fleet
        .client
        .post(&disconnect)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("x=1")
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), StatusCode::FORBIDDEN);
    let foreign = fleet
        .client
        .post(&disconnect)
        .header("origin", "http://evil.example")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), StatusCode::FORBIDDEN);
    assert!(
        !foreign
            .headers()
            .contains_key("access-control-allow-origin")
    );
    let rebound = fleet
        .client
        .get(fleet.url("/api/agents"))
        .header("host", format!("evil.example:{}", fleet.addr.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(rebound.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        admin_get(&fleet, &format!("/api/agents/{id}")).await["status"],
        "online"
    );

    // The dashboard's own request: same origin, custom header.
    let own = fleet
        .client
        .post(&disconnect)
        .header("origin", format!("http://{}", fleet.addr))
        .header("x-requested-with", "llm-router-dashboard")
        .send()
        .await
        .unwrap();
    assert_eq!(own.status(), StatusCode::OK);
    let by_name = fleet
        .client
        .get(fleet.url("/api/agents"))
        .header("host", format!("localhost:{}", fleet.addr.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(by_name.status(), StatusCode::OK);
    fleet.stop().await;
}

#[tokio::test]
async fn allowed_origins_may_call_the_inference_api_and_never_the_management_api() {
    let fleet = Fleet::empty_with(|config| {
        config.access.origins = vec!["https://chat.example".to_owned()];
    })
    .await;
    let preflight = |origin: &'static str, path: &'static str| {
        fleet
            .client
            .request(reqwest::Method::OPTIONS, fleet.url(path))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "content-type,authorization",
            )
            .send()
    };
    for origin in ["http://localhost:3000", "https://chat.example"] {
        let answer = preflight(origin, "/api/chat").await.unwrap();
        assert!(
            answer.status().is_success(),
            "{origin}: {}",
            answer.status()
        );
        assert_eq!(answer.headers()["access-control-allow-origin"], origin);
    }
    let answer = preflight("http://evil.example", "/v1/chat/completions")
        .await
        .unwrap();
    assert!(!answer.headers().contains_key("access-control-allow-origin"));
    let answer = preflight("http://localhost:3000", "/api/agents")
        .await
        .unwrap();
    assert!(!answer.headers().contains_key("access-control-allow-origin"));
    let read = fleet
        .client
        .get(fleet.url("/api/agents"))
        .header("origin", "http://localhost:3000")
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), StatusCode::FORBIDDEN);
    fleet.stop().await;
}

#[tokio::test]
async fn the_metrics_token_guards_metrics_when_set() {
    let fleet = Fleet::empty_with(|config| {
        config.access.metrics_token = Some("scrape".to_owned());
    })
    .await;
    let get = |token: Option<&'static str>| {
        let mut request = fleet.client.get(fleet.url("/metrics"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    assert_eq!(get(None).await.unwrap().status(), StatusCode::UNAUTHORIZED);
    assert_eq!(get(Some("scrape")).await.unwrap().status(), StatusCode::OK);
    fleet.stop().await;
}
