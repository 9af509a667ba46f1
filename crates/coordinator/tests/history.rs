//! Request history against a real coordinator and mock nodes: what is
//! recorded, the list filters and pages, one record in full, the client's
//! API key, exports, restarts, retention, a broken database file, and a burst
//! of requests.

mod support;

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use llm_router_coordinator::history::entry::HistoryEntry;
use llm_router_coordinator::history::store::{FILE_NAME, HistoryStore};
use llm_router_mock_node::MockConfig;
use serde_json::{Value, json};
use support::chat;
use support::fleet::Fleet;
use support::process::eventually;

const DEADLINE: Duration = Duration::from_secs(20);

/// Sends one chat for llama3.2 and checks that it is answered.
async fn chat_ok(fleet: &Fleet, stream: bool) {
    assert_eq!(
        fleet
            .post("/api/chat", chat("llama3.2", stream))
            .await
            .status(),
        200
    );
}

async fn history(fleet: &Fleet, query: &str) -> Value {
    let (status, body) = fleet.get_status_json(&format!("/api/history{query}")).await;
    assert_eq!(status, 200, "{body}");
    body
}

/// Waits until the history (with `query`'s filters) holds `n` requests.
async fn wait_for_total(fleet: &Fleet, query: &str, n: u64) -> Value {
    eventually(
        &format!("{n} requests in the history"),
        DEADLINE,
        || async {
            let body = history(fleet, query).await;
            (body["total"] == n).then_some(body)
        },
    )
    .await
}

/// The generated text of an answer as the client received it.
fn client_text(body: &str) -> String {
    let mut text = String::new();
    for line in body.lines() {
        let line = line.trim();
        let payload = line.strip_prefix("data:").map_or(line, str::trim);
        let Ok(value) = serde_json::from_str::<Value>(payload) else {
            continue;
        };
        for piece in [
            &value["message"]["content"],
            &value["response"],
            &value["choices"][0]["delta"]["content"],
            &value["choices"][0]["message"]["content"],
            &value["choices"][0]["text"],
        ] {
            if let Some(piece) = piece.as_str() {
                text.push_str(piece);
            }
        }
    }
    text
}

