//! Nodes added without an agent (`POST /api/nodes`): the coordinator probes
//! them itself. Real sockets: a coordinator and mock nodes in this process.

mod support;

use std::time::Duration;

use llm_router_mock_node::{Endpoint, MockConfig, MockNode};
use serde_json::{Value, json};
use support::chat;
use support::fleet::Fleet;
use support::process::eventually;

const DEADLINE: Duration = Duration::from_secs(10);

/// Fast probes, and an agent timeout short enough that a test sees it pass.
async fn fleet() -> Fleet {
    Fleet::empty_with(|c| {
        c.heartbeat_interval = Duration::from_millis(200);
        c.health_check_interval = Duration::from_millis(100);
        c.agent_timeout = Duration::from_millis(1200);
    })
    .await
}

async fn add(fleet: &Fleet, body: Value) -> (u16, Value) {
    fleet.post_json("/api/nodes", body).await
}

/// Adds a node; returns its id.
async fn add_id(fleet: &Fleet, body: Value) -> String {
    let (_, added) = add(fleet, body).await;
    added["id"].as_str().unwrap().to_owned()
}

fn names(list: &Value) -> Vec<String> {
    let mut names: Vec<String> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn an_ollama_node_added_by_url_is_probed_serves_requests_and_follows_its_server() {
    let fleet = fleet().await;
    let node = MockNode::start(MockConfig {
        loaded_models: vec!["qwen3:4b".into()],
        ..MockConfig::named("mock-a").with_models(["llama3.2", "qwen3:4b"])
    })
    .await
    .unwrap();
    let addr = node.addr();

    let (status, added) = add(&fleet, json!({"api_url": node.url(), "name": "gpu-box"})).await;
    assert_eq!(status, 201, "{added}");
    assert_eq!(added["machine_name"], "gpu-box");
    assert_eq!(added["agentless"], true);
    assert_eq!(added["api_kind"], "ollama");
    assert_eq!(added["api_url"], node.url());
    assert_eq!(added["ip_address"], "127.0.0.1");
    let id = added["id"].as_str().unwrap().to_owned();

    let online = fleet.wait_for_status(&id, "online").await;
    assert_eq!(names(&online["models"]), ["llama3.2:latest", "qwen3:4b"]);
    assert_eq!(names(&online["loaded_models"]), ["qwen3:4b"]);
    assert_eq!(online["ollama_version"], "0.12.0");
    assert_eq!(online["agentless"], true);
    assert!(online.get("metrics").is_none(), "a probe measures no load");

    let response = fleet.post("/api/chat", chat("llama3.2", false)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(Fleet::served_by(&response), "gpu-box");

    // Probes act as heartbeats: the node outlives several agent timeouts. Fifteen
    // more probes at 200 ms span 3 s, two and a half timeouts; a node that went
    // offline in between would have started its uptime again.
    let probed = node.stats().requests(Endpoint::Tags);
    let watched = std::time::Instant::now();
    eventually("fifteen more probes", DEADLINE, || {
        std::future::ready((node.stats().requests(Endpoint::Tags) >= probed + 15).then_some(()))
    })
    .await;
    let after = fleet.agent(&id).await.unwrap();
    assert_eq!(after["status"], "online", "{after}");
    let uptime = after["uptime_secs"].as_u64().unwrap();
    assert!(
        uptime + 1 >= watched.elapsed().as_secs(),
        "the node went offline between probes: up {uptime} s of the {:?} watched",
        watched.elapsed()
    );

    // The same URL again keeps the node.
    let (status, again) = add(&fleet, json!({"api_url": format!("{}/", node.url())})).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["id"], id);
    assert_eq!(again["machine_name"], "gpu-box");
    assert_eq!(fleet.agents().await.len(), 1);

    node.stop().await;
    let offline = fleet.wait_for_status(&id, "offline").await;
    assert_eq!(
        offline["status_reason"],
        "the coordinator cannot reach the node's inference server"
    );
    let response = fleet.post("/api/chat", chat("llama3.2", false)).await;
    assert_eq!(response.status(), 503);

    // The server answers again on the same address: the node comes back.
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let node = MockNode::start_on(listener, MockConfig::named("mock-a")).unwrap();
    fleet.wait_for_status(&id, "online").await;
    let response = fleet.post("/api/chat", chat("llama3.2", false)).await;
    assert_eq!(response.status(), 200);
    node.stop().await;
    fleet.stop().await;
}

#[tokio::test]
async fn an_openai_node_gets_its_models_from_v1_models() {
    let fleet = fleet().await;
    let node = MockNode::start(MockConfig::named("vllm").with_models(["mistral:7b"]))
        .await
        .unwrap();
    // A base URL ending in /v1, as OpenAI clients write it, is accepted.
    let (status, added) = add(
        &fleet,
        json!({"api_url": format!("{}/v1", node.url()), "kind": "openai"}),
    )
    .await;
    assert_eq!(status, 201, "{added}");
    assert_eq!(added["api_kind"], "openai");
    assert_eq!(added["api_url"], node.url());
    assert_eq!(
        added["machine_name"], "127.0.0.1",
        "the default name is the host"
    );
    let id = added["id"].as_str().unwrap().to_owned();

    let online = fleet.wait_for_status(&id, "online").await;
    assert_eq!(names(&online["models"]), ["mistral:7b"]);
    assert_eq!(online["loaded_models"], json!([]));
    assert!(online.get("ollama_version").is_none());

    let response = fleet
        .post(
            "/v1/chat/completions",
            json!({"model": "mistral:7b", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(response.status(), 200);
    // Ollama's API reaches it translated to OpenAI's, and its model list offers
    // that server's models too.
    let tags: Value = fleet.get_json("/api/tags").await;
    assert_eq!(tags["models"][0]["name"], "mistral:7b", "{tags}");
    let models: Value = fleet.get_json("/v1/models").await;
    assert_eq!(models["data"][0]["id"], "mistral:7b", "{models}");
    let response = fleet.post("/api/chat", chat("mistral:7b", false)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        node.stats().requests(Endpoint::Chat),
        0,
        "never its /api/chat"
    );
    assert_eq!(node.stats().requests(Endpoint::OpenAiChat), 2);
    assert_eq!(
        node.stats().requests(Endpoint::Tags),
        0,
        "an openai node is not asked Ollama's questions"
    );
    node.stop().await;
    fleet.stop().await;
}

#[tokio::test]
async fn a_node_that_never_answered_is_added_offline() {
    let fleet = fleet().await;
    // A port nothing listens on.
    // Bound but never listening: connections are refused, and no other test can take the port.
    let refusing = tokio::net::TcpSocket::new_v4().unwrap();
    refusing.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let url = format!("http://{}", refusing.local_addr().unwrap());
    let (status, added) = add(&fleet, json!({"api_url": url})).await;
    assert_eq!(status, 201, "{added}");
    assert_eq!(added["status"], "offline");
    assert_eq!(
        added["status_reason"],
        "the coordinator cannot reach the node's inference server"
    );
    fleet.stop().await;
}

#[tokio::test]
async fn bad_inputs_are_rejected_with_json_errors() {
    let fleet = fleet().await;
    for (body, status) in [
        (json!({"api_url": "ftp://10.0.0.5"}), 422),
        (json!({"api_url": "not a url"}), 422),
        (json!({"api_url": "http://"}), 422),
        (
            json!({"api_url": "http://10.0.0.5:11434", "name": "  "}),
            422,
        ),
        (
            json!({"api_url": "http://10.0.0.5:11434", "name": "x".repeat(257)}),
            422,
        ),
        (
            json!({"api_url": "http://10.0.0.5:11434", "kind": "vllm"}),
            422,
        ),
        (json!({"name": "no-url"}), 422),
        (
            json!({"api_url": "http://10.0.0.5:11434", "url": "typo"}),
            422,
        ),
    ] {
        let (answered, error) = add(&fleet, body.clone()).await;
        assert_eq!(answered, status, "{body}");
        assert!(
            error["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{body}: {error}"
        );
    }
    let response = fleet
        .client
        .post(fleet.url("/api/nodes"))
        .header("content-type", "application/json")
        .body("{\"api_url\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.unwrap();
    assert!(error["error"].is_string());
    assert!(fleet.agents().await.is_empty());
    fleet.stop().await;
}

#[tokio::test]
async fn an_agentless_node_is_managed_like_any_other_and_survives_a_restart() {
    let fleet = fleet().await;
    let node = MockNode::start(MockConfig::named("m").with_models(["llama3.2"]))
        .await
        .unwrap();
    let id = add_id(&fleet, json!({"api_url": node.url(), "name": "box"})).await;
    fleet.wait_for_status(&id, "online").await;
    let node_url = fleet.url(&format!("/api/agents/{id}"));

    let patched: Value = fleet
        .client
        .patch(&node_url)
        .json(&json!({"display_name": "Box", "draining": true}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(patched["display_name"], "Box");
    assert_eq!(patched["status"], "draining");
    fleet
        .client
        .patch(&node_url)
        .json(&json!({"draining": false}))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap();

    // Disconnect takes it offline now; like an agent's next heartbeat, the next probe brings it back.
    let disconnected: Value = fleet
        .post(&format!("/api/agents/{id}/disconnect"), json!({}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(disconnected["status"], "offline");
    assert_eq!(disconnected["status_reason"], "disconnected by an operator");
    fleet.wait_for_status(&id, "online").await;

    // The kind and the agentless flag survive a restart; probing resumes.
    let fleet = fleet
        .restart_with(|c| {
            c.heartbeat_interval = Duration::from_millis(200);
        })
        .await;
    let restored = fleet.wait_for_status(&id, "online").await;
    assert_eq!(restored["agentless"], true);
    assert_eq!(restored["api_kind"], "ollama");
    assert_eq!(restored["display_name"], "Box");

    let node_url = fleet.url(&format!("/api/agents/{id}"));
    let deleted = fleet.client.delete(&node_url).send().await.unwrap();
    assert_eq!(deleted.status(), 204);
    let probes_before = node.stats().requests(Endpoint::Tags);
    // Probe rounds go on (another node comes online through them), without the deleted node.
    let other = MockNode::start(MockConfig::named("other")).await.unwrap();
    let other_id = add_id(&fleet, json!({"api_url": other.url()})).await;
    let other_probes = other.stats().requests(Endpoint::Tags);
    eventually("two more probe rounds", DEADLINE, || async {
        (other.stats().requests(Endpoint::Tags) >= other_probes + 2).then_some(())
    })
    .await;
    let ids: Vec<Value> = fleet
        .agents()
        .await
        .iter()
        .map(|n| n["id"].clone())
        .collect();
    assert_eq!(ids, [json!(other_id)]);
    // At most a probe already under way when the node was deleted.
    assert!(node.stats().requests(Endpoint::Tags) <= probes_before + 1);
    let missing = fleet.client.get(&node_url).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    other.stop().await;
    node.stop().await;
    fleet.stop().await;
}

#[tokio::test]
async fn an_agent_registering_for_an_added_url_takes_the_node_over() {
    let fleet = fleet().await;
    let node = MockNode::start(MockConfig::named("m").with_models(["llama3.2"]))
        .await
        .unwrap();
    let id = add_id(&fleet, json!({"api_url": node.url()})).await;
    let response = fleet
        .post(
            "/api/agents/register",
            json!({
                "machine_name": "real-name",
                "ip_address": "127.0.0.1",
                "ollama_port": node.addr().port(),
                "models": [{"name": "llama3.2:latest"}],
            }),
        )
        .await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["node_id"], id);
    let taken = fleet.agent(&id).await.unwrap();
    assert_eq!(taken["agentless"], false);
    assert_eq!(taken["machine_name"], "real-name");
    assert_eq!(fleet.agents().await.len(), 1);
    node.stop().await;
    fleet.stop().await;
}
