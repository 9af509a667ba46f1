//! One node's part of a task: the request to its Ollama, the progress lines it
//! streams back, and what ends it (success, an error line, a broken connection,
//! the node going offline, silence, or the task being cancelled).

use std::time::Duration;

use axum::http::{Method, StatusCode, header};
use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt as _, Full};
use llm_router_common::{ModelInfo, NodeId, NodeStatus};
use serde::Deserialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::task::{PartState, Task};
use crate::proxy::body::error_chain;
use crate::proxy::{HOP_HEADER, HOP_VALUE, UpstreamClient, node_error_message};
use crate::registry::{AgentlessTarget, NodeRegistry};

/// A node that sends no line for this long has stalled: its part fails.
pub const SILENCE_LIMIT: Duration = Duration::from_secs(300);
/// How often a running part checks that its node is still online.
const STATUS_CHECK_EVERY: Duration = Duration::from_secs(1);
/// The longest line a node may send; longer ones are not progress.
const MAX_LINE_BYTES: usize = 64 * 1024;
/// Calls that answer once (copy, delete) and the model list refresh.
const ONCE_TIMEOUT: Duration = Duration::from_secs(30);

/// What one node is asked to do.
#[derive(Debug, Clone)]
pub enum NodeCall {
    /// `POST path` with `body`, answered by a stream of Ollama progress lines.
    Stream { path: &'static str, body: Bytes },
    /// `method path` with `body`, answered once.
    Once {
        method: Method,
        path: &'static str,
        body: Bytes,
    },
}

/// How a part ended.
#[derive(Debug)]
enum End {
    Succeeded,
    Failed(String),
    Cancelled,
}

/// Everything a part needs besides the task.
pub struct PartRun<'a> {
    pub registry: &'a NodeRegistry,
    pub client: &'a UpstreamClient,
    pub server: AgentlessTarget,
    pub call: &'a NodeCall,
    pub cancel: &'a CancellationToken,
}

/// Runs part `index` of `task` to its end and records it.
pub async fn run_part(task: &Task, index: usize, run: PartRun<'_>) {
    let end = tokio::select! {
        end = exchange(task, index, &run) => end,
        () = run.cancel.cancelled() => End::Cancelled,
        reason = went_offline(run.registry, run.server.id) => End::Failed(reason),
    };
    let name = &run.server.machine_name;
    match end {
        End::Succeeded => {
            tracing::info!(task = %task.id, kind = task.kind.as_str(), model = %task.model, node = %name, "done on the node");
            task.end_part(index, PartState::Succeeded, None);
        }
        End::Failed(reason) => {
            tracing::warn!(task = %task.id, kind = task.kind.as_str(), model = %task.model, node = %name, %reason, "failed on the node");
            task.end_part(index, PartState::Failed, Some(reason));
        }
        End::Cancelled => {
            tracing::info!(task = %task.id, kind = task.kind.as_str(), model = %task.model, node = %name, "cancelled");
            task.end_part(index, PartState::Cancelled, Some("cancelled".into()));
        }
    }
}

/// Completes with the reason once node `id` is offline or gone.
async fn went_offline(registry: &NodeRegistry, id: NodeId) -> String {
    let mut every = tokio::time::interval(STATUS_CHECK_EVERY);
    loop {
        every.tick().await;
        match registry.get(id) {
            None => return "the node was removed from the fleet".into(),
            Some(node) if node.status == NodeStatus::Offline => {
                let why = node.status_reason.unwrap_or_else(|| "no heartbeat".into());
                return format!("the node went offline ({why})");
            }
            Some(_) => {}
        }
    }
}

fn request(
    server: &AgentlessTarget,
    method: Method,
    path: &str,
    body: Bytes,
) -> Result<hyper::Request<Full<Bytes>>, String> {
    let url = format!("{}{path}", server.api_url);
    let mut request = hyper::Request::builder()
        .method(method)
        .uri(&url)
        .header(header::CONTENT_TYPE, "application/json")
        .header(HOP_HEADER, HOP_VALUE);
    if let Some(value) = &server.authorization {
        request = request.header(header::AUTHORIZATION, value.clone());
    }
    request
        .body(Full::new(body))
        .map_err(|e| format!("{url} is not a usable URL: {e}"))
}

async fn exchange(task: &Task, index: usize, run: &PartRun<'_>) -> End {
    let (method, path, body, streamed) = match run.call {
        NodeCall::Stream { path, body } => (Method::POST, *path, body.clone(), true),
        NodeCall::Once { method, path, body } => (method.clone(), *path, body.clone(), false),
    };
    let request = match request(&run.server, method, path, body) {
        Ok(request) => request,
        Err(reason) => return End::Failed(reason),
    };
    let response = if streamed {
        run.client.request(request).await
    } else {
        match tokio::time::timeout(ONCE_TIMEOUT, run.client.request(request)).await {
            Ok(answer) => answer,
            Err(_) => return End::Failed(format!("no answer within {ONCE_TIMEOUT:?}")),
        }
    };
    let response = match response {
        Ok(response) => response,
        Err(e) => return End::Failed(format!("cannot reach the node: {}", error_chain(&e))),
    };
    let status = response.status();
    let mut body = response.into_body();
    if !status.is_success() {
        let text = read_some(&mut body).await;
        return End::Failed(node_said(status, &text));
    }
    if !streamed {
        return End::Succeeded;
    }
    follow_progress(task, index, &mut body).await
}

