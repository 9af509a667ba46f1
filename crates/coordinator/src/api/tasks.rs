//! Models across the fleet over HTTP: the management API (`/api/models/pull`,
//! `/api/models/copy`, `/api/models/delete`, `/api/tasks`) and Ollama's own
//! model endpoints (`/api/pull`, `/api/create`, `/api/copy`, `/api/delete`),
//! which run on many nodes through [`crate::distribute`].
//!
//! An Ollama pull or create streams one progress for the whole fleet in Ollama's
//! format (or answers once with `stream: false`); the client leaving cancels it,
//! as Ollama does. Which nodes: the coordinator's default (`--pull-targets`), or
//! the `X-LLM-Router-Nodes` header (`all`, or node names or ids, comma-separated).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::{
    Json, Router,
    body::{Body, Bytes},
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{delete, get, post},
};
use bytes::BytesMut;
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::{ApiJson, ApiPath, AppState};
use crate::distribute::progress::{OllamaProgress, failure};
use crate::distribute::{NodeChoice, Operation, StartError, Task, TaskState};
use crate::error::ApiError;

/// Header naming the nodes of an Ollama pull or create.
pub const NODES_HEADER: &str = "x-llm-router-nodes";
/// Progress lines that arrive together go out in one chunk, at most this often.
const COALESCE: Duration = Duration::from_millis(100);

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/models/pull", post(start_pull))
        .route("/api/models/copy", post(start_copy))
        .route("/api/models/delete", post(start_delete))
        .route("/api/tasks", get(list))
        .route("/api/tasks/{id}", get(show).delete(cancel))
}

pub fn ollama_routes() -> Router<AppState> {
    Router::new()
        .route("/api/pull", post(ollama_pull))
        .route("/api/create", post(ollama_create))
        .route("/api/copy", post(ollama_copy))
        .route("/api/delete", delete(ollama_delete))
}

/// `nodes` of a management request: `"all"`, a list of names or ids, or `{"count": N}`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Nodes {
    Word(String),
    List(Vec<String>),
    Count { count: usize },
}

