//! `GET /api/events`: server-sent events for the dashboard.
//!
//! Event `nodes` carries the full node list (the JSON of `GET /api/agents`, statistics
//! included) when the stream opens and whenever it changed since the last one sent. The
//! registry is polled instead of being subscribed to: heartbeats change a large fleet many
//! times a second, and a browser needs at most a couple of frames a second.

use std::convert::Infallible;
use std::time::Duration;

use axum::{
    extract::State,
    response::sse::{Event, KeepAlive, Sse},
};
use futures::{Stream, StreamExt};
use tokio::time::{Interval, MissedTickBehavior};

use crate::api::AppState;

/// How often the registry is compared with what the stream last sent.
pub const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// A comment line this often keeps proxies and load balancers from closing an idle stream.
pub const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(15);
/// How soon a browser reconnects after the stream broke (a coordinator restart).
pub const RECONNECT_AFTER: Duration = Duration::from_secs(1);

struct Poll {
    state: AppState,
    last_sent: Option<String>,
    interval: Interval,
}

pub async fn stream(
    State(state): State<AppState>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let mut interval = tokio::time::interval(POLL_INTERVAL);
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let poll = Poll {
        state: state.clone(),
        last_sent: None,
        interval,
    };
    let nodes = futures::stream::unfold(poll, |mut poll| async move {
        loop {
            // The first tick completes at once: a new stream starts with the current list.
            poll.interval.tick().await;
            let mut nodes = poll.state.registry.list();
            poll.state.stats.annotate_all(&mut nodes);
            let json = match serde_json::to_string(&nodes) {
                Ok(json) => json,
                Err(error) => {
                    tracing::error!(%error, "could not serialise the node list for /api/events");
                    continue;
                }
            };
            if poll.last_sent.as_deref() == Some(json.as_str()) {
                continue;
            }
            let mut event = Event::default().event("nodes").data(&json);
            if poll.last_sent.is_none() {
                event = event.retry(RECONNECT_AFTER);
            }
            poll.last_sent = Some(json);
            return Some((Ok(event), poll));
        }
    });
    // An endless response would hold a graceful shutdown forever: end it when the server
    // begins to stop (the browser reconnects to the next one on its own).
    let nodes = nodes.take_until(state.shutdown.clone().cancelled_owned());
    Sse::new(nodes).keep_alive(KeepAlive::new().interval(KEEP_ALIVE_INTERVAL))
}
