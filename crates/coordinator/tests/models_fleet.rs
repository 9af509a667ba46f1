//! Models across the fleet: Ollama's `/api/pull`, `/api/delete` and `/api/copy`
//! through the router reach every node, and the task API (`/api/models/pull`,
//! `/api/tasks`) starts, shows and cancels them. Real sockets: a coordinator and
//! mock nodes (whose pulls stream progress at a set speed) in this process.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use llm_router_mock_node::MockConfig;
use serde_json::{Value, json};
use support::fleet::Fleet;
use support::process::eventually;

const DEADLINE: Duration = Duration::from_secs(20);
const MODEL: &str = "phi3:mini";

async fn three_nodes() -> (Fleet, Vec<String>) {
    let mut fleet = Fleet::empty_with(|_| {}).await;
    let mut ids = Vec::new();
    for name in ["alpha", "beta", "gamma"] {
        ids.push(
            fleet
                .add_node(MockConfig::named(name).with_models(["llama3.2:latest"]))
                .await,
        );
    }
    (fleet, ids)
}

/// Every node pulls `size` bytes at `speed` bytes a second.
fn pace(fleet: &Fleet, size: u64, speed: f64) {
    for node in &fleet.nodes {
        node.control().set_pull_size_bytes(Some(size));
        node.control().set_pull_bytes_per_sec(speed);
    }
}

fn holds(fleet: &Fleet, node: &str, model: &str) -> bool {
    fleet.node(node).models().find(model).is_some()
}

/// The NDJSON lines of a streamed answer.
async fn lines(response: reqwest::Response) -> Vec<Value> {
    let text = response.text().await.unwrap();
    text.lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}")))
        .collect()
}

/// Per digest, `completed` never goes down and never passes `total`, and totals hold still.
fn assert_monotone(lines: &[Value]) {
    let mut seen: HashMap<&str, (u64, u64)> = HashMap::new();
    for line in lines {
        let (Some(digest), Some(total), Some(completed)) = (
            line["digest"].as_str(),
            line["total"].as_u64(),
            line["completed"].as_u64(),
        ) else {
            continue;
        };
        assert!(completed <= total, "{line}");
        if let Some((last_total, last_completed)) = seen.get(digest) {
            assert!(completed >= *last_completed, "progress went back: {line}");
            assert_eq!(total, *last_total, "the total moved: {line}");
        }
        seen.insert(digest, (total, completed));
    }
    assert!(!seen.is_empty(), "no layer progress at all: {lines:?}");
}

#[tokio::test]
async fn an_ollama_pull_reaches_every_node_with_one_summed_progress() {
    let (fleet, _) = three_nodes().await;
    pace(&fleet, 30_000_000, 60_000_000.0);
    let response = fleet
        .post("/api/pull", json!({ "model": MODEL, "stream": true }))
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    let lines = lines(response).await;
    assert_monotone(&lines);
    assert_eq!(lines.last().unwrap(), &json!({ "status": "success" }));
    assert!(
        lines.iter().any(|l| l["status"] == "pulling manifest"),
        "{lines:?}"
    );
    let weights = lines
        .iter()
        .filter(|l| l["digest"].is_string())
        .max_by_key(|l| l["total"].as_u64())
        .unwrap();
    assert_eq!(
        weights["completed"], weights["total"],
        "the biggest layer ends complete: {weights}"
    );
    let summed: u64 = lines
        .iter()
        .filter_map(|l| {
            l["digest"]
                .as_str()
                .map(|d| (d, l["total"].as_u64().unwrap()))
        })
        .collect::<HashMap<_, _>>()
        .values()
        .sum();
    assert_eq!(
        summed,
        3 * 30_000_000,
        "the layers of three nodes are summed"
    );
    for node in ["alpha", "beta", "gamma"] {
        assert!(holds(&fleet, node, MODEL), "{node} has no {MODEL}");
    }
    // The router lists it at once, without waiting for a heartbeat.
    let tags: Value = fleet.get_json("/api/tags").await;
    assert!(
        tags["models"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["name"] == MODEL),
        "{tags}"
    );
}

