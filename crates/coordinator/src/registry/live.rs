//! What changes about a node on every request or heartbeat, kept in atomics
//! and `ArcSwap`s shared by the registry and every snapshot the node appears
//! in: the request path takes no lock here, nor the registry's. (Creating
//! and dropping a `NodeLive` takes the load table's free-list lock, once:
//! registrations and removals, not requests.)
//!
//! - in-flight count, with an RAII guard that can never make it negative,
//!   load from heartbeats (CPU, memory) and the parallel slots the node has:
//!   the node's line of the [load table](super::load), which policies read
//!   without coming here;
//! - health as seen by the proxy: a state machine with hysteresis;
//! - observed speed: EWMAs of time to first token, tokens per second and model
//!   load time, per node and per model;
//! - the models believed resident in memory: the last heartbeat's list,
//!   corrected by what the router sent the node since.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::time::Instant;

use super::load::NodeLoad;
use crate::admission::Signal;

/// Weight of a new observation in the speed averages.
const EWMA_ALPHA: f64 = 0.3;
/// A model routed to a node counts as resident for this long without confirmation.
const RESIDENT_TTL: Duration = Duration::from_secs(300);

/// A node failing again this soon after it came back has relapsed.
const RELAPSE_WINDOW: Duration = Duration::from_secs(60);
/// Relapses beyond this no longer raise the successes needed (2^5 × healthy_after).
const MAX_RELAPSES: u32 = 5;

/// Thresholds of the proxy's health state machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthThresholds {
    /// Consecutive failures that take a node out of rotation.
    pub unhealthy_after: u32,
    /// Consecutive successes (requests or probes) that bring it back.
    pub healthy_after: u32,
}

impl Default for HealthThresholds {
    fn default() -> Self {
        Self {
            unhealthy_after: 2,
            healthy_after: 2,
        }
    }
}

/// A change of health, for the caller to log once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthChange {
    WentUnhealthy,
    Recovered,
}

/// An exponentially weighted moving average in an `AtomicU64` (f64 bits; 0 = no data).
#[derive(Debug, Default)]
struct Ewma(AtomicU64);

impl Ewma {
    fn get(&self) -> Option<f64> {
        let bits = self.0.load(Ordering::Relaxed);
        (bits != 0).then(|| f64::from_bits(bits))
    }

    fn observe(&self, value: f64) {
        if !value.is_finite() || value <= 0.0 {
            return;
        }
        // A lost update under a race only drops one sample: no CAS loop needed.
        let next = match self.get() {
            Some(old) => old + EWMA_ALPHA * (value - old),
            None => value,
        };
        self.0.store(next.to_bits(), Ordering::Relaxed);
    }
}

/// Observed speed of one node, overall or for one model.
#[derive(Debug, Default)]
pub struct Speed {
    ttft_ms: Ewma,
    tokens_per_sec: Ewma,
    completion_tokens: Ewma,
}

impl Speed {
    pub fn ttft_ms(&self) -> Option<f64> {
        self.ttft_ms.get()
    }
    pub fn tokens_per_sec(&self) -> Option<f64> {
        self.tokens_per_sec.get()
    }
    pub fn completion_tokens(&self) -> Option<f64> {
        self.completion_tokens.get()
    }
}

/// One finished request, as speed estimates see it.
#[derive(Debug, Clone, Copy)]
pub struct SpeedSample {
    pub ttft: Option<Duration>,
    pub tokens_per_sec: Option<f64>,
    pub completion_tokens: Option<u64>,
    /// Whether the model had to be loaded first (so the TTFT measured a load).
    pub cold: bool,
}

/// The models believed resident on a node. Read in place by every placement
/// (one `ArcSwap` load); replaced whole only when the set changes: a
/// heartbeat listing other models, or a request for a model not routed here
/// lately. A request for a model routed here already only stamps its entry.
#[derive(Debug, Clone)]
struct Resident {
    /// From the latest heartbeat: canonical names loaded in memory.
    reported: Vec<String>,
    /// Models routed here since, each with when it was last.
    routed: Vec<Routed>,
    /// Most models ever seen loaded at once (at least 1): how many fit.
    capacity: usize,
    /// How many the agent says fit (`OLLAMA_MAX_LOADED_MODELS`), when it knows.
    declared: Option<usize>,
}

