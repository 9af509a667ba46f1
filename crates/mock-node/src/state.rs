//! The shared state of one running node: configuration that never changes,
//! the runtime knobs, stats, model catalogue, slots and the stop signal.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use axum::extract::Request;
use axum::http::HeaderValue;
use bytes::Bytes;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::{ConfigError, MockConfig};
use crate::control::MockControl;
use crate::generation::Generation;
use crate::models::{ModelCatalog, ModelInfo};
use crate::scheduler::{Scheduler, SlotContext};
use crate::stats::{Endpoint, MockStats, RecordedRequest};

/// Largest request body the node reads (images travel inside bodies).
const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// Tells every waiting request and running stream that the node is going
/// away. The flag is for cheap checks between tokens, the token for waits.
#[derive(Debug, Default)]
pub(crate) struct StopSignal {
    stopped: AtomicBool,
    token: CancellationToken,
}

impl StopSignal {
    pub(crate) fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        self.token.cancel();
    }

    pub(crate) fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    pub(crate) async fn stopped(&self) {
        self.token.cancelled().await;
    }

    /// Runs `fut` unless the node stops first.
    pub(crate) async fn run_until_stopped<F: Future>(&self, fut: F) -> Option<F::Output> {
        if self.is_stopped() {
            return None;
        }
        self.token.run_until_cancelled(fut).await
    }

    /// Sleeps until `deadline` (not at all when it has passed). False when
    /// the node stops first.
    pub(crate) async fn pause_until(&self, deadline: Instant) -> bool {
        if deadline <= Instant::now() {
            return !self.is_stopped();
        }
        self.run_until_stopped(tokio::time::sleep_until(deadline))
            .await
            .is_some()
    }
}

/// One node's state, shared by its handlers. Build it with
/// [`MockState::new`], serve it with [`crate::serve`].
#[derive(Debug)]
pub struct MockState {
    name: Arc<str>,
    name_header: HeaderValue,
    version: String,
    embedding_dim: usize,
    keep_alive: std::time::Duration,
    hostile_headers: bool,
    control: Arc<MockControl>,
    stats: Arc<MockStats>,
    models: Arc<ModelCatalog>,
    scheduler: Scheduler,
    stop: StopSignal,
    next_id: AtomicU64,
}

/// An inference request that got past admission and must now be answered.
pub(crate) enum Admission {
    Admitted(Generation),
    /// The node stopped while the request waited.
    Stopped,
}

impl MockState {
    /// Checks `config` and builds the state of a node that serves it.
    pub fn new(config: MockConfig) -> Result<Arc<Self>, ConfigError> {
        config.validate()?;
        let name_header = HeaderValue::from_str(&config.name)
            .map_err(|_| ConfigError::Name(config.name.clone()))?;
        Ok(Arc::new(Self {
            name: Arc::from(config.name.as_str()),
            name_header,
            version: config.version.clone(),
            embedding_dim: config.embedding_dim,
            keep_alive: config.keep_alive,
            hostile_headers: config.hostile_headers,
            control: Arc::new(MockControl::new(&config)),
            stats: Arc::new(MockStats::new(config.record_capacity)),
            models: Arc::new(ModelCatalog::new(
                &config.models,
                &config.loaded_models,
                config.max_loaded_models,
            )),
            scheduler: Scheduler::new(config.parallel),
            stop: StopSignal::default(),
            next_id: AtomicU64::new(1),
        }))
    }

    /// The node's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Generation slots: how many run at once.
    pub fn parallel(&self) -> u32 {
        self.scheduler.parallel()
    }

    /// The runtime knobs.
    pub fn control(&self) -> &Arc<MockControl> {
        &self.control
    }

    /// What the node saw.
    pub fn stats(&self) -> &Arc<MockStats> {
        &self.stats
    }

    /// Held and loaded models.
    pub fn models(&self) -> &Arc<ModelCatalog> {
        &self.models
    }

    /// Stops the node: servers stop accepting and close their listener,
    /// waiting requests and running streams are cut off. Idempotent and
    /// final.
    pub fn stop(&self) {
        self.stop.stop();
    }

    /// Whether [`MockState::stop`] was called.
    pub fn is_stopped(&self) -> bool {
        self.stop.is_stopped()
    }

    pub(crate) fn stop_signal(&self) -> &StopSignal {
        &self.stop
    }

    pub(crate) fn hostile_headers(&self) -> bool {
        self.hostile_headers
    }

    pub(crate) fn name_header(&self) -> &HeaderValue {
        &self.name_header
    }

    pub(crate) fn version(&self) -> &str {
        &self.version
    }

    pub(crate) fn embedding_dim(&self) -> usize {
        self.embedding_dim
    }

    pub(crate) fn keep_alive(&self) -> std::time::Duration {
        self.keep_alive
    }

    /// A number unique within this node, for response ids.
    pub(crate) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Counts the request, remembers it as received and returns its body.
    /// `Err` carries the text of a 400 (body unreadable or too large).
    pub(crate) async fn receive(
        &self,
        endpoint: Endpoint,
        request: Request,
    ) -> Result<Bytes, String> {
        self.stats.count_request(endpoint);
        let (parts, body) = request.into_parts();
        let bytes = axum::body::to_bytes(body, MAX_BODY_BYTES)
            .await
            .map_err(|e| format!("could not read request body: {e}"))?;
        // The control endpoint is the test talking to the mock, not traffic.
        if self.stats.records_requests() && endpoint != Endpoint::MockConfig {
            self.stats.record(RecordedRequest {
                endpoint,
                method: parts.method,
                uri: parts.uri,
                headers: parts.headers,
                body: bytes.clone(),
            });
        }
        Ok(bytes)
    }

    /// Admits a generation: counts it in flight, waits for a slot (and a
    /// model load when needed), then for the time to first token.
    pub(crate) async fn admit(
        self: &Arc<Self>,
        model: &Arc<ModelInfo>,
        received: Instant,
        tokens: u64,
        prompt_tokens: u64,
    ) -> Admission {
        let mut guard = self.stats.generation_started();
        let ctx = SlotContext {
            catalog: &self.models,
            control: &self.control,
            stats: &self.stats,
            stop: &self.stop,
        };
        let Some(slot) = self.scheduler.acquire(model, ctx).await else {
            guard.abort();
            return Admission::Stopped;
        };
        let mut generation = Generation::new(
            Arc::clone(self),
            guard,
            slot,
            received,
            tokens,
            prompt_tokens,
        );
        if generation.wait_first_token().await.is_err() {
            generation.guard.abort();
            return Admission::Stopped;
        }
        Admission::Admitted(generation)
    }
}