fn node_said(status: StatusCode, body: &str) -> String {
    format!(
        "the node answered {}: {}",
        status.as_u16(),
        node_error_message(body)
    )
}

/// Up to a few KiB of an error answer.
async fn read_some(body: &mut hyper::body::Incoming) -> String {
    let mut text = BytesMut::new();
    while text.len() < 8 * 1024 {
        match tokio::time::timeout(ONCE_TIMEOUT, body.frame()).await {
            Ok(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    text.extend_from_slice(&data);
                }
            }
            _ => break,
        }
    }
    String::from_utf8_lossy(&text).into_owned()
}

/// One line of Ollama's pull or create progress.
#[derive(Debug, Deserialize)]
struct ProgressLine<'a> {
    #[serde(default, borrow)]
    status: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    digest: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    total: Option<u64>,
    #[serde(default)]
    completed: Option<u64>,
    #[serde(default, borrow)]
    error: Option<std::borrow::Cow<'a, str>>,
}

/// Reads the node's progress lines into the task until the stream ends.
async fn follow_progress(task: &Task, index: usize, body: &mut hyper::body::Incoming) -> End {
    let mut pending = BytesMut::new();
    let mut last_status = String::new();
    let mut heard = Instant::now();
    loop {
        let frame = match tokio::time::timeout_at(heard + SILENCE_LIMIT, body.frame()).await {
            Err(_) => {
                return End::Failed(format!(
                    "the node sent no progress for {} s",
                    SILENCE_LIMIT.as_secs()
                ));
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                return End::Failed(format!("the connection broke mid-way: {}", error_chain(&e)));
            }
            Ok(Some(Ok(frame))) => frame,
        };
        heard = Instant::now();
        let Ok(data) = frame.into_data() else {
            continue;
        };
        pending.extend_from_slice(&data);
        while let Some(at) = pending.iter().position(|b| *b == b'\n') {
            let line = pending.split_to(at + 1);
            if let Some(end) = take_line(task, index, &line, &mut last_status) {
                return end;
            }
        }
        if pending.len() > MAX_LINE_BYTES {
            return End::Failed("the node sent a line too long to be progress".into());
        }
    }
    if !pending.is_empty() {
        let rest = pending.split();
        if let Some(end) = take_line(task, index, &rest, &mut last_status) {
            return end;
        }
    }
    if last_status == "success" {
        End::Succeeded
    } else {
        End::Failed("the node's answer ended before it said success".into())
    }
}

/// Records one line; `Some` when it ends the part (an error line).
fn take_line(task: &Task, index: usize, line: &[u8], last_status: &mut String) -> Option<End> {
    let line = line.trim_ascii();
    if line.is_empty() {
        return None;
    }
    let Ok(parsed) = serde_json::from_slice::<ProgressLine<'_>>(line) else {
        return Some(End::Failed(format!(
            "the node sent a line that is not progress: {}",
            node_error_message(&String::from_utf8_lossy(line))
        )));
    };
    if let Some(error) = parsed.error {
        return Some(End::Failed(error.into_owned()));
    }
    let status = parsed.status.as_deref().unwrap_or("");
    let layer = match (&parsed.digest, parsed.total) {
        (Some(digest), Some(total)) => {
            Some((digest.as_ref(), total, parsed.completed.unwrap_or(0)))
        }
        _ => None,
    };
    task.progress(index, status, layer);
    if last_status != status {
        status.clone_into(last_status);
    }
    None
}

/// Asks the node which models it holds now, so routing follows a pull or copy at once.
pub async fn refresh_models(
    registry: &NodeRegistry,
    client: &UpstreamClient,
    server: &AgentlessTarget,
) {
    let url = format!("{}/api/tags", server.api_url);
    let listed = crate::proxy::get(client, &url, server.authorization.as_ref(), ONCE_TIMEOUT)
        .await
        .and_then(|(status, body)| {
            if status.is_success() {
                serde_json::from_slice::<serde_json::Value>(&body).map_err(|e| e.to_string())
            } else {
                Err(format!("answered {status}"))
            }
        });
    match listed {
        Ok(body) => {
            let models: Vec<ModelInfo> = body["models"]
                .as_array()
                .map(|entries| {
                    entries
                        .iter()
                        .filter_map(ModelInfo::from_tags_entry)
                        .collect()
                })
                .unwrap_or_default();
            if let Err(error) = registry.update_models(server.id, Some(models), None) {
                tracing::debug!(node_id = %server.id, %error, "model list not updated");
            }
        }
        Err(error) => {
            tracing::debug!(node_id = %server.id, %error, "could not list the node's models after the task");
        }
    }
}