impl Default for Resident {
    fn default() -> Self {
        Self {
            reported: Vec::new(),
            routed: Vec::new(),
            capacity: 1,
            declared: None,
        }
    }
}

/// A model routed to a node, and when it last was. Stamped in place, so a
/// stamp that races with the entry's list being replaced can be lost: the
/// model then looks routed a moment earlier than it was, never gone.
#[derive(Debug)]
struct Routed {
    model: String,
    /// Microseconds after the node's `epoch`.
    at_us: AtomicU64,
    /// Rank of that routing among the node's: the highest is the latest.
    order: AtomicU64,
}

impl Clone for Routed {
    fn clone(&self) -> Self {
        Self::new(
            self.model.clone(),
            self.at_us.load(Ordering::Relaxed),
            self.order.load(Ordering::Relaxed),
        )
    }
}

impl Routed {
    fn new(model: String, at_us: u64, order: u64) -> Self {
        Self {
            model,
            at_us: AtomicU64::new(at_us),
            order: AtomicU64::new(order),
        }
    }

    /// Whether it was routed here less than `window` (µs) before `now_us`.
    fn within(&self, now_us: u64, window: u64) -> bool {
        now_us.saturating_sub(self.at_us.load(Ordering::Relaxed)) < window
    }

    fn stamp(&self, now_us: u64, order: u64) {
        self.at_us.store(now_us, Ordering::Relaxed);
        self.order.store(order, Ordering::Relaxed);
    }
}

/// [`RESIDENT_TTL`] in microseconds.
const RESIDENT_TTL_US: u64 = RESIDENT_TTL.as_micros() as u64;

impl Resident {
    /// Models that fit in memory at once: as declared, else as seen.
    fn slots(&self) -> usize {
        self.declared.unwrap_or(0).max(self.capacity).max(1)
    }

    fn routed(&self, model: &str) -> Option<&Routed> {
        self.routed.iter().find(|r| r.model == model)
    }

    fn is_resident(&self, model: &str, now_us: u64) -> bool {
        // Models routed here recently are loaded (or loading), and they push
        // older ones out when the node is full.
        let is_recent = |m: &str| {
            self.routed(m)
                .is_some_and(|r| r.within(now_us, RESIDENT_TTL_US))
        };
        if is_recent(model) {
            return true;
        }
        let recent = self
            .routed
            .iter()
            .filter(|r| r.within(now_us, RESIDENT_TTL_US))
            .count();
        let room = self.slots().saturating_sub(recent);
        self.reported
            .iter()
            .filter(|m| !is_recent(m))
            .take(room)
            .any(|m| m == model)
    }

    /// This list with `model` routed here at `now_us`: the oldest routed
    /// models beyond what fits are forgotten.
    fn with_routed(&self, model: &str, now_us: u64, order: u64) -> Self {
        let mut next = self.clone();
        match next.routed(model) {
            Some(entry) => entry.stamp(now_us, order),
            None => next
                .routed
                .push(Routed::new(model.to_owned(), now_us, order)),
        }
        let excess = next.routed.len().saturating_sub(next.slots());
        if excess > 0 {
            next.routed
                .sort_unstable_by_key(|r| r.order.load(Ordering::Relaxed));
            next.routed.drain(..excess);
        }
        next
    }
}

/// Speeds per model. Placement looks a model up in every candidate's table,
/// so the hash is a fast one (foldhash, seeded per process) rather than SipHash.
type SpeedTable = HashMap<String, Arc<Speed>, foldhash::fast::RandomState>;

