//! Acceptance test with a real llama.cpp server: `llama-cpp-python[server]`
//! (`python -m llama_cpp.server`) serving the tiny random-weight model that
//! `tests/python/make_tiny_gguf.py` writes, under two names from one
//! `--config_file`: `tiny` (chat) and `tiny-embed` (embeddings). Nothing is
//! downloaded: the model is made in a temporary folder by each test.
//!
//! - Added by URL as an OpenAI-style node (`POST /api/nodes`), the server is
//!   driven through the router by `tests/python/llama_server_test.py` with the
//!   official clients: `ollama` (chat and generate, streamed and not, which the
//!   router translates to `/v1`, and embed) and `openai` (passed through).
//! - `llm-router-agent --backend openai` in front of it registers it as an
//!   OpenAI-style node with both models, and an Ollama chat reaches it.
//!
//! The server binds port 0 and the test reads the port it got from uvicorn's
//! "Uvicorn running on http://127.0.0.1:PORT" line. No request of these tests
//! carries an `x-request-id` of its own: the server refuses ids that are not
//! UUIDs, so the router's own ids must be what reaches it.
//!
//! The packages must be installed beforehand (`.ci/run` does it):
//! `python3 -m pip install -r tests/python/requirements.txt -r
//! tests/python/llama-requirements.txt`. The interpreter is
//! `$LLM_ROUTER_TEST_PYTHON` when set, else `python3`. A missing interpreter
//! or package fails the test; it is never skipped.

mod support;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};
use support::fleet::Fleet;
use support::process::{Proc, eventually_showing};
use support::python::{
    PYTHON_ENV, PYTHON_ENV_REMOVED, python, python_command, require_modules, workspace_root,
};

const INSTALL_HINT: &str = "run `python3 -m pip install -r tests/python/requirements.txt \
     -r tests/python/llama-requirements.txt` from the workspace root (or point \
     LLM_ROUTER_TEST_PYTHON at a python that has them)";
const MAKE_MODEL: &str = "tests/python/make_tiny_gguf.py";
const SCRIPT: &str = "tests/python/llama_server_test.py";
const CHAT_MODEL: &str = "tiny";
const EMBED_MODEL: &str = "tiny-embed";
/// Python's imports and the model's load (well under ten seconds on 2 cores).
const SERVER_START: Duration = Duration::from_secs(120);
/// The whole script (a few seconds: the model is tiny).
const SCRIPT_DEADLINE: Duration = Duration::from_secs(300);
/// A node known to the coordinator until it shows online.
const ONLINE: Duration = Duration::from_secs(30);
/// One request through the router.
const REQUEST: Duration = Duration::from_secs(60);

/// Runs `python args` to its end within `deadline`; fails the test with the
/// install command when it exits 3 (a package is missing), else unless it exits 0.
async fn run_python(python: &OsString, args: &[&std::ffi::OsStr], deadline: Duration) -> String {
    let shown: Vec<_> = args.iter().map(|a| a.to_string_lossy()).collect();
    let shown = shown.join(" ");
    let output = tokio::time::timeout(deadline, python_command(python).args(args).output())
        .await
        .unwrap_or_else(|_| panic!("`python {shown}` did not finish within {deadline:?}"))
        .unwrap_or_else(|e| {
            panic!(
                "could not run the Python interpreter {:?} ({e}): install Python 3, or set \
                 LLM_ROUTER_TEST_PYTHON to one; then {INSTALL_HINT}",
                python.to_string_lossy()
            )
        });
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if output.status.code() == Some(3) {
        panic!("`python {shown}` is missing Python packages: {INSTALL_HINT}\n{stderr}");
    }
    assert!(
        output.status.success(),
        "`python {shown}` failed ({}):\n--- stdout\n{stdout}--- stderr\n{stderr}",
        output.status
    );
    stdout.into_owned()
}

/// Fails, with the command to install them, when the packages are missing.
async fn require_packages(python: &OsString) {
    require_modules(
        python,
        "gguf, numpy, ollama, openai, uvicorn, llama_cpp, llama_cpp.server.app",
        INSTALL_HINT,
    )
    .await;
}

