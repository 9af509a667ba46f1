//! The Prometheus side of the statistics: request families updated by the
//! sink, node gauges read from the registry at scrape time, and the text
//! exposition (format 0.0.4) of `GET /metrics`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use llm_router_common::{Node, NodeStatus};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::placement::PlacementCounters;
use crate::proxy::record::Outcome;
use crate::registry::NodeRegistry;

/// `Content-Type` of the exposition.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Label of requests no node took part in, and of models nobody asked by name.
pub const NONE: &str = "none";
/// Label of models no node holds, so that clients cannot add series at will.
pub const OTHER: &str = "other";

/// Request duration buckets, seconds: generation can take minutes.
const DURATION_BUCKETS: [f64; 15] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];
/// Time to first token buckets, seconds (a model load can take a while).
const TTFT_BUCKETS: [f64; 13] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub endpoint: &'static str,
    pub model: String,
    pub node: String,
    pub status: u16,
    pub outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DurationLabels {
    pub endpoint: &'static str,
    pub model: String,
    pub node: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelNodeLabels {
    pub model: String,
    pub node: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenLabels {
    pub model: String,
    pub node: String,
    pub kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeLabels {
    pub node: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

fn ttft_histogram() -> Histogram {
    Histogram::new(TTFT_BUCKETS)
}

/// The request metric families; cheap to clone (shared handles).
#[derive(Debug, Clone)]
pub struct Families {
    pub requests: Family<RequestLabels, Counter>,
    pub duration: HistogramFamily<DurationLabels>,
    pub ttft: HistogramFamily<ModelNodeLabels>,
    pub tokens: Family<TokenLabels, Counter>,
    pub attempt_failures: Family<NodeLabels, Counter>,
    /// Plan changes and pre-loads, counted by [`crate::placement`].
    pub placement: PlacementCounters,
}

impl Families {
    fn new() -> Self {
        Self {
            requests: Family::default(),
            duration: Family::new_with_constructor(duration_histogram as fn() -> Histogram),
            ttft: Family::new_with_constructor(ttft_histogram as fn() -> Histogram),
            tokens: Family::default(),
            attempt_failures: Family::default(),
            placement: PlacementCounters::default(),
        }
    }
}

/// The handles of one (model, node) pair, fetched from the families once so
/// that a request only touches atomics afterwards.
#[derive(Debug, Default)]
pub struct ModelSeries {
    /// By (endpoint, status, outcome).
    requests: HashMap<(&'static str, u16, &'static str), Counter>,
    duration: HashMap<&'static str, Histogram>,
    ttft: Option<Histogram>,
    prompt_tokens: Option<Counter>,
    completion_tokens: Option<Counter>,
}

/// Every series of one node label.
#[derive(Debug, Default)]
pub struct NodeSeries {
    models: HashMap<String, ModelSeries>,
    attempt_failures: Option<Counter>,
}

/// `map[key]`, created when missing; allocates only then.
fn slot<'a, V: Default>(map: &'a mut HashMap<String, V>, key: &str) -> &'a mut V {
    if !map.contains_key(key) {
        map.insert(key.to_owned(), V::default());
    }
    map.get_mut(key).expect("inserted above")
}

/// What one finished request adds to the request families.
#[derive(Debug, Clone, Copy)]
pub struct Observation<'a> {
    pub endpoint: &'static str,
    pub model: &'a str,
    pub node: &'a str,
    pub status: u16,
    pub outcome: Outcome,
    /// Seconds from arrival to the end, for requests a node answered.
    pub duration: Option<f64>,
    /// Seconds to the first byte of a streamed answer.
    pub ttft: Option<f64>,
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
}

/// The request series by node label; lives under the stats lock.
#[derive(Debug, Default)]
pub struct Series {
    nodes: HashMap<String, NodeSeries>,
}

impl Series {
    pub fn observe(&mut self, families: &Families, o: &Observation<'_>) {
        let node = slot(&mut self.nodes, o.node);
        let series = slot(&mut node.models, o.model);
        series
            .requests
            .entry((o.endpoint, o.status, o.outcome.as_str()))
            .or_insert_with(|| {
                families.requests.get_or_create_owned(&RequestLabels {
                    endpoint: o.endpoint,
                    model: o.model.to_owned(),
                    node: o.node.to_owned(),
                    status: o.status,
                    outcome: o.outcome.as_str(),
                })
            })
            .inc();
        if let Some(secs) = o.duration {
            series
                .duration
                .entry(o.endpoint)
                .or_insert_with(|| {
                    families.duration.get_or_create_owned(&DurationLabels {
                        endpoint: o.endpoint,
                        model: o.model.to_owned(),
                        node: o.node.to_owned(),
                    })
                })
                .observe(secs);
        }
        if let Some(secs) = o.ttft {
            series
                .ttft
                .get_or_insert_with(|| {
                    families.ttft.get_or_create_owned(&ModelNodeLabels {
                        model: o.model.to_owned(),
                        node: o.node.to_owned(),
                    })
                })
                .observe(secs);
        }
        for (count, slot, kind) in [
            (o.prompt_tokens, &mut series.prompt_tokens, "prompt"),
            (
                o.completion_tokens,
                &mut series.completion_tokens,
                "completion",
            ),
        ] {
            if let Some(count) = count.filter(|&c| c > 0) {
                slot.get_or_insert_with(|| {
                    families.tokens.get_or_create_owned(&TokenLabels {
                        model: o.model.to_owned(),
                        node: o.node.to_owned(),
                        kind,
                    })
                })
                .inc_by(count);
            }
        }
    }

    /// Counts an attempt on `node` that failed before its answer reached the client.
    pub fn attempt_failed(&mut self, families: &Families, node: &str) {
        slot(&mut self.nodes, node)
            .attempt_failures
            .get_or_insert_with(|| {
                families.attempt_failures.get_or_create_owned(&NodeLabels {
                    node: node.to_owned(),
                })
            })
            .inc();
    }

    /// Drops the series of node labels that are neither `none` nor in `names`
    /// (nodes that were deleted).
    pub fn retain_nodes(&mut self, families: &Families, names: &HashSet<&str>) {
        self.nodes.retain(|node, series| {
            if node == NONE || names.contains(node.as_str()) {
                return true;
            }
            forget(families, node, series);
            false
        });
    }
}

/// Removes every series of `node` from the families.
fn forget(families: &Families, node: &str, series: &NodeSeries) {
    for (model, s) in &series.models {
        for &(endpoint, status, outcome) in s.requests.keys() {
            families.requests.remove(&RequestLabels {
                endpoint,
                model: model.clone(),
                node: node.to_owned(),
                status,
                outcome,
            });
        }
        for &endpoint in s.duration.keys() {
            families.duration.remove(&DurationLabels {
                endpoint,
                model: model.clone(),
                node: node.to_owned(),
            });
        }
        let pair = ModelNodeLabels {
            model: model.clone(),
            node: node.to_owned(),
        };
        families.ttft.remove(&pair);
        for kind in ["prompt", "completion"] {
            families.tokens.remove(&TokenLabels {
                model: model.clone(),
                node: node.to_owned(),
                kind,
            });
        }
    }
    families.attempt_failures.remove(&NodeLabels {
        node: node.to_owned(),
    });
}

/// The registry to encode: request families plus the fleet gauges.
pub fn build_registry(families: &Families, nodes: Arc<NodeRegistry>) -> Registry {
    let mut registry = Registry::default();
    registry.register(
        "llm_router_requests",
        "Inference requests answered, by endpoint, model (\"other\" when no node holds it), node (\"none\" when none was tried), HTTP status and outcome (completed, rejected, failed, cancelled, cut)",
        families.requests.clone(),
    );
    registry.register(
        "llm_router_request_duration_seconds",
        "Time from a request's arrival to the last byte of a node's answer",
        families.duration.clone(),
    );
    registry.register(
        "llm_router_time_to_first_token_seconds",
        "Time from a streamed request's arrival to the first byte of the node's answer",
        families.ttft.clone(),
    );
    registry.register(
        "llm_router_tokens",
        "Tokens processed, as the nodes reported them: kind=prompt (evaluated) or completion (generated)",
        families.tokens.clone(),
    );
    registry.register(
        "llm_router_node_attempt_failures",
        "Attempts on a node that failed before its answer reached the client (unreachable, timeout, 5xx, model missing); the request went to another node or was answered with an error",
        families.attempt_failures.clone(),
    );
    registry.register(
        "llm_router_placement_plan_changes",
        "Times the placement plan moved a model to or from a node",
        families.placement.plan_changes.clone(),
    );
    registry.register(
        "llm_router_placement_preloads",
        "Models loaded on a node ahead of its traffic because the placement plan gave it them",
        families.placement.preloads.clone(),
    );
    registry.register_collector(Box::new(FleetCollector { registry: nodes }));
    registry
}

/// Node gauges, read from the registry at every scrape.
#[derive(Debug)]
struct FleetCollector {
    registry: Arc<NodeRegistry>,
}

/// One gauge per node label, or per (node, GPU).
fn encode_gauge<'a, L: EncodeLabelSet + 'a>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    values: impl IntoIterator<Item = (L, f64)>,
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in values {
        metric.encode_family(&labels)?.encode_gauge(&value)?;
    }
    Ok(())
}

