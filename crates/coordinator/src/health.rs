//! Health monitor: takes nodes whose heartbeats stopped out of rotation.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};

use crate::registry::NodeRegistry;

/// Checks every `interval` for nodes past the agent timeout, until `shutdown`.
pub async fn run_health_monitor(
    registry: Arc<NodeRegistry>,
    interval: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            _ = ticker.tick() => {
                let expired = registry.expire_stale(Instant::now());
                if !expired.is_empty() {
                    tracing::warn!(count = expired.len(), "nodes went offline: no heartbeat within the agent timeout");
                }
            }
        }
    }
}
