//! The demo fleet of `llm-router --demo [N]`: simulated Ollama nodes on loopback, each
//! registered with the coordinator by an in-process agent running the real agent code.
//!
//! The nodes differ on purpose, so that routing can be watched: a fast GPU box, a middling
//! Mac and a slow CPU box, repeating, with model sets that overlap (every node holds
//! `llama3.2`, most hold `qwen2.5:7b`, one `nomic-embed-text`, one `mistral`).
//!
//! Start the fleet once the coordinator listens, and [`DemoFleet::stop`] it before the
//! coordinator stops, so that the agents' goodbyes reach it.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use llm_router_agent::AgentConfig;
use llm_router_mock_node::{MockConfig, MockNode};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub use crate::config::MAX_DEMO_NODES;
/// How often the demo agents send heartbeats (the coordinator may ask for less).
pub const DEMO_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(2);
/// How long a demo agent waits before retrying a failed registration.
pub const DEMO_REGISTER_RETRY: Duration = Duration::from_secs(1);
/// How long [`DemoFleet::stop`] waits for the agents to say goodbye.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// One simulated node of the demo fleet.
#[derive(Debug, Clone, PartialEq)]
pub struct DemoNode {
    /// Machine name it is registered under, e.g. `demo-gpu-1`.
    pub name: String,
    /// Its Ollama API, `http://127.0.0.1:PORT`.
    pub url: String,
    /// The models it holds, as configured (`llama3.2`, not `llama3.2:latest`).
    pub models: Vec<String>,
    /// Generation speed in tokens per second.
    pub tokens_per_sec: f64,
    /// Time to first token.
    pub ttft: Duration,
    /// Requests it generates at the same time.
    pub parallel: usize,
}

/// A running demo fleet: mock nodes and one agent task per node.
///
/// [`DemoFleet::stop`] lets the agents say goodbye (the coordinator marks the nodes offline
/// at once) and then stops the nodes. Dropping the fleet asks the agents to say goodbye as
/// well, as long as the runtime keeps running, and stops the nodes at once.
pub struct DemoFleet {
    nodes: Vec<DemoNode>,
    mocks: Vec<MockNode>,
    agents: Vec<JoinHandle<()>>,
    shutdown: CancellationToken,
    /// Where the nodes' identities are kept across runs; `None`: nowhere (a
    /// temporary data folder).
    kept_in: Option<PathBuf>,
}

impl std::fmt::Debug for DemoFleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DemoFleet")
            .field("nodes", &self.nodes)
            .finish_non_exhaustive()
    }
}

/// The kind of machine a demo node pretends to be.
struct Profile {
    kind: &'static str,
    tokens_per_sec: f64,
    ttft: Duration,
    parallel: usize,
    max_loaded_models: usize,
}

const PROFILES: [Profile; 3] = [
    Profile {
        kind: "gpu",
        tokens_per_sec: 120.0,
        ttft: Duration::from_millis(80),
        parallel: 4,
        max_loaded_models: 3,
    },
    Profile {
        kind: "mac",
        tokens_per_sec: 45.0,
        ttft: Duration::from_millis(250),
        parallel: 2,
        max_loaded_models: 2,
    },
    Profile {
        kind: "cpu",
        tokens_per_sec: 12.0,
        ttft: Duration::from_millis(900),
        parallel: 1,
        max_loaded_models: 1,
    },
];

/// The configuration of demo node `index` (0-based).
fn node_config(index: usize) -> MockConfig {
    let profile = &PROFILES[index % PROFILES.len()];
    let mut models = vec!["llama3.2"];
    if profile.kind != "cpu" {
        models.push("qwen2.5:7b");
    }
    match index {
        0 => models.push("nomic-embed-text"),
        1 => models.push("mistral"),
        _ => {}
    }
    MockConfig {
        name: format!("demo-{}-{}", profile.kind, index + 1),
        host: IpAddr::V4(Ipv4Addr::LOCALHOST),
        port: 0,
        loaded_models: vec![models[0].to_owned()],
        models: models.into_iter().map(str::to_owned).collect(),
        ttft: profile.ttft,
        tokens_per_sec: profile.tokens_per_sec,
        parallel: profile.parallel,
        max_loaded_models: profile.max_loaded_models,
        default_tokens: 24,
        // A demo runs for hours; nobody reads the recorded bodies.
        record_capacity: 0,
        ..MockConfig::default()
    }
}

