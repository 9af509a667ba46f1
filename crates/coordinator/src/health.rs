//! Health: the monitor that takes nodes whose heartbeats stopped offline,
//! and the prober that checks nodes the proxy took out of rotation.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};

use crate::proxy::{UpstreamClient, log_health_change};
use crate::registry::live::HealthThresholds;
use crate::registry::{NodeRegistry, RoutableNode};

/// Runs `tick` every `interval` (the first at once; a slow tick delays the
/// next rather than bunching them) until `shutdown` completes, which also
/// abandons a tick in progress.
pub async fn every<F, Fut>(
    interval: Duration,
    shutdown: impl std::future::Future<Output = ()>,
    mut tick: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            _ = ticker.tick() => {}
        }
        // Shutdown does not wait for a slow round either.
        tokio::select! {
            () = &mut shutdown => return,
            () = tick() => {}
        }
    }
}

/// Checks every `interval` for nodes past the agent timeout, until `shutdown`.
pub async fn run_health_monitor(
    registry: Arc<NodeRegistry>,
    interval: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) {
    every(interval, shutdown, || {
        let expired = registry.expire_stale(Instant::now());
        if !expired.is_empty() {
            tracing::warn!(
                count = expired.len(),
                "nodes went offline: no heartbeat within the agent timeout"
            );
        }
        std::future::ready(())
    })
    .await;
}

/// Probes nodes the proxy took out of rotation (`GET /api/version`) every
/// `interval`, so that a node that recovers rejoins without waiting for
/// live traffic to risk it. Successes and failures feed the same state
/// machine as proxied requests.
pub async fn run_node_prober(
    registry: Arc<NodeRegistry>,
    client: UpstreamClient,
    interval: Duration,
    thresholds: HealthThresholds,
    shutdown: impl std::future::Future<Output = ()>,
) {
    every(interval, shutdown, || {
        let snapshot = registry.snapshot();
        let client = &client;
        async move {
            let probes = snapshot
                .nodes
                .iter()
                .filter(|node| node.live.is_unhealthy())
                .map(|node| probe(client, node, interval, thresholds));
            futures::future::join_all(probes).await;
        }
    })
    .await;
}

async fn probe(
    client: &UpstreamClient,
    node: &Arc<RoutableNode>,
    timeout: Duration,
    thresholds: HealthThresholds,
) {
    let url = format!("{}/api/version", node.api_url);
    let answered = crate::proxy::get(client, &url, node.authorization.as_ref(), timeout)
        .await
        .is_ok_and(|(status, _)| !status.is_server_error());
    let change = if answered {
        node.live.record_success(thresholds)
    } else {
        node.live.record_failure(thresholds)
    };
    log_health_change(node, change);
}
