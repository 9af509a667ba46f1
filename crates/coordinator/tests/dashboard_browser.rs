//! The dashboard in a real headless Chromium, driven with playwright-core by two scripts
//! in `tests/browser` that must exit 0:
//! - `dashboard.test.mjs`, against a coordinator with a demo fleet of three nodes: the
//!   views, editing, the history, accessibility, restarts;
//! - `access.test.mjs`, against a coordinator guarded as on a network (admin login, API
//!   keys required, one allowed browser origin): login and logout, the keys view, and what
//!   pages of other origins can and cannot do;
//! - `models.test.mjs`, against a demo fleet of three nodes: the Models page (pull with
//!   live progress, cancel, delete), and the fleet view's figures and node kinds;
//! - `settings.test.mjs`, against the agent's settings panel.
//!
//! Their output (one line per scenario) is printed; run with `--nocapture` to see it on
//! success too.
//!
//! Needs Debian's `chromium` (`/usr/bin/chromium`, or `$LLM_ROUTER_TEST_CHROMIUM`), Node.js,
//! and the scripts' packages (`npm ci` in `crates/coordinator/tests/browser`); `.ci/run`
//! installs all three. Anything missing fails the test with the command that installs it:
//! it is never skipped.
//!
//! A script asks this harness for what a browser cannot do by itself, one line on its
//! standard output each (`@@restart`: stop the coordinator and start it again on the same
//! port and data folder), and reads the answer on its standard input.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use llm_router_coordinator::Config;
use llm_router_coordinator::auth::{AccessSettings, AdminMode};
use llm_router_coordinator::demo::DemoFleet;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::process::Command;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The whole browser script (it needs about half a minute).
const SCRIPT_DEADLINE: Duration = Duration::from_secs(240);
const DEMO_NODES: usize = 3;
const INSTALL_HINT: &str = "install the browser test's dependencies as .ci/run does: \
     `apt-get update && apt-get install -y chromium chromium-driver` (Debian's Chromium) and \
     `npm ci` in crates/coordinator/tests/browser (Node.js 20 or newer)";

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

fn chromium() -> PathBuf {
    std::env::var_os("LLM_ROUTER_TEST_CHROMIUM")
        .filter(|p| !p.is_empty())
        .map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from)
}

/// Fails, saying how to install it, when something the script needs is missing.
async fn require_prerequisites() {
    let chromium = chromium();
    assert!(
        chromium.is_file(),
        "Chromium is not installed at {} (set LLM_ROUTER_TEST_CHROMIUM to another path): {INSTALL_HINT}",
        chromium.display()
    );
    let node = Command::new("node").arg("--version").output().await;
    match node {
        Ok(output) if output.status.success() => {}
        Ok(output) => panic!(
            "`node --version` failed ({}): {INSTALL_HINT}",
            output.status
        ),
        Err(e) => panic!("Node.js is not installed (`node`: {e}): {INSTALL_HINT}"),
    }
    for package in ["playwright-core", "axe-core"] {
        let manifest = browser_dir()
            .join("node_modules")
            .join(package)
            .join("package.json");
        assert!(
            manifest.is_file(),
            "the npm package {package} is missing ({} not found): {INSTALL_HINT}",
            manifest.display()
        );
    }
}

/// A coordinator served in this process on a fixed address, so that it can be restarted
/// where the browser expects it.
struct Coordinator {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Coordinator {
    fn start(listener: TcpListener, config: Config) -> Coordinator {
        let stop = CancellationToken::new();
        let task = tokio::spawn(llm_router_coordinator::run(
            listener,
            config,
            stop.clone().cancelled_owned(),
        ));
        Coordinator { stop, task }
    }

    async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(20), self.task)
            .await
            .expect("the coordinator did not stop within 20 s (is a response holding the graceful shutdown?)")
            .unwrap()
            .unwrap();
    }

    /// Stops the coordinator and starts a new one on the same address and data folder.
    async fn restart(self, addr: SocketAddr, data_dir: &Path) -> Coordinator {
        self.stop().await;
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match TcpListener::bind(addr).await {
                Ok(listener) => break listener,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("rebinding {addr}: {e}; trying again");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("could not listen on {addr} again: {e}"),
            }
        };
        Coordinator::start(listener, support::config(data_dir))
    }
}

async fn wait_for_demo_nodes(url: &str, count: usize, admin_token: Option<&str>) {
    let client = reqwest::Client::new();
    support::process::eventually_showing(
        "the demo nodes online",
        Duration::from_secs(30),
        || async {
            let mut request = client.get(format!("{url}/api/agents"));
            if let Some(token) = admin_token {
                request = request.bearer_auth(token);
            }
            let agents: Vec<Value> = request.send().await.unwrap().json().await.unwrap();
            if agents.len() == count && agents.iter().all(|a| a["status"] == "online") {
                Ok(())
            } else {
                Err(format!("{agents:#?}"))
            }
        },
    )
    .await;
}

