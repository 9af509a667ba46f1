//! The settings panel: a page on 127.0.0.1 where the machine's user edits the
//! agent's settings, tests them and applies them without a restart.
//!
//! - Only this machine reaches it (it listens on 127.0.0.1), and only with the
//!   random token of this start, which is in the link the agent prints and the
//!   tray opens: the page with `?token=`, its API with `X-Settings-Token`. A
//!   page of another site cannot send that header without a preflight that the
//!   panel never allows, nor learn the token; a `Host` other than the panel's
//!   own (DNS rebinding) is refused.
//! - [`form`]: which settings it edits, their sources, the file it writes.
//! - Save writes `agent-settings.json` and publishes the new
//!   [`AgentConfig`] on a `watch` channel; [`crate::run_reconfigurable`] says
//!   goodbye to the old coordinator and registers with the new settings.
//!
//! API (JSON): `GET /api/settings` (fields, sources, status), `GET /api/status`,
//! `PUT /api/settings` (an edit: save and apply), `POST /api/test` (an edit,
//! unsaved: reach the coordinator and Ollama with it).

pub mod form;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Map, Value, json};
use subtle::ConstantTimeEq as _;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::{AgentConfig, ConfigError, Secret};
use crate::coordinator::CoordinatorClient;
use crate::ollama::OllamaClient;
use crate::settings_file::SettingsFile;
use crate::status::{AgentStatus, Link};
use form::{EditError, Locks};

/// The header that carries the token on API calls.
pub const TOKEN_HEADER: &str = "x-settings-token";
/// An edit is a handful of short strings.
const MAX_BODY_BYTES: usize = 16 * 1024;

/// Builds the configuration the agent would run with for a settings file:
/// the command line and environment over the file, as at start.
pub type BuildConfig = dyn Fn(&SettingsFile) -> Result<AgentConfig, ConfigError> + Send + Sync;

/// What the panel needs from the agent.
pub struct PanelSettings {
    /// 0 for a port the system picks.
    pub port: u16,
    /// The settings file it edits.
    pub settings_path: PathBuf,
    pub locks: Locks,
    pub build: Arc<BuildConfig>,
    /// The configuration the agent runs with; the panel sends a new one on Save.
    pub configs: watch::Sender<AgentConfig>,
    pub status: watch::Receiver<AgentStatus>,
}

/// A running panel.
#[derive(Debug, Clone)]
pub struct Panel {
    /// The link that opens it, token included.
    pub url: String,
    /// Where it listens.
    pub addr: SocketAddr,
}

struct Shared {
    settings: PanelSettings,
    token: String,
    /// The `Host` values the panel answers to.
    hosts: [String; 3],
    /// One save at a time, so that two tabs cannot interleave read and write.
    saving: tokio::sync::Mutex<()>,
}

impl Panel {
    /// Listens on 127.0.0.1 and serves until `stop`.
    pub async fn start(settings: PanelSettings, stop: CancellationToken) -> std::io::Result<Self> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, settings.port)).await?;
        let addr = listener.local_addr()?;
        let token = new_token();
        let port = addr.port();
        let url = format!("http://127.0.0.1:{port}/?token={token}");
        let shared = Arc::new(Shared {
            settings,
            token,
            hosts: [
                format!("127.0.0.1:{port}"),
                format!("localhost:{port}"),
                format!("[::1]:{port}"),
            ],
            saving: tokio::sync::Mutex::new(()),
        });
        let app = Router::new()
            .route("/", get(page))
            .route("/panel.js", get(script))
            .route("/style.css", get(style))
            .route("/api/settings", get(show).put(save))
            .route("/api/status", get(status))
            .route("/api/test", axum::routing::post(test))
            .fallback(|| async { error(StatusCode::NOT_FOUND, "no such page") })
            .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
            .layer(middleware::from_fn_with_state(shared.clone(), guard))
            .with_state(shared);
        tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
            if let Err(error) = served {
                tracing::warn!(%error, "the settings panel stopped");
            }
        });
        Ok(Self { url, addr })
    }
}

