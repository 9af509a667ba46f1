//! The inference proxy: picks a node that holds the requested model, sends
//! the client's body to it unchanged, and streams the answer back.
//!
//! - [`peek`]: reads `model` and `stream` without re-serialising the body;
//! - [`body`]: the streamed response with its in-flight guard;
//! - [`error`]: errors in the Ollama or OpenAI format.
//!
//! Failover: a node that refuses the connection, times out before its first
//! byte, or answers 5xx (or 404 for the model) before anything reached the
//! client is skipped and the request goes to another candidate, up to
//! `max_attempts` nodes. Failures and successes feed each node's health
//! state machine: after `unhealthy_after` failures in a row the node leaves
//! rotation (it is tried only when nothing else is left) until
//! `healthy_after` successes, from requests or probes, bring it back.
//! The node is chosen among candidates by the configured
//! [`Policy`](crate::balancer::Policy).
//!
//! Waiting for a slot: under a placement plan, with a policy that
//! [waits for a slot](crate::balancer::Policy::waits_for_a_slot) (`auto`), a
//! request whose chosen node has every reported slot busy is held here,
//! counted in that node's load, and placed again when any node's request
//! ends or after [`HOLD_RECHECK`] (the plan may have moved), for at most
//! [`HOLD_AT_MOST`]; then it goes where it was chosen. One queue in front of
//! the fleet serves each request from the first slot that frees.

pub mod body;
pub mod error;
pub mod peek;
pub mod record;
pub mod usage;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use anyhow::Context as _;
use axum::body::Body;
use axum::http::uri::PathAndQuery;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::Response;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::time::Instant;

use crate::admission::{Admission, Gate};
use crate::balancer::{self, Placement, Policy, RoutePlan};
use crate::config::ProxySettings;
use crate::registry::live::{HealthChange, SLOT_FREED};
use crate::registry::{
    Candidate, InFlightGuard, NodeRegistry, RoutableNode, RoutableSnapshot, validate,
};
use body::{BodyHealth, FailureReport, ProxiedBody, Tap, error_chain};
use error::ProxyError;
use llm_router_common::{ApiKind, NodeId};
use peek::RequestFacts;
use record::{Outcome, RequestRecord, RequestSinks, TriedNode, Usage};

pub(crate) use crate::translate::response::node_error_message;

/// Response header naming the node that served a request.
pub const NODE_HEADER: &str = "x-llm-router-node";

/// Set on every request the router sends to a node. A request that arrives with it
/// came from a router (this one, through a node that points back at it, or another):
/// it is refused, so no topology can turn one request into a loop.
pub const HOP_HEADER: &str = "x-llm-router-hop";

pub(crate) const HOP_VALUE: HeaderValue = HeaderValue::from_static("1");

/// Request headers not forwarded to nodes: connection-level, set anew by the client
/// library, or the client's own credentials (its API key is the router's business;
/// a node that needs a key gets its own, from the node's configuration).
const SKIPPED_REQUEST_HEADERS: [HeaderName; 11] = [
    header::AUTHORIZATION,
    header::COOKIE,
    header::CONNECTION,
    header::HOST,
    header::CONTENT_LENGTH,
    header::TRANSFER_ENCODING,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
    header::ACCEPT_ENCODING,
];

/// Whether a node's response header reaches the client. Only what a client of
/// these APIs reads passes: a node must not set cookies, grant CORS or send
/// anything else on the coordinator's origin. `Content-Type` is handled apart
/// ([`client_content_type`]).
fn passes_response_header(name: &HeaderName) -> bool {
    let name = name.as_str();
    matches!(
        name,
        "content-length" | "cache-control" | "retry-after" | "x-request-id"
    ) || name.starts_with("x-ratelimit-")
        || name.starts_with("openai-")
}

/// The media type of a `Content-Type` value, without its parameters (`application/json`
/// of `application/json; charset=utf-8`); `None` when the value is not visible ASCII.
pub(crate) fn media_type(value: &HeaderValue) -> Option<&str> {
    let value = value.to_str().ok()?;
    Some(value.split(';').next().unwrap_or(value).trim())
}

/// The content type the client sees for a node's `value`: JSON, NDJSON, server-sent
/// events and plain text pass unchanged; anything else (HTML, scripts, images) is
/// relabelled as plain text, so a browser never renders or runs it.
fn client_content_type(value: &HeaderValue) -> HeaderValue {
    const PASSED: [&str; 4] = [
        "application/json",
        "application/x-ndjson",
        "text/event-stream",
        "text/plain",
    ];
    match media_type(value) {
        Some(essence) if PASSED.iter().any(|p| p.eq_ignore_ascii_case(essence)) => value.clone(),
        _ => HeaderValue::from_static("text/plain; charset=utf-8"),
    }
}

/// Most bytes of a node's error answer read to report it.
const ERROR_BODY_LIMIT: usize = 64 * 1024;

/// How long an idle connection to a node is kept for reuse.
const POOL_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(90);

/// Most bytes of a node's answer to [`get`] read.
const GET_BODY_LIMIT: usize = 8 * 1024 * 1024;

/// The pooled HTTP/1.1 client for all traffic to nodes (http, or https with
/// rustls): hyper's own, the least work per request; request bodies are
/// already in memory.
pub type UpstreamClient = Client<UpstreamConnector, Full<Bytes>>;
type UpstreamConnector = HttpsConnector<HttpConnector>;

/// The longest a request waits in the router for a slot (see the module doc).
const HOLD_AT_MOST: std::time::Duration = std::time::Duration::from_secs(30);
/// How often a held request looks again without a slot freed (the plan may have moved).
const HOLD_RECHECK: std::time::Duration = std::time::Duration::from_millis(100);