/// The `node` label of every node: its machine name, made unique with part of
/// its id when two nodes share one (two inference servers on one machine).
pub fn node_labels(nodes: &[Node]) -> Vec<String> {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for node in nodes {
        *seen.entry(node.facts.machine_name.as_str()).or_default() += 1;
    }
    let mut first = HashSet::new();
    nodes
        .iter()
        .map(|node| {
            let name = node.facts.machine_name.as_str();
            if seen[name] > 1 && !first.insert(name) {
                let id = node.facts.id.simple().to_string();
                format!("{name}#{}", &id[..8])
            } else {
                name.to_owned()
            }
        })
        .collect()
}

impl Collector for FleetCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let nodes = self.registry.list();
        let labels = node_labels(&nodes);
        let per_node = |value: fn(&Node) -> Option<f64>| {
            nodes.iter().zip(&labels).filter_map(move |(node, label)| {
                value(node).map(|v| ([("node", label.as_str())], v))
            })
        };
        encode_gauge(
            &mut encoder,
            "llm_router_node_up",
            "1 while the node is online (heartbeats arrive, inference server reachable, not draining), else 0",
            per_node(|n| Some(f64::from(u8::from(n.status == NodeStatus::Online)))),
        )?;
        encode_gauge(
            &mut encoder,
            "llm_router_in_flight_requests",
            "Requests being proxied to the node right now",
            per_node(|n| Some(n.in_flight as f64)),
        )?;
        encode_gauge(
            &mut encoder,
            "llm_router_node_cpu_percent",
            "CPU use of the node at its last heartbeat, percent",
            per_node(|n| n.metrics.as_ref().map(|m| f64::from(m.cpu_percent))),
        )?;
        encode_gauge(
            &mut encoder,
            "llm_router_node_memory_percent",
            "Memory use of the node at its last heartbeat, percent",
            per_node(|n| n.metrics.as_ref().map(|m| f64::from(m.memory_percent))),
        )?;
        let gpus = || {
            nodes.iter().zip(&labels).flat_map(|(node, label)| {
                node.metrics
                    .iter()
                    .flat_map(|m| &m.gpus)
                    .map(move |gpu| (label.as_str(), gpu.index.to_string(), gpu))
            })
        };
        encode_gauge(
            &mut encoder,
            "llm_router_node_gpu_utilization_percent",
            "GPU use at the node's last heartbeat, percent",
            gpus().filter_map(|(node, index, gpu)| {
                let value = f64::from(gpu.utilization_percent?);
                Some(([("node", node.to_owned()), ("gpu", index)], value))
            }),
        )?;
        encode_gauge(
            &mut encoder,
            "llm_router_node_gpu_memory_used_bytes",
            "GPU memory in use at the node's last heartbeat, bytes",
            gpus().filter_map(|(node, index, gpu)| {
                let value = gpu.memory_used_bytes? as f64;
                Some(([("node", node.to_owned()), ("gpu", index)], value))
            }),
        )?;
        let snapshot = self.registry.snapshot();
        let cold_loads: HashMap<_, u64> = snapshot
            .nodes
            .iter()
            .map(|n| (n.id, n.live.cold_loads()))
            .collect();
        let mut cold = encoder.encode_descriptor(
            "llm_router_node_cold_loads",
            "Requests sent to a node for a model it did not have in memory (each one waits for a load), since the node registered",
            None,
            MetricType::Counter,
        )?;
        for (node, label) in nodes.iter().zip(&labels) {
            if let Some(count) = cold_loads.get(&node.facts.id) {
                cold.encode_family(&[("node", label.as_str())])?
                    .encode_counter::<NoLabelSet, _, u64>(count, None)?;
            }
        }
        let count = |status: NodeStatus| nodes.iter().filter(|n| n.status == status).count();
        encode_gauge(
            &mut encoder,
            "llm_router_nodes",
            "Registered nodes by status",
            [
                NodeStatus::Online,
                NodeStatus::Draining,
                NodeStatus::Offline,
            ]
            .map(|status| ([("status", status.as_str())], count(status) as f64)),
        )?;
        Ok(())
    }
}

/// Families and registry, built once per coordinator.
#[derive(Debug)]
pub struct Exposition {
    pub families: Families,
    registry: Registry,
}

impl Exposition {
    pub fn new(nodes: Arc<NodeRegistry>) -> Self {
        let families = Families::new();
        let registry = build_registry(&families, nodes);
        Self { families, registry }
    }

    /// The text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::with_capacity(16 * 1024);
        prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}
