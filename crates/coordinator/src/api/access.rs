//! Access control on the HTTP side: the middlewares that guard each part of the
//! API, CORS for browser clients of the inference API, and the login endpoints.
//!
//! - Inference ([`client_gate`]): an API key when `--require-api-key` is on; any
//!   valid key is named in the history and held to its limits.
//! - Operators ([`same_site_gate`] then [`operator_gate`]): a `Host` the
//!   coordinator answers to, no foreign `Origin`, POSTs only as JSON or with a
//!   custom header (a cross-site form can send neither), then an admin
//!   session or token unless the management side is open.
//! - Agents' own calls (register, heartbeat, goodbye) carry their tokens and are
//!   checked by their handlers.

use std::sync::Arc;
use std::time::Duration;

use axum::{
    Extension, Json, Router,
    body::Body,
    extract::{ConnectInfo, Request, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Redirect, Response},
    routing::{get, post},
};
use http_body_util::BodyExt as _;
use serde::Deserialize;
use serde_json::json;
use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer};

use super::{ApiJson, AppState};
use crate::auth::admin::{LoginError, SESSION_COOKIE, SESSION_TTL, SetupError};
use crate::auth::secret::bearer;
use crate::auth::{Access, same_origin};
use crate::error::ApiError;
use crate::proxy::error::ProxyError;
use llm_router_common::ApiKind;

/// The name of the API key a request came with, for its record.
#[derive(Debug, Clone)]
pub struct ClientKeyName(pub std::sync::Arc<str>);

/// Paths of the inference side that stay open without a key, as on Ollama:
/// tools probe them to find out whether a server is there.
const OPEN_INFERENCE_PATHS: [&str; 2] = ["/", "/api/version"];

/// The client's bearer token, if any.
fn presented_bearer(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::AUTHORIZATION).and_then(bearer)
}

fn flavor_of(path: &str) -> ApiKind {
    if path.starts_with("/v1/") {
        ApiKind::OpenAi
    } else {
        ApiKind::Ollama
    }
}

/// Inference requests: checks the API key (required or not), applies its
/// limits, and keeps its concurrency permit inside the response body, so that a
/// stream counts against the key until its last byte.
pub async fn client_gate(
    State(access): State<Arc<Access>>,
    mut request: Request,
    next: Next,
) -> Response {
    if let Some(refusal) = inference_refusal(&request) {
        return refusal;
    }
    let path = request.uri().path();
    if OPEN_INFERENCE_PATHS.contains(&path) || request.method() == Method::OPTIONS {
        return next.run(request).await;
    }
    let flavor = flavor_of(path);
    let key = presented_bearer(request.headers()).and_then(|k| access.keys.lookup(k));
    let Some(key) = key else {
        if access.require_api_key {
            let reason = if presented_bearer(request.headers()).is_some() {
                "the API key is not valid (revoked, or never issued)"
            } else {
                "an API key is required: send it as Authorization: Bearer <key>"
            };
            return ProxyError::Unauthorized(reason)
                .with(flavor)
                .into_response();
        }
        // Clients that must send some key (OpenAI libraries) often send a placeholder.
        return next.run(request).await;
    };
    let permit = match key.admit(access.keys.now_nanos()) {
        Ok(permit) => permit,
        Err(limited) => {
            tracing::debug!(key = %key.name, limit = limited.limit, "request refused by its key's limit");
            return ProxyError::RateLimited {
                limit: limited.limit,
                retry_after: limited.retry_after,
            }
            .with(flavor)
            .into_response();
        }
    };
    request
        .extensions_mut()
        .insert(ClientKeyName(std::sync::Arc::clone(&key.name)));
    let response = next.run(request).await;
    response.map(|body| {
        Body::new(body.map_frame(move |frame| {
            // The permit is released when the body (and this closure) is dropped.
            let _held = &permit;
            frame
        }))
    })
}

