//! `GET /metrics` and the request statistics of `GET /api/agents`, against
//! mock nodes on real sockets: a known mix of requests (streamed and not,
//! both APIs, an unknown model, a node that fails every request, a bad
//! body, a client that goes away) must be counted exactly, with the node
//! gauges read from the registry.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use futures::StreamExt;
use llm_router_coordinator::config::BalancerMode;
use llm_router_mock_node::MockConfig;
use prometheus_parse::{Sample, Scrape, Value as PromValue};
use serde_json::{Value, json};
use support::fleet::Fleet;
use support::process::eventually;

const DEADLINE: Duration = Duration::from_secs(10);
const LLAMA: &str = "llama3.2:latest";

/// A parsed scrape.
struct Metrics {
    samples: Vec<Sample>,
}

fn number(value: &PromValue) -> f64 {
    match value {
        PromValue::Counter(v) | PromValue::Gauge(v) | PromValue::Untyped(v) => *v,
        other => panic!("not a single number: {other:?}"),
    }
}

impl Metrics {
    /// The samples of `name` as (labels sorted, value).
    fn series(&self, name: &str) -> BTreeMap<Vec<(String, String)>, f64> {
        self.samples
            .iter()
            .filter(|s| s.metric == name)
            .map(|s| {
                let mut labels: Vec<(String, String)> = s
                    .labels
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                labels.sort();
                (labels, number(&s.value))
            })
            .collect()
    }

    /// The value of `name` with exactly `labels`.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut wanted: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        wanted.sort();
        self.series(name).get(&wanted).copied()
    }

    /// Sum of `name` over the series whose labels include `labels`.
    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|s| s.metric == name)
            .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| number(&s.value))
            .sum()
    }
}

async fn scrape(fleet: &Fleet) -> Metrics {
    let response = fleet.get("/metrics").await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = response.text().await.unwrap();
    // Every sample belongs to a family declared with HELP and TYPE.
    let mut declared = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            declared.push(rest.split(' ').next().unwrap().to_owned());
        } else if !line.starts_with('#') && !line.is_empty() {
            let name = line.split(['{', ' ']).next().unwrap();
            assert!(
                declared
                    .iter()
                    .any(|family| name.starts_with(family.as_str())),
                "sample without a TYPE line: {line}"
            );
        }
    }
    let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
    Metrics {
        samples: scrape.samples,
    }
}

/// The labels of one `llm_router_requests_total` series.
type RequestKey = (&'static str, String, String, u16, &'static str);

fn request_series(metrics: &Metrics) -> BTreeMap<RequestKey, f64> {
    metrics
        .series("llm_router_requests_total")
        .into_iter()
        .map(|(labels, value)| {
            let labels: HashMap<String, String> = labels.into_iter().collect();
            let endpoint: &'static str = ["/api/chat", "/api/generate", "/v1/chat/completions"]
                .into_iter()
                .find(|e| *e == labels["endpoint"])
                .unwrap_or_else(|| panic!("unexpected endpoint {labels:?}"));
            let outcome: &'static str = ["completed", "rejected", "failed", "cancelled"]
                .into_iter()
                .find(|o| *o == labels["outcome"])
                .unwrap_or_else(|| panic!("unexpected outcome {labels:?}"));
            let key = (
                endpoint,
                labels["model"].clone(),
                labels["node"].clone(),
                labels["status"].parse().unwrap(),
                outcome,
            );
            (key, value)
        })
        .collect()
}

/// Completion tokens an answer reports: Ollama's last `eval_count` or OpenAI's usage.
fn completion_tokens(body: &str) -> u64 {
    body.lines()
        .rev()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find_map(|v| {
            v["eval_count"]
                .as_u64()
                .or_else(|| v["usage"]["completion_tokens"].as_u64())
        })
        .unwrap_or_else(|| panic!("no token count in {body}"))
}

