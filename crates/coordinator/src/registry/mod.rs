//! The node registry: every node the coordinator knows, its health, and the
//! routable snapshot derived from it.
//!
//! Writes take a `parking_lot::RwLock` (never held across an `.await`) and
//! publish a fresh [`RoutableSnapshot`] when routing could be affected; the
//! request path only reads that snapshot. Durability is the job of
//! [`persist`], which this module tells about every change.

pub mod error;
pub mod live;
pub mod load;
pub mod persist;
pub mod snapshot;
pub mod store;
pub mod validate;

pub use error::RegistryError;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};
use llm_router_common::{
    ApiKind, HeartbeatRequest, ModelInfo, Node, NodeFacts, NodeId, NodeMetrics, NodePatch,
    NodeStatus, RegisterRequest, RegisterResponse, RegistrationStatus, canonical_model_name,
};
use parking_lot::RwLock;
use tokio::time::Instant;

use crate::auth::secret::{Digest, generate_token};
use persist::PersistQueue;
pub use snapshot::{ApiBase, Candidate, InFlightGuard, NodeLive, RoutableNode, RoutableSnapshot};
use store::PersistedNode;

/// Why a node is offline. [`OfflineReason::text`] is what operators see, and
/// what `agents.json` stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OfflineReason {
    /// No heartbeat within the agent timeout.
    TimedOut,
    /// The agent said goodbye.
    ShutDown,
    /// An operator disconnected the node.
    Disconnected,
    /// The agent reports that its inference server does not answer.
    OllamaUnreachable,
    /// An agentless node whose server did not answer the coordinator's last probe.
    ProbeFailed,
    /// An agentless node just added, before its first probe.
    NotProbed,
}

impl OfflineReason {
    const ALL: [OfflineReason; 6] = [
        OfflineReason::TimedOut,
        OfflineReason::ShutDown,
        OfflineReason::Disconnected,
        OfflineReason::OllamaUnreachable,
        OfflineReason::ProbeFailed,
        OfflineReason::NotProbed,
    ];

    pub const fn text(self) -> &'static str {
        match self {
            OfflineReason::TimedOut => "no heartbeat within the agent timeout",
            OfflineReason::ShutDown => "agent shut down",
            OfflineReason::Disconnected => "disconnected by an operator",
            OfflineReason::OllamaUnreachable => "the agent cannot reach its inference server",
            OfflineReason::ProbeFailed => {
                "the coordinator cannot reach the node's inference server"
            }
            OfflineReason::NotProbed => "not probed yet",
        }
    }

    /// The reason whose [`Self::text`] is `text`, if any.
    pub fn from_text(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.text() == text)
    }
}

impl serde::Serialize for OfflineReason {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.text())
    }
}

/// Reads a stored reason; one this coordinator does not know reads as none.
pub(crate) fn lenient_reason<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<OfflineReason>, D::Error> {
    let text: Option<String> = serde::Deserialize::deserialize(deserializer)?;
    Ok(text.as_deref().and_then(OfflineReason::from_text))
}

/// An agentless node to probe, as [`NodeRegistry::agentless_targets`] lists it.
#[derive(Debug, Clone)]
pub struct AgentlessTarget {
    pub id: NodeId,
    pub machine_name: String,
    pub api_url: String,
    pub kind: ApiKind,
    /// Whether its last probe succeeded (false before the first one).
    pub reachable: bool,
    /// What the probes send as `Authorization` (the node's own API key).
    pub authorization: Option<axum::http::HeaderValue>,
    /// Which load endpoints (`/slots`, `/metrics`) its server lacks, as the
    /// probes found; shared with the node's record.
    pub load_endpoints: Arc<llm_router_common::server_load::LoadEndpoints>,
}

/// Prefix of the credentials issued to nodes.
const NODE_CREDENTIAL_PREFIX: &str = "llmr_nc_";

/// `Bearer <key>` for a node's own API key, marked sensitive so it is never logged.
fn node_authorization(api_key: Option<&str>) -> Option<axum::http::HeaderValue> {
    let mut value = axum::http::HeaderValue::from_str(&format!("Bearer {}", api_key?)).ok()?;
    value.set_sensitive(true);
    Some(value)
}

/// Timing the registry enforces and tells agents about.
#[derive(Debug, Clone, Copy)]
pub struct RegistrySettings {
    /// Heartbeat interval asked of agents.
    pub heartbeat_interval: Duration,
    /// A node without a heartbeat for this long is offline.
    pub agent_timeout: Duration,
}

/// The last few gaps between a node's heartbeats.
#[derive(Debug, Default)]
struct HeartbeatGaps {
    gaps: [Duration; 8],
    next: usize,
}

