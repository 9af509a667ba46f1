//! Request statistics: a [`RequestSink`] that keeps, from every finished
//! proxied request, per-node figures for `GET /api/agents` ([`aggregate`]),
//! the coordinator's own totals for `GET /api/stats` ([`RequestTotals`])
//! and the Prometheus series of `GET /metrics` ([`prometheus`]).
//!
//! The sink runs on the request path: one short lock, a few hash lookups
//! that allocate only the first time a label set is seen, and atomic
//! increments. Node gauges (up, in flight, CPU, memory, GPU) are not kept
//! here but read from the registry at scrape time.
//!
//! Label cardinality stays bounded: a model gets its own label only when a
//! node holds it (else `other`), endpoints are the proxy's known paths (else
//! `other`), and the series of a deleted node are dropped at the next scrape
//! or node listing.

pub mod aggregate;
pub mod prometheus;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use llm_router_common::node::NodeRequestStats;
use llm_router_common::{Node, NodeId, canonical_model_name};
use parking_lot::Mutex;

use crate::proxy::record::{Outcome, RequestRecord, RequestSink, TriedNode};
use crate::registry::NodeRegistry;
use aggregate::{Aggregate, Sample};
use prometheus::{Exposition, NONE, OTHER, Observation, Series};

/// Paths the proxy serves; anything else is labelled `other`.
const ENDPOINTS: [&str; 8] = [
    "/api/chat",
    "/api/generate",
    "/api/embed",
    "/api/embeddings",
    "/api/show",
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
];

fn endpoint_label(path: &str) -> &'static str {
    ENDPOINTS
        .iter()
        .find(|e| **e == path)
        .copied()
        .unwrap_or(OTHER)
}

/// Completion tokens and the seconds spent generating them: the node's own
/// figure (Ollama's `eval_duration`), else, for a streamed answer, the time
/// from its first byte to its end.
fn generation(r: &RequestRecord) -> Option<(u64, f64)> {
    let tokens = r.usage.completion_tokens.filter(|&t| t > 0)?;
    let secs = match r.usage.generation_time {
        Some(time) => time.as_secs_f64(),
        None if r.stream => r.duration.checked_sub(r.time_to_first_byte?)?.as_secs_f64(),
        None => return None,
    };
    (secs > 0.0).then_some((tokens, secs))
}

/// Statistics of one node, in total and per model.
#[derive(Debug, Default)]
struct NodeAggregates {
    totals: Aggregate,
    models: HashMap<String, Aggregate>,
}

impl NodeAggregates {
    fn model(&mut self, model: &str) -> &mut Aggregate {
        if !self.models.contains_key(model) {
            self.models.insert(model.to_owned(), Aggregate::default());
        }
        self.models.get_mut(model).expect("inserted above")
    }

    fn view(&self) -> NodeRequestStats {
        NodeRequestStats {
            totals: self.totals.view(),
            models: self
                .models
                .iter()
                .map(|(name, agg)| (name.clone(), agg.view()))
                .collect(),
        }
    }
}

/// What the coordinator received since it started, whether a node answered or not:
/// the same requests the history records, counted as its per-minute buckets count
/// them, so that a window of the history and these totals count alike.
///
/// The nodes' statistics differ on purpose: they count attempts on each node (a
/// request retried on a second node counts on both) and never a refused request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct RequestTotals {
    /// When counting began (the coordinator's start).
    pub since: DateTime<Utc>,
    /// Every inference request that reached the proxy.
    pub requests: u64,
    /// Those answered with a status of 400 or more, or that broke off mid-answer
    /// (the history's `errors`).
    pub errors: u64,
    /// Those the router refused without a node's answer: admission limits, no node for
    /// the model, bad input, shutting down.
    pub rejected: u64,
}

impl RequestTotals {
    fn new() -> Self {
        Self {
            since: Utc::now(),
            requests: 0,
            errors: 0,
            rejected: 0,
        }
    }

    fn add(&mut self, r: &RequestRecord) {
        self.requests += 1;
        if r.status >= 400 || r.outcome == Outcome::Failed {
            self.errors += 1;
        }
        if r.outcome == Outcome::Rejected {
            self.rejected += 1;
        }
    }
}

#[derive(Debug)]
struct Inner {
    nodes: HashMap<NodeId, NodeAggregates>,
    series: Series,
    totals: RequestTotals,
}

impl Default for Inner {
    fn default() -> Self {
        Self {
            nodes: HashMap::default(),
            series: Series::default(),
            totals: RequestTotals::new(),
        }
    }
}

/// The statistics of one coordinator. Add it to the proxy's sinks.
#[derive(Debug)]
pub struct Stats {
    registry: Arc<NodeRegistry>,
    exposition: Exposition,
    inner: Mutex<Inner>,
}

impl Stats {
    pub fn new(registry: Arc<NodeRegistry>) -> Self {
        Self {
            exposition: Exposition::new(Arc::clone(&registry)),
            registry,
            inner: Mutex::default(),
        }
    }

    /// The counters placement updates, exported with the rest.
    pub fn placement_counters(&self) -> crate::placement::PlacementCounters {
        self.exposition.families.placement.clone()
    }