#[tokio::test]
async fn requests_are_recorded_with_their_bodies_and_assembled_text() {
    let fleet = Fleet::start(vec![MockConfig::named("a").with_models(["llama3.2"])]).await;
    let calls = [
        ("/api/chat", chat("llama3.2", true), true),
        (
            "/api/generate",
            json!({"model": "llama3.2", "prompt": "why is the sky blue?"}),
            true,
        ),
        ("/api/chat", chat("llama3.2:latest", false), false),
        (
            "/v1/chat/completions",
            json!({"model": "llama3.2", "stream": true, "stream_options": {"include_usage": true},
                "messages": [{"role": "user", "content": "hello"}]}),
            true,
        ),
        // Without include_usage the node sends no counts: its text chunks are counted.
        (
            "/v1/chat/completions",
            json!({"model": "llama3.2", "stream": true,
                "messages": [{"role": "user", "content": "hello"}]}),
            true,
        ),
        (
            "/v1/completions",
            json!({"model": "llama3.2", "prompt": "once upon"}),
            false,
        ),
    ];
    let mut sent = Vec::new();
    for (path, body, stream) in &calls {
        let response = fleet.post(path, body.clone()).await;
        assert_eq!(response.status(), 200);
        let request_id = response.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_owned();
        let answer = response.text().await.unwrap();
        let text = client_text(&answer);
        assert!(!text.is_empty(), "{path}: {answer}");
        sent.push((*path, body.to_string(), *stream, request_id, text));
    }

    let list = wait_for_total(&fleet, "", calls.len() as u64).await;
    assert_eq!(list["dropped"], 0);
    assert_eq!(list["body_limit_bytes"], 64 * 1024);
    let items = list["items"].as_array().unwrap();
    // Newest first.
    let ids: Vec<i64> = items.iter().map(|i| i["id"].as_i64().unwrap()).collect();
    let mut sorted = ids.clone();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(ids, sorted);
    for (path, body, stream, request_id, text) in &sent {
        let item = items
            .iter()
            .find(|i| i["request_id"] == request_id.as_str())
            .unwrap_or_else(|| panic!("{request_id} ({path}) is not listed: {list}"));
        assert_eq!(item["endpoint"], *path);
        assert_eq!(item["node"], "a");
        assert_eq!(item["nodes_tried"], json!(["a"]));
        assert_eq!(item["status"], 200);
        assert_eq!(item["outcome"], "completed", "{path}: {item}");
        assert_eq!(item["stream"], *stream);
        assert_eq!(item["client_ip"], "127.0.0.1");
        assert!(item["duration_ms"].as_f64().unwrap() > 0.0, "{item}");
        assert!(item["ttft_ms"].as_f64().is_some(), "{item}");
        assert!(item["completion_tokens"].as_u64().unwrap() > 0, "{item}");
        if item["outcome"] == "completed" {
            assert!(item["error"].is_null(), "{item}");
        }
        let time: DateTime<Utc> = item["time"].as_str().unwrap().parse().unwrap();
        assert!((Utc::now() - time).num_seconds() < 60);

        let (status, detail) = fleet
            .get_status_json(&format!("/api/history/{}", item["id"]))
            .await;
        assert_eq!(status, 200, "{detail}");
        assert_eq!(detail["request_id"], request_id.as_str());
        assert_eq!(detail["request_body"], body.as_str());
        assert_eq!(detail["request_truncated"], false);
        assert_eq!(detail["response_bytes_dropped"], 0);
        assert_eq!(detail["response_text"], text.as_str(), "{path}");
        assert!(!detail["response_body"].as_str().unwrap().is_empty());
        assert!(detail["counters"].is_object(), "{detail}");
    }
    fleet.stop().await;
}