/// Counters of a node that change on every request or heartbeat.
#[derive(Debug)]
pub struct NodeLive {
    /// In flight, held, slots, CPU and memory: this node's line of the
    /// [load table](super::load), which policies read without coming here.
    load: &'static NodeLoad,
    consecutive_failures: AtomicU32,
    consecutive_successes: AtomicU32,
    /// Times in a row the node failed again soon after it came back: each
    /// doubles the successes it needs next time, so a node that fails under
    /// traffic but answers probes does not flap in and out of rotation.
    relapses: AtomicU32,
    /// When (ms after `epoch`) the node last came back; 0 never.
    recovered_at_ms: AtomicU64,
    epoch: Instant,
    overall: Speed,
    /// Read on every placement without a lock; copied on the rare write (a
    /// model's first finished request here).
    per_model: ArcSwap<SpeedTable>,
    load_ms: Ewma,
    resident: ArcSwap<Resident>,
    /// Gives each routing of a model here its rank in [`Routed::order`].
    routings: AtomicU64,
    cold_loads: AtomicU64,
    /// Until when (ms after `epoch`) a model load sent here is expected to
    /// hold the node; 0 when none was.
    loading_until_ms: AtomicU64,
    /// Until when (ms after `epoch`) the node is taken to be unable to
    /// answer embedding requests (it said so); 0 when it never did.
    no_embeddings_until_ms: AtomicU64,
}

/// How long a node that said it cannot embed gets no embedding requests
/// before it is tried again (its server may have been restarted with
/// embeddings on).
pub const NO_EMBEDDINGS_FOR: Duration = Duration::from_secs(600);

impl Default for NodeLive {
    fn default() -> Self {
        Self {
            load: NodeLoad::allocate(),
            consecutive_failures: AtomicU32::new(0),
            consecutive_successes: AtomicU32::new(0),
            relapses: AtomicU32::new(0),
            recovered_at_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            overall: Speed::default(),
            per_model: ArcSwap::from_pointee(SpeedTable::default()),
            load_ms: Ewma::default(),
            resident: ArcSwap::from_pointee(Resident::default()),
            routings: AtomicU64::new(0),
            cold_loads: AtomicU64::new(0),
            loading_until_ms: AtomicU64::new(0),
            no_embeddings_until_ms: AtomicU64::new(0),
        }
    }
}

impl Drop for NodeLive {
    fn drop(&mut self) {
        self.load.release();
    }
}