impl HeartbeatGaps {
    fn push(&mut self, gap: Duration) {
        self.gaps[self.next % self.gaps.len()] = gap;
        self.next += 1;
    }

    fn longest(&self) -> Option<Duration> {
        (self.next > 0).then(|| self.gaps.iter().copied().max().unwrap_or_default())
    }
}

/// Longest agent's word on its inference server that is kept.
const MAX_SUPERVISION_CHARS: usize = 200;

/// One node as the registry holds it: its facts, and what only this running
/// coordinator knows of it.
#[derive(Debug)]
struct NodeRecord {
    facts: NodeFacts,
    /// The agent's word on its inference server, from the last heartbeat; not persisted.
    ollama_supervision: Option<String>,
    /// The server's own account of its load, from the last heartbeat.
    server_load: Option<llm_router_common::ServerLoad>,
    /// For an agentless node: which load endpoints its server lacks.
    load_endpoints: Arc<llm_router_common::server_load::LoadEndpoints>,
    /// Monotonic time of the last sign of life, for the timeout.
    last_heartbeat: Instant,
    /// The longest of the last few gaps between heartbeats while alive.
    recent_gaps: HeartbeatGaps,
    /// `Some` while heartbeats arrive: since when.
    alive_since: Option<Instant>,
    offline_reason: Option<OfflineReason>,
    ollama_available: bool,
    metrics: Option<NodeMetrics>,
    /// Digest of the credential its agent was issued; `None` for agentless nodes and
    /// nodes from before credentials, which the next registration claims.
    credential: Option<Digest>,
    /// Key the proxy sends to the node's own server, if it needs one.
    node_api_key: Option<String>,
    live: Arc<NodeLive>,
    /// This node's entry in the routable snapshot, rebuilt when routing facts change.
    routable: Arc<RoutableNode>,
}

impl NodeRecord {
    /// A record of `facts`, offline and unavailable until told otherwise. Its
    /// routable entry is built by [`Self::rebuild_routable`], once the record
    /// holds everything it is built from.
    fn new(facts: NodeFacts, now: Instant) -> Self {
        NodeRecord {
            facts,
            ollama_supervision: None,
            server_load: None,
            load_endpoints: Arc::default(),
            last_heartbeat: now,
            recent_gaps: HeartbeatGaps::default(),
            alive_since: None,
            offline_reason: None,
            ollama_available: false,
            metrics: None,
            credential: None,
            node_api_key: None,
            live: Arc::new(NodeLive::default()),
            routable: Arc::default(),
        }
    }

    /// Takes what a registration says of the node, all but its name and URL
    /// (which the caller validated and set): from now on its agent speaks for it.
    fn take_registration(&mut self, req: RegisterRequest, now: Instant, wall: DateTime<Utc>) {
        let facts = &mut self.facts;
        facts.ip_address = req.ip_address;
        facts.ollama_version = req.ollama_version;
        facts.agent_version = req.agent_version;
        facts.system_info = req.system_info;
        facts.models = req.models;
        facts.loaded_models = req.loaded_models;
        facts.agentless = false;
        facts.api_kind = req.api_kind;
        facts.last_seen = wall;
        self.ollama_available = req.ollama_available;
        self.node_api_key = req.node_api_key;
        self.last_heartbeat = now;
        self.alive_since.get_or_insert(now);
        self.offline_reason = None;
        self.rebuild_routable();
    }

    fn status(&self) -> NodeStatus {
        if self.alive_since.is_none() || !self.ollama_available {
            NodeStatus::Offline
        } else if self.facts.draining {
            NodeStatus::Draining
        } else {
            NodeStatus::Online
        }
    }

    fn status_reason(&self) -> Option<OfflineReason> {
        match self.status() {
            NodeStatus::Offline if self.alive_since.is_some() => Some(if self.facts.agentless {
                OfflineReason::ProbeFailed
            } else {
                OfflineReason::OllamaUnreachable
            }),
            NodeStatus::Offline => self.offline_reason,
            _ => None,
        }
    }

    /// Rebuilds this node's entry for the routable snapshot from its current facts.
    fn rebuild_routable(&mut self) {
        let facts = &self.facts;
        self.routable = Arc::new(RoutableNode {
            id: facts.id,
            machine_name: facts.machine_name.clone(),
            api_url: facts.api_url.clone(),
            api: facts.api_kind,
            models: facts
                .models
                .iter()
                .map(|m| canonical_model_name(&m.name))
                .collect(),
            loaded_models: facts
                .loaded_models
                .iter()
                .map(|m| canonical_model_name(&m.name))
                .collect(),
            served_names: facts
                .models
                .iter()
                .filter_map(|m| {
                    let canonical = canonical_model_name(&m.name);
                    (canonical != m.name.trim()).then(|| (canonical, m.name.trim().to_owned()))
                })
                .collect(),
            authorization: node_authorization(self.node_api_key.as_deref()),
            base: ApiBase::parse(&facts.api_url),
            name_header: axum::http::HeaderValue::from_str(&facts.machine_name).ok(),
            live: Arc::clone(&self.live),
        });
    }

