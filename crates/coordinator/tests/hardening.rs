//! What a misbehaving node or a hostile web page can get through the proxy: a node's
//! answer reaches the client only with the headers a client of the API needs, and
//! inference takes no body a cross-site form could send.

mod support;

use std::time::Duration;

use llm_router_coordinator::config::BalancerMode;
use llm_router_mock_node::{Endpoint, MockConfig};
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::fleet::Fleet;
use support::process::eventually;

fn chat() -> Value {
    json!({"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}], "stream": false})
}

#[tokio::test]
async fn a_hostile_nodes_cookies_cors_grants_and_html_never_reach_the_client() {
    let fleet = Fleet::start(vec![MockConfig {
        hostile_headers: true,
        ..MockConfig::named("hostile")
    }])
    .await;
    for path in ["/api/chat", "/v1/chat/completions"] {
        let answer = fleet
            .client
            .post(fleet.url(path))
            .header("origin", "http://evil.example")
            .json(&chat())
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::OK, "{path}");
        let headers = answer.headers();
        assert!(!headers.contains_key("set-cookie"), "{path}: {headers:?}");
        assert!(
            !headers.contains_key("access-control-allow-origin"),
            "{path}: {headers:?}"
        );
        assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
        let content_type = headers["content-type"].to_str().unwrap();
        assert!(
            content_type.starts_with("text/plain"),
            "{path}: the node's text/html came through as {content_type}"
        );
        // The answer itself is untouched.
        let body: Value = answer.json().await.unwrap();
        assert!(body.get("message").is_some() || body.get("choices").is_some());
    }
    fleet.stop().await;
}

#[tokio::test]
async fn the_routers_own_answers_carry_nosniff() {
    let fleet = Fleet::empty_with(|_| {}).await;
    for path in ["/api/tags", "/api/health", "/no/such/path"] {
        let answer = fleet.get(path).await;
        assert_eq!(
            answer.headers()["x-content-type-options"],
            "nosniff",
            "{path}"
        );
    }
    fleet.stop().await;
}

#[tokio::test]
async fn inference_refuses_bodies_a_cross_site_form_can_send() {
    let fleet = Fleet::start(vec![MockConfig::named("node")]).await;
    let body = chat().to_string();
    let send = |content_type: &'static str, origin: Option<&'static str>, path: &'static str| {
        let mut request = fleet
            .client
            .post(fleet.url(path))
            .header("content-type", content_type)
            .body(body.clone());
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        request.send()
    };
    for (content_type, origin) in [
        ("text/plain", None),
        ("text/plain;charset=UTF-8", Some("http://evil.example")),
        ("multipart/form-data; boundary=x", None),
        (
            "application/x-www-form-urlencoded",
            Some("http://evil.example"),
        ),
    ] {
        for path in ["/api/chat", "/v1/chat/completions"] {
            let answer = send(content_type, origin, path).await.unwrap();
            assert_eq!(
                answer.status(),
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "{content_type} from {origin:?} to {path}"
            );
            let error: Value = answer.json().await.unwrap();
            let message = if path.starts_with("/v1") {
                error["error"]["message"].as_str().unwrap().to_owned()
            } else {
                error["error"].as_str().unwrap().to_owned()
            };
            assert!(message.contains("JSON"), "{path}: {message}");
        }
    }
    let stats = fleet.node("node").stats();
    assert_eq!(
        stats.requests(Endpoint::Chat) + stats.requests(Endpoint::OpenAiChat),
        0,
        "a refused body reached the node"
    );
    // `curl -d '{...}'`, as Ollama's own examples call the API, labels JSON as a form.
    let curl = send("application/x-www-form-urlencoded", None, "/api/chat")
        .await
        .unwrap();
    assert_eq!(curl.status(), StatusCode::OK);
    let json = send(
        "application/json",
        Some("http://localhost:3000"),
        "/api/chat",
    )
    .await
    .unwrap();
    assert_eq!(json.status(), StatusCode::OK);
    fleet.stop().await;
}