fn node<'a>(agents: &'a [Value], name: &str) -> &'a Value {
    agents
        .iter()
        .find(|n| n["machine_name"] == name)
        .unwrap_or_else(|| panic!("no node {name} in {agents:?}"))
}

#[tokio::test]
async fn counters_match_the_requests_sent_and_gauges_follow_the_fleet() {
    let fast = |name: &str, model: &str| {
        MockConfig::named(name)
            .with_models([model])
            .with_tokens_per_sec(2000.0)
    };
    let mut fleet = Fleet::empty_with(|_| {}).await;
    fleet.add_node(fast("alpha", "llama3.2")).await;
    fleet.add_node(fast("beta", "llama3.2")).await;
    let gamma_id = fleet.add_node(fast("gamma", "qwen2.5")).await;
    fleet
        .add_node(
            MockConfig::named("slow")
                .with_models(["slowpoke"])
                .with_tokens_per_sec(5.0),
        )
        .await;
    fleet.node("gamma").control().set_fail_rate(1.0);

    let mut expected: BTreeMap<RequestKey, f64> = BTreeMap::new();
    let mut tokens: HashMap<String, u64> = HashMap::new();
    let mut answered = 0;
    let chat = |stream: bool| json!({"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}], "stream": stream});
    let sends: Vec<(&'static str, Value, bool)> = vec![
        ("/api/chat", chat(true), true),
        ("/api/chat", chat(true), true),
        ("/api/chat", chat(true), true),
        ("/api/chat", chat(false), false),
        (
            "/api/generate",
            json!({"model": "llama3.2", "prompt": "hi", "stream": false}),
            false,
        ),
        (
            "/api/generate",
            json!({"model": "llama3.2:latest", "prompt": "hi", "stream": false}),
            false,
        ),
        (
            "/v1/chat/completions",
            json!({"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}]}),
            false,
        ),
        (
            "/v1/chat/completions",
            json!({"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}], "stream": true, "stream_options": {"include_usage": true}}),
            true,
        ),
    ];
    let mut streamed_answers = 0;
    for (path, body, streamed) in sends {
        let response = fleet.post(path, body).await;
        assert_eq!(response.status(), 200, "{path}");
        let node = Fleet::served_by(&response);
        let text = response.text().await.unwrap();
        *tokens.entry(node.clone()).or_default() += completion_tokens(
            &text
                .lines()
                .map(|l| l.strip_prefix("data: ").unwrap_or(l))
                .collect::<Vec<_>>()
                .join("\n"),
        );
        *expected
            .entry((path, LLAMA.into(), node, 200, "completed"))
            .or_default() += 1.0;
        answered += 1;
        streamed_answers += usize::from(streamed);
    }
    // No node holds the model: 404, no node, and the model name is not a label.
    let response = fleet.post("/api/chat", chat(false).tap_model("nope")).await;
    assert_eq!(response.status(), 404);
    response.bytes().await.unwrap();
    expected.insert(
        ("/api/chat", "other".into(), "none".into(), 404, "rejected"),
        1.0,
    );
    // The only node holding qwen2.5 fails: 502, attributed to it.
    let response = fleet
        .post("/api/chat", chat(false).tap_model("qwen2.5"))
        .await;
    assert_eq!(response.status(), 502);
    response.bytes().await.unwrap();
    expected.insert(
        (
            "/api/chat",
            "qwen2.5:latest".into(),
            "gamma".into(),
            502,
            "rejected",
        ),
        1.0,
    );
    // No model at all: 400 before any routing.
    let response = fleet.post("/api/generate", json!({"prompt": "hi"})).await;
    assert_eq!(response.status(), 400);
    response.bytes().await.unwrap();
    expected.insert(
        (
            "/api/generate",
            "none".into(),
            "none".into(),
            400,
            "rejected",
        ),
        1.0,
    );

    let sent: f64 = expected.values().sum();
    let metrics = eventually("every request is counted", DEADLINE, || async {
        let metrics = scrape(&fleet).await;
        (metrics.sum("llm_router_requests_total", &[]) >= sent).then_some(metrics)
    })
    .await;
    let counted = request_series(&metrics);
    assert_eq!(counted, expected);
    assert_eq!(
        metrics.get(
            "llm_router_node_attempt_failures_total",
            &[("node", "gamma")]
        ),
        Some(1.0)
    );
    assert_eq!(
        metrics.sum("llm_router_node_attempt_failures_total", &[]),
        1.0
    );
    // Durations of answered requests; time to first token of streamed ones.
    assert_eq!(
        metrics.sum("llm_router_request_duration_seconds_count", &[]),
        answered as f64
    );
    assert_eq!(
        metrics.sum("llm_router_time_to_first_token_seconds_count", &[]),
        streamed_answers as f64
    );
    assert_eq!(
        metrics.sum(
            "llm_router_request_duration_seconds_count",
            &[("endpoint", "/api/generate"), ("model", LLAMA)]
        ),
        2.0
    );
    for (node, count) in &tokens {
        assert_eq!(
            metrics.get(
                "llm_router_tokens_total",
                &[("model", LLAMA), ("node", node), ("kind", "completion")]
            ),
            Some(*count as f64),
            "completion tokens of {node}"
        );
        assert!(
            metrics.get(
                "llm_router_tokens_total",
                &[("model", LLAMA), ("node", node), ("kind", "prompt")]
            ) > Some(0.0)
        );
    }
    for name in ["alpha", "beta", "gamma", "slow"] {
        assert_eq!(
            metrics.get("llm_router_node_up", &[("node", name)]),
            Some(1.0)
        );
        assert_eq!(
            metrics.get("llm_router_in_flight_requests", &[("node", name)]),
            Some(0.0)
        );
    }
    assert_eq!(
        metrics.get("llm_router_nodes", &[("status", "online")]),
        Some(4.0)
    );
    assert_eq!(
        metrics.get("llm_router_nodes", &[("status", "offline")]),
        Some(0.0)
    );

    // Per-node statistics in /api/agents.
    let agents = fleet.agents().await;
    let served = |node: &str| -> f64 {
        expected
            .iter()
            .filter(|((_, _, n, status, _), _)| n == node && *status == 200)
            .map(|(_, count)| count)
            .sum()
    };
    let mut total_ok = 0.0;
    for name in ["alpha", "beta"] {
        let stats = &node(&agents, name)["stats"];
        let count = served(name);
        total_ok += count;
        assert_eq!(
            stats["requests_total"].as_f64(),
            Some(count),
            "{name}: {stats}"
        );
        assert_eq!(
            stats["requests_ok"].as_f64(),
            Some(count),
            "{name}: {stats}"
        );
        if count > 0.0 {
            assert!(
                stats["tokens_per_second"].as_f64().unwrap() > 0.0,
                "{stats}"
            );
            assert!(stats["avg_latency_ms"].as_f64().unwrap() > 0.0, "{stats}");
            assert!(
                stats["recent_latency_ms"].as_f64().unwrap() > 0.0,
                "{stats}"
            );
            assert_eq!(
                stats["models"][LLAMA]["requests_total"].as_f64(),
                Some(count),
                "{stats}"
            );
        }
    }
    assert_eq!(total_ok, answered as f64);
    let gamma = &node(&agents, "gamma")["stats"];
    assert_eq!(gamma["requests_total"], 1, "{gamma}");
    assert_eq!(gamma["requests_failed"], 1, "{gamma}");
    assert_eq!(gamma["requests_ok"], 0, "{gamma}");
    assert_eq!(gamma["avg_latency_ms"], Value::Null, "{gamma}");
    assert_eq!(node(&agents, "slow")["stats"]["requests_total"], 0);

    // A slow streamed answer is in flight until the client goes away.
    let mut body = chat(true).tap_model("slowpoke");
    body["options"] = json!({"num_predict": 100});
    let response = fleet.post("/api/chat", body).await;
    assert_eq!(response.status(), 200);
    let mut stream = response.bytes_stream();
    stream.next().await.unwrap().unwrap();
    let metrics = scrape(&fleet).await;
    assert_eq!(
        metrics.get("llm_router_in_flight_requests", &[("node", "slow")]),
        Some(1.0)
    );
    assert_eq!(
        node(&fleet.agents().await, "slow")["in_flight"],
        1,
        "the registry agrees"
    );
    drop(stream);
    let metrics = eventually("the cancelled request is counted", DEADLINE, || async {
        let metrics = scrape(&fleet).await;
        metrics
            .get(
                "llm_router_requests_total",
                &[
                    ("endpoint", "/api/chat"),
                    ("model", "slowpoke:latest"),
                    ("node", "slow"),
                    ("status", "200"),
                    ("outcome", "cancelled"),
                ],
            )
            .is_some()
            .then_some(metrics)
    })
    .await;
    assert_eq!(
        metrics.get("llm_router_in_flight_requests", &[("node", "slow")]),
        Some(0.0)
    );
    let agents = fleet.agents().await;
    let slow = &node(&agents, "slow")["stats"];
    assert_eq!(slow["requests_total"], 1, "{slow}");
    assert_eq!(slow["requests_failed"], 1, "{slow}");

    // A deleted node's series and statistics go with it.
    let deleted = fleet
        .client
        .delete(fleet.url(&format!("/api/agents/{gamma_id}")))
        .send()
        .await
        .unwrap();
    assert!(deleted.status().is_success());
    let metrics = scrape(&fleet).await;
    assert!(
        metrics
            .samples
            .iter()
            .all(|s| s.labels.get("node") != Some("gamma")),
        "series of the deleted node remain"
    );
    assert_eq!(
        metrics.get("llm_router_nodes", &[("status", "online")]),
        Some(3.0)
    );
    fleet.stop().await;
}

#[tokio::test]
async fn whole_answers_count_as_completed() {
    let fleet = Fleet::start(vec![
        MockConfig::named("a")
            .with_models(["llama3.2"])
            .with_tokens_per_sec(2000.0),
    ])
    .await;
    let response = fleet
        .post(
            "/api/generate",
            json!({"model": "llama3.2", "prompt": "hi", "stream": false}),
        )
        .await;
    assert_eq!(response.status(), 200);
    response.bytes().await.unwrap();
    let metrics = eventually("the request is counted", DEADLINE, || async {
        let metrics = scrape(&fleet).await;
        (metrics.sum("llm_router_requests_total", &[]) >= 1.0).then_some(metrics)
    })
    .await;
    assert_eq!(
        metrics.get(
            "llm_router_requests_total",
            &[
                ("endpoint", "/api/generate"),
                ("model", LLAMA),
                ("node", "a"),
                ("status", "200"),
                ("outcome", "completed"),
            ]
        ),
        Some(1.0)
    );
    let agents = fleet.agents().await;
    let stats = &node(&agents, "a")["stats"];
    assert_eq!(stats["requests_ok"], 1, "{stats}");
    assert!(
        stats["tokens_per_second"].as_f64().unwrap() > 0.0,
        "{stats}"
    );
    fleet.stop().await;
}

#[tokio::test]
async fn node_gauges_come_from_the_last_heartbeat() {
    let mut fleet = Fleet::empty_with(|_| {}).await;
    let id = fleet.add_node(MockConfig::named("gpu-box")).await;
    fleet.add_node(MockConfig::named("idle")).await;
    let heartbeat = json!({
        "metrics": {
            "cpu_percent": 12.5,
            "memory_percent": 40.0,
            "gpus": [
                {"index": 0, "name": "A", "utilization_percent": 55.0, "memory_used_bytes": 1073741824u64},
                {"index": 1, "name": "B", "utilization_percent": 5.0}
            ]
        }
    });
    let answer = fleet
        .client
        .post(fleet.url(&format!("/api/agents/{id}/heartbeat")))
        .bearer_auth(&fleet.credentials[&id])
        .json(&heartbeat)
        .send()
        .await
        .unwrap();
    assert!(answer.status().is_success());
    let metrics = scrape(&fleet).await;
    let node = [("node", "gpu-box")];
    assert_eq!(
        metrics.get("llm_router_node_cpu_percent", &node),
        Some(12.5)
    );
    assert_eq!(
        metrics.get("llm_router_node_memory_percent", &node),
        Some(40.0)
    );
    assert_eq!(
        metrics.get(
            "llm_router_node_gpu_utilization_percent",
            &[("node", "gpu-box"), ("gpu", "0")]
        ),
        Some(55.0)
    );
    assert_eq!(
        metrics.get(
            "llm_router_node_gpu_utilization_percent",
            &[("node", "gpu-box"), ("gpu", "1")]
        ),
        Some(5.0)
    );
    assert_eq!(
        metrics.get(
            "llm_router_node_gpu_memory_used_bytes",
            &[("node", "gpu-box"), ("gpu", "0")]
        ),
        Some(1073741824.0)
    );
    // Readings a node did not send are absent, not zero.
    assert_eq!(
        metrics.get(
            "llm_router_node_gpu_memory_used_bytes",
            &[("node", "gpu-box"), ("gpu", "1")]
        ),
        None
    );
    assert_eq!(
        metrics.get("llm_router_node_cpu_percent", &[("node", "idle")]),
        None
    );
    assert_eq!(
        metrics.get("llm_router_node_up", &[("node", "idle")]),
        Some(1.0)
    );
    // Nobody sent a request yet: the request families are declared but empty.
    assert_eq!(metrics.series("llm_router_requests_total").len(), 0);
    // Statistics are there from the start, all zero.
    let agents = fleet.agents().await;
    let stats = &agents[0]["stats"];
    assert_eq!(stats["requests_total"], 0, "{stats}");
    assert_eq!(stats["tokens_per_second"], Value::Null, "{stats}");
    fleet.stop().await;
}

/// `json!` bodies with another model.
trait TapModel {
    fn tap_model(self, model: &str) -> Self;
}

impl TapModel for Value {
    fn tap_model(mut self, model: &str) -> Self {
        self["model"] = json!(model);
        self
    }
}

/// A failover counts against the node that failed, by id: two machines may share a name.
#[tokio::test]
async fn a_failed_attempt_counts_against_the_node_that_failed_even_when_names_repeat() {
    let mut fleet = Fleet::empty_with(|c| c.proxy.balancer = BalancerMode::RoundRobin).await;
    let failing = fleet.add_node(MockConfig::named("twin")).await;
    let healthy = fleet.add_node(MockConfig::named("twin")).await;
    // The mocks are in the order they were added.
    fleet.nodes[0].control().set_fail_rate(1.0);
    for _ in 0..4 {
        let answer = fleet
            .post(
                "/api/generate",
                json!({"model": "llama3.2", "prompt": "hi", "stream": false}),
            )
            .await;
        assert_eq!(answer.status(), 200);
    }
    let total = |node: &Value| node["stats"]["requests_total"].as_u64().unwrap_or(0);
    let ok = |node: &Value| node["stats"]["requests_ok"].as_u64().unwrap_or(0);
    let failing = fleet.agent(&failing).await.unwrap();
    let healthy = fleet.agent(&healthy).await.unwrap();
    assert!(total(&failing) >= 1, "{failing}");
    assert_eq!(ok(&failing), 0, "{failing}");
    assert_eq!(total(&healthy), 4, "{healthy}");
    assert_eq!(ok(&healthy), 4, "{healthy}");
    fleet.stop().await;
}