    fn view(&self, now: Instant) -> Node {
        Node {
            facts: self.facts.clone(),
            status: self.status(),
            status_reason: self.status_reason().map(|r| r.text().to_owned()),
            uptime_secs: self
                .alive_since
                .map_or(0, |since| now.saturating_duration_since(since).as_secs()),
            metrics: self.metrics.clone(),
            in_flight: self.live.in_flight(),
            ollama_supervision: self.ollama_supervision.clone(),
            server_load: self.server_load.clone(),
            stats: None,
        }
    }

    fn persisted(&self) -> PersistedNode {
        PersistedNode {
            facts: self.facts.clone(),
            online: self.alive_since.is_some(),
            offline_reason: self.offline_reason,
            ollama_available: self.ollama_available,
            credential_sha256: self.credential.map(Digest::to_hex),
            node_api_key: self.node_api_key.clone(),
        }
    }

    fn from_persisted(p: PersistedNode, now: Instant) -> Self {
        let mut record = NodeRecord {
            // A node that was alive gets a full timeout to send its next heartbeat,
            // so that restarting the coordinator does not take the fleet out of rotation.
            alive_since: p.online.then_some(now),
            // Only the reasons a node keeps while offline are restored as such.
            offline_reason: if p.online {
                None
            } else {
                p.offline_reason
                    .filter(|r| {
                        !matches!(
                            r,
                            OfflineReason::OllamaUnreachable | OfflineReason::ProbeFailed
                        )
                    })
                    .or(Some(OfflineReason::TimedOut))
            },
            ollama_available: p.ollama_available,
            credential: p.credential_sha256.as_deref().and_then(Digest::from_hex),
            node_api_key: p.node_api_key,
            ..NodeRecord::new(p.facts, now)
        };
        record.rebuild_routable();
        record
    }

    fn agentless_target(&self) -> AgentlessTarget {
        AgentlessTarget {
            id: self.facts.id,
            machine_name: self.facts.machine_name.clone(),
            api_url: self.facts.api_url.clone(),
            kind: self.facts.api_kind,
            reachable: self.alive_since.is_some() && self.ollama_available,
            authorization: self.routable.authorization.clone(),
            load_endpoints: Arc::clone(&self.load_endpoints),
        }
    }

    /// Whether `presented` is this node's credential. A node without one (agentless,
    /// or registered before credentials) accepts any caller, as it always did.
    fn accepts_credential(&self, presented: Option<&str>) -> bool {
        match (&self.credential, presented) {
            (None, _) => true,
            (Some(digest), Some(presented)) => digest.matches(presented),
            (Some(_), None) => false,
        }
    }

    fn log_status_change(&self, before: NodeStatus) {
        let after = self.status();
        if before != after {
            tracing::info!(
                node_id = %self.facts.id,
                machine = %self.facts.machine_name,
                from = before.as_str(),
                to = after.as_str(),
                reason = self.status_reason().map_or("", OfflineReason::text),
                "node status changed"
            );
        }
    }
}

/// The registry of nodes. Cheap to share: wrap in an `Arc`.
#[derive(Debug)]
pub struct NodeRegistry {
    /// By id: iterated in id order, so the routable snapshot needs no sort.
    nodes: RwLock<BTreeMap<NodeId, NodeRecord>>,
    snapshot: ArcSwap<RoutableSnapshot>,
    persist: Arc<PersistQueue>,
    /// Nodes changed since the writer last took them (see [`persist`]).
    changed: parking_lot::Mutex<HashSet<NodeId>>,
    /// Set (under the write lock) when a change made `snapshot` out of date; the
    /// next reader rebuilds it, so a burst of registrations costs one rebuild.
    stale: AtomicBool,
    /// Held while rebuilding, so that a reader never takes the old snapshot
    /// while another is building the new one.
    rebuilding: parking_lot::Mutex<()>,
    /// Node ids by API URL, to find a machine registering again without a scan
    /// of the fleet. Changed only under the `nodes` write lock.
    by_url: parking_lot::Mutex<HashMap<String, Vec<NodeId>>>,
    settings: RegistrySettings,
}

