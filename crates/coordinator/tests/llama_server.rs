//! Acceptance tests with llama.cpp's own HTTP server, `llama-server` (the C++
//! server, which llama-cpp-python's Python server is not): its `/slots` and
//! Prometheus `/metrics`, read by `llm-router-agent --backend openai` or by
//! the coordinator's probe, steer the balancer; and its streamed token counts
//! reach Ollama clients.
//!
//! The binary is `$LLM_ROUTER_TEST_LLAMA_SERVER`, else `llama-server` on the
//! `PATH`. `.ci/llama-server PYTHON` builds it from the llama.cpp source that
//! llama-cpp-python's source distribution carries, and `.ci/run` sets the
//! variable. The model is the tiny random-weight GGUF that
//! `tests/python/make_tiny_gguf.py` writes (Python with `gguf` and `numpy`;
//! nothing is downloaded). A missing binary or package fails the tests; they
//! are never skipped.
//!
//! Every server binds port 0 and the test reads the port from its
//! "listening on http://127.0.0.1:PORT" line. No request carries an
//! `x-request-id` of its own, so the router's ids are what reach the server.

mod support;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};
use support::fleet::Fleet;
use support::process::{Proc, eventually_showing};
use support::python::{python, python_command, require_modules};

const BUILD_HINT: &str = "build it with `.ci/llama-server python3` (it prints the binary's \
     path) and point LLM_ROUTER_TEST_LLAMA_SERVER at it";
const PYTHON_HINT: &str = "run `python3 -m pip install -r tests/python/llama-requirements.txt` \
     from the workspace root (or point LLM_ROUTER_TEST_PYTHON at a python that has it)";
const MODEL: &str = "tiny";
/// The server's start and the model's load (about a second: the model is tiny).
const SERVER_START: Duration = Duration::from_secs(60);
/// Until the fleet shows what the agents report.
const REPORTED: Duration = Duration::from_secs(30);
/// One request through the router.
const REQUEST: Duration = Duration::from_secs(60);
/// The model's context and the servers': long enough that one answer of
/// `BUSY_TOKENS` (end token ignored) keeps a slot busy for about 20 seconds on
/// 2 cores, while the test sends its requests elsewhere. Dropping the answer's
/// response cuts it short: the server stops a request whose client is gone.
const CONTEXT: &str = "8192";
const BUSY_TOKENS: u32 = 8000;

/// `$LLM_ROUTER_TEST_LLAMA_SERVER`, else `llama-server` on the `PATH`.
fn llama_server_binary() -> OsString {
    std::env::var_os("LLM_ROUTER_TEST_LLAMA_SERVER")
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "llama-server".into())
}

