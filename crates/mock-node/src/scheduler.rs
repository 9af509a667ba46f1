//! Generation slots and model loading, the way Ollama schedules: at most
//! `parallel` generations at once, the rest wait first come first served,
//! and loading a model that is not in memory stalls the whole node.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::control::MockControl;
use crate::models::{ModelCatalog, ModelInfo};
use crate::state::StopSignal;
use crate::stats::{ActiveGuard, MockStats};

/// The node's generation slots.
#[derive(Debug)]
pub(crate) struct Scheduler {
    slots: Arc<Semaphore>,
    parallel: u32,
}

/// One generation slot, held until the response body is dropped.
#[derive(Debug)]
pub(crate) struct Slot {
    _permit: OwnedSemaphorePermit,
    _active: ActiveGuard,
    /// When the slot was ready for work (after any model load).
    pub(crate) ready_at: Instant,
    /// Time spent loading the model for this request.
    pub(crate) load_time: Duration,
}

/// What a slot request needs from the node.
pub(crate) struct SlotContext<'a> {
    pub(crate) catalog: &'a ModelCatalog,
    pub(crate) control: &'a MockControl,
    pub(crate) stats: &'a Arc<MockStats>,
    pub(crate) stop: &'a StopSignal,
}

impl Scheduler {
    pub(crate) fn new(parallel: usize) -> Self {
        let parallel = u32::try_from(parallel.max(1)).unwrap_or(u32::MAX);
        Self {
            slots: Arc::new(Semaphore::new(parallel as usize)),
            parallel,
        }
    }

    /// How many generations run at once.
    pub(crate) fn parallel(&self) -> u32 {
        self.parallel
    }

    /// Waits for a slot with `model` in memory, loading it first when it is
    /// not. `None` when the node stops while waiting.
    pub(crate) async fn acquire(
        &self,
        model: &Arc<ModelInfo>,
        ctx: SlotContext<'_>,
    ) -> Option<Slot> {
        // The semaphore is fair, so `try_acquire` never jumps the queue.
        let permit = match Arc::clone(&self.slots).try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => ctx
                .stop
                .run_until_stopped(Arc::clone(&self.slots).acquire_owned())
                .await?
                .ok()?,
        };
        if ctx.catalog.touch(&model.name) {
            return Some(Slot {
                _permit: permit,
                _active: ctx.stats.slot_taken(),
                ready_at: Instant::now(),
                load_time: Duration::ZERO,
            });
        }
        // Loading needs the whole node: hold every slot, so running
        // generations finish first and queued requests wait behind the load.
        drop(permit);
        let mut all = ctx
            .stop
            .run_until_stopped(Arc::clone(&self.slots).acquire_many_owned(self.parallel))
            .await?
            .ok()?;
        let started = Instant::now();
        if !ctx.catalog.touch(&model.name) {
            let _loading = ctx.stats.load_started();
            let load = ctx.control.load_time();
            if !load.is_zero() && !ctx.stop.pause_until(started + load).await {
                return None;
            }
            let evicted = ctx.catalog.insert_loaded(model);
            ctx.stats.count_model_load(evicted);
        }
        let permit = if self.parallel > 1 {
            // Keep one slot, hand the others back.
            all.split(1)?
        } else {
            all
        };
        let ready_at = Instant::now();
        Some(Slot {
            _permit: permit,
            _active: ctx.stats.slot_taken(),
            ready_at,
            load_time: ready_at - started,
        })
    }
}