#[tokio::test]
async fn rejected_requests_are_recorded_and_filters_and_pages_select() {
    let fleet = Fleet::start(vec![
        MockConfig::named("a").with_models(["llama3.2"]),
        MockConfig::named("b").with_models(["qwen2.5"]),
    ])
    .await;
    let before = Utc::now();
    for _ in 0..6 {
        chat_ok(&fleet, false).await;
    }
    for _ in 0..3 {
        let response = fleet
            .post(
                "/api/generate",
                json!({"model": "qwen2.5", "prompt": "needle-in-the-prompt"}),
            )
            .await;
        assert_eq!(response.status(), 200);
        response.text().await.unwrap();
    }
    for _ in 0..2 {
        assert_eq!(
            fleet
                .post("/api/chat", chat("missing-model", false))
                .await
                .status(),
            404
        );
    }
    wait_for_total(&fleet, "", 11).await;

    let total = |query: &'static str| {
        let fleet = &fleet;
        async move { history(fleet, query).await["total"].as_u64().unwrap() }
    };
    assert_eq!(total("?model=llama3.2").await, 6);
    assert_eq!(total("?model=llama3.2:latest").await, 6);
    assert_eq!(total("?model=qwen2.5").await, 3);
    assert_eq!(total("?node=b").await, 3);
    assert_eq!(total("?endpoint=/api/generate").await, 3);
    assert_eq!(total("?status=404").await, 2);
    assert_eq!(total("?status=4xx").await, 2);
    assert_eq!(total("?status=2xx").await, 9);
    assert_eq!(total("?status=5xx").await, 0);
    assert_eq!(total("?outcome=rejected").await, 2);
    assert_eq!(total("?outcome=completed&model=qwen2.5").await, 3);
    assert_eq!(total("?q=needle-in").await, 3);
    assert_eq!(total("?q=MISSING-MODEL").await, 2);
    assert_eq!(total("?q=100%25").await, 0);
    let since = before.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let q = format!("?since={}", urlencode(&since));
    assert_eq!(history(&fleet, &q).await["total"], 11);
    let q = format!("?until={}", urlencode(&since));
    assert_eq!(history(&fleet, &q).await["total"], 0);

    let rejected = history(&fleet, "?outcome=rejected").await;
    let item = &rejected["items"][0];
    assert_eq!(item["status"], 404);
    assert_eq!(item["model"], "missing-model");
    assert!(item["node"].is_null());
    assert_eq!(item["nodes_tried"], json!([]));
    assert!(
        item["error"].as_str().unwrap().contains("missing-model"),
        "{item}"
    );

    // Pages of 4: disjoint, together all 11, newest first.
    let mut seen = Vec::new();
    for offset in [0, 4, 8] {
        let page = history(&fleet, &format!("?limit=4&offset={offset}")).await;
        assert_eq!(page["total"], 11);
        for item in page["items"].as_array().unwrap() {
            seen.push(item["id"].as_i64().unwrap());
        }
    }
    assert_eq!(seen.len(), 11);
    let mut sorted = seen.clone();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    sorted.dedup();
    assert_eq!(seen, sorted);
    assert_eq!(history(&fleet, "?offset=100").await["items"], json!([]));

    for bad in [
        "?limit=0",
        "?limit=501",
        "?limit=x",
        "?offset=-1",
        "?status=6xx",
        "?status=abc",
        "?since=yesterday",
        "?until=2025-13-01T00:00:00Z",
        "?outcome=exploded",
        "?q=ab",
    ] {
        let (status, body) = fleet.get_status_json(&format!("/api/history{bad}")).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body["error"].as_str().unwrap().len() > 5, "{bad}: {body}");
    }
    let (status, body) = fleet.get_status_json("/api/history/123456").await;
    assert_eq!(status, 404);
    assert!(body["error"].is_string());
    let (status, body) = fleet.get_status_json("/api/history/abc").await;
    assert_eq!(status, 400);
    assert!(body["error"].is_string());

    // The chart's last minute holds them all (unless the minute turned meanwhile).
    let (status, series) = fleet
        .get_status_json("/api/history/timeseries?minutes=5")
        .await;
    assert_eq!(status, 200);
    let buckets = series.as_array().unwrap();
    assert_eq!(buckets.len(), 5);
    let requests: u64 = buckets
        .iter()
        .map(|b| b["requests"].as_u64().unwrap())
        .sum();
    let errors: u64 = buckets.iter().map(|b| b["errors"].as_u64().unwrap()).sum();
    assert_eq!((requests, errors), (11, 2));
    assert!(
        buckets
            .iter()
            .any(|b| b["avg_latency_ms"].as_f64().unwrap() > 0.0)
    );
    assert!(
        buckets
            .iter()
            .any(|b| b["tokens_per_second"].as_f64().unwrap() > 0.0)
    );
    let (status, _) = fleet
        .get_status_json("/api/history/timeseries?minutes=0")
        .await;
    assert_eq!(status, 400);
    fleet.stop().await;
}

fn urlencode(text: &str) -> String {
    text.replace('+', "%2B").replace(':', "%3A")
}

/// Splits CSV text into rows of fields (quotes, doubled quotes, CRLF).
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut field)),
            (false, '\r') => {}
            (false, '\n') => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (false, c) => field.push(c),
        }
    }
    rows
}