/// `coordinator_url` without a trailing slash, with a wildcard listen address
/// (`0.0.0.0`, `[::]`) replaced by the loopback one so that it can be called.
fn callable_url(coordinator_url: &str) -> String {
    coordinator_url
        .trim()
        .trim_end_matches('/')
        .replacen("//0.0.0.0", "//127.0.0.1", 1)
        .replacen("//[::]", "//[::1]", 1)
}

impl DemoFleet {
    /// Starts `n` (1..=16) simulated nodes on 127.0.0.1 (random ports) and one in-process
    /// agent per node that registers it with the coordinator at `coordinator_url` through
    /// the real agent code path. Returns once the nodes listen; registration happens in the
    /// background (the agents retry every second until the coordinator answers).
    pub async fn start(coordinator_url: &str, n: usize) -> anyhow::Result<DemoFleet> {
        Self::start_with_token(coordinator_url, n, None, None).await
    }

    /// [`DemoFleet::start`] for a coordinator that requires `node_token`. With
    /// `kept_in` (the data folder the operator gave), each agent keeps its node's
    /// id and credential there, so a later run takes the same nodes over instead
    /// of adding new ones beside the old.
    pub async fn start_with_token(
        coordinator_url: &str,
        n: usize,
        node_token: Option<String>,
        kept_in: Option<&Path>,
    ) -> anyhow::Result<DemoFleet> {
        anyhow::ensure!(
            (1..=MAX_DEMO_NODES).contains(&n),
            "the demo fleet has 1 to {MAX_DEMO_NODES} nodes; {n} were asked for"
        );
        let coordinator = callable_url(coordinator_url);
        let mut fleet = DemoFleet {
            nodes: Vec::with_capacity(n),
            mocks: Vec::with_capacity(n),
            agents: Vec::with_capacity(n),
            shutdown: CancellationToken::new(),
            kept_in: kept_in.map(Path::to_owned),
        };
        let mut configs = Vec::with_capacity(n);
        for index in 0..n {
            let config = node_config(index);
            let mock = MockNode::start(config.clone())
                .await
                .with_context(|| format!("could not start the demo node {}", config.name))?;
            let mut agent = AgentConfig::new(
                coordinator.parse().with_context(|| {
                    format!("the coordinator URL {coordinator_url:?} is not valid")
                })?,
                mock.url()
                    .parse()
                    .context("the demo node's URL is not valid")?,
                config.name.clone(),
            );
            agent.heartbeat_interval = DEMO_HEARTBEAT_INTERVAL;
            agent.register_retry = DEMO_REGISTER_RETRY;
            agent.advertise_ip = Some(mock.addr().ip());
            agent.node_token = node_token.clone().map(llm_router_agent::config::Secret);
            agent.identity_file = kept_in.map(|dir| dir.join(format!("{}-node.json", config.name)));
            agent
                .validate()
                .with_context(|| format!("demo agent for {}", config.name))?;
            fleet.nodes.push(DemoNode {
                name: config.name.clone(),
                url: mock.url(),
                models: config.models.clone(),
                tokens_per_sec: config.tokens_per_sec,
                ttft: config.ttft,
                parallel: config.parallel,
            });
            fleet.mocks.push(mock);
            configs.push(agent);
        }
        // Agents start only once every node listens, so that a failed start leaves nothing
        // registered behind.
        for agent in configs {
            let span = tracing::info_span!("demo_agent", node = %agent.machine_name);
            let shutdown = fleet.shutdown.clone().cancelled_owned();
            fleet.agents.push(tokio::spawn(
                async move {
                    if let Err(error) = llm_router_agent::run(agent, shutdown).await {
                        tracing::error!(%error, "demo agent stopped");
                    }
                }
                .instrument(span),
            ));
        }
        tracing::info!(nodes = n, coordinator = %coordinator, "demo fleet started");
        Ok(fleet)
    }

    /// The simulated nodes, in start order.
    pub fn nodes(&self) -> &[DemoNode] {
        &self.nodes
    }

    /// Lets every agent tell the coordinator its node is going offline (waiting at most a
    /// few seconds), then stops the nodes.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        let agents = std::mem::take(&mut self.agents);
        let aborts: Vec<_> = agents.iter().map(JoinHandle::abort_handle).collect();
        if tokio::time::timeout(STOP_GRACE, futures::future::join_all(agents))
            .await
            .is_err()
        {
            tracing::warn!("some demo agents did not finish saying goodbye in time");
            aborts.iter().for_each(tokio::task::AbortHandle::abort);
        }
        futures::future::join_all(
            std::mem::take(&mut self.mocks)
                .into_iter()
                .map(MockNode::stop),
        )
        .await;
    }
}

