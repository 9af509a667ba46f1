//! Fleet-level model placement: which node keeps which model warm, planned
//! from what the fleet is asked for, and the routing that follows the plan.
//!
//! - **Demand**: every request that runs a model (not `/api/show`, not an
//!   unload) is counted per model as it arrives (a queue that grows is
//!   demand now, not when it drains); each round turns the counts into a
//!   rate smoothed over [`WINDOW_ROUNDS`] rounds (a rise far beyond noise is
//!   taken at once), and the
//!   completion tokens of finished requests (a [`RequestSink`]) into a mean
//!   work per request. A model whose rate falls under half a request per window
//!   leaves the demand, and with it the plan.
//! - **Capacity**: per node and model, requests per second from the node's
//!   slots and its learned speeds (see [`plan`] for the formula); how many
//!   models it keeps in memory is the most it was seen holding.
//! - **Plan**: [`plan::plan`], once per round and with hysteresis; the
//!   assignment in force is the starting point, so a plan moves only what
//!   is worth a load. There is none until the demand has been measured for
//!   a window: a plan drawn from the first round's few requests moves
//!   models (and stalls nodes with loads) that the next rounds move back.
//! - **Routing**: the `auto` policy prices a node that the plan does not give
//!   the request's model, or that is not warm for it yet, as if it had to
//!   load the model: such a node is used only when the planned, warm ones are
//!   saturated beyond what a load costs. A request whose chosen node has
//!   every slot busy waits in the router for the first slot that frees
//!   (see `proxy`), so a shift in demand does not pile requests onto the
//!   old plan's nodes before the new plan is drawn.
//! - **Pre-loading**: a node planned for a model it does not have in memory
//!   is warmed (Ollama loads a model for an empty `/api/generate`) once its
//!   requests in flight have finished, so no stream is cut and the first
//!   routed request finds the model loaded.

pub mod plan;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::http::header;
use axum::http::uri::PathAndQuery;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use http_body_util::{BodyExt, Full, Limited};
use llm_router_common::{ApiKind, NodeId, canonical_model_name};
use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use serde::Serialize;
use tokio::time::Instant;

use crate::balancer::RoutePlan;
use crate::balancer::auto::{DEFAULT_TOKENS_PER_SEC, DEFAULT_TTFT_SECS, mean};
use crate::balancer::latency::DEFAULT_COMPLETION_TOKENS;
use crate::proxy::body::error_chain;
use crate::proxy::record::{RequestRecord, RequestSink};
use crate::proxy::{HOP_HEADER, UpstreamClient};
use crate::registry::{NodeRegistry, RoutableNode, RoutableSnapshot};

/// Rounds a demand rate is smoothed over.
pub const WINDOW_ROUNDS: f64 = 4.0;
/// Rounds after a shift in which every rate that moved follows the round.
const SETTLING_ROUNDS: u32 = 2;
/// Poisson deviations above the smoothed rate that make a round's count a shift.
const SHIFT_SIGMAS: f64 = 3.0;
/// Requests a round must count for a model to call its rise a shift: fewer
/// are too few to tell a shift from noise.
const SHIFT_MIN_REQUESTS: f64 = 10.0;

/// How often per planning round the nodes to pre-load are looked for.
const PRELOAD_CHECKS_PER_ROUND: u32 = 5;
/// How long a pre-loaded model stays in memory without requests (Ollama's `keep_alive`).
pub const PRELOAD_KEEP_ALIVE: &str = "30m";

/// Requests counted since the last round, for one model.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    requests: u64,
    tokens: u64,
    measured: u64,
}

/// Smoothed demand for one model.
#[derive(Debug, Clone, Copy)]
struct Smoothed {
    rate: f64,
    tokens: Option<f64>,
    /// Seconds of rounds it was measured over, up to a window: until then its
    /// rate is the mean over all of them, not weighted to the first.
    age: f64,
}

#[derive(Debug, Default)]
struct Rounds {
    demand: HashMap<String, Smoothed>,
    /// The plan in force: canonical model names per node.
    assignment: HashMap<NodeId, Vec<String>>,
    last: Option<Instant>,
    /// Rounds after a shift in which rates still follow each round (see [`smooth`]).
    settling: u32,
    /// When the demand now measured began (the start of the round it was
    /// first counted in); `None` while there is none.
    demand_since: Option<Instant>,
}

