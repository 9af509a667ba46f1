//! The immutable view of routable nodes that the request path reads.
//!
//! Writers (registration, heartbeats, health changes) mark it out of date and
//! the next reader builds a new [`RoutableSnapshot`], published with
//! `ArcSwap`; a request does one `load()`, then reads each node's live state
//! ([`NodeLive`]: atomics, plus the short resident-models lock).

use std::collections::HashSet;
use std::sync::Arc;

use llm_router_common::{ApiKind, NodeId, canonical_model_name};

pub use super::live::{InFlightGuard, NodeLive};

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
    /// `Authorization` the proxy sends to this node (its own API key), never the client's.
    pub authorization: Option<axum::http::HeaderValue>,
    pub live: Arc<NodeLive>,
}

impl RoutableNode {
    pub fn holds(&self, canonical_model: &str) -> bool {
        self.models.contains(canonical_model)
    }
}

/// Every node that may receive new requests right now.
#[derive(Debug, Default)]
pub struct RoutableSnapshot {
    pub nodes: Vec<Arc<RoutableNode>>,
}

impl RoutableSnapshot {
    /// Online nodes that hold `model` (any spelling Ollama accepts).
    pub fn candidates_for<'a>(
        &'a self,
        model: &str,
    ) -> impl Iterator<Item = &'a Arc<RoutableNode>> {
        let wanted = canonical_model_name(model);
        self.nodes.iter().filter(move |node| node.holds(&wanted))
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
                authorization: None,
                live: Arc::default(),
            })
        };
        let snapshot = RoutableSnapshot {
            nodes: vec![node("a", &["llama3.2"]), node("b", &["qwen2.5:7b"])],
        };
        let names = |model: &str| {
            snapshot
                .candidates_for(model)
                .map(|n| n.machine_name.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(names("llama3.2:latest"), ["a"]);
        assert_eq!(names("llama3.2"), ["a"]);
        assert_eq!(names("qwen2.5:7b"), ["b"]);
        assert!(names("qwen2.5").is_empty());
    }
}