#[tokio::test]
async fn a_node_failing_mid_pull_is_named_and_the_others_get_the_model() {
    let (fleet, _) = three_nodes().await;
    pace(&fleet, 20_000_000, 80_000_000.0);
    fleet
        .node("beta")
        .control()
        .set_pull_fail_after_bytes(Some(5_000_000));
    let lines = lines(fleet.post("/api/pull", json!({ "model": MODEL })).await).await;
    assert_monotone(&lines);
    let last = lines.last().unwrap();
    let error = last["error"].as_str().unwrap_or_else(|| panic!("{last}"));
    assert!(
        error.contains("1 of 3 nodes")
            && error.contains("beta")
            && error.contains("simulated download failure"),
        "{error}"
    );
    assert!(holds(&fleet, "alpha", MODEL) && holds(&fleet, "gamma", MODEL));
    assert!(!holds(&fleet, "beta", MODEL));
    let tasks: Value = fleet.get_json("/api/tasks").await;
    assert_eq!(tasks["tasks"][0]["state"], "failed", "{tasks}");
}

#[tokio::test]
async fn a_pull_without_streaming_answers_once_at_the_end() {
    let (fleet, _) = three_nodes().await;
    pace(&fleet, 1_000_000, 0.0);
    let (status, body) = fleet
        .post_json("/api/pull", json!({ "name": MODEL, "stream": false }))
        .await;
    assert_eq!((status, body), (200, json!({ "status": "success" })));
    fleet
        .node("gamma")
        .control()
        .set_pull_fail_after_bytes(Some(1));
    let (status, body) = fleet
        .post_json(
            "/api/pull",
            json!({ "model": "qwen2.5:0.5b", "stream": false }),
        )
        .await;
    assert_eq!(status, 502, "{body}");
    assert!(body["error"].as_str().unwrap().contains("gamma"), "{body}");
}

#[tokio::test]
async fn a_header_names_the_nodes_of_a_pull() {
    let (fleet, _) = three_nodes().await;
    let response = fleet
        .client
        .post(fleet.url("/api/pull"))
        .header("x-llm-router-nodes", "alpha, gamma")
        .json(&json!({ "model": MODEL }))
        .send()
        .await
        .unwrap();
    assert_eq!(lines(response).await.last().unwrap()["status"], "success");
    assert!(holds(&fleet, "alpha", MODEL) && holds(&fleet, "gamma", MODEL));
    assert!(!holds(&fleet, "beta", MODEL));
    let unknown = fleet
        .client
        .post(fleet.url("/api/pull"))
        .header("x-llm-router-nodes", "delta")
        .json(&json!({ "model": MODEL }))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 400);
    let body: Value = unknown.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("delta"), "{body}");
}