/// Fails, saying how to build it, unless the `llama-server` binary runs.
fn require_llama_server() {
    let binary = llama_server_binary();
    let ran = std::process::Command::new(&binary)
        .arg("--version")
        .output();
    match ran {
        Ok(output) if output.status.success() => {}
        Ok(output) => panic!(
            "{binary:?} --version failed ({}): {}\n{BUILD_HINT}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ),
        Err(e) => panic!("could not run llama-server ({binary:?}: {e}): {BUILD_HINT}"),
    }
}

/// The tiny model, written into `dir` by `tests/python/make_tiny_gguf.py`.
async fn tiny_model(dir: &Path) -> PathBuf {
    let python = python();
    require_modules(&python, "gguf, numpy", PYTHON_HINT).await;
    let model = dir.join("tiny.gguf");
    let output = python_command(&python)
        .arg("tests/python/make_tiny_gguf.py")
        .arg(&model)
        .args(["--context-length", CONTEXT])
        .output();
    let output = tokio::time::timeout(Duration::from_secs(60), output)
        .await
        .expect("make_tiny_gguf.py did not finish within a minute")
        .expect("could not run python");
    assert!(
        output.status.success(),
        "make_tiny_gguf.py failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    model
}

/// A `llama-server` on 127.0.0.1 serving the tiny model as `tiny` with one
/// slot; killed when dropped.
struct LlamaServer {
    url: String,
    proc: Proc,
}

impl LlamaServer {
    async fn start(name: &str, model: &Path, extra: &[&str]) -> Self {
        require_llama_server();
        let mut command = std::process::Command::new(llama_server_binary());
        command
            .arg("--model")
            .arg(model)
            .args(["--alias", MODEL, "--host", "127.0.0.1", "--port", "0"])
            .args(["--parallel", "1", "--ctx-size", CONTEXT, "--threads", "1"])
            .arg("--no-webui")
            .args(extra);
        // The server reads its settings from LLAMA_ARG_* too: none from the environment.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("LLAMA_ARG_") {
                command.env_remove(key);
            }
        }
        let proc = Proc::spawn(name, command);
        let port = tokio::task::block_in_place(|| {
            proc.wait_for_line(
                "\"listening on http://127.0.0.1:PORT\"",
                SERVER_START,
                |line| {
                    let (_, rest) = line.split_once("listening on http://127.0.0.1:")?;
                    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                    digits.parse::<u16>().ok()
                },
            )
        });
        let server = LlamaServer {
            url: format!("http://127.0.0.1:{port}"),
            proc,
        };
        let client = reqwest::Client::new();
        eventually_showing(
            &format!("{name} answering /health with 200"),
            SERVER_START,
            || async {
                let response = client
                    .get(format!("{}/health", server.url))
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                match response.status().as_u16() {
                    200 => Ok(()),
                    status => Err(format!("HTTP {status}; output:\n{}", server.proc.output())),
                }
            },
        )
        .await;
        server
    }

    /// Starts an answer of `BUSY_TOKENS` on the server's only slot, as a
    /// client that is not the router; the answer runs while the response is kept.
    async fn hold_its_slot(&self) -> reqwest::Response {
        let response = reqwest::Client::new()
            .post(format!("{}/completion", self.url))
            .json(&json!({
                "prompt": "hello",
                "n_predict": BUSY_TOKENS,
                "ignore_eos": true,
                "stream": true,
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{}", self.proc.output());
        response
    }

    /// How many of its slots the server says are processing, from `/slots`.
    async fn slots_processing(&self) -> usize {
        let slots: Value = reqwest::get(format!("{}/slots", self.url))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        slots
            .as_array()
            .unwrap_or_else(|| panic!("/slots is not a list: {slots}"))
            .iter()
            .filter(|slot| slot["is_processing"] == true)
            .count()
    }

    /// `llamacpp:requests_processing` in the server's `/metrics`.
    async fn metrics_processing(&self) -> f64 {
        let text = reqwest::get(format!("{}/metrics", self.url))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|line| line.strip_prefix("llamacpp:requests_processing "))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or_else(|| panic!("no llamacpp:requests_processing in /metrics:\n{text}"))
    }
}

/// The node named `name` once `GET /api/agents` shows `until` true of it.
async fn node_where(
    fleet: &Fleet,
    name: &str,
    what: &str,
    until: impl Fn(&Value) -> bool,
) -> Value {
    eventually_showing(&format!("{name}: {what}"), REPORTED, || async {
        let nodes = fleet.agents().await;
        match nodes.iter().find(|n| n["machine_name"] == name) {
            Some(node) if until(node) => Ok(node.clone()),
            _ => Err(format!("{nodes:#?}")),
        }
    })
    .await
}

/// Four short chats through the router, in both APIs, and who served each.
async fn four_chats(fleet: &Fleet) -> Vec<String> {
    let mut served = Vec::new();
    for openai in [false, true, false, true] {
        let (path, body) = if openai {
            (
                "/v1/chat/completions",
                json!({"model": MODEL, "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}),
            )
        } else {
            (
                "/api/chat",
                json!({"model": MODEL, "stream": false, "options": {"num_predict": 4},
                       "messages": [{"role": "user", "content": "hi"}]}),
            )
        };
        let response = tokio::time::timeout(REQUEST, fleet.post(path, body))
            .await
            .expect("no answer within a minute");
        assert_eq!(response.status(), 200, "{path}");
        served.push(Fleet::served_by(&response));
    }
    served
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_report_a_real_llama_servers_slots_and_metrics_and_the_router_picks_the_free_server()
{
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path()).await;
    // One server reports through /slots (on by default), the other has them
    // off and reports through Prometheus /metrics.
    let slots_box = LlamaServer::start("slots-box", &model, &[]).await;
    let metrics_box = LlamaServer::start("metrics-box", &model, &["--no-slots", "--metrics"]).await;

    let fleet = Fleet::empty_with(|c| c.heartbeat_interval = Duration::from_millis(200)).await;
    let mut agents = Vec::new();
    for (name, server) in [("slots-box", &slots_box), ("metrics-box", &metrics_box)] {
        let data = dir.path().join(name);
        std::fs::create_dir_all(&data).unwrap();
        agents.push(fleet.openai_agent(&server.url, name, &data));
    }
    for (name, source) in [("slots-box", "/slots"), ("metrics-box", "/metrics")] {
        let node = node_where(
            &fleet,
            name,
            &format!("online, {MODEL}, load from {source}"),
            |n| n["status"] == "online" && n["server_load"]["source"] == source,
        )
        .await;
        assert_eq!(node["api_kind"], "openai", "{node:#}");
        let models: Vec<&str> = node["models"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|m| m["name"].as_str())
            .collect();
        assert_eq!(models, [MODEL], "{node:#}");
    }
    let slots = node_where(&fleet, "slots-box", "one slot", |n| {
        n["server_load"]["slots_total"] == 1
    })
    .await;
    assert_eq!(slots["server_load"]["requests_running"], 0, "{slots:#}");

    // Each server in turn is kept busy by another client; the router's
    // requests go to the other one while it is.
    for (busy, busy_name, free_name) in [
        (&slots_box, "slots-box", "metrics-box"),
        (&metrics_box, "metrics-box", "slots-box"),
    ] {
        let held = busy.hold_its_slot().await;
        node_where(&fleet, busy_name, "reported busy", |n| {
            n["server_load"]["requests_running"] == 1
        })
        .await;
        let served = four_chats(&fleet).await;
        assert_eq!(
            served, [free_name; 4],
            "{busy_name} was busy; {free_name} was free"
        );
        // The busy server was busy all along.
        let still_busy = if busy_name == "slots-box" {
            busy.slots_processing().await as f64
        } else {
            busy.metrics_processing().await
        };
        assert_eq!(
            still_busy, 1.0,
            "{busy_name}'s answer ended before the test's requests did: make BUSY_TOKENS larger"
        );
        drop(held);
        node_where(&fleet, busy_name, "free again", |n| {
            n["server_load"]["requests_running"] == 0
        })
        .await;
    }
    fleet.stop().await;
}

/// The last line of an NDJSON answer, and how many lines came before it.
fn last_line(body: &str) -> (Value, usize) {
    let lines: Vec<Value> = body
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let last = lines.last().cloned().expect("an empty stream");
    (last, lines.len() - 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_llama_server_added_by_url_shows_its_slots_and_its_streamed_counts_reach_ollama_clients()
{
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path()).await;
    let server = LlamaServer::start("llama-server", &model, &[]).await;
    let fleet = Fleet::empty_with(|_| {}).await;
    let (status, added) = fleet
        .post_json(
            "/api/nodes",
            json!({"api_url": server.url, "kind": "openai", "name": "llama-server"}),
        )
        .await;
    assert_eq!(status, 201, "{added}");
    // The coordinator's probe reads the slots, as an agent would.
    let node = node_where(&fleet, "llama-server", "online, load from /slots", |n| {
        n["status"] == "online" && n["server_load"]["source"] == "/slots"
    })
    .await;
    assert_eq!(node["server_load"]["slots_total"], 1, "{node:#}");
    assert_eq!(node["agentless"], true, "{node:#}");

    let options = json!({"num_predict": 8, "seed": 7, "temperature": 0});
    let body = |path: &str, stream: bool| {
        let mut body = json!({"model": MODEL, "stream": stream, "options": options});
        if path == "/api/chat" {
            body["messages"] = json!([{"role": "user", "content": "Why is the sky blue?"}]);
        } else {
            body["prompt"] = json!("Why is the sky blue?");
        }
        body
    };
    for path in ["/api/chat", "/api/generate"] {
        let whole = fleet.post(path, body(path, false)).await;
        assert_eq!(whole.status(), 200, "{path}");
        let whole: Value = whole.json().await.unwrap();
        let streamed = fleet.post(path, body(path, true)).await;
        assert_eq!(streamed.status(), 200, "{path}");
        let (last, pieces) = last_line(&streamed.text().await.unwrap());
        assert_eq!(last["done"], true, "{path}: {last}");
        assert!(pieces > 0, "{path}: no text before the last line");
        for counter in ["prompt_eval_count", "eval_count"] {
            let count = last[counter].as_u64();
            assert!(
                count.is_some_and(|n| n > 0),
                "{path} streamed: {counter} in {last}"
            );
            assert_eq!(
                count,
                whole[counter].as_u64(),
                "{path}: the streamed and the whole answer count {counter} differently"
            );
        }
        assert!(
            last["eval_count"].as_u64() <= Some(8),
            "{path}: more tokens than asked for: {last}"
        );
        for duration in ["total_duration", "eval_duration"] {
            assert!(
                last[duration].as_u64().is_some_and(|d| d > 0),
                "{path}: {duration} in {last}"
            );
        }
    }
    fleet.stop().await;
}