impl Drop for DemoFleet {
    fn drop(&mut self) {
        // The agents say goodbye on their own if the runtime lives on; the mock nodes stop
        // when dropped.
        self.shutdown.cancel();
    }
}

/// The text printed when the demo starts: the nodes, and requests to try.
pub fn banner(coordinator_url: &str, fleet: &DemoFleet) -> String {
    let url = callable_url(coordinator_url);
    let nodes = fleet.nodes();
    let name_width = nodes.iter().map(|n| n.name.len()).max().unwrap_or(0).max(4);
    let url_width = nodes.iter().map(|n| n.url.len()).max().unwrap_or(0).max(7);
    let mut text = String::new();
    let plural = if nodes.len() == 1 { "" } else { "s" };
    let _ = writeln!(
        text,
        "llm-router demo: {} simulated node{plural}, each registered by its own agent with the coordinator at {url}",
        nodes.len()
    );
    let _ = match &fleet.kept_in {
        Some(dir) => writeln!(
            text,
            "Data is kept in {}; the demo's nodes keep their ids there from run to run.",
            dir.display()
        ),
        None => writeln!(
            text,
            "Data is kept in a temporary folder and thrown away on exit (~/.llm-router is not touched)."
        ),
    };
    let _ = writeln!(text);
    let _ = writeln!(
        text,
        "  {:name_width$}  {:url_width$}  {:>9}  {:>6}  {:>5}  MODELS",
        "NODE", "ADDRESS", "SPEED", "TTFT", "SLOTS"
    );
    for node in nodes {
        let _ = writeln!(
            text,
            "  {:name_width$}  {:url_width$}  {:>9}  {:>6}  {:>5}  {}",
            node.name,
            node.url,
            format!("{} tok/s", node.tokens_per_sec),
            format!("{} ms", node.ttft.as_millis()),
            node.parallel,
            node.models.join(", ")
        );
    }
    let chat = r#"{"model":"llama3.2","messages":[{"role":"user","content":"Hello"}]}"#;
    let _ = writeln!(text);
    let _ = writeln!(text, "Dashboard: {url}/dashboard");
    let _ = writeln!(text);
    let _ = writeln!(text, "Try:");
    let _ = writeln!(text, "  curl {url}/api/agents");
    let _ = writeln!(text, "  curl {url}/api/chat -d '{chat}'");
    let _ = writeln!(
        text,
        "  curl {url}/v1/chat/completions -H 'content-type: application/json' -d '{chat}'"
    );
    if nodes
        .iter()
        .any(|n| n.models.iter().any(|m| m == "nomic-embed-text"))
    {
        let _ = writeln!(
            text,
            r#"  curl {url}/api/embed -d '{{"model":"nomic-embed-text","input":"Hello"}}'"#
        );
    }
    let _ = writeln!(text, "  OLLAMA_HOST={url} ollama run llama3.2");
    let _ = writeln!(text);
    let _ = write!(text, "Press Ctrl-C to stop.");
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_differ_in_kind_speed_and_models_and_overlap_on_llama() {
        let configs: Vec<_> = (0..6).map(node_config).collect();
        let names: Vec<_> = configs.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "demo-gpu-1",
                "demo-mac-2",
                "demo-cpu-3",
                "demo-gpu-4",
                "demo-mac-5",
                "demo-cpu-6"
            ]
        );
        let speeds: Vec<_> = configs.iter().map(|c| c.tokens_per_sec).collect();
        assert_eq!(speeds, [120.0, 45.0, 12.0, 120.0, 45.0, 12.0]);
        for config in &configs {
            assert_eq!(config.validate(), Ok(()), "{}", config.name);
            assert!(config.models.iter().any(|m| m == "llama3.2"));
        }
        let holding = |model: &str| {
            configs
                .iter()
                .filter(|c| c.models.iter().any(|m| m == model))
                .count()
        };
        assert_eq!(holding("nomic-embed-text"), 1);
        assert_eq!(holding("mistral"), 1);
        assert_eq!(holding("qwen2.5:7b"), 4);
        for index in 0..MAX_DEMO_NODES {
            assert_eq!(node_config(index).validate(), Ok(()));
        }
    }

    #[test]
    fn wildcard_listen_addresses_become_loopback() {
        assert_eq!(
            callable_url("http://0.0.0.0:8080/"),
            "http://127.0.0.1:8080"
        );
        assert_eq!(callable_url("http://[::]:8080"), "http://[::1]:8080");
        assert_eq!(callable_url("http://10.0.0.5:8080"), "http://10.0.0.5:8080");
    }
}
