//! Coalescing writer of the registry's files (see [`super::store`]).
//!
//! Every change marks its node and bumps a generation number. One background
//! task writes whenever it is told to, so a burst of changes costs one write
//! (group commit): the changed nodes appended to the journal, or the whole
//! registry when the journal is due for compaction. Changes are acknowledged
//! only once a write that includes them has reached the disk.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, watch};

use super::NodeRegistry;
use super::store::{COMPACT_AFTER, Change, RegistryStore};

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
    durability: watch::Sender<Durability>,
}

/// A change could not be written to disk.
#[derive(Debug, thiserror::Error)]
#[error("writing the registry file failed; the change is kept in memory and will be retried")]
pub struct NotDurable;

impl Default for PersistQueue {
    fn default() -> Self {
        Self::new()
    }
}

impl PersistQueue {
    pub fn new() -> Self {
        Self {
            generation: AtomicU64::new(0),
            urgent: Notify::new(),
            durability: watch::Sender::new(Durability::default()),
        }
    }

    /// Records that the registry changed (after the changed nodes were marked);
    /// returns the change's generation.
    pub fn changed(&self) -> u64 {
        let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        self.urgent.notify_one();
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

/// Writes the changes marked since the last write, or the whole registry when
/// `whole` or the journal is due for compaction. Reads the generation first, so
/// that a change racing with the write is written again next time.
async fn write_once(registry: &NodeRegistry, store: &RegistryStore, whole: bool) -> bool {
    let queue = registry.persist_queue();
    let generation = queue.current();
    let changed = registry.take_changed();
    let compact =
        whole || store.journal_lines() + changed.len() > COMPACT_AFTER.max(2 * registry.len());
    let path = store.path().to_owned();
    let store = store.clone();
    let result = if compact {
        let contents = RegistryStore::encode(registry.persisted_nodes(), store.journal_seq());
        tokio::task::spawn_blocking(move || store.write_whole(&contents)).await
    } else {
        let changes: Vec<Change> = changed
            .iter()
            .map(|&id| {
                registry
                    .persisted_node(id)
                    .map_or(Change::Removed(id), |node| Change::Node(Box::new(node)))
            })
            .collect();
        if changes.is_empty() {
            Ok(Ok(()))
        } else {
            tokio::task::spawn_blocking(move || store.append(&changes)).await
        }
    };
    let error = match result {
        Ok(Ok(())) => {
            queue
                .durability
                .send_modify(|d| d.saved = d.saved.max(generation));
            return true;
        }
        Ok(Err(e)) => e.to_string(),
        Err(e) => format!("the writer task failed: {e}"),
    };
    tracing::error!(%error, path = %path.display(), "could not write the registry; will retry");
    registry.mark_changed(changed);
    queue
        .durability
        .send_modify(|d| d.failed = d.failed.max(generation));
    false
}

/// Runs until `shutdown` fires, then writes whatever is pending and returns.
pub async fn run_writer(
    registry: Arc<NodeRegistry>,
    store: RegistryStore,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let queue = Arc::clone(registry.persist_queue());
    let mut retry_delay = Duration::from_millis(100);
    // A journal left from the last run is folded into agents.json at once.
    let mut whole = store.journal_lines() > 0;
    tokio::pin!(shutdown);
    loop {
        if !whole {
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                () = queue.urgent.notified() => {}
            }
        }
        while whole || queue.current() > queue.saved() {
            if write_once(&registry, &store, std::mem::take(&mut whole)).await {
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
    // The last write is whole: a clean stop leaves one file with the latest of everything.
    if !write_once(&registry, &store, true).await {
        tracing::error!(path = %store.path().display(), "final write of the registry file failed; recent changes are lost");
    }
}
