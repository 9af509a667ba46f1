//! `GET /api/events`: server-sent events for the dashboard.
//!
//! Event `nodes` carries the full node list (the JSON of `GET /api/agents`, statistics
//! included) when the stream opens and whenever it changed since the last one sent; event
//! `tasks` carries `GET /api/tasks` whenever a pull, copy or delete made progress (and
//! when the stream opens, if there are tasks). The
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

/// How often the registry is compared with what the stream last sent: a change shows in
/// the browser within this and a frame. Each tick costs one serialisation of the node
/// list per open dashboard.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);
/// A comment line this often keeps proxies and load balancers from closing an idle stream.
pub const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(15);
/// How soon a browser reconnects after the stream broke (a coordinator restart).
pub const RECONNECT_AFTER: Duration = Duration::from_secs(1);

struct Poll {
    state: AppState,
    last_sent: Option<String>,
    interval: Interval,
    tasks: tokio::sync::watch::Receiver<u64>,
    /// A `tasks` event due after the `nodes` one of the same tick.
    tasks_due: Option<Event>,
}

/// The `tasks` event, when the task list changed since the stream last sent it.
fn tasks_event(poll: &mut Poll, opening: bool) -> Option<Event> {
    let changed = poll.tasks.has_changed().unwrap_or(false);
    poll.tasks.mark_unchanged();
    let tasks: Vec<_> = poll.state.models.list().iter().map(|t| t.view()).collect();
    let news = changed || (opening && !tasks.is_empty());
    if !news {
        return None;
    }
    match serde_json::to_string(&serde_json::json!({ "tasks": tasks })) {
        Ok(json) => Some(Event::default().event("tasks").data(json)),
        Err(error) => {
            tracing::error!(%error, "could not serialise the task list for /api/events");
            None
        }
    }
}

pub async fn stream(
    State(state): State<AppState>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let mut interval = tokio::time::interval(POLL_INTERVAL);
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let poll = Poll {
        tasks: state.models.subscribe(),
        state: state.clone(),
        last_sent: None,
        interval,
        tasks_due: None,
    };
    let nodes = futures::stream::unfold(poll, |mut poll| async move {
        loop {
            if let Some(event) = poll.tasks_due.take() {
                return Some((Ok(event), poll));
            }
            // The first tick completes at once: a new stream starts with the current list.
            poll.interval.tick().await;
            let opening = poll.last_sent.is_none();
            poll.tasks_due = tasks_event(&mut poll, opening);
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::body::Body;
    use axum::http::{Request, header};
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;
    use crate::api::app;
    use crate::config::Config;

    /// The next data frame of an event stream, as text.
    async fn next_event(body: &mut Body) -> Option<String> {
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
                .await
                .expect("no event within 5 s")?
                .unwrap();
            if let Ok(data) = frame.into_data() {
                return Some(String::from_utf8(data.to_vec()).unwrap());
            }
        }
    }

    #[tokio::test]
    async fn sends_the_node_list_at_once_then_on_change_and_ends_on_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        let (registry, _store) =
            crate::server::load_registry(&Config::with_data_dir(dir.path())).unwrap();
        let state = AppState::new(Arc::clone(&registry), Default::default()).unwrap();
        let shutdown = state.shutdown.clone();
        let response = app(state)
            .oneshot(Request::get("/api/events").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "text/event-stream"
        );
        let mut body = response.into_body();

        let first = next_event(&mut body).await.unwrap();
        assert!(first.contains("event: nodes\n"), "{first:?}");
        assert!(first.contains("data: []\n"), "{first:?}");
        assert!(first.contains("retry: 1000\n"), "{first:?}");

        let request = serde_json::from_value(serde_json::json!({
            "machine_name": "events-test",
            "ip_address": "127.0.0.1",
            "ollama_port": 11434,
            "models": [{"name": "llama3.2:latest"}]
        }))
        .unwrap();
        registry.register(request).unwrap();
        let second = next_event(&mut body).await.unwrap();
        assert!(second.contains("event: nodes\n"), "{second:?}");
        let data = second
            .lines()
            .find_map(|line| line.strip_prefix("data: "))
            .unwrap();
        let nodes: serde_json::Value = serde_json::from_str(data).unwrap();
        assert_eq!(nodes[0]["machine_name"], "events-test");
        assert!(
            nodes[0]["stats"].is_object(),
            "statistics are included: {nodes}"
        );
        assert!(!second.contains("retry:"), "{second:?}");

        shutdown.cancel();
        assert_eq!(
            next_event(&mut body).await,
            None,
            "the stream ends on shutdown"
        );
    }
}