#[tokio::test]
async fn nodes_by_url_refuse_the_coordinator_itself_credentials_and_other_schemes() {
    let fleet = Fleet::empty_with(|_| {}).await;
    let port = fleet.addr.port();
    for (url, reason) in [
        (format!("http://127.0.0.1:{port}"), "coordinator itself"),
        (format!("http://localhost:{port}/"), "coordinator itself"),
        (
            "http://admin:hunter2@127.0.0.1:9".to_owned(),
            "user name or password",
        ),
        ("ftp://127.0.0.1:21".to_owned(), "http:// or https://"),
        ("file:///etc/passwd".to_owned(), "http:// or https://"),
    ] {
        let (status, error) = fleet
            .post_json("/api/nodes", json!({ "api_url": url }))
            .await;
        assert_eq!(status, 422, "{url}: {error}");
        let message = error["error"].as_str().unwrap();
        assert!(message.contains(reason), "{url}: {message}");
        assert!(!message.contains("hunter2"), "{url}: {message}");
    }
    assert_eq!(fleet.agents().await, Vec::<Value>::new());
    fleet.stop().await;
}

#[tokio::test]
async fn nodes_by_url_must_be_inside_the_node_networks() {
    let mut fleet = Fleet::empty_with(|config| {
        config.access.node_networks = vec!["10.0.0.0/8".parse().unwrap()];
    })
    .await;
    let (status, error) = fleet
        .post_json("/api/nodes", json!({"api_url": "http://127.0.0.1:9"}))
        .await;
    assert_eq!(status, 422, "{error}");
    assert!(
        error["error"].as_str().unwrap().contains("--node-networks"),
        "{error}"
    );
    // Agents register themselves; the allowlist is for what an operator adds by URL.
    fleet.add_node(MockConfig::named("agent-node")).await;
    assert_eq!(fleet.agents().await.len(), 1);
    fleet.stop().await;
}