fn choice(nodes: Option<Nodes>) -> Result<NodeChoice, ApiError> {
    match nodes {
        None => Ok(NodeChoice::Default),
        Some(Nodes::Word(word)) if word == "all" => Ok(NodeChoice::All),
        Some(Nodes::Word(word)) => Err(ApiError::Unprocessable(format!(
            "nodes must be \"all\", a list of node names or ids, or {{\"count\": N}}, not {word:?}"
        ))),
        Some(Nodes::List(names)) if names.is_empty() => {
            Err(ApiError::Unprocessable("nodes lists no node".into()))
        }
        Some(Nodes::List(names)) => Ok(NodeChoice::Named(names)),
        Some(Nodes::Count { count: 0 }) => {
            Err(ApiError::Unprocessable("count must be at least 1".into()))
        }
        Some(Nodes::Count { count }) => Ok(NodeChoice::Count(count)),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PullBody {
    model: String,
    #[serde(default)]
    nodes: Option<Nodes>,
    #[serde(default)]
    insecure: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CopyBody {
    source: String,
    destination: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteBody {
    model: String,
    #[serde(default)]
    nodes: Option<Nodes>,
}

fn start_error(error: StartError) -> ApiError {
    match error {
        StartError::BadRequest(message) => ApiError::Unprocessable(message),
        StartError::BadNodeName(e) => ApiError::Unprocessable(e.to_string()),
        StartError::NotHeld(model) => {
            ApiError::NotFound(format!("model '{model}' not found on any node"))
        }
        e @ StartError::NoTargets(_) => ApiError::Conflict(e.to_string()),
        e @ StartError::Busy => ApiError::Unavailable(e.to_string()),
    }
}

fn started(task: &Task) -> Response {
    (StatusCode::ACCEPTED, Json(task.view())).into_response()
}

/// `POST /api/models/pull`: starts a pull; answers 202 with the task.
async fn start_pull(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<PullBody>,
) -> Result<Response, ApiError> {
    let operation = Operation::Pull {
        model: body.model,
        insecure: body.insecure,
    };
    let task = state
        .models
        .start(operation, &choice(body.nodes)?)
        .map_err(start_error)?;
    Ok(started(&task))
}

/// `POST /api/models/copy`: copies a model on every node that holds it.
async fn start_copy(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CopyBody>,
) -> Result<Response, ApiError> {
    let operation = Operation::Copy {
        source: body.source,
        destination: body.destination,
    };
    let task = state
        .models
        .start(operation, &NodeChoice::Default)
        .map_err(start_error)?;
    Ok(started(&task))
}

/// `POST /api/models/delete`: deletes a model from the nodes that hold it (or those named).
async fn start_delete(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<DeleteBody>,
) -> Result<Response, ApiError> {
    let operation = Operation::Delete { model: body.model };
    let task = state
        .models
        .start(operation, &choice(body.nodes)?)
        .map_err(start_error)?;
    Ok(started(&task))
}

/// `GET /api/tasks`: running tasks and those ended within the hour, newest first.
async fn list(State(state): State<AppState>) -> Json<Value> {
    let tasks: Vec<_> = state.models.list().iter().map(|t| t.view()).collect();
    Json(json!({ "tasks": tasks }))
}

fn find(state: &AppState, id: Uuid) -> Result<Arc<Task>, ApiError> {
    state.models.get(id).ok_or_else(|| {
        ApiError::NotFound(format!(
            "task {id} is not known (finished tasks are kept for an hour)"
        ))
    })
}

async fn show(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Response, ApiError> {
    Ok(Json(find(&state, id)?.view()).into_response())
}

/// `DELETE /api/tasks/{id}`: cancels the task; its nodes' requests are closed.
async fn cancel(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Response, ApiError> {
    let task = find(&state, id)?;
    if !task.is_finished() {
        tracing::info!(task = %task.id, model = %task.model, "task cancelled by an operator");
        task.cancel();
    }
    Ok((StatusCode::ACCEPTED, Json(task.view())).into_response())
}

/// Which nodes the `X-LLM-Router-Nodes` header names, if it is there.
fn header_choice(headers: &HeaderMap) -> Result<NodeChoice, ApiError> {
    let Some(value) = headers.get(NODES_HEADER) else {
        return Ok(NodeChoice::Default);
    };
    let text = value
        .to_str()
        .map_err(|_| ApiError::BadRequest(format!("{NODES_HEADER} is not text")))?
        .trim();
    if text.eq_ignore_ascii_case("all") {
        return Ok(NodeChoice::All);
    }
    let names: Vec<String> = text
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
        .collect();
    if names.is_empty() {
        return Err(ApiError::BadRequest(format!(
            "{NODES_HEADER} names no node"
        )));
    }
    Ok(NodeChoice::Named(names))
}

/// An Ollama request body: a JSON object.
fn ollama_body(bytes: &[u8]) -> Result<serde_json::Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::BadRequest(
            "the body must be a JSON object".into(),
        )),
        Err(e) => Err(ApiError::BadRequest(format!("invalid JSON: {e}"))),
    }
}

/// `model`, or Ollama's older `name`.
fn model_of(body: &serde_json::Map<String, Value>) -> Result<String, ApiError> {
    body.get("model")
        .or_else(|| body.get("name"))
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| ApiError::BadRequest("model is required".into()))
}

fn streams(body: &serde_json::Map<String, Value>) -> bool {
    body.get("stream").and_then(Value::as_bool).unwrap_or(true)
}

/// An error as Ollama's errors look, for an Ollama client.
fn ollama_start_error(error: StartError) -> ApiError {
    match error {
        StartError::NotHeld(model) => ApiError::NotFound(format!("model '{model}' not found")),
        StartError::BadNodeName(e) => ApiError::BadRequest(e.to_string()),
        StartError::BadRequest(message) => ApiError::BadRequest(message),
        e @ StartError::NoTargets(_) => ApiError::Conflict(e.to_string()),
        e @ StartError::Busy => ApiError::Unavailable(e.to_string()),
    }
}

/// `POST /api/pull`: pulls onto the fleet, with Ollama's progress summed over the nodes.
async fn ollama_pull(
    State(state): State<AppState>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let body = ollama_body(&bytes)?;
    let operation = Operation::Pull {
        model: model_of(&body)?,
        insecure: body
            .get("insecure")
            .and_then(Value::as_bool)
            .unwrap_or(false),
    };
    let task = state
        .models
        .start(operation, &header_choice(&headers)?)
        .map_err(ollama_start_error)?;
    Ok(follow(task, streams(&body)).await)
}

/// `POST /api/create`: creates the model on the fleet's nodes.
async fn ollama_create(
    State(state): State<AppState>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let mut body = ollama_body(&bytes)?;
    let model = model_of(&body)?;
    let stream = streams(&body);
    body.insert("stream".into(), Value::Bool(true));
    let request = Bytes::from(Value::Object(body).to_string());
    let task = state
        .models
        .start(
            Operation::Create { model, request },
            &header_choice(&headers)?,
        )
        .map_err(ollama_start_error)?;
    Ok(follow(task, stream).await)
}

/// `POST /api/copy`: copies on every node that holds the source.
async fn ollama_copy(State(state): State<AppState>, bytes: Bytes) -> Result<Response, ApiError> {
    let body = ollama_body(&bytes)?;
    let field = |name: &str| {
        body.get(name)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| ApiError::BadRequest(format!("{name} is required")))
    };
    let operation = Operation::Copy {
        source: field("source")?,
        destination: field("destination")?,
    };
    let task = state
        .models
        .start(operation, &NodeChoice::Default)
        .map_err(ollama_start_error)?;
    Ok(answer_once(task).await)
}

/// `DELETE /api/delete`: removes the model from every node that holds it.
async fn ollama_delete(
    State(state): State<AppState>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let body = ollama_body(&bytes)?;
    let operation = Operation::Delete {
        model: model_of(&body)?,
    };
    let task = state
        .models
        .start(operation, &header_choice(&headers)?)
        .map_err(ollama_start_error)?;
    Ok(answer_once(task).await)
}

/// Cancels the task when the client that started it goes away before its end.
struct CancelOnDrop(Arc<Task>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if !self.0.is_finished() {
            tracing::info!(task = %self.0.id, model = %self.0.model, "the client left: task cancelled");
            self.0.cancel();
        }
    }
}

