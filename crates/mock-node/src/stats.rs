//! What the node saw, for tests to assert on: request counts per endpoint,
//! in-flight and cancelled generations, how model pulls ended, and the last
//! raw request bodies.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use axum::http::{HeaderMap, Method, Uri};
use bytes::Bytes;
use parking_lot::Mutex;
use serde::Serialize;

/// The routes the node answers, for per-endpoint counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Endpoint {
    Root,
    Health,
    Version,
    Tags,
    Ps,
    Show,
    Chat,
    Generate,
    Embed,
    Embeddings,
    Pull,
    Delete,
    Copy,
    Create,
    OpenAiModels,
    OpenAiModel,
    OpenAiChat,
    OpenAiCompletions,
    OpenAiEmbeddings,
    MockConfig,
    MockStats,
    MockRequests,
    /// Anything else (answered 404).
    Unknown,
}

impl Endpoint {
    /// Every endpoint, in a fixed order.
    pub const ALL: [Endpoint; 23] = [
        Endpoint::Root,
        Endpoint::Health,
        Endpoint::Version,
        Endpoint::Tags,
        Endpoint::Ps,
        Endpoint::Show,
        Endpoint::Chat,
        Endpoint::Generate,
        Endpoint::Embed,
        Endpoint::Embeddings,
        Endpoint::Pull,
        Endpoint::Delete,
        Endpoint::Copy,
        Endpoint::Create,
        Endpoint::OpenAiModels,
        Endpoint::OpenAiModel,
        Endpoint::OpenAiChat,
        Endpoint::OpenAiCompletions,
        Endpoint::OpenAiEmbeddings,
        Endpoint::MockConfig,
        Endpoint::MockStats,
        Endpoint::MockRequests,
        Endpoint::Unknown,
    ];

    /// The route, as shown in `/mock/stats`.
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Root => "/",
            Endpoint::Health => "/health",
            Endpoint::Version => "/api/version",
            Endpoint::Tags => "/api/tags",
            Endpoint::Ps => "/api/ps",
            Endpoint::Show => "/api/show",
            Endpoint::Chat => "/api/chat",
            Endpoint::Generate => "/api/generate",
            Endpoint::Embed => "/api/embed",
            Endpoint::Embeddings => "/api/embeddings",
            Endpoint::Pull => "/api/pull",
            Endpoint::Delete => "/api/delete",
            Endpoint::Copy => "/api/copy",
            Endpoint::Create => "/api/create",
            Endpoint::OpenAiModels => "/v1/models",
            Endpoint::OpenAiModel => "/v1/models/{model}",
            Endpoint::OpenAiChat => "/v1/chat/completions",
            Endpoint::OpenAiCompletions => "/v1/completions",
            Endpoint::OpenAiEmbeddings => "/v1/embeddings",
            Endpoint::MockConfig => "/mock/config",
            Endpoint::MockStats => "/mock/stats",
            Endpoint::MockRequests => "/mock/requests",
            Endpoint::Unknown => "unknown",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// One request as it arrived: the body is the exact bytes received.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub endpoint: Endpoint,
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl RecordedRequest {
    /// The request path, without the query.
    pub fn path(&self) -> &str {
        self.uri.path()
    }
}

/// Counters and recordings of one node. Counters are atomics; the recording
/// ring takes a short lock and is skipped entirely when its capacity is 0.
#[derive(Debug)]
pub struct MockStats {
    requests: [AtomicU64; Endpoint::ALL.len()],
    in_flight: AtomicU64,
    active: AtomicU64,
    loading: AtomicU64,
    completed: AtomicU64,
    cancelled: AtomicU64,
    aborted: AtomicU64,
    injected_failures: AtomicU64,
    model_loads: AtomicU64,
    evictions: AtomicU64,
    pulls_started: AtomicU64,
    pulls_in_flight: AtomicU64,
    pulls_succeeded: AtomicU64,
    pulls_failed: AtomicU64,
    pulls_cancelled: AtomicU64,
    recorded: Mutex<VecDeque<RecordedRequest>>,
    record_capacity: usize,
}

/// The counters at one moment, as `GET /mock/stats` shows them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatsSnapshot {
    /// Requests per route (routes never called are left out).
    pub requests: BTreeMap<&'static str, u64>,
    pub total_requests: u64,
    /// Generations accepted and not finished, including queued ones.
    pub in_flight: u64,
    /// Generations holding a slot.
    pub active: u64,
    /// Model loads under way.
    pub loading: u64,
    /// Generations whose response was fully sent.
    pub completed: u64,
    /// Generations dropped by the client before they were done.
    pub cancelled: u64,
    /// Generations cut off on purpose (`die_after_tokens`, node stop).
    pub aborted: u64,
    pub injected_failures: u64,
    pub model_loads: u64,
    pub evictions: u64,
    /// Pulls (`POST /api/pull`) that began downloading.
    pub pulls_started: u64,
    /// Pulls under way.
    pub pulls_in_flight: u64,
    /// Pulls that reached `success` (the model was added).
    pub pulls_succeeded: u64,
    /// Pulls the node ended with an error (`pull_fail_after_bytes`, node
    /// stop).
    pub pulls_failed: u64,
    /// Pulls whose client went away before the end.
    pub pulls_cancelled: u64,
    /// Requests currently remembered in the recording ring.
    pub recorded: usize,
}

