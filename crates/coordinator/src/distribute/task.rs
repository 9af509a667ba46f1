//! One operation on many nodes ([`Task`]) and its per-node parts: their state,
//! progress per layer, speed and error, and the JSON views of both.
//!
//! A part is updated once per progress line its node sends (Ollama sends a few a
//! second), under its own short lock; followers (the Ollama stream, the dashboard's
//! events) are woken through a `watch` channel and read a consistent view.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use llm_router_common::NodeId;
use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// What a task does on each of its nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskKind {
    Pull,
    Create,
    Copy,
    Delete,
}

impl TaskKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskKind::Pull => "pull",
            TaskKind::Create => "create",
            TaskKind::Copy => "copy",
            TaskKind::Delete => "delete",
        }
    }
}

/// Where one node's part of a task stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PartState {
    Running,
    Succeeded,
    Failed,
    Cancelled,
    /// Never started: the node was not a fit (offline, no room, not Ollama).
    Skipped,
}

impl PartState {
    pub fn is_final(self) -> bool {
        self != PartState::Running
    }
}

/// The task as a whole: running until every part ended, then succeeded only when
/// every started part did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

/// Bytes of one layer (blob) on one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    pub digest: String,
    pub total: u64,
    pub completed: u64,
}

/// The weight of the newest speed sample in the moving average.
const SPEED_WEIGHT: f64 = 0.3;
/// Samples closer together than this are merged, so bursts of lines do not spike the speed.
const SPEED_SAMPLE_EVERY: Duration = Duration::from_millis(500);

#[derive(Debug)]
struct Progress {
    state: PartState,
    /// The node's last status line ("pulling 8eeb52dfb3bb", "writing manifest").
    status: String,
    layers: Vec<Layer>,
    error: Option<String>,
    bytes_per_sec: Option<f64>,
    sampled: Option<(Instant, u64)>,
}

impl Progress {
    fn completed(&self) -> u64 {
        self.layers.iter().map(|l| l.completed).sum()
    }

    fn total(&self) -> u64 {
        self.layers.iter().map(|l| l.total).sum()
    }
}

/// One node's share of a task.
#[derive(Debug)]
pub struct Part {
    pub node_id: NodeId,
    pub name: String,
    progress: Mutex<Progress>,
}

/// One operation (pull, create, copy, delete) of one model on a set of nodes.
#[derive(Debug)]
pub struct Task {
    pub id: Uuid,
    pub kind: TaskKind,
    pub model: String,
    /// The new name of a copy.
    pub destination: Option<String>,
    pub created_at: DateTime<Utc>,
    started: Instant,
    pub parts: Vec<Part>,
    cancel: CancellationToken,
    changes: watch::Sender<u64>,
    /// When the last part ended.
    finished: Mutex<Option<(DateTime<Utc>, Instant)>>,
    /// Bumped on every change of any task, for the dashboard's event stream.
    fleet_changes: Arc<watch::Sender<u64>>,
    /// Every status without bytes that any node sent ("pulling manifest", "writing
    /// manifest"), once each, in the order first seen.
    statuses: Mutex<Vec<String>>,
}

/// The most distinct statuses a task keeps.
const MAX_STATUSES: usize = 32;

/// A node the task runs on, or one it skips and why.
#[derive(Debug, Clone)]
pub struct PartPlan {
    pub node_id: NodeId,
    pub name: String,
    pub skipped: Option<String>,
}

impl Task {
    pub(super) fn new(
        kind: TaskKind,
        model: String,
        destination: Option<String>,
        plans: Vec<PartPlan>,
        fleet_changes: Arc<watch::Sender<u64>>,
    ) -> Self {
        let parts = plans
            .into_iter()
            .map(|plan| Part {
                node_id: plan.node_id,
                name: plan.name,
                progress: Mutex::new(Progress {
                    state: if plan.skipped.is_some() {
                        PartState::Skipped
                    } else {
                        PartState::Running
                    },
                    status: if plan.skipped.is_some() {
                        "skipped".into()
                    } else {
                        "starting".into()
                    },
                    layers: Vec::new(),
                    error: plan.skipped,
                    bytes_per_sec: None,
                    sampled: None,
                }),
            })
            .collect();
        Self {
            id: Uuid::new_v4(),
            kind,
            model,
            destination,
            created_at: Utc::now(),
            started: Instant::now(),
            parts,
            cancel: CancellationToken::new(),
            changes: watch::Sender::new(0),
            finished: Mutex::new(None),
            fleet_changes,
            statuses: Mutex::new(Vec::new()),
        }
    }

    /// Cancelled by `DELETE /api/tasks/{id}`, or when the Ollama client that started it left.
    pub fn cancel_token(&self) -> &CancellationToken {
        &self.cancel
    }

    pub fn cancel(&self) {
        self.cancel.cancel();
    }