/// 256 random bits, hex.
fn new_token() -> String {
    let (a, b) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    format!("{}{}", a.simple(), b.simple())
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

/// Everything the page loads comes from the panel; nothing runs inline and
/// nothing may frame it.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// The host check and the token check, and the headers every answer carries.
async fn guard(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mut response = if !shared.hosts.iter().any(|h| h.eq_ignore_ascii_case(host)) {
        error(
            StatusCode::MISDIRECTED_REQUEST,
            format!(
                "the settings panel answers only at http://{}/",
                shared.hosts[0]
            ),
        )
    } else if !allowed(&shared, &request) {
        error(
            StatusCode::FORBIDDEN,
            "this link is not valid (the agent makes a new one at each start): open Settings from \
             the agent's tray, or the link it printed",
        )
    } else if foreign_origin(&shared, request.headers()) {
        error(
            StatusCode::FORBIDDEN,
            "requests from other sites are refused",
        )
    } else {
        next.run(request).await
    };
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// The script and the style are the same for everyone; the page needs the
/// token in its query, the API in its header.
fn allowed(shared: &Shared, request: &Request) -> bool {
    let path = request.uri().path();
    if matches!(path, "/panel.js" | "/style.css") {
        return true;
    }
    let presented = if path.starts_with("/api/") {
        request
            .headers()
            .get(TOKEN_HEADER)
            .and_then(|v| v.to_str().ok())
    } else {
        request.uri().query().and_then(|query| {
            query
                .split('&')
                .find_map(|pair| pair.strip_prefix("token="))
        })
    };
    presented.is_some_and(|token| bool::from(token.as_bytes().ct_eq(shared.token.as_bytes())))
}

/// An `Origin` that is not the panel's own (a browser sends one on every POST
/// and PUT).
fn foreign_origin(shared: &Shared, headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return false;
    };
    let origin = origin.to_str().unwrap_or("");
    !shared
        .hosts
        .iter()
        .any(|host| origin.eq_ignore_ascii_case(&format!("http://{host}")))
}

async fn page() -> Response {
    asset(
        include_str!("assets/index.html"),
        "text/html; charset=utf-8",
    )
}

async fn script() -> Response {
    asset(
        include_str!("assets/panel.js"),
        "text/javascript; charset=utf-8",
    )
}

async fn style() -> Response {
    asset(llm_router_desktop::STYLESHEET, "text/css; charset=utf-8")
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// The agent's status as the page shows it.
fn status_json(status: &AgentStatus) -> Value {
    let (link, reason) = match &status.link {
        Link::Starting => ("starting", None),
        Link::Connected => ("connected", None),
        Link::Retrying { reason } => ("retrying", Some(reason.as_str())),
    };
    json!({
        "line": crate::desktop::status_line(status),
        "link": link,
        "reason": reason,
        "coordinator": status.coordinator,
        "machine_name": status.machine_name,
        "node_id": status.node_id,
        "ollama_up": status.ollama_up,
        "draining": status.draining,
        "dashboard": status.dashboard_url(),
    })
}

async fn status(State(shared): State<Arc<Shared>>) -> Json<Value> {
    Json(status_json(&shared.settings.status.borrow()))
}

async fn show(State(shared): State<Arc<Shared>>) -> Response {
    let settings = &shared.settings;
    let file = match form::read_object(&settings.settings_path) {
        Ok(file) => file,
        Err(problem) => return error(StatusCode::CONFLICT, problem),
    };
    let config = settings.configs.borrow().clone();
    Json(json!({
        "settings_file": settings.settings_path.display().to_string(),
        "fields": form::shown(&config, &file, &settings.locks),
        "status": status_json(&settings.status.borrow()),
    }))
    .into_response()
}

/// Why a request cannot be carried out, as the page shows it: the message,
/// and the setting it is about when there is one.
struct Refusal {
    status: StatusCode,
    message: String,
    field: Option<String>,
}

impl Refusal {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            field: None,
        }
    }
}