impl NodeLive {
    /// This node's line of the load table: what placement reads. It is this
    /// node's only while this `NodeLive` lives (then another node's): keep it
    /// beside a reference to the node, as [`Candidate`](super::Candidate) does.
    pub(super) fn load_line(&self) -> &'static NodeLoad {
        self.load
    }

    pub fn in_flight(&self) -> u64 {
        self.load.in_flight()
    }

    /// See [`NodeLoad::busy`].
    pub fn busy(&self) -> u64 {
        self.load.busy()
    }

    /// See [`NodeLoad::load`].
    pub fn load(&self) -> u64 {
        self.load.load()
    }

    /// See [`NodeLoad::would_queue`].
    pub fn would_queue(&self) -> bool {
        self.load.would_queue()
    }

    /// See [`NodeLoad::saturated`].
    pub fn saturated(&self) -> bool {
        self.load.saturated()
    }

    /// Counts a request waiting in the router for this node until dropped.
    pub fn hold(self: &Arc<Self>) -> HeldGuard {
        self.load.held.fetch_add(1, Ordering::Relaxed);
        HeldGuard {
            live: Arc::clone(self),
        }
    }

    /// Stores what the node's server said of its own load (slots, queue), if
    /// anything, as the part of it that is not this router's: the router's
    /// own requests are counted live, so one that ends before the next report
    /// does not go on weighing on the node.
    ///
    /// The server counted the router's requests at some moment before the
    /// report arrived. Those are taken to be as many as the router had in
    /// flight at most since the previous report: a request that ran when the
    /// server looked and ended before its report came is not mistaken for
    /// another client's. (When the router's own load fell meanwhile, other
    /// clients' requests may be missed for one report, as before reports.)
    pub fn record_server_load(&self, load: Option<&llm_router_common::ServerLoad>) {
        self.load
            .record_others(load.and_then(llm_router_common::ServerLoad::busy));
    }

    /// Counts a request as in flight until the returned guard is dropped.
    pub fn start_request(self: &Arc<Self>) -> InFlightGuard {
        let now = self.load.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        self.load.in_flight_peak.fetch_max(now, Ordering::Relaxed);
        InFlightGuard {
            live: Arc::clone(self),
        }
    }

    /// Like [`Self::start_request`], unless `cap` requests are in flight already.
    pub fn try_start_request(self: &Arc<Self>, cap: u64) -> Option<InFlightGuard> {
        let before = self
            .load
            .in_flight
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < cap).then_some(n + 1)
            })
            .ok()?;
        self.load
            .in_flight_peak
            .fetch_max(before + 1, Ordering::Relaxed);
        Some(InFlightGuard {
            live: Arc::clone(self),
        })
    }

    // ---- health ----

    /// Whether the proxy should avoid the node (it is then tried only as a last resort).
    pub fn is_unhealthy(&self) -> bool {
        self.load.unhealthy()
    }

    /// Records a failed request or probe.
    pub fn record_failure(&self, thresholds: HealthThresholds) -> Option<HealthChange> {
        self.consecutive_successes.store(0, Ordering::Relaxed);
        let failures = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures >= thresholds.unhealthy_after.max(1)
            && !self.load.unhealthy.swap(true, Ordering::Relaxed)
        {
            let recovered = self.recovered_at_ms.load(Ordering::Relaxed);
            let relapsed = recovered != 0
                && self.millis_now().saturating_sub(recovered) < RELAPSE_WINDOW.as_millis() as u64;
            let relapses = if relapsed {
                (self.relapses.load(Ordering::Relaxed) + 1).min(MAX_RELAPSES)
            } else {
                0
            };
            self.relapses.store(relapses, Ordering::Relaxed);
            return Some(HealthChange::WentUnhealthy);
        }
        None
    }

    /// Records a successful request or probe.
    pub fn record_success(&self, thresholds: HealthThresholds) -> Option<HealthChange> {
        // The common case (healthy, no failures) is two plain loads.
        if !self.load.unhealthy() {
            if self.consecutive_failures.load(Ordering::Relaxed) != 0 {
                self.consecutive_failures.store(0, Ordering::Relaxed);
            }
            return None;
        }
        self.consecutive_failures.store(0, Ordering::Relaxed);
        let successes = self.consecutive_successes.fetch_add(1, Ordering::Relaxed) + 1;
        let needed = thresholds.healthy_after.max(1) << self.relapses.load(Ordering::Relaxed);
        if successes >= needed && self.load.unhealthy.swap(false, Ordering::Relaxed) {
            self.consecutive_successes.store(0, Ordering::Relaxed);
            self.recovered_at_ms
                .store(self.millis_now().max(1), Ordering::Relaxed);
            return Some(HealthChange::Recovered);
        }
        None
    }

    fn millis_now(&self) -> u64 {
        Instant::now()
            .saturating_duration_since(self.epoch)
            .as_millis() as u64
    }

    // ---- load ----

    pub fn cpu_percent(&self) -> f32 {
        self.load.cpu_percent()
    }

    pub fn memory_percent(&self) -> f32 {
        self.load.memory_percent()
    }

    /// See [`NodeLoad::parallel`].
    pub fn parallel(&self) -> Option<u32> {
        self.load.parallel()
    }

    /// Stores what a heartbeat said about load, slots and resident models.
    pub fn record_heartbeat(
        &self,
        cpu_percent: f32,
        memory_percent: f32,
        parallel: Option<u32>,
        loaded: Option<Vec<String>>,
    ) {
        self.load.record_machine(cpu_percent, memory_percent);
        self.record_registration(parallel, loaded);
    }

    /// Stores what a registration (or heartbeat) said about slots and, when it
    /// listed them, the models resident in memory.
    pub fn record_registration(&self, parallel: Option<u32>, loaded: Option<Vec<String>>) {
        self.load
            .parallel
            .store(parallel.unwrap_or(0), Ordering::Relaxed);
        if let Some(loaded) = loaded {
            let current = self.resident.load();
            if current.reported == loaded && current.capacity >= loaded.len() {
                return;
            }
            self.resident.rcu(|resident| Resident {
                capacity: resident.capacity.max(loaded.len()).max(1),
                reported: loaded.clone(),
                ..Resident::clone(resident)
            });
        }
    }

    // ---- speed ----

    /// Observed speed over all models.
    pub fn speed(&self) -> &Speed {
        &self.overall
    }

    /// Observed speed for one model (canonical name), if any request of it finished here.
    pub fn model_speed(&self, model: &str) -> Option<Arc<Speed>> {
        self.per_model.load().get(model).cloned()
    }

    /// `f` of the observed speed for one model, read in place (no reference
    /// count taken): what placement reads for every candidate.
    pub fn with_model_speed<R>(&self, model: &str, f: impl FnOnce(Option<&Speed>) -> R) -> R {
        let speeds = self.per_model.load();
        f(speeds.get(model).map(|speed| &**speed))
    }

    /// Observed time to load a model, in milliseconds.
    pub fn load_ms(&self) -> Option<f64> {
        self.load_ms.get()
    }

    /// Feeds one finished request into the speed averages.
    pub fn record_speed(&self, model: &str, sample: SpeedSample) {
        let known = self.per_model.load().get(model).cloned();
        let per_model = known.unwrap_or_else(|| {
            let mut added = None;
            self.per_model.rcu(|map| {
                let mut map = SpeedTable::clone(map);
                added = Some(Arc::clone(map.entry(model.to_owned()).or_default()));
                map
            });
            added.expect("rcu runs its closure at least once")
        });
        if let Some(ttft) = sample.ttft {
            let ms = ttft.as_secs_f64() * 1000.0;
            if sample.cold {
                // The load is over: its first token came.
                self.loading_until_ms.store(0, Ordering::Relaxed);
                // The first token waited for the load: learn the load time, not a TTFT.
                let warm = per_model
                    .ttft_ms()
                    .or(self.overall.ttft_ms())
                    .unwrap_or(0.0);
                self.load_ms.observe(ms - warm);
            } else {
                per_model.ttft_ms.observe(ms);
                self.overall.ttft_ms.observe(ms);
            }
        }
        if let Some(tps) = sample.tokens_per_sec {
            per_model.tokens_per_sec.observe(tps);
            self.overall.tokens_per_sec.observe(tps);
        }
        if let Some(tokens) = sample.completion_tokens {
            per_model.completion_tokens.observe(tokens as f64);
            self.overall.completion_tokens.observe(tokens as f64);
        }
    }

    // ---- resident models ----

    /// Notes that a request for `model` was sent here: the node will load it,
    /// evicting others if it is full. Returns whether it was believed resident.
    pub fn route_model(&self, model: &str, now: Instant) -> bool {
        let now_us = self.micros_at(now);
        let order = self.routings.fetch_add(1, Ordering::Relaxed) + 1;
        let current = self.resident.load();
        let was = current.is_resident(model, now_us);
        match current.routed(model) {
            // The usual case: a model that requests keep coming for.
            Some(entry) if current.routed.len() <= current.slots() => entry.stamp(now_us, order),
            _ => {
                self.resident
                    .rcu(|resident| resident.with_routed(model, now_us, order));
            }
        }
        was
    }

    /// Notes that `model` was unloaded here (an unload request was answered):
    /// it is no longer believed resident, until a heartbeat says otherwise.
    pub fn forget_model(&self, model: &str) {
        let current = self.resident.load();
        if current.routed(model).is_none() && !current.reported.iter().any(|m| m == model) {
            return;
        }
        self.resident.rcu(|resident| {
            let mut next = Resident::clone(resident);
            next.routed.retain(|r| r.model != model);
            next.reported.retain(|m| m != model);
            next
        });
    }

    /// Whether `model` is believed to be in memory on this node.
    pub fn is_resident(&self, model: &str, now: Instant) -> bool {
        self.resident.load().is_resident(model, self.micros_at(now))
    }

    /// `at` as microseconds after this node's `epoch` (0 before it).
    fn micros_at(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch).as_micros() as u64
    }

    /// How many models the node keeps in memory at once: what its agent
    /// declares, else the most it was ever seen holding (at least 1).
    pub fn memory_capacity(&self) -> usize {
        self.resident.load().slots()
    }

    /// Stores how many models the node's agent says fit in memory (`None`:
    /// it does not know, and the most seen loaded counts).
    pub fn record_memory_slots(&self, declared: Option<u32>) {
        let declared = declared.map(|n| n as usize).filter(|&n| n > 0);
        if self.resident.load().declared != declared {
            self.resident.rcu(|resident| Resident {
                declared,
                ..Resident::clone(resident)
            });
        }
    }

    /// The models (canonical names) believed to be in memory here, of `held`.
    pub fn resident_of<'a>(
        &self,
        held: impl IntoIterator<Item = &'a String>,
        now: Instant,
    ) -> Vec<String> {
        let resident = self.resident.load();
        let now_us = self.micros_at(now);
        held.into_iter()
            .filter(|m| resident.is_resident(m, now_us))
            .cloned()
            .collect()
    }

    /// Counts a request sent here for a model it did not have in memory.
    pub fn count_cold_load(&self) {
        self.cold_loads.fetch_add(1, Ordering::Relaxed);
        self.note_loading();
    }

    /// Notes that a model load was just sent here: for about as long as
    /// loads take on this node (5 s until one was measured), requests wait
    /// behind it, and their first tokens measure the load, not the node.
    pub fn note_loading(&self) {
        let load = self.load_ms().unwrap_or(5_000.0).max(0.0) as u64;
        self.loading_until_ms
            .fetch_max(self.millis_now() + load, Ordering::Relaxed);
    }

    /// Notes that the load sent here is over (a pre-load was answered).
    pub fn loaded(&self) {
        self.loading_until_ms.store(0, Ordering::Relaxed);
    }

    /// Whether a model load sent here is likely still holding the node.
    /// The node said it cannot answer embedding requests: it gets none for
    /// [`NO_EMBEDDINGS_FOR`], and its health is not at stake.
    pub fn mark_no_embeddings(&self) {
        let until = self.millis_now() + NO_EMBEDDINGS_FOR.as_millis() as u64;
        self.no_embeddings_until_ms.store(until, Ordering::Relaxed);
    }

    /// Whether the node said lately that it cannot embed.
    pub fn cannot_embed(&self) -> bool {
        self.millis_now() < self.no_embeddings_until_ms.load(Ordering::Relaxed)
    }

    pub fn is_loading(&self) -> bool {
        self.millis_now() < self.loading_until_ms.load(Ordering::Relaxed)
    }

    /// Requests sent here for a model it did not have in memory, since it registered.
    pub fn cold_loads(&self) -> u64 {
        self.cold_loads.load(Ordering::Relaxed)
    }

    /// Whether `model` is believed to be in memory here and, when it is not,
    /// how many other models requests still use (routed here within `window`):
    /// what loading `model` would evict. One read of the list for both.
    pub fn residency(&self, model: &str, now: Instant, window: Duration) -> Residency {
        let resident = self.resident.load();
        let now_us = self.micros_at(now);
        if resident.is_resident(model, now_us) {
            return Residency::Resident;
        }
        let window = window.as_micros() as u64;
        let busy_others = resident
            .routed
            .iter()
            .filter(|r| r.model != model && r.within(now_us, window))
            .count();
        Residency::Absent { busy_others }
    }
}

