//! `auto`, the default: the node expected to finish the request soonest,
//! counting what a model switch costs the whole fleet, not only this request.
//!
//! For a request of model M, each candidate node n gets a cost in seconds:
//!
//! ```text
//! service(n) = ttft(n, M) + tokens(M) / tokens_per_sec(n, M)
//! wait(n)    = max(0, in_flight(n) + 1 - slots(n)) × service(n) / slots(n)
//! load(n)    = 0 if M is resident on n, else load_time(n)
//! evict(n)   = 0 if M is resident on n, else load_time(n) × (in_flight(n) + recent_other_models(n))
//! cost(n)    = wait(n) + load(n) + service(n) + evict(n)
//! ```
//!
//! Under a placement plan for M (see [`crate::placement`]), a node the plan
//! does not give M, or that is not warm for it yet, pays one `load_time(n)`
//! more (and a node given no model that has M in memory anyway pays
//! `load_time(n) × (1 + in_flight(n))` instead of nothing), so it is used
//! only when the planned, warm nodes are saturated beyond what a load would
//! cost. A node the plan gives other models is not used for M while a node
//! planned for M, or one the plan leaves free, can take the request: in the
//! routing benchmark, overflow onto such nodes evicted models their own
//! traffic needed, and the loads that followed cascaded, costing far more
//! than the queue they saved. It also lets a node the plan moved drain, so
//! its pre-load can start.
//!
//! Under a plan, `auto` also [waits for a slot](Policy::waits_for_a_slot):
//! when the node it chose has every slot busy, the proxy holds the request
//! and places it again once a slot frees anywhere (or the plan moves),
//! instead of committing it to that node's queue; held requests count in
//! their node's load, so the next requests price the queue they form.
//!
//! The cheapest node wins; nodes within 10% (or 50 ms) of the cheapest count as
//! tied and take turns, so measurement noise does not pile every request on
//! one of several equal nodes. Among tied nodes, those with a free slot go
//! first: a queue is not noise, even when the answers are so short that it
//! costs less than the margin (and what another client's request ahead in
//! that queue costs is not known). Speeds are the node's observed averages for M
//! (else for any model); a node not measured yet is assumed to be like the
//! average of the measured candidates; `slots` is the node's `OLLAMA_NUM_PARALLEL` when its agent
//! reports it (else 1); "resident" comes from the node's `/api/ps` in
//! heartbeats, corrected by what the router sent it since (a node that can
//! hold one model and was just sent another no longer holds the first).
//!
//! The `evict` term is what keeps the fleet from thrashing. Loading M stalls
//! everything already queued on n, and pushes out a model that requests are
//! still using, whose next requests will pay a load somewhere else. A
//! per-request-greedy choice ignores both and keeps dragging fast nodes from
//! one model to another. With the term, a node switches models only when the
//! backlog on the nodes already warm for M costs more than a load plus the
//! harm of the eviction, so nodes stay warm on the models their share of the
//! traffic calls for.

use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use super::latency::DEFAULT_COMPLETION_TOKENS;
use super::{Placement, Policy, Tolerance, lowest_score};
use crate::registry::live::Residency;
use crate::registry::{Candidate, RoutableNode};

/// Time to first token assumed for a node not measured yet.
pub(crate) const DEFAULT_TTFT_SECS: f64 = 0.5;
/// Generation speed assumed for a node not measured yet.
pub(crate) const DEFAULT_TOKENS_PER_SEC: f64 = 30.0;
/// Model load time assumed until one was observed on the node.
const DEFAULT_LOAD_SECS: f64 = 5.0;
/// Added to the cost of a node the plan gives other models only: it is
/// chosen only when no node planned for the request's model (or free of
/// the plan) can take it, and then by its own cost.
const PLANNED_ELSEWHERE: f64 = 1.0e6;
/// A resident model routed to within this window counts as still in use.
const IN_USE_WINDOW: Duration = Duration::from_secs(60);

#[derive(Debug, Default)]
pub struct Auto {
    turn: AtomicUsize,
}

/// Costs within 10% or 50 ms of the cheapest count as equal: measurement
/// noise must not decide, and near-equal nodes then share the load (and stay
/// measured and warm).
const TIE_TOLERANCE: Tolerance = Tolerance {
    relative: 0.10,
    absolute: 0.05,
};

/// What is known of a node's speed for the request's model.
#[derive(Debug, Clone, Copy)]
struct Estimate {
    ttft_secs: Option<f64>,
    tokens_per_sec: Option<f64>,
    tokens: Option<f64>,
}

fn estimate(node: &RoutableNode, model: &str) -> Estimate {
    let overall = node.live.speed();
    node.live.with_model_speed(model, |per_model| Estimate {
        ttft_secs: per_model
            .and_then(|s| s.ttft_ms())
            .or_else(|| overall.ttft_ms())
            .map(|ms| ms / 1000.0),
        tokens_per_sec: per_model
            .and_then(|s| s.tokens_per_sec())
            .or_else(|| overall.tokens_per_sec()),
        tokens: per_model.and_then(|s| s.completion_tokens()),
    })
}