async fn until_finished(task: &Task) {
    let mut changes = task.subscribe();
    while !task.is_finished() {
        if changes.changed().await.is_err() {
            return;
        }
    }
}

/// Copy and delete: an empty 200 as Ollama answers, or the error naming the nodes.
async fn answer_once(task: Arc<Task>) -> Response {
    let guard = CancelOnDrop(task);
    until_finished(&guard.0).await;
    match guard.0.state() {
        TaskState::Succeeded => StatusCode::OK.into_response(),
        _ => ApiError::BadGateway(failure(&guard.0)).into_response(),
    }
}

/// A pull or create: Ollama's progress lines as they come, or one answer at the end.
async fn follow(task: Arc<Task>, stream: bool) -> Response {
    let guard = CancelOnDrop(task);
    if !stream {
        until_finished(&guard.0).await;
        return match guard.0.state() {
            TaskState::Succeeded => Json(json!({ "status": "success" })).into_response(),
            _ => ApiError::BadGateway(failure(&guard.0)).into_response(),
        };
    }
    let changes = guard.0.subscribe();
    let state = (guard, changes, OllamaProgress::default(), false);
    let lines = futures::stream::unfold(
        state,
        |(guard, mut changes, mut progress, done)| async move {
            if done {
                return None;
            }
            let mut out = BytesMut::new();
            let mut ended = false;
            loop {
                if guard.0.is_finished() {
                    progress.finish(&guard.0, &mut out);
                    ended = true;
                    break;
                }
                progress.changes(&guard.0, &mut out);
                if !out.is_empty() {
                    break;
                }
                if changes.changed().await.is_err() {
                    break;
                }
                // Lines of several nodes arriving together go out as one chunk.
                tokio::time::sleep(COALESCE).await;
            }
            Some((
                Ok::<_, Infallible>(out.freeze()),
                (guard, changes, progress, ended),
            ))
        },
    );
    Response::builder()
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(Body::from_stream(lines))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}