/// The plan as `GET /api/placement` shows it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Plan {
    /// Whether placement is on (`--placement plan`).
    pub enabled: bool,
    /// Whether the demand is still being measured: no model is placed yet.
    pub measuring: bool,
    pub nodes: Vec<PlannedNode>,
    pub demand: Vec<ModelDemand>,
    pub capacity: Vec<NodeModelCapacity>,
    /// Plan changes since the coordinator started.
    pub changes: u64,
    pub changed_at: Option<DateTime<Utc>>,
    /// Why the plan last changed.
    pub change_reason: Option<String>,
    pub planned_at: Option<DateTime<Utc>>,
    /// What the latest round decided, and why.
    pub reason: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct PlannedNode {
    pub id: NodeId,
    pub name: String,
    /// Models the plan gives the node.
    pub models: Vec<String>,
    /// Of those, the ones in memory there now.
    pub warm: Vec<String>,
    /// Models the node keeps in memory at once.
    pub memory: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct ModelDemand {
    pub model: String,
    pub requests_per_sec: f64,
    pub tokens_per_request: f64,
    /// Requests per second the plan gives the model.
    pub capacity_per_sec: f64,
    /// Capacity over demand; above 1 the demand fits. `None`: no node holds the model.
    pub headroom: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct NodeModelCapacity {
    pub node: String,
    pub model: String,
    /// Requests per second the node completes serving only this model.
    pub requests_per_sec: f64,
}

/// The counters placement exports on `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct PlacementCounters {
    pub plan_changes: Counter,
    pub preloads: Counter,
}

/// Demand, plan and pre-loads of one coordinator.
#[derive(Debug)]
pub struct Placer {
    interval: Duration,
    tallies: Mutex<HashMap<String, Tally>>,
    rounds: Mutex<Rounds>,
    plan: ArcSwap<Plan>,
    /// The plan's nodes per model, as the proxy reads it.
    route: Arc<RoutePlan>,
    counters: PlacementCounters,
    /// Pre-loads under way, so a slow one is not started twice.
    warming: Mutex<HashSet<(NodeId, String)>>,
}

impl Placer {
    /// A placer that plans every `interval`.
    pub fn new(interval: Duration, counters: PlacementCounters) -> Self {
        Self {
            interval: interval.max(Duration::from_millis(10)),
            tallies: Mutex::default(),
            rounds: Mutex::default(),
            plan: ArcSwap::from_pointee(Plan {
                enabled: true,
                reason: "no demand seen yet".to_owned(),
                ..Plan::default()
            }),
            route: Arc::default(),
            counters,
            warming: Mutex::default(),
        }
    }

    /// The plan's nodes per model, for the proxy.
    pub fn route_plan(&self) -> Arc<RoutePlan> {
        Arc::clone(&self.route)
    }

    /// The plan in force; cheap enough for every request.
    pub fn current(&self) -> arc_swap::Guard<Arc<Plan>> {
        self.plan.load()
    }

    /// One planning round over `snapshot` at `now`: smooths the demand,
    /// plans, and publishes the plan.
    pub fn replan(&self, snapshot: &RoutableSnapshot, now: Instant) -> Arc<Plan> {
        let tallies = std::mem::take(&mut *self.tallies.lock());
        let mut rounds = self.rounds.lock();
        let elapsed = rounds
            .last
            .map_or(self.interval, |last| now.saturating_duration_since(last))
            .max(Duration::from_millis(1))
            .as_secs_f64();
        let round_began = rounds.last.unwrap_or(now);
        rounds.last = Some(now);
        let state = &mut *rounds;
        smooth(
            &mut state.demand,
            &mut state.settling,
            &tallies,
            elapsed,
            self.interval.as_secs_f64(),
        );

        if rounds.demand.is_empty() {
            rounds.demand_since = None;
        } else if rounds.demand_since.is_none() {
            rounds.demand_since = Some(round_began);
        }
        // Demand measured for less than a window is too little to move
        // models for: until then there is no plan, and `auto` alone routes.
        let window = self.interval.mul_f64(WINDOW_ROUNDS);
        let measuring = rounds
            .demand_since
            .map(|since| now.saturating_duration_since(since))
            .filter(|measured| *measured < window);

        let nodes: Vec<&Arc<RoutableNode>> = snapshot.nodes.iter().collect();
        let mut models: Vec<(&String, &Smoothed)> = rounds.demand.iter().collect();
        models.sort_by(|a, b| a.0.cmp(b.0));
        let demand: Vec<plan::Demand> = models
            .iter()
            .map(|(model, smoothed)| plan::Demand {
                model: (*model).clone(),
                rate: smoothed.rate,
            })
            .collect();
        let work: Vec<f64> = models
            .iter()
            .map(|(model, smoothed)| {
                smoothed
                    .tokens
                    .or_else(|| learned_tokens(&nodes, model))
                    .unwrap_or(DEFAULT_COMPLETION_TOKENS)
            })
            .collect();
        let neutral = neutral_speed(&nodes);
        let capacity: Vec<plan::Capacity> = nodes
            .iter()
            .map(|node| plan::Capacity {
                rates: models
                    .iter()
                    .zip(&work)
                    .map(|((model, _), &tokens)| {
                        node.holds(model)
                            .then(|| service_rate(node, model, tokens, neutral))
                    })
                    .collect(),
                memory: node.live.memory_capacity(),
            })
            .collect();
        let index: HashMap<&str, usize> = demand
            .iter()
            .enumerate()
            .map(|(i, d)| (d.model.as_str(), i))
            .collect();
        let current: plan::Assignment = nodes
            .iter()
            .map(|node| {
                let models = match rounds.assignment.get(&node.id) {
                    Some(planned) => planned.clone(),
                    // A node new to the plan starts from what it has in memory.
                    None => node.live.resident_of(&node.models, now),
                };
                models
                    .iter()
                    .filter_map(|m| index.get(m.as_str()).copied())
                    .collect()
            })
            .collect();
        let decision = match measuring {
            Some(measured) => plan::unplanned(
                &demand,
                &capacity,
                !rounds.assignment.is_empty(),
                format!(
                    "measuring demand: {:.0} s of the {:.0} s it is measured over before models are placed",
                    measured.as_secs_f64(),
                    window.as_secs_f64()
                ),
            ),
            None => plan::plan(&demand, &capacity, &current),
        };
        let changed = decision.changed;
        // Nodes the plan leaves empty start again from what they have in memory.
        rounds.assignment = nodes
            .iter()
            .zip(&decision.assignment)
            .filter(|(_, models)| !models.is_empty())
            .map(|(node, models)| {
                let names = models.iter().map(|&m| demand[m].model.clone()).collect();
                (node.id, names)
            })
            .collect();
        drop(rounds);

        let previous = self.plan.load_full();
        let mut next = Plan {
            enabled: true,
            changes: previous.changes,
            changed_at: previous.changed_at,
            change_reason: previous.change_reason.clone(),
            planned_at: Some(Utc::now()),
            measuring: measuring.is_some(),
            reason: decision.reason.clone(),
            ..Plan::default()
        };
        if changed {
            self.counters.plan_changes.inc();
            next.changes += 1;
            next.changed_at = next.planned_at;
            next.change_reason = Some(decision.reason.clone());
            let rates: Vec<String> = demand
                .iter()
                .map(|d| format!("{} {:.2}/s", d.model, d.rate))
                .collect();
            tracing::info!(reason = %decision.reason, demand = %rates.join(", "), "placement plan changed");
        }
        let mut by_model: HashMap<String, Vec<NodeId>> = HashMap::new();
        for (node, models) in nodes.iter().zip(&decision.assignment) {
            let names: Vec<String> = models.iter().map(|&m| demand[m].model.clone()).collect();
            for name in &names {
                by_model.entry(name.clone()).or_default().push(node.id);
            }
            next.nodes.push(PlannedNode {
                id: node.id,
                name: node.machine_name.clone(),
                warm: node.live.resident_of(&names, now),
                models: names,
                memory: node.live.memory_capacity(),
            });
        }
        for (m, d) in demand.iter().enumerate() {
            next.demand.push(ModelDemand {
                model: d.model.clone(),
                requests_per_sec: d.rate,
                tokens_per_request: work[m],
                capacity_per_sec: decision.capacity[m],
                headroom: decision.headroom[m],
            });
        }
        for (node, cap) in nodes.iter().zip(&capacity) {
            for (m, rate) in cap.rates.iter().enumerate() {
                if let Some(rate) = rate {
                    next.capacity.push(NodeModelCapacity {
                        node: node.machine_name.clone(),
                        model: demand[m].model.clone(),
                        requests_per_sec: *rate,
                    });
                }
            }
        }
        let next = Arc::new(next);
        self.route.store(by_model);
        self.plan.store(Arc::clone(&next));
        next
    }

    /// A round with nothing to plan: no demand left and no request since
    /// the last. Returns false, changing nothing, when there is demand;
    /// else the round counts as held (demand that arrives next is measured
    /// from now).
    fn idle_round(&self, now: Instant) -> bool {
        if !self.tallies.lock().is_empty() {
            return false;
        }
        let mut rounds = self.rounds.lock();
        if !rounds.demand.is_empty() {
            return false;
        }
        rounds.last = Some(now);
        rounds.settling = rounds.settling.saturating_sub(1);
        true
    }

    /// Planned models not in memory on Ollama nodes that have finished
    /// their requests (or have room to spare): what to pre-load now.
    pub fn to_preload(
        &self,
        snapshot: &RoutableSnapshot,
        now: Instant,
    ) -> Vec<(Arc<RoutableNode>, String)> {
        let plan = self.current();
        let mut planned_nodes = plan
            .nodes
            .iter()
            .filter(|p| !p.models.is_empty())
            .peekable();
        if planned_nodes.peek().is_none() {
            return Vec::new();
        }
        let by_id: HashMap<NodeId, &Arc<RoutableNode>> =
            snapshot.nodes.iter().map(|n| (n.id, n)).collect();
        let warming = self.warming.lock();
        let mut wanted = Vec::new();
        for planned in planned_nodes {
            let Some(node) = by_id.get(&planned.id) else {
                continue;
            };
            if node.api != ApiKind::Ollama || node.live.is_unhealthy() {
                continue;
            }
            let room = node.live.memory_capacity() > planned.warm.len();
            for model in &planned.models {
                let drained = node.live.in_flight() == 0 || room;
                if drained
                    && !node.live.is_resident(model, now)
                    && !warming.contains(&(node.id, model.clone()))
                {
                    wanted.push((Arc::clone(node), model.clone()));
                }
            }
        }
        wanted
    }

    fn start_warming(&self, node: NodeId, model: &str) -> bool {
        self.warming.lock().insert((node, model.to_owned()))
    }

    fn done_warming(&self, node: NodeId, model: &str) {
        self.warming.lock().remove(&(node, model.to_owned()));
    }

    /// Counts a request for `model` (a canonical name) as it arrives.
    pub fn arrived(&self, model: &str) {
        let mut tallies = self.tallies.lock();
        match tallies.get_mut(model) {
            Some(tally) => tally.requests += 1,
            None => {
                tallies.insert(
                    model.to_owned(),
                    Tally {
                        requests: 1,
                        ..Tally::default()
                    },
                );
            }
        }
    }
}

/// Finished requests tell the work per request (their completion tokens).
impl RequestSink for Placer {
    fn record(&self, record: &RequestRecord) {
        if record.model.is_empty() {
            return;
        }
        let Some(tokens) = record.usage.completion_tokens.filter(|&t| t > 0) else {
            return;
        };
        let model = canonical_model_name(&record.model);
        let mut tallies = self.tallies.lock();
        let tally = tallies.entry(model).or_default();
        tally.tokens += tokens;
        tally.measured += 1;
    }
}

/// Folds one round's counts into the smoothed demand; drops models whose
/// rate fell under half a request per window. A round whose count is far
/// above the smoothed rate (more than [`SHIFT_SIGMAS`] Poisson deviations,
/// by half or more, and at least [`SHIFT_MIN_REQUESTS`]) is a shift, not
/// noise: the rate jumps to it, so the plan moves once, to where the demand
/// went, instead of step by step; so do the other models' rates that moved
/// by more than a deviation, in that round and the [`SETTLING_ROUNDS`]
/// after it. Otherwise demand that falls is followed smoothly: a pause is
/// not the end of it.
fn smooth(
    demand: &mut HashMap<String, Smoothed>,
    settling: &mut u32,
    tallies: &HashMap<String, Tally>,
    elapsed: f64,
    interval: f64,
) {
    let window = interval * WINDOW_ROUNDS;
    // A model measured for less than a window weighs every round it was
    // measured in alike.
    let alpha_for = |smoothed: &Smoothed| (elapsed / (smoothed.age + elapsed).min(window)).min(1.0);
    let count = |model: &str| tallies.get(model).map_or(0.0, |t| t.requests as f64);
    // Poisson deviations of this round's count from the smoothed rate.
    let deviations = |model: &str, smoothed: &Smoothed| {
        let expected = smoothed.rate * elapsed;
        (count(model) - expected) / expected.max(1.0).sqrt()
    };
    let shifted = demand.iter().any(|(model, smoothed)| {
        deviations(model, smoothed) > SHIFT_SIGMAS
            && count(model) >= SHIFT_MIN_REQUESTS
            && count(model) / elapsed > smoothed.rate * 1.5
    });
    // A round may straddle the shift: the next ones follow it too.
    let following = shifted || *settling > 0;
    *settling = if shifted {
        SETTLING_ROUNDS
    } else {
        settling.saturating_sub(1)
    };
    for (model, smoothed) in demand.iter_mut() {
        let tally = tallies.get(model).copied().unwrap_or_default();
        let raw = count(model) / elapsed;
        let alpha = alpha_for(smoothed);
        smoothed.age = (smoothed.age + elapsed).min(window);
        // Demand that jumps on one model has usually left another: in a shift,
        // every model that moved beyond a deviation starts again from this
        // round, so the plan moves once, not again as each old rate decays.
        smoothed.rate = if following && deviations(model, smoothed).abs() > 1.0 {
            raw
        } else {
            smoothed.rate + alpha * (raw - smoothed.rate)
        };
        if tally.measured > 0 {
            let mean = tally.tokens as f64 / tally.measured as f64;
            smoothed.tokens = Some(
                smoothed
                    .tokens
                    .map_or(mean, |t| t + alpha.max(0.2) * (mean - t)),
            );
        }
    }
    for (model, tally) in tallies {
        if !demand.contains_key(model) {
            let mean = (tally.measured > 0).then(|| tally.tokens as f64 / tally.measured as f64);
            let rate = tally.requests as f64 / elapsed;
            let smoothed = Smoothed {
                rate,
                tokens: mean,
                age: elapsed.min(window),
            };
            demand.insert(model.clone(), smoothed);
        }
    }
    demand.retain(|_, smoothed| smoothed.rate * window >= 0.5);
}

/// The mean completion tokens any node learned for `model`.
fn learned_tokens(nodes: &[&Arc<RoutableNode>], model: &str) -> Option<f64> {
    mean(nodes.iter().map(|n| {
        n.live
            .with_model_speed(model, |s| s.and_then(|s| s.completion_tokens()))
    }))
}

/// Time to first token and speed assumed for a node not measured yet: the
/// fleet's mean.
fn neutral_speed(nodes: &[&Arc<RoutableNode>]) -> (f64, f64) {
    let ttft = mean(nodes.iter().map(|n| n.live.speed().ttft_ms())).map(|ms| ms / 1000.0);
    let tps = mean(nodes.iter().map(|n| n.live.speed().tokens_per_sec()));
    (
        ttft.unwrap_or(DEFAULT_TTFT_SECS),
        tps.unwrap_or(DEFAULT_TOKENS_PER_SEC),
    )
}

/// `μ_{n,m}`: requests per second `node` completes serving only `model`.
fn service_rate(node: &RoutableNode, model: &str, tokens: f64, neutral: (f64, f64)) -> f64 {
    let live = &node.live;
    let overall = live.speed();
    let (ttft, tps) = live.with_model_speed(model, |per_model| {
        let ttft = per_model
            .and_then(|s| s.ttft_ms())
            .or_else(|| overall.ttft_ms())
            .map_or(neutral.0, |ms| ms / 1000.0);
        let tps = per_model
            .and_then(|s| s.tokens_per_sec())
            .or_else(|| overall.tokens_per_sec())
            .unwrap_or(neutral.1);
        (ttft, tps)
    });
    let slots = f64::from(live.parallel().unwrap_or(1).max(1));
    slots / (ttft + tokens / tps.max(1e-3)).max(1e-3)
}

/// Plans every round until `stop`, and pre-loads what the plan moved onto
/// nodes that are ready for it, through `client`; a pre-load may take `timeout`.
pub async fn run_planner(
    placer: Arc<Placer>,
    registry: Arc<NodeRegistry>,
    client: UpstreamClient,
    timeout: Duration,
    stop: impl Future<Output = ()> + Send,
) {
    let interval = placer.interval;
    let mut planned_at: Option<Instant> = None;
    let mut planned_for: Option<Arc<RoutableSnapshot>> = None;
    // Pre-loads are looked for more often than plans are made: a node the
    // plan moved is warmed soon after its last request ends.
    let check = (interval / PRELOAD_CHECKS_PER_ROUND).max(Duration::from_millis(50));
    crate::health::every(check, stop, move || {
        let snapshot = registry.snapshot();
        let now = Instant::now();
        // Until a plan covers some demand, every check is a round: the first
        // requests get a plan within a fraction of a round.
        let due = planned_at.is_none_or(|at| now.saturating_duration_since(at) + check / 2 >= interval)
            || placer.current().demand.is_empty();
        if due {
            planned_at = Some(now);
            // With no demand and the same fleet, a round would find the plan
            // it already has; at fleet scale that is a pass over every node
            // each check for nothing.
            let same_fleet = planned_for
                .as_ref()
                .is_some_and(|planned| Arc::ptr_eq(planned, &snapshot));
            if !(same_fleet && placer.idle_round(now)) {
                placer.replan(&snapshot, now);
                planned_for = Some(Arc::clone(&snapshot));
            }
        }
        for (node, model) in placer.to_preload(&snapshot, now) {
            if !placer.start_warming(node.id, &model) {
                continue;
            }
            let (placer, client) = (Arc::clone(&placer), client.clone());
            tokio::spawn(async move {
                match preload(&client, &node, &model, timeout).await {
                    Ok(()) => {
                        placer.counters.preloads.inc();
                        tracing::info!(node = %node.machine_name, %model, "pre-loaded the model the plan gives this node");
                    }
                    Err(error) => {
                        tracing::warn!(node = %node.machine_name, %model, %error, "could not pre-load a planned model");
                    }
                }
                placer.done_warming(node.id, &model);
            });
        }
        std::future::ready(())
    })
    .await;
}

/// Loads `model` into memory on `node` (an Ollama node) with an empty
/// generate request, counted as a request in flight there while it runs.
pub async fn preload(
    client: &UpstreamClient,
    node: &Arc<RoutableNode>,
    model: &str,
    timeout: Duration,
) -> Result<(), String> {
    let _running = node.live.start_request();
    node.live.note_loading();
    let base = node
        .base
        .as_ref()
        .ok_or_else(|| format!("unusable URL {:?}", node.api_url))?;
    let uri = base
        .join(&PathAndQuery::from_static("/api/generate"))
        .map_err(|e| format!("unusable URL {:?}: {e}", node.api_url))?;
    let body = serde_json::json!({"model": model, "keep_alive": PRELOAD_KEEP_ALIVE}).to_string();
    let mut request = hyper::Request::post(uri)
        .header(header::CONTENT_TYPE, "application/json")
        .header(HOP_HEADER, "1");
    if let Some(authorization) = &node.authorization {
        request = request.header(header::AUTHORIZATION, authorization.clone());
    }
    let request = request
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| format!("unusable request: {e}"))?;
    let response = tokio::time::timeout(timeout, client.request(request))
        .await
        .map_err(|_| format!("no answer within {} s", timeout.as_secs()))?
        .map_err(|e| error_chain(&e))?;
    let status = response.status();
    // The answer is one small JSON object, sent when the load is done.
    let _ = Limited::new(response.into_body(), 64 * 1024)
        .collect()
        .await;
    // Answered, loaded or not: the node is not held by it any more.
    node.live.loaded();
    if !status.is_success() {
        return Err(format!("the node answered {status}"));
    }
    node.live.route_model(model, Instant::now());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One round's counts of requests per model.
    fn counts(requests: &[(&str, u64)]) -> HashMap<String, Tally> {
        requests
            .iter()
            .map(|&(model, requests)| {
                let tally = Tally {
                    requests,
                    ..Tally::default()
                };
                (model.to_owned(), tally)
            })
            .collect()
    }

    fn assert_rate(demand: &HashMap<String, Smoothed>, model: &str, rate: f64) {
        let got = demand[model].rate;
        assert!((got - rate).abs() < 1e-9, "{model}: {got}, not {rate}");
    }

    fn round(demand: &mut HashMap<String, Smoothed>, requests: u64) {
        smooth(demand, &mut 0, &counts(&[("m", requests)]), 5.0, 5.0);
    }

    #[test]
    fn noise_is_smoothed_and_a_shift_is_followed_at_once() {
        let mut demand = HashMap::new();
        // 2 requests/s, 10 per 5 s round.
        for _ in 0..8 {
            round(&mut demand, 10);
        }
        assert!((demand["m"].rate - 2.0).abs() < 1e-9);
        // 20% more is noise: a quarter of the way.
        round(&mut demand, 12);
        assert!(
            (demand["m"].rate - 2.1).abs() < 1e-9,
            "{}",
            demand["m"].rate
        );
        // Three times as many is a shift.
        round(&mut demand, 30);
        assert!(
            (demand["m"].rate - 6.0).abs() < 1e-9,
            "{}",
            demand["m"].rate
        );
        // A round without requests decays it, by a quarter; enough of them drop the model.
        round(&mut demand, 0);
        assert!(
            (demand["m"].rate - 4.5).abs() < 1e-9,
            "{}",
            demand["m"].rate
        );
        for _ in 0..40 {
            smooth(&mut demand, &mut 0, &HashMap::new(), 5.0, 5.0);
        }
        assert!(!demand.contains_key("m"));
    }

    #[test]
    fn a_new_model_weighs_its_first_rounds_alike() {
        let mut demand = HashMap::new();
        // Its first round (which may have begun before its first request)
        // does not outweigh the ones after it.
        round(&mut demand, 8);
        assert_rate(&demand, "m", 1.6);
        round(&mut demand, 12);
        assert_rate(&demand, "m", 2.0);
        round(&mut demand, 10);
        assert_rate(&demand, "m", 2.0);
        round(&mut demand, 10);
        assert_rate(&demand, "m", 2.0);
        // Measured over a window: smoothed over one from now on.
        round(&mut demand, 14);
        assert_rate(&demand, "m", 2.2);
    }

    #[test]
    fn models_are_placed_once_their_demand_was_measured_for_a_window() {
        let placer = Placer::new(Duration::from_secs(5), PlacementCounters::default());
        let snapshot = RoutableSnapshot::new(vec![crate::balancer::testing::node("a")]);
        let start = Instant::now();
        placer.replan(&snapshot, start);
        for round in 1..=4 {
            for _ in 0..10 {
                placer.arrived("m:latest");
            }
            let plan = placer.replan(&snapshot, start + Duration::from_secs(5 * round));
            assert_eq!(plan.demand.len(), 1, "{plan:?}");
            let models = &plan.nodes[0].models;
            if round < 4 {
                assert!(models.is_empty(), "round {round}: {plan:?}");
                assert!(plan.measuring, "{plan:?}");
                assert!(plan.reason.starts_with("measuring demand"), "{plan:?}");
                assert_eq!(placer.route_plan().load().by_model.len(), 0);
            } else {
                assert!(!plan.measuring, "{plan:?}");
                assert_eq!(models, &["m:latest"], "{plan:?}");
            }
        }
        assert_eq!(placer.current().changes, 1);
    }

    #[test]
    fn demand_that_moves_between_models_is_followed_on_both_at_once() {
        let mut demand = HashMap::new();
        let mut settling = 0;
        let mut round = |demand: &mut HashMap<String, Smoothed>, a: u64, c: u64| {
            smooth(
                demand,
                &mut settling,
                &counts(&[("a", a), ("c", c)]),
                5.0,
                5.0,
            );
        };
        // 4 and 0.8 requests/s.
        for _ in 0..8 {
            round(&mut demand, 20, 4);
        }
        // The round the popular model changes in: c jumps, a has barely begun to fall.
        round(&mut demand, 18, 14);
        assert_rate(&demand, "c", 2.8);
        assert_rate(&demand, "a", 3.9);
        // The next round is followed on both, not smoothed over a window.
        round(&mut demand, 8, 20);
        assert_rate(&demand, "a", 1.6);
        assert_rate(&demand, "c", 4.0);
        // Once settled, noise is smoothed again.
        for _ in 0..3 {
            round(&mut demand, 8, 20);
        }
        round(&mut demand, 12, 20);
        assert_rate(&demand, "a", 1.8);
    }
}