/// Why an inference request is refused before its key is even looked at, if it is.
///
/// Inference bodies are JSON, as every Ollama and OpenAI client sends them. A web page
/// can post a form or plain text to another origin without asking (no CORS preflight),
/// so those are refused: `text/plain` and `multipart/form-data` always, and form-encoded
/// bodies when a browser sent them (`curl -d`, the way Ollama's own examples call the
/// API, labels JSON as form-encoded and is served).
///
/// A request carrying the router's hop header is refused first (508): it came from a
/// router, and serving it could loop.
fn inference_refusal(request: &Request) -> Option<Response> {
    if request.headers().contains_key(crate::proxy::HOP_HEADER) {
        tracing::warn!(path = %request.uri().path(), "request that already passed a router refused (a node points back at a router)");
        return Some(
            ProxyError::Loop {
                header: crate::proxy::HOP_HEADER,
            }
            .with(flavor_of(request.uri().path()))
            .into_response(),
        );
    }
    if request.method() != Method::POST {
        return None;
    }
    let headers = request.headers();
    let content_type = headers.get(header::CONTENT_TYPE)?;
    let essence = crate::proxy::media_type(content_type).unwrap_or("");
    let from_browser =
        headers.contains_key(header::ORIGIN) || headers.contains_key("sec-fetch-mode");
    let json = essence.eq_ignore_ascii_case("application/json")
        || essence
            .len()
            .checked_sub("+json".len())
            .and_then(|start| essence.get(start..))
            .is_some_and(|suffix| suffix.eq_ignore_ascii_case("+json"));
    let curl_form =
        essence.eq_ignore_ascii_case("application/x-www-form-urlencoded") && !from_browser;
    if json || curl_form || essence.is_empty() {
        return None;
    }
    let shown: String = essence.to_ascii_lowercase().chars().take(80).collect();
    Some(
        ProxyError::UnsupportedMediaType(shown)
            .with(flavor_of(request.uri().path()))
            .into_response(),
    )
}

/// CORS for the inference API: origins as Ollama's `OLLAMA_ORIGINS` allows them.
/// The management side has no CORS layer, so browsers never let a foreign page
/// read its answers.
pub fn inference_cors(access: &Access) -> CorsLayer {
    let origins = access.origins.clone();
    CorsLayer::new()
        .allow_origin(AllowOrigin::predicate(move |origin: &HeaderValue, _| {
            origin.to_str().is_ok_and(|o| origins.allows(o))
        }))
        .allow_methods([Method::GET, Method::POST, Method::HEAD, Method::OPTIONS])
        .allow_headers(AllowHeaders::mirror_request())
        .expose_headers([
            header::HeaderName::from_static(super::REQUEST_ID_HEADER),
            header::HeaderName::from_static(crate::proxy::NODE_HEADER),
        ])
        .max_age(Duration::from_secs(24 * 60 * 60))
}

/// `/metrics`: open unless `--metrics-token` is set.
pub async fn metrics_gate(
    State(access): State<Arc<Access>>,
    request: Request,
    next: Next,
) -> Response {
    if let Some(digest) = &access.metrics_token
        && !presented_bearer(request.headers()).is_some_and(|t| digest.matches(t))
    {
        return ApiError::Unauthorized(
            "/metrics requires the metrics token (Authorization: Bearer)".into(),
        )
        .into_response();
    }
    next.run(request).await
}

/// The dashboard, the management API and the login endpoints: refuses what a web
/// page on another site (or a rebound DNS name) could send in an operator's name.
pub async fn same_site_gate(
    State(access): State<Arc<Access>>,
    request: Request,
    next: Next,
) -> Response {
    let headers = request.headers();
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    if let Some(host) = host
        && !access.hosts.allows(host)
    {
        tracing::warn!(%host, path = %request.uri().path(), "request for an unknown host refused");
        return ApiError::Forbidden(format!(
            "this coordinator does not answer to the host name {host:?}; add it with --allowed-hosts"
        ))
        .into_response();
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        if !host.is_some_and(|h| same_origin(origin, h)) {
            tracing::warn!(%origin, path = %request.uri().path(), "cross-origin management request refused");
            return ApiError::Forbidden(
                "the dashboard and management API answer only their own origin".into(),
            )
            .into_response();
        }
    }
    // Of the methods that change state, only POST can come from a plain HTML form; the
    // others need a CORS preflight, which the management side never grants.
    if request.method() == Method::POST && !csrf_safe(headers) {
        return ApiError::Forbidden(
            "a POST needs a JSON body (Content-Type: application/json) or an X-Requested-With \
             header, which a form on another site cannot send"
                .into(),
        )
        .into_response();
    }
    next.run(request).await
}

/// Whether a POST is one a cross-site form cannot forge: a
/// JSON body, a custom header, or a bearer token all need a CORS preflight,
/// which the management side never grants.
fn csrf_safe(headers: &HeaderMap) -> bool {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(crate::proxy::media_type)
        .is_some_and(|v| v.eq_ignore_ascii_case("application/json"));
    json || headers.contains_key("x-requested-with") || presented_bearer(headers).is_some()
}

/// Whether the request comes from an operator: the management side is open, or
/// it carries an admin token or a live session.
pub fn is_operator(access: &Access, headers: &HeaderMap) -> bool {
    let Some(admin) = &access.admin else {
        return true;
    };
    if presented_bearer(headers).is_some_and(|t| admin.token_valid(t)) {
        return true;
    }
    session_cookie(headers).is_some_and(|s| admin.session_valid(s))
}