/// Serving threads with a connection pool of their own; more share one.
const MAX_SERVING_THREADS: usize = 256;

/// Sends inference requests to nodes. One per coordinator; cheap to share.
#[derive(Debug)]
pub struct Proxy {
    registry: Arc<NodeRegistry>,
    /// The pooled client for traffic to nodes off the serving threads
    /// (probes, polls, tests).
    client: UpstreamClient,
    /// One pooled client per serving thread, made on its first request there:
    /// its connections to nodes live on that thread, so a request and its
    /// upstream connection never wake each other across threads.
    per_thread: Box<[OnceLock<UpstreamClient>]>,
    connector: UpstreamConnector,
    settings: ProxySettings,
    policy: Box<dyn Policy>,
    /// The placement plan `auto` follows, when placement is on.
    route_plan: Option<Arc<RoutePlan>>,
    sinks: RequestSinks,
    /// Inference requests in flight across the fleet (`max_in_flight`).
    in_flight: Arc<Gate>,
    /// Bytes of request bodies held (`buffer_bytes`).
    buffered: Arc<Gate>,
    /// Ends the requests still running when a stopping coordinator's grace is over.
    cutoff: Arc<Cutoff>,
}

/// The end of the grace a stopping coordinator gives running requests:
/// once [`Cutoff::cut`] is called, answers still streaming end with an error
/// chunk in their API's format (a single JSON answer is aborted), and
/// requests still waiting for a node are answered 503. Each is recorded
/// with the outcome `cut`.
///
/// On the request path it is atomics: the flags are read with one load, and
/// a request waits on a token of its serving thread's own (a child of the
/// coordinator's), so no two threads share a lock for it.
#[derive(Debug)]
pub struct Cutoff {
    /// Tells this cutoff's per-thread tokens from those of an earlier one.
    id: u64,
    stopping: AtomicBool,
    cut: AtomicBool,
    token: tokio_util::sync::CancellationToken,
    count: AtomicU64,
}

/// The error chunk of an answer cut at shutdown.
pub const CUT_MESSAGE: &str =
    "the router is shutting down and its grace for running requests ran out; this answer was cut";

thread_local! {
    /// This thread's child of a [`Cutoff`]'s token, with the id of the cutoff it belongs to.
    static LOCAL_CUT: std::cell::RefCell<Option<(u64, tokio_util::sync::CancellationToken)>> =
        const { std::cell::RefCell::new(None) };
}

impl Default for Cutoff {
    fn default() -> Self {
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        Self {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            stopping: AtomicBool::new(false),
            cut: AtomicBool::new(false),
            token: tokio_util::sync::CancellationToken::new(),
            count: AtomicU64::new(0),
        }
    }
}