/// What the server's output says about its start: the port it listens on, or why it ended.
fn server_start(line: &str) -> Option<Result<u16, String>> {
    const RUNNING: &str = "Uvicorn running on http://127.0.0.1:";
    if let Some(at) = line.find(RUNNING) {
        let digits: String = line[at + RUNNING.len()..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        return Some(digits.parse().map_err(|e| format!("{line:?}: {e}")));
    }
    let failed = line.starts_with("Traceback (most recent call last)")
        || line.contains("error while attempting to bind")
        || line.contains("Application startup failed");
    failed.then(|| Err(line.to_owned()))
}

/// `python -m llama_cpp.server` on 127.0.0.1, on a port of its choosing,
/// serving the tiny model as `tiny` and `tiny-embed`; killed when dropped.
struct LlamaServer {
    url: String,
    proc: Proc,
    _dir: tempfile::TempDir,
}

impl LlamaServer {
    async fn start(python: &OsString) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("tiny.gguf");
        run_python(
            python,
            &[MAKE_MODEL.as_ref(), model.as_os_str()],
            Duration::from_secs(60),
        )
        .await;
        let config = write_config(dir.path(), &model);

        let mut command = std::process::Command::new(python);
        command
            .current_dir(workspace_root())
            .args(["-m", "llama_cpp.server", "--config_file"])
            .arg(&config)
            .envs(PYTHON_ENV);
        for name in PYTHON_ENV_REMOVED {
            command.env_remove(name);
        }
        let mut proc = Proc::spawn("llama_cpp.server", command);
        let started = tokio::task::block_in_place(|| {
            proc.wait_for_line(
                "\"Uvicorn running on http://127.0.0.1:PORT\"",
                SERVER_START,
                server_start,
            )
        });
        let port = match started {
            Ok(port) => port,
            Err(line) => {
                // Let the rest of the traceback arrive before showing it.
                tokio::task::block_in_place(|| proc.wait_exit(Duration::from_secs(30)));
                panic!(
                    "llama_cpp.server did not start ({line}); its output:\n{}",
                    proc.output()
                );
            }
        };
        assert_ne!(port, 0, "uvicorn named port 0: {}", proc.output());
        let server = LlamaServer {
            url: format!("http://127.0.0.1:{port}"),
            proc,
            _dir: dir,
        };
        server.wait_until_serving().await;
        server
    }

    /// The requests in the server's access log (uvicorn's
    /// `127.0.0.1:PORT - "POST /v1/embeddings HTTP/1.1" 200 OK`), as
    /// (method and path, status).
    fn requests(&self) -> Vec<(String, u16)> {
        self.proc
            .output()
            .lines()
            .filter_map(|line| {
                let (_, request) = line.split_once(" - \"")?;
                let (request, rest) = request.split_once(" HTTP/1.1\" ")?;
                let status = rest.split(' ').next()?.parse().ok()?;
                Some((request.to_owned(), status))
            })
            .collect()
    }

    /// Waits until `GET /v1/models` lists both names.
    async fn wait_until_serving(&self) {
        let client = reqwest::Client::new();
        let url = format!("{}/v1/models", self.url);
        eventually_showing(
            "llama_cpp.server listing tiny and tiny-embed",
            SERVER_START,
            || async {
                let response = client.get(&url).send().await.map_err(|e| e.to_string())?;
                let status = response.status();
                let body: Value = response.json().await.map_err(|e| e.to_string())?;
                let mut ids: Vec<&str> = body["data"]
                    .as_array()
                    .map(|d| d.iter().filter_map(|m| m["id"].as_str()).collect())
                    .unwrap_or_default();
                ids.sort_unstable();
                if status == 200 && ids == [CHAT_MODEL, EMBED_MODEL] {
                    Ok(())
                } else {
                    Err(format!(
                        "HTTP {status}: {body}; output:\n{}",
                        self.proc.output()
                    ))
                }
            },
        )
        .await;
    }
}

