//! Coalescing writer of `agents.json`.
//!
//! Every change bumps a generation number. One background task writes the
//! whole registry whenever it is told to, so a burst of changes costs one
//! write (group commit). Registrations wait until a write that includes them
//! has reached the disk before they are acknowledged; heartbeats only ask
//! for a write within [`PersistQueue::lazy_delay`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, watch};

use super::NodeRegistry;
use super::store::RegistryStore;

/// How soon a change must reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Urgency {
    /// Write now: someone waits for the acknowledgement.
    Now,
    /// Write soon: routine updates such as heartbeats, batched.
    Soon,
}

/// Outcome of the latest write attempt, as generations.
#[derive(Debug, Clone, Copy, Default)]
struct Durability {
    /// Every change up to this generation is on disk.
    saved: u64,
    /// The latest attempt, covering changes up to this generation, failed.
    failed: u64,
}

/// Shared between the registry (which records changes) and the writer task.
#[derive(Debug)]
pub struct PersistQueue {
    generation: AtomicU64,
    urgent: Notify,
    lazy: Notify,
    durability: watch::Sender<Durability>,
    lazy_delay: Duration,
}

/// A change could not be written to disk.
#[derive(Debug, thiserror::Error)]
#[error("writing the registry file failed; the change is kept in memory and will be retried")]
pub struct NotDurable;

impl PersistQueue {
    pub fn new(lazy_delay: Duration) -> Self {
        Self {
            generation: AtomicU64::new(0),
            urgent: Notify::new(),
            lazy: Notify::new(),
            durability: watch::Sender::new(Durability::default()),
            lazy_delay,
        }
    }

    /// How long routine changes may wait before they are written.
    pub fn lazy_delay(&self) -> Duration {
        self.lazy_delay
    }

    /// Records that the registry changed; returns the change's generation.
    pub fn changed(&self, urgency: Urgency) -> u64 {
        let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        match urgency {
            Urgency::Now => self.urgent.notify_one(),
            Urgency::Soon => self.lazy.notify_one(),
        }
        generation
    }

    /// Waits until the change of `generation` is on disk.
    pub async fn durable(&self, generation: u64) -> Result<(), NotDurable> {
        let mut rx = self.durability.subscribe();
        let state = rx
            .wait_for(|d| d.saved >= generation || d.failed >= generation)
            .await
            .map_err(|_| NotDurable)?;
        if state.saved >= generation {
            Ok(())
        } else {
            Err(NotDurable)
        }
    }

    fn current(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn saved(&self) -> u64 {
        self.durability.borrow().saved
    }
}

/// Writes the registry once: reads the generation first so that a change
/// racing with the write is written again next time.
async fn write_once(registry: &NodeRegistry, store: &RegistryStore) -> bool {
    let queue = registry.persist_queue();
    let generation = queue.current();
    let contents = RegistryStore::encode(registry.persisted_nodes());
    let path = store.path().to_owned();
    let store = store.clone();
    let result = tokio::task::spawn_blocking(move || store.write_atomically(&contents)).await;
    match result {
        Ok(Ok(())) => {
            queue
                .durability
                .send_modify(|d| d.saved = d.saved.max(generation));
            true
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, path = %path.display(), "could not write the registry file; will retry");
            queue
                .durability
                .send_modify(|d| d.failed = d.failed.max(generation));
            false
        }
        Err(e) => {
            tracing::error!(error = %e, "registry writer task failed; will retry");
            queue
                .durability
                .send_modify(|d| d.failed = d.failed.max(generation));
            false
        }
    }
}

/// Runs until `shutdown` fires, then writes whatever is pending and returns.
pub async fn run_writer(
    registry: Arc<NodeRegistry>,
    store: RegistryStore,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let queue = Arc::clone(registry.persist_queue());
    let mut retry_delay = Duration::from_millis(100);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            () = queue.urgent.notified() => {}
            () = queue.lazy.notified() => {
                // Batch routine changes, but let an urgent one cut the wait short.
                tokio::select! {
                    () = tokio::time::sleep(queue.lazy_delay) => {}
                    () = queue.urgent.notified() => {}
                    () = &mut shutdown => break,
                }
            }
        }
        while queue.current() > queue.saved() {
            if write_once(&registry, &store).await {
                retry_delay = Duration::from_millis(100);
            } else {
                tokio::select! {
                    () = tokio::time::sleep(retry_delay) => {}
                    () = &mut shutdown => break,
                }
                retry_delay = (retry_delay * 2).min(Duration::from_secs(10));
            }
        }
    }
    if queue.current() > queue.saved() && !write_once(&registry, &store).await {
        tracing::error!(path = %store.path().display(), "final write of the registry file failed; recent changes are lost");
    }
}
