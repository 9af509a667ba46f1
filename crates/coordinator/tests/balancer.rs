//! Load-balancing policies end to end: real coordinator, mock nodes on sockets.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;
use llm_router_coordinator::config::BalancerMode;
use llm_router_mock_node::MockConfig;
use serde_json::{Value, json};
use support::fleet::Fleet;
use support::process::eventually;

fn chat(stream: bool) -> Value {
    json!({"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}], "stream": stream})
}

async fn spread(fleet: &Fleet, requests: usize) -> HashMap<String, usize> {
    let mut served = HashMap::new();
    for _ in 0..requests {
        let response = fleet.post("/api/chat", chat(false)).await;
        assert_eq!(response.status(), 200);
        *served.entry(Fleet::served_by(&response)).or_insert(0) += 1;
        response.bytes().await.unwrap();
    }
    served
}

fn three_equal_nodes() -> Vec<MockConfig> {
    ["a", "b", "c"]
        .into_iter()
        .map(|name| {
            let mut config = MockConfig::named(name).with_models(["llama3.2"]);
            config.loaded_models = vec!["llama3.2".into()];
            config
        })
        .collect()
}

#[tokio::test]
async fn thirty_requests_over_three_idle_equal_nodes_give_each_about_ten() {
    for mode in [
        BalancerMode::RoundRobin,
        BalancerMode::LeastConnections,
        BalancerMode::Metrics,
        BalancerMode::Latency,
        BalancerMode::Auto,
    ] {
        let fleet = Fleet::start_with(three_equal_nodes(), |c| c.proxy.balancer = mode).await;
        let served = spread(&fleet, 30).await;
        for node in ["a", "b", "c"] {
            let count = served.get(node).copied().unwrap_or(0);
            // Latency picks the better of two random nodes: equal nodes get a fair, not exact, share.
            let range = if mode == BalancerMode::Latency {
                4..=16
            } else {
                10..=10
            };
            assert!(range.contains(&count), "{mode:?}: {served:?}");
        }
        fleet.stop().await;
    }
}

#[tokio::test]
async fn metrics_policy_avoids_the_node_at_ninety_percent_cpu() {
    let mut fleet = Fleet::empty_with(|c| c.proxy.balancer = BalancerMode::Metrics).await;
    let hot = fleet
        .add_node(MockConfig::named("hot").with_models(["llama3.2"]))
        .await;
    let cool = fleet
        .add_node(MockConfig::named("cool").with_models(["llama3.2"]))
        .await;
    fleet.heartbeat(&hot, 90.0, &[]).await;
    fleet.heartbeat(&cool, 20.0, &[]).await;
    let served = spread(&fleet, 10).await;
    assert_eq!(served, HashMap::from([("cool".to_owned(), 10)]));
    fleet.stop().await;
}

#[tokio::test]
async fn auto_sends_a_request_to_the_node_with_the_model_loaded_not_the_idle_one_that_must_load_it()
{
    let mut fleet = Fleet::empty_with(|c| c.proxy.balancer = BalancerMode::Auto).await;
    let mut idle = MockConfig::named("a-idle").with_models(["llama3.2", "qwen2.5:7b"]);
    idle.loaded_models = vec!["qwen2.5:7b".into()];
    idle.load_time = Duration::from_secs(3);
    let mut warm = MockConfig::named("b-warm").with_models(["llama3.2"]);
    warm.loaded_models = vec!["llama3.2".into()];
    fleet.add_node(idle).await;
    fleet.add_node(warm).await;
    let served = spread(&fleet, 5).await;
    assert_eq!(served, HashMap::from([("b-warm".to_owned(), 5)]));
    assert_eq!(fleet.node("a-idle").stats().model_loads(), 0);
    fleet.stop().await;
}

/// 1,000 requests, some cancelled by the client mid-stream, some failing on
/// the node, some dying mid-stream: the in-flight counts end at exactly 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_counters_return_to_zero_after_mixed_cancellations_and_failures() {
    let mut flaky = MockConfig::named("flaky").with_models(["llama3.2"]);
    flaky.fail_rate = 0.3;
    let mut dying = MockConfig::named("dying").with_models(["llama3.2"]);
    dying.die_after_tokens = Some(2);
    let steady = MockConfig::named("steady")
        .with_models(["llama3.2"])
        .with_tokens_per_sec(2000.0);
    let fleet = Fleet::start_with(vec![flaky, dying, steady], |c| {
        c.proxy.balancer = BalancerMode::LeastConnections;
    })
    .await;
    let outcomes = futures::stream::iter(0..1000)
        .map(|i| {
            let fleet = &fleet;
            async move {
                let response = fleet.post("/api/chat", chat(i % 2 == 0)).await;
                if i % 5 == 0 {
                    // Read one chunk, then hang up.
                    let mut body = response.bytes_stream();
                    let _ = body.next().await;
                    drop(body);
                } else {
                    let _ = response.bytes().await;
                }
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<()>>()
        .await;
    assert_eq!(outcomes.len(), 1000);
    eventually(
        "every in-flight count back to 0",
        Duration::from_secs(20),
        || async {
            let agents = fleet.agents().await;
            let router_zero = agents.iter().all(|n| n["in_flight"] == 0);
            let nodes_zero = fleet.nodes.iter().all(|n| n.stats().in_flight() == 0);
            (router_zero && nodes_zero).then_some(())
        },
    )
    .await;
    let total: u64 = fleet.nodes.iter().map(|n| n.stats().total_requests()).sum();
    assert!(total >= 1000, "only {total} requests reached the nodes");
    fleet.stop().await;
}

/// A node that refuses connections leaves rotation after two failures in a
/// row (clients never see them: the request fails over), stays out while it
/// is down, and rejoins once probes find it answering again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_node_leaves_rotation_and_rejoins_when_probes_find_it_back() {
    let mut fleet = Fleet::start_with(
        vec![
            MockConfig::named("a").with_models(["llama3.2"]),
            MockConfig::named("b").with_models(["llama3.2"]),
        ],
        |c| {
            c.proxy.balancer = BalancerMode::RoundRobin;
            c.proxy.probe_interval = Duration::from_millis(100);
        },
    )
    .await;
    let index = fleet.nodes.iter().position(|n| n.name() == "a").unwrap();
    let a = fleet.nodes.remove(index);
    let addr = a.addr();
    a.stop().await;

    let served = spread(&fleet, 20).await;
    assert_eq!(served, HashMap::from([("b".to_owned(), 20)]));
    let metrics = fleet.get_text("/metrics").await;
    let failures = metrics
        .lines()
        .find(|l| {
            l.starts_with("llm_router_node_attempt_failures_total{") && l.contains("node=\"a\"")
        })
        .unwrap_or_else(|| panic!("no attempt failures for a:\n{metrics}"));
    assert!(
        failures.ends_with(" 2"),
        "a was tried after it left rotation: {failures}"
    );

    // The node comes back on its address; probes bring it back into rotation.
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    fleet.nodes.push(
        llm_router_mock_node::MockNode::start_on(
            listener,
            MockConfig::named("a").with_models(["llama3.2"]),
        )
        .unwrap(),
    );
    eventually(
        "a serves requests again",
        Duration::from_secs(10),
        || async {
            let response = fleet.post("/api/chat", chat(false)).await;
            let node = Fleet::served_by(&response);
            response.bytes().await.unwrap();
            (node == "a").then_some(())
        },
    )
    .await;
    fleet.stop().await;
}

/// A whole (non-streamed) answer still says how fast its node is: the latency
/// policy learns from it and sends the rest to the faster node.
#[tokio::test]
async fn latency_learns_from_whole_answers_and_prefers_the_faster_node() {
    let mut slow = MockConfig::named("slow").with_models(["llama3.2"]);
    slow.ttft = Duration::from_millis(400);
    let fast = MockConfig::named("fast").with_models(["llama3.2"]);
    let fleet = Fleet::start_with(vec![slow, fast], |c| {
        c.proxy.balancer = BalancerMode::Latency
    })
    .await;
    let served = spread(&fleet, 12).await;
    let slow_count = served.get("slow").copied().unwrap_or(0);
    // Each node is tried once to be measured; then the faster one wins.
    assert!(slow_count <= 2, "{served:?}");
    fleet.stop().await;
}