/// The server's `--config_file`: loopback, port 0, the model under two names
/// (the server keeps one in memory at a time and swaps on demand: both are
/// tiny), and no interrupting of a running answer by the next request.
fn write_config(dir: &Path, model: &Path) -> PathBuf {
    let model = model.to_str().expect("a UTF-8 temporary path");
    let settings = |alias: &str, embedding: bool| {
        json!({
            "model": model,
            "model_alias": alias,
            "embedding": embedding,
            "n_ctx": 256,
            "n_batch": 256,
            "n_ubatch": 256,
            "n_threads": 1,
            "n_threads_batch": 1,
            "verbose": false,
        })
    };
    let config = json!({
        "host": "127.0.0.1",
        "port": 0,
        "interrupt_requests": false,
        "models": [settings(CHAT_MODEL, false), settings(EMBED_MODEL, true)],
    });
    let path = dir.join("server.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    path
}

fn model_names(node: &Value) -> Vec<String> {
    let mut names: Vec<String> = node["models"]
        .as_array()
        .map(|models| {
            models
                .iter()
                .filter_map(|m| m["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Node `name` once `GET /api/agents` shows it online with both models.
async fn online_with_both_models(fleet: &Fleet, name: &str) -> Value {
    eventually_showing(
        &format!("{name} online with {CHAT_MODEL} and {EMBED_MODEL}"),
        ONLINE,
        || async {
            let nodes = fleet.agents().await;
            match nodes.iter().find(|n| n["machine_name"] == name) {
                Some(node)
                    if node["status"] == "online"
                        && model_names(node) == [CHAT_MODEL, EMBED_MODEL] =>
                {
                    Ok(node.clone())
                }
                _ => Err(format!("{nodes:?}")),
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_python_clients_work_through_the_router_with_a_llama_cpp_server() {
    const NODE: &str = "llama-cpp";
    let python = python();
    require_packages(&python).await;
    let server = LlamaServer::start(&python).await;

    // Probed five times a second: a server without load endpoints must not be
    // asked for them on every probe.
    let fleet = Fleet::empty_with(|c| c.heartbeat_interval = Duration::from_millis(200)).await;
    let (status, added) = fleet
        .post_json(
            "/api/nodes",
            json!({"api_url": server.url, "kind": "openai", "name": NODE}),
        )
        .await;
    assert_eq!(status, 201, "{added}");
    assert_eq!(added["api_kind"], "openai", "{added}");
    assert_eq!(added["agentless"], true, "{added}");
    online_with_both_models(&fleet, NODE).await;

    let url = fleet.url("");
    let stdout = run_python(
        &python,
        &[
            SCRIPT.as_ref(),
            url.as_ref(),
            "--node".as_ref(),
            NODE.as_ref(),
        ],
        SCRIPT_DEADLINE,
    )
    .await;
    println!("{stdout}");
    assert!(
        stdout.contains("llama_server_test: all "),
        "the script did not report its checks passed:\n{stdout}"
    );

    // The Ollama requests reached the server as its own /v1 requests, and it
    // refused none of them (it answers 400 to an x-request-id that is not a
    // UUID, so the router's ids are what reached it).
    let requests = server.requests();
    for endpoint in [
        "POST /v1/chat/completions",
        "POST /v1/completions",
        "POST /v1/embeddings",
    ] {
        assert!(
            requests
                .iter()
                .any(|(r, status)| r == endpoint && *status == 200),
            "no {endpoint} answered 200 in the server's log: {requests:?}"
        );
    }
    let refused: Vec<_> = requests
        .iter()
        .filter(|(r, s)| r.starts_with("POST ") && *s >= 400)
        .collect();
    assert!(
        refused.is_empty(),
        "the server refused requests: {refused:?}\n{}",
        server.proc.output()
    );
    // It has neither /slots nor /metrics: asked once, then left alone.
    let probes = requests.iter().filter(|(r, _)| r == "GET /v1/models");
    assert!(probes.count() >= 2, "probed once only: {requests:?}");
    for endpoint in ["GET /slots", "GET /metrics"] {
        let asked = requests.iter().filter(|(r, _)| r == endpoint).count();
        assert_eq!(asked, 1, "{endpoint} asked {asked} times: {requests:?}");
    }
    assert!(
        requests.iter().all(|(r, _)| !r.contains("/api/")),
        "the server got Ollama requests: {requests:?}"
    );
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_with_the_openai_backend_registers_the_llama_cpp_server_and_chats_reach_it() {
    const NODE: &str = "llama-agent";
    let python = python();
    require_packages(&python).await;
    let server = LlamaServer::start(&python).await;

    let fleet = Fleet::empty_with(|c| c.heartbeat_interval = Duration::from_millis(200)).await;
    let data = tempfile::tempdir().unwrap();
    let agent = fleet.openai_agent(&server.url, NODE, data.path());

    let node = online_with_both_models(&fleet, NODE).await;
    assert_eq!(node["api_kind"], "openai", "{node:#}");
    assert_eq!(node["agentless"], false, "{node:#}");

    let response = tokio::time::timeout(
        REQUEST,
        fleet.post(
            "/api/chat",
            json!({
                "model": CHAT_MODEL,
                "messages": [{"role": "user", "content": "Why is the sky blue?"}],
                "stream": false,
                "options": {"num_predict": 8, "seed": 7},
            }),
        ),
    )
    .await
    .expect("the chat through the router did not answer within a minute");
    let status = response.status();
    let served_by = response
        .headers()
        .get("x-llm-router-node")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = response.text().await.unwrap();
    assert_eq!(status, 200, "{body}\nagent:\n{}", agent.output());
    assert_eq!(served_by.as_deref(), Some(NODE), "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["done"], true, "{answer}");
    assert_eq!(answer["message"]["role"], "assistant", "{answer}");
    assert!(answer["message"]["content"].is_string(), "{answer}");
    assert!(
        answer["eval_count"].as_u64().is_some_and(|n| n > 0),
        "{answer}"
    );
    assert!(
        answer["prompt_eval_count"].as_u64().is_some_and(|n| n > 0),
        "{answer}"
    );
    // The agent asked the server for its load endpoints once, and then left it alone.
    eventually_showing("two more heartbeats' questions", ONLINE, || async {
        let requests = server.requests();
        let models = requests
            .iter()
            .filter(|(r, _)| r == "GET /v1/models")
            .count();
        (models >= 3).then_some(()).ok_or(format!("{requests:?}"))
    })
    .await;
    let requests = server.requests();
    for endpoint in ["GET /slots", "GET /metrics"] {
        let asked = requests.iter().filter(|(r, _)| r == endpoint).count();
        assert_eq!(asked, 1, "{endpoint} asked {asked} times: {requests:?}");
    }
    fleet.stop().await;
    drop(agent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mixed_fleet_spreads_both_apis_over_ollama_and_llama_cpp_under_one_alias() {
    const ALIAS: &str = "tiny-chat";
    let python = python();
    require_packages(&python).await;
    let server = LlamaServer::start(&python).await;

    let mut fleet = Fleet::empty_with(|c| {
        c.proxy.balancer = llm_router_coordinator::config::BalancerMode::RoundRobin;
        c.proxy.aliases = llm_router_coordinator::aliases::ModelAliases::parse(&[format!(
            "{ALIAS}={CHAT_MODEL}"
        )])
        .unwrap();
    })
    .await;
    fleet
        .add_node(llm_router_mock_node::MockConfig::named("ollama-box").with_models([ALIAS]))
        .await;
    let (status, added) = fleet
        .post_json(
            "/api/nodes",
            json!({"api_url": server.url, "kind": "openai", "name": "llama-cpp"}),
        )
        .await;
    assert_eq!(status, 201, "{added}");
    online_with_both_models(&fleet, "llama-cpp").await;

    let chat = |openai: bool| {
        let (path, body) = if openai {
            (
                "/v1/chat/completions",
                json!({"model": ALIAS, "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}),
            )
        } else {
            (
                "/api/chat",
                json!({"model": ALIAS, "stream": false, "options": {"num_predict": 4},
                       "messages": [{"role": "user", "content": "hi"}]}),
            )
        };
        let fleet = &fleet;
        async move {
            let response = tokio::time::timeout(REQUEST, fleet.post(path, body))
                .await
                .expect("no answer within a minute");
            assert_eq!(response.status(), 200, "{path}");
            Fleet::served_by(&response)
        }
    };
    for openai in [false, true] {
        let mut served = Vec::new();
        for _ in 0..4 {
            served.push(chat(openai).await);
        }
        for node in ["ollama-box", "llama-cpp"] {
            assert_eq!(
                served.iter().filter(|s| *s == node).count(),
                2,
                "openai: {openai}, served by {served:?}"
            );
        }
    }
    // The llama.cpp server was asked for its own name for the model, and answered every time.
    let requests = server.requests();
    let chats = requests
        .iter()
        .filter(|(r, status)| r == "POST /v1/chat/completions" && *status == 200)
        .count();
    assert_eq!(chats, 4, "{requests:?}");
    fleet.stop().await;
}
