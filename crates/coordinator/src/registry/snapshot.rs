//! The immutable view of routable nodes that the request path reads.
//!
//! Writers (registration, heartbeats, health changes) mark it out of date and
//! the next reader builds a new [`RoutableSnapshot`], published with
//! `ArcSwap`; a request does one `load()`, then reads its candidates' load
//! from their lines of the [load table](super::load) and, for the policies
//! that weigh speed or resident models, their [`NodeLive`] (atomics and
//! `ArcSwap`s; no lock either way).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use axum::http::HeaderValue;
use axum::http::uri::{Authority, PathAndQuery, Scheme, Uri};
use llm_router_common::{ApiKind, NodeId, canonical_model_name};

pub use super::live::{InFlightGuard, NodeLive};
use super::load::NodeLoad;

/// What routing needs to know about one online node.
#[derive(Debug, Default)]
pub struct RoutableNode {
    pub id: NodeId,
    pub machine_name: String,
    /// Base URL of the node's inference API, without a trailing slash.
    pub api_url: String,
    /// The API the node speaks. Every node answers the OpenAI-compatible one
    /// (`/v1/...`): Ollama does too; only Ollama nodes answer `/api/...`.
    pub api: ApiKind,
    /// Canonical names (`name:tag`) of the models the node holds.
    pub models: HashSet<String>,
    /// Canonical names of the models loaded in memory.
    pub loaded_models: HashSet<String>,
    /// The name the server lists a model under, by canonical name, where the two
    /// differ (an OpenAI-style server's `tiny` is `tiny:latest` here): what a
    /// request forwarded to it must name.
    pub served_names: std::collections::HashMap<String, String>,
    /// `Authorization` the proxy sends to this node (its own API key), never the client's.
    pub authorization: Option<HeaderValue>,
    /// `api_url` taken apart once, so that each attempt only joins it with the
    /// request's path; `None` when it is not a usable URL.
    pub base: Option<ApiBase>,
    /// `machine_name` as the header value that names the node on its answers.
    pub name_header: Option<HeaderValue>,
    pub live: Arc<NodeLive>,
}

/// The scheme, authority and path prefix of a node's API URL.
#[derive(Debug, Clone)]
pub struct ApiBase {
    scheme: Scheme,
    authority: Authority,
    /// Path before the API's own (`/ollama` of `http://host/ollama`), no trailing slash.
    prefix: String,
}

impl ApiBase {
    /// `url` taken apart, or `None` when it lacks a scheme or host.
    pub fn parse(url: &str) -> Option<Self> {
        let uri: Uri = url.parse().ok()?;
        let parts = uri.into_parts();
        Some(Self {
            scheme: parts.scheme?,
            authority: parts.authority?,
            prefix: parts
                .path_and_query
                .map(|pq| pq.path().trim_end_matches('/').to_owned())
                .unwrap_or_default(),
        })
    }

    /// The URI of `path_and_query` on this node.
    pub fn join(&self, path_and_query: &PathAndQuery) -> Result<Uri, axum::http::Error> {
        let path_and_query = if self.prefix.is_empty() {
            path_and_query.clone()
        } else {
            PathAndQuery::try_from(format!("{}{path_and_query}", self.prefix))?
        };
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(path_and_query)
            .build()
    }
}

impl RoutableNode {
    pub fn holds(&self, canonical_model: &str) -> bool {
        self.models.contains(canonical_model)
    }

    /// The name this node's server knows `canonical_model` by.
    pub fn served_name<'a>(&'a self, canonical_model: &'a str) -> &'a str {
        self.served_names
            .get(canonical_model)
            .map_or(canonical_model, String::as_str)
    }
}

/// A node as placement sees it: the node, and its line of the
/// [load table](super::load) at hand, so that a policy weighing thousands of
/// candidates reads their load from adjacent lines instead of through each
/// node. It dereferences to the node.
#[derive(Debug, Clone)]
pub struct Candidate {
    node: Arc<RoutableNode>,
    /// `node`'s line, which stays its own while `node` is held here.
    line: &'static NodeLoad,
}

impl Candidate {
    pub fn new(node: Arc<RoutableNode>) -> Self {
        let line = node.live.load_line();
        Self { node, line }
    }

    pub fn node(&self) -> &Arc<RoutableNode> {
        &self.node
    }

    /// The node's load: in flight, slots, CPU and memory, health.
    pub fn line(&self) -> &NodeLoad {
        self.line
    }

    /// Where the line is: lists sorted by it scan the table in memory order.
    fn line_address(&self) -> usize {
        std::ptr::from_ref(self.line).addr()
    }
}