impl Cutoff {
    /// The coordinator stops taking new requests (those running go on).
    pub fn stop_accepting(&self) {
        self.stopping.store(true, Ordering::Release);
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// Cuts every running request, now and from now on.
    pub fn cut(&self) {
        self.stopping.store(true, Ordering::Release);
        self.cut.store(true, Ordering::Release);
        self.token.cancel();
    }

    pub fn is_cut(&self) -> bool {
        self.cut.load(Ordering::Acquire)
    }

    /// Completes when [`Cutoff::cut`] is called.
    pub fn cancelled(&self) -> tokio_util::sync::WaitForCancellationFutureOwned {
        LOCAL_CUT.with_borrow_mut(|local| {
            let token = match local {
                Some((owner, token)) if *owner == self.id => token.clone(),
                _ => {
                    let token = self.token.child_token();
                    *local = Some((self.id, token.clone()));
                    token
                }
            };
            token.cancelled_owned()
        })
    }

    /// Counts one request cut.
    pub fn counted(&self) {
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Requests cut so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

/// One inference request as the handlers hand it over.
#[derive(Debug)]
pub struct InferenceRequest {
    pub flavor: ApiKind,
    pub method: Method,
    /// Path and query to call on the node, e.g. `/api/chat`.
    pub path_and_query: PathAndQuery,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub facts: RequestFacts,
    /// The model's canonical name (`name:tag`), what routing matches on.
    pub model: String,
    /// What the history knows of the request so far.
    pub meta: RequestMeta,
}

/// Where and when a request came from, for its record.
#[derive(Debug, Clone)]
pub struct RequestMeta {
    pub request_id: String,
    pub client_ip: Option<std::net::IpAddr>,
    /// Name of the API key the request came with.
    pub api_key: Option<Arc<str>>,
    pub method: Method,
    pub started: Instant,
    pub started_at: chrono::DateTime<chrono::Utc>,
}

impl RequestMeta {
    /// A record of this request, with nothing known yet of how it ends.
    pub fn record(
        &self,
        flavor: ApiKind,
        endpoint: &str,
        facts: Option<&RequestFacts>,
        body: Bytes,
        nodes_tried: Vec<TriedNode>,
    ) -> RequestRecord {
        RequestRecord {
            request_id: self.request_id.clone(),
            started_at: self.started_at,
            client_ip: self.client_ip,
            api_key: self.api_key.clone(),
            flavor,
            method: self.method.clone(),
            endpoint: endpoint.to_owned(),
            model: facts.map(|f| f.model.clone()).unwrap_or_default(),
            stream: facts.is_some_and(|f| f.stream),
            node_id: None,
            node_name: nodes_tried.last().map(|n| n.name.clone()),
            nodes_tried,
            status: 0,
            outcome: Outcome::Completed,
            duration: Default::default(),
            time_to_first_byte: None,
            usage: Usage::default(),
            request_body: body,
            response_body: Bytes::new(),
            response_bytes_dropped: 0,
            error: None,
        }
    }

    /// A record of a request that got no node's answer.
    pub fn rejected(
        &self,
        flavor: ApiKind,
        endpoint: &str,
        facts: Option<&RequestFacts>,
        body: Bytes,
        error: &ProxyError,
        nodes_tried: Vec<TriedNode>,
    ) -> RequestRecord {
        RequestRecord {
            status: error.status().as_u16(),
            outcome: Outcome::Rejected,
            duration: self.started.elapsed(),
            error: Some(error.to_string()),
            ..self.record(flavor, endpoint, facts, body, nodes_tried)
        }
    }
}

impl InferenceRequest {
    /// The path called, without the query.
    pub fn endpoint(&self) -> &str {
        self.path_and_query.path()
    }

    /// Whether it makes the node run (and so load) its model.
    pub fn runs_model(&self) -> bool {
        self.facts.runs_model(self.endpoint())
    }
}

/// Why one attempt on one node failed, and whether that says the node is unreachable.
struct AttemptFailure {
    message: String,
    /// Whether the failure says something is wrong with the node (not with the request).
    counts_against_node: bool,
    timed_out: bool,
    /// The node answered 404: it does not have the model (its list was stale).
    lacks_model: bool,
}

/// Logs a node leaving or rejoining rotation; called only on a change.
pub fn log_health_change(node: &RoutableNode, change: Option<HealthChange>) {
    match change {
        Some(HealthChange::WentUnhealthy) => tracing::warn!(
            node = %node.machine_name,
            url = %node.api_url,
            "node failing; taken out of rotation until it answers again"
        ),
        Some(HealthChange::Recovered) => {
            tracing::info!(node = %node.machine_name, "node answers again; back in rotation")
        }
        None => {}
    }
}

impl Proxy {
    pub fn new(registry: Arc<NodeRegistry>, settings: ProxySettings) -> anyhow::Result<Self> {
        let connector = upstream_connector(&settings)?;
        Ok(Self {
            registry,
            client: pooled(connector.clone()),
            connector,
            per_thread: (0..MAX_SERVING_THREADS).map(|_| OnceLock::new()).collect(),
            policy: balancer::build(settings.balancer),
            in_flight: Gate::new(settings.admission.max_in_flight),
            buffered: Gate::new(settings.admission.buffer_bytes),
            settings,
            route_plan: None,
            sinks: RequestSinks::default(),
            cutoff: Arc::default(),
        })
    }

    /// The end of the grace for running requests (see [`Cutoff`]).
    pub fn cutoff(&self) -> &Arc<Cutoff> {
        &self.cutoff
    }

    /// Routes within a placement plan (the `auto` policy follows it).
    pub fn with_route_plan(mut self, plan: Option<Arc<RoutePlan>>) -> Self {
        self.route_plan = plan;
        self
    }

    /// Reports every finished request to `sinks` as well.
    pub fn with_sinks(mut self, sinks: RequestSinks) -> Self {
        self.sinks = sinks;
        self
    }

    pub fn sinks(&self) -> &RequestSinks {
        &self.sinks
    }

    /// The pooled client for traffic to nodes off the serving threads.
    pub fn client(&self) -> &UpstreamClient {
        &self.client
    }

    /// The pooled client of the calling thread.
    fn local_client(&self) -> &UpstreamClient {
        match crate::serve::serving_thread().and_then(|i| self.per_thread.get(i)) {
            Some(slot) => slot.get_or_init(|| pooled(self.connector.clone())),
            None => &self.client,
        }
    }

    pub fn settings(&self) -> &ProxySettings {
        &self.settings
    }

    /// The cap on inference requests in flight across the fleet.
    pub fn in_flight_gate(&self) -> &Arc<Gate> {
        &self.in_flight
    }

    /// The cap on request body bytes held in memory.
    pub fn buffer_gate(&self) -> &Arc<Gate> {
        &self.buffered
    }

    /// Serves one inference request, failing over between candidates, and
    /// reports it to the sinks (at the end of its body, or now if it fails).
    pub async fn forward(
        &self,
        request: InferenceRequest,
        admission: Admission,
    ) -> Result<Response, ProxyError> {
        let mut tried = Vec::new();
        let mut admission = Some(admission);
        let mut cut = false;
        let result = tokio::select! {
            result = self.forward_inner(&request, &mut tried, &mut admission) => result,
            () = self.cutoff.cancelled() => {
                cut = true;
                self.cutoff.counted();
                Err(ProxyError::ShuttingDown)
            }
        };
        if let Err(error) = &result
            && !self.sinks.is_empty()
        {
            let mut record = request.meta.rejected(
                request.flavor,
                request.endpoint(),
                Some(&request.facts),
                request.body.clone(),
                error,
                tried,
            );
            if cut {
                record.outcome = Outcome::Cut;
            }
            self.sinks.record(&record);
        }
        result
    }

    async fn forward_inner(
        &self,
        request: &InferenceRequest,
        tried: &mut Vec<TriedNode>,
        admission: &mut Option<Admission>,
    ) -> Result<Response, ProxyError> {
        let snapshot = self.registry.snapshot();
        if snapshot.is_empty() {
            return Err(ProxyError::NoNodeAvailable(if self.registry.is_empty() {
                "no node has registered yet; start llm-router-agent beside Ollama on a machine"
            } else {
                "every registered node is offline or draining"
            }));
        }
        let model = request.model.as_str();
        // Names the model is served under (itself, and its aliases).
        let aliases = &self.settings.aliases;
        let names = (!aliases.is_empty()).then(|| aliases.names_of(model));
        let holds = |node: &RoutableNode| match &names {
            None => node.holds(model),
            Some(names) => names.iter().any(|name| node.holds(name)),
        };
        // An OpenAI-compatible server answers Ollama's API only where it is translated.
        let ollama_only = request.flavor == ApiKind::Ollama
            && crate::translate::Endpoint::of(request.endpoint()).is_none();
        let embedding = is_embedding(request.endpoint());
        // Without aliases, the snapshot's list for the model; with them, the
        // nodes holding any of its names.
        let aliased: Vec<Candidate>;
        let holders = match &names {
            None => snapshot.holders(model),
            Some(_) => {
                aliased = snapshot
                    .nodes
                    .iter()
                    .filter(|node| holds(node))
                    .map(|node| Candidate::new(Arc::clone(node)))
                    .collect();
                &aliased
            }
        };
        let (mut pool, mut reserve) = split_candidates(holders, ollama_only, embedding);
        if pool.is_empty() && reserve.is_empty() {
            let elsewhere = ollama_only
                && snapshot
                    .holders(model)
                    .iter()
                    .any(|node| node.api == ApiKind::OpenAi);
            if elsewhere && request.endpoint() == peek::SHOW_PATH {
                return Ok(show_served_elsewhere(&request.facts.model));
            }
            if elsewhere {
                return Err(ProxyError::OnlyOnOpenAiNodes(request.facts.model.clone()));
            }
            let wanted: Vec<&str> = match &names {
                Some(names) => names.iter().map(String::as_str).collect(),
                None => vec![model],
            };
            let holders = self.registry.unavailable_holders(&wanted);
            return Err(if holders.is_empty() {
                ProxyError::ModelNotFound(request.facts.model.clone())
            } else {
                ProxyError::ModelUnavailable {
                    model: request.facts.model.clone(),
                    holders: holders.join(", "),
                }
            });
        }
        // Only servers speaking OpenAI's API can take this Ollama request: what cannot be
        // translated is the client's error, not the nodes'.
        if request.flavor == ApiKind::Ollama
            && let Some(endpoint) = crate::translate::Endpoint::of(request.endpoint())
            && pool
                .iter()
                .chain(&reserve)
                .all(|n| n.api == ApiKind::OpenAi)
            && let Err(reason) =
                crate::translate::request::translate(endpoint, &request.body, model)
        {
            return Err(ProxyError::BadRequest(format!(
                "this model is served by OpenAI-compatible servers only, and the request cannot be translated for them: {reason}"
            )));
        }

        let mut plan = self.route_plan.as_ref().map(|plan| plan.load());
        let mut hold_until: Option<Instant> = None;
        let cap = self.settings.admission.max_in_flight_per_node as u64;
        // Nodes passed over because `cap` requests are in flight on them.
        let mut full: Vec<&Candidate> = Vec::new();
        let mut wait_until: Option<Instant> = None;
        let max_attempts = self.settings.max_attempts.max(1) as usize;
        let mut failures: Vec<String> = Vec::new();
        let mut all_timed_out = true;
        let mut all_lacked_model = true;
        while failures.len() < max_attempts {
            move_full(&mut pool, &mut full, cap);
            if pool.is_empty() {
                // Nodes that failed recently are the last resort, not excluded.
                std::mem::swap(&mut pool, &mut reserve);
                move_full(&mut pool, &mut full, cap);
            }
            if pool.is_empty() {
                if full.is_empty() || !failures.is_empty() {
                    break;
                }
                // Every candidate is at its cap: wait briefly for one to finish a request.
                let deadline = *wait_until
                    .get_or_insert_with(|| Instant::now() + self.settings.admission.wait);
                let room = SLOT_FREED
                    .wait_for(deadline, || {
                        full.iter().any(|n| n.live.in_flight() < cap).then_some(())
                    })
                    .await;
                if room.is_none() {
                    return Err(ProxyError::Overloaded(format!(
                        "every node with model \"{}\" has {cap} requests in flight (LLM_ROUTER_MAX_IN_FLIGHT_PER_NODE)",
                        validate::shown(&request.facts.model)
                    )));
                }
                pool.append(&mut full);
                continue;
            }
            let placement = Placement {
                model,
                now: Instant::now(),
                planned: plan
                    .as_ref()
                    .and_then(|plan| RoutePlan::nodes_for(plan, model)),
                assigned: plan.as_ref().map(|plan| &plan.assigned),
            };
            let index = self.policy.select(&pool, &placement);
            // Under a plan, a request whose best node has every slot busy
            // waits here rather than in that node's queue: when a slot frees
            // anywhere, or the plan moves, it is placed again.
            if placement.planned.is_some()
                && self.policy.waits_for_a_slot()
                && pool[index].live.saturated()
            {
                let until = *hold_until.get_or_insert_with(|| Instant::now() + HOLD_AT_MOST);
                let now = Instant::now();
                if now < until {
                    let _held = pool[index].live.hold();
                    SLOT_FREED.next((now + HOLD_RECHECK).min(until)).await;
                    plan = self.route_plan.as_ref().map(|plan| plan.load());
                    continue;
                }
            }
            let node = pool.swap_remove(index);
            let Some(guard) = node.live.try_start_request(cap) else {
                // Another request took its last slot since the check.
                full.push(node);
                continue;
            };
            tried.push(TriedNode {
                id: node.id,
                name: node.machine_name.clone(),
            });
            match self
                .attempt(node.node(), guard, request, model, tried, admission)
                .await
            {
                Ok(response) => {
                    if request.facts.unload {
                        self.unload_elsewhere(request, model, &snapshot, node.id);
                    }
                    return Ok(response);
                }
                Err(failure) => {
                    if failure.counts_against_node {
                        log_health_change(node, node.live.record_failure(self.settings.health));
                    }
                    let next = if failures.len() + 1 >= max_attempts {
                        "no attempts left"
                    } else if pool.is_empty() && reserve.is_empty() && full.is_empty() {
                        "no other node holds the model"
                    } else {
                        "trying another node"
                    };
                    tracing::warn!(node = %node.machine_name, model = %request.facts.model, error = %failure.message, "attempt failed; {next}");
                    all_timed_out &= failure.timed_out;
                    all_lacked_model &= failure.lacks_model;
                    failures.push(failure.message);
                }
            }
        }
        let summary = format!(
            "{} node(s) tried for model \"{}\", all failed: {}",
            failures.len(),
            request.facts.model,
            failures.join("; ")
        );
        Err(if all_lacked_model {
            // The nodes' model lists were stale: none of them has it after all.
            tracing::warn!(model = %request.facts.model, %summary, "nodes listed the model but do not have it");
            ProxyError::ModelNotFound(request.facts.model.clone())
        } else if all_timed_out {
            ProxyError::Timeout(summary)
        } else {
            ProxyError::NodesFailed(summary)
        })
    }

    /// Sends an unload (`ollama stop`), which `answered` took, to every other
    /// Ollama node believed to hold `model` in memory: a model is in memory on
    /// the fleet, not on one node. In the background; the client has its
    /// answer, and each node's outcome is logged.
    fn unload_elsewhere(
        &self,
        request: &InferenceRequest,
        model: &str,
        snapshot: &RoutableSnapshot,
        answered: NodeId,
    ) {
        let now = Instant::now();
        for node in snapshot.holders(model).iter().filter(|n| {
            n.id != answered
                && n.api == ApiKind::Ollama
                && (n.live.is_resident(model, now) || n.loaded_models.contains(model))
        }) {
            let upstream = match upstream_request(node, request, None) {
                Ok(upstream) => upstream,
                Err(message) => {
                    tracing::warn!(node = %node.machine_name, %message, "could not send the unload");
                    continue;
                }
            };
            node.live.forget_model(model);
            let client = self.local_client().clone();
            let timeout = self.settings.first_byte_timeout;
            let node = Arc::clone(node.node());
            let model = model.to_owned();
            tokio::spawn(async move {
                let sent = tokio::time::timeout(timeout, async {
                    let response = client.request(upstream).await?;
                    let status = response.status();
                    response.into_body().collect().await?;
                    Ok::<_, Box<dyn std::error::Error + Send + Sync>>(status)
                })
                .await;
                match sent {
                    Ok(Ok(status)) if status.is_success() => {
                        tracing::info!(node = %node.machine_name, %model, "model unloaded here too");
                    }
                    Ok(Ok(status)) => {
                        tracing::warn!(node = %node.machine_name, %model, %status, "the node refused the unload");
                    }
                    Ok(Err(error)) => {
                        tracing::warn!(node = %node.machine_name, %model, %error, "the unload did not reach the node");
                    }
                    Err(_) => {
                        tracing::warn!(node = %node.machine_name, %model, "the node did not answer the unload in time");
                    }
                }
            });
        }
    }

    /// One try on one node: the response if its head arrived and is worth passing on.
    async fn attempt(
        &self,
        node: &Arc<RoutableNode>,
        guard: InFlightGuard,
        request: &InferenceRequest,
        model: &str,
        tried: &[TriedNode],
        admission: &mut Option<Admission>,
    ) -> Result<Response, AttemptFailure> {
        // Sent while every slot the node reports was busy (this request is
        // counted in flight already) or other requests waited in the router
        // for it, or behind a model load: its first token may then measure
        // the wait, and is not learned as the node's. (Counting only the
        // busy slots here more than doubled `auto`'s mean in the routing benchmark's
        // `shift`.)
        let queued = node.live.is_loading()
            || node
                .live
                .parallel()
                .is_some_and(|slots| node.live.load() > u64::from(slots));
        // An unload takes the model out of memory; a request that runs it
        // puts it there; a metadata read leaves memory as it is.
        let cold = if request.facts.unload {
            node.live.forget_model(model);
            false
        } else if request.runs_model() {
            !node.live.route_model(model, Instant::now())
        } else {
            false
        };
        if cold {
            tracing::debug!(node = %node.machine_name, %model, in_flight = node.live.in_flight(), "model not in memory there: the node loads it");
            node.live.count_cold_load();
        }
        let outgoing =
            outgoing(node, request, model, &self.settings.aliases).map_err(|message| {
                AttemptFailure {
                    message: format!("{}: {message}", node.machine_name),
                    counts_against_node: false,
                    timed_out: false,
                    lacks_model: false,
                }
            })?;
        let upstream =
            upstream_request(node, request, outgoing.rewrite.as_ref()).map_err(|message| {
                AttemptFailure {
                    message,
                    counts_against_node: true,
                    timed_out: false,
                    lacks_model: false,
                }
            })?;
        let sent = tokio::time::timeout(
            self.settings.first_byte_timeout,
            self.local_client().request(upstream),
        )
        .await;
        let response = match sent {
            Err(_) => {
                return Err(AttemptFailure {
                    message: format!(
                        "{}: no answer within {} s",
                        node.machine_name,
                        self.settings.first_byte_timeout.as_secs()
                    ),
                    counts_against_node: true,
                    timed_out: true,
                    lacks_model: false,
                });
            }
            Ok(Err(e)) => {
                return Err(AttemptFailure {
                    message: format!("{}: {}", node.machine_name, error_chain(&e)),
                    counts_against_node: true,
                    timed_out: is_timeout(&e),
                    lacks_model: false,
                });
            }
            Ok(Ok(response)) => response,
        };
        let status = response.status();
        // A good status is not yet a good answer: the body's end counts for the node's
        // health (a node that sends headers and then stalls must leave rotation).
        if status.is_server_error() || status == StatusCode::NOT_FOUND {
            let read = Limited::new(response.into_body(), ERROR_BODY_LIMIT).collect();
            let text = match tokio::time::timeout(self.settings.first_byte_timeout, read).await {
                Ok(Ok(body)) => String::from_utf8_lossy(&body.to_bytes()).into_owned(),
                _ => String::new(),
            };
            // "This server cannot embed" is about this kind of request, not the node.
            let embed_refused = is_embedding(request.endpoint()) && says_no_embeddings(&text);
            if embed_refused {
                node.live.mark_no_embeddings();
                tracing::info!(
                    node = %node.machine_name,
                    for_secs = crate::registry::live::NO_EMBEDDINGS_FOR.as_secs(),
                    "the node cannot answer embedding requests; it gets none for a while"
                );
            }
            return Err(AttemptFailure {
                message: format!(
                    "{} answered {}: {}",
                    node.machine_name,
                    status.as_u16(),
                    node_error_message(&text)
                ),
                counts_against_node: status.is_server_error() && !embed_refused,
                timed_out: false,
                lacks_model: status == StatusCode::NOT_FOUND,
            });
        }
        tracing::debug!(node = %node.machine_name, model = %request.facts.model, %status, "proxying");

        let answer = outgoing.translation.map(|(endpoint, translated)| {
            crate::translate::response::Answer::new(
                endpoint,
                translated.upstream,
                &request.facts.model,
                translated.stream,
                status.as_u16(),
                request.meta.started,
            )
        });
        let streamed = match &answer {
            Some(answer) => answer.content_type() == "application/x-ndjson",
            None => response
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|ct| {
                    ct.starts_with("application/x-ndjson") || ct.starts_with("text/event-stream")
                }),
        };
        let failure = if streamed {
            FailureReport::ErrorChunk(request.flavor)
        } else {
            FailureReport::Abort
        };
        let mut builder = Response::builder().status(status);
        if let Some(headers) = builder.headers_mut() {
            // Room for the headers the layers above add (id, nosniff, CORS), so that
            // the map is not grown on the way out.
            headers.reserve(response.headers().len() + 6);
            for (name, value) in response.headers() {
                if answer.is_some()
                    && (name == header::CONTENT_TYPE || name == header::CONTENT_LENGTH)
                {
                    // The client gets the translation, of another type and length.
                } else if name == header::CONTENT_TYPE {
                    headers.insert(header::CONTENT_TYPE, client_content_type(value));
                } else if passes_response_header(name) {
                    headers.append(name, value.clone());
                }
            }
            if let Some(answer) = &answer {
                headers.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(answer.content_type()),
                );
            }
            if let Some(value) = &node.name_header {
                headers.insert(HeaderName::from_static(NODE_HEADER), value.clone());
            }
        }
        let tap = {
            let meta = &request.meta;
            Tap::new(
                RequestRecord {
                    node_id: Some(node.id),
                    status: status.as_u16(),
                    ..meta.record(
                        request.flavor,
                        request.endpoint(),
                        Some(&request.facts),
                        request.body.clone(),
                        tried.to_vec(),
                    )
                },
                self.sinks.clone(),
                meta.started,
                if self.sinks.is_empty() {
                    0
                } else {
                    self.settings.capture_bytes
                },
                Arc::clone(node),
                model.to_owned(),
                cold,
            )
            .queued(queued)
            .holding(admission.take().unwrap_or_default())
        };
        // hyper knows the length when the node announced one (a translation has its own).
        let content_length = http_body::Body::size_hint(response.body())
            .exact()
            .filter(|_| answer.is_none());
        let body = ProxiedBody::new(
            response.into_body(),
            self.settings.stream_idle_timeout,
            failure,
            BodyHealth {
                node: Arc::clone(node),
                thresholds: self.settings.health,
            },
            guard,
            tap,
            content_length,
        )
        .cut_by(Arc::clone(&self.cutoff));
        let body = match answer {
            Some(answer) => body.translated(answer),
            None => body,
        };
        builder.body(Body::new(body)).map_err(|e| AttemptFailure {
            message: format!("{}: unusable response head: {e}", node.machine_name),
            counts_against_node: false,
            timed_out: false,
            lacks_model: false,
        })
    }
}

/// `holders` split for a request: the nodes to choose from, and those tried
/// only as a last resort (out of rotation after failures, or, for an
/// embedding, having said they cannot embed). With `ollama_only`, nodes
/// speaking only OpenAI's API are left out. The candidates are borrowed, so
/// splitting touches no node's reference count.
pub fn split_candidates(
    holders: &[Candidate],
    ollama_only: bool,
    embedding: bool,
) -> (Vec<&Candidate>, Vec<&Candidate>) {
    // Sized for the usual case, where every holder can take the request.
    let mut pool = Vec::with_capacity(holders.len());
    let mut reserve = Vec::new();
    for node in holders {
        if ollama_only && node.api != ApiKind::Ollama {
            continue;
        }
        let refused = embedding && node.live.cannot_embed();
        if node.line().unhealthy() || refused {
            reserve.push(node);
        } else {
            pool.push(node);
        }
    }
    (pool, reserve)
}

/// Moves the nodes of `pool` that have `cap` requests in flight to `full`.
fn move_full<'a>(pool: &mut Vec<&'a Candidate>, full: &mut Vec<&'a Candidate>, cap: u64) {
    let mut i = 0;
    while i < pool.len() {
        if pool[i].line().in_flight() >= cap {
            full.push(pool.swap_remove(i));
        } else {
            i += 1;
        }
    }
}