impl From<EditError> for Refusal {
    fn from(error: EditError) -> Self {
        let status = match error {
            EditError::Locked { .. } => StatusCode::CONFLICT,
            EditError::Unknown(_) | EditError::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        };
        Self {
            status,
            field: Some(error.key().to_owned()),
            message: error.to_string(),
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let body = match self.field {
            Some(field) => json!({ "error": self.message, "field": field }),
            None => json!({ "error": self.message }),
        };
        (self.status, Json(body)).into_response()
    }
}

/// The settings file with `edit` applied, and the configuration it gives.
fn candidate(
    shared: &Shared,
    edit: &Map<String, Value>,
) -> Result<(Map<String, Value>, AgentConfig), Refusal> {
    let settings = &shared.settings;
    let file = form::read_object(&settings.settings_path)
        .map_err(|problem| Refusal::new(StatusCode::CONFLICT, problem))?;
    let next = form::apply_edit(&file, edit, &settings.locks)?;
    let unprocessable = |message: String| Refusal::new(StatusCode::UNPROCESSABLE_ENTITY, message);
    let parsed: SettingsFile = serde_json::from_value(Value::Object(next.clone()))
        .map_err(|e| unprocessable(e.to_string()))?;
    let config = (settings.build)(&parsed).map_err(|e| unprocessable(e.to_string()))?;
    Ok((next, config))
}

/// The edit in a request's body: a JSON object.
fn edit_of(body: Option<Json<Value>>) -> Result<Map<String, Value>, Refusal> {
    match body {
        Some(Json(Value::Object(edit))) => Ok(edit),
        _ => Err(Refusal::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "expected a JSON object of setting → value",
        )),
    }
}

async fn save(
    State(shared): State<Arc<Shared>>,
    body: Option<Json<Value>>,
) -> Result<Json<Value>, Refusal> {
    let edit = edit_of(body)?;
    let _one_at_a_time = shared.saving.lock().await;
    let (next, config) = candidate(&shared, &edit)?;
    let path = &shared.settings.settings_path;
    if let Err(problem) = form::write_object(path, &next) {
        tracing::warn!(path = %path.display(), error = %problem, "could not save the settings");
        return Err(Refusal::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("could not save {}: {problem}", path.display()),
        ));
    }
    let restarted = shared.settings.configs.send_if_modified(|current| {
        let changed = *current != config;
        *current = config;
        changed
    });
    tracing::info!(
        path = %path.display(),
        keys = ?edit.keys().collect::<Vec<_>>(),
        restarted,
        "settings saved from the panel"
    );
    Ok(Json(
        json!({ "saved": path.display().to_string(), "restarted": restarted }),
    ))
}

async fn test(
    State(shared): State<Arc<Shared>>,
    body: Option<Json<Value>>,
) -> Result<Json<Value>, Refusal> {
    let edit = edit_of(body.or(Some(Json(Value::Object(Map::new())))))?;
    let (_, config) = candidate(&shared, &edit)?;
    let (coordinator, ollama) = tokio::join!(test_coordinator(&config), test_ollama(&config));
    Ok(Json(
        json!({ "coordinator": coordinator, "ollama": ollama }),
    ))
}

fn verdict(ok: bool, message: String) -> Value {
    json!({ "ok": ok, "message": message })
}

async fn test_coordinator(config: &AgentConfig) -> Value {
    let client = match CoordinatorClient::new(
        &config.coordinator_url,
        config.coordinator_ca_file.as_deref(),
    ) {
        Ok(client) => client,
        Err(e) => return verdict(false, e.to_string()),
    };
    let token = config.node_token.as_ref().map(Secret::expose);
    match client.check_token(token).await {
        Ok(()) => verdict(
            true,
            format!(
                "the coordinator at {} answers and accepts this node{}",
                client.base_url(),
                if token.is_some() {
                    "'s token"
                } else {
                    " without a token"
                }
            ),
        ),
        Err(e) if e.is_not_found() => verdict(
            true,
            format!(
                "the coordinator at {} answers (it is too old to check the node token first)",
                client.base_url()
            ),
        ),
        Err(e) => verdict(false, e.to_string()),
    }
}

async fn test_ollama(config: &AgentConfig) -> Value {
    let client = match OllamaClient::new(
        &config.ollama_api_base,
        config.node_api_key.as_ref().map(Secret::expose),
    ) {
        Ok(client) => client,
        Err(e) => return verdict(false, e.to_string()),
    };
    if config.backend == crate::Backend::OpenAi {
        return match client.openai_models().await {
            Ok(models) => verdict(
                true,
                format!(
                    "the server at {} answers, serving {}",
                    client.base_url(),
                    match models.len() {
                        0 => "no model yet".to_owned(),
                        1 => models[0].name.clone(),
                        n => format!("{n} models"),
                    }
                ),
            ),
            Err(e) => verdict(false, e.to_string()),
        };
    }
    match client.version().await {
        Ok(version) => verdict(
            true,
            format!("Ollama {version} answers at {}", client.base_url()),
        ),
        Err(e) => verdict(false, e.to_string()),
    }
}