/// The mean of the values present.
pub(crate) fn mean(values: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    let (sum, n) = values
        .flatten()
        .fold((0.0, 0u32), |(s, n), v| (s + v, n + 1));
    (n > 0).then(|| sum / f64::from(n))
}

/// The cost described in the module documentation, in seconds, with `neutral`
/// standing in for what is not measured on this node.
fn cost(node: &Candidate, placement: &Placement<'_>, own: Estimate, neutral: Estimate) -> f64 {
    let live = &node.live;
    let ttft = own
        .ttft_secs
        .or(neutral.ttft_secs)
        .unwrap_or(DEFAULT_TTFT_SECS);
    let tps = own
        .tokens_per_sec
        .or(neutral.tokens_per_sec)
        .unwrap_or(DEFAULT_TOKENS_PER_SEC);
    let tokens = own
        .tokens
        .or(neutral.tokens)
        .unwrap_or(DEFAULT_COMPLETION_TOKENS);
    let service = ttft + tokens / tps;
    let slots = f64::from(node.line().parallel().unwrap_or(1));
    let in_flight = super::count(node.line().load());
    let wait = (in_flight + 1.0 - slots).max(0.0) * service / slots;
    let load = || live.load_ms().map_or(DEFAULT_LOAD_SECS, |ms| ms / 1000.0);
    // Under a plan, a node it does not give this model, or one not warm for
    // it yet, is priced as a load that disturbs the plan.
    let on_plan = placement
        .planned
        .is_none_or(|planned| planned.contains(&node.id));
    // A node the plan gives other models is left to them while a planned
    // node can take the request: sending it there evicts a model its own
    // traffic needs, and the loads that follow cascade (see the module
    // documentation).
    if !on_plan
        && placement
            .assigned
            .is_some_and(|assigned| assigned.contains(&node.id))
    {
        return PLANNED_ELSEWHERE + wait + service;
    }
    let residency = live.residency(placement.model, placement.now, IN_USE_WINDOW);
    let busy_others = match residency {
        Residency::Resident if on_plan => return wait + service,
        Residency::Resident => return wait + service + load() * (1.0 + in_flight),
        Residency::Absent { busy_others } => busy_others as f64,
    };
    let load = load();
    let evict = load * (in_flight + busy_others);
    let off_plan = if placement.planned.is_some() {
        load
    } else {
        0.0
    };
    wait + load + service + evict + off_plan
}

