//! The heartbeat loop: one beat per interval, for as long as the coordinator knows the node.

use std::future::Future;
use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};

use crate::coordinator::CoordinatorError;

/// The heartbeat period: the shorter of the agent's own setting and the one the
/// coordinator asked for at registration (which it derives from its offline timeout;
/// `0` means it has no preference). Beating more often than asked is harmless, less
/// often would let the coordinator take a live node offline.
pub fn effective_heartbeat_interval(coordinator_secs: u64, setting: Duration) -> Duration {
    if coordinator_secs == 0 {
        setting
    } else {
        setting.min(Duration::from_secs(coordinator_secs))
    }
}

/// Calls `beat` every `interval` (the first one interval from now: the registration just
/// carried fresh data) and returns only when a beat answers 404 (the coordinator no
/// longer knows the node) or 401/403 (it no longer accepts the node's credential): the
/// node must register again. Any other failure is logged once
/// when the link breaks, and beats go on; a beat that succeeds after that logs the recovery.
pub async fn heartbeat_until_forgotten<F, Fut>(interval: Duration, mut beat: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), CoordinatorError>>,
{
    let mut ticker = tokio::time::interval_at(Instant::now() + interval, interval);
    // After a slow beat, keep the spacing rather than firing the missed beats in a burst.
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut failing_since: Option<Instant> = None;
    loop {
        ticker.tick().await;
        match beat().await {
            Ok(()) => {
                if let Some(since) = failing_since.take() {
                    tracing::info!(
                        failing_for_secs = since.elapsed().as_secs(),
                        "the coordinator accepts heartbeats again"
                    );
                }
                tracing::debug!("heartbeat sent");
            }
            Err(error) if error.is_not_found() => {
                tracing::warn!(%error, "the coordinator no longer knows this node; registering again");
                return;
            }
            Err(error) if error.is_refused_credential() => {
                tracing::warn!(%error, "the coordinator no longer accepts this node's credential; registering again");
                return;
            }
            Err(error) if failing_since.is_none() => {
                failing_since = Some(Instant::now());
                tracing::warn!(
                    %error,
                    every_secs = interval.as_secs_f64(),
                    "heartbeat failed; will keep trying every interval"
                );
            }
            Err(error) => tracing::debug!(%error, "heartbeat failed again"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use reqwest::{StatusCode, Url};

    use super::*;

    fn unreachable() -> CoordinatorError {
        CoordinatorError::Unreachable {
            url: Url::parse("http://c/").unwrap(),
            reason: "connection refused".to_owned(),
        }
    }

    fn status(code: u16) -> CoordinatorError {
        CoordinatorError::Rejected {
            url: Url::parse("http://c/").unwrap(),
            status: StatusCode::from_u16(code).unwrap(),
            message: String::new(),
        }
    }

    #[test]
    fn the_shorter_of_the_coordinators_and_the_agents_interval_wins() {
        let setting = Duration::from_secs(10);
        assert_eq!(
            effective_heartbeat_interval(3, setting),
            Duration::from_secs(3)
        );
        assert_eq!(
            effective_heartbeat_interval(30, setting),
            Duration::from_secs(10)
        );
        assert_eq!(effective_heartbeat_interval(0, setting), setting);
    }

    #[tokio::test(start_paused = true)]
    async fn beats_keep_their_interval_through_failures_until_a_404() {
        // Answers, in order: ok, down, down, 500, ok, 404.
        let mut script = vec![
            Ok(()),
            Err(unreachable()),
            Err(unreachable()),
            Err(status(500)),
            Ok(()),
            Err(status(404)),
        ]
        .into_iter();
        let beats = Arc::new(Mutex::new(Vec::new()));
        let recorded = Arc::clone(&beats);
        let start = Instant::now();
        heartbeat_until_forgotten(Duration::from_secs(10), || {
            recorded.lock().unwrap().push(start.elapsed());
            std::future::ready(script.next().expect("the loop went on after a 404"))
        })
        .await;
        assert_eq!(
            *beats.lock().unwrap(),
            [10, 20, 30, 40, 50, 60].map(Duration::from_secs).to_vec()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_coordinator_that_stays_down_never_ends_the_loop() {
        let beats = Arc::new(Mutex::new(0u32));
        let counted = Arc::clone(&beats);
        let looping = heartbeat_until_forgotten(Duration::from_secs(10), move || {
            *counted.lock().unwrap() += 1;
            std::future::ready(Err(unreachable()))
        });
        // A day and 5 s: the last beat (at 86 400 s) is well inside the window.
        let day = Duration::from_secs(24 * 60 * 60 + 5);
        assert!(tokio::time::timeout(day, looping).await.is_err());
        assert_eq!(*beats.lock().unwrap(), 8640);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_beat_does_not_cause_a_burst_afterwards() {
        let times = Arc::new(Mutex::new(Vec::new()));
        let recorded = Arc::clone(&times);
        let start = Instant::now();
        let mut beat_number = 0;
        let looping = heartbeat_until_forgotten(Duration::from_secs(10), move || {
            beat_number += 1;
            recorded.lock().unwrap().push(start.elapsed());
            // The first beat takes 25 s (a coordinator that hangs until a timeout).
            let delay = if beat_number == 1 { 25 } else { 0 };
            async move {
                tokio::time::sleep(Duration::from_secs(delay)).await;
                Ok(())
            }
        });
        let _ = tokio::time::timeout(Duration::from_secs(60), looping).await;
        assert_eq!(
            *times.lock().unwrap(),
            [10, 35, 45, 55].map(Duration::from_secs).to_vec()
        );
    }
}
