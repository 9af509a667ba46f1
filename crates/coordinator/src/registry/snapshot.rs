//! The immutable view of routable nodes that the request path reads.
//!
//! Writers (registration, heartbeats, health changes) build a new
//! [`RoutableSnapshot`] and publish it with `ArcSwap`; a request does one
//! `load()` and then only touches atomics.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use llm_router_common::{NodeId, canonical_model_name};

/// Counters of a node that change on every request, shared by the registry
/// and every snapshot the node appears in.
#[derive(Debug)]
pub struct NodeLive {
    in_flight: AtomicU64,
    /// Reference point for the millisecond clock below.
    epoch: Instant,
    /// Until when (ms after `epoch`) the node is kept out of rotation after a
    /// connection failure; 0 when healthy.
    cooling_until_ms: AtomicU64,
}

impl Default for NodeLive {
    fn default() -> Self {
        Self {
            in_flight: AtomicU64::new(0),
            epoch: Instant::now(),
            cooling_until_ms: AtomicU64::new(0),
        }
    }
}

impl NodeLive {
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    fn millis(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_millis() as u64
    }

    /// Whether the node failed recently and should only be tried as a last resort.
    pub fn is_cooling(&self, now: Instant) -> bool {
        let until = self.cooling_until_ms.load(Ordering::Relaxed);
        until != 0 && self.millis(now) < until
    }

    /// Records that the node could not be reached: it gets no traffic for
    /// `cooldown` unless every other node fails too. Returns true when the
    /// node was healthy before (so the caller logs the change once).
    pub fn mark_unreachable(&self, now: Instant, cooldown: Duration) -> bool {
        let until = self.millis(now) + cooldown.as_millis().max(1) as u64;
        self.cooling_until_ms.swap(until, Ordering::Relaxed) == 0
    }

    /// Records that the node answered. Returns true when it was cooling.
    pub fn mark_reachable(&self) -> bool {
        // The common case (already healthy) is a plain load, not a write.
        self.cooling_until_ms.load(Ordering::Relaxed) != 0
            && self.cooling_until_ms.swap(0, Ordering::Relaxed) != 0
    }

    /// Counts a request as in flight until the returned guard is dropped.
    pub fn start_request(self: &Arc<Self>) -> InFlightGuard {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlightGuard {
            live: Arc::clone(self),
        }
    }
}

/// Decrements the node's in-flight count exactly once, when dropped; it can
/// therefore never go below zero.
#[derive(Debug)]
pub struct InFlightGuard {
    live: Arc<NodeLive>,
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.live.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What routing needs to know about one online node.
#[derive(Debug)]
pub struct RoutableNode {
    pub id: NodeId,
    pub machine_name: String,
    /// Base URL of the node's inference API, without a trailing slash.
    pub api_url: String,
    /// Canonical names (`name:tag`) of the models the node holds.
    pub models: HashSet<String>,
    /// Canonical names of the models loaded in memory.
    pub loaded_models: HashSet<String>,
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
    fn in_flight_guard_counts_until_dropped() {
        let live = Arc::new(NodeLive::default());
        let first = live.start_request();
        let second = live.start_request();
        assert_eq!(live.in_flight(), 2);
        drop(first);
        assert_eq!(live.in_flight(), 1);
        drop(second);
        assert_eq!(live.in_flight(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn unreachable_node_cools_down_then_returns() {
        let live = NodeLive::default();
        assert!(!live.is_cooling(Instant::now()));
        assert!(live.mark_unreachable(Instant::now(), Duration::from_secs(10)));
        assert!(!live.mark_unreachable(Instant::now(), Duration::from_secs(10)));
        assert!(live.is_cooling(Instant::now()));
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(!live.is_cooling(Instant::now()));
        assert!(live.mark_reachable());
        assert!(!live.mark_reachable());
    }

    #[test]
    fn candidates_match_model_names_with_and_without_latest_tag() {
        let node = |name: &str, models: &[&str]| {
            Arc::new(RoutableNode {
                id: NodeId::new_v4(),
                machine_name: name.into(),
                api_url: format!("http://{name}"),
                models: models.iter().map(|m| canonical_model_name(m)).collect(),
                loaded_models: HashSet::new(),
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