/// Open file descriptors of this process (Linux).
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[tokio::test]
async fn a_loop_through_two_coordinators_ends_at_the_second_hop() {
    let a = Fleet::empty_with(|_| {}).await;
    let b = Fleet::empty_with(|_| {}).await;
    // Each coordinator registered as a node of the other, as a confused agent could.
    for (fleet, other) in [(&a, &b), (&b, &a)] {
        let (status, answer) = fleet
            .post_json(
                "/api/agents/register",
                json!({
                    "machine_name": format!("router-{}", other.addr.port()),
                    "ip_address": "127.0.0.1",
                    "ollama_port": other.addr.port(),
                    "models": [{"name": "llama3.2"}],
                }),
            )
            .await;
        assert_eq!(status, 201, "{answer}");
    }
    let before = open_fds();
    let (status, error) = a.post_json("/api/chat", chat()).await;
    assert_eq!(status, 502, "{error}");
    let message = error["error"].as_str().unwrap();
    assert!(
        message.contains("508") && message.contains("loop"),
        "{message}"
    );
    let after = open_fds();
    assert!(
        after <= before + 16,
        "file descriptors grew from {before} to {after}"
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn odd_search_terms_get_an_answer_not_a_server_error() {
    let fleet = Fleet::start(vec![MockConfig::named("node")]).await;
    assert_eq!(
        fleet.post("/api/chat", chat()).await.status(),
        StatusCode::OK
    );
    for q in ["%00%ff", "%22", "%00", "NEAR(", "a%22b%20OR%20c*", "%ff%fe"] {
        let answer = fleet.get(&format!("/api/history?q={q}")).await;
        let status = answer.status();
        assert!(
            status == StatusCode::OK || status == StatusCode::BAD_REQUEST,
            "?q={q}: {status}"
        );
        let body: Value = answer.json().await.unwrap();
        if status == StatusCode::OK {
            assert_eq!(body["total"], 0, "?q={q}: {body}");
        } else {
            assert!(body["error"].is_string(), "?q={q}: {body}");
        }
    }
    let (status, health) = fleet.get_status_json("/api/health").await;
    assert_eq!((status, health["status"].as_str()), (200, Some("ok")));
    fleet.stop().await;
}

/// A streamed chat; answers the node that served it and whether its last line is an error.
async fn stream_once(fleet: &Fleet) -> (String, bool) {
    let answer = fleet
        .post(
            "/api/chat",
            json!({"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}], "stream": true}),
        )
        .await;
    assert_eq!(answer.status(), StatusCode::OK);
    let node = Fleet::served_by(&answer);
    let text = answer.text().await.unwrap();
    let last: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    (node, last.get("error").is_some())
}

#[tokio::test]
async fn a_node_that_stalls_mid_stream_leaves_rotation_and_rejoins_through_probes() {
    let fleet = Fleet::start_with(
        vec![
            MockConfig {
                // The first token at once, then one every 20 s: a stall.
                tokens_per_sec: 0.05,
                ..MockConfig::named("stalls")
            },
            MockConfig::named("steady"),
        ],
        |c| {
            c.proxy.balancer = BalancerMode::RoundRobin;
            c.proxy.stream_idle_timeout = Duration::from_millis(300);
            c.proxy.probe_interval = Duration::from_secs(2);
        },
    )
    .await;
    let mut stalled = 0;
    for _ in 0..10 {
        let (node, failed) = stream_once(&fleet).await;
        if node == "stalls" {
            assert!(failed, "the stalled stream did not end with an error");
            stalled += 1;
        }
        if stalled == 2 {
            break;
        }
    }
    assert_eq!(stalled, 2, "the stalling node was not tried twice");
    // Out of rotation: the next requests all go to the steady node.
    for _ in 0..6 {
        let (node, failed) = stream_once(&fleet).await;
        assert_eq!((node.as_str(), failed), ("steady", false));
    }
    // Fixed, it comes back through the probes.
    fleet.node("stalls").control().set_tokens_per_sec(0.0);
    eventually("the node serves again", Duration::from_secs(20), || async {
        let (node, failed) = stream_once(&fleet).await;
        (node == "stalls" && !failed).then_some(())
    })
    .await;
    fleet.stop().await;
}

/// The error text of a JSON error in either API's format.
fn error_text(body: &Value) -> Option<&str> {
    body["error"]
        .as_str()
        .or_else(|| body["error"]["message"].as_str())
}

/// Bad input on every endpoint not covered by the agents' own table
/// (`agents_api.rs`): a 4xx JSON error that says what is wrong, and nothing changed.
#[tokio::test]
async fn every_endpoint_answers_bad_input_with_a_4xx_json_error_and_changes_nothing() {
    let fleet = Fleet::start(vec![MockConfig::named("node")]).await;
    let huge_model = "m".repeat(100_000);
    let json_cases: Vec<(&str, &str, String, u16, &str)> = vec![
        // Inference, both APIs.
        (
            "POST",
            "/api/chat",
            "{not json".into(),
            400,
            "malformed JSON",
        ),
        ("POST", "/api/chat", "".into(), 400, "empty"),
        ("POST", "/api/chat", "[]".into(), 400, "model is required"),
        (
            "POST",
            "/api/chat",
            r#"{"messages":[]}"#.into(),
            400,
            "model is required",
        ),
        (
            "POST",
            "/api/chat",
            r#"{"model":"  "}"#.into(),
            400,
            "model is required",
        ),
        (
            "POST",
            "/api/chat",
            r#"{"model":"llama3.2","stream":"yes"}"#.into(),
            400,
            "stream must be",
        ),
        (
            "POST",
            "/api/chat",
            format!(r#"{{"model":"{huge_model}"}}"#),
            404,
            "not found",
        ),
        (
            "POST",
            "/api/generate",
            r#"{"model":7}"#.into(),
            400,
            "invalid request body",
        ),
        ("POST", "/api/embed", "{".into(), 400, "malformed JSON"),
        (
            "POST",
            "/api/embeddings",
            "null".into(),
            400,
            "invalid request body",
        ),
        ("POST", "/api/show", "{}".into(), 400, "model is required"),
        (
            "POST",
            "/v1/chat/completions",
            "{not json".into(),
            400,
            "malformed JSON",
        ),
        (
            "POST",
            "/v1/completions",
            r#"{"prompt":"x"}"#.into(),
            400,
            "model is required",
        ),
        (
            "POST",
            "/v1/embeddings",
            r#"{"model":"nope","input":"x"}"#.into(),
            404,
            "not found",
        ),
        // Management.
        (
            "POST",
            "/api/nodes",
            "{not json".into(),
            400,
            "malformed JSON",
        ),
        ("POST", "/api/nodes", "{}".into(), 422, "api_url"),
        (
            "POST",
            "/api/nodes",
            r#"{"api_url":"ftp://x"}"#.into(),
            422,
            "api_url",
        ),
        (
            "POST",
            "/api/nodes",
            r#"{"api_url":"http://u:p@10.0.0.1:11434"}"#.into(),
            422,
            "api_url",
        ),
        (
            "POST",
            "/api/keys",
            "{not json".into(),
            400,
            "malformed JSON",
        ),
        (
            "POST",
            "/api/keys",
            r#"{"name":"bad name!"}"#.into(),
            422,
            "name",
        ),
        (
            "POST",
            "/api/keys",
            r#"{"name":"ok","rpm":-1}"#.into(),
            422,
            "rpm",
        ),
        (
            "POST",
            "/api/auth/login",
            "{not json".into(),
            400,
            "malformed JSON",
        ),
        (
            "POST",
            "/api/auth/setup",
            r#"{"token":"wrong","password":"long enough pass"}"#.into(),
            400,
            "no password to set",
        ),
    ];
    let get_cases: Vec<(&str, u16, &str)> = vec![
        ("/api/history/999999", 404, "not in the history"),
        ("/api/history/not-a-number", 400, "must be a number"),
        ("/api/history?limit=abc", 400, "limit"),
        ("/api/history?status=maybe", 400, "status"),
        ("/api/history?since=yesterday", 400, "since"),
        ("/api/history/export?format=xml", 400, "format"),
        ("/api/history/timeseries?minutes=-1", 400, "minutes"),
        ("/api/history/timeseries?minutes=99999999", 400, "minutes"),
        ("/v1/models/no-such-model", 404, "no-such-model"),
    ];
    let mut failures = Vec::new();
    for (method, path, body, expected, message) in &json_cases {
        let answer = fleet
            .client
            .request(method.parse().unwrap(), fleet.url(path))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        let status = answer.status().as_u16();
        let text = answer.text().await.unwrap();
        let error = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| error_text(&v).map(str::to_owned));
        let shown: String = body.chars().take(40).collect();
        match error {
            Some(error) if status == *expected && error.contains(message) => {
                assert!(error.len() < 1_000, "{method} {path}: an error of {} bytes", error.len());
            }
            _ => failures.push(format!("{method} {path} {shown:?}: {status} {text:.200} (expected {expected} mentioning {message:?})")),
        }
    }
    for (path, expected, message) in &get_cases {
        let answer = fleet.get(path).await;
        let status = answer.status().as_u16();
        let text = answer.text().await.unwrap();
        let error = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| error_text(&v).map(str::to_owned));
        match error {
            Some(error) if status == *expected && error.contains(message) => {}
            _ => failures.push(format!(
                "GET {path}: {status} {text:.200} (expected {expected} mentioning {message:?})"
            )),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Nothing was added or changed by the rejected requests.
    assert_eq!(fleet.agents().await.len(), 1);
    let keys: Value = fleet.get_json("/api/keys").await;
    assert_eq!(keys.as_array().map(Vec::len), Some(0), "{keys}");
    fleet.stop().await;
}
