//! The settings panel over HTTP: who it answers, and a save that moves the
//! running agent to another coordinator without a restart.

use std::sync::Arc;

use llm_router_agent::Cli;
use llm_router_agent::panel::form::Locks;
use llm_router_agent::panel::{BuildConfig, Panel, PanelSettings, TOKEN_HEADER};
use llm_router_agent::settings_file::SettingsFile;
use llm_router_agent::status::{self, AgentStatus};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::support::{DEADLINE, FakeCoordinator, FakeOllama};

/// A panel over a settings file in a fresh folder, for an agent whose command line
/// is `args` (the Ollama URL given by flag, so locked).
struct Harness {
    panel: Panel,
    token: String,
    http: reqwest::Client,
    configs: watch::Receiver<llm_router_agent::AgentConfig>,
    reporter: status::Reporter,
    dir: tempfile::TempDir,
    stop: CancellationToken,
}

impl Harness {
    /// `flags` after the program name; `file` is the settings file at start.
    async fn start(flags: &[&str], file: Option<Value>) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent-settings.json");
        if let Some(file) = &file {
            std::fs::write(&path, file.to_string()).unwrap();
        }
        let settings = file.map(|file| SettingsFile::parse(&file.to_string()).unwrap().0);
        let mut args = vec!["llm-router-agent", "--machine-name", "panel-box"];
        args.extend_from_slice(flags);
        let matches = <Cli as clap::CommandFactory>::command()
            .try_get_matches_from(&args)
            .unwrap();
        let cli = Cli::try_parse_args(args).unwrap();
        let no_env = |_: &str| None::<String>;
        let locks = Locks::from_matches(&matches, no_env);
        let config = cli
            .clone()
            .into_config(settings.as_ref(), no_env, || None)
            .unwrap();
        let build: Arc<BuildConfig> = Arc::new(move |file: &SettingsFile| {
            cli.clone().into_config(Some(file), |_: &str| None, || None)
        });
        let (configs_tx, configs) = watch::channel(config.clone());
        let (reporter, controls) = status::channels(AgentStatus::starting(
            config.coordinator_url.as_str(),
            "panel-box",
        ));
        let stop = CancellationToken::new();
        let panel = Panel::start(
            PanelSettings {
                port: 0,
                settings_path: path,
                locks,
                build,
                configs: configs_tx,
                status: controls.status.clone(),
            },
            stop.clone(),
        )
        .await
        .unwrap();
        let token = panel.url.split("token=").nth(1).unwrap().to_owned();
        Harness {
            panel,
            token,
            http: reqwest::Client::new(),
            configs,
            reporter,
            dir,
            stop,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.panel.addr)
    }

    fn api(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, self.url(path))
            .header(TOKEN_HEADER, &self.token)
    }

    fn settings_file(&self) -> Option<Value> {
        let text = std::fs::read_to_string(self.dir.path().join("agent-settings.json")).ok()?;
        Some(serde_json::from_str(&text).unwrap())
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[tokio::test]
async fn the_panel_answers_only_its_own_host_origin_and_token() {
    let harness = Harness::start(&["--ollama-api-base", "http://127.0.0.1:11434"], None).await;
    let get = |path: &str| harness.http.get(harness.url(path));

    let page = get(&format!("/?token={}", harness.token))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let headers = page.headers();
    assert!(
        headers["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("frame-ancestors 'none'")
    );
    assert_eq!(headers["referrer-policy"], "no-referrer");
    assert_eq!(headers["cache-control"], "no-store");
    // The script and the style hold nothing secret; the page and the API need the token.
    for (path, expected) in [
        ("/panel.js", StatusCode::OK),
        ("/style.css", StatusCode::OK),
        ("/", StatusCode::FORBIDDEN),
        ("/?token=not-it", StatusCode::FORBIDDEN),
        ("/api/settings", StatusCode::FORBIDDEN),
    ] {
        let status = get(path).send().await.unwrap().status();
        assert_eq!(status, expected, "GET {path} without the token");
    }
    // A name that resolves to 127.0.0.1 for someone else's page (DNS rebinding).
    let rebound = harness
        .api(reqwest::Method::GET, "/api/settings")
        .header(
            "host",
            format!("attacker.example:{}", harness.panel.addr.port()),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(rebound.status(), StatusCode::MISDIRECTED_REQUEST);
    let foreign = harness
        .api(reqwest::Method::PUT, "/api/settings")
        .header("origin", "http://attacker.example")
        .json(&json!({"machine_name": "evil"}))
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), StatusCode::FORBIDDEN);
    let huge = harness
        .api(reqwest::Method::PUT, "/api/settings")
        .header("content-type", "application/json")
        .body(format!("{{\"machine_name\": \"{}\"}}", "x".repeat(100_000)))
        .send()
        .await
        .unwrap();
    assert_eq!(huge.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(harness.settings_file(), None, "nothing refused was saved");

    let shown: Value = harness
        .api(reqwest::Method::GET, "/api/settings")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let field = |key: &str| {
        shown["fields"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["key"] == key)
            .unwrap()
            .clone()
    };
    assert_eq!(field("ollama_api_base")["locked"], true);
    assert_eq!(field("ollama_api_base")["source"], "flag --ollama-api-base");
    assert_eq!(field("heartbeat_interval_secs")["source"], "default");
    let locked = harness
        .api(reqwest::Method::PUT, "/api/settings")
        .json(&json!({"ollama_api_base": "http://elsewhere:1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(locked.status(), StatusCode::CONFLICT);
    let body: Value = locked.json().await.unwrap();
    assert_eq!(body["field"], "ollama_api_base", "{body}");
}

#[tokio::test]
async fn saving_a_new_coordinator_moves_the_running_agent_there() {
    let first = FakeCoordinator::start(vec![], vec![]).await;
    let second = FakeCoordinator::start(vec![], vec![]).await;
    let ollama = FakeOllama::start().await;
    let mut harness = Harness::start(
        &[
            "--ollama-api-base",
            ollama.url.as_str(),
            "--heartbeat-interval-secs",
            "1",
        ],
        Some(json!({"coordinator_url": first.url.as_str(), "register_retry_secs": 1})),
    )
    .await;
    let configs = harness.configs.clone();
    let stop = CancellationToken::new();
    let agent = tokio::spawn({
        let stop = stop.clone();
        let mut reporter = std::mem::replace(
            &mut harness.reporter,
            status::channels(AgentStatus::starting("", "")).0,
        );
        async move {
            llm_router_agent::run_reconfigurable(configs, stop.cancelled_owned(), &mut reporter)
                .await
        }
    });
    first
        .wait_for("the first registration", |seen| {
            !seen.registrations.is_empty()
        })
        .await;

    // The machine name came from a flag: the panel refuses to change it.
    let refused = harness
        .api(reqwest::Method::PUT, "/api/settings")
        .json(&json!({"machine_name": "renamed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::CONFLICT);

    let saved: Value = harness
        .api(reqwest::Method::PUT, "/api/settings")
        .json(&json!({"coordinator_url": second.url.as_str()}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(saved["restarted"], true, "{saved}");
    assert_eq!(
        harness.settings_file(),
        Some(json!({"coordinator_url": second.url.as_str(), "register_retry_secs": 1})),
        "the new URL saved, the other key kept"
    );
    // A goodbye to the old coordinator, a registration with the new one.
    let seen = first
        .wait_for("the goodbye", |seen| !seen.shutdowns.is_empty())
        .await;
    assert_eq!(seen.shutdowns, vec![first.node_id]);
    let joined = second
        .wait_for("the registration with the new coordinator", |seen| {
            !seen.registrations.is_empty()
        })
        .await;
    assert_eq!(joined.registrations[0].machine_name, "panel-box");
    assert_eq!(
        first.seen().registrations.len(),
        1,
        "it left the old one for good"
    );

    stop.cancel();
    tokio::time::timeout(DEADLINE, agent)
        .await
        .expect("the agent did not stop")
        .unwrap()
        .unwrap();
}
