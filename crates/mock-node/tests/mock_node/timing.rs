//! Pacing, queueing and model loads under paused tokio time, through the
//! router without sockets, so durations are exact and tests take no time.

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use llm_router_mock_node::{MockConfig, MockState, app};
use serde_json::{Value, json};
use tokio::time::Instant;
use tower::ServiceExt;

fn post(uri: &str, body: &Value) -> Request<Body> {
    Request::post(uri)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

async fn call_json(app: &Router, uri: &str, body: Value) -> Value {
    let response = app.clone().oneshot(post(uri, &body)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&bytes).unwrap()
}

fn generate(model: &str, tokens: u64) -> Value {
    json!({"model": model, "prompt": "hi", "stream": false, "options": {"num_predict": tokens}})
}

#[tokio::test(start_paused = true)]
async fn tokens_are_paced_from_one_start_instant() {
    let state = MockState::new(MockConfig {
        ttft: Duration::from_millis(200),
        tokens_per_sec: 10.0,
        ..MockConfig::default()
    })
    .unwrap();
    let app = app(state);
    let start = Instant::now();
    let body = json!({"model": "llama3.2", "prompt": "hi", "options": {"num_predict": 5}});
    let response = app.oneshot(post("/api/generate", &body)).await.unwrap();
    assert_eq!(
        start.elapsed(),
        Duration::from_millis(200),
        "headers come with the first token"
    );
    let mut body = response.into_body();
    let mut arrivals = Vec::new();
    while let Some(frame) = body.frame().await {
        if frame.unwrap().is_data() {
            arrivals.push(start.elapsed());
        }
    }
    let expected: Vec<Duration> = [200, 300, 400, 500, 600, 600]
        .into_iter()
        .map(Duration::from_millis)
        .collect();
    assert_eq!(
        arrivals, expected,
        "5 tokens 100 ms apart after 200 ms, then the final object"
    );
}

#[tokio::test(start_paused = true)]
async fn a_request_waits_for_the_only_slot() {
    let state = MockState::new(MockConfig {
        parallel: 1,
        tokens_per_sec: 10.0,
        ..MockConfig::default()
    })
    .unwrap();
    let app = app(state);
    let start = Instant::now();
    let (a, b) = tokio::join!(
        async {
            call_json(&app, "/api/generate", generate("llama3.2", 5)).await;
            start.elapsed()
        },
        async {
            call_json(&app, "/api/generate", generate("llama3.2", 5)).await;
            start.elapsed()
        },
    );
    let mut done = [a, b];
    done.sort();
    assert_eq!(
        done,
        [Duration::from_millis(400), Duration::from_millis(800)]
    );
}

#[tokio::test(start_paused = true)]
async fn a_model_load_stalls_requests_for_loaded_models() {
    let state = MockState::new(MockConfig {
        models: vec!["a".into(), "b".into()],
        loaded_models: vec!["a".into()],
        max_loaded_models: 2,
        parallel: 4,
        load_time: Duration::from_secs(1),
        ..MockConfig::default()
    })
    .unwrap();
    let app = app(state.clone());
    let start = Instant::now();
    let loading_b = tokio::spawn({
        let app = app.clone();
        async move {
            let body = call_json(&app, "/api/generate", generate("b", 1)).await;
            (start.elapsed(), body)
        }
    });
    while state.stats().loading() == 0 {
        tokio::task::yield_now().await;
    }
    call_json(&app, "/api/generate", generate("a", 1)).await;
    assert_eq!(
        start.elapsed(),
        Duration::from_secs(1),
        "a waited for b's load"
    );
    let (b_done, b_body) = loading_b.await.unwrap();
    assert_eq!(b_done, Duration::from_secs(1));
    assert_eq!(b_body["load_duration"], 1_000_000_000u64);
    assert_eq!(state.stats().model_loads(), 1);
    assert_eq!(state.models().loaded_names(), ["a:latest", "b:latest"]);
}

#[tokio::test(start_paused = true)]
async fn loading_another_model_evicts_the_least_recently_used() {
    let state = MockState::new(MockConfig {
        models: vec!["a".into(), "b".into()],
        max_loaded_models: 1,
        load_time: Duration::from_millis(500),
        ..MockConfig::default()
    })
    .unwrap();
    let app = app(state.clone());
    let first = call_json(&app, "/api/generate", generate("a", 1)).await;
    assert_eq!(first["load_duration"], 500_000_000u64);
    let again = call_json(&app, "/api/generate", generate("a", 1)).await;
    assert_eq!(again["load_duration"], 0);
    call_json(&app, "/api/generate", generate("b", 1)).await;
    let ps = app
        .clone()
        .oneshot(Request::get("/api/ps").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let ps: Value =
        serde_json::from_slice(&ps.into_body().collect().await.unwrap().to_bytes()).unwrap();
    let loaded: Vec<&str> = ps["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(loaded, ["b:latest"]);
    assert_eq!(state.stats().model_loads(), 2);
    assert_eq!(state.stats().evictions(), 1);
}