/// One browser script running under `node`, with the harness's end of its protocol.
struct BrowserScript {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    stdout: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    stderr: tokio::task::JoinHandle<String>,
    transcript: String,
    deadline: Instant,
}

impl BrowserScript {
    /// Starts `node <script> <url>` in the browser folder, with `env` added.
    fn start(script: &str, url: &str, env: &[(&str, String)]) -> BrowserScript {
        let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-browser");
        std::fs::create_dir_all(&shots).unwrap();
        let mut command = Command::new("node");
        command
            .arg(script)
            .arg(url)
            .current_dir(browser_dir())
            .env("LLM_ROUTER_TEST_CHROMIUM", chromium())
            .env("SCREENSHOT_DIR", &shots)
            .env("NO_PROXY", "127.0.0.1,localhost,allowed.test,evil.test")
            .env("no_proxy", "127.0.0.1,localhost,allowed.test,evil.test")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("could not start node: {e}; {INSTALL_HINT}"));
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut stderr = child.stderr.take().unwrap();
        let stderr = tokio::spawn(async move {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text).await;
            text
        });
        BrowserScript {
            child,
            stdin,
            stdout,
            stderr,
            transcript: String::new(),
            deadline: Instant::now() + SCRIPT_DEADLINE,
        }
    }

    /// Prints the script's lines until it asks for something (`Some("@@command")`) or
    /// ends (`None`); fails the test when it runs past its deadline.
    async fn next_command(&mut self) -> Option<String> {
        loop {
            let line = match tokio::time::timeout_at(self.deadline, self.stdout.next_line()).await {
                Err(_) => {
                    let _ = self.child.start_kill();
                    panic!(
                        "the browser script did not finish within {SCRIPT_DEADLINE:?}; its output:\n{}",
                        self.transcript
                    );
                }
                Ok(Ok(Some(line))) => line,
                Ok(Ok(None)) => return None,
                Ok(Err(e)) => panic!("reading the script's output: {e}"),
            };
            println!("{line}");
            self.transcript.push_str(&line);
            self.transcript.push('\n');
            if line.trim().starts_with("@@") {
                return Some(line.trim().to_owned());
            }
        }
    }

    async fn answer(&mut self, text: &str) {
        self.stdin
            .write_all(format!("{text}\n").as_bytes())
            .await
            .unwrap();
        self.stdin.flush().await.unwrap();
    }

    /// Waits for the script to exit and fails the test unless it exited 0.
    async fn finish(mut self) {
        let status = tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .ok()
            .and_then(Result::ok);
        let errors = tokio::time::timeout(Duration::from_secs(5), self.stderr)
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        if !errors.is_empty() {
            eprintln!("--- script stderr ---\n{errors}");
        }
        assert!(
            status.is_some_and(|s| s.success()),
            "the browser script failed ({status:?}); its output:\n{}\n{errors}",
            self.transcript
        );
    }
}

/// The two scripts each drive a Chromium; on two cores they take turns.
static ONE_BROWSER_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_works_in_a_real_browser() {
    require_prerequisites().await;
    let _turn = ONE_BROWSER_AT_A_TIME.lock().await;
    let data_dir = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let url = format!("http://{addr}");
    let mut coordinator = Some(Coordinator::start(
        listener,
        support::config(data_dir.path()),
    ));
    let fleet = DemoFleet::start(&url, DEMO_NODES).await.unwrap();
    wait_for_demo_nodes(&url, DEMO_NODES, None).await;

    let mut script = BrowserScript::start("dashboard.test.mjs", &url, &[]);
    while let Some(command) = script.next_command().await {
        match command.as_str() {
            "@@restart" => {
                let running = coordinator.take().unwrap();
                coordinator = Some(running.restart(addr, data_dir.path()).await);
                script.answer("restarted").await;
            }
            other => {
                panic!("the browser script asked for {other:?}, which this harness does not know")
            }
        }
    }
    script.finish().await;

    fleet.stop().await;
    coordinator.take().unwrap().stop().await;
}

/// The Models page (`models.test.mjs`): pulls to chosen demo nodes with live progress, a
/// cancel, a delete, and an OpenAI-style server added by URL (a mock of its own).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_page_in_a_real_browser() {
    require_prerequisites().await;
    let _turn = ONE_BROWSER_AT_A_TIME.lock().await;
    let data_dir = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let coordinator = Coordinator::start(listener, support::config(data_dir.path()));
    let fleet = DemoFleet::start(&url, DEMO_NODES).await.unwrap();
    wait_for_demo_nodes(&url, DEMO_NODES, None).await;
    let openai_server = llm_router_mock_node::MockNode::start(
        llm_router_mock_node::MockConfig::named("openai-box"),
    )
    .await
    .unwrap();

    let mut script = BrowserScript::start(
        "models.test.mjs",
        &url,
        &[("OPENAI_SERVER", openai_server.url())],
    );
    if let Some(command) = script.next_command().await {
        panic!("the models script asked for {command:?}, which this harness does not offer");
    }
    script.finish().await;

    fleet.stop().await;
    coordinator.stop().await;
}