    /// Wakes on every change (the first `changed()` after subscribing waits for one).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn bump(&self) {
        self.changes.send_modify(|v| *v += 1);
        self.fleet_changes.send_modify(|v| *v += 1);
    }

    pub fn finished_at(&self) -> Option<Instant> {
        self.finished.lock().map(|(_, at)| at)
    }

    pub(super) fn mark_finished(&self) {
        *self.finished.lock() = Some((Utc::now(), Instant::now()));
        self.bump();
    }

    pub fn is_finished(&self) -> bool {
        self.finished.lock().is_some()
    }

    /// Records one status line of `part`'s node: its status, and a layer's bytes
    /// when it names a digest. Bytes never go backwards (a node retrying a layer
    /// may restart its count; the bar does not).
    pub fn progress(&self, part: usize, status: &str, layer: Option<(&str, u64, u64)>) {
        let Some(p) = self.parts.get(part) else {
            return;
        };
        {
            let mut progress = p.progress.lock();
            if progress.state.is_final() {
                return;
            }
            if progress.status != status {
                status.clone_into(&mut progress.status);
                if layer.is_none() && !status.is_empty() && status != "success" {
                    let mut statuses = self.statuses.lock();
                    if statuses.len() < MAX_STATUSES && !statuses.iter().any(|s| s == status) {
                        statuses.push(status.to_owned());
                    }
                }
            }
            if let Some((digest, total, completed)) = layer {
                let completed = if total > 0 {
                    completed.min(total)
                } else {
                    completed
                };
                match progress.layers.iter_mut().find(|l| l.digest == digest) {
                    Some(l) => {
                        l.total = l.total.max(total);
                        l.completed = l.completed.max(completed);
                    }
                    None => progress.layers.push(Layer {
                        digest: digest.to_owned(),
                        total,
                        completed,
                    }),
                }
                let now = Instant::now();
                let done = progress.completed();
                match progress.sampled {
                    None => progress.sampled = Some((now, done)),
                    Some((at, before)) if now.duration_since(at) >= SPEED_SAMPLE_EVERY => {
                        let rate = (done.saturating_sub(before)) as f64
                            / now.duration_since(at).as_secs_f64();
                        progress.bytes_per_sec = Some(match progress.bytes_per_sec {
                            Some(old) => old + SPEED_WEIGHT * (rate - old),
                            None => rate,
                        });
                        progress.sampled = Some((now, done));
                    }
                    Some(_) => {}
                }
            }
        }
        self.bump();
    }

    /// Ends `part` in `state` (with `error` when it failed); a part already ended keeps its end.
    pub fn end_part(&self, part: usize, state: PartState, error: Option<String>) {
        let Some(p) = self.parts.get(part) else {
            return;
        };
        {
            let mut progress = p.progress.lock();
            if progress.state.is_final() {
                return;
            }
            progress.state = state;
            progress.error = error;
            progress.status = state_word(state).to_owned();
            if state == PartState::Succeeded {
                for layer in &mut progress.layers {
                    layer.completed = layer.total;
                }
            }
        }
        self.bump();
    }

    /// The statuses without bytes seen so far, from the `from`-th on.
    pub fn statuses_from(&self, from: usize) -> Vec<String> {
        self.statuses
            .lock()
            .get(from..)
            .map(<[String]>::to_vec)
            .unwrap_or_default()
    }

    pub fn part_state(&self, part: usize) -> Option<PartState> {
        self.parts.get(part).map(|p| p.progress.lock().state)
    }

    /// The state of every part, with its node's name and error.
    pub fn part_states(&self) -> Vec<(NodeId, String, PartState, Option<String>)> {
        self.parts
            .iter()
            .map(|p| {
                let progress = p.progress.lock();
                (
                    p.node_id,
                    p.name.clone(),
                    progress.state,
                    progress.error.clone(),
                )
            })
            .collect()
    }

    /// Layers of every running or ended part (not skipped ones), for the Ollama stream.
    pub fn layers(&self) -> Vec<Vec<Layer>> {
        self.parts
            .iter()
            .map(|p| p.progress.lock())
            .filter(|p| p.state != PartState::Skipped)
            .map(|p| p.layers.clone())
            .collect()
    }

    pub fn state(&self) -> TaskState {
        let states: Vec<PartState> = self.parts.iter().map(|p| p.progress.lock().state).collect();
        task_state(&states, self.cancel.is_cancelled())
    }

    /// The task as `GET /api/tasks/{id}` shows it.
    pub fn view(&self) -> TaskView {
        let now = Instant::now();
        let parts: Vec<PartView> = self
            .parts
            .iter()
            .map(|p| {
                let progress = p.progress.lock();
                let total = progress.total();
                let completed = progress.completed();
                let speed = progress
                    .bytes_per_sec
                    .filter(|_| progress.state == PartState::Running);
                PartView {
                    node_id: p.node_id,
                    name: p.name.clone(),
                    state: progress.state,
                    status: progress.status.clone(),
                    total_bytes: total,
                    completed_bytes: completed,
                    bytes_per_sec: speed,
                    eta_secs: eta(total, completed, speed),
                    error: progress.error.clone(),
                }
            })
            .collect();
        let states: Vec<PartState> = parts.iter().map(|p| p.state).collect();
        let total_bytes = parts.iter().map(|p| p.total_bytes).sum();
        let completed_bytes = parts.iter().map(|p| p.completed_bytes).sum();
        let speeds: Vec<f64> = parts.iter().filter_map(|p| p.bytes_per_sec).collect();
        let bytes_per_sec = (!speeds.is_empty()).then(|| speeds.iter().sum());
        let eta_secs = parts
            .iter()
            .filter_map(|p| p.eta_secs)
            .fold(None, |max: Option<f64>, e| {
                Some(max.map_or(e, |m| m.max(e)))
            });
        let finished = *self.finished.lock();
        TaskView {
            id: self.id,
            kind: self.kind,
            model: self.model.clone(),
            destination: self.destination.clone(),
            state: task_state(&states, self.cancel.is_cancelled()),
            created_at: self.created_at,
            finished_at: finished.map(|(at, _)| at),
            elapsed_secs: finished
                .map_or(now, |(_, at)| at)
                .duration_since(self.started)
                .as_secs_f64(),
            total_bytes,
            completed_bytes,
            bytes_per_sec,
            eta_secs,
            nodes: parts,
        }
    }
}

