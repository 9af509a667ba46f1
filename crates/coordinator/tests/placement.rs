//! Fleet-level placement end to end: real coordinator, mock nodes on sockets.

mod support;

use std::time::Duration;

use llm_router_coordinator::config::PlacementMode;
use llm_router_mock_node::{Endpoint, MockConfig};
use serde_json::{Value, json};
use support::fleet::Fleet;
use support::process::eventually_showing;

fn node(name: &str, models: &[&str], loaded: &str) -> MockConfig {
    let mut config = MockConfig::named(name).with_models(models.iter().copied());
    config.loaded_models = vec![loaded.to_owned()];
    config.parallel = 1;
    config.tokens_per_sec = 200.0;
    config.default_tokens = 8;
    config.load_time = Duration::from_millis(300);
    config
}

fn chat(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": false})
}

/// One chat for `model` through the coordinator, answered; then the plan.
async fn chat_then_plan(fleet: &Fleet, model: &str) -> Value {
    let response = fleet.post("/api/chat", chat(model)).await;
    assert_eq!(response.status(), 200);
    response.bytes().await.unwrap();
    fleet.get_json("/api/placement").await
}

/// `a` holds only m1, `b` holds m1 and m2 with m1 in memory, `c` holds only
/// m2. Only m2 is asked for: m1 leaves the plan, the plan gives m2 to `b`,
/// and `b` is warmed before any m2 request reaches it.
#[tokio::test]
async fn the_plan_moves_a_model_to_a_node_and_warms_it_before_traffic_arrives() {
    let fleet = Fleet::start_with(
        vec![
            node("a", &["m1"], "m1"),
            node("b", &["m1", "m2"], "m1"),
            node("c", &["m2"], "m2"),
        ],
        |config| config.proxy.placement_interval = Duration::from_millis(100),
    )
    .await;

    let placement =
        eventually_showing("b planned and warm for m2", Duration::from_secs(20), || {
            let fleet = &fleet;
            async move {
                let plan = chat_then_plan(fleet, "m2").await;
                let b = plan["nodes"]
                    .as_array()
                    .and_then(|nodes| nodes.iter().find(|n| n["name"] == "b"))
                    .cloned();
                match b {
                    Some(b) if b["warm"] == json!(["m2:latest"]) => Ok(plan),
                    _ => Err(plan.to_string()),
                }
            }
        })
        .await;
    assert_eq!(placement["enabled"], true);
    let m2 = placement["demand"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["model"] == "m2:latest")
        .expect("m2 in the demand");
    assert!(
        m2["requests_per_sec"].as_f64().unwrap() > 0.0,
        "{placement}"
    );
    assert!(
        placement["demand"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["model"] != "m1:latest"),
        "m1 has no demand and must leave the plan: {placement}"
    );

    // The load on b was the pre-load: no request had reached it yet.
    let b = fleet.node("b");
    assert_eq!(b.stats().model_loads(), 1);
    assert_eq!(b.stats().requests(Endpoint::Generate), 1, "the pre-load");

    // Traffic for m2 now reaches b, warm.
    let mut served_by_b = 0;
    for _ in 0..20 {
        let response = fleet.post("/api/chat", chat("m2")).await;
        assert_eq!(response.status(), 200);
        served_by_b += usize::from(Fleet::served_by(&response) == "b");
        response.bytes().await.unwrap();
    }
    assert!(served_by_b > 0, "the planned node got no traffic");
    assert_eq!(b.stats().model_loads(), 1, "a request to b had to load");
    let metrics = fleet.get_text("/metrics").await;
    assert!(
        metrics.contains("llm_router_node_cold_loads_total{node=\"b\"} 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("llm_router_placement_preloads_total 1"),
        "{metrics}"
    );
    fleet.stop().await;
}

#[tokio::test]
async fn with_placement_off_the_endpoint_says_so_and_nothing_is_preloaded() {
    let fleet = Fleet::start_with(
        vec![node("b", &["m1", "m2"], "m1"), node("c", &["m2"], "m2")],
        |config| {
            config.proxy.placement = PlacementMode::Off;
            config.proxy.placement_interval = Duration::from_millis(50);
        },
    )
    .await;
    for _ in 0..5 {
        let response = fleet.post("/api/chat", chat("m2")).await;
        assert_eq!(response.status(), 200);
        response.bytes().await.unwrap();
    }
    let plan: Value = fleet.get_json("/api/placement").await;
    assert_eq!(plan["enabled"], false);
    assert!(plan["reason"].as_str().unwrap().contains("off"), "{plan}");
    assert_eq!(plan["nodes"], json!([]));
    assert_eq!(fleet.node("b").stats().model_loads(), 0);
    fleet.stop().await;
}

/// `ollama show` (and UIs listing models) reads a model's metadata without
/// loading it: many such reads for m2 are no demand for m2, and they do not
/// make the coordinator believe `b` swapped m1 out for it.
#[tokio::test]
async fn metadata_reads_are_no_demand_and_load_nothing() {
    let fleet = Fleet::start_with(vec![node("b", &["m1", "m2"], "m1")], |config| {
        config.proxy.placement_interval = Duration::from_millis(50)
    })
    .await;
    for _ in 0..20 {
        let response = fleet.post("/api/show", json!({"model": "m2"})).await;
        assert_eq!(response.status(), 200);
        response.bytes().await.unwrap();
    }
    let plan = eventually_showing("m1 planned", Duration::from_secs(20), || {
        let fleet = &fleet;
        async move {
            let plan = chat_then_plan(fleet, "m1").await;
            if plan["nodes"][0]["models"] == json!(["m1:latest"]) {
                Ok(plan)
            } else {
                Err(plan.to_string())
            }
        }
    })
    .await;
    let demand: Vec<&Value> = plan["demand"].as_array().unwrap().iter().collect();
    assert!(
        demand.iter().all(|d| d["model"] != "m2:latest"),
        "metadata reads counted as demand: {plan}"
    );
    assert_eq!(plan["nodes"][0]["warm"], json!(["m1:latest"]), "{plan}");
    let metrics = fleet.get_text("/metrics").await;
    let cold: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("llm_router_node_cold_loads"))
        .collect();
    assert!(
        !cold.is_empty() && cold.iter().all(|l| l.ends_with(" 0")),
        "{cold:?}"
    );
    assert_eq!(fleet.node("b").stats().model_loads(), 0);
    fleet.stop().await;
}