/// Everything only operators may use. A browser asking for the dashboard page is
/// sent to the login page instead of an error.
pub async fn operator_gate(
    State(access): State<Arc<Access>>,
    request: Request,
    next: Next,
) -> Response {
    if is_operator(&access, request.headers()) {
        return next.run(request).await;
    }
    if request.method() == Method::GET
        && matches!(request.uri().path(), "/dashboard" | "/dashboard/")
    {
        return Redirect::to("/login").into_response();
    }
    ApiError::Unauthorized(
        "log in on the dashboard, or send an admin token (Authorization: Bearer)".into(),
    )
    .into_response()
}

fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value)
}

/// The login endpoints and pages (behind [`same_site_gate`], not behind a login).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/auth/status", get(status))
        .route("/api/auth/login", post(login))
        .route("/api/auth/logout", post(logout))
        .route("/api/auth/setup", post(setup))
}

/// `GET /api/auth/status`: what the login page needs to know.
async fn status(State(state): State<AppState>, headers: HeaderMap) -> Json<serde_json::Value> {
    let access = &state.access;
    Json(json!({
        "admin": if access.admin.is_some() { "auth" } else { "open" },
        "logged_in": is_operator(access, &headers),
        "password_set": access.admin.as_ref().is_some_and(|a| a.has_password()),
        "require_api_key": access.require_api_key,
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginRequest {
    password: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SetupRequest {
    token: String,
    password: String,
}

/// The peer's address (absent when the router is driven without a socket, in tests).
type Peer = Option<Extension<ConnectInfo<std::net::SocketAddr>>>;

fn client_ip(peer: Peer) -> std::net::IpAddr {
    peer.map_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), |c| {
        c.0.0.ip()
    })
}

/// `POST /api/auth/login {"password"}`: sets the session cookie.
async fn login(
    State(state): State<AppState>,
    connect: Peer,
    ApiJson(req): ApiJson<LoginRequest>,
) -> Result<Response, ApiError> {
    let Some(admin) = &state.access.admin else {
        return Err(ApiError::BadRequest(
            "the management side is open (--admin open): there is nothing to log in to".into(),
        ));
    };
    let from = client_ip(connect);
    match admin.login(from, &req.password).await {
        Ok(session) => {
            tracing::info!(%from, "operator logged in");
            Ok(with_session_cookie(&state.access, &session, SESSION_TTL))
        }
        Err(LoginError::Throttled { retry_after }) => Err(ApiError::TooManyRequests {
            message: LoginError::Throttled { retry_after }.to_string(),
            retry_after,
        }),
        Err(LoginError::WrongPassword) => {
            tracing::warn!(%from, "wrong admin password");
            Err(ApiError::Unauthorized(
                LoginError::WrongPassword.to_string(),
            ))
        }
        Err(error @ LoginError::NoPassword) => Err(ApiError::Conflict(error.to_string())),
    }
}

/// `POST /api/auth/setup {"token", "password"}`: the one-time setup link sets the
/// first password and logs in.
async fn setup(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<SetupRequest>,
) -> Result<Response, ApiError> {
    let Some(admin) = &state.access.admin else {
        return Err(ApiError::BadRequest(
            "the management side is open (--admin open): no password to set".into(),
        ));
    };
    match admin.setup(&req.token, &req.password).await {
        Ok(session) => Ok(with_session_cookie(&state.access, &session, SESSION_TTL)),
        Err(error @ SetupError::InvalidToken) => Err(ApiError::Forbidden(error.to_string())),
        Err(error @ SetupError::TooShort) => Err(ApiError::Unprocessable(error.to_string())),
        Err(error @ SetupError::Save(_)) => Err(ApiError::Unavailable(error.to_string())),
    }
}

/// `POST /api/auth/logout`: ends the session and clears the cookie.
async fn logout(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let (Some(admin), Some(session)) = (&state.access.admin, session_cookie(&headers)) {
        admin.logout(session);
    }
    with_session_cookie(&state.access, "", Duration::ZERO)
}

/// 204 with the session cookie: HttpOnly (no script reads it), SameSite=Strict (no
/// other site's request carries it), Secure when served over HTTPS.
fn with_session_cookie(access: &Access, session: &str, ttl: Duration) -> Response {
    let secure = if access.secure_cookies {
        "; Secure"
    } else {
        ""
    };
    let cookie = format!(
        "{SESSION_COOKIE}={session}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        ttl.as_secs()
    );
    let mut response = StatusCode::NO_CONTENT.into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