/// The request for `node`: the client's method, path, headers (less the
/// connection-level ones) and body, unchanged.
/// Ollama's `/api/show` for a model only OpenAI-compatible servers hold: what is
/// known of it (they tell no family, size or template), so that Ollama UIs list it.
fn show_served_elsewhere(model: &str) -> Response {
    let body = serde_json::json!({
        "modelfile": "",
        "parameters": "",
        "template": "",
        "details": {
            "parent_model": "", "format": "", "family": "", "families": null,
            "parameter_size": "", "quantization_level": ""
        },
        "model_info": { "general.name": model },
        "capabilities": ["completion"],
    });
    let mut response = Response::new(Body::from(body.to_string()));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    response
}

/// What goes to one node instead of the client's request as it came.
struct Outgoing {
    /// Another path and body: a translation, or the model under the node's name for it.
    rewrite: Option<(PathAndQuery, Bytes)>,
    /// The Ollama endpoint translated, and the request made of it.
    translation: Option<(
        crate::translate::Endpoint,
        crate::translate::request::Translated,
    )>,
}

/// The request for `node`: translated when an Ollama request goes to a server
/// speaking OpenAI's API, and naming the model as the node does when that differs
/// from the client's name (an alias, or `tiny` for `tiny:latest`).
fn outgoing(
    node: &RoutableNode,
    request: &InferenceRequest,
    model: &str,
    aliases: &crate::aliases::ModelAliases,
) -> Result<Outgoing, String> {
    // Borrowed in the common case: no allocation per attempt without aliases.
    let held: std::borrow::Cow<'_, str> = if node.holds(model) || aliases.is_empty() {
        std::borrow::Cow::Borrowed(model)
    } else {
        aliases
            .names_of(model)
            .into_iter()
            .find(|name| node.holds(name))
            .map_or(std::borrow::Cow::Borrowed(model), std::borrow::Cow::Owned)
    };
    let served = node.served_name(&held);
    if request.flavor == ApiKind::Ollama
        && node.api == ApiKind::OpenAi
        && let Some(endpoint) = crate::translate::Endpoint::of(request.endpoint())
    {
        let translated = crate::translate::request::translate(endpoint, &request.body, served)
            .map_err(|reason| format!("cannot translate the request: {reason}"))?;
        let path = PathAndQuery::from_static(translated.upstream.path());
        return Ok(Outgoing {
            rewrite: Some((path, translated.body.clone())),
            translation: Some((endpoint, translated)),
        });
    }
    let renamed = held != model || (node.api == ApiKind::OpenAi && served != request.facts.model);
    if !renamed || served == request.facts.model {
        return Ok(Outgoing {
            rewrite: None,
            translation: None,
        });
    }
    let body = with_model(&request.body, served)?;
    Ok(Outgoing {
        rewrite: Some((request.path_and_query.clone(), body)),
        translation: None,
    })
}