/// Under a plan, a request whose best node has every slot busy waits in the
/// router, not in that node's queue: `x` and `y` both serve m with one slot
/// each; a long answer holds one, a short answer the other, and a third
/// request, sent while both run, is answered by the node the short answer
/// freed while the long one still runs.
#[tokio::test]
async fn a_request_waits_in_the_router_for_the_first_slot_that_frees() {
    let slow_node = |name: &str| {
        let mut config = node(name, &["m"], "m");
        config.tokens_per_sec = 20.0;
        config
    };
    let mut fleet = Fleet::empty_with(|config| {
        config.proxy.placement_interval = Duration::from_millis(100);
    })
    .await;
    let mut ids = Vec::new();
    for name in ["x", "y"] {
        ids.push(fleet.add_node(slow_node(name)).await);
    }
    // The agents report one slot each: the router knows when a node is full.
    for id in &ids {
        let response = fleet
            .client
            .post(fleet.url(&format!("/api/agents/{id}/heartbeat")))
            .bearer_auth(fleet.credentials.get(id).map_or("", String::as_str))
            .json(&json!({
                "metrics": {"cpu_percent": 5.0, "memory_percent": 30.0},
                "loaded_models": [{"name": "m"}],
                "max_parallel": 1,
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 204);
    }
    eventually_showing("m planned on x and y", Duration::from_secs(20), || {
        let fleet = &fleet;
        async move {
            let plan = chat_then_plan(fleet, "m").await;
            let planned = plan["nodes"].as_array().map_or(0, |nodes| {
                nodes
                    .iter()
                    .filter(|n| n["models"] == json!(["m:latest"]))
                    .count()
            });
            if planned == 2 {
                Ok(())
            } else {
                Err(plan.to_string())
            }
        }
    })
    .await;

    let streamed = |tokens: u64| {
        json!({"model": "m", "messages": [{"role": "user", "content": "hi"}],
               "stream": true, "options": {"num_predict": tokens}})
    };
    // 400 tokens at 20 a second: 20 s; 10 tokens: half a second.
    let long = fleet.post("/api/chat", streamed(400)).await;
    assert_eq!(long.status(), 200);
    let long_node = Fleet::served_by(&long);
    let short = fleet.post("/api/chat", streamed(10)).await;
    assert_eq!(short.status(), 200);
    let short_node = Fleet::served_by(&short);
    assert_ne!(
        long_node, short_node,
        "the second request found the first node full"
    );

    let third = fleet.post("/api/chat", chat("m")).await;
    assert_eq!(third.status(), 200);
    assert_eq!(
        Fleet::served_by(&third),
        short_node,
        "the third request went to the node whose slot freed first"
    );
    third.bytes().await.unwrap();
    assert_eq!(
        fleet.node(&long_node).stats().in_flight(),
        1,
        "the long answer still runs: the third did not wait behind it"
    );
    short.bytes().await.unwrap();
    drop(long);
    fleet.stop().await;
}