#[tokio::test]
async fn exports_stream_every_matching_request_as_csv_and_json() {
    let fleet = Fleet::start(vec![MockConfig::named("a").with_models(["llama3.2"])]).await;
    // More than one export page (500 rows).
    let n = 620;
    futures::stream::iter(0..n)
        .for_each_concurrent(16, |_| chat_ok(&fleet, false))
        .await;
    for _ in 0..3 {
        fleet
            .post("/api/chat", chat("nope, \"quoted\"", false))
            .await;
    }
    wait_for_total(&fleet, "", n + 3).await;

    let response = fleet.get("/api/history/export?format=csv").await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-disposition"],
        "attachment; filename=\"llm-router-history.csv\""
    );
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let rows = parse_csv(&response.text().await.unwrap());
    let header = &rows[0];
    assert_eq!(header[0], "id");
    assert!(header.contains(&"error".to_owned()));
    assert!(header.contains(&"nodes_tried".to_owned()));
    assert_eq!(rows.len() as u64, n + 4);
    assert!(rows.iter().all(|r| r.len() == header.len()));
    let model = header.iter().position(|h| h == "model").unwrap();
    let status = header.iter().position(|h| h == "status").unwrap();
    assert_eq!(
        rows.iter()
            .filter(|r| r[model] == "nope, \"quoted\"" && r[status] == "404")
            .count(),
        3
    );
    let ids: Vec<i64> = rows[1..].iter().map(|r| r[0].parse().unwrap()).collect();
    let mut unique = ids.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), ids.len());

    let response = fleet
        .get("/api/history/export?format=json&status=404")
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-disposition"],
        "attachment; filename=\"llm-router-history.json\""
    );
    let items: Vec<Value> = response.json().await.unwrap();
    assert_eq!(items.len(), 3);
    assert!(items.iter().all(|i| i["status"] == 404 && i["id"].is_i64()));

    let response = fleet.get("/api/history/export?format=json").await;
    let items: Vec<Value> = response.json().await.unwrap();
    assert_eq!(items.len() as u64, n + 3);

    let empty: Vec<Value> = fleet
        .get_json("/api/history/export?format=json&model=none")
        .await;
    assert!(empty.is_empty());
    let (status, body) = fleet
        .get_status_json("/api/history/export?format=xml")
        .await;
    assert_eq!(status, 400, "{body}");
    fleet.stop().await;
}

/// Sends a chat for `model` with `bearer`; returns its request id once answered.
async fn chat_with_bearer(fleet: &Fleet, model: &str, bearer: &str, status: u16) -> String {
    let response = fleet
        .client
        .post(fleet.url("/api/chat"))
        .bearer_auth(bearer)
        .json(&chat(model, false))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), status);
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    response.bytes().await.unwrap();
    request_id
}

