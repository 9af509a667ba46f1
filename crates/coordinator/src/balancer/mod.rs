//! Load-balancing policies: given the candidates for a request (online,
//! healthy nodes that hold its model) and what the request says, pick one.
//!
//! One small trait, one file per policy, built from [`BalancerMode`] by
//! [`build`]. Policies read only the immutable snapshot and per-node atomics,
//! never a lock of the registry: each [`Candidate`] carries its node's line
//! of the [load table](crate::registry::load), so the policies that weigh
//! load alone read adjacent cache lines, and `auto` and `latency` read speeds
//! and resident models from the node's [`NodeLive`](crate::registry::NodeLive).
//!
//! - [`round_robin`]: each request to the next node in turn;
//! - [`least_connections`]: fewest requests in flight;
//! - [`metrics`]: the seed's score, cpu% + memory% + 10 × in flight;
//! - [`latency`]: power of two choices on observed speed;
//! - [`auto`]: soonest estimated finish, weighing model loads and evictions.

pub mod auto;
pub mod latency;
pub mod least_connections;
pub mod metrics;
pub mod round_robin;

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use arc_swap::ArcSwap;
use llm_router_common::NodeId;
use tokio::time::Instant;

use crate::config::BalancerMode;
use crate::registry::Candidate;

/// What a policy knows about the request it places.
#[derive(Debug, Clone, Copy)]
pub struct Placement<'a> {
    /// The model's canonical name (`name:tag`).
    pub model: &'a str,
    pub now: Instant,
    /// The nodes the placement plan gives this model, when there is a plan
    /// for it (see [`crate::placement`]); `auto` follows it.
    pub planned: Option<&'a NodeSet>,
    /// The nodes the plan gives any model, when there is a plan.
    pub assigned: Option<&'a NodeSet>,
}

/// A set of nodes. `auto` looks every candidate up in two, so the hash is a
/// fast one (foldhash, seeded per process) rather than SipHash.
pub type NodeSet = HashSet<NodeId, foldhash::fast::RandomState>;

/// The nodes a placement plan gives each model (canonical names), published
/// by [`crate::placement`] and read by the proxy on every request.
#[derive(Debug, Default)]
pub struct RoutePlan(ArcSwap<PlanRoutes>);

/// A plan as routing reads it.
#[derive(Debug, Default)]
pub struct PlanRoutes {
    /// Per model (canonical name), the nodes planned for it.
    pub by_model: HashMap<String, NodeSet>,
    /// Every node planned for some model.
    pub assigned: NodeSet,
}

/// A plan as one request reads it.
pub type RoutePlanGuard = arc_swap::Guard<Arc<PlanRoutes>>;

impl RoutePlan {
    pub fn load(&self) -> RoutePlanGuard {
        self.0.load()
    }

    pub fn store(&self, by_model: HashMap<String, Vec<NodeId>>) {
        let by_model: HashMap<String, NodeSet> = by_model
            .into_iter()
            .map(|(model, nodes)| (model, nodes.into_iter().collect()))
            .collect();
        let assigned = by_model.values().flatten().copied().collect();
        self.0.store(Arc::new(PlanRoutes { by_model, assigned }));
    }

    /// The nodes `plan` gives `model`, if it covers the model.
    pub fn nodes_for<'a>(plan: &'a RoutePlanGuard, model: &str) -> Option<&'a NodeSet> {
        plan.by_model.get(model)
    }
}

/// A load-balancing policy.
pub trait Policy: Send + Sync + Debug {
    fn name(&self) -> &'static str;

    /// Index into `candidates` (never empty) of the node to try next.
    fn select(&self, candidates: &[&Candidate], placement: &Placement<'_>) -> usize;

    /// Whether, under a placement plan, a request whose chosen node has
    /// every slot busy waits in the router and is placed again when a slot
    /// frees, instead of queueing on that node (see `proxy`). Only a policy
    /// that prices queues (`auto`) gains from it; the others keep their
    /// order.
    fn waits_for_a_slot(&self) -> bool {
        false
    }
}

/// The policy for `mode`.
pub fn build(mode: BalancerMode) -> Box<dyn Policy> {
    match mode {
        BalancerMode::RoundRobin => Box::new(round_robin::RoundRobin::default()),
        BalancerMode::LeastConnections => Box::new(least_connections::LeastConnections::default()),
        BalancerMode::Metrics => Box::new(metrics::MetricsScore::default()),
        BalancerMode::Latency => Box::new(latency::Latency::default()),
        BalancerMode::Auto => Box::new(auto::Auto::default()),
    }
}

/// Picks the candidate with the lowest score; equal scores (within 1e-9 relative)
/// take turns through `turn`, so ties never always go to the first node.
pub(crate) fn lowest(
    candidates: &[&Candidate],
    turn: &AtomicUsize,
    mut score: impl FnMut(&Candidate) -> f64,
) -> usize {
    SCORES.with_borrow_mut(|scores| {
        scores.clear();
        scores.extend(candidates.iter().map(|node| score(node)));
        lowest_score(scores, turn, Tolerance::EXACT)
    })
}

thread_local! {
    /// [`lowest`]'s scores, kept from one placement to the next on each
    /// thread rather than allocated for each. (A score closure must not
    /// place a request itself: the buffer is borrowed while it runs.)
    static SCORES: RefCell<Vec<f64>> = const { RefCell::new(Vec::new()) };
}

/// A count of requests as a score. Through `i64`, which converts in one
/// instruction where `u64` takes several: a count is far below 2^63, where
/// the two agree.
pub(crate) fn count(requests: u64) -> f64 {
    requests as i64 as f64
}

/// How close two scores must be to count as a tie: within `relative` of the
/// lower one, or within `absolute`, whichever is wider.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tolerance {
    pub relative: f64,
    pub absolute: f64,
}