#[tokio::test]
async fn delete_removes_the_model_from_every_holder_and_routing_stops_at_once() {
    let (fleet, _) = three_nodes().await;
    let response = fleet
        .client
        .delete(fleet.url("/api/delete"))
        .json(&json!({ "model": "llama3.2" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    for node in ["alpha", "beta", "gamma"] {
        assert!(
            !holds(&fleet, node, "llama3.2:latest"),
            "{node} still has it"
        );
    }
    let chat = fleet
        .post("/api/chat", support::chat("llama3.2", false))
        .await;
    assert_eq!(chat.status(), 404, "no node is sent the deleted model");
    let again = fleet
        .client
        .delete(fleet.url("/api/delete"))
        .json(&json!({ "model": "llama3.2" }))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 404);
    let body: Value = again.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("llama3.2"),
        "{body}"
    );
}

#[tokio::test]
async fn copy_makes_the_new_name_on_every_holder() {
    let (fleet, _) = three_nodes().await;
    let copied = fleet
        .post(
            "/api/copy",
            json!({ "source": "llama3.2", "destination": "my-llama" }),
        )
        .await;
    assert_eq!(copied.status(), 200);
    for node in ["alpha", "beta", "gamma"] {
        assert!(holds(&fleet, node, "my-llama:latest"), "{node}");
    }
    let chat = fleet
        .post("/api/chat", support::chat("my-llama", false))
        .await;
    assert_eq!(chat.status(), 200, "the copy is routable at once");
    let unknown = fleet
        .post("/api/copy", json!({ "source": "nope", "destination": "x" }))
        .await;
    assert_eq!(unknown.status(), 404);
}

async fn task(fleet: &Fleet, id: &str) -> Value {
    fleet.get_json(&format!("/api/tasks/{id}")).await
}

#[tokio::test]
async fn a_task_shows_per_node_progress_and_cancelling_it_cancels_the_nodes_pulls() {
    let (fleet, _) = three_nodes().await;
    pace(&fleet, 10_000_000_000, 50_000_000.0);
    let (status, started) = fleet
        .post_json(
            "/api/models/pull",
            json!({ "model": MODEL, "nodes": ["alpha", "beta"] }),
        )
        .await;
    assert_eq!(status, 202, "{started}");
    let id = started["id"].as_str().unwrap().to_owned();
    assert_eq!(started["state"], "running");
    let names: Vec<&str> = started["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alpha", "beta"]);
    let moving = eventually("both nodes report bytes", DEADLINE, || async {
        let t = task(&fleet, &id).await;
        let parts = t["nodes"].as_array().unwrap();
        parts
            .iter()
            .all(|p| {
                p["completed_bytes"].as_u64() > Some(0) && p["bytes_per_sec"].as_f64() > Some(0.0)
            })
            .then_some(t)
    })
    .await;
    assert!(moving["completed_bytes"].as_u64() < moving["total_bytes"].as_u64());
    let listed: Value = fleet.get_json("/api/tasks").await;
    assert_eq!(listed["tasks"][0]["id"], id);

    let cancel = fleet
        .client
        .delete(fleet.url(&format!("/api/tasks/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(cancel.status(), 202);
    let ended = eventually("the task ends cancelled", DEADLINE, || async {
        let t = task(&fleet, &id).await;
        (t["state"] == "cancelled" && t["finished_at"].is_string()).then_some(t)
    })
    .await;
    assert!(
        ended["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["state"] == "cancelled")
    );
    for name in ["alpha", "beta"] {
        let node = fleet.node(name);
        eventually("the node sees its pull cancelled", DEADLINE, || async {
            (node.stats().pulls_cancelled() == 1).then_some(())
        })
        .await;
        assert!(!holds(&fleet, name, MODEL));
    }
    assert_eq!(fleet.node("gamma").stats().pulls_started(), 0);
    let (status, _) = fleet
        .get_status_json("/api/tasks/00000000-0000-4000-8000-000000000000")
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_node_going_offline_mid_task_fails_its_part_and_the_others_go_on() {
    let (fleet, ids) = three_nodes().await;
    pace(&fleet, 40_000_000, 40_000_000.0);
    fleet
        .node("gamma")
        .control()
        .set_pull_stall_after_bytes(Some(1_000_000));
    let (status, started) = fleet
        .post_json(
            "/api/models/pull",
            json!({ "model": MODEL, "nodes": "all" }),
        )
        .await;
    assert_eq!(status, 202, "{started}");
    let id = started["id"].as_str().unwrap().to_owned();
    eventually("gamma stalls mid-pull", DEADLINE, || async {
        (fleet.node("gamma").stats().pulls_in_flight() == 1).then_some(())
    })
    .await;
    // The operator disconnects gamma, as when its machine vanishes from the network.
    let response = fleet
        .client
        .post(fleet.url(&format!("/api/agents/{}/disconnect", ids[2])))
        .header("x-requested-with", "models-fleet-test")
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    let ended = eventually("the task ends", DEADLINE, || async {
        let t = task(&fleet, &id).await;
        (t["state"] != "running").then_some(t)
    })
    .await;
    assert_eq!(ended["state"], "failed");
    let parts: HashMap<&str, &Value> = ended["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap(), p))
        .collect();
    assert_eq!(parts["alpha"]["state"], "succeeded");
    assert_eq!(parts["beta"]["state"], "succeeded");
    assert_eq!(parts["gamma"]["state"], "failed");
    assert!(
        parts["gamma"]["error"]
            .as_str()
            .unwrap()
            .contains("offline"),
        "{ended}"
    );
    assert!(holds(&fleet, "alpha", MODEL) && holds(&fleet, "beta", MODEL));
}

#[tokio::test]
async fn nodes_without_room_are_skipped_with_the_reason() {
    let (fleet, ids) = three_nodes().await;
    let gb = 1_000_000_000u64;
    for (id, free) in ids.iter().zip([50 * gb, gb / 2, 50 * gb]) {
        let response = fleet
            .client
            .post(fleet.url(&format!("/api/agents/{id}/heartbeat")))
            .bearer_auth(fleet.credentials.get(id).map_or("", String::as_str))
            .json(&json!({ "metrics": { "models_disk_free_bytes": free, "models_disk_total_bytes": 100 * gb } }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 204);
    }
    let (status, started) = fleet
        .post_json("/api/models/pull", json!({ "model": MODEL }))
        .await;
    assert_eq!(status, 202, "{started}");
    let beta = &started["nodes"][1];
    assert_eq!(beta["name"], "beta");
    assert_eq!(beta["state"], "skipped");
    assert!(
        beta["error"]
            .as_str()
            .unwrap()
            .starts_with("not enough free disk: 0.5 GB free"),
        "{beta}"
    );
    let id = started["id"].as_str().unwrap();
    let ended = eventually("the pull ends", DEADLINE, || async {
        let t = task(&fleet, id).await;
        (t["state"] != "running").then_some(t)
    })
    .await;
    assert_eq!(
        ended["state"], "succeeded",
        "skipped nodes were never targets"
    );
    assert!(!holds(&fleet, "beta", MODEL));
    let (status, body) = fleet
        .post_json(
            "/api/models/pull",
            json!({ "model": MODEL, "nodes": ["beta"] }),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("beta: not enough free disk"),
        "{body}"
    );
}

#[tokio::test]
async fn bad_requests_get_clear_errors_and_push_stays_unsupported() {
    let (fleet, _) = three_nodes().await;
    let (status, body) = fleet.post_json("/api/pull", json!({})).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("model is required"))
    );
    let (status, body) = fleet
        .post_json(
            "/api/models/pull",
            json!({ "model": MODEL, "nodes": "some" }),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    let (status, body) = fleet
        .post_json(
            "/api/models/pull",
            json!({ "model": MODEL, "nodes": { "count": 0 } }),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    let (status, body) = fleet
        .post_json("/api/push", json!({ "model": MODEL }))
        .await;
    assert_eq!(status, 501, "{body}");
    assert!(body["error"].as_str().unwrap().contains("push"), "{body}");
}

#[tokio::test]
async fn with_an_admin_login_only_operators_may_pull_or_delete() {
    let fleet = Fleet::empty_with(|c| {
        c.access.admin = Some(llm_router_coordinator::auth::AdminMode::Auth);
        c.access.admin_tokens = vec!["admin-secret-token-0123456789".into()];
    })
    .await;
    let (status, _) = fleet
        .post_json("/api/pull", json!({ "model": MODEL }))
        .await;
    assert_eq!(status, 401);
    let denied = fleet
        .client
        .delete(fleet.url("/api/delete"))
        .json(&json!({ "model": MODEL }))
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 401);
    let allowed = fleet
        .client
        .post(fleet.url("/api/pull"))
        .bearer_auth("admin-secret-token-0123456789")
        .json(&json!({ "model": MODEL }))
        .send()
        .await
        .unwrap();
    assert_eq!(
        allowed.status(),
        409,
        "an operator gets past the gate (to an empty fleet)"
    );
}

#[tokio::test]
async fn create_runs_on_every_node_and_streams_its_statuses() {
    let (fleet, _) = three_nodes().await;
    let response = fleet
        .post(
            "/api/create",
            json!({ "model": "llama-brief", "from": "llama3.2", "system": "Answer briefly." }),
        )
        .await;
    assert_eq!(response.status(), 200);
    let lines = lines(response).await;
    let statuses: Vec<&str> = lines.iter().filter_map(|l| l["status"].as_str()).collect();
    assert!(statuses.contains(&"writing manifest"), "{statuses:?}");
    assert_eq!(statuses.last(), Some(&"success"), "{lines:?}");
    for node in ["alpha", "beta", "gamma"] {
        assert!(holds(&fleet, node, "llama-brief:latest"), "{node}");
    }
    let chat = fleet
        .post("/api/chat", support::chat("llama-brief", false))
        .await;
    assert_eq!(chat.status(), 200, "the new model is routable at once");
}