    /// The statistics of node `id` (zeros before its first request).
    pub fn node(&self, id: NodeId) -> NodeRequestStats {
        self.inner
            .lock()
            .nodes
            .get(&id)
            .map(NodeAggregates::view)
            .unwrap_or_default()
    }

    /// Requests received since the coordinator started, refused ones included.
    pub fn totals(&self) -> RequestTotals {
        self.inner.lock().totals
    }

    /// Sets `stats` on one node.
    pub fn annotate(&self, node: &mut Node) {
        node.stats = Some(self.node(node.facts.id));
    }

    /// Sets `stats` on every node of a full listing, and forgets the
    /// statistics of nodes that are no longer in it.
    pub fn annotate_all(&self, nodes: &mut [Node]) {
        let mut inner = self.inner.lock();
        let ids: HashSet<NodeId> = nodes.iter().map(|n| n.facts.id).collect();
        inner.nodes.retain(|id, _| ids.contains(id));
        for node in nodes {
            node.stats = Some(
                inner
                    .nodes
                    .get(&node.facts.id)
                    .map(NodeAggregates::view)
                    .unwrap_or_default(),
            );
        }
    }

    /// `GET /metrics`: every metric in the Prometheus text format.
    pub fn prometheus_text(&self) -> String {
        let nodes = self.registry.list();
        {
            let mut inner = self.inner.lock();
            let ids: HashSet<NodeId> = nodes.iter().map(|n| n.facts.id).collect();
            inner.nodes.retain(|id, _| ids.contains(id));
            let names: HashSet<&str> = nodes
                .iter()
                .map(|n| n.facts.machine_name.as_str())
                .collect();
            inner.series.retain_nodes(&self.exposition.families, &names);
        }
        self.exposition.encode()
    }
}

impl RequestSink for Stats {
    fn record(&self, r: &RequestRecord) {
        let snapshot = self.registry.snapshot();
        let canonical = (!r.model.trim().is_empty()).then(|| canonical_model_name(&r.model));
        let model = match &canonical {
            None => NONE,
            // A node was chosen for it, so a node held it.
            Some(m) if r.node_id.is_some() || snapshot.nodes.iter().any(|n| n.holds(m)) => m,
            Some(_) => OTHER,
        };
        let answered = r.outcome != Outcome::Rejected;
        let ttft = r.time_to_first_byte.filter(|_| r.stream && answered);
        // Nodes tried before the one that answered, or all of them when none did.
        let failed_attempts: &[TriedNode] = match (r.node_id, r.nodes_tried.split_last()) {
            (Some(_), Some((_, before))) => before,
            (Some(_), None) => &[],
            (None, _) => &r.nodes_tried,
        };
        let observation = Observation {
            endpoint: endpoint_label(&r.endpoint),
            model,
            node: r.node_name.as_deref().unwrap_or(NONE),
            status: r.status,
            outcome: r.outcome,
            duration: answered.then_some(r.duration.as_secs_f64()),
            ttft: ttft.map(|t| t.as_secs_f64()),
            prompt_tokens: r.usage.prompt_tokens,
            completion_tokens: r.usage.completion_tokens,
        };
        let sample = Sample {
            ok: r.outcome == Outcome::Completed && (200..300).contains(&r.status),
            duration: r.duration,
            ttft,
            generation: generation(r),
        };

        let families = &self.exposition.families;
        let mut inner = self.inner.lock();
        inner.totals.add(r);
        inner.series.observe(families, &observation);
        if let Some(id) = r.node_id {
            let node = inner.nodes.entry(id).or_default();
            node.totals.add(&sample);
            node.model(model).add(&sample);
        }
        for tried in failed_attempts {
            inner.series.attempt_failed(families, &tried.name);
            let node = inner.nodes.entry(tried.id).or_default();
            node.totals.add_failed_attempt();
            node.model(model).add_failed_attempt();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use llm_router_common::ApiKind;

    use super::*;

    fn request(status: u16, outcome: Outcome, node: Option<NodeId>) -> RequestRecord {
        RequestRecord {
            request_id: "r".into(),
            started_at: Utc::now(),
            client_ip: None,
            api_key: None,
            flavor: ApiKind::Ollama,
            method: axum::http::Method::POST,
            endpoint: "/api/chat".into(),
            model: "m".into(),
            stream: false,
            node_id: node,
            node_name: None,
            nodes_tried: Vec::new(),
            status,
            outcome,
            duration: Duration::from_millis(5),
            time_to_first_byte: None,
            usage: Default::default(),
            request_body: Bytes::new(),
            response_body: Bytes::new(),
            response_bytes_dropped: 0,
            error: None,
        }
    }

    #[test]
    fn totals_count_refused_requests_and_errors_as_the_history_does() {
        let node = Some(NodeId::new_v4());
        let mut totals = RequestTotals::new();
        for r in [
            request(200, Outcome::Completed, node),
            // Admission refused it: no node saw it, yet a client sent it.
            request(503, Outcome::Rejected, None),
            request(404, Outcome::Rejected, None),
            // Broke off after a 200 had been sent.
            request(200, Outcome::Failed, node),
            request(200, Outcome::Cancelled, node),
        ] {
            totals.add(&r);
        }
        assert_eq!((totals.requests, totals.errors, totals.rejected), (5, 3, 2));
    }
}