/// Whether a model is in memory on a node, for placement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Residency {
    Resident,
    /// Not in memory; loading it would evict `busy_others` models in use.
    Absent {
        busy_others: usize,
    },
}

/// A request waiting in the router for a slot on a node.
#[derive(Debug)]
pub struct HeldGuard {
    live: Arc<NodeLive>,
}

impl Drop for HeldGuard {
    fn drop(&mut self) {
        self.live.load.held.fetch_sub(1, Ordering::Relaxed);
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
        self.live.load.in_flight.fetch_sub(1, Ordering::SeqCst);
        SLOT_FREED.notify();
    }
}

/// Rung when any node's request ends, for requests waiting for a node under its cap.
pub static SLOT_FREED: Signal = Signal::new();

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

    #[test]
    fn a_node_is_full_only_when_its_reported_slots_are_busy_and_held_requests_weigh_in_its_load() {
        let live = Arc::new(NodeLive::default());
        let running = live.start_request();
        assert!(!live.saturated(), "slots not reported: never full");
        live.load.parallel.store(1, Ordering::Relaxed);
        assert!(live.saturated());
        let held = [live.hold(), live.hold()];
        assert_eq!((live.busy(), live.load()), (1, 3));
        drop(held);
        drop(running);
        assert_eq!((live.busy(), live.load()), (0, 0));
        assert!(!live.saturated());
    }

    #[test]
    fn a_servers_report_adds_other_clients_requests_and_not_the_routers_own_again() {
        let live = Arc::new(NodeLive::default());
        let report = |running: u32, waiting: u32| llm_router_common::ServerLoad {
            requests_running: Some(running),
            requests_waiting: Some(waiting),
            ..Default::default()
        };
        // A request of ours that the server saw but that ended before its
        // report came is not taken for another client's.
        drop(live.start_request());
        live.record_server_load(Some(&report(1, 0)));
        assert_eq!(live.busy(), 0);
        let ours = live.start_request();
        // The server counts our request and two of another client's.
        live.record_server_load(Some(&report(2, 1)));
        assert_eq!(live.busy(), 3);
        // Ours ends: the other client's two are still there until the next report.
        drop(ours);
        assert_eq!(live.busy(), 2);
        live.record_server_load(Some(&report(0, 0)));
        assert_eq!(live.busy(), 0);
        // A report that lags behind our requests never counts below them.
        let ours = [live.start_request(), live.start_request()];
        live.record_server_load(Some(&report(1, 0)));
        assert_eq!(live.busy(), 2);
        live.record_server_load(None);
        assert_eq!(live.busy(), 2);
        drop(ours);
        assert_eq!(live.busy(), 0);
    }

    #[test]
    fn health_needs_consecutive_failures_to_leave_and_successes_to_return() {
        let live = NodeLive::default();
        let t = HealthThresholds {
            unhealthy_after: 3,
            healthy_after: 2,
        };
        assert_eq!(live.record_failure(t), None);
        assert_eq!(live.record_failure(t), None);
        // A success in between resets the count: no flapping on sporadic errors.
        assert_eq!(live.record_success(t), None);
        assert_eq!(live.record_failure(t), None);
        assert_eq!(live.record_failure(t), None);
        assert_eq!(live.record_failure(t), Some(HealthChange::WentUnhealthy));
        assert!(live.is_unhealthy());
        assert_eq!(live.record_failure(t), None, "change reported once");
        assert_eq!(live.record_success(t), None);
        assert_eq!(live.record_failure(t), None);
        assert_eq!(live.record_success(t), None);
        assert_eq!(live.record_success(t), Some(HealthChange::Recovered));
        assert!(!live.is_unhealthy());
    }

    #[tokio::test(start_paused = true)]
    async fn a_node_that_relapses_soon_after_recovering_needs_twice_the_successes() {
        let live = NodeLive::default();
        let t = HealthThresholds {
            unhealthy_after: 2,
            healthy_after: 2,
        };
        let fail_twice = || {
            live.record_failure(t);
            live.record_failure(t)
        };
        assert_eq!(fail_twice(), Some(HealthChange::WentUnhealthy));
        assert_eq!(live.record_success(t), None);
        assert_eq!(live.record_success(t), Some(HealthChange::Recovered));
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(fail_twice(), Some(HealthChange::WentUnhealthy));
        for _ in 0..3 {
            assert_eq!(live.record_success(t), None);
        }
        assert_eq!(live.record_success(t), Some(HealthChange::Recovered));
        // Long healthy: the next failure starts from scratch.
        tokio::time::advance(Duration::from_secs(120)).await;
        assert_eq!(fail_twice(), Some(HealthChange::WentUnhealthy));
        assert_eq!(live.record_success(t), None);
        assert_eq!(live.record_success(t), Some(HealthChange::Recovered));
    }

    #[test]
    fn ewma_moves_toward_new_samples_and_ignores_nonsense() {
        let e = Ewma::default();
        assert_eq!(e.get(), None);
        e.observe(100.0);
        e.observe(200.0);
        assert!((e.get().unwrap() - 130.0).abs() < 1e-9);
        e.observe(f64::NAN);
        e.observe(-1.0);
        assert!((e.get().unwrap() - 130.0).abs() < 1e-9);
    }

    #[test]
    fn routing_a_model_to_a_full_node_evicts_the_reported_one() {
        let live = NodeLive::default();
        let now = Instant::now();
        live.record_heartbeat(0.0, 0.0, None, Some(vec!["a:latest".into()]));
        assert!(live.is_resident("a:latest", now));
        assert!(!live.route_model("b:latest", now));
        assert!(live.is_resident("b:latest", now));
        assert!(
            !live.is_resident("a:latest", now),
            "capacity 1: a was evicted"
        );
        assert!(live.route_model("b:latest", now));
    }

    #[tokio::test(start_paused = true)]
    async fn a_load_sent_here_holds_the_node_for_about_a_load_time() {
        let live = NodeLive::default();
        assert!(!live.is_loading());
        live.count_cold_load();
        assert_eq!(live.cold_loads(), 1);
        assert!(live.is_loading());
        // No load measured yet: 5 s.
        tokio::time::advance(Duration::from_millis(4_900)).await;
        assert!(live.is_loading());
        tokio::time::advance(Duration::from_millis(200)).await;
        assert!(!live.is_loading());
        // A load that is answered is over at once.
        live.note_loading();
        assert!(live.is_loading());
        live.loaded();
        assert!(!live.is_loading());
    }

    #[test]
    fn a_declared_memory_size_counts_before_any_is_seen() {
        let live = NodeLive::default();
        let now = Instant::now();
        assert_eq!(live.memory_capacity(), 1);
        live.record_memory_slots(Some(3));
        assert_eq!(live.memory_capacity(), 3);
        live.record_heartbeat(0.0, 0.0, None, Some(vec!["a:latest".into()]));
        // Room for two more before a is pushed out.
        live.route_model("b:latest", now);
        live.route_model("c:latest", now);
        assert!(live.is_resident("a:latest", now));
        live.route_model("d:latest", now);
        assert!(!live.is_resident("a:latest", now));
        // Not declared any more: what was seen (one at once) counts.
        live.record_memory_slots(None);
        assert_eq!(live.memory_capacity(), 1);
        live.record_memory_slots(Some(0));
        assert_eq!(live.memory_capacity(), 1);
    }

    #[test]
    fn the_model_routed_least_recently_is_the_one_evicted() {
        let live = NodeLive::default();
        live.record_memory_slots(Some(2));
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        live.route_model("a:latest", at(1));
        live.route_model("b:latest", at(2));
        // a again: now b is the older of the two, though a came first.
        assert!(live.route_model("a:latest", at(3)));
        assert!(!live.route_model("c:latest", at(4)));
        assert!(live.is_resident("a:latest", at(5)));
        assert!(live.is_resident("c:latest", at(5)));
        assert!(!live.is_resident("b:latest", at(5)));
        // A routed model not confirmed by a heartbeat is forgotten after its TTL.
        assert!(!live.is_resident("a:latest", at(3) + RESIDENT_TTL));
    }

    #[test]
    fn a_node_seen_with_two_models_keeps_two() {
        let live = NodeLive::default();
        let now = Instant::now();
        live.record_heartbeat(
            0.0,
            0.0,
            None,
            Some(vec!["a:latest".into(), "b:latest".into()]),
        );
        live.route_model("c:latest", now);
        assert!(live.is_resident("c:latest", now));
        assert!(live.is_resident("a:latest", now));
        assert!(!live.is_resident("b:latest", now));
    }

    #[test]
    fn cold_first_tokens_teach_the_load_time_not_the_ttft() {
        let live = NodeLive::default();
        let warm = SpeedSample {
            ttft: Some(Duration::from_millis(100)),
            tokens_per_sec: Some(50.0),
            completion_tokens: Some(10),
            cold: false,
        };
        live.record_speed("m", warm);
        live.record_speed(
            "m",
            SpeedSample {
                ttft: Some(Duration::from_millis(3100)),
                cold: true,
                ..warm
            },
        );
        assert_eq!(live.speed().ttft_ms(), Some(100.0));
        assert_eq!(live.load_ms(), Some(3000.0));
        assert_eq!(live.model_speed("m").unwrap().tokens_per_sec(), Some(50.0));
    }
}