impl std::ops::Deref for Candidate {
    type Target = RoutableNode;

    fn deref(&self) -> &RoutableNode {
        &self.node
    }
}

/// Every node that may receive new requests right now, and per model the
/// ones that hold it, so a request finds its candidates with one lookup
/// instead of a pass over the fleet.
#[derive(Debug, Default)]
pub struct RoutableSnapshot {
    pub nodes: Vec<Arc<RoutableNode>>,
    /// Per model (canonical name), the nodes holding it, in the order of
    /// their load lines in memory.
    by_model: HashMap<String, Vec<Candidate>>,
}

impl RoutableSnapshot {
    pub fn new(nodes: Vec<Arc<RoutableNode>>) -> Self {
        let mut by_model: HashMap<String, Vec<Candidate>> = HashMap::new();
        for node in &nodes {
            for model in &node.models {
                let candidate = Candidate::new(Arc::clone(node));
                match by_model.get_mut(model.as_str()) {
                    Some(holders) => holders.push(candidate),
                    None => {
                        by_model.insert(model.clone(), vec![candidate]);
                    }
                }
            }
        }
        // Nodes are listed by id (random), their lines by when they
        // registered: in line order, a policy's scan reads the table forward.
        for holders in by_model.values_mut() {
            holders.sort_unstable_by_key(Candidate::line_address);
        }
        Self { nodes, by_model }
    }

    /// Online nodes that hold `canonical_model`.
    pub fn holders(&self, canonical_model: &str) -> &[Candidate] {
        self.by_model
            .get(canonical_model)
            .map_or(&[], Vec::as_slice)
    }

    /// Online nodes that hold `model` (any spelling Ollama accepts).
    pub fn candidates_for(&self, model: &str) -> &[Candidate] {
        self.holders(&canonical_model_name(model))
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_match_model_names_with_and_without_latest_tag() {
        let node = |name: &str, models: &[&str]| {
            Arc::new(RoutableNode {
                id: NodeId::new_v4(),
                machine_name: name.into(),
                api_url: format!("http://{name}"),
                api: ApiKind::Ollama,
                models: models.iter().map(|m| canonical_model_name(m)).collect(),
                loaded_models: HashSet::new(),
                served_names: Default::default(),
                authorization: None,
                base: None,
                name_header: None,
                live: Arc::default(),
            })
        };
        let snapshot =
            RoutableSnapshot::new(vec![node("a", &["llama3.2"]), node("b", &["qwen2.5:7b"])]);
        let names = |model: &str| {
            snapshot
                .candidates_for(model)
                .iter()
                .map(|n| n.machine_name.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(names("llama3.2:latest"), ["a"]);
        assert_eq!(names("llama3.2"), ["a"]);
        assert_eq!(names("qwen2.5:7b"), ["b"]);
        assert!(names("qwen2.5").is_empty());
    }

    #[test]
    fn a_models_candidates_are_listed_in_the_order_of_their_load_lines() {
        let nodes: Vec<Arc<RoutableNode>> = (0..20)
            .map(|i| {
                Arc::new(RoutableNode {
                    id: NodeId::new_v4(),
                    machine_name: format!("n{i}"),
                    models: HashSet::from(["m:latest".to_owned()]),
                    live: Arc::default(),
                    ..RoutableNode::default()
                })
            })
            .collect();
        // Given newest first: left in that order, the lines (mostly handed
        // out in order) would run backwards.
        let snapshot = RoutableSnapshot::new(nodes.into_iter().rev().collect());
        let addresses: Vec<usize> = snapshot
            .holders("m:latest")
            .iter()
            .map(Candidate::line_address)
            .collect();
        assert_eq!(addresses.len(), 20);
        assert!(addresses.is_sorted(), "{addresses:?}");
    }

    #[test]
    fn an_api_base_joins_the_request_path_after_its_own() {
        let pq = |s: &'static str| PathAndQuery::from_static(s);
        let plain = ApiBase::parse("http://10.0.0.5:11434").unwrap();
        assert_eq!(
            plain.join(&pq("/api/chat?x=1")).unwrap().to_string(),
            "http://10.0.0.5:11434/api/chat?x=1"
        );
        let prefixed = ApiBase::parse("https://gpu.example/ollama/").unwrap();
        assert_eq!(
            prefixed.join(&pq("/v1/models")).unwrap().to_string(),
            "https://gpu.example/ollama/v1/models"
        );
        assert!(ApiBase::parse("not a url").is_none());
        assert!(ApiBase::parse("/relative/only").is_none());
    }
}