impl MockStats {
    /// Empty stats remembering up to `record_capacity` requests.
    pub fn new(record_capacity: usize) -> Self {
        Self {
            requests: std::array::from_fn(|_| AtomicU64::new(0)),
            in_flight: AtomicU64::new(0),
            active: AtomicU64::new(0),
            loading: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            cancelled: AtomicU64::new(0),
            aborted: AtomicU64::new(0),
            injected_failures: AtomicU64::new(0),
            model_loads: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
            pulls_started: AtomicU64::new(0),
            pulls_in_flight: AtomicU64::new(0),
            pulls_succeeded: AtomicU64::new(0),
            pulls_failed: AtomicU64::new(0),
            pulls_cancelled: AtomicU64::new(0),
            recorded: Mutex::new(VecDeque::with_capacity(record_capacity)),
            record_capacity,
        }
    }

    /// Requests received on one endpoint.
    pub fn requests(&self, endpoint: Endpoint) -> u64 {
        self.requests[endpoint.index()].load(Relaxed)
    }

    /// Requests received on all endpoints.
    pub fn total_requests(&self) -> u64 {
        self.requests.iter().map(|c| c.load(Relaxed)).sum()
    }

    /// Generations (chat, generate, completions, embeddings) accepted and not
    /// yet finished, queued ones included. Drops when the response body is
    /// dropped, so a streaming response counts until its last byte.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Relaxed)
    }

    /// Generations holding one of the node's slots.
    pub fn active(&self) -> u64 {
        self.active.load(Relaxed)
    }

    /// Model loads under way (0 or 1: a load holds the whole node).
    pub fn loading(&self) -> u64 {
        self.loading.load(Relaxed)
    }

    /// Generations whose last byte was produced.
    pub fn completed(&self) -> u64 {
        self.completed.load(Relaxed)
    }

    /// Generations the client gave up on (disconnect, dropped stream).
    pub fn cancelled(&self) -> u64 {
        self.cancelled.load(Relaxed)
    }

    /// Generations the node cut off itself (`die_after_tokens`, stop).
    pub fn aborted(&self) -> u64 {
        self.aborted.load(Relaxed)
    }

    /// Requests answered with an injected 500.
    pub fn injected_failures(&self) -> u64 {
        self.injected_failures.load(Relaxed)
    }

    /// Model loads performed (each one stalls the node for the load time).
    pub fn model_loads(&self) -> u64 {
        self.model_loads.load(Relaxed)
    }

    /// Models pushed out of memory to make room for another.
    pub fn evictions(&self) -> u64 {
        self.evictions.load(Relaxed)
    }

    /// Pulls that began downloading.
    pub fn pulls_started(&self) -> u64 {
        self.pulls_started.load(Relaxed)
    }

    /// Pulls under way (started, not yet ended one way or another).
    pub fn pulls_in_flight(&self) -> u64 {
        self.pulls_in_flight.load(Relaxed)
    }

    /// Pulls that reached `success`.
    pub fn pulls_succeeded(&self) -> u64 {
        self.pulls_succeeded.load(Relaxed)
    }

    /// Pulls the node ended with an error (injected failure, node stop).
    pub fn pulls_failed(&self) -> u64 {
        self.pulls_failed.load(Relaxed)
    }

    /// Pulls whose client went away before the end.
    pub fn pulls_cancelled(&self) -> u64 {
        self.pulls_cancelled.load(Relaxed)
    }

    /// The remembered requests, oldest first.
    pub fn recorded(&self) -> Vec<RecordedRequest> {
        self.recorded.lock().iter().cloned().collect()
    }

    /// The most recent remembered request.
    pub fn last_request(&self) -> Option<RecordedRequest> {
        self.recorded.lock().back().cloned()
    }

    /// The most recent remembered request to `path`.
    pub fn last_request_to(&self, path: &str) -> Option<RecordedRequest> {
        self.recorded
            .lock()
            .iter()
            .rev()
            .find(|r| r.path() == path)
            .cloned()
    }

    /// Forgets the remembered requests.
    pub fn clear_recorded(&self) {
        self.recorded.lock().clear();
    }

    /// All counters at once.
    pub fn snapshot(&self) -> StatsSnapshot {
        let requests = Endpoint::ALL
            .iter()
            .map(|&e| (e.as_str(), self.requests(e)))
            .filter(|&(_, n)| n > 0)
            .collect();
        StatsSnapshot {
            requests,
            total_requests: self.total_requests(),
            in_flight: self.in_flight(),
            active: self.active(),
            loading: self.loading(),
            completed: self.completed(),
            cancelled: self.cancelled(),
            aborted: self.aborted(),
            injected_failures: self.injected_failures(),
            model_loads: self.model_loads(),
            evictions: self.evictions(),
            pulls_started: self.pulls_started(),
            pulls_in_flight: self.pulls_in_flight(),
            pulls_succeeded: self.pulls_succeeded(),
            pulls_failed: self.pulls_failed(),
            pulls_cancelled: self.pulls_cancelled(),
            recorded: self.recorded.lock().len(),
        }
    }

    pub(crate) fn count_request(&self, endpoint: Endpoint) {
        self.requests[endpoint.index()].fetch_add(1, Relaxed);
    }

    pub(crate) fn record(&self, request: RecordedRequest) {
        if self.record_capacity == 0 {
            return;
        }
        let mut ring = self.recorded.lock();
        if ring.len() == self.record_capacity {
            ring.pop_front();
        }
        ring.push_back(request);
    }

    pub(crate) fn records_requests(&self) -> bool {
        self.record_capacity > 0
    }

    pub(crate) fn count_injected_failure(&self) {
        self.injected_failures.fetch_add(1, Relaxed);
    }

    pub(crate) fn count_model_load(&self, evicted: usize) {
        self.model_loads.fetch_add(1, Relaxed);
        self.evictions.fetch_add(evicted as u64, Relaxed);
    }

    /// Counts a model load under way until the guard drops.
    pub(crate) fn load_started(self: &Arc<Self>) -> LoadingGuard {
        self.loading.fetch_add(1, Relaxed);
        LoadingGuard {
            stats: Arc::clone(self),
        }
    }

    pub(crate) fn slot_taken(self: &Arc<Self>) -> ActiveGuard {
        self.active.fetch_add(1, Relaxed);
        ActiveGuard {
            stats: Arc::clone(self),
        }
    }

    /// Starts counting a generation; the guard must travel with the response
    /// body so it ends when the body is dropped.
    pub(crate) fn generation_started(self: &Arc<Self>) -> GenerationGuard {
        self.in_flight.fetch_add(1, Relaxed);
        GenerationGuard {
            stats: Arc::clone(self),
            outcome: Outcome::Running,
        }
    }

    /// Starts counting a pull; the guard must travel with the response body
    /// (or the handler) so that dropping it early counts a cancellation.
    pub(crate) fn pull_started(self: &Arc<Self>) -> PullGuard {
        self.pulls_started.fetch_add(1, Relaxed);
        self.pulls_in_flight.fetch_add(1, Relaxed);
        PullGuard {
            stats: Arc::clone(self),
            outcome: PullOutcome::Running,
        }
    }
}