fn eta(total: u64, completed: u64, speed: Option<f64>) -> Option<f64> {
    let speed = speed.filter(|s| *s > 0.0)?;
    (total > completed).then(|| (total - completed) as f64 / speed)
}

fn state_word(state: PartState) -> &'static str {
    match state {
        PartState::Running => "running",
        PartState::Succeeded => "success",
        PartState::Failed => "failed",
        PartState::Cancelled => "cancelled",
        PartState::Skipped => "skipped",
    }
}

fn task_state(parts: &[PartState], cancelled: bool) -> TaskState {
    if parts.contains(&PartState::Running) {
        return TaskState::Running;
    }
    if cancelled || parts.contains(&PartState::Cancelled) {
        return TaskState::Cancelled;
    }
    let started: Vec<_> = parts.iter().filter(|s| **s != PartState::Skipped).collect();
    if !started.is_empty() && started.iter().all(|s| **s == PartState::Succeeded) {
        TaskState::Succeeded
    } else {
        TaskState::Failed
    }
}

/// `GET /api/tasks/{id}`.
#[derive(Debug, Clone, Serialize)]
pub struct TaskView {
    pub id: Uuid,
    pub kind: TaskKind,
    pub model: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination: Option<String>,
    pub state: TaskState,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub elapsed_secs: f64,
    pub total_bytes: u64,
    pub completed_bytes: u64,
    pub bytes_per_sec: Option<f64>,
    /// Seconds until the slowest running node is done, at its current speed.
    pub eta_secs: Option<f64>,
    pub nodes: Vec<PartView>,
}

/// One node's part of a [`TaskView`].
#[derive(Debug, Clone, Serialize)]
pub struct PartView {
    pub node_id: NodeId,
    pub name: String,
    pub state: PartState,
    pub status: String,
    pub total_bytes: u64,
    pub completed_bytes: u64,
    pub bytes_per_sec: Option<f64>,
    pub eta_secs: Option<f64>,
    pub error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(n: usize) -> Task {
        let plans = (0..n)
            .map(|i| PartPlan {
                node_id: NodeId::new_v4(),
                name: format!("n{i}"),
                skipped: None,
            })
            .collect();
        Task::new(
            TaskKind::Pull,
            "m:latest".into(),
            None,
            plans,
            Arc::new(watch::Sender::new(0)),
        )
    }

    #[test]
    fn bytes_never_go_backwards_and_success_fills_the_layers() {
        let t = task(1);
        t.progress(0, "pulling aaa", Some(("sha256:aaa", 100, 60)));
        t.progress(0, "pulling aaa", Some(("sha256:aaa", 100, 20)));
        assert_eq!(t.view().completed_bytes, 60);
        t.end_part(0, PartState::Succeeded, None);
        let view = t.view();
        assert_eq!((view.completed_bytes, view.total_bytes), (100, 100));
        assert_eq!(view.state, TaskState::Succeeded);
    }

    #[test]
    fn one_failed_part_fails_the_task_and_an_ended_part_keeps_its_end() {
        let t = task(2);
        t.end_part(0, PartState::Succeeded, None);
        assert_eq!(t.state(), TaskState::Running);
        t.end_part(1, PartState::Failed, Some("disk full".into()));
        t.end_part(1, PartState::Succeeded, None);
        assert_eq!(t.state(), TaskState::Failed);
        assert_eq!(t.view().nodes[1].error.as_deref(), Some("disk full"));
    }

    #[test]
    fn only_skipped_parts_is_a_failure_and_cancel_wins() {
        assert_eq!(task_state(&[PartState::Skipped], false), TaskState::Failed);
        assert_eq!(
            task_state(&[PartState::Succeeded, PartState::Skipped], false),
            TaskState::Succeeded
        );
        assert_eq!(
            task_state(&[PartState::Succeeded, PartState::Cancelled], true),
            TaskState::Cancelled
        );
    }
}