impl Policy for Auto {
    fn name(&self) -> &'static str {
        "auto"
    }

    fn select(&self, candidates: &[&Candidate], placement: &Placement<'_>) -> usize {
        if candidates.len() == 1 {
            return 0;
        }
        let estimates: Vec<Estimate> = candidates
            .iter()
            .map(|n| estimate(n, placement.model))
            .collect();
        // A node not measured yet is assumed to be like the measured ones.
        let neutral = Estimate {
            ttft_secs: mean(estimates.iter().map(|e| e.ttft_secs)),
            tokens_per_sec: mean(estimates.iter().map(|e| e.tokens_per_sec)),
            tokens: mean(estimates.iter().map(|e| e.tokens)),
        };
        let mut costs: Vec<f64> = candidates
            .iter()
            .zip(&estimates)
            .map(|(node, own)| cost(node, placement, *own, neutral))
            .collect();
        // Among the nodes that tie, those with a free slot go first.
        let limit = TIE_TOLERANCE.limit(costs.iter().copied().fold(f64::INFINITY, f64::min));
        let free_among_ties = candidates
            .iter()
            .zip(&costs)
            .any(|(node, cost)| *cost <= limit && !node.line().would_queue());
        if free_among_ties {
            for (cost, node) in costs.iter_mut().zip(candidates) {
                if node.line().would_queue() {
                    *cost = f64::INFINITY;
                }
            }
        }
        lowest_score(&costs, &self.turn, TIE_TOLERANCE)
    }

    fn waits_for_a_slot(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::time::Instant;

    use super::*;
    use std::sync::Arc;

    use crate::balancer::testing::{candidates, names, node, place, place_model};
    use crate::registry::live::SpeedSample;

    fn speed(node: &RoutableNode, model: &str, ttft_ms: u64, tps: f64) {
        node.live.record_speed(
            model,
            SpeedSample {
                ttft: Some(Duration::from_millis(ttft_ms)),
                tokens_per_sec: Some(tps),
                completion_tokens: Some(100),
                cold: false,
            },
        );
    }

    fn loaded(node: &RoutableNode, models: &[&str]) {
        node.live.record_heartbeat(
            10.0,
            10.0,
            None,
            Some(models.iter().map(|m| (*m).to_owned()).collect()),
        );
    }

    fn pick(nodes: &[Arc<RoutableNode>], model: &str) -> String {
        names(nodes, [place_model(&Auto::default(), nodes, model)]).remove(0)
    }

    #[test]
    fn prefers_the_node_with_the_model_loaded_over_an_idle_one_that_must_load_it() {
        let nodes = vec![node("a-idle-cold"), node("b-warm")];
        loaded(&nodes[0], &["other:latest"]);
        loaded(&nodes[1], &["m:latest"]);
        for n in &nodes {
            speed(n, "m:latest", 200, 50.0);
        }
        // B even has a request running; a load on A would still take longer.
        let _running = nodes[1].live.start_request();
        assert_eq!(pick(&nodes, "m:latest"), "b-warm");
    }

    #[test]
    fn switches_a_node_when_the_warm_backlog_outweighs_a_load() {
        let nodes = vec![node("cold"), node("warm-swamped")];
        loaded(&nodes[0], &["other:latest"]);
        loaded(&nodes[1], &["m:latest"]);
        for n in &nodes {
            speed(n, "m:latest", 200, 50.0);
        }
        let _queue: Vec<_> = (0..20).map(|_| nodes[1].live.start_request()).collect();
        assert_eq!(pick(&nodes, "m:latest"), "cold");
    }

    #[test]
    fn does_not_evict_a_model_in_use_when_an_idle_node_can_load() {
        let nodes = vec![node("busy-other"), node("idle-other")];
        let now = Instant::now();
        loaded(&nodes[0], &["x:latest"]);
        loaded(&nodes[1], &["y:latest"]);
        // Requests for x keep going to the first node.
        nodes[0].live.route_model("x:latest", now);
        assert_eq!(pick(&nodes, "m:latest"), "idle-other");
    }

    #[test]
    fn a_node_the_plan_moves_to_another_model_is_left_to_drain() {
        use crate::balancer::NodeSet;
        let nodes = vec![node("mid-planned"), node("fast-moving")];
        for n in &nodes {
            loaded(n, &["a:latest"]);
        }
        speed(&nodes[0], "a:latest", 100, 40.0);
        speed(&nodes[1], "a:latest", 40, 160.0);
        let _queue: Vec<_> = (0..3).map(|_| nodes[0].live.start_request()).collect();
        let place = |assigned: Option<&NodeSet>| {
            let planned = NodeSet::from_iter([nodes[0].id]);
            let placement = Placement {
                model: "a:latest",
                now: Instant::now(),
                planned: Some(&planned),
                assigned,
            };
            let candidates = candidates(&nodes);
            let pool: Vec<_> = candidates.iter().collect();
            nodes[Auto::default().select(&pool, &placement)]
                .machine_name
                .clone()
        };
        // The fast node is planned for nothing: a free warm node takes the overflow.
        assert_eq!(
            place(Some(&NodeSet::from_iter([nodes[0].id]))),
            "fast-moving"
        );
        // Planned for another model: it is left to drain for its switch.
        let both = NodeSet::from_iter([nodes[0].id, nodes[1].id]);
        assert_eq!(place(Some(&both)), "mid-planned");
    }

    #[test]
    fn a_node_with_a_free_slot_never_ties_with_one_that_would_queue_a_short_answer() {
        let nodes = vec![node("busy"), node("free")];
        for n in &nodes {
            loaded(n, &["m:latest"]);
            // Answers of 100 tokens in 12 ms: a queue of one costs less than the tie margin.
            speed(n, "m:latest", 2, 10_000.0);
        }
        let running = nodes[0].live.start_request();
        let policy = Auto::default();
        let picks = (0..6).map(|_| place(&policy, &nodes));
        assert_eq!(names(&nodes, picks), ["free"; 6]);
        // Both free again: they take turns.
        drop(running);
        let mut picked = names(&nodes, (0..4).map(|_| place(&policy, &nodes)));
        picked.sort();
        assert_eq!(picked, ["busy", "busy", "free", "free"]);
    }

    #[test]
    fn a_free_node_within_the_tie_margin_beats_a_slightly_faster_queued_one() {
        let nodes = vec![node("fast-busy"), node("free")];
        for n in &nodes {
            loaded(n, &["m:latest"]);
        }
        // 100 tokens: 12 ms on the busy node, 30 ms on the free one; with one
        // request ahead the busy node costs 24 ms, still the cheapest.
        speed(&nodes[0], "m:latest", 2, 10_000.0);
        speed(&nodes[1], "m:latest", 20, 10_000.0);
        let _running = nodes[0].live.start_request();
        let policy = Auto::default();
        let picks = (0..4).map(|_| place(&policy, &nodes));
        assert_eq!(names(&nodes, picks), ["free"; 4]);
    }

    #[test]
    fn a_fast_warm_node_beats_a_slow_warm_one() {
        let nodes = vec![node("slow"), node("fast")];
        for (n, tps) in nodes.iter().zip([10.0, 120.0]) {
            loaded(n, &["m:latest"]);
            speed(n, "m:latest", 100, tps);
        }
        assert_eq!(pick(&nodes, "m:latest"), "fast");
    }
}
