//! Running the coordinator as a service: stopping it with streams under way
//! (within and past the grace), its JSON logs, what never reaches a log,
//! `--check-config`, and the Grafana dashboard's metric names.

mod support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};
use support::process::{Proc, binary, eventually, list_nodes};

const DEADLINE: Duration = Duration::from_secs(30);
/// Streams under way when the coordinator is told to stop.
const STREAMS: usize = 20;

fn coordinator(data_dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Proc {
    let mut command = Command::new(binary("llm-router"));
    command
        .args(["--host", "127.0.0.1", "--port", "0"])
        .arg("--data-dir")
        .arg(data_dir)
        .args(extra);
    for (name, value) in env {
        command.env(name, value);
    }
    Proc::spawn("coordinator", command)
}

/// A mock Ollama whose answers of `tokens` tokens take `tokens / 20` seconds.
fn slow_node() -> (Proc, SocketAddr) {
    let mut command = Command::new(binary("llm-router-mock-node"));
    command.args([
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--models",
        "llama3.2",
        "--loaded-models",
        "llama3.2",
        "--tokens-per-sec",
        "20",
        "--parallel",
        "64",
    ]);
    let node = Proc::spawn("mock node", command);
    let addr = node.listening_addr();
    (node, addr)
}

/// A coordinator with `grace` seconds of shutdown grace, and a slow node
/// registered with it.
async fn serving_one_slow_node(data_dir: &Path, grace: &str) -> (Proc, Proc, reqwest::Client) {
    let coordinator = coordinator(data_dir, &["--shutdown-grace-secs", grace], &[]);
    let addr = coordinator.listening_addr();
    let (node, node_addr) = slow_node();
    let client = reqwest::Client::new();
    let response = client
        .post(format!("http://{addr}/api/agents/register"))
        .header("content-type", "application/json")
        .body(support::registration("slow", node_addr.port()))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    (coordinator, node, client)
}

/// One streamed answer of `tokens` tokens, half of them through each API.
fn stream_request(
    client: &reqwest::Client,
    coordinator: SocketAddr,
    i: usize,
    tokens: u64,
) -> reqwest::RequestBuilder {
    if i.is_multiple_of(2) {
        client
            .post(format!("http://{coordinator}/api/chat"))
            .json(&json!({
                "model": "llama3.2",
                "messages": [{"role": "user", "content": format!("stream {i}")}],
                "options": {"num_predict": tokens},
            }))
    } else {
        client
            .post(format!("http://{coordinator}/v1/chat/completions"))
            .json(&json!({
                "model": "llama3.2",
                "messages": [{"role": "user", "content": format!("stream {i}")}],
                "max_tokens": tokens,
                "stream": true,
            }))
    }
}

/// Starts the streams; returns once each has its first chunk, with the
/// tasks that read the rest (each yields the whole body).
async fn start_streams(
    client: &reqwest::Client,
    coordinator: SocketAddr,
    tokens: u64,
) -> Vec<tokio::task::JoinHandle<String>> {
    let mut readers = Vec::new();
    for i in 0..STREAMS {
        let response = stream_request(client, coordinator, i, tokens)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let mut body = response.bytes_stream();
        let first = body.next().await.unwrap().unwrap();
        readers.push(tokio::spawn(async move {
            let mut text = String::from_utf8_lossy(&first).into_owned();
            while let Some(Ok(chunk)) = body.next().await {
                text.push_str(&String::from_utf8_lossy(&chunk));
            }
            text
        }));
    }
    readers
}

/// Checks that `history.db` holds every stream with `outcome`, and that the
/// stopped coordinator logged their number as `counted` (drained or cut).
fn assert_every_stream_recorded(data_dir: &Path, coordinator: &Proc, outcome: &str, counted: &str) {
    let db = rusqlite::Connection::open(data_dir.join("history.db")).unwrap();
    let mut query = db
        .prepare("SELECT outcome FROM requests WHERE endpoint IN ('/api/chat', '/v1/chat/completions') ORDER BY id")
        .unwrap();
    let outcomes: Vec<String> = query
        .query_map([], |row| row.get::<_, String>(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(outcomes.len(), STREAMS, "{outcomes:?}");
    assert!(outcomes.iter().all(|o| o == outcome), "{outcomes:?}");
    let log = coordinator.output();
    assert!(
        log.contains(&format!("{counted}={STREAMS}")),
        "the log says how many were {counted}:\n{log}"
    );
}

fn complete(body: &str) -> bool {
    body.contains(r#""done":true"#) || body.contains("data: [DONE]")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_every_running_stream_finish_within_the_grace_and_refuses_new_ones() {
    let dir = tempfile::tempdir().unwrap();
    let (mut coordinator, _node, client) = serving_one_slow_node(dir.path(), "60").await;
    let addr = coordinator.listening_addr();

    // 60 tokens at 20 per second: three seconds each, all at once.
    let readers = start_streams(&client, addr, 60).await;
    coordinator.signal("TERM");
    coordinator.wait_for_line("the stop being logged", DEADLINE, |line| {
        line.contains("stopping: new requests get 503")
            .then_some(())
    });

    // A new client is turned away: refused, or told to come back.
    let fresh = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    match stream_request(&fresh, addr, 0, 5).send().await {
        Err(error) => assert!(error.is_connect(), "{error}"),
        Ok(response) => {
            assert_eq!(response.status(), 503);
            assert!(response.headers().contains_key("retry-after"));
        }
    }

    for (i, reader) in readers.into_iter().enumerate() {
        let body = reader.await.unwrap();
        assert!(complete(&body), "stream {i} did not finish: {body}");
        assert!(!body.contains("error"), "stream {i}: {body}");
    }
    assert_eq!(coordinator.wait_exit(DEADLINE), Some(0));
    assert_every_stream_recorded(dir.path(), &coordinator, "completed", "drained");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_grace_running_streams_end_with_an_error_in_their_format_and_are_recorded_as_cut()
{
    let dir = tempfile::tempdir().unwrap();
    let (mut coordinator, _node, client) = serving_one_slow_node(dir.path(), "1").await;
    let addr = coordinator.listening_addr();

    // 2,000 tokens at 20 per second: far longer than the grace.
    let readers = start_streams(&client, addr, 2_000).await;
    let stopped = Instant::now();
    coordinator.signal("TERM");
    assert_eq!(coordinator.wait_exit(DEADLINE), Some(0));
    let took = stopped.elapsed();
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(15),
        "exit {took:?} after SIGTERM with a grace of 1 s"
    );

    for (i, reader) in readers.into_iter().enumerate() {
        let body = reader.await.unwrap();
        assert!(!complete(&body), "stream {i} cannot have finished: {body}");
        let last = body.trim_end().lines().last().unwrap_or_default();
        let error: Value = if i.is_multiple_of(2) {
            serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: {last}"))
        } else {
            let event = last
                .strip_prefix("data: ")
                .unwrap_or_else(|| panic!("{last}"));
            serde_json::from_str(event).unwrap_or_else(|e| panic!("{e}: {event}"))
        };
        let message = if i.is_multiple_of(2) {
            error["error"].as_str()
        } else {
            error["error"]["message"].as_str()
        };
        assert!(
            message.is_some_and(|m| m.contains("shutting down")),
            "stream {i} ends with {last}"
        );
    }
    assert_every_stream_recorded(dir.path(), &coordinator, "cut", "cut");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_one_line_per_request_and_no_secret_reaches_any_log() {
    let dir = tempfile::tempdir().unwrap();
    let node_token = "llmr_nt_test_4b1d9e0c7a2f";
    // An API key, made the way operators make them.
    let made = Command::new(binary("llm-router"))
        .args(["keys", "create", "ops-test", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    let printed = String::from_utf8_lossy(&made.stdout);
    let api_key = printed
        .split_whitespace()
        .find(|word| word.starts_with("llmr_"))
        .unwrap_or_else(|| panic!("no key printed: {printed}"))
        .to_owned();

    let mut coordinator = coordinator(
        dir.path(),
        &["--require-api-key", "--log-format", "json"],
        &[("LLM_ROUTER_NODE_TOKEN", node_token)],
    );
    let addr = coordinator.wait_for_line("its listening address", DEADLINE, |line| {
        let line: Value = serde_json::from_str(line).ok()?;
        (line["message"] == "coordinator listening")
            .then(|| line["addr"].as_str()?.parse::<SocketAddr>().ok())
            .flatten()
    });
    let (_node, node) = slow_node();
    let mut agent = {
        let mut command = Command::new(binary("llm-router-agent"));
        command
            .env("COORDINATOR_URL", format!("http://{addr}"))
            .env("OLLAMA_API_BASE", format!("http://{node}"))
            .env("OLLAMA_AGENT_MACHINE_NAME", "logged")
            .env("LLM_ROUTER_NODE_TOKEN", node_token)
            .env("LLM_ROUTER_LOG_FORMAT", "json")
            .env("AGENT_HEARTBEAT_INTERVAL_SECS", "1")
            .env("LLM_ROUTER_DATA_DIR", dir.path().join("agent"));
        Proc::spawn("agent", command)
    };
    let client = reqwest::Client::new();
    eventually("the agent's node online", DEADLINE, || async {
        let nodes = list_nodes(&client, &format!("http://{addr}")).await?;
        (nodes.iter().any(|n| n["status"] == "online")).then_some(())
    })
    .await;
    let answer = client
        .post(format!("http://{addr}/api/chat"))
        .bearer_auth(&api_key)
        .header("x-request-id", "ops-test-request-1")
        .json(&json!({
            "model": "llama3.2",
            "messages": [{"role": "user", "content": "a prompt that must stay out of logs"}],
            "options": {"num_predict": 4},
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let answer = answer.text().await.unwrap();
    assert!(complete(&answer), "{answer}");

    let line = coordinator.wait_for_line("the request's line", DEADLINE, |line| {
        let line: Value = serde_json::from_str(line).ok()?;
        (line["request_id"] == "ops-test-request-1").then_some(line)
    });
    assert_eq!(line["target"], "llm_router::request");
    assert_eq!(line["level"], "INFO");
    assert_eq!(line["method"], "POST");
    assert_eq!(line["path"], "/api/chat");
    assert_eq!(line["model"], "llama3.2");
    assert_eq!(line["node"], "logged");
    assert_eq!(line["status"], 200);
    assert_eq!(line["outcome"], "completed");
    assert!(
        line["duration_ms"].as_f64().is_some_and(|d| d > 0.0),
        "{line}"
    );
    assert!(line["ttft_ms"].as_f64().is_some(), "{line}");
    assert_eq!(line["completion_tokens"], 4);

    agent.signal("TERM");
    assert_eq!(agent.wait_exit(DEADLINE), Some(0));
    coordinator.signal("TERM");
    assert_eq!(coordinator.wait_exit(DEADLINE), Some(0));
    for (name, log) in [
        ("coordinator", coordinator.output()),
        ("agent", agent.output()),
    ] {
        for line in log.lines().filter(|l| !l.trim().is_empty()) {
            serde_json::from_str::<Value>(line)
                .unwrap_or_else(|e| panic!("{name} logged a line that is not JSON ({e}): {line}"));
        }
        assert!(
            !log.contains(node_token),
            "{name} logged the node token:\n{log}"
        );
        assert!(!log.contains(&api_key), "{name} logged the API key:\n{log}");
        assert!(
            !log.contains("must stay out of logs"),
            "{name} logged a prompt:\n{log}"
        );
    }
}

#[test]
fn check_config_shows_sources_redacts_secrets_and_fails_on_a_bad_setting() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let mut command = Command::new(binary("llm-router"));
        command
            .arg("--check-config")
            .arg("--data-dir")
            .arg(dir.path());
        command.args(args);
        for (name, value) in env {
            command.env(name, value);
        }
        command.output().unwrap()
    };
    let good = run(
        &["--port", "9999"],
        &[
            ("LLM_ROUTER_ADMIN_PASSWORD", "correct horse battery"),
            ("LLM_ROUTER_SHUTDOWN_GRACE_SECS", "12"),
        ],
    );
    let shown = String::from_utf8_lossy(&good.stdout);
    assert!(
        good.status.success(),
        "{shown}{}",
        String::from_utf8_lossy(&good.stderr)
    );
    let line = |flag: &str| {
        shown
            .lines()
            .find(|l| l.starts_with(&format!("{flag} ")))
            .unwrap_or_else(|| panic!("no {flag} in\n{shown}"))
            .to_owned()
    };
    assert!(line("--port").contains("9999") && line("--port").contains("(flag)"));
    assert!(line("--shutdown-grace-secs").contains("(env LLM_ROUTER_SHUTDOWN_GRACE_SECS)"));
    assert!(line("--history-queue").contains("(default)"));
    assert!(line("--admin-password").contains("redacted"));
    assert!(!shown.contains("correct horse"), "{shown}");
    assert!(shown.contains("configuration OK"));

    let bad = run(
        &["--health-check-interval", "60", "--agent-timeout", "30"],
        &[],
    );
    assert_eq!(bad.status.code(), Some(1));
    let why = String::from_utf8_lossy(&bad.stderr);
    assert!(why.contains("AGENT_TIMEOUT"), "{why}");
}

#[tokio::test]
async fn every_metric_the_grafana_dashboard_queries_is_one_metrics_exports() {
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../contrib/grafana/llm-router.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let mut queried = BTreeSet::new();
    let mut exprs = Vec::new();
    collect_exprs(&dashboard, &mut exprs);
    assert!(exprs.len() >= 10, "{exprs:?}");
    for expr in &exprs {
        let bytes = expr.as_bytes();
        let mut i = 0;
        while let Some(at) = expr[i..].find("llm_router_") {
            let start = i + at;
            let end = expr[start..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .map_or(expr.len(), |n| start + n);
            // A name, not part of a longer word.
            if start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_')
            {
                queried.insert(expr[start..end].to_owned());
            }
            i = end;
        }
    }

    // A coordinator that has served a request exports every family.
    let mut fleet = support::fleet::Fleet::empty_with(|_| {}).await;
    fleet
        .add_node(llm_router_mock_node::MockConfig::named("alpha").with_models(["llama3.2"]))
        .await;
    fleet
        .add_node(llm_router_mock_node::MockConfig::named("broken").with_models(["qwen2.5"]))
        .await;
    fleet.node("broken").control().set_fail_rate(1.0);
    let answer = fleet
        .post("/api/chat", support::chat("llama3.2", true))
        .await;
    assert_eq!(answer.status(), 200);
    answer.text().await.unwrap();
    // A failed attempt, for the failure counter's series.
    let failed = fleet
        .post("/api/chat", support::chat("qwen2.5", false))
        .await;
    assert_eq!(failed.status(), 502);
    let exported: BTreeSet<String> = eventually("the request counted", DEADLINE, || async {
        let text = fleet.get("/metrics").await.text().await.ok()?;
        // The series present, and those of every family declared (a node
        // gauge or a failure counter has no series until something happens).
        let mut names: BTreeSet<String> = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .filter_map(|l| l.split(['{', ' ']).next())
            .map(str::to_owned)
            .collect();
        for declared in text.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
            let mut words = declared.split(' ');
            let (Some(family), Some(kind)) = (words.next(), words.next()) else {
                continue;
            };
            let suffixes: &[&str] = match kind {
                "counter" if !family.ends_with("_total") => &["_total"],
                "histogram" => &["_bucket", "_sum", "_count"],
                _ => &[""],
            };
            names.extend(suffixes.iter().map(|suffix| format!("{family}{suffix}")));
        }
        names.contains("llm_router_requests_total").then_some(names)
    })
    .await;
    let missing: Vec<&String> = queried.difference(&exported).collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics /metrics does not export: {missing:?}\nexported: {exported:?}"
    );
}

fn collect_exprs(value: &Value, into: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("expr", Value::String(expr)) => into.push(expr.clone()),
                    ("query" | "definition", Value::String(query)) => into.push(query.clone()),
                    _ => collect_exprs(value, into),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_exprs(v, into)),
        _ => {}
    }
}

/// The environment variables of `command`'s settings.
fn settings_variables(command: &clap::Command) -> Vec<String> {
    command
        .get_arguments()
        .filter_map(|arg| arg.get_env())
        .map(|env| env.to_string_lossy().into_owned())
        .collect()
}

#[test]
fn the_service_environment_files_list_every_setting() {
    use clap::CommandFactory as _;
    let contrib = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../contrib/systemd");
    for (file, variables) in [
        (
            "llm-router.env",
            settings_variables(&llm_router_coordinator::Cli::command()),
        ),
        (
            "llm-router-agent.env",
            settings_variables(&llm_router_agent::Cli::command()),
        ),
    ] {
        let text = std::fs::read_to_string(contrib.join(file)).unwrap();
        assert!(variables.len() > 10, "{variables:?}");
        for variable in variables {
            assert!(
                text.lines()
                    .any(|l| l.starts_with(&format!("#{variable}="))),
                "{file} does not document {variable}"
            );
        }
    }
}