const PASSWORD: &str = "correct horse battery staple";
const ADMIN_TOKEN: &str = "admin-token-of-the-browser-test";

/// A page of some other web site, served on loopback.
async fn serve_foreign_site(listener: TcpListener) {
    let page = axum::Router::new().route(
        "/",
        axum::routing::get(|| async {
            axum::response::Html(
                "<!doctype html><html lang=\"en\"><title>foreign site</title><p>Another site.</p></html>",
            )
        }),
    );
    axum::serve(listener, page).await.unwrap();
}

/// Issue acceptance: the login flow, API keys from the dashboard, and what pages of
/// other origins can and cannot do, against a coordinator guarded as on a network.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_keys_and_foreign_pages_in_a_real_browser() {
    require_prerequisites().await;
    let _turn = ONE_BROWSER_AT_A_TIME.lock().await;
    let foreign = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let foreign_port = foreign.local_addr().unwrap().port();
    let foreign_site = tokio::spawn(serve_foreign_site(foreign));

    let data_dir = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let mut config = support::config(data_dir.path());
    config.access = AccessSettings {
        require_api_key: true,
        admin: Some(AdminMode::Auth),
        admin_tokens: vec![ADMIN_TOKEN.to_owned()],
        admin_password: Some(PASSWORD.to_owned()),
        origins: vec![format!("http://allowed.test:{foreign_port}")],
        ..AccessSettings::default()
    };
    let coordinator = Coordinator::start(listener, config);
    let fleet = DemoFleet::start(&url, 1).await.unwrap();
    wait_for_demo_nodes(&url, 1, Some(ADMIN_TOKEN)).await;

    let mut script = BrowserScript::start(
        "access.test.mjs",
        &url,
        &[
            ("LLM_ROUTER_TEST_PASSWORD", PASSWORD.to_owned()),
            ("LLM_ROUTER_TEST_ADMIN_TOKEN", ADMIN_TOKEN.to_owned()),
            ("FOREIGN_PORT", foreign_port.to_string()),
        ],
    );
    if let Some(command) = script.next_command().await {
        panic!("the access script asked for {command:?}, which this harness does not offer");
    }
    script.finish().await;

    fleet.stop().await;
    coordinator.stop().await;
    foreign_site.abort();
}

/// The agent's settings panel (`settings.test.mjs`): the real agent binary with
/// its panel on, a settings file that points at the wrong coordinator, and the
/// Ollama URL set by the environment (so locked); the script tests, fixes and
/// saves the settings, and the node joins the coordinator without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_settings_panel_in_a_real_browser() {
    require_prerequisites().await;
    let _turn = ONE_BROWSER_AT_A_TIME.lock().await;
    let foreign = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let foreign_site = format!("http://{}/", foreign.local_addr().unwrap());
    let foreign_server = tokio::spawn(serve_foreign_site(foreign));
    let fleet = support::fleet::Fleet::empty_with(|_| {}).await;
    let ollama =
        llm_router_mock_node::MockNode::start(llm_router_mock_node::MockConfig::named("panel"))
            .await
            .unwrap();
    let data = tempfile::tempdir().unwrap();
    let settings_file = data.path().join("agent-settings.json");
    std::fs::write(
        &settings_file,
        r#"{"coordinator_url": "http://127.0.0.1:1/unused", "keep_this": "unknown keys are kept"}"#,
    )
    .unwrap();

    let mut command = std::process::Command::new(support::process::binary("llm-router-agent"));
    command
        .args(["--settings-panel", "on", "--settings-port", "0"])
        .args(["--register-retry-secs", "1"])
        .env("LLM_ROUTER_DATA_DIR", data.path())
        .env("OLLAMA_API_BASE", ollama.url())
        .env_remove("COORDINATOR_URL")
        .env_remove("JOURNAL_STREAM")
        .env_remove("OLLAMA_AGENT_MACHINE_NAME")
        .env_remove("OLLAMA_MACHINE_NAME");
    let agent = support::process::Proc::spawn("agent", command);
    let link = agent.wait_for_line(
        "the settings panel's link",
        Duration::from_secs(30),
        |line| line.strip_prefix("Settings panel: ").map(str::to_owned),
    );
    let token = link.split("token=").nth(1).unwrap().to_owned();
    let output = agent.output();
    assert_eq!(
        output.lines().filter(|line| line.contains(&token)).count(),
        1,
        "the panel's token must be printed once, on stdout, and never logged; output:\n{output}"
    );

    let mut script = BrowserScript::start(
        "settings.test.mjs",
        &link,
        &[
            ("COORDINATOR", fleet.url("")),
            (
                "OLLAMA",
                ollama.url().trim_end_matches('/').to_owned() + "/",
            ),
            ("SETTINGS_FILE", settings_file.display().to_string()),
            ("FOREIGN_SITE", foreign_site),
        ],
    );
    if let Some(command) = script.next_command().await {
        panic!("the settings script asked for {command:?}, which this harness does not offer");
    }
    script.finish().await;
    drop(agent);
    foreign_server.abort();
}