#[tokio::test]
async fn requests_are_recorded_with_the_clients_key_name_and_filtered_by_it() {
    let fleet = Fleet::start(vec![MockConfig::named("a").with_models(["llama3.2"])]).await;
    let (status, created) = fleet.post_json("/api/keys", json!({"name": "alice"})).await;
    assert_eq!(status, 201, "{created}");
    let key = created["key"].as_str().unwrap().to_owned();
    let served = chat_with_bearer(&fleet, "llama3.2", &key, 200).await;
    let rejected = chat_with_bearer(&fleet, "missing-model", &key, 404).await;
    chat_ok(&fleet, false).await;
    // Keys are optional here: a placeholder is served, and recorded without a key.
    chat_with_bearer(&fleet, "llama3.2", "sk-placeholder", 200).await;
    let all = wait_for_total(&fleet, "", 4).await;

    let alice = history(&fleet, "?key=alice").await;
    assert_eq!(alice["total"], 2, "{alice}");
    let ids: Vec<&str> = alice["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["request_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [rejected.as_str(), served.as_str()]);
    assert!(
        alice["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["api_key"] == "alice")
    );
    let anonymous: Vec<&Value> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["api_key"] != "alice")
        .collect();
    assert_eq!(anonymous.len(), 2);
    for item in anonymous {
        assert!(
            item.as_object().unwrap()["api_key"].is_null(),
            "listed as null: {item}"
        );
    }
    let id = &alice["items"][1]["id"];
    let (status, detail) = fleet.get_status_json(&format!("/api/history/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(detail["api_key"], "alice");
    assert_eq!(detail["request_id"], served.as_str());

    assert_eq!(history(&fleet, "?key=alice&status=404").await["total"], 1);
    assert_eq!(
        history(&fleet, "?key=alice&model=llama3.2").await["total"],
        1
    );
    assert_eq!(history(&fleet, "?key=bob").await["total"], 0);
    assert_eq!(history(&fleet, "?key=ALICE").await["total"], 0);
    assert_eq!(history(&fleet, "?key=").await["total"], 4);

    let csv = fleet.get_text("/api/history/export?format=csv").await;
    let rows = parse_csv(&csv);
    let column = rows[0].iter().position(|h| h == "api_key").unwrap();
    let keys: Vec<&str> = rows[1..].iter().map(|r| r[column].as_str()).collect();
    assert_eq!(keys.iter().filter(|k| **k == "alice").count(), 2, "{csv}");
    assert_eq!(keys.iter().filter(|k| k.is_empty()).count(), 2, "{csv}");
    let rows = parse_csv(
        &fleet
            .get_text("/api/history/export?format=csv&key=alice")
            .await,
    );
    assert_eq!(rows.len(), 3);
    assert!(rows[1..].iter().all(|r| r[column] == "alice"));
    let items: Vec<Value> = fleet
        .get_json("/api/history/export?format=json&key=alice&status=2xx")
        .await;
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["api_key"], "alice");
    assert_eq!(items[0]["request_id"], served.as_str());
    fleet.stop().await;
}

#[tokio::test]
async fn history_survives_a_restart() {
    let fleet = Fleet::start(vec![MockConfig::named("a").with_models(["llama3.2"])]).await;
    for _ in 0..3 {
        chat_ok(&fleet, true).await;
    }
    let before = wait_for_total(&fleet, "", 3).await;
    let fleet = fleet.restart_with(|_| {}).await;
    let after = history(&fleet, "").await;
    assert_eq!(after["items"], before["items"]);
    let id = &after["items"][0]["id"];
    let (status, detail) = fleet.get_status_json(&format!("/api/history/{id}")).await;
    assert_eq!(status, 200);
    assert!(!detail["response_text"].as_str().unwrap().is_empty());
    // New requests get new ids after the old ones.
    fleet.post("/api/chat", chat("missing", false)).await;
    let now = wait_for_total(&fleet, "", 4).await;
    assert!(now["items"][0]["id"].as_i64().unwrap() > id.as_i64().unwrap());
    fleet.stop().await;
}

fn entry(time: DateTime<Utc>, model: &str) -> HistoryEntry {
    HistoryEntry {
        request_id: format!("test-{}", time.timestamp_millis()),
        time,
        client_ip: None,
        api_key: None,
        endpoint: "/api/chat".into(),
        model: model.into(),
        stream: false,
        node: Some("a".into()),
        nodes_tried: vec!["a".into()],
        status: 200,
        outcome: llm_router_coordinator::proxy::record::Outcome::Completed,
        duration: Duration::from_millis(5),
        time_to_first_token: None,
        prompt_tokens: Some(1),
        completion_tokens: Some(2),
        generation_time: None,
        error: None,
        request_body: bytes::Bytes::from_static(b"{}"),
        request_bytes: 2,
        response_body: bytes::Bytes::new(),
        response_bytes_dropped: 0,
    }
}

#[tokio::test]
async fn requests_older_than_the_retention_are_pruned_at_start_and_while_running() {
    let data_dir = tempfile::tempdir().unwrap();
    {
        let store = HistoryStore::open(&data_dir.path().join(FILE_NAME)).unwrap();
        let now = Utc::now();
        store
            .insert(&[
                entry(now - chrono::Duration::days(30), "old"),
                entry(now - chrono::Duration::days(8), "old"),
                entry(now - chrono::Duration::days(6), "recent"),
            ])
            .unwrap();
    }
    // Default retention (7 days): the two old ones go at start.
    let fleet = Fleet::empty_in(data_dir, |_| {}).await;
    let body = wait_for_total(&fleet, "", 1).await;
    assert_eq!(body["items"][0]["model"], "recent");
    assert_eq!(history(&fleet, "?model=old").await["total"], 0);

    // A retention of a second, checked often: everything goes.
    let mut fleet = fleet
        .restart_with(|config| {
            config.history.retention = Duration::from_secs(1);
            config.history.prune_interval = Duration::from_millis(100);
        })
        .await;
    fleet
        .add_node(MockConfig::named("a").with_models(["llama3.2"]))
        .await;
    chat_ok(&fleet, false).await;
    wait_for_total(&fleet, "?model=llama3.2", 1).await;
    // Then, a second later, it goes too (and the 6-day-old request with it).
    wait_for_total(&fleet, "", 0).await;
    fleet.stop().await;
}

/// A coordinator on `data_dir` with node "a", after one request it recorded.
async fn one_request_in(data_dir: tempfile::TempDir) -> Fleet {
    let mut fleet = Fleet::empty_in(data_dir, |_| {}).await;
    fleet
        .add_node(MockConfig::named("a").with_models(["llama3.2"]))
        .await;
    chat_ok(&fleet, false).await;
    wait_for_total(&fleet, "", 1).await;
    fleet
}

#[tokio::test]
async fn a_corrupt_history_file_is_moved_aside_and_a_new_history_started() {
    let data_dir = tempfile::tempdir().unwrap();
    std::fs::write(
        data_dir.path().join(FILE_NAME),
        b"this is not an SQLite database, just some text that happens to be here",
    )
    .unwrap();
    let fleet = one_request_in(data_dir).await;
    let moved: Vec<String> = std::fs::read_dir(fleet.data_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("history.db.corrupt-"))
        .collect();
    assert_eq!(moved.len(), 1, "{moved:?}");
    let kept = std::fs::read(fleet.data_dir().join(&moved[0])).unwrap();
    assert!(kept.starts_with(b"this is not an SQLite database"));
    fleet.stop().await;
}

#[tokio::test]
async fn an_unopenable_history_file_is_moved_aside_too() {
    let data_dir = tempfile::tempdir().unwrap();
    // A folder where the file should be: SQLite cannot open it at all.
    std::fs::create_dir(data_dir.path().join(FILE_NAME)).unwrap();
    let fleet = one_request_in(data_dir).await;
    assert!(fleet.data_dir().join(FILE_NAME).is_file());
    fleet.stop().await;
}

#[tokio::test]
async fn every_request_of_a_burst_is_recorded_or_counted_as_dropped() {
    let n = 2_000u64;
    // A small queue, so that a burst can overflow it: the count must still add up.
    let mut fleet = Fleet::empty_with(|config| config.history.queue = 64).await;
    fleet
        .add_node(
            MockConfig::named("a")
                .with_models(["llama3.2"])
                .with_parallel(64),
        )
        .await;
    futures::stream::iter(0..n)
        .for_each_concurrent(64, |i| {
            let fleet = &fleet;
            async move {
                let stream = i % 2 == 0;
                let response = fleet.post("/api/chat", chat("llama3.2", stream)).await;
                assert_eq!(response.status(), 200);
                response.bytes().await.unwrap();
            }
        })
        .await;
    let (recorded, dropped) = eventually("every request accounted for", DEADLINE, || async {
        let body = history(&fleet, "?limit=1").await;
        let recorded = body["total"].as_u64().unwrap();
        let dropped = body["dropped"].as_u64().unwrap();
        (recorded + dropped == n).then_some((recorded, dropped))
    })
    .await;
    assert!(recorded > 0);
    println!("{recorded} recorded, {dropped} dropped");
    fleet.stop().await;
}

#[tokio::test]
async fn with_history_off_requests_are_served_and_nothing_is_stored() {
    let fleet = Fleet::start_with(
        vec![MockConfig::named("a").with_models(["llama3.2"])],
        |config| config.history.enabled = false,
    )
    .await;
    chat_ok(&fleet, false).await;
    chat_ok(&fleet, true).await;
    let (status, body) = fleet.get_status_json("/api/history").await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"].as_str().unwrap_or("").contains("not enabled"),
        "{body}"
    );
    let (status, health) = fleet.get_status_json("/api/health").await;
    assert_eq!(status, 200, "{health}");
    assert!(
        !fleet.data_dir().join(FILE_NAME).exists(),
        "no history file is created when the history is off"
    );
    fleet.stop().await;
}
