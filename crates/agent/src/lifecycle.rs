//! The agent's life: register (retrying), heartbeat until told to stop or forgotten by
//! the coordinator (then register again), and say goodbye on shutdown.

use std::future::Future;
use std::net::IpAddr;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use llm_router_common::{
    HeartbeatRequest, NodeId, RegisterRequest, RegisterResponse, RegistrationStatus,
};

use crate::config::{AgentConfig, Backend, ConfigError, Secret};
use crate::coordinator::{CoordinatorClient, CoordinatorError, SHUTDOWN_NOTICE_TIMEOUT};
use crate::heartbeat::{effective_heartbeat_interval, heartbeat_until_forgotten};
use crate::identity::route_local_ip;
use crate::metrics::MetricsCollector;
use crate::node_file::{self, NodeIdentity};
use crate::ollama::{OllamaClient, OllamaSnapshot};
use crate::registration::{RegisterError, RegistrationFailure, register_with_retry};
use crate::status::{self, AgentStatus, Command, Link, Reporter};
use tokio::sync::watch;

/// Version reported to the coordinator.
pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Why the agent stopped on its own.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("cannot set up the HTTP client: {0}")]
    HttpClient(#[from] reqwest::Error),
    #[error(transparent)]
    CoordinatorClient(#[from] crate::coordinator::ClientError),
    #[error(transparent)]
    Registration(#[from] RegistrationFailure),
}

/// Runs the agent until `shutdown` completes (then tells the coordinator, best effort,
/// within [`SHUTDOWN_NOTICE_TIMEOUT`], and returns `Ok`) or registration fails for good.
///
/// Coordinator outages never end it once registered: heartbeats keep trying every interval.
/// `register_max_retries` limits only the first registration, the one at start-up.
pub async fn run(
    config: AgentConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), AgentError> {
    let initial = AgentStatus::starting(config.coordinator_url.as_str(), &config.machine_name);
    let (mut reporter, _controls) = status::channels(initial);
    run_controlled(config, shutdown, &mut reporter).await
}

/// [`run`], publishing what the agent does on `reporter.status` and acting
/// on `reporter.commands` (the tray's Pause and Resume).
pub async fn run_controlled(
    config: AgentConfig,
    shutdown: impl Future<Output = ()> + Send,
    reporter: &mut Reporter,
) -> Result<(), AgentError> {
    config.validate()?;
    reporter.status.send_modify(|status| {
        // What the supervisor said of Ollama stays true across a restart.
        let supervision = status.supervision.take();
        *status = AgentStatus::starting(config.coordinator_url.as_str(), &config.machine_name);
        status.supervision = supervision;
    });
    let mut shutdown = pin!(shutdown);
    let agent = tokio::select! {
        agent = Agent::start(config, reporter.status.clone()) => agent?,
        () = &mut shutdown => return Ok(()),
    };
    let mut node_id: Option<NodeId> = agent.credential().map(|(id, _)| id);
    loop {
        let max_attempts = match node_id {
            None => agent.config.register_max_retries,
            Some(_) => 0,
        };
        let mut registration = pin!(agent.register(node_id, max_attempts));
        let registered = tokio::select! {
            registered = &mut registration => registered?,
            () = &mut shutdown => {
                // A registration on the wire may already have been accepted: let it land
                // (briefly) so the node is not left online until the coordinator's timeout.
                let landed = if agent.registration_in_flight.load(Ordering::Acquire) {
                    match tokio::time::timeout(SHUTDOWN_NOTICE_TIMEOUT, &mut registration).await {
                        Ok(Ok(registered)) => Some(registered.node_id),
                        _ => None,
                    }
                } else {
                    None
                };
                match landed.or(node_id) {
                    Some(id) => agent.say_goodbye(id).await,
                    None => tracing::info!("shutting down (not registered, nothing to tell the coordinator)"),
                }
                return Ok(());
            }
        };
        let id = registered.node_id;
        node_id = Some(id);
        let interval = effective_heartbeat_interval(
            registered.heartbeat_interval_secs,
            agent.config.heartbeat_interval,
        );
        tracing::debug!(interval_secs = interval.as_secs_f64(), "heartbeats start");
        let mut beats = pin!(heartbeat_until_forgotten(interval, || agent.heartbeat(id)));
        loop {
            tokio::select! {
                () = &mut beats => break,
                () = &mut shutdown => {
                    agent.say_goodbye(id).await;
                    return Ok(());
                }
                Some(command) = reporter.commands.recv() => agent.perform(id, command).await,
            }
        }
    }
}

/// [`run_controlled`], started again with each new configuration on
/// `configs` (the settings panel's Save): the agent says goodbye to the
/// coordinator it was with and registers with the new settings, without a
/// restart of the process. A registration that fails for good (a wrong node
/// token) does not end it: the status says why, and it waits for new settings.
pub async fn run_reconfigurable(
    mut configs: watch::Receiver<AgentConfig>,
    shutdown: impl Future<Output = ()> + Send,
    reporter: &mut Reporter,
) -> Result<(), AgentError> {
    let mut shutdown = pin!(shutdown);
    let mut previous: Option<AgentConfig> = None;
    loop {
        let config = configs.borrow_and_update().clone();
        if let Some(previous) = &previous {
            keep_node_on_rename(previous, &config);
        }
        previous = Some(config.clone());
        let stopping = AtomicBool::new(false);
        let until = async {
            tokio::select! {
                () = &mut shutdown => stopping.store(true, Ordering::Release),
                changed = configs.changed() => {
                    if changed.is_err() {
                        // No one can change the settings any more.
                        std::future::pending::<()>().await;
                    }
                }
            }
        };
        let ran = run_controlled(config, until, reporter).await;
        if stopping.load(Ordering::Acquire) {
            return ran;
        }
        if let Err(error) = ran {
            tracing::warn!(%error, "the agent cannot run with these settings; waiting for new ones");
            reporter.status.send_modify(|status| {
                status.link = Link::Retrying {
                    reason: format!("{error} (change the settings to try again)"),
                };
            });
            tokio::select! {
                () = &mut shutdown => return Ok(()),
                changed = configs.changed() => if changed.is_err() { return Err(error) },
            }
        }
        tracing::info!("settings changed: starting again with the new ones");
    }
}

/// When only the machine name changed, the node keeps its id (and its
/// history on the dashboard): the stored identity moves to the new name.
fn keep_node_on_rename(previous: &AgentConfig, next: &AgentConfig) {
    let same_place = previous.coordinator_url == next.coordinator_url
        && previous.identity_file == next.identity_file;
    let (Some(path), true) = (&next.identity_file, same_place) else {
        return;
    };
    if previous.machine_name == next.machine_name {
        return;
    }
    let coordinator = crate::http::directory_url(&next.coordinator_url);
    match node_file::carry_over(
        path,
        &coordinator,
        &previous.machine_name,
        &next.machine_name,
    ) {
        Ok(true) => tracing::info!(
            from = %previous.machine_name,
            to = %next.machine_name,
            "machine renamed: the node keeps its id"
        ),
        Ok(false) => {}
        Err(error) => {
            tracing::warn!(%error, "could not keep the node's id across the rename; it registers as a new node");
        }
    }
}

/// Everything one agent holds: its settings, its clients and what it last saw of Ollama.
struct Agent {
    config: AgentConfig,
    coordinator: CoordinatorClient,
    ollama: OllamaClient,
    metrics: MetricsCollector,
    /// Whether Ollama answered last time (`None` before the first look), so that a change
    /// is logged once rather than on every heartbeat.
    ollama_was_up: Mutex<Option<bool>>,
    /// True while a registration request is on the wire.
    registration_in_flight: AtomicBool,
    /// The node's id and the credential the coordinator issued it, once known.
    identity: Mutex<Option<NodeIdentity>>,
    /// What the desktop shows of this agent.
    status: Arc<watch::Sender<AgentStatus>>,
}

impl Agent {
    async fn start(
        config: AgentConfig,
        status: Arc<watch::Sender<AgentStatus>>,
    ) -> Result<Self, AgentError> {
        let coordinator = CoordinatorClient::new(
            &config.coordinator_url,
            config.coordinator_ca_file.as_deref(),
        )?;
        let identity = config
            .identity_file
            .as_deref()
            .and_then(|path| node_file::load(path, coordinator.base_url(), &config.machine_name));
        if let Some(known) = &identity {
            tracing::info!(node_id = %known.node_id, "registering as the node this agent was before");
        }
        let ollama = OllamaClient::new(
            &config.ollama_api_base,
            config.node_api_key.as_ref().map(Secret::expose),
        )?;
        // Only Ollama's folder is known; other servers keep their models where they like.
        let models_dir = match config.backend {
            crate::config::Backend::Ollama => {
                crate::metrics::disk::ollama_models_dir(|name| std::env::var(name).ok())
            }
            crate::config::Backend::OpenAi => None,
        };
        tracing::info!(
            machine_name = %config.machine_name,
            coordinator = %coordinator.base_url(),
            ollama = %ollama.base_url(),
            version = AGENT_VERSION,
            "agent starting"
        );
        Ok(Self {
            config,
            coordinator,
            ollama,
            metrics: MetricsCollector::start().await.with_models_dir(models_dir),
            ollama_was_up: Mutex::new(None),
            registration_in_flight: AtomicBool::new(false),
            identity: Mutex::new(identity),
            status,
        })
    }

    /// Records how the last exchange with the coordinator went.
    fn report_link<T, E: std::fmt::Display>(&self, outcome: &Result<T, E>) {
        let link = match outcome {
            Ok(_) => Link::Connected,
            Err(error) => Link::Retrying {
                reason: error.to_string(),
            },
        };
        self.status.send_if_modified(|status| {
            let changed = status.link != link;
            status.link = link;
            changed
        });
    }

    /// Carries out a command of the desktop for node `node_id`.
    async fn perform(&self, node_id: NodeId, command: Command) {
        match command {
            Command::Drain(draining) => {
                let credential = self.credential_for(node_id);
                match self
                    .coordinator
                    .set_draining(node_id, draining, credential.as_deref())
                    .await
                {
                    Ok(()) => {
                        tracing::info!(
                            draining,
                            "the coordinator {} this node",
                            if draining {
                                "drains"
                            } else {
                                "sends requests to"
                            }
                        );
                        self.status.send_modify(|status| status.draining = draining);
                    }
                    Err(error) => {
                        tracing::warn!(%error, draining, "could not change draining on the coordinator");
                    }
                }
            }
        }
    }

    /// The node's id and credential, when it has been issued one.
    fn credential(&self) -> Option<(NodeId, String)> {
        self.identity
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|known| (known.node_id, known.node_credential.clone()))
    }

    /// The credential for `node_id`, if it is the node this agent holds one for.
    fn credential_for(&self, node_id: NodeId) -> Option<String> {
        self.credential()
            .filter(|(id, _)| *id == node_id)
            .map(|(_, credential)| credential)
    }

    /// Keeps a credential the coordinator just issued, in memory and in the identity file.
    fn remember(&self, node_id: NodeId, credential: String) {
        let identity = NodeIdentity {
            coordinator_url: self.coordinator.base_url().to_string(),
            machine_name: self.config.machine_name.clone(),
            node_id,
            node_credential: credential,
        };
        if let Some(path) = &self.config.identity_file {
            match node_file::save(path, &identity) {
                Ok(()) => tracing::debug!(path = %path.display(), "node identity saved"),
                Err(error) => {
                    tracing::warn!(%error, "the node credential is kept in memory only; after a restart the coordinator will refuse to let this agent speak for the node")
                }
            }
        }
        *self.identity.lock().unwrap_or_else(PoisonError::into_inner) = Some(identity);
    }

    async fn register(
        &self,
        previous_id: Option<NodeId>,
        max_attempts: u32,
    ) -> Result<RegisterResponse, RegistrationFailure> {
        let response = register_with_retry(self.config.register_retry, max_attempts, |_| {
            self.register_once(previous_id)
        })
        .await?;
        let what = match response.status {
            RegistrationStatus::Registered => "registered with the coordinator as a new node",
            RegistrationStatus::Updated => "registered with the coordinator (known node, id kept)",
        };
        tracing::info!(
            node_id = %response.node_id,
            heartbeat_interval_secs = response.heartbeat_interval_secs,
            "{what}"
        );
        Ok(response)
    }

    async fn register_once(
        &self,
        previous_id: Option<NodeId>,
    ) -> Result<RegisterResponse, RegisterError> {
        let (ip, ollama, system_info) = tokio::join!(
            self.advertised_ip(),
            self.look_at_ollama(),
            self.metrics.system_info()
        );
        let request = RegisterRequest {
            machine_name: self.config.machine_name.clone(),
            ip_address: ip?,
            ollama_port: self.config.ollama_port(),
            api_kind: self.config.backend.api_kind(),
            api_url: self
                .config
                .api_url
                .as_ref()
                .map(|url| url.as_str().trim_end_matches('/').to_owned()),
            ollama_version: ollama.version,
            ollama_available: ollama.available,
            system_info,
            models: ollama.models.unwrap_or_default(),
            loaded_models: ollama.loaded_models.unwrap_or_default(),
            node_id: previous_id,
            agent_version: Some(AGENT_VERSION.to_owned()),
            max_parallel: ollama_num_parallel(),
            max_loaded_models: ollama_max_loaded_models(),
            node_credential: previous_id.and_then(|id| self.credential_for(id)),
            node_api_key: self
                .config
                .node_api_key
                .as_ref()
                .map(|k| k.expose().to_owned()),
        };
        self.registration_in_flight.store(true, Ordering::Release);
        let node_token = self.config.node_token.as_ref().map(Secret::expose);
        let answer = self.coordinator.register(&request, node_token).await;
        self.registration_in_flight.store(false, Ordering::Release);
        self.report_link(&answer);
        let answer = answer?;
        if let Some(credential) = &answer.node_credential {
            self.remember(answer.node_id, credential.clone());
        }
        self.status
            .send_modify(|status| status.node_id = Some(answer.node_id));
        Ok(answer)
    }

    async fn advertised_ip(&self) -> Result<IpAddr, RegisterError> {
        match self.config.advertise_ip {
            Some(ip) => Ok(ip),
            // Looked up on every registration: the route can change (a laptop changing networks).
            None => Ok(route_local_ip(&self.config.coordinator_url).await?),
        }
    }

    async fn heartbeat(&self, node_id: NodeId) -> Result<(), CoordinatorError> {
        let (metrics, ollama) = tokio::join!(self.metrics.sample(), self.look_at_ollama());
        let request = HeartbeatRequest {
            metrics,
            models: ollama.models,
            loaded_models: ollama.loaded_models,
            ollama_available: ollama.available,
            ollama_version: ollama.version,
            max_parallel: ollama_num_parallel(),
            max_loaded_models: ollama_max_loaded_models(),
            ollama_supervision: self.status.borrow().supervision.clone(),
            server_load: ollama.server_load,
        };
        let credential = self.credential_for(node_id);
        let sent = self
            .coordinator
            .heartbeat(node_id, &request, credential.as_deref())
            .await;
        self.report_link(&sent);
        sent
    }

    /// Asks Ollama what it has, logging when it goes away or comes back.
    async fn look_at_ollama(&self) -> OllamaSnapshot {
        let snapshot = match self.config.backend {
            Backend::Ollama => self.ollama.snapshot().await,
            Backend::OpenAi => self.ollama.openai_snapshot().await,
        };
        let was_up = self
            .ollama_was_up
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .replace(snapshot.available);
        self.status.send_if_modified(|status| {
            let changed = status.ollama_up != Some(snapshot.available);
            status.ollama_up = Some(snapshot.available);
            changed
        });
        match (was_up, snapshot.available) {
            (Some(true), true) | (Some(false), false) => {}
            (_, true) => tracing::info!(
                ollama = %self.ollama.base_url(),
                version = snapshot.version.as_deref().unwrap_or("unknown"),
                models = snapshot.models.as_ref().map_or(0, Vec::len),
                "Ollama is reachable"
            ),
            (_, false) => tracing::warn!(
                error = snapshot.error.as_deref().unwrap_or("unknown"),
                "Ollama is not reachable; the node is reported as unavailable until it answers"
            ),
        }
        snapshot
    }

    async fn say_goodbye(&self, node_id: NodeId) {
        let credential = self.credential_for(node_id);
        let notice = tokio::time::timeout(
            SHUTDOWN_NOTICE_TIMEOUT,
            self.coordinator.shutdown(node_id, credential.as_deref()),
        );
        match notice.await {
            Ok(Ok(())) => {
                tracing::info!(%node_id, "told the coordinator this node is going offline")
            }
            Ok(Err(error)) => {
                tracing::warn!(%error, "could not tell the coordinator about the shutdown")
            }
            Err(_) => tracing::warn!(
                timeout_secs = SHUTDOWN_NOTICE_TIMEOUT.as_secs_f64(),
                "the coordinator did not answer the shutdown notice in time"
            ),
        }
    }
}

/// The parallel request slots Ollama runs with on this machine, when its
/// `OLLAMA_NUM_PARALLEL` is set in the agent's environment too (Ollama does not
/// report it over its API). The coordinator's balancer uses it to tell a busy
/// node from a full one.
fn ollama_num_parallel() -> Option<u32> {
    positive_env("OLLAMA_NUM_PARALLEL")
}

/// Models Ollama keeps in memory at once, when set for the agent as for
/// Ollama (`OLLAMA_MAX_LOADED_MODELS`): the coordinator's placement plans
/// that many per node. Unset, it learns from what it sees loaded.
fn ollama_max_loaded_models() -> Option<u32> {
    positive_env("OLLAMA_MAX_LOADED_MODELS")
}

/// A positive integer from the environment variable `name`.
fn positive_env(name: &str) -> Option<u32> {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .filter(|n| *n > 0)
}