/// `body` (a JSON object) naming `model` instead.
fn with_model(body: &[u8], model: &str) -> Result<Bytes, String> {
    let mut value: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(body).map_err(|e| format!("the body is not a JSON object: {e}"))?;
    value.insert("model".into(), serde_json::Value::String(model.to_owned()));
    serde_json::to_vec(&value)
        .map(Bytes::from)
        .map_err(|e| format!("cannot write the body: {e}"))
}

fn upstream_request(
    node: &RoutableNode,
    request: &InferenceRequest,
    rewrite: Option<&(PathAndQuery, Bytes)>,
) -> Result<hyper::Request<Full<Bytes>>, String> {
    let unusable = |e: &dyn std::fmt::Display| {
        format!(
            "{}: unusable URL {:?}: {e}",
            node.machine_name, node.api_url
        )
    };
    let base = node
        .base
        .as_ref()
        .ok_or_else(|| unusable(&"no scheme or host"))?;
    let path = rewrite.map_or(&request.path_and_query, |(path, _)| path);
    let uri = base.join(path).map_err(|e| unusable(&e))?;
    let mut upstream = hyper::Request::builder()
        .method(request.method.clone())
        .uri(uri);
    if let Some(headers) = upstream.headers_mut() {
        headers.reserve(request.headers.len());
        for (name, value) in &request.headers {
            if !SKIPPED_REQUEST_HEADERS.contains(name) {
                headers.append(name.clone(), value.clone());
            }
        }
        if let Some(authorization) = &node.authorization {
            headers.insert(header::AUTHORIZATION, authorization.clone());
        }
        headers.insert(HeaderName::from_static(HOP_HEADER), HOP_VALUE);
    }
    let body = rewrite.map_or_else(|| request.body.clone(), |(_, body)| body.clone());
    upstream
        .body(Full::new(body))
        .map_err(|e| format!("{}: unusable request: {e}", node.machine_name))
}