impl NodeRegistry {
    pub fn new(settings: RegistrySettings, persist: Arc<PersistQueue>) -> Self {
        Self {
            nodes: RwLock::new(BTreeMap::new()),
            snapshot: ArcSwap::from_pointee(RoutableSnapshot::default()),
            persist,
            changed: parking_lot::Mutex::new(HashSet::new()),
            stale: AtomicBool::new(false),
            rebuilding: parking_lot::Mutex::new(()),
            by_url: parking_lot::Mutex::new(HashMap::new()),
            settings,
        }
    }

    /// A registry holding the nodes read from disk.
    pub fn restore(
        settings: RegistrySettings,
        persist: Arc<PersistQueue>,
        nodes: Vec<PersistedNode>,
    ) -> Self {
        let registry = Self::new(settings, persist);
        let now = Instant::now();
        {
            let mut map = registry.nodes.write();
            for node in nodes {
                registry.index_url(&node.facts.api_url, node.facts.id);
                map.insert(node.facts.id, NodeRecord::from_persisted(node, now));
            }
            registry.publish(&map);
        }
        registry
    }

    pub fn settings(&self) -> RegistrySettings {
        self.settings
    }

    pub fn persist_queue(&self) -> &Arc<PersistQueue> {
        &self.persist
    }

    /// The nodes that may receive new requests: one atomic load, and a rebuild
    /// (under the registry's read lock) only after a change.
    pub fn snapshot(&self) -> Arc<RoutableSnapshot> {
        if self.stale.load(Ordering::Acquire) {
            let _rebuilding = self.rebuilding.lock();
            if self.stale.load(Ordering::Acquire) {
                let nodes = self.nodes.read();
                self.stale.store(false, Ordering::Release);
                // In id order (the map's): a stable order keeps round-robin fair across rebuilds.
                let routable: Vec<Arc<RoutableNode>> = nodes
                    .values()
                    .filter(|r| r.status() == NodeStatus::Online)
                    .map(|r| Arc::clone(&r.routable))
                    .collect();
                self.snapshot
                    .store(Arc::new(RoutableSnapshot::new(routable)));
            }
        }
        self.snapshot.load_full()
    }

    /// The nodes at `url`; call under the `nodes` lock.
    fn at_url(&self, url: &str) -> Vec<NodeId> {
        self.by_url.lock().get(url).cloned().unwrap_or_default()
    }

    fn index_url(&self, url: &str, id: NodeId) {
        self.by_url
            .lock()
            .entry(url.to_owned())
            .or_default()
            .push(id);
    }

    fn unindex_url(&self, url: &str, id: NodeId) {
        let mut by_url = self.by_url.lock();
        if let Some(ids) = by_url.get_mut(url) {
            ids.retain(|other| *other != id);
            if ids.is_empty() {
                by_url.remove(url);
            }
        }
    }

    /// Marks `ids` changed for the writer, then bumps the generation; returns it.
    fn changed(&self, ids: impl IntoIterator<Item = NodeId>) -> u64 {
        self.changed.lock().extend(ids);
        self.persist.changed()
    }

    /// The nodes changed since the last call, for the writer.
    pub fn take_changed(&self) -> HashSet<NodeId> {
        std::mem::take(&mut *self.changed.lock())
    }

    /// Marks `ids` changed again (a write that should have carried them failed).
    pub fn mark_changed(&self, ids: HashSet<NodeId>) {
        self.changed.lock().extend(ids);
    }

    /// The durable form of node `id`, if the registry has it.
    pub fn persisted_node(&self, id: NodeId) -> Option<PersistedNode> {
        self.nodes.read().get(&id).map(NodeRecord::persisted)
    }

    /// Notes that the routable snapshot is out of date; called under the write
    /// lock, after the change (`_nodes` is the proof).
    fn publish(&self, _nodes: &BTreeMap<NodeId, NodeRecord>) {
        self.stale.store(true, Ordering::Release);
    }

