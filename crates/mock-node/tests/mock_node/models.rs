//! Model management: `/api/pull` (pace, progress lines, failures, stalls,
//! cancellation), `/api/delete` and `/api/copy`. Pacing runs under paused
//! tokio time through the router; disconnects use real sockets.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use llm_router_mock_node::{Endpoint, MockConfig, MockState, app};
use serde_json::{Value, json};
use std::sync::Arc;
use tokio::time::Instant;
use tower::ServiceExt;

use super::{get_json, ndjson, post_json, send_json, start, wait_until};

/// A node pulling `size` bytes at `rate` bytes/s, ticking every 100 ms.
fn pulling(rate: f64, size: u64) -> MockConfig {
    MockConfig {
        pull_bytes_per_sec: rate,
        pull_size_bytes: Some(size),
        ..MockConfig::default()
    }
}

fn routed(config: MockConfig) -> (Arc<MockState>, Router) {
    let state = MockState::new(config).unwrap();
    (Arc::clone(&state), app(state))
}

fn post(uri: &str, body: &Value) -> Request<Body> {
    Request::post(uri)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

/// The next chunk of a streamed body, as its NDJSON objects.
async fn next_lines(body: &mut Body) -> Option<Vec<Value>> {
    let frame = body.frame().await?.expect("the body does not break");
    let data = frame.into_data().expect("a data frame");
    Some(ndjson(std::str::from_utf8(&data).unwrap()))
}

/// Pulls through the router, returning every line with the time (since
/// the request) of the chunk that carried it.
async fn pull_lines(app: &Router, body: Value) -> Vec<(Duration, Value)> {
    let start = Instant::now();
    let response = app.clone().oneshot(post("/api/pull", &body)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let mut lines = Vec::new();
    while let Some(chunk) = next_lines(&mut body).await {
        lines.extend(chunk.into_iter().map(|l| (start.elapsed(), l)));
    }
    lines
}

/// Checks the progress lines Ollama sends: well formed, `completed` never
/// going back within a digest and ending at its total. Returns the layers
/// as (digest, total, number of lines), in the order they were pulled.
fn check_progress(lines: &[Value]) -> Vec<(String, u64, usize)> {
    let mut layers: Vec<(String, u64, usize)> = Vec::new();
    let mut last: BTreeMap<String, u64> = BTreeMap::new();
    for line in lines.iter().filter(|l| l.get("digest").is_some()) {
        let digest = line["digest"].as_str().unwrap().to_owned();
        let hex = digest.strip_prefix("sha256:").expect("sha256: prefix");
        assert_eq!(hex.len(), 64, "{digest}");
        assert!(hex.chars().all(|c| c.is_ascii_hexdigit()), "{digest}");
        assert_eq!(line["status"], format!("pulling {}", &hex[..12]));
        let total = line["total"].as_u64().expect("total");
        let completed = line["completed"].as_u64().expect("completed");
        assert!(completed <= total, "{line}");
        if let Some(&before) = last.get(&digest) {
            assert!(
                completed > before,
                "completed went from {before} to {completed}"
            );
        }
        last.insert(digest.clone(), completed);
        match layers.iter_mut().find(|(d, _, _)| *d == digest) {
            Some(layer) => layer.2 += 1,
            None => layers.push((digest, total, 1)),
        }
    }
    for (digest, total, _) in &layers {
        assert_eq!(last[digest], *total, "{digest} ends at its total");
    }
    layers
}

fn statuses(lines: &[Value]) -> Vec<&str> {
    lines
        .iter()
        .filter(|l| l.get("digest").is_none())
        .map(|l| l["status"].as_str().unwrap_or("<no status>"))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn pull_streams_paced_progress_per_layer_and_adds_the_model_at_success() {
    let (state, app) = routed(pulling(1_000_000.0, 1_000_000));
    let timed = pull_lines(&app, json!({"model": "qwen3", "insecure": true})).await;
    let (times, lines): (Vec<Duration>, Vec<Value>) = timed.into_iter().unzip();
    assert_eq!(lines[0], json!({"status": "pulling manifest"}));
    assert_eq!(
        statuses(&lines),
        [
            "pulling manifest",
            "verifying sha256 digest",
            "writing manifest",
            "success"
        ]
    );
    let layers = check_progress(&lines);
    assert_eq!(layers.len(), 3, "weights, template, params");
    let totals: Vec<u64> = layers.iter().map(|l| l.1).collect();
    assert_eq!(totals.iter().sum::<u64>(), 1_000_000);
    assert!(
        totals[0] > 998_000,
        "the weights are most of it: {totals:?}"
    );
    assert!(
        totals[1..].iter().all(|t| (100..1000).contains(t)),
        "{totals:?}"
    );
    // 1 MB at 1 MB/s: one weights line at the start, one per 100 ms tick.
    assert_eq!(layers[0].2, 11);
    assert_eq!(*times.last().unwrap(), Duration::from_secs(1));
    let mut chunk_times = times.clone();
    chunk_times.dedup();
    let expected: Vec<Duration> = (0..=10).map(|i| Duration::from_millis(i * 100)).collect();
    assert_eq!(chunk_times, expected, "a chunk per tick");

    let held = state
        .models()
        .find("qwen3:latest")
        .expect("held after success");
    assert_eq!(held.size, 1_000_000, "the size pulled");
    let tags = app
        .oneshot(Request::get("/api/tags").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let tags: Value =
        serde_json::from_slice(&tags.into_body().collect().await.unwrap().to_bytes()).unwrap();
    let pulled = &tags["models"][1];
    assert_eq!(pulled["name"], "qwen3:latest");
    assert_eq!(pulled["size"], 1_000_000);
    let stats = state.stats();
    assert_eq!((stats.pulls_started(), stats.pulls_succeeded()), (1, 1));
    assert_eq!(stats.pulls_in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn five_gigabytes_at_200_mb_per_sec_take_25_s_at_ten_lines_a_second() {
    let (state, app) = routed(pulling(200e6, 5_000_000_000));
    let timed = pull_lines(&app, json!({"name": "llama3.1:8b"})).await;
    assert_eq!(timed.last().unwrap().0, Duration::from_secs(25));
    let lines: Vec<Value> = timed.into_iter().map(|(_, l)| l).collect();
    let layers = check_progress(&lines);
    assert_eq!(layers[0].2, 251, "the start, then 10 lines a second");
    assert_eq!(
        state.models().find("llama3.1:8b").unwrap().size,
        5_000_000_000
    );
}

#[tokio::test(start_paused = true)]
async fn the_model_is_not_held_before_the_pull_succeeds() {
    let (state, app) = routed(pulling(1_000_000.0, 1_000_000));
    let response = app
        .oneshot(post("/api/pull", &json!({"model": "phi4"})))
        .await
        .unwrap();
    let mut body = response.into_body();
    for _ in 0..5 {
        next_lines(&mut body).await.unwrap();
        assert!(state.models().find("phi4").is_none());
    }
    while next_lines(&mut body).await.is_some() {}
    assert!(state.models().find("phi4").is_some());
}

#[tokio::test(start_paused = true)]
async fn pull_fail_after_bytes_ends_the_stream_with_an_error_line() {
    let (state, app) = routed(MockConfig {
        pull_fail_after_bytes: Some(250_000),
        ..pulling(1_000_000.0, 1_000_000)
    });
    let timed = pull_lines(&app, json!({"model": "qwen3"})).await;
    let (end, last) = timed.last().unwrap().clone();
    assert_eq!(
        last,
        json!({"error": "simulated download failure after 250000 bytes"})
    );
    assert_eq!(end, Duration::from_millis(250));
    let lines: Vec<Value> = timed.into_iter().map(|(_, l)| l).collect();
    let progress: Vec<u64> = lines
        .iter()
        .filter_map(|l| l["completed"].as_u64())
        .collect();
    assert_eq!(progress, [0, 100_000, 200_000, 250_000]);
    assert!(!statuses(&lines).contains(&"success"));
    assert!(
        state.models().find("qwen3").is_none(),
        "a failed pull adds nothing"
    );
    assert_eq!(state.stats().pulls_failed(), 1);
    assert_eq!(state.stats().pulls_succeeded(), 0);
}

#[tokio::test(start_paused = true)]
async fn unstreamed_pull_takes_as_long_then_answers_success_or_500() {
    let (state, app) = routed(pulling(1_000_000.0, 500_000));
    let start = Instant::now();
    let response = app
        .clone()
        .oneshot(post(
            "/api/pull",
            &json!({"model": "qwen3", "stream": false}),
        ))
        .await
        .unwrap();
    assert_eq!(start.elapsed(), Duration::from_millis(500));
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap(),
        json!({"status": "success"})
    );
    assert!(state.models().find("qwen3").is_some());

    state.control().set_pull_fail_after_bytes(Some(100_000));
    let start = Instant::now();
    let response = app
        .oneshot(post(
            "/api/pull",
            &json!({"model": "phi4", "stream": false}),
        ))
        .await
        .unwrap();
    assert_eq!(start.elapsed(), Duration::from_millis(100));
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap(),
        json!({"error": "simulated download failure after 100000 bytes"})
    );
    assert!(state.models().find("phi4").is_none());
    assert_eq!(state.stats().pulls_failed(), 1);
}

#[tokio::test(start_paused = true)]
async fn pull_stall_sends_nothing_more_and_a_client_leaving_cancels_it() {
    let (state, app) = routed(MockConfig {
        pull_stall_after_bytes: Some(300_000),
        ..pulling(1_000_000.0, 1_000_000)
    });
    let response = app
        .oneshot(post("/api/pull", &json!({"model": "qwen3"})))
        .await
        .unwrap();
    let mut body = response.into_body();
    let mut progress = Vec::new();
    while progress.last() != Some(&300_000) {
        let lines = next_lines(&mut body)
            .await
            .expect("progress up to the stall");
        progress.extend(lines.iter().filter_map(|l| l["completed"].as_u64()));
    }
    assert_eq!(progress, [0, 100_000, 200_000, 300_000]);
    // An hour of (paused) time later, still nothing.
    let more = tokio::time::timeout(Duration::from_secs(3600), body.frame()).await;
    assert!(more.is_err(), "a stalled pull sends nothing: {more:?}");
    assert_eq!(state.stats().pulls_in_flight(), 1);
    drop(body);
    let stats = state.stats();
    assert_eq!((stats.pulls_in_flight(), stats.pulls_cancelled()), (0, 1));
    assert!(state.models().find("qwen3").is_none());
}

#[tokio::test(start_paused = true)]
async fn pulling_a_held_model_completes_at_once_and_succeeds() {
    let (state, app) = routed(pulling(1.0, 1_000_000_000));
    let timed = pull_lines(&app, json!({"model": "llama3.2:latest"})).await;
    assert!(
        timed.iter().all(|(t, _)| t.is_zero()),
        "no download to wait for"
    );
    let lines: Vec<Value> = timed.into_iter().map(|(_, l)| l).collect();
    let layers = check_progress(&lines);
    assert!(layers.iter().all(|l| l.2 == 1), "completed = total at once");
    let held = state.models().find("llama3.2").unwrap();
    assert_eq!(layers.iter().map(|l| l.1).sum::<u64>(), held.size);
    assert_eq!(lines.last().unwrap(), &json!({"status": "success"}));
    assert_eq!(state.models().held().len(), 1);
    assert_eq!(state.stats().pulls_succeeded(), 1);
}

#[tokio::test]
async fn a_client_leaving_mid_pull_cancels_it_over_http() {
    let config = MockConfig {
        pull_tick: Duration::from_millis(10),
        ..pulling(1_000_000.0, 1_000_000_000)
    };
    let (node, client) = start(config).await;
    let mut response = send_json(
        &client,
        format!("{}/api/pull", node.url()),
        &json!({"model": "qwen3"}),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    let first = response.chunk().await.unwrap().unwrap();
    assert!(first.starts_with(b"{\"status\":\"pulling manifest\"}\n"));
    drop(response);
    wait_until("the pull is cancelled", || {
        node.stats().pulls_cancelled() == 1
    })
    .await;
    let stats: Value = get_json(&client, format!("{}/mock/stats", node.url())).await;
    assert_eq!(stats["pulls_started"], 1);
    assert_eq!(stats["pulls_cancelled"], 1);
    assert_eq!(stats["pulls_in_flight"], 0);
    assert_eq!(stats["pulls_succeeded"], 0);
    assert_eq!(stats["pulls_failed"], 0);
    assert_eq!(stats["requests"]["/api/pull"], 1);
    let tags: Value = get_json(&client, format!("{}/api/tags", node.url())).await;
    assert_eq!(
        tags["models"].as_array().unwrap().len(),
        1,
        "qwen3 not added"
    );
}

#[tokio::test]
async fn a_client_leaving_a_stalled_pull_cancels_it_over_http() {
    let config = MockConfig {
        pull_stall_after_bytes: Some(0),
        ..pulling(1_000_000.0, 1_000_000)
    };
    let (node, client) = start(config).await;
    let mut response = send_json(
        &client,
        format!("{}/api/pull", node.url()),
        &json!({"model": "qwen3"}),
    )
    .await;
    let mut received = Vec::new();
    while !received.ends_with(b"\"completed\":0}\n") {
        received.extend_from_slice(&response.chunk().await.unwrap().unwrap());
    }
    assert_eq!(node.stats().pulls_in_flight(), 1);
    drop(response);
    wait_until("the stalled pull is cancelled", || {
        node.stats().pulls_cancelled() == 1
    })
    .await;
    assert!(node.models().find("qwen3").is_none());
}

#[tokio::test]
async fn stopping_the_node_breaks_a_stalled_pull_and_counts_it_failed() {
    let config = MockConfig {
        pull_stall_after_bytes: Some(0),
        ..pulling(1_000_000.0, 1_000_000)
    };
    let (node, client) = start(config).await;
    let mut response = send_json(
        &client,
        format!("{}/api/pull", node.url()),
        &json!({"model": "qwen3"}),
    )
    .await;
    response.chunk().await.unwrap().unwrap();
    let state = node.state().clone();
    node.stop().await;
    let rest = async {
        while response.chunk().await?.is_some() {}
        Ok::<_, reqwest::Error>(())
    }
    .await;
    assert!(rest.is_err(), "the stream must break, not finish");
    assert_eq!(state.stats().pulls_failed(), 1);
    assert_eq!(state.stats().pulls_in_flight(), 0);
    assert!(state.models().find("qwen3").is_none());
}

#[tokio::test]
async fn pull_knobs_are_set_and_shown_by_mock_config() {
    let (node, client) = start(MockConfig::default()).await;
    let url = format!("{}/mock/config", node.url());
    let shown: Value = get_json(&client, &url).await;
    assert_eq!(shown["pull_bytes_per_sec"], 0.0);
    assert_eq!(shown["pull_tick_ms"], 100.0);
    assert_eq!(shown["pull_size_bytes"], Value::Null);
    let shown: Value = post_json(
        &client,
        &url,
        &json!({
            "pull_bytes_per_sec": 200e6,
            "pull_tick_ms": 20,
            "pull_size_bytes": 5_000_000_000u64,
            "pull_fail_after_bytes": 10,
            "pull_stall_after_bytes": 20,
        }),
    )
    .await;
    assert_eq!(shown["pull_bytes_per_sec"], 200e6);
    assert_eq!(shown["pull_tick_ms"], 20.0);
    assert_eq!(shown["pull_size_bytes"], 5_000_000_000u64);
    assert_eq!(shown["pull_fail_after_bytes"], 10);
    assert_eq!(shown["pull_stall_after_bytes"], 20);
    assert_eq!(node.control().pull_size_bytes(), Some(5_000_000_000));
    let shown: Value = post_json(
        &client,
        &url,
        &json!({"pull_fail_after_bytes": null, "pull_stall_after_bytes": null}),
    )
    .await;
    assert_eq!(shown["pull_fail_after_bytes"], Value::Null);
    assert_eq!(shown["pull_stall_after_bytes"], Value::Null);
    assert_eq!(shown["pull_size_bytes"], 5_000_000_000u64);
    let invalid = send_json(&client, &url, &json!({"pull_tick_ms": 0})).await;
    assert_eq!(invalid.status(), 400);
    assert_eq!(
        invalid.json::<Value>().await.unwrap(),
        json!({"error": "pull_tick_ms must be a finite number >= 1"})
    );
}

#[tokio::test]
async fn pull_without_a_model_is_400() {
    let (node, client) = start(MockConfig::default()).await;
    let response = send_json(&client, format!("{}/api/pull", node.url()), &json!({})).await;
    assert_eq!(response.status(), 400);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"error": "model is required"})
    );
    assert_eq!(node.stats().pulls_started(), 0);
}

#[tokio::test]
async fn delete_removes_a_model_and_404s_an_unknown_one() {
    let (node, client) = start(MockConfig::default().with_models(["llama3.2", "qwen3:8b"])).await;
    let url = format!("{}/api/delete", node.url());
    let deleted = client
        .delete(&url)
        .json(&json!({"model": "llama3.2"}))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 200);
    assert_eq!(deleted.bytes().await.unwrap().len(), 0, "an empty body");
    let tags: Value = get_json(&client, format!("{}/api/tags", node.url())).await;
    let names: Vec<&str> = tags["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["qwen3:8b"]);
    let again = client
        .delete(&url)
        .json(&json!({"name": "llama3.2"}))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 404);
    assert_eq!(
        again.json::<Value>().await.unwrap(),
        json!({"error": "model 'llama3.2' not found"})
    );
    let by_old_name = client
        .delete(&url)
        .json(&json!({"name": "qwen3:8b"}))
        .send()
        .await
        .unwrap();
    assert_eq!(by_old_name.status(), 200);
    assert!(node.models().held().is_empty());
    assert_eq!(node.stats().requests(Endpoint::Delete), 3);
}

#[tokio::test]
async fn copy_adds_the_destination_with_the_source_size_and_digest() {
    let (node, client) = start(MockConfig::default()).await;
    let url = format!("{}/api/copy", node.url());
    let copied = send_json(
        &client,
        &url,
        &json!({"source": "llama3.2", "destination": "my-llama"}),
    )
    .await;
    assert_eq!(copied.status(), 200);
    assert_eq!(copied.bytes().await.unwrap().len(), 0, "an empty body");
    let tags: Value = get_json(&client, format!("{}/api/tags", node.url())).await;
    let models = tags["models"].as_array().unwrap();
    assert_eq!(models.len(), 2);
    assert_eq!(models[1]["name"], "my-llama:latest");
    assert_eq!(models[1]["size"], models[0]["size"]);
    assert_eq!(models[1]["digest"], models[0]["digest"]);
    let unknown = send_json(
        &client,
        &url,
        &json!({"source": "nope", "destination": "other"}),
    )
    .await;
    assert_eq!(unknown.status(), 404);
    assert_eq!(
        unknown.json::<Value>().await.unwrap(),
        json!({"error": "model 'nope' not found"})
    );
    let missing = send_json(&client, &url, &json!({"source": "llama3.2"})).await;
    assert_eq!(missing.status(), 400);
    assert_eq!(node.models().held().len(), 2);
    assert_eq!(node.stats().requests(Endpoint::Copy), 3);
}