/// The pooled client for nodes. They are on the local network and are
/// called directly, never through a system proxy. https nodes must present
/// a certificate from the system's authorities or `settings.node_ca_file`.
pub fn upstream_client(settings: &ProxySettings) -> anyhow::Result<UpstreamClient> {
    Ok(pooled(upstream_connector(settings)?))
}

/// How connections to nodes are made: TCP with `TCP_NODELAY`, and TLS for
/// https nodes.
fn upstream_connector(settings: &ProxySettings) -> anyhow::Result<UpstreamConnector> {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.set_connect_timeout(Some(settings.connect_timeout));
    http.enforce_http(false);
    let tls = tls_config(settings.node_ca_file.as_deref())?;
    Ok(hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http))
}

/// A client with a pool of its own over `connector`.
fn pooled(connector: UpstreamConnector) -> UpstreamClient {
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .pool_timer(TokioTimer::new())
        .build(connector)
}

/// The system's certificate authorities, read once per process.
fn system_roots() -> &'static [rustls_pki_types::CertificateDer<'static>] {
    static ROOTS: std::sync::OnceLock<Vec<rustls_pki_types::CertificateDer<'static>>> =
        std::sync::OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        for error in &found.errors {
            tracing::warn!(%error, "could not read some of the system's certificate authorities");
        }
        found.certs
    })
}