    /// Registers a node, or refreshes it when the same machine registers again.
    /// Returns the answer and the change's generation, to wait for durability.
    ///
    /// A node the registry knows (by id, or by URL and machine name) is taken only
    /// with its credential: whoever holds just the fleet's node token cannot move a
    /// node's traffic elsewhere or speak for it. A new node, or one that had no
    /// credential yet, is issued one in the answer.
    pub fn register(&self, req: RegisterRequest) -> Result<(RegisterResponse, u64), RegistryError> {
        let (machine_name, api_url) = validate::registration(&req)?;
        let req_parallel = req.max_parallel;
        let req_memory_slots = req.max_loaded_models;
        let now = Instant::now();
        let wall = Utc::now();
        let mut nodes = self.nodes.write();
        // The same machine again, or an agent now reporting for a node added by URL.
        let existing = req.node_id.filter(|id| nodes.contains_key(id)).or_else(|| {
            self.at_url(&api_url)
                .into_iter()
                .filter_map(|id| nodes.get(&id))
                .find(|r| r.facts.machine_name == machine_name || r.facts.agentless)
                .map(|r| r.facts.id)
        });
        let mut issued = None;
        let status = match existing.and_then(|id| nodes.get_mut(&id)) {
            Some(record) => {
                if record.credential.is_some()
                    && !record.accepts_credential(req.node_credential.as_deref())
                {
                    let shown = record.facts.shown_name();
                    let message = if req.node_credential.is_some() {
                        format!(
                            "node {} ({shown}) is registered with another credential",
                            record.facts.id
                        )
                    } else {
                        format!(
                            "{} is already registered as node {} ({shown}); register with that node's credential \
                             (its agent keeps it in agent-node.json), or delete the node first",
                            record.facts.api_url, record.facts.id
                        )
                    };
                    tracing::warn!(node_id = %record.facts.id, machine = %machine_name, "registration over a known node refused: wrong or missing node credential");
                    return Err(if req.node_credential.is_some() {
                        RegistryError::WrongCredential(message)
                    } else {
                        RegistryError::Conflict(message)
                    });
                }
                if record.credential.is_none() {
                    let credential = generate_token(NODE_CREDENTIAL_PREFIX);
                    record.credential = Some(Digest::of(&credential));
                    issued = Some(credential);
                }
                let before = record.status();
                record.facts.machine_name = machine_name;
                if record.facts.api_url != api_url {
                    self.unindex_url(&record.facts.api_url, record.facts.id);
                    self.index_url(&api_url, record.facts.id);
                }
                record.facts.api_url = api_url;
                if record.facts.agentless {
                    tracing::info!(node_id = %record.facts.id, api_url = %record.facts.api_url, "an agent now reports for this node; the coordinator stops probing it");
                }
                record.take_registration(req, now, wall);
                record.log_status_change(before);
                tracing::info!(node_id = %record.facts.id, machine = %record.facts.machine_name, api_url = %record.facts.api_url, "node registered again");
                (record.facts.id, RegistrationStatus::Updated)
            }
            None => {
                let id = req.node_id.unwrap_or_else(NodeId::new_v4);
                let credential = generate_token(NODE_CREDENTIAL_PREFIX);
                let facts = NodeFacts::new(
                    id,
                    machine_name,
                    req.ip_address,
                    api_url,
                    req.api_kind,
                    wall,
                );
                let mut record = NodeRecord::new(facts, now);
                record.credential = Some(Digest::of(&credential));
                issued = Some(credential);
                record.take_registration(req, now, wall);
                tracing::info!(
                    node_id = %id,
                    machine = %record.facts.machine_name,
                    api_url = %record.facts.api_url,
                    models = record.facts.models.len(),
                    status = record.status().as_str(),
                    "node registered"
                );
                self.index_url(&record.facts.api_url, id);
                nodes.insert(id, record);
                (id, RegistrationStatus::Registered)
            }
        };
        if let Some(record) = nodes.get(&status.0) {
            record.live.record_memory_slots(req_memory_slots);
            record.live.record_registration(
                req_parallel,
                Some(
                    record
                        .facts
                        .loaded_models
                        .iter()
                        .map(|m| canonical_model_name(&m.name))
                        .collect(),
                ),
            );
        }
        self.publish(&nodes);
        drop(nodes);
        let generation = self.changed([status.0]);
        Ok((
            RegisterResponse {
                node_id: status.0,
                status: status.1,
                heartbeat_interval_secs: self.settings.heartbeat_interval.as_secs().max(1),
                node_credential: issued,
            },
            generation,
        ))
    }

    /// Records a heartbeat from the agent holding `credential`. The snapshot is
    /// rebuilt only when routing facts changed.
    pub fn heartbeat(
        &self,
        id: NodeId,
        hb: HeartbeatRequest,
        credential: Option<&str>,
    ) -> Result<(), RegistryError> {
        self.record_heartbeat(id, hb, Reporter::Agent(credential))
            .map(|_| ())
    }

    /// Checks that `credential` is node `id`'s, for the calls only its agent may make.
    pub fn check_credential(
        &self,
        id: NodeId,
        credential: Option<&str>,
    ) -> Result<(), RegistryError> {
        let nodes = self.nodes.read();
        let record = nodes.get(&id).ok_or(RegistryError::UnknownNode(id))?;
        if record.accepts_credential(credential) {
            Ok(())
        } else {
            Err(credential_refused(id, credential))
        }
    }