impl Tolerance {
    /// Equal up to rounding.
    pub const EXACT: Tolerance = Tolerance {
        relative: 1e-9,
        absolute: 0.0,
    };

    /// The highest score that ties with `best`.
    pub fn limit(self, best: f64) -> f64 {
        best + (best.abs() * self.relative).max(self.absolute)
    }
}

/// Index of the lowest of `scores`; scores within `tolerance` of it count as
/// tied and take turns through `turn`. NaN scores are never chosen (index 0
/// when every score is NaN).
///
/// Passes over a flat slice that the compiler vectorizes: the minimum (in
/// [`LANES`] independent lanes, so no step waits on the one before), the
/// count of ties, then the turn's tie, found by counting the ties of whole
/// [`BLOCK`]s until the one that holds it, which alone is walked.
pub(crate) fn lowest_score(scores: &[f64], turn: &AtomicUsize, tolerance: Tolerance) -> usize {
    let limit = tolerance.limit(minimum(scores));
    let tied = |s: &&f64| **s <= limit;
    let ties_in = |scores: &[f64]| scores.iter().filter(tied).count();
    let ties = ties_in(scores);
    let turn = turn.fetch_add(1, Ordering::Relaxed);
    if ties == 0 {
        return 0;
    }
    let mut nth = turn % ties;
    for (b, block) in scores.chunks(BLOCK).enumerate() {
        let here = ties_in(block);
        if nth < here {
            return block
                .iter()
                .enumerate()
                .filter(|(_, s)| tied(s))
                .nth(nth)
                .map_or(0, |(i, _)| b * BLOCK + i);
        }
        nth -= here;
    }
    0
}

/// Lanes of [`minimum`]'s running minima.
const LANES: usize = 8;

/// Scores [`lowest_score`] counts ties of at once, to skip to the turn's.
const BLOCK: usize = 64;

/// The lowest of `scores`, ignoring NaN (infinity when there is none).
fn minimum(scores: &[f64]) -> f64 {
    // `if score < lane` rather than `f64::min`: one instruction per lane,
    // and a NaN score compares false, so it is skipped all the same.
    let lower = |lane: f64, score: f64| if score < lane { score } else { lane };
    let mut lanes = [f64::INFINITY; LANES];
    let chunks = scores.chunks_exact(LANES);
    let rest = chunks.remainder();
    for chunk in chunks {
        for (lane, score) in lanes.iter_mut().zip(chunk) {
            *lane = lower(*lane, *score);
        }
    }
    rest.iter().copied().chain(lanes).fold(f64::INFINITY, lower)
}

#[cfg(test)]
pub(crate) mod testing {
    //! Hand-built candidates for policy tests.

    use std::collections::HashSet;
    use std::sync::Arc;

    use llm_router_common::{ApiKind, NodeId};

    use super::{Placement, Policy};
    use crate::registry::{Candidate, NodeLive, RoutableNode};

    pub fn node(name: &str) -> Arc<RoutableNode> {
        Arc::new(RoutableNode {
            id: NodeId::new_v4(),
            machine_name: name.into(),
            api_url: format!("http://{name}"),
            api: ApiKind::Ollama,
            models: HashSet::from(["m:latest".to_owned()]),
            loaded_models: HashSet::new(),
            served_names: Default::default(),
            authorization: None,
            base: None,
            name_header: None,
            live: Arc::new(NodeLive::default()),
        })
    }

    /// Where `policy` places a request for model `m:latest`.
    pub fn place(policy: &dyn Policy, nodes: &[Arc<RoutableNode>]) -> usize {
        place_model(policy, nodes, "m:latest")
    }

    /// Where `policy` places a request for `model` (a canonical name).
    pub fn place_model(policy: &dyn Policy, nodes: &[Arc<RoutableNode>], model: &str) -> usize {
        let placement = Placement {
            model,
            now: tokio::time::Instant::now(),
            planned: None,
            assigned: None,
        };
        policy.select(&candidates(nodes).iter().collect::<Vec<_>>(), &placement)
    }

    /// `nodes` as a policy's candidates, in the same order.
    pub fn candidates(nodes: &[Arc<RoutableNode>]) -> Vec<Candidate> {
        nodes.iter().cloned().map(Candidate::new).collect()
    }

    pub fn names(
        nodes: &[Arc<RoutableNode>],
        picks: impl IntoIterator<Item = usize>,
    ) -> Vec<String> {
        picks
            .into_iter()
            .map(|i| nodes[i].machine_name.clone())
            .collect()
    }
}
