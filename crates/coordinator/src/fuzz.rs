//! Property-based tests of what parses untrusted input: thousands of generated inputs
//! each (seeded, so a failure reproduces), none may panic, and every refusal is a 4xx.

use axum::http::HeaderValue;
use axum::response::IntoResponse;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::registry::validate;

fn config(cases: u32) -> Config {
    Config {
        cases,
        failure_persistence: None,
        rng_seed: RngSeed::Fixed(0x11_7e_40_07),
        ..Config::default()
    }
}

/// Any JSON value, a few levels deep, with the odd strings and numbers clients send.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|n| json!(n)),
        ".{0,40}".prop_map(Value::String),
        Just(json!("")),
        Just(json!("llama3.2:latest")),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(".{0,12}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// `base` with some of its fields replaced by arbitrary values or removed.
fn mutated(base: Value) -> impl Strategy<Value = Value> {
    let keys: Vec<String> = base.as_object().unwrap().keys().cloned().collect();
    prop::collection::vec((0..keys.len(), prop::option::of(json_value())), 0..4).prop_map(
        move |changes| {
            let mut doc = base.clone();
            let map = doc.as_object_mut().unwrap();
            for (i, value) in changes {
                match value {
                    Some(value) => map.insert(keys[i].clone(), value),
                    None => map.remove(&keys[i]),
                };
            }
            doc
        },
    )
}

fn client_error(error: impl Into<ApiError>) -> bool {
    error.into().into_response().status().is_client_error()
}

#[test]
fn the_request_peek_never_panics_and_refuses_with_a_4xx() {
    let chat = json!({"model": "m", "messages": [], "stream": true, "options": {}});
    let mut runner = proptest::test_runner::TestRunner::new(config(3000));
    let inputs = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..200),
        mutated(chat).prop_map(|v| v.to_string().into_bytes()),
        json_value().prop_map(|v| v.to_string().into_bytes()),
    ];
    runner
        .run(&(inputs, any::<bool>()), |(body, stream_default)| {
            if let Err(error) = crate::proxy::peek::peek(&body, stream_default) {
                prop_assert!(error.status().is_client_error(), "{error}");
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn registration_heartbeat_and_patch_validation_never_panic() {
    let registration = json!({
        "machine_name": "gpu-1", "ip_address": "10.0.0.2", "ollama_port": 11434,
        "models": [{"name": "llama3.2"}], "api_url": "http://10.0.0.2:11434",
        "ollama_version": "0.12.0",
    });
    let heartbeat = json!({
        "metrics": {"cpu_percent": 1.0, "memory_percent": 2.0, "memory_used_bytes": 1,
                    "memory_total_bytes": 2, "gpus": [{"index": 0, "utilization_percent": 5.0}]},
        "models": [{"name": "m"}], "loaded_models": [{"name": "m"}],
    });
    let patch = json!({"display_name": "x", "tags": ["a"], "notes": "n", "draining": true});
    let mut runner = proptest::test_runner::TestRunner::new(config(2000));
    runner
        .run(
            &(mutated(registration), mutated(heartbeat), mutated(patch)),
            |(registration, heartbeat, patch)| {
                if let Ok(req) = serde_json::from_value(registration)
                    && let Err(e) = validate::registration(&req)
                {
                    prop_assert!(client_error(e));
                }
                if let Ok(req) = serde_json::from_value(heartbeat)
                    && let Err(e) = validate::heartbeat(&req)
                {
                    prop_assert!(client_error(e));
                }
                if let Ok(req) = serde_json::from_value(patch)
                    && let Err(e) = validate::patch(req)
                {
                    prop_assert!(client_error(e));
                }
                Ok(())
            },
        )
        .unwrap();
}

/// The cells of one RFC 4180 line (quoted cells may hold commas, quotes and newlines).
fn parse_csv_line(line: &str) -> Vec<String> {
    let mut cells = vec![String::new()];
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        let cell = cells.last_mut().unwrap();
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                cell.push('"');
            }
            ('"', true) => quoted = false,
            ('"', false) if cell.is_empty() => quoted = true,
            (',', false) => cells.push(String::new()),
            (c, _) => cell.push(c),
        }
    }
    cells
}

proptest! {
    #![proptest_config(config(3000))]

    #[test]
    fn node_urls_are_validated_without_panic_and_quoted_short(url in ".{0,300}") {
        if let Err(error) = validate::api_url(&url) {
            // 64 characters quoted, each at most `\u{10ffff}` once escaped.
            let message = error.to_string();
            prop_assert!(message.chars().count() < 64 * 10 + 200, "{message}");
        }
        prop_assert!(validate::shown(&url).chars().count() <= 65);
    }

    #[test]
    fn history_filters_parse_without_panic(
        params in prop::collection::hash_map(
            prop_oneof![
                Just("model"), Just("node"), Just("key"), Just("status"), Just("endpoint"),
                Just("outcome"), Just("since"), Just("until"), Just("q"), Just("other"),
            ].prop_map(str::to_owned),
            ".{0,40}",
            0..6,
        )
    ) {
        let query: crate::history::query::HistoryQuery =
            serde_json::from_value(serde_json::json!(params)).unwrap();
        let _ = crate::history::query::Filter::from_query(&query);
    }

    #[test]
    fn bearer_tokens_parse_without_panic(value in prop::collection::vec(any::<u8>(), 0..80)) {
        if let Ok(value) = HeaderValue::from_bytes(&value)
            && let Some(token) = crate::auth::secret::bearer(&value)
        {
            prop_assert!(!token.is_empty());
            prop_assert_eq!(token, token.trim());
        }
    }

    #[test]
    fn csv_cells_never_start_a_formula(model in ".{0,30}", error in prop::option::of(".{0,30}")) {
        let item = crate::history::store::HistoryItem {
            id: 1,
            request_id: "r".into(),
            time: chrono::DateTime::from_timestamp(0, 0).unwrap(),
            client_ip: None,
            api_key: None,
            endpoint: "/api/chat".into(),
            model,
            node: None,
            nodes_tried: Vec::new(),
            status: 200,
            outcome: "completed".into(),
            stream: false,
            duration_ms: 1.0,
            ttft_ms: None,
            prompt_tokens: None,
            completion_tokens: None,
            error,
        };
        let mut out = Vec::new();
        crate::api::history::csv_row(&item, &mut out);
        let row = String::from_utf8(out).unwrap();
        prop_assert!(row.ends_with("\r\n"));
        let cells = parse_csv_line(row.strip_suffix("\r\n").unwrap());
        prop_assert_eq!(cells.len(), crate::api::history::CSV_COLUMNS.len(), "{:?}", row);
        for cell in &cells {
            prop_assert!(!cell.starts_with(['=', '+', '-', '@']), "{:?}", row);
        }
        let expected = if item.model.starts_with(['=', '+', '-', '@', '\t', '\r']) {
            format!("'{}", item.model)
        } else {
            item.model.clone()
        };
        prop_assert_eq!(&cells[6], &expected);
    }
}