    /// Records what the coordinator's own probe of an agentless node found, as a
    /// heartbeat. Returns false (and changes nothing) when the node is no longer
    /// agentless: an agent took it over while the probe ran.
    pub fn record_probe(&self, id: NodeId, hb: HeartbeatRequest) -> Result<bool, RegistryError> {
        self.record_heartbeat(id, hb, Reporter::Probe)
    }

    fn record_heartbeat(
        &self,
        id: NodeId,
        hb: HeartbeatRequest,
        reporter: Reporter<'_>,
    ) -> Result<bool, RegistryError> {
        validate::heartbeat(&hb)?;
        let now = Instant::now();
        let mut nodes = self.nodes.write();
        let record = nodes.get_mut(&id).ok_or(RegistryError::UnknownNode(id))?;
        let probe = match reporter {
            Reporter::Probe if !record.facts.agentless => return Ok(false),
            Reporter::Probe => true,
            Reporter::Agent(credential) if !record.accepts_credential(credential) => {
                return Err(credential_refused(id, credential));
            }
            Reporter::Agent(_) => false,
        };
        let before = record.status();
        if record.alive_since.is_some() {
            record
                .recent_gaps
                .push(now.saturating_duration_since(record.last_heartbeat));
        }
        record.facts.last_seen = Utc::now();
        record.last_heartbeat = now;
        record.alive_since.get_or_insert(now);
        record.offline_reason = None;
        record.ollama_available = hb.ollama_available;
        record.live.record_memory_slots(hb.max_loaded_models);
        let slots = hb
            .max_parallel
            .or(hb.server_load.as_ref().and_then(|l| l.slots_total));
        record.live.record_heartbeat(
            hb.metrics.cpu_percent,
            hb.metrics.memory_percent,
            slots,
            hb.loaded_models.as_ref().map(|loaded| {
                loaded
                    .iter()
                    .map(|m| canonical_model_name(&m.name))
                    .collect()
            }),
        );
        record.live.record_server_load(hb.server_load.as_ref());
        // Shown as sent, within bounds: a short source, a share between 0 and 1.
        record.server_load = hb.server_load.map(|mut load| {
            load.source = load.source.map(|s| s.chars().take(32).collect());
            load.kv_cache_usage = load.kv_cache_usage.filter(|u| (0.0..=1.0).contains(u));
            load
        });
        // A probe measures no machine load: show none rather than zeros.
        record.metrics = (!probe).then_some(hb.metrics);
        if hb.ollama_version.is_some() {
            record.facts.ollama_version = hb.ollama_version;
        }
        record.ollama_supervision = hb
            .ollama_supervision
            .map(|text| text.chars().take(MAX_SUPERVISION_CHARS).collect());
        let mut models_changed = false;
        if let Some(models) = hb.models
            && models != record.facts.models
        {
            record.facts.models = models;
            models_changed = true;
        }
        if let Some(loaded) = hb.loaded_models
            && loaded != record.facts.loaded_models
        {
            record.facts.loaded_models = loaded;
            models_changed = true;
        }
        if models_changed {
            record.rebuild_routable();
        }
        let status_changed = record.status() != before;
        record.log_status_change(before);
        if models_changed || status_changed {
            self.publish(&nodes);
        }
        drop(nodes);
        // Last seen, metrics and loaded models are reported again by the next
        // heartbeat after a restart: only what lasts is written.
        if status_changed || models_changed {
            self.changed([id]);
        }
        Ok(true)
    }

    /// Adds a node that no agent reports for (`POST /api/nodes`), offline until its
    /// first probe. A URL the registry already knows keeps its node: an agentless
    /// one takes the name and kind given, if any; an agent's node is left as it is.
    /// Returns the node, whether it was created, and the change's generation.
    pub fn add_agentless(
        &self,
        node: validate::AgentlessNode,
        ip_address: IpAddr,
    ) -> Result<(Node, RegistrationStatus, u64), RegistryError> {
        let now = Instant::now();
        let wall = Utc::now();
        let mut nodes = self.nodes.write();
        // Prefer the agentless node if an agent's node shares the URL too.
        let existing = self
            .at_url(&node.api_url)
            .into_iter()
            .max_by_key(|id| nodes.get(id).is_some_and(|r| r.facts.agentless))
            .and_then(|id| nodes.get_mut(&id));
        if let Some(record) = existing {
            let mut changed = false;
            if record.facts.agentless {
                if node.name_given && record.facts.machine_name != node.name {
                    record.facts.machine_name = node.name;
                    changed = true;
                }
                if node.kind_given && record.facts.api_kind != node.kind {
                    record.facts.api_kind = node.kind;
                    changed = true;
                }
                if node.api_key.is_some() && record.node_api_key != node.api_key {
                    record.node_api_key = node.api_key;
                    changed = true;
                }
            }
            let view = record.view(now);
            tracing::info!(node_id = %view.facts.id, api_url = %view.facts.api_url, agentless = view.facts.agentless, "node added by URL is already known");
            if changed {
                record.rebuild_routable();
                self.publish(&nodes);
            }
            drop(nodes);
            let id = view.facts.id;
            return Ok((view, RegistrationStatus::Updated, self.changed([id])));
        }
        let id = NodeId::new_v4();
        let facts = NodeFacts {
            agentless: true,
            ..NodeFacts::new(id, node.name, ip_address, node.api_url, node.kind, wall)
        };
        let mut record = NodeRecord {
            offline_reason: Some(OfflineReason::NotProbed),
            node_api_key: node.api_key,
            ..NodeRecord::new(facts, now)
        };
        tracing::info!(
            node_id = %id,
            machine = %record.facts.machine_name,
            api_url = %record.facts.api_url,
            kind = record.facts.api_kind.as_str(),
            "node added without an agent"
        );
        record.rebuild_routable();
        let view = record.view(now);
        self.index_url(&record.facts.api_url, id);
        nodes.insert(id, record);
        drop(nodes);
        Ok((view, RegistrationStatus::Registered, self.changed([id])))
    }