/// Keeps the `active` gauge up while a request holds a slot.
#[derive(Debug)]
pub(crate) struct ActiveGuard {
    stats: Arc<MockStats>,
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.stats.active.fetch_sub(1, Relaxed);
    }
}

/// Keeps the `loading` gauge up during a model load.
#[derive(Debug)]
pub(crate) struct LoadingGuard {
    stats: Arc<MockStats>,
}

impl Drop for LoadingGuard {
    fn drop(&mut self) {
        self.stats.loading.fetch_sub(1, Relaxed);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Running,
    Completed,
    Aborted,
}

/// Counts one generation as in flight until dropped. Dropped while still
/// running means the client went away: that counts as cancelled.
#[derive(Debug)]
pub(crate) struct GenerationGuard {
    stats: Arc<MockStats>,
    outcome: Outcome,
}

impl GenerationGuard {
    /// The whole response has been produced.
    pub(crate) fn complete(&mut self) {
        self.outcome = Outcome::Completed;
    }

    /// The node cut the response off on purpose.
    pub(crate) fn abort(&mut self) {
        self.outcome = Outcome::Aborted;
    }
}

impl Drop for GenerationGuard {
    fn drop(&mut self) {
        let counter = match self.outcome {
            Outcome::Running => &self.stats.cancelled,
            Outcome::Completed => &self.stats.completed,
            Outcome::Aborted => &self.stats.aborted,
        };
        counter.fetch_add(1, Relaxed);
        self.stats.in_flight.fetch_sub(1, Relaxed);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PullOutcome {
    Running,
    Succeeded,
    Failed,
}

/// Counts one pull as in flight until dropped. Dropped while still running
/// means the client went away: that counts as cancelled.
#[derive(Debug)]
pub(crate) struct PullGuard {
    stats: Arc<MockStats>,
    outcome: PullOutcome,
}

impl PullGuard {
    /// The pull reached `success`.
    pub(crate) fn succeed(&mut self) {
        self.outcome = PullOutcome::Succeeded;
    }

    /// The node ended the pull with an error.
    pub(crate) fn fail(&mut self) {
        self.outcome = PullOutcome::Failed;
    }
}

impl Drop for PullGuard {
    fn drop(&mut self) {
        let counter = match self.outcome {
            PullOutcome::Running => &self.stats.pulls_cancelled,
            PullOutcome::Succeeded => &self.stats.pulls_succeeded,
            PullOutcome::Failed => &self.stats.pulls_failed,
        };
        counter.fetch_add(1, Relaxed);
        self.stats.pulls_in_flight.fetch_sub(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_all_matches_discriminants() {
        for (i, e) in Endpoint::ALL.iter().enumerate() {
            assert_eq!(e.index(), i);
        }
    }

    #[test]
    fn dropping_a_running_guard_counts_a_cancellation() {
        let stats = Arc::new(MockStats::new(0));
        let running = stats.generation_started();
        let mut done = stats.generation_started();
        done.complete();
        assert_eq!(stats.in_flight(), 2);
        drop(running);
        drop(done);
        assert_eq!(stats.in_flight(), 0);
        assert_eq!(stats.cancelled(), 1);
        assert_eq!(stats.completed(), 1);
    }

    #[test]
    fn pull_guards_count_each_ending_once() {
        let stats = Arc::new(MockStats::new(0));
        let mut ok = stats.pull_started();
        let mut bad = stats.pull_started();
        let gone = stats.pull_started();
        assert_eq!((stats.pulls_started(), stats.pulls_in_flight()), (3, 3));
        ok.succeed();
        bad.fail();
        drop((ok, bad, gone));
        let snapshot = stats.snapshot();
        assert_eq!(
            (
                snapshot.pulls_in_flight,
                snapshot.pulls_succeeded,
                snapshot.pulls_failed,
                snapshot.pulls_cancelled
            ),
            (0, 1, 1, 1)
        );
    }

    #[test]
    fn recording_ring_keeps_the_last_n() {
        let stats = MockStats::new(2);
        for i in 0..3u8 {
            stats.record(RecordedRequest {
                endpoint: Endpoint::Chat,
                method: Method::POST,
                uri: Uri::from_static("/api/chat"),
                headers: HeaderMap::new(),
                body: Bytes::from(vec![i]),
            });
        }
        let bodies: Vec<_> = stats.recorded().into_iter().map(|r| r.body).collect();
        assert_eq!(bodies, [Bytes::from_static(&[1]), Bytes::from_static(&[2])]);
    }
}
