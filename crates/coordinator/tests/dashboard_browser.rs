//! The dashboard in a real headless Chromium: `tests/browser/dashboard.test.mjs` drives it
//! with playwright-core against a coordinator running here with a demo fleet of three
//! nodes, and must exit 0. Its output (one line per scenario, the measured first-load time)
//! is printed; run with `--nocapture` to see it on success too.
//!
//! Needs Debian's `chromium` (`/usr/bin/chromium`, or `$LLM_ROUTER_TEST_CHROMIUM`), Node.js,
//! and the script's packages (`npm ci` in `crates/coordinator/tests/browser`); `.ci/run`
//! installs all three. Anything missing fails the test with the command that installs it:
//! it is never skipped.
//!
//! The script asks this harness for what a browser cannot do by itself, one line on its
//! standard output each (`@@restart`: stop the coordinator and start it again on the same
//! port and data folder), and reads the answer on its standard input.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

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
    fn start(listener: TcpListener, data_dir: &Path) -> Coordinator {
        let stop = CancellationToken::new();
        let task = tokio::spawn(llm_router_coordinator::run(
            listener,
            support::config(data_dir),
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
        Coordinator::start(listener, data_dir)
    }
}

async fn wait_for_demo_nodes(url: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let agents: Vec<Value> = reqwest::get(format!("{url}/api/agents"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if agents.len() == DEMO_NODES && agents.iter().all(|a| a["status"] == "online") {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the demo nodes did not come online: {agents:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_works_in_a_real_browser() {
    require_prerequisites().await;
    let data_dir = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let url = format!("http://{addr}");
    let mut coordinator = Some(Coordinator::start(listener, data_dir.path()));
    let fleet = DemoFleet::start(&url, DEMO_NODES).await.unwrap();
    wait_for_demo_nodes(&url).await;

    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-browser");
    std::fs::create_dir_all(&shots).unwrap();
    let mut child = Command::new("node")
        .arg("dashboard.test.mjs")
        .arg(&url)
        .current_dir(browser_dir())
        .env("LLM_ROUTER_TEST_CHROMIUM", chromium())
        .env("SCREENSHOT_DIR", &shots)
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("could not start node: {e}; {INSTALL_HINT}"));
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut stderr = child.stderr.take().unwrap();
    let stderr_text = tokio::spawn(async move {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text).await;
        text
    });

    let mut transcript = String::new();
    let deadline = Instant::now() + SCRIPT_DEADLINE;
    let finished = loop {
        let line = match tokio::time::timeout_at(deadline, stdout.next_line()).await {
            Err(_) => break false,
            Ok(Ok(Some(line))) => line,
            Ok(Ok(None)) => break true,
            Ok(Err(e)) => panic!("reading the script's output: {e}"),
        };
        println!("{line}");
        transcript.push_str(&line);
        transcript.push('\n');
        match line.trim() {
            "@@restart" => {
                let running = coordinator.take().unwrap();
                coordinator = Some(running.restart(addr, data_dir.path()).await);
                stdin.write_all(b"restarted\n").await.unwrap();
                stdin.flush().await.unwrap();
            }
            command if command.starts_with("@@") => {
                panic!("the browser script asked for {command:?}, which this harness does not know")
            }
            _ => {}
        }
    };
    if !finished {
        let _ = child.start_kill();
    }
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .ok()
        .and_then(Result::ok);
    let errors = tokio::time::timeout(Duration::from_secs(5), stderr_text)
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    if !errors.is_empty() {
        eprintln!("--- script stderr ---\n{errors}");
    }
    assert!(
        finished,
        "the browser script did not finish within {SCRIPT_DEADLINE:?}; its output:\n{transcript}\n{errors}"
    );
    assert!(
        status.is_some_and(|s| s.success()),
        "the browser script failed ({status:?}); its output:\n{transcript}\n{errors}"
    );

    fleet.stop().await;
    coordinator.take().unwrap().stop().await;
}