    /// The agentless nodes, for the coordinator to probe.
    pub fn agentless_targets(&self) -> Vec<AgentlessTarget> {
        self.nodes
            .read()
            .values()
            .filter(|r| r.facts.agentless)
            .map(NodeRecord::agentless_target)
            .collect()
    }

    /// How the coordinator reaches node `id`'s inference server itself, agent or not
    /// (to pull, copy or delete models there).
    pub fn server_of(&self, id: NodeId) -> Option<AgentlessTarget> {
        self.nodes.read().get(&id).map(NodeRecord::agentless_target)
    }

    /// Agentless node `id`, to probe it; `None` when it is not (or no longer) agentless.
    pub fn agentless_target(&self, id: NodeId) -> Option<AgentlessTarget> {
        self.nodes
            .read()
            .get(&id)
            .filter(|r| r.facts.agentless)
            .map(NodeRecord::agentless_target)
    }

    /// Marks a node offline at once (agent shutdown or operator disconnect).
    /// A later heartbeat brings it back.
    pub fn mark_offline(&self, id: NodeId, reason: OfflineReason) -> Result<Node, RegistryError> {
        let mut nodes = self.nodes.write();
        let record = nodes.get_mut(&id).ok_or(RegistryError::UnknownNode(id))?;
        let before = record.status();
        record.alive_since = None;
        record.offline_reason = Some(reason);
        record.log_status_change(before);
        let view = record.view(Instant::now());
        self.publish(&nodes);
        drop(nodes);
        self.changed([id]);
        Ok(view)
    }

    /// Applies an operator edit; returns the node and the change's generation.
    pub fn patch(&self, id: NodeId, patch: NodePatch) -> Result<(Node, u64), RegistryError> {
        let patch = validate::patch(patch)?;
        let mut nodes = self.nodes.write();
        let record = nodes.get_mut(&id).ok_or(RegistryError::UnknownNode(id))?;
        let before = record.status();
        if let Some(name) = patch.display_name {
            record.facts.display_name = (!name.is_empty()).then_some(name);
        }
        if let Some(tags) = patch.tags {
            record.facts.tags = tags;
        }
        if let Some(notes) = patch.notes {
            record.facts.notes = notes;
        }
        if let Some(draining) = patch.draining {
            record.facts.draining = draining;
        }
        record.log_status_change(before);
        let view = record.view(Instant::now());
        if view.status != before {
            self.publish(&nodes);
        }
        drop(nodes);
        Ok((view, self.changed([id])))
    }

    /// Forgets a node; returns the change's generation.
    pub fn remove(&self, id: NodeId) -> Result<u64, RegistryError> {
        let mut nodes = self.nodes.write();
        let record = nodes.remove(&id).ok_or(RegistryError::UnknownNode(id))?;
        self.unindex_url(&record.facts.api_url, id);
        tracing::info!(node_id = %id, machine = %record.facts.machine_name, "node deleted");
        self.publish(&nodes);
        drop(nodes);
        Ok(self.changed([id]))
    }