/// TLS for https nodes: the system's authorities plus those in `ca_file`.
fn tls_config(ca_file: Option<&std::path::Path>) -> anyhow::Result<rustls::ClientConfig> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;

    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(system_roots().iter().cloned());
    if let Some(path) = ca_file {
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .with_context(|| format!("could not read the node CA file {}", path.display()))?;
        anyhow::ensure!(
            !certs.is_empty(),
            "the node CA file {} holds no PEM certificate",
            path.display()
        );
        for cert in certs {
            roots.add(cert).with_context(|| {
                format!(
                    "the node CA file {} holds an unusable certificate",
                    path.display()
                )
            })?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS set-up failed")?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// `GET url` on a node with the pooled client: the status and the body (at
/// most 8 MiB), all within `timeout`. The error says what went wrong,
/// without the URL.
pub async fn get(
    client: &UpstreamClient,
    url: &str,
    authorization: Option<&HeaderValue>,
    timeout: std::time::Duration,
) -> Result<(StatusCode, Bytes), String> {
    let uri: Uri = url.parse().map_err(|e| format!("unusable URL: {e}"))?;
    let mut request = hyper::Request::get(uri).header(HOP_HEADER, HOP_VALUE);
    if let Some(value) = authorization {
        request = request.header(header::AUTHORIZATION, value.clone());
    }
    let request = request
        .body(Full::new(Bytes::new()))
        .map_err(|e| format!("unusable request: {e}"))?;
    let exchange = async {
        let response = client
            .request(request)
            .await
            .map_err(|e| format!("request failed: {}", error_chain(&e)))?;
        let status = response.status();
        let body = Limited::new(response.into_body(), GET_BODY_LIMIT)
            .collect()
            .await
            .map_err(|e| format!("the answer broke off: {}", error_chain(&*e)))?
            .to_bytes();
        Ok((status, body))
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| format!("timed out after {:.1} s", timeout.as_secs_f64()))?
}

/// Whether an upstream error is a timeout (e.g. connecting took too long).
fn is_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(error);
    while let Some(e) = source {
        if e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        {
            return true;
        }
        source = e.source();
    }
    false
}

/// The `error` text of a node's JSON error body (either API's format), else the body itself, shortened.
/// Whether `endpoint` asks for embeddings (Ollama's or OpenAI's).
fn is_embedding(endpoint: &str) -> bool {
    matches!(
        endpoint,
        "/api/embed" | "/api/embeddings" | "/v1/embeddings"
    )
}

/// Whether an error body says the server cannot do embeddings at all
/// (llama.cpp: "model must be created with embedding=True"; vLLM: "does not
/// support embeddings"), as opposed to failing this once.
fn says_no_embeddings(body: &str) -> bool {
    let text = body.to_ascii_lowercase();
    text.contains("embedding")
        && [
            "must be",
            "not support",
            "does not support",
            "not enabled",
            "unsupported",
            "only",
        ]
        .iter()
        .any(|phrase| text.contains(phrase))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[derive(Debug)]
    struct Wrapper(std::io::Error);

    impl std::fmt::Display for Wrapper {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("connect failed")
        }
    }

    impl std::error::Error for Wrapper {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn a_timed_out_cause_anywhere_in_the_chain_is_a_timeout() {
        let timed_out = Wrapper(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "connect timeout",
        ));
        assert!(is_timeout(&timed_out));
        let refused = Wrapper(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(!is_timeout(&refused));
        assert_eq!(error_chain(&timed_out), "connect failed: connect timeout");
    }

    fn client() -> UpstreamClient {
        upstream_client(&ProxySettings::default()).unwrap()
    }

    #[tokio::test]
    async fn get_says_why_a_node_did_not_answer() {
        // Bound but never listening: connections are refused, and no other test can take the port.
        let refusing = tokio::net::TcpSocket::new_v4().unwrap();
        refusing.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let url = format!("http://{}/api/version", refusing.local_addr().unwrap());
        let err = get(&client(), &url, None, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(err.starts_with("request failed"), "{err}");
        assert!(err.to_lowercase().contains("refused"), "{err}");

        // A listener that never answers.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/api/version", silent.local_addr().unwrap());
        let err = get(&client(), &url, None, Duration::from_millis(200))
            .await
            .unwrap_err();
        assert_eq!(err, "timed out after 0.2 s");

        let err = get(&client(), "not a url", None, Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(err.starts_with("unusable URL"), "{err}");
    }

    #[test]
    fn a_server_that_cannot_embed_is_told_from_one_that_failed() {
        assert!(says_no_embeddings(
            r#"{"error":{"message":"Llama model must be created with embedding=True to call this method"}}"#
        ));
        assert!(says_no_embeddings(
            r#"{"object":"error","message":"The model does not support Embeddings API"}"#
        ));
        assert!(!says_no_embeddings(r#"{"error":"out of memory"}"#));
        assert!(!says_no_embeddings(
            r#"{"error":"embedding failed: CUDA error"}"#
        ));
        assert!(is_embedding("/v1/embeddings") && is_embedding("/api/embed"));
        assert!(!is_embedding("/api/chat"));
    }

    #[test]
    fn node_error_messages_are_read_from_either_format_and_shortened() {
        assert_eq!(node_error_message(r#"{"error":"boom"}"#), "boom");
        assert_eq!(
            node_error_message(r#"{"error":{"message":"bang","type":"x"}}"#),
            "bang"
        );
        assert_eq!(node_error_message("  "), "(empty body)");
        let long = "x".repeat(400);
        assert_eq!(node_error_message(&long).chars().count(), 301);
    }
}