    /// Replaces the models node `id` holds with what its server just listed
    /// (after a pull, copy or delete through the router), so routing follows at
    /// once instead of at the next heartbeat. `models` of `None` removes only
    /// `forget` (canonical name) from the list.
    pub fn update_models(
        &self,
        id: NodeId,
        models: Option<Vec<ModelInfo>>,
        forget: Option<&str>,
    ) -> Result<(), RegistryError> {
        let mut nodes = self.nodes.write();
        let record = nodes.get_mut(&id).ok_or(RegistryError::UnknownNode(id))?;
        let mut next = models.unwrap_or_else(|| record.facts.models.clone());
        if let Some(gone) = forget {
            next.retain(|m| canonical_model_name(&m.name) != gone);
            record
                .facts
                .loaded_models
                .retain(|m| canonical_model_name(&m.name) != gone);
        }
        next.truncate(llm_router_common::MAX_MODELS_PER_NODE);
        if next == record.facts.models && forget.is_none() {
            return Ok(());
        }
        record.facts.models = next;
        record.rebuild_routable();
        self.publish(&nodes);
        drop(nodes);
        self.changed([id]);
        Ok(())
    }

    /// The nodes that hold one of `models` (canonical names) but take no
    /// requests now, each as "name (why)": what a request for a model that
    /// no routable node holds is told.
    pub fn unavailable_holders(&self, models: &[&str]) -> Vec<String> {
        self.nodes
            .read()
            .values()
            .filter(|r| r.status() != NodeStatus::Online)
            .filter(|r| {
                r.facts
                    .models
                    .iter()
                    .any(|m| models.contains(&canonical_model_name(&m.name).as_str()))
            })
            .map(|r| {
                let why = match r.status_reason() {
                    Some(reason) => reason.text(),
                    None => "draining",
                };
                format!("{} ({why})", r.facts.shown_name())
            })
            .collect()
    }

    pub fn get(&self, id: NodeId) -> Option<Node> {
        let now = Instant::now();
        self.nodes.read().get(&id).map(|r| r.view(now))
    }

    /// All nodes, ordered by machine name then id.
    pub fn list(&self) -> Vec<Node> {
        let now = Instant::now();
        let mut nodes: Vec<Node> = self.nodes.read().values().map(|r| r.view(now)).collect();
        nodes.sort_by(|a, b| {
            a.facts
                .machine_name
                .cmp(&b.facts.machine_name)
                .then(a.facts.id.cmp(&b.facts.id))
        });
        nodes
    }

    pub fn len(&self) -> usize {
        self.nodes.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Marks offline every live node whose last heartbeat is older than its
    /// timeout; returns their ids.
    ///
    /// The timeout is `AGENT_TIMEOUT`, stretched for a node whose recent
    /// heartbeats came late: to 1.5 × its longest recent gap (at most 4 ×
    /// `AGENT_TIMEOUT`). A node whose beats jitter around the timeout under
    /// load therefore stays online instead of flapping, while a node that
    /// beats on time is declared dead after `AGENT_TIMEOUT` as configured.
    pub fn expire_stale(&self, now: Instant) -> Vec<NodeId> {
        let base = self.settings.agent_timeout;
        let timeout_of = |r: &NodeRecord| {
            r.recent_gaps
                .longest()
                .map_or(base, |gap| gap.mul_f64(1.5))
                .clamp(base, base * 4)
        };
        // Most checks find nothing: look under the read lock first.
        let stale = |r: &NodeRecord| {
            r.alive_since.is_some()
                && now.saturating_duration_since(r.last_heartbeat) > timeout_of(r)
        };
        if !self.nodes.read().values().any(stale) {
            return Vec::new();
        }
        let mut nodes = self.nodes.write();
        let mut expired = Vec::new();
        for record in nodes.values_mut().filter(|r| stale(r)) {
            let before = record.status();
            record.alive_since = None;
            record.offline_reason = Some(OfflineReason::TimedOut);
            record.log_status_change(before);
            expired.push(record.facts.id);
        }
        if !expired.is_empty() {
            self.publish(&nodes);
            drop(nodes);
            self.changed(expired.iter().copied());
        }
        expired
    }

    /// The durable form of every node, for the writer.
    pub fn persisted_nodes(&self) -> Vec<PersistedNode> {
        let mut nodes: Vec<PersistedNode> = self
            .nodes
            .read()
            .values()
            .map(NodeRecord::persisted)
            .collect();
        nodes.sort_by_key(|n| n.facts.registered_at);
        nodes
    }
}

/// Who reports a node's state: its agent (with the credential it presented) or
/// the coordinator's own probe of an agentless node.
#[derive(Debug, Clone, Copy)]
enum Reporter<'a> {
    Agent(Option<&'a str>),
    Probe,
}

fn credential_refused(id: NodeId, presented: Option<&str>) -> RegistryError {
    RegistryError::Unauthenticated(match presented {
        Some(_) => format!("the credential presented is not node {id}'s"),
        None => {
            format!("node {id} requires its credential (Authorization: Bearer <node credential>)")
        }
    })
}

#[cfg(test)]
mod tests;
